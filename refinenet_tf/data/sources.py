"""Where examples come from: PASCAL VOC 2012 (+ SBD), folders of images and masks, TFDS datasets.

One spec string picks a source everywhere (API, CLI)::

    voc:PATH                      VOC 2012: PATH is VOCdevkit/VOC2012, VOCdevkit, or the folder holding it
    voc_aug:PATH                  VOC 2012 + SBD ("train" = the 10,582 train_aug ids, SegmentationClassAug)
    folder:IMAGES:MASKS[?opts]    images and index masks paired by file stem; opts: mask_suffix, mask_ext,
                                  list (a file of stems), num_classes, ignore_value (e.g. ?mask_suffix=_mask);
                                  RGB-D: depth=DEPTHS, depth_scale, depth_suffix, depth_ext, allow_missing
    tfds:NAME[:DATA_DIR]          a TFDS dataset: voc2012_segmentation, oxford_iiit_pet, scene_parse150,
                                  nyu_depth_v2_segmentation (RGB-D; split "val" reads its "test")

RGB-D folders: ``folder:IMAGES:MASKS?depth=DEPTHS&depth_scale=5000&num_classes=40`` pairs every image with
``DEPTHS/STEM{depth_suffix}{depth_ext}`` too (a 16-bit PNG divided by ``depth_scale`` -- 5000 for NYUDv2, 256 for
KITTI, 1000 for millimetres -- or see :func:`refinenet_tf.data.decoding.read_depth`; 0 = missing depth), and the
pipelines give ``(image, {"segmentation": mask, "depth": depth})``. ``allow_missing=mask,depth`` (either or
both) lets a stem have no mask file (it gets an all-255 mask) or no depth file (all-0 depth), so examples with
asymmetric annotations train one task each in the same batch.

File sources are validated when they are resolved: a missing list file, an id with no file and an empty
split are errors that name the file. Pixel-level checks (sizes, mask values) happen when examples are read,
and all at once with :func:`refinenet_tf.data.checks.check_dataset`.

SBD ("voc_aug"): the 10,582-image training set is VOC 2012 train plus the Semantic Boundaries Dataset
(Hariharan et al., ICCV 2011, http://home.bharathh.info/pubs/codes/SBD/download.html) minus VOC 2012 val.
Put its index masks (PNG, 255 = ignore; the commonly shared ``SegmentationClassAug.zip`` or SBD's ``.mat``
files converted to PNG) in ``VOC2012/SegmentationClassAug/`` and the id list in
``VOC2012/ImageSets/Segmentation/train_aug.txt``.
"""

import dataclasses
import os
import urllib.parse
from typing import Callable, Optional, Tuple


__all__ = ["FileSource", "NYU40_CLASSES", "TfdsSource", "TFDS_ADAPTERS", "VOC_CLASSES", "class_names_for", "count_examples", "folder_source",
           "resolve", "tfds_source", "voc_source"]

#: The 21 PASCAL VOC 2012 classes, in label order; 255 marks "ignore" (object boundaries).
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

#: The 40 NYU Depth v2 classes of Gupta et al. (CVPR 2013), in the order of ``classMapping40.mat`` (1..40 -> 0..39).
NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box", "whiteboard",
    "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure", "otherfurniture",
    "otherprop")


