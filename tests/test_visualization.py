"""Palettes, overlays and atomic PNG writing."""

import os
import stat

import numpy as np
import pytest
from PIL import Image

from refinenet_tf.data import visualization


def test_label_png_keeps_indices_and_has_the_usual_permissions(tmp_path):
    labels = np.array([[0, 1, 20], [15, 255, 3]], np.uint8)
    path = visualization.save_label_png(str(tmp_path / "mask.png"), labels)
    image = Image.open(path)
    assert image.mode == "P" and np.array_equal(np.array(image), labels)
    assert image.getpalette()[3:6] == [128, 0, 0]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["mask.png"], "no temporary file left behind"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "image.png"
    visualization.save_image_png(str(path), np.zeros((4, 5, 3), np.uint8))
    before = path.read_bytes()

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        visualization.save_image_png(str(path), np.full((4, 5, 3), 255, np.uint8))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["image.png"]


def test_overlay_blends_only_labelled_pixels():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [0, 0]])
    blended = visualization.overlay(image, labels, alpha=0.5)
    assert blended[0, 0].tolist() == [100, 100, 100]
    assert blended[0, 1].tolist() == [114, 50, 50]  # half of (100, 100, 100) + half of VOC red (128, 0, 0)
    with pytest.raises(ValueError, match="must match"):
        visualization.overlay(image, np.zeros((3, 2)))


def test_bad_label_maps_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        visualization.save_label_png(str(tmp_path / "x.png"), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        visualization.save_label_png(str(tmp_path / "x.png"), np.array([[300]]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        visualization.save_label_png(str(tmp_path / "missing" / "x.png"), np.zeros((2, 2)))
