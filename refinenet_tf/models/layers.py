"""The RefineNet blocks of the reference TF-slim code, as serializable tf-keras layers.

The reference code (the reference blog post, itself a copy of the public TF-slim RefineNet) runs
every ``slim.conv2d`` of the decoder inside one ``arg_scope``::

    slim.arg_scope([slim.conv2d], activation_fn=tf.nn.relu, normalizer_fn=slim.batch_norm,
                   normalizer_params={"decay": 0.997, "epsilon": 1e-5, "scale": True},
                   weights_regularizer=slim.l2_regularizer(1e-5))

so each of its convolutions is Conv2D (no bias) -> BatchNorm -> ReLU with an L2 penalty. :class:`ConvBNReLU`
is that convolution; every block below is built from it and, by default, computes exactly the slim function
of the same name:

* :class:`ResidualConvUnit`: ``relu(x) -> conv -> relu -> conv -> + x``.
* :class:`ChainedResidualPooling`: ``r = relu(x)``; ``s1 = conv(maxpool5x5(r)) + r``;
  ``s2 = conv(maxpool5x5(r)) + s1`` (both poolings read ``r``, as in the slim code).
* :class:`MultiResolutionFusion`: a conv per input, the coarser path resized bilinearly to the finer one, sum.
* :class:`RefineBlock`: two parallel RCUs per input, fusion, chained residual pooling, one output RCU.

The only argument the slim code hard-wires that these layers change is the upsampling: slim's ``unpool(x, 2)``
doubles the size, which fails when the input is not a multiple of 32; here the coarser path is resized to the
exact size of the tensor it is added to (identical to ``unpool`` whenever that size is twice as large).
"""

import tensorflow as tf
import tf_keras as keras

from refinenet_tf._checks import positive_int

__all__ = [
    "INTERPOLATIONS",
    "ChainedResidualPooling",
    "ConvBNReLU",
    "ImagePreprocessing",
    "MultiResolutionFusion",
    "RefineBlock",
    "ResidualConvUnit",
    "ResizeToMatch",
    "TaskOutput",
    "resize_bilinear",
]

_register = keras.saving.register_keras_serializable(package="refinenet_tf")

#: Bilinear resize semantics. ``"bilinear_tf1"`` is TF1's ``tf.image.resize_bilinear`` with its defaults
#: (``align_corners=False, half_pixel_centers=False``), which the slim code's ``unpool`` calls; ``"bilinear"``
#: is TF2's ``tf.image.resize`` (half-pixel centres, symmetric under flips; PyTorch's ``align_corners=False``);
#: ``"bilinear_align_corners"`` maps corner pixels onto corner pixels (PyTorch's ``align_corners=True``, used by
#: the official Light-Weight RefineNet).
INTERPOLATIONS = ("bilinear_tf1", "bilinear", "bilinear_align_corners")

#: ``mode`` of :class:`ImagePreprocessing`: those of ``keras.applications.imagenet_utils.preprocess_input``, and
#: ``"rgb_mean"``, the reference code's ``mean_image_subtraction`` (TF-slim's ResNets).
PREPROCESSING_MODES = ("caffe", "tf", "torch", "rgb_mean")


def resize_bilinear(images, size, interpolation="bilinear_tf1"):
    """Resizes ``images`` (NHWC) bilinearly to ``size`` (a length-2 int tensor), keeping their dtype.

    Args:
        images: a 4-D float tensor.
        size: ``[height, width]``, static or dynamic.
        interpolation: one of :data:`INTERPOLATIONS`.

    Returns:
        The resized tensor, in the dtype of ``images``. float16 and bfloat16 images are resized in float32 (the
        op's output is float32 anyway): under XLA the gradient of a half-precision bilinear resize comes back as
        garbage on TF 2.21 (tests/test_mixed_precision.py reproduces it); this way it is float32's, cast back.

    Example:
        >>> x = tf.reshape(tf.range(4, dtype=tf.float32), [1, 2, 2, 1])
        >>> resize_bilinear(x, [4, 4])[0, :, :, 0].numpy().tolist()[0]
        [0.0, 0.5, 1.0, 1.0]
        >>> resize_bilinear(x, [4, 4], "bilinear")[0, :, :, 0].numpy().tolist()[0]
        [0.0, 0.25, 0.75, 1.0]
        >>> resize_bilinear(x, [3, 3], "bilinear_align_corners")[0, :, :, 0].numpy().tolist()[0]
        [0.0, 0.5, 1.0]
    """
    dtype = tf.as_dtype(images.dtype)
    if dtype in (tf.float16, tf.bfloat16):
        images = tf.cast(images, tf.float32)
    if interpolation in ("bilinear_tf1", "bilinear_align_corners"):
        resized = tf.raw_ops.ResizeBilinear(
            images=images, size=tf.cast(size, tf.int32), align_corners=interpolation == "bilinear_align_corners",
            half_pixel_centers=False)
    elif interpolation == "bilinear":
        resized = tf.image.resize(images, size, method="bilinear")
    else:
        raise ValueError(f"interpolation={interpolation!r} is not supported; use one of {INTERPOLATIONS}.")
    if not isinstance(size, tf.Tensor):
        resized = tf.ensure_shape(resized, [images.shape[0], size[0], size[1], images.shape[-1]])
    return tf.cast(resized, dtype)


