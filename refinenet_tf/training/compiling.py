"""Compiling a model for its recipe: losses, metrics, the optimizer, XLA and the precision policy."""

import tensorflow as tf
import tf_keras as keras

from refinenet_tf import runs
from refinenet_tf.recipes import get_recipe
from refinenet_tf.training import optimizers

__all__ = ["PixelAccuracy", "compile_model", "freeze_batch_norm", "mixed_precision_policy", "resolve_jit_compile"]

_register = keras.saving.register_keras_serializable(package="refinenet_tf")


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
    from refinenet_tf import losses, metrics

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
                  jit_compile="auto"):
    """Compiles ``model`` with ``recipe``'s optimizer: for segmentation, or for segmentation and depth.

    A segmentation model gets the cross-entropy ignoring 255, mean IoU and pixel accuracy. A multi-task model
    (outputs named ``segmentation`` and ``depth``, :func:`refinenet_tf.runs.is_multitask`) gets per output
    :class:`refinenet_tf.losses.SegmentationCrossEntropy` and the recipe's depth loss
    (:func:`refinenet_tf.losses.depth_loss`), weighted by the recipe's ``loss_weights``, and as metrics mean IoU
    and pixel accuracy, and the seven depth metrics of :func:`refinenet_tf.metrics.depth_metrics`. Both losses
    average over valid pixels only, so an example without a mask (all 255) or without depth (all 0) trains the
    other head only, in the same batch.

    Args:
        model: a RefineNet (logits at the masks' resolution) or a multi-task model.
        recipe: a :class:`refinenet_tf.recipes.Recipe` or its name.
        num_classes: for the mean IoU.
        learning_rate: overrides the recipe's.
        steps_per_epoch, epochs: for learning-rate schedules.
        jit_compile: ``"auto"`` (XLA on GPU, not on CPU, where it was measured slower), True or False.

    Returns:
        ``model``, compiled.
    """
    recipe = get_recipe(recipe)
    epochs = epochs or recipe.epochs
    learning_rate = optimizers.learning_rate_schedule(recipe, learning_rate or recipe.learning_rate,
                                                     steps_per_epoch, epochs)
    if recipe.freeze_batch_norm:
        freeze_batch_norm(model)
    optimizer = optimizers.make_optimizer(recipe, model, learning_rate)
    if runs.is_multitask(model):
        if not recipe.multitask:
            raise ValueError(f"recipe {recipe.name} trains segmentation only, but the model returns "
                             f"{sorted(model.output_names)}; use a multi-task recipe (one with loss_weights).")
        task_losses, weights, task_metrics = _task_losses_and_metrics(recipe, num_classes)
        model.compile(optimizer=optimizer, loss=task_losses, loss_weights=weights, metrics=task_metrics,
                      jit_compile=resolve_jit_compile(jit_compile))
        return model
    if recipe.multitask:
        raise ValueError(f"recipe {recipe.name} trains segmentation and depth, but model {model.name!r} has one "
                         "output; build a multi-task model (outputs named 'segmentation' and 'depth').")
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
        metrics=[keras.metrics.MeanIoU(num_classes, ignore_class=255, sparse_y_true=True, sparse_y_pred=False,
                                       name="mean_iou"), PixelAccuracy(ignore_class=255)],
        jit_compile=resolve_jit_compile(jit_compile))
    return model


def resolve_jit_compile(jit_compile="auto"):
    """``"auto"`` -> XLA when a GPU is visible; on the CPUs we measured it was slower (``refinenet-tf
    train-benchmark``; the documentation's Training page has the figures)."""
    if jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r}.")
    return jit_compile


def mixed_precision_policy(enabled):
    """The policy for ``mixed_precision``: ``mixed_float16`` on GPU, ``mixed_bfloat16`` on CPU / TPU."""
    if not enabled:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
