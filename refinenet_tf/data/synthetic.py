"""A deterministic synthetic segmentation dataset in the PASCAL VOC layout, for the demo and for tests.

Scenes hold discs, rectangles and triangles (classes 1-3, background 0) of random sizes and positions, each
in a random colour so that colour does not give the class, overlapping (later shapes hide earlier ones), on
noisy, smoothly varying backgrounds. Masks are palette PNGs with a 255 border around every shape, like VOC's.

:func:`write_rgbd_dataset` writes RGB-D scenes (:func:`render_rgbd_scene`) for joint segmentation and depth:
shapes standing at known depths on a floor that recedes to a back wall, with holes of missing depth, and in the
training split some scenes without a mask and some without depth (asymmetric annotations), in the folder layout
of the ``folder:IMAGES:MASKS?depth=DEPTHS`` spec.
"""

import os
import urllib.parse

import numpy as np
from PIL import Image

from refinenet_tf.data import visualization

__all__ = ["RGBD_CLASSES", "RGBD_DEPTH_SCALE", "SHAPE_CLASSES", "render_rgbd_scene", "render_scene",
           "write_rgbd_dataset", "write_shapes_dataset"]

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
    eroded, dilated = mask.copy(), mask.copy()
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
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        ids = []
        for index in range(count):
            example_id = f"{split}_{index:05d}"
            image, labels = render_scene(rng, height, width)
            Image.fromarray(image).save(os.path.join(folders["JPEGImages"], f"{example_id}.jpg"), quality=95)
            visualization.save_label_png(os.path.join(folders["SegmentationClass"], f"{example_id}.png"), labels)
            ids.append(example_id)
        with open(os.path.join(folders["ImageSets/Segmentation"], f"{split}.txt"), "w") as stream:
            stream.write("\n".join(ids) + "\n")
    return voc


#: Class names of the synthetic RGB-D scenes.
RGBD_CLASSES = ("wall", "floor", "disc", "rectangle", "triangle")

#: Depth PNG units per metre of :func:`write_rgbd_dataset` (millimetres).
RGBD_DEPTH_SCALE = 1000

# Object colours are drawn from this short list, so the same colour appears at every depth: depth must be read
# from the geometry (where an object stands on the floor, its size), not from the colour.
_OBJECT_COLOURS = np.array([[200, 40, 40], [40, 160, 60], [50, 80, 210], [220, 200, 50]], np.float32)


