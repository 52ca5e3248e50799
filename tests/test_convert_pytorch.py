"""Official PyTorch checkpoints into Keras, with PyTorch as the oracle.

tests/torch_reference.py holds PyTorch implementations of the five official structures, written from the
releases with their module names, so ``state_dict()`` has the official checkpoints' keys. Each test gives them
random weights and random BatchNorm statistics, ``torch.save``s them, converts the file with the real converter
and compares the Keras model's 1/4-resolution logits (the layer ``classifier``) with PyTorch's output.
"""

import glob
import os
import sys

import numpy as np
import pytest
import tf_keras as keras
from PIL import Image

torch = pytest.importorskip("torch")  # the [torch] extra; part of [dev], so CI runs these tests

import refinenet_tf  # noqa: E402
from refinenet_tf import cli, export, models  # noqa: E402
from refinenet_tf.convert import ConversionError  # noqa: E402
from refinenet_tf.convert import pytorch as converter  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import torch_reference  # noqa: E402

#: Max |Keras - PyTorch| allowed, as a fraction of the range of PyTorch's logits.
TOLERANCE = 1e-4

#: Trainable parameters for 21 classes, counted from the official code (``sum(p.numel() for p in
#: model.parameters())`` of rf_lw50 / rf_lw101 / rf_lw152 / mbv2 / rf101).
OFFICIAL_PARAMETERS = {
    "lw_resnet50_official": 27_357_525,
    "lw_resnet101_official": 46_349_653,
    "lw_resnet152_official": 61_993_301,
    "lw_mobilenetv2_official": 3_284_565,
    "refinenet_resnet101_official": 118_052_437,
}


