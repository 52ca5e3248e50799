"""RefineNet builders: one call returns a plain functional ``keras.Model``.

``RefineNet(variant="slim")`` is the reference code's ``model()``::

    f = [P5, P4, P3, P2]                       # backbone features, strides 32, 16, 8, 4
    h[i] = slim.conv2d(f[i], 256, 1)           # Conv 1x1 + BN + ReLU
    g[0] = RefineBlock(None, h[0])
    g[i] = RefineBlock(g[i - 1], h[i])
    logits = slim.conv2d(g[3], num_classes, 1, activation_fn=tf.nn.relu, normalizer_fn=None)   # at 1/4

Decoders are looked up in ``DECODERS`` by ``variant``; a new variant is one more entry there.
"""

import tf_keras as keras

from refinenet_tf import backbones as backbones_lib
from refinenet_tf import layers

__all__ = ["DECODERS", "RefineNet"]


def _slim_decoder(features, *, num_classes, decoder_features, weight_decay, interpolation, logits_relu):
    """The reference code's decoder. ``features`` are the backbone outputs ``[P2, P3, P4, P5]``."""
    scope = dict(weight_decay=weight_decay, batch_norm_momentum=0.997, batch_norm_epsilon=1e-5)
    levels = list(zip(backbones_lib.PYRAMID_LEVELS, features))[::-1]  # coarse to fine, as f[0..3]
    previous = None
    for level, feature in levels:
        reduced = layers.ConvBNReLU(decoder_features, 1, name=f"reduce_{level.lower()}", **scope)(feature)
        block = layers.RefineBlock(features=decoder_features, kernel_size=3, interpolation=interpolation,
                                   name=f"refine_{level.lower()}", **scope)
        previous = block(reduced if previous is None else [previous, reduced])
    return layers.ConvBNReLU(num_classes, 1, use_batch_norm=False, activation="relu" if logits_relu else None,
                             weight_decay=weight_decay, dtype="float32", name="classifier")(previous)


#: variant name -> decoder builder ``(features, **options) -> logits at 1/4 resolution``.
DECODERS = {
    "slim": _slim_decoder,
}


def RefineNet(num_classes=21, backbone="resnet101", backbone_weights="imagenet", input_shape=(None, None, 3),
              variant="slim", upsample_logits=True, freeze_backbone=False, decoder_features=256,
              weight_decay=1e-5, interpolation="bilinear_tf1", logits_relu=True, name=None):
    """Builds a RefineNet for semantic segmentation.

    The model takes RGB images in [0, 255] (uint8 or float) of any size and applies the backbone's own
    preprocessing inside, so ``model.predict(images)`` needs nothing else. It returns float32 logits (also
    under a mixed-precision policy).

    Args:
        num_classes: number of classes, background included (21 for PASCAL VOC).
        backbone: a registered backbone name: ``"resnet50"``, ``"resnet101"`` or ``"resnet152"``
            (see ``refinenet_tf.backbones``).
        backbone_weights: ``"imagenet"`` (keras downloads them on first use), ``None`` (random) or the path of a
            keras weights file for the backbone.
        input_shape: ``(height, width, 3)``; ``(None, None, 3)`` takes any size.
        variant: the decoder; ``"slim"`` is the reference TF-slim code.
        upsample_logits: resize the logits (computed at 1/4 of the input) to the input size, so that
            ``model.fit`` works with full-resolution masks. ``False`` returns them at 1/4, as the slim code.
        freeze_backbone: make the backbone untrainable (its BatchNorm layers then use their moving statistics).
        decoder_features: width of the decoder (256 in the slim code).
        weight_decay: the slim ``l2_regularizer`` scale (1e-5), applied to every conv kernel, backbone
            included, as slim's ``resnet_arg_scope`` does; ``None`` or 0 turns it off.
        interpolation: ``"bilinear_tf1"`` (TF1 ``resize_bilinear``, what slim's ``unpool`` computes) or
            ``"bilinear"`` (TF2 half-pixel centres) for every resize in the model.
        logits_relu: keep the ReLU that the slim code applies to its logits.
        name: the model's name (default ``refinenet_<variant>_<backbone>``).

    Returns:
        A functional ``keras.Model`` mapping ``[N, H, W, 3]`` images to ``[N, H, W, num_classes]`` logits
        (``[N, ceil(H/4), ceil(W/4), num_classes]`` without ``upsample_logits``).

    Example:
        >>> model = RefineNet(num_classes=5, backbone="resnet50", backbone_weights=None)
        >>> model(tf.zeros([1, 33, 47, 3])).shape
        TensorShape([1, 33, 47, 5])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer (21 for PASCAL VOC), got {num_classes!r}.")
    if variant not in DECODERS:
        raise ValueError(f"Unknown variant {variant!r}; use one of {sorted(DECODERS)}.")
    if interpolation not in layers.INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not supported; use one of {layers.INTERPOLATIONS}.")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3) for RGB images, got {input_shape!r}.")
    spec = backbones_lib.get_backbone_spec(backbone)

    images = keras.Input(shape=input_shape, name="images")
    preprocessed = layers.ImagePreprocessing(spec.preprocessing, name="preprocessing")(images)
    backbone_model = backbones_lib.build_backbone(
        backbone, weights=backbone_weights, input_shape=input_shape,
        weight_decay=None if freeze_backbone else weight_decay, batch_norm_momentum=0.997,
        trainable=not freeze_backbone)
    features = backbone_model(preprocessed)
    logits = DECODERS[variant](features, num_classes=num_classes, decoder_features=decoder_features,
                               weight_decay=weight_decay, interpolation=interpolation, logits_relu=logits_relu)
    if upsample_logits:
        logits = layers.ResizeToMatch(interpolation=interpolation, dtype="float32", name="upsample_logits")(
            [logits, images])
    return keras.Model(images, logits, name=name or f"refinenet_{variant}_{backbone}")
