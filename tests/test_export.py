"""Export: a SavedModel that runs in a fresh process with only TensorFlow, TFLite and ONNX parity, atomic writes."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import cli, export, inference, models, options, training
from refinenet_tf.export import exporters
from refinenet_tf.models import outputs as model_outputs
from refinenet_tf.training import recipes
from refinenet_tf.data import synthetic

_COLORS = np.array([[90, 90, 90], [200, 40, 40], [40, 190, 60], [50, 70, 210]])


def _scenes(rng, count, height, width):
    """Noisy rectangles whose colour gives the class (0 is the grey background): learnt in seconds."""
    images, masks = [], []
    for _ in range(count):
        mask = np.zeros((height, width), np.uint8)
        for label in rng.permutation([1, 2, 3]):
            top, left = rng.integers(0, height - 12), rng.integers(0, width - 12)
            mask[top:top + rng.integers(10, 30), left:left + rng.integers(10, 30)] = label
        images.append(np.clip(_COLORS[mask] + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8))
        masks.append(mask)
    return images, masks


@pytest.fixture(scope="module")
def trained():
    """A Light-Weight RefineNet on the tiny backbone, trained for ~15 s, and held-out scenes of odd sizes.

    Its decoder is 128 wide (half the default): it trains in half the time and learns these scenes better (held-out
    mean IoU 0.61 against 0.57 at 256 wide, measured); its weights stay large enough for int8 quantization."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images, masks = _scenes(rng, 64, 64, 64)
    model = models.RefineNet(num_classes=4, backbone="tiny_test_backbone", backbone_weights=None,
                             variant="light_weight", batch_norm_momentum=0.5, decoder_features=128)
    training.compile_model(model, recipes.Recipe("test", "lw_resnet50", "", optimizer="adam", learning_rate=3e-3),
                           4)
    model.fit(np.stack(images).astype(np.float32), np.stack(masks).astype(np.int32), batch_size=8, epochs=10,
              verbose=0)
    val_images, val_masks = _scenes(rng, 6, 48, 56)
    return model, val_images, val_masks


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The trained model's SavedModel export (with the shapes' class names), written once for the tests that
    only read it."""
    return export.export_saved_model(trained[0], tmp_path_factory.mktemp("exported") / "saved",
                                     class_names=synthetic.SHAPE_CLASSES)


def _two_layer_segmenter(num_classes=3, name="two_layer_segmenter"):
    """A segmentation model of two convolutions (uint8 or float RGB in, logits out), for the tests of how an
    export is written (atomic files, metadata, refusals), which do not depend on the model: each format exports it
    in well under a second, a RefineNet in seconds (TensorFlow serializes every Keras layer of the model). Its
    3x3 convolution has 16 x 32 x 9 weights, more than the 1024 below which TFLite leaves a tensor unquantized."""
    images = keras.Input([None, None, 3])
    features = keras.layers.Rescaling(1 / 255)(images)
    features = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(features)
    features = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(features)
    return keras.Model(images, keras.layers.Conv2D(num_classes, 1)(features), name=name)


def _mean_iou(predictions, masks, num_classes=4):
    metric = keras.metrics.MeanIoU(num_classes, ignore_class=255)
    for predicted, mask in zip(predictions, masks):
        metric.update_state(mask, predicted)
    return float(metric.result())


def test_saved_model_runs_in_a_fresh_process_with_only_tensorflow(run_fresh, trained, exported, tmp_path, voc_dir):
    model, images, _ = trained
    path = exported  # export.export_saved_model(model, ..., class_names=synthetic.SHAPE_CLASSES)
    jpegs = sorted(glob.glob(os.path.join(voc_dir, "JPEGImages", "*.jpg")))[:2]
    decoded = [tf.io.decode_jpeg(open(name, "rb").read()).numpy() for name in jpegs]  # TF's decoder, as served
    inputs = [images[0], images[1][:37, :47]] + decoded
    expected = inference.predict(model, inputs, return_probabilities=True)
    np.savez(tmp_path / "expected.npz", *[array for result in expected for array in (result.labels, result.probabilities)])
    np.savez(tmp_path / "inputs.npz", *inputs)
    output = run_fresh(f"""
        serving = tf.saved_model.load({path!r})
        inputs = list(np.load({str(tmp_path / "inputs.npz")!r}).values())
        expected = list(np.load({str(tmp_path / "expected.npz")!r}).values())
        serve = serving.signatures["serving_default"]
        for index, image in enumerate(inputs):
            result = serve(images=tf.constant(image[None]))
            assert result["labels"].dtype == tf.int32 and result["probabilities"].dtype == tf.float32
            assert result["labels"].shape == (1,) + image.shape[:2], result["labels"].shape
            np.testing.assert_array_equal(result["labels"][0].numpy(), expected[2 * index])
            np.testing.assert_allclose(result["probabilities"][0].numpy(), expected[2 * index + 1], atol=1e-5)
        batch = serve(images=tf.constant(np.stack([inputs[0], inputs[0]])))["labels"].numpy()
        np.testing.assert_array_equal(batch[1], expected[0])
        # encoded bytes of different sizes in one call: padded outputs and the sizes
        encoded = [open(name, "rb").read() for name in {jpegs!r}] + [tf.io.encode_png(inputs[1]).numpy()]
        result = serving.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
        sizes = result["image_sizes"].numpy().tolist()
        assert sizes == [list(inputs[2].shape[:2]), list(inputs[3].shape[:2]), [37, 47]], sizes
        for index, (height, width) in enumerate(sizes):
            labels = result["labels"][index].numpy()
            np.testing.assert_array_equal(labels[:height, :width], expected[2 * [2, 3, 1][index]])
            assert (labels[height:] == -1).all() and (labels[:, width:] == -1).all()
        # inputs the signature cannot take fail with a message saying what it expects
        for bad in (np.zeros((1, 8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.uint8), np.zeros((1, 0, 8, 3), np.uint8)):
            try:
                serve(images=tf.constant(bad))
            except tf.errors.InvalidArgumentError as error:
                assert "serving_default expects images: uint8 RGB [batch, height, width, 3]" in error.message
            else:
                raise AssertionError(f"{{bad.shape}} was accepted")
        try:
            serve(images=tf.zeros([1, 8, 8, 3], tf.float32))
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            assert "uint8" in str(error), error
        else:
            raise AssertionError("float32 images were accepted")
        metadata = json.load(open(os.path.join({path!r}, "refinenet_tf.json")))
        assert metadata["weights"] == "variables" and serving.trainable_weights
        print(metadata["class_names"], "refinenet_tf" in [m for m in sys.modules if sys.modules[m] is not None])
    """)
    assert output.strip().splitlines()[-1] == "['background', 'disc', 'rectangle', 'triangle'] False"


def test_a_saved_model_that_keeps_its_variables_loads_and_fine_tunes(trained, exported):
    model, images, _ = trained
    path = exported  # export.export_saved_model(model, ...); the steps below change the loaded copy only
    assert json.load(open(os.path.join(path, "refinenet_tf.json")))["weights"] == "variables"
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    assert len(loaded.trainable_weights) == len(model.trainable_weights)
    image = tf.constant(images[0][None])
    before = serve(images=image)["probabilities"].numpy()
    np.testing.assert_allclose(before[0], inference.predict(model, images[0], return_probabilities=True).probabilities,
                               atol=1e-5)
    # One gradient step on the loaded weights (cross-entropy against class 0) changes what the export predicts.
    with tf.GradientTape() as tape:
        probabilities = serve(images=image)["probabilities"]
        loss = -tf.reduce_mean(tf.math.log(probabilities[..., 0] + 1e-7))
    gradients = tape.gradient(loss, loaded.trainable_weights)
    assert sum(gradient is not None for gradient in gradients) == len(gradients)
    keras.optimizers.SGD(0.1).apply_gradients(zip(gradients, loaded.trainable_weights))
    after = serve(images=image)["probabilities"].numpy()
    assert np.abs(after - before).max() > 1e-3 and after[..., 0].mean() > before[..., 0].mean()


def test_saved_model_with_test_time_augmentation_matches_predict(trained, tmp_path):
    model, images, _ = trained
    path = export.export_saved_model(model, tmp_path / "tta", scales=(0.75, 1.25), flip=True)
    expected = inference.predict(model, images[0], scales=(0.75, 1.25), flip=True).labels
    labels = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images[0][None]))["labels"]
    np.testing.assert_array_equal(labels[0].numpy(), expected)
    assert json.load(open(os.path.join(path, "refinenet_tf.json")))["scales"] == [0.75, 1.25]


def test_export_never_leaves_a_partial_model_and_overwrites_only_when_asked(tmp_path, monkeypatch):
    model = _two_layer_segmenter()
    target = tmp_path / "saved"
    export.export_saved_model(model, target)
    before = sorted(os.listdir(target))
    saved_graph = (target / "saved_model.pb").read_bytes()
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        export.export_saved_model(model, target)

    real_save = tf.saved_model.save

    def save_then_die(obj, folder, **kwargs):
        real_save(obj, folder, **kwargs)
        open(os.path.join(folder, "saved_model.pb"), "wb").close()  # as if killed while writing
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(model, target, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(model, tmp_path / "new")
    monkeypatch.undo()
    assert sorted(os.listdir(target)) == before
    assert (target / "saved_model.pb").read_bytes() == saved_graph, "the first export is kept byte for byte"
    assert sorted(os.listdir(tmp_path)) == ["saved"], "no partial or temporary folders left"
    export.export_saved_model(model, target, overwrite=True, source="second")
    assert json.load(open(target / "refinenet_tf.json"))["source"] == "second"
    assert sorted(os.listdir(tmp_path)) == ["saved"]


def _tflite_predict(path, images):
    runner = export.tflite_interpreter(path).get_signature_runner("serving_default")
    results = [runner(images=image[None]) for image in images]
    return [r["labels"][0] for r in results], [r["probabilities"][0] for r in results]


def test_tflite_float32_float16_int8_parity_with_the_keras_model(trained, tmp_path):
    model, images, masks = trained
    results = inference.predict(model, images, return_probabilities=True)
    expected, expected_probabilities = [r.labels for r in results], [r.probabilities for r in results]
    reference_iou = _mean_iou(expected, masks)
    assert reference_iou > 0.45, f"the fixture model did not learn (mIoU {reference_iou:.3f})"
    report = {}
    for quantization in options.QUANTIZATIONS:
        path = export.export_tflite(model, tmp_path / f"{quantization}.tflite", quantization=quantization,
                                    input_size=None)
        labels, probabilities = _tflite_predict(path, images)
        agreement = np.mean([np.mean(a == b) for a, b in zip(labels, expected)])
        report[quantization] = (agreement, _mean_iou(labels, masks),
                                max(np.abs(p - q).max() for p, q in zip(probabilities, expected_probabilities)))
    agreement, iou, difference = report["float32"]
    assert agreement == 1.0 and difference < 1e-4, report
    agreement, iou, difference = report["float16"]
    assert agreement > 0.999 and abs(iou - reference_iou) < 0.005, report
    # int8 dynamic-range quantization: the stated tolerance (README) is 98 % agreement and 0.02 mIoU
    agreement, iou, difference = report["int8"]
    assert agreement > 0.98 and abs(iou - reference_iou) < 0.02, report
    assert os.path.getsize(tmp_path / "int8.tflite") < 0.5 * os.path.getsize(tmp_path / "float32.tflite")


def test_tflite_with_a_fixed_input_size_and_bad_paths(trained, tmp_path):
    model, images, _ = trained
    path = export.export_tflite(model, tmp_path / "fixed.tflite", input_size=(48, 40))
    image = np.ascontiguousarray(images[0][:48, :40])
    labels, _ = _tflite_predict(path, [image])
    np.testing.assert_array_equal(labels[0], inference.predict(model, image).labels)
    with pytest.raises(ValueError, match="must end with .tflite"):
        export.export_tflite(model, tmp_path / "model.bin")
    with pytest.raises(ValueError, match="quantization='int4' is not one of"):
        export.export_tflite(model, tmp_path / "x.tflite", quantization="int4")


@pytest.mark.parametrize("preset", ["lw_mobilenetv2", "lw_resnet50"])
def test_tflite_of_the_real_light_weight_presets(preset, tmp_path):
    model = models.build(preset, num_classes=21, backbone_weights=None)
    image = np.random.default_rng(0).integers(0, 256, (67, 45, 3)).astype(np.uint8)
    # The Keras model's probabilities and labels as inference.predict gives them (segment, then the argmax), run
    # eagerly: inference.predict would trace the whole network into a new function for this one image (seconds
    # for each preset on 2 cores).
    expected_probabilities = model_outputs.segment(model, image[None])[0].numpy()
    expected = expected_probabilities.argmax(-1)
    path = export.export_tflite(model, tmp_path / "model.tflite", input_size=None)
    labels, probabilities = _tflite_predict(path, [image])
    # TFLite's float32 kernels (XNNPACK) and TensorFlow's (oneDNN) sum in different orders: on an AVX-512 / AMX
    # machine the random-weight presets' probabilities differed by up to 1.5e-4.
    np.testing.assert_allclose(probabilities[0], expected_probabilities, atol=5e-4)
    assert np.mean(labels[0] == expected) > 0.999


def test_onnx_parity(trained, tmp_path):
    import onnxruntime  # the onnx extra, part of the dev extra
    model, images, _ = trained
    path = export.export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for image in (images[0], np.ascontiguousarray(images[1][:37, :47])):
        labels, probabilities = session.run(["labels", "probabilities"], {"images": image[None]})
        result = inference.predict(model, image, return_probabilities=True)
        expected, expected_probabilities = result.labels, result.probabilities
        np.testing.assert_allclose(probabilities[0], expected_probabilities, atol=1e-4)
        assert np.mean(labels[0] == expected) > 0.999


def test_cli_export_formats_and_refusals(tmp_path, capsys):
    model_file = str(tmp_path / "model.keras")
    _two_layer_segmenter().save(model_file)
    saved = str(tmp_path / "saved")
    assert cli.main(["export", "--model", model_file, "--output", saved]) == 0
    assert "exported" in capsys.readouterr().out and os.path.exists(os.path.join(saved, "saved_model.pb"))
    assert cli.main(["export", "--model", model_file, "--output", saved]) == 2
    error = capsys.readouterr().err.strip()
    assert "already exists" in error and "--overwrite" in error and "\n" not in error
    assert cli.main(["export", "--model", model_file, "--output", str(tmp_path / "m.tflite"), "--format", "tflite",
                     "--quantization", "int8", "--input-size", "64x64"]) == 0
    interpreter = export.tflite_interpreter(str(tmp_path / "m.tflite"))
    assert interpreter.get_input_details()[0]["shape"].tolist() == [1, 64, 64, 3]
    weight_types = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.int8 in weight_types, "int8 quantization stores int8 weights"
    assert cli.main(["export", "--model", model_file, "--output", str(tmp_path / "m.bin"), "--format",
                     "tflite"]) == 2
    assert "ending with .tflite" in capsys.readouterr().err
    assert cli.main(["export", "--model", str(tmp_path / "missing.keras"), "--output", str(tmp_path / "x")]) == 2
    assert "missing.keras" in capsys.readouterr().err


def test_every_format_carries_the_same_metadata(tmp_path):
    model = _two_layer_segmenter()
    names = ["sky", "road", "car"]
    paths = [export.export_saved_model(model, tmp_path / "saved", class_names=names, source="s"),
             export.export_tflite(model, tmp_path / "m.tflite", input_size=None, class_names=names, source="s"),
             export.export_onnx(model, tmp_path / "m.onnx", class_names=names, source="s"),
             export.export_openvino(model, tmp_path / "m.xml", class_names=names, source="s")]
    common = {"class_names": names, "num_classes": 3, "palette": [[0, 0, 0], [128, 0, 0], [0, 128, 0]],
              "preprocessing": exporters.PREPROCESSING, "source": "s", "scales": [1.0], "flip": False, "max_side": None,
              "model": model.name}
    for path in paths:
        metadata = export.read_metadata(path)
        assert {key: metadata.get(key) for key in common} == common, path
    assert sorted(os.listdir(tmp_path)) == ["m.bin", "m.onnx", "m.tflite", "m.tflite.json", "m.xml", "saved"]


def test_openvino_export_is_atomic_and_overwrites_only_when_asked(tmp_path, monkeypatch):
    import openvino

    model = _two_layer_segmenter()
    target = tmp_path / "model.xml"
    export.export_openvino(model, target, source="first")
    before = {name: (tmp_path / name).read_bytes() for name in ("model.xml", "model.bin")}
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        export.export_openvino(model, target)

    def save_then_die(converted, path, **kwargs):
        open(path, "w").close()  # as if killed while writing
        raise KeyboardInterrupt

    monkeypatch.setattr(openvino, "save_model", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        export.export_openvino(model, target, overwrite=True)
    monkeypatch.undo()
    assert {name: (tmp_path / name).read_bytes() for name in before} == before, "the first export is kept whole"
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "model.xml"], "no temporary files left"
    export.export_openvino(model, target, overwrite=True, source="second")
    assert export.read_metadata(target)["source"] == "second"


def test_cli_exports_openvino(tmp_path, capsys):
    # how the CLI writes and refuses an OpenVINO export does not depend on the model (see _two_layer_segmenter);
    # a RefineNet's conversion to OpenVINO, flip included, is tested in tests/test_openvino.py
    model_file = str(tmp_path / "model.keras")
    _two_layer_segmenter().save(model_file)
    output = str(tmp_path / "model.xml")
    assert cli.main(["export", "--model", model_file, "--output", output, "--format", "openvino", "--flip"]) == 0
    assert "(openvino)" in capsys.readouterr().out
    metadata = export.read_metadata(output)
    assert metadata["flip"] is True and metadata["source"] == model_file and os.path.exists(tmp_path / "model.bin")
    assert cli.main(["export", "--model", model_file, "--output", str(tmp_path / "m.bin"), "--format",
                     "openvino"]) == 2
    assert "ending with .xml" in capsys.readouterr().err
    assert cli.main(["export", "--model", model_file, "--output", str(tmp_path / "m.tflite"), "--format", "tflite",
                     "--max-side", "64"]) == 2
    assert "--max-side is not built into a TFLite model" in capsys.readouterr().err