def render_rgbd_scene(rng, height=160, width=160, max_shapes=4, max_holes=3):
    """One RGB-D scene: ``(image [H, W, 3] uint8, mask [H, W] uint8, depth [H, W] float32 metres)``.

    A pinhole camera looks at a floor (class 1) receding from 1 m at the bottom row to a back wall (class 0) at
    5-9 m; discs, rectangles and triangles (classes 2-4) stand on the floor at random depths, facing the camera,
    their size and the row where they touch the floor following the perspective, nearer ones hiding farther ones.
    Wall and floor colours are random, object colours come from four shared ones; the floor carries a checker
    pattern of 0.5 m tiles. The mask has 255 borders around objects; the depth has 0 (missing) in up to
    ``max_holes`` elliptic holes, as a structured-light sensor leaves them.

    Example:
        >>> image, mask, depth = render_rgbd_scene(np.random.default_rng(0), 33, 47)
        >>> image.shape, mask.shape, depth.dtype, bool(depth.max() <= 9.0)
        ((33, 47, 3), (33, 47), dtype('float32'), True)
    """
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = rng.uniform(0.25, 0.4) * height
    wall_depth = rng.uniform(5.0, 9.0)
    focal = 1.0 * (height - 1 - horizon)  # floor depth at row r: focal / (r - horizon), 1 m at the bottom row
    below = np.maximum(rows - horizon, 1e-3)
    floor_depth = focal / below
    on_floor = (rows > horizon) & (floor_depth < wall_depth)
    depth = np.where(on_floor, floor_depth, wall_depth).astype(np.float32)
    labels = np.where(on_floor, 1, 0).astype(np.uint8)

    image = np.empty((height, width, 3), np.float32)
    image[:] = rng.uniform(60, 200, 3)
    floor_colour = rng.uniform(60, 200, 3)
    lateral = (cols - width / 2) * depth / focal
    checker = (np.floor(depth / 0.5) + np.floor(lateral / 0.5)) % 2
    image[on_floor] = floor_colour + 25 * (checker[on_floor, None] - 0.5)
    image += rng.normal(0, 8, image.shape)

    borders = np.zeros((height, width), bool)
    objects = sorted(rng.uniform(1.3, 0.8 * wall_depth, rng.integers(1, max_shapes + 1)), reverse=True)
    for object_depth in objects:  # far to near: nearer objects hide farther ones
        kind = int(rng.integers(2, 5))
        base = horizon + focal / object_depth  # the row where the object touches the floor
        size = rng.uniform(0.6, 1.0) * focal / object_depth
        cx = rng.uniform(0.1, 0.9) * width
        cy = base - size / 2
        if kind == 2:
            shape = (rows - cy) ** 2 + (cols - cx) ** 2 <= (size / 2) ** 2
        elif kind == 3:
            shape = (np.abs(rows - cy) <= size / 2) & (np.abs(cols - cx) <= size * rng.uniform(0.2, 0.5))
        else:
            top = base - size
            shape = (rows >= top) & (rows <= base) & (np.abs(cols - cx) <= (rows - top) / 2)
        if shape.sum() < 12:
            continue
        colour = _OBJECT_COLOURS[rng.integers(len(_OBJECT_COLOURS))]
        image[shape] = colour + rng.normal(0, 10, (int(shape.sum()), 3))
        labels[shape] = kind
        depth[shape] = object_depth
        borders = (borders & ~shape) | _border(shape)
    labels[borders] = 255
    for _ in range(rng.integers(0, max_holes + 1)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(0.03, 0.1, 2) * np.array([height, width])
        depth[((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1] = 0.0
    return np.clip(image, 0, 255).astype(np.uint8), labels, depth


def write_rgbd_dataset(root, num_train=400, num_val=100, height=160, width=160, seed=0,
                       missing_mask_fraction=0.2, missing_depth_fraction=0.2):
    """Writes :func:`render_rgbd_scene` scenes in the RGB-D folder layout; returns the spec of each split.

    Layout: ``root/images/ID.jpg``, ``root/masks/ID.png`` (palette PNG), ``root/depth/ID.png`` (16-bit PNG,
    millimetres: ``depth_scale=1000``), ``root/train.txt`` and ``root/val.txt`` (the ids). In the training split
    exactly ``round(missing_mask_fraction * num_train)`` scenes have no mask file and
    ``round(missing_depth_fraction * num_train)`` others no depth file (a scene never lacks both); validation
    scenes have both. The same arguments always write the same files.

    Returns:
        ``{"train": spec, "val": spec}``, spec strings for :func:`refinenet_tf.data.make_dataset`.

    Example:
        >>> import tempfile
        >>> specs = write_rgbd_dataset(tempfile.mkdtemp(), num_train=4, num_val=1, height=24, width=32)
        >>> specs["train"].startswith("folder:"), "depth_scale=1000" in specs["train"]
        (True, True)
    """
    root = os.path.abspath(os.fspath(root))
    if ":" in root:
        raise ValueError(f"write_rgbd_dataset: root={root!r} holds ':', which the folder spec cannot carry.")
    if not (0 <= missing_mask_fraction and 0 <= missing_depth_fraction
            and missing_mask_fraction + missing_depth_fraction <= 1):
        raise ValueError("missing_mask_fraction and missing_depth_fraction must be >= 0 and add up to at most 1, "
                         f"got {missing_mask_fraction} and {missing_depth_fraction}.")
    folders = {name: os.path.join(root, name) for name in ("images", "masks", "depth")}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = {}
    for split, count in (("train", num_train), ("val", num_val)):
        order = rng.permutation(count)
        no_mask, no_depth = set(), set()
        if split == "train":
            masks_missing = int(round(missing_mask_fraction * count))
            depths_missing = int(round(missing_depth_fraction * count))
            no_mask = set(order[:masks_missing].tolist())
            no_depth = set(order[masks_missing:masks_missing + depths_missing].tolist())
        ids = []
        for index in range(count):
            example_id = f"{split}_{index:05d}"
            image, labels, depth = render_rgbd_scene(rng, height, width)
            Image.fromarray(image).save(os.path.join(folders["images"], f"{example_id}.jpg"), quality=95)
            if index not in no_mask:
                visualization.save_label_png(os.path.join(folders["masks"], f"{example_id}.png"), labels)
            if index not in no_depth:
                stored = np.round(depth * RGBD_DEPTH_SCALE).astype(np.uint16)
                Image.fromarray(stored).save(os.path.join(folders["depth"], f"{example_id}.png"))
            ids.append(example_id)
        list_file = os.path.join(root, f"{split}.txt")
        with open(list_file, "w") as stream:
            stream.write("\n".join(ids) + "\n")
        query = urllib.parse.urlencode({"depth": folders["depth"], "depth_scale": RGBD_DEPTH_SCALE,
                                        "num_classes": len(RGBD_CLASSES), "list": list_file,
                                        "allow_missing": "mask,depth"}, safe="/,")
        specs[split] = f"folder:{folders['images']}:{folders['masks']}?{query}"
    return specs
