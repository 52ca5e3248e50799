"""RefineNet builders: one call returns a plain functional ``keras.Model``.

Three decoders share the layers of :mod:`refinenet_tf.models.layers`; ``VARIANTS`` maps a ``variant`` name to one:

* ``"slim"`` — the reference TF-slim code's ``model()``::

      h[i] = slim.conv2d(f[i], 256, 1)                    # P5, P4, P3, P2: Conv 1x1 + BN + ReLU
      g[0] = RefineBlock(None, h[0]); g[i] = RefineBlock(g[i - 1], h[i])
      logits = slim.conv2d(g[3], num_classes, 1, activation_fn=tf.nn.relu, normalizer_fn=None)  # at 1/4

* ``"paper"`` — the official RefineNet release (Lin et al., CVPR 2017: MatConvNet code and its PyTorch port):
  per level a 3x3 reduction (2048 -> 512 on P5, -> 256 elsewhere), two RCUs in series, a 3x3 conv per path
  and a bilinear resize (fusion), a 4-stage chained residual pooling, three RCUs; no BatchNorm; dropout 0.5
  on P5, P4 and before the 3x3 classifier.
* ``"light_weight"`` — Light-Weight RefineNet (Nekrasov et al., BMVC 2018): no RCUs, every decoder conv 1x1,
  4-stage chained residual pooling with 1x1 convs, fusion = 1x1 conv per path + resize + sum + ReLU, 3x3
  classifier. On MobileNetV2 it fuses the six levels the official model taps.

:func:`RefineNet` builds any of them; :func:`LightWeightRefineNet` is the Light-Weight one; :func:`get` and
:func:`list_models` give the named presets, each with its source and published numbers.

The ``*_official`` presets are the official releases' exact structures: the ``"paper"`` and ``"light_weight"``
decoders on the PyTorch-layout backbones of :mod:`refinenet_tf.models.torch_backbones` (and ReLU6 after each fusion
on MobileNetV2), which :mod:`refinenet_tf.convert.pytorch` fills from the releases' checkpoints.
"""

import dataclasses
from typing import Callable, Optional

import tf_keras as keras

from refinenet_tf.models import backbones as backbones_lib
from refinenet_tf.models import layers
from refinenet_tf._checks import positive_int

__all__ = ["VARIANTS", "LightWeightRefineNet", "RefineNet", "Variant"]

_COARSE_TO_FINE = ("P5", "P4", "P3", "P2")


def _slim_decoder(features, *, num_classes, decoder_features, weight_decay, interpolation, logits_relu,
                  batch_norm_momentum=0.997, **_):
    """The reference code's decoder: slim ``RefineBlock``s on 1x1-reduced features, 1x1 classifier."""
    scope = dict(weight_decay=weight_decay, batch_norm_momentum=batch_norm_momentum, batch_norm_epsilon=1e-5)
    previous = None
    for level in _COARSE_TO_FINE:
        name = level.lower()
        reduced = layers.ConvBNReLU(decoder_features, 1, name=f"reduce_{name}", **scope)(features[level])
        block = layers.RefineBlock(features=decoder_features, kernel_size=3, interpolation=interpolation,
                                   name=f"refine_{name}", **scope)
        previous = block(reduced if previous is None else [previous, reduced])
    return layers.ConvBNReLU(num_classes, 1, use_batch_norm=False, activation="relu" if logits_relu else None,
                             weight_decay=weight_decay, dtype="float32", name="classifier")(previous)


def _classifier(x, num_classes, weight_decay, dropout):
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout_classifier")(x)
    return layers.ConvBNReLU(num_classes, 3, use_batch_norm=False, activation=None, use_bias=True,
                             weight_decay=weight_decay, dtype="float32", name="classifier")(x)


def _reduced_skip(features, level, decoder_features, dropout, kernel_size, plain):
    """The paper / Light-Weight skip path: dropout on P5 and P4, then a reduction (2x wider on P5)."""
    name = level.lower()
    width = 2 * decoder_features if level == "P5" else decoder_features
    skip = features[level]
    if dropout and level in ("P5", "P4"):
        skip = keras.layers.Dropout(dropout, name=f"dropout_{name}")(skip)
    plain = dict(plain, use_bias=False)
    return name, width, layers.ConvBNReLU(width, kernel_size, name=f"reduce_{name}", **plain)(skip)


