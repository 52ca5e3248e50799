"""TF-slim-layout ResNets (``resnet_v1_50``, ``resnet_v1_101``, ``resnet_v1_152``) in tf-keras.

The reference TF-slim code runs ``resnet_v1.resnet_v1_101`` under ``resnet_arg_scope``. These builders make
the same network, layer for layer, so that TF-slim checkpoints load into it and its outputs equal slim's:

* ``conv2d_same`` for strided convolutions: explicit zero padding ``(k - 1) // 2`` before and the rest after,
  then a VALID convolution (``conv1``: 7x7 stride 2; the 3x3 ``conv2`` of a strided unit);
* bottleneck units ``1x1 -> 3x3 -> 1x1`` (depth ``4 * base``), the stride on the 3x3 conv of each block's
  *last* unit (blocks 1-3 stride 2, block 4 stride 1); the shortcut is a 1x1 conv + BatchNorm where the depth
  changes, else slim's ``subsample``: a 1x1 max pool with the unit's stride;
* no conv biases; BatchNorm after every conv (decay 0.997, epsilon 1e-5, scale); ReLU after each but the
  third conv and the shortcut; ``relu(shortcut + residual)``;
* ``pool1``: a 3x3 max pool, stride 2, SAME padding (the arg scope's ``max_pool2d`` padding);
* L2 on every conv kernel in slim's convention (``weight_decay * sum(w**2) / 2``).

The pyramid taps are the reference code's ``end_points``: ``P2`` = ``pool2`` (the output of ``pool1``, 64
channels, stride 4), ``P3`` = ``pool3`` (``block1``, 256, stride 8), ``P4`` = ``pool4`` (``block2``, 512, stride 16)
and ``P5`` = ``pool5`` (``block4``, 2048, stride 32). ``block3`` (1024 channels, stride 32) is not tapped. The
inputs are preprocessed as the reference code's ``mean_image_subtraction``: RGB minus the ImageNet RGB mean
(``ImagePreprocessing("rgb_mean")``).

Layer names say where a layer sits: ``conv1``, ``pool1``, ``block2_unit4_conv2`` (its BatchNorm
``block2_unit4_conv2_bn``), ``block1_unit1_shortcut``, ``block3_unit23_out``. :func:`checkpoint_table` maps every
weight onto TF-slim's variable names (``resnet_v1_101/block2/unit_4/bottleneck_v1/conv2/BatchNorm/gamma``), and
``weights=`` takes a TF-slim checkpoint (a prefix such as ``resnet_v1_101.ckpt``) through it.
"""

import collections.abc
import functools
import os
import re

import tensorflow as tf
import tf_keras as keras

__all__ = ["BLOCKS", "EMA_SUFFIX", "OPTIMIZER_SLOTS", "STAGE_TAPS", "CheckpointTensors", "build_resnet_v1",
           "checkpoint_table", "ignored_variables", "is_checkpoint", "load_checkpoint", "read_checkpoint", "taps"]

#: Units per block of each depth (TF-slim's ``resnet_v1_50/101/152``). Block ``i`` (from 1) has base depth ``64 * 2**(i - 1)``.
BLOCKS = {
    "resnet_v1_50": (3, 4, 6, 3),
    "resnet_v1_101": (3, 4, 23, 3),
    "resnet_v1_152": (3, 8, 36, 3),
}

#: The strides of the blocks' last units.
_BLOCK_STRIDES = (2, 2, 2, 1)

#: Pyramid level -> (the reference code's end point, the block it is, or None for ``pool1``).
STAGE_TAPS = {"P2": ("pool2", None), "P3": ("pool3", 1), "P4": ("pool4", 2), "P5": ("pool5", 4)}

_BATCH_NORM_EPSILON = 1e-5


def taps(name):
    """``{level: layer name}`` of the slim-layout ResNet ``name`` (see :data:`STAGE_TAPS`).

    Example:
        >>> taps("resnet_v1_101")
        {'P2': 'pool1', 'P3': 'block1_unit3_out', 'P4': 'block2_unit4_out', 'P5': 'block4_unit3_out'}
    """
    units = BLOCKS[name]
    return {level: "pool1" if block is None else f"block{block}_unit{units[block - 1]}_out"
            for level, (_, block) in STAGE_TAPS.items()}


