"""TF1 / TF-slim checkpoints into refinenet_tf models: the reference code's training, TF-slim's ImageNet ResNets.

Checkpoints are read with ``tf.train.load_checkpoint`` (no graph is built, no tf-slim is needed, nothing in the
file runs). Two kinds are understood:

* a checkpoint written by the reference TF-slim code's training (``Saver(tf.global_variables())``): the
  backbone under ``resnet_v1_<depth>/`` and the decoder under ``feature_fusion/``, whose ``slim.conv2d`` calls
  have no names of their own: slim numbers their scopes ``Conv``, ``Conv_1``, ... in the order ``model()`` calls
  them. :func:`decoder_convs` lists the Keras convolutions in that order, and the checkpoint's conv scopes are
  matched to them in the order of their numbers (so any numbering offset fits), by name and shape. The result is
  the preset ``seed_resnet_v1_<depth>`` (:func:`load_slim_checkpoint`, :func:`convert_checkpoint`);
* TF-slim's ImageNet ``resnet_v1_{50,101,152}.ckpt``: the backbone alone (:func:`load_backbone_checkpoint`;
  ``backbone_weights=PATH.ckpt`` reads it the same way).

Every model weight is filled from exactly one checkpoint variable of its shape, and every checkpoint variable is
used, except what carries nothing for the model: scalars (``global_step``, a learning rate, Adam's
``beta1_power``), optimizer slots of mapped variables (``.../Adam``, ``.../Momentum``), the unused half of the
``ExponentialMovingAverage`` pairs, and the ImageNet classifier (``resnet_v1_<depth>/logits``) of a backbone
checkpoint. Anything else fails in one :class:`~refinenet_tf.convert.ConversionError` that names it.

With ``ema=True`` every trainable variable (conv weights and biases, BatchNorm beta and gamma) is taken from its
``<name>/ExponentialMovingAverage`` shadow, as the reference code's ``demo.py`` restores it
(``ExponentialMovingAverage.variables_to_restore()``); BatchNorm moving statistics have no shadows and are
taken as they are.
"""

import os
import re

from refinenet_tf import _files, models
from refinenet_tf.models import slim_backbones
from refinenet_tf.models.checkpoints import ConversionError, assign_weights

__all__ = ["FUSION_SCOPE", "convert_checkpoint", "decoder_convs", "decoder_table", "load_backbone_checkpoint",
           "load_slim_checkpoint"]

#: The variable scope of the reference code's decoder.
FUSION_SCOPE = "feature_fusion"

_UNSHADOWED = ("moving_mean", "moving_variance")  # non-trainable: the reference code's EMA skips them
_FUSION_CONV = re.compile(rf"^{FUSION_SCOPE}/Conv(?:_(\d+))?/weights$")
_LEVELS = ("p5", "p4", "p3", "p2")


def decoder_convs(model):
    """The decoder's :class:`~refinenet_tf.models.layers.ConvBNReLU` layers of a slim-variant RefineNet, in the order
    the reference ``model()`` calls ``slim.conv2d`` (the order of its ``Conv``, ``Conv_1``, ... scopes).

    ``h[i] = slim.conv2d(f[i], 256, 1)`` for pool5..pool2; then each ``RefineBlock``: the RCUs of
    ``low_inputs`` (two convs each), those of ``high_inputs``, the fusion's convs of the low path then of the
    high path, the two pooling convs, the output RCU; last the classifier.
    """
    convs = [model.get_layer(f"reduce_{level}") for level in _LEVELS]
    for level in _LEVELS:
        block = model.get_layer(f"refine_{level}")
        rcus = list(block.low_rcus) + list(block.high_rcus)
        convs += [conv for rcu in rcus for conv in (rcu.conv1, rcu.conv2)]
        for path in reversed(block.fusion.path_convs):  # slim convolves low_inputs first
            convs += path
        convs += list(block.pooling.stage_convs)
        convs += [block.output_rcu.conv1, block.output_rcu.conv2]
    convs.append(model.get_layer("classifier"))
    return convs


def _conv_scope(index):
    return f"{FUSION_SCOPE}/Conv" + (f"_{index}" if index else "")


def _checkpoint_conv_indices(names):
    """The numbers of the ``feature_fusion/Conv*`` scopes in the checkpoint, sorted (``Conv`` is 0)."""
    return sorted(int(match.group(1) or 0) for match in map(_FUSION_CONV.match, names) if match)


