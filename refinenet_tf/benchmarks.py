"""Benchmarks that measure (never assert): training throughput, inference latency and memory.

Each configuration runs in a fresh Python process, so that its peak resident memory is its own.
``refinenet-tf train-benchmark`` and ``refinenet-tf inference-benchmark`` print the tables.
"""

import json
import os
import subprocess
import sys
import time

__all__ = ["measure_training", "run_inference_benchmark", "run_training_benchmarks"]


def _rss_mib(field="VmRSS"):
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``) in MiB.

    ``VmHWM`` starts afresh in each new program, unlike ``getrusage``'s ``ru_maxrss``, which Linux carries over
    from the parent process through fork and exec.
    """
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(field + ":"):
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
            "peak_rss_mib": _rss_mib("VmHWM")}


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


# The timed loop of the inference benchmark, run in a fresh process per format. It imports only what the format
# needs: the SavedModel, TFLite and ONNX rows never import refinenet_tf (as in a serving process).
_INFERENCE_TIMING = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
fmt, path, size, runs, warmup = json.loads(sys.argv[1])
image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype(np.uint8)
if fmt == "keras":
    import tensorflow as tf
    from refinenet_tf import export, saving
    serving = export._Serving(saving.load_model(path, compile=False))  # what the SavedModel signature runs
    run = tf.function(serving.outputs, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    call = lambda: run(tf.constant(image))["probabilities"].numpy()
elif fmt == "saved_model":
    import tensorflow as tf
    serve = tf.saved_model.load(path).signatures["serving_default"]
    call = lambda: serve(images=tf.constant(image))["probabilities"].numpy()
elif fmt.startswith("tflite"):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner("serving_default")
    call = lambda: runner(images=image)["probabilities"]
elif fmt == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    call = lambda: session.run(["probabilities"], {"images": image})[0]
start = time.perf_counter()
call()
first = time.perf_counter() - start
for _ in range(warmup):
    call()
times = []
for _ in range(runs):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
peak = [int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
if os.path.isdir(path):
    size_bytes = sum(os.path.getsize(os.path.join(top, name)) for top, _, names in os.walk(path) for name in names)
else:
    size_bytes = os.path.getsize(path)
print(json.dumps({"median_ms": 1000 * float(np.median(times)), "min_ms": 1000 * min(times),
                  "first_ms": 1000 * first, "peak_rss_mib": peak, "file_mib": size_bytes / 2**20}))
"""


def run_inference_benchmark(model_name="lw_resnet50", size=512, runs=10, warmup=2, formats=None, workdir=None,
                            log=print):
    """Latency of one model served four ways: in-process Keras, SavedModel, TFLite (float32, float16, int8) and,
    when ``tf2onnx`` and ``onnxruntime`` are installed, ONNX Runtime.

    All formats compute the same thing: uint8 ``[1, size, size, 3]`` -> labels and probabilities at the input
    size (random weights, 21 classes). The model is exported once into ``workdir`` (a temporary folder by
    default); each format is then timed in a fresh process: the first call, then the median over ``runs`` calls
    after ``warmup`` more. Returns the rows.
    """
    import shutil
    import tempfile

    from refinenet_tf import export, models

    formats = list(formats or ["keras", "saved_model", "tflite_float32", "tflite_float16", "tflite_int8", "onnx"])
    folder = workdir or tempfile.mkdtemp(prefix="refinenet_tf-bench-")
    try:
        model = models.build(model_name, num_classes=21, backbone_weights=None)
        paths = {}
        for fmt in formats:
            start = time.perf_counter()
            if fmt == "keras":
                paths[fmt] = os.path.join(folder, "model.keras")
                model.save(paths[fmt])
            elif fmt == "saved_model":
                paths[fmt] = export.export_saved_model(model, os.path.join(folder, "saved_model"), overwrite=True)
            elif fmt.startswith("tflite_"):
                paths[fmt] = export.export_tflite(model, os.path.join(folder, f"{fmt}.tflite"),
                                                  quantization=fmt.split("_", 1)[1], input_size=(size, size),
                                                  overwrite=True)
            elif fmt == "onnx":
                try:
                    paths[fmt] = export.export_onnx(model, os.path.join(folder, "model.onnx"), overwrite=True)
                except ImportError as error:
                    log(f"(onnx skipped: {error})")
                    continue
            else:
                raise ValueError(f"unknown format {fmt!r}")
            log(f"(exported {fmt} in {time.perf_counter() - start:.1f} s)")
        rows, reference = [], None
        for fmt, path in paths.items():
            result = subprocess.run([sys.executable, "-c", _INFERENCE_TIMING, json.dumps([fmt, path, size, runs,
                                                                                         warmup])],
                                    capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            if result.returncode != 0:
                raise RuntimeError(f"inference benchmark of {fmt} failed:\n{result.stderr[-2000:]}")
            row = dict(json.loads(result.stdout.strip().splitlines()[-1]), format=fmt, model=model_name, size=size)
            reference = reference or row["median_ms"]
            row["vs_keras"] = row["median_ms"] / reference
            rows.append(row)
            log(f"| {model_name} | {size}x{size} | {fmt} | {row['median_ms']:.0f} | {row['min_ms']:.0f} | "
                f"{row['vs_keras']:.2f} | {row['first_ms']:.0f} | {row['file_mib']:.1f} | {row['peak_rss_mib']:.0f} |")
        return rows
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