class _Scope:
    """``resnet_arg_scope``: the arguments every conv + BatchNorm of the network shares."""

    def __init__(self, weight_decay, batch_norm_momentum):
        self.regularizer = keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None
        self.momentum = 0.997 if batch_norm_momentum is None else batch_norm_momentum

    def conv_bn(self, x, filters, kernel_size, stride, name, relu=True):
        """``slim.conv2d`` (``conv2d_same`` when strided) + BatchNorm (+ ReLU)."""
        padding = "same"
        if stride > 1 and kernel_size > 1:
            before = (kernel_size - 1) // 2
            after = kernel_size - 1 - before
            x = keras.layers.ZeroPadding2D(((before, after), (before, after)), name=f"{name}_pad")(x)
            padding = "valid"
        x = keras.layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=False,
                                kernel_regularizer=self.regularizer, name=name)(x)
        x = keras.layers.BatchNormalization(momentum=self.momentum, epsilon=_BATCH_NORM_EPSILON, center=True,
                                            scale=True, name=f"{name}_bn")(x)
        if relu:
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        return x

    def bottleneck(self, x, base_depth, stride, name):
        """TF-slim's ``bottleneck`` (``bottleneck_v1``): 1x1 -> 3x3 (strided) -> 1x1, plus the shortcut."""
        depth = 4 * base_depth
        if x.shape[-1] == depth:
            shortcut = x if stride == 1 else keras.layers.MaxPooling2D(
                1, strides=stride, padding="same", name=f"{name}_shortcut")(x)
        else:
            shortcut = self.conv_bn(x, depth, 1, stride, f"{name}_shortcut", relu=False)
        residual = self.conv_bn(x, base_depth, 1, 1, f"{name}_conv1")
        residual = self.conv_bn(residual, base_depth, 3, stride, f"{name}_conv2")
        residual = self.conv_bn(residual, depth, 1, 1, f"{name}_conv3", relu=False)
        x = keras.layers.Add(name=f"{name}_add")([shortcut, residual])
        return keras.layers.ReLU(name=f"{name}_out")(x)


def build_resnet_v1(name="resnet_v1_101", weights=None, input_shape=(None, None, 3), weight_decay=None,
                    batch_norm_momentum=None):
    """Builds TF-slim's ``resnet_v1_50/101/152`` without its classifier (``num_classes=None, global_pool=False``).

    Args:
        name: ``"resnet_v1_50"``, ``"resnet_v1_101"`` or ``"resnet_v1_152"`` (also the model's name).
        weights: ``None`` (random), a TF-slim checkpoint (``resnet_v1_101.ckpt``: a V1 file as TF-slim's ImageNet
            tarballs hold, or a V2 prefix; read by :func:`load_checkpoint`) or a Keras weights file of this
            backbone (``.weights.h5``, ``.keras``).
        input_shape: ``(height, width, 3)``; ``None`` for any size.
        weight_decay: the arg scope's L2 scale (``weight_decay * sum(w**2) / 2`` per conv kernel), or ``None``.
        batch_norm_momentum: BatchNorm decay (default 0.997, ``resnet_arg_scope``'s).

    Returns:
        A ``keras.Model`` from preprocessed images to the output of ``block4`` (2048 channels, stride 32).

    Example:
        >>> model = build_resnet_v1("resnet_v1_50")
        >>> model.output_shape, model.count_params()
        ((None, None, None, 2048), 23561152)
    """
    if name not in BLOCKS:
        raise ValueError(f"Unknown slim-layout ResNet {name!r}; use one of {sorted(BLOCKS)}.")
    if weights == "imagenet":
        raise ValueError(f"backbone_weights='imagenet': TF-slim's ImageNet weights are not downloaded "
                         f"automatically; download {name}_2016_08_28.tar.gz from the TF-slim model page, extract "
                         f"it and pass backbone_weights='{name}.ckpt' (see docs/slim_checkpoints.md).")
    scope = _Scope(weight_decay, batch_norm_momentum)
    images = keras.Input(input_shape, name="images")
    x = scope.conv_bn(images, 64, 7, 2, "conv1")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for block, (units, stride) in enumerate(zip(BLOCKS[name], _BLOCK_STRIDES), start=1):
        for unit in range(1, units + 1):
            x = scope.bottleneck(x, 64 * 2 ** (block - 1), stride if unit == units else 1,
                                 f"block{block}_unit{unit}")
    model = keras.Model(images, x, name=name)
    if weights is not None:
        weights = os.fspath(weights)
        if is_checkpoint(weights):
            load_checkpoint(model, weights)
        else:
            model.load_weights(weights)
    return model


