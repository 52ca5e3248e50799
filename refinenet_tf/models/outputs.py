"""What a model's heads give, at the input's own size: class probabilities and labels, depth and normals,
averaged over test-time augmentation (scales and flips).

:func:`segment_outputs` is the one TensorFlow function that every engine runs: the default ``keras`` engine
(:mod:`refinenet_tf.inference.engines`) calls it on the Keras model, and the exported SavedModel / TFLite / ONNX /
OpenVINO models carry it (:mod:`refinenet_tf.export`). :func:`is_multitask` and :func:`output_classes` read a
model's heads.
"""

import tensorflow as tf
import tf_keras as keras  # noqa: F401  (the examples)

from refinenet_tf._checks import check_scales
from refinenet_tf.models import layers

__all__ = ["check_task_augmentation", "is_multitask", "output_classes", "segment",
           "segment_outputs"]


def _resize_to(values, size):
    """``values`` (``[N, h, w, C]`` float) resized bilinearly to ``size`` (TF2's ``tf.image.resize``,
    :func:`refinenet_tf.models.layers.resize_bilinear` ``"bilinear"``), without a pass over them where they already have
    ``size``: every preset upsamples its logits to the input size itself (``upsample_logits=True``). At the same
    size the resize samples every pixel exactly and returns finite values unchanged, so skipping it changes
    nothing (an infinite value stays itself instead of becoming NaN). The sizes are compared when tracing where
    both are known (``size`` as Python ints, :func:`refinenet_tf.models.layers._spatial_size`), else when running.

    Example:
        >>> logits = tf.random.stateless_normal([1, 5, 7, 3], seed=[1, 2])
        >>> bool(tf.reduce_all(_resize_to(logits, [5, 7]) == tf.image.resize(logits, [5, 7])))
        True
        >>> _resize_to(logits, tf.constant([10, 14])).shape
        TensorShape([1, 10, 14, 3])
    """
    static_size = tf.get_static_value(size)
    if static_size is not None and values.shape[1:3].is_fully_defined():
        if tuple(values.shape[1:3]) == tuple(int(side) for side in static_size):
            return values
        return layers.resize_bilinear(values, size, "bilinear")
    same = tf.reduce_all(tf.equal(tf.shape(values)[1:3], size))
    return tf.cond(same, lambda: tf.identity(values), lambda: layers.resize_bilinear(values, size, "bilinear"))


def segment(model, images, scales=(1.0,), flip=False, max_side=None):
    """Class probabilities of ``images`` at their own resolution, averaged over scales and flips: the
    ``"probabilities"`` of :func:`segment_outputs` (float32 ``[N, H, W, C]``), whose arguments it takes."""
    return segment_outputs(model, images, scales, flip, max_side)["probabilities"]


def check_task_augmentation(tasks, scales, flip, max_side, name):
    """Refuses test-time augmentation a multi-task model (``tasks``: its outputs' names) cannot take: other
    scales or ``max_side`` (zooming an image changes what its depth means), flip with a normals head (mirroring
    would need its x component turned)."""
    if "depth" in tasks and (tuple(scales) != (1.0,) or max_side is not None):
        raise ValueError(f"{name} has a depth head: run it at scales=(1.0,) and max_side=None (zooming an image "
                         "changes what its depth means); flip=True is fine.")
    if "normals" in tasks and flip:
        raise ValueError(f"{name} has a normals head: run it with flip=False.")