@dataclasses.dataclass(frozen=True)
class FileSource:
    """Examples stored as image files and index-mask files.

    Attributes:
        name: a readable description (spec and split).
        examples: ``(id, image_path, mask_path)`` triples.
        num_classes: classes, background included; mask values must lie in ``[0, num_classes)`` or be
            ``ignore_value``. ``None`` skips the value check.
        ignore_value: the mask value that marks pixels to ignore.
        class_names: names of the classes, if known.
        depths: for RGB-D sources, one depth path per example (``""`` = missing depth); empty otherwise. A mask
            path ``""`` in ``examples`` marks a missing mask.
        depth_scale: stored depth units per metre (16-bit PNG value / ``depth_scale`` = metres).
    """

    name: str
    examples: Tuple[Tuple[str, str, str], ...]
    num_classes: Optional[int]
    ignore_value: int = 255
    class_names: Tuple[str, ...] = ()
    depths: Tuple[str, ...] = ()
    depth_scale: Optional[float] = None

    @property
    def has_depth(self):
        """Whether examples have depth (the pipelines then give ``(image, {"segmentation", "depth"})``)."""
        return bool(self.depths)


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A TFDS dataset and the function that turns its elements into ``(image, mask)``.

    Attributes:
        name: TFDS name.
        split: TFDS split.
        data_dir: TFDS data folder (``None``: TFDS' default, ``~/tensorflow_datasets``).
        to_image_and_mask: ``element dict -> (image [H, W, 3] uint8, mask [H, W] uint8)`` (TF ops), or with
            ``has_depth`` ``-> (image, mask, depth [H, W] float32 metres)``.
        num_classes, ignore_value, class_names: as for :class:`FileSource`.
        has_depth: the adapter returns depth too.
    """

    name: str
    split: str
    data_dir: Optional[str]
    to_image_and_mask: Callable
    num_classes: int
    ignore_value: int = 255
    class_names: Tuple[str, ...] = ()
    has_depth: bool = False


def _voc_root(path):
    path = os.path.expanduser(os.fspath(path))
    for candidate in (path, os.path.join(path, "VOC2012"), os.path.join(path, "VOCdevkit", "VOC2012")):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise FileNotFoundError(f"voc:{path}: no VOC 2012 folder there (looked for JPEGImages in {path}, "
                            f"{path}/VOC2012 and {path}/VOCdevkit/VOC2012); give the folder that holds VOCdevkit.")


def _read_ids(list_file, what):
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f"{what}: list file {list_file} not found; check the split name and the dataset "
                                "folder.")
    with open(list_file, encoding="utf-8") as stream:
        ids = [line.split()[0] for line in stream if line.strip()]
    if not ids:
        raise ValueError(f"{what}: list file {list_file} is empty; the split has no examples.")
    return ids


def _check_files(examples, what, list_file):
    missing = [(example_id, path) for example_id, image, mask in examples for path in (image, mask)
               if not os.path.isfile(path)]
    if missing:
        shown = ", ".join(f"{i} ({p})" for i, p in missing[:3])
        raise FileNotFoundError(f"{what}: {len(missing)} file(s) named by {list_file} are missing: {shown}"
                                f"{' ...' if len(missing) > 3 else ''}; restore them or remove their ids.")


def voc_source(path, split="train", augmented=False):
    """PASCAL VOC 2012 segmentation (``augmented``: with SBD, see the module docstring).

    Args:
        path: ``VOCdevkit/VOC2012``, ``VOCdevkit`` or the folder holding ``VOCdevkit``.
        split: a list in ``ImageSets/Segmentation``: ``train``, ``val``, ``trainval`` (or ``train_aug``).
        augmented: for ``split="train"``, read ``train_aug.txt`` and ``SegmentationClassAug``.
    """
    root = _voc_root(path)
    mask_folder, list_name = "SegmentationClass", split
    if augmented and split in ("train", "train_aug"):
        mask_folder, list_name = "SegmentationClassAug", "train_aug"
    what = f"{'voc_aug' if augmented else 'voc'}:{path} ({split})"
    list_file = os.path.join(root, "ImageSets", "Segmentation", f"{list_name}.txt")
    ids = _read_ids(list_file, what)
    examples = tuple((i, os.path.join(root, "JPEGImages", f"{i}.jpg"), os.path.join(root, mask_folder, f"{i}.png"))
                     for i in ids)
    _check_files(examples, what, list_file)
    return FileSource(what, examples, num_classes=len(VOC_CLASSES), ignore_value=255, class_names=VOC_CLASSES)


def folder_source(images, masks, mask_suffix="", mask_ext=".png", list_file=None, num_classes=None,
                  ignore_value=255, class_names=(), depths=None, depth_scale=None, depth_suffix="", depth_ext=".png",
                  allow_missing=()):
    """Images and index masks paired by file stem: ``IMAGES/0001.jpg`` <-> ``MASKS/0001{mask_suffix}{mask_ext}``.

    Args:
        images: folder of images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``).
        masks: folder of masks (palette or grayscale PNG holding class indices).
        mask_suffix: added to the image stem, e.g. ``"_mask"`` for ``0001_mask.png``.
        mask_ext: the masks' extension.
        list_file: optional file with one stem per line; default: every image in ``images``.
        num_classes: if given, mask values must lie in ``[0, num_classes)`` or equal ``ignore_value``.
        ignore_value: mask value of pixels to ignore.
        class_names: optional class names.
        depths: optional folder of depth maps, ``DEPTHS/STEM{depth_suffix}{depth_ext}`` (RGB-D source).
        depth_scale: stored depth units per metre (required with ``depths``): 5000 for NYUDv2, 256 for KITTI,
            1000 for millimetres.
        depth_suffix, depth_ext: as ``mask_suffix`` / ``mask_ext`` for the depth files (``.png``, ``.npy``,
            ``.tif``, ``.tiff``).
        allow_missing: labels a stem may lack: ``("mask",)``, ``("depth",)`` or both. A missing mask reads as all
            ``ignore_value``, a missing depth as all 0; without this, a missing file is an error.
    """
    what = f"folder:{images}:{masks}"
    allow_missing = tuple(allow_missing)
    unknown = set(allow_missing) - {"mask", "depth"}
    if unknown:
        raise ValueError(f"{what}: allow_missing={sorted(unknown)} is not a label; use 'mask' and/or 'depth'.")
    if "depth" in allow_missing and depths is None:
        raise ValueError(f"{what}: allow_missing includes 'depth' but no depths= folder is given.")
    if depths is not None:
        if depth_scale is None or not float(depth_scale) > 0:
            raise ValueError(f"{what}: depths= needs depth_scale= > 0, the stored units per metre (5000 for "
                             f"NYUDv2, 256 for KITTI, 1000 for millimetres), got {depth_scale!r}.")
        if depth_ext.lower() not in (".png", ".npy", ".tif", ".tiff"):
            raise ValueError(f"{what}: depth_ext={depth_ext!r}; depth files must be .png, .npy, .tif or .tiff.")
    for folder in (images, masks) + ((depths,) if depths is not None else ()):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{what}: folder {folder} does not exist.")
    by_stem = {}
    for file_name in sorted(os.listdir(images)):
        stem, extension = os.path.splitext(file_name)
        if extension.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(stem, os.path.join(images, file_name))
    if list_file is not None:
        stems = _read_ids(list_file, what)
        missing = [s for s in stems if s not in by_stem]
        if missing:
            raise FileNotFoundError(f"{what}: {len(missing)} id(s) of {list_file} have no image in {images}: "
                                    f"{missing[:3]}; restore them or remove their ids.")
    else:
        stems = sorted(by_stem)
        if not stems:
            raise ValueError(f"{what}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {images}.")
    examples = tuple((s, by_stem[s], os.path.join(masks, f"{s}{mask_suffix}{mask_ext}")) for s in stems)
    if "mask" in allow_missing:
        examples = tuple((s, image, mask if os.path.isfile(mask) else "") for s, image, mask in examples)
    _check_files([e for e in examples if e[2]], what, list_file or images)
    depth_paths = ()
    if depths is not None:
        depth_paths = tuple(os.path.join(depths, f"{s}{depth_suffix}{depth_ext}") for s in stems)
        if "depth" in allow_missing:
            depth_paths = tuple(path if os.path.isfile(path) else "" for path in depth_paths)
        missing = [(s, path) for s, path in zip(stems, depth_paths) if path and not os.path.isfile(path)]
        if missing:
            shown = ", ".join(f"{i} ({p})" for i, p in missing[:3])
            raise FileNotFoundError(f"{what}: {len(missing)} depth file(s) are missing: {shown}"
                                    f"{' ...' if len(missing) > 3 else ''}; restore them, remove their ids, or "
                                    "pass allow_missing=depth to train those examples on segmentation only.")
    return FileSource(what, examples, num_classes=num_classes, ignore_value=ignore_value,
                      class_names=tuple(class_names), depths=depth_paths,
                      depth_scale=float(depth_scale) if depths is not None else None)


# --- TFDS datasets -----------------------------------------------------------------------------------------

def _voc2012_segmentation(element):
    return element["image"], element["segmentation_mask"][..., 0]


def _oxford_iiit_pet(element):
    # Trimap: 1 = pet, 2 = background, 3 = border ("not classified") -> 1, 0, ignore.
    import tensorflow as tf

    trimap = tf.cast(element["segmentation_mask"][..., 0], tf.int32)
    mask = tf.gather(tf.constant([255, 1, 0, 255], tf.int32), tf.clip_by_value(trimap, 0, 3))
    return element["image"], tf.cast(mask, tf.uint8)


def _scene_parse150(element):
    # ADE20K scene parsing: 0 = "other" (not evaluated), 1..150 = classes -> 255, 0..149.
    import tensorflow as tf

    annotation = tf.cast(element["annotation"][..., 0], tf.int32)
    mask = tf.where(annotation == 0, 255, annotation - 1)
    return element["image"], tf.cast(mask, tf.uint8)


def _nyu_depth_v2_segmentation(element):
    return element["image"], element["segmentation_mask"][..., 0], element["depth"]


#: TFDS name -> (adapter, num_classes, class names). Other datasets: add an entry.
TFDS_ADAPTERS = {
    "voc2012_segmentation": (_voc2012_segmentation, 21, VOC_CLASSES),
    "oxford_iiit_pet": (_oxford_iiit_pet, 2, ("background", "pet")),
    "scene_parse150": (_scene_parse150, 150, ()),
    "nyu_depth_v2_segmentation": (_nyu_depth_v2_segmentation, 40, NYU40_CLASSES),
}

#: TFDS datasets whose adapter returns depth too.
TFDS_WITH_DEPTH = frozenset({"nyu_depth_v2_segmentation"})

_TFDS_SPLITS = {"val": "validation"}
_TFDS_SPLITS_BY_NAME = {"nyu_depth_v2_segmentation": {"val": "test", "validation": "test"}}


def tfds_source(name, split="train", data_dir=None):
    """A TFDS dataset known to :data:`TFDS_ADAPTERS` (``voc2012_segmentation`` needs ``refinenet_tf.data``)."""
    if name not in TFDS_ADAPTERS:
        raise ValueError(f"tfds:{name}: no adapter for this dataset; use one of {sorted(TFDS_ADAPTERS)} or add "
                         "one to refinenet_tf.data.sources.TFDS_ADAPTERS.")
    adapter, num_classes, class_names = TFDS_ADAPTERS[name]
    split = _TFDS_SPLITS_BY_NAME.get(name, _TFDS_SPLITS).get(split, split)
    return TfdsSource(name, split, data_dir, adapter, num_classes, 255, class_names,
                      has_depth=name in TFDS_WITH_DEPTH)


def count_examples(source):
    """Examples in a resolved source: the length of its file list, or the prepared TFDS split's size."""
    if hasattr(source, "examples"):
        return len(source.examples)
    import tensorflow_datasets as tfds

    return tfds.builder(source.name, data_dir=source.data_dir).info.splits[source.split].num_examples


