"""Backbones in the official PyTorch releases' layout, so that their trained weights load unchanged.

keras.applications' ResNets and MobileNetV2 are not the networks the official RefineNet / Light-Weight
RefineNet checkpoints hold. The layouts here follow the releases exactly:

* **ResNet-50/101/152 as in torchvision** (what ``light-weight-refinenet`` and ``refinenet-pytorch`` use):
  stem 7x7/2 conv + BatchNorm + ReLU + 3x3/2 max-pool; bottlenecks ``1x1 -> 3x3 (stride here) -> 1x1`` with no
  conv biases, a 1x1 strided projection shortcut on each stage's first block, BatchNorm epsilon 1e-5.
* **The Light-Weight RefineNet MobileNetV2** (``layer1`` .. ``layer8`` of the release): a 3x3/2 conv + BatchNorm
  + ReLU6, then seven stages of inverted residual blocks, each ``1x1 expansion (also when the factor is 1) ->
  3x3 depthwise -> 1x1 projection``, ReLU6 after the first two, a residual sum when the shape allows.

PyTorch pads symmetrically (``padding=k // 2`` on every side); Keras' ``"same"`` padding puts the extra pixel
of a stride-2 convolution at the bottom/right. So every strided convolution with a kernel larger than 1 is an
explicit ``ZeroPadding2D(k // 2)`` and a ``"valid"`` convolution, which gives PyTorch's output size
``floor((n + 2p - k) / 2) + 1`` and its sampling grid for any input size. Stride-1 convolutions use ``"same"``
(symmetric for odd kernels). The max-pool (``padding=1``, padding with -inf in PyTorch) follows a ReLU, so its
inputs are >= 0 and zero padding gives the same maxima. BatchNorm momentum is 0.9 (PyTorch's ``momentum=0.1``).

Layer names say where a tensor sits in the release (``layer3_block2_conv2``: the second block of ``layer3``,
its 3x3 convolution); :mod:`refinenet_tf.convert.pytorch` maps the checkpoints' names onto them.
"""

import tf_keras as keras

__all__ = ["MOBILENETV2_STAGES", "RESNET_BLOCKS", "build_lw_mobilenetv2", "build_resnet", "lw_mobilenetv2_taps",
           "resnet_taps"]

#: blocks per stage (``layer1`` .. ``layer4``) of torchvision's bottleneck ResNets.
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

#: The release's ``mobilenet_config``: (expansion factor, output channels, blocks, stride) of ``layer2`` ..
#: ``layer8``.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))

_BATCH_NORM = dict(epsilon=1e-5, momentum=0.9)


def _conv(x, filters, kernel_size, name, strides=1, depthwise=False):
    """A bias-free convolution with PyTorch's symmetric ``padding=kernel_size // 2``."""
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    if depthwise:
        return keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding, use_bias=False,
                                            name=name)(x)
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                               name=name)(x)


def _batch_norm(x, name):
    return keras.layers.BatchNormalization(name=name, **_BATCH_NORM)(x)


def _bottleneck(x, planes, strides, project, name):
    shortcut = x
    y = keras.layers.ReLU(name=f"{name}_relu1")(_batch_norm(_conv(x, planes, 1, f"{name}_conv1"), f"{name}_bn1"))
    y = _conv(y, planes, 3, f"{name}_conv2", strides=strides)
    y = keras.layers.ReLU(name=f"{name}_relu2")(_batch_norm(y, f"{name}_bn2"))
    y = _batch_norm(_conv(y, 4 * planes, 1, f"{name}_conv3"), f"{name}_bn3")
    if project:
        shortcut = _conv(x, 4 * planes, 1, f"{name}_downsample_conv", strides=strides)
        shortcut = _batch_norm(shortcut, f"{name}_downsample_bn")
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def _load(model, weights):
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        raise ValueError(f"backbone_weights='imagenet': there is no download for the PyTorch-layout backbone "
                         f"{model.name!r}; convert an official checkpoint (refinenet_tf.convert.pytorch), give "
                         "a keras weights file of this backbone, or pass backbone_weights=None.")
    model.load_weights(weights)
    return model


