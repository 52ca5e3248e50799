"""The official PyTorch releases' checkpoints into Keras: RefineNet-101 and Light-Weight RefineNet.

A checkpoint of ``DrSleep/light-weight-refinenet`` (``rf_lw50`` / ``rf_lw101`` / ``rf_lw152`` / ``mbv2``), of
``DrSleep/refinenet-pytorch`` (``rf101``) or of ``DrSleep/multi-task-refinenet`` (``ExpNYUD_joint``,
``ExpKITTI_joint``, ``ExpNYUDKITTI_joint``, ``ExpNYUD_three``) converts into the preset of the same structure:

=============================  ======================================  =====================================
preset                         release                                 classifier tensor
=============================  ======================================  =====================================
``lw_resnet50_official``       light-weight-refinenet ``rf_lw50``      ``clf_conv.weight``
``lw_resnet101_official``      light-weight-refinenet ``rf_lw101``     ``clf_conv.weight``
``lw_resnet152_official``      light-weight-refinenet ``rf_lw152``     ``clf_conv.weight``
``lw_mobilenetv2_official``    light-weight-refinenet ``mbv2``         ``segm.weight``
``refinenet_resnet101_official``  refinenet-pytorch ``rf101``          ``clf_conv.weight``
``multitask_mobilenetv2_official``  multi-task-refinenet ``net``       ``segm.weight``
=============================  ======================================  =====================================

The multi-task checkpoints also hold a depth head (``pre_depth``, ``depth``) and, in ``ExpNYUD_three``, a
surface-normals head (``pre_normal``, ``normal``): the model gets a ``normals`` output when the checkpoint has
``normal.weight``. Their class count (40 for NYUDv2, 19 for KITTI, 46 for the NYUD + KITTI model) is read from
``segm.weight`` like the others'.

The file is read with ``torch.load(..., weights_only=True)``: tensors and plain containers only, no pickled
code runs. It may hold the state dict itself, or a dict with it under ``"state_dict"``, ``"model"`` or ``"segmenter"``
(the training scripts' checkpoints); ``module.`` prefixes (``DataParallel``) are removed. The table below (official name ->
Keras weight, with the transform) is applied by :func:`refinenet_tf.models.checkpoints.assign_weights`, which fills
every Keras weight from exactly one tensor and uses every tensor (``num_batches_tracked`` aside), or names every
tensor that is missing, left over or of the wrong shape in one error.

torch is needed only here: ``pip install "refinenet_tf[torch]"``.
"""

import logging
import os

import numpy as np

from refinenet_tf import _files
from refinenet_tf import models
from refinenet_tf.models.checkpoints import ConversionError, assign_weights

__all__ = ["ARCHITECTURES", "convert", "convert_checkpoint", "load_state_dict", "pytorch_table"]

_log = logging.getLogger(__name__)

#: preset -> the official structure's family (which table) and its backbone depth.
ARCHITECTURES = {
    "lw_resnet50_official": ("light_weight_resnet", 50),
    "lw_resnet101_official": ("light_weight_resnet", 101),
    "lw_resnet152_official": ("light_weight_resnet", 152),
    "lw_mobilenetv2_official": ("light_weight_mobilenetv2", None),
    "refinenet_resnet101_official": ("refinenet_resnet", 101),
    "multitask_mobilenetv2_official": ("multitask_mobilenetv2", None),
}

_CLASSIFIERS = {"light_weight_resnet": "clf_conv", "light_weight_mobilenetv2": "segm", "refinenet_resnet": "clf_conv",
                "multitask_mobilenetv2": "segm"}

#: The multi-task release's modules of each task's head: (depthwise 1x1, 3x3 predictor with bias).
_TASK_HEADS = {"segmentation": ("pre_segm", "segm"), "depth": ("pre_depth", "depth"),
               "normals": ("pre_normal", "normal")}

_BATCH_NORM = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
               ("moving_variance", "running_var"))

#: Keys under which training checkpoints keep the model's state dict (``"segmenter"``: light-weight-refinenet's
#: ``src/train.py``; ``"model"``: its ``src_v2`` / DenseTorch ``Saver``).
_WRAPPER_KEYS = ("state_dict", "model", "segmenter")

#: The official structures' decoder levels, coarse to fine: stage ``k`` of their names is level ``P{6 - k}``.
_LEVELS = ("p5", "p4", "p3", "p2")


