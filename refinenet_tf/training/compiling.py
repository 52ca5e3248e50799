"""Compiling a model for its recipe: losses, metrics, the optimizer, XLA and the precision policy.

XLA compiles the train step only (:func:`set_xla_train_step`). Keras' own ``compile(jit_compile=True)``
compiles the test step too, and XLA compiles once per input shape: validation on whole images of varying size
(VOC val has well over a hundred sizes) would compile a fresh program per size. Training batches all have the
crop's shape, so the train step compiles once; validation and ``evaluate`` run as a plain ``tf.function``.
"""

import logging

import tensorflow as tf
import tf_keras as keras

from refinenet_tf.models import outputs as model_outputs
from refinenet_tf.training import optimizers
from refinenet_tf.training.recipes import get_recipe

__all__ = ["MIXED_PRECISION_POLICIES", "PixelAccuracy", "compile_model", "freeze_batch_norm",
           "keep_xla_off_python_data", "mixed_precision_policy", "python_backed_ops", "resolve_jit_compile",
           "set_xla_train_step", "xla_train_step_function"]

_register = keras.saving.register_keras_serializable(package="refinenet_tf")
_log = logging.getLogger(__name__)


@_register
class PixelAccuracy(keras.metrics.Mean):
    """Fraction of labelled pixels whose arg-max prediction is right; ``ignore_class`` pixels do not count.

    Example:
        >>> metric = PixelAccuracy(ignore_class=255)
        >>> _ = metric.update_state([[0, 1, 255]], tf.one_hot([[0, 0, 1]], 2))
        >>> float(metric.result())
        0.5
    """

    def __init__(self, ignore_class=255, name="pixel_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_class = ignore_class

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(tf.convert_to_tensor(y_true), tf.int32)
        y_pred = tf.convert_to_tensor(y_pred)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        valid = tf.not_equal(y_true, self.ignore_class)
        correct = tf.cast(tf.equal(predicted, y_true), self.dtype)
        weights = tf.cast(valid, self.dtype)
        if sample_weight is not None:
            weights *= tf.cast(sample_weight, self.dtype)
        return super().update_state(correct, sample_weight=weights)

    def get_config(self):
        config = super().get_config()
        config.update(ignore_class=self.ignore_class)
        return config


def freeze_batch_norm(model):
    """Puts every BatchNormalization layer of ``model`` (backbone included) in inference mode, untrained."""
    for layer in model.submodules:  # every nested layer, inside the backbone and our blocks too
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _task_losses_and_metrics(recipe, num_classes):
    """The multi-task ``compile`` arguments of ``recipe``: a loss, a weight and metrics per named output."""
    from refinenet_tf.models import losses, metrics

    given = dict(recipe.loss_weights)
    if set(given) != {"segmentation", "depth"}:
        raise ValueError(f"loss_weights={given}: give a weight for each trained task, 'segmentation' and 'depth' "
                         "(0 for one of them trains the other head alone).")
    if any(not float(value) >= 0 for value in given.values()) or sum(map(float, given.values())) <= 0:
        raise ValueError(f"loss_weights={given}: the weights must be 0 or more, and not all 0.")
    task_losses = {"segmentation": losses.SegmentationCrossEntropy(ignore_class=255),
                   "depth": losses.depth_loss(recipe.depth_loss)}
    task_metrics = {"segmentation": [keras.metrics.MeanIoU(num_classes, ignore_class=255, sparse_y_true=True,
                                                           sparse_y_pred=False, name="mean_iou"),
                                     PixelAccuracy(ignore_class=255)],
                    "depth": metrics.depth_metrics()}
    weights = {task: float(recipe.loss_weights.get(task, 0.0)) for task in task_losses}
    return task_losses, weights, task_metrics

def compile_model(model, recipe, num_classes, learning_rate=None, steps_per_epoch=1, epochs=None,
                  jit_compile="auto", run_eagerly=False):
    """Compiles ``model`` with ``recipe``'s optimizer: for segmentation, or for segmentation and depth.

    A segmentation model gets the cross-entropy ignoring 255, mean IoU and pixel accuracy. A multi-task model
    (outputs named ``segmentation`` and ``depth``, :func:`refinenet_tf.models.outputs.is_multitask`) gets per output
    :class:`refinenet_tf.models.losses.SegmentationCrossEntropy` and the recipe's depth loss
    (:func:`refinenet_tf.models.losses.depth_loss`), weighted by the recipe's ``loss_weights``, and as metrics mean IoU
    and pixel accuracy, and the seven depth metrics of :func:`refinenet_tf.models.metrics.depth_metrics`. Both losses
    average over valid pixels only, so an example without a mask (all 255) or without depth (all 0) trains the
    other head only, in the same batch.

    Args:
        model: a RefineNet (logits at the masks' resolution) or a multi-task model.
        recipe: a :class:`refinenet_tf.training.recipes.Recipe` or its name.
        num_classes: for the mean IoU.
        learning_rate: overrides the recipe's.
        steps_per_epoch, epochs: for learning-rate schedules.
        jit_compile: ``"auto"`` (XLA on GPU, not on CPU, where it was measured slower), True or False: the
            train step only (:func:`set_xla_train_step`); the test step (validation, ``evaluate``) never, so
            images of many sizes cost no compile each.
        run_eagerly: run the steps eagerly, for debugging (not with ``jit_compile=True``).

    Returns:
        ``model``, compiled: a plain functional ``keras.Model`` that saves and loads as any other. Its optimizer's
        variables are made here, for the variables trainable now: change what is trainable before
        ``compile_model``, not after (Keras asks for a new ``compile`` then too).
    """
    jit = resolve_jit_compile(jit_compile)
    if jit and run_eagerly:
        raise ValueError("jit_compile=True compiles the train step with XLA, which run_eagerly=True turns off; "
                         "pass one of them (jit_compile=False to debug eagerly).")
    recipe = get_recipe(recipe)
    epochs = epochs or recipe.epochs
    learning_rate = optimizers.learning_rate_schedule(recipe, learning_rate or recipe.learning_rate,
                                                     steps_per_epoch, epochs)
    if recipe.freeze_batch_norm:
        freeze_batch_norm(model)
    optimizer = optimizers.make_optimizer(recipe, model, learning_rate)
    if model_outputs.is_multitask(model):
        if not recipe.multitask:
            raise ValueError(f"recipe {recipe.name} trains segmentation only, but the model returns "
                             f"{sorted(model.output_names)}; use a multi-task recipe (one with loss_weights).")
        task_losses, weights, task_metrics = _task_losses_and_metrics(recipe, num_classes)
        model.compile(optimizer=optimizer, loss=task_losses, loss_weights=weights, metrics=task_metrics,
                      jit_compile=False, run_eagerly=run_eagerly)
        return set_xla_train_step(_build_optimizer(model), jit)
    if recipe.multitask:
        raise ValueError(f"recipe {recipe.name} trains segmentation and depth, but model {model.name!r} has one "
                         "output; build a multi-task model (outputs named 'segmentation' and 'depth').")
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
        metrics=[keras.metrics.MeanIoU(num_classes, ignore_class=255, sparse_y_true=True, sparse_y_pred=False,
                                       name="mean_iou"), PixelAccuracy(ignore_class=255)],
        jit_compile=False, run_eagerly=run_eagerly)
    return set_xla_train_step(_build_optimizer(model), jit)


