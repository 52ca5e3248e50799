"""What ``make demo`` runs until training lands: segment a generated scene with the slim RefineNet-101.

Nothing is downloaded: the backbone starts from random weights, so the prediction shows that the whole model
runs end to end on an image of an awkward size (375 x 500), not a learned segmentation.
"""

import os
import time

import numpy as np

from refinenet_tf import models, visualization

__all__ = ["run_demo", "synthetic_scene"]


def synthetic_scene(height=375, width=500, seed=0):
    """A noisy RGB scene with a disc, a rectangle and a triangle, and its ``[H, W]`` label map (classes 1-3).

    Example:
        >>> image, labels = synthetic_scene(40, 60, seed=1)
        >>> image.shape, image.dtype, sorted(np.unique(labels).tolist())
        ((40, 60, 3), dtype('uint8'), [0, 1, 2, 3])
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = rng.normal(110, 35, (height, width, 3))
    labels = np.zeros((height, width), np.uint8)
    size = min(height, width)

    cy, cx, radius = height * 0.35, width * 0.28, size * 0.18
    disc = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
    top, left = int(height * 0.5), int(width * 0.5)
    rectangle = (rows >= top) & (rows < top + size * 0.35) & (cols >= left) & (cols < left + size * 0.55)
    apex_y, apex_x, half = height * 0.15, width * 0.75, size * 0.2
    triangle = (rows >= apex_y) & (rows <= apex_y + 2 * half) & (np.abs(cols - apex_x) <= (rows - apex_y) / 2)

    for class_index, mask in enumerate((disc, rectangle, triangle), start=1):
        image[mask] = rng.uniform(30, 225, 3) + rng.normal(0, 12, (int(mask.sum()), 3))
        labels[mask] = class_index
    return np.clip(image, 0, 255).astype(np.uint8), labels


def run_demo(output_dir, backbone="resnet101", height=375, width=500, seed=0, log=print):
    """Builds the slim RefineNet, segments :func:`synthetic_scene` and writes three PNGs to ``output_dir``.

    Returns:
        A dict with the written paths, the model's parameter count and the prediction time.
    """
    os.makedirs(output_dir, exist_ok=True)
    if not os.access(output_dir, os.W_OK):
        raise PermissionError(f"--output {output_dir!r} is not writable; choose another folder.")
    image, _ = synthetic_scene(height, width, seed)
    model = models.RefineNet(num_classes=21, backbone=backbone, backbone_weights=None, variant="slim")
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    log(f"Model: {model.name}: {model.count_params():,} parameters ({trainable:,} trainable), "
        f"backbone {backbone} with random weights (no downloads)")
    start = time.perf_counter()
    logits = model.predict(image[None], verbose=0)[0]
    seconds = time.perf_counter() - start
    labels = logits.argmax(-1).astype(np.uint8)
    paths = {
        "input": visualization.save_image_png(os.path.join(output_dir, "input.png"), image),
        "prediction": visualization.save_label_png(os.path.join(output_dir, "prediction.png"), labels),
        "overlay": visualization.save_image_png(os.path.join(output_dir, "overlay.png"),
                                                visualization.overlay(image, labels)),
    }
    log(f"Segmented a {height}x{width} image in {seconds:.2f} s -> logits {tuple(logits.shape)}; "
        f"{len(np.unique(labels))} classes present (untrained weights: this shows the model runs, not what it "
        "learns)")
    for what, path in paths.items():
        log(f"  {what:10s} {path}")
    return {"paths": paths, "parameters": model.count_params(), "seconds": seconds}
