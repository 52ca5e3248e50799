"""Prediction: every head's per-pixel outputs (class labels and probabilities, depth, normals) at each image's own
resolution, with optional test-time augmentation (multi-scale + horizontal flip), on the engine of your choice.

:func:`predict` (NumPy arrays, one :class:`Prediction` per image) and :func:`predict_files` (image files to PNGs)
run :func:`refinenet_tf.models.outputs.segment_outputs` through an engine chosen by name (``engine=``,
:func:`engine_for`): the Keras model itself by default, or a converted copy of it (``saved_model``, ``tflite``,
``onnxruntime``, ``openvino``), or an exported file. A segmentation model, a segmentation + depth model and one
with normals go through the same functions: what comes out is what the model's heads give. Loading a model to run
is :meth:`refinenet_tf.Segmenter.from_preset`.

Example:
    >>> from refinenet_tf import RefineNet
    >>> model = RefineNet(num_classes=3, backbone="mobilenetv2", backbone_weights=None)
    >>> result = predict(model, np.zeros((37, 53, 3), np.uint8))
    >>> result.labels.shape, result.labels.dtype, result.depth
    ((37, 53), dtype('int32'), None)
"""

import glob
import os

import dataclasses
from typing import Optional

import numpy as np
import tf_keras as keras

from refinenet_tf import _files
from refinenet_tf.data import visualization
from refinenet_tf.data.sources import class_names_for
from refinenet_tf.inference import engines
from refinenet_tf._checks import check_scales

__all__ = ["MAX_PIXELS", "Prediction", "collect_images", "engine_for", "predict", "predict_files"]


@dataclasses.dataclass
class Prediction:
    """What :func:`predict` returns for one image: every head's output at the image's own size.

    Attributes:
        labels: int32 ``[H, W]`` class indices (``None`` for a model without a segmentation head).
        probabilities: float32 ``[H, W, C]`` class probabilities, when asked for (``return_probabilities``).
        depth: float32 ``[H, W]`` depth in metres, when the model has a depth head.
        normals: float32 ``[H, W, 3]`` unit surface normals, when the model has a normals head.
    """

    labels: Optional[np.ndarray] = None
    probabilities: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None
    normals: Optional[np.ndarray] = None


def engine_for(model, engine=None, scales=(1.0,), flip=False, max_side=None, precision="float32"):
    """The engine (:mod:`refinenet_tf.inference.engines`) that runs ``model``.

    Args:
        model: a ``keras.Model``, an :class:`~refinenet_tf.inference.engines.Engine` (returned as it is; it carries its own
            augmentation and precision, so the others must be left at their defaults or equal its), or the path
            of an exported file (a SavedModel folder, ``.tflite``, ``.onnx``, OpenVINO ``.xml``).
        engine: the engine's name (:data:`refinenet_tf.inference.engines.ENGINES`); default ``"keras"`` for a model, the
            engine that reads the file for a path (:func:`refinenet_tf.inference.engines.engine_for_path`).
        scales, flip, max_side: test-time augmentation, see :func:`segment_outputs`.
        precision: ``"float32"`` or ``"bfloat16"`` (see :mod:`refinenet_tf.inference.engines`).

    A converting engine (any but ``keras`` at float32) is made once per model, engine, augmentation and precision
    and reused (:func:`refinenet_tf.inference.engines.cached_engine`): it holds the weights of that moment.
    """
    if isinstance(model, engines.Engine):
        asked = (check_scales(scales), bool(flip), max_side, precision)
        if asked != ((1.0,), False, None, "float32") and asked != (model.scales, model.flip, model.max_side,
                                                                     model.precision):
            raise ValueError(f"{model!r} was made with its own scales, flip, max_side and precision; make another "
                             "engine for other settings instead of passing them here.")
        if engine is not None and engine != model.name:
            raise ValueError(f"engine={engine!r} was asked but model is a {model.name!r} engine.")
        return model
    options = dict(scales=scales, flip=flip, max_side=max_side, precision=precision)
    if isinstance(model, (str, os.PathLike)):
        return engines.make_engine(engine or engines.engine_for_path(model), os.fspath(model), **options)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, an engine or an exported file's path; got "
                        f"{type(model).__name__}.")
    return engines.cached_engine(engine or "keras", model, **options)


def _as_uint8_batch(image, what):
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{what}: expected an RGB image [height, width, 3], got shape {array.shape}; convert "
                         "grayscale or RGBA images to RGB first (refinenet_tf.data.decoding.read_image does).")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{what}: the image is empty (shape {array.shape}).")
    if array.dtype != np.uint8:
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 255 or not np.all(np.isfinite(array))):
            raise ValueError(f"{what}: pixel values must lie in [0, 255]; got [{np.nanmin(array)}, "
                             f"{np.nanmax(array)}].")
        array = np.rint(array).astype(np.uint8)
    return array[None]


