"""The blog's blocks: layer contract, NumPy reference of the slim math, dtype policies, errors."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from refinenet_tf.models import layers
from tests import numpy_reference as ref
from tests.layer_testing import run_layer_test

B, F = 2, 8  # batch and decoder width of the small tensors used throughout


@pytest.mark.parametrize("layer_class, kwargs, input_shapes, output_shape", [
    (layers.ConvBNReLU, {"filters": F, "kernel_size": 3}, (B, 7, 9, 4), (B, 7, 9, F)),
    (layers.ConvBNReLU, {"filters": F, "kernel_size": 1, "use_batch_norm": False, "activation": None,
                         "weight_decay": None}, (B, 7, 9, 4), (B, 7, 9, F)),
    (layers.ResidualConvUnit, {"features": F, "kernel_size": 3}, (B, 7, 9, F), (B, 7, 9, F)),
    (layers.ChainedResidualPooling, {"features": F}, (B, 7, 9, F), (B, 7, 9, F)),
    (layers.ChainedResidualPooling, {"features": F, "kernel_size": 1, "stages": 4, "chained": True,
                                     "use_batch_norm": False}, (B, 7, 9, F), (B, 7, 9, F)),
    # The multi-task RefineNet's last pooling: depthwise ("grouped") 1x1 stage convolutions.
    (layers.ChainedResidualPooling, {"features": F, "kernel_size": 1, "stages": 4, "chained": True,
                                     "depthwise": True, "use_batch_norm": False}, (B, 7, 9, F), (B, 7, 9, F)),
    (layers.ConvBNReLU, {"filters": F, "kernel_size": 1, "depthwise": True, "use_batch_norm": False,
                         "activation": "relu6", "use_bias": False}, (B, 7, 9, F), (B, 7, 9, F)),
    (layers.MultiResolutionFusion, {"features": F}, [[(B, 7, 9, F), (B, 7, 9, F)]], (B, 7, 9, F)),
    (layers.MultiResolutionFusion, {"features": F, "interpolation": "bilinear"},
     [[(B, 4, 5, F), (B, 4, 5, F)], [(B, 7, 9, F), (B, 7, 9, F)]], (B, 7, 9, F)),
    # Light-Weight form: one tensor per path, 1x1 convs from other widths, three paths.
    (layers.MultiResolutionFusion, {"features": F, "kernel_size": 1, "interpolation": "bilinear_align_corners",
                                    "use_batch_norm": False, "activation": None, "use_bias": False},
     [(B, 2, 3, 12), (B, 4, 5, 6), (B, 4, 5, 4)], (B, 4, 5, F)),
    # Paper RCU: no BatchNorm, bias on the first conv only.
    (layers.ResidualConvUnit, {"features": F, "use_batch_norm": False, "activation": None,
                               "use_bias": [True, False]}, (B, 7, 9, F), (B, 7, 9, F)),
    (layers.RefineBlock, {"features": F}, (B, 7, 9, F), (B, 7, 9, F)),
    (layers.RefineBlock, {"features": F, "rcus_per_input": 1, "crp_stages": 4, "crp_chained": True},
     [(B, 4, 5, F), (B, 7, 9, F)], (B, 7, 9, F)),
    (layers.ImagePreprocessing, {"mode": "caffe"}, (B, 7, 9, 3), (B, 7, 9, 3)),
    (layers.ResizeToMatch, {"interpolation": "bilinear_tf1"}, [(B, 2, 3, 5), (B, 7, 9, 3)], (B, 7, 9, 5)),
    (layers.TaskOutput, {"transform": "unit_vector"}, (B, 7, 9, 3), (B, 7, 9, 3)),
])
def test_layer_contract(layer_class, kwargs, input_shapes, output_shape):
    run_layer_test(layer_class, kwargs, input_shapes, output_shape)


def _built(layer, *inputs):
    layer(*inputs)  # build
    ref.randomize_weights(layer)
    return layer


def _random(shape, seed):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def test_conv_bn_relu_matches_slim_conv2d_under_the_arg_scope():
    x = _random((B, 5, 6, 3), 1)
    layer = _built(layers.ConvBNReLU(F, 3), x)
    assert not layer.conv.use_bias, "slim.conv2d with a normalizer has no bias"
    assert layer.batch_norm.momentum == 0.997 and layer.batch_norm.epsilon == 1e-5
    assert layer.batch_norm.scale and layer.batch_norm.center
    np.testing.assert_allclose(layer(x, training=False), ref.slim_conv2d(x, ref.conv_params(layer)),
                               rtol=1e-4, atol=1e-4)


def test_weight_decay_is_slims_l2_regularizer():
    # slim.l2_regularizer(s) adds s * tf.nn.l2_loss(w) = s * sum(w**2) / 2 to the loss.
    layer = _built(layers.ConvBNReLU(F, 3, weight_decay=1e-5), _random((1, 4, 4, 3), 2))
    kernel = layer.conv.kernel.numpy().astype(np.float64)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 1e-5 * np.sum(kernel ** 2) / 2, rtol=1e-5)
    unregularized = layers.ConvBNReLU(F, 3, weight_decay=None)
    unregularized(tf.zeros([1, 4, 4, 3]))
    assert unregularized.losses == []


def test_residual_conv_unit_matches_slim():
    x = _random((B, 6, 7, F), 3)
    layer = _built(layers.ResidualConvUnit(features=F), x)
    np.testing.assert_allclose(layer(x, training=False), ref.ResidualConvUnit(x, *ref.rcu_params(layer)),
                               rtol=1e-4, atol=1e-4)


def test_chained_residual_pooling_matches_slim_both_pools_read_relu_input():
    x = _random((B, 6, 7, F), 4)
    layer = _built(layers.ChainedResidualPooling(features=F), x)
    params = [ref.conv_params(c) for c in layer.stage_convs]
    expected = ref.ChainedResidualPooling(x, params, chained=False)
    np.testing.assert_allclose(layer(x, training=False), expected, rtol=1e-4, atol=1e-4)
    # Guard against silently computing the paper's chain instead of the slim code.
    chained = ref.ChainedResidualPooling(x, params, chained=True)
    assert np.abs(chained - expected).max() > 1e-2


def test_chained_residual_pooling_chained_four_stages_matches_reference():
    x = _random((1, 5, 9, F), 5)
    layer = _built(layers.ChainedResidualPooling(features=F, kernel_size=1, stages=4, chained=True,
                                                 use_batch_norm=False, activation=None, use_bias=False), x)
    params = [ref.conv_params(c, "plain") for c in layer.stage_convs]
    np.testing.assert_allclose(layer(x, training=False), ref.ChainedResidualPooling(x, params, chained=True),
                               rtol=1e-4, atol=1e-4)


def test_depthwise_chained_residual_pooling_matches_reference_with_diagonal_kernels():
    """A depthwise 1x1 convolution scales each channel: the dense reference with a diagonal kernel."""
    x = _random((1, 5, 9, F), 6)
    layer = _built(layers.ChainedResidualPooling(features=F, kernel_size=1, stages=4, chained=True, depthwise=True,
                                                 use_batch_norm=False, activation=None, use_bias=False), x)
    assert [tuple(c.conv.depthwise_kernel.shape) for c in layer.stage_convs] == [(1, 1, F, 1)] * 4
    assert layer.count_params() == 4 * F
    params = [{"kernel": np.diag(c.conv.depthwise_kernel.numpy()[0, 0, :, 0]).astype(np.float64)[None, None],
               "relu": False} for c in layer.stage_convs]
    np.testing.assert_allclose(layer(x, training=False), ref.ChainedResidualPooling(x, params, chained=True),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("interpolation", ["bilinear_tf1", "bilinear"])
def test_multi_resolution_fusion_matches_slim(interpolation):
    high = [_random((B, 4, 5, F), 6), _random((B, 4, 5, F), 7)]
    low = [_random((B, 7, 9, F), 8), _random((B, 7, 9, F), 9)]
    layer = _built(layers.MultiResolutionFusion(features=F, interpolation=interpolation), [high, low])
    high_convs, low_convs = ([ref.conv_params(c) for c in path] for path in layer.path_convs)
    expected = ref.MultiResolutionFusion(high, low, high_convs, low_convs, half_pixel=interpolation == "bilinear")
    np.testing.assert_allclose(layer([high, low], training=False), expected, rtol=1e-4, atol=1e-4)


def test_multi_resolution_fusion_top_block_has_no_high_path():
    low = [_random((B, 7, 9, F), 10), _random((B, 7, 9, F), 11)]
    layer = _built(layers.MultiResolutionFusion(features=F), [low])
    assert len(layer.path_convs) == 1 and len(layer.path_convs[0]) == 2
    expected = ref.MultiResolutionFusion(None, low, None, [ref.conv_params(c) for c in layer.path_convs[0]])
    np.testing.assert_allclose(layer([low], training=False), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("low_size", [(8, 10), (7, 9)])  # exactly 2x the high input (slim's unpool) and odd
def test_refine_block_matches_slim(low_size):
    high = _random((B, 4, 5, F), 12)
    low = _random((B,) + low_size + (F,), 13)
    top = _built(layers.RefineBlock(features=F), high)
    np.testing.assert_allclose(top(high, training=False), ref.RefineBlock(None, high, ref.refine_block_params(top)),
                               rtol=1e-4, atol=1e-4)
    block = _built(layers.RefineBlock(features=F), [high, low])
    assert len(block.low_rcus) == 2 and len(block.high_rcus) == 2, "slim runs two RCUs on each input"
    expected = ref.RefineBlock(high, low, ref.refine_block_params(block))
    np.testing.assert_allclose(block([high, low], training=False), expected, rtol=1e-4, atol=1e-4)


def test_refine_block_parameter_count():
    # conv3x3 F->F without bias (9*F*F) + BatchNorm (4*F: gamma, beta, moving mean and variance).
    conv = 9 * F * F + 4 * F
    top = layers.RefineBlock(features=F)
    top(tf.zeros([1, 4, 4, F]))
    # 2 RCUs (2 convs each) + fusion (2 convs) + CRP (2 convs) + output RCU (2 convs) = 10 convs.
    assert top.count_params() == 10 * conv
    block = layers.RefineBlock(features=F)
    block([tf.zeros([1, 2, 2, F]), tf.zeros([1, 4, 4, F])])
    # 4 RCUs + fusion (4 convs) + CRP (2) + output RCU (2) = 16 convs.
    assert block.count_params() == 16 * conv


@pytest.mark.parametrize("interpolation, mode", [
    ("bilinear_tf1", "tf1"), ("bilinear", "half_pixel"), ("bilinear_align_corners", "align_corners")])
@pytest.mark.parametrize("out_size", [(8, 10), (9, 13), (3, 4)])
def test_resize_bilinear_semantics(interpolation, mode, out_size):
    x = _random((1, 4, 5, 2), 14)
    np.testing.assert_allclose(layers.resize_bilinear(tf.constant(x), out_size, interpolation),
                               ref.resize_bilinear(x, *out_size, mode=mode), rtol=1e-5, atol=1e-5)


def test_resize_to_double_size_is_the_slim_unpool():
    x = _random((1, 4, 5, 3), 15)
    np.testing.assert_allclose(layers.resize_bilinear(tf.constant(x), [8, 10]), ref.unpool(x, 2), atol=1e-6)


@pytest.mark.parametrize("mode, keras_module", [
    ("caffe", keras.applications.resnet),
    ("tf", keras.applications.mobilenet_v2),
    ("torch", keras.applications.densenet),
])
def test_image_preprocessing_equals_keras_preprocess_input(mode, keras_module):
    images = np.random.default_rng(16).integers(0, 256, (2, 5, 7, 3)).astype(np.uint8)
    expected = keras_module.preprocess_input(images.astype(np.float32))
    np.testing.assert_allclose(layers.ImagePreprocessing(mode)(images), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_blocks_run_under_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    compute_dtype = keras.mixed_precision.global_policy().compute_dtype
    high, low = tf.zeros([1, 3, 4, F]), tf.zeros([1, 5, 7, F])
    rng = np.random.default_rng(21)
    high, low = tf.constant(rng.normal(size=(1, 3, 4, F)), tf.float32), tf.constant(rng.normal(size=(1, 5, 7, F)),
                                                                                       tf.float32)
    for interpolation in layers.INTERPOLATIONS:
        block = layers.RefineBlock(features=F, interpolation=interpolation)
        out = block([high, low], training=False)
        assert out.dtype == compute_dtype
        assert all(w.dtype == tf.float32 for w in block.weights), "variables stay float32"
        # The same weights in float32 give the same result, to the half-precision rounding.
        keras.mixed_precision.set_global_policy("float32")
        reference = layers.RefineBlock(features=F, interpolation=interpolation)
        reference([high, low])
        reference.set_weights(block.get_weights())
        expected = reference([high, low], training=False).numpy()
        keras.mixed_precision.set_global_policy(policy)
        tolerance = 0.05 if policy == "mixed_bfloat16" else 0.01
        np.testing.assert_allclose(tf.cast(out, tf.float32), expected, rtol=tolerance,
                                   atol=tolerance * np.abs(expected).max())


@pytest.mark.parametrize("make, message", [
    (lambda: layers.ResidualConvUnit(features=F)(tf.zeros([1, 4, 4, F + 1])), "channels"),
    (lambda: layers.RefineBlock(features=F)([tf.zeros([1, 2, 2, 3]), tf.zeros([1, 4, 4, F])]), "`high`"),
    (lambda: layers.MultiResolutionFusion(interpolation="nearest"), "interpolation"),
    (lambda: layers.ChainedResidualPooling(stages=0), "stages"),
    (lambda: layers.ConvBNReLU(filters=2.5), "filters"),
    (lambda: layers.ImagePreprocessing("bgr"), "mode"),
    (lambda: layers.ConvBNReLU(F, weight_decay=-1e-5), "weight_decay"),
    (lambda: layers.ConvBNReLU(F, activation=tf.nn.relu), "activation"),
    (lambda: layers.RefineBlock(features=F)([tf.zeros([1, 2, 2, F])] * 3), "list of 3"),
    (lambda: layers.ConvBNReLU(F, 1, depthwise=True)(tf.zeros([1, 2, 2, F + 1])), "depthwise"),
])
def test_bad_arguments_fail_clearly(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_paper_rcu_matches_reference_with_bias_on_the_first_conv_only():
    x = _random((B, 6, 7, F), 17)
    layer = _built(layers.ResidualConvUnit(features=F, use_batch_norm=False, activation=None,
                                           use_bias=[True, False]), x)
    assert layer.conv1.conv.use_bias and not layer.conv2.conv.use_bias
    assert layer.count_params() == (9 * F * F + F) + 9 * F * F
    np.testing.assert_allclose(layer(x, training=False),
                               ref.ResidualConvUnit(x, *ref.rcu_params(layer, "plain", (True, False))),
                               rtol=1e-4, atol=1e-4)


def test_light_weight_fusion_matches_reference():
    # Three paths as in the MobileNetV2 Light-Weight RefineNet: coarse decoder output + two same-size skips.
    coarse, skip_a, skip_b = _random((1, 3, 4, 12), 18), _random((1, 5, 7, 6), 19), _random((1, 5, 7, 4), 20)
    layer = _built(layers.MultiResolutionFusion(F, 1, interpolation="bilinear_align_corners",
                                                use_batch_norm=False, activation=None, use_bias=False),
                   [coarse, skip_a, skip_b])
    convs = [ref.conv_params(path[0], "plain") for path in layer.path_convs]
    expected = sum(ref.resize_bilinear(ref.slim_conv2d(x, p), 5, 7, mode="align_corners")
                   for x, p in zip((coarse, skip_a, skip_b), convs))
    np.testing.assert_allclose(layer([coarse, skip_a, skip_b], training=False), expected, rtol=1e-4, atol=1e-4)


def test_residual_conv_unit_rejects_a_bias_list_of_the_wrong_length():
    with pytest.raises(ValueError, match="pair"):
        layers.ResidualConvUnit(features=F, use_bias=[True])


def test_every_weight_has_a_unique_name_and_legacy_h5_saving_works(tmp_path):
    high, low = keras.Input((None, None, F)), keras.Input((None, None, F))
    model = keras.Model([high, low], layers.RefineBlock(features=F, name="refine")([high, low]))
    names = [w.name for w in model.weights]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1][:5]
    assert "refine/low_rcu1/conv1/conv/kernel:0" in names
    model.save_weights(str(tmp_path / "weights.h5"))
    model.load_weights(str(tmp_path / "weights.h5"))


def test_numpy_integer_arguments_are_accepted_and_serialize():
    layer = layers.ChainedResidualPooling(features=np.int64(F), stages=np.int64(3))
    assert json.dumps(layer.get_config()) and layer.stages == 3 and type(layer.features) is int


def test_refine_block_passes_use_bias_to_its_convs():
    block = layers.RefineBlock(features=F, use_batch_norm=False, activation=None, use_bias=True)
    block(tf.zeros([1, 4, 4, F]))
    assert all(conv.conv.use_bias for rcu in block.low_rcus for conv in (rcu.conv1, rcu.conv2))
    assert all(conv.conv.use_bias for conv in block.pooling.stage_convs)
