"""Training with Keras' own machinery: ``compile``/``fit``, callbacks, mixed precision, XLA, ``tf.distribute``.

The pieces:

* :func:`compile_model` -- loss ``SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)``, metrics
  ``MeanIoU(ignore_class=255, sparse_y_pred=False)`` and :class:`PixelAccuracy`, the recipe's optimizer.
* :class:`SGDWithMultipliers` -- SGD whose decoder variables learn ``decoder_lr_multiplier`` times faster, with
  PyTorch-style (coupled) weight decay, as the official RefineNet recipes train.
* :class:`AveragedWeights` -- with the optimizer's ``use_ema``, swaps the averaged weights in for validation
  and saving, and the raw ones back for training.
* :func:`train` -- the whole run in its own folder (by default a new ``checkpoints/<recipe>-<time>``): best and
  last weights, ``BackupAndRestore`` (a killed run resumes at the right epoch), TensorBoard, CSV log,
  ``TerminateOnNaN``, the resolved config with the model's build arguments (:mod:`refinenet_tf.runs`).

Recipes (what to train, as data) live in :mod:`refinenet_tf.recipes`.
"""

import contextlib
import dataclasses
import json
import os
import shutil
from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import _files, models, options, runs
from refinenet_tf._files import atomic_path
from refinenet_tf.recipes import Recipe, get_recipe

__all__ = ["AveragedWeights", "PixelAccuracy", "SGDWithMultipliers", "SafeCheckpoint", "TrainConfig",
           "averaged_weights", "compile_model", "make_strategy", "resolve_jit_compile", "train"]

_register = keras.saving.register_keras_serializable(package="refinenet_tf")