def decoder_table(model, checkpoint_names=()):
    """``{Keras weight name: (checkpoint name, "identity")}`` for the decoder of a slim-variant RefineNet.

    Args:
        model: a RefineNet built with ``variant="slim"``.
        checkpoint_names: the checkpoint's variable names. When it has exactly as many ``feature_fusion`` conv
            scopes as the model has decoder convolutions, they are matched in the order of their numbers;
            otherwise to ``Conv``, ``Conv_1``, ... (what the reference code writes), so that the error names
            what is missing or left over.
    """
    convs = decoder_convs(model)
    indices = _checkpoint_conv_indices(checkpoint_names)
    if len(indices) != len(convs):
        indices = list(range(len(convs)))
    table = {}
    for conv, index in zip(convs, indices):
        scope = _conv_scope(index)
        table[conv.conv.kernel.name[:-2]] = (f"{scope}/weights", "identity")
        if conv.conv.use_bias:
            table[conv.conv.bias.name[:-2]] = (f"{scope}/biases", "identity")
        if conv.batch_norm is not None:
            for weight in ("gamma", "beta", "moving_mean", "moving_variance"):
                table[getattr(conv.batch_norm, weight).name[:-2]] = (f"{scope}/BatchNorm/{weight}", "identity")
    return table


def _backbone_scope(tensors):
    """The ``resnet_v1_<depth>`` scope of the checkpoint's ResNet."""
    scopes = sorted({name.split("/", 1)[0] for name in tensors if "/" in name})
    resnets = [scope for scope in scopes if scope in slim_backbones.BLOCKS]
    if len(resnets) != 1:
        found = "several: " + ", ".join(resnets) if resnets else "none; its top-level scopes: " + ", ".join(scopes)
        raise ConversionError(f"{tensors.path} is not a checkpoint of one TF-slim ResNet (variables under one of "
                              f"{sorted(slim_backbones.BLOCKS)}/); found {found}.")
    return resnets[0]


def _check_shadows(tensors, scope, ema):
    """Before any model is built: ``ema=True`` needs ExponentialMovingAverage shadows in the checkpoint."""
    if ema and not any(name.endswith(slim_backbones.EMA_SUFFIX) for name in tensors):
        raise ConversionError(f"{tensors.path}: ema=True but the checkpoint has no ExponentialMovingAverage shadow "
                              f"variables (no {scope}/conv1/weights{slim_backbones.EMA_SUFFIX}, none at all); "
                              "convert it without ema.")


def _take_shadows(table, ema):
    """With ``ema``, points every trainable variable of ``table`` at its ExponentialMovingAverage shadow."""
    if not ema:
        return table
    return {name: (foreign if foreign.endswith(_UNSHADOWED) else foreign + slim_backbones.EMA_SUFFIX, transform)
            for name, (foreign, transform) in table.items()}


def load_backbone_checkpoint(checkpoint, ema=False, input_shape=(None, None, 3)):
    """TF-slim's ImageNet ``resnet_v1_{50,101,152}.ckpt`` (or any checkpoint of the ResNet alone) as the
    slim-layout backbone, a ``keras.Model`` named ``resnet_v1_<depth>`` (its ``block4`` output).

    ``RefineNet(backbone="resnet_v1_101", backbone_weights=PATH.ckpt)`` reads the checkpoint the same way.

    Args:
        checkpoint: a checkpoint prefix (``resnet_v1_101.ckpt``) or a folder with a ``checkpoint`` file.
        ema: take the ExponentialMovingAverage shadows of the trainable variables.
        input_shape: the backbone's input shape.

    Raises:
        ConversionError: naming every missing, unused or wrongly shaped variable.
    """
    tensors = slim_backbones.read_checkpoint(checkpoint)
    scope = _backbone_scope(tensors)
    _check_shadows(tensors, scope, ema)
    backbone = slim_backbones.build_resnet_v1(scope, input_shape=input_shape)
    table = _take_shadows(slim_backbones.checkpoint_table(backbone), ema)
    assign_weights(backbone, tensors, table, tensors.path,
                   ignored=slim_backbones.ignored_variables(tensors, table, logits_scope=scope))
    return backbone