def segment_outputs(model, images, scales=(1.0,), flip=False, max_side=None):
    """Every per-pixel output of ``model`` on ``images``, at their own resolution, averaged over scales and flips.

    For each scale the batch is resized (bilinear) to ``round(scale * size)``, run through ``model`` (and, with
    ``flip``, also mirrored left-right, run, and mirrored back); the logits are resized (bilinear) to the input
    size, turned into probabilities by a softmax, and all views' probabilities are averaged. With the default
    ``scales=(1.0,)`` and no flip this is ``softmax(resize(model(images)))``. A multi-task model's ``depth``
    (averaged over the flips like the probabilities) and ``normals`` (unit length) come resized the same way.

    Args:
        model: a segmentation model mapping float32 RGB ``[N, H, W, 3]`` in [0, 255] to logits ``[N, h, w, C]``
            (any ``h, w``), or a multi-task model returning ``{"segmentation": logits, "depth": [N, h, w, 1],
            "normals": [N, h, w, 3]}`` (those it has; see :func:`check_task_augmentation` for its augmentation).
        images: ``[N, H, W, 3]`` tensor, uint8 or float in [0, 255].
        scales: input scales to average over (e.g. ``(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)``).
        flip: also average over horizontally mirrored inputs.
        max_side: if the longer side of ``images`` exceeds it, every scale is shrunk by
            ``max_side / longer side`` (memory-safe inference on huge images); the output keeps the input size.

    Returns:
        ``{"probabilities": float32 [N, H, W, C] (they sum to 1 over C), "labels": int32 [N, H, W]}`` for a
        segmentation model; a multi-task model's also ``"depth"`` float32 ``[N, H, W]`` and ``"normals"``
        float32 ``[N, H, W, 3]``, those it has.

    Example:
        >>> inputs = keras.Input([None, None, 3])
        >>> model = keras.Model(inputs, {"segmentation": keras.layers.Conv2D(3, 1)(inputs),
        ...                              "depth": keras.layers.Conv2D(1, 1)(inputs)})
        >>> outputs = segment_outputs(model, tf.zeros([2, 9, 11, 3], tf.uint8), flip=True)
        >>> {name: tuple(value.shape) for name, value in sorted(outputs.items())}
        {'depth': (2, 9, 11), 'labels': (2, 9, 11), 'probabilities': (2, 9, 11, 3)}
    """
    scales = check_scales(scales)
    images = tf.cast(images, tf.float32)
    size = layers._spatial_size(images)
    factor = tf.constant(1.0)
    if max_side is not None:
        factor = tf.minimum(1.0, float(max_side) / tf.cast(tf.reduce_max(size), tf.float32))
    totals = {}
    for scale in scales:
        scaled = images
        if scale != 1.0 or max_side is not None:
            scaled_size = tf.maximum(1, tf.cast(tf.round(tf.cast(size, tf.float32) * scale * factor), tf.int32))
            scaled = _resize_to(images, scaled_size)
        for mirrored in (False, True) if flip else (False,):
            outputs = model(tf.reverse(scaled, axis=[2]) if mirrored else scaled, training=False)
            if isinstance(outputs, (list, tuple)):  # a multi-task model with its outputs as a list
                outputs = dict(zip(model.output_names, outputs))
            elif not isinstance(outputs, dict):
                outputs = {"segmentation": outputs}
            check_task_augmentation(tuple(outputs), scales, flip, max_side, getattr(model, "name", "the model"))
            for task, value in outputs.items():
                value = tf.cast(value, tf.float32)
                if task == "depth" and value.shape.rank == 3:
                    value = value[..., None]
                if mirrored:
                    value = tf.reverse(value, axis=[2])
                value = _resize_to(value, size)
                if task == "segmentation":
                    task, value = "probabilities", tf.nn.softmax(value, axis=-1)
                totals[task] = value if task not in totals else totals[task] + value
    views = float(len(scales) * (2 if flip else 1))
    result = {}
    if "probabilities" in totals:
        result["probabilities"] = totals["probabilities"] / views
        result["labels"] = tf.argmax(result["probabilities"], axis=-1, output_type=tf.int32)
    if "depth" in totals:
        # tf.squeeze, not [..., 0]: on the output of `_resize_to`'s tf.cond (an OpenVINO If), OpenVINO's CPU plugin
        # (2026.4) ran that strided slice of the size-1 channel as a view of a buffer it frees and reuses while the
        # segmentation head runs, so with both heads an export's `depth` read stale heap bytes (1e37, 6e-41, ...).
        # Squeeze is the same values and OpenVINO keeps it right (ONNX and TensorFlow too).
        result["depth"] = tf.squeeze(totals["depth"], axis=-1) / views
    if "normals" in totals:
        result["normals"] = tf.math.l2_normalize(totals["normals"], axis=-1, epsilon=1e-12)
    return result


def is_multitask(model):
    """Whether ``model`` returns a dict of task outputs (segmentation and depth) rather than one logits tensor."""
    return isinstance(getattr(model, "output", None), dict) or "depth" in (getattr(model, "output_names", None)
                                                                           or ())


def output_classes(model):
    """The class count of a segmentation model's logits, or of a multi-task model's ``"segmentation"`` output.

    Example:
        >>> import tf_keras
        >>> inputs = tf_keras.Input([8, 8, 3])
        >>> heads = {"segmentation": tf_keras.layers.Conv2D(5, 1, name="segmentation")(inputs),
        ...          "depth": tf_keras.layers.Conv2D(1, 1, name="depth")(inputs)}
        >>> model = tf_keras.Model(inputs, heads)
        >>> output_classes(model), is_multitask(model)
        (5, True)
    """
    shape = model.output_shape
    if isinstance(shape, dict):
        shape = shape["segmentation"]
    elif is_multitask(model):
        shape = shape[list(model.output_names).index("segmentation")]
    return shape[-1]
