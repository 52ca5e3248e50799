"""What ``refinenet-tf demo --task joint`` runs: joint segmentation and depth learnt on the CPU from generated
RGB-D scenes with asymmetric annotations, nothing downloaded.

1. Writes deterministic RGB-D scenes (:func:`refinenet_tf.data.synthetic.write_rgbd_dataset`): discs, rectangles
   and triangles standing at known depths on a floor that recedes to a back wall, with holes of missing depth;
   object colours are shared across depths, so depth must be read from the geometry, not the colour. In the
   training split some scenes have no mask and others no depth: each trains the other head only.
2. Trains the ``demo_joint`` recipe with :func:`refinenet_tf.training.train`, keeping the run under
   ``<output>/run``: the multi-task Light-Weight RefineNet with its decoder 64 wide, Adam 1e-3 (the recipe's
   ``source`` says why), random initial weights except the depth output's last convolution, which starts as the
   training mean depth everywhere (kernel 0, bias the mean), so that the model starts as the constant baseline.
3. Evaluates on the held-out scenes with :func:`refinenet_tf.evaluation.evaluate_joint` (mean IoU, pixel
   accuracy and the depth metrics over valid pixels) next to two baselines that ignore the image: the RMSE of
   predicting the training split's mean depth everywhere (the best constant there is for the training data),
   and the mean IoU of predicting its most frequent class everywhere.
4. Writes a grid of image | true labels | predicted labels | true depth | predicted depth.
"""

import os
import time

import numpy as np

from refinenet_tf import _files, demo, evaluation, inference, recipes, runs, training, visualization
from refinenet_tf.data import pipeline, sources, synthetic

