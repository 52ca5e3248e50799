"""The default engine: the Keras model itself under one traced ``tf.function`` per test-time augmentation.

Exact (what ``model(images)`` computes, then :func:`refinenet_tf.models.outputs.segment_outputs`), on any device
TensorFlow runs on, the same result on every call: nothing is cached on the weights or the image sizes (the
traced function reads the model's variables, so training the model further changes what it returns).

``precision="bfloat16"`` runs a copy of the model rebuilt under Keras' ``mixed_bfloat16`` policy (float32
weights, bfloat16 math, float32 outputs), made when the engine is made: a snapshot of the weights.
"""

import weakref

import tensorflow as tf
import tf_keras as keras

from refinenet_tf.data.sources import class_names_for
from refinenet_tf.models import outputs as model_outputs
from refinenet_tf.inference.engines import Engine, outputs_of

__all__ = ["KerasEngine", "bfloat16_copy", "model_metadata"]

_FUNCTIONS = weakref.WeakKeyDictionary()  # keras model -> {(scales, flip, max_side): traced function}


def _traced(model, scales, flip, max_side):
    """:func:`refinenet_tf.models.outputs.segment_outputs` traced for uint8 batches of any size, once per model and
    augmentation (a loop of calls reuses it); the cache holds the model weakly."""
    functions = _FUNCTIONS.setdefault(model, {})
    key = (scales, flip, max_side)
    if key not in functions:
        model_ref = weakref.ref(model)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], reduce_retracing=True)
        def run(images):
            return model_outputs.segment_outputs(model_ref(), images, scales, flip, max_side)

        functions[key] = run
    return functions[key]


def model_metadata(model, scales=(1.0,), flip=False, max_side=None, class_names=None):
    """The metadata of a Keras model, with the keys an export writes: ``model``, ``num_classes``,
    ``class_names``, ``tasks`` (a multi-task model's), ``scales``, ``flip``, ``max_side``."""
    tasks = sorted(model.output_shape) if isinstance(model.output_shape, dict) else []
    if model_outputs.is_multitask(model) and not tasks:
        tasks = sorted(model.output_names)
    num_classes = model_outputs.output_classes(model) if not tasks or "segmentation" in tasks else None
    return {"model": model.name, "num_classes": num_classes,
            "class_names": list(class_names_for(num_classes, class_names)) if num_classes else [],
            "tasks": tasks, "scales": list(scales), "flip": bool(flip), "max_side": max_side}


def _bfloat16_config(config):
    """A model config with every layer's dtype policy ``mixed_bfloat16`` (inputs stay float32)."""
    if isinstance(config, list):
        return [_bfloat16_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    config = {key: _bfloat16_config(value) for key, value in config.items()}
    if config.get("class_name") not in (None, "InputLayer") and isinstance(config.get("config"), dict) \
            and "dtype" in config["config"]:
        config["config"]["dtype"] = {"class_name": "Policy", "config": {"name": "mixed_bfloat16"}}
    return config


def bfloat16_copy(model):
    """A copy of ``model`` under the ``mixed_bfloat16`` policy, with its weights (float32 variables, bfloat16
    math). Its layers must serialize (``get_config``), as every layer of this package does."""
    config = _bfloat16_config(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


class KerasEngine(Engine):
    """The Keras model under ``tf.function`` (see the module); ``source`` must be a ``keras.Model``."""

    name = "keras"
    supports_bfloat16 = True

    def _load(self, source):
        if not isinstance(source, keras.Model):
            raise TypeError(f"engine='keras' runs a keras.Model, got {type(source).__name__}; for an exported "
                            "file use engine=engines.engine_for_path(path).")
        self.metadata = model_metadata(source, self.scales, self.flip, self.max_side)
        model_outputs.check_task_augmentation(self.metadata["tasks"], self.scales, self.flip, self.max_side,
                                          source.name)
        self.outputs = outputs_of(self.metadata)
        self.num_classes = self.metadata["num_classes"]
        self.model = bfloat16_copy(source) if self.precision == "bfloat16" else source
        self._function = _traced(self.model, self.scales, self.flip, self.max_side)

    def _run(self, images):
        return {name: value.numpy() for name, value in self._function(images).items()}
