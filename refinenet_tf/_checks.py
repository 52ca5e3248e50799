"""The argument checks the package shares: one message per kind of bad argument, naming the argument."""

import operator

__all__ = ["positive_int"]


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
