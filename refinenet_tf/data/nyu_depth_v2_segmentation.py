"""TFDS builder for NYU Depth v2 (labeled): RGB images, 40-class segmentation masks and depth in metres.

Registered as ``nyu_depth_v2_segmentation`` when :mod:`refinenet_tf.data` (or this module) is imported;
nothing else happens at import time. It reads the official labeled release (Silberman et al., ECCV 2012), the
1449 densely labelled frames, with the usual 40-class labels (Gupta et al., CVPR 2013) and the standard split of
795 training and 654 test images -- the setting of the multi-task Light-Weight RefineNet (Nekrasov et al.,
ICRA 2019) and of DenseTorch's NYUDv2 example.

Each example holds:

* ``image``: ``uint8`` ``(480, 640, 3)`` (stored as PNG, lossless);
* ``segmentation_mask``: ``uint8`` ``(480, 640, 1)``, the 40 classes as 0..39 (see
  :data:`refinenet_tf.data.sources.NYU40_CLASSES`), 255 for the unlabelled pixels (label 0 of the release);
* ``depth``: ``float32`` ``(480, 640)``, metres (the release's in-painted ``depths``);
* ``file_name``: the frame's 1-based index in the ``.mat`` file, four digits (``0001`` .. ``1449``).

Splits: ``train`` (795, ``trainNdxs`` of ``splits.mat``) and ``test`` (654, ``testNdxs``); the data spec
``tfds:nyu_depth_v2_segmentation`` reads ``val`` as ``test``.

Reading the HDF5 file needs ``h5py`` and the two small MATLAB files ``scipy`` (``pip install refinenet_tf[nyud]``);
both are imported when the dataset is prepared, not at import.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from refinenet_tf.data.decoding import DataError
from refinenet_tf.data.sources import NYU40_CLASSES

__all__ = ["CLASS_MAPPING_NAME", "CLASS_NAMES", "IGNORE_INDEX", "LABELED_MAT_NAME", "NyuDepthV2Segmentation",
           "SPLITS_NAME", "read_class_mapping", "read_splits"]

CLASS_NAMES = NYU40_CLASSES
"""The 40 classes; a mask value ``i`` in ``0..39`` means ``CLASS_NAMES[i]``."""

IGNORE_INDEX = 255
"""Mask value of unlabelled pixels (label 0 of the release)."""

LABELED_MAT_NAME = "nyu_depth_v2_labeled.mat"
SPLITS_NAME = "splits.mat"
CLASS_MAPPING_NAME = "classMapping40.mat"

_HOMEPAGE = "https://cs.nyu.edu/~fergus/datasets/nyu_depth_v2.html"

_CITATION = """\
@inproceedings{Silberman:ECCV12,
  author = {Nathan Silberman and Derek Hoiem and Pushmeet Kohli and Rob Fergus},
  title = {Indoor Segmentation and Support Inference from RGBD Images},
  booktitle = {ECCV}, year = {2012}}
@inproceedings{gupta2013perceptual,
  author = {Saurabh Gupta and Pablo Arbelaez and Jitendra Malik},
  title = {Perceptual Organization and Recognition of Indoor Scenes from {RGB-D} Images},
  booktitle = {CVPR}, year = {2013}}
"""

_DESCRIPTION = """\
NYU Depth v2, the 1449 densely labelled frames of nyu_depth_v2_labeled.mat: RGB image, the 894 labels mapped
to the 40 classes of Gupta et al. (classMapping40.mat; 0 = unlabelled -> 255) and the in-painted depth in
metres; standard split of 795 train / 654 test frames (splits.mat).
"""


def _mat_arrays(path, names):
    """``{name: array}`` from a MATLAB file: v5 files (scipy) and v7.3 files (HDF5, h5py) alike."""
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
        arrays = {name: np.asarray(contents[name]) for name in names if name in contents}
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        import h5py

        with h5py.File(path, "r") as stream:
            arrays = {name: np.asarray(stream[name]) for name in names if name in stream}
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read this MATLAB file ({error}); download it again.") from None
    missing = [name for name in names if name not in arrays]
    if missing:
        raise DataError(f"{path}: no variable(s) {missing} in this file; is it the right file?")
    return arrays


def read_splits(path, num_frames=1449):
    """``(train, test)`` 0-based frame indices from ``splits.mat`` (its ``trainNdxs`` / ``testNdxs`` are 1-based)."""
    arrays = _mat_arrays(path, ["trainNdxs", "testNdxs"])
    splits = []
    for name in ("trainNdxs", "testNdxs"):
        indices = arrays[name].reshape(-1).astype(np.int64)
        if indices.size == 0 or indices.min() < 1 or indices.max() > num_frames:
            raise DataError(f"{path}: {name} holds indices outside 1..{num_frames} (the frames of "
                            f"{LABELED_MAT_NAME}); use the splits.mat of the same release.")
        splits.append(indices - 1)
    if np.intersect1d(splits[0], splits[1]).size:
        raise DataError(f"{path}: trainNdxs and testNdxs share frames; the file is not the standard split.")
    return tuple(splits)


def read_class_mapping(path):
    """A lookup table ``label (0..894) -> class (0..39, 255)`` from ``classMapping40.mat``'s ``mapClass``.

    Label 0 (unlabelled), and any label that ``mapClass`` maps to 0, become :data:`IGNORE_INDEX`.
    """
    mapping = _mat_arrays(path, ["mapClass"])["mapClass"].reshape(-1).astype(np.int64)
    if mapping.size == 0 or mapping.min() < 0 or mapping.max() > len(CLASS_NAMES):
        raise DataError(f"{path}: mapClass must map each label to 1..{len(CLASS_NAMES)} (or 0), got values "
                        f"{mapping.min()}..{mapping.max()}; use classMapping40.mat of the 40-class labels.")
    table = np.concatenate([[0], mapping]) - 1
    return np.where(table < 0, IGNORE_INDEX, table).astype(np.uint8)


class NyuDepthV2Segmentation(tfds.core.GeneratorBasedBuilder):
    """NYU Depth v2 labeled: ``train`` (795) and ``test`` (654) frames with 40-class masks and depth in metres."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 1449 labelled frames, 40 classes (255 = unlabelled), depth "
                              "in metres, the standard 795/654 split."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Put these three files in the manual directory (`tfds.download.DownloadConfig(manual_dir=...)`):
  * `{LABELED_MAT_NAME}` (2.8 GB, HDF5), the labeled dataset of NYU Depth v2:
    http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat
    (linked from {_HOMEPAGE});
  * `{SPLITS_NAME}`, the standard 795 / 654 split (`trainNdxs`, `testNdxs`, 1-based frame indices):
    http://horatio.cs.nyu.edu/mit/silberman/indoor_seg_sup/splits.mat ;
  * `{CLASS_MAPPING_NAME}`, the mapping of the 894 labels to 40 classes (`mapClass`) of Gupta et al.:
    https://github.com/ankurhanda/nyuv2-meta-data (file classMapping40.mat).
