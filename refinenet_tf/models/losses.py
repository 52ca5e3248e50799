"""Losses for joint segmentation and depth, averaged over the batch's *valid* pixels only.

Asymmetric annotations (Nekrasov et al., ICRA 2019): an example may lack its segmentation mask (every pixel
``ignore_class``, 255) or its depth map (every pixel 0 = missing). Such an example trains the other task only,
in the same batch: its missing task's loss is exactly zero and so is the gradient with respect to that task's
prediction for it. A batch in which no pixel is valid gives a loss of 0 (never NaN).

Every loss here returns one value per example, scaled so that Keras' default reduction (the mean over the batch)
gives ``sum of pixel losses / valid pixels of the batch`` -- the mean over valid pixels, not a mean of
per-example means, so an example with few valid pixels weighs as little as it should. Per-example
``sample_weight`` multiplies an example's share.

Per-task loss weights go through ``compile`` on a model with outputs named ``segmentation`` and ``depth``
(the recipe of DenseTorch's multi-task example weighs both tasks 0.5)::

    model.compile(optimizer,
                  loss={"segmentation": SegmentationCrossEntropy(), "depth": InverseHuberLoss()},
                  loss_weights={"segmentation": 0.5, "depth": 0.5})

Why :class:`SegmentationCrossEntropy` and not ``SparseCategoricalCrossentropy(ignore_class=255)``: the built-in
already averages over the batch's valid pixels and gives an all-255 example zero gradient, but a batch whose
masks are *all* 255 (likely with small batches and many unlabelled examples) makes it return NaN, which stops
training under ``TerminateOnNaN``; this one returns 0 there and is otherwise equal (a test checks both).
"""

import tensorflow as tf
import tf_keras as keras

__all__ = ["DepthL1Loss", "InverseHuberLoss", "SegmentationCrossEntropy", "depth_loss"]

_register = keras.saving.register_keras_serializable(package="refinenet_tf")


def _depth_prediction(y_true, y_pred):
    """Predictions as float32 with the labels' shape (a trailing channel of 1 is dropped)."""
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    if y_pred.shape.rank is not None and y_true.shape.rank is not None and y_pred.shape.rank == y_true.shape.rank + 1:
        y_pred = tf.squeeze(y_pred, -1)
    return y_true, y_pred


class _ValidPixelLoss(keras.losses.Loss):
    """Base: ``_pixel_losses`` gives per-pixel losses and a validity mask; ``call`` normalises by valid pixels."""

    def _pixel_losses(self, y_true, y_pred):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        losses, valid = self._pixel_losses(y_true, y_pred)
        valid = tf.cast(valid, tf.float32)
        losses = tf.where(valid > 0, losses, 0.0)  # invalid pixels: exactly 0, gradient 0
        axes = tf.range(1, tf.rank(losses))
        per_example = tf.reduce_sum(losses, axis=axes)
        batch = tf.cast(tf.shape(losses)[0], tf.float32)
        # mean over the batch of per_example * batch / valid == sum / valid (0 when nothing is valid).
        return tf.math.divide_no_nan(per_example * batch, tf.reduce_sum(valid))


