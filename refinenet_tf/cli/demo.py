"""What ``make demo`` runs: a small RefineNet trained from scratch on generated data, on the CPU, and shown;
nothing is downloaded. One demo, two head configurations (``task=``):

* ``"segmentation"`` (``make demo``): discs, rectangles and triangles in random colours on noisy backgrounds
  (:func:`refinenet_tf.data.synthetic.write_shapes_dataset`), the ``demo_shapes`` recipe (the slim RefineNet,
  64 wide, on MobileNetV2).
* ``"joint"`` (``refinenet-tf demo --task joint``): RGB-D scenes (:func:`~refinenet_tf.data.synthetic.write_rgbd_dataset`)
  of shapes standing at known depths on a floor that recedes to a back wall, with holes of missing depth; in
  the training split some scenes have no mask and others no depth (each trains the other head only). The
  ``demo_joint`` recipe: the multi-task Light-Weight RefineNet, decoder 64 wide, whose depth output starts as
  the training mean depth everywhere (kernel 0, bias the mean), so that it starts as the constant baseline.

Either way the demo

1. writes the data under ``<output>/data`` (once per set of arguments),
2. trains the recipe with :func:`refinenet_tf.training.train` into ``<output>/run`` (a finished earlier run there
   is replaced; an interrupted one resumes),
3. scores every head on the held-out scenes (:meth:`refinenet_tf.Segmenter.evaluate`) next to baselines that
   ignore the image: the most frequent training class everywhere, and with a depth head the training mean depth
   everywhere,
4. writes ``predictions.png``: image | true labels | predicted labels, and with a depth head true | predicted
   depth.
"""

import dataclasses
import json
import os
import shutil
import time

import numpy as np

from refinenet_tf import _files
from refinenet_tf.data import pipeline, sources, synthetic, visualization
from refinenet_tf.training import recipes, runs

__all__ = ["DEMOS", "Demo", "constant_depth_baseline", "generated_data", "majority_class_baseline", "run_demo",
           "train_and_load_best"]


@dataclasses.dataclass(frozen=True)
class Demo:
    """A demo's settings: its recipe, classes, default output folder and scene counts."""

    recipe: str
    classes: tuple
    output_dir: str
    num_train: int
    num_val: int
    depth: bool = False


#: ``task`` -> :class:`Demo`.
DEMOS = {
    "segmentation": Demo("demo_shapes", synthetic.SHAPE_CLASSES, os.path.join("checkpoints", "demo"), 400, 100),
    "joint": Demo("demo_joint", synthetic.RGBD_CLASSES, os.path.join("checkpoints", "demo_joint"), 300, 60,
                  depth=True),
}


def generated_data(output_dir, key, write):
    """A demo's output folder, checked writable, and its generated data in ``output_dir/data``, written by
    ``write(data_root)`` (which returns the data specs) once per ``key`` (the generator's arguments as text): a
    later run with the same key reads the specs back instead of writing the data again. Returns
    ``(data_root, specs)``."""
    _files.writable_folder(output_dir, "output_dir=")
    data_root = os.path.join(output_dir, "data")
    marker = os.path.join(data_root, f"specs-{key}.json")
    if os.path.exists(marker):  # written by an earlier run with the same arguments
        with open(marker) as stream:
            return data_root, json.load(stream)
    shutil.rmtree(data_root, ignore_errors=True)
    specs = write(data_root)
    runs.write_json_atomically(marker, specs)
    return data_root, specs


def train_and_load_best(config, log):
    """Trains a demo's run (:func:`refinenet_tf.training.train`) and loads its best weights (if validation kept
    any). Returns ``(model, history, training seconds)``."""
    from refinenet_tf import training

    recipe = recipes.get_recipe(config.recipe)
    log(f"Training {recipe.model} ({recipe.source}) for {config.epochs or recipe.epochs} epochs on the CPU ...")
    start = time.perf_counter()
    model, history = training.train(config)
    seconds = time.perf_counter() - start
    best = os.path.join(config.run_dir, runs.BEST_WEIGHTS)
    if os.path.exists(best):
        model.load_weights(best)
    return model, history, seconds


def _depth_sums(source):
    """(sum, sum of squares, count) of the valid depth pixels of a source."""
    total = squares = count = 0.0
    for example in pipeline.read_examples(source):
        depth = example["depth"].numpy().astype(np.float64)
        valid = depth[depth > 0]
        total, squares, count = total + valid.sum(), squares + np.square(valid).sum(), count + valid.size
    return total, squares, count


def constant_depth_baseline(train_source, val_source):
    """``(constant, rmse)``: the mean valid depth of ``train_source`` and the RMSE of predicting it at every
    valid pixel of ``val_source`` -- what a model that ignores the image scores.

    Example:
        >>> import tempfile
        >>> specs = synthetic.write_rgbd_dataset(tempfile.mkdtemp(), num_train=3, num_val=2, height=24, width=32)
        >>> constant, rmse = constant_depth_baseline(sources.resolve(specs["train"], "train"),
        ...                                          sources.resolve(specs["val"], "val"))
        >>> bool(1.0 <= constant <= 9.0), bool(rmse > 0)
        (True, True)
    """
    total, _, count = _depth_sums(train_source)
    if not count:
        raise ValueError(f"{train_source.name}: no valid depth pixel to take a constant from.")
    constant = total / count
    total, squares, count = _depth_sums(val_source)
    if not count:
        raise ValueError(f"{val_source.name}: no valid depth pixel to score.")
    # mean((d - c)^2) = mean(d^2) - 2 c mean(d) + c^2
    return float(constant), float(np.sqrt(max(squares / count - 2 * constant * total / count + constant ** 2, 0.0)))


