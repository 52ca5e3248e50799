"""The ``openvino`` engine: OpenVINO on the CPU, from a Keras model, an OpenVINO IR (``.xml``, written by
:func:`refinenet_tf.export.export_openvino`) or an ONNX export (``.onnx``).

From a Keras model it converts once (``openvino.convert_model`` of the serving function, for the engine's
test-time augmentation); from a path it reads the model and the metadata it carries. The input's batch, height and
width stay dynamic: any image size runs without a new conversion. OpenVINO picks its threads (all cores).

Precision: ``float32`` sets ``INFERENCE_PRECISION_HINT`` to ``f32`` (OpenVINO's own default on CPUs with bfloat16
is ``bf16``); ``bfloat16`` sets it to ``bf16`` and needs a CPU that OpenVINO runs bfloat16 on (``"BF16"`` in its
``OPTIMIZATION_CAPABILITIES``): elsewhere OpenVINO would silently run float32, so the engine refuses with a
``ValueError``. Needs the ``openvino`` extra: ``pip install "refinenet_tf[openvino]"``.
"""

import json
import os

import openvino
import tf_keras as keras

from refinenet_tf.export import exporters as export
from refinenet_tf.inference.engines import OUTPUTS, Engine

__all__ = ["OpenVinoEngine", "openvino_bfloat16"]

_DEVICE = "CPU"
_HINTS = {"float32": "f32", "bfloat16": "bf16"}


def openvino_bfloat16():
    """Whether OpenVINO runs bfloat16 on this machine's CPU (``"BF16"`` in its ``OPTIMIZATION_CAPABILITIES``)."""
    return "BF16" in openvino.Core().get_property(_DEVICE, "OPTIMIZATION_CAPABILITIES")


class OpenVinoEngine(Engine):
    """Runs the model compiled by OpenVINO for the CPU (see the module)."""

    name = "openvino"
    supports_bfloat16 = True

    def __init__(self, source, *, precision="float32", **options):
        if precision == "bfloat16" and not openvino_bfloat16():
            raise ValueError("engine='openvino', precision='bfloat16': this CPU has no bfloat16 in OpenVINO (no BF16 "
                             "in its OPTIMIZATION_CAPABILITIES), it would run float32; use precision='float32'.")
        super().__init__(source, precision=precision, **options)

    def _load(self, source):
        core = openvino.Core()
        if isinstance(source, keras.Model):
            model = export.openvino_model(source, self.scales, self.flip, self.max_side)
            metadata = json.loads(str(model.get_rt_info([export.METADATA_KEY]).astype(str)))
        else:
            path = os.fspath(source)
            if not path.endswith((".xml", ".onnx")) or not os.path.isfile(path):
                raise ValueError(f"engine='openvino': {path!r} is not an OpenVINO .xml (or .onnx) file; refinenet-tf "
                                 "export --format openvino writes one.")
            metadata = export.read_metadata(path)
            model = core.read_model(path)
            self._take_export_settings(metadata)
        self._compiled = core.compile_model(model, _DEVICE, {"INFERENCE_PRECISION_HINT": _HINTS[self.precision]})
        self._names = {output: names.pop() for output in self._compiled.outputs
                       if (names := output.get_names() & set(OUTPUTS + ("labels",)))}
        self._describe_outputs(metadata, {name: (metadata.get("num_classes") or 0,) for name in self._names.values()})

    def _run(self, images):
        results = self._compiled(images)
        return {name: results[output] for output, name in self._names.items()}