def _build_sublayer(layer, input_shape):
    """Builds ``layer`` inside its own name scope, so that its weights get unique names (``block/conv1/kernel``)."""
    with tf.name_scope(layer.name):
        layer.build(input_shape)


def _spatial_size(tensor):
    """``[height, width]`` of an NHWC tensor: static ints when known (keeps static shapes), else a tensor."""
    static = tensor.shape[1:3]
    if static.is_fully_defined():
        return static.as_list()
    return tf.shape(tensor)[1:3]


def _check_activation(activation):
    if activation is not None and not isinstance(activation, str):
        raise ValueError(f"activation must be the name of a Keras activation (e.g. 'relu') or None, got "
                         f"{activation!r}; names keep the layer serializable.")


def _check_weight_decay(weight_decay):
    if weight_decay is None:
        return
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a number >= 0 or None, got {weight_decay!r}.")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; use one of {tuple(choices)}.")


#: The arguments of slim's ``arg_scope`` that every decoder convolution takes (see :class:`ConvBNReLU`).
_SCOPE_ARGUMENTS = ("use_batch_norm", "activation", "use_bias", "weight_decay", "batch_norm_momentum",
                    "batch_norm_epsilon")


class _ArgScopeLayer(keras.layers.Layer):
    """Holds the arguments of slim's ``arg_scope`` (:data:`_SCOPE_ARGUMENTS`): checked once, stored under their
    own names, handed on by :meth:`scope_arguments` and serialized by :meth:`get_config`."""

    def __init__(self, use_batch_norm=True, activation="relu", use_bias=None, weight_decay=1e-5,
                 batch_norm_momentum=0.997, batch_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        _check_weight_decay(weight_decay)
        _check_activation(activation)
        self.use_batch_norm = use_batch_norm
        self.activation = activation
        self.use_bias = use_bias
        self.weight_decay = weight_decay
        self.batch_norm_momentum = batch_norm_momentum
        self.batch_norm_epsilon = batch_norm_epsilon

    def scope_arguments(self):
        """The arg-scope arguments and the dtype policy, as keyword arguments for a sublayer."""
        arguments = {name: getattr(self, name) for name in _SCOPE_ARGUMENTS}
        arguments["dtype"] = self.dtype_policy
        return arguments

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in _SCOPE_ARGUMENTS})
        return config


