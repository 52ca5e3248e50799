"""The ``voc2012_segmentation`` TFDS builder, built from small VOC-layout trees.

Each test runs on two trees of 4 images (2 train + 2 val): the generated ``tests/data/voc_tiny`` that the
repository holds, and the sample of real VOC 2012 files in ``../shared/data/voc_sample`` beside the checkout
(skipped, with the reason, where it is absent). The tests pack a tree into a fake
``VOCtrainval_11-May-2012.tar`` with the real archive's layout, or use it as an already-extracted ``VOCdevkit``,
and never copy the real sample into the repository.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tarfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from PIL import Image  # noqa: E402

import refinenet_tf.data.voc2012_segmentation as voc2012_segmentation  # noqa: E402  (registers the builder)

DATASET_NAME = "voc2012_segmentation"
LIST_FILES = {"train": "train.txt", "validation": "val.txt"}


def _sample_path(voc_root, *parts):
    return os.path.join(voc_root, *parts)


def _sample_ids(voc_root, split):
    with open(_sample_path(voc_root, "ImageSets", "Segmentation", LIST_FILES[split])) as list_file:
        return [line.strip() for line in list_file if line.strip()]


def _write_trainval_tar(voc_root, manual_dir, list_contents=None, skip_files=()):
    """Writes ``VOCtrainval_11-May-2012.tar`` with the real archive's layout from the files of a VOC tree.

    Args:
        voc_root: The ``VOCdevkit/VOC2012`` folder to pack.
        manual_dir: Directory to write the tar into (created).
        list_contents: Optional ``{list file name: text}`` replacing the sample's id lists.
        skip_files: Paths relative to ``VOC2012`` (e.g. ``JPEGImages/x.jpg``) left out of the archive.

    Returns:
        The manual directory.
    """
    os.makedirs(manual_dir, exist_ok=True)
    list_contents = list_contents or {}
    with tarfile.open(os.path.join(manual_dir, voc2012_segmentation.TRAINVAL_TAR_NAME), "w") as archive:
        for sub_dir in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
            for file_name in sorted(os.listdir(_sample_path(voc_root, sub_dir))):
                relative_path = os.path.join(sub_dir, file_name)
                if relative_path in skip_files or file_name in list_contents:
                    continue
                archive.add(_sample_path(voc_root, relative_path), arcname=f"VOCdevkit/VOC2012/{relative_path}")
        for file_name, text in list_contents.items():
            list_path = os.path.join(str(manual_dir), file_name)
            with open(list_path, "w") as list_file:
                list_file.write(text)
            archive.add(list_path, arcname=f"VOCdevkit/VOC2012/ImageSets/Segmentation/{file_name}")
            os.remove(list_path)
    return manual_dir


def _download_config(manual_dir):
    return tfds.download.DownloadConfig(manual_dir=str(manual_dir))


@pytest.fixture(scope="module")
def loaded_from_tar(voc_dir, tmp_path_factory):
    """``(datasets by split, info, data_dir)`` of a VOC tree packed as the official tar, loaded by name."""
    root = tmp_path_factory.mktemp("voc_tar")
    manual_dir = _write_trainval_tar(voc_dir, root / "manual")
    data_dir = str(root / "data")
    datasets, info = tfds.load(DATASET_NAME, data_dir=data_dir, split=["train", "validation"], with_info=True,
                               download_and_prepare_kwargs={"download_config": _download_config(manual_dir)})
    return dict(zip(["train", "validation"], datasets)), info, data_dir


def test_builder_is_registered_with_the_documented_metadata():
    assert DATASET_NAME in tfds.list_builders(with_community_datasets=False)
    builder_class = tfds.builder_cls(DATASET_NAME)
    assert builder_class is voc2012_segmentation.Voc2012Segmentation
    assert str(builder_class.VERSION) == "1.0.0" and "1.0.0" in builder_class.RELEASE_NOTES
    assert voc2012_segmentation.CLASS_NAMES[0] == "background"
    assert voc2012_segmentation.CLASS_NAMES[-1] == "tvmonitor"
    assert len(voc2012_segmentation.CLASS_NAMES) == 21


def test_split_sizes_and_info(loaded_from_tar):
    _, info, _ = loaded_from_tar
    assert info.splits["train"].num_examples == 2
    assert info.splits["validation"].num_examples == 2
    assert info.supervised_keys == ("image", "segmentation_mask")
    assert info.homepage == "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
    assert "tvmonitor" in info.description and "255" in info.description
    assert "Everingham" in info.citation


@pytest.mark.parametrize("split", ["train", "validation"])
def test_examples_match_the_voc_files(loaded_from_tar, voc_dir, split):
    datasets, _, _ = loaded_from_tar
    seen_ids = []
    for example in tfds.as_numpy(datasets[split]):
        image_id = example["file_name"].decode()
        seen_ids.append(image_id)
        png_path = _sample_path(voc_dir, "SegmentationClass", f"{image_id}.png")
        jpeg_path = _sample_path(voc_dir, "JPEGImages", f"{image_id}.jpg")

        expected_mask = np.array(Image.open(png_path))  # palette indices, not colours
        mask = example["segmentation_mask"]
        assert mask.dtype == np.uint8 and mask.shape == expected_mask.shape + (1,)
        np.testing.assert_array_equal(mask[:, :, 0], expected_mask)
        assert 255 in mask, "the ignore value 255 must be kept"
        assert mask[mask != 255].max() <= 20

        expected_image = tf.io.decode_jpeg(tf.io.read_file(jpeg_path), channels=3).numpy()
        image = example["image"]
        assert image.dtype == np.uint8 and image.shape == expected_mask.shape + (3,)
        np.testing.assert_array_equal(image, expected_image)
    assert sorted(seen_ids) == sorted(_sample_ids(voc_dir, split))


def test_prepared_dataset_reloads_as_supervised_pairs(loaded_from_tar):
    _, _, data_dir = loaded_from_tar
    dataset = tfds.builder(DATASET_NAME, data_dir=data_dir).as_dataset(split="validation", as_supervised=True)
    pair_count = 0
    for image, mask in dataset:
        pair_count += 1
        assert image.shape[:2] == mask.shape[:2] and mask.shape[2] == 1 and image.shape[2] == 3
    assert pair_count == 2


def test_shuffled_reading_covers_every_id_each_epoch_reproducibly(loaded_from_tar, voc_dir):
    import refinenet_tf.data as data

    _, _, data_dir = loaded_from_tar
    spec = f"tfds:{DATASET_NAME}:{data_dir}"

    def epochs(seed):
        examples = data.read_examples(spec, "train", shuffle=True, seed=seed, repeat=True, shuffle_buffer=2)
        ids = [example["id"].numpy().decode() for example in examples.take(6)]
        return [ids[i:i + 2] for i in range(0, 6, 2)]

    first = epochs(0)
    assert all(sorted(epoch) == sorted(_sample_ids(voc_dir, "train")) for epoch in first)
    assert epochs(0) == first
    unshuffled = [example["id"].numpy().decode() for example in data.read_examples(spec, "train")]
    assert unshuffled == [example["file_name"].decode()
                          for example in tfds.as_numpy(tfds.load(DATASET_NAME, split="train", data_dir=data_dir))]


def test_extracted_vocdevkit_in_manual_dir(voc_dir, tmp_path):
    builder = tfds.builder(DATASET_NAME, data_dir=str(tmp_path / "data"))
    manual_dir = os.path.dirname(os.path.dirname(voc_dir))  # holds VOCdevkit/VOC2012, used read-only
    builder.download_and_prepare(download_config=_download_config(manual_dir))
    for split in ("train", "validation"):
        file_names = [example["file_name"].decode() for example in tfds.as_numpy(builder.as_dataset(split=split))]
        assert sorted(file_names) == sorted(_sample_ids(voc_dir, split))


def test_listed_id_without_jpeg_fails_naming_the_id(voc_tiny_dir, tmp_path):
    missing_id = "2099_000001"
    manual_dir = _write_trainval_tar(
        voc_tiny_dir, tmp_path / "manual",
        list_contents={"train.txt": "\n".join(_sample_ids(voc_tiny_dir, "train") + [missing_id]) + "\n"})
    builder = tfds.builder(DATASET_NAME, data_dir=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=missing_id) as error:
        builder.download_and_prepare(download_config=_download_config(manual_dir))
    message = str(error.value)
    assert "train.txt" in message and f"{missing_id}.jpg" in message


def _write_voc_dir(voc_root, image_id, image_size, mask):
    """Writes a one-image extracted ``VOCdevkit/VOC2012`` (same id in train and val)."""
    for sub_dir in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(voc_root, sub_dir), exist_ok=True)
    Image.new("RGB", image_size, (10, 20, 30)).save(os.path.join(voc_root, "JPEGImages", f"{image_id}.jpg"))
    if mask is not None:
        mask.save(os.path.join(voc_root, "SegmentationClass", f"{image_id}.png"))
    for list_name in LIST_FILES.values():
        with open(os.path.join(voc_root, "ImageSets", "Segmentation", list_name), "w") as list_file:
            list_file.write(image_id + "\n")


@pytest.mark.parametrize("image_size, mask, error_type, expected_words", [
    ((8, 6), Image.new("RGB", (8, 6), (128, 0, 0)), ValueError, ["mode 'RGB'", "bad_id.png"]),
    ((8, 6), Image.new("L", (6, 8), 0), ValueError, ["same size", "bad_id.jpg", "bad_id.png"]),
    ((8, 6), Image.new("L", (8, 6), 21), ValueError, ["[21]", "bad_id.png"]),
    ((8, 6), None, FileNotFoundError, ["bad_id", "train.txt", "bad_id.png"]),
], ids=["rgb_mask", "size_mismatch", "out_of_range_value", "missing_png"])
def test_bad_masks_fail_naming_the_files(tmp_path, image_size, mask, error_type, expected_words):
    _write_voc_dir(str(tmp_path / "manual" / "VOCdevkit" / "VOC2012"), "bad_id", image_size, mask)
    builder = tfds.builder(DATASET_NAME, data_dir=str(tmp_path / "data"))
    with pytest.raises(error_type) as error:
        builder.download_and_prepare(download_config=_download_config(tmp_path / "manual"))
    for word in expected_words:
        assert word in str(error.value)
