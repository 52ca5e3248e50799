"""Model size and FLOPs, counted by the TensorFlow profiler on the model's concrete function.

The profiler counts a multiply-add as two floating-point operations (FLOPs). Papers often quote
multiply-accumulates (MACs) as "FLOPs": half the profiler's count.
"""

import numpy as np
import tensorflow as tf

from refinenet_tf._checks import positive_int

__all__ = ["count_flops", "count_parameters", "flops_by_op"]


def count_parameters(model):
    """``(total, trainable)`` parameter counts; total includes BatchNorm moving statistics."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return model.count_params(), trainable


def count_flops(model, height, width, batch_size=1):
    """Floating-point operations of one inference pass on a ``[batch_size, height, width, 3]`` input.

    The model's forward pass is traced at that fixed shape (a ``tf.function`` concrete function: the network
    as built) and its graph handed to ``tf.compat.v1.profiler`` (``float_operation`` view): convolutions, matmuls and element-wise ops are
    counted, multiply-adds as 2.

    Example:
        >>> import tf_keras as keras
        >>> inputs = keras.Input((None, None, 3))
        >>> conv = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs))
        >>> count_flops(conv, 8, 8)  # 2 * (8 * 8 positions) * (3 * 3 * 3 inputs) * 4 outputs
        13824
    """
    return sum(flops_by_op(model, height, width, batch_size).values())


def flops_by_op(model, height, width, batch_size=1):
    """:func:`count_flops` per op type, as ``{op type: FLOPs}`` (``"Conv2D"``, ``"BiasAdd"``, ...).

    Example:
        >>> import tf_keras as keras
        >>> inputs = keras.Input((None, None, 3))
        >>> conv = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs))
        >>> flops_by_op(conv, 8, 8)
        {'Conv2D': 13824}
    """
    for name, value in (("height", height), ("width", width), ("batch_size", batch_size)):
        positive_int(name, value)
    spec = tf.TensorSpec([batch_size, height, width, 3], tf.float32)
    concrete = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    logger = tf.get_logger()  # the v1 profiler is the TF profiler; its deprecation notice (a warning) is noise here
    level = logger.level
    logger.setLevel("ERROR")
    try:
        profile = tf.compat.v1.profiler.profile(graph=concrete.graph, run_meta=tf.compat.v1.RunMetadata(),
                                                cmd="op", options=options)
    finally:
        logger.setLevel(level)
    return {child.name: int(child.total_float_ops) for child in profile.children if child.total_float_ops}