def _decoder_shapes(tensors):
    """``(decoder_features, num_classes)`` from the first and last ``feature_fusion`` convolution."""
    indices = _checkpoint_conv_indices(tensors)
    first, last = (tensors.shapes[f"{_conv_scope(i)}/weights"] for i in (indices[0], indices[-1]))
    if len(first) != 4 or len(last) != 4:
        raise ConversionError(f"{tensors.path}: {FUSION_SCOPE}/Conv*/weights are not conv kernels "
                              f"(shapes {first}, {last}).")
    return first[-1], last[-1]


def load_slim_checkpoint(checkpoint, num_classes=None, ema=False, **kwargs):
    """The RefineNet of a checkpoint written by the reference TF-slim code, with its weights.

    Args:
        checkpoint: a checkpoint prefix (``RefineNet_step_60000.ckpt``) or a folder with a ``checkpoint`` file.
        num_classes: the classes of its classifier; ``None`` reads them from the checkpoint (a different number
            fails).
        ema: take the ExponentialMovingAverage shadow of every trainable variable (what the reference code's
            ``demo.py`` restores); fails naming the variables when the checkpoint has none.
        **kwargs: more arguments of :func:`refinenet_tf.RefineNet` (``upsample_logits=``, ``input_shape=``).

    Returns:
        The preset ``seed_resnet_v1_<depth>`` (its depth read from the checkpoint) as a functional
        ``keras.Model``: RGB images in [0, 255] to logits, ``mean_image_subtraction`` inside.

    Raises:
        ConversionError: naming every missing, unused or wrongly shaped variable, in one message.
    """
    tensors = slim_backbones.read_checkpoint(checkpoint)
    scope = _backbone_scope(tensors)
    if not _checkpoint_conv_indices(tensors):
        raise ConversionError(f"{tensors.path} holds a {scope} backbone without the reference code's decoder (no "
                              f"{FUSION_SCOPE}/Conv*/weights): an ImageNet checkpoint is used as "
                              f"backbone_weights={tensors.path!r} (or converted by load_backbone_checkpoint).")
    features, classes = _decoder_shapes(tensors)
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"num_classes={num_classes} but the checkpoint's classifier "
                         f"({_conv_scope(_checkpoint_conv_indices(tensors)[-1])}/weights) has {classes} classes; "
                         f"omit num_classes= or give {classes}.")
    _check_shadows(tensors, scope, ema)
    model = models.build(f"seed_{scope}", num_classes=classes, backbone_weights=None, decoder_features=features,
                         **kwargs)
    table = _take_shadows({**slim_backbones.checkpoint_table(model.get_layer(scope)), **decoder_table(model, tensors)},
                          ema)
    assign_weights(model, tensors, table, tensors.path, ignored=slim_backbones.ignored_variables(tensors, table))
    return model


def convert_checkpoint(checkpoint, output, num_classes=None, ema=False, overwrite=False):
    """Converts a TF-slim checkpoint and writes it to ``output`` as a ``.keras`` file (atomically).

    A checkpoint of the reference code's training becomes its RefineNet (:func:`load_slim_checkpoint`), which
    ``refinenet-tf evaluate``, ``predict`` and ``export`` take as it is; a checkpoint of the ResNet alone (TF-slim's
    ImageNet ``resnet_v1_101.ckpt``) becomes the backbone (:func:`load_backbone_checkpoint`), a file that
    ``backbone_weights=`` takes.

    Args:
        checkpoint: a checkpoint prefix or a folder with a ``checkpoint`` file.
        output: the ``.keras`` file to write.
        num_classes: see :func:`load_slim_checkpoint`; not for a backbone checkpoint.
        ema: take the ExponentialMovingAverage shadows (see :func:`load_slim_checkpoint`).
        overwrite: replace ``output`` if it exists.

    Returns:
        The converted ``keras.Model``.
    """
    output = os.fspath(output)
    if not output.endswith(".keras"):
        raise ValueError(f"output={output!r}: the converted model is written as a .keras file; end the name with "
                         ".keras.")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"output={output!r} exists; choose another name or pass overwrite=True.")
    tensors = slim_backbones.read_checkpoint(checkpoint)
    if _checkpoint_conv_indices(tensors):
        model = load_slim_checkpoint(checkpoint, num_classes=num_classes, ema=ema)
    else:
        if num_classes is not None:
            raise ValueError(f"num_classes={num_classes}: {tensors.path} holds a backbone without a classifier "
                             f"(no {FUSION_SCOPE}/ variables); omit num_classes=.")
        model = load_backbone_checkpoint(checkpoint, ema=ema)
    with _files.atomic_path(output, suffix=".keras") as temporary:
        model.save(temporary)
    return model
