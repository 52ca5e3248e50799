"""The openvino and onnxruntime engines: the keras engine's labels on small models, multi-task outputs, dynamic sizes,
precision, and one-line refusals (missing extra, bfloat16 where it cannot run, a file that is not a model)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

from refinenet_tf import export, models
from refinenet_tf.export import exporters
from refinenet_tf.inference import engines
from refinenet_tf.models import multitask
from tests.conftest import TINY_BACKBONE

pytest.importorskip("openvino", reason="the openvino extra (part of the dev extra)")
pytest.importorskip("onnxruntime", reason="the onnx extra (part of the dev extra)")

CONVERTING = ("openvino", "onnxruntime")


def _randomized(model, seed=3, scale=0.5):
    """``model`` with weights larger than the initialisers' (normal, std ``scale``): labels and depth vary."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0, scale, weight.shape).astype(np.float32))
    return model


def _segmenter(tiny_backbone):
    return _randomized(models.RefineNet(num_classes=4, backbone=tiny_backbone, backbone_weights=None,
                                        variant="light_weight", decoder_features=8), scale=0.3)


@pytest.fixture(scope="module")
def segmenter():
    """``_segmenter(tiny_backbone)``, built once for the module: no test changes its weights, and the keras
    engine's traced function for each setting is then made once for the tests that compare with it."""
    return _segmenter(TINY_BACKBONE)


@pytest.fixture(scope="module")
def multitask_model():
    """A randomized multi-task model with all three heads on the tiny backbone, built once for the module."""
    return _randomized(multitask.MultiTaskRefineNet(4, tasks=multitask.TASKS, backbone=TINY_BACKBONE,
                                                    decoder_features=8))


