"""Inference engines chosen by name: one interface, one module per engine.

An engine runs one model's serving contract: uint8 RGB images ``[N, H, W, 3]`` in, per-pixel outputs out
(``labels``, ``probabilities``, and ``depth`` / ``normals`` for a multi-task model), as NumPy arrays.

==============  ==========================================  ============================  ====================
engine          runs                                        reads                         precision
==============  ==========================================  ============================  ====================
``keras``       the Keras model under ``tf.function``       a ``keras.Model``             float32, bfloat16
                (the default: exact, any device)
``saved_model`` TensorFlow on an exported SavedModel        a model, a SavedModel folder  float32, bfloat16
                                                                                          (from a model)
``tflite``      LiteRT / ``tf.lite`` on a TFLite model      a model, a ``.tflite``        float32
``onnxruntime`` ONNX Runtime on an ONNX export              a model, a ``.onnx``          float32
``openvino``    OpenVINO on an ONNX export or IR            a model, ``.onnx``, ``.xml``  float32, bfloat16
==============  ==========================================  ============================  ====================

:func:`make_engine` builds one by name (its module is imported only then, so a missing optional package fails
only when its engine is chosen); :func:`engine_for_path` names the engine that reads an exported file. An engine
made from a Keras model converts it once, for the test-time augmentation and precision it was made with; its
results are those of the weights at that moment (make a new engine after training further).

``precision="bfloat16"`` runs the model's arithmetic in bfloat16 (OpenVINO's ``INFERENCE_PRECISION_HINT``; for
``keras`` and ``saved_model``, the model rebuilt under Keras' ``mixed_bfloat16`` policy: float32 weights,
bfloat16 math, float32 outputs). Where no GPU is visible and the CPU has no native bfloat16
(``avx512_bf16`` / ``amx_bf16`` in ``/proc/cpuinfo``), ``keras`` and ``saved_model`` warn (``RuntimeWarning``)
that bfloat16 is emulated there (slower than float32) and run; ``openvino`` refuses it there with a
``ValueError`` (OpenVINO would silently run float32), as do the engines without bfloat16 everywhere.

Adding an engine: a module with a subclass of :class:`Engine` (set ``name``, implement ``_load`` and ``_run``)
and one line in :data:`ENGINES`.

Example:
    >>> import numpy as np
    >>> from refinenet_tf import RefineNet
    >>> model = RefineNet(num_classes=3, backbone="mobilenetv2", backbone_weights=None)
    >>> engine = make_engine("keras", model)
    >>> result = engine(np.zeros((2, 37, 53, 3), np.uint8))
    >>> result["labels"].shape, result["probabilities"].shape, engine.outputs
    ((2, 37, 53), (2, 37, 53, 3), ('probabilities',))
    >>> engine_for_path("export/model.onnx")
    'onnxruntime'
"""

import functools
import importlib
import os
import tempfile
import warnings
import weakref

import numpy as np

from refinenet_tf._checks import check_scales

__all__ = ["ENGINES", "EXTRAS", "OUTPUTS", "PRECISIONS", "Engine", "cached_engine", "engine_class",
           "engine_for_path", "make_engine", "native_bfloat16"]

#: engine name -> ``"module:Class"``, imported when the engine is chosen
ENGINES = {
    "keras": "refinenet_tf.inference.engines.keras_engine:KerasEngine",
    "saved_model": "refinenet_tf.inference.engines.saved_model:SavedModelEngine",
    "tflite": "refinenet_tf.inference.engines.tflite:TFLiteEngine",
    "onnxruntime": "refinenet_tf.inference.engines.onnxruntime:OnnxRuntimeEngine",
    "openvino": "refinenet_tf.inference.engines.openvino:OpenVinoEngine",
}
#: engine name -> (the package it needs, the pip extra that installs it) for engines beyond TensorFlow
EXTRAS = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}
#: the precisions an engine may run at (``precision=``, ``--precision``)
PRECISIONS = ("float32", "bfloat16")
#: the per-pixel outputs an engine can have, beside ``labels`` (which comes with ``probabilities``)
OUTPUTS = ("probabilities", "depth", "normals")


