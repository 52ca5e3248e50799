"""Depth metrics accumulated over a dataset's valid pixels (depth > 0), as Keras metrics.

Each metric keeps two running sums, ``total`` (of a per-pixel quantity) and ``count`` (of valid pixels), over
every batch it sees, so its result is the mean over all valid pixels of the dataset -- not a mean of batch
means, which would let a batch with few valid pixels weigh as much as a full one. The definitions are the usual
ones of monocular depth estimation (Eigen et al., NIPS 2014), with ``d`` the true and ``p`` the predicted depth:

=========================  ======================================================
:class:`DepthRMSE`         ``sqrt(mean((p - d)^2))`` (DenseTorch's ``RMSE``)
:class:`DepthLogRMSE`      ``sqrt(mean((log p - log d)^2))``
:class:`AbsoluteRelativeError`  ``mean(|p - d| / d)``
:class:`SquaredRelativeError`   ``mean((p - d)^2 / d)``
:class:`DepthThresholdAccuracy` ``mean(max(p / d, d / p) < threshold)`` (1.25, 1.25^2, 1.25^3)
=========================  ======================================================

The metrics that divide by or take the log of ``p`` clip predictions below at ``min_depth`` (1 mm) first.

Segmentation needs nothing new: ``keras.metrics.MeanIoU(num_classes, ignore_class=255, sparse_y_pred=False)``
accumulates one confusion matrix over the dataset (mIoU) and :class:`refinenet_tf.training.PixelAccuracy`
accumulates correct and labelled pixel counts (pixel accuracy); both skip 255, so an unlabelled example adds
nothing (tests check both).
"""

import tensorflow as tf
import tf_keras as keras

__all__ = ["AbsoluteRelativeError", "DepthLogRMSE", "DepthRMSE", "DepthThresholdAccuracy", "SquaredRelativeError",
           "depth_metrics"]

_register = keras.saving.register_keras_serializable(package="refinenet_tf")


class _ValidPixelMetric(keras.metrics.Metric):
    """Base: the sum of ``_per_pixel`` over valid pixels, and their count; the result is their ratio."""

    def __init__(self, name, min_depth=1e-3, **kwargs):
        super().__init__(name=name, **kwargs)
        self.min_depth = min_depth
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def _per_pixel(self, depth, prediction):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        depth = tf.cast(y_true, tf.float32)
        prediction = tf.cast(y_pred, tf.float32)
        if prediction.shape.rank is not None and prediction.shape.rank == depth.shape.rank + 1:
            prediction = tf.squeeze(prediction, -1)
        valid = depth > 0
        weights = tf.cast(valid, tf.float32)
        if sample_weight is not None:
            sample_weight = tf.cast(sample_weight, tf.float32)
            while sample_weight.shape.rank is not None and sample_weight.shape.rank < weights.shape.rank:
                sample_weight = sample_weight[..., None]
            weights = weights * sample_weight
        safe_depth = tf.where(valid, depth, 1.0)
        values = tf.where(valid, self._per_pixel(safe_depth, prediction), 0.0)
        self.total.assign_add(tf.reduce_sum(tf.cast(values * weights, tf.float64)))
        self.count.assign_add(tf.reduce_sum(tf.cast(weights, tf.float64)))

    def _mean(self):
        return tf.cast(tf.math.divide_no_nan(self.total, self.count), tf.float32)

    def result(self):
        return self._mean()

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        config = super().get_config()
        config.update(min_depth=self.min_depth)
        return config


@_register
class DepthRMSE(_ValidPixelMetric):
    """Root mean squared depth error over valid pixels, in the depth's unit (metres).

    Example:
        >>> metric = DepthRMSE()
        >>> metric.update_state([[1.0, 2.0, 0.0]], [[2.0, 2.0, 5.0]])  # errors 1, 0; the 0 label is missing
        >>> metric.update_state([[4.0]], [[1.0]])                        # error 3
        >>> round(float(metric.result()), 4)  # sqrt((1 + 0 + 9) / 3)
        1.8257
    """

    def __init__(self, name="rmse", **kwargs):
        super().__init__(name=name, **kwargs)

    def _per_pixel(self, depth, prediction):
        return tf.square(prediction - depth)

    def result(self):
        return tf.sqrt(self._mean())


@_register
class DepthLogRMSE(_ValidPixelMetric):
    """Root mean squared difference of natural logs over valid pixels (predictions clipped at ``min_depth``)."""

    def __init__(self, name="log_rmse", **kwargs):
        super().__init__(name=name, **kwargs)

    def _per_pixel(self, depth, prediction):
        return tf.square(tf.math.log(tf.maximum(prediction, self.min_depth)) - tf.math.log(depth))

    def result(self):
        return tf.sqrt(self._mean())


@_register
class AbsoluteRelativeError(_ValidPixelMetric):
    """Mean of ``|prediction - depth| / depth`` over valid pixels."""

    def __init__(self, name="abs_rel", **kwargs):
        super().__init__(name=name, **kwargs)

    def _per_pixel(self, depth, prediction):
        return tf.abs(prediction - depth) / depth


@_register
class SquaredRelativeError(_ValidPixelMetric):
    """Mean of ``(prediction - depth)^2 / depth`` over valid pixels."""

    def __init__(self, name="sq_rel", **kwargs):
        super().__init__(name=name, **kwargs)

    def _per_pixel(self, depth, prediction):
        return tf.square(prediction - depth) / depth


@_register
class DepthThresholdAccuracy(_ValidPixelMetric):
    """Fraction of valid pixels with ``max(p / d, d / p) < threshold`` (δ < 1.25, 1.25², 1.25³).

    Args:
        threshold: 1.25, 1.25 ** 2 or 1.25 ** 3 in the literature.
        name: default ``delta1`` / ``delta2`` / ``delta3`` for those, else ``delta_<threshold>``.

    Example:
        >>> metric = DepthThresholdAccuracy(1.25)
        >>> metric.update_state([[1.0, 2.0, 4.0, 0.0]], [[1.2, 3.0, 4.0, 1.0]])  # ratios 1.2, 1.5, 1; one missing
        >>> round(float(metric.result()), 4)
        0.6667
    """

    def __init__(self, threshold=1.25, name=None, **kwargs):
        if not threshold > 1:
            raise ValueError(f"threshold= must be > 1, got {threshold}.")
        if name is None:
            powers = {1.25: "delta1", 1.25 ** 2: "delta2", 1.25 ** 3: "delta3"}
            name = next((n for t, n in powers.items() if abs(t - threshold) < 1e-9), f"delta_{threshold:g}")
        super().__init__(name=name, **kwargs)
        self.threshold = threshold

    def _per_pixel(self, depth, prediction):
        prediction = tf.maximum(prediction, self.min_depth)
        ratio = tf.maximum(prediction / depth, depth / prediction)
        return tf.cast(ratio < self.threshold, tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update(threshold=self.threshold)
        return config


def depth_metrics():
    """The seven usual depth metrics, fresh: RMSE, log RMSE, abs rel, sq rel, δ1, δ2, δ3.

    Example:
        >>> [metric.name for metric in depth_metrics()]
        ['rmse', 'log_rmse', 'abs_rel', 'sq_rel', 'delta1', 'delta2', 'delta3']
    """
    return [DepthRMSE(), DepthLogRMSE(), AbsoluteRelativeError(), SquaredRelativeError(),
            DepthThresholdAccuracy(1.25), DepthThresholdAccuracy(1.25 ** 2), DepthThresholdAccuracy(1.25 ** 3)]
