"""Exports for serving, each with the same contract (uint8 RGB images in; labels, probabilities and the other
heads' outputs out) and the same metadata (classes, palette, preprocessing): a SavedModel, TFLite, ONNX and
OpenVINO IR (:mod:`.exporters`), read back by :func:`read_metadata` and run by
:mod:`refinenet_tf.inference.engines`.
"""

from refinenet_tf._lazy import lazy_names

_NAMES = {name: "exporters" for name in (
    "export_saved_model", "export_tflite", "export_onnx", "export_openvino", "read_metadata", "tflite_interpreter")}

__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, ("exporters",))