def _paper_decoder(features, *, num_classes, decoder_features, weight_decay, interpolation, dropout, **_):
    """The official RefineNet (cascaded 4-path RefineNet, the release's ``rf101`` structure)."""
    # Plain convolutions (no BatchNorm, no activation); biases as in the release.
    plain = dict(use_batch_norm=False, activation=None, weight_decay=weight_decay)
    x = None
    for level in _COARSE_TO_FINE:
        name, width, skip = _reduced_skip(features, level, decoder_features, dropout, 3, plain)
        for i in range(2):
            skip = layers.ResidualConvUnit(width, 3, use_bias=[True, False], name=f"adapt_{name}_rcu{i + 1}",
                                           **plain)(skip)
        fused = skip if x is None else layers.MultiResolutionFusion(
            width, 3, interpolation=interpolation, use_bias=False, name=f"fusion_{name}", **plain)([x, skip])
        x = layers.ChainedResidualPooling(width, 3, stages=4, chained=True, use_bias=False,
                                          name=f"pooling_{name}", **plain)(fused)
        for i in range(3):
            x = layers.ResidualConvUnit(width, 3, use_bias=[True, False], name=f"output_{name}_rcu{i + 1}",
                                        **plain)(x)
    return _classifier(x, num_classes, weight_decay, dropout)


def _fusion_activation(fused, name, activation):
    """The activation between fusion and pooling when it is not the pooling's own ReLU (ReLU6 in the official
    MobileNetV2 model); the pooling's ReLU then leaves its non-negative output unchanged."""
    if activation == "relu":
        return fused
    return keras.layers.ReLU(6.0, name=f"relu6_{name}")(fused)


def _light_weight_decoder(features, *, num_classes, decoder_features, weight_decay, interpolation, dropout,
                          decoder_activation="relu", **_):
    """Light-Weight RefineNet: 1x1 fusion and chained pooling, no RCUs (six-level form on MobileNetV2)."""
    plain = dict(use_batch_norm=False, activation=None, use_bias=False, weight_decay=weight_decay)
    x = None
    if "P5a" in features and "P4a" in features:
        # Official MobileNetV2 form: the two levels of each of strides 32 and 16 are fused together.
        for group in (("P5", "P5a"), ("P4", "P4a"), ("P3",), ("P2",)):
            name = group[0].lower()
            paths = ([x] if x is not None else []) + [features[level] for level in group]
            fused = layers.MultiResolutionFusion(decoder_features, 1, interpolation=interpolation,
                                                 name=f"fusion_{name}", **plain)(paths)
            fused = _fusion_activation(fused, name, decoder_activation)
            x = layers.ChainedResidualPooling(decoder_features, 1, stages=4, chained=True,
                                              name=f"pooling_{name}", **plain)(fused)
        return _classifier(x, num_classes, weight_decay, dropout=None)
    for level in _COARSE_TO_FINE:
        name, width, skip = _reduced_skip(features, level, decoder_features, dropout, 1, plain)
        fused = skip if x is None else layers.MultiResolutionFusion(
            width, 1, interpolation=interpolation, name=f"fusion_{name}", **plain)([x, skip])
        fused = _fusion_activation(fused, name, decoder_activation)
        x = layers.ChainedResidualPooling(width, 1, stages=4, chained=True, name=f"pooling_{name}", **plain)(fused)
    return _classifier(x, num_classes, weight_decay, dropout=None)


@dataclasses.dataclass(frozen=True)
class Variant:
    """A decoder and the defaults that come with it.

    Attributes:
        decoder: ``decoder(features, **options) -> logits`` at 1/4 resolution; ``features`` maps levels to
            backbone outputs.
        levels: the backbone levels it reads (``"all"`` for every level the backbone taps).
        interpolation: its resize semantics.
        weight_decay: its L2 default (slim's ``arg_scope``; the others leave decay to the optimizer).
        backbone_batch_norm_momentum: overrides keras' 0.99 for the backbone (slim's ``resnet_arg_scope``).
        source: what it reproduces.
    """

    decoder: Callable
    levels: object
    interpolation: str
    weight_decay: Optional[float]
    backbone_batch_norm_momentum: Optional[float]
    source: str


