"""Training run folders: their layout, ``config.json``, and loading the model a run (or any model file) holds.

A run folder (``refinenet_tf.training.train``) holds:

* ``config.json`` -- the resolved settings, the model's full build arguments (``"model"``) and the run's
  ``"fingerprint"`` (a hash of the settings that make the run what it is);
* ``best.weights.h5`` and ``last.weights.h5``, each with a record beside it (``best.weights.h5.json``:
  the metric, its best value, the epoch and the fingerprint of the run that wrote it);
* ``model.keras`` (the final model), ``log.csv``, ``logs/`` (TensorBoard) and ``backup/``
  (``BackupAndRestore``: present while a run is unfinished).

:func:`run_state` tells a new folder from an interrupted run (it resumes) and a finished one (a new run there
needs ``overwrite=True``); :func:`load_inference_model` rebuilds a run's model from its recorded build
arguments, not from today's recipe table. This module imports TensorFlow only through the model builders.
"""

import datetime
import hashlib
import importlib
import json
import os
import shutil

from refinenet_tf import _files
from refinenet_tf._files import write_json_atomically

__all__ = ["BEST_WEIGHTS", "CONFIG", "FINGERPRINT_EXCLUDED", "LAST_WEIGHTS", "MODEL_FILE", "UntrainedModelError",
           "build_model", "builder_name", "clear_run", "fingerprint", "has_backup",
           "load_inference_model", "load_weights_checked", "new_run_dir",
           "read_config", "read_weights_record", "record_path", "run_state", "saved_class_names",
           "untrained_preset_message", "write_json_atomically"]

CONFIG = "config.json"
BEST_WEIGHTS = "best.weights.h5"
LAST_WEIGHTS = "last.weights.h5"
MODEL_FILE = "model.keras"
LOG = "log.csv"
_RESULTS = (BEST_WEIGHTS, LAST_WEIGHTS, MODEL_FILE, LOG)  # a run that wrote one of these has trained an epoch
_ARTEFACTS = (CONFIG,) + _RESULTS + tuple(name + ".json" for name in (BEST_WEIGHTS, LAST_WEIGHTS))
_FOLDERS = ("logs", "backup")

#: ``config.json`` keys that do not change what a run computes, left out of its fingerprint.
FINGERPRINT_EXCLUDED = ("run_dir", "verbose", "resume", "overwrite", "image_every", "fingerprint", "created")

#: the model builders a run's ``config.json`` may name (data, never code): name -> (module, function).
_BUILDERS = {"RefineNet": ("refinenet_tf.models", "RefineNet"),
             "MultiTaskRefineNet": ("refinenet_tf.models.multitask", "MultiTaskRefineNet")}


# ---------------------------------------------------------------------------------------------- run folders

def new_run_dir(recipe_name, root="checkpoints", now=None):
    """A run folder that does not exist yet: ``<root>/<recipe_name>-YYYYmmdd-HHMMSS`` (``-2``, ``-3``, ... when
    taken).

    Example:
        >>> import datetime, tempfile
        >>> root = tempfile.mkdtemp()
        >>> os.path.basename(new_run_dir("demo_shapes", root, datetime.datetime(2026, 1, 2, 3, 4, 5)))
        'demo_shapes-20260102-030405'
    """
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, f"{recipe_name}-{stamp}")
    path, index = base, 1
    while os.path.lexists(path):
        index += 1
        path = f"{base}-{index}"
    return path


def has_backup(backup_dir):
    """True when ``BackupAndRestore`` left checkpoint files (an unfinished run); it empties them at the end."""
    return any(files for _, _, files in os.walk(backup_dir))


