"""An independent NumPy transcription of the reference TF-slim RefineNet functions.

Written from the slim code, not from refinenet_tf: each function below is the slim function of the same name,
with ``slim_conv2d`` standing for ``slim.conv2d`` under the reference ``arg_scope`` (conv, BatchNorm in
inference mode, ReLU). Weights are read from the Keras layers only to be plugged in here.
"""

import numpy as np


def relu(x):
    return np.maximum(x, 0.0)


def conv2d_same(x, kernel, bias=None):
    """Stride-1 'SAME' convolution, NHWC input, HWIO kernel, odd kernel size."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("nhwc,cf->nhwf", padded[:, dy:dy + height, dx:dx + width, :], kernel[dy, dx])
    if bias is not None:
        out += bias
    return out


def max_pool_same(x, size=5):
    """Stride-1 'SAME' max pooling (padding never wins the max)."""
    pad = size // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    height, width = x.shape[1:3]
    windows = [padded[:, dy:dy + height, dx:dx + width, :] for dy in range(size) for dx in range(size)]
    return np.max(np.stack(windows), axis=0)


def _bilinear_axis(in_size, out_size, mode):
    positions = np.arange(out_size, dtype=np.float64)
    if mode == "align_corners":
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        source = positions * scale
    elif mode == "half_pixel":
        source = (positions + 0.5) * (in_size / out_size) - 0.5
    else:  # TF1 default: align_corners=False, half_pixel_centers=False
        source = positions * (in_size / out_size)
    floor = np.floor(source)
    lower = np.clip(floor, 0, in_size - 1).astype(int)
    upper = np.clip(np.ceil(source) if mode == "half_pixel" else floor + 1, 0, in_size - 1).astype(int)
    return lower, upper, source - floor


def resize_bilinear(x, out_h, out_w, half_pixel=False, mode=None):
    """Bilinear resize; ``mode``: ``"tf1"`` (TF1 ``resize_bilinear`` defaults), ``"half_pixel"`` (TF2,
    PyTorch ``align_corners=False``) or ``"align_corners"`` (PyTorch ``align_corners=True``)."""
    mode = mode or ("half_pixel" if half_pixel else "tf1")
    top, bottom, y_lerp = _bilinear_axis(x.shape[1], out_h, mode)
    left, right, x_lerp = _bilinear_axis(x.shape[2], out_w, mode)
    y_lerp = y_lerp[None, :, None, None]
    x_lerp = x_lerp[None, None, :, None]
    top_left, top_right = x[:, top][:, :, left], x[:, top][:, :, right]
    bottom_left, bottom_right = x[:, bottom][:, :, left], x[:, bottom][:, :, right]
    top_row = top_left + (top_right - top_left) * x_lerp
    bottom_row = bottom_left + (bottom_right - bottom_left) * x_lerp
    return top_row + (bottom_row - top_row) * y_lerp


def unpool(x, scale):
    """The slim code's ``unpool``: ``tf.image.resize_bilinear`` to ``scale`` times the size."""
    return resize_bilinear(x, x.shape[1] * scale, x.shape[2] * scale)


def slim_conv2d(x, params):
    """``slim.conv2d`` under the reference arg_scope: conv (no bias) -> BatchNorm (inference) -> ReLU."""
    y = conv2d_same(x, params["kernel"], params.get("bias"))
    if "gamma" in params:
        y = (y - params["mean"]) / np.sqrt(params["variance"] + params["epsilon"]) * params["gamma"] + \
            params["beta"]
    return relu(y) if params["relu"] else y


def ResidualConvUnit(inputs, conv1, conv2):
    net = relu(inputs)
    net = slim_conv2d(net, conv1)
    net = relu(net)
    net = slim_conv2d(net, conv2)
    return net + inputs


def ChainedResidualPooling(inputs, convs, pool_size=5, chained=False):
    """Slim: every stage pools ``relu(inputs)``. ``chained=True``: the paper's chain (for the variants)."""
    net_relu = relu(inputs)
    total, source = net_relu, net_relu
    for conv in convs:
        net = slim_conv2d(max_pool_same(source, pool_size), conv)
        total = net + total
        if chained:
            source = net
    return total


