"""TFDS builder for PASCAL VOC 2012 semantic segmentation (images with per-pixel class masks).

The stock TFDS ``voc`` dataset holds bounding boxes only; this builder, registered as
``voc2012_segmentation``, reads the ``SegmentationClass`` masks of the official
``VOCtrainval_11-May-2012.tar``. Importing :mod:`refinenet_tf.data` (or this module) registers it;
nothing else happens at import time.

Each example holds:

* ``image``: ``uint8`` tensor of shape ``(H, W, 3)`` (the original JPEG bytes are stored as is);
* ``segmentation_mask``: ``uint8`` tensor of shape ``(H, W, 1)`` with the class index of every pixel,
  0..20 (see :data:`CLASS_NAMES`), and 255 for the "ignore" pixels on object boundaries and on
  difficult objects. These are the palette *indices* of the VOC PNG files, not their colours: the
  masks are read with Pillow, because TensorFlow's PNG decoder turns a palette PNG into RGB colours;
* ``file_name``: the image id, e.g. ``2007_000032``.

Splits: ``train`` (1464 images, ``ImageSets/Segmentation/train.txt``) and ``validation`` (1449 images,
``ImageSets/Segmentation/val.txt``).

Usage, downloading the tar (about 2 GB) from the VOC site::

    import tensorflow_datasets as tfds
    import refinenet_tf.data  # registers "voc2012_segmentation"

    train = tfds.load("voc2012_segmentation", split="train", data_dir="~/tensorflow_datasets")

or, with the tar (or the ``VOCdevkit`` directory extracted from it) already in ``/path/to/manual``::

    download_config = tfds.download.DownloadConfig(manual_dir="/path/to/manual")
    train = tfds.load("voc2012_segmentation", split="train", data_dir="~/tensorflow_datasets",
                      download_and_prepare_kwargs={"download_config": download_config})

    # or, equivalently, in two steps:
    builder = tfds.builder("voc2012_segmentation", data_dir="~/tensorflow_datasets")
    builder.download_and_prepare(download_config=download_config)
    train = builder.as_dataset(split="train")

Note: ``download_and_prepare`` of TFDS 4.9.10 (with or without ``manual_dir``) imports
``importlib_resources`` (to locate the builder's checksums file), which TFDS does not declare as a
dependency; ``refinenet_tf`` declares it.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from refinenet_tf.data import decoding, sources

__all__ = ["CLASS_NAMES", "IGNORE_INDEX", "TRAINVAL_TAR_NAME", "TRAINVAL_URL", "Voc2012Segmentation"]

CLASS_NAMES = sources.VOC_CLASSES
"""The 21 VOC classes; a mask value ``i`` in ``0..20`` means ``CLASS_NAMES[i]``."""

IGNORE_INDEX = 255
"""Mask value of pixels to ignore (object boundaries and difficult objects); kept as is."""

TRAINVAL_TAR_NAME = "VOCtrainval_11-May-2012.tar"
TRAINVAL_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/" + TRAINVAL_TAR_NAME

_HOMEPAGE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"

_CITATION = """\
@misc{pascal-voc-2012,
  author = "Everingham, M. and Van~Gool, L. and Williams, C. K. I. and Winn, J. and Zisserman, A.",
  title = "The {PASCAL} {V}isual {O}bject {C}lasses {C}hallenge 2012 {(VOC2012)} {R}esults",
  howpublished = "http://www.pascal-network.org/challenges/VOC/voc2012/workshop/index.html"}
"""

_DESCRIPTION = """\
PASCAL VOC 2012 semantic segmentation: the images of the "Segmentation" image sets of
VOCtrainval_11-May-2012 with their per-pixel class masks (SegmentationClass).

