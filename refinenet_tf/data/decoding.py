"""Reading images and index masks from files, with a clear error for every kind of bad file.

Masks are read with Pillow because TensorFlow's PNG decoder turns a palette PNG (the VOC
``SegmentationClass`` format) into its colours; Pillow returns the class indices themselves.

Conversions that are well defined are made and documented; everything else is an error naming the file:

========================  =========================================================================
input                     result
========================  =========================================================================
RGB image                 used as is
grayscale image (L, LA)   converted to RGB (the gray value in all three channels)
RGBA / LA image           alpha dropped (RGB kept) -- transparency has no meaning for segmentation
palette image (P)         converted to RGB through its palette
16-bit / float image      error: the scaling to [0, 255] is ambiguous; convert to 8 bits first
palette or L mask         the stored indices are the classes
16-bit mask (I;16, I)     accepted when every value is <= 255 (indices), else error
RGB / RGBA mask           error: colours are not indices; store the class indices (palette or L PNG)
16-bit PNG depth          divided by ``depth_scale`` (5000 for NYUDv2, 256 for KITTI, 1000 for mm); 0 = missing
``.npy`` depth            float: metres as stored; integer: divided by ``depth_scale``
float TIFF depth (F)      metres as stored (``.tif`` / ``.tiff``)
8-bit depth               error: 256 levels cannot hold depth; store it as a 16-bit PNG
NaN / inf / negative      error (mark missing depth with 0)
========================  =========================================================================

Every reader takes the file's path and, optionally, its ``contents`` (the encoded bytes, already read, e.g. by
``tf.io.read_file`` in a pipeline that caches the files in memory); the path then only names the file in errors.
"""

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["DEPTH_EXTENSIONS", "DataError", "check_mask_values", "read_depth", "read_example", "read_image",
           "read_mask", "read_pair"]

#: Depth file formats :func:`read_depth` accepts.
DEPTH_EXTENSIONS = (".png", ".npy", ".tif", ".tiff")


class DataError(ValueError):
    """A bad data file; the message names the file and what to do."""


def _open(path, what, load=True, contents=None):
    try:
        if (len(contents) if contents is not None else os.path.getsize(path)) == 0:
            raise DataError(f"{path}: the {what} file is empty (0 bytes); replace or remove it.")
        image = Image.open(path if contents is None else io.BytesIO(contents))
        if load:
            image.load()
        return image
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found; check the dataset path and list file.") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"{path}: the {what} is too large to decode safely ({error}); downscale it first.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(f"{path}: cannot read this {what} ({error}); the file is corrupt, truncated or not an "
                        "image: replace or remove it.") from None


def image_size(path):
    """``(width, height)`` of an image file, read from its header without decoding the pixels.

    Lets a caller refuse a huge image before it takes memory; unreadable files raise :class:`DataError` as in
    :func:`read_image`.
    """
    with _open(path, "image", load=False) as image:
        return image.size


def read_image(path, contents=None):
    """Reads an image file as ``[H, W, 3]`` uint8 RGB, converting grayscale, alpha and palette images.

    ``contents``: the file's bytes, if already read (``path`` then names it in errors).
    """
    image = _open(path, "image", contents=contents)
    if image.mode in ("RGB",):
        array = np.asarray(image)
    elif image.mode in ("L", "LA", "RGBA", "P", "PA", "CMYK", "YCbCr", "1"):
        array = np.asarray(image.convert("RGB"))
    else:
        raise DataError(f"{path}: image mode {image.mode!r} (16-bit or float) has no unambiguous 8-bit RGB "
                        "conversion; convert it to an 8-bit RGB JPEG or PNG first.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{path}: the image is empty ({array.shape[1]}x{array.shape[0]} pixels); remove it.")
    return np.ascontiguousarray(array, dtype=np.uint8)


def read_mask(path, contents=None):
    """Reads an index mask (palette or grayscale PNG) as ``[H, W]`` uint8 class indices (``contents``: as
    :func:`read_image`)."""
    mask = _open(path, "mask", contents=contents)
    if mask.mode in ("P", "L"):
        return np.ascontiguousarray(np.asarray(mask), dtype=np.uint8)
    if mask.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(mask)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DataError(f"{path}: 16-bit mask with values up to {values.max()}; class indices must be "
                            "0-255 (255 = ignore): store them as an 8-bit palette or grayscale PNG.")
        return values.astype(np.uint8)
    raise DataError(f"{path}: mask mode {mask.mode!r} holds colours, not class indices; save the mask as a "
                    "palette ('P') or grayscale ('L') PNG whose pixel values are the class indices.")


def check_mask_values(mask, num_classes, ignore_value, path):
    """Raises :class:`DataError` if ``mask`` has a value outside ``[0, num_classes)`` and ``ignore_value``."""
    if num_classes is None:
        return
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_value)]
    if bad.size:
        raise DataError(f"{path}: mask values {bad.tolist()[:10]} are outside [0, {num_classes}) and not the ignore "
                        f"value {ignore_value}; fix the mask or pass the right num_classes / ignore_value.")