def _conv(table, keras_layer, torch_module, transform="conv_oihw", bias=False):
    table[f"{keras_layer}/{'depthwise_kernel' if transform == 'depthwise_oihw' else 'kernel'}"] = (
        f"{torch_module}.weight", transform)
    if bias:
        table[f"{keras_layer}/bias"] = (f"{torch_module}.bias", "identity")


def _batch_norm(table, keras_layer, torch_module):
    for keras_name, torch_name in _BATCH_NORM:
        table[f"{keras_layer}/{keras_name}"] = (f"{torch_module}.{torch_name}", "identity")


def _resnet_table(table, depth):
    from refinenet_tf.models import torch_backbones

    _conv(table, "stem_conv", "conv1")
    _batch_norm(table, "stem_bn", "bn1")
    for stage, blocks in enumerate(torch_backbones.RESNET_BLOCKS[depth], start=1):
        for block in range(blocks):
            keras_block, torch_block = f"layer{stage}_block{block + 1}", f"layer{stage}.{block}"
            for i in (1, 2, 3):
                _conv(table, f"{keras_block}_conv{i}", f"{torch_block}.conv{i}")
                _batch_norm(table, f"{keras_block}_bn{i}", f"{torch_block}.bn{i}")
            if block == 0:
                _conv(table, f"{keras_block}_downsample_conv", f"{torch_block}.downsample.0")
                _batch_norm(table, f"{keras_block}_downsample_bn", f"{torch_block}.downsample.1")


def _mobilenetv2_table(table):
    from refinenet_tf.models import torch_backbones

    _conv(table, "layer1_conv", "layer1.0")
    _batch_norm(table, "layer1_bn", "layer1.1")
    for layer, (_, _, blocks, _) in enumerate(torch_backbones.MOBILENETV2_STAGES, start=2):
        for block in range(blocks):
            keras_block, torch_block = f"layer{layer}_block{block + 1}", f"layer{layer}.{block}.output"
            for index, part in enumerate(("expand", "depthwise", "project")):
                _conv(table, f"{keras_block}_{part}_conv", f"{torch_block}.{index}.0",
                      "depthwise_oihw" if part == "depthwise" else "conv_oihw")
                _batch_norm(table, f"{keras_block}_{part}_bn", f"{torch_block}.{index}.1")


def _pooling(table, level, torch_module, transform="conv_oihw"):
    for i in (1, 2, 3, 4):
        _conv(table, f"pooling_{level}/conv{i}/conv", f"{torch_module}.0.{i}_outvar_dimred", transform)


def _rcus(table, keras_prefix, torch_module, count):
    # The release's RCUBlock: "{i}_conv" (with bias) then "{i}_conv_relu_varout_dimred" (without).
    for i in range(1, count + 1):
        _conv(table, f"{keras_prefix}_rcu{i}/conv1/conv", f"{torch_module}.0.{i}_conv", bias=True)
        _conv(table, f"{keras_prefix}_rcu{i}/conv2/conv", f"{torch_module}.0.{i}_conv_relu_varout_dimred")


def _resnet_decoder_table(table, with_rcus):
    for stage, level in enumerate(_LEVELS, start=1):
        _conv(table, f"reduce_{level}/conv", f"p_ims1d2_outl{stage}_dimred")
        if with_rcus:
            _rcus(table, f"adapt_{level}", f"adapt_stage{stage}_b", 2)
        if stage > 1:
            _conv(table, f"fusion_{level}/path1_conv1/conv", f"mflow_conv_g{stage - 1}_b3_joint_varout_dimred")
            _conv(table, f"fusion_{level}/path2_conv1/conv", f"adapt_stage{stage}_b2_joint_varout_dimred")
        _pooling(table, level, f"mflow_conv_g{stage}_pool")
        if with_rcus:
            _rcus(table, f"output_{level}", f"mflow_conv_g{stage}_b", 3)


def _mobilenetv2_decoder_table(table):
    # Fusion paths, coarse to fine: the previous level's conv_adapt, then the backbone levels (P5 = layer8, P5a =
    # layer7, P4 = layer6, P4a = layer5, P3 = layer4, P2 = layer3).
    paths = {"p5": ("conv8", "conv7"), "p4": ("conv_adapt4", "conv6", "conv5"), "p3": ("conv_adapt3", "conv4"),
             "p2": ("conv_adapt2", "conv3")}
    for crp, level in zip((4, 3, 2, 1), _LEVELS):
        for path, torch_module in enumerate(paths[level], start=1):
            _conv(table, f"fusion_{level}/path{path}_conv1/conv", torch_module)
        _pooling(table, level, f"crp{crp}")


