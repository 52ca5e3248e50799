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
  ``TerminateOnNaN``, the resolved config with the model's build arguments (:mod:`refinenet_tf.training.runs`).

Recipes (what to train, as data) live in :mod:`.recipes`, the run folders' layout and loading in :mod:`.runs`. The modules: :mod:`.optimizers`,
:mod:`.compiling`, :mod:`.callbacks`, :mod:`.loop`, :mod:`.doctor`. The names load when first used: the recipes need no TensorFlow.
"""

from refinenet_tf._lazy import lazy_names

_NAMES = {
    "AveragedWeights": "callbacks",
    "PredictionImages": "callbacks",
    "SafeCheckpoint": "callbacks",
    "MIXED_PRECISION_POLICIES": "compiling",
    "PixelAccuracy": "compiling",
    "compile_model": "compiling",
    "freeze_batch_norm": "compiling",
    "keep_xla_off_python_data": "compiling",
    "mixed_precision_policy": "compiling",
    "python_backed_ops": "compiling",
    "resolve_jit_compile": "compiling",
    "set_xla_train_step": "compiling",
    "xla_train_step_function": "compiling",
    "TrainConfig": "loop",
    "make_strategy": "loop",
    "train": "loop",
    "AdamWithMultipliers": "optimizers",
    "AdamWWithMultipliers": "optimizers",
    "LinearWarmup": "optimizers",
    "RecipeOptimizerMixin": "optimizers",
    "SGDWithMultipliers": "optimizers",
    "averaged_weights": "optimizers",
    "decoder_variable_names": "optimizers",
    "learning_rate_schedule": "optimizers",
    "make_optimizer": "optimizers",
    "weight_averages": "optimizers",
    "RECIPES": "recipes",
    "Recipe": "recipes",
    "get_recipe": "recipes",
    "list_recipes": "recipes",
}
_SUBMODULES = ("callbacks", "compiling", "doctor", "loop", "optimizers", "recipes", "runs")

__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, _SUBMODULES)
