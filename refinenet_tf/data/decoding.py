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
========================  =========================================================================
"""

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["DataError", "check_mask_values", "read_image", "read_mask", "read_pair"]


class DataError(ValueError):
    """A bad data file; the message names the file and what to do."""


def _open(path, what, load=True):
    try:
        if os.path.getsize(path) == 0:
            raise DataError(f"{path}: the {what} file is empty (0 bytes); replace or remove it.")
        image = Image.open(path)
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
    image = _open(path, "image", load=False)
    try:
        return image.size
    finally:
        image.close()


def read_image(path):
    """Reads an image file as ``[H, W, 3]`` uint8 RGB, converting grayscale, alpha and palette images."""
    image = _open(path, "image")
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


def read_mask(path):
    """Reads an index mask (palette or grayscale PNG) as ``[H, W]`` uint8 class indices."""
    mask = _open(path, "mask")
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


def read_pair(image_path, mask_path, num_classes=None, ignore_value=255):
    """Reads and validates one example: ``(image [H, W, 3] uint8, mask [H, W] uint8)``."""
    image = read_image(image_path)
    mask = read_mask(mask_path)
    if image.shape[:2] != mask.shape:
        raise DataError(f"{image_path} is {image.shape[1]}x{image.shape[0]} but its mask {mask_path} is "
                        f"{mask.shape[1]}x{mask.shape[0]}; image and mask must have the same size.")
    check_mask_values(mask, num_classes, ignore_value, mask_path)
    return image, mask
