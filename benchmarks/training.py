"""Training speed and memory of the presets, and what an XLA test step costs validation; prints markdown tables.

    .venv/bin/python benchmarks/training.py [--models lw_resnet50 slim_resnet101] [--size 256 512]
        [--batch-size 1] [--steps 3] [--jit off|on|both]
    .venv/bin/python benchmarks/training.py --validation [--validation-images 50] ...
    .venv/bin/python benchmarks/training.py --update [--optimizer adam] ...

The training table times ``train_on_batch`` on random data (random weights, 21 classes, SGD), each configuration
in a fresh process, so that its peak resident memory is its own. ``--validation`` times ``evaluate`` (batch 1) on
generated images of mixed sizes with the package's plain test step and with Keras' XLA-compiled one, which
compiles once per size: the reason :func:`refinenet_tf.training.compile_model` keeps the test step plain.
``--update`` times the first step (tracing included) and the next steps with the recipes' optimizer, whose update
is one fused TensorFlow op per variable (:mod:`refinenet_tf.training.optimizers`), and with Keras' own optimizer of
the same settings, each in a fresh process.
"""

import argparse
import functools
import os
import platform
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_batch(rng, batch_size, size):
    """Random float32 images in [0, 255] and int32 masks of 21 classes, ``[batch_size, size, size(, 3)]``."""
    import numpy as np

    return (rng.uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32),
            rng.integers(0, 21, (batch_size, size, size)).astype(np.int32))


def measure_training(model_name, size, batch_size=1, steps=3, jit_compile=False, warmup=1):
    """Trains ``model_name`` (random weights) on random data and measures one configuration, in this process.

    Returns:
        A dict: images/s over ``steps`` timed steps (after ``warmup`` untimed ones, which include tracing),
        seconds per step, resident memory after building and peak resident memory (MiB).
    """
    import numpy as np
    import tf_keras as keras

    from refinenet_tf import training
    from refinenet_tf.cli.benchmark import benchmark_model, rss_mib
    from refinenet_tf.training import recipes

    model = benchmark_model(model_name)
    recipe = recipes.Recipe("benchmark", model_name, "", optimizer="sgd", learning_rate=1e-3)
    training.compile_model(model, recipe, 21, jit_compile=jit_compile)
    built_rss = rss_mib()
    rng = np.random.default_rng(0)
    images, masks = _random_batch(rng, batch_size, size)
    for _ in range(warmup):
        model.train_on_batch(images, masks)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, masks)
    seconds = (time.perf_counter() - start) / steps
    keras.backend.clear_session()
    return {"model": model_name, "size": size, "batch_size": batch_size, "jit_compile": jit_compile,
            "seconds_per_step": seconds, "images_per_second": batch_size / seconds, "built_rss_mib": built_rss,
            "peak_rss_mib": rss_mib("VmHWM")}


