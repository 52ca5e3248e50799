"""Backbones: which ``keras.applications`` model, which layers are tapped, which preprocessing it needs.

Taps are keyed by stride, as keras-hub names pyramid levels: ``"P2"`` is 2**2 = 4 times smaller than the
input, ``"P5"`` 32 times. For keras' ResNets they are the outputs of the four residual stages, the features
the RefineNet paper refines (the slim code's ``end_points['pool2'..'pool5']``). MobileNetV2 has two stages
at strides 16 and 32 each; the earlier one is ``"P4a"`` / ``"P5a"``, so it offers the six levels that the
official Light-Weight RefineNet fuses, and ``P2``..``P5`` for the other decoders.

``resnet_v1_50``, ``resnet_v1_101`` and ``resnet_v1_152`` are TF-slim's ResNets layer for layer (the reference
code's backbone, :mod:`refinenet_tf.models.slim_backbones`), tapped where the reference code taps them: ``P2`` is the
output of ``pool1`` (64 channels), ``P3`` of ``block1``, ``P4`` of ``block2`` and ``P5`` of ``block4``. They read
TF-slim checkpoints as weights.

The ``*_torch`` backbones (``resnet50_torch`` .. ``resnet152_torch``, ``mobilenetv2_lw_torch``) are the official
PyTorch releases' layouts (:mod:`refinenet_tf.models.torch_backbones`), which official checkpoints convert into.

Other backbones plug in with :func:`register_backbone`, e.g. a tiny one for tests::

    register_backbone("tiny", BackboneSpec(builder=my_builder, taps={"P2": "s4", ...}, preprocessing="tf"))
"""

import dataclasses
import functools
import os
from typing import Callable, Mapping

import tf_keras as keras

from refinenet_tf import _files
from refinenet_tf.models import slim_backbones, torch_backbones

__all__ = ["BACKBONES", "BackboneSpec", "PYRAMID_LEVELS", "build_backbone", "get_backbone_spec",
           "list_backbones", "register_backbone"]