class _SlimScopedLayer(_ArgScopeLayer):
    """Base of the decoder blocks: ``features`` and ``kernel_size`` of all their convs, and the arg scope."""

    def __init__(self, features=256, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.features = positive_int("features", features)
        self.kernel_size = positive_int("kernel_size", kernel_size)

    def _conv(self, name, **overrides):
        """A :class:`ConvBNReLU` configured by this layer's arg-scope arguments (``overrides`` replace some)."""
        arguments = dict(filters=self.features, kernel_size=self.kernel_size, name=name,
                         **self.scope_arguments())
        arguments.update(overrides)
        return ConvBNReLU(**arguments)

    def _block_arguments(self):
        """The arguments a block hands to the blocks it is made of (``features``, ``kernel_size``, arg scope)."""
        return dict(features=self.features, kernel_size=self.kernel_size, **self.scope_arguments())

    def _check_channels(self, shape, what):
        channels = shape[-1]
        if channels is not None and channels != self.features:
            raise ValueError(
                f"{self.name}: {what} has {channels} channels but the residual sum needs features={self.features}; "
                f"reduce it to {self.features} channels first (a 1x1 ConvBNReLU) or set features={channels}.")

    def get_config(self):
        config = super().get_config()
        config.update(features=self.features, kernel_size=self.kernel_size)
        return config


@_register
class ConvBNReLU(_ArgScopeLayer):
    """``slim.conv2d`` inside the reference ``arg_scope``: Conv2D (no bias) -> BatchNorm -> ReLU, L2 on the kernel.

    Args:
        filters: output channels.
        kernel_size: square kernel size; padding is ``"same"``, stride 1.
        use_batch_norm: apply BatchNorm after the convolution (slim's ``normalizer_fn``).
        activation: activation after the normalisation (slim's ``activation_fn``), or ``None``.
        use_bias: add a bias; ``None`` means "when there is no BatchNorm", as slim does.
        weight_decay: slim's ``l2_regularizer`` scale. Slim adds ``scale * sum(w**2) / 2`` (``tf.nn.l2_loss``),
            so the Keras regularizer is ``L2(weight_decay / 2)``. ``None`` or 0 disables it.
        batch_norm_momentum: slim's ``decay``.
        batch_norm_epsilon: slim's ``epsilon``.
        depthwise: a depthwise convolution (one filter per input channel, PyTorch's ``groups=in_channels``, as
            in the multi-task RefineNet's last pooling and its heads); the input must have ``filters`` channels.

    Example:
        >>> layer = ConvBNReLU(8, 3)
        >>> layer(tf.zeros([1, 5, 7, 4])).shape
        TensorShape([1, 5, 7, 8])
        >>> depthwise = ConvBNReLU(8, 1, depthwise=True, use_batch_norm=False)
        >>> depthwise(tf.zeros([1, 5, 7, 8])).shape, depthwise.count_params()
        (TensorShape([1, 5, 7, 8]), 16)
    """

    def __init__(self, filters, kernel_size=3, depthwise=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = positive_int("filters", filters)
        self.kernel_size = positive_int("kernel_size", kernel_size)
        self.depthwise = bool(depthwise)
        regularizer = keras.regularizers.L2(self.weight_decay / 2.0) if self.weight_decay else None
        use_bias = (not self.use_batch_norm) if self.use_bias is None else self.use_bias
        if self.depthwise:
            self.conv = keras.layers.DepthwiseConv2D(
                self.kernel_size, padding="same", use_bias=use_bias, depthwise_regularizer=regularizer,
                dtype=self.dtype_policy, name="conv")
        else:
            self.conv = keras.layers.Conv2D(
                self.filters, self.kernel_size, padding="same", use_bias=use_bias,
                kernel_regularizer=regularizer, dtype=self.dtype_policy, name="conv")
        self.batch_norm = keras.layers.BatchNormalization(
            momentum=self.batch_norm_momentum, epsilon=self.batch_norm_epsilon, center=True, scale=True,
            dtype=self.dtype_policy, name="batch_norm") if self.use_batch_norm else None
        self.activation_layer = (keras.layers.Activation(self.activation, dtype=self.dtype_policy,
                                                         name="activation") if self.activation else None)

    def build(self, input_shape):
        channels = tf.TensorShape(input_shape)[-1]
        if self.depthwise and channels is not None and channels != self.filters:
            raise ValueError(f"{self.name}: a depthwise convolution keeps the channels, but its input has {channels} "
                             f"and filters={self.filters}; give it an input of {self.filters} channels.")
        _build_sublayer(self.conv, input_shape)
        if self.batch_norm is not None:
            _build_sublayer(self.batch_norm, self.conv.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = self.conv(inputs)
        if self.batch_norm is not None:
            x = self.batch_norm(x, training=training)
        if self.activation_layer is not None:
            x = self.activation_layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.filters])

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, depthwise=self.depthwise)
        return config


