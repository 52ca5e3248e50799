"""RGB-D data: the folder spec with depth, bad depth files, transforms, synthetic scenes, the NYUDv2 builder."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.io  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from PIL import Image  # noqa: E402

from refinenet_tf import data  # noqa: E402
from refinenet_tf.data import decoding, synthetic, transforms  # noqa: E402
from refinenet_tf.data import nyu_depth_v2_segmentation as nyud  # noqa: E402


def _write_rgbd_folder(root, count=3, height=12, width=16, scale=5000):
    """``count`` examples; depth ``i`` holds ``(i + 1) * 1000`` stored units with a 0 hole at ``[0, 0]``."""
    for name in ("images", "masks", "depth"):
        os.makedirs(os.path.join(root, name), exist_ok=True)
    for index in range(count):
        stem = f"{index:03d}"
        Image.fromarray(np.full([height, width, 3], 40 * index, np.uint8)).save(f"{root}/images/{stem}.png")
        Image.fromarray(np.full([height, width], index, np.uint8)).save(f"{root}/masks/{stem}.png")
        stored = np.full([height, width], (index + 1) * 1000, np.uint16)
        stored[0, 0] = 0
        Image.fromarray(stored).save(f"{root}/depth/{stem}.png")
    return f"folder:{root}/images:{root}/masks?depth={root}/depth&depth_scale={scale}&num_classes=40"


def test_folder_spec_reads_16_bit_depth_divided_by_the_scale(tmp_path):
    spec = _write_rgbd_folder(str(tmp_path))
    source = data.resolve(spec)
    assert source.has_depth and source.depth_scale == 5000 and len(source.depths) == 3
    examples = list(data.read_examples(spec))
    assert examples[2]["depth"].dtype == tf.float32
    depth = examples[2]["depth"].numpy()
    assert depth[0, 0] == 0.0 and np.all(depth.reshape(-1)[1:] == np.float32(3000 / 5000))
    images, labels = next(iter(data.make_dataset(spec, "val", batch_size=3)))
    assert sorted(labels) == ["depth", "segmentation"]
    assert labels["depth"].shape == (3, 12, 16) and labels["segmentation"].dtype == tf.int32
    # KITTI's scale
    kitti = list(data.read_examples(spec.replace("depth_scale=5000", "depth_scale=256")))
    assert kitti[0]["depth"].numpy()[1, 1] == np.float32(1000 / 256)
    # segmentation-only specs keep giving (image, mask)
    plain = f"folder:{tmp_path}/images:{tmp_path}/masks"
    images, masks = next(iter(data.make_dataset(plain, "val", batch_size=1)))
    assert isinstance(masks, tf.Tensor) and masks.shape == (1, 12, 16)


def test_depth_spec_needs_a_scale_and_its_files(tmp_path):
    spec = _write_rgbd_folder(str(tmp_path))
    with pytest.raises(ValueError, match="depth_scale="):
        data.resolve(spec.replace("&depth_scale=5000", ""))
    os.remove(tmp_path / "depth" / "001.png")
    with pytest.raises(FileNotFoundError, match="001.png.*allow_missing=depth"):
        data.resolve(spec)


def test_missing_mask_and_depth_read_as_255_and_0_in_one_batch(tmp_path):
    spec = _write_rgbd_folder(str(tmp_path)) + "&allow_missing=mask,depth"
    os.remove(tmp_path / "masks" / "000.png")
    os.remove(tmp_path / "depth" / "001.png")
    report = data.check_dataset(spec)
    assert report.ok and report.missing_masks == 1 and report.missing_depths == 1
    assert report.depth_range == (pytest.approx(1000 / 5000), pytest.approx(3000 / 5000))
    images, labels = next(iter(data.make_dataset(spec, "train", batch_size=3, crop_size=8, seed=1, shuffle=False)))
    assert np.all(labels["segmentation"][0].numpy() == 255) and np.any(labels["segmentation"][2].numpy() != 255)
    assert np.all(labels["depth"][1].numpy() == 0.0) and np.any(labels["depth"][2].numpy() > 0)


def _bad_depth_cases(root):
    """``{name: (path, message)}``: depth files that must be refused, each written in ``root``."""
    cases = {}
    path = os.path.join(root, "eight_bit.png")
    Image.fromarray(np.full([12, 16], 9, np.uint8)).save(path)
    cases["8-bit"] = (path, "8-bit depth")
    path = os.path.join(root, "nan.npy")
    values = np.ones([12, 16], np.float32)
    values[3, 4] = np.nan
    np.save(path, values)
    cases["nan"] = (path, "NaN")
    path = os.path.join(root, "negative.npy")
    np.save(path, -np.ones([12, 16], np.float32))
    cases["negative"] = (path, "negative")
    path = os.path.join(root, "negative.tiff")
    Image.fromarray(np.full([12, 16], -2.0, np.float32)).save(path)
    cases["negative tiff"] = (path, "negative")
    path = os.path.join(root, "colour.png")
    Image.fromarray(np.zeros([12, 16, 3], np.uint8)).save(path)
    cases["colour"] = (path, "not a depth map")
    path = os.path.join(root, "small.png")
    Image.fromarray(np.ones([6, 8], np.uint16)).save(path)
    cases["size"] = (path, "must have the same size")
    return cases


def test_bad_depth_files_get_one_line_errors_naming_the_file(tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros([12, 16, 3], np.uint8)).save(image)
    for name, (path, message) in _bad_depth_cases(str(tmp_path)).items():
        with pytest.raises(decoding.DataError) as error:
            decoding.read_example(str(image), "", path, depth_scale=1000)
        text = str(error.value)
        assert path in text and message in text and "\n" not in text, name


def test_accepted_depth_formats(tmp_path):
    metres = np.array([[0.0, 1.5], [2.25, 3.0]], np.float32)
    np.save(tmp_path / "float.npy", metres)
    np.save(tmp_path / "int.npy", (metres * 1000).astype(np.uint16))
    Image.fromarray(metres).save(tmp_path / "float.tiff")
    Image.fromarray((metres * 1000).astype(np.uint16)).save(tmp_path / "mm.png")
    for name, scale in (("float.npy", None), ("int.npy", 1000), ("float.tiff", None), ("mm.png", 1000)):
        np.testing.assert_array_equal(decoding.read_depth(str(tmp_path / name), scale), metres, err_msg=name)


def test_check_data_lists_every_bad_depth_file(tmp_path):
    spec = _write_rgbd_folder(str(tmp_path))
    Image.fromarray(np.full([12, 16], 9, np.uint8)).save(tmp_path / "depth" / "000.png")
    Image.fromarray(np.ones([5, 5], np.uint16)).save(tmp_path / "depth" / "002.png")
    report = data.check_dataset(spec)
    assert len(report.problems) == 2
    assert "000.png" in report.problems[0] and "8-bit" in report.problems[0]
    assert "002.png" in report.problems[1] and "same size" in report.problems[1]


def _aligned_example(height=33, width=47):
    """Mask = position code, depth = ``(mask + 1) / 2`` where labelled and 0 (missing) where the mask is 255."""
    rows, cols = np.mgrid[0:height, 0:width]
    mask = ((rows // 3 * 7 + cols // 4) % 250).astype(np.uint8)
    mask[5:9, 10:20] = 255
    depth = np.where(mask == 255, 0.0, (mask.astype(np.float32) + 1) / 2).astype(np.float32)
    image = np.stack([mask, mask, mask], -1).astype(np.float32)
    return tf.constant(image), tf.constant(mask), tf.constant(depth)


@pytest.mark.parametrize("seed", [[0, 1], [2, 3], [4, 5], [6, 7]])
def test_rgbd_transform_keeps_depth_aligned_and_never_blends_missing_pixels(seed):
    image, mask, depth = _aligned_example()
    out_image, out_mask, out_depth = transforms.train_transform_rgbd(image, mask, depth, seed, crop_size=40,
                                                                     min_scale=0.5, max_scale=2.0)
    ref_image, ref_mask = transforms.train_transform(image, mask, seed, crop_size=40, min_scale=0.5, max_scale=2.0)
    np.testing.assert_array_equal(out_image.numpy(), ref_image.numpy())
    np.testing.assert_array_equal(out_mask.numpy(), ref_mask.numpy())
    out_mask, out_depth = out_mask.numpy(), out_depth.numpy()
    # the depth still matches the mask pixel for pixel: missing (and padded) exactly where the mask is 255
    expected = np.where(out_mask == 255, 0.0, (out_mask.astype(np.float32) + 1) / 2)
    np.testing.assert_array_equal(out_depth, expected)
    assert set(np.unique(out_depth)) <= set(np.unique(depth.numpy()))


def test_scale_depth_divides_by_the_zoom_factor():
    image, mask, depth = _aligned_example()
    _, out_mask, out_depth = transforms.train_transform_rgbd(image, mask, depth, [1, 2], crop_size=40,
                                                             min_scale=2.0, max_scale=2.0, scale_depth=True)
    out_mask = out_mask.numpy()
    expected = np.where(out_mask == 255, 0.0, (out_mask.astype(np.float32) + 1) / 4)
    np.testing.assert_allclose(out_depth.numpy(), expected, rtol=1e-6)


def test_synthetic_rgbd_scenes_read_back_through_the_spec(tmp_path):
    specs = synthetic.write_rgbd_dataset(str(tmp_path), num_train=20, num_val=5, height=40, width=48, seed=3,
                                         missing_mask_fraction=0.25, missing_depth_fraction=0.1)
    again = synthetic.write_rgbd_dataset(str(tmp_path / "again"), num_train=20, num_val=5, height=40, width=48,
                                         seed=3, missing_mask_fraction=0.25, missing_depth_fraction=0.1)
    first = np.asarray(Image.open(tmp_path / "depth" / "train_00001.png"))
    assert first.dtype == np.uint16
    np.testing.assert_array_equal(first, np.asarray(Image.open(tmp_path / "again" / "depth" / "train_00001.png")))
    train = list(data.read_examples(specs["train"]))
    no_mask = [bool(np.all(e["mask"].numpy() == 255)) for e in train]
    no_depth = [bool(np.all(e["depth"].numpy() == 0)) for e in train]
    assert sum(no_mask) == 5 and sum(no_depth) == 2 and not any(m and d for m, d in zip(no_mask, no_depth))
    val = list(data.read_examples(specs["val"]))
    assert not any(np.all(e["mask"].numpy() == 255) or np.all(e["depth"].numpy() == 0) for e in val)
    report = data.check_dataset(specs["train"])
    assert report.ok and set(report.class_pixels) <= {0, 1, 2, 3, 4, 255}
    assert 1.0 <= report.depth_range[0] and report.depth_range[1] <= 9.0


def test_synthetic_depth_is_not_given_by_colour():
    rng = np.random.default_rng(0)
    by_colour = {}
    for _ in range(30):
        image, mask, depth = synthetic.render_rgbd_scene(rng, 64, 64)
        assert depth.dtype == np.float32 and set(np.unique(mask)) <= {0, 1, 2, 3, 4, 255}
        for colour in synthetic._OBJECT_COLOURS:
            pixels = (mask >= 2) & (mask != 255) & (np.abs(image.astype(np.float32) - colour).sum(-1) < 40)
            pixels &= depth > 0
            if pixels.any():
                by_colour.setdefault(tuple(colour), []).append(float(np.median(depth[pixels])))
    # each object colour is seen at depths spread over metres
    assert len(by_colour) == 4
    assert all(max(d) - min(d) > 1.0 for d in by_colour.values())


def _write_nyu_manual_dir(root, num_frames=5, width=16, height=12):
    """A tiny ``nyu_depth_v2_labeled.mat`` in the official layout plus ``splits.mat`` and ``classMapping40.mat``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (num_frames, 3, width, height), dtype=np.uint8)  # [N, 3, W, H]
    depths = rng.uniform(0.5, 9.0, (num_frames, width, height)).astype(np.float32)  # [N, W, H]
    labels = rng.integers(0, 895, (num_frames, width, height)).astype(np.uint16)
    labels[:, 0, :] = 0  # unlabelled column
    with h5py.File(os.path.join(root, nyud.LABELED_MAT_NAME), "w") as stream:
        stream["images"], stream["depths"], stream["labels"] = images, depths, labels
    mapping = (np.arange(894) % 40 + 1).astype(np.float64)[None]  # label l -> class (l - 1) % 40 + 1
    mapping[0, 893] = 0  # a label mapped to nothing
    scipy.io.savemat(os.path.join(root, nyud.CLASS_MAPPING_NAME), {"mapClass": mapping})
    scipy.io.savemat(os.path.join(root, nyud.SPLITS_NAME), {"trainNdxs": np.array([[1], [3], [4]]),
                                                             "testNdxs": np.array([[2], [5]])})
    return images, depths, labels