def predict(model, images, scales=(1.0,), flip=False, max_side=None, return_probabilities=False, engine=None,
            precision="float32"):
    """Runs every head of a model on one image or a list of images of any sizes.

    Args:
        model: a model, an engine or an exported file (see :func:`engine_for`).
        images: one ``[H, W, 3]`` RGB array (uint8, or floats in [0, 255]) or a sequence of them.
        scales, flip, max_side: test-time augmentation, see :func:`refinenet_tf.models.outputs.segment_outputs`.
        return_probabilities: also give the float32 ``[H, W, C]`` probabilities.
        engine, precision: what runs the model (:func:`engine_for`): the Keras model by default.

    Returns:
        A :class:`Prediction` for one image (its ``labels``; ``depth`` and ``normals`` for a model with those
        heads), a list of them for a sequence.

    Example:
        >>> inputs = keras.Input([None, None, 3])
        >>> model = keras.Model(inputs, {"segmentation": keras.layers.Conv2D(3, 1)(inputs),
        ...                              "depth": keras.layers.Conv2D(1, 1)(inputs)})
        >>> result = predict(model, np.zeros((37, 53, 3), np.uint8))
        >>> result.labels.shape, result.depth.shape, result.depth.dtype
        ((37, 53), (37, 53), dtype('float32'))
    """
    single = isinstance(images, np.ndarray) and images.ndim == 3
    batch = [images] if single else list(images)
    run = engine_for(model, engine, scales, flip, max_side, precision)
    wanted = ("labels", "depth", "normals") + (("probabilities",) if return_probabilities else ())
    results = []
    for index, image in enumerate(batch):
        outputs = run(_as_uint8_batch(image, f"images[{index}]"))
        results.append(Prediction(**{name: outputs[name][0] for name in wanted if name in outputs}))
    return results[0] if single else results


# ---------------------------------------------------------------------------------------------- files

_GLOB_CHARACTERS = set("*?[")