def read_pair(image_path, mask_path, num_classes=None, ignore_value=255, image_contents=None, mask_contents=None):
    """Reads and validates one example: ``(image [H, W, 3] uint8, mask [H, W] uint8)``.

    ``image_contents`` / ``mask_contents``: the files' bytes, if already read (the paths then name them in errors).
    """
    image = read_image(image_path, image_contents)
    mask = read_mask(mask_path, mask_contents)
    if image.shape[:2] != mask.shape:
        raise DataError(f"{image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
                        f"{mask.shape[1]}x{mask.shape[0]}; image and mask must have the same size.")
    check_mask_values(mask, num_classes, ignore_value, mask_path)
    return image, mask


def read_depth(path, depth_scale, contents=None):
    """Reads a depth map as ``[H, W]`` float32 metres; 0 marks missing depth.

    Args:
        path: a 16-bit PNG (stored value / ``depth_scale``), a ``.npy`` array (float: metres; integer: divided
            by ``depth_scale``) or a float TIFF (metres).
        depth_scale: stored units per metre of the integer formats: 5000 for NYUDv2 (DenseTorch's), 256 for
            KITTI, 1000 for millimetres.
        contents: the file's bytes, if already read (``path`` then names it and gives its format).
    """
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in DEPTH_EXTENSIONS:
        raise DataError(f"{path}: depth files must be {', '.join(DEPTH_EXTENSIONS)}; convert it to a 16-bit PNG.")
    if extension == ".npy":
        try:
            values = np.load(path if contents is None else io.BytesIO(contents), allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path}: depth file not found; check the dataset path and list file.") from None
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read this depth array ({error}); replace or remove it.") from None
        if values.ndim == 3 and values.shape[-1] == 1:
            values = values[..., 0]
        if values.ndim != 2 or not (np.issubdtype(values.dtype, np.floating) or
                                     np.issubdtype(values.dtype, np.integer)):
            raise DataError(f"{path}: depth array of shape {values.shape} and dtype {values.dtype}; store one "
                            "[H, W] float array in metres.")
        integer = np.issubdtype(values.dtype, np.integer)
    else:
        image = _open(path, "depth", contents=contents)
        if image.mode in ("L", "P", "1", "LA", "PA"):
            raise DataError(f"{path}: 8-bit depth ({image.mode!r}) where 16-bit is expected: 256 levels cannot hold "
                            "depth; store the depth as a 16-bit PNG (e.g. millimetres with depth_scale=1000).")
        if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
            raise DataError(f"{path}: depth image mode {image.mode!r} (colour?) is not a depth map; store one "
                            "channel of 16-bit integers (PNG) or 32-bit floats (TIFF).")
        values = np.asarray(image)
        integer = image.mode != "F"
    if not integer:
        values = values.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise DataError(f"{path}: the depth holds {int(np.sum(~np.isfinite(values)))} NaN or infinite "
                            "value(s); mark missing depth with 0 instead.")
    if values.size and values.min() < 0:
        raise DataError(f"{path}: the depth holds negative values (down to {values.min()}); depth is a distance, "
                        "mark missing depth with 0.")
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise DataError(f"{path}: the depth map is empty; remove it.")
    if integer:
        if not depth_scale or depth_scale <= 0:
            raise DataError(f"{path}: integer depth needs depth_scale= (stored units per metre: 5000 for NYUDv2, "
                            "256 for KITTI, 1000 for millimetres).")
        return (values.astype(np.float32) / np.float32(depth_scale)).astype(np.float32)
    return np.ascontiguousarray(values, dtype=np.float32)


def read_example(image_path, mask_path, depth_path, num_classes=None, ignore_value=255, depth_scale=None,
                 image_contents=None, mask_contents=None, depth_contents=None):
    """Reads and validates an RGB-D example: ``(image [H, W, 3] uint8, mask [H, W] uint8, depth [H, W] float32)``.

    ``mask_path`` or ``depth_path`` empty (``""`` or ``None``) means that label is missing: the mask is then all
    ``ignore_value`` and the depth all 0, so the example trains the other task only. The ``*_contents``: the
    files' bytes, if already read (as :func:`read_pair`).
    """
    image = read_image(image_path, image_contents)
    size = image.shape[:2]
    if mask_path:
        mask = read_mask(mask_path, mask_contents)
        if mask.shape != size:
            raise DataError(f"{image_path} is {size[1]}x{size[0]} but its mask {mask_path} is "
                            f"{mask.shape[1]}x{mask.shape[0]}; image and mask must have the same size.")
        check_mask_values(mask, num_classes, ignore_value, mask_path)
    else:
        mask = np.full(size, ignore_value, np.uint8)
    if depth_path:
        depth = read_depth(depth_path, depth_scale, depth_contents)
        if depth.shape != size:
            raise DataError(f"{image_path} is {size[1]}x{size[0]} but its depth {depth_path} is "
                            f"{depth.shape[1]}x{depth.shape[0]}; image and depth must have the same size.")
    else:
        depth = np.zeros(size, np.float32)
    return image, mask, depth