def test_nyu_builder_prepared_from_a_tiny_hdf5_in_the_official_layout(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    images, depths, labels = _write_nyu_manual_dir(str(manual))
    builder = tfds.builder("nyu_depth_v2_segmentation", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    assert builder.info.splits["train"].num_examples == 3 and builder.info.splits["test"].num_examples == 2
    test = {e["file_name"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split="test"))}
    assert sorted(test) == ["0002", "0005"]
    example = test["0005"]
    assert example["image"].shape == (12, 16, 3)
    np.testing.assert_array_equal(example["image"], images[4].transpose(2, 1, 0))
    np.testing.assert_array_equal(example["depth"], depths[4].T)
    label = labels[4].T.astype(np.int64)
    expected = np.where(label == 0, 255, (label - 1) % 40).astype(np.uint8)
    expected[label == 894] = 255
    np.testing.assert_array_equal(example["segmentation_mask"][..., 0], expected)
    # through the data spec: "val" reads "test", examples carry depth
    spec = f"tfds:nyu_depth_v2_segmentation:{tmp_path / 'data'}"
    batch_images, batch_labels = next(iter(data.make_dataset(spec, "val", batch_size=2)))
    assert batch_images.shape == (2, 12, 16, 3) and batch_labels["depth"].shape == (2, 12, 16)


def test_nyu_builder_names_missing_manual_files(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    _write_nyu_manual_dir(str(manual))
    os.remove(manual / nyud.SPLITS_NAME)
    builder = tfds.builder("nyu_depth_v2_segmentation", data_dir=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="splits.mat"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def test_check_data_command_prints_depth_problems(tmp_path, capsys):
    from refinenet_tf import cli

    spec = _write_rgbd_folder(str(tmp_path))
    assert cli.main(["check-data", spec]) == 0
    values = np.ones([12, 16], np.float32)
    values[0, 1] = np.nan
    np.save(tmp_path / "depth" / "001.npy", values)
    os.remove(tmp_path / "depth" / "001.png")
    for stem in ("000", "002"):
        np.save(tmp_path / "depth" / f"{stem}.npy", np.ones([12, 16], np.float32))
    assert cli.main(["check-data", spec + "&depth_ext=.npy"]) == 1
    output = capsys.readouterr()
    assert "001.npy" in output.out + output.err and "NaN" in output.out + output.err


def test_nyu_builder_refuses_a_file_in_another_layout(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    _write_nyu_manual_dir(str(manual))
    path = str(manual / nyud.LABELED_MAT_NAME)
    with h5py.File(path, "r+") as stream:
        images = np.asarray(stream["images"])
        del stream["images"]
        stream["images"] = images.transpose(0, 3, 2, 1)  # [N, H, W, 3]: not the official layout
    builder = tfds.builder("nyu_depth_v2_segmentation", data_dir=str(tmp_path / "data"))
    with pytest.raises(data.DataError, match=f"{path}: expected images \\[N, 3, W, H\\]"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
