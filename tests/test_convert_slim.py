"""TF1 checkpoints of the reference TF-slim RefineNet in: the reference code itself is the oracle.

tests/slim_reference.py runs the blog's ``model()`` on tf-slim's ``resnet_v1`` in a TF1 process of its own, with
random weights and BatchNorm moving statistics, saves them with ``tf.compat.v1.train.Saver`` and returns its
logits and regularization loss; the converted Keras model must give the same.
"""

import os

import numpy as np
import pytest
import tf_keras as keras
from PIL import Image

import refinenet_tf
from refinenet_tf import cli
from refinenet_tf.convert import ConversionError
from refinenet_tf.convert import slim as convert_slim
from refinenet_tf.models.slim_backbones import read_checkpoint
from tests import slim_reference

#: The reference code doubles each coarser level with ``unpool(x, 2)``, so its input sides are multiples of 32.
SMALL_SIZE = (96, 160)


def _check_logits(actual, expected):
    """The oracle's criterion: max |Keras - slim| <= 1e-4 of the range of slim's logits; returns both figures."""
    assert actual.shape == expected.shape
    difference, spread = float(np.max(np.abs(actual - expected))), float(np.ptp(expected))
    assert spread > 1.0 and np.mean(expected > 0) > 0.1, "the logits must not be trivial (ReLU'd to zero)"
    assert difference <= 1e-4 * spread, (difference, spread)
    return difference, spread


def _logits(model, image):
    """The model's output on one image, called directly: ``predict`` would first trace a predict function for
    this single batch (about 2 s for ResNet-50, more than the call)."""
    return model(image[None], training=False).numpy()