def _class_counts(source, num_classes):
    """Labelled pixels per class of a source (255 and other values outside the classes do not count)."""
    counts = np.zeros(num_classes, np.int64)
    for example in pipeline.read_examples(source):
        mask = example["mask"].numpy().ravel()
        counts += np.bincount(mask[mask < num_classes], minlength=num_classes)
    return counts


def majority_class_baseline(train_source, val_source, num_classes):
    """``(class, mean_iou)``: the most frequent class of ``train_source``'s labelled pixels and the held-out mean
    IoU of predicting it everywhere -- the segmentation a model that ignores the image scores (the same mean as
    :class:`refinenet_tf.inference.Evaluation`: over the classes that occur).

    Example:
        >>> import tempfile
        >>> specs = synthetic.write_rgbd_dataset(tempfile.mkdtemp(), num_train=3, num_val=2, height=24, width=32)
        >>> majority, mean_iou = majority_class_baseline(sources.resolve(specs["train"], "train"),
        ...                                              sources.resolve(specs["val"], "val"), 5)
        >>> synthetic.RGBD_CLASSES[majority] in ("wall", "floor"), bool(0 < mean_iou < 0.5)
        (True, True)
    """
    from refinenet_tf.inference.evaluation import Evaluation

    majority = int(np.argmax(_class_counts(train_source, num_classes)))
    confusion = np.zeros((num_classes, num_classes), np.int64)
    confusion[:, majority] = _class_counts(val_source, num_classes)
    if not confusion.any():
        raise ValueError(f"{val_source.name}: no labelled pixel to score.")
    return majority, Evaluation(confusion, tuple(map(str, range(num_classes)))).mean_iou


def _constant_depth_start(recipe, num_classes, constant, path, seed):
    """Random initial weights whose depth head starts at ``constant`` metres everywhere (its last convolution:
    bias ``constant``, kernel 0), written to ``path``: the model starts as the constant baseline, so what it gains
    over it is learnt from the image. Returns ``path``."""
    import tensorflow as tf
    import tf_keras as keras

    from refinenet_tf import models

    keras.utils.set_random_seed(seed)
    preset = models.get(recipe.model)
    arguments = preset.arguments(num_classes=num_classes, backbone_weights=None, **recipe.model_kwargs)
    model = runs.build_model({"model": {"builder": runs.builder_name(preset), "arguments": arguments}})
    biases = [v for v in model.trainable_variables if v.shape == (1,) and "bias" in v.name]
    if len(biases) == 1:  # the one trainable bias of one value: the depth output's
        biases[0].assign([constant])
        for layer in model.submodules:  # and a zero kernel: the depth starts as exactly the constant
            if getattr(layer, "bias", None) is biases[0] and getattr(layer, "kernel", None) is not None:
                layer.kernel.assign(tf.zeros_like(layer.kernel))
    with _files.atomic_path(path, suffix=".weights.h5") as temporary:
        model.save_weights(temporary)
    return path


def _grid(segmenter, val_source, path, count):
    """``predictions.png``: for ``count`` held-out scenes, image | true labels | predicted labels over the image,
    and for a depth head true | predicted depth."""
    tiles = []
    for example in pipeline.read_examples(val_source).take(count):
        image, truth = example["image"].numpy(), example["mask"].numpy()
        result = segmenter.predict(image)
        row = [image, visualization.colorize(np.where(truth == 255, 0, truth)),
               visualization.overlay(image, result.labels, alpha=0.6)]
        if result.depth is not None:
            true_depth = example["depth"].numpy()
            top = float(true_depth.max())
            row += [visualization.colorize_depth(true_depth, top, min_depth=1.0),
                    visualization.colorize_depth(np.maximum(result.depth, 1e-3), top, min_depth=1.0)]
        tiles.append(np.concatenate(row, axis=1))
    return visualization.save_image_png(path, np.concatenate(tiles, axis=0))


