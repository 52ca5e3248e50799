"""The tests' oracle: PyTorch implementations of the official structures, which live in the package
(:mod:`refinenet_tf.reference.torch_official`, also the peer of ``refinenet-tf benchmark --peer``)."""

from refinenet_tf.reference.torch_official import *  # noqa: F401,F403
from refinenet_tf.reference.torch_official import __all__  # noqa: F401