def _build_optimizer(model):
    """Creates the optimizer's variables now, for the model's trainable variables, in the model's strategy scope.
    Keras creates them in the first training step, whose ``tf.function`` is then traced twice (once only to create
    them): the first step of a run takes about a third less time this way. Returns ``model``."""
    with model.distribute_strategy.scope():
        model.optimizer.build(model.trainable_variables)
    return model


def resolve_jit_compile(jit_compile="auto"):
    """``"auto"`` -> XLA when a GPU is visible; on the CPUs we measured it was slower
    (``benchmarks/training.py``; the documentation's Training page has the figures)."""
    if jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r}.")
    return jit_compile


#: The Keras policies ``mixed_precision`` may name.
MIXED_PRECISION_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


def mixed_precision_policy(mixed_precision):
    """The Keras policy for ``mixed_precision``: True picks ``mixed_float16`` on GPU (its tensor cores; Keras adds
    loss scaling, ``keras.mixed_precision.LossScaleOptimizer``, when it compiles), ``mixed_bfloat16`` on CPU and
    TPU; False gives ``float32``; a policy name is taken as it is.

    Example:
        >>> mixed_precision_policy(False), mixed_precision_policy("mixed_bfloat16")
        ('float32', 'mixed_bfloat16')
    """
    if isinstance(mixed_precision, str):
        if mixed_precision not in MIXED_PRECISION_POLICIES:
            raise ValueError(f"mixed_precision={mixed_precision!r} is not a policy; use True (the device's), False "
                             f"or one of {MIXED_PRECISION_POLICIES}.")
        return mixed_precision
    if not isinstance(mixed_precision, (bool, type(None))):
        raise ValueError(f"mixed_precision must be True, False or one of {MIXED_PRECISION_POLICIES}, got "
                         f"{mixed_precision!r}.")
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def set_xla_train_step(model, enabled=True):
    """Compiles ``model``'s train step with XLA (``enabled``) or not, leaving its test and predict steps plain.

    XLA compiles a program per input shape. Training batches are crops of one shape (one compile); validation
    images come at their own sizes, and ``compile(jit_compile=True)`` would compile the test step once per size.
    This puts an XLA-compiled ``train_step`` on the model object (public ``Model.train_step``, which Keras' train
    function calls; ``model.jit_compile`` stays False so the test step is not compiled). It lasts through
    ``fit``, ``train_on_batch`` and ``BackupAndRestore``; it is not saved (the model stays a plain functional
    ``keras.Model``), and it steps aside when the model is compiled again with another optimizer or runs
    eagerly. Call it after ``model.compile``; :func:`compile_model` does.

    Returns:
        ``model``.

    Example:
        >>> model = keras.Sequential([keras.Input([2]), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> _ = set_xla_train_step(model)
        >>> xla_train_step_function(model) is not None, bool(model.jit_compile)
        (True, False)
        >>> xla_train_step_function(set_xla_train_step(model, False)) is None
        True
    """
    if "train_step" in vars(model):
        del model.train_step  # back to the class's
    model.train_function = None  # traced again with the new step
    if not enabled:
        return model
    if model.optimizer is None:
        raise ValueError("set_xla_train_step needs a compiled model: call model.compile (or compile_model) first.")
    plain_step = model.train_step
    xla_step = tf.function(plain_step, jit_compile=True, reduce_retracing=True)
    optimizer = model.optimizer

    def train_step(data):
        if model.optimizer is not optimizer or tf.executing_eagerly():
            return plain_step(data)  # compiled again by hand, or run eagerly: Keras' own step
        return xla_step(data)

    train_step.xla_function = xla_step
    model.train_step = train_step
    return model