@_register
class PixelAccuracy(keras.metrics.Mean):
    """Fraction of labelled pixels whose arg-max prediction is right; ``ignore_class`` pixels do not count.

    Example:
        >>> metric = PixelAccuracy(ignore_class=255)
        >>> _ = metric.update_state([[0, 1, 255]], tf.one_hot([[0, 0, 1]], 2))
        >>> float(metric.result())
        0.5
    """

    def __init__(self, ignore_class=255, name="pixel_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_class = ignore_class

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(tf.convert_to_tensor(y_true), tf.int32)
        y_pred = tf.convert_to_tensor(y_pred)
        if y_true.shape.rank == y_pred.shape.rank:
            y_true = tf.squeeze(y_true, -1)
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        valid = tf.not_equal(y_true, self.ignore_class)
        correct = tf.cast(tf.equal(predicted, y_true), self.dtype)
        weights = tf.cast(valid, self.dtype)
        if sample_weight is not None:
            weights *= tf.cast(sample_weight, self.dtype)
        return super().update_state(correct, sample_weight=weights)

    def get_config(self):
        config = super().get_config()
        config.update(ignore_class=self.ignore_class)
        return config


@_register
class SGDWithMultipliers(keras.optimizers.SGD):
    """SGD with momentum where chosen variables learn ``multiplier`` times faster, and PyTorch-style decay.

    The official RefineNet recipes give the decoder 10x the backbone's learning rate and add the weight decay
    to the gradient (``g + decay * w``) before the step. Both are done here on the gradient, which for SGD
    with momentum is exactly a per-variable learning rate: the update of a multiplied variable is
    ``lr * multiplier * (g + decay * w)`` (through the momentum).

    Args:
        learning_rate: the base (backbone) learning rate or schedule.
        multiplied_variables: names of the variables that get ``multiplier`` (the decoder's).
        multiplier: their learning-rate factor.
        coupled_weight_decay: decay added to every gradient (0: none).
        **kwargs: ``keras.optimizers.SGD`` arguments (``momentum``, ``nesterov``, ``use_ema``, ...).
    """

    def __init__(self, learning_rate=0.01, multiplied_variables=(), multiplier=1.0, coupled_weight_decay=0.0,
                 name="SGDWithMultipliers", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.multiplied_variables = sorted(multiplied_variables)
        self.multiplier = float(multiplier)
        self.coupled_weight_decay = float(coupled_weight_decay)
        self._multiplied = frozenset(self.multiplied_variables)

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        adjusted = []
        for gradient, variable in grads_and_vars:
            if gradient is not None:
                if self.coupled_weight_decay:
                    gradient = gradient + tf.cast(self.coupled_weight_decay, gradient.dtype) * tf.cast(
                        variable, gradient.dtype)
                if variable.name in self._multiplied and self.multiplier != 1.0:
                    gradient = gradient * tf.cast(self.multiplier, gradient.dtype)
            adjusted.append((gradient, variable))
        return super().apply_gradients(adjusted, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(multiplied_variables=self.multiplied_variables, multiplier=self.multiplier,
                      coupled_weight_decay=self.coupled_weight_decay)
        return config


def _backbone_layer(model):
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"{model.name}: expected one nested backbone model, found {[l.name for l in nested]}.")
    return nested[0]


def decoder_variable_names(model):
    """Names of the trainable variables that are not the backbone's."""
    backbone = {id(v) for v in _backbone_layer(model).trainable_variables}
    return [v.name for v in model.trainable_variables if id(v) not in backbone]


def _schedule(recipe, learning_rate, steps_per_epoch, epochs):
    if recipe.schedule == "constant":
        return learning_rate
    if recipe.schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(learning_rate, max(1, steps_per_epoch * epochs), 0.0,
                                                          power=0.9)
    if recipe.schedule == "step":
        boundaries = [steps_per_epoch * recipe.step_epochs * k for k in range(1, max(1, epochs // recipe.step_epochs))]
        if not boundaries:
            return learning_rate
        values = [learning_rate * recipe.step_gamma ** k for k in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    raise ValueError(f"recipe {recipe.name}: unknown schedule {recipe.schedule!r}; use constant, poly or step.")


def freeze_batch_norm(model):
    """Puts every BatchNormalization layer of ``model`` (backbone included) in inference mode, untrained."""
    for layer in model.submodules:  # every nested layer, inside the backbone and our blocks too
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _task_losses_and_metrics(recipe, num_classes):
    """The multi-task ``compile`` arguments of ``recipe``: a loss, a weight and metrics per named output."""
    from refinenet_tf import losses, metrics

    given = dict(recipe.loss_weights)
    if set(given) != {"segmentation", "depth"}:
        raise ValueError(f"loss_weights={given}: give a weight for each trained task, 'segmentation' and 'depth' "
                         "(0 for one of them trains the other head alone).")
    if any(not float(value) >= 0 for value in given.values()) or sum(map(float, given.values())) <= 0:
        raise ValueError(f"loss_weights={given}: the weights must be 0 or more, and not all 0.")
    task_losses = {"segmentation": losses.SegmentationCrossEntropy(ignore_class=255),
                   "depth": losses.depth_loss(recipe.depth_loss)}
    task_metrics = {"segmentation": [keras.metrics.MeanIoU(num_classes, ignore_class=255, sparse_y_true=True,
                                                           sparse_y_pred=False, name="mean_iou"),
                                     PixelAccuracy(ignore_class=255)],
                    "depth": metrics.depth_metrics()}
    weights = {task: float(recipe.loss_weights.get(task, 0.0)) for task in task_losses}
    return task_losses, weights, task_metrics


def compile_model(model, recipe, num_classes, learning_rate=None, steps_per_epoch=1, epochs=None,
                  jit_compile="auto"):
    """Compiles ``model`` with ``recipe``'s optimizer: for segmentation, or for segmentation and depth.

    A segmentation model gets the cross-entropy ignoring 255, mean IoU and pixel accuracy. A multi-task model
    (outputs named ``segmentation`` and ``depth``, :func:`refinenet_tf.runs.is_multitask`) gets per output
    :class:`refinenet_tf.losses.SegmentationCrossEntropy` and the recipe's depth loss
    (:func:`refinenet_tf.losses.depth_loss`), weighted by the recipe's ``loss_weights``, and as metrics mean IoU
    and pixel accuracy, and the seven depth metrics of :func:`refinenet_tf.metrics.depth_metrics`. Both losses
    average over valid pixels only, so an example without a mask (all 255) or without depth (all 0) trains the
    other head only, in the same batch.

    Args:
        model: a RefineNet (logits at the masks' resolution) or a multi-task model.
        recipe: a :class:`refinenet_tf.recipes.Recipe` or its name.
        num_classes: for the mean IoU.
        learning_rate: overrides the recipe's.
        steps_per_epoch, epochs: for learning-rate schedules.
        jit_compile: ``"auto"`` (XLA on GPU, not on CPU, where it was measured slower), True or False.

    Returns:
        ``model``, compiled.
    """
    recipe = get_recipe(recipe)
    epochs = epochs or recipe.epochs
    learning_rate = _schedule(recipe, learning_rate or recipe.learning_rate, steps_per_epoch, epochs)
    if recipe.freeze_batch_norm:
        freeze_batch_norm(model)
    ema = dict(use_ema=recipe.use_ema, ema_momentum=recipe.ema_momentum) if recipe.use_ema else {}
    if recipe.optimizer == "adam":
        if recipe.decoder_lr_multiplier != 1.0 or recipe.weight_decay:
            raise ValueError(f"recipe {recipe.name}: a decoder learning-rate multiplier or coupled weight decay "
                             "needs optimizer='sgd' (Adam normalises gradient scales away).")
        optimizer = keras.optimizers.Adam(learning_rate, **ema)
    elif recipe.optimizer == "sgd":
        optimizer = SGDWithMultipliers(learning_rate, multiplied_variables=decoder_variable_names(model),
                                       multiplier=recipe.decoder_lr_multiplier,
                                       coupled_weight_decay=recipe.weight_decay, momentum=recipe.momentum, **ema)
    else:
        raise ValueError(f"recipe {recipe.name}: unknown optimizer {recipe.optimizer!r}; use adam or sgd.")
    if runs.is_multitask(model):
        if not recipe.multitask:
            raise ValueError(f"recipe {recipe.name} trains segmentation only, but the model returns "
                             f"{sorted(model.output_names)}; use a multi-task recipe (one with loss_weights).")
        task_losses, weights, task_metrics = _task_losses_and_metrics(recipe, num_classes)
        model.compile(optimizer=optimizer, loss=task_losses, loss_weights=weights, metrics=task_metrics,
                      jit_compile=resolve_jit_compile(jit_compile))
        return model
    if recipe.multitask:
        raise ValueError(f"recipe {recipe.name} trains segmentation and depth, but model {model.name!r} has one "
                         "output; build a multi-task model (outputs named 'segmentation' and 'depth').")
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
        metrics=[keras.metrics.MeanIoU(num_classes, ignore_class=255, sparse_y_true=True, sparse_y_pred=False,
                                       name="mean_iou"), PixelAccuracy(ignore_class=255)],
        jit_compile=resolve_jit_compile(jit_compile))
    return model


def resolve_jit_compile(jit_compile="auto"):
    """``"auto"`` -> XLA when a GPU is visible; on the CPUs we measured it was slower (``refinenet-tf
    train-benchmark``; the documentation's Training page has the figures)."""
    if jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be 'auto', True or False, got {jit_compile!r}.")
    return jit_compile


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


def mixed_precision_policy(enabled):
    """The policy for ``mixed_precision``: ``mixed_float16`` on GPU, ``mixed_bfloat16`` on CPU / TPU."""
    if not enabled:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@dataclasses.dataclass
class TrainConfig:
    """A training run: what :func:`train` takes, written resolved as ``config.json`` in the run folder.

    ``recipe`` is a recipe name (:func:`refinenet_tf.recipes.list_recipes`) or a
    :class:`refinenet_tf.recipes.Recipe` object (a recipe of your own). ``None`` fields take the recipe's value.
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
    mixed_precision: bool = False
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
        self.run_dir = runs.new_run_dir(recipe.name) if self.run_dir is None else os.fspath(self.run_dir)


def _ema_pairs(model):
    """``(variable, its moving average)`` for the trainable variables the optimizer averages (``use_ema``);
    empty without EMA or before the optimizer's first step."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        return []
    pairs = []
    for variable in model.trainable_variables:
        index = optimizer._index_dict.get(optimizer._var_key(variable))
        if index is not None:
            pairs.append((variable, averages[index]))
    return pairs


@contextlib.contextmanager
def averaged_weights(model):
    """Within the block ``model``'s trainable weights are its optimizer's moving averages (``use_ema``); after
    it the raw weights are back. Without EMA (or before the first training step) nothing changes.

    tf-keras' optimizer keeps the averages but only ``finalize_variable_values`` (at the end of ``fit``) puts
    them into the model, for good; this puts them in for a while (validation, saving) and training goes on
    with the raw weights.
    """
    pairs = _ema_pairs(model)
    raw = [variable.numpy().copy() for variable, _ in pairs]
    for variable, average in pairs:
        variable.assign(average)
    try:
        yield model
    finally:
        for (variable, _), value in zip(pairs, raw):
            variable.assign(value)


class AveragedWeights(keras.callbacks.Callback):
    """Validates with the averaged weights (``use_ema``): swaps them in when ``fit``'s validation begins and the
    raw weights back when it ends; does nothing without EMA.

    :class:`SafeCheckpoint` and :class:`PredictionImages` save and draw with the averages too
    (:func:`averaged_weights`), and ``fit`` leaves them in the model when it returns, so ``model.keras`` holds
    them.
    """

    def __init__(self):
        super().__init__()
        self._swap = contextlib.ExitStack()

    def on_test_begin(self, logs=None):
        self._swap.enter_context(averaged_weights(self.model))

    def on_test_end(self, logs=None):
        self._swap.close()


class PredictionImages(keras.callbacks.Callback):
    """Writes input / label / prediction images of a few validation examples to TensorBoard every N epochs
    (predicted with the averaged weights under ``use_ema``)."""

    def __init__(self, log_dir, images, masks, every=1):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.images, self.masks, self.every = images, masks, max(1, every)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        from refinenet_tf import visualization

        with averaged_weights(self.model):
            outputs = self.model.predict(self.images, verbose=0)
        masks, depths = self.masks, None
        if isinstance(outputs, dict):  # a multi-task model: masks are {"segmentation": ..., "depth": ...}
            masks, depths = self.masks["segmentation"], self.masks["depth"]
            predicted_depth, outputs = outputs["depth"][..., 0], outputs["segmentation"]
        predictions = np.stack([visualization.colorize(p) for p in outputs.argmax(-1)])
        labels = np.stack([visualization.colorize(m) for m in masks.astype(np.uint8)])
        count = len(self.images)
        with self.writer.as_default():
            tf.summary.image("input", self.images.astype(np.uint8), step=epoch, max_outputs=count)
            tf.summary.image("label", labels, step=epoch, max_outputs=count)
            tf.summary.image("prediction", predictions, step=epoch, max_outputs=count)
            if depths is not None:
                top = float(max(depths.max(), 1e-3))
                tf.summary.image("depth", np.stack([visualization.colorize_depth(d, top) for d in depths]),
                                 step=epoch, max_outputs=count)
                tf.summary.image("predicted_depth", np.stack([visualization.colorize_depth(d, top)
                                                              for d in predicted_depth]), step=epoch,
                                 max_outputs=count)
        self.writer.flush()


class SafeCheckpoint(keras.callbacks.Callback):
    """Saves weights at the end of each epoch atomically (temp file + rename), never after a NaN/inf loss,
    with the averaged weights under ``use_ema`` (:func:`averaged_weights`).

    ``monitor=None`` keeps the last good weights; otherwise only improvements of ``monitor`` are saved.
    ``monitor`` may also be a dict ``{metric: "max" or "min"}``: then an epoch is saved only when every one of them
    improves (DenseTorch's multi-task example keeps the weights that improve both mean IoU and depth RMSE). Beside
    the weights, ``<path>.json`` records the epoch, the run's ``fingerprint`` and (with ``monitor``) the best
    value(s), so that a resumed run keeps comparing to them. A weights file there whose record carries another
    fingerprint (or none) is not this run's: it is removed when training begins, never compared against.
    Keras' ``ModelCheckpoint`` writes in place and also after ``TerminateOnNaN`` stopped a NaN epoch.
    """

    def __init__(self, path, monitor=None, mode="max", fingerprint=None):
        super().__init__()
        self.path, self.monitor, self.mode, self.fingerprint = path, monitor, mode, fingerprint
        self._modes = dict(monitor) if isinstance(monitor, dict) else ({monitor: mode} if monitor else {})
        bad = {name: m for name, m in self._modes.items() if m not in ("max", "min")}
        if bad:
            raise ValueError(f"SafeCheckpoint: modes must be 'max' or 'min', got {bad}.")
        self._bests = {name: -np.inf if m == "max" else np.inf for name, m in self._modes.items()}
        self._record = runs.record_path(path)

    @property
    def best(self):
        """The best value of a single ``monitor``, or ``{metric: best}`` for a dict of them."""
        return dict(self._bests) if isinstance(self.monitor, dict) else self._bests.get(self.monitor)

    def on_train_begin(self, logs=None):
        record = runs.read_weights_record(self.path)
        if self.fingerprint is not None and (record is None or record.get("fingerprint") != self.fingerprint):
            for path in (self.path, self._record):  # another run's (or unknown) weights: never kept
                if os.path.lexists(path):
                    os.remove(path)
        elif self.monitor is not None and record and record.get("monitor") == self.monitor \
                and os.path.exists(self.path):
            best = record["best"]
            self._bests.update(best if isinstance(self.monitor, dict) else {self.monitor: best})

    def _improved(self, logs):
        for name, mode in self._modes.items():
            value = logs.get(name)
            if value is None or not (value > self._bests[name] if mode == "max" else value < self._bests[name]):
                return False
        return True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(np.isfinite(v) for v in logs.values() if isinstance(v, (int, float, np.floating))):
            return
        if self.monitor is not None:
            if not self._improved(logs):
                return
            self._bests.update({name: float(logs[name]) for name in self._modes})
        with averaged_weights(self.model), atomic_path(self.path, suffix=".weights.h5") as temporary:
            self.model.save_weights(temporary)
        record = {"epoch": epoch + 1, "fingerprint": self.fingerprint}
        if self.monitor is not None:
            best = self.best
            record.update(monitor=self.monitor, best=best if isinstance(best, dict) else float(best))
        runs.write_json_atomically(self._record, record)


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
    arguments and the run's fingerprint, :mod:`refinenet_tf.runs`), ``best.weights.h5`` (best validation mean
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
    keras_callbacks = [
        AveragedWeights(),
        SafeCheckpoint(os.path.join(run_dir, runs.BEST_WEIGHTS), monitor=monitor, mode=mode,
                       fingerprint=resolved["fingerprint"]),
        SafeCheckpoint(os.path.join(run_dir, runs.LAST_WEIGHTS), fingerprint=resolved["fingerprint"]),
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