def _images(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def _assert_same_segmentation(result, expected, atol=1e-4):
    """Probabilities within ``atol`` everywhere, and so equal labels wherever the keras probabilities' top two
    differ by more than ``2 * atol`` (elsewhere a near-tie that summation order may break either way)."""
    top2 = np.sort(expected["probabilities"], axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 2 * atol
    assert clear.mean() > 0.8, "the test model has too many near-ties to compare labels"
    np.testing.assert_array_equal(result["labels"][clear], expected["labels"][clear])
    np.testing.assert_allclose(result["probabilities"], expected["probabilities"], atol=atol)
    assert result["labels"].dtype == np.int32 and result["probabilities"].dtype == np.float32


@pytest.mark.parametrize("name", CONVERTING)
def test_engine_gives_the_keras_engine_labels_at_any_size(name, segmenter):
    model = segmenter  # _segmenter(tiny_backbone)
    keras_engine = engines.make_engine("keras", model, flip=True)
    engine = engines.make_engine(name, model, flip=True)
    assert engine.outputs == ("probabilities",) and engine.num_classes == 4 and engine.flip
    assert engine.metadata["class_names"][:2] == ["class_0", "class_1"] and len(engine.metadata["palette"]) == 4
    for images in (_images(0, (2, 40, 56, 3)), _images(1, (1, 37, 29, 3))):  # one conversion, two sizes
        _assert_same_segmentation(engine(images), keras_engine(images))
    assert len(np.unique(keras_engine(_images(0, (2, 40, 56, 3)))["labels"])) > 1


@pytest.mark.parametrize("name", CONVERTING)
def test_engine_runs_a_multitask_model(name, multitask_model):
    model = multitask_model  # _randomized(MultiTaskRefineNet(4, tasks=multitask.TASKS, backbone=tiny_backbone, ...))
    images = _images(2, (2, 37, 45, 3))
    expected = engines.make_engine("keras", model)(images)
    engine = engines.make_engine(name, model)
    result = engine(images)
    assert engine.outputs == ("probabilities", "depth", "normals") and sorted(result) == sorted(expected)
    _assert_same_segmentation(result, expected)
    depth = expected["depth"]
    assert result["depth"].shape == (2, 37, 45) and depth.max() > depth.min()
    np.testing.assert_allclose(result["depth"], depth, rtol=1e-4, atol=1e-4 * np.abs(depth).max())
    np.testing.assert_allclose(result["normals"], expected["normals"], atol=1e-4)


_FRESH_OPENVINO = """
import json, sys
sys.modules["refinenet_tf"] = None  # only OpenVINO and NumPy: no refinenet_tf, TensorFlow or Keras
sys.modules["tensorflow"] = None
sys.modules["tf_keras"] = None
import numpy as np
import openvino
path, inputs, outputs = sys.argv[1:]
model = openvino.Core().read_model(path)
metadata = json.loads(str(model.get_rt_info(["refinenet_tf"]).astype(str)))
compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
results = compiled(np.load(inputs))
named = {next(iter(output.get_names() & {"labels", "probabilities"})): results[output] for output in compiled.outputs}
np.savez(outputs, **named)
print(json.dumps([metadata["class_names"], metadata["preprocessing"], str(model.input(0).get_partial_shape()),
                  str(model.input(0).get_element_type())]))
"""


def test_openvino_export_runs_in_a_fresh_process_and_as_an_engine(segmenter, tmp_path):
    model = segmenter  # _segmenter(tiny_backbone)
    path = export.export_openvino(model, tmp_path / "model.xml", scales=(0.75, 1.0), class_names=["a", "b", "c", "d"],
                                  source="test")
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "model.xml"]
    images = _images(5, (2, 33, 47, 3))
    np.save(tmp_path / "images.npy", images)
    run = subprocess.run([sys.executable, "-c", _FRESH_OPENVINO, path, str(tmp_path / "images.npy"),
                          str(tmp_path / "outputs.npz")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == (
        '[["a", "b", "c", "d"], "%s", "[?,?,?,3]", "<Type: \'uint8_t\'>"]' % exporters.PREPROCESSING)
    expected = engines.make_engine("keras", model, scales=(0.75, 1.0))(images)
    _assert_same_segmentation(dict(np.load(tmp_path / "outputs.npz")), expected)
    # the engine from the file takes the export's augmentation and metadata
    engine = engines.make_engine(engines.engine_for_path(path), path)
    assert engine.scales == (0.75, 1.0) and engine.metadata["source"] == "test"
    _assert_same_segmentation(engine(images), expected)
    assert export.read_metadata(path) == engine.metadata
    with pytest.raises(ValueError, match="augmentation built in"):
        engines.make_engine("openvino", path, flip=True)
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        export.export_openvino(model, path)
    with pytest.raises(ValueError, match=r"must end with \.xml|an \.xml file"):
        export.export_openvino(model, tmp_path / "model.bin", overwrite=True)


def test_onnx_export_loads_as_an_engine_with_its_metadata(segmenter, tmp_path):
    model = segmenter  # _segmenter(tiny_backbone)
    path = export.export_onnx(model, tmp_path / "model.onnx", class_names=["a", "b", "c", "d"], max_side=40)
    images = _images(6, (1, 30, 61, 3))
    expected = engines.make_engine("keras", model, max_side=40)(images)
    for name in CONVERTING:  # OpenVINO reads the ONNX export too
        engine = engines.make_engine(name, path)
        assert engine.max_side == 40 and engine.metadata["class_names"] == ["a", "b", "c", "d"]
        _assert_same_segmentation(engine(images), expected)


def test_precision_float32_is_exact_and_bfloat16_is_refused_where_it_cannot_run():
    from refinenet_tf.inference.engines import openvino as openvino_engine

    model = keras.Sequential([keras.Input([None, None, 3]), keras.layers.Conv2D(3, 1)])  # converts in seconds
    with pytest.raises(ValueError, match=r"^engine='onnxruntime' runs float32 only"):
        engines.make_engine("onnxruntime", model, precision="bfloat16")
    engine = engines.make_engine("openvino", model)
    assert str(engine._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    if openvino_engine.openvino_bfloat16():
        engine = engines.make_engine("openvino", model, precision="bfloat16")
        assert str(engine._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
    else:
        with pytest.raises(ValueError, match="this CPU has no bfloat16 in OpenVINO") as error:
            engines.make_engine("openvino", model, precision="bfloat16")
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("name, package, extra", [("openvino", "openvino", "openvino"),
                                                  ("onnxruntime", "onnxruntime", "onnx")])
def test_a_missing_extra_is_one_line(name, package, extra, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed: import raises ImportError
    monkeypatch.delitem(sys.modules, f"refinenet_tf.inference.engines.{name}", raising=False)
    model = keras.Sequential([keras.Input([None, None, 3]), keras.layers.Conv2D(2, 1)])
    with pytest.raises(ImportError) as error:
        engines.make_engine(name, model)
    assert str(error.value) == f"engine='{name}' needs the {package} package: pip install 'refinenet_tf[{extra}]'"
    if name == "openvino":
        with pytest.raises(ImportError, match=r"^OpenVINO export needs openvino: pip install"):
            export.export_openvino(model, tmp_path / "model.xml")
        assert not os.listdir(tmp_path)


def test_a_file_that_is_not_an_export_is_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    for name, path, message in [("openvino", text, "is not an OpenVINO .xml"),
                                ("onnxruntime", text, "is not an .onnx file"),
                                ("onnxruntime", broken, "is not an ONNX model ONNX Runtime can load"),
                                ("openvino", tmp_path / "missing.xml", "is not an OpenVINO .xml")]:
        with pytest.raises(ValueError, match=message) as error:
            engines.make_engine(name, str(path))
        assert "\n" not in str(error.value)
    for path in (text, broken, tmp_path):
        with pytest.raises(ValueError, match="has no refinenet_tf metadata") as error:
            export.read_metadata(path)
        assert "\n" not in str(error.value)
