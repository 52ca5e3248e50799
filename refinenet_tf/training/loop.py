"""A whole training run in its own folder: :class:`TrainConfig` and :func:`train`."""

import dataclasses
import json
import os
import shutil
from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import _files, models, options
from refinenet_tf.training import runs
from refinenet_tf._files import atomic_path
from refinenet_tf.training.recipes import Recipe, get_recipe
from refinenet_tf.training.callbacks import AveragedWeights, PredictionImages, SafeCheckpoint
from refinenet_tf.training.compiling import (compile_model, keep_xla_off_python_data, mixed_precision_policy,
                                             resolve_jit_compile)

__all__ = ["TrainConfig", "make_strategy", "train"]


def make_strategy(name="default"):
    """A ``tf.distribute`` strategy by name: default, mirrored, multiworker (``TF_CONFIG``), tpu."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy='multiworker' needs TF_CONFIG describing the cluster and this worker; see "
                             "https://www.tensorflow.org/guide/distributed_training.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy={name!r}; use one of {options.STRATEGIES}.")


@dataclasses.dataclass
class TrainConfig:
    """A training run: what :func:`train` takes, written resolved as ``config.json`` in the run folder.

    ``recipe`` is a recipe name (:func:`refinenet_tf.training.recipes.list_recipes`) or a
    :class:`refinenet_tf.training.recipes.Recipe` object (a recipe of your own). ``None`` fields take the recipe's value.
    ``run_dir=None`` picks a new folder, ``checkpoints/<recipe>-YYYYmmdd-HHMMSS``, when the config is made
    (``config.run_dir`` then says which). A folder that holds a finished run is refused unless ``overwrite``
    (which replaces it); an interrupted run there (its ``BackupAndRestore`` backup) resumes when ``resume`` and
    the settings are the same.

    A multi-task recipe (``multitask_mobilenetv2_nyud``) needs an RGB-D ``data`` spec
    (``folder:IMAGES:MASKS?depth=DEPTHS&...``, ``tfds:nyu_depth_v2_segmentation``). ``teacher`` (a run folder or a
    ``.keras`` file of a multi-task model) fills each training example's missing mask or depth with the
    teacher's prediction (:func:`refinenet_tf.data.fill_missing_labels`, the paper's distillation); without it
    an example lacking one label trains the other task only. ``loss_weights`` (``{"segmentation": w, "depth":
    w}``) and ``depth_loss`` (``"berhu"`` or ``"l1"``) override a multi-task recipe's.

    ``jit_compile`` (``"auto"``: on with a GPU) compiles the train step with XLA, never the validation step
    (:func:`refinenet_tf.training.set_xla_train_step`). ``mixed_precision`` is True (``mixed_float16`` on GPU,
    ``mixed_bfloat16`` otherwise), False, or a policy name (``"mixed_float16"``, ``"mixed_bfloat16"``).
    """

    recipe: Union[str, Recipe]
    data: str
    val_data: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    num_classes: Optional[int] = None
    run_dir: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    crop_size: Optional[int] = None
    learning_rate: Optional[float] = None
    steps_per_epoch: Optional[int] = None
    backbone_weights: Optional[str] = "imagenet"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    strategy: str = "default"
    jit_compile: object = "auto"
    mixed_precision: Union[bool, str] = False
    image_every: int = 1
    init_from: Optional[str] = None
    teacher: Optional[str] = None
    loss_weights: Optional[dict] = None
    depth_loss: Optional[str] = None
    resume: bool = True
    overwrite: bool = False
    seed: int = 0
    verbose: object = "auto"
    class_names: Tuple[str, ...] = ()

    def __post_init__(self):
        recipe = get_recipe(self.recipe)
        mixed_precision_policy(self.mixed_precision)  # a bad value fails here, before anything is written
        resolve_jit_compile(self.jit_compile)
        self.run_dir = runs.new_run_dir(recipe.name) if self.run_dir is None else os.fspath(self.run_dir)


def _check_run_dir(run_dir):
    try:
        _files.writable_folder(run_dir, "run_dir=")
    except OSError as error:
        raise OSError(f"{error} Nothing was trained.") from None


def _check_free_space(run_dir, model):
    """Fails before training when the run folder's disk cannot hold the checkpoints a run writes: best and last
    weights, the final model and ``BackupAndRestore``'s copy with the optimizer state (about 3x the weights), each
    written beside its previous version before the rename."""
    weights_bytes = 4 * model.count_params()
    needed = 2 * (2 * weights_bytes + weights_bytes + 3 * weights_bytes)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise OSError(f"run folder {run_dir!r} has {free / 2**20:.0f} MiB free but the checkpoints of this model need "
                      f"about {needed / 2**20:.0f} MiB; free space or choose another run_dir. Nothing was trained.")


def _refuse_to_mix(run_dir, state, config):
    """Refuses, before anything is written, a run folder that holds another run (see :class:`TrainConfig`)."""
    if state == "finished" and not config.overwrite:
        ended = ("a finished run" if os.path.exists(os.path.join(run_dir, runs.MODEL_FILE))
                 else "a run that stopped without a backup to resume from")
        raise FileExistsError(f"run_dir={run_dir!r} holds {ended}; pass overwrite=True to replace it or choose "
                              "another run_dir. Nothing was changed.")
    if state == "interrupted" and not config.resume and not config.overwrite:
        raise FileExistsError(f"run_dir={run_dir!r} holds a backup of an unfinished run; use resume=True to continue "
                              "it, overwrite=True to replace it, or choose another run_dir. Nothing was changed.")


def _check_same_run(run_dir, resolved):
    """An interrupted run resumes only with the settings it was started with (its fingerprint)."""
    try:
        previous = runs.read_config(run_dir)
    except (OSError, ValueError):
        return
    if previous.get("fingerprint") in (None, resolved["fingerprint"]):
        return  # the same run (or one recorded before fingerprints)
    changed = sorted(key for key in set(previous) | set(resolved) if key not in runs.FINGERPRINT_EXCLUDED
                     and previous.get(key) != resolved.get(key))
    raise ValueError(f"run_dir={run_dir!r} holds an interrupted run with other settings ({', '.join(changed)}); "
                     "give the same settings to resume it, overwrite=True to replace it, or choose another "
                     "run_dir. Nothing was changed.")


def _masks_only(dataset):
    """An RGB-D dataset's ``(images, {"segmentation", "depth"})`` as ``(images, masks)``; others as they are."""
    if dataset is None or not isinstance(dataset.element_spec[1], dict):
        return dataset
    return dataset.map(lambda images, labels: (images, labels["segmentation"]))


