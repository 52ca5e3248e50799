"""What ``make demo`` runs: train a small RefineNet from scratch on generated data, on the CPU, and show it.

1. Writes a deterministic synthetic dataset in the VOC layout (:mod:`refinenet_tf.data.synthetic`: discs,
   rectangles, triangles in random colours on noisy backgrounds; held-out ``val`` scenes).
2. Trains the ``demo_shapes`` recipe (the slim RefineNet, 64 wide, on MobileNetV2, random initial weights) with
   :func:`refinenet_tf.training.train`, keeping the run under ``<output>/run`` (a finished earlier demo run
   there is replaced; an interrupted one resumes).
3. Evaluates on the held-out scenes with :func:`refinenet_tf.evaluation.evaluate` (mean IoU, per-class IoU, pixel
   accuracy) and writes an overlay grid.

Nothing is downloaded.
"""

import json
import os
import shutil
import time

import numpy as np

from refinenet_tf import _files, evaluation, recipes, runs, training, visualization
from refinenet_tf.data import pipeline, sources, synthetic

__all__ = ["generated_data", "run_demo", "train_and_load_best"]


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
    recipe = recipes.get_recipe(config.recipe)
    log(f"Training {recipe.model} ({recipe.source}) for {config.epochs or recipe.epochs} epochs on the CPU ...")
    start = time.perf_counter()
    model, history = training.train(config)
    seconds = time.perf_counter() - start
    best = os.path.join(config.run_dir, runs.BEST_WEIGHTS)
    if os.path.exists(best):
        model.load_weights(best)
    return model, history, seconds


def _overlay_grid(model, val_source, path, count=6):
    tiles = []
    for example in pipeline.read_examples(val_source).take(count):
        image = example["image"].numpy()
        labels = model.predict(image[None].astype(np.float32), verbose=0)[0].argmax(-1)
        truth = example["mask"].numpy()
        tiles.append(np.concatenate([image, visualization.colorize(np.where(truth == 255, 0, truth)),
                                     visualization.overlay(image, labels, alpha=0.6)], axis=1))
    return visualization.save_image_png(path, np.concatenate(tiles, axis=0))


def run_demo(output_dir=os.path.join("checkpoints", "demo"), epochs=None, num_train=400, num_val=100, seed=0,
             log=print):
    """Runs the demo; returns a dict with the held-out mean IoU, per-class IoU, timings and paths."""
    start = time.perf_counter()

    def write(root):
        synthetic.write_shapes_dataset(root, num_train=num_train, num_val=num_val, seed=seed)
        return f"voc:{root}"

    data_root, spec = generated_data(output_dir, f"{num_train}-{num_val}-{seed}", write)
    log(f"Data: {num_train} training and {num_val} held-out synthetic scenes ({', '.join(synthetic.SHAPE_CLASSES)})"
        f" in {data_root} ({time.perf_counter() - start:.0f} s)")

    run_dir = os.path.join(output_dir, "run")
    num_classes = len(synthetic.SHAPE_CLASSES)
    recipe = recipes.get_recipe("demo_shapes")
    config = training.TrainConfig(recipe=recipe, data=spec, val_data=spec, num_classes=num_classes,
                                  run_dir=run_dir, overwrite=runs.run_state(run_dir) != "interrupted",
                                  epochs=epochs, backbone_weights=None, seed=seed, verbose=2,
                                  class_names=synthetic.SHAPE_CLASSES,
                                  image_every=max(1, (epochs or recipe.epochs) // 4))
    model, history, train_seconds = train_and_load_best(config, log)

    val_source = sources.resolve(spec, "val", num_classes=num_classes)
    scores = evaluation.evaluate(model, val_source, num_classes=num_classes, class_names=synthetic.SHAPE_CLASSES,
                                 progress=False)
    mean_iou, iou, accuracy = scores.mean_iou, [float(v) for v in scores.iou], scores.pixel_accuracy
    overlay_path = _overlay_grid(model, val_source, os.path.join(output_dir, "overlay.png"))
    total = time.perf_counter() - start
    log(f"Held-out mean IoU {mean_iou:.3f}, pixel accuracy {accuracy:.3f}; per class: "
        + ", ".join(f"{name} {value:.3f}" for name, value in zip(synthetic.SHAPE_CLASSES, iou)))
    log(f"Training took {train_seconds:.0f} s, the whole demo {total:.0f} s. Checkpoint: {run_dir} "
        f"(best.weights.h5, model.keras); overlays (image | truth | prediction): {overlay_path}")
    return {"mean_iou": mean_iou, "per_class_iou": iou, "pixel_accuracy": accuracy,
            "train_seconds": train_seconds, "seconds": total, "run_dir": run_dir, "overlay": overlay_path,
            "epochs": len(history.epoch)}