def collect_images(inputs):
    """Expands files, folders (their image files, sorted) and glob patterns into a list of image paths.

    Folders contribute the files with an image extension (.jpg, .jpeg, .png, .bmp, any case); other files in
    them are not images and are left out. Raises ``FileNotFoundError`` for a path that does not exist or a
    pattern or folder that yields no image.
    """
    from refinenet_tf.data.sources import IMAGE_EXTENSIONS

    paths = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, name)))
            if not found:
                raise FileNotFoundError(f"input folder {item!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
        elif os.path.isfile(item):
            found = [item]
        elif _GLOB_CHARACTERS & set(item):
            found = sorted(path for path in glob.glob(item, recursive=True) if os.path.isfile(path))
            if not found:
                raise FileNotFoundError(f"input pattern {item!r} matches no file.")
        else:
            raise FileNotFoundError(f"input {item!r} does not exist; give image files, folders or glob patterns.")
        paths.extend(found)
    if not paths:
        raise ValueError("no input images given.")
    return list(dict.fromkeys(paths))  # the same file twice is predicted once


def _output_names(paths):
    """Maps each input to an output stem, and refuses two inputs that would write the same file."""
    stems = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise ValueError(f"inputs {stems[stem]!r} and {path!r} would both write {stem}.png; predict them into "
                             "separate output_dir= folders.")
        stems[stem] = path
    return {path: stem for stem, path in stems.items()}


MAX_PIXELS = 4096 * 4096


def _check_outputs_and_write_legend(paths, output_dir, suffixes, num_classes, palette, class_names):
    """The checks and the legend every file-writing prediction starts with: ``output_dir`` writable and never the
    folder of an input whose name an output (``NAME + suffix``) would take. Returns ``(output stems, palette)``."""
    stems = _output_names(paths)
    _files.writable_folder(output_dir, "output_dir=")
    inputs_real = {os.path.realpath(path) for path in paths}
    for path, stem in stems.items():
        for suffix in suffixes:
            if os.path.realpath(os.path.join(output_dir, stem + suffix)) in inputs_real:
                raise ValueError(f"output_dir={output_dir!r} would overwrite the input {path!r}; choose another "
                                 "folder.")
    palette = visualization.voc_palette() if palette is None else np.asarray(palette, np.uint8)
    visualization.save_image_png(os.path.join(output_dir, "legend.png"),
                                 visualization.legend(class_names_for(num_classes, class_names), palette))
    return stems, palette


def _read_each_image(paths, num_classes, max_pixels, skip_errors, progress, failed, max_side_hint=True):
    """Yields ``(path, image)`` for each readable image of ``paths``, with a progress bar; an image above
    ``max_pixels`` or unreadable raises its one-line error, or with ``skip_errors`` goes into ``failed``
    (path -> message) and is passed over. ``max_side_hint``: the caller takes ``max_side=``, so say so."""
    from refinenet_tf.data import decoding

    bar = keras.utils.Progbar(len(paths), unit_name="image") if progress else None
    for index, path in enumerate(paths):
        try:
            width, height = decoding.image_size(path)  # from the header: a huge image is refused undecoded
            if max_pixels is not None and width * height > max_pixels:
                raise decoding.DataError(
                    f"{path}: {width}x{height} pixels is above the limit of {max_pixels:,} "
                    f"(max_pixels=): its {num_classes}-class probabilities alone would take "
                    f"{4 * num_classes * width * height / 2**30:.1f} GiB; downscale the image or "
                    "raise max_pixels=" + (" (with max_side= to bound the model's input)." if max_side_hint else "."))
            image = decoding.read_image(path)
        except decoding.DataError as error:
            if not skip_errors:
                raise
            failed[path] = str(error)
        else:
            yield path, image
        if bar is not None:
            bar.update(index + 1)


def predict_files(model, inputs, output_dir, scales=(1.0,), flip=False, max_side=None, palette=None,
                  class_names=None, probabilities=False, overlay_alpha=0.5, skip_errors=False, progress=True,
                  max_pixels=MAX_PIXELS, engine=None, precision="float32", max_depth=None):
    """Segments image files and writes, for each ``NAME.ext``, into ``output_dir``:

    * ``NAME.png``: the class indices as an 8-bit palette PNG at the image's size (VOC ``SegmentationClass``
      format, VOC palette unless ``palette`` is given),
    * ``NAME_overlay.png``: the prediction blended over the image,
    * ``NAME_probabilities.npy`` (with ``probabilities``): float32 ``[H, W, C]`` class probabilities,
    * for a model with a depth head, ``NAME_depth.png`` (the depth colour-mapped, near yellow to far dark blue,
      :func:`refinenet_tf.data.visualization.colorize_depth`) and ``NAME_depth_mm.png`` (16-bit, millimetres),

    plus ``legend.png`` (the classes' colours). Every file is written atomically (temporary file, then rename).

    Args:
        model: a model, an engine or an exported file (see :func:`engine_for`).
        inputs: image files, folders or glob patterns (see :func:`collect_images`).
        output_dir: created if missing; must not be the folder of an input whose name would be overwritten.
        scales, flip, max_side: test-time augmentation, see :func:`segment_outputs`.
        palette: ``[K, 3]`` colours (default: VOC's).
        class_names: names for the legend (default: the model's, VOC's for 21 classes, else ``class_i``).
        probabilities: also write the probabilities.
        overlay_alpha: opacity of the colours in the overlay.
        skip_errors: go on past images that cannot be read (they are reported in the result) instead of stopping
            at the first.
        progress: show a Keras progress bar.
        max_pixels: refuse images with more pixels (default 4096 x 4096): the probabilities alone take
            ``4 * classes`` bytes per pixel at the image's size. ``max_side`` bounds what the model sees, not
            this; ``None`` lifts the limit.
        engine, precision: what runs the model (:func:`engine_for`): the Keras model by default.
        max_depth: the depth drawn darkest in ``NAME_depth.png`` (default: each image's farthest).

    Returns:
        A dict: ``written`` (input path -> its label PNG) and ``failed`` (input path -> error message).
    """
    run = engine_for(model, engine, scales, flip, max_side, precision)
    if "probabilities" not in run.outputs:
        raise ValueError(f"{run!r} has no segmentation output ({', '.join(run.outputs)}); predict segments images.")
    paths = collect_images(inputs)
    depth = "depth" in run.outputs
    suffixes = (".png", "_overlay.png") + (("_depth.png", "_depth_mm.png") if depth else ()) + \
        (("_probabilities.npy",) if probabilities else ())
    names = class_names or (run.metadata.get("class_names") or None)
    stems, palette = _check_outputs_and_write_legend(paths, output_dir, suffixes, run.num_classes, palette, names)
    written, failed = {}, {}
    for path, image in _read_each_image(paths, run.num_classes, max_pixels, skip_errors, progress, failed,
                                        max_side_hint=not depth):
        outputs = run(image[None])
        stem = os.path.join(output_dir, stems[path])
        labels = outputs["labels"][0]
        visualization.save_image_png(stem + "_overlay.png",
                                     visualization.overlay(image, labels, overlay_alpha, palette))
        written[path] = visualization.save_label_png(stem + ".png", labels, palette)
        if depth:
            visualization.save_image_png(stem + "_depth.png", visualization.colorize_depth(outputs["depth"][0],
                                                                                             max_depth))
            visualization.save_depth_png(stem + "_depth_mm.png", np.maximum(outputs["depth"][0], 0.0))
        if probabilities:
            with _files.atomic_path(stem + "_probabilities.npy", suffix=".npy") as temporary:
                np.save(temporary, outputs["probabilities"][0])
    return {"written": written, "failed": failed}
