"""Training with Keras' own machinery: ``compile``/``fit``, callbacks, mixed precision, XLA, ``tf.distribute``.

The pieces:

* :func:`compile_model` -- loss ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)``, metrics
  ``MeanIoU(ignore_class=255, sparse_y_pred=False)`` and :class:`PixelAccuracy`, the recipe's optimizer.
* :class:`SGDWithMultipliers` -- SGD whose decoder variables learn ``decoder_lr_multiplier`` times faster, with
  PyTorch-style (coupled) weight decay, as the official RefineNet recipes train.
* :class:`AveragedWeights` -- with the optimizer's ``use_ema``, swaps the averaged weights in for validation
  and saving, and the raw ones back for training.
* :func:`train` -- the whole run in its own folder (by default a new ``checkpoints/<recipe>-<time>``): best and
  last weights, ``BackupAndRestore`` (a killed run resumes at the right epoch), TensorBoard, CSV log,
  ``TerminateOnNaN``, the resolved config with the model's build arguments (:mod:`refinenet_tf.runs`).

Recipes (what to train, as data) live in :mod:`refinenet_tf.recipes`. The modules: :mod:`.optimizers`,
:mod:`.compiling`, :mod:`.callbacks`, :mod:`.loop`.
"""

from refinenet_tf.training.callbacks import AveragedWeights, PredictionImages, SafeCheckpoint
from refinenet_tf.training.compiling import (PixelAccuracy, compile_model, freeze_batch_norm, mixed_precision_policy,
                                             resolve_jit_compile)
from refinenet_tf.training.loop import TrainConfig, make_strategy, train
from refinenet_tf.training.optimizers import (SGDWithMultipliers, averaged_weights, decoder_variable_names,
                                              learning_rate_schedule, make_optimizer)

__all__ = ["AveragedWeights", "PixelAccuracy", "PredictionImages", "SGDWithMultipliers", "SafeCheckpoint",
           "TrainConfig", "averaged_weights", "compile_model", "decoder_variable_names", "freeze_batch_norm",
           "learning_rate_schedule", "make_optimizer", "make_strategy", "mixed_precision_policy",
           "resolve_jit_compile", "train"]
