"""The bad-input matrix: every kind of bad file or argument a user meets, through the API and the CLI.

Each case is either an error of a specific type whose one-line message names the file or argument and the fix,
or a documented, well-defined conversion (checked for its result). The bad-input matrix of
``docs/reliability.md`` lists these cases by the names in ``CASES``, one table row each; a test checks that it
does.
"""

import os
import re

import numpy as np
import pytest
from PIL import Image

from refinenet_tf import cli, data, inference, models
from refinenet_tf.inference import evaluation
from refinenet_tf.training import runs
from refinenet_tf.models import saving
from refinenet_tf.data import decoding

# ------------------------------------------------------------------------------------------------ file makers


def _jpeg(path, size=(40, 30), color=(200, 30, 30)):
    Image.new("RGB", size, color).save(path, quality=95)
    return str(path)


def _png(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def _mask(path, values):
    return _png(path, np.asarray(values, np.uint8), "L")


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    """A saved Light-Weight RefineNet on the tiny test backbone (4 classes), for the CLI cases."""
    from tests.conftest import TINY_BACKBONE

    folder = tmp_path_factory.mktemp("model")
    model = models.RefineNet(num_classes=4, backbone=TINY_BACKBONE, backbone_weights=None, variant="light_weight",
                             decoder_features=16)
    path = str(folder / "tiny.keras")
    model.save(path)
    model.save_weights(str(folder / "tiny.weights.h5"))
    return path


def _one_line_error(capsys, *fragments):
    error = capsys.readouterr().err.strip()
    assert error.startswith("refinenet-tf ") and ": error: " in error, error
    assert "\n" not in error, f"not one line: {error!r}"
    for fragment in fragments:
        assert re.search(fragment, error), f"{fragment!r} not in {error!r}"
    return error


# ------------------------------------------------------------------------------------------------ the cases

CASES = ["corrupt_jpeg", "truncated_png", "size_mismatch", "mask_values_out_of_range", "rgb_coded_mask",
         "grayscale_image", "rgba_image", "16bit_png", "list_id_without_file", "empty_split", "zero_size_image",
         "very_large_image", "wrong_num_classes_for_checkpoint", "checkpoint_of_another_variant",
         "non_image_in_predict_folder", "unwritable_output"]


def test_corrupt_jpeg(tmp_path, tiny_model_file, capsys):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20)
    with pytest.raises(decoding.DataError, match=r"broken\.jpg: cannot read this image .*replace or remove it"):
        decoding.read_image(str(path))
    assert cli.main(["predict", "--model", tiny_model_file, "--output", str(tmp_path / "out"), str(path),
                     "--no-progress"]) == 2
    _one_line_error(capsys, r"broken\.jpg", "replace or remove")


def test_truncated_png(tmp_path):
    full = _png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    data_bytes = open(full, "rb").read()
    (tmp_path / "cut.png").write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(decoding.DataError, match=r"cut\.png: cannot read this mask .*truncated"):
        decoding.read_mask(str(tmp_path / "cut.png"))
    with pytest.raises(decoding.DataError, match=r"cut\.png: cannot read this image"):
        decoding.read_image(str(tmp_path / "cut.png"))


def test_size_mismatch(tmp_path):
    image = _jpeg(tmp_path / "a.jpg", size=(40, 30))
    mask = _mask(tmp_path / "a.png", np.zeros((31, 40)))
    with pytest.raises(decoding.DataError, match=r"a\.jpg is 40x30 but its mask .*a\.png is 40x31; .*same size"):
        decoding.read_pair(image, mask)


def test_mask_values_out_of_range(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _jpeg(tmp_path / "images" / "x.jpg", size=(8, 8))
    values = np.zeros((8, 8))
    values[0, 0], values[0, 1] = 7, 255  # 7 is no class of 4; 255 is the ignore label and fine
    mask = _mask(tmp_path / "masks" / "x.png", values)
    with pytest.raises(decoding.DataError, match=r"x\.png: mask values \[7\] are outside \[0, 4\).*fix the mask"):
        decoding.read_pair(str(tmp_path / "images" / "x.jpg"), mask, num_classes=4)
    assert cli.main(["check-data", f"folder:{tmp_path / 'images'}:{tmp_path / 'masks'}?num_classes=4"]) == 1
    assert "x.png" in capsys.readouterr().out


def test_rgb_coded_mask(tmp_path):
    colours = np.zeros((8, 8, 3), np.uint8)
    colours[:4] = (128, 0, 0)  # VOC's aeroplane colour instead of its index 1
    with pytest.raises(decoding.DataError, match=r"rgb\.png: mask mode 'RGB' holds colours, not class indices"):
        decoding.read_mask(_png(tmp_path / "rgb.png", colours))


def test_grayscale_image(tmp_path):  # conversion: the gray value in all three channels
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    image = decoding.read_image(_png(tmp_path / "gray.png", gray, "L"))
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert (image == gray[..., None]).all()


def test_rgba_image(tmp_path):  # conversion: alpha dropped, the colours kept
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), np.arange(64).reshape(8, 8)
    image = decoding.read_image(_png(tmp_path / "rgba.png", rgba, "RGBA"))
    assert image.shape == (8, 8, 3) and (image == (10, 20, 30)).all()


