"""Writes ``tests/data/voc_tiny``: a tiny PASCAL VOC 2012 layout generated from shapes, for the tests.

Run from the repository root (``python tests/data/make_voc_tiny.py``) to regenerate it; the tests check that
the committed files are what this script writes. Nothing is copied from a dataset: four scenes of
:func:`refinenet_tf.data.synthetic.render_scene` (discs, rectangles, triangles on noisy backgrounds) at odd
VOC-like sizes, the shapes labelled with VOC class indices (disc = cat 8, rectangle = dog 12, triangle =
person 15), saved as the VOC devkit saves them:

- ``VOCdevkit/VOC2012/JPEGImages/ID.jpg``: RGB JPEG;
- ``VOCdevkit/VOC2012/SegmentationClass/ID.png``: 8-bit palette PNG (the VOC colour map) of class indices,
  with 255 on a one-pixel border around every shape, as VOC marks object boundaries;
- ``VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt``: two training and two validation ids.
"""

import os
import sys

import numpy as np
from PIL import Image

#: ``(id, split, (height, width))`` of each scene.
SCENES = (("shapes_0001", "train", (75, 100)), ("shapes_0002", "train", (64, 81)),
          ("shapes_0003", "val", (70, 93)), ("shapes_0004", "val", (57, 83)))
#: synthetic shape class -> VOC class index (background stays 0, borders stay 255).
VOC_CLASS_OF_SHAPE = {1: 8, 2: 12, 3: 15}
SEED = 13


def voc_palette():
    """The PASCAL VOC colour map of the devkit (``labelcolormap``), 256 x 3 bytes."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = red, green, blue
    return palette


def write_voc_tiny(root):
    """Writes the tree under ``root`` (``root/VOCdevkit/VOC2012``) and returns the ``VOC2012`` folder."""
    from refinenet_tf.data import synthetic

    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    for folder in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(voc, folder), exist_ok=True)
    rng = np.random.default_rng(SEED)
    palette = voc_palette().reshape(-1).tolist()
    for example_id, _, (height, width) in SCENES:
        image, shapes = synthetic.render_scene(rng, height, width, max_shapes=3)
        labels = shapes.copy()
        for shape, voc_class in VOC_CLASS_OF_SHAPE.items():
            labels[shapes == shape] = voc_class
        if not (255 in labels and (labels % 255).max() > 0):
            raise RuntimeError(f"{example_id}: the scene has no shape; change SEED")
        Image.fromarray(image).save(os.path.join(voc, "JPEGImages", f"{example_id}.jpg"), quality=90)
        mask = Image.fromarray(labels, mode="L").convert("P")
        mask.putpalette(palette)
        mask.save(os.path.join(voc, "SegmentationClass", f"{example_id}.png"))
    for split in ("train", "val", "trainval"):
        ids = [example_id for example_id, scene_split, _ in SCENES if split in (scene_split, "trainval")]
        with open(os.path.join(voc, "ImageSets", "Segmentation", f"{split}.txt"), "w") as stream:
            stream.write("\n".join(ids) + "\n")
    return voc


if __name__ == "__main__":
    print(write_voc_tiny(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "voc_tiny")))