#: Pyramid levels a RefineNet decoder reads, finest first.
PYRAMID_LEVELS = ("P2", "P3", "P4", "P5")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone.

    Attributes:
        builder: ``builder(weights=..., input_shape=...)`` returning a ``keras.Model`` (a
            ``keras.applications`` constructor with ``include_top=False`` bound fits).
        taps: pyramid level (``"P2"``..``"P5"``, and any extra levels) -> name of the layer whose output is that
            level, finest first.
        preprocessing: the ``ImagePreprocessing`` mode the backbone's weights expect.
        weights_source: where ``weights="imagenet"`` comes from, for the docs.
        slim_layout: the builder makes a TF-slim-layout network: it also takes ``weight_decay=`` and
            ``batch_norm_momentum=`` (slim's ``resnet_arg_scope``, built in) and reads TF-slim checkpoints
            (``resnet_v1_101.ckpt``: a V1 file or a V2 prefix) as ``weights``.
    """

    builder: Callable[..., keras.Model]
    taps: Mapping[str, str]
    preprocessing: str = "caffe"
    weights_source: str = ""
    slim_layout: bool = False


def _application(constructor):
    def build(weights=None, input_shape=(None, None, 3)):
        return constructor(include_top=False, weights=weights, input_shape=input_shape)
    return build


def _resnet_taps(blocks_per_stage):
    return {level: f"conv{stage}_block{blocks}_out"
            for level, stage, blocks in zip(PYRAMID_LEVELS, (2, 3, 4, 5), blocks_per_stage)}


def _slim_resnet(name):
    return BackboneSpec(slim_backbones.builder(name), slim_backbones.taps(name), "rgb_mean",
                        f"TF-slim's ImageNet checkpoint {name}.ckpt ({name}_2016_08_28.tar.gz of the TF-slim model "
                        "page), given as backbone_weights='.../" + name + ".ckpt'; not downloaded automatically",
                        slim_layout=True)


_KERAS_RESNET_WEIGHTS = ("keras.applications ImageNet weights (converted from the original Caffe ResNets of "
                         "He et al.), downloaded by keras on first use")

#: The registry of backbones known by name.
BACKBONES = {
    # keras.applications' ResNets have torchvision's blocks per stage.
    **{f"resnet{depth}": BackboneSpec(_application(getattr(keras.applications, f"ResNet{depth}")),
                                      _resnet_taps(blocks), "caffe", _KERAS_RESNET_WEIGHTS)
       for depth, blocks in torch_backbones.RESNET_BLOCKS.items()},
    # The ends of the stages with 24, 32, 64, 96, 160 and 320 channels (the official LW-RefineNet's l3..l8).
    "mobilenetv2": BackboneSpec(
        _application(keras.applications.MobileNetV2),
        {"P2": "block_2_add", "P3": "block_5_add", "P4a": "block_9_add", "P4": "block_12_add",
         "P5a": "block_15_add", "P5": "block_16_project_BN"},
        "tf", "keras.applications MobileNetV2 (alpha 1.0) ImageNet weights, downloaded by keras on first use"),
    # TF-slim's resnet_v1 layer for layer (the reference code's backbone): TF-slim checkpoints load into them.
    **{name: _slim_resnet(name) for name in ("resnet_v1_50", "resnet_v1_101", "resnet_v1_152")},
}

_TORCH_WEIGHTS = ("no download: weights come from an official PyTorch release checkpoint through "
                  "refinenet_tf.convert.pytorch (see docs/official_checkpoints.md)")


# The official releases' layouts (torchvision's ResNets, the Light-Weight RefineNet MobileNetV2), with their
# preprocessing (RGB / 255, ImageNet mean and std); see refinenet_tf.models.torch_backbones.
BACKBONES.update({
    **{f"resnet{depth}_torch": BackboneSpec(functools.partial(torch_backbones.build_resnet, depth),
                                            torch_backbones.resnet_taps(depth), "torch", _TORCH_WEIGHTS)
       for depth in (50, 101, 152)},
    "mobilenetv2_lw_torch": BackboneSpec(torch_backbones.build_lw_mobilenetv2, torch_backbones.lw_mobilenetv2_taps(),
                                         "torch", _TORCH_WEIGHTS),
})


def register_backbone(name, spec, overwrite=False):
    """Adds ``spec`` (a :class:`BackboneSpec`) to :data:`BACKBONES` under ``name``."""
    if not isinstance(spec, BackboneSpec):
        raise TypeError(f"register_backbone({name!r}, ...) needs a BackboneSpec, got {type(spec).__name__}.")
    missing = set(PYRAMID_LEVELS) - set(spec.taps)
    if missing:
        raise ValueError(f"Backbone {name!r}: taps lacks levels {sorted(missing)}; give a layer for each of "
                         f"{PYRAMID_LEVELS}.")
    if name in BACKBONES and not overwrite:
        raise ValueError(f"Backbone {name!r} is already registered; pass overwrite=True to replace it.")
    BACKBONES[name] = spec


def list_backbones():
    """Names of the registered backbones."""
    return sorted(BACKBONES)


def get_backbone_spec(name):
    """The :class:`BackboneSpec` registered under ``name``, with a clear error for unknown names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"Unknown backbone {name!r}; use one of {list_backbones()} "
                         "or add yours with refinenet_tf.models.backbones.register_backbone.") from None


def _check_weights(weights, spec):
    if weights is None or weights == "imagenet":
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"backbone_weights={weights!r}: use None, 'imagenet' or the path of a weights file.")
    if spec.slim_layout and slim_backbones.is_checkpoint(weights):
        return  # a TF-slim checkpoint (V1 file, V2 prefix or folder), read by the builder
    if not os.path.isfile(weights):
        kinds = ("a TF-slim checkpoint (e.g. resnet_v1_101.ckpt) or a keras weights file"
                 if spec.slim_layout else "a keras weights file (.h5)")
        raise FileNotFoundError(f"backbone_weights={os.fspath(weights)!r}: no such file; give the path of "
                                f"{kinds} for this backbone, 'imagenet' or None.")
    _files.check_weights_file(weights, "backbone_weights=")


