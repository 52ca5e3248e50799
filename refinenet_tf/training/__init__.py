"""Training with Keras' own machinery: ``compile``/``fit``, callbacks, mixed precision, XLA, ``tf.distribute``.

The pieces:

* :func:`compile_model` -- loss ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)``, metrics
  ``MeanIoU(ignore_class=255, sparse_y_pred=False)`` and :class:`PixelAccuracy`, the recipe's optimizer.
* :class:`SGDWithMultipliers`, :class:`AdamWithMultipliers`, :class:`AdamWWithMultipliers` -- the recipes'
  optimizers: decoder learning-rate multiplier, coupled or decoupled weight decay and the moving average of the
  weights, applied once per step after the replicas' gradients are summed (and unscaled).
* :class:`AveragedWeights` -- with the recipe's weight averaging, swaps the averaged weights in for validation
  and saving, and the raw ones back for training.
* :func:`train` -- the whole run in its own folder (by default a new ``checkpoints/<recipe>-<time>``): best and
  last weights, ``BackupAndRestore`` (a killed run resumes at the right epoch), TensorBoard, CSV log,
  ``TerminateOnNaN``, the resolved config with the model's build arguments (:mod:`refinenet_tf.runs`).

Recipes (what to train, as data) live in :mod:`refinenet_tf.recipes`. The modules: :mod:`.optimizers`,
:mod:`.compiling`, :mod:`.callbacks`, :mod:`.loop`.
"""

from refinenet_tf.training.callbacks import AveragedWeights, PredictionImages, SafeCheckpoint
from refinenet_tf.training.compiling import (MIXED_PRECISION_POLICIES, PixelAccuracy, compile_model, freeze_batch_norm,
                                             keep_xla_off_python_data, mixed_precision_policy, python_backed_ops,
                                             resolve_jit_compile, set_xla_train_step, xla_train_step_function)
from refinenet_tf.training.loop import TrainConfig, make_strategy, train
from refinenet_tf.training.optimizers import (AdamWithMultipliers, AdamWWithMultipliers, LinearWarmup,
                                              RecipeOptimizerMixin, SGDWithMultipliers, averaged_weights,
                                              decoder_variable_names, learning_rate_schedule, make_optimizer,
                                              weight_averages)

__all__ = ["AveragedWeights", "PixelAccuracy", "PredictionImages", "SGDWithMultipliers", "SafeCheckpoint",
           "TrainConfig", "averaged_weights", "compile_model", "decoder_variable_names", "freeze_batch_norm",
           "learning_rate_schedule", "make_optimizer", "make_strategy", "mixed_precision_policy",
           "resolve_jit_compile", "train", "AdamWWithMultipliers", "AdamWithMultipliers", "LinearWarmup",
           "RecipeOptimizerMixin", "weight_averages",
           "MIXED_PRECISION_POLICIES", "keep_xla_off_python_data", "python_backed_ops", "set_xla_train_step",
           "xla_train_step_function"]
