"""Data for RefineNet: sources (VOC 2012, VOC + SBD, folders, TFDS), transforms and ``tf.data`` pipelines.

Importing this package registers the TFDS builders ``voc2012_segmentation`` and ``nyu_depth_v2_segmentation``.

Example:
    >>> from refinenet_tf import data
    >>> sorted(data.TFDS_ADAPTERS)
    ['nyu_depth_v2_segmentation', 'oxford_iiit_pet', 'scene_parse150', 'voc2012_segmentation']
"""

from refinenet_tf.data import (checks, decoding, distillation, nyu_depth_v2_segmentation, pipeline, sources,
                               transforms, voc2012_segmentation)
from refinenet_tf.data.checks import DatasetReport, check_dataset
from refinenet_tf.data.decoding import DataError
from refinenet_tf.data.distillation import fill_missing_labels
from refinenet_tf.data.pipeline import make_dataset, read_examples
from refinenet_tf.data.sources import TFDS_ADAPTERS, FileSource, TfdsSource, folder_source, resolve, voc_source

__all__ = ["DataError", "DatasetReport", "FileSource", "TFDS_ADAPTERS", "TfdsSource", "check_dataset",
           "fill_missing_labels", "folder_source", "make_dataset", "read_examples", "resolve", "voc_source"]
