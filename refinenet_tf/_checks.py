"""The argument checks the package shares: one message per kind of bad argument, naming the argument."""

import operator

import numpy as np

__all__ = ["check_scales", "positive_int"]


def positive_int(name, value, hint=""):
    """``value`` as an ``int`` if it is a positive integer (not a bool), else a ``ValueError`` naming ``name``.

    Example:
        >>> positive_int("num_classes", 21)
        21
        >>> positive_int("num_classes", 0, hint="21 for PASCAL VOC")
        Traceback (most recent call last):
        ...
        ValueError: num_classes must be a positive integer (21 for PASCAL VOC), got 0.
    """
    try:
        valid = not isinstance(value, bool) and operator.index(value) >= 1
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(f"{name} must be a positive integer{f' ({hint})' if hint else ''}, got {value!r}.")
    return operator.index(value)


def check_scales(scales):
    """``scales`` as a tuple of positive floats, or a ``ValueError`` saying what is expected."""
    try:
        scales = tuple(float(scale) for scale in scales)
    except (TypeError, ValueError):
        raise ValueError(f"scales must be positive numbers, e.g. (0.75, 1.0, 1.25); got {scales!r}.") from None
    if not scales or any(not np.isfinite(scale) or scale <= 0 for scale in scales):
        raise ValueError(f"scales must be positive numbers, e.g. (0.5, 0.75, 1.0, 1.25, 1.5, 1.75); got {scales}.")
    return scales