def _generated_image(height, width, seed=0):
    """Smooth colour gradients plus noise and a bright rectangle: structure at every scale, no file needed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([255 * x / width, 255 * y / height, 127 + 100 * np.sin(x / 7.0 + y / 11.0)], axis=-1)
    image += rng.normal(0, 20, image.shape)
    image[height // 4: height // 2, width // 3: 2 * width // 3] = (250, 240, 30)
    return np.clip(image, 0, 255).astype(np.uint8)[None]


def _voc_image(voc_sample_dir, width, height):
    path = sorted(glob.glob(os.path.join(voc_sample_dir, "JPEGImages", "*.jpg")))[0]
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR))[None]


def _torch_logits(model, images):
    with torch.no_grad():
        return model(torch_reference.preprocess(images)).permute(0, 2, 3, 1).numpy()


def _save(state, path):
    torch.save(state, str(path))
    return str(path)


class Converted:
    """A randomized reference module, its checkpoint, and the converted Keras model."""

    def __init__(self, architecture, folder):
        self.architecture = architecture
        self.torch_model = torch_reference.randomize(torch_reference.build(architecture), seed=3)
        self.checkpoint = _save(self.torch_model.state_dict(), folder / f"{architecture}.pth")
        self.keras_model = converter.convert(self.checkpoint, architecture)
        self.quarter = keras.Model(self.keras_model.input, self.keras_model.get_layer("classifier").output)

    def compare(self, images):
        """``max |Keras - PyTorch| / range(PyTorch)`` of the 1/4-resolution logits."""
        expected = _torch_logits(self.torch_model, images)
        actual = self.quarter(images, training=False).numpy()
        assert actual.shape == expected.shape
        difference = float(np.abs(actual - expected).max())
        spread = float(expected.max() - expected.min())
        print(f"{self.architecture} {images.shape[2]}x{images.shape[1]} (WxH): max abs diff {difference:.3g}, "
              f"logits range {spread:.3g}, ratio {difference / spread:.3g}")
        return difference / spread


@pytest.fixture(scope="module")
def converted(request, tmp_path_factory):
    result = Converted(request.param, tmp_path_factory.mktemp(request.param))
    yield result
    del result
    keras.backend.clear_session()


@pytest.mark.parametrize("converted", ["lw_mobilenetv2_official", "lw_resnet50_official",
                                       "refinenet_resnet101_official", "lw_resnet101_official"], indirect=True)
def test_keras_logits_equal_pytorchs_on_a_generated_image(converted):
    assert converted.compare(_generated_image(67, 93)) <= TOLERANCE
    # The model takes uint8 RGB of any size and returns logits at input size.
    assert converted.keras_model(_generated_image(67, 93)).shape == (1, 67, 93, 21)


@pytest.mark.parametrize("converted", ["lw_mobilenetv2_official", "lw_resnet50_official",
                                       "refinenet_resnet101_official"], indirect=True)
def test_keras_logits_equal_pytorchs_on_a_voc_image(converted, voc_sample_dir):
    # a real image at a square size and at one that is no multiple of 32 (1/4: 58.5 rows, so every level rounds):
    # half of the benchmark's 512 x 512 and 625 x 468, a quarter of the time of RefineNet-101 on them
    for width, height in ((256, 256), (313, 234)):
        assert converted.compare(_voc_image(voc_sample_dir, width, height)) <= TOLERANCE


def _assert_parameter_count_is_the_releases(name, model):
    # Where the figures come from, for the two families: torchvision's ResNet-50 has 25,557,032 parameters,
    # 2048 * 1000 + 1000 of them in the classifier the trunk drops; the Light-Weight decoder on it has
    # 2048*512 (P5 reduction) + 4*512*512 (its pooling) + 512*256 (P5 -> P4 fusion conv)
    # + (1024 + 512 + 256)*256 (reductions) + 3*256*256 (fusion convs of the skips) + 2*256*256 (fusion convs
    # of P4, P3) + 3*4*256*256 (poolings) + 256*21*9 + 21 (classifier).
    lw50_decoder = (2048 * 512 + 4 * 512 * 512 + 512 * 256 + (1024 + 512 + 256) * 256 + 3 * 256 * 256
                    + 2 * 256 * 256 + 3 * 4 * 256 * 256 + 256 * 21 * 9 + 21)
    assert 25_557_032 - (2048 * 1000 + 1000) + lw50_decoder == OFFICIAL_PARAMETERS["lw_resnet50_official"]
    # The MobileNetV2 decoder: six 1x1 reductions to 256, three 1x1 adaptations, four poolings, the classifier.
    mbv2_decoder = (320 + 160 + 96 + 64 + 32 + 24) * 256 + 3 * 256 * 256 + 4 * 4 * 256 * 256 + 256 * 21 * 9 + 21
    expected = OFFICIAL_PARAMETERS[name]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    with torch.device("meta"):  # the same modules and parameter shapes, no memory allocated or initialised
        reference = sum(p.numel() for p in torch_reference.build(name).parameters())
    assert trainable == reference == expected, name
    if name == "lw_mobilenetv2_official":
        backbone = model.get_layer("mobilenetv2_lw_torch")
        assert trainable - sum(int(np.prod(w.shape)) for w in backbone.trainable_weights) == mbv2_decoder
    if name == "lw_resnet50_official":
        backbone = model.get_layer("resnet50_torch")
        assert trainable - sum(int(np.prod(w.shape)) for w in backbone.trainable_weights) == lw50_decoder


# The four releases the logit tests above convert: their converted models are the fixture's (``converter.convert``
# builds ``models.build(name, num_classes=21, backbone_weights=None)`` for the 21-class checkpoints and only
# assigns weights, which changes no shape), so each preset is built once for the module; lw_resnet152_official
# is built below.
@pytest.mark.parametrize("converted", ["lw_mobilenetv2_official", "lw_resnet50_official",
                                       "refinenet_resnet101_official", "lw_resnet101_official"], indirect=True)
def test_parameter_counts_equal_the_releases(converted):
    assert converted.keras_model.output_shape[-1] == 21
    _assert_parameter_count_is_the_releases(converted.architecture, converted.keras_model)


def test_parameter_count_of_lw_resnet152_equals_the_release():
    model = models.build("lw_resnet152_official", num_classes=21, backbone_weights=None)
    _assert_parameter_count_is_the_releases("lw_resnet152_official", model)
    assert sorted(OFFICIAL_PARAMETERS) == sorted(["lw_mobilenetv2_official", "lw_resnet50_official",
                                                  "refinenet_resnet101_official", "lw_resnet101_official",
                                                  "lw_resnet152_official"]), "every release is counted above"


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """A randomized official LW-MobileNetV2 and its state dict (the smallest release: the format tests)."""
    model = torch_reference.randomize(torch_reference.build("lw_mobilenetv2_official"), seed=5)
    return model, model.state_dict()


def _assert_same_weights(model, reference):
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


def test_a_bare_state_dict_converts(mobilenet, tmp_path):
    model, state = mobilenet
    keras_model = converter.convert(_save(state, tmp_path / "bare.pth"), "lw_mobilenetv2_official")
    assert keras_model.inferred_num_classes == 21
    layer = keras_model.get_layer("mobilenetv2_lw_torch").get_layer("layer4_block2_depthwise_conv")
    # PyTorch's depthwise kernel [192, 1, 3, 3] -> Keras' [3, 3, 192, 1].
    np.testing.assert_array_equal(layer.depthwise_kernel.numpy(),
                                  state["layer4.1.output.1.0.weight"].numpy().transpose(2, 3, 0, 1))
    bn = keras_model.get_layer("mobilenetv2_lw_torch").get_layer("layer1_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state["layer1.1.running_var"].numpy())
    images = _generated_image(35, 41)
    np.testing.assert_allclose(keras.Model(keras_model.input, keras_model.get_layer("classifier").output)(images),
                               _torch_logits(model, images), atol=1e-5)


@pytest.mark.parametrize("filename, wrap", [
    ("training.pth.tar", lambda state: {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}),
    ("densetorch.ckpt", lambda state: {"model": state, "best_val": 0.8}),
    ("segmenter.pth.tar", lambda state: {"segmenter": {f"module.{k}": v for k, v in state.items()},
                                         "epoch_start": 3}),
])
def test_training_checkpoints_read_as_their_bare_state_dict(mobilenet, tmp_path, filename, wrap):
    # convert() reads a file only through load_state_dict, so a training checkpoint that reads as the bare state
    # dict converts as the test above converts it
    _, state = mobilenet
    bare = converter.load_state_dict(_save(state, tmp_path / "bare.pth"))
    wrapped = converter.load_state_dict(_save(wrap(state), tmp_path / filename))
    assert list(wrapped) == list(bare)
    for name, value in bare.items():
        np.testing.assert_array_equal(wrapped[name], value, err_msg=name)


def test_class_count_is_inferred_and_checked(tmp_path, caplog):
    person_part = torch_reference.randomize(torch_reference.build("lw_mobilenetv2_official", num_classes=7))
    path = _save(person_part.state_dict(), tmp_path / "mbv2_person.pth")
    with caplog.at_level("INFO", logger="refinenet_tf.convert.pytorch"):
        model = converter.convert(path, "lw_mobilenetv2_official")
    assert model.output_shape[-1] == model.inferred_num_classes == 7
    assert "7 classes, read from segm.weight" in caplog.text
    with pytest.raises(ConversionError, match=r"num_classes=21 but the classifier of .*mbv2_person.pth has 7"):
        converter.convert(path, "lw_mobilenetv2_official", num_classes=21)


class _Payload:
    """Unpickling this would run ``open(marker, "w")``: torch.load(weights_only=True) must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _broken(state, case, tmp_path):
    state = dict(state)
    if case == "missing":
        del state["crp2.0.3_outvar_dimred.weight"]
    elif case == "extra":
        state["aux_head.weight"] = torch.zeros(3)
    elif case == "shape":
        state["conv_adapt3.weight"] = torch.zeros(256, 128, 1, 1)
    elif case == "pickle":
        state["note"] = _Payload(str(tmp_path / "code_ran"))
    return state


