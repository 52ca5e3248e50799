"""Prediction and evaluation: hand-computed IoU, test-time augmentation, palette PNGs, the CLI."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

from refinenet_tf import cli, inference, models
from refinenet_tf.inference import evaluation
from refinenet_tf.models import outputs as model_outputs
from refinenet_tf.training import runs
from refinenet_tf.data import visualization
from tests.conftest import TINY_BACKBONE

# --------------------------------------------------------------------------------------- a model we can reason about


def _red_channel_classifier(num_classes=3):
    """Logits ``c * k - c**2 / 2`` for red = ``50 * k``: the predicted class is the red value / 50, exactly."""
    images = keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(num_classes, 1, name="classify")(images)
    model = keras.Model(images, logits)
    kernel = np.zeros((1, 1, 3, num_classes), np.float32)
    kernel[0, 0, 0, :] = np.arange(num_classes) / 50.0
    model.get_layer("classify").set_weights([kernel, -np.arange(num_classes) ** 2 / 2.0])
    return model


def _write_pair(folder, name, predicted, truth):
    os.makedirs(folder / "images", exist_ok=True)
    os.makedirs(folder / "masks", exist_ok=True)
    image = np.zeros(predicted.shape + (3,), np.uint8)
    image[..., 0] = 50 * predicted
    Image.fromarray(image).save(folder / "images" / f"{name}.png")
    Image.fromarray(truth.astype(np.uint8), mode="L").save(folder / "masks" / f"{name}.png")


def test_evaluate_matches_hand_computed_iou_with_ignored_pixels(tmp_path):
    truth = np.array([[0, 0, 1], [1, 1, 255], [2, 2, 2]])
    predicted = np.array([[0, 1, 1], [1, 0, 2], [2, 2, 0]])  # the 255 pixel is predicted 2: it must not count
    _write_pair(tmp_path, "a", predicted, truth)
    result = evaluation.evaluate(_red_channel_classifier(), f"folder:{tmp_path}/images:{tmp_path}/masks?num_classes=3",
                                 class_names=("bg", "one", "two"), progress=False)
    # rows: truth, columns: prediction; 8 valid pixels
    np.testing.assert_array_equal(result.confusion, [[1, 1, 0], [1, 2, 0], [1, 0, 2]])
    # IoU = TP / (TP + FP + FN): 1/(2+3-1), 2/(3+3-2), 2/(3+2-2)
    np.testing.assert_allclose(result.iou, [1 / 4, 2 / 4, 2 / 3])
    assert result.mean_iou == pytest.approx((1 / 4 + 2 / 4 + 2 / 3) / 3)
    assert result.pixel_accuracy == pytest.approx(5 / 8)
    np.testing.assert_allclose(result.class_accuracy, [1 / 2, 2 / 3, 2 / 3])
    # Keras' MeanIoU on the same pixels agrees
    keras_iou = keras.metrics.MeanIoU(3, ignore_class=255)
    keras_iou.update_state(truth, predicted)
    assert result.mean_iou == pytest.approx(float(keras_iou.result()))


def test_a_class_that_is_absent_and_never_predicted_is_left_out_of_the_mean(tmp_path):
    truth = np.array([[0, 0, 0], [1, 1, 1], [255, 255, 255]])
    _write_pair(tmp_path, "a", truth.clip(0, 1), truth)  # perfect on classes 0 and 1; class 2 absent everywhere
    result = evaluation.evaluate(_red_channel_classifier(), f"folder:{tmp_path}/images:{tmp_path}/masks?num_classes=3",
                                 progress=False)
    assert result.iou[:2].tolist() == [1.0, 1.0] and np.isnan(result.iou[2])
    assert result.mean_iou == 1.0 and result.pixels == 6
    assert result.class_names == ("class_0", "class_1", "class_2")
    assert "| class_2 | - | - | 0 |" in result.table()


def test_evaluation_files_are_written_and_readable(tmp_path):
    result = evaluation.Evaluation(np.array([[3, 1], [0, 4]]), ("background", "cat"), source="x")
    npy, csv, metrics = result.save(tmp_path / "out")
    np.testing.assert_array_equal(np.load(npy), [[3, 1], [0, 4]])
    assert open(csv).read().splitlines() == ["true \\ predicted,background,cat", "background,3,1", "cat,0,4"]
    scores = json.load(open(metrics))
    assert scores["mean_iou"] == 0.775 and scores["iou"] == {"background": 0.75, "cat": 0.8}
    assert sorted(os.listdir(tmp_path / "out")) == ["confusion_matrix.csv", "confusion_matrix.npy", "metrics.json"]


def test_evaluate_refuses_a_class_count_or_masks_that_do_not_fit_the_model(voc_dir):
    with pytest.raises(ValueError, match="predicts 3 classes, not num_classes=21"):
        evaluation.evaluate(_red_channel_classifier(3), f"voc:{voc_dir}", "val", num_classes=21,
                            progress=False)
    # VOC masks hold classes up to 20: a 3-class model's evaluation stops at the first such mask, naming it
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"SegmentationClass/\w+\.png.*outside"):
        evaluation.evaluate(_red_channel_classifier(3), f"voc:{voc_dir}", "val", progress=False)


# --------------------------------------------------------------------------------------- test-time augmentation


def _conv_model(kernel):
    images = keras.Input((None, None, 3))
    model = keras.Model(images, keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], padding="same",
                                                    use_bias=False, name="conv")(images))
    model.get_layer("conv").set_weights([kernel])
    return model


def test_flip_averaging_is_a_no_op_for_a_mirror_symmetric_model():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype(np.float32) / 100
    kernel = (kernel + kernel[:, ::-1]) / 2  # symmetric left-right: the model commutes with flips
    model = _conv_model(kernel)
    image = np.random.default_rng(1).integers(0, 256, (1, 9, 14, 3)).astype(np.uint8)
    plain = model_outputs.segment(model, image).numpy()
    np.testing.assert_allclose(model_outputs.segment(model, image, flip=True).numpy(), plain, atol=1e-6)


def test_flip_averaging_equals_the_mean_of_the_two_views_and_is_flip_equivariant():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype(np.float32) / 100
    kernel[:, 0] *= 3  # not symmetric: flipping changes the output
    model = _conv_model(kernel)
    image = np.random.default_rng(1).integers(0, 256, (1, 9, 14, 3)).astype(np.uint8)
    plain = tf.nn.softmax(model(image.astype(np.float32))).numpy()
    mirrored = tf.nn.softmax(model(image[:, :, ::-1].astype(np.float32))).numpy()[:, :, ::-1]
    assert np.abs(plain - mirrored).max() > 1e-3
    averaged = model_outputs.segment(model, image, flip=True).numpy()
    np.testing.assert_allclose(averaged, (plain + mirrored) / 2, atol=1e-6)
    np.testing.assert_allclose(model_outputs.segment(model, image[:, :, ::-1], flip=True).numpy()[:, :, ::-1], averaged,
                               atol=1e-6)


def test_multi_scale_averages_views_resized_back_to_the_input_size():
    model = _conv_model(np.random.default_rng(0).normal(size=(3, 3, 3, 2)).astype(np.float32) / 100)
    image = np.random.default_rng(1).integers(0, 256, (1, 10, 15, 3)).astype(np.float32)
    views = []
    for scale, size in ((0.5, (5, 8)), (1.5, (15, 22))):  # round(10 * s), round(15 * s)
        logits = model(tf.image.resize(image, size))
        views.append(tf.nn.softmax(tf.image.resize(logits, (10, 15))).numpy())
    result = model_outputs.segment(model, image, scales=(0.5, 1.5)).numpy()
    np.testing.assert_allclose(result, np.mean(views, axis=0), atol=1e-6)
    assert result.shape == (1, 10, 15, 2)


@pytest.mark.parametrize("upsample_logits", [True, False])
def test_segment_equals_softmax_of_the_resized_logits_traced_or_not(tiny_backbone, upsample_logits):
    # the resize to the input size is skipped where the logits already have it (resize_bilinear): the
    # probabilities must stay those of tf.image.resize (up to the model's own float rounding between an eager
    # and a traced call), eagerly and traced without a known size
    model = models.RefineNet(num_classes=4, backbone=tiny_backbone, backbone_weights=None, variant="light_weight",
                             upsample_logits=upsample_logits)
    images = tf.random.stateless_uniform([2, 36, 52, 3], seed=[3, 4], minval=0, maxval=255)
    logits = model(images, training=False)
    assert (tuple(logits.shape[1:3]) == (36, 52)) == upsample_logits
    expected = tf.nn.softmax(tf.image.resize(logits, [36, 52], method="bilinear")).numpy()
    traced = tf.function(lambda batch: model_outputs.segment(model, batch),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    np.testing.assert_allclose(model_outputs.segment(model, images).numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(traced(images).numpy(), expected, rtol=0, atol=1e-6)
    # the skip itself: decided when tracing where both sizes are known, by a tf.cond where they are not
    assert (model_outputs._resize_to(logits, [36, 52]) is logits) == upsample_logits
    ops = {op.type for op in traced.get_concrete_function().graph.get_operations()}
    assert ops & {"If", "StatelessIf"}


def test_max_side_bounds_the_model_input_and_keeps_the_output_size():
    seen = []

    class Spy(keras.layers.Layer):
        def call(self, inputs):
            seen.append(inputs.shape)
            return inputs[..., :2]

    images = keras.Input((None, None, 3))
    model = keras.Model(images, Spy()(images))
    result = model_outputs.segment(model, np.zeros((1, 300, 120, 3), np.uint8), max_side=100)
    assert tuple(seen[-1][1:3]) == (100, 40) and result.shape == (1, 300, 120, 2)


@pytest.mark.parametrize("scales", [(), (0.0,), (-1.0,), (float("nan"),)])
def test_bad_scales_are_refused(scales):
    with pytest.raises(ValueError, match="scales must be positive"):
        model_outputs.segment(_red_channel_classifier(), np.zeros((1, 4, 4, 3), np.uint8), scales=scales)


def test_predict_returns_arrays_at_each_input_size(tiny_backbone):
    model = models.RefineNet(num_classes=5, backbone=tiny_backbone, backbone_weights=None, variant="light_weight",
                             decoder_features=8)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for h, w in ((33, 47), (64, 31), (1, 1))]
    results = inference.predict(model, images, scales=(0.75, 1.25), flip=True, return_probabilities=True)
    for image, result in zip(images, results):
        labels, probabilities = result.labels, result.probabilities
        assert labels.shape == image.shape[:2] and labels.dtype == np.int32
        assert probabilities.shape == image.shape[:2] + (5,)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(labels, probabilities.argmax(-1))
    single = inference.predict(model, images[0].astype(np.float32))
    np.testing.assert_array_equal(single.labels, inference.predict(model, [images[0]])[0].labels)
    with pytest.raises(ValueError, match=r"images\[0\]: expected an RGB image"):
        inference.predict(model, [np.zeros((5, 5))])


def test_the_default_path_holds_no_cache_on_weights_or_sizes_and_not_the_model(tiny_backbone):
    model = models.RefineNet(num_classes=3, backbone=tiny_backbone, backbone_weights=None, variant="light_weight",
                             decoder_features=8)
    image = np.random.default_rng(2).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    expected = inference.predict(model, image, return_probabilities=True)
    for _ in range(3):  # a serving loop: the same size, call after call, gives the same result exactly
        probabilities = inference.predict(model, image, return_probabilities=True).probabilities
        np.testing.assert_array_equal(probabilities, expected.probabilities)
    # new weights are what the next call runs
    model.set_weights([weight * 1.5 for weight in model.get_weights()])
    np.testing.assert_allclose(inference.predict(model, image, return_probabilities=True).probabilities,
                               model_outputs.segment(model, image[None])[0].numpy(), atol=1e-6)
    # The caches do not keep the model alive.
    import gc
    import weakref

    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None


# --------------------------------------------------------------------------------------- files and the CLI


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """A 21-class Light-Weight RefineNet on the tiny backbone with a narrow decoder, saved once for the module: the
    tests below only read the file (their outputs go to their own folders)."""
    keras.utils.set_random_seed(0)  # the same weights whichever test builds it
    model = models.RefineNet(num_classes=21, backbone=TINY_BACKBONE, backbone_weights=None, variant="light_weight",
                             decoder_features=8)
    path = str(tmp_path_factory.mktemp("tiny_model") / "tiny.keras")
    model.save(path)
    return path


def test_predict_files_writes_palette_pngs_at_each_input_size(tmp_path, voc_dir, tiny_model_file):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (33, 47, 3)).astype(np.uint8)).save(inputs / "odd.png")
    Image.fromarray(rng.integers(0, 256, (21, 17)).astype(np.uint8), mode="L").save(inputs / "gray.PNG")
    (inputs / "notes.txt").write_text("not an image")  # folders contribute image files only
    model = runs.load_inference_model(tiny_model_file)
    result = inference.predict_files(model, [str(inputs), os.path.join(voc_dir, "JPEGImages", "*.jpg")],
                                     tmp_path / "out", probabilities=True, progress=False)
    assert len(result["written"]) == 6 and not result["failed"]
    for source, label_path in result["written"].items():
        with Image.open(source) as image:
            size = image.size
        labels = Image.open(label_path)
        assert labels.mode == "P" and labels.size == size, source
        assert np.asarray(labels.getpalette()[:6]).tolist() == [0, 0, 0, 128, 0, 0]
        stem = label_path[:-len(".png")]
        assert Image.open(stem + "_overlay.png").size == size
        probabilities = np.load(stem + "_probabilities.npy")
        assert probabilities.shape == (size[1], size[0], 21) and probabilities.dtype == np.float32
        np.testing.assert_array_equal(np.asarray(labels), probabilities.argmax(-1))
    assert (tmp_path / "out" / "legend.png").exists()
    assert not [name for name in os.listdir(tmp_path / "out") if name.startswith(".tmp-")]


def test_predict_files_refuses_to_overwrite_inputs_or_write_one_name_twice(tmp_path, tiny_model_file):
    model = runs.load_inference_model(tiny_model_file)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="would overwrite the input"):
        inference.predict_files(model, [str(tmp_path / "a.png")], tmp_path, progress=False)
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b" / "a.jpg")
    with pytest.raises(ValueError, match="would both write a.png"):
        inference.predict_files(model, [str(tmp_path / "a.png"), str(tmp_path / "b")], tmp_path / "out",
                                progress=False)
    with pytest.raises(FileNotFoundError, match="matches no file"):
        inference.predict_files(model, [str(tmp_path / "*.bmp")], tmp_path / "out", progress=False)


def test_cli_predict_evaluate_on_voc_files(tmp_path, voc_dir, tiny_model_file, capsys):
    corrupt = tmp_path / "in" / "corrupt.jpg"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = sorted(glob.glob(os.path.join(voc_dir, "JPEGImages", "*.jpg")))[0]
    good_png = os.path.basename(good)[:-len(".jpg")] + ".png"
    argv = ["predict", "--model", tiny_model_file, "--output", str(tmp_path / "out"), "--no-progress",
            "--scales", "0.5", "1", "--flip", str(corrupt), good]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("refinenet-tf predict: error:") and "corrupt.jpg" in error and "\n" not in error
    assert cli.main(argv + ["--skip-errors"]) == 1
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "corrupt.jpg" in captured.err
    assert "of 1 image(s)" in captured.out and (tmp_path / "out" / good_png).exists()

    assert cli.main(["evaluate", "--model", tiny_model_file, "--data", f"voc:{voc_dir}", "--split", "val",
                     "--no-progress", "--output", str(tmp_path / "eval")]) == 0
    output = capsys.readouterr().out
    assert "| aeroplane |" in output and "| **mean** |" in output
    metrics = json.load(open(tmp_path / "eval" / "metrics.json"))
    assert metrics["pixels"] > 0
    # --engine saved_model runs the exported SavedModel: the same scores and the same label PNG.
    assert cli.main(["evaluate", "--model", tiny_model_file, "--data", f"voc:{voc_dir}", "--split", "val",
                     "--no-progress", "--engine", "saved_model", "--output", str(tmp_path / "eval_saved")]) == 0
    assert "(saved_model engine, float32)" in capsys.readouterr().out
    saved_metrics = json.load(open(tmp_path / "eval_saved" / "metrics.json"))
    assert saved_metrics["pixels"] == metrics["pixels"]
    assert saved_metrics["mean_iou"] == pytest.approx(metrics["mean_iou"], abs=1e-3)
    assert cli.main(["predict", "--model", tiny_model_file, "--output", str(tmp_path / "out_saved"),
                     "--no-progress", "--scales", "0.5", "1", "--flip", "--engine", "saved_model", good]) == 0
    assert (np.asarray(Image.open(tmp_path / "out_saved" / good_png))
            == np.asarray(Image.open(tmp_path / "out" / good_png))).mean() > 0.999
    assert cli.main(["evaluate", "--model", tiny_model_file, "--num-classes", "3", "--data",
                     f"voc:{voc_dir}"]) == 2
    assert "predicts 21 classes, not --num-classes 3" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_fit_names_the_file(tmp_path, tiny_backbone):
    other = models.RefineNet(num_classes=4, backbone=tiny_backbone, backbone_weights=None, variant="light_weight",
                             decoder_features=8)
    weights = str(tmp_path / "other.weights.h5")
    other.save_weights(weights)
    model = models.RefineNet(num_classes=21, backbone=tiny_backbone, backbone_weights=None, variant="light_weight",
                             decoder_features=8)
    with pytest.raises(ValueError, match="other.weights.h5.* do not fit model"):
        runs.load_weights_checked(model, weights)


def test_legend_and_palette_files(tmp_path):
    image = visualization.legend(["background", "cat", "dog"], classes=[0, 2])
    assert image.shape == (40, 200, 3) and tuple(image[10, 8]) == (0, 0, 0) and tuple(image[30, 8]) == (0, 128, 0)
    json_palette = tmp_path / "palette.json"
    json_palette.write_text("[[1, 2, 3], [4, 5, 6]]")
    palette = visualization.read_palette(json_palette)
    assert palette.shape == (256, 3) and palette[:2].tolist() == [[1, 2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(palette[2:], visualization.voc_palette()[2:])
    png = tmp_path / "mask.png"
    visualization.save_label_png(png, np.zeros((2, 2)), palette=palette)
    np.testing.assert_array_equal(visualization.read_palette(png), palette)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png' has no palette"):
        visualization.read_palette(tmp_path / "rgb.png")
