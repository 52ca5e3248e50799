"""Loading saved models quickly and with clear errors.

``keras.models.load_model`` (tf-keras) reads the weights of a ``.keras`` file through h5py straight from
the zip archive, seeking back and forth in a compressed-stream reader, which is slow for large models
(``benchmarks/load_model.py`` measures both; the documentation's Python API page has the figures).
:func:`load_model` extracts the weights to a temporary file first and then uses the same public Keras calls
(``deserialize_keras_object`` + ``load_weights``). The archive's ``assets/`` folder is not read: RefineNet
models have no assets (a file that has some goes through ``keras.models.load_model``).
"""

import json
import os
import tempfile
import zipfile

import tf_keras as keras
from tf_keras.src.saving import serialization_lib

from refinenet_tf.models import layers  # noqa: F401  (registers refinenet_tf's layers with Keras)

__all__ = ["load_model"]

_CONFIG = "config.json"
_WEIGHTS = "model.weights.h5"


def load_model(path, compile=True, safe_mode=True):
    """Loads a model written by ``model.save``: a ``.keras`` file, a SavedModel folder or a legacy ``.h5`` file.

    Importing this module registers refinenet_tf's layers, so no ``custom_objects`` are needed.

    Args:
        path: a ``.keras`` file, or a SavedModel folder (``model.save(folder, save_format="tf")``).
        compile: restore the loss, metrics and optimizer configuration saved with the model.
        safe_mode: refuse to deserialize Python code (``Lambda`` layers); keep it on for files you did not
            write yourself.

    Returns:
        The ``keras.Model``.

    Example:
        >>> import os, tempfile
        >>> from refinenet_tf import LightWeightRefineNet
        >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> LightWeightRefineNet(num_classes=2, backbone="mobilenetv2", backbone_weights=None).save(path)
        >>> load_model(path).name
        'refinenet_light_weight_mobilenetv2'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Model {path!r} does not exist; give a .keras file or a SavedModel folder.")
    # Keras applies safe_mode to .keras files only; the scope makes SavedModel and .h5 loading refuse Python code
    # (a Lambda layer's marshalled bytecode) too.
    try:
        with serialization_lib.SafeModeScope(safe_mode):
            return _load(path, compile, safe_mode)
    except ValueError as error:
        if "Lambda" in str(error) and safe_mode:
            raise ValueError(f"Model {path!r} contains Python code (a Lambda layer), which safe_mode refuses to "
                             "load; pass safe_mode=False only for a file you trust.") from None
        raise


def _load(path, compile, safe_mode):
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"Model folder {path!r} has no saved_model.pb; it is not a SavedModel.")
        return keras.models.load_model(path, compile=compile)
    if path.endswith((".h5", ".hdf5")):
        return keras.models.load_model(path, compile=compile, safe_mode=safe_mode)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"Model file {path!r} is not a .keras archive (not a zip file); save models with "
                         "model.save('name.keras').")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if _CONFIG not in names or _WEIGHTS not in names or any(n.startswith("assets/") for n in names):
            return keras.models.load_model(path, compile=compile, safe_mode=safe_mode)
        config = json.loads(archive.read(_CONFIG))
        if not compile:
            config["compile_config"] = None
        with tempfile.TemporaryDirectory(prefix="refinenet_tf-", ignore_cleanup_errors=True) as folder:
            weights = archive.extract(_WEIGHTS, folder)
            model = keras.saving.deserialize_keras_object(config, safe_mode=safe_mode)
            model.load_weights(weights)
    return model
