"""Backbones: taps by stride, weights from a local file, freezing, slim's arg scope, clear errors."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from refinenet_tf.models import backbones

EXPECTED_CHANNELS = (256, 512, 1024, 2048)


@pytest.mark.parametrize("name, last_block_per_stage", [
    ("resnet50", (3, 4, 6, 3)), ("resnet101", (3, 4, 23, 3)), ("resnet152", (3, 8, 36, 3))])
def test_resnet_taps_are_the_stage_outputs_at_strides_4_to_32(name, last_block_per_stage):
    spec = backbones.get_backbone_spec(name)
    assert spec.taps == {f"P{s}": f"conv{s}_block{b}_out" for s, b in zip((2, 3, 4, 5), last_block_per_stage)}
    model = backbones.build_backbone(name)
    assert model.name == name
    outputs = model(tf.zeros([1, 64, 96, 3]))
    for level, output, channels in zip(backbones.PYRAMID_LEVELS, outputs, EXPECTED_CHANNELS):
        stride = 2 ** int(level[1])
        assert tuple(output.shape) == (1, 64 // stride, 96 // stride, channels)


def test_weights_from_a_local_file(tmp_path):
    source = backbones.build_backbone("resnet50")
    path = str(tmp_path / "resnet50_notop.h5")
    writer = keras.applications.ResNet50(include_top=False, weights=None)
    writer.save_weights(path)  # keras' own layout
    loaded = backbones.build_backbone("resnet50", weights=path)
    for a, b in zip(loaded.weights, writer.weights):  # an .h5 round trip is exact
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(loaded.weights, source.weights))


def test_missing_weights_file_names_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone_weights=.*nope.h5.*no such file"):
        backbones.build_backbone("resnet50", weights=str(tmp_path / "nope.h5"))
    with pytest.raises(ValueError, match="backbone_weights=3"):
        backbones.build_backbone("resnet50", weights=3)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown backbone 'vgg16'.*resnet101"):
        backbones.build_backbone("vgg16")


def test_slim_arg_scope_adds_l2_and_batch_norm_decay_keeping_the_weights():
    plain = backbones.build_backbone("resnet50")
    scoped = backbones.build_backbone("resnet50", weight_decay=1e-5, batch_norm_momentum=0.997)
    convs = [layer for layer in scoped.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(scoped.losses) == len(convs) == 53
    assert all(layer.momentum == 0.997 for layer in scoped.layers
               if isinstance(layer, keras.layers.BatchNormalization))
    kernel = convs[0].kernel.numpy().astype(np.float64)
    np.testing.assert_allclose(float(scoped.losses[0]), 1e-5 * np.sum(kernel ** 2) / 2, rtol=1e-5)
    assert plain.losses == []


def test_frozen_backbone_has_no_trainable_weights_and_runs_batch_norm_in_inference_mode():
    model = backbones.build_backbone("resnet50", trainable=False)
    assert model.trainable_weights == []
    x = tf.random.uniform([2, 32, 32, 3])
    np.testing.assert_allclose(model(x, training=True)[0], model(x, training=False)[0], atol=1e-5)


def test_register_backbone_validates_the_taps():
    spec = backbones.BackboneSpec(lambda **kw: None, {"P2": "a", "P3": "b"})
    with pytest.raises(ValueError, match="lacks levels"):
        backbones.register_backbone("half", spec)
    with pytest.raises(ValueError, match="already registered"):
        backbones.register_backbone("resnet50", backbones.BACKBONES["resnet50"])
