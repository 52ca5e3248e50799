"""Scan a whole dataset and report every problem at once (``refinenet-tf check-data SPEC``)."""

import dataclasses

from refinenet_tf.data import decoding, sources

__all__ = ["DatasetReport", "check_dataset"]


@dataclasses.dataclass
class DatasetReport:
    """What :func:`check_dataset` found.

    Attributes:
        source: the source's name.
        examples: how many examples were checked.
        problems: one line per problem, naming the file and the fix.
        class_pixels: pixel count per mask value over the whole dataset.
    """

    source: str
    examples: int
    problems: list
    class_pixels: dict

    @property
    def ok(self):
        return not self.problems


def check_dataset(source, split="train", num_classes=None, ignore_value=None):
    """Reads every image and mask of a file source and collects every problem (it never stops at the first).

    Args:
        source: a spec string or a :class:`~refinenet_tf.data.sources.FileSource`. Listing problems (missing
            list file, ids with no file, an empty split) raise at once, as they do everywhere.
        split: the split, for spec strings.
        num_classes, ignore_value: override the source's.

    Returns:
        A :class:`DatasetReport`.
    """
    if isinstance(source, str):
        source = sources.resolve(source, split, num_classes=num_classes, ignore_value=ignore_value)
    if not isinstance(source, sources.FileSource):
        raise ValueError(f"check_dataset reads files; {source.name} is a TFDS dataset, which TFDS validated when "
                         "it was prepared.")
    problems = []
    class_pixels = {}
    for _, image_path, mask_path in source.examples:
        try:
            _, mask = decoding.read_pair(image_path, mask_path, source.num_classes, source.ignore_value)
        except decoding.DataError as error:
            problems.append(str(error))
            continue
        values, counts = _unique(mask)
        for value, count in zip(values, counts):
            class_pixels[int(value)] = class_pixels.get(int(value), 0) + int(count)
    return DatasetReport(source.name, len(source.examples), problems, dict(sorted(class_pixels.items())))


def _unique(mask):
    import numpy as np

    return np.unique(mask, return_counts=True)