def test_16bit_png(tmp_path):
    deep = Image.fromarray(np.full((8, 8), 40000, np.uint16))
    deep.save(tmp_path / "deep.png")
    with pytest.raises(decoding.DataError, match=r"deep\.png: image mode .*16-bit.*convert it to an 8-bit"):
        decoding.read_image(str(tmp_path / "deep.png"))
    with pytest.raises(decoding.DataError, match=r"deep\.png: 16-bit mask with values up to 40000"):
        decoding.read_mask(str(tmp_path / "deep.png"))
    indices = np.array([[0, 1], [2, 255]], np.uint16)  # conversion: a 16-bit mask of indices is read as indices
    Image.fromarray(indices).save(tmp_path / "indices.png")
    assert decoding.read_mask(str(tmp_path / "indices.png")).tolist() == [[0, 1], [2, 255]]


def _folder_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    _jpeg(tmp_path / "images" / "good.jpg", size=(8, 8))
    _mask(tmp_path / "masks" / "good.png", np.zeros((8, 8)))
    return tmp_path / "images", tmp_path / "masks"


def test_list_id_without_file(tmp_path, capsys):
    images, masks = _folder_dataset(tmp_path)
    (tmp_path / "ids.txt").write_text("good\nghost\n")
    with pytest.raises(FileNotFoundError, match=r"ghost"):
        data.folder_source(str(images), str(masks), list_file=str(tmp_path / "ids.txt"))
    assert cli.main(["check-data", f"folder:{images}:{masks}?list={tmp_path / 'ids.txt'}"]) == 2
    _one_line_error(capsys, "ghost")


def test_empty_split(tmp_path, voc_tiny_dir, tiny_model_file, capsys):
    images, masks = _folder_dataset(tmp_path)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.txt.*empty"):
        data.folder_source(str(images), str(masks), list_file=str(tmp_path / "empty.txt"))
    with pytest.raises(FileNotFoundError, match=r"test\.txt not found"):
        data.resolve(f"voc:{voc_tiny_dir}", "test")  # VOC 2012 has no public test masks: no list file
    assert cli.main(["evaluate", "--model", tiny_model_file,
                     "--data", f"folder:{images}:{masks}?list={tmp_path / 'empty.txt'}", "--no-progress"]) == 2
    _one_line_error(capsys, r"empty\.txt")


def test_zero_size_image(tmp_path, tiny_model_file, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(decoding.DataError, match=r"empty\.png: the image file is empty \(0 bytes\)"):
        decoding.read_image(str(tmp_path / "empty.png"))
    model = saving.load_model(tiny_model_file, compile=False)
    with pytest.raises(ValueError, match=r"images\[0\]: the image is empty"):
        inference.predict(model, np.zeros((0, 5, 3), np.uint8))
    assert cli.main(["predict", "--model", tiny_model_file, "--output", str(tmp_path / "out"),
                     str(tmp_path / "empty.png"), "--no-progress"]) == 2
    _one_line_error(capsys, r"empty\.png", "0 bytes")


def test_very_large_image(tmp_path, tiny_model_file, capsys):
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (90, 90, 90)).save(big)  # 6 MP, a few KB on disk
    model = saving.load_model(tiny_model_file, compile=False)
    with pytest.raises(decoding.DataError, match=r"big\.png: 3000x2000 pixels is above the limit of 1,000,000 "
                                                 r"\(max_pixels=\).*downscale the image or raise max_pixels="):
        with pytest.MonkeyPatch.context() as patch:  # refused from its header, before its pixels take memory
            patch.setattr(decoding, "read_image", lambda path: pytest.fail(f"{path} was decoded"))
            inference.predict_files(model, [str(big)], str(tmp_path / "out"), max_pixels=10**6, progress=False)
    assert cli.main(["predict", "--model", tiny_model_file, "--output", str(tmp_path / "out"), str(big),
                     "--max-pixels", "1000000", "--no-progress"]) == 2
    _one_line_error(capsys, r"big\.png", "--max-pixels")
    # Within the limit, --max-side bounds the model's input and the labels still come at the image's size.
    result = inference.predict_files(model, [str(big)], str(tmp_path / "out"), max_side=256, progress=False)
    assert Image.open(result["written"][str(big)]).size == (3000, 2000)
    # Pillow's decompression-bomb guard (images over ~179 MP) is a DataError too.
    original = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 1000  # the guard trips at twice this
        with pytest.raises(decoding.DataError, match=r"big\.png: the image is too large to decode safely"):
            decoding.read_image(str(big))
    finally:
        Image.MAX_IMAGE_PIXELS = original