__all__ = ["constant_depth_baseline", "depth_output_bias", "majority_class_baseline", "run_joint_demo"]


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
    :class:`refinenet_tf.evaluation.Evaluation`: over the classes that occur).

    Example:
        >>> import tempfile
        >>> specs = synthetic.write_rgbd_dataset(tempfile.mkdtemp(), num_train=3, num_val=2, height=24, width=32)
        >>> majority, mean_iou = majority_class_baseline(sources.resolve(specs["train"], "train"),
        ...                                              sources.resolve(specs["val"], "val"), 5)
        >>> synthetic.RGBD_CLASSES[majority] in ("wall", "floor"), bool(0 < mean_iou < 0.5)
        (True, True)
    """
    majority = int(np.argmax(_class_counts(train_source, num_classes)))
    confusion = np.zeros((num_classes, num_classes), np.int64)
    confusion[:, majority] = _class_counts(val_source, num_classes)
    if not confusion.any():
        raise ValueError(f"{val_source.name}: no labelled pixel to score.")
    return majority, evaluation.Evaluation(confusion, tuple(map(str, range(num_classes)))).mean_iou


def depth_output_bias(model):
    """The bias of the convolution that makes a multi-task model's depth (the one trainable bias of one value),
    or ``None`` if that convolution has no bias."""
    biases = [v for v in model.trainable_variables if v.shape == (1,) and "bias" in v.name]
    return biases[0] if len(biases) == 1 else None


def _constant_depth_start(recipe, num_classes, constant, path, seed):
    """Random initial weights whose depth head starts at ``constant`` metres everywhere (its last convolution: bias
    ``constant``, kernel 0), written to ``path``: the model starts as the constant baseline, so what it gains over
    it is learnt from the image. Without a depth bias the weights are the random ones. Returns ``path``."""
    import tensorflow as tf
    import tf_keras as keras

    from refinenet_tf import models

    keras.utils.set_random_seed(seed)
    preset = models.get(recipe.model)
    arguments = preset.arguments(num_classes=num_classes, backbone_weights=None, **recipe.model_kwargs)
    model = runs.build_model({"model": {"builder": runs.builder_name(preset), "arguments": arguments}})
    bias = depth_output_bias(model)
    if bias is not None:
        bias.assign([constant])
        for layer in model.submodules:  # and a zero kernel: the depth starts as exactly the constant
            if getattr(layer, "bias", None) is bias and getattr(layer, "kernel", None) is not None:
                layer.kernel.assign(tf.zeros_like(layer.kernel))
    with _files.atomic_path(path, suffix=".weights.h5") as temporary:
        model.save_weights(temporary)
    return path


def _grid(model, val_source, path, count=4, max_depth=None):
    tiles = []
    for example in pipeline.read_examples(val_source).take(count):
        image = example["image"].numpy()
        labels, depth = inference.predict_joint(model, image)
        truth, true_depth = example["mask"].numpy(), example["depth"].numpy()
        top = max_depth or float(true_depth.max())
        tiles.append(np.concatenate([
            image, visualization.colorize(np.where(truth == 255, 0, truth)), visualization.colorize(labels),
            visualization.colorize_depth(true_depth, top, min_depth=1.0),
            visualization.colorize_depth(np.maximum(depth, 1e-3), top, min_depth=1.0)], axis=1))
    return visualization.save_image_png(path, np.concatenate(tiles, axis=0))


def run_joint_demo(output_dir=os.path.join("checkpoints", "demo_joint"), epochs=None, num_train=300, num_val=60,
                   seed=0, size=96, steps_per_epoch=None, recipe="demo_joint", log=print):
    """Runs the joint demo; returns a dict with the held-out ``mean_iou``, ``rmse``, ``baseline_rmse``, the
    depth metrics, timings and paths.

    Args:
        output_dir: the folder for the data (``data/``), the run (``run/``) and ``predictions.png``.
        epochs: training epochs (default: the recipe's).
        num_train, num_val: generated training and held-out scenes.
        seed: of the data and of the run.
        size: the side of the square scenes.
        steps_per_epoch: default: one pass over the training scenes.
        recipe: the training recipe (a name or a :class:`refinenet_tf.recipes.Recipe`).
        log: where the progress lines go.
    """
    start = time.perf_counter()
    data_root, specs = demo.generated_data(
        output_dir, f"{num_train}-{num_val}-{seed}-{size}",
        lambda root: synthetic.write_rgbd_dataset(root, num_train=num_train, num_val=num_val, height=size,
                                                  width=size, seed=seed))
    log(f"Data: {num_train} training scenes (20% without a mask, 20% without depth) and {num_val} held-out "
        f"RGB-D scenes of {size} x {size} ({', '.join(synthetic.RGBD_CLASSES)}) in {data_root} "
        f"({time.perf_counter() - start:.0f} s)")

    recipe = recipes.get_recipe(recipe)
    run_dir = os.path.join(output_dir, "run")
    num_classes = len(synthetic.RGBD_CLASSES)
    train_source = sources.resolve(specs["train"], "train", num_classes=num_classes)
    val_source = sources.resolve(specs["val"], "val", num_classes=num_classes)
    constant, baseline = constant_depth_baseline(train_source, val_source)
    majority, baseline_iou = majority_class_baseline(train_source, val_source, num_classes)
    start_weights = _constant_depth_start(recipe, num_classes, constant, os.path.join(output_dir, "start.weights.h5"),
                                          seed)
    config = training.TrainConfig(recipe=recipe, data=specs["train"], val_data=specs["val"], num_classes=num_classes,
                                  run_dir=run_dir, overwrite=runs.run_state(run_dir) != "interrupted",
                                  epochs=epochs, steps_per_epoch=steps_per_epoch, backbone_weights=None, seed=seed,
                                  verbose=2, class_names=synthetic.RGBD_CLASSES, image_every=0,
                                  init_from=start_weights)
    model, history, train_seconds = demo.train_and_load_best(config, log)

    scores = evaluation.evaluate_joint(model, val_source, num_classes=num_classes,
                                       class_names=synthetic.RGBD_CLASSES, progress=False)
    grid = _grid(model, val_source, os.path.join(output_dir, "predictions.png"))
    total = time.perf_counter() - start
    segmentation = scores.segmentation
    log(f"Held-out mean IoU {segmentation.mean_iou:.3f}, pixel accuracy {segmentation.pixel_accuracy:.3f}; per "
        "class: " + ", ".join(f"{name} {value:.3f}" for name, value in zip(synthetic.RGBD_CLASSES, segmentation.iou))
        + f"; majority-class baseline mean IoU {baseline_iou:.3f} (predicting {synthetic.RGBD_CLASSES[majority]}, "
        "the training split's most frequent class, everywhere)")
    log(f"Held-out depth RMSE {scores.rmse:.3f} m (delta1 {scores.depth['delta1']:.3f}, abs rel "
        f"{scores.depth['abs_rel']:.3f}); constant-depth baseline {baseline:.3f} m RMSE (predicting the training "
        f"mean, {constant:.2f} m, everywhere)")
    log(f"Held-out data spec (for refinenet-tf evaluate --data): {specs['val']}")
    log(f"Training took {train_seconds:.0f} s, the whole demo {total:.0f} s. Checkpoint: {run_dir}; "
        f"image | true labels | predicted | true depth | predicted depth: {grid}")
    return {"mean_iou": segmentation.mean_iou, "pixel_accuracy": segmentation.pixel_accuracy,
            "per_class_iou": [float(v) for v in segmentation.iou], "rmse": scores.rmse, "depth": dict(scores.depth),
            "baseline_rmse": baseline, "baseline_depth": constant, "baseline_mean_iou": baseline_iou,
            "train_seconds": train_seconds, "seconds": total,
            "run_dir": run_dir, "predictions": grid, "epochs": len(history.epoch)}
