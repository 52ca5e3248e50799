"""Shared fixtures: quiet TensorFlow, fixed seeds, and a tiny registered backbone for fast model tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from refinenet_tf import backbones  # noqa: E402

TINY_BACKBONE = "tiny_test_backbone"


def _build_tiny_backbone(weights=None, input_shape=(None, None, 3)):
    """Four strided conv stages (strides 4, 8, 16, 32; 8-32 channels): a stand-in for a ResNet in tests."""
    if weights is not None:
        raise ValueError("the tiny test backbone has no pretrained weights")
    images = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(images)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stage2_out")(x)
    x = keras.layers.BatchNormalization(name="stage2_bn")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stage3_out")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stage4_out")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="stage5_out")(x)
    return keras.Model(images, x, name="tiny")


backbones.register_backbone(
    TINY_BACKBONE,
    backbones.BackboneSpec(_build_tiny_backbone,
                           {"P2": "stage2_bn", "P3": "stage3_out", "P4": "stage4_out", "P5": "stage5_out"},
                           preprocessing="tf"),
    overwrite=True)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts with fixed seeds, float32 and an empty Keras graph."""
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


@pytest.fixture
def tiny_backbone():
    return TINY_BACKBONE


@pytest.fixture(scope="session")
def voc_sample_dir():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "voc_sample", "VOCdevkit",
                        "VOC2012")
    if not os.path.isdir(path):
        pytest.fail(f"{path} is missing: the tests need ../shared/data/voc_sample beside the checkout")
    return os.path.abspath(path)


def assert_close(actual, expected, atol=1e-5, rtol=1e-5):
    tf.debugging.assert_near(tf.cast(actual, tf.float64), tf.cast(expected, tf.float64), atol=atol, rtol=rtol)
