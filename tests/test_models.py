"""The RefineNet builder: the real ResNets, odd sizes, pinned parameter count, round trips, policies."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import refinenet_tf
from refinenet_tf import backbones, layers


def test_slim_resnet101_parameter_count_is_pinned():
    model = refinenet_tf.RefineNet(num_classes=21, backbone="resnet101", backbone_weights=None)
    # keras.applications.ResNet101(include_top=False):                                       42,658,176
    # four 1x1 reductions to 256, no bias, + BatchNorm (4 x 256 each): (2048+1024+512+256)*256 + 4*1024
    #                                                                                          =   987,136
    # one decoder conv C = 3x3 256->256 without bias + BatchNorm = 9*256*256 + 4*256          =   590,848
    #   top block: 2 RCUs (4 C) + fusion (2 C) + CRP (2 C) + output RCU (2 C)           = 10 C
    #   three other blocks: 4 RCUs (8 C) + fusion (4 C) + CRP (2 C) + output RCU (2 C)  = 3 x 16 C
    #   58 C                                                                                  = 34,269,184
    # classifier: 1x1 256->21 with bias (no BatchNorm, as slim's normalizer_fn=None): 256*21 + 21 =  5,397
    assert model.count_params() == 42_658_176 + 987_136 + 58 * 590_848 + 5_397 == 77_919_893
    # Non-trainable: BatchNorm moving statistics, 2 x channels per BatchNorm.
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == 137_088
    assert model.get_layer("classifier").conv.use_bias
    assert model.get_layer("classifier").activation == "relu", "slim applies a ReLU to its logits"


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101", "resnet152"])
def test_builds_on_each_resnet_and_takes_odd_sizes(backbone):
    model = refinenet_tf.RefineNet(num_classes=5, backbone=backbone, backbone_weights=None)
    assert model.get_layer(backbone).name == backbone
    sizes = [(33, 47), (375, 500)] if backbone == "resnet101" else [(33, 47)]
    for height, width in sizes:
        assert tuple(model(tf.zeros([1, height, width, 3])).shape) == (1, height, width, 5)


def test_logits_at_quarter_resolution_without_upsampling(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=4, backbone="resnet50", backbone_weights=None,
                                   upsample_logits=False)
    assert tuple(model(tf.zeros([1, 33, 47, 3])).shape) == (1, math.ceil(33 / 4), math.ceil(47 / 4), 4)


def test_uint8_and_float_inputs_agree(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None)
    images = np.random.default_rng(0).integers(0, 256, (2, 37, 41, 3)).astype(np.uint8)
    np.testing.assert_allclose(model.predict(images, verbose=0), model.predict(images.astype(np.float32),
                                                                               verbose=0), atol=1e-5)


def _tiny_model(tiny_backbone, **kwargs):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   decoder_features=8, **kwargs)
    # Non-trivial BatchNorm statistics, so that a round trip that dropped them would show.
    for weight in model.non_trainable_weights:
        weight.assign(np.random.default_rng(1).uniform(0.5, 1.5, weight.shape).astype(np.float32))
    return model


def test_keras_file_round_trip_gives_identical_outputs(tiny_backbone, tmp_path):
    model = _tiny_model(tiny_backbone)
    images = np.random.default_rng(2).uniform(0, 255, (2, 45, 51, 3)).astype(np.float32)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(images, verbose=0), restored.predict(images, verbose=0))
    assert restored.get_config() == model.get_config()


def test_saved_model_round_trip_gives_identical_outputs(tiny_backbone, tmp_path):
    model = _tiny_model(tiny_backbone, interpolation="bilinear")
    images = np.random.default_rng(3).uniform(0, 255, (1, 45, 51, 3)).astype(np.float32)
    path = str(tmp_path / "saved_model")
    model.save(path, save_format="tf")
    expected = model.predict(images, verbose=0)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(images, verbose=0), expected)
    # The raw SavedModel runs without refinenet_tf, in a fresh process.
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({path!r})
        out = loaded.signatures["serving_default"](tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
        np.save({str(tmp_path / 'out.npy')!r}, list(out.values())[0].numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_logits_float32(tiny_backbone, policy):
    keras.mixed_precision.set_global_policy(policy)
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   decoder_features=8)
    assert model.get_layer("refine_p2").compute_dtype == keras.mixed_precision.global_policy().compute_dtype
    logits = model(tf.zeros([1, 33, 47, 3], tf.uint8))
    assert logits.dtype == tf.float32 and tuple(logits.shape) == (1, 33, 47, 3)


def test_fit_step_with_full_resolution_masks_and_ignore_label(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   decoder_features=8, logits_relu=False)
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (4, 33, 47, 3)).astype(np.float32)
    masks = rng.integers(0, 3, (4, 33, 47)).astype(np.int32)
    masks[:, :2] = 255
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    history = model.fit(images, masks, epochs=3, batch_size=2, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_freeze_backbone(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None,
                                   freeze_backbone=True)
    assert model.get_layer(tiny_backbone).trainable_weights == []
    assert model.get_layer("refine_p2").trainable_weights


def test_imagenet_weights_are_asked_of_keras(monkeypatch):
    calls = []
    spec = backbones.get_backbone_spec("resnet50")

    def recording_builder(weights=None, input_shape=None):
        calls.append(weights)
        return spec.builder(weights=None, input_shape=input_shape)

    monkeypatch.setitem(backbones.BACKBONES, "resnet50", backbones.BackboneSpec(
        recording_builder, spec.taps, spec.preprocessing))
    refinenet_tf.RefineNet(num_classes=21, backbone="resnet50", backbone_weights="imagenet")
    assert calls == ["imagenet"]


def test_preprocessing_is_the_backbones_own(tiny_backbone):
    model = refinenet_tf.RefineNet(num_classes=2, backbone="resnet50", backbone_weights=None)
    assert model.get_layer("preprocessing").mode == "caffe"
    assert isinstance(model.get_layer("upsample_logits"), layers.ResizeToMatch)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 0}, "num_classes"),
    ({"variant": "unknown"}, "Unknown variant 'unknown'.*slim"),
    ({"backbone": "vgg16"}, "Unknown backbone"),
    ({"input_shape": (64, 64, 1)}, "input_shape"),
    ({"interpolation": "area"}, "interpolation"),
])
def test_bad_arguments_fail_clearly(kwargs, message):
    arguments = dict(num_classes=3, backbone="resnet50", backbone_weights=None)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        refinenet_tf.RefineNet(**arguments)


def test_load_model_equals_keras_load_model(tiny_backbone, tmp_path):
    model = _tiny_model(tiny_backbone)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = str(tmp_path / "model.keras")
    model.save(path)
    images = np.random.default_rng(5).uniform(0, 255, (1, 40, 44, 3)).astype(np.float32)
    fast = refinenet_tf.load_model(path)
    slow = keras.models.load_model(path)
    for restored in (fast, slow):
        np.testing.assert_array_equal(restored.predict(images, verbose=0), model.predict(images, verbose=0))
    assert isinstance(fast.loss, keras.losses.SparseCategoricalCrossentropy)
    assert refinenet_tf.load_model(path, compile=False).optimizer is None


def test_load_model_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras.*does not exist"):
        refinenet_tf.load_model(str(tmp_path / "missing.keras"))
    not_zip = tmp_path / "weights.keras"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .keras archive"):
        refinenet_tf.load_model(str(not_zip))
    with pytest.raises(ValueError, match="no saved_model.pb"):
        refinenet_tf.load_model(str(tmp_path))
