"""The ``tflite`` engine: LiteRT (``ai_edge_litert``, else ``tf.lite``) on a TFLite model
(:func:`refinenet_tf.export.export_tflite`), float32 only.

From a Keras model it exports a float32 model of any input size to a temporary file and loads it (the weights of
that moment). The interpreter runs one image at a time, resizing its input to each image's size (a new size
costs a re-allocation of its tensors, not a conversion).
"""

import os

import numpy as np
import tf_keras as keras

from refinenet_tf.export import exporters as export
from refinenet_tf.inference.engines import Engine, temporary_folder

__all__ = ["TFLiteEngine"]


class TFLiteEngine(Engine):
    """Runs the ``serving_default`` signature of a TFLite model (see the module)."""

    name = "tflite"

    def _load(self, source):
        if isinstance(source, keras.Model):
            if self.max_side is not None:
                raise ValueError("engine='tflite' builds no max_side= into its model; leave max_side=None or "
                                 "choose engine='keras'.")
            with temporary_folder("tflite") as folder:  # the interpreter holds the model in memory
                path = export.export_tflite(source, os.path.join(folder, "model.tflite"), input_size=None,
                                            scales=self.scales, flip=self.flip)
                self._load_file(path, export.read_metadata(path))
            return
        path = os.fspath(source)
        if not path.endswith(".tflite") or not os.path.isfile(path):
            raise ValueError(f"engine='tflite': {path!r} is not a .tflite file; refinenet-tf export --format "
                             "tflite writes one.")
        metadata = export.read_metadata(path)
        self._take_export_settings(metadata)
        self._load_file(path, metadata)

    def _load_file(self, path, metadata):
        with open(path, "rb") as stream:
            content = stream.read()
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        self._interpreter = Interpreter(model_content=content, num_threads=os.cpu_count())
        self._runner = self._interpreter.get_signature_runner("serving_default")
        details = self._runner.get_output_details()
        self._describe_outputs(metadata, {name: tuple(detail["shape"]) for name, detail in details.items()})

    def _run(self, images):
        results = [self._runner(images=image[None]) for image in images]
        return {name: np.concatenate([result[name] for result in results]) for name in results[0]}