def MultiResolutionFusion(high_inputs, low_inputs, high_convs, low_convs, half_pixel=False):
    """Slim: conv each low input and sum; conv each high input, resize it to the low size, sum; add."""
    rcu_low = sum(slim_conv2d(x, p) for x, p in zip(low_inputs, low_convs))
    if high_inputs is None:
        return rcu_low
    out_h, out_w = low_inputs[0].shape[1:3]
    rcu_high = sum(resize_bilinear(slim_conv2d(x, p), out_h, out_w, half_pixel)
                   for x, p in zip(high_inputs, high_convs))
    return rcu_low + rcu_high


def RefineBlock(high_inputs, low_inputs, params, half_pixel=False):
    """Slim: two RCUs on the same low (and high) input, MRF, CRP, RCU. ``params`` from ``refine_block_params``."""
    rcu_low = [ResidualConvUnit(low_inputs, *p) for p in params["low_rcus"]]
    rcu_high = None
    if high_inputs is not None:
        rcu_high = [ResidualConvUnit(high_inputs, *p) for p in params["high_rcus"]]
    fuse = MultiResolutionFusion(rcu_high, rcu_low, params["fusion_high"], params["fusion_low"], half_pixel)
    fuse_pooling = ChainedResidualPooling(fuse, params["pooling"])
    return ResidualConvUnit(fuse_pooling, *params["output_rcu"])


# --- reading the weights of refinenet_tf layers into the dicts above ------------------------------------------

def conv_params(layer, kind="slim", bias=False):
    """The weights of a ``ConvBNReLU`` as a dict for :func:`slim_conv2d`.

    What the conv computes is decided here, from the reference, never read from the layer: ``kind="slim"`` is
    ``slim.conv2d`` under the arg_scope (no bias, BatchNorm, ReLU); ``"logits"`` the slim classifier (bias,
    ReLU, no BatchNorm); ``"plain"`` a bare convolution (the paper / Light-Weight decoders) with ``bias``.
    The layer must agree, or the assertion names the difference.
    """
    expected = {"slim": (False, True, True), "logits": (True, False, True), "plain": (bias, False, False)}[kind]
    has_bias, has_batch_norm, relu = expected
    actual = (layer.conv.use_bias, layer.batch_norm is not None, layer.activation == "relu")
    assert actual == expected, f"{layer.name}: (bias, BatchNorm, ReLU) is {actual}, the reference says {expected}"
    params = {"kernel": layer.conv.kernel.numpy().astype(np.float64), "relu": relu}
    if has_bias:
        params["bias"] = layer.conv.bias.numpy()
    if has_batch_norm:
        bn = layer.batch_norm
        params.update(gamma=bn.gamma.numpy(), beta=bn.beta.numpy(), mean=bn.moving_mean.numpy(),
                      variance=bn.moving_variance.numpy(), epsilon=bn.epsilon)
    return params


def rcu_params(layer, kind="slim", biases=(False, False)):
    return conv_params(layer.conv1, kind, biases[0]), conv_params(layer.conv2, kind, biases[1])


def refine_block_params(layer):
    paths = layer.fusion.path_convs
    return {
        "low_rcus": [rcu_params(r) for r in layer.low_rcus],
        "high_rcus": [rcu_params(r) for r in layer.high_rcus],
        "fusion_high": [conv_params(c) for c in paths[0]] if layer.high_rcus else None,
        "fusion_low": [conv_params(c) for c in paths[-1]],
        "pooling": [conv_params(c) for c in layer.pooling.stage_convs],
        "output_rcu": rcu_params(layer.output_rcu),
    }


def randomize_weights(layer, seed=0):
    """Gives every weight of ``layer`` (BatchNorm statistics included) a random, well-conditioned value."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        name = weight.name
        if "moving_variance" in name:
            value = rng.uniform(0.5, 1.5, weight.shape)
        elif "gamma" in name:
            value = rng.uniform(0.5, 1.5, weight.shape)
        else:
            value = rng.normal(0.0, 0.3, weight.shape)
        weight.assign(value.astype(np.float32))
