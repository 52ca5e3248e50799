"""RefineNet builders: one call returns a plain functional ``keras.Model``.

Three decoders share the layers of :mod:`refinenet_tf.layers`; ``VARIANTS`` maps a ``variant`` name to one:

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
decoders on the PyTorch-layout backbones of :mod:`refinenet_tf.torch_backbones` (and ReLU6 after each fusion
on MobileNetV2), which :mod:`refinenet_tf.convert.pytorch` fills from the releases' checkpoints.
"""

import dataclasses
import inspect
from typing import Callable, Mapping, Optional

import tf_keras as keras

from refinenet_tf import backbones as backbones_lib
from refinenet_tf import layers, multitask
from refinenet_tf._checks import positive_int

__all__ = ["PRESETS", "VARIANTS", "LightWeightRefineNet", "ModelPreset", "RefineNet", "Variant", "build", "get",
           "list_models"]

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
        groups = (("P5", "P5a"), ("P4", "P4a"), ("P3",), ("P2",))
        for group in groups:
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
            ``"resnet152_torch"``, ``"mobilenetv2_lw_torch"`` (see ``refinenet_tf.backbones``).
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


@dataclasses.dataclass(frozen=True)
class ModelPreset:
    """A named model: variant + backbone, with where it comes from and what was published for it.

    Attributes:
        name: the preset's name.
        variant: a key of :data:`VARIANTS`.
        backbone: a registered backbone name.
        source: the paper / code and the table that the published numbers come from.
        published: published figures, e.g. ``{"parameters_millions": 27, "voc2012_test_miou": 81.1}``.
        options: arguments of the builder that the preset sets (``build``'s own arguments override them).
        builder: the function that builds it: ``None`` for :func:`RefineNet` (then ``variant`` is its argument),
            or another builder taking ``num_classes``, ``backbone``, ``backbone_weights`` and ``name``, such as
            :func:`refinenet_tf.multitask.MultiTaskRefineNet` (then ``variant`` only labels the preset).
    """

    name: str
    variant: str
    backbone: str
    source: str
    published: Mapping[str, float] = dataclasses.field(default_factory=dict)
    options: Mapping[str, object] = dataclasses.field(default_factory=dict)
    builder: Optional[Callable] = None

    @property
    def build_function(self):
        """The function :meth:`build` calls with :meth:`arguments` (:func:`RefineNet` unless ``builder`` says)."""
        return self.builder or RefineNet

    def arguments(self, num_classes=21, backbone_weights="imagenet", **kwargs):
        """The arguments of :attr:`build_function` that build this preset, every one of them (defaults filled
        in); ``kwargs`` override them (``backbone=`` swaps the backbone). What a training run records.

        Example:
            >>> arguments = get("lw_resnet50").arguments(num_classes=4, decoder_features=16)
            >>> arguments["variant"], arguments["backbone"], arguments["decoder_features"], arguments["name"]
            ('light_weight', 'resnet50', 16, 'lw_resnet50')
            >>> sorted(get("multitask_mobilenetv2_official").arguments(num_classes=40)["tasks"])
            ['depth', 'segmentation']
        """
        kwargs.setdefault("backbone", self.backbone)
        kwargs.setdefault("name", self.name)
        for option, value in self.options.items():
            kwargs.setdefault(option, value)
        if self.builder is None:
            kwargs["variant"] = self.variant
        bound = inspect.signature(self.build_function).bind(num_classes=num_classes,
                                                            backbone_weights=backbone_weights, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def build(self, num_classes=21, backbone_weights="imagenet", **kwargs):
        """Builds the preset's model; ``kwargs`` go to :attr:`build_function` (``backbone=`` swaps the backbone)."""
        return self.build_function(**self.arguments(num_classes, backbone_weights, **kwargs))


_SLIM_SOURCE = ("TF-slim RefineNet of the reference blog post (itself a copy of the public TF-slim RefineNet); "
                "no published figures")
_SEED_SOURCE = ("the reference TF-slim RefineNet's whole network, model() of the blog post: TF-slim's resnet_v1 "
                "tapped at pool1 and blocks 1, 2 and 4, mean_image_subtraction; its checkpoints convert with "
                "refinenet_tf.convert.slim; no published figures")
_PAPER_SOURCE = ("Lin, Milan, Shen, Reid: RefineNet, CVPR 2017; structure and parameter count of the official "
                 "release (MatConvNet code, PyTorch port with the VOC weights)")
_LW_SOURCE = ("Nekrasov, Shen, Reid: Light-Weight RefineNet for Real-Time Semantic Segmentation, BMVC 2018, "
              "results table (PASCAL VOC 2012 test) and abstract")

_LW_OFFICIAL_SOURCE = ("the official Light-Weight RefineNet release (github.com/DrSleep/light-weight-refinenet, "
                       "models/resnet.py, models/mobilenet.py), layout and parameter names; " + _LW_SOURCE)
_PAPER_OFFICIAL_SOURCE = ("the official RefineNet-101 PyTorch release (github.com/DrSleep/refinenet-pytorch, "
                          "models/resnet.py; its README: 80.5 mIoU on VOC 2012 val, single scale); " + _PAPER_SOURCE)

_MULTITASK_SOURCE = ("Nekrasov, Dharmasiri, Spek, Drummond, Shen, Reid: Real-Time Joint Semantic Segmentation and "
                     "Depth Estimation Using Asymmetric Annotations, ICRA 2019 (NYUDv2 table: mIoU, RMSE; "
                     "GFLOPs at 640x480); structure and parameter names of the official release "
                     "(github.com/DrSleep/multi-task-refinenet, src/models.py)")

#: preset name -> :class:`ModelPreset`.
PRESETS = {preset.name: preset for preset in [
    ModelPreset("slim_resnet50", "slim", "resnet50", _SLIM_SOURCE),
    ModelPreset("slim_resnet101", "slim", "resnet101", _SLIM_SOURCE),
    ModelPreset("slim_resnet152", "slim", "resnet152", _SLIM_SOURCE),
    ModelPreset("slim_mobilenetv2", "slim", "mobilenetv2", _SLIM_SOURCE + "; on keras' MobileNetV2 (P2..P5)"),
    ModelPreset("seed_resnet_v1_50", "slim", "resnet_v1_50", _SEED_SOURCE),
    ModelPreset("seed_resnet_v1_101", "slim", "resnet_v1_101", _SEED_SOURCE),
    ModelPreset("seed_resnet_v1_152", "slim", "resnet_v1_152", _SEED_SOURCE),
    ModelPreset("refinenet_resnet50", "paper", "resnet50", _PAPER_SOURCE),
    ModelPreset("refinenet_resnet101", "paper", "resnet101", _PAPER_SOURCE, {"parameters_millions": 118.05}),
    ModelPreset("refinenet_resnet152", "paper", "resnet152",
                _PAPER_SOURCE + "; 83.4 mIoU on VOC 2012 test is the paper's best (abstract), with ResNet-152",
                {"voc2012_test_miou": 83.4}),
    ModelPreset("lw_resnet50", "light_weight", "resnet50", _LW_SOURCE,
                {"parameters_millions": 27, "voc2012_test_miou": 81.1}),
    ModelPreset("lw_resnet101", "light_weight", "resnet101", _LW_SOURCE,
                {"parameters_millions": 46, "voc2012_test_miou": 82.0}),
    ModelPreset("lw_resnet152", "light_weight", "resnet152", _LW_SOURCE,
                {"parameters_millions": 62, "voc2012_test_miou": 82.7}),
    ModelPreset("lw_mobilenetv2", "light_weight", "mobilenetv2", _LW_SOURCE,
                {"parameters_millions": 3.3, "voc2012_test_miou": 79.2, "gflops_512": 9.3}),
    # The official releases' exact structures (PyTorch-layout backbones): official checkpoints convert into these
    # (refinenet_tf.convert.pytorch). tests/test_convert_pytorch.py pins their exact parameter counts.
    ModelPreset("lw_resnet50_official", "light_weight", "resnet50_torch", _LW_OFFICIAL_SOURCE,
                {"parameters_millions": 27, "voc2012_test_miou": 81.1}),
    ModelPreset("lw_resnet101_official", "light_weight", "resnet101_torch", _LW_OFFICIAL_SOURCE,
                {"parameters_millions": 46, "voc2012_test_miou": 82.0}),
    ModelPreset("lw_resnet152_official", "light_weight", "resnet152_torch", _LW_OFFICIAL_SOURCE,
                {"parameters_millions": 62, "voc2012_test_miou": 82.7}),
    ModelPreset("lw_mobilenetv2_official", "light_weight", "mobilenetv2_lw_torch",
                _LW_OFFICIAL_SOURCE + "; ReLU6 after each fusion, as models/mobilenet.py",
                {"parameters_millions": 3.3, "voc2012_test_miou": 79.2}, {"decoder_activation": "relu6"}),
    ModelPreset("refinenet_resnet101_official", "paper", "resnet101_torch", _PAPER_OFFICIAL_SOURCE,
                {"parameters_millions": 118.05, "voc2012_val_miou": 80.5}),
    # Joint segmentation and depth (refinenet_tf.multitask); the normals head: tasks=(..., "normals").
    ModelPreset("multitask_mobilenetv2_official", "multitask", "mobilenetv2_lw_torch", _MULTITASK_SOURCE,
                {"parameters_millions": 3.07, "nyudv2_40_miou": 42.0, "gflops_640x480": 6.5},
                {"tasks": ("segmentation", "depth")}, builder=multitask.MultiTaskRefineNet),
]}


def list_models():
    """Names of the presets.

    Example:
        >>> "lw_resnet50" in list_models()
        True
    """
    return sorted(PRESETS)


def get(name):
    """The :class:`ModelPreset` called ``name``.

    Example:
        >>> get("lw_resnet50").published["voc2012_test_miou"]
        81.1
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown model {name!r}; use one of {list_models()}.") from None


def build(name, num_classes=21, backbone_weights="imagenet", **kwargs):
    """Builds the preset ``name`` (see :func:`list_models`); ``kwargs`` go to its builder (:func:`RefineNet`, or
    :func:`refinenet_tf.multitask.MultiTaskRefineNet` for ``multitask_*``)."""
    return get(name).build(num_classes=num_classes, backbone_weights=backbone_weights, **kwargs)
