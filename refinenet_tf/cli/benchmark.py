"""Benchmarks that measure (never assert): the engines side by side, as ratios to the matmul rate of the same run.

``refinenet-tf benchmark`` (:func:`run_benchmark`, ``make bench``) prints the one table of this machine: for every
model, each engine (:mod:`refinenet_tf.inference.engines`) and precision, its latency on one uint8 image and its effective
GFLOP/s as a ratio to the float32 or bfloat16 matmul rate measured in the same run, the labels' agreement with
the ``keras`` float32 engine (and the depth difference of the multi-task model); then the same agreement on a
trained model and real images. Each measurement runs in a fresh Python process (:func:`in_fresh_process`), so
that its peak resident memory and its threads are its own. ``benchmarks/training.py`` in the repository times
training.
"""

import os
import sys
import time

from refinenet_tf import _processes

__all__ = ["BENCHMARK_ENGINES", "BENCHMARK_MODELS", "MULTITASK_MODEL", "TARGETS", "in_fresh_process",
           "measure_engine", "measure_matmul", "measure_multitask",
           "benchmark_model", "randomize_batch_norms", "rss_mib", "run_benchmark"]

#: The default models of ``refinenet-tf benchmark``: the two with speed targets.
BENCHMARK_MODELS = ("slim_resnet101", "lw_resnet50")
#: The multi-task model's row (40 classes, the paper's 640 x 480).
MULTITASK_MODEL = "multitask_mobilenetv2_official"
#: The engines compared, in table order.
BENCHMARK_ENGINES = ("keras", "saved_model", "tflite", "onnxruntime", "openvino")

#: Targets on a CPU, as ratios to the same run's matmul rate of the same precision: the fastest float32 engine
#: (``fastest_float32``), the fastest bfloat16 engine where the CPU has AMX (``bfloat16_amx``), and the keras
#: engine's latency at most ``keras_vs_fastest`` times the fastest float32 engine's.
TARGETS = {"fastest_float32": 0.85, "bfloat16_amx": 0.6, "keras_vs_fastest": 1.5}


