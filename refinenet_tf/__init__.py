"""refinenet_tf: RefineNet semantic segmentation for TensorFlow / Keras (tf-keras).

Example:
    >>> import refinenet_tf
    >>> model = refinenet_tf.RefineNet(num_classes=21, backbone="resnet50", backbone_weights=None)
    >>> model.output_shape
    (None, None, None, 21)
"""

from refinenet_tf import backbones, layers, models, saving
from refinenet_tf.layers import (ChainedResidualPooling, ConvBNReLU, ImagePreprocessing, MultiResolutionFusion,
                                 RefineBlock, ResidualConvUnit, ResizeToMatch)
from refinenet_tf.models import LightWeightRefineNet, RefineNet
from refinenet_tf.saving import load_model

__version__ = "0.1.0"

__all__ = [
    "ChainedResidualPooling",
    "ConvBNReLU",
    "ImagePreprocessing",
    "LightWeightRefineNet",
    "MultiResolutionFusion",
    "RefineBlock",
    "RefineNet",
    "ResidualConvUnit",
    "ResizeToMatch",
    "__version__",
    "backbones",
    "layers",
    "load_model",
    "models",
    "saving",
]