def train(config, callbacks=()):
    """Trains a model as ``config`` (a :class:`TrainConfig`) says; returns ``(model, history)``.

    The run folder (``config.run_dir``) gets ``config.json`` (the resolved config, the model's builder and build
    arguments and the run's fingerprint, :mod:`refinenet_tf.training.runs`), ``best.weights.h5`` (best validation mean
    IoU -- for a multi-task run, the epochs that improve both mean IoU and depth RMSE -- or best training loss
    without validation data), ``last.weights.h5`` (each with its record, ``*.json``),
    ``model.keras`` (the final model), ``log.csv``, ``logs/`` (TensorBoard: scalars and, with validation data,
    images) and ``backup/`` (``BackupAndRestore``: a run killed mid-way resumes at its last finished epoch when
    started again with the same config). With the recipe's ``use_ema``, validation and every saved file use the
    averaged weights. ``callbacks`` are added to Keras' own.
    """
    previous_policy = keras.mixed_precision.global_policy()
    try:
        return _train(config, callbacks)
    finally:  # the trained model keeps its policy; the caller's global policy comes back
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config, callbacks):
    from refinenet_tf import data as data_lib

    recipe = get_recipe(config.recipe)
    if config.loss_weights is not None or config.depth_loss is not None:
        if not recipe.multitask:
            raise ValueError(f"loss_weights= and depth_loss= apply to multi-task recipes; recipe {recipe.name} trains "
                             "segmentation only.")
        recipe = dataclasses.replace(recipe, loss_weights=dict(config.loss_weights or recipe.loss_weights),
                                     depth_loss=config.depth_loss or recipe.depth_loss)
    run_dir = config.run_dir
    state = runs.run_state(run_dir)
    _refuse_to_mix(run_dir, state, config)
    resuming = state == "interrupted" and not config.overwrite
    epochs = config.epochs or recipe.epochs
    batch_size = config.batch_size or recipe.batch_size
    crop_size = config.crop_size or recipe.crop_size
    if config.init_from:
        _files.check_weights_file(config.init_from, "init_from=")
    _check_run_dir(run_dir)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(mixed_precision_policy(config.mixed_precision))
    strategy = make_strategy(config.strategy)

    train_source = data_lib.resolve(config.data, config.train_split, num_classes=config.num_classes)
    num_classes = config.num_classes or train_source.num_classes
    if not num_classes:
        raise ValueError(f"num_classes is needed for {config.data}: the source does not say how many classes.")
    if recipe.multitask and not getattr(train_source, "has_depth", False):
        raise ValueError(f"recipe {recipe.name} trains segmentation and depth but data={config.data!r} has no depth; "
                         "give an RGB-D spec (folder:IMAGES:MASKS?depth=DEPTHS&depth_scale=..., "
                         "tfds:nyu_depth_v2_segmentation).")
    if config.teacher and not recipe.multitask:
        raise ValueError(f"teacher= fills missing masks and depth maps of a multi-task run; recipe {recipe.name} "
                         "trains segmentation only.")
    global_batch = batch_size * strategy.num_replicas_in_sync
    train_data = data_lib.make_dataset(train_source, batch_size=global_batch, training=True, crop_size=crop_size,
                                       min_scale=recipe.min_scale, max_scale=recipe.max_scale, seed=config.seed,
                                       repeat=True, num_classes=num_classes, scale_depth=recipe.scale_depth)
    steps = config.steps_per_epoch or max(1, data_lib.sources.count_examples(train_source) // global_batch)
    val_data = None
    if config.val_data:
        val_data = data_lib.make_dataset(config.val_data, config.val_split, batch_size=1, training=False,
                                         num_classes=num_classes)
        if recipe.multitask and not isinstance(val_data.element_spec[1], dict):
            raise ValueError(f"val_data={config.val_data!r} has no depth; a multi-task run validates on RGB-D data.")
    if not recipe.multitask:  # a segmentation model trained on RGB-D data reads its masks only
        train_data, val_data = (_masks_only(dataset) for dataset in (train_data, val_data))
    if config.teacher:
        train_data = data_lib.fill_missing_labels(train_data, runs.load_inference_model(config.teacher))

    class_names = tuple(config.class_names) or tuple(train_source.class_names)
    if len(class_names) != num_classes:  # e.g. VOC's 21 names for a VOC-layout dataset of other classes
        class_names = ()
    preset = models.get(recipe.model)
    arguments = preset.arguments(num_classes=num_classes, backbone_weights=config.backbone_weights,
                                 **{**recipe.model_kwargs, **config.model_kwargs})
    builder = runs.builder_name(preset)
    resolved = dict(dataclasses.asdict(config), recipe=recipe.name, run_dir=run_dir, class_names=list(class_names),
                    epochs=epochs, batch_size=batch_size, crop_size=crop_size, num_classes=num_classes,
                    steps_per_epoch=steps, recipe_settings=dataclasses.asdict(recipe),
                    strategy_replicas=strategy.num_replicas_in_sync,
                    jit_compile=resolve_jit_compile(config.jit_compile),
                    policy=keras.mixed_precision.global_policy().name,
                    model={"builder": builder, "arguments": arguments})
    resolved = json.loads(json.dumps(resolved, default=str))  # as config.json will hold it
    resolved["fingerprint"] = runs.fingerprint(resolved)
    if resuming:
        _check_same_run(run_dir, resolved)
    else:  # a new run: nothing of an earlier one stays (a replaced run, or one that never finished an epoch)
        runs.clear_run(run_dir)
    runs.write_json_atomically(os.path.join(run_dir, runs.CONFIG), resolved)

    with strategy.scope():
        model = runs.build_model({"model": {"builder": builder, "arguments": arguments}},
                                 backbone_weights=arguments["backbone_weights"])
        if config.init_from:
            runs.load_weights_checked(model, config.init_from)
        compile_model(model, recipe, num_classes, learning_rate=config.learning_rate, steps_per_epoch=steps,
                      epochs=epochs, jit_compile=config.jit_compile)
    keep_xla_off_python_data(model, train_data, "data")

    _check_free_space(run_dir, model)
    if val_data is None:
        monitor, mode = "loss", "min"
    elif recipe.multitask:  # as DenseTorch's multi-task example: the weights that improve both
        monitor, mode = {"val_segmentation_mean_iou": "max", "val_depth_rmse": "min"}, None
    else:
        monitor, mode = "val_mean_iou", "max"
    removed = _files.remove_stale_temporaries(run_dir)  # left by a process killed mid-write
    if removed and config.verbose:
        print(f"removed {len(removed)} partial file(s) of an interrupted write from {run_dir}")
    # The backup comes last: an epoch counts as done (and is not redone on resume) only once its weights and
    # log line are written. The CSV log is appended to only when this run resumes.
    best = SafeCheckpoint(os.path.join(run_dir, runs.BEST_WEIGHTS), monitor=monitor, mode=mode,
                          fingerprint=resolved["fingerprint"])
    keras_callbacks = [
        AveragedWeights(),
        best,
        SafeCheckpoint(os.path.join(run_dir, runs.LAST_WEIGHTS), fingerprint=resolved["fingerprint"], same_as=best),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(run_dir, runs.LOG), append=resuming),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
    ]
    callbacks = keras_callbacks + list(callbacks)
    if val_data is not None and config.image_every:
        images, labels = list(val_data.take(1))[0]
        labels = tf.nest.map_structure(lambda tensor: tensor.numpy(), labels)
        callbacks.append(PredictionImages(os.path.join(run_dir, "logs"), images.numpy(), labels, config.image_every))
    history = model.fit(train_data, epochs=epochs, steps_per_epoch=steps, validation_data=val_data,
                        callbacks=callbacks, verbose=config.verbose)
    if any(not np.isfinite(loss) for loss in history.history.get("loss", [])):
        raise FloatingPointError(f"training stopped: the loss became NaN/inf at epoch {len(history.epoch)}; the "
                                 f"last good weights are in {run_dir}/{runs.LAST_WEIGHTS} (try a lower "
                                 "learning_rate).")
    # fit ended with finalize_variable_values: under use_ema the model now holds the averaged weights
    with atomic_path(os.path.join(run_dir, runs.MODEL_FILE), suffix=".keras") as temporary:
        model.save(temporary)
    return model, history
