"""Evaluation: a model's scores on a dataset, for every head: from a confusion matrix the per-class IoU, mean IoU
and accuracies, and with a depth head the depth metrics over the valid depth pixels.

:func:`evaluate` runs every image whole through an engine (:func:`refinenet_tf.inference.engine_for`: the Keras
model by default) at its label's resolution; :class:`Evaluation` holds the confusion matrix (and the depth scores)
and derives the scores, Markdown tables and the files (``confusion_matrix.csv`` / ``.npy``, ``metrics.json``).
"""

import dataclasses
import json
import os
from typing import Optional, Tuple

import numpy as np
import tf_keras as keras

from refinenet_tf import _files
from refinenet_tf.data.sources import class_names_for
from refinenet_tf.inference import prediction

__all__ = ["DEPTH_METRICS", "Evaluation", "evaluate"]


@dataclasses.dataclass
class Evaluation:
    """Scores from a confusion matrix (rows: true class, columns: predicted class; ignored pixels excluded).

    IoU of class ``c`` is ``TP / (TP + FP + FN)``; a class that neither occurs nor is predicted has no IoU
    (NaN) and is left out of the mean, as in Keras' ``MeanIoU``.

    A model with a depth head also has ``depth`` (``{metric: value}`` for the keys of :data:`DEPTH_METRICS`,
    :mod:`refinenet_tf.models.metrics`) and ``depth_pixels`` (the valid depth pixels they are averaged over).

    Example:
        >>> result = Evaluation(np.array([[3, 1], [0, 4]]), ("background", "cat"))
        >>> result.iou.round(4).tolist(), round(result.mean_iou, 4), result.pixel_accuracy
        ([0.75, 0.8], 0.775, 0.875)
        >>> with_depth = Evaluation(np.array([[3, 1], [0, 4]]), ("floor", "box"), depth_pixels=8,
        ...                         depth={"rmse": 0.5, "log_rmse": 0.1, "abs_rel": 0.08, "sq_rel": 0.04,
        ...                                "delta1": 0.9, "delta2": 0.97, "delta3": 0.99})
        >>> print(with_depth.depth_table())
        | depth metric | value |
        |---|---|
        | RMSE (linear) | 0.500 m |
        | RMSE (log) | 0.100 |
        | abs rel | 0.080 |
        | sq rel | 0.040 m |
        | δ < 1.25 | 90.00 % |
        | δ < 1.25² | 97.00 % |
        | δ < 1.25³ | 99.00 % |
        <BLANKLINE>
        8 valid depth pixels
    """

    confusion: np.ndarray
    class_names: Tuple[str, ...]
    scales: Tuple[float, ...] = (1.0,)
    flip: bool = False
    source: str = ""
    depth: Optional[dict] = None
    depth_pixels: int = 0

    @property
    def iou(self):
        true_positives = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - true_positives
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positives / np.maximum(union, 1), np.nan)

    @property
    def mean_iou(self):
        iou = self.iou
        return float(np.nanmean(iou)) if np.any(np.isfinite(iou)) else float("nan")

    @property
    def pixel_accuracy(self):
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    @property
    def class_accuracy(self):
        """Recall of each class (NaN for classes with no pixels)."""
        pixels = self.confusion.sum(1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pixels > 0, np.diag(self.confusion) / np.maximum(pixels, 1), np.nan)

    @property
    def pixels(self):
        return int(self.confusion.sum())

    def as_dict(self):
        """JSON-ready scores."""
        def clean(value):
            return None if not np.isfinite(value) else round(float(value), 6)

        return {"source": self.source, "scales": list(self.scales), "flip": self.flip, "pixels": self.pixels,
                "mean_iou": clean(self.mean_iou), "pixel_accuracy": clean(self.pixel_accuracy),
                "mean_class_accuracy": clean(np.nanmean(self.class_accuracy)) if self.pixels else None,
                "iou": {name: clean(v) for name, v in zip(self.class_names, self.iou)},
                "class_accuracy": {name: clean(v) for name, v in zip(self.class_names, self.class_accuracy)},
                **({} if self.depth is None else {
                    "depth": {key: clean(value) if self.depth_pixels else None for key, value in self.depth.items()},
                    "depth_pixels": self.depth_pixels})}

    def table(self):
        """A Markdown table: per-class IoU, accuracy and pixels, then the means."""
        lines = ["| class | IoU | accuracy | true pixels |", "|---|---|---|---|"]
        for name, iou, accuracy, pixels in zip(self.class_names, self.iou, self.class_accuracy,
                                               self.confusion.sum(1)):
            lines.append(f"| {name} | {_percent(iou)} | {_percent(accuracy)} | {int(pixels):,} |")
        lines.append(f"| **mean** | **{_percent(self.mean_iou)}** | {_percent(np.nanmean(self.class_accuracy))} | "
                     f"{self.pixels:,} |")
        lines.append(f"\npixel accuracy {_percent(self.pixel_accuracy)}; mean IoU {_percent(self.mean_iou)} over "
                     f"{int(np.isfinite(self.iou).sum())} classes present; scales {list(self.scales)}, flip "
                     f"{'on' if self.flip else 'off'}")
        table = "\n".join(lines)
        return table if self.depth is None else table + "\n\n" + self.depth_table()

    @property
    def rmse(self):
        """The depth RMSE in metres (``None`` without a depth head)."""
        return None if self.depth is None else self.depth["rmse"]

    def depth_table(self):
        """A Markdown table of the depth metrics (a model with a depth head)."""
        if self.depth is None:
            raise ValueError("this evaluation has no depth scores: the model has no depth head.")
        lines = ["| depth metric | value |", "|---|---|"]
        for key, label, unit in DEPTH_METRICS:
            value = self.depth.get(key, float("nan"))
            if not np.isfinite(value) or not self.depth_pixels:
                text = "-"
            elif unit == "%":
                text = f"{100 * value:.2f} %"
            else:
                text = f"{value:.3f}" + (f" {unit}" if unit else "")
            lines.append(f"| {label} | {text} |")
        lines.append(f"\n{self.depth_pixels:,} valid depth pixels")
        return "\n".join(lines)

    def save(self, folder):
        """Writes ``confusion_matrix.npy``, ``confusion_matrix.csv`` (with class names) and ``metrics.json``
        (:meth:`as_dict`), each atomically; returns their paths."""
        _files.writable_folder(folder, "evaluation output folder")
        paths = [os.path.join(folder, name) for name in ("confusion_matrix.npy", "confusion_matrix.csv",
                                                         "metrics.json")]
        with _files.atomic_path(paths[0], suffix=".npy") as temporary:
            np.save(temporary, self.confusion)
        with _files.atomic_path(paths[1], suffix=".csv") as temporary, open(temporary, "w") as stream:
            stream.write("true \\ predicted," + ",".join(self.class_names) + "\n")
            for name, row in zip(self.class_names, self.confusion):
                stream.write(name + "," + ",".join(str(int(v)) for v in row) + "\n")
        with _files.atomic_path(paths[2], suffix=".json") as temporary, open(temporary, "w") as stream:
            json.dump(self.as_dict(), stream, indent=2)
        return paths


