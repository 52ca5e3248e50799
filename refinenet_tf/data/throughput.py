"""Does the input pipeline keep up with training? Augmented crops per second next to the train step's images/s.

:func:`measure_input_pipeline` times the training pipeline alone: VOC-sized JPEGs (500 x 375, as
:func:`refinenet_tf.data.synthetic.write_shapes_dataset` writes them) with palette masks, read in shuffled order,
decoded in parallel, randomly scaled 0.5-2, padded, cropped and flipped, batched. It must deliver several times
(:data:`KEEP_UP_RATIO`) what a training step consumes, since in training it shares the CPU with the step.
``refinenet-tf benchmark --input-pipeline`` prints it next to each model's training images/s
(:func:`run_input_pipeline_benchmark`, each measurement in a fresh process); ``refinenet-tf data-benchmark
SPEC`` times the pipeline alone on a dataset of yours.
"""

import json
import os
import shutil
import sys
import tempfile
import time

from refinenet_tf import _processes

__all__ = ["DEFAULT_MODELS", "KEEP_UP_RATIO", "measure_input_pipeline", "run_input_pipeline_benchmark"]

#: The models of ``refinenet-tf benchmark --input-pipeline``: the fastest flagship to train, and the slim one.
DEFAULT_MODELS = ("lw_resnet50", "slim_resnet101")

#: The pipeline alone must deliver at least this many times what the step consumes (the benchmark table's target).
KEEP_UP_RATIO = 4.0

# VOC 2012's typical image size (width, height), as the synthetic VOC-sized scenes are written.
_VOC_SIZE = (500, 375)


def _voc_sized_spec(folder, num_images):
    from refinenet_tf.data import synthetic

    voc = synthetic.write_shapes_dataset(folder, num_train=num_images, num_val=1, height=_VOC_SIZE[1],
                                         width=_VOC_SIZE[0], seed=0)
    return f"voc:{voc}"


def _training_pipeline(spec, split, crop_size, batch_size, color, seed=0):
    from refinenet_tf.data import pipeline

    return pipeline.make_dataset(spec, split, batch_size=batch_size, training=True, crop_size=crop_size, color=color,
                             repeat=True, seed=seed)


def measure_input_pipeline(spec=None, split="train", crop_size=512, batch_size=2, batches=40, warmup=5,
                           color=False, num_images=64):
    """Augmented crops per second of the training pipeline (:func:`refinenet_tf.data.make_dataset`, shuffled,
    ``repeat=True``), in this process.

    Args:
        spec: a data spec; ``None`` writes ``num_images`` VOC-sized scenes (500 x 375 JPEGs, palette PNG masks) to
            a temporary folder and reads them.
        split: the split of ``spec``.
        crop_size, batch_size, color: as :func:`~refinenet_tf.data.make_dataset`.
        batches: timed batches, after ``warmup`` untimed ones (which fill the prefetch buffers).
        num_images: VOC-sized scenes written when ``spec`` is ``None``.

    Returns:
        A dict: ``images_per_second`` (crops), the settings, and the machine's CPU count.

    Example:
        >>> result = measure_input_pipeline(crop_size=64, batch_size=2, batches=2, warmup=1, num_images=4)
        >>> result["images_per_second"] > 0, result["crop_size"]
        (True, 64)
    """
    from refinenet_tf._checks import positive_int

    for name, value in (("crop_size", crop_size), ("batch_size", batch_size), ("batches", batches),
                        ("num_images", num_images)):
        positive_int(name, value)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer (untimed batches), got {warmup!r}.")
    folder = None
    try:
        if spec is None:
            folder = tempfile.mkdtemp(prefix="refinenet_tf-input-pipeline-")
            spec, split = _voc_sized_spec(folder, num_images), "train"
        iterator = iter(_training_pipeline(spec, split, crop_size, batch_size, color))
        for _ in range(warmup):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    source = f"VOC-sized JPEGs ({_VOC_SIZE[0]} x {_VOC_SIZE[1]})" if folder is not None else f"{spec} ({split})"
    return {"source": source, "crop_size": crop_size, "batch_size": batch_size, "color": bool(color),
            "images_per_second": batches * batch_size / seconds, "cpu_count": os.cpu_count()}


def _in_fresh_process(function, *arguments):
    """Runs ``refinenet_tf.data.throughput.<function>(*arguments)`` in a new Python process; its JSON result."""
    return _processes.in_fresh_process("refinenet_tf.data.throughput", function, *arguments)


def run_input_pipeline_benchmark(model_names, measure_step, crop_size=512, batch_size=2, steps=3, log=print):
    """The input pipeline's crops/s next to each model's training images/s; returns the rows.

    The pipeline is measured in a fresh process (:func:`measure_input_pipeline` on VOC-sized JPEGs);
    ``measure_step(model_name, crop_size, batch_size, steps)`` measures a training step and returns a dict with
    ``images_per_second`` -- the command line passes :func:`refinenet_tf.cli.benchmark.measure_training` run in a
    fresh process (random weights, 21 classes, SGD, data in memory). Logs a markdown table: per model, the
    step's images/s, the pipeline's crops/s and their ratio against :data:`KEEP_UP_RATIO`.
    """
    import platform

    pipeline = _in_fresh_process("measure_input_pipeline", None, "train", crop_size, batch_size)
    log(f"Input pipeline alone: {pipeline['images_per_second']:.1f} augmented {crop_size} x {crop_size} crops/s "
        f"({pipeline['source']}: shuffled file list, parallel decode, scale 0.5-2, pad, crop, flip; batch "
        f"{batch_size}); {platform.machine()}, {pipeline['cpu_count']} cores. Training step: batch {batch_size}, "
        f"{steps} timed steps. Each measurement in a fresh process.")
    header = ["model", "crop", "batch", "train img/s", "pipeline crops/s", "pipeline x train", "keeps up"]
    log("| " + " | ".join(header) + " |")
    log("|" + "---|" * len(header))
    rows = []
    for name in model_names:
        step = measure_step(name, crop_size, batch_size, steps)
        ratio = pipeline["images_per_second"] / step["images_per_second"]
        keeps_up = ratio >= KEEP_UP_RATIO
        rows.append({"model": name, "crop_size": crop_size, "batch_size": batch_size, "pipeline": pipeline,
                     "training": step, "ratio": ratio, "keeps_up": keeps_up})
        log(f"| {name} | {crop_size} | {batch_size} | {step['images_per_second']:.2f} | "
            f"{pipeline['images_per_second']:.1f} | {ratio:.0f} | "
            f"{'yes' if keeps_up else f'NO (< {KEEP_UP_RATIO:.0f}x)'} |")
    return rows


def _main(argv):
    """``python -m refinenet_tf.data.throughput FUNCTION JSON_ARGUMENTS``: prints the function's JSON result."""
    function, arguments = argv
    if function != "measure_input_pipeline":
        raise SystemExit(f"unknown measurement {function!r}; use measure_input_pipeline")
    print(json.dumps(globals()[function](*json.loads(arguments))))


if __name__ == "__main__":
    _main(sys.argv[1:])
