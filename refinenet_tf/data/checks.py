"""Scan a whole dataset and report every problem at once (``refinenet-tf check-data SPEC``).

RGB-D sources are checked file by file too: every image, mask and depth map is read, and a bad depth file (8-bit,
NaN, negative, a size other than its image's) is a problem line naming it, which ``check-data`` prints.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np

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
        missing_masks: examples without a mask file (``allow_missing=mask``).
        missing_depths: examples without a depth file (``allow_missing=depth``); ``None`` for sources without depth.
        depth_pixels: valid (non-zero) depth pixels read; ``None`` for sources without depth.
        depth_range: ``(smallest, largest)`` valid depth in metres, ``None`` when there is none.
    """

    source: str
    examples: int
    problems: list
    class_pixels: dict
    missing_masks: int = 0
    missing_depths: Optional[int] = None
    depth_pixels: Optional[int] = None
    depth_range: Optional[Tuple[float, float]] = None

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
    problems, class_pixels = [], {}
    depths = source.depths or ("",) * len(source.examples)
    depth_pixels, low, high = 0, float("inf"), 0.0
    for (_, image_path, mask_path), depth_path in zip(source.examples, depths):
        try:
            if source.has_depth:
                _, mask, depth = decoding.read_example(image_path, mask_path, depth_path, source.num_classes,
                                                       source.ignore_value, source.depth_scale)
                valid = depth[depth > 0]
                if valid.size:
                    depth_pixels += int(valid.size)
                    low, high = min(low, float(valid.min())), max(high, float(valid.max()))
            else:
                _, mask = decoding.read_pair(image_path, mask_path, source.num_classes, source.ignore_value)
        except decoding.DataError as error:
            problems.append(str(error))
            continue
        if not mask_path:
            continue
        values, counts = np.unique(mask, return_counts=True)
        for value, count in zip(values, counts):
            class_pixels[int(value)] = class_pixels.get(int(value), 0) + int(count)
    report = DatasetReport(source.name, len(source.examples), problems, dict(sorted(class_pixels.items())),
                           missing_masks=sum(1 for example in source.examples if not example[2]))
    if source.has_depth:
        report.missing_depths = sum(1 for path in source.depths if not path)
        report.depth_pixels = depth_pixels
        report.depth_range = (low, high) if depth_pixels else None
    return report