def builder(name):
    """The :class:`refinenet_tf.models.backbones.BackboneSpec` builder of ``name``."""
    return functools.partial(build_resnet_v1, name)


#: How Keras weights files begin (HDF5, a .keras zip archive): never read as TensorFlow checkpoints.
_KERAS_MAGIC = (b"\x89HDF\r\n\x1a\n", b"PK\x03\x04")


def is_checkpoint(path):
    """``path`` names a TensorFlow checkpoint, not a Keras weights file: a prefix with an ``.index`` file (the V2
    format), a folder, or a single file in the V1 format (TF-slim's 2016 ImageNet ``resnet_v1_*.ckpt`` files).

    Example:
        >>> is_checkpoint("no/such/model.ckpt")
        False
    """
    path = os.fspath(path)
    if os.path.isdir(path) or os.path.isfile(path + ".index"):
        return True
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as stream:
        if stream.read(8).startswith(_KERAS_MAGIC):
            return False
    try:  # the V1 reader only reads the file's table of contents; nothing in the file runs
        tf.train.load_checkpoint(path)
    except Exception:
        return False
    return True


_CONV_NAME = re.compile(r"^(conv1|block(\d+)_unit(\d+)_(conv[123]|shortcut))$")
_BATCH_NORM_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def _slim_conv_scope(layer_name, scope):
    match = _CONV_NAME.match(layer_name)
    if match is None:
        raise ValueError(f"Layer {layer_name!r} is not a layer of a slim-layout ResNet.")
    if layer_name == "conv1":
        return f"{scope}/conv1"
    block, unit, conv = match.group(2, 3, 4)
    return f"{scope}/block{block}/unit_{unit}/bottleneck_v1/{conv}"


def checkpoint_table(backbone, scope=None):
    """``{Keras weight name: (TF-slim variable name, "identity")}`` for every weight of ``backbone``.

    Args:
        backbone: a model built by :func:`build_resnet_v1` (alone or inside a RefineNet).
        scope: the checkpoint's variable scope (default: the backbone's name, e.g. ``resnet_v1_101``).

    Example:
        >>> table = checkpoint_table(build_resnet_v1("resnet_v1_50"))
        >>> table["block1_unit3_conv2_bn/moving_mean"]
        ('resnet_v1_50/block1/unit_3/bottleneck_v1/conv2/BatchNorm/moving_mean', 'identity')
    """
    scope = scope or backbone.name
    table = {}
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            table[layer.kernel.name[:-2]] = (f"{_slim_conv_scope(layer.name, scope)}/weights", "identity")
        elif isinstance(layer, keras.layers.BatchNormalization):
            conv_scope = _slim_conv_scope(layer.name[:-len("_bn")], scope)
            for weight in _BATCH_NORM_WEIGHTS:
                table[getattr(layer, weight).name[:-2]] = (f"{conv_scope}/BatchNorm/{weight}", "identity")
    return table