`segmentation_mask` holds, for every pixel, the index of one of the 21 classes:
0 background, 1 aeroplane, 2 bicycle, 3 bird, 4 boat, 5 bottle, 6 bus, 7 car, 8 cat, 9 chair,
10 cow, 11 diningtable, 12 dog, 13 horse, 14 motorbike, 15 person, 16 pottedplant, 17 sheep,
18 sofa, 19 train, 20 tvmonitor;
255 = ignore (object boundaries and difficult objects), kept as 255.
`file_name` is the VOC image id (e.g. 2007_000032).
"""

_VOC_ROOT_IN_ARCHIVE = "VOCdevkit/VOC2012"

_SPLITS = {tfds.Split.TRAIN: "train", tfds.Split.VALIDATION: "val"}


class Voc2012Segmentation(tfds.core.GeneratorBasedBuilder):
    """PASCAL VOC 2012 semantic segmentation: ``train`` (1464) and ``validation`` (1449) images with masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: VOC 2012 Segmentation train/val images, class-index masks "
                 "(255 = ignore kept) and image ids.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Optional: without a manual directory the builder downloads {TRAINVAL_URL}.
To build offline, put in the manual directory (`tfds.download.DownloadConfig(manual_dir=...)`) either
  * the official archive `{TRAINVAL_TAR_NAME}` itself (it is extracted into the TFDS download
    directory), or
  * the `VOCdevkit` directory extracted from it, i.e. `<manual_dir>/VOCdevkit/VOC2012/` with
    `JPEGImages/`, `SegmentationClass/` and `ImageSets/Segmentation/{{train,val}}.txt`.
An extracted `VOCdevkit` is used in preference to the archive.
"""

    def _info(self):
        """Returns the dataset metadata: features, supervised keys, homepage and citation."""
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "segmentation_mask": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                                         encoding_format="png"),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "segmentation_mask"),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        """Finds the VOC 2012 directory (manual dir first, else download) and returns the two splits.

        Args:
            dl_manager: The ``tfds.download.DownloadManager`` of the build.

        Returns:
            A dict mapping ``"train"`` and ``"validation"`` to their example generators.
        """
        voc_root = _find_voc_root_in_manual_dir(dl_manager)
        if voc_root is None:
            voc_root = dl_manager.download_and_extract(TRAINVAL_URL) / _VOC_ROOT_IN_ARCHIVE
        return {split: self._generate_examples(voc_root, voc_split) for split, voc_split in _SPLITS.items()}

    def _generate_examples(self, voc_root, voc_split):
        """Yields ``(image_id, example)`` for every id of the split's list, read by the data package's readers.

        Args:
            voc_root: ``epath.Path`` of the ``VOCdevkit/VOC2012`` directory.
            voc_split: the list in ``ImageSets/Segmentation`` (``"train"`` or ``"val"``).

        Yields:
            ``(image_id, {"image": jpeg_bytes, "segmentation_mask": (H, W, 1) uint8, "file_name": id})``.

        Raises:
            FileNotFoundError: The list file, or the JPEG or PNG of a listed id, does not exist.
            ValueError: A list is empty, an image or mask is unreadable, a mask holds colours or values other
                than 0..20 and 255, or an image and its mask differ in size (:class:`DataError`, naming the file).
        """
        source = sources.voc_source(os.fspath(voc_root), voc_split)
        for image_id, jpeg_path, png_path in source.examples:
            _, mask = decoding.read_pair(jpeg_path, png_path, num_classes=len(CLASS_NAMES), ignore_value=IGNORE_INDEX)
            with open(jpeg_path, "rb") as stream:
                jpeg_bytes = stream.read()
            yield image_id, {"image": jpeg_bytes, "segmentation_mask": mask[:, :, np.newaxis],
                             "file_name": image_id}


def _find_voc_root_in_manual_dir(dl_manager):
    """Returns ``VOCdevkit/VOC2012`` from the manual directory, or ``None`` when it holds neither form.

    An extracted ``<manual_dir>/VOCdevkit/VOC2012`` is used as is; a ``<manual_dir>/VOCtrainval_11-May-2012.tar``
    is extracted by ``dl_manager`` into the TFDS download directory.
    """
    try:
        manual_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS: no manual directory, or one that does not exist or is empty
        return None
    extracted_root = manual_dir / _VOC_ROOT_IN_ARCHIVE
    if extracted_root.is_dir():
        return extracted_root
    tar_path = manual_dir / TRAINVAL_TAR_NAME
    if tar_path.exists():
        return dl_manager.extract(tar_path) / _VOC_ROOT_IN_ARCHIVE
    return None