def measure_update(model_name, size, batch_size=1, steps=3, optimizer="adam", update="fused"):
    """One training configuration with the recipes' optimizer (``update="fused"``:
    :class:`~refinenet_tf.training.optimizers.AdamWithMultipliers` or ``SGDWithMultipliers``, momentum 0.9) or
    Keras' own of the same settings (``"keras"``), in this process: ``model_name`` with random weights on random
    data, the optimizer's variables built before the first step (as :func:`refinenet_tf.training.compile_model`
    does), so that the first step is traced once.

    Returns:
        A dict: ``optimizer_class`` (the class that trained), ``first_step_seconds`` (tracing, graph optimisation and the step), ``seconds_per_step`` (the median
        of ``steps`` steps after it), ``update_first_seconds`` and ``update_ms``: the optimizer's update alone
        (``apply_gradients`` of random gradients in a ``tf.function``) traced and run once, then the median of 10.
    """
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from refinenet_tf.cli.benchmark import _best_seconds, benchmark_model
    from refinenet_tf.training import optimizers

    if update not in ("fused", "keras") or optimizer not in ("adam", "sgd"):
        raise ValueError(f"update={update!r} and optimizer={optimizer!r}: use 'fused' or 'keras', 'adam' or 'sgd'.")
    classes = {("adam", "fused"): optimizers.AdamWithMultipliers, ("adam", "keras"): keras.optimizers.Adam,
               ("sgd", "fused"): optimizers.SGDWithMultipliers, ("sgd", "keras"): keras.optimizers.SGD}
    settings = {"momentum": 0.9} if optimizer == "sgd" else {}
    model = benchmark_model(model_name)
    model.compile(classes[optimizer, update](1e-3, **settings),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    images, masks = _random_batch(rng, batch_size, size)
    start = time.perf_counter()
    model.train_on_batch(images, masks)
    first = time.perf_counter() - start
    _, median = _best_seconds(lambda: model.train_on_batch(images, masks), steps)

    alone = classes[optimizer, update](1e-3, **settings)
    variables = [tf.Variable(variable) for variable in model.trainable_variables]
    gradients = [tf.constant(rng.normal(0, 1e-3, variable.shape).astype(np.float32)) for variable in variables]
    alone.build(variables)
    apply = tf.function(lambda: alone.apply_gradients(zip(gradients, variables)))
    start = time.perf_counter()
    apply()
    update_first = time.perf_counter() - start
    _, update_median = _best_seconds(apply, 10)
    return {"model": model_name, "size": size, "batch_size": batch_size, "optimizer": optimizer, "update": update,
            "optimizer_class": type(model.optimizer).__name__, "first_step_seconds": first, "seconds_per_step": median, "update_first_seconds": update_first,
            "update_ms": 1000 * update_median}


def measure_validation(model="lw_mobilenetv2", num_images=50, min_side=64, max_side=160, xla_test_step=False,
                       seed=0, **model_kwargs):
    """Validation images per second over ``num_images`` images of mixed sizes, batch 1, as ``fit`` validates.

    Each image's height and width are drawn between ``min_side`` and ``max_side`` (multiples of 8), so nearly
    every image has a size of its own, as in VOC val. ``xla_test_step=False`` is the package's way
    (:func:`refinenet_tf.training.compile_model`: a plain test step); True compiles the test step with XLA as
    Keras' ``compile(jit_compile=True)`` does, which compiles once per size.

    Returns:
        A dict: ``images_per_second`` (``evaluate`` over all images, compiles included: what a validation epoch
        costs), ``sizes`` (distinct image sizes), ``seconds``.
    """
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from refinenet_tf import models, training
    from refinenet_tf.data import synthetic
    from refinenet_tf.training import recipes

    if not 32 <= min_side <= max_side:
        raise ValueError(f"need 32 <= min_side <= max_side, got min_side={min_side}, max_side={max_side}.")
    rng = np.random.default_rng(seed)
    sides = rng.integers(min_side // 8, max_side // 8 + 1, (num_images, 2)) * 8
    keras.utils.set_random_seed(seed)
    network = models.build(model, num_classes=4, backbone_weights=None, **model_kwargs)
    recipe = recipes.Recipe("validation", model, "", optimizer="adam", learning_rate=1e-3)
    training.compile_model(network, recipe, 4, jit_compile=False)
    if xla_test_step:
        network.jit_compile = True  # Keras' own XLA for every step, the test step included
    scenes = [synthetic.render_scene(rng, int(height), int(width)) for height, width in sides]
    dataset = functools.reduce(tf.data.Dataset.concatenate,  # batches of 1, in memory
                               [tf.data.Dataset.from_tensors((image[None].astype(np.float32),
                                                              mask[None].astype(np.int32)))
                                for image, mask in scenes])
    start = time.perf_counter()
    network.evaluate(dataset, verbose=0)
    seconds = time.perf_counter() - start
    return {"model": model, "images": num_images, "sizes": len({tuple(side) for side in sides.tolist()}),
            "xla_test_step": xla_test_step, "images_per_second": num_images / seconds, "seconds": seconds}


def in_fresh_process(function, *arguments):
    """Runs ``<function>(*arguments)`` of this script in a new Python process; its JSON result."""
    from refinenet_tf import _processes

    return _processes.in_fresh_process("benchmarks.training", function, *arguments, cwd=_ROOT)


def run_training_benchmarks(model_names, sizes, batch_size=1, steps=3, jit_options=(False, True), log=print):
    """Runs :func:`measure_training` for every combination, each in a fresh process; logs the table, returns the
    rows."""
    log(f"Training step on random data, random weights, 21 classes, SGD; {platform.machine()}, "
        f"{os.cpu_count()} cores; each row in a fresh process (peak RSS is that process's).")
    log("| model | input | batch | XLA | s/step | images/s | RSS after build (MiB) | peak RSS (MiB) |")
    log("|---|---|---|---|---|---|---|---|")
    rows = []
    for model_name in model_names:
        for size in sizes:
            for jit_compile in jit_options:
                row = in_fresh_process("measure_training", model_name, size, batch_size, steps, jit_compile)
                rows.append(row)
                log(f"| {row['model']} | {size}x{size} | {batch_size} | {jit_compile} | "
                    f"{row['seconds_per_step']:.2f} | {row['images_per_second']:.2f} | {row['built_rss_mib']:.0f} | "
                    f"{row['peak_rss_mib']:.0f} |")
    return rows


def run_update_benchmarks(model_names, sizes, batch_size=1, steps=3, optimizer="adam", log=print):
    """Runs :func:`measure_update` with the fused and with Keras' update for every model and size, each in a fresh
    process; logs the table, returns the rows."""
    log(f"First training step (tracing included) and later steps, {optimizer}: the recipes' optimizer (one fused "
        f"TensorFlow op per variable) against Keras' own; random data and weights, 21 classes; "
        f"{platform.machine()}, {os.cpu_count()} cores; each row in a fresh process.")
    log("| model | input | batch | optimizer | update | first step (s) | s/step | update alone: first call (s) | "
        "update (ms) |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for model_name in model_names:
        for size in sizes:
            for update in ("keras", "fused"):
                row = in_fresh_process("measure_update", model_name, size, batch_size, steps, optimizer, update)
                rows.append(row)
                log(f"| {model_name} | {size}x{size} | {batch_size} | {optimizer} | {update} | "
                    f"{row['first_step_seconds']:.1f} | {row['seconds_per_step']:.3f} | "
                    f"{row['update_first_seconds']:.1f} | {row['update_ms']:.1f} |")
    return rows


def run_validation_benchmarks(model_names, sides, num_images=50, jit_options=(False, True), log=print):
    """Runs :func:`measure_validation` for every combination, in this process; logs the table, returns the rows."""
    log(f"Validation (evaluate, batch 1) of {num_images} generated images of mixed sizes, sides between half the "
        "input side and the input side; random weights, 4 classes; XLA on: Keras' XLA test step (one compile per "
        "size, compiles counted in the time); off: the package's plain test step.")
    log("| model | sides | sizes | XLA test step | seconds | images/s |\n|---|---|---|---|---|---|")
    rows = []
    for model in model_names:
        for side in sides:
            for jit in jit_options:
                row = measure_validation(model, num_images=num_images, min_side=max(32, side // 2), max_side=side,
                                         xla_test_step=jit)
                rows.append(row)
                log(f"| {model} | {max(32, side // 2)}-{side} | {row['sizes']} | {'on' if jit else 'off'} | "
                    f"{row['seconds']:.1f} | {row['images_per_second']:.2f} |")
    return rows


def main(argv=None):
    """The command line above; returns the exit status (2 with one error line for a bad argument)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lw_resnet50", "slim_resnet101"], metavar="MODEL",
                        help="presets (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs="+", default=[256, 512], help="square input sides")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--jit", choices=["off", "on", "both"], default="both", help="XLA off, on or both")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--validation", action="store_true",
                      help="time validation instead: images of mixed sizes, XLA test step off / on")
    parser.add_argument("--validation-images", type=int, default=50, help="images per --validation run")
    mode.add_argument("--update", action="store_true",
                      help="time the first and later steps with the recipes' fused optimizer update and with Keras'")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="the optimizer of --update")
    args = parser.parse_args(argv)
    from refinenet_tf import models

    try:
        for name in args.models:
            models.get(name)
    except ValueError as error:
        print(f"benchmarks/training.py: error: --models: {error}", file=sys.stderr)
        return 2
    jit = {"off": (False,), "on": (True,), "both": (False, True)}[args.jit]
    log = functools.partial(print, flush=True)
    if args.update:
        run_update_benchmarks(args.models, args.size, args.batch_size, args.steps, args.optimizer, log)
    elif args.validation:
        run_validation_benchmarks(args.models, args.size, args.validation_images, jit, log)
    else:
        run_training_benchmarks(args.models, args.size, args.batch_size, args.steps, jit, log)
    return 0


if __name__ == "__main__":
    from refinenet_tf import _processes

    _processes.run_script(main, {"measure_training": measure_training, "measure_update": measure_update,
                                 "measure_validation": measure_validation})