def run_state(run_dir):
    """What ``run_dir`` holds: ``"new"`` (nothing, or a run that never finished an epoch), ``"interrupted"``
    (a ``BackupAndRestore`` backup: the run resumes) or ``"finished"`` (weights, a model or a log without a
    backup: a completed run, or one stopped for good, e.g. by a NaN loss)."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        return "new"
    if has_backup(os.path.join(run_dir, "backup")):
        return "interrupted"
    if any(os.path.exists(os.path.join(run_dir, name)) for name in _RESULTS):
        return "finished"
    return "new"


def clear_run(run_dir):
    """Removes the files and folders of a run from ``run_dir`` (only those: other files stay); returns their
    names."""
    removed = []
    for name in _ARTEFACTS + _FOLDERS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    return removed


def fingerprint(config):
    """A short hash of a resolved run config (a JSON-ready dict) without :data:`FINGERPRINT_EXCLUDED`.

    Example:
        >>> fingerprint({"recipe": "demo_shapes", "epochs": 3}) == fingerprint({"epochs": 3, "recipe": "demo_shapes",
        ...                                                                     "verbose": 0})
        True
    """
    kept = {key: value for key, value in config.items() if key not in FINGERPRINT_EXCLUDED}
    text = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_config(run_dir):
    """The ``config.json`` of ``run_dir`` as a dict (``ValueError`` naming the file if it is not a JSON object)."""
    path = os.path.join(os.fspath(run_dir), CONFIG)
    try:
        with open(path) as stream:
            config = json.load(stream)
    except ValueError as error:
        raise ValueError(f"{path!r} is not valid JSON ({error}); it is not a refinenet_tf run config.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path!r} is not a JSON object; it is not a refinenet_tf run config.")
    return config


def record_path(weights_path):
    """The record beside a weights file: ``best.weights.h5`` -> ``best.weights.h5.json``."""
    return os.fspath(weights_path) + ".json"


def read_weights_record(weights_path):
    """The record of a weights file (its epoch, fingerprint, metric), or ``None`` if it has none or it is not
    readable."""
    try:
        with open(record_path(weights_path)) as stream:
            record = json.load(stream)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


# ---------------------------------------------------------------------------------------------- class names

def saved_class_names(spec):
    """The class names a training run recorded in its ``config.json`` (for a run folder or a weights file in
    one), or ``None``."""
    spec = os.fspath(spec)
    folder = spec if os.path.isdir(spec) else os.path.dirname(os.path.abspath(spec))
    if not os.path.isfile(os.path.join(folder, CONFIG)):
        return None
    try:
        names = read_config(folder).get("class_names")
    except (OSError, ValueError):
        return None
    return tuple(names) if names else None


def builder_name(preset):
    """The name of the builder (a key of the builders a ``config.json`` may name) that makes ``preset``'s model."""
    builder = getattr(preset, "builder", None)
    name = getattr(builder, "__name__", builder) or "RefineNet"
    if name not in _BUILDERS:
        raise ValueError(f"preset {preset.name!r} is built by {name!r}, which a run's config.json cannot name; "
                         f"use one of {sorted(_BUILDERS)}.")
    return name


def build_model(config, backbone_weights=None):
    """The model of a run's ``config`` (a ``config.json`` dict), untrained, built from its recorded arguments.

    Runs written before the build arguments were recorded are rebuilt from their recorded recipe settings (or,
    older still, from the recipe table).
    """
    from refinenet_tf import models

    spec = config.get("model")
    if spec is not None:
        if not isinstance(spec, dict) or spec.get("builder") not in _BUILDERS \
                or not isinstance(spec.get("arguments"), dict):
            raise ValueError(f"config.json's \"model\" must be {{\"builder\": one of {sorted(_BUILDERS)}, "
                             f"\"arguments\": {{...}}}}, got {spec!r:.200}.")
        arguments = dict(spec["arguments"], backbone_weights=backbone_weights)
        module, function = _BUILDERS[spec["builder"]]
        builder = getattr(importlib.import_module(module), function)
        try:
            return builder(**arguments)
        except TypeError as error:
            raise ValueError(f"config.json's model arguments do not fit {spec['builder']}: {error}.") from None
    from refinenet_tf.training import recipes

    settings = config.get("recipe_settings")
    if isinstance(settings, dict) and "model" in settings:
        preset, model_kwargs = settings["model"], settings.get("model_kwargs") or {}
    else:
        recipe = recipes.get_recipe(config.get("recipe"))
        preset, model_kwargs = recipe.model, recipe.model_kwargs
    return models.build(preset, num_classes=config["num_classes"], backbone_weights=backbone_weights,
                        **{**model_kwargs, **config.get("model_kwargs", {})})


class UntrainedModelError(ValueError):
    """A preset name was given to run (predict, evaluate, export) without trained weights: its decoder is random."""


def untrained_preset_message(spec, what="spec"):
    """The one line that refuses to run preset ``spec`` without trained weights, and says how to get them."""
    return (f"{what}={spec!r} is a preset name without trained weights: its decoder is untrained and would predict "
            "noise. Train it (refinenet-tf train --recipe ...) or convert a trained checkpoint (refinenet-tf "
            "convert ...) and give that run folder or file, add weights=FILE, or pass allow_untrained=True to run "
            "it anyway.")


