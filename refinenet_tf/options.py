"""The names that the library's string options accept, as plain data.

They live here, apart from the modules that use them, because this module imports nothing: the command line
offers them as choices (and answers ``--help``) without importing TensorFlow.
"""

__all__ = ["EXPORT_FORMATS", "QUANTIZATIONS", "STRATEGIES"]

#: ``tf.distribute`` strategies of :func:`refinenet_tf.training.make_strategy`.
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")

#: what :mod:`refinenet_tf.export` writes.
EXPORT_FORMATS = ("saved_model", "tflite", "onnx", "openvino")

#: TFLite weight formats: float32 (no quantization), float16 weights, int8 dynamic-range quantization.
QUANTIZATIONS = ("float32", "float16", "int8")