@pytest.mark.parametrize("case, message", [
    ("missing", r"missing from the checkpoint: crp2\.0\.3_outvar_dimred\.weight"),
    ("extra", r"checkpoint tensors that fit no model weight: aux_head\.weight"),
    ("shape", r"wrong shapes .*conv_adapt3\.weight \(256, 128, 1, 1\) -> fusion_p3/path1_conv1/conv/kernel"),
    ("pickle", r"cannot be read .*weights_only=True"),
])
def test_bad_checkpoints_fail_naming_the_key_and_file(mobilenet, tmp_path, case, message):
    path = _save(_broken(mobilenet[1], case, tmp_path), tmp_path / f"{case}.pth")
    output = tmp_path / "out.keras"
    with pytest.raises(ConversionError, match=f"{case}.pth.*{message}" if case != "pickle" else message) as error:
        converter.convert_checkpoint(path, output, architecture="lw_mobilenetv2_official")
    assert path in str(error.value)
    assert not output.exists() and not (tmp_path / "code_ran").exists()


def test_wrong_architecture_fails_naming_the_file_and_keys(mobilenet, tmp_path):
    path = _save(mobilenet[1], tmp_path / "mbv2.pth")
    with pytest.raises(ConversionError, match=r"mbv2.pth has no classifier 'clf_conv.weight'.*architecture="):
        converter.convert(path, "lw_resnet50_official")
    # A checkpoint with the right classifier name but another structure: every misfit is named.
    state = dict(mobilenet[1], **{"clf_conv.weight": mobilenet[1]["segm.weight"],
                                  "clf_conv.bias": mobilenet[1]["segm.bias"]})
    path = _save(state, tmp_path / "renamed.pth")
    with pytest.raises(ConversionError, match=r"renamed.pth does not fit.*missing from the checkpoint: .*bn1\.bias"):
        converter.convert(path, "lw_resnet50_official")
    with pytest.raises(ValueError, match=r"architecture='lw_resnet18_official'.*lw_mobilenetv2_official"):
        converter.convert(path, "lw_resnet18_official")
    with pytest.raises(FileNotFoundError, match="checkpoint=.*nope.pth"):
        converter.convert(tmp_path / "nope.pth", "lw_resnet50_official")


