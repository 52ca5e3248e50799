"""The ``onnxruntime`` engine: ONNX Runtime on an ONNX export (:func:`refinenet_tf.export.export_onnx`), float32.

From a Keras model it converts once (``tf2onnx``, in memory, for the engine's test-time augmentation); from a
``.onnx`` path it loads the export and the metadata in its ``metadata_props``. The model's batch, height and width
are dynamic axes: any image size runs without a new conversion. ONNX Runtime runs on the CPU with one intra-op
thread per core. Needs the ``onnx`` extra: ``pip install "refinenet_tf[onnx]"``.
"""

import json
import os

import onnxruntime
import tf_keras as keras

from refinenet_tf.export import exporters as export
from refinenet_tf.inference.engines import Engine

__all__ = ["OnnxRuntimeEngine"]


class OnnxRuntimeEngine(Engine):
    """Runs an ONNX export (``images`` uint8 in; ``labels``, ``probabilities``, ``depth``, ``normals`` out) with
    ONNX Runtime's CPU provider (see the module)."""

    name = "onnxruntime"

    def _load(self, source):
        if isinstance(source, keras.Model):
            content = export.onnx_model(source, self.scales, self.flip, self.max_side).SerializeToString()
        else:
            content = os.fspath(source)
            if not content.endswith(".onnx") or not os.path.isfile(content):
                raise ValueError(f"engine='onnxruntime': {content!r} is not an .onnx file; refinenet-tf export "
                                 "--format onnx writes one.")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        try:
            self._session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime raises its own exception types for an unreadable model
            raise ValueError(f"engine='onnxruntime': {source!r} is not an ONNX model ONNX Runtime can load "
                             f"({str(error).splitlines()[0]}).") from None
        properties = self._session.get_modelmeta().custom_metadata_map
        if export.METADATA_KEY not in properties:
            raise ValueError(f"engine='onnxruntime': {source!r} has no refinenet_tf metadata; export the model "
                             "with refinenet_tf.export.export_onnx.")
        metadata = json.loads(properties[export.METADATA_KEY])
        if not isinstance(source, keras.Model):
            self._take_export_settings(metadata)
        self._names = [output.name for output in self._session.get_outputs()]
        self._describe_outputs(metadata, {name: (metadata.get("num_classes") or 0,) for name in self._names})

    def _run(self, images):
        return dict(zip(self._names, self._session.run(self._names, {"images": images})))
