"""The frozen graph's rewrites (refinenet_tf.folding): snapshots of the weights read by oneDNN's fused
convolutions, batch normalization folded into convolutions, the input's channel reversal folded into the first
convolution; the probe of variable weights at constant speed."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import benchmarks, folding, inference, models


def _trained_like(model, seed=0):
    """Batch normalization statistics and biases far from the initial ones, so that folding them is visible."""
    benchmarks.randomize_batch_norms(model, seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) and getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.uniform(-0.5, 0.5, layer.bias.shape).astype(np.float32))
    return model


def _model():
    """Each pattern once: convolution with a bias, without one, depthwise, and one whose output a second
    layer reads as well (which must stay unfolded)."""
    inputs = keras.Input([None, None, 3])
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=True)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(epsilon=1e-3)(x))
    x = keras.layers.Conv2D(8, 1, use_bias=False)(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    shared = keras.layers.Conv2D(4, 1, use_bias=False)(x)
    x = keras.layers.Add()([keras.layers.BatchNormalization()(shared), shared])
    return _trained_like(keras.Model(inputs, x, name="patterns"))


needs_onednn = pytest.mark.skipif(not folding.onednn_available(),
                                  reason="TensorFlow runs without oneDNN here (TF_ENABLE_ONEDNN_OPTS=0, non-x86)")


@pytest.mark.parametrize("weights_as", ["snapshots", "constants"])
def test_frozen_model_folds_each_foldable_batch_norm_and_equals_keras(weights_as):
    model = _model()
    frozen = inference.freeze(model, weights_as=weights_as)
    assert frozen.weights_as == weights_as
    assert frozen.folded_batch_norms == 3  # not the one whose convolution output is also read by the Add
    ops = [op.type for op in frozen.function.graph.get_operations()]
    assert ops.count("FusedBatchNormV3") == 1
    images = tf.random.stateless_uniform([2, 17, 23, 3], seed=[1, 2], minval=0, maxval=255)
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(frozen(images).numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("variant, backbone, unfoldable, reversals, weights_as", [
    # the blog's ConvBNReLU blocks; the tiny backbone's BN follows a ReLU
    ("slim", "tiny_test_backbone", 1, 0, "auto"),
    # keras.applications: convolution, BiasAdd, BatchNorm; RGB -> BGR input
    ("light_weight", "resnet50", 0, 1, "auto"),
    ("light_weight", "resnet50", 0, 1, "constants"),
    ("light_weight", "mobilenetv2", 0, 0, "auto"),  # depthwise convolutions
])
def test_the_models_batch_norms_and_channel_reversals_all_fold(variant, backbone, unfoldable, reversals,
                                                               weights_as):
    # what makes the frozen graph's convolutions differ from the Keras model's (their oneDNN kernels would
    # otherwise be shared, docs/benchmarks.md): every BatchNorm after a convolution is gone from the frozen graph,
    # and with snapshots every Conv2D is oneDNN's fused convolution
    model = _trained_like(models.RefineNet(num_classes=3, backbone=backbone, backbone_weights=None,
                                           variant=variant))
    batch_norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.submodules)
    frozen = inference.freeze(model, weights_as=weights_as)
    assert frozen.folded_batch_norms == batch_norms - unfoldable > 0
    assert frozen.folded_channel_reversals == reversals and not _channel_reversals(frozen)
    ops = [op.type for op in frozen.function.graph.get_operations()]
    assert sum(op.startswith("FusedBatchNorm") for op in ops) == unfoldable
    onednn = folding.onednn_available()
    assert frozen.weights_as == ("snapshots" if weights_as == "auto" and onednn else "constants")
    if frozen.weights_as == "snapshots":
        assert "Conv2D" not in ops and frozen.fused_convolutions == ops.count("_MklNativeFusedConv2D") > 0
    else:
        assert frozen.fused_convolutions == 0 and "_MklNativeFusedConv2D" not in ops
    images = tf.random.stateless_uniform([1, 64, 96, 3], seed=[7, 8], minval=0, maxval=255)
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(frozen(images).numpy(), expected, rtol=0, atol=1e-4 * np.ptp(expected))


def _fused_convolutions(frozen):
    return [op for op in frozen.function.graph.get_operations() if op.type == "_MklNativeFusedConv2D"]


@needs_onednn
def test_snapshots_run_each_convolution_as_onednns_fused_op_with_its_own_kernel_key():
    model = _model()
    frozen = inference.freeze(model)  # "auto": snapshots where oneDNN runs
    assert frozen.weights_as == "snapshots" and frozen.fused_convolutions == 3
    fused = {op.name.split("/")[1]: op for op in _fused_convolutions(frozen)}
    assert "Conv2D" not in [op.type for op in frozen.function.graph.get_operations()]
    assert all(op.get_attr("is_filter_const") for op in fused.values())
    steps = {name: ([step.decode() for step in op.get_attr("fused_ops")], op.get_attr("leakyrelu_alpha"))
             for name, op in fused.items()}
    # each named after the last step it took in; the LeakyRelu is exact: -0.0 is a ReLU, 1.0 keeps the value
    relu, = (name for name in steps if name.startswith("re_lu"))
    assert steps[relu][0] == ["FusedBatchNorm", "LeakyRelu"] and math.copysign(1, steps[relu][1]) == -1
    alone = [name for name in steps if name.startswith("batch_normalization")]
    assert len(alone) == 1 and steps[alone[0]] == (["FusedBatchNorm", "LeakyRelu"], 1.0)
    shared = [name for name in steps if name.startswith("conv2d")]  # read by its BatchNorm and by the Add
    assert len(shared) == 1 and steps[shared[0]] == (["BiasAdd", "LeakyRelu"], 1.0)
    # the snapshots are the model's values, not the model's variables
    captured = {id(tensor) for tensor in frozen.function.captured_inputs}
    assert captured and not captured & {id(variable.handle) for variable in model.variables}
    _assert_frozen_equals_keras(model, frozen)


def _deep_light_model():
    """Two full-resolution convolutions and one at stride 16 with about 0.3 % of the multiply-adds."""
    inputs = keras.Input([None, None, 3])
    x = keras.layers.Conv2D(16, 3, padding="same", name="full_1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(16, 3, padding="same", name="full_2")(x)
    deep = keras.layers.Conv2D(16, 3, strides=16, padding="same", name="deep")(x)
    deep = keras.layers.UpSampling2D(16, interpolation="bilinear")(deep)
    return _trained_like(keras.Model(inputs, keras.layers.Add()([x, deep]), name="deep_light"))


def test_output_strides_and_the_light_work_levels():
    model = _deep_light_model()
    function = tf.function(model).get_concrete_function(tf.TensorSpec([None, None, None, 3]))
    graph_def, inputs, _, snapshots, _ = folding.snapshot_graph_def(function, model.variables)
    strides = folding.output_strides(graph_def, inputs, snapshots)
    assert {name.split("/")[1]: stride for name, stride in strides.items()} == {"full_1": 1, "full_2": 1, "deep": 16}
    deep, = (name for name in strides if "/deep/" in name)
    assert folding.light_work_convolutions(graph_def, snapshots, strides) == {deep}
    assert folding.light_work_convolutions(graph_def, snapshots, strides, max_share=0.001) == set()
    # a convolution of unknown stride (shape inference could not tell it) keeps every one converted
    assert folding.light_work_convolutions(graph_def, snapshots, {deep: 16}) == set()


@needs_onednn
def test_the_light_work_levels_compute_from_plain_weights():
    model = _deep_light_model()
    frozen = inference.freeze(model)
    assert frozen.fused_convolutions == 3 and frozen.plain_weight_convolutions == 1
    marked = {op.name.split("/")[1]: op.get_attr("is_filter_const") for op in _fused_convolutions(frozen)}
    assert marked == {"re_lu": True, "full_2": True, "deep": False}  # each named after its last step
    _assert_frozen_equals_keras(model, frozen, shape=(1, 64, 48, 3))


@needs_onednn
def test_snapshots_keep_their_values_while_the_model_trains():
    model = _model()
    frozen = inference.freeze(model)
    # the snapshots share the model's buffers, so the default path tells a change by their addresses
    assert frozen._source_buffers is not None and frozen.weights_fingerprint is None
    assert frozen._has_weights_of(model)
    images = tf.random.stateless_uniform([4, 12, 12, 3], seed=[11, 12], minval=0, maxval=255)
    before = frozen(images).numpy()
    np.testing.assert_allclose(before, model(images, training=False).numpy(), rtol=0,
                               atol=1e-5 * np.ptp(before))
    model.compile(keras.optimizers.SGD(1e-3), "mse")
    model.fit(images, tf.zeros_like(model(images)), epochs=2, verbose=0)
    model.layers[2].moving_mean.assign_add(tf.ones_like(model.layers[2].moving_mean))
    np.testing.assert_array_equal(frozen(images).numpy(), before)
    assert not np.allclose(model(images, training=False).numpy(), before, atol=1e-3 * np.ptp(before))
    assert not frozen._has_weights_of(model)
    refreshed = inference.freeze(model)
    assert refreshed._has_weights_of(model)
    model.layers[2].moving_mean.assign(model.layers[2].moving_mean * 1.0)  # the same values, written: a new buffer
    assert not refreshed._has_weights_of(model)


def test_without_onednn_auto_freezes_to_constants():
    script = ("import numpy as np, tensorflow as tf, tf_keras as keras\n"
              "from refinenet_tf import folding, inference\n"
              "inputs = keras.Input([None, None, 3])\n"
              "model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))\n"
              "frozen = inference.freeze(model)\n"
              "images = tf.random.uniform([1, 9, 9, 3])\n"
              "assert np.allclose(frozen(images), model(images), atol=1e-5)\n"
              "print(folding.onednn_available(), frozen.weights_as, frozen.fused_convolutions)\n")
    environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "constants", "0"]


def test_freeze_refuses_an_unknown_weights_as():
    with pytest.raises(ValueError, match="weights_as='variables' must be one of"):
        inference.freeze(_model(), weights_as="variables")


def test_fold_batch_norms_leaves_other_graphs_alone():
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 4, 4, 2], name="images")
        scaled = tf.identity(images * 2.0, name="out")
    graph_def = graph.as_graph_def()
    before = sorted(node.name for node in graph_def.node)
    assert folding.fold_batch_norms(graph_def, ["out:0"]) == 0
    assert sorted(node.name for node in graph_def.node) == before
    function = folding.function_from_graph_def(graph_def, {"images:0": tf.TensorSpec([None, 4, 4, 2])},
                                               ["out:0"])
    np.testing.assert_array_equal(function(tf.ones([1, 4, 4, 2]))[0].numpy(), 2 * np.ones([1, 4, 4, 2]))
    del scaled


@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_mixed_precision_batch_norms_stay_unfolded(policy):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _model()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    frozen = inference.freeze(model)
    assert frozen.folded_batch_norms == 0  # its weights reach the convolutions through casts to bfloat16
    images = tf.random.stateless_uniform([1, 9, 9, 3], seed=[3, 4], minval=0, maxval=255)
    expected = tf.cast(model(images, training=False), tf.float32).numpy()
    actual = tf.cast(frozen(images), tf.float32).numpy()
    # bfloat16 keeps 8 bits of mantissa: the two graphs round in different places
    np.testing.assert_allclose(actual, expected, rtol=0, atol=0.03 * np.abs(expected).max())


def test_constant_graph_def_writes_each_variable_read_as_a_constant():
    model = _model()
    function = tf.function(lambda images: model(images, training=False)).get_concrete_function(
        tf.TensorSpec([None, None, None, 3], tf.float32))
    graph_def, inputs, outputs = folding.constant_graph_def(function)
    ops = [node.op for node in graph_def.node]
    assert "ReadVariableOp" not in ops and ops.count("Placeholder") == 1 and list(inputs) == ["images:0"]
    images = tf.random.stateless_uniform([1, 8, 8, 3], seed=[5, 6], minval=0, maxval=255)
    frozen = folding.function_from_graph_def(graph_def, inputs, outputs)
    np.testing.assert_allclose(frozen(images)[0].numpy(), model(images, training=False).numpy(), rtol=1e-5,
                               atol=1e-4)


def test_constant_graph_def_falls_back_where_a_variable_is_used_other_than_read():
    table = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))
    function = tf.function(lambda indices: tf.gather(table, indices) * 2.0).get_concrete_function(
        tf.TensorSpec([None], tf.int32, name="indices"))
    assert "ResourceGather" in [op.type for op in function.graph.get_operations()]
    graph_def, inputs, outputs = folding.constant_graph_def(function)
    assert "ResourceGather" not in [node.op for node in graph_def.node]  # TensorFlow's conversion made it a Gather
    frozen = folding.function_from_graph_def(graph_def, inputs, outputs)
    np.testing.assert_array_equal(frozen(tf.constant([3, 1]))[0].numpy(), 2 * table.numpy()[[3, 1]])


def _reversal_model(reverse, after_reverse=None, shared=False):
    """keras.applications' Caffe-style input: RGB -> BGR (``reverse``), minus a per-channel mean, zero padding,
    a 7 x 7 convolution with its BatchNorm."""
    inputs = keras.Input([None, None, 3])
    bgr = reverse(inputs)
    x = (after_reverse or (lambda tensor: tensor - tf.constant([103.939, 116.779, 123.68])))(bgr)
    x = keras.layers.ZeroPadding2D(3)(x)
    x = keras.layers.Conv2D(8, 7, strides=2)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    if shared:  # the reversed image is read a second time: the reversal must stay
        x = keras.layers.Concatenate()([x, keras.layers.AveragePooling2D(2, padding="same")(bgr)])
    return _trained_like(keras.Model(inputs, x, name="caffe_input"))


def _assert_frozen_equals_keras(model, frozen, shape=(2, 31, 27, 3)):
    images = tf.random.stateless_uniform(shape, seed=[9, 10], minval=0, maxval=255)
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(frozen(images).numpy(), expected, rtol=0, atol=1e-5 * np.ptp(expected))


def _channel_reversals(frozen):
    return [op for op in frozen.function.graph.get_operations()
            if op.type in ("StridedSlice", "ReverseV2") and op.inputs[0].op.type == "Placeholder"]


@pytest.mark.parametrize("reverse, after_reverse", [
    (lambda x: x[..., ::-1], None),  # keras.applications' own form
    (lambda x: x[:, :, :, ::-1], lambda x: x * tf.constant([0.5, 1.0, 2.0]) + 1.0),  # scaled, a scalar added
])
def test_the_inputs_channel_reversal_folds_into_the_first_convolution(reverse, after_reverse):
    model = _reversal_model(reverse, after_reverse)
    frozen = inference.freeze(model)
    assert frozen.folded_channel_reversals == 1 and not _channel_reversals(frozen)
    _assert_frozen_equals_keras(model, frozen)
    unfolded = inference.freeze(model, fold=False)
    assert unfolded.folded_channel_reversals == 0 and len(_channel_reversals(unfolded)) == 1
    _assert_frozen_equals_keras(model, unfolded)


@pytest.mark.parametrize("reverse, after_reverse, shared", [
    (lambda x: x[..., ::-1], None, True),  # the reversed image also read elsewhere
    (lambda x: x[..., 2::-1], None, False),  # not spelled as the whole axis
    (lambda x: x[..., ::-1], lambda x: tf.pad(x, [[0, 0], [0, 0], [0, 0], [1, 0]])[..., 1:], False),  # pads channels
    (lambda x: x[..., ::-1], lambda x: tf.nn.relu(x - 100.0), False),  # a step it does not know
])
def test_other_channel_reversals_stay(reverse, after_reverse, shared):
    model = _reversal_model(reverse, after_reverse, shared)
    frozen = inference.freeze(model)
    assert frozen.folded_channel_reversals == 0 and len(_channel_reversals(frozen)) == 1
    _assert_frozen_equals_keras(model, frozen)


def test_the_variable_filter_probe_runs_three_ways_to_equal_outputs():
    # benchmarks/variable_filters.py: the measured basis of freeze's snapshots (docs/benchmarks.md)
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                          "variable_filters.py")
    result = subprocess.run([sys.executable, script, "--layers", "2", "--channels", "16", "--size", "8"],
                            capture_output=True, text=True, check=True, timeout=600)
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "way" not in line]
    ways = {cells[0].strip(): cells for cells in rows}
    assert sorted(ways) == ["constant", "onednn", "variable"]
    sums = {way: float(cells[3]) for way, cells in ways.items()}
    assert sums["onednn"] == pytest.approx(sums["constant"], rel=1e-5) == sums["variable"]
    # the onednn way really runs both convolutions as the oneDNN op told its filter is constant
    assert {way: int(cells[4]) for way, cells in ways.items()} == {"constant": 0, "variable": 0, "onednn": 2}
