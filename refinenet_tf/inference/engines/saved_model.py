"""The ``saved_model`` engine: TensorFlow on an exported SavedModel (:func:`refinenet_tf.export.export_saved_model`).

From a Keras model it exports one to a temporary folder and loads it (the weights of that moment);
``precision="bfloat16"`` exports the model's ``mixed_bfloat16`` copy (:func:`refinenet_tf.inference.engines.keras_engine.
bfloat16_copy`). An exported folder runs as it was exported (float32 unless exported from such a copy).
"""

import os

import tensorflow as tf
import tf_keras as keras

from refinenet_tf.export import exporters as export
from refinenet_tf.inference.engines import Engine, temporary_folder
from refinenet_tf.inference.engines.keras_engine import bfloat16_copy

__all__ = ["SavedModelEngine"]


class SavedModelEngine(Engine):
    """Runs the ``serving_default`` signature of an exported SavedModel (see the module)."""

    name = "saved_model"
    supports_bfloat16 = True

    def _load(self, source):
        if isinstance(source, keras.Model):
            model = bfloat16_copy(source) if self.precision == "bfloat16" else source
            with temporary_folder("saved_model") as folder:  # the variables are read into memory when loaded
                self._load_folder(export.export_saved_model(model, os.path.join(folder, "model"), self.scales,
                                                            self.flip, self.max_side))
            return
        if self.precision == "bfloat16":
            raise ValueError("engine='saved_model' runs an exported folder as it was exported; precision='bfloat16' "
                             "needs the keras model (it exports its bfloat16 copy).")
        if not os.path.isfile(os.path.join(os.fspath(source), "saved_model.pb")):
            raise ValueError(f"engine='saved_model': {os.fspath(source)!r} is not a SavedModel folder (no "
                             "saved_model.pb); refinenet-tf export --format saved_model writes one.")
        metadata = export.read_metadata(source)
        self._take_export_settings(metadata)
        self._load_folder(source, metadata)

    def _load_folder(self, path, metadata=None):
        self._loaded = tf.saved_model.load(os.fspath(path))
        if "serving_default" not in self._loaded.signatures:
            raise ValueError(f"engine='saved_model': {os.fspath(path)!r} has no serving_default signature; "
                             "export it with refinenet_tf.export.export_saved_model.")
        self._signature = self._loaded.signatures["serving_default"]
        shapes = {name: spec.shape for name, spec in self._signature.structured_outputs.items()}
        self._describe_outputs(export.read_metadata(path) if metadata is None else metadata, shapes)

    def _run(self, images):
        outputs = self._signature(images=tf.constant(images))
        return {name: value.numpy() for name, value in outputs.items()}
