"""What a user holds: :class:`Segmenter` (a RefineNet with its heads, loaded by :meth:`Segmenter.from_preset`) and
the :class:`Prediction` it returns."""

from refinenet_tf.tasks.segmenter import Prediction, Segmenter

__all__ = ["Prediction", "Segmenter"]
