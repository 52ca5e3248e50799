"""Palettes, colourised label maps, overlays and atomic PNG writing.

Shared by the demo, the training run's TensorBoard images and the CLI, so that every picture of a
segmentation uses the same colours.
"""

import os

import numpy as np
from PIL import Image

from refinenet_tf._files import atomic_path

__all__ = ["colorize", "colorize_depth", "legend", "overlay", "read_palette", "save_depth_png", "save_image_png",
           "save_label_png", "voc_palette"]

def voc_palette(num_colors=256):
    """The PASCAL VOC colour map (the devkit's bit-interleaving scheme) as a ``[num_colors, 3]`` uint8 array.

    Example:
        >>> voc_palette()[:3].tolist()
        [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
        >>> voc_palette()[255].tolist()
        [224, 224, 192]
    """
    palette = np.zeros((num_colors, 3), np.uint8)
    for index in range(num_colors):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def read_palette(path):
    """Reads colours from a palette PNG (its palette) or a JSON list of ``[r, g, b]``; returns ``[256, 3]`` uint8.

    Colours past the file's own are filled from the VOC palette, so every index up to 255 has one.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"palette {path!r} does not exist.")
    if path.lower().endswith(".json"):
        import json

        try:
            with open(path) as stream:
                colors = np.asarray(json.load(stream))
        except ValueError as error:
            raise ValueError(f"palette {path!r} is not valid JSON: {error}") from None
        if colors.ndim != 2 or colors.shape[1] != 3 or len(colors) > 256 or colors.min() < 0 or colors.max() > 255:
            raise ValueError(f"palette {path!r} must be a JSON list of at most 256 [r, g, b] triples in [0, 255].")
    else:
        try:
            with Image.open(path) as image:
                colors = image.getpalette() if image.mode == "P" else None
        except OSError:
            raise ValueError(f"palette {path!r} is neither a palette PNG nor a .json file.") from None
        if colors is None:
            raise ValueError(f"palette {path!r} has no palette (mode is not 'P'); give a palette PNG or a .json "
                             "list of colours.")
        colors = np.asarray(colors).reshape(-1, 3)[:256]
    palette = voc_palette()
    palette[:len(colors)] = colors
    return palette


def _check_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D [height, width] array of class indices, got shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must lie in [0, 255] to be stored in a palette PNG, got "
                         f"[{labels.min()}, {labels.max()}].")
    return labels.astype(np.uint8)


def colorize(labels, palette=None):
    """Maps a ``[H, W]`` label map to a ``[H, W, 3]`` uint8 RGB image through ``palette`` (VOC by default)."""
    palette = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    return palette[_check_labels(labels)]


def overlay(image, labels, alpha=0.5, palette=None, ignore_background=True):
    """Blends the colourised ``labels`` over an RGB ``image`` of the same height and width.

    Args:
        image: ``[H, W, 3]`` RGB, values in [0, 255].
        labels: ``[H, W]`` class indices.
        alpha: opacity of the label colours.
        palette: colours (VOC by default).
        ignore_background: leave pixels of class 0 untouched.

    Returns:
        ``[H, W, 3]`` uint8.
    """
    image = np.asarray(image)
    labels = _check_labels(labels)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"overlay: image is {image.shape[:2]} but labels are {labels.shape}; they must match.")
    colors = colorize(labels, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colors
    if ignore_background:
        blended = np.where((labels == 0)[..., None], image.astype(np.float32), blended)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def legend(class_names, palette=None, classes=None, swatch=16, width=200):
    """A ``[rows * (swatch + 4), width, 3]`` uint8 image listing each class's colour and name.

    Args:
        class_names: name of each class index.
        palette: colours (VOC by default).
        classes: the class indices to list (default: all), e.g. those present in a prediction.
        swatch: side of each colour square in pixels.
        width: image width in pixels.

    Example:
        >>> legend(["background", "cat"]).shape
        (40, 200, 3)
    """
    from PIL import ImageDraw

    palette = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    classes = range(len(class_names)) if classes is None else [int(c) for c in classes]
    row = swatch + 4
    canvas = Image.new("RGB", (width, max(1, row * len(classes))), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for position, index in enumerate(classes):
        top = position * row + 2
        draw.rectangle([2, top, 2 + swatch, top + swatch], fill=tuple(int(v) for v in palette[index]),
                       outline=(0, 0, 0))
        draw.text((swatch + 8, top + max(0, (swatch - 11) // 2)), f"{index} {class_names[index]}", fill=(0, 0, 0))
    return np.asarray(canvas)


def _save_atomically(pil_image, path):
    """Writes ``pil_image`` as PNG to ``path`` through a temporary file in the same folder, then renames it."""
    path = os.fspath(path)
    with atomic_path(path, suffix=".png") as temporary:
        pil_image.save(temporary, format="PNG")
    return path


def save_label_png(path, labels, palette=None):
    """Saves a ``[H, W]`` label map as an 8-bit palette PNG (the VOC ``SegmentationClass`` format).

    The file holds the class indices themselves; viewers show them in the palette's colours. The write is
    atomic: an interrupted call never leaves a partial file under ``path``.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "mask.png")
        >>> _ = save_label_png(path, np.array([[0, 1], [15, 255]]))
        >>> Image.open(path).mode, np.array(Image.open(path)).tolist()
        ('P', [[0, 1], [15, 255]])
    """
    labels = _check_labels(labels)
    palette = voc_palette() if palette is None else np.asarray(palette, np.uint8)
    image = Image.fromarray(labels)  # mode "L"; putpalette turns it into "P" keeping the indices
    image.putpalette(palette.reshape(-1).tolist())
    return _save_atomically(image, path)


def save_image_png(path, image):
    """Saves a ``[H, W, 3]`` RGB image (values in [0, 255]) as PNG, atomically."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"save_image_png needs a [height, width, 3] RGB array, got shape {image.shape}.")
    return _save_atomically(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)), path)


