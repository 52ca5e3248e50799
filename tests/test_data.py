"""The data pipeline: VOC files (the generated tests/data/voc_tiny and the real sample), folders, TFDS adapters, transforms, bad data, and feeding model.fit."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from PIL import Image

import refinenet_tf
from refinenet_tf import cli, data
from refinenet_tf.data import decoding, sources, transforms, visualization
from tests.conftest import TINY_BACKBONE


@pytest.fixture
def voc_spec(voc_dir):
    return f"voc:{voc_dir}"


def _list(voc_dir, split):
    with open(os.path.join(voc_dir, "ImageSets", "Segmentation", f"{split}.txt")) as stream:
        return [line.strip() for line in stream if line.strip()]


def test_the_committed_voc_fixture_is_what_its_script_writes(voc_tiny_dir, tmp_path):
    import importlib.util

    script = os.path.join(os.path.dirname(__file__), "data", "make_voc_tiny.py")
    spec = importlib.util.spec_from_file_location("make_voc_tiny", script)
    make_voc_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_voc_tiny)
    fresh = make_voc_tiny.write_voc_tiny(str(tmp_path))
    for split in ("train", "val", "trainval"):
        assert _list(fresh, split) == _list(voc_tiny_dir, split)
    for example_id in _list(voc_tiny_dir, "trainval"):
        committed = Image.open(os.path.join(voc_tiny_dir, "SegmentationClass", f"{example_id}.png"))
        written = Image.open(os.path.join(fresh, "SegmentationClass", f"{example_id}.png"))
        assert committed.mode == written.mode == "P" and committed.getpalette() == written.getpalette()
        np.testing.assert_array_equal(np.array(committed), np.array(written))
        # JPEG bytes depend on the libjpeg build; the pixels may differ by rounding only
        committed, written = (np.array(Image.open(os.path.join(folder, "JPEGImages", f"{example_id}.jpg")), np.int16)
                              for folder in (voc_tiny_dir, fresh))
        assert committed.shape == written.shape and np.abs(committed - written).max() <= 2


# --- PASCAL VOC: the generated fixture and the real sample-----------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val", "trainval"])
def test_voc_splits_come_from_the_list_files(voc_spec, voc_dir, split):
    source = data.resolve(voc_spec, split)
    assert [example_id for example_id, _, _ in source.examples] == _list(voc_dir, split)
    assert source.num_classes == 21 and source.ignore_value == 255 and source.class_names[15] == "person"


def test_voc_root_can_be_any_level_of_the_layout(voc_dir):
    devkit = os.path.dirname(voc_dir)
    for path in (voc_dir, devkit, os.path.dirname(devkit)):
        assert len(data.resolve(f"voc:{path}", "val").examples) == 2


def test_voc_masks_are_the_palette_indices_with_255_kept(voc_spec, voc_dir):
    seen = 0
    for example in data.read_examples(voc_spec, "trainval"):
        example_id = example["id"].numpy().decode()
        png = Image.open(os.path.join(voc_dir, "SegmentationClass", f"{example_id}.png"))
        assert png.mode == "P"
        np.testing.assert_array_equal(example["mask"].numpy(), np.array(png))
        assert 255 in example["mask"].numpy(), "the VOC borders (255) must survive decoding"
        jpeg = tf.io.decode_jpeg(tf.io.read_file(os.path.join(voc_dir, "JPEGImages", f"{example_id}.jpg")))
        assert example["image"].shape == jpeg.shape
        seen += 1
    assert seen == 4


def test_training_batches_have_the_crop_size_and_int32_masks(voc_spec):
    images, masks = next(iter(data.make_dataset(voc_spec, "train", batch_size=2, crop_size=96, seed=1)))
    assert images.shape == (2, 96, 96, 3) and images.dtype == tf.float32
    assert masks.shape == (2, 96, 96) and masks.dtype == tf.int32
    assert 0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255
    assert set(np.unique(masks.numpy())) <= set(range(21)) | {255}


def test_seeded_pipelines_are_reproducible(voc_spec):
    first = [b[1].numpy() for b in data.make_dataset(voc_spec, "train", batch_size=1, crop_size=64, seed=7)]
    second = [b[1].numpy() for b in data.make_dataset(voc_spec, "train", batch_size=1, crop_size=64, seed=7)]
    other = [b[1].numpy() for b in data.make_dataset(voc_spec, "train", batch_size=1, crop_size=64, seed=8)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_evaluation_keeps_whole_images_and_pads_masks_with_ignore(voc_spec, voc_dir):
    single = list(data.make_dataset(voc_spec, "val", batch_size=1))
    sizes = [tuple(b[0].shape[1:3]) for b in single]
    assert sizes == [Image.open(os.path.join(voc_dir, "JPEGImages", f"{i}.jpg")).size[::-1]
                     for i in _list(voc_dir, "val")]
    images, masks = next(iter(data.make_dataset(voc_spec, "val", batch_size=2)))
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    assert images.shape == (2, height, width, 3)
    for index, (h, w) in enumerate(sizes):
        assert np.all(masks[index, h:, :].numpy() == 255) and np.all(masks[index, :, w:].numpy() == 255)


# --- transforms ----------------------------------------------------------------------------------------------

def _coordinate_example(height=150, width=170):
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows % 200, cols % 200, np.full_like(rows, 7)], -1).astype(np.uint8)
    mask = ((rows % 200) * 7 + (cols % 200) * 13) % 200
    return tf.constant(image), tf.constant(mask.astype(np.uint8))


@pytest.mark.parametrize("seed", [[0, 1], [2, 3], [4, 5], [6, 7]])
def test_crop_and_flip_keep_image_and_mask_aligned(seed):
    image, mask = _coordinate_example()
    out_image, out_mask = transforms.train_transform(image, mask, tf.constant(seed), crop_size=160,
                                                     min_scale=1.0, max_scale=1.0)
    out_image, out_mask = out_image.numpy().astype(int), out_mask.numpy().astype(int)
    valid = out_mask != 255
    assert valid.sum() > 0.5 * valid.size and (~valid).any(), "the 150-row image is padded to 160 rows"
    expected = (out_image[..., 0] * 7 + out_image[..., 1] * 13) % 200
    np.testing.assert_array_equal(out_mask[valid], expected[valid])


def test_random_scale_keeps_blocks_aligned():
    # 16x16 blocks, each of one class and one colour: after scaling, cropping and flipping, the colour under
    # each labelled pixel must be its class's colour (except a thin band at block edges).
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, (20, 3))
    classes = rng.integers(0, 20, (10, 12)).repeat(16, 0).repeat(16, 1)
    image, mask = tf.constant(colors[classes].astype(np.uint8)), tf.constant(classes.astype(np.uint8))
    for seed in range(6):
        out_image, out_mask = transforms.train_transform(image, mask, tf.constant([seed, 9]), crop_size=128)
        out_image, out_mask = out_image.numpy(), out_mask.numpy().astype(int)
        # Interior pixels: the 3x3 neighbourhood has one class, so bilinear sampling stays inside the block.
        padded = np.pad(out_mask, 1, mode="edge")
        interior = np.ones_like(out_mask, bool)
        for dy in range(3):
            for dx in range(3):
                interior &= padded[dy:dy + 128, dx:dx + 128] == out_mask
        interior &= out_mask != 255
        assert interior.mean() > 0.3
        error = np.abs(out_image[interior] - colors[out_mask[interior]]).max(-1)
        assert np.mean(error < 2) > 0.99, f"seed {seed}: image and mask drifted apart"


def test_random_scale_range_and_nearest_mask():
    image, mask = tf.zeros([100, 80, 3]), tf.constant(np.arange(8000).reshape(100, 80) % 5, tf.uint8)
    heights = set()
    for seed in range(20):
        scaled_image, scaled_mask = transforms.random_scale(image, mask, tf.constant([seed, 0]), 0.5, 2.0)
        heights.add(int(scaled_image.shape[0]))
        assert set(np.unique(scaled_mask.numpy())) <= set(range(5)), "masks are never interpolated"
    assert min(heights) >= 50 and max(heights) <= 200 and len(heights) > 10


def test_color_distortion_is_seeded_and_stays_in_range():
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (20, 30, 3)), tf.float32)
    a = transforms.color_distortion(image, tf.constant([1, 2]))
    b = transforms.color_distortion(image, tf.constant([1, 2]))
    np.testing.assert_array_equal(a, b)
    assert 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 255.0
    assert not np.allclose(a, image)


# --- folders ---------------------------------------------------------------------------------------------------

def _write_pair(folder_images, folder_masks, stem, size=(20, 30), mask_suffix="", palette=True, values=(0, 1, 2)):
    height, width = size
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        os.path.join(folder_images, f"{stem}.jpg"))
    mask = Image.fromarray(rng.choice(values, (height, width)).astype(np.uint8))
    if palette:
        mask.putpalette(visualization.voc_palette().reshape(-1).tolist())
    mask.save(os.path.join(folder_masks, f"{stem}{mask_suffix}.png"))


def test_folder_pairs_by_stem_with_suffix_and_list(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for stem, palette in [("0001", True), ("0002", False), ("0003", True)]:
        _write_pair(images, masks, stem, mask_suffix="_mask", palette=palette)
    (tmp_path / "ids.txt").write_text("0003\n0001\n")
    spec = f"folder:{images}:{masks}?mask_suffix=_mask&list={tmp_path / 'ids.txt'}&num_classes=3"
    source = data.resolve(spec)
    assert [e[0] for e in source.examples] == ["0003", "0001"] and source.num_classes == 3
    assert source.examples[0][2].endswith("0003_mask.png")
    everything = data.resolve(f"folder:{images}:{masks}?mask_suffix=_mask")
    assert [e[0] for e in everything.examples] == ["0001", "0002", "0003"]
    for example in data.read_examples(everything):
        stem = example["id"].numpy().decode()
        np.testing.assert_array_equal(example["mask"], np.array(Image.open(masks / f"{stem}_mask.png")))


# --- TFDS adapters ---------------------------------------------------------------------------------------------

def test_oxford_pet_trimap_becomes_background_pet_and_ignore():
    adapter = sources.TFDS_ADAPTERS["oxford_iiit_pet"][0]
    trimap = tf.constant([[[1], [2], [3]]], tf.uint8)
    _, mask = adapter({"image": tf.zeros([1, 3, 3], tf.uint8), "segmentation_mask": trimap})
    assert mask.numpy().tolist() == [[1, 0, 255]]


def test_scene_parse150_other_becomes_ignore_and_classes_shift_down():
    adapter = sources.TFDS_ADAPTERS["scene_parse150"][0]
    annotation = tf.constant([[[0, 0, 0], [1, 1, 1], [150, 150, 150]]], tf.uint8)
    _, mask = adapter({"image": tf.zeros([1, 3, 3], tf.uint8), "annotation": annotation})
    assert mask.numpy().tolist() == [[255, 0, 149]]


def test_unprepared_tfds_dataset_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="oxford_iiit_pet.*download_and_prepare"):
        data.read_examples(f"tfds:oxford_iiit_pet:{tmp_path}", "train")


# --- bad data: every case gives an error naming the file ---------------------------------------------------------

@pytest.fixture
def folder_dataset(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    _write_pair(images, masks, "good")
    return images, masks


def _corrupt(images, masks, case):
    """Writes one bad example 'bad' and returns the text its error must contain (None: converted, no error)."""
    rng = np.random.default_rng(0)
    good_image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    good_mask = np.zeros((20, 30), np.uint8)
    image_path, mask_path = images / "bad.png", masks / "bad.png"
    Image.fromarray(good_image).save(image_path)
    Image.fromarray(good_mask).save(mask_path)
    if case == "size_mismatch":
        Image.fromarray(np.zeros((21, 30), np.uint8)).save(mask_path)
        return "same size"
    if case == "mask_out_of_range":
        Image.fromarray(np.full((20, 30), 7, np.uint8)).save(mask_path)
        return "outside [0, 3)"
    if case == "truncated_png":
        Image.fromarray(rng.integers(0, 3, (20, 30)).astype(np.uint8)).save(mask_path)
        content = mask_path.read_bytes()
        mask_path.write_bytes(content[:len(content) // 2])
        return "corrupt, truncated"
    if case == "corrupt_jpeg":
        os.remove(image_path)
        (images / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
        return "corrupt, truncated"
    if case == "rgb_mask":
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(mask_path)
        return "colours, not class indices"
    if case == "image_16bit":
        Image.fromarray(np.zeros((20, 30), np.uint16)).save(image_path)
        return "8-bit"
    if case == "grayscale_image":
        Image.fromarray(good_image[..., 0]).save(image_path)
        return None
    if case == "rgba_image":
        Image.fromarray(np.dstack([good_image, np.full((20, 30), 9, np.uint8)])).save(image_path)
        return None
    raise AssertionError(case)


BAD_CASES = ["size_mismatch", "mask_out_of_range", "truncated_png", "corrupt_jpeg", "rgb_mask", "image_16bit"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_gives_an_error_naming_it(folder_dataset, case):
    images, masks = folder_dataset
    message = _corrupt(images, masks, case)
    source = data.folder_source(str(images), str(masks), num_classes=3)
    bad = next(e for e in source.examples if e[0] == "bad")
    with pytest.raises(decoding.DataError, match=re.escape(message)) as error:
        decoding.read_pair(bad[1], bad[2], 3, 255)
    assert "bad." in str(error.value)
    # The tf.data pipeline stops on it with the same message ...
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        list(data.read_examples(source))
    # ... and check-data lists it among all problems, with exit status 1.
    report = data.check_dataset(source)
    assert len(report.problems) == 1 and "bad." in report.problems[0]
    spec = f"folder:{images}:{masks}?num_classes=3"
    assert cli.main(["check-data", spec]) == 1


@pytest.mark.parametrize("case", ["grayscale_image", "rgba_image"])
def test_grayscale_and_rgba_images_are_converted_to_rgb(folder_dataset, case):
    images, masks = folder_dataset
    assert _corrupt(images, masks, case) is None
    image = decoding.read_image(str(images / "bad.png"))
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    if case == "grayscale_image":
        assert np.array_equal(image[..., 0], image[..., 2])
    assert data.check_dataset(data.folder_source(str(images), str(masks), num_classes=3)).ok


def test_list_ids_without_files_missing_list_and_empty_split(tmp_path, voc_tiny_dir, folder_dataset):
    images, masks = folder_dataset
    (tmp_path / "ids.txt").write_text("good\nghost\n")
    with pytest.raises(FileNotFoundError, match="ghost"):
        data.folder_source(str(images), str(masks), list_file=str(tmp_path / "ids.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        data.folder_source(str(images), str(masks), list_file=str(tmp_path / "empty.txt"))
    with pytest.raises(FileNotFoundError, match="test.txt not found"):
        data.resolve(f"voc:{voc_tiny_dir}", "test")
    os.remove(masks / "good.png")
    with pytest.raises(FileNotFoundError, match="good"):
        data.folder_source(str(images), str(masks))


@pytest.mark.parametrize("spec, message", [
    ("voc", "KIND:ARGS"), ("zip:/x", "unknown kind"), ("folder:/only", "folder:IMAGES:MASKS"),
    ("tfds:cityscapes", "no adapter"), ("voc:/nonexistent", "no VOC 2012 folder"),
])
def test_bad_specs_fail_clearly(spec, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        data.resolve(spec)


# --- every source feeds model.fit ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fit_one_epoch():
    """``fit_one_epoch(dataset, num_classes)``: one epoch of ``model.fit`` on ``dataset``, whose loss must be finite.

    What is proven is that a source's batches go through ``fit``, so one compiled model per class count serves the
    whole module (a dataset whose batches have a spec already traced reuses the train function, any other traces
    it anew): the smallest decoder (Light-Weight: 40 variables on the tiny backbone, the slim decoder has 200),
    plain SGD, and its variables built before the first step, so that ``fit`` traces once, not twice.
    """
    models = {}

    def fit(dataset, num_classes):
        if num_classes not in models:
            model = refinenet_tf.RefineNet(num_classes=num_classes, backbone=TINY_BACKBONE, backbone_weights=None,
                                           variant="light_weight", decoder_features=8)
            model.compile(optimizer="sgd",
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
            model.optimizer.build(model.trainable_variables)
            models[num_classes] = model
        history = models[num_classes].fit(dataset, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])

    return fit


def test_voc_and_folder_sources_feed_model_fit(voc_spec, folder_dataset, fit_one_epoch):
    fit_one_epoch(data.make_dataset(voc_spec, "train", batch_size=2, crop_size=64, seed=0), 21)
    images, masks = folder_dataset
    _write_pair(images, masks, "more")
    folder = data.make_dataset(f"folder:{images}:{masks}?num_classes=3", batch_size=2, crop_size=32, seed=0)
    fit_one_epoch(folder, 3)


def test_tfds_voc2012_segmentation_feeds_model_fit(voc_dir, tmp_path, fit_one_epoch):
    import tensorflow_datasets as tfds

    manual_dir = os.path.dirname(os.path.dirname(voc_dir))  # holds VOCdevkit/VOC2012, used read-only
    builder = tfds.builder("voc2012_segmentation", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    spec = f"tfds:voc2012_segmentation:{tmp_path}"
    for example in data.read_examples(spec, "val"):
        png = os.path.join(voc_dir, "SegmentationClass", example["id"].numpy().decode() + ".png")
        np.testing.assert_array_equal(example["mask"], np.array(Image.open(png)))
    fit_one_epoch(data.make_dataset(spec, "train", batch_size=2, crop_size=64, seed=0), 21)


def _voc_aug_layout(voc_dir, root):
    """A VOC 2012 folder with SBD-style SegmentationClassAug grayscale masks and a train_aug list."""
    import shutil

    voc = root / "VOCdevkit" / "VOC2012"
    shutil.copytree(voc_dir, voc)
    (voc / "SegmentationClassAug").mkdir()
    ids = _list(voc_dir, "trainval")
    for example_id in ids:
        indices = np.array(Image.open(voc / "SegmentationClass" / f"{example_id}.png"))
        Image.fromarray(indices).save(voc / "SegmentationClassAug" / f"{example_id}.png")  # mode "L"
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(ids) + "\n")
    return ids


def test_voc_aug_reads_train_aug_with_sbd_masks_and_feeds_fit(voc_dir, tmp_path, fit_one_epoch):
    ids = _voc_aug_layout(voc_dir, tmp_path)
    source = data.resolve(f"voc_aug:{tmp_path}", "train")
    assert [e[0] for e in source.examples] == ids
    assert all("SegmentationClassAug" in mask for _, _, mask in source.examples)
    assert all("SegmentationClass" + os.sep in e[2] for e in data.resolve(f"voc_aug:{tmp_path}", "val").examples)
    for example in data.read_examples(source):
        png = os.path.join(voc_dir, "SegmentationClass", example["id"].numpy().decode() + ".png")
        np.testing.assert_array_equal(example["mask"], np.array(Image.open(png)))
    fit_one_epoch(data.make_dataset(source, batch_size=2, crop_size=64, seed=0), 21)


@pytest.mark.parametrize("name, element, num_classes", [
    ("oxford_iiit_pet", {"segmentation_mask": np.array([[[1], [2], [3], [2]]] * 4, np.uint8)}, 2),
    ("scene_parse150", {"annotation": np.array([[[0] * 3, [5] * 3, [150] * 3, [9] * 3]] * 4, np.uint8)}, 150),
])
def test_tfds_adapters_feed_model_fit(monkeypatch, fit_one_epoch, name, element, num_classes):
    # The real datasets cannot be downloaded here: stand in for tfds.load with elements of their structure.
    import tensorflow_datasets as tfds

    element = dict(element, image=np.full((4, 4, 3), 100, np.uint8), file_name="x")
    calls = []

    def fake_load(dataset_name, split, data_dir, download, shuffle_files, read_config):
        calls.append((dataset_name, split, download, shuffle_files, read_config.shuffle_seed))
        return tf.data.Dataset.from_tensors(element).repeat(4)

    monkeypatch.setattr(tfds, "load", fake_load)
    dataset = data.make_dataset(f"tfds:{name}", "val", batch_size=2, training=True, crop_size=16, seed=0)
    _, masks = next(iter(dataset))
    assert calls == [(name, "validation", False, True, 0)]  # training shuffles the shards, seeded
    assert set(np.unique(masks.numpy())) <= set(range(num_classes)) | {255}
    fit_one_epoch(dataset, num_classes)
