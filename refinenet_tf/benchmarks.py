"""Benchmarks that measure (never assert): training throughput and memory per configuration.

Each configuration runs in a fresh Python process, so that its peak resident memory is its own.
``refinenet-tf train-benchmark`` prints the table.
"""

import json
import os
import resource
import subprocess
import sys
import time

__all__ = ["measure_training", "run_training_benchmarks"]


def _rss_mib():
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure_training(model_name, size, batch_size=1, steps=3, jit_compile=False, warmup=1):
    """Trains ``model_name`` (random weights) on random data and measures one configuration, in this process.

    Returns:
        A dict: images/s over ``steps`` timed steps (after ``warmup`` untimed ones, which include tracing),
        seconds per step, resident memory after building and peak resident memory (MiB).
    """
    import numpy as np
    import tf_keras as keras

    from refinenet_tf import models, training

    model = models.build(model_name, num_classes=21, backbone_weights=None)
    recipe = training.Recipe("benchmark", model_name, "", optimizer="sgd", learning_rate=1e-3)
    training.compile_model(model, recipe, 21, jit_compile=jit_compile)
    built_rss = _rss_mib()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, size, size, 3)).astype(np.float32)
    masks = rng.integers(0, 21, (batch_size, size, size)).astype(np.int32)
    for _ in range(warmup):
        model.train_on_batch(images, masks)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, masks)
    seconds = (time.perf_counter() - start) / steps
    keras.backend.clear_session()
    return {"model": model_name, "size": size, "batch_size": batch_size, "jit_compile": jit_compile,
            "seconds_per_step": seconds, "images_per_second": batch_size / seconds, "built_rss_mib": built_rss,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_training_benchmarks(model_names, sizes, batch_size=1, steps=3, jit_options=(False, True), log=print):
    """Runs :func:`measure_training` for every combination, each in a fresh process; returns the rows."""
    rows = []
    for model_name in model_names:
        for size in sizes:
            for jit_compile in jit_options:
                arguments = json.dumps([model_name, size, batch_size, steps, jit_compile])
                code = ("import json, sys; from refinenet_tf import benchmarks; "
                        f"print(json.dumps(benchmarks.measure_training(*json.loads({arguments!r}))))")
                environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
                result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        env=environment)
                if result.returncode != 0:
                    raise RuntimeError(f"benchmark of {model_name} at {size} (jit={jit_compile}) failed:\n"
                                       f"{result.stderr[-2000:]}")
                row = json.loads(result.stdout.strip().splitlines()[-1])
                rows.append(row)
                log(f"| {row['model']} | {size}x{size} | {batch_size} | {jit_compile} | "
                    f"{row['seconds_per_step']:.2f} | {row['images_per_second']:.2f} | {row['built_rss_mib']:.0f} | "
                    f"{row['peak_rss_mib']:.0f} |")
    return rows