def xla_train_step_function(model):
    """The XLA ``tf.function`` of ``model``'s train step set by :func:`set_xla_train_step`, or None (e.g. for
    its ``experimental_get_tracing_count()``)."""
    return getattr(vars(model).get("train_step"), "xla_function", None)


# Dataset ops that call back into Python with state of their own: Dataset.from_generator (stateful
# numpy_function, "PyFunc") and tf.py_function ("EagerPyFunc"). The package's file pipelines decode with a
# stateless numpy_function ("PyFuncStateless"), which XLA runs safely.
_PYTHON_STATE_OPS = ("PyFunc", "EagerPyFunc")


def python_backed_ops(dataset):
    """The ops of ``dataset``'s graph that call stateful Python (``Dataset.from_generator``, ``tf.py_function``),
    sorted; empty for file and tensor pipelines (and for inputs that are not a ``tf.data.Dataset``).

    Example:
        >>> python_backed_ops(tf.data.Dataset.range(3).map(lambda x: x + 1))
        []
        >>> python_backed_ops(tf.data.Dataset.from_generator(lambda: iter([1, 2]), output_types=tf.int64))
        ['EagerPyFunc', 'PyFunc']
    """
    if not isinstance(dataset, tf.data.Dataset):
        return []
    serialized = tf.raw_ops.DatasetToGraphV2(input_dataset=tf.data.experimental.to_variant(dataset),
                                             external_state_policy=1, strip_device_assignment=True)  # 1: ignore
    graph = tf.compat.v1.GraphDef.FromString(serialized.numpy())
    ops = {node.op for node in graph.node}
    ops.update(node.op for function in graph.library.function for node in function.node_def)
    return sorted(ops.intersection(_PYTHON_STATE_OPS))


def keep_xla_off_python_data(model, dataset, argument="x"):
    """Runs ``model``'s train step without XLA, with one warning line, when ``dataset`` calls stateful Python.

    With the train step compiled by XLA, a ``Dataset.from_generator`` input has aborted the whole process on
    TF 2.21 (thousands of threads, "pthread_create() failed"). Call this before ``model.fit`` with data you did
    not build with :func:`refinenet_tf.data.make_dataset`; :func:`refinenet_tf.training.train` does. Validation
    data needs no check: the test step never runs under XLA (:func:`set_xla_train_step`).

    Returns:
        True when XLA stays on for the train step.
    """
    if xla_train_step_function(model) is None and not model.jit_compile:
        return False
    ops = python_backed_ops(dataset)
    if not ops:
        return True
    _log.warning(
        "%s= calls Python from inside tf.data (%s: Dataset.from_generator or tf.py_function), which XLA cannot take "
        "safely; its train steps run without XLA. Write the data to files (refinenet_tf.data.make_dataset) to "
        "train with XLA.", argument, ", ".join(ops))
    set_xla_train_step(model, False)
    model.jit_compile = False
    return False