class Engine:
    """Base class. An engine runs one model's serving contract: uint8 images in, per-pixel outputs out.

    Subclasses set ``name`` (and ``supports_bfloat16`` if they can) and implement ``_load(source)`` (called by
    ``__init__`` once the options are checked; it converts or loads ``source`` and sets ``outputs``, ``metadata``
    and ``num_classes``) and ``_run(images)``. An engine that converts a Keras model must not keep a reference to
    it (:func:`cached_engine` keys its cache weakly on the model).

    Args:
        source: a ``keras.Model`` (converted once, for these settings), or a path to an artifact of the engine's
            own format (an exported SavedModel folder, ``.tflite``, ``.onnx``, OpenVINO ``.xml``), which carries
            its metadata and its test-time augmentation (see :mod:`refinenet_tf.export`).
        scales, flip, max_side: test-time augmentation (see :func:`refinenet_tf.models.outputs.segment`).
        precision: ``"float32"`` or ``"bfloat16"`` (see the module).

    Attributes:
        outputs: the per-pixel outputs the model has, among :data:`OUTPUTS` (``"probabilities"`` when it
            segments; then ``labels`` comes too).
        metadata: ``{"class_names": [...], "num_classes": ..., ...}`` as the export writes it, or built from the
            Keras model.
        num_classes: the segmentation classes, ``None`` for a model without a segmentation head.
    """

    name = None
    supports_bfloat16 = False

    def __init__(self, source, *, scales=(1.0,), flip=False, max_side=None, precision="float32"):
        self.scales = check_scales(scales)
        self.flip = bool(flip)
        if max_side is not None and (not isinstance(max_side, (int, np.integer)) or max_side < 1):
            raise ValueError(f"max_side={max_side!r} must be a positive integer or None.")
        self.max_side = None if max_side is None else int(max_side)
        self.precision = check_precision(precision, self.name, self.supports_bfloat16)
        self.outputs, self.metadata, self.num_classes = (), {}, None
        self._load(source)

    def _load(self, source):
        raise NotImplementedError(f"{type(self).__name__} must implement _load(source).")

    def _run(self, images):
        """``{output: array}`` for a checked uint8 batch ``[N, H, W, 3]``: ``probabilities`` (float32
        ``[N, H, W, C]``; ``labels`` int32 ``[N, H, W]`` may come with it, else it is their argmax), ``depth``
        float32 ``[N, H, W]``, ``normals`` float32 ``[N, H, W, 3]``, those the model has."""
        raise NotImplementedError(f"{type(self).__name__} must implement _run(images).")

    def __call__(self, images):
        """Runs the model on ``images``: uint8 ``[N, H, W, 3]`` RGB (any ``H, W``).

        Returns:
            ``{"labels": int32 [N, H, W], "probabilities": float32 [N, H, W, C]}`` when the model segments, plus
            ``"depth": float32 [N, H, W]`` and ``"normals": float32 [N, H, W, 3]`` when it has those heads.
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or 0 in images.shape[1:3]:
            raise ValueError(f"{self.name} engine: images must be uint8 RGB [batch, height, width, 3] with "
                             f"height, width >= 1; got {images.dtype} {images.shape}.")
        raw = self._run(np.ascontiguousarray(images))
        result = {}
        if "probabilities" in raw:
            probabilities = np.asarray(raw["probabilities"], np.float32)
            labels = raw.get("labels")
            result["labels"] = (probabilities.argmax(-1) if labels is None else np.asarray(labels)).astype(np.int32)
            result["probabilities"] = probabilities
        result.update({output: np.asarray(raw[output], np.float32) for output in ("depth", "normals") if output in raw})
        return result

    def _take_export_settings(self, metadata):
        """For an engine that loads an exported file: its augmentation is the one built into the export
        (``metadata``); asking for other settings is a ``ValueError``."""
        exported = (check_scales(metadata.get("scales") or (1.0,)), bool(metadata.get("flip", False)),
                    metadata.get("max_side"))
        asked = (self.scales, self.flip, self.max_side)
        if asked != ((1.0,), False, None) and asked != exported:
            raise ValueError(f"{self.name} engine: the export has its augmentation built in (scales, flip, "
                             f"max_side = {exported}); export the model again to run it with {asked}.")
        self.scales, self.flip, self.max_side = exported

    def _describe_outputs(self, metadata, output_shapes):
        """Sets ``outputs``, ``num_classes`` and ``metadata`` from an export's ``metadata`` and its outputs'
        shapes (``{name: shape}``, the probabilities' last dimension being the classes)."""
        self.outputs = tuple(output for output in OUTPUTS if output in output_shapes)
        classes = output_shapes["probabilities"][-1] if "probabilities" in output_shapes else None
        self.num_classes = None if classes is None or classes < 1 else int(classes)
        self.metadata = dict(metadata)
        self.metadata.setdefault("num_classes", self.num_classes)

    def __repr__(self):
        options = f"scales={self.scales}, flip={self.flip}, max_side={self.max_side}, precision={self.precision!r}"
        return f"<{type(self).__name__} {self.metadata.get('model', '')!r}: {', '.join(self.outputs)}; {options}>"


@functools.lru_cache(maxsize=None)
def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as stream:
            return frozenset(flag for line in stream if line.startswith("flags")
                             for flag in line.split(":", 1)[1].split())
    except OSError:
        return frozenset()


def native_bfloat16():
    """Whether this machine computes bfloat16 natively: a visible GPU, or a CPU with ``avx512_bf16`` or
    ``amx_bf16`` (``/proc/cpuinfo``; ``False`` where it cannot be read)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU")) or bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def check_precision(precision, engine, supports_bfloat16):
    """``precision`` checked for ``engine``: one of :data:`PRECISIONS`, ``bfloat16`` only where the engine has it
    (a ``ValueError`` otherwise), with one warning where the machine would emulate it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {PRECISIONS}.")
    if precision == "bfloat16":
        if not supports_bfloat16:
            able = [name for name in ENGINES if name in ("keras", "saved_model", "openvino")]
            raise ValueError(f"engine={engine!r} runs float32 only; precision='bfloat16' needs engine= one of "
                             f"{able}.")
        if not native_bfloat16():
            warnings.warn("precision='bfloat16': this machine has no GPU and its CPU no native bfloat16 "
                          "(avx512_bf16 / amx_bf16), so bfloat16 is emulated: expect it slower than float32.",
                          RuntimeWarning, stacklevel=4)
    return precision


def engine_class(name):
    """The :class:`Engine` subclass named ``name`` (one of :data:`ENGINES`), its module imported now.

    Raises:
        ValueError: for an unknown ``name``.
        ImportError: when the engine's optional package is not installed (the message says which extra).
    """
    if name not in ENGINES:
        raise ValueError(f"engine={name!r} is not one of {tuple(ENGINES)}.")
    module_name, class_name = ENGINES[name].split(":")
    if name in EXTRAS:
        package, extra = EXTRAS[name]
        try:
            importlib.import_module(package)
        except ImportError:
            raise ImportError(f"engine={name!r} needs the {package} package: pip install "
                              f"'refinenet_tf[{extra}]'") from None
    return getattr(importlib.import_module(module_name), class_name)


def make_engine(name, source, **options):
    """The engine ``name`` (one of :data:`ENGINES`) for ``source`` (a ``keras.Model`` or an exported file of
    the engine's format); ``options`` are :class:`Engine`'s (``scales``, ``flip``, ``max_side``, ``precision``).

    Raises:
        ValueError: for an unknown ``name`` or option.
        ImportError: when the engine's optional package is not installed (the message says which extra).
    """
    return engine_class(name)(source, **options)


_CACHE = weakref.WeakKeyDictionary()  # keras model -> {(engine, scales, flip, max_side, precision): engine}


def cached_engine(name, model, scales=(1.0,), flip=False, max_side=None, precision="float32"):
    """:func:`make_engine` for a Keras ``model``, made once per model, engine, test-time augmentation and
    precision and then reused (a converting engine is a snapshot of the weights when it was made). The ``keras``
    engine in float32 is not cached here: it is the model itself, cheap to make, and it reuses its traced
    function."""
    cls = engine_class(name)
    if name == "keras" and precision == "float32":
        return cls(model, scales=scales, flip=flip, max_side=max_side, precision=precision)
    key = (name, check_scales(scales), bool(flip), max_side, precision)
    engines = _CACHE.setdefault(model, {})
    if key not in engines:
        engines[key] = cls(model, scales=scales, flip=flip, max_side=max_side, precision=precision)
    return engines[key]


def engine_for_path(path):
    """The engine that reads an exported artifact: a SavedModel folder written by
    :func:`refinenet_tf.export.export_saved_model` -> ``"saved_model"``, ``.tflite`` ->
    ``"tflite"``, ``.onnx`` -> ``"onnxruntime"``, OpenVINO ``.xml`` -> ``"openvino"``; a ``ValueError`` for
    anything else."""
    path = os.fspath(path)
    lower = path.lower()
    for suffix, engine in ((".tflite", "tflite"), (".onnx", "onnxruntime"), (".xml", "openvino")):
        if lower.endswith(suffix):
            return engine
    if os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.isfile(os.path.join(path, "refinenet_tf.json")):
        return "saved_model"  # written by export (a Keras model.save folder has no refinenet_tf.json)
    raise ValueError(f"{path!r} is not an exported model this package can run: give a SavedModel folder, a "
                     ".tflite, .onnx or OpenVINO .xml file (refinenet-tf export writes them).")


def outputs_of(metadata):
    """The per-pixel outputs (:data:`OUTPUTS`) of a model described by export ``metadata``."""
    tasks = metadata.get("tasks") or ()
    found = ("probabilities",) if metadata.get("num_classes") else ()
    return found + tuple(task for task in ("depth", "normals") if task in tasks)


def temporary_folder(prefix):
    """A temporary folder, deleted on exit: where a converting engine writes the export it then loads."""
    return tempfile.TemporaryDirectory(prefix=f"refinenet_tf-{prefix}-", ignore_cleanup_errors=True)
