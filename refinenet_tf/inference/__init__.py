"""Running a model on images: :func:`predict` (arrays), :func:`predict_files` (image files to PNGs) and
:func:`evaluate` (scores on a dataset), for every head, on an engine chosen by name (:mod:`.engines`: the Keras
model by default, or ``saved_model``, ``tflite``, ``onnxruntime``, ``openvino``).

Example:
    >>> import numpy as np
    >>> from refinenet_tf import RefineNet, inference
    >>> model = RefineNet(num_classes=3, backbone="mobilenetv2", backbone_weights=None)
    >>> inference.predict(model, np.zeros((37, 53, 3), np.uint8)).labels.shape
    (37, 53)
"""

from refinenet_tf._lazy import lazy_names

_NAMES = {
    "Prediction": "prediction", "collect_images": "prediction", "engine_for": "prediction",
    "predict": "prediction", "predict_files": "prediction", "Evaluation": "evaluation", "evaluate": "evaluation",
    "Engine": "engines", "make_engine": "engines",
}
_SUBMODULES = ("engines", "evaluation", "prediction")

__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, _SUBMODULES)