def build_resnet(depth, weights=None, input_shape=(None, None, 3)):
    """torchvision's ResNet-``depth`` (50, 101 or 152) without its classifier, in Keras.

    Args:
        depth: 50, 101 or 152.
        weights: ``None`` (random) or the path of a keras weights file of this backbone.
        input_shape: ``(height, width, 3)``.

    Returns:
        A ``keras.Model`` named ``resnet<depth>_torch``; its stages end in ``layer<i>_block<n>_out``.

    Example:
        >>> model = build_resnet(50)
        >>> model(tf.zeros([1, 65, 97, 3])).shape
        TensorShape([1, 3, 4, 2048])
    """
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"depth={depth!r}: the PyTorch-layout ResNets are {sorted(RESNET_BLOCKS)}.")
    images = keras.Input(input_shape, name="images")
    x = _batch_norm(_conv(images, 64, 7, "stem_conv", strides=2), "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for stage, (blocks, planes) in enumerate(zip(RESNET_BLOCKS[depth], (64, 128, 256, 512)), start=1):
        for block in range(1, blocks + 1):
            x = _bottleneck(x, planes, strides=2 if stage > 1 and block == 1 else 1, project=block == 1,
                            name=f"layer{stage}_block{block}")
    return _load(keras.Model(images, x, name=f"resnet{depth}_torch"), weights)


def resnet_taps(depth):
    """The pyramid levels of :func:`build_resnet`: the ends of ``layer1`` .. ``layer4`` (strides 4 .. 32)."""
    return {level: f"layer{stage}_block{blocks}_out"
            for stage, (level, blocks) in enumerate(zip(("P2", "P3", "P4", "P5"), RESNET_BLOCKS[depth]), start=1)}


def _inverted_residual(x, in_channels, out_channels, expansion, strides, name):
    hidden = in_channels * expansion
    y = _batch_norm(_conv(x, hidden, 1, f"{name}_expand_conv"), f"{name}_expand_bn")
    y = keras.layers.ReLU(6.0, name=f"{name}_expand_relu6")(y)
    y = _batch_norm(_conv(y, hidden, 3, f"{name}_depthwise_conv", strides=strides, depthwise=True),
                    f"{name}_depthwise_bn")
    y = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu6")(y)
    y = _batch_norm(_conv(y, out_channels, 1, f"{name}_project_conv"), f"{name}_project_bn")
    if in_channels == out_channels and strides == 1:
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return y


def build_lw_mobilenetv2(weights=None, input_shape=(None, None, 3)):
    """The official Light-Weight RefineNet's MobileNetV2 (``layer1`` .. ``layer8``), in Keras.

    Args:
        weights: ``None`` (random) or the path of a keras weights file of this backbone.
        input_shape: ``(height, width, 3)``.

    Returns:
        A ``keras.Model`` named ``mobilenetv2_lw_torch`` ending in ``layer8`` (320 channels, stride 32).

    Example:
        >>> build_lw_mobilenetv2()(tf.zeros([1, 65, 97, 3])).shape
        TensorShape([1, 3, 4, 320])
    """
    images = keras.Input(input_shape, name="images")
    x = _batch_norm(_conv(images, 32, 3, "layer1_conv", strides=2), "layer1_bn")
    x = keras.layers.ReLU(6.0, name="layer1_relu6")(x)
    channels = 32
    for layer, (expansion, out_channels, blocks, strides) in enumerate(MOBILENETV2_STAGES, start=2):
        for block in range(1, blocks + 1):
            x = _inverted_residual(x, channels, out_channels, expansion, strides if block == 1 else 1,
                                   name=f"layer{layer}_block{block}")
            channels = out_channels
    return _load(keras.Model(images, x, name="mobilenetv2_lw_torch"), weights)


def _stage_end(layer):
    blocks = MOBILENETV2_STAGES[layer - 2][2]
    return f"layer{layer}_block{blocks}_" + ("add" if blocks > 1 else "project_bn")


def lw_mobilenetv2_taps():
    """The six levels the official Light-Weight RefineNet fuses: the ends of ``layer3`` .. ``layer8``.

    ``P4a``/``P4`` are ``layer5``/``layer6`` (64 and 96 channels, stride 16), ``P5a``/``P5`` ``layer7``/``layer8``
    (160 and 320 channels, stride 32).
    """
    return {"P2": _stage_end(3), "P3": _stage_end(4), "P4a": _stage_end(5), "P4": _stage_end(6),
            "P5a": _stage_end(7), "P5": _stage_end(8)}
