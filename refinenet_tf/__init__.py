"""refinenet_tf: RefineNet semantic segmentation for TensorFlow / Keras (tf-keras).

``import refinenet_tf`` is light: the submodules and the names below load (and TensorFlow with them) when first
used, so that ``refinenet-tf --help`` answers without TensorFlow. Loading :mod:`refinenet_tf.models.layers` (which
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

from refinenet_tf._lazy import lazy_names
from refinenet_tf._version import __version__

# public name -> the module that defines it
_NAMES = {
    "ChainedResidualPooling": "models.layers", "ConvBNReLU": "models.layers", "ImagePreprocessing": "models.layers",
    "MultiResolutionFusion": "models.layers", "RefineBlock": "models.layers", "ResidualConvUnit": "models.layers",
    "ResizeToMatch": "models.layers", "TaskOutput": "models.layers", "LightWeightRefineNet": "models.refinenet",
    "MultiTaskRefineNet": "models.multitask", "RefineNet": "models.refinenet", "load_model": "models.saving",
    "Prediction": "inference.prediction", "Segmenter": "tasks.segmenter",
}
#: the folders, each with one job (docs/layout.md)
_SUBMODULES = ("cli", "convert", "data", "export", "inference", "models", "tasks", "training")

__all__ = sorted(_NAMES) + ["__version__"]


__getattr__, __dir__ = lazy_names(__name__, _NAMES, _SUBMODULES)