@_register
class SegmentationCrossEntropy(_ValidPixelLoss):
    """Cross-entropy over the pixels whose label is not ``ignore_class``; 0 when a batch has none.

    Args:
        ignore_class: the label of pixels that do not count (255; an unlabelled example is all 255).
        from_logits: ``y_pred`` holds logits (the models' output) rather than probabilities.

    Example:
        >>> loss = SegmentationCrossEntropy()
        >>> float(loss(tf.constant([[0, 255]]), tf.math.log(tf.constant([[[0.5, 0.5], [0.9, 0.1]]]))))
        0.693...
        >>> float(loss(tf.constant([[255, 255]]), tf.zeros([1, 2, 2])))
        0.0
    """

    def __init__(self, ignore_class=255, from_logits=True, name="segmentation_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_class = ignore_class
        self.from_logits = from_logits

    def _pixel_losses(self, y_true, y_pred):
        y_true = tf.cast(y_true, tf.int32)
        y_pred = tf.cast(y_pred, tf.float32)
        if y_true.shape.rank is not None and y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        valid = tf.not_equal(y_true, self.ignore_class)
        safe_labels = tf.where(valid, y_true, 0)
        losses = keras.losses.sparse_categorical_crossentropy(safe_labels, y_pred, from_logits=self.from_logits)
        return losses, valid

    def get_config(self):
        config = super().get_config()
        config.update(ignore_class=self.ignore_class, from_logits=self.from_logits)
        return config


@_register
class InverseHuberLoss(_ValidPixelLoss):
    """The reverse Huber (berHu) depth loss of Laina et al. (3DV 2016), as DenseTorch's ``InvHuberLoss``.

    With ``e = |prediction - depth|`` on valid pixels (depth > 0) and ``c = threshold * max(e)`` over the
    batch's valid pixels, a pixel costs ``e`` where ``e <= c`` and ``(e^2 + c^2) / (2c)`` beyond: L1 for small
    errors, L2 for large ones, continuous at ``c``. ``c`` is a constant of the step (no gradient flows through the
    max), as in the paper. Differences to DenseTorch: the mean is over valid pixels (DenseTorch divides by all
    pixels, so a batch's loss shrinks with its missing depth), and predictions are not clipped at 0 (DenseTorch
    applies a ReLU inside the loss, which stops the gradient of negative predictions).

    Args:
        threshold: ``c`` as a fraction of the batch's largest absolute error (0.2 in the paper and DenseTorch).

    Example:
        >>> loss = InverseHuberLoss()
        >>> # errors 1 and 5 (c = 1): (1 + (25 + 1) / 2) / 2 = 7; the 0 label is missing and does not count
        >>> float(loss(tf.constant([[2.0, 3.0, 0.0]]), tf.constant([[3.0, 8.0, 9.0]])))
        7.0
    """

    def __init__(self, threshold=0.2, name="inverse_huber", **kwargs):
        super().__init__(name=name, **kwargs)
        if not threshold > 0:
            raise ValueError(f"threshold= must be > 0, got {threshold}.")
        self.threshold = threshold

    def _pixel_losses(self, y_true, y_pred):
        y_true, y_pred = _depth_prediction(y_true, y_pred)
        valid = y_true > 0
        error = tf.abs(tf.where(valid, y_pred - y_true, 0.0))
        c = tf.stop_gradient(self.threshold * tf.reduce_max(error))
        quadratic = (tf.square(error) + tf.square(c)) / (2.0 * tf.maximum(c, 1e-12))
        return tf.where(error <= c, error, quadratic), valid

    def get_config(self):
        config = super().get_config()
        config.update(threshold=self.threshold)
        return config


@_register
class DepthL1Loss(_ValidPixelLoss):
    """Mean absolute depth error over valid pixels (depth > 0).

    Example:
        >>> float(DepthL1Loss()(tf.constant([[2.0, 3.0, 0.0]]), tf.constant([[3.0, 8.0, 9.0]])))
        3.0
    """

    def __init__(self, name="depth_l1", **kwargs):
        super().__init__(name=name, **kwargs)

    def _pixel_losses(self, y_true, y_pred):
        y_true, y_pred = _depth_prediction(y_true, y_pred)
        valid = y_true > 0
        return tf.abs(tf.where(valid, y_pred - y_true, 0.0)), valid


_DEPTH_LOSSES = {"berhu": InverseHuberLoss, "inverse_huber": InverseHuberLoss, "l1": DepthL1Loss}


def depth_loss(name="berhu"):
    """The depth loss called ``name``: ``"berhu"`` (= ``"inverse_huber"``) or ``"l1"``."""
    if name not in _DEPTH_LOSSES:
        raise ValueError(f"depth_loss={name!r} is not a depth loss; use one of {sorted(_DEPTH_LOSSES)}.")
    return _DEPTH_LOSSES[name]()