def _generated_image(height, width, seed):
    """A smooth colour gradient with noise: structure at every scale, values over all of [0, 255]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([255 * x / width, 255 * y / height, 127.5 + 127.5 * np.sin(x / 7.0 + y / 11.0)], axis=-1)
    return np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def reference_50(tmp_path_factory):
    """The reference model on resnet_v1_50 (decoder width 64, 5 classes) with ExponentialMovingAverage shadows,
    saved by the slim graph, and its logits on a generated image with the raw variables and with the shadows."""
    folder = tmp_path_factory.mktemp("reference_50")
    image = _generated_image(*SMALL_SIZE, seed=2)
    prefix = str(folder / "RefineNet_step_2000.ckpt")
    logits, regularization, ema_logits = slim_reference.in_tf1(
        "run_reference", folder, checkpoint_prefix=prefix, image=image.astype(np.float32), resnet="resnet_v1_50",
        features=64, num_classes=5, seed=1, ema_shadows=True)
    return dict(prefix=prefix, image=image, logits=logits, regularization=float(regularization),
                ema_logits=ema_logits, folder=folder)


def test_oracle_resnet_v1_101_on_a_voc_image_at_512(voc_sample_dir, tmp_path):
    """The reference network as written (ResNet-101, width 256, 21 classes) on a real image at 512 x 512."""
    name = sorted(os.listdir(os.path.join(voc_sample_dir, "JPEGImages")))[0]
    with Image.open(os.path.join(voc_sample_dir, "JPEGImages", name)) as source:
        image = np.asarray(source.convert("RGB").resize((512, 512), Image.BILINEAR))
    prefix = str(tmp_path / "model.ckpt")
    logits, regularization = slim_reference.in_tf1("run_reference", tmp_path, checkpoint_prefix=prefix,
                                                   image=image.astype(np.float32), resnet="resnet_v1_101")
    model = convert_slim.load_slim_checkpoint(prefix, upsample_logits=False)
    assert model.name == "seed_resnet_v1_101" and model.output_shape == (None, None, None, 21)
    difference, spread = _check_logits(_logits(model, image), logits)
    print(f"\nResNet-101 oracle on {name} at 512x512: max |keras - slim| = {difference:.3g}, logits range "
          f"{spread:.4g}, ratio {difference / spread:.2e}")
    np.testing.assert_allclose(float(sum(model.losses)), float(regularization), rtol=1e-5)


def test_oracle_resnet_v1_50_on_a_generated_image(reference_50):
    model = convert_slim.load_slim_checkpoint(reference_50["prefix"], upsample_logits=False)
    assert model.name == "seed_resnet_v1_50" and model.output_shape[-1] == 5
    difference, spread = _check_logits(_logits(model, reference_50["image"]), reference_50["logits"])
    print(f"\nResNet-50 oracle at {SMALL_SIZE}: max |keras - slim| = {difference:.3g}, logits range {spread:.4g}")
    # slim's REGULARIZATION_LOSSES: weight_decay * l2_loss(w) for every conv kernel, backbone and decoder
    np.testing.assert_allclose(float(sum(model.losses)), reference_50["regularization"], rtol=1e-5)
    assert len(model.losses) == 53 + 4 + 58 + 1


def _edited(reference_50, tmp_path, edit):
    tensors = dict(read_checkpoint(reference_50["prefix"]))
    edit(tensors)
    prefix = str(tmp_path / "edited.ckpt")
    slim_reference.write_checkpoint(prefix, tensors)
    return prefix


def test_missing_extra_and_wrongly_shaped_variables_are_named_in_one_error(reference_50, tmp_path):
    def edit(tensors):
        del tensors["feature_fusion/Conv_7/BatchNorm/moving_mean"]
        tensors["resnet_v1_50/block2/unit_1/bottleneck_v1/conv2/biases"] = np.zeros([128], np.float32)
        tensors["resnet_v1_50/block2/unit_2/bottleneck_v1/conv2/weights"] = np.zeros([3, 3, 64, 128], np.float32)
    with pytest.raises(ConversionError) as raised:
        convert_slim.load_slim_checkpoint(_edited(reference_50, tmp_path, edit))
    assert str(raised.value) == (
        f"{tmp_path / 'edited.ckpt'} does not fit model 'seed_resnet_v1_50': "
        "missing from the checkpoint: feature_fusion/Conv_7/BatchNorm/moving_mean; "
        "checkpoint tensors that fit no model weight: resnet_v1_50/block2/unit_1/bottleneck_v1/conv2/biases; "
        "wrong shapes (checkpoint -> model): resnet_v1_50/block2/unit_2/bottleneck_v1/conv2/weights (3, 3, 64, 128) "
        "-> block2_unit2_conv2/kernel (3, 3, 128, 128)")


def test_ema_without_shadows_is_an_error_naming_them(reference_50, tmp_path):
    def drop_shadows(tensors):
        for name in [name for name in tensors if name.endswith("/ExponentialMovingAverage")]:
            del tensors[name]
    with pytest.raises(ConversionError, match="ema=True but the checkpoint has no ExponentialMovingAverage shadow "
                                              r"variables \(no resnet_v1_50/conv1/weights/ExponentialMovingAverage, "
                                              r"none at all\); convert it without ema"):
        convert_slim.load_slim_checkpoint(_edited(reference_50, tmp_path, drop_shadows), ema=True)
    # one shadow missing among many: named, not filled from the raw variable
    with pytest.raises(ConversionError, match="missing from the checkpoint: "
                                              "feature_fusion/Conv_3/BatchNorm/gamma/ExponentialMovingAverage$"):
        convert_slim.load_slim_checkpoint(_edited(
            reference_50, tmp_path, lambda t: t.pop("feature_fusion/Conv_3/BatchNorm/gamma/ExponentialMovingAverage")),
            ema=True)


def test_optimizer_state_is_left_out_and_any_scope_numbering_fits(reference_50, tmp_path):
    """Adam's slots and scalars of the reference training carry nothing for the model; a decoder whose conv
    scopes are numbered from an offset (another slim.conv2d in feature_fusion first) maps by order."""
    def edit(tensors):
        renamed = {}
        for name in [n for n in tensors if n.startswith("feature_fusion/")]:
            _, scope, rest = name.split("/", 2)
            index = 0 if scope == "Conv" else int(scope.split("_")[1])
            renamed[f"feature_fusion/Conv_{index + 3}/{rest}"] = tensors.pop(name)
        tensors.update(renamed)
        tensors["resnet_v1_50/conv1/weights/Adam"] = np.zeros([7, 7, 3, 64], np.float32)
        tensors["resnet_v1_50/conv1/weights/Adam_1"] = np.zeros([7, 7, 3, 64], np.float32)
        tensors["beta1_power"] = np.float32(0.9)
        tensors["Variable"] = np.float32(1e-4)  # the reference training's learning rate
    model = convert_slim.load_slim_checkpoint(_edited(reference_50, tmp_path, edit), upsample_logits=False)
    _check_logits(_logits(model, reference_50["image"]), reference_50["logits"])


@pytest.fixture(scope="module")
def converted_50(reference_50):
    """``refinenet-tf convert slim`` of the reference checkpoint: the .keras file."""
    output = str(reference_50["folder"] / "seed.keras")
    assert cli.main(["convert", "slim", reference_50["prefix"], "--output", output, "--ema"]) == 0
    return output


def test_cli_convert_writes_a_model_that_load_model_and_predict_take(reference_50, converted_50, tmp_path, capsys):
    model = refinenet_tf.load_model(converted_50)
    assert model.name == "seed_resnet_v1_50" and model.output_shape == (None, None, None, 5)
    # the saved model upsamples the logits; at 1/4 they are the reference demo's after restoring the shadows
    # (--ema: load_slim_checkpoint(ema=True)), which differ from the raw variables' logits
    shadowed, raw = reference_50["ema_logits"], reference_50["logits"]
    assert np.max(np.abs(shadowed - raw)) > 0.1 * np.ptp(raw), "the shadows must change the logits"
    quarter = model.get_layer("classifier").output
    logits = _logits(keras.Model(model.input, quarter), reference_50["image"])
    _check_logits(logits, shadowed)
    tensors = read_checkpoint(reference_50["prefix"])
    np.testing.assert_array_equal(
        model.get_layer("classifier").conv.bias.numpy(),
        tensors[f"feature_fusion/Conv_{len(convert_slim.decoder_convs(model)) - 1}/biases/ExponentialMovingAverage"])
    # predict on an image of an odd size (the reference code needs multiples of 32; refinenet_tf does not)
    image = _generated_image(75, 110, seed=9)
    Image.fromarray(image).save(tmp_path / "generated.png")
    assert cli.main(["predict", "--model", converted_50, "--output", str(tmp_path / "out"), "--probabilities",
                     "--no-progress", str(tmp_path / "generated.png")]) == 0
    probabilities = np.load(tmp_path / "out" / "generated_probabilities.npy")
    expected = keras.activations.softmax(model(image[None].astype(np.float32))).numpy()[0]
    # predict runs the model inside a tf.function (grappler fuses conv + BatchNorm): float32 rounding of logits
    # that span ~100 moves the probabilities near a decision boundary by a few 1e-4
    np.testing.assert_allclose(probabilities, expected, atol=1e-3)
    labels = np.asarray(Image.open(tmp_path / "out" / "generated.png"))
    assert labels.shape == (75, 110)
    np.testing.assert_array_equal(labels, probabilities.argmax(-1))


def test_cli_predict_on_a_voc_image(converted_50, voc_sample_dir, tmp_path):
    name = sorted(os.listdir(os.path.join(voc_sample_dir, "JPEGImages")))[0]
    path = os.path.join(voc_sample_dir, "JPEGImages", name)
    assert cli.main(["predict", "--model", converted_50, "--output", str(tmp_path), "--no-progress", path]) == 0
    with Image.open(path) as image, Image.open(tmp_path / (os.path.splitext(name)[0] + ".png")) as labels:
        assert labels.size == image.size and set(np.unique(np.asarray(labels))) <= set(range(5))


def test_cli_convert_errors_are_one_line(reference_50, tmp_path, capsys):
    output = str(tmp_path / "model.keras")
    assert cli.main(["convert", "slim", reference_50["prefix"], "--output", output, "--num-classes", "21"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("refinenet-tf convert: error: --num-classes 21 but the checkpoint's classifier "
                     "(feature_fusion/Conv_62/weights) has 5 classes; omit --num-classes or give 5.")
    assert cli.main(["convert", "slim", str(tmp_path / "nothing.ckpt"), "--output", output]) == 2
    assert "nothing.ckpt' is not a TensorFlow checkpoint" in capsys.readouterr().err
    assert cli.main(["convert", "slim", reference_50["prefix"], "--output", str(tmp_path / "model.h5")]) == 2
    assert "end the name with .keras" in capsys.readouterr().err
    assert not os.path.exists(output)