def _multitask_decoder_table(table, tasks):
    # refinenet_tf.models.multitask fuses each stride's levels as one path (P5 = layer8 and P5a = layer7, ...), after
    # the previous level's conv_adapt; the last pooling (crp1) is depthwise.
    paths = {"p5": (("conv8", "conv7"),), "p4": (("conv_adapt4",), ("conv6", "conv5")),
             "p3": (("conv_adapt3",), ("conv4",)), "p2": (("conv_adapt2",), ("conv3",))}
    for crp, level in zip((4, 3, 2, 1), _LEVELS):
        for path, modules in enumerate(paths[level], start=1):
            for index, torch_module in enumerate(modules, start=1):
                _conv(table, f"fusion_{level}/path{path}_conv{index}/conv", torch_module)
        _pooling(table, level, f"crp{crp}", "depthwise_oihw" if crp == 1 else "conv_oihw")
    for task in tasks:
        depthwise, predictor = _TASK_HEADS[task]
        _conv(table, f"{task}_head/conv", depthwise, "depthwise_oihw")
        _conv(table, f"{task}_predictor/conv", predictor, bias=True)


def pytorch_table(architecture, tasks=("segmentation", "depth")):
    """``{Keras weight name: (official PyTorch name, transform)}`` for the preset ``architecture``.

    Args:
        architecture: one of :data:`ARCHITECTURES`.
        tasks: the heads of a multi-task model (``("segmentation", "depth")``, plus ``"normals"`` for
            ``ExpNYUD_three``); ignored by the single-task structures.

    Example:
        >>> table = pytorch_table("lw_resnet50_official")
        >>> table["layer3_block2_conv2/kernel"], table["pooling_p5/conv1/conv/kernel"]
        (('layer3.1.conv2.weight', 'conv_oihw'), ('mflow_conv_g1_pool.0.1_outvar_dimred.weight', 'conv_oihw'))
        >>> table = pytorch_table("multitask_mobilenetv2_official")
        >>> table["fusion_p4/path2_conv2/conv/kernel"], table["depth_head/conv/depthwise_kernel"]
        (('conv5.weight', 'conv_oihw'), ('pre_depth.weight', 'depthwise_oihw'))
    """
    family, depth = _architecture(architecture)
    table = {}
    if family == "multitask_mobilenetv2":
        _mobilenetv2_table(table)
        _multitask_decoder_table(table, tasks)
        return table
    if family == "light_weight_mobilenetv2":
        _mobilenetv2_table(table)
        _mobilenetv2_decoder_table(table)
    else:
        _resnet_table(table, depth)
        _resnet_decoder_table(table, with_rcus=family == "refinenet_resnet")
    _conv(table, "classifier/conv", _CLASSIFIERS[family], bias=True)
    return table


def _architecture(architecture):
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r} is not an official structure; use one of "
                         f"{sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[architecture]