# Anchors of the depth colour map, near to far: yellow, orange, magenta, purple, dark blue (as matplotlib's
# "plasma", sampled at five points and interpolated linearly).
_DEPTH_COLOURS = np.array([[240, 249, 33], [248, 149, 64], [204, 71, 120], [126, 3, 168], [13, 8, 135]],
                          np.float32)


def colorize_depth(depth, max_depth=None, min_depth=0.0):
    """A ``[H, W]`` depth map as a ``[H, W, 3]`` uint8 picture: near yellow through magenta to far dark blue;
    missing depth (0, or not finite) black.

    Args:
        depth: depth in metres (0 = missing).
        max_depth: the depth drawn darkest blue (default: the map's largest valid depth); farther is clipped.
        min_depth: the depth drawn yellow (0, the default: the map's smallest valid depth); nearer is clipped.

    Example:
        >>> colorize_depth(np.array([[0.0, 1.0, 5.0]]), max_depth=5.0).tolist()
        [[[0, 0, 0], [240, 249, 33], [13, 8, 135]]]
    """
    depth = np.asarray(depth, np.float32)
    if depth.ndim != 2:
        raise ValueError(f"colorize_depth needs a [height, width] depth map, got shape {depth.shape}.")
    valid = np.isfinite(depth) & (depth > 0)
    if max_depth is None:
        max_depth = float(depth[valid].max()) if valid.any() else 1.0
    low = min(min_depth, max_depth) if min_depth else (float(depth[valid].min()) if valid.any() else 0.0)
    low = min(low, max_depth)
    position = np.clip((np.where(valid, depth, low) - low) / max(max_depth - low, 1e-6), 0.0, 1.0)
    anchors = np.linspace(0.0, 1.0, len(_DEPTH_COLOURS))
    picture = np.stack([np.interp(position, anchors, _DEPTH_COLOURS[:, channel]) for channel in range(3)], -1)
    return np.where(valid[..., None], np.round(picture), 0).astype(np.uint8)


def save_depth_png(path, depth, scale=1000):
    """Saves a ``[H, W]`` depth map in metres as a 16-bit grey PNG of ``round(depth * scale)`` (millimetres by
    default; 0 = missing), atomically; depth beyond ``65535 / scale`` is stored as 65535.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "depth.png")
        >>> _ = save_depth_png(path, np.array([[0.0, 1.2345], [3.0, 70.0]]))
        >>> np.array(Image.open(path)).tolist()
        [[0, 1234], [3000, 65535]]
    """
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2:
        raise ValueError(f"save_depth_png needs a [height, width] depth map, got shape {depth.shape}.")
    stored = np.clip(np.round(np.where(np.isfinite(depth), depth, 0.0) * scale), 0, 65535).astype(np.uint16)
    return _save_atomically(Image.fromarray(stored), path)
