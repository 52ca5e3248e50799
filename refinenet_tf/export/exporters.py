"""Export for serving: a SavedModel that needs only TensorFlow, TFLite, ONNX and OpenVINO models.

Every format has one contract: uint8 RGB images in (no preprocessing: the model normalizes inside), ``labels``
and ``probabilities`` out (a multi-task model's also ``depth`` and ``normals``), and the same metadata (class
names, palette, preprocessing, the built-in test-time augmentation, the tasks; :func:`read_metadata` reads it
from any format).

SavedModel signatures (``tf.saved_model.load(path).signatures[...]``):

=====================  =====================================  ==================================================
signature              input                                  outputs
=====================  =====================================  ==================================================
``serving_default``    ``images``: uint8 ``[N, H, W, 3]``     ``labels`` int32 ``[N, H, W]``,
                       (RGB, any ``H, W``)                    ``probabilities`` float32 ``[N, H, W, C]``
``serving_bytes``      ``image_bytes``: string ``[N]``        ``labels`` int32 ``[N, Hmax, Wmax]`` (-1 past each
                       (encoded JPEG / PNG / BMP / GIF)       image's size), ``probabilities`` float32 (0 there),
                                                              ``image_sizes`` int32 ``[N, 2]`` (height, width)
=====================  =====================================  ==================================================

Both run the same TensorFlow function as :func:`refinenet_tf.inference.predict`
(:func:`refinenet_tf.models.outputs.segment_outputs`, with the test-time augmentation chosen at export), so their labels equal the in-process model's. The weights stay variables
(``loaded.trainable_weights``, ``loaded.weights``: the export can be fine-tuned); TensorFlow's graph optimizer
(Grappler) folds what it can when the signature first runs. The folder also holds ``refinenet_tf.json``: class
names, number of classes, augmentation, the source model. Loading needs only TensorFlow (not ``refinenet_tf``, not
Keras)::

    import tensorflow as tf
    serve = tf.saved_model.load("export/saved_model").signatures["serving_default"]
    labels = serve(images=tf.zeros([1, 375, 500, 3], tf.uint8))["labels"]

A multi-task model (:func:`refinenet_tf.models.multitask.MultiTaskRefineNet`, whose output is a dict) exports with
the same signatures and, beside ``labels`` and ``probabilities`` of its segmentation, ``depth`` float32
``[N, H, W]`` (metres for the official checkpoints; 0 past each image's size in ``serving_bytes``) and, if it has
that head, ``normals`` float32 ``[N, H, W, 3]``, all at the input size, from one forward pass (no test-time
augmentation: zooming an image changes what its depth means).

TFLite (:func:`export_tflite`): ``float32``, ``float16`` (weights stored as float16) or ``int8`` (dynamic-range
quantization: int8 weights, float activations) with the same ``serving_default`` signature for one image.
Its metadata is in ``PATH.json`` beside the file. ONNX (:func:`export_onnx`, needs
``pip install "refinenet_tf[onnx]"``): input ``images``, outputs ``labels`` and ``probabilities``, any batch and
size, the metadata in the model's ``metadata_props``. OpenVINO (:func:`export_openvino`, needs
``pip install "refinenet_tf[openvino]"``): an IR ``.xml`` and ``.bin`` with the same input and outputs (dynamic
batch and size), the metadata in its ``rt_info``; it loads with OpenVINO alone.
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from refinenet_tf import _files
from refinenet_tf._checks import check_scales
from refinenet_tf.data import visualization
from refinenet_tf.data.sources import class_names_for
from refinenet_tf.models import outputs as model_outputs
from refinenet_tf.options import QUANTIZATIONS

__all__ = ["METADATA_KEY", "PREPROCESSING", "QUANTIZATIONS", "export_onnx", "export_openvino", "export_saved_model",
           "export_tflite", "onnx_model", "openvino_model", "read_metadata", "tflite_interpreter"]

_METADATA = "refinenet_tf.json"
#: the key of the metadata (a JSON string) in an ONNX model's ``metadata_props`` and an OpenVINO IR's ``rt_info``
METADATA_KEY = "refinenet_tf"
#: what a caller does to an image before an export sees it: nothing (the model normalizes inside)
PREPROCESSING = "none: uint8 RGB in [0, 255] as decoded; the model converts and normalizes it inside"


class _Serving:
    """The model and the serving functions that wrap it (uint8 in; labels and probabilities out)."""

    def __init__(self, model, scales=(1.0,), flip=False, max_side=None):
        self.model = model
        self.scales = check_scales(scales)
        self.flip, self.max_side = bool(flip), max_side
        self.tasks = _tasks(model)
        if self.tasks and (self.scales != (1.0,) or self.flip or max_side is not None):
            raise ValueError(f"{model.name} is a multi-task model ({', '.join(self.tasks)}): export it without "
                             "test-time augmentation (scales=(1.0,), flip=False, max_side=None).")

    def variables_root(self):
        """The object an export saves its functions' variables from: a ``tf.Module`` holding the model's
        variables and nothing else of it. (Holding the Keras model would have TensorFlow trace every layer's call
        for a Keras SavedModel that no export loads: most of an export's time.)"""
        root = tf.Module(name="refinenet_serving")
        # restored as lists: loaded.trainable_weights for fine-tuning, loaded.weights for all
        root.trainable_weights = list(self.model.trainable_weights)
        root.weights = list(self.model.weights)
        return root

    def outputs(self, images):
        if self.tasks:  # one forward pass at the input size (a multi-task model takes no augmentation)
            return model_outputs.segment_outputs(self.model, images)
        probabilities = model_outputs.segment(self.model, images, self.scales, self.flip, self.max_side)
        return {"labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32), "probabilities": probabilities}

    def padded_outputs(self):
        """``{output: (spec of one image's output, padding value)}`` for ``serving_bytes``."""
        classes = _num_classes(self.model)
        specs = {}
        if classes is not None:
            specs["labels"] = (tf.TensorSpec([None, None], tf.int32), -1)
            specs["probabilities"] = (tf.TensorSpec([None, None, classes], tf.float32), 0.0)
        if "depth" in self.tasks:
            specs["depth"] = (tf.TensorSpec([None, None], tf.float32), 0.0)
        if "normals" in self.tasks:
            specs["normals"] = (tf.TensorSpec([None, None, 3], tf.float32), 0.0)
        return specs

    def serve_images(self, images):
        return self.outputs(_validated(images))

    def serve_bytes(self, image_bytes):
        def decode(data):
            image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
            image.set_shape([None, None, 3])
            return image

        sizes = tf.map_fn(lambda data: tf.shape(decode(data))[:2], image_bytes, fn_output_signature=tf.int32)
        height, width = tf.reduce_max(sizes[:, 0]), tf.reduce_max(sizes[:, 1])
        specs = self.padded_outputs()

        def one(data):
            image = decode(data)
            result = self.outputs(image[None])
            pad = [[0, height - tf.shape(image)[0]], [0, width - tf.shape(image)[1]]]
            return tuple(tf.pad(result[name][0], pad + [[0, 0]] * (spec.shape.rank - 2), constant_values=value)
                         for name, (spec, value) in specs.items())

        padded = tf.map_fn(one, image_bytes, fn_output_signature=tuple(spec for spec, _ in specs.values()))
        return dict(zip(specs, padded), image_sizes=sizes)


def _tasks(model):
    """The tasks of a multi-task model (the keys of its dict output), ``()`` for a segmentation model."""
    shape = getattr(model, "output_shape", None)
    return tuple(sorted(shape)) if isinstance(shape, dict) else ()


def _num_classes(model):
    """The segmentation classes of ``model`` (``None`` for a multi-task model without a segmentation head)."""
    shape = model.output_shape
    if isinstance(shape, dict):
        shape = shape.get("segmentation")
    return None if shape is None else shape[-1]


def _validated(images):
    """``images`` after checks of rank, channels and size that fail with a message saying what is expected.

    The signature's ``TensorSpec`` makes TensorFlow check the dtype, but a loaded signature does not check shapes,
    and a rank declared in the spec would let TensorFlow fold the rank check away: the spec leaves the shape open
    and the checks here close it.
    """
    expected = "serving_default expects images: uint8 RGB [batch, height, width, 3] with height, width >= 1; got shape"
    shape = tf.shape(images)
    valid = tf.cond(tf.equal(tf.size(shape), 4),  # the cond keeps shape[1:3] from running on another rank
                    lambda: tf.logical_and(tf.equal(shape[-1], 3), tf.reduce_all(shape[1:3] > 0)),
                    lambda: tf.constant(False))
    check = tf.debugging.Assert(valid, [expected, shape], summarize=8)
    with tf.control_dependencies([check]):
        return tf.ensure_shape(images, [None, None, None, 3])


def _metadata(model, serving, class_names, source):
    num_classes = _num_classes(model)
    metadata = {"format": "refinenet_tf export 1", "model": model.name, "source": source, "num_classes": num_classes,
                "class_names": list(class_names_for(num_classes, class_names)) if num_classes else [],
                "palette": visualization.voc_palette(num_classes).tolist() if num_classes else [],
                "preprocessing": PREPROCESSING,
                "scales": list(serving.scales), "flip": serving.flip, "max_side": serving.max_side,
                "input": "uint8 RGB [N, H, W, 3], any H and W", "labels": "int32 [N, H, W]",
                "probabilities": "float32 [N, H, W, C]"}
    if serving.tasks:
        metadata["tasks"] = list(serving.tasks)
        if "depth" in serving.tasks:
            metadata["depth"] = "float32 [N, H, W], the model's depth unit (metres for the official checkpoints)"
        if "normals" in serving.tasks:
            metadata["normals"] = "float32 [N, H, W, 3], unit vectors"
    return metadata


def _check_target(path, overwrite, what):
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{what} path={path!r} already exists; remove it, choose another path or pass "
                              "overwrite=True.")
    _files.writable_folder(os.path.dirname(os.path.abspath(path)), f"the folder of path={path!r}:")


def export_saved_model(model, path, scales=(1.0,), flip=False, max_side=None, class_names=None, overwrite=False,
                       source=""):
    """Writes a SavedModel with the ``serving_default`` and ``serving_bytes`` signatures (see the module).

    The folder is written under a temporary name beside ``path`` and renamed when complete, so an interrupted
    export never leaves a partial model at ``path``; with ``overwrite`` an existing export is replaced only then.

    Args:
        model: a segmentation model (see :func:`refinenet_tf.models.outputs.segment`), or a multi-task model (its
            signatures add ``depth`` and ``normals``; see the module).
        path: the SavedModel folder to create.
        scales, flip, max_side: test-time augmentation built into the signatures (segmentation models only).
        class_names: stored in ``refinenet_tf.json`` (default: VOC's for 21 classes, else ``class_i``).
        overwrite: replace an existing ``path``.
        source: where the model came from, for ``refinenet_tf.json``.

    Returns:
        ``path``.
    """
    path = os.path.abspath(os.fspath(path))
    _check_target(path, overwrite, "SavedModel folder")
    serving = _Serving(model, scales, flip, max_side)
    images = tf.function(serving.serve_images, input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    encoded = tf.function(serving.serve_bytes, input_signature=[tf.TensorSpec([None], tf.string,
                                                                              name="image_bytes")])
    with tempfile.TemporaryDirectory(prefix=".tmp-" + os.path.basename(path) + "-", dir=os.path.dirname(path),
                                     ignore_cleanup_errors=True) as temporary:
        signatures = {"serving_default": images.get_concrete_function(),
                      "serving_bytes": encoded.get_concrete_function()}
        tf.saved_model.save(serving.variables_root(), temporary, signatures=signatures)
        with open(os.path.join(temporary, _METADATA), "w") as stream:
            json.dump(dict(_metadata(model, serving, class_names, source), weights="variables"), stream, indent=2)
        os.chmod(temporary, 0o777 & ~_files._umask())
        _replace_folder(temporary, path)
    return path


def _replace_folder(new, path):
    """Renames folder ``new`` to ``path``; an existing ``path`` is moved aside first and deleted after."""
    if not os.path.lexists(path):
        os.replace(new, path)
        return
    old = tempfile.mkdtemp(prefix=".old-" + os.path.basename(path) + "-", dir=os.path.dirname(path))
    os.rmdir(old)
    os.replace(path, old)
    try:
        os.replace(new, path)
    except OSError:
        os.replace(old, path)  # put the previous export back
        raise
    if os.path.isdir(old) and not os.path.islink(old):
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.remove(old)


def export_tflite(model, path, quantization="float32", input_size=(512, 512), scales=(1.0,), flip=False,
                  overwrite=False, class_names=None, source=""):
    """Writes a TFLite model whose ``serving_default`` signature maps ``images`` uint8 ``[1, H, W, 3]`` to
    ``labels`` int32 ``[1, H, W]`` and ``probabilities`` float32 ``[1, H, W, C]`` (a multi-task model: also
    ``depth`` float32 ``[1, H, W]`` and ``normals`` if it has them), and its metadata beside it (``PATH.json``,
    see :func:`read_metadata`).

    Args:
        model: a segmentation model (see :func:`refinenet_tf.models.outputs.segment`) or a multi-task model.
        path: the ``.tflite`` file to write (atomically; the metadata first).
        quantization: ``float32``, ``float16`` (float16 weights) or ``int8`` (dynamic-range quantization).
        input_size: ``(H, W)`` of the input, or ``None`` for any size (call ``resize_tensor_input`` before
            ``allocate_tensors``).
        scales, flip: test-time augmentation built into the model.
        overwrite: replace an existing file.
        class_names, source: for the metadata, as :func:`export_saved_model`.

    Returns:
        ``path``.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r} is not one of {QUANTIZATIONS}.")
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"path={path!r}: a TFLite model file must end with .tflite.")
    _check_target(path, overwrite, "TFLite file")
    height, width = (None, None) if input_size is None else (int(input_size[0]), int(input_size[1]))
    serving = _Serving(model, scales, flip)
    function = tf.function(serving.outputs).get_concrete_function(
        tf.TensorSpec([1, height, width, 3], tf.uint8, name="images"))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], serving.variables_root())
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    flatbuffer = converter.convert()
    metadata = dict(_metadata(model, serving, class_names, source), quantization=quantization,
                    input_size=None if input_size is None else [height, width])
    _files.write_json_atomically(path + ".json", metadata)
    with _files.atomic_path(path, suffix=".tflite") as temporary, open(temporary, "wb") as stream:
        stream.write(flatbuffer)
    return path


def tflite_interpreter(path, num_threads=None):
    """A TFLite interpreter for ``path``: LiteRT's (``ai_edge_litert``) when installed, else ``tf.lite``'s."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=os.fspath(path), num_threads=num_threads or os.cpu_count())


def onnx_model(model, scales=(1.0,), flip=False, max_side=None, class_names=None, source="", opset=17):
    """The ONNX ``ModelProto`` that :func:`export_onnx` writes (through ``tf2onnx``), its metadata in
    ``metadata_props`` under :data:`METADATA_KEY`. Needs the ``onnx`` extra."""
    try:
        import tf2onnx
    except ImportError:
        raise ImportError('ONNX export needs tf2onnx: pip install "refinenet_tf[onnx]"') from None
    serving = _Serving(model, scales, flip, max_side)
    proto, _ = tf2onnx.convert.from_function(
        tf.function(serving.outputs),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")], opset=opset)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(_metadata(model, serving, class_names, source))
    return proto


def export_onnx(model, path, scales=(1.0,), flip=False, opset=17, overwrite=False, max_side=None, class_names=None,
                source=""):
    """Writes an ONNX model (through ``tf2onnx``): ``images`` uint8 ``[N, H, W, 3]`` -> ``labels`` int32
    ``[N, H, W]`` and ``probabilities`` float32 ``[N, H, W, C]`` (a multi-task model: also ``depth`` and
    ``normals``), any ``N, H, W``; its metadata in the model's ``metadata_props`` (:func:`read_metadata`); written
    atomically.

    Needs the ``onnx`` extra: ``pip install "refinenet_tf[onnx]"`` (tf2onnx >= 1.17, onnx, onnxruntime).
    ``max_side``, ``class_names`` and ``source`` are as for :func:`export_saved_model`.
    """
    path = os.fspath(path)
    if not path.endswith(".onnx"):
        raise ValueError(f"path={path!r}: an ONNX model file must end with .onnx.")
    _check_target(path, overwrite, "ONNX file")
    proto = onnx_model(model, scales, flip, max_side, class_names, source, opset)
    with _files.atomic_path(path, suffix=".onnx") as temporary, open(temporary, "wb") as stream:
        stream.write(proto.SerializeToString())
    return path


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise ImportError('OpenVINO export needs openvino: pip install "refinenet_tf[openvino]"') from None
    return openvino


def openvino_model(model, scales=(1.0,), flip=False, max_side=None, class_names=None, source=""):
    """The ``openvino.Model`` that :func:`export_openvino` writes: ``openvino.convert_model`` of the serving
    function (in memory), input ``images`` uint8 ``[?, ?, ?, 3]`` (dynamic batch and size), its metadata in
    ``rt_info`` under :data:`METADATA_KEY`. Needs the ``openvino`` extra."""
    openvino = _import_openvino()
    serving = _Serving(model, scales, flip, max_side)
    function = tf.function(serving.outputs).get_concrete_function(
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images"))
    converted = openvino.convert_model(function)
    converted.set_rt_info(json.dumps(_metadata(model, serving, class_names, source)), [METADATA_KEY])
    return converted


def export_openvino(model, path, scales=(1.0,), flip=False, max_side=None, class_names=None, overwrite=False,
                    source=""):
    """Writes an OpenVINO IR: ``path`` (``.xml``, the graph and the metadata in its ``rt_info``) and the weights
    beside it (the same name ending ``.bin``, float32: no float16 compression). Input ``images`` uint8
    ``[N, H, W, 3]`` (any ``N, H, W``), outputs ``labels`` int32 ``[N, H, W]`` and ``probabilities`` float32
    ``[N, H, W, C]`` (a multi-task model: also ``depth`` and ``normals``).

    Both files are written under temporary names and renamed when complete (the ``.bin``, then the ``.xml``), so
    an interrupted export leaves any previous export whole. Needs the ``openvino`` extra:
    ``pip install "refinenet_tf[openvino]"``. The arguments are as for :func:`export_saved_model`.

    Returns:
        ``path``.
    """
    openvino = _import_openvino()
    path = os.path.abspath(os.fspath(path))
    if not path.endswith(".xml"):
        raise ValueError(f"path={path!r}: an OpenVINO model is an .xml file (its weights go beside it, .bin).")
    weights = path[:-len(".xml")] + ".bin"
    _check_target(path, overwrite, "OpenVINO file")
    _check_target(weights, overwrite, "OpenVINO weights file")
    converted = openvino_model(model, scales, flip, max_side, class_names, source)
    with tempfile.TemporaryDirectory(prefix=".tmp-" + os.path.basename(path) + "-", dir=os.path.dirname(path),
                                     ignore_cleanup_errors=True) as folder:
        openvino.save_model(converted, os.path.join(folder, "model.xml"), compress_to_fp16=False)
        for name in ("model.bin", "model.xml"):
            os.chmod(os.path.join(folder, name), 0o666 & ~_files._umask())
        os.replace(os.path.join(folder, "model.bin"), weights)
        os.replace(os.path.join(folder, "model.xml"), path)
    return path


def read_metadata(path):
    """The metadata an export carries (class names, palette, preprocessing, augmentation, tasks...; see
    :func:`export_saved_model`), for any format: ``refinenet_tf.json`` in a SavedModel folder, ``PATH.json``
    beside a ``.tflite`` file, an ONNX model's ``metadata_props``, an OpenVINO ``.xml``'s ``rt_info``.

    Raises:
        ValueError: ``path`` is not an export of this package (or its metadata is missing).
    """
    path = os.fspath(path)
    what = (f"{path!r} has no refinenet_tf metadata: give an export written by refinenet_tf.export (a SavedModel "
            "folder, .tflite, .onnx or OpenVINO .xml).")
    try:
        if os.path.isdir(path) or path.endswith(".tflite"):
            with open(os.path.join(path, _METADATA) if os.path.isdir(path) else path + ".json") as stream:
                return json.load(stream)
        if path.endswith(".onnx"):
            import onnx

            try:
                proto = onnx.load(path, load_external_data=False)
            except OSError:
                raise
            except Exception as error:  # protobuf's DecodeError and kin: not an ONNX model
                raise ValueError(f"not an ONNX model: {error}") from None
            return json.loads({entry.key: entry.value for entry in proto.metadata_props}[METADATA_KEY])
        if path.endswith(".xml"):
            model = _import_openvino().Core().read_model(path)
            return json.loads(str(model.get_rt_info([METADATA_KEY]).astype(str)))
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise ValueError(f"{what} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
                         ) from None
    raise ValueError(what)