def test_wrong_num_classes_for_checkpoint(tmp_path, tiny_model_file, capsys):
    with pytest.raises(ValueError, match=r"tiny\.keras' predicts 4 classes, not num_classes=21; leave "
                                         "num_classes out"):
        runs.load_inference_model(tiny_model_file, num_classes=21)
    from tests.conftest import TINY_BACKBONE

    model = models.RefineNet(num_classes=21, backbone=TINY_BACKBONE, backbone_weights=None, variant="light_weight",
                             decoder_features=16)
    weights = tiny_model_file.replace(".keras", ".weights.h5")
    with pytest.raises(ValueError, match=r"tiny\.weights\.h5' do not fit model .*21 classes.*same preset and "
                                         "class count"):
        runs.load_weights_checked(model, weights)
    assert cli.main(["predict", "--model", tiny_model_file, "--num-classes", "21", "--output",
                     str(tmp_path / "out"), tiny_model_file, "--no-progress"]) == 2
    _one_line_error(capsys, r"tiny\.keras", "--num-classes 21")


def test_checkpoint_of_another_variant(tmp_path, tiny_model_file):
    from tests.conftest import TINY_BACKBONE

    slim = models.RefineNet(num_classes=4, backbone=TINY_BACKBONE, backbone_weights=None, variant="slim",
                            decoder_features=16)
    with pytest.raises(ValueError, match=r"tiny\.weights\.h5' do not fit model 'refinenet_slim"):
        runs.load_weights_checked(slim, tiny_model_file.replace(".keras", ".weights.h5"))


def test_non_image_in_predict_folder(tmp_path, tiny_model_file, capsys):
    folder = tmp_path / "inputs"
    folder.mkdir()
    _jpeg(folder / "photo.jpg")
    (folder / "notes.txt").write_text("not an image")  # conversion: no image extension, not an input
    (folder / "fake.jpg").write_text("not an image either")  # an image name: an error naming it
    model = saving.load_model(tiny_model_file, compile=False)
    assert inference.collect_images([str(folder)]) == [str(folder / "fake.jpg"), str(folder / "photo.jpg")]
    with pytest.raises(decoding.DataError, match=r"fake\.jpg: cannot read this image"):
        inference.predict_files(model, [str(folder)], str(tmp_path / "out"), progress=False)
    result = inference.predict_files(model, [str(folder)], str(tmp_path / "out"), skip_errors=True, progress=False)
    assert list(result["written"]) == [str(folder / "photo.jpg")] and list(result["failed"]) == [str(folder /
                                                                                                     "fake.jpg")]
    assert cli.main(["predict", "--model", tiny_model_file, "--output", str(tmp_path / "out2"), str(folder),
                     "--skip-errors", "--no-progress"]) == 1
    assert "skipped" in capsys.readouterr().err


def test_unwritable_output(tmp_path, tiny_model_file, capsys):
    # A path below a regular file cannot be created, for root too (permission bits do not stop root).
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    model = saving.load_model(tiny_model_file, compile=False)
    image = _jpeg(tmp_path / "x.jpg")
    with pytest.raises(OSError, match=r"output_dir= '.*a_file/out' is not a writable folder .*choose another folder"):
        inference.predict_files(model, [image], str(blocker / "out"), progress=False)
    for argv in (["predict", "--model", tiny_model_file, "--output", str(blocker / "out"), image, "--no-progress"],
                 ["export", "--model", tiny_model_file, "--output", str(blocker / "saved")],
                 # evaluate checks --output before it evaluates (the data spec would fail later otherwise)
                 ["evaluate", "--model", tiny_model_file, "--data", f"voc:{tmp_path / 'no_data'}", "--output",
                  str(blocker / "scores")]):
        assert cli.main(argv) == 2
        _one_line_error(capsys, "a_file", "not a writable folder")
    with pytest.raises(OSError, match="evaluation output folder .*not a writable folder"):
        evaluation.Evaluation(np.eye(2, dtype=np.int64), ("a", "b")).save(str(blocker / "scores"))
    assert blocker.read_text() == "", "the blocking file is untouched"


def test_every_case_has_a_test_and_a_documented_row():
    names = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    assert set(CASES) <= names, set(CASES) - names
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "reliability.md"), encoding="utf-8") as page:
        rows = {match for match in re.findall(r"^\| `(\w+)` \|", page.read(), flags=re.M)}
    missing = [case for case in CASES if case not in rows]
    assert not missing, f"the bad-input matrix of docs/reliability.md lacks rows for {missing}"