def _with_slim_arg_scope(model, weight_decay, batch_norm_momentum):
    """Gives ``model`` slim's ``resnet_arg_scope`` in place: L2 on conv kernels and its BatchNorm decay.

    Keras applications take no regularizer, so each conv layer gets one as Keras' ``add_weight`` gives it: the
    attribute (which its config saves, so a reloaded model has it too) and the loss on the kernel.
    """
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D") and weight_decay:
            regularizer = keras.regularizers.L2(weight_decay / 2.0)
            if kind == "DepthwiseConv2D":
                layer.depthwise_regularizer, kernel = regularizer, layer.depthwise_kernel
            else:
                layer.kernel_regularizer, kernel = regularizer, layer.kernel
            layer.add_loss(functools.partial(regularizer, kernel))
        if kind == "BatchNormalization" and batch_norm_momentum is not None:
            layer.momentum = batch_norm_momentum
    return model


def build_backbone(name="resnet101", weights=None, input_shape=(None, None, 3), weight_decay=None,
                   batch_norm_momentum=None, trainable=True, levels=PYRAMID_LEVELS):
    """Builds a backbone whose outputs are its pyramid levels, by default ``[P2, P3, P4, P5]``.

    The model expects inputs already preprocessed for it (see ``BackboneSpec.preprocessing``).

    Args:
        name: a registered backbone name (see :func:`list_backbones`).
        weights: ``None`` (random), ``"imagenet"`` (downloaded by keras) or the path of a weights file; for the
            slim-layout ResNets also a TF-slim checkpoint prefix (``resnet_v1_101.ckpt``).
        input_shape: ``(height, width, 3)``; ``None`` for any size.
        weight_decay: slim-style L2 scale on every conv kernel (``scale * sum(w**2) / 2``), or ``None``.
        batch_norm_momentum: if given, the momentum of every BatchNormalization layer.
        trainable: ``False`` freezes the backbone (its BatchNorm layers then run in inference mode).
        levels: the levels to output, in this order (keys of the spec's ``taps``).

    Returns:
        A ``keras.Model`` named ``name`` with one output per level (by default strides 4, 8, 16 and 32).

    Example:
        >>> backbone = build_backbone("resnet50", weights=None)
        >>> [tuple(o.shape[1:]) for o in backbone(tf.zeros([1, 64, 96, 3]))]
        [(16, 24, 256), (8, 12, 512), (4, 6, 1024), (2, 3, 2048)]
    """
    spec = get_backbone_spec(name)
    unknown = [level for level in levels if level not in spec.taps]
    if unknown:
        raise ValueError(f"Backbone {name!r} has no levels {unknown}; it offers {list(spec.taps)}.")
    _check_weights(weights, spec)
    if weights is not None and not isinstance(weights, str):
        weights = os.fspath(weights)
    if spec.slim_layout:
        full = spec.builder(weights=weights, input_shape=tuple(input_shape), weight_decay=weight_decay,
                            batch_norm_momentum=batch_norm_momentum)
    else:
        full = spec.builder(weights=weights, input_shape=tuple(input_shape))
        if weight_decay or batch_norm_momentum is not None:
            full = _with_slim_arg_scope(full, weight_decay, batch_norm_momentum)
    missing = [layer for layer in spec.taps.values() if layer not in {l.name for l in full.layers}]
    if missing:
        raise ValueError(f"Backbone {name!r} has no layers named {missing}; fix its taps.")
    outputs = [full.get_layer(spec.taps[level]).output for level in levels]
    backbone = keras.Model(full.inputs, outputs, name=name)
    backbone.trainable = trainable
    return backbone
