"""The task a user holds: ``Segmenter`` with heads, ``from_preset`` as the one loader, and the refusal of untrained
decoders (before any download)."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import refinenet_tf  # noqa: E402
from refinenet_tf import cli, models  # noqa: E402
from refinenet_tf.training import runs
from refinenet_tf.tasks import Prediction, Segmenter  # noqa: E402
from tests.conftest import TINY_BACKBONE  # noqa: E402

IMAGE = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    # a Light-Weight RefineNet on the tests' tiny backbone: loading, predicting and exporting a file is what is
    # tested here, not MobileNetV2 (the presets by name are below)
    model = models.RefineNet(num_classes=3, backbone=TINY_BACKBONE, backbone_weights=None, variant="light_weight",
                             decoder_features=16)
    path = str(tmp_path_factory.mktemp("segmenter") / "model.keras")
    model.save(path)
    return path


@pytest.fixture(scope="module")
def joint_model():
    return refinenet_tf.MultiTaskRefineNet(num_classes=3, tasks=("segmentation", "depth", "normals"),
                                           backbone=TINY_BACKBONE, backbone_weights=None, decoder_features=16)


def test_the_top_level_names_the_task():
    assert refinenet_tf.Segmenter is Segmenter and refinenet_tf.Prediction is Prediction


def test_a_loaded_file_predicts_labels_that_match_the_keras_model(model_file):
    segmenter = Segmenter.from_preset(model_file)
    assert segmenter.trained and segmenter.heads == ("segmentation",)
    result = segmenter.predict(IMAGE, return_probabilities=True)
    assert result.labels.shape == (33, 47) and result.probabilities.shape == (33, 47, 3)
    assert result.depth is None and result.normals is None
    np.testing.assert_array_equal(result.labels, refinenet_tf.inference.predict(segmenter.model, IMAGE).labels)
    # Keras' own predict keeps its meaning: logits of the plain functional model
    assert segmenter.model.predict(IMAGE[None].astype("float32"), verbose=0).shape == (1, 33, 47, 3)
    several = segmenter.predict([IMAGE, IMAGE[:, :40]])
    assert [p.labels.shape for p in several] == [(33, 47), (33, 40)]


def test_every_head_comes_through_the_same_predict(joint_model):
    segmenter = Segmenter(joint_model)
    assert segmenter.heads == ("segmentation", "depth", "normals")
    result = segmenter.predict(IMAGE)
    assert result.labels.shape == (33, 47) and result.depth.shape == (33, 47)
    assert result.normals.shape == (33, 47, 3)
    np.testing.assert_allclose(np.linalg.norm(result.normals, axis=-1), 1.0, atol=1e-4)


def test_a_preset_name_is_marked_untrained_and_refused_until_allowed(tmp_path):
    segmenter = Segmenter.from_preset("lw_mobilenetv2", num_classes=3)
    assert not segmenter.trained
    for run in (lambda: segmenter.predict(IMAGE), lambda: segmenter.evaluate("voc:/nowhere"),
                lambda: segmenter.export(str(tmp_path / "x"))):
        with pytest.raises(runs.UntrainedModelError, match="untrained.*refinenet-tf train.*allow_untrained=True"):
            run()
    assert not os.path.exists(tmp_path / "x")
    assert segmenter.predict(IMAGE, allow_untrained=True).labels.shape == (33, 47)
    allowed = Segmenter.from_preset("lw_mobilenetv2", num_classes=3, allow_untrained=True)
    assert allowed.predict(IMAGE).labels.shape == (33, 47)


def test_a_preset_with_its_trained_weights_is_trained(tmp_path):
    model = models.build("lw_mobilenetv2", num_classes=3, backbone_weights=None)  # the preset itself, by name
    weights = str(tmp_path / "trained.weights.h5")
    model.save_weights(weights)
    segmenter = Segmenter.from_preset("lw_mobilenetv2", num_classes=3, weights=weights)
    assert segmenter.trained
    np.testing.assert_array_equal(segmenter.predict(IMAGE).labels, refinenet_tf.inference.predict(model, IMAGE).labels)


def test_the_library_loader_refuses_a_bare_preset_before_building():
    with pytest.raises(runs.UntrainedModelError, match="spec='lw_resnet50'.*allow_untrained=True"):
        runs.load_inference_model("lw_resnet50")


def test_the_command_line_refuses_an_untrained_preset_before_any_download(tmp_path, capsys):
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(IMAGE).save(image)
    # --backbone-weights defaults to imagenet: a download that offline ends in a URL error. The refusal comes first.
    status = cli.main(["predict", "--model", "lw_resnet50", "--output", str(tmp_path / "out"), str(image)])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert error.startswith("refinenet-tf predict: error: --model 'lw_resnet50' is a preset name without trained "
                            "weights"), error
    assert "--allow-untrained" in error and "URL" not in error and len(error.splitlines()) == 1
    assert not os.path.exists(tmp_path / "out")
    status = cli.main(["predict", "--model", "lw_mobilenetv2", "--backbone-weights", "none", "--num-classes", "3",
                       "--allow-untrained", "--output", str(tmp_path / "out"), str(image)])
    assert status == 0 and os.path.exists(tmp_path / "out" / "in.png")


def test_export_goes_through_the_task_and_loads_in_a_fresh_process(model_file, tmp_path, run_fresh):
    segmenter = Segmenter.from_preset(model_file)
    path = segmenter.export(str(tmp_path / "saved"))
    printed = run_fresh(f"""
        serve = tf.saved_model.load({path!r}).signatures["serving_default"]
        print(serve(images=tf.constant(np.zeros((1, 33, 47, 3), np.uint8)))["labels"].shape)
    """)
    assert printed.strip() == "(1, 33, 47)", printed
    with pytest.raises(ValueError, match="format='png'"):
        segmenter.export(str(tmp_path / "x"), format="png")