def _float_option(spec, options, key):
    if key not in options:
        return None
    try:
        return float(options[key])
    except ValueError:
        raise ValueError(f"data spec {spec!r}: {key}={options[key]!r} is not a number.") from None


def resolve(spec, split="train", num_classes=None, ignore_value=None):
    """Turns a spec string (see the module docstring) into a :class:`FileSource` or :class:`TfdsSource`.

    ``num_classes`` / ``ignore_value`` override the source's own (VOC: 21 and 255).
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"data spec {spec!r} is not KIND:ARGS; use voc:PATH, voc_aug:PATH, "
                         "folder:IMAGES:MASKS[?options] or tfds:NAME[:DATA_DIR].")
    kind, _, rest = spec.partition(":")
    if kind in ("voc", "voc_aug"):
        source = voc_source(rest, split, augmented=kind == "voc_aug")
    elif kind == "folder":
        location, _, query = rest.partition("?")
        parts = location.split(":")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"data spec {spec!r}: folder needs folder:IMAGES:MASKS.")
        options = {key: values[-1] for key, values in urllib.parse.parse_qs(query).items()}
        known = {"mask_suffix", "mask_ext", "list", "num_classes", "ignore_value", "depth", "depth_scale",
                 "depth_suffix", "depth_ext", "allow_missing"}
        if set(options) - known:
            raise ValueError(f"data spec {spec!r}: unknown option(s) {sorted(set(options) - known)}; "
                             f"use {sorted(known)}.")
        source = folder_source(
            parts[0], parts[1], mask_suffix=options.get("mask_suffix", ""), mask_ext=options.get("mask_ext", ".png"),
            list_file=options.get("list"),
            num_classes=int(options["num_classes"]) if "num_classes" in options else None,
            ignore_value=int(options.get("ignore_value", 255)), depths=options.get("depth"),
            depth_scale=_float_option(spec, options, "depth_scale"), depth_suffix=options.get("depth_suffix", ""),
            depth_ext=options.get("depth_ext", ".png"),
            allow_missing=tuple(m for m in options.get("allow_missing", "").split(",") if m))
    elif kind == "tfds":
        name, _, data_dir = rest.partition(":")
        source = tfds_source(name, split, data_dir or None)
    else:
        raise ValueError(f"data spec {spec!r}: unknown kind {kind!r}; use voc, voc_aug, folder or tfds.")
    overrides = {key: value for key, value in (("num_classes", num_classes), ("ignore_value", ignore_value))
                 if value is not None}
    return dataclasses.replace(source, **overrides) if overrides else source


def class_names_for(num_classes, names=None):
    """``names`` if given, the VOC names for 21 classes, else ``class_0, class_1, ...``.

    Example:
        >>> class_names_for(3), class_names_for(2, ["sky", "sea"])
        (('class_0', 'class_1', 'class_2'), ('sky', 'sea'))
    """
    if names:
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names given for {num_classes} classes.")
        return tuple(names)
    if num_classes == len(VOC_CLASSES):
        return VOC_CLASSES
    return tuple(f"class_{index}" for index in range(num_classes))