class CheckpointTensors(collections.abc.Mapping):
    """The tensors of a TF1/TF2 checkpoint by name, read on access (``tf.train.load_checkpoint``: no graph, no
    code from the file), so that optimizer slots a table does not use are never read."""

    def __init__(self, path, argument="checkpoint="):
        path = os.fspath(path)
        if os.path.isdir(path):
            latest = tf.train.latest_checkpoint(path)
            if latest is None:
                raise FileNotFoundError(f"{argument} {path!r} is a folder without a 'checkpoint' file naming "
                                        "the latest checkpoint; give the checkpoint's prefix (model.ckpt-1000).")
            path = latest
        if not os.path.isfile(path + ".index") and not os.path.isfile(path):
            hint = (f"; give the prefix {path[:-len('.index')]!r} instead" if path.endswith(".index") else
                    f"; give the prefix {path.rsplit('.data-', 1)[0]!r} instead" if ".data-" in path else
                    ": give a TF checkpoint prefix (the name before .index / .data-00000-of-00001) or a V1 "
                    "checkpoint file")
            raise FileNotFoundError(f"{argument} {path!r} is not a TensorFlow checkpoint (no {path}.index){hint}.")
        try:
            self._reader = tf.train.load_checkpoint(path)
        except Exception as error:  # a corrupt or foreign file
            raise ValueError(f"{argument} {path!r} is not a readable TensorFlow checkpoint: "
                             f"{str(error).strip().splitlines()[0]}") from None
        self.path = path
        self.shapes = {name: tuple(shape) for name, shape in self._reader.get_variable_to_shape_map().items()
                       if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}

    def __getitem__(self, name):
        if name not in self.shapes:
            raise KeyError(name)
        return self._reader.get_tensor(name)

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self):
        return len(self.shapes)


def read_checkpoint(path, argument="checkpoint="):
    """:class:`CheckpointTensors` of ``path``: a checkpoint prefix (V2), a V1 checkpoint file, or a folder (its
    latest checkpoint)."""
    return CheckpointTensors(path, argument)


#: Slot names TF1 optimizers give the state they keep per variable (``<variable>/<slot>``).
OPTIMIZER_SLOTS = ("Momentum", "Adam", "Adam_1", "RMSProp", "RMSProp_1", "Adagrad", "Adadelta", "Adadelta_1",
                   "Ftrl", "Ftrl_1")

#: The suffix of the shadow variables of ``tf.train.ExponentialMovingAverage`` (``<variable>/<suffix>``).
EMA_SUFFIX = "/ExponentialMovingAverage"


def ignored_variables(tensors, table, logits_scope=None):
    """The checkpoint variables that carry nothing for a model filled through ``table``.

    Those are scalars (``global_step``, a learning rate, Adam's ``beta1_power``), optimizer slots and
    ExponentialMovingAverage shadows of the variables ``table`` reads (or, when it reads the shadows, the raw
    variables), and the ImageNet classifier ``<logits_scope>/logits/...`` if ``logits_scope`` is given.
    """
    used = {foreign for foreign, _ in table.values()}
    raw = {foreign[:-len(EMA_SUFFIX)] if foreign.endswith(EMA_SUFFIX) else foreign for foreign in used}
    ignored = set()
    for name, shape in tensors.shapes.items():
        variable, _, last = name.rpartition("/")
        if (shape == () or (variable in raw and (last in OPTIMIZER_SLOTS or name.endswith(EMA_SUFFIX)))
                or (name in raw and name not in used)
                or (logits_scope is not None and name.startswith(f"{logits_scope}/logits/"))):
            ignored.add(name)
    return ignored


def load_checkpoint(backbone, path):
    """Fills ``backbone`` (from :func:`build_resnet_v1`) from a TF-slim checkpoint, all or nothing.

    Every weight comes from the variable of its layer in the checkpoint's ``resnet_v1_<depth>/`` scope, of its
    shape. Left out: the ImageNet classifier (``<scope>/logits``) and what :func:`ignored_variables` lists
    (scalars, optimizer slots, ExponentialMovingAverage shadows: the raw variables are taken); anything else in
    the file, or missing from it, fails naming it.

    Raises:
        refinenet_tf.convert.ConversionError: naming every missing, unused or wrongly shaped variable.
    """
    from refinenet_tf.models.checkpoints import assign_weights

    tensors = read_checkpoint(path, "backbone_weights=")
    table = checkpoint_table(backbone)
    assign_weights(backbone, tensors, table, f"backbone_weights={tensors.path!r}",
                   ignored=ignored_variables(tensors, table, backbone.name))
