"""The callbacks of a training run: validation and saving with the averaged weights, atomic checkpoints that
skip NaN epochs, prediction images for TensorBoard."""

import contextlib
import os
import shutil

import numpy as np
import tensorflow as tf
import tf_keras as keras

from refinenet_tf.training import runs
from refinenet_tf._files import atomic_path
from refinenet_tf.training.optimizers import averaged_weights

__all__ = ["AveragedWeights", "PredictionImages", "SafeCheckpoint"]


class AveragedWeights(keras.callbacks.Callback):
    """Validates with the averaged weights (the recipe's ``use_ema``: the optimizer's ``average_weights``, found
    through its public :meth:`~refinenet_tf.training.optimizers.RecipeOptimizerMixin.averaged_variables`): swaps
    them in when ``fit``'s validation begins and the raw weights back when it ends; does nothing without them, and
    raises ``ValueError`` when they should be there but cannot be found (Keras' own ``use_ema``).

    :class:`SafeCheckpoint` and :class:`PredictionImages` save and draw with the averages too
    (:func:`averaged_weights`), and ``fit`` leaves them in the model when it returns (the optimizer's
    ``finalize_variable_values``), so ``model.keras`` holds them.
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
        from refinenet_tf.data import visualization

        with averaged_weights(self.model):
            outputs = self.model.predict(self.images, verbose=0)
        masks, depths = self.masks, None
        if isinstance(outputs, dict):  # a multi-task model: masks are {"segmentation": ..., "depth": ...}
            masks, depths = self.masks["segmentation"], self.masks["depth"]
            predicted_depth, outputs = outputs["depth"][..., 0], outputs["segmentation"]
        pictures = {"input": self.images.astype(np.uint8),
                    "label": np.stack([visualization.colorize(m) for m in masks.astype(np.uint8)]),
                    "prediction": np.stack([visualization.colorize(p) for p in outputs.argmax(-1)])}
        if depths is not None:
            top = float(max(depths.max(), 1e-3))
            pictures["depth"] = np.stack([visualization.colorize_depth(d, top) for d in depths])
            pictures["predicted_depth"] = np.stack([visualization.colorize_depth(d, top) for d in predicted_depth])
        with self.writer.as_default():
            for tag, images in pictures.items():
                tf.summary.image(tag, images, step=epoch, max_outputs=len(self.images))
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

    ``same_as``, another ``SafeCheckpoint`` of the same model that runs before this one in the callback list: in
    an epoch where it saved, this one copies its file instead of saving the same weights again (a save walks every
    layer of the model: 1.0-1.3 s for the demo's model, against 0.02-0.03 s for a copy of its 17 MB file). A
    run's last weights copy its best ones so.
    """

    def __init__(self, path, monitor=None, mode="max", fingerprint=None, same_as=None):
        super().__init__()
        self.path, self.monitor, self.mode, self.fingerprint = path, monitor, mode, fingerprint
        self.same_as, self.saved_epoch = same_as, None
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
        self.saved_epoch = None  # a new fit: an epoch an earlier fit saved is not one of this fit's
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
        return all(logs.get(name) is not None and (logs[name] > self._bests[name] if mode == "max"
                                                   else logs[name] < self._bests[name])
                   for name, mode in self._modes.items())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(np.isfinite(v) for v in logs.values() if isinstance(v, (int, float, np.floating))):
            return
        if self.monitor is not None:
            if not self._improved(logs):
                return
            self._bests.update({name: float(logs[name]) for name in self._modes})
        with atomic_path(self.path, suffix=".weights.h5") as temporary:
            if self.same_as is not None and self.same_as.saved_epoch == epoch:
                shutil.copyfile(self.same_as.path, temporary)
            else:
                with averaged_weights(self.model):
                    self.model.save_weights(temporary)
        self.saved_epoch = epoch
        record = {"epoch": epoch + 1, "fingerprint": self.fingerprint}
        if self.monitor is not None:
            best = self.best
            record.update(monitor=self.monitor, best=best if isinstance(best, dict) else float(best))
        runs.write_json_atomically(self._record, record)