def load_state_dict(checkpoint):
    """The tensors of an official PyTorch checkpoint as ``{name: float32 numpy array}``.

    Reads ``.pth`` / ``.pth.tar`` / ``.ckpt`` files with ``torch.load(weights_only=True)`` (a file that needs
    pickled code is refused), takes the state dict from ``"state_dict"``, ``"model"`` or ``"segmenter"`` when the
    file holds a training checkpoint, and drops ``DataParallel``'s ``module.`` prefixes.

    Raises:
        FileNotFoundError: no such file.
        ImportError: torch is not installed.
        ConversionError: the file is not a PyTorch checkpoint of tensors, naming it.
    """
    checkpoint = os.fspath(checkpoint)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint={checkpoint!r}: no such file; give an official .pth, .pth.tar or .ckpt "
                                "file.")
    try:
        import torch
    except ImportError:
        raise ImportError("Converting PyTorch checkpoints needs torch: pip install \"refinenet_tf[torch]\".") from None
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(f"{checkpoint} cannot be read as a PyTorch checkpoint of tensors with "
                              f"torch.load(weights_only=True) ({first_line}); give the official .pth / .pth.tar "
                              "file, which holds only tensors.") from None
    wrapped = [loaded[key] for key in _WRAPPER_KEYS if isinstance(loaded, dict) and isinstance(loaded.get(key), dict)]
    state = wrapped[0] if wrapped else loaded
    if not isinstance(state, dict) or not state:
        raise ConversionError(f"{checkpoint} holds {type(state).__name__}, not a state dict of tensors (nor one "
                              f"under any of {list(_WRAPPER_KEYS)}).")
    not_tensors = sorted(str(name) for name, value in state.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise ConversionError(f"{checkpoint}: these state dict entries are not tensors: {', '.join(not_tensors)}.")
    tensors = {}
    for name, value in state.items():
        name = name[len("module."):] if name.startswith("module.") else name
        if name in tensors:
            raise ConversionError(f"{checkpoint} holds {name!r} twice (with and without 'module.').")
        tensors[name] = value.detach().cpu().float().numpy() if value.is_floating_point() else value.numpy()
    return tensors


def _classes(tensors, family, checkpoint):
    name = f"{_CLASSIFIERS[family]}.weight"
    if name not in tensors or np.ndim(tensors[name]) != 4:
        raise ConversionError(f"{checkpoint} has no classifier {name!r} (a 4-D conv kernel), so it is not the "
                              "structure given by architecture=; check that argument.")
    return int(np.shape(tensors[name])[0])


def convert(checkpoint, architecture, num_classes=None):
    """Builds the preset ``architecture`` and fills it from an official PyTorch checkpoint.

    Args:
        checkpoint: the ``.pth`` / ``.pth.tar`` / ``.ckpt`` file.
        architecture: one of :data:`ARCHITECTURES` (e.g. ``"lw_resnet50_official"``).
        num_classes: the classifier's classes; ``None`` infers them from the checkpoint's classifier (logged).

    Returns:
        The Keras model: uint8 RGB of any size in (the release's preprocessing inside), logits at input size out
        (for ``multitask_mobilenetv2_official`` the dict ``{"segmentation": logits, "depth": metres}``, with
        ``"normals"`` when the checkpoint has that head). Its ``inferred_num_classes`` attribute holds the class
        count read from the checkpoint.

    Raises:
        ConversionError: the checkpoint does not fit (every missing, unused or wrong-shaped tensor named).
    """
    family, _ = _architecture(architecture)
    tensors = load_state_dict(checkpoint)
    found = _classes(tensors, family, checkpoint)
    if num_classes is not None and num_classes != found:
        raise ConversionError(f"num_classes={num_classes} but the classifier of {checkpoint} has {found} classes; "
                              "leave num_classes unset to take the checkpoint's.")
    _log.info("%s: %d classes, read from %s.weight", checkpoint, found, _CLASSIFIERS[family])
    options, tasks = {}, ("segmentation", "depth")
    if family == "multitask_mobilenetv2":
        if "normal.weight" in tensors:
            tasks += ("normals",)
        options["tasks"] = tasks
        _log.info("%s: heads %s", checkpoint, ", ".join(tasks))
    model = models.build(architecture, num_classes=found, backbone_weights=None, **options)
    ignored = [name for name in tensors if name.endswith(".num_batches_tracked")]
    assign_weights(model, tensors, pytorch_table(architecture, tasks), os.fspath(checkpoint), ignored=ignored)
    model.inferred_num_classes = found
    return model


def convert_checkpoint(checkpoint, output, architecture, num_classes=None, overwrite=False):
    """Converts an official PyTorch checkpoint into a ``.keras`` file (see :func:`convert`).

    The file is written atomically: an interrupted conversion leaves no partial ``output``.

    Args:
        checkpoint: the ``.pth`` / ``.pth.tar`` / ``.ckpt`` file.
        output: the ``.keras`` file to write.
        architecture: one of :data:`ARCHITECTURES`.
        num_classes: ``None`` (infer from the checkpoint) or the expected class count.
        overwrite: replace an existing ``output``.

    Returns:
        The converted model (its ``inferred_num_classes`` is the class count read from the checkpoint).
    """
    output = os.fspath(output)
    if not output.endswith(".keras"):
        raise ValueError(f"output={output!r} must be a .keras file.")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"output={output!r} exists; pass overwrite=True to replace it.")
    model = convert(checkpoint, architecture, num_classes=num_classes)
    with _files.atomic_path(output, suffix=".keras") as temporary:
        model.save(temporary)
    return model
