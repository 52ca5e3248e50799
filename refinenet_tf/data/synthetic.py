"""A deterministic synthetic segmentation dataset in the PASCAL VOC layout, for the demo and for tests.

Scenes hold discs, rectangles and triangles (classes 1-3, background 0) of random sizes and positions, each
in a random colour so that colour does not give the class, overlapping (later shapes hide earlier ones), on
noisy, smoothly varying backgrounds. Masks are palette PNGs with a 255 border around every shape, like VOC's.
"""

import os

import numpy as np
from PIL import Image

from refinenet_tf import visualization

__all__ = ["SHAPE_CLASSES", "render_scene", "write_shapes_dataset"]

#: Class names of the synthetic dataset.
SHAPE_CLASSES = ("background", "disc", "rectangle", "triangle")


def _background(rng, height, width):
    coarse = rng.uniform(40, 215, (4, 4, 3))
    smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR),
                        np.float32)
    return smooth + rng.normal(0, 18, (height, width, 3))


def _shape_mask(rng, kind, rows, cols, height, width):
    size = min(height, width)
    cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
    if kind == 1:
        radius = rng.uniform(0.08, 0.22) * size
        return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
    if kind == 2:
        half_h, half_w = rng.uniform(0.06, 0.2, 2) * size
        return (np.abs(rows - cy) <= half_h) & (np.abs(cols - cx) <= half_w)
    half = rng.uniform(0.1, 0.25) * size
    top = cy - half
    return (rows >= top) & (rows <= cy + half) & (np.abs(cols - cx) <= (rows - top) / 2)


def _border(mask):
    """Pixels within one pixel of the mask's edge (VOC marks object boundaries as 255)."""
    padded = np.pad(mask, 1, mode="edge")
    eroded = mask.copy()
    dilated = mask.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            window = padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
            eroded &= window
            dilated |= window
    return dilated & ~eroded


def render_scene(rng, height=160, width=160, max_shapes=4):
    """One scene: ``(image [H, W, 3] uint8, mask [H, W] uint8)`` with classes 0-3 and 255 borders."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = _background(rng, height, width)
    labels = np.zeros((height, width), np.uint8)
    borders = np.zeros((height, width), bool)
    for _ in range(rng.integers(1, max_shapes + 1)):
        kind = int(rng.integers(1, 4))
        mask = _shape_mask(rng, kind, rows, cols, height, width)
        if mask.sum() < 30:
            continue
        color = rng.uniform(0, 255, 3)
        image[mask] = color + rng.normal(0, 12, (int(mask.sum()), 3))
        labels[mask] = kind
        borders = (borders & ~mask) | _border(mask)
    labels[borders] = 255
    return np.clip(image, 0, 255).astype(np.uint8), labels


def write_shapes_dataset(root, num_train=400, num_val=100, height=160, width=160, seed=0):
    """Writes ``root/VOCdevkit/VOC2012`` with ``train`` and ``val`` splits of :func:`render_scene` scenes.

    The same arguments always write the same files. Returns the ``VOC2012`` folder.

    Example:
        >>> import tempfile
        >>> voc = write_shapes_dataset(tempfile.mkdtemp(), num_train=2, num_val=1, height=40, width=50)
        >>> sorted(os.listdir(voc))
        ['ImageSets', 'JPEGImages', 'SegmentationClass']
    """
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    folders = {name: os.path.join(voc, *name.split("/"))
               for name in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    palette = visualization.voc_palette().reshape(-1).tolist()
    rng = np.random.default_rng(seed)
    splits = {"train": num_train, "val": num_val}
    for split, count in splits.items():
        ids = []
        for index in range(count):
            example_id = f"{split}_{index:05d}"
            image, labels = render_scene(rng, height, width)
            Image.fromarray(image).save(os.path.join(folders["JPEGImages"], f"{example_id}.jpg"), quality=95)
            mask = Image.fromarray(labels)
            mask.putpalette(palette)
            mask.save(os.path.join(folders["SegmentationClass"], f"{example_id}.png"))
            ids.append(example_id)
        with open(os.path.join(folders["ImageSets/Segmentation"], f"{split}.txt"), "w") as stream:
            stream.write("\n".join(ids) + "\n")
    return voc
