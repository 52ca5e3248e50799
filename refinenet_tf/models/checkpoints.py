"""The one function that applies a converter's table: foreign tensors -> Keras weights, all or nothing.

A table maps each Keras weight name (see :func:`weight_names`) to ``(foreign name, transform)``. The
transforms turn a foreign layout into Keras' layout:

* ``"identity"``: the same array (TF checkpoints, biases, BatchNorm vectors);
* ``"conv_oihw"``: a PyTorch ``Conv2d`` kernel ``[out, in, h, w]`` -> Keras ``[h, w, in, out]``;
* ``"depthwise_oihw"``: a PyTorch depthwise ``Conv2d`` kernel ``[channels, 1, h, w]`` -> Keras
  ``DepthwiseConv2D`` ``[h, w, channels, 1]``;
* ``"linear_oi"``: a PyTorch ``Linear`` weight ``[out, in]`` -> Keras ``Dense`` ``[in, out]``.
"""

import collections

import numpy as np
import tf_keras as keras

__all__ = ["TRANSFORMS", "ConversionError", "assign_weights", "weight_names"]

TRANSFORMS = {
    "identity": lambda array: array,
    "conv_oihw": lambda array: np.transpose(array, (2, 3, 1, 0)),
    "depthwise_oihw": lambda array: np.transpose(array, (2, 3, 0, 1)),
    "linear_oi": lambda array: np.transpose(array, (1, 0)),
}

#: Names listed in full in an error; longer lists end with "... and N more".
_LISTED = 25


class ConversionError(ValueError):
    """A checkpoint that does not fit the model: the message lists every problem by name."""


def weight_names(model):
    """``{name: variable}`` for every weight of ``model`` (trainable or not), names without the ``:0`` suffix.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
        >>> sorted(weight_names(model))
        ['dense/bias', 'dense/kernel']
    """
    names = {}
    for variable in model.weights:
        name = variable.name[:-2] if variable.name.endswith(":0") else variable.name
        if name in names:
            raise ValueError(f"Model {model.name!r} has two weights named {name!r}; converters need unique names.")
        names[name] = variable
    return names


def _listed(names):
    names = sorted(names)
    shown = ", ".join(names[:_LISTED])
    return shown + (f" ... and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def assign_weights(model, tensors, table, source, ignored=()):
    """Fills every weight of ``model`` from ``tensors`` through ``table``, or changes nothing and raises.

    Args:
        model: the Keras model to fill.
        tensors: ``{foreign name: numpy array}``, everything the checkpoint holds.
        table: ``{Keras weight name: (foreign name, transform)}``, with a transform of :data:`TRANSFORMS`.
        source: what the tensors come from (a file path), for the error message.
        ignored: foreign names that carry nothing for the model (``num_batches_tracked``, optimizer slots, a
            global step); they may stay unused.

    Raises:
        ConversionError: naming, in one message, the checkpoint tensors the table needs but the file lacks, the
            tensors the file holds that nothing uses, the model weights the table does not fill, tensors used
            twice, and every shape that does not fit (checkpoint shape after the transform vs. the weight's).

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> assign_weights(model, {"fc.weight": np.ones([2, 3]), "fc.bias": np.zeros([2])},
        ...                {"fc/kernel": ("fc.weight", "linear_oi"), "fc/bias": ("fc.bias", "identity")}, "demo")
        >>> model.get_layer("fc").kernel.shape.as_list()
        [3, 2]
        >>> assign_weights(model, {"fc.weight": np.ones([2, 3])}, {"fc/kernel": ("fc.weight", "linear_oi")}, "demo.pth")
        Traceback (most recent call last):
        ...
        refinenet_tf.models.checkpoints.ConversionError: demo.pth does not fit model 'sequential...': model weights with no source in the table: fc/bias
    """
    variables = weight_names(model)
    unknown_transforms = sorted({transform for _, transform in table.values() if transform not in TRANSFORMS})
    if unknown_transforms:
        raise ValueError(f"Unknown transforms {unknown_transforms}; use those of TRANSFORMS: {sorted(TRANSFORMS)}.")
    used = collections.Counter(foreign for foreign, _ in table.values())
    values, wrong_shapes = [], []
    for name, (foreign, transform) in sorted(table.items()):
        if foreign not in tensors or name not in variables:
            continue
        value = TRANSFORMS[transform](np.asarray(tensors[foreign]))
        expected = tuple(variables[name].shape.as_list())
        if tuple(value.shape) != expected:
            wrong_shapes.append(f"{foreign} {tuple(np.shape(tensors[foreign]))} -> {name} {expected}")
        else:
            values.append((variables[name], value.astype(variables[name].dtype.as_numpy_dtype)))
    problems = [f"{what}: {_listed(names)}" for what, names in (
        ("missing from the checkpoint", {foreign for foreign in used if foreign not in tensors}),
        ("checkpoint tensors that fit no model weight", set(tensors) - set(used) - set(ignored)),
        ("checkpoint tensors mapped to more than one weight", {name for name, count in used.items() if count > 1}),
        ("model weights with no source in the table", set(variables) - set(table)),
        ("table entries for weights the model lacks", set(table) - set(variables)),
        ("wrong shapes (checkpoint -> model)", wrong_shapes)) if names]
    if problems:
        raise ConversionError(f"{source} does not fit model {model.name!r}: " + "; ".join(problems))
    keras.backend.batch_set_value(values)