def test_convert_save_export_and_run_in_a_fresh_process(mobilenet, tmp_path, capsys, run_fresh):
    model, state = mobilenet
    checkpoint = _save(state, tmp_path / "mbv2_voc.pth.tar")
    output = tmp_path / "mbv2_voc.keras"
    assert cli.main(["convert", "pytorch", checkpoint, "--architecture", "lw_mobilenetv2_official",
                     "--output", str(output)]) == 0
    assert "(21 classes, read from the checkpoint)" in capsys.readouterr().out
    loaded = refinenet_tf.load_model(str(output))
    saved_model = export.export_saved_model(loaded, str(tmp_path / "saved_model"))
    images = np.concatenate([_generated_image(97, 131, seed) for seed in (1, 2)])
    np.save(tmp_path / "images.npy", images)
    run_fresh(f"""
        images = np.load({str(tmp_path / "images.npy")!r})
        serve = tf.saved_model.load({saved_model!r}).signatures["serving_default"]
        np.save({str(tmp_path / "labels.npy")!r}, serve(images=tf.constant(images))["labels"].numpy())
    """)
    labels = np.load(tmp_path / "labels.npy")
    with torch.no_grad():
        logits = model(torch_reference.preprocess(images))
        # The Keras models return logits at input size, resized with half-pixel centres (align_corners=False).
        expected = torch.nn.functional.interpolate(logits, size=images.shape[1:3], mode="bilinear",
                                                   align_corners=False).argmax(1).numpy()
    agreement = float(np.mean(labels == expected))
    print(f"SavedModel labels equal PyTorch's on {100 * agreement:.3f} % of pixels")
    assert labels.shape == expected.shape and len(np.unique(expected)) > 1
    assert agreement >= 0.999


# --- The multi-task release (DrSleep/multi-task-refinenet): segmentation + depth (+ normals) ---------------------

class ConvertedMultiTask:
    """A randomized multi-task reference module (``num_tasks`` heads), its checkpoint and the converted model."""

    def __init__(self, num_classes, num_tasks, folder):
        self.torch_model = torch_reference.randomize(
            torch_reference.build("multitask_mobilenetv2_official", num_classes, num_tasks), seed=11)
        self.checkpoint = _save({"state_dict": self.torch_model.state_dict()},
                                folder / f"multitask_{num_classes}_{num_tasks}.ckpt")
        self.keras_model = converter.convert(self.checkpoint, "multitask_mobilenetv2_official")
        self.tasks = ("segmentation", "depth", "normals")[:num_tasks]

    def torch_outputs(self, images):
        with torch.no_grad():
            return [out.permute(0, 2, 3, 1).numpy() for out in self.torch_model(torch_reference.preprocess(images))]

    def compare(self, images):
        """``{task: max |Keras - PyTorch| / range(PyTorch)}`` of the heads' raw 1/4-resolution outputs."""
        heads = keras.Model(self.keras_model.input,
                            [self.keras_model.get_layer(f"{task}_predictor").output for task in self.tasks])
        ratios = {}
        for task, actual, expected in zip(self.tasks, heads(images, training=False), self.torch_outputs(images)):
            assert actual.shape == expected.shape, task
            ratios[task] = float(np.abs(actual.numpy() - expected).max() / (expected.max() - expected.min()))
        print(f"multitask {images.shape[2]}x{images.shape[1]} (WxH): max abs diff / range {ratios}")
        return ratios


