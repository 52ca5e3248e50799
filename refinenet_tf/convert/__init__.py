"""Foreign checkpoints into refinenet_tf models: TF1/TF-slim checkpoints (:mod:`refinenet_tf.convert.slim`)
and the official PyTorch releases (:mod:`refinenet_tf.convert.pytorch`).

Every converter is a table from the foreign tensor name to the Keras weight it fills, plus a transform name
(see :data:`refinenet_tf.models.checkpoints.TRANSFORMS`), applied by one function,
:func:`refinenet_tf.models.checkpoints.assign_weights`, which fills every Keras weight exactly once from a foreign
tensor used exactly once, or raises one error that lists every problem by name.
"""

from refinenet_tf.models.checkpoints import ConversionError, assign_weights, weight_names

__all__ = ["ConversionError", "assign_weights", "weight_names"]