Reading them needs h5py and scipy: `pip install refinenet_tf[nyud]`.
"""

    def _info(self):
        """Returns the dataset metadata: features, supervised keys, homepage and citation."""
        return self.dataset_info_from_configs(
            description=_DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "segmentation_mask": tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                                         encoding_format="png"),
                "depth": tfds.features.Tensor(shape=(None, None), dtype=np.float32,
                                              encoding=tfds.features.Encoding.ZLIB),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "segmentation_mask"),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        """Checks the manual directory for the three files and returns the ``train`` and ``test`` generators."""
        manual_dir = os.fspath(dl_manager.manual_dir)
        paths = {name: os.path.join(manual_dir, name) for name in (LABELED_MAT_NAME, SPLITS_NAME, CLASS_MAPPING_NAME)}
        missing = [name for name, path in paths.items() if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"nyu_depth_v2_segmentation: {missing} not in the manual directory {manual_dir}; "
                                    f"see MANUAL_DOWNLOAD_INSTRUCTIONS:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        num_frames = _check_layout(paths[LABELED_MAT_NAME])
        train, test = read_splits(paths[SPLITS_NAME], num_frames)
        table = read_class_mapping(paths[CLASS_MAPPING_NAME])
        return {"train": self._generate_examples(paths[LABELED_MAT_NAME], train, table),
                "test": self._generate_examples(paths[LABELED_MAT_NAME], test, table)}

    def _generate_examples(self, path, indices, table):
        """Yields ``(file_name, example)`` for the frames ``indices`` (0-based) of the labeled ``.mat`` file.

        Raises:
            DataError: a frame's labels exceed the class mapping, or its depth holds NaN or negative values.
        """
        import h5py

        with h5py.File(path, "r") as stream:
            images, depths, labels = stream["images"], stream["depths"], stream["labels"]
            for index in indices:
                name = f"{index + 1:04d}"
                image = np.ascontiguousarray(np.asarray(images[index]).transpose(2, 1, 0), dtype=np.uint8)
                depth = np.ascontiguousarray(np.asarray(depths[index]).T, dtype=np.float32)
                label = np.asarray(labels[index]).T.astype(np.int64)
                if label.max() >= len(table):
                    raise DataError(f"{path}: frame {name} has label {label.max()} but {CLASS_MAPPING_NAME} maps "
                                    f"only labels up to {len(table) - 1}; use the files of the same release.")
                if not np.all(np.isfinite(depth)) or depth.min() < 0:
                    raise DataError(f"{path}: frame {name} has NaN or negative depth; the file is damaged.")
                yield name, {"image": image, "segmentation_mask": table[label][..., None], "depth": depth,
                             "file_name": name}


def _check_layout(path):
    """Checks the official layout (MATLAB v7.3 stores arrays transposed); returns the number of frames."""
    import h5py

    try:
        stream = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: cannot open as HDF5 ({error}); download {LABELED_MAT_NAME} again.") from None
    with stream:
        missing = [name for name in ("images", "depths", "labels") if name not in stream]
        if missing:
            raise DataError(f"{path}: no {missing} dataset(s); is this the labeled NYU Depth v2 file?")
        images, depths, labels = (stream[name].shape for name in ("images", "depths", "labels"))
    if len(images) != 4 or images[1] != 3 or depths != (images[0],) + images[2:] or labels != depths:
        raise DataError(f"{path}: expected images [N, 3, W, H], depths and labels [N, W, H] (the official "
                        f"layout), got {images}, {depths} and {labels}.")
    return images[0]
