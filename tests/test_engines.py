"""Engines chosen by name (refinenet_tf.inference.engines): the same labels as the keras engine on every engine, multi-task
models on every engine, clear one-line errors, and the engine an exported file is read by."""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import cli, export, inference
from refinenet_tf.inference import engines
from refinenet_tf.inference.engines import keras_engine

ALL_ENGINES = tuple(engines.ENGINES)
IMAGES = np.random.default_rng(0).integers(0, 256, (2, 33, 47, 3), dtype=np.uint8)


def _segmentation_model(classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input([None, None, 3])
    x = keras.layers.Rescaling(1 / 127.5, -1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    logits = keras.layers.Conv2D(classes, 3, padding="same")(x)
    return keras.Model(inputs, logits, name="tiny_segmenter")


def _multitask_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input([None, None, 3])
    x = keras.layers.Rescaling(1 / 127.5, -1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, {"segmentation": keras.layers.Conv2D(4, 1, name="segmentation")(x),
                                "depth": keras.layers.Conv2D(1, 1, activation="softplus", name="depth")(x)},
                       name="tiny_multitask")


def _assert_same_labels(labels, reference):
    """Labels equal the keras float32 engine's wherever its two best classes are not (nearly) tied."""
    top2 = np.sort(reference["probabilities"], axis=-1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 1e-4
    assert decided.mean() > 0.9
    np.testing.assert_array_equal(labels[decided], reference["labels"][decided])


@pytest.fixture(scope="module")
def segmenter():
    return _segmentation_model()


@pytest.mark.parametrize("name", ALL_ENGINES)
def test_every_engine_gives_the_keras_float32_labels(segmenter, name):
    reference = engines.make_engine("keras", segmenter)(IMAGES)
    engine = engines.make_engine(name, segmenter)
    result = engine(IMAGES)
    assert engine.name == name and engine.outputs == ("probabilities",) and engine.num_classes == 3
    assert result["labels"].dtype == np.int32 and result["labels"].shape == (2, 33, 47)
    assert result["probabilities"].dtype == np.float32 and result["probabilities"].shape == (2, 33, 47, 3)
    _assert_same_labels(result["labels"], reference)
    np.testing.assert_allclose(result["probabilities"], reference["probabilities"], atol=1e-4)
    # any other size runs on the same engine, without a new conversion
    other = np.random.default_rng(1).integers(0, 256, (1, 20, 29, 3), dtype=np.uint8)
    _assert_same_labels(engine(other)["labels"], engines.make_engine("keras", segmenter)(other))


@pytest.mark.parametrize("name", ALL_ENGINES)
def test_a_multitask_model_runs_on_every_engine(name):
    model = _multitask_model()
    reference = engines.make_engine("keras", model)(IMAGES)
    engine = engines.make_engine(name, model)
    result = engine(IMAGES)
    assert engine.outputs == ("probabilities", "depth") and engine.num_classes == 4
    assert sorted(result) == ["depth", "labels", "probabilities"] and result["depth"].shape == (2, 33, 47)
    _assert_same_labels(result["labels"], reference)
    np.testing.assert_allclose(result["depth"], reference["depth"], rtol=1e-4, atol=1e-5)
    # predict runs every head through the same engines
    single = inference.predict(engine, IMAGES[0])
    np.testing.assert_array_equal(single.labels, result["labels"][0])
    np.testing.assert_allclose(single.depth, result["depth"][0], rtol=1e-5)


def test_the_keras_engine_is_the_model_under_one_traced_function(segmenter):
    # the same result on every call and any size, one trace for all of them, and training reaches it
    model = _segmentation_model(seed=3)
    first = inference.predict(model, IMAGES[0], return_probabilities=True)
    for shape in ((17, 9, 3), (40, 61, 3), (33, 47, 3)):
        inference.predict(model, np.zeros(shape, np.uint8))
    again = inference.predict(model, IMAGES[0], return_probabilities=True)
    np.testing.assert_array_equal(first.probabilities, again.probabilities)
    assert keras_engine._traced(model, (1.0,), False, None).experimental_get_tracing_count() == 1
    model.layers[-1].bias.assign(model.layers[-1].bias + np.array([0.0, 0.0, 100.0], np.float32))
    assert np.all(inference.predict(model, IMAGES[0]).labels == 2)  # no cache keyed on the weights: the new weights run


def test_a_converting_engine_is_made_once_per_model_and_settings(segmenter):
    first = inference.engine_for(segmenter, "tflite")
    assert inference.engine_for(segmenter, "tflite") is first
    assert inference.engine_for(segmenter, "tflite", flip=True) is not first
    # an engine passed in is used as it is; other settings than its own are refused
    assert inference.engine_for(first) is first
    np.testing.assert_array_equal(inference.predict(first, IMAGES[0]).labels, first(IMAGES[:1])["labels"][0])
    with pytest.raises(ValueError, match="its own scales"):
        inference.predict(first, IMAGES[0], flip=True)


def test_unknown_engine_and_missing_extra_are_one_line(segmenter, monkeypatch):
    with pytest.raises(ValueError, match=r"^engine='tensorrt' is not one of \('keras', 'saved_model'"):
        engines.make_engine("tensorrt", segmenter)
    real_import = engines.importlib.import_module

    def without_openvino(name, *args):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args)

    monkeypatch.setattr(engines.importlib, "import_module", without_openvino)
    with pytest.raises(ImportError) as error:
        engines.make_engine("openvino", segmenter)
    assert str(error.value) == "engine='openvino' needs the openvino package: pip install 'refinenet_tf[openvino]'"
    with pytest.raises(ValueError, match=r"^precision='float16' must be one of \('float32', 'bfloat16'\)"):
        engines.make_engine("keras", segmenter, precision="float16")
    with pytest.raises(TypeError, match="engine='keras' runs a keras.Model"):
        engines.make_engine("keras", "model.tflite")


@pytest.mark.parametrize("name", ["tflite", "onnxruntime"])
def test_engines_without_bfloat16_refuse_it(segmenter, name):
    with pytest.raises(ValueError, match=rf"^engine='{name}' runs float32 only; precision='bfloat16' needs"):
        engines.make_engine(name, segmenter, precision="bfloat16")


def test_bfloat16_on_a_cpu_without_it_warns_once_and_runs(segmenter, monkeypatch):
    monkeypatch.setattr(engines, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    with pytest.warns(RuntimeWarning, match="no native bfloat16 .* emulated"):
        engine = engines.make_engine("keras", segmenter, precision="bfloat16")
    assert engine.model is not segmenter and engine.model.layers[2].compute_dtype == "bfloat16"
    assert engine.model.layers[2].variable_dtype == "float32"
    reference = engines.make_engine("keras", segmenter)(IMAGES)
    result = engine(IMAGES)
    assert result["probabilities"].dtype == np.float32
    assert np.mean(result["labels"] == reference["labels"]) > 0.9  # bfloat16 rounding moves a few near-ties


def test_a_gpu_machine_gets_nothing_cpu_specific(segmenter, monkeypatch):
    # with a GPU visible: the default engine is the keras model itself, and bfloat16 runs without a CPU warning
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind in (None, "GPU") else [])
    monkeypatch.setattr(engines, "_cpu_flags", lambda: frozenset())
    engine = inference.engine_for(segmenter)
    assert type(engine) is keras_engine.KerasEngine and engine.model is segmenter
    assert engines.native_bfloat16()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bfloat16 = engines.make_engine("keras", segmenter, precision="bfloat16")
    assert bfloat16.precision == "bfloat16" and bfloat16.model.layers[2].compute_dtype == "bfloat16"


def test_the_engine_for_an_exported_file(segmenter, tmp_path):
    saved = export.export_saved_model(segmenter, str(tmp_path / "saved"))
    tflite = export.export_tflite(segmenter, str(tmp_path / "model.tflite"), input_size=None)
    segmenter.save(str(tmp_path / "keras_saved"), save_format="tf")  # a Keras SavedModel is not an export
    assert engines.engine_for_path(saved) == "saved_model"
    assert engines.engine_for_path(tflite) == "tflite"
    assert engines.engine_for_path("any/model.onnx") == "onnxruntime"
    assert engines.engine_for_path("any/model.xml") == "openvino"
    for other in (str(tmp_path / "keras_saved"), "model.keras", str(tmp_path)):
        with pytest.raises(ValueError, match="is not an exported model this package can run"):
            engines.engine_for_path(other)
    reference = inference.predict(segmenter, IMAGES[0]).labels
    for path in (saved, tflite):
        engine = inference.engine_for(path)
        assert engine.name == engines.engine_for_path(path) and engine.metadata["class_names"][:1] == ["class_0"]
        np.testing.assert_array_equal(inference.predict(path, IMAGES[0]).labels, reference)
    with pytest.raises(ValueError, match="the export has its augmentation built in"):
        inference.engine_for(tflite, flip=True)
    with pytest.raises(ValueError, match="runs an exported folder as it was exported"):
        inference.engine_for(saved, precision="bfloat16")


def test_cli_predict_runs_an_exported_model_and_a_chosen_engine(segmenter, tmp_path, capsys):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    from refinenet_tf.data import visualization

    visualization.save_image_png(str(image_dir / "scene.png"), IMAGES[0])
    tflite = export.export_tflite(segmenter, str(tmp_path / "model.tflite"), input_size=None)
    assert cli.main(["predict", "--model", tflite, "--output", str(tmp_path / "out"), str(image_dir),
                     "--no-progress"]) == 0
    assert "wrote label PNGs and overlays of 1 image(s)" in capsys.readouterr().out
    from PIL import Image

    labels = np.array(Image.open(tmp_path / "out" / "scene.png"))
    np.testing.assert_array_equal(labels, inference.predict(segmenter, IMAGES[0]).labels)
    keras_file = str(tmp_path / "model.keras")
    segmenter.save(keras_file)
    assert cli.main(["predict", "--model", keras_file, "--engine", "tflite", "--precision", "bfloat16",
                     "--output", str(tmp_path / "out2"), str(image_dir), "--no-progress"]) == 2
    assert "--engine 'tflite' runs float32 only; --precision 'bfloat16' needs" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out2" / "scene.png")