def rss_mib(field="VmRSS"):
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``) in MiB.

    ``VmHWM`` starts afresh in each new program, unlike ``getrusage``'s ``ru_maxrss``, which Linux carries over
    from the parent process through fork and exec.
    """
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def randomize_batch_norms(model, seed=0):
    """Gives every ``BatchNormalization`` layer of ``model`` random statistics like a trained model's: scale in
    [0.5, 1.5], offset and mean in [-0.2, 0.2], variance in [0.5, 2]. With the initial ones (mean 0, variance 1,
    offset 0) a converter may fold the batch normalizations into nothing, which a trained model's would not; so
    the benchmark uses these. Returns ``model``."""
    import numpy as np
    import tf_keras as keras

    rng = np.random.default_rng(seed)
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable, low, high in ((layer.gamma, 0.5, 1.5), (layer.beta, -0.2, 0.2),
                                        (layer.moving_mean, -0.2, 0.2), (layer.moving_variance, 0.5, 2.0)):
                if variable is not None:
                    variable.assign(rng.uniform(low, high, variable.shape).astype(np.float32))
    return model


def benchmark_model(model_name, seed=0):
    """The preset with random weights (21 classes, 40 for the multi-task model) and trained-like batch
    normalization statistics (:func:`randomize_batch_norms`), or a trained model
    (:func:`refinenet_tf.training.runs.load_inference_model`: a run folder, a ``.keras`` file)."""
    import tf_keras as keras

    from refinenet_tf import models
    from refinenet_tf.training import runs

    if model_name not in models.PRESETS:
        return runs.load_inference_model(model_name)
    keras.utils.set_random_seed(seed)
    num_classes = 40 if model_name == MULTITASK_MODEL else 21
    return randomize_batch_norms(models.build(model_name, num_classes=num_classes, backbone_weights=None), seed)


def in_fresh_process(function, *arguments):
    """Runs ``refinenet_tf.cli.benchmark.<function>(*arguments)`` in a new Python process (``python -m
    refinenet_tf.cli.benchmark FUNCTION JSON_ARGUMENTS``) and returns its JSON result: the one way every
    measurement here gets a process, and so a peak memory, of its own."""
    return _processes.in_fresh_process("refinenet_tf.cli.benchmark", function, *arguments)


def _best_seconds(call, repeats, warmup=0):
    """``(best, median)`` seconds of ``call()`` over ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times), sorted(times)[len(times) // 2]


def measure_matmul(n=4096, repeats=5, dtypes=("float32",)):
    """GFLOP/s of an ``n x n`` matmul in TensorFlow in each of ``dtypes`` (``"float32"``, ``"bfloat16"``; best of
    ``repeats`` after a warm-up): the practical compute ceiling the engines' effective rates are compared with.
    Returns ``{dtype: {"n", "dtype", "gflops_per_second", "device"}}``."""
    import tensorflow as tf

    device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
    results = {}
    for dtype in dtypes:
        with tf.device(device):
            a = tf.cast(tf.random.normal([n, n]), dtype)
            b = tf.cast(tf.random.normal([n, n]), dtype)
            product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
            best, _ = _best_seconds(lambda: product().numpy(), repeats, warmup=1)
        results[dtype] = {"n": n, "dtype": dtype, "gflops_per_second": 2 * n ** 3 / best / 1e9, "device": device}
    return results


def _agreement_images(image_paths, size):
    import numpy as np

    from refinenet_tf.data import decoding

    if image_paths:
        return [decoding.read_image(path) for path in image_paths]
    rng = np.random.default_rng(1)
    return [np.clip(rng.normal(128, 60, (*size, 3)), 0, 255).astype(np.uint8)]


def measure_engine(model_name, engine="keras", precision="float32", size=(512, 512), runs=5, warmup=2,
                   outputs_file=None, image_paths=(), flops=False):
    """One engine on one model, in this process: the engine made from the model (:func:`_build`; the time it
    takes is ``convert_seconds``), then ``runs`` timed calls on a uint8 ``[1, H, W, 3]`` image after ``warmup``
    untimed ones. With ``outputs_file``, the labels (and depth) of the agreement images (``image_paths``, or a
    synthetic scene) are saved there (``.npz``) for the caller to compare engines; with ``flops``, the model's
    profiler FLOPs at that size are counted too.

    Returns a dict: ``latency_ms`` (median), ``best_latency_ms``, ``convert_seconds``, ``peak_rss_mib``, and
    ``gflops`` with ``flops``.
    """
    import numpy as np

    from refinenet_tf.inference import engines
    from refinenet_tf.models import profiling

    size = (size, size) if isinstance(size, int) else tuple(size)
    model = benchmark_model(model_name)
    result = {"model": model_name, "engine": engine, "precision": precision, "size": list(size)}
    if flops:
        result["gflops"] = profiling.count_flops(model, *size) / 1e9
    start = time.perf_counter()
    run = engines.make_engine(engine, model, precision=precision)
    result["convert_seconds"] = time.perf_counter() - start
    image = np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    if runs:
        best, median = _best_seconds(lambda: run(image), runs, warmup)
        result.update(latency_ms=1000 * median, best_latency_ms=1000 * best)
    if outputs_file:
        saved = {}
        for index, picture in enumerate(_agreement_images(image_paths, size)):
            outputs = run(picture[None])
            saved.update({f"{name}_{index}": outputs[name][0] for name in ("labels", "depth") if name in outputs})
        np.savez(outputs_file, **saved)
    result["peak_rss_mib"] = rss_mib("VmHWM")
    return result


def _compare(outputs_file, reference_file):
    """Label agreement (share of pixels) and mean absolute depth difference of two :func:`measure_engine`
    outputs files."""
    import numpy as np

    with np.load(outputs_file) as outputs, np.load(reference_file) as reference:
        labels = [name for name in reference.files if name.startswith("labels")]
        agree = sum(int((outputs[name] == reference[name]).sum()) for name in labels)
        pixels = sum(reference[name].size for name in labels)
        depths = [name for name in reference.files if name.startswith("depth")]
        depth = (max(float(np.abs(outputs[name] - reference[name]).mean()) for name in depths) if depths
                 else None)
    return {"agreement": agree / pixels if pixels else float("nan"), "depth_difference": depth}


def _cpu_has_amx():
    from refinenet_tf.inference import engines

    return "amx_bf16" in engines._cpu_flags()


def measure_multitask(model_name=MULTITASK_MODEL, height=480, width=640, num_classes=40, runs=5, warmup=2):
    """The multi-task model's compute next to the paper's, in this process: inference GFLOPs at ``height x width``
    (:func:`refinenet_tf.models.profiling.count_flops`, a multiply-add = 2 FLOPs) and the ``keras`` engine's latency
    (batch 1, float32, median and best of ``runs`` after ``warmup``). The paper (Nekrasov et al., ICRA 2019)
    quotes 6.5 GFLOPs at 640 x 480 without saying whether it counts multiply-adds, so both are reported.
    """
    import numpy as np

    from refinenet_tf import models
    from refinenet_tf.inference import engines
    from refinenet_tf.models import profiling

    preset = models.get(model_name)
    model = preset.build(num_classes=num_classes, backbone_weights=None)
    flops = profiling.count_flops(model, height, width)
    run = engines.make_engine("keras", model)
    image = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    best, median = _best_seconds(lambda: run(image), runs, warmup)
    return {"model": model_name, "size": f"{width}x{height}", "num_classes": num_classes,
            "trainable_parameters": profiling.count_parameters(model)[1], "gflops": flops / 1e9,
            "gmacs": flops / 2e9, "published_gflops": preset.published.get("gflops_640x480"),
            "latency_ms": 1000 * median, "best_latency_ms": 1000 * best, "peak_rss_mib": rss_mib("VmHWM")}


def _check_engine(engine, precision):
    """Raises the ``ValueError`` or ``ImportError`` with which ``engine`` refuses ``precision`` whatever the model
    (a precision it never runs, its optional package missing), so that no process is started to learn it."""
    import warnings

    from refinenet_tf.inference import engines

    with warnings.catch_warnings():  # the emulated-bfloat16 warning belongs to the measuring process
        warnings.simplefilter("ignore")
        engines.check_precision(precision, engine, engines.engine_class(engine).supports_bfloat16)


def _engine_rows(model_name, size, runs, engine_names, precisions, image_paths, folder, log):
    """:func:`measure_engine` for each engine and precision of one model, each in a fresh process, with the
    agreement of each with the ``keras`` float32 engine; an engine that fails (a missing extra, a precision it
    refuses: both known before any process starts) gets its one-line error instead."""
    rows, reference = [], None
    for precision in precisions:
        for engine in engine_names:
            outputs = os.path.join(folder, f"{len(rows)}.npz")
            first = reference is None
            try:
                _check_engine(engine, precision)
                row = in_fresh_process("measure_engine", model_name, engine, precision, list(size), runs, 2,
                                       outputs, list(image_paths), first)
            except (RuntimeError, ValueError, ImportError) as error:
                row = {"model": model_name, "engine": engine, "precision": precision,
                       "error": str(error).strip().splitlines()[-1][:200]}
            else:
                if first:
                    reference = outputs
                row.update(_compare(outputs, reference))
            rows.append(row)
            if "error" in row:
                log(f"({model_name}, {engine}, {precision}: {row['error']})")
            else:
                log(f"({model_name}, {engine}, {precision}: " + (f"{row['latency_ms']:.0f} ms, " if runs else "")
                    + f"labels {100 * row['agreement']:.2f} % equal to keras float32, converted in "
                    f"{row['convert_seconds']:.1f} s)")
    return rows


def run_benchmark(model_names=BENCHMARK_MODELS, size=512, runs=5, engine_names=BENCHMARK_ENGINES,
                  precisions=("float32", "bfloat16"), matmul_size=4096, multitask_size=(480, 640),
                  agreement_model=None, agreement_images=(), log=print):
    """The benchmark table of this machine; each measurement in a fresh process. Returns the results.

    For each model (random weights; ``multitask_size`` adds :data:`MULTITASK_MODEL` at that ``(height, width)``)
    and each engine and precision: the latency of one uint8 image at ``size`` (the median of ``runs`` calls)
    and the effective GFLOP/s (profiler FLOPs / best call) as a ratio to the matmul rate of that precision
    (:func:`measure_matmul`, measured at the start and the end of the run, the higher counting), with the share
    of labels equal to the ``keras`` float32 engine's on a synthetic scene (and the multi-task model's mean depth
    difference). Then each engine's agreement on ``agreement_model`` (a trained model: a run folder, a ``.keras``
    file) over ``agreement_images`` (real images). :data:`TARGETS` are reported, not asserted.
    """
    import platform
    import shutil
    import tempfile

    log = log or (lambda line: None)
    matmul = in_fresh_process("measure_matmul", matmul_size, 5, list(precisions))
    log(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {matmul[precisions[0]]['device']}; AMX: "
        f"{'yes' if _cpu_has_amx() else 'no'}. Batch 1, random weights (trained-like batch norm statistics).")
    log("Matmul " + ", ".join(f"{p} {m['gflops_per_second']:.0f} GFLOP/s" for p, m in matmul.items())
        + f" ({matmul_size}x{matmul_size}, start of run).")
    folder = tempfile.mkdtemp(prefix="refinenet_tf-bench-")
    try:
        models = [(name, (size, size)) for name in model_names]
        if multitask_size:
            models.append((MULTITASK_MODEL, tuple(multitask_size)))
        rows = []
        for name, model_size in models:
            rows += _engine_rows(name, model_size, runs, engine_names, precisions, (), folder, log)
        agreement = []
        if agreement_model:
            agreement = _engine_rows(agreement_model, (size, size), 0, engine_names, precisions, agreement_images,
                                     folder, log)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    closing = in_fresh_process("measure_matmul", matmul_size, 5, list(precisions))
    ceiling = {p: max(matmul[p]["gflops_per_second"], closing[p]["gflops_per_second"]) for p in precisions}
    _log_engine_table(rows, ceiling, size, runs, log)
    if agreement:
        log(f"\nAgreement with the keras float32 engine on {agreement_model} over {len(agreement_images) or 1} "
            f"image(s){' (real)' if agreement_images else ' (synthetic)'}:")
        log("| engine | precision | labels equal to keras float32 |")
        log("|---|---|---|")
        for row in agreement:
            log(f"| {row['engine']} | {row['precision']} | "
                + (row["error"] if "error" in row else f"{100 * row['agreement']:.2f} %") + " |")
    return {"matmul": [matmul, closing], "ceiling": ceiling, "rows": rows, "agreement": agreement,
            "amx": _cpu_has_amx()}


def _log_engine_table(rows, ceiling, size, runs, log):
    """The engines table of :func:`run_benchmark` and the targets' verdicts."""
    gflops = {row["model"]: row["gflops"] for row in rows if "gflops" in row}
    log("| model | engine | precision | ms (median) | GFLOP/s | x matmul of its precision | labels = keras float32 | "
        "depth difference | convert s | peak RSS MiB |")
    log("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            log(f"| {row['model']} | {row['engine']} | {row['precision']} | {row['error']} | | | | | | |")
            continue
        row["gflops_per_second"] = gflops[row["model"]] / (row["best_latency_ms"] / 1000)
        row["matmul_ratio"] = row["gflops_per_second"] / ceiling[row["precision"]]
        depth = row.get("depth_difference")
        log(f"| {row['model']} | {row['engine']} | {row['precision']} | {row['latency_ms']:.0f} | "
            f"{row['gflops_per_second']:.0f} | {row['matmul_ratio']:.2f} | {100 * row['agreement']:.2f} % | "
            + ("-" if depth is None else f"{depth:.2g}") + f" | {row['convert_seconds']:.1f} | "
            f"{row['peak_rss_mib']:.0f} |")
    log(f"GFLOP/s = profiler FLOPs of the network / best of {runs} calls (the resize and softmax to the input size "
        f"are not counted); ratios use the higher matmul rate of the run's start and end: "
        + ", ".join(f"{p} {rate:.0f}" for p, rate in ceiling.items()) + " GFLOP/s.")
    for model in dict.fromkeys(row["model"] for row in rows):
        measured = [row for row in rows if row["model"] == model and "matmul_ratio" in row]
        float32 = [row for row in measured if row["precision"] == "float32"]
        if not float32:
            continue
        fastest = max(float32, key=lambda row: row["matmul_ratio"])
        keras_rows = [row for row in float32 if row["engine"] == "keras"]
        line = (f"{model}: fastest float32 engine {fastest['engine']} at {fastest['matmul_ratio']:.2f} x the matmul "
                f"(target {TARGETS['fastest_float32']})")
        if keras_rows:
            line += (f"; keras takes {keras_rows[0]['latency_ms'] / fastest['latency_ms']:.2f} x its time "
                     f"(target <= {TARGETS['keras_vs_fastest']})")
        bfloat16 = [row for row in measured if row["precision"] == "bfloat16"]
        if bfloat16:
            best = max(bfloat16, key=lambda row: row["matmul_ratio"])
            line += (f"; fastest bfloat16 engine {best['engine']} at {best['matmul_ratio']:.2f} x the bfloat16 matmul"
                     f" (target {TARGETS['bfloat16_amx']} where the CPU has AMX)")
        log(line)


def _main(argv):
    """``python -m refinenet_tf.cli.benchmark FUNCTION JSON_ARGUMENTS``: prints the function's JSON result (see
    :func:`in_fresh_process`)."""
    _processes.print_measurement(argv, {name: globals()[name] for name in __all__ if name.startswith("measure_")})


if __name__ == "__main__":
    _main(sys.argv[1:])