def load_inference_model(spec, num_classes=None, backbone_weights="imagenet", weights=None, allow_untrained=False):
    """The model named by ``spec``, for prediction, evaluation and export.

    ``spec`` may be:

    * a ``.keras`` file or a SavedModel folder written by ``model.save``;
    * a training run folder: its model is rebuilt from the build arguments in its ``config.json`` and
      ``best.weights.h5`` (else ``last.weights.h5``, else ``model.keras``) is loaded;
    * a ``.weights.h5`` file inside such a run folder;
    * a preset name (:func:`refinenet_tf.models.list_models`), built with ``num_classes`` classes and
      ``backbone_weights``: its decoder is untrained, so without ``weights`` it is refused
      (:class:`UntrainedModelError`, before anything is built or downloaded) unless ``allow_untrained``.

    ``weights`` (a ``.weights.h5`` file) are loaded last. A checkpoint that does not fit the model (another
    variant or class count), or that another run wrote, raises a ``ValueError`` naming the file.
    """
    from refinenet_tf import models
    from refinenet_tf.models import outputs, saving

    spec = os.fspath(spec)
    if spec in models.PRESETS and weights is None and not allow_untrained and not os.path.exists(spec):
        raise UntrainedModelError(untrained_preset_message(spec))
    if spec in models.PRESETS:
        model = models.build(spec, num_classes=num_classes or 21, backbone_weights=backbone_weights)
    elif os.path.isdir(spec) and os.path.exists(os.path.join(spec, CONFIG)) \
            and not os.path.exists(os.path.join(spec, "saved_model.pb")):
        model = _model_from_run(spec)
        if model is None:
            raise FileNotFoundError(f"run folder spec={spec!r} has no {BEST_WEIGHTS}, {LAST_WEIGHTS} or "
                                    f"{MODEL_FILE}; train it first or give a model file.")
    elif spec.endswith(".weights.h5"):
        folder = os.path.dirname(os.path.abspath(spec))
        if not os.path.exists(spec):
            raise FileNotFoundError(f"spec={spec!r} does not exist.")
        if not os.path.exists(os.path.join(folder, CONFIG)):
            raise ValueError(f"spec={spec!r}: a weights file needs the {CONFIG} of its run folder beside it; "
                             "give the run folder, a .keras file, or a preset name with weights=.")
        model = _model_from_run(folder, weights_file=spec)
    elif os.path.exists(spec):
        model = saving.load_model(spec, compile=False)
    else:
        raise FileNotFoundError(f"spec={spec!r} is neither a file, a folder nor a preset; use a .keras file, a "
                                f"SavedModel or run folder, or one of {models.list_models()}.")
    if num_classes is not None and outputs.output_classes(model) != num_classes:
        raise ValueError(f"spec={spec!r} predicts {outputs.output_classes(model)} classes, not "
                         f"num_classes={num_classes}; "
                         f"leave num_classes out to use the model's, or give a model trained for {num_classes} "
                         "classes.")
    if weights is not None:
        load_weights_checked(model, weights)
    return model


def _model_from_run(folder, weights_file=None):
    from refinenet_tf.models import saving

    config = read_config(folder)
    candidates = [weights_file] if weights_file else [os.path.join(folder, name) for name in
                                                      (BEST_WEIGHTS, LAST_WEIGHTS)]
    candidates = [path for path in candidates if os.path.exists(path)]
    if not candidates:
        keras_file = os.path.join(folder, MODEL_FILE)
        return saving.load_model(keras_file, compile=False) if os.path.exists(keras_file) else None
    record = read_weights_record(candidates[0])
    if record and config.get("fingerprint") and record.get("fingerprint") not in (None, config["fingerprint"]):
        raise ValueError(f"weights {candidates[0]!r} were written by another run (fingerprint "
                         f"{record['fingerprint']}) than the {CONFIG} beside them ({config['fingerprint']}); "
                         "load them into the model of their own run.")
    model = build_model(config)
    load_weights_checked(model, candidates[0])
    return model


def load_weights_checked(model, path):
    """``model.load_weights(path)`` with a one-line error naming the file when it does not fit the model."""
    from refinenet_tf.models import outputs

    path = _files.check_weights_file(path, "weights file")
    try:
        model.load_weights(path)
    except (ValueError, KeyError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"weights {path!r} do not fit model {model.name!r} ({outputs.output_classes(model)} classes): "
                         f"{first[:300]}; use weights saved from the same preset and class count.") from None