def run_demo(output_dir=None, task="segmentation", epochs=None, num_train=None, num_val=None, seed=0, size=96,
             steps_per_epoch=None, recipe=None, log=print):
    """Runs the demo of ``task``; returns a dict with the held-out ``mean_iou``, ``pixel_accuracy``,
    ``per_class_iou`` and ``baseline_mean_iou``, for a depth head ``rmse``, ``depth`` (every depth metric),
    ``baseline_rmse`` and ``baseline_depth``, and the timings and paths.

    Args:
        output_dir: the folder for the data (``data/``), the run (``run/``) and ``predictions.png`` (default:
            ``checkpoints/demo``, ``checkpoints/demo_joint`` for ``task="joint"``).
        task: a key of :data:`DEMOS`: ``"segmentation"`` or ``"joint"`` (segmentation and depth).
        epochs: training epochs (default: the recipe's).
        num_train, num_val: generated training and held-out scenes (default: the task's, :data:`DEMOS`).
        seed: of the data and of the run.
        size: the side of the square RGB-D scenes (``task="joint"``).
        steps_per_epoch: default: one pass over the training scenes.
        recipe: the training recipe (a name or a :class:`refinenet_tf.training.recipes.Recipe`; default the
            task's).
        log: where the progress lines go.
    """
    from refinenet_tf import training
    from refinenet_tf.tasks import Segmenter

    if task not in DEMOS:
        raise ValueError(f"task={task!r}: use one of {sorted(DEMOS)}.")
    demo = DEMOS[task]
    output_dir = output_dir or demo.output_dir
    num_train, num_val = num_train or demo.num_train, num_val or demo.num_val
    start = time.perf_counter()
    if demo.depth:
        def write(root):
            return synthetic.write_rgbd_dataset(root, num_train=num_train, num_val=num_val, height=size, width=size,
                                                seed=seed)
        key, what = f"{task}-{num_train}-{num_val}-{seed}-{size}", (
            f"{num_train} training scenes (20% without a mask, 20% without depth) and {num_val} held-out RGB-D "
            f"scenes of {size} x {size}")
    else:
        def write(root):
            synthetic.write_shapes_dataset(root, num_train=num_train, num_val=num_val, seed=seed)
            return {"train": f"voc:{root}", "val": f"voc:{root}"}
        key, what = f"{task}-{num_train}-{num_val}-{seed}", f"{num_train} training and {num_val} held-out scenes"
    data_root, specs = generated_data(output_dir, key, write)
    log(f"Data: {what} ({', '.join(demo.classes)}) in {data_root} ({time.perf_counter() - start:.0f} s)")

    recipe = recipes.get_recipe(recipe or demo.recipe)
    run_dir = os.path.join(output_dir, "run")
    num_classes = len(demo.classes)
    train_source = sources.resolve(specs["train"], "train", num_classes=num_classes)
    val_source = sources.resolve(specs["val"], "val", num_classes=num_classes)
    majority, baseline_iou = majority_class_baseline(train_source, val_source, num_classes)
    start_weights = None
    if demo.depth:
        constant, baseline_rmse = constant_depth_baseline(train_source, val_source)
        start_weights = _constant_depth_start(recipe, num_classes, constant,
                                              os.path.join(output_dir, "start.weights.h5"), seed)
    epochs_to_run = epochs or recipe.epochs
    config = training.TrainConfig(recipe=recipe, data=specs["train"], val_data=specs["val"], num_classes=num_classes,
                                  run_dir=run_dir, overwrite=runs.run_state(run_dir) != "interrupted",
                                  epochs=epochs, steps_per_epoch=steps_per_epoch, backbone_weights=None, seed=seed,
                                  verbose=2, class_names=demo.classes, init_from=start_weights,
                                  image_every=0 if demo.depth else max(1, epochs_to_run // 4))
    model, history, train_seconds = train_and_load_best(config, log)

    segmenter = Segmenter(model, class_names=demo.classes, source=run_dir)
    scores = segmenter.evaluate(val_source, progress=False)
    grid = _grid(segmenter, val_source, os.path.join(output_dir, "predictions.png"), 4 if demo.depth else 6)
    total = time.perf_counter() - start
    log(f"Held-out mean IoU {scores.mean_iou:.3f}, pixel accuracy {scores.pixel_accuracy:.3f}; per class: "
        + ", ".join(f"{name} {value:.3f}" for name, value in zip(demo.classes, scores.iou))
        + f"; majority-class baseline mean IoU {baseline_iou:.3f} (predicting {demo.classes[majority]}, the "
        "training split's most frequent class, everywhere)")
    result = {"mean_iou": scores.mean_iou, "pixel_accuracy": scores.pixel_accuracy,
              "per_class_iou": [float(v) for v in scores.iou], "baseline_mean_iou": baseline_iou}
    if demo.depth:
        log(f"Held-out depth RMSE {scores.rmse:.3f} m (delta1 {scores.depth['delta1']:.3f}, abs rel "
            f"{scores.depth['abs_rel']:.3f}); constant-depth baseline {baseline_rmse:.3f} m RMSE (predicting the "
            f"training mean, {constant:.2f} m, everywhere)")
        result.update(rmse=scores.rmse, depth=dict(scores.depth), baseline_rmse=baseline_rmse,
                      baseline_depth=constant)
    log(f"Held-out data spec (for refinenet-tf evaluate --data): {specs['val']}")
    log(f"Training took {train_seconds:.0f} s, the whole demo {total:.0f} s. Checkpoint: {run_dir} "
        f"(best.weights.h5, model.keras); image | true labels | predicted{' | true depth | predicted depth' if demo.depth else ''}: {grid}")
    return dict(result, train_seconds=train_seconds, seconds=total, run_dir=run_dir, predictions=grid,
                epochs=len(history.epoch))
