"""Mixed precision that trains: float16 and bfloat16 loss curves follow float32's, XLA on and off."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import refinenet_tf
from refinenet_tf import training
from refinenet_tf.models import layers
from refinenet_tf.training import recipes
from refinenet_tf.data import synthetic
from tests.conftest import TINY_BACKBONE

STEPS = 20
# Adam 1e-3 on 4 synthetic scenes: the float32 loss falls from 0.92 to about 0.25 in 20 steps, so a curve that
# lagged or drifted would leave the 5 % band.
RECIPE = recipes.Recipe("mixed_precision_test", "lw_mobilenetv2", "test", optimizer="adam", learning_rate=1e-3)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    scenes = [synthetic.render_scene(rng, 32, 32) for _ in range(4)]
    return (np.stack([image for image, _ in scenes]).astype("float32"),
            np.stack([mask for _, mask in scenes]).astype("int32"))


def _train(policy, jit_compile, batch, tiny_backbone):
    """Per-step losses of 20 steps on one batch, the model and its optimizer, all under ``policy``."""
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)  # the same float32 initial weights under every policy
    model = refinenet_tf.RefineNet(num_classes=4, backbone=tiny_backbone, backbone_weights=None,
                                   variant="light_weight", decoder_features=8, dropout=None,
                                   interpolation="bilinear")  # a resize whose half-precision XLA gradient broke
    training.compile_model(model, RECIPE, 4, jit_compile=jit_compile)
    losses = [float(model.train_on_batch(*batch)[0]) for _ in range(STEPS)]
    return np.array(losses), model


@pytest.fixture(scope="module")
def float32_losses(batch):
    losses, _ = _train("float32", False, batch, TINY_BACKBONE)
    keras.mixed_precision.set_global_policy("float32")
    assert losses[-1] < 0.5 * losses[0]  # a curve worth comparing: it more than halves
    return losses


@pytest.mark.parametrize("jit_compile", [False, True], ids=["no_xla", "xla"])
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_follows_float32(policy, jit_compile, batch, float32_losses, tiny_backbone):
    losses, model = _train(policy, jit_compile, batch, tiny_backbone)
    assert model.output.dtype == tf.float32 and model.compute_dtype == policy.split("_")[1]
    assert (training.xla_train_step_function(model) is not None) == jit_compile
    skipped = 0
    if policy == "mixed_float16":  # Keras adds dynamic loss scaling; a step whose gradient overflowed is skipped
        assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
        skipped = round(math.log2(2 ** 15 / float(model.optimizer.loss_scale)))  # halved once per skipped step
        assert skipped <= 1
    assert np.isfinite(losses).all()
    compared = losses[skipped:]  # a skipped step leaves the weights as they were: the curve is one step behind
    relative = np.abs(compared - float32_losses[:len(compared)]) / float32_losses[:len(compared)]
    assert relative.max() <= 0.05, (policy, losses.round(3), float32_losses.round(3))

    images, masks = (tf.constant(array) for array in batch)
    with tf.GradientTape() as tape:
        loss = model.compiled_loss(masks, model(images, training=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    assert all(gradient.dtype == tf.float32 and bool(tf.reduce_all(tf.math.is_finite(gradient)))
               for gradient in gradients)


def _resize_gradient(resize, dtype, jit_compile):
    """The gradient of ``sum(resize(x) ** 2)`` for a fixed 1x4x5x2 ``x`` in ``dtype``, as float32."""
    @tf.function(jit_compile=jit_compile)
    def gradient(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = tf.reduce_sum(tf.cast(resize(images), tf.float32) ** 2)
        return tape.gradient(loss, images)

    images = tf.cast(tf.reshape(tf.range(40, dtype=tf.float32) / 40, [1, 4, 5, 2]), dtype)
    result = gradient(images)
    assert result.dtype == dtype
    return tf.cast(result, tf.float32).numpy()


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16], ids=["float16", "bfloat16"])
def test_xla_half_precision_resize_gradient_is_broken_in_tensorflow(dtype):
    # The reproduction: XLA's gradient of a half-precision bilinear resize (half-pixel centres or TF1's, not
    # align_corners) is garbage on TF 2.21 (errors of 1e4 to 1e35 where the gradient is below 10). If this fails,
    # TensorFlow has fixed it and resize_bilinear's float32 detour may go.
    def resize(images):
        return tf.image.resize(images, [7, 9])

    reference = _resize_gradient(resize, tf.float32, False)
    assert np.abs(_resize_gradient(resize, dtype, False) - reference).max() < 0.05  # without XLA: right
    assert not np.abs(_resize_gradient(resize, dtype, True) - reference).max() < 1.0  # with XLA: broken


@pytest.mark.parametrize("jit_compile", [False, True], ids=["no_xla", "xla"])
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16], ids=["float16", "bfloat16"])
def test_resize_bilinear_gradients_are_right_and_keep_their_dtype(dtype, jit_compile):
    for interpolation in layers.INTERPOLATIONS:
        def resize(images):
            return layers.resize_bilinear(images, [7, 9], interpolation)

        reference = _resize_gradient(resize, tf.float32, False)  # |values| up to about 9
        assert np.abs(_resize_gradient(resize, dtype, jit_compile) - reference).max() < 0.05, interpolation


def test_mixed_precision_policy_names():
    assert training.mixed_precision_policy(False) == "float32"
    assert training.mixed_precision_policy(True) == ("mixed_float16" if tf.config.list_physical_devices("GPU")
                                                     else "mixed_bfloat16")
    assert training.mixed_precision_policy("mixed_float16") == "mixed_float16"
    with pytest.raises(ValueError, match="mixed_precision='fp16' is not a policy"):
        training.mixed_precision_policy("fp16")
    with pytest.raises(ValueError, match="mixed_precision must be"):
        training.mixed_precision_policy(16)
    with pytest.raises(ValueError, match="mixed_precision='half'"):
        training.TrainConfig("demo_shapes", "voc:nowhere", mixed_precision="half", run_dir="unused")
