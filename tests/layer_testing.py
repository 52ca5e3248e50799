"""The layer contract every refinenet_tf layer must meet (after keras-hub's ``run_layer_test``)."""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras as keras


def _is_shape(value):
    return isinstance(value, tuple) and all(isinstance(d, int) for d in value)


def _map_shapes(shapes, rng):
    if _is_shape(shapes):
        return rng.standard_normal(shapes).astype(np.float32)
    return [_map_shapes(s, rng) for s in shapes]


def _symbolic(shapes):
    if _is_shape(shapes):
        return keras.Input(batch_size=shapes[0], shape=(None, None, shapes[-1]))
    return [_symbolic(s) for s in shapes]


def run_layer_test(layer_class, init_kwargs, input_shapes, expected_output_shape, fit=True):
    """Checks a layer: config -> JSON -> from_config, symbolic and eager calls, output shape, one fit step,
    and a ``.keras`` and a SavedModel round trip of a model holding it (same outputs after reloading).

    Args:
        layer_class: the layer class.
        init_kwargs: constructor arguments.
        input_shapes: a shape tuple, or a (nested) list of them for multi-input layers.
        expected_output_shape: the eager output's shape.
        fit: also train one step inside a functional model and check that every trainable weight moved.

    Returns:
        The eager output (a NumPy array) of the layer built from the round-tripped config.
    """
    rng = np.random.default_rng(0)
    layer = layer_class(**init_kwargs)

    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert config[key] == value, f"get_config()[{key!r}] is {config[key]!r}, not the constructor's {value!r}"
    restored = layer_class.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config

    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("refinenet_tf>"), serialized["registered_name"]
    assert type(keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))) is layer_class

    data = _map_shapes(input_shapes, rng)
    eager = restored(data, training=False)
    assert tuple(eager.shape) == tuple(expected_output_shape), (eager.shape, expected_output_shape)
    static = restored.compute_output_shape(_map_tensorshapes(input_shapes))
    assert tuple(static) == tuple(expected_output_shape), (static, expected_output_shape)

    symbolic_inputs = _symbolic(input_shapes)
    symbolic_layer = layer_class.from_config(config)
    symbolic_output = symbolic_layer(symbolic_inputs)
    assert symbolic_output.shape[-1] == expected_output_shape[-1]
    model = keras.Model(symbolic_inputs, symbolic_output)
    np.testing.assert_allclose(model(data).numpy(), symbolic_layer(data).numpy(), rtol=1e-6, atol=1e-6)

    if fit and symbolic_layer.trainable_weights:
        before = [w.numpy().copy() for w in symbolic_layer.trainable_weights]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.optimizer.build(model.trainable_variables)  # else fit traces its first step twice, to create them
        target = rng.standard_normal(expected_output_shape).astype(np.float32)
        history = model.fit(data, target, epochs=1, batch_size=expected_output_shape[0], verbose=0)
        assert np.isfinite(history.history["loss"][0])
        unchanged = [w.name for w, b in zip(symbolic_layer.trainable_weights, before)
                     if np.array_equal(w.numpy(), b)]
        assert not unchanged, f"one fit step left these weights unchanged: {unchanged}"

    # a call in inference mode is what predict computes on one batch, without tracing a predict function per model
    expected = model(data, training=False).numpy()
    with tempfile.TemporaryDirectory() as folder:
        keras_path = os.path.join(folder, "model.keras")
        model.save(keras_path)
        np.testing.assert_array_equal(keras.models.load_model(keras_path, safe_mode=True)(data, training=False).numpy(),
                                      expected, err_msg=".keras round trip changed the outputs")
        saved_model_path = os.path.join(folder, "saved_model")
        model.save(saved_model_path, save_format="tf")
        np.testing.assert_allclose(keras.models.load_model(saved_model_path)(data, training=False).numpy(), expected,
                                   rtol=1e-6, atol=1e-6, err_msg="SavedModel round trip changed the outputs")
    return eager.numpy()


def _map_tensorshapes(shapes):
    if _is_shape(shapes):
        return tf.TensorShape(shapes)
    return [_map_tensorshapes(s) for s in shapes]