@_register
class ResidualConvUnit(_SlimScopedLayer):
    """Residual conv unit (RCU): ``relu(x) -> conv -> relu -> conv -> + x``.

    Mirrors the slim ``ResidualConvUnit(inputs, features=256, kernel_size=3)``. With the default arguments each
    ``conv`` is a :class:`ConvBNReLU`, exactly as the slim ``arg_scope`` makes it. The input must already have
    ``features`` channels. The paper's RCU is ``use_batch_norm=False, activation=None, use_bias=[True, False]``.

    Args:
        features: channels of both convolutions (and of the input).
        kernel_size: their kernel size.
        use_bias: ``None`` (a bias where there is no BatchNorm), a bool for both convolutions, or a pair
            ``[conv1, conv2]`` (the official RefineNet biases only the first).
        use_batch_norm, activation, weight_decay, batch_norm_momentum, batch_norm_epsilon: the arg-scope
            arguments of its convolutions (see :class:`ConvBNReLU`).

    Example:
        >>> ResidualConvUnit(features=16)(tf.zeros([1, 8, 8, 16])).shape
        TensorShape([1, 8, 8, 16])
    """

    def __init__(self, features=256, kernel_size=3, use_bias=None, **kwargs):
        if isinstance(use_bias, (list, tuple)):
            if len(use_bias) != 2:
                raise ValueError(f"use_bias must be None, a bool or a pair [conv1, conv2], got {use_bias!r}.")
            use_bias = list(use_bias)
        super().__init__(features=features, kernel_size=kernel_size, use_bias=use_bias, **kwargs)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        self._check_channels(input_shape, "its input")
        biases = self.use_bias if isinstance(self.use_bias, list) else [self.use_bias] * 2
        self.conv1 = self._conv("conv1", use_bias=biases[0])
        self.conv2 = self._conv("conv2", use_bias=biases[1])
        _build_sublayer(self.conv1, input_shape)
        _build_sublayer(self.conv2, input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        x = tf.nn.relu(inputs)
        x = self.conv1(x, training=training)
        x = tf.nn.relu(x)
        x = self.conv2(x, training=training)
        return x + inputs

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


@_register
class ChainedResidualPooling(_SlimScopedLayer):
    """Chained residual pooling (CRP) over ``r = relu(x)``.

    Each stage max-pools (``pool_size``, stride 1, same padding), convolves, and adds the result to a running
    sum that starts at ``r``. With ``chained=False`` (the slim code) every stage pools ``r`` itself::

        s1 = conv1(maxpool(r)) + r
        s2 = conv2(maxpool(r)) + s1

    With ``chained=True`` (the paper) stage ``i`` pools the output of stage ``i - 1``'s convolution.

    Args:
        features: channels of the convolutions (and of the input).
        kernel_size: kernel size of the stage convolutions.
        stages: number of pooling stages (2 in the slim code).
        pool_size: max-pooling window (5 in the slim code).
        chained: feed each stage from the previous stage (paper) instead of from ``r`` (slim).
        depthwise: depthwise stage convolutions (the multi-task RefineNet's last, "grouped" pooling).
        use_batch_norm, activation, weight_decay, batch_norm_momentum, batch_norm_epsilon: the arg-scope
            arguments of its convolutions (see :class:`ConvBNReLU`).

    Example:
        >>> ChainedResidualPooling(features=16)(tf.zeros([1, 8, 8, 16])).shape
        TensorShape([1, 8, 8, 16])
    """

    def __init__(self, features=256, kernel_size=3, stages=2, pool_size=5, chained=False, depthwise=False,
                 **kwargs):
        super().__init__(features=features, kernel_size=kernel_size, **kwargs)
        self.stages = positive_int("stages", stages)
        self.pool_size = positive_int("pool_size", pool_size)
        self.chained = chained
        self.depthwise = bool(depthwise)

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        self._check_channels(input_shape, "its input")
        self.pool = keras.layers.MaxPooling2D(self.pool_size, strides=1, padding="same",
                                              dtype=self.dtype_policy, name="pool")
        self.stage_convs = [self._conv(f"conv{i + 1}", depthwise=self.depthwise) for i in range(self.stages)]
        for conv in self.stage_convs:
            _build_sublayer(conv, input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        relu_inputs = tf.nn.relu(inputs)
        total = relu_inputs
        stage_input = relu_inputs
        for conv in self.stage_convs:
            stage_output = conv(self.pool(stage_input), training=training)
            total = stage_output + total
            if self.chained:
                stage_input = stage_output
        return total

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(stages=self.stages, pool_size=self.pool_size, chained=self.chained, depthwise=self.depthwise)
        return config


def _as_paths(inputs):
    """Normalises the fusion input to a list of paths, each a list of tensors (or shapes)."""
    if not isinstance(inputs, (list, tuple)):
        return [[inputs]]
    return [list(path) if isinstance(path, (list, tuple)) else [path] for path in inputs]


@_register
class MultiResolutionFusion(_SlimScopedLayer):
    """Multi-resolution fusion (MRF): a conv per input, coarser paths resized to the finest, all summed.

    The input is a list of *paths* ordered coarse to fine; a path is one tensor or a list of tensors of the
    same resolution. This mirrors the slim ``MultiResolutionFusion(high_inputs, low_inputs)``, whose
    ``high_inputs``/``low_inputs`` are the two RCU outputs of the coarser/finer path::

        MultiResolutionFusion()([[low_1, low_2]])                   # top block: slim's high_inputs=None
        MultiResolutionFusion()([[high_1, high_2], [low_1, low_2]])  # conv each, resize high, sum all

    Coarser paths are resized to the exact spatial size of the last (finest) path. Since bilinear resizing is
    linear, the convolved tensors of a path are summed before one resize (slim resizes each and then adds;
    the result is the same up to float rounding).

    Args:
        features: output channels of every convolution.
        kernel_size: their kernel size.
        interpolation: one of :data:`INTERPOLATIONS` (default: TF1 ``resize_bilinear``, as slim's ``unpool``).
        use_batch_norm, activation, weight_decay, batch_norm_momentum, batch_norm_epsilon: the arg-scope
            arguments of its convolutions (see :class:`ConvBNReLU`).

    Example:
        >>> high, low = tf.zeros([1, 4, 5, 16]), tf.zeros([1, 7, 9, 16])
        >>> MultiResolutionFusion(features=8)([[high, high], [low, low]]).shape
        TensorShape([1, 7, 9, 8])
    """

    def __init__(self, features=256, kernel_size=3, interpolation="bilinear_tf1", **kwargs):
        super().__init__(features=features, kernel_size=kernel_size, **kwargs)
        _check_choice("interpolation", interpolation, INTERPOLATIONS)
        self.interpolation = interpolation

    def build(self, input_shape):
        paths = _as_paths(input_shape)
        # One flat list (Keras' .keras format does not walk lists of lists); ``path_convs`` regroups it.
        self.convs = []
        self._path_lengths = [len(path) for path in paths]
        for i, path in enumerate(paths):
            for j, shape in enumerate(path):
                conv = self._conv(f"path{i + 1}_conv{j + 1}")
                _build_sublayer(conv, tf.TensorShape(shape))
                self.convs.append(conv)
        super().build(input_shape)

    @property
    def path_convs(self):
        """The convolutions grouped by path (coarse to fine), one per input tensor."""
        grouped, start = [], 0
        for length in self._path_lengths:
            grouped.append(list(self.convs[start:start + length]))
            start += length
        return grouped

    def call(self, inputs, training=None):
        paths = _as_paths(inputs)
        if [len(path) for path in paths] != self._path_lengths:
            raise ValueError(f"{self.name} was built for paths of sizes {self._path_lengths}, "
                             f"got {[len(p) for p in paths]}; call it the same way every time.")
        target_size = _spatial_size(paths[-1][0])
        fused = None
        for i, (path, convs) in enumerate(zip(paths, self.path_convs)):
            path_sum = None
            for tensor, conv in zip(path, convs):
                convolved = conv(tensor, training=training)
                path_sum = convolved if path_sum is None else path_sum + convolved
            if i < len(paths) - 1:
                path_sum = resize_bilinear(path_sum, target_size, self.interpolation)
            fused = path_sum if fused is None else fused + path_sum
        return fused

    def compute_output_shape(self, input_shape):
        finest = tf.TensorShape(_as_paths(input_shape)[-1][0])
        return finest[:-1].concatenate([self.features])

    def get_config(self):
        config = super().get_config()
        config.update(interpolation=self.interpolation)
        return config


@_register
class RefineBlock(_SlimScopedLayer):
    """RefineNet block: parallel RCUs per input -> :class:`MultiResolutionFusion` -> CRP -> output RCU.

    Mirrors the slim ``RefineBlock(high_inputs, low_inputs)``::

        RefineBlock()(low)           # the top block (slim: high_inputs=None)
        RefineBlock()([high, low])   # high: the previous block's output; low: this level's features

    Each input goes through ``rcus_per_input`` residual conv units that all read the same tensor (two in the
    slim code); their outputs are fused, pooled by :class:`ChainedResidualPooling` and passed through one more
    :class:`ResidualConvUnit`. The output has ``features`` channels at the resolution of ``low``.

    Args:
        features: channels of every convolution; ``high`` and ``low`` must already have this many.
        kernel_size: kernel size of every convolution.
        rcus_per_input: parallel RCUs applied to each input (2 in the slim code).
        crp_stages: stages of the chained residual pooling (2 in the slim code).
        crp_chained: chain the pooling stages (paper) instead of pooling ``relu(x)`` each time (slim).
        interpolation: how ``high`` is resized to ``low``'s size; see :data:`INTERPOLATIONS`.
        use_batch_norm, activation, weight_decay, batch_norm_momentum, batch_norm_epsilon: the arg-scope
            arguments of its convolutions (see :class:`ConvBNReLU`).

    Example:
        >>> top = RefineBlock(features=16)(tf.zeros([1, 3, 4, 16]))
        >>> RefineBlock(features=16)([top, tf.zeros([1, 5, 7, 16])]).shape
        TensorShape([1, 5, 7, 16])
    """

    def __init__(self, features=256, kernel_size=3, rcus_per_input=2, crp_stages=2, crp_chained=False,
                 interpolation="bilinear_tf1", **kwargs):
        super().__init__(features=features, kernel_size=kernel_size, **kwargs)
        _check_choice("interpolation", interpolation, INTERPOLATIONS)
        self.rcus_per_input = positive_int("rcus_per_input", rcus_per_input)
        self.crp_stages = positive_int("crp_stages", crp_stages)
        self.crp_chained = crp_chained
        self.interpolation = interpolation

    @staticmethod
    def _split(inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 1:
                return None, inputs[0]
            if len(inputs) == 2:
                return inputs[0], inputs[1]
            raise ValueError(f"RefineBlock takes `low` or `[high, low]`, got a list of {len(inputs)} inputs.")
        return None, inputs

    def build(self, input_shape):
        high_shape, low_shape = self._split(input_shape)
        low_shape = tf.TensorShape(low_shape)
        self._check_channels(low_shape, "`low`")
        scope = self._block_arguments()
        self.low_rcus = [ResidualConvUnit(name=f"low_rcu{i + 1}", **scope) for i in range(self.rcus_per_input)]
        for rcu in self.low_rcus:
            _build_sublayer(rcu, low_shape)
        self.high_rcus = []
        paths = [[low_shape] * self.rcus_per_input]
        if high_shape is not None:
            high_shape = tf.TensorShape(high_shape)
            self._check_channels(high_shape, "`high`")
            self.high_rcus = [ResidualConvUnit(name=f"high_rcu{i + 1}", **scope)
                              for i in range(self.rcus_per_input)]
            for rcu in self.high_rcus:
                _build_sublayer(rcu, high_shape)
            paths = [[high_shape] * self.rcus_per_input] + paths
        self.fusion = MultiResolutionFusion(interpolation=self.interpolation, name="fusion", **scope)
        _build_sublayer(self.fusion, paths)
        self.pooling = ChainedResidualPooling(stages=self.crp_stages, chained=self.crp_chained,
                                              name="pooling", **scope)
        _build_sublayer(self.pooling, low_shape)
        self.output_rcu = ResidualConvUnit(name="output_rcu", **scope)
        _build_sublayer(self.output_rcu, low_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        high, low = self._split(inputs)
        if (high is None) != (not self.high_rcus):
            raise ValueError(f"{self.name} was built {'with' if self.high_rcus else 'without'} a `high` input; "
                             "call it the same way every time.")
        paths = [[rcu(low, training=training) for rcu in self.low_rcus]]
        if high is not None:
            paths.insert(0, [rcu(high, training=training) for rcu in self.high_rcus])
        fused = self.fusion(paths, training=training)
        pooled = self.pooling(fused, training=training)
        return self.output_rcu(pooled, training=training)

    def compute_output_shape(self, input_shape):
        _, low_shape = self._split(input_shape)
        return tf.TensorShape(low_shape)[:-1].concatenate([self.features])

    def get_config(self):
        config = super().get_config()
        config.update(rcus_per_input=self.rcus_per_input, crp_stages=self.crp_stages,
                      crp_chained=self.crp_chained, interpolation=self.interpolation)
        return config


@_register
class ImagePreprocessing(keras.layers.Layer):
    """Turns RGB images in [0, 255] (uint8 or float) into a backbone's expected input, inside the model.

    The modes are those of ``keras.applications.imagenet_utils.preprocess_input``: ``"caffe"`` (RGB -> BGR, minus
    the ImageNet BGR mean; keras' ResNets), ``"tf"`` (scaled to [-1, 1]; MobileNetV2) and ``"torch"`` (scaled to
    [0, 1], then ImageNet mean/std); and ``"rgb_mean"``: RGB minus the ImageNet RGB mean (123.68, 116.78, 103.94),
    no channel flip, no scaling: the reference code's ``mean_image_subtraction``, what TF-slim's ResNets were
    trained on. The arithmetic runs in float32 whatever the dtype policy.

    Example:
        >>> ImagePreprocessing("tf")(tf.constant([[[[0, 255, 127.5]]]])).numpy().tolist()
        [[[[-1.0, 1.0, 0.0]]]]
        >>> ImagePreprocessing("rgb_mean")(tf.constant([[[[123.68, 116.78, 103.94]]]])).numpy().tolist()
        [[[[0.0, 0.0, 0.0]]]]
    """

    _MEAN_BGR = (103.939, 116.779, 123.68)
    _MEAN_RGB = (123.68, 116.78, 103.94)
    _TORCH_MEAN = (0.485, 0.456, 0.406)
    _TORCH_STD = (0.229, 0.224, 0.225)

    def __init__(self, mode="caffe", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        _check_choice("mode", mode, PREPROCESSING_MODES)
        self.mode = mode

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self.mode == "caffe":
            x = x[..., ::-1] - tf.constant(self._MEAN_BGR, tf.float32)
        elif self.mode == "tf":
            x = x / 127.5 - 1.0
        elif self.mode == "rgb_mean":
            x = x - tf.constant(self._MEAN_RGB, tf.float32)
        else:
            x = (x / 255.0 - tf.constant(self._TORCH_MEAN)) / tf.constant(self._TORCH_STD)
        return tf.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


@_register
class ResizeToMatch(keras.layers.Layer):
    """Resizes ``inputs[0]`` bilinearly to the spatial size of ``inputs[1]`` (of any dtype).

    Used to bring logits computed at 1/4 resolution back to the input size.

    Example:
        >>> ResizeToMatch()([tf.zeros([1, 9, 12, 5]), tf.zeros([1, 33, 47, 3], tf.uint8)]).shape
        TensorShape([1, 33, 47, 5])
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        _check_choice("interpolation", interpolation, INTERPOLATIONS)
        self.interpolation = interpolation

    def call(self, inputs):
        tensor, reference = inputs
        tensor = tf.cast(tensor, self.compute_dtype)
        return resize_bilinear(tensor, _spatial_size(reference), self.interpolation)

    def compute_output_shape(self, input_shape):
        tensor_shape, reference_shape = (tf.TensorShape(s) for s in input_shape)
        return tf.TensorShape([tensor_shape[0], reference_shape[1], reference_shape[2], tensor_shape[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(interpolation=self.interpolation)
        return config


@_register
class TaskOutput(keras.layers.Layer):
    """Turns a head's prediction into its task's output, in float32 (the multi-task RefineNet's outputs).

    Args:
        transform: ``"identity"`` (segmentation logits), ``"absolute"`` (depth: the release reads
            ``|prediction|`` as metres) or ``"unit_vector"`` (surface normals: scaled to length 1 along the
            last axis).

    Example:
        >>> TaskOutput("absolute")(tf.constant([[-1.5, 2.0]])).numpy().tolist()
        [[1.5, 2.0]]
        >>> TaskOutput("unit_vector")(tf.constant([[3.0, 0.0, 4.0]])).numpy().astype("float64").round(6).tolist()
        [[0.6, 0.0, 0.8]]
    """

    TRANSFORMS = ("identity", "absolute", "unit_vector")

    def __init__(self, transform="identity", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if transform not in self.TRANSFORMS:
            raise ValueError(f"transform={transform!r} is not supported; use one of {self.TRANSFORMS}.")
        self.transform = transform

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype)
        if self.transform == "absolute":
            return tf.abs(x)
        if self.transform == "unit_vector":
            return tf.math.l2_normalize(x, axis=-1, epsilon=1e-12)
        return tf.identity(x)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(transform=self.transform)
        return config