#: variant name -> :class:`Variant`. A new decoder is one more entry here.
VARIANTS = {
    "slim": Variant(_slim_decoder, backbones_lib.PYRAMID_LEVELS, "bilinear_tf1", 1e-5, 0.997,
                    "the reference blog's TF-slim RefineNet (model(), RefineBlock, ...)"),
    "paper": Variant(_paper_decoder, backbones_lib.PYRAMID_LEVELS, "bilinear_align_corners", None, None,
                     "RefineNet, Lin et al., CVPR 2017: the official release's 4-cascaded RefineNet"),
    "light_weight": Variant(_light_weight_decoder, "all", "bilinear_align_corners", None, None,
                            "Light-Weight RefineNet, Nekrasov et al., BMVC 2018: the official release"),
}


def RefineNet(num_classes=21, backbone="resnet101", backbone_weights="imagenet", input_shape=(None, None, 3),
              variant="slim", upsample_logits=True, freeze_backbone=False, decoder_features=256,
              weight_decay="default", interpolation=None, logits_relu=True, dropout=0.5,
              batch_norm_momentum=None, decoder_activation="relu", name=None):
    """Builds a RefineNet for semantic segmentation.

    The model takes RGB images in [0, 255] (uint8 or float) of any size and applies the backbone's own
    preprocessing inside, so ``model.predict(images)`` needs nothing else. It returns float32 logits (also
    under a mixed-precision policy).

    Args:
        num_classes: number of classes, background included (21 for PASCAL VOC).
        backbone: a registered backbone: ``"resnet50"``, ``"resnet101"``, ``"resnet152"`` or ``"mobilenetv2"``
            (keras.applications), TF-slim's ``"resnet_v1_50"``, ``"resnet_v1_101"``, ``"resnet_v1_152"``,
            or the official releases' PyTorch layouts ``"resnet50_torch"``, ``"resnet101_torch"``,
            ``"resnet152_torch"``, ``"mobilenetv2_lw_torch"`` (see ``refinenet_tf.models.backbones``).
        backbone_weights: ``"imagenet"`` (keras downloads them on first use), ``None`` (random) or the path of a
            keras weights file for the backbone; for the TF-slim ResNets, a TF-slim checkpoint prefix
            (``resnet_v1_101.ckpt``).
        input_shape: ``(height, width, 3)``; ``(None, None, 3)`` takes any size.
        variant: the decoder, a key of :data:`VARIANTS`: ``"slim"`` (the reference TF-slim code), ``"paper"``
            (the official RefineNet) or ``"light_weight"`` (Light-Weight RefineNet).
        upsample_logits: resize the logits (computed at 1/4 of the input) bilinearly to the input size
            (half-pixel centres, whatever ``interpolation`` says, so that the result is not shifted), so
            that ``model.fit`` works with full-resolution masks. ``False`` returns them at 1/4.
        freeze_backbone: make the backbone untrainable (its BatchNorm layers then use their moving statistics).
            A frozen backbone gets no L2 penalty, also if it is unfrozen later: build it unfrozen for that.
        decoder_features: width of the decoder (256; the paper and Light-Weight ResNet decoders double it on
            the P5 path).
        weight_decay: L2 scale in slim's convention (``scale * sum(w**2) / 2``) on every conv kernel, backbone
            included; ``"default"`` takes the variant's (1e-5 for slim, none for the others, whose recipes
            decay weights in the optimizer); ``None`` or 0 turns it off.
        interpolation: ``"bilinear_tf1"``, ``"bilinear"`` or ``"bilinear_align_corners"`` for the decoder's
            resizes; ``None`` takes the variant's (slim: TF1 ``resize_bilinear``, what its ``unpool`` calls;
            paper and Light-Weight: ``align_corners=True``, as their official PyTorch code).
        logits_relu: keep the ReLU that the slim code applies to its logits (slim only).
        dropout: dropout rate of the paper and Light-Weight variants (0.5 as released; 0 or None: off).
        batch_norm_momentum: momentum of every BatchNorm layer, backbone and decoder; ``None`` takes the
            variant's (slim: 0.997, its ``decay``, everywhere; others: keras' for the backbone, 0.99 for ResNets
            and 0.999 for MobileNetV2). Lower it (e.g. 0.9) to train from scratch for few steps.
        decoder_activation: ``"relu"``, or ``"relu6"`` (Light-Weight only) for the activation after each fusion,
            as the official Light-Weight RefineNet MobileNetV2 model has it.
        name: the model's name (default ``refinenet_<variant>_<backbone>``).

    Returns:
        A functional ``keras.Model`` mapping ``[N, H, W, 3]`` images to ``[N, H, W, num_classes]`` logits
        (``[N, ceil(H/4), ceil(W/4), num_classes]`` without ``upsample_logits``).

    Example:
        >>> model = RefineNet(num_classes=5, backbone="resnet50", backbone_weights=None)
        >>> model(tf.zeros([1, 33, 47, 3])).shape
        TensorShape([1, 33, 47, 5])
    """
    num_classes = positive_int("num_classes", num_classes, hint="21 for PASCAL VOC")
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; use one of {sorted(VARIANTS)}.")
    spec_variant = VARIANTS[variant]
    interpolation = interpolation or spec_variant.interpolation
    if interpolation not in layers.INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not supported; use one of {layers.INTERPOLATIONS}.")
    if isinstance(weight_decay, str) and weight_decay == "default":
        weight_decay = spec_variant.weight_decay
    elif weight_decay is not None and (isinstance(weight_decay, (str, bool)) or not weight_decay >= 0):
        raise ValueError(f"weight_decay must be 'default', None or a number >= 0, got {weight_decay!r}.")
    if dropout is not None and not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    if decoder_activation not in ("relu", "relu6"):
        raise ValueError(f"decoder_activation must be 'relu' or 'relu6', got {decoder_activation!r}.")
    if decoder_activation != "relu" and variant != "light_weight":
        raise ValueError(f"decoder_activation={decoder_activation!r} is for variant='light_weight' only; the "
                         f"{variant!r} decoder uses ReLU.")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3) for RGB images, got {input_shape!r}.")
    spec = backbones_lib.get_backbone_spec(backbone)
    levels = tuple(spec.taps) if spec_variant.levels == "all" else spec_variant.levels

    images = keras.Input(shape=input_shape, name="images")
    preprocessed = layers.ImagePreprocessing(spec.preprocessing, name="preprocessing")(images)
    backbone_model = backbones_lib.build_backbone(
        backbone, weights=backbone_weights, input_shape=input_shape,
        weight_decay=None if freeze_backbone else weight_decay,
        batch_norm_momentum=(spec_variant.backbone_batch_norm_momentum if batch_norm_momentum is None
                             else batch_norm_momentum), trainable=not freeze_backbone,
        levels=levels)
    outputs = backbone_model(preprocessed)
    features = dict(zip(levels, outputs if isinstance(outputs, (list, tuple)) else [outputs]))
    logits = spec_variant.decoder(features, num_classes=num_classes, decoder_features=decoder_features,
                                  weight_decay=weight_decay, interpolation=interpolation,
                                  logits_relu=logits_relu, dropout=dropout,
                                  batch_norm_momentum=batch_norm_momentum or 0.997,
                                  decoder_activation=decoder_activation)
    if upsample_logits:
        logits = layers.ResizeToMatch(interpolation="bilinear", dtype="float32", name="upsample_logits")(
            [logits, images])
    return keras.Model(images, logits, name=name or f"refinenet_{variant}_{backbone}")


def LightWeightRefineNet(num_classes=21, backbone="resnet50", backbone_weights="imagenet", **kwargs):
    """Builds a Light-Weight RefineNet (Nekrasov et al., BMVC 2018) on ResNet-50/101/152 or MobileNetV2.

    Takes the arguments of :func:`RefineNet` except ``variant``.

    Example:
        >>> model = LightWeightRefineNet(num_classes=21, backbone="mobilenetv2", backbone_weights=None)
        >>> model(tf.zeros([1, 65, 97, 3])).shape
        TensorShape([1, 65, 97, 21])
    """
    if "variant" in kwargs:
        raise TypeError("LightWeightRefineNet takes no `variant`; use RefineNet(variant=...) for other decoders.")
    return RefineNet(num_classes=num_classes, backbone=backbone, backbone_weights=backbone_weights,
                     variant="light_weight", **kwargs)