def _percent(value):
    return "-" if not np.isfinite(value) else f"{100 * value:.2f}"


def _classes_of(engine, source, num_classes, class_names):
    """The class count and names to score ``engine`` on ``source`` with, and the source read with that count:
    ``num_classes`` must equal the model's (mask values past it then fail, naming the file)."""
    model_classes = engine.num_classes
    num_classes = num_classes or model_classes
    if num_classes != model_classes:
        raise ValueError(f"the model predicts {model_classes} classes, not num_classes={num_classes}; give "
                         "num_classes matching the model, or a model trained for this data.")
    source_names = source.class_names if len(source.class_names) == num_classes else None
    names = class_names_for(num_classes, class_names or source_names)
    if source.num_classes != num_classes:
        source = dataclasses.replace(source, num_classes=num_classes)
    return source, num_classes, names


def evaluate(model, data, split="val", num_classes=None, class_names=None, scales=(1.0,), flip=False,
             max_side=None, limit=None, progress=True, engine=None, precision="float32"):
    """Scores every head of ``model`` on a dataset at each image's original label resolution.

    Every image is run whole (no crops) through the engine -- the outputs are resized to the label's size
    (:func:`refinenet_tf.models.outputs.segment_outputs`), the labels never are -- and its labels go into one
    confusion matrix; pixels whose label is the source's ignore value (255) do not count, so an example without a
    mask adds nothing. A model with a depth head is scored on an RGB-D dataset: its depth goes into the
    accumulated depth metrics of :func:`refinenet_tf.models.metrics.depth_metrics` (pixels of depth 0 do not
    count), so every score is a mean over the dataset's valid pixels, not over images.

    Args:
        model: a model, an engine or an exported file (see :func:`refinenet_tf.inference.engine_for`).
        data: a data spec (``voc:PATH``, ``voc_aug:PATH``, ``folder:IMAGES:MASKS``, with a depth head
            ``folder:IMAGES:MASKS?depth=DEPTHS&...`` or ``tfds:nyu_depth_v2_segmentation``, ``tfds:NAME``) or a
            resolved source (:func:`refinenet_tf.data.resolve`).
        split: the split of a spec.
        num_classes: classes (default: the model's output channels); mask values outside ``[0, num_classes)``
            other than the ignore value stop the evaluation with an error naming the mask file.
        class_names: names for the table (default: the source's, VOC's for 21 classes, else ``class_i``).
        scales, flip, max_side: test-time augmentation, see :func:`refinenet_tf.models.outputs.segment_outputs`
            (a depth head takes ``flip`` only).
        limit: evaluate only the first ``limit`` examples.
        progress: show a Keras progress bar.
        engine, precision: what runs the model (:func:`refinenet_tf.inference.engine_for`): the Keras model by
            default.

    Returns:
        An :class:`Evaluation` (with the depth scores for a model with a depth head).
    """
    from refinenet_tf.data import pipeline, sources
    from refinenet_tf.models import metrics

    run = prediction.engine_for(model, engine, scales, flip, max_side, precision)
    if "probabilities" not in run.outputs:
        raise ValueError(f"{run!r} has no segmentation head to score.")
    with_depth = "depth" in run.outputs
    source = sources.resolve(data, split) if isinstance(data, str) else data
    if with_depth and not getattr(source, "has_depth", False):
        raise ValueError(f"data={getattr(source, 'name', data)!r} has no depth; evaluate a model with a depth head "
                         "on an RGB-D spec (folder:IMAGES:MASKS?depth=DEPTHS&depth_scale=...).")
    source, num_classes, names = _classes_of(run, source, num_classes, class_names)
    examples = pipeline.read_examples(source)
    total = sources.count_examples(source)
    if limit is not None:
        examples = examples.take(limit)
        total = limit if total is None else min(total, limit)
    depth_metrics = metrics.depth_metrics() if with_depth else []
    bar = keras.utils.Progbar(total, unit_name="image") if progress else None
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for index, example in enumerate(examples):
        outputs = run(example["image"].numpy()[None])
        truth = example["mask"].numpy().astype(np.int64)
        valid = truth != source.ignore_value
        pairs = truth[valid] * num_classes + outputs["labels"][0][valid]
        matrix += np.bincount(pairs, minlength=num_classes ** 2).reshape(num_classes, num_classes)
        for metric in depth_metrics:
            metric.update_state(example["depth"][None], outputs["depth"])
        if bar is not None:
            bar.update(index + 1)
    depth = {metric.name: float(metric.result()) for metric in depth_metrics} if with_depth else None
    return Evaluation(matrix, names, run.scales, run.flip, getattr(source, "name", str(data)), depth,
                      int(depth_metrics[0].count.numpy()) if with_depth else 0)


#: The depth metrics of :class:`Evaluation`, in table order: (key, label, unit).
DEPTH_METRICS = (("rmse", "RMSE (linear)", "m"), ("log_rmse", "RMSE (log)", ""), ("abs_rel", "abs rel", ""),
                 ("sq_rel", "sq rel", "m"), ("delta1", "δ < 1.25", "%"), ("delta2", "δ < 1.25²", "%"),
                 ("delta3", "δ < 1.25³", "%"))