@pytest.fixture(scope="module", params=[(40, 2), (40, 3)], ids=["ExpNYUD_joint", "ExpNYUD_three"])
def multitask_converted(request, tmp_path_factory):
    result = ConvertedMultiTask(*request.param, tmp_path_factory.mktemp("multitask"))
    yield result
    del result
    keras.backend.clear_session()


def test_multitask_heads_equal_pytorchs_and_outputs_are_the_releases_reading(multitask_converted):
    converted = multitask_converted
    images = _generated_image(67, 93)
    assert all(ratio <= TOLERANCE for ratio in converted.compare(images).values())
    assert converted.keras_model.inferred_num_classes == 40
    # From uint8 RGB: the dict, at input size; depth = |bilinear(depth head, align_corners=False)|, normals unit.
    outputs = converted.keras_model(images)
    assert sorted(outputs) == sorted(converted.tasks)
    resized = [torch.nn.functional.interpolate(torch.from_numpy(out).permute(0, 3, 1, 2), size=(67, 93),
                                               mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
               for out in converted.torch_outputs(images)]
    assert outputs["segmentation"].shape == (1, 67, 93, 40)
    depth = np.abs(resized[1])
    assert np.abs(outputs["depth"].numpy() - depth).max() <= TOLERANCE * (depth.max() - depth.min())
    if "normals" in converted.tasks:
        normals = resized[2] / np.linalg.norm(resized[2], axis=-1, keepdims=True)
        np.testing.assert_allclose(outputs["normals"], normals, atol=1e-3)


def test_multitask_heads_equal_pytorchs_on_a_voc_image(multitask_converted, voc_sample_dir):
    ratios = multitask_converted.compare(_voc_image(voc_sample_dir, 640, 480))
    assert all(ratio <= TOLERANCE for ratio in ratios.values())


def test_multitask_table_uses_every_official_tensor_once():
    for num_tasks, tasks in ((2, ("segmentation", "depth")), (3, ("segmentation", "depth", "normals"))):
        state = torch_reference.build("multitask_mobilenetv2_official", 40, num_tasks).state_dict()
        table = converter.pytorch_table("multitask_mobilenetv2_official", tasks)
        used = [foreign for foreign, _ in table.values()]
        assert len(used) == len(set(used))
        assert set(used) == {name for name in state if not name.endswith("num_batches_tracked")}
    assert table["pooling_p2/conv4/conv/depthwise_kernel"] == ("crp1.0.4_outvar_dimred.weight", "depthwise_oihw")
    assert table["normals_predictor/conv/bias"] == ("normal.bias", "identity")


def test_multitask_cli_converts_and_refuses_the_wrong_head_size(tmp_path, capsys):
    # The NYUD + KITTI model's 46-class head: inferred, and refused in one line when 40 classes are asked for.
    model = torch_reference.randomize(torch_reference.build("multitask_mobilenetv2_official", 46), seed=4)
    checkpoint = _save({"state_dict": model.state_dict()}, tmp_path / "ExpNYUDKITTI_joint.ckpt")
    output = tmp_path / "joint.keras"
    assert cli.main(["convert", "pytorch", checkpoint, "--architecture", "multitask_mobilenetv2_official",
                     "--num-classes", "40", "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--num-classes 40 but the classifier of" in error and "has 46" in error
    assert not output.exists()
    assert cli.main(["convert", "pytorch", checkpoint, "--architecture", "multitask_mobilenetv2_official",
                     "--num-classes", "46", "--output", str(output)]) == 0
    assert "multitask_mobilenetv2_official (46 classes, read from the checkpoint; outputs: segmentation, depth" in \
        capsys.readouterr().out
    loaded = refinenet_tf.load_model(str(output))
    images = _generated_image(35, 41)
    outputs = loaded(images)
    assert {task: tuple(out.shape) for task, out in outputs.items()} == {
        "segmentation": (1, 35, 41, 46), "depth": (1, 35, 41, 1)}
    with torch.no_grad():
        segm, depth = model(torch_reference.preprocess(images))
    quarter = keras.Model(loaded.input, loaded.get_layer("depth_predictor").output)(images).numpy()
    np.testing.assert_allclose(quarter, depth.permute(0, 2, 3, 1).numpy(), atol=1e-4)
