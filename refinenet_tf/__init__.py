"""refinenet_tf: RefineNet semantic segmentation for TensorFlow / Keras (tf-keras).

``import refinenet_tf`` is light: the submodules and the names below load (and TensorFlow with them) when first
used, so that ``refinenet-tf --help`` answers without TensorFlow. Loading :mod:`refinenet_tf.layers` (which
any model name does, as does :func:`load_model`) registers the layers with Keras.

Example:
    >>> import refinenet_tf
    >>> model = refinenet_tf.RefineNet(num_classes=21, backbone="resnet50", backbone_weights=None)
    >>> model.output_shape
    (None, None, None, 21)

A model to run is loaded with :meth:`Segmenter.from_preset` (a run folder, a ``.keras`` file, a SavedModel, a
converted checkpoint or a preset name), which gives a :class:`Segmenter`: ``predict``, ``predict_files``,
``evaluate`` and ``export`` for every head (segmentation, depth, normals).
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_NAMES = {
    "ChainedResidualPooling": "layers", "ConvBNReLU": "layers", "ImagePreprocessing": "layers",
    "MultiResolutionFusion": "layers", "RefineBlock": "layers", "ResidualConvUnit": "layers",
    "ResizeToMatch": "layers", "TaskOutput": "layers", "LightWeightRefineNet": "models",
    "MultiTaskRefineNet": "multitask", "RefineNet": "models", "load_model": "saving",
    "Prediction": "tasks", "Segmenter": "tasks",
}
_SUBMODULES = ("backbones", "benchmarks", "cli", "convert", "data", "demo", "demo_joint", "engines", "evaluation",
               "export", "inference", "layers", "losses", "metrics", "models", "multitask", "options", "profiling",
               "recipes", "runs", "saving", "tasks", "training", "visualization")

__all__ = sorted(_NAMES) + ["__version__", "backbones", "layers", "models", "saving"]


def __getattr__(name):
    if name in _NAMES:
        value = getattr(importlib.import_module(f"refinenet_tf.{_NAMES[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"refinenet_tf.{name}")
    else:
        raise AttributeError(f"module 'refinenet_tf' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES) | set(_SUBMODULES))
