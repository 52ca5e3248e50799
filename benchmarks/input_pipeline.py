"""Does the input pipeline keep up with training? Augmented crops per second next to the train step's images/s.

    .venv/bin/python benchmarks/input_pipeline.py [--models lw_resnet50 slim_resnet101] [--size 512]
    .venv/bin/python benchmarks/input_pipeline.py --data SPEC [--split train] [--crop-size 512] [--batch-size 8]
        [--batches 30] [--warmup 3] [--color]

:func:`measure_input_pipeline` times the training pipeline alone: VOC-sized JPEGs (500 x 375, as
:func:`refinenet_tf.data.synthetic.write_shapes_dataset` writes them) with palette masks, read in shuffled order,
decoded in parallel, randomly scaled 0.5-2, padded, cropped and flipped, batched. It must deliver several times
(:data:`KEEP_UP_RATIO`) what a training step consumes, since in training it shares the CPU with the step. The
first form prints it next to each model's training images/s (:func:`run_input_pipeline_benchmark`, each
measurement in a fresh process); ``--data SPEC`` times the pipeline alone on a dataset of yours.
"""

import argparse
import functools
import json
import os
import platform
import shutil
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The pipeline alone must deliver at least this many times what the step consumes (the table's target).
KEEP_UP_RATIO = 4.0

# VOC 2012's typical image size (width, height), as the synthetic VOC-sized scenes are written.
_VOC_SIZE = (500, 375)


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
    """
    from refinenet_tf import data
    from refinenet_tf._checks import positive_int
    from refinenet_tf.data import synthetic

    for name, value in (("crop_size", crop_size), ("batch_size", batch_size), ("batches", batches),
                        ("num_images", num_images)):
        positive_int(name, value)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer (untimed batches), got {warmup!r}.")
    folder = None
    try:
        if spec is None:
            folder = tempfile.mkdtemp(prefix="refinenet_tf-input-pipeline-")
            voc = synthetic.write_shapes_dataset(folder, num_train=num_images, num_val=1, height=_VOC_SIZE[1],
                                                 width=_VOC_SIZE[0], seed=0)
            spec, split = f"voc:{voc}", "train"
        iterator = iter(data.make_dataset(spec, split, batch_size=batch_size, training=True, crop_size=crop_size,
                                          color=color, repeat=True, seed=0))
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


def in_fresh_process(function, *arguments):
    """Runs ``<function>(*arguments)`` of this script (or of ``benchmarks/training.py`` for
    ``measure_training``) in a new Python process; its JSON result."""
    from refinenet_tf import _processes

    module = "benchmarks.training" if function == "measure_training" else "benchmarks.input_pipeline"
    return _processes.in_fresh_process(module, function, *arguments, cwd=_ROOT)


def run_input_pipeline_benchmark(model_names, crop_size=512, batch_size=2, steps=3, log=print):
    """The input pipeline's crops/s next to each model's training images/s; returns the rows.

    The pipeline (:func:`measure_input_pipeline` on VOC-sized JPEGs) and each model's training step
    (``benchmarks/training.py``'s ``measure_training``: random weights, 21 classes, SGD, data in memory) are
    measured in fresh processes. Logs a markdown table: per model, the step's images/s, the pipeline's crops/s
    and their ratio against :data:`KEEP_UP_RATIO`.
    """
    pipeline = in_fresh_process("measure_input_pipeline", None, "train", crop_size, batch_size)
    log(f"Input pipeline alone: {pipeline['images_per_second']:.1f} augmented {crop_size} x {crop_size} crops/s "
        f"({pipeline['source']}: shuffled file list, parallel decode, scale 0.5-2, pad, crop, flip; batch "
        f"{batch_size}); {platform.machine()}, {pipeline['cpu_count']} cores. Training step: batch {batch_size}, "
        f"{steps} timed steps. Each measurement in a fresh process.")
    header = ["model", "crop", "batch", "train img/s", "pipeline crops/s", "pipeline x train", "keeps up"]
    log("| " + " | ".join(header) + " |")
    log("|" + "---|" * len(header))
    rows = []
    for name in model_names:
        step = in_fresh_process("measure_training", name, crop_size, batch_size, steps)
        ratio = pipeline["images_per_second"] / step["images_per_second"]
        keeps_up = ratio >= KEEP_UP_RATIO
        rows.append({"model": name, "crop_size": crop_size, "batch_size": batch_size, "pipeline": pipeline,
                     "training": step, "ratio": ratio, "keeps_up": keeps_up})
        log(f"| {name} | {crop_size} | {batch_size} | {step['images_per_second']:.2f} | "
            f"{pipeline['images_per_second']:.1f} | {ratio:.0f} | "
            f"{'yes' if keeps_up else f'NO (< {KEEP_UP_RATIO:.0f}x)'} |")
    return rows


def main(argv=None):
    """The command line above; returns the exit status (2 with one error line for a bad argument)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lw_resnet50", "slim_resnet101"], metavar="MODEL",
                        help="presets whose training step the pipeline is set against (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="crop side of the comparison (default: 512)")
    parser.add_argument("--json", metavar="FILE", help="also write the comparison's rows as JSON")
    parser.add_argument("--data", metavar="SPEC", help="instead, time the pipeline alone on this data spec "
                        "(voc:PATH, folder:IMAGES:MASKS, tfds:NAME, ...)")
    parser.add_argument("--split", default="train", help="split of --data (default: %(default)s)")
    parser.add_argument("--crop-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=30, help="timed batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--color", action="store_true", help="colour distortion")
    args = parser.parse_args(argv)
    from refinenet_tf import _files, models

    log = functools.partial(print, flush=True)
    try:
        if args.data:
            result = measure_input_pipeline(args.data, args.split, args.crop_size, args.batch_size, args.batches,
                                            args.warmup, args.color)
            log(f"| source | crop | batch | colour | images/s |\n|---|---|---|---|---|\n| {result['source']} | "
                f"{args.crop_size} | {args.batch_size} | {args.color} | {result['images_per_second']:.1f} |")
            return 0
        for name in args.models:
            try:
                models.get(name)
            except ValueError as error:
                raise ValueError(f"--models: {error}") from None
        rows = run_input_pipeline_benchmark(args.models, args.size, log=log)
        if args.json:
            with _files.atomic_path(args.json, suffix=".json") as temporary, open(temporary, "w") as stream:
                json.dump(rows, stream, indent=2, default=str)
    except (ValueError, OSError) as error:
        print(f"benchmarks/input_pipeline.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from refinenet_tf import _processes

    _processes.run_script(main, {"measure_input_pipeline": measure_input_pipeline})
