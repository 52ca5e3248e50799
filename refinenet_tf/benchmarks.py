"""Benchmarks that measure (never assert): compute efficiency, training throughput, inference latency, memory.

Each configuration runs in a fresh Python process, so that its peak resident memory is its own.
``refinenet-tf benchmark`` (:func:`run_benchmark`, ``make bench``) prints the one table of this machine: for
every model, its inference FLOPs and effective GFLOP/s against the fp32 matmul rate measured in the same run,
training and input-pipeline throughput, SavedModel and TFLite latency and peak memory.
``refinenet-tf train-benchmark``, ``inference-benchmark`` and ``data-benchmark`` look at one part in detail.
"""

import json
import os
import subprocess
import sys
import time

from refinenet_tf import options

__all__ = ["BENCHMARK_MODELS", "PEER_ARCHITECTURES", "PRECISIONS", "TARGETS", "in_fresh_process", "measure_agreement",
           "measure_frozen", "measure_gpus", "measure_matmul", "measure_model", "measure_multitask",
           "measure_op_profile", "measure_peer", "measure_pipeline", "measure_predict", "measure_served",
           "measure_soak", "measure_training", "randomize_batch_norms",
           "run_benchmark", "run_inference_benchmark", "run_soak", "run_training_benchmarks"]

# The default rows of ``refinenet-tf benchmark``: each variant's flagship, then the official releases' structures
# that converted checkpoints run in (LW-101/152 share LW-50's code path; ``--models all`` runs every preset).
BENCHMARK_MODELS = ("slim_resnet101", "refinenet_resnet101", "lw_resnet50", "lw_resnet101", "lw_mobilenetv2",
                    "refinenet_resnet101_official", "lw_resnet50_official", "lw_mobilenetv2_official")

# Effective inference GFLOP/s as a fraction of the fp32 matmul GFLOP/s measured in the same run, on a CPU.
TARGETS = {"slim_resnet101": 0.90, "lw_resnet50": 0.80}

# The rows' precisions: "mixed" is mixed_float16 on a GPU, mixed_bfloat16 on a CPU (training.mixed_precision_policy).
PRECISIONS = ("float32", "mixed")

# The presets whose structure the official PyTorch releases share (refinenet_tf.reference.torch_official):
# ``--peer`` times those releases' code on the same network beside ours.
PEER_ARCHITECTURES = ("lw_resnet50_official", "lw_resnet101_official", "lw_resnet152_official",
                      "lw_mobilenetv2_official", "refinenet_resnet101_official")

# The input pipeline must deliver at least this many times what training consumes.
PIPELINE_TARGET = 4.0


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


def randomize_batch_norms(model, seed=0):
    """Gives every ``BatchNormalization`` layer of ``model`` random statistics like a trained model's: scale in
    [0.5, 1.5], offset and mean in [-0.2, 0.2], variance in [0.5, 2]. With the initial ones (mean 0, variance 1,
    offset 0) the frozen graph's folded biases are 0 and TensorFlow drops them, which a trained model's graph
    would not; so the benchmark, and tests of :mod:`refinenet_tf.folding`, use these. Returns ``model``."""
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


def _build(model_name, seed=0):
    """The preset with random weights, 21 classes, and trained-like batch normalization statistics
    (:func:`randomize_batch_norms`)."""
    from refinenet_tf import models

    return randomize_batch_norms(models.build(model_name, num_classes=21, backbone_weights=None), seed)


def measure_training(model_name, size, batch_size=1, steps=3, jit_compile=False, warmup=1):
    """Trains ``model_name`` (random weights) on random data and measures one configuration, in this process.

    Returns:
        A dict: images/s over ``steps`` timed steps (after ``warmup`` untimed ones, which include tracing),
        seconds per step, resident memory after building and peak resident memory (MiB).
    """
    import numpy as np
    import tf_keras as keras

    from refinenet_tf import recipes, training

    model = _build(model_name)
    recipe = recipes.Recipe("benchmark", model_name, "", optimizer="sgd", learning_rate=1e-3)
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


def in_fresh_process(function, *arguments):
    """Runs ``refinenet_tf.benchmarks.<function>(*arguments)`` in a new Python process (``python -m
    refinenet_tf.benchmarks FUNCTION JSON_ARGUMENTS``) and returns its JSON result: the one way every
    measurement here gets a process, and so a peak memory, of its own."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "refinenet_tf.benchmarks", function, json.dumps(arguments)],
                            capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark {function}{tuple(arguments)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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


def measure_matmul(n=4096, repeats=5):
    """fp32 GFLOP/s of an ``n x n`` matmul in TensorFlow (best of ``repeats`` after a warm-up): the practical
    compute ceiling the models' effective rates are compared with."""
    import tensorflow as tf

    device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        a = tf.random.normal([n, n])
        b = tf.random.normal([n, n])
        product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
        best, _ = _best_seconds(lambda: product().numpy(), repeats, warmup=1)
    return {"n": n, "gflops_per_second": 2 * n ** 3 / best / 1e9, "device": device}


def _check_precisions(precisions):
    unknown = [precision for precision in precisions if precision not in PRECISIONS]
    if unknown:
        raise ValueError(f"precisions must be among {PRECISIONS}, not {unknown}")


def _set_precision(precision, accelerate):
    """Sets the global Keras policy for ``precision`` (None: mixed when ``accelerate``); returns its name."""
    import tf_keras as keras

    from refinenet_tf import training

    _check_precisions([precision or "float32"])
    policy = training.mixed_precision_policy(precision == "mixed" or (precision is None and bool(accelerate)))
    keras.mixed_precision.set_global_policy(policy)
    return policy


def measure_model(model_name, size=512, runs=5, warmup=2, train_batch=2, train_steps=3, accelerate=False,
                  precision=None):
    """One row of :func:`run_benchmark`, in this process: FLOPs, inference latency (the Keras model's forward
    pass, batch 1), effective GFLOP/s, training images/s and peak resident memory.

    ``accelerate`` (for a GPU): XLA for both inference and training, and mixed precision unless ``precision``
    says otherwise. ``precision``: ``"float32"`` or ``"mixed"`` (``mixed_float16`` on a GPU, ``mixed_bfloat16``
    on a CPU, where it pays on processors with bfloat16 matrix units such as Intel AMX).
    """
    import numpy as np
    import tensorflow as tf

    from refinenet_tf import models, profiling, recipes, training

    policy = _set_precision(precision, accelerate)
    model = _build(model_name)
    flops = profiling.count_flops(model, size, size)
    forward = tf.function(lambda images: model(images, training=False), jit_compile=bool(accelerate))
    images = tf.random.uniform([1, size, size, 3], 0, 255)
    best, median = _best_seconds(lambda: forward(images).numpy(), runs, warmup)
    inference_peak = _rss_mib("VmHWM")

    recipe = recipes.Recipe("benchmark", model_name, "", optimizer="sgd", learning_rate=1e-3)
    training.compile_model(model, recipe, 21, jit_compile=bool(accelerate))
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (train_batch, size, size, 3)).astype(np.float32)
    masks = rng.integers(0, 21, (train_batch, size, size)).astype(np.int32)
    train_best, train_median = _best_seconds(lambda: model.train_on_batch(batch, masks), train_steps, warmup=1)
    return {"model": model_name, "variant": models.get(model_name).variant, "size": size, "policy": policy,
            "xla": bool(accelerate), "parameters": model.count_params(), "gflops": flops / 1e9,
            "latency_ms": 1000 * median, "best_latency_ms": 1000 * best,
            "gflops_per_second": flops / best / 1e9, "train_images_per_second": train_batch / train_median,
            "train_batch": train_batch, "inference_peak_rss_mib": inference_peak,
            "peak_rss_mib": _rss_mib("VmHWM")}


def measure_frozen(model_name, size=512, runs=5, warmup=2, precision=None, accelerate=False):
    """The forward pass of :func:`refinenet_tf.inference.freeze` (its default ``weights_as``), in this process, as a
    serving process runs it: the only graph the process runs (measured apart from :func:`measure_model`, so that
    neither shares the other's memory or oneDNN's per-thread cache of compiled convolutions).

    Returns a dict: ``latency_ms`` (median), ``best_latency_ms``, ``freeze_seconds``, ``peak_rss_mib``.
    """
    import tensorflow as tf

    from refinenet_tf import inference

    _set_precision(precision, accelerate)
    model = _build(model_name)
    start = time.perf_counter()
    frozen = inference.freeze(model)
    freeze_seconds = time.perf_counter() - start
    images = tf.random.uniform([1, size, size, 3], 0, 255)
    best, median = _best_seconds(lambda: frozen(images).numpy(), runs, warmup)
    return {"latency_ms": 1000 * median, "best_latency_ms": 1000 * best, "freeze_seconds": freeze_seconds,
            "peak_rss_mib": _rss_mib("VmHWM")}


def _max_rss_mib():
    """``getrusage``'s peak resident memory of this process in MiB (Linux: kilobytes). In a process started by a
    small parent it is this process's own; :func:`_rss_mib` ``("VmHWM")`` is its own in any case."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_predict(model_name, size=512, runs=5, warmup=2, freeze="auto"):
    """The default prediction path, in this process, as a user or a serving loop runs it: one uint8
    ``[size, size, 3]`` image after another through :func:`refinenet_tf.inference.predict` (labels out, the
    probabilities resized to the input and softmaxed inside). With ``freeze="auto"`` the first calls run the Keras
    model until the size has repeated, then the frozen graph; ``runs`` calls are timed after that and ``warmup``.

    Returns a dict: ``latency_ms`` (median), ``best_latency_ms``, ``frozen`` (whether the timed calls ran the
    frozen graph), ``first_calls_seconds`` (the calls before the timed ones, freezing included),
    ``peak_rss_mib`` (VmHWM) and ``max_rss_mib`` (getrusage).
    """
    import numpy as np

    from refinenet_tf import inference

    model = _build(model_name)
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    start = time.perf_counter()
    for _ in range(inference.AUTO_FREEZE_REPEATS if freeze == "auto" else 1):
        inference.predict(model, image, freeze=freeze)
    first = time.perf_counter() - start
    best, median = _best_seconds(lambda: inference.predict(model, image, freeze=freeze), runs, warmup)
    return {"latency_ms": 1000 * median, "best_latency_ms": 1000 * best, "first_calls_seconds": first,
            "frozen": isinstance(inference.model_to_run(model, freeze, 1, None), inference.FrozenModel),
            "peak_rss_mib": _rss_mib("VmHWM"), "max_rss_mib": _max_rss_mib()}


def measure_peer(architecture, size=512, runs=5, warmup=2):
    """The official structure ``architecture`` in PyTorch (:mod:`refinenet_tf.reference.torch_official`, random
    weights, 21 classes, eval mode, no autograd, all cores), in this process: the same work as
    :func:`measure_predict` (the releases' preprocessing, the network, the logits resized to the input, softmax,
    argmax), on a uint8 ``[1, size, size, 3]`` image. Returns a dict: ``latency_ms`` (median),
    ``best_latency_ms``, ``threads``, ``torch`` (its version), ``peak_rss_mib``."""
    try:
        import torch
    except ImportError:
        raise ImportError('--peer needs PyTorch: pip install "refinenet_tf[torch]"') from None
    import numpy as np

    from refinenet_tf.reference import torch_official

    torch.set_num_threads(os.cpu_count())
    model = torch_official.randomize(torch_official.build(architecture, num_classes=21), seed=0)
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)

    def call():
        with torch.inference_mode():
            logits = model(torch_official.preprocess(image))
            logits = torch.nn.functional.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
            return torch.softmax(logits, dim=1).argmax(1).numpy()

    best, median = _best_seconds(call, runs, warmup)
    return {"latency_ms": 1000 * median, "best_latency_ms": 1000 * best, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "peak_rss_mib": _rss_mib("VmHWM")}


def measure_agreement(model_name, image_paths=(), size=512, runs=3):
    """How far the faster precisions move the labels, in this process: one model (random weights, seed 0,
    21 classes) run in float32 (the default predict path), in ``mixed_bfloat16`` (the same weights) and as a
    TFLite int8 model (dynamic-range quantization of the same weights). On each image (``image_paths``; by
    default a synthetic ``size`` x ``size`` scene) the share of pixels whose label equals float32's, and the
    median latency at ``size`` x ``size``.

    Returns a dict per precision (``float32``, ``mixed_bfloat16``, ``tflite_int8``): ``agreement`` (pixels
    agreeing over all images), ``latency_ms``.
    """
    import shutil
    import tempfile

    import numpy as np
    import tf_keras as keras

    from refinenet_tf import export, inference
    from refinenet_tf.data import decoding

    rng = np.random.default_rng(0)
    if image_paths:
        images = [decoding.read_image(path) for path in image_paths]
    else:
        images = [np.clip(rng.normal(128, 60, (size, size, 3)), 0, 255).astype(np.uint8)]
    timed = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    keras.utils.set_random_seed(0)
    model = _build(model_name)
    reference = inference.predict(model, images, freeze=True)
    folder = tempfile.mkdtemp(prefix="refinenet_tf-agreement-")
    results = {}
    try:
        _, median = _best_seconds(lambda: inference.predict(model, timed, freeze=True), runs, 1)
        results["float32"] = {"agreement": 1.0, "latency_ms": 1000 * median}
        tflite = export.export_tflite(model, os.path.join(folder, "int8.tflite"), quantization="int8",
                                      input_size=None)
        weights = os.path.join(folder, "model.weights.h5")
        model.save_weights(weights)
        interpreter = export.tflite_interpreter(tflite)

        def run_tflite(image):
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [1, *image.shape])
            interpreter.allocate_tensors()
            return interpreter.get_signature_runner("serving_default")(images=image[None])["labels"][0]

        labels = [run_tflite(image) for image in images]
        run_tflite(timed)
        _, median = _best_seconds(lambda: run_tflite(timed), runs, 1)
        results["tflite_int8"] = {"agreement": _agreement(labels, reference), "latency_ms": 1000 * median}
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        mixed = _build(model_name)
        mixed.load_weights(weights)
        labels = inference.predict(mixed, images, freeze=True)
        _, median = _best_seconds(lambda: inference.predict(mixed, timed, freeze=True), runs, 1)
        results["mixed_bfloat16"] = {"agreement": _agreement(labels, reference), "latency_ms": 1000 * median}
    finally:
        keras.mixed_precision.set_global_policy("float32")
        shutil.rmtree(folder, ignore_errors=True)
    return dict(results, model=model_name, images=len(images))


def _agreement(labels, reference):
    return float(sum((a == b).sum() for a, b in zip(labels, reference)) / sum(b.size for b in reference))


def measure_pipeline(size=512, batch_size=2, batches=40, warmup=5, workdir=None):
    """Images/s of the training input pipeline, in this process: VOC-sized JPEGs (500 x 375) and palette
    masks decoded, randomly scaled 0.5-2, padded, cropped to ``size``, flipped and colour-distorted."""
    import shutil
    import tempfile

    from refinenet_tf import data
    from refinenet_tf.data import synthetic

    folder = workdir or tempfile.mkdtemp(prefix="refinenet_tf-pipeline-")
    try:
        synthetic.write_shapes_dataset(folder, num_train=64, num_val=1, height=375, width=500, seed=0)
        dataset = data.make_dataset(f"voc:{folder}", "train", batch_size=batch_size, training=True,
                                    crop_size=size, color=True, repeat=True, seed=0)
        iterator = iter(dataset)
        for _ in range(warmup):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    return {"size": size, "batch_size": batch_size, "images_per_second": batches * batch_size / seconds}


def measure_gpus():
    """The number of GPUs TensorFlow sees, in this process."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def _gpu_available():
    """Whether TensorFlow sees a GPU, asked in a fresh process (so that this one does not initialise it)."""
    return in_fresh_process("measure_gpus") > 0


def run_benchmark(model_names=BENCHMARK_MODELS, size=512, runs=5, train_batch=2, train_steps=3,
                  formats=("saved_model", "tflite_float32"), accelerate="auto", soak_images=300,
                  soak_model="lw_mobilenetv2", matmul_size=4096, precisions=None, peer=False, agreement=True,
                  agreement_images=(), multitask_size=(480, 640), op_profile=True, log=print):
    """The benchmark table of this machine; each measurement in a fresh process. Returns the rows.

    Per model: inference FLOPs (TensorFlow profiler), the forward pass's latency and effective GFLOP/s
    (FLOPs / best latency), as a Keras model (:func:`measure_model`) and frozen (:func:`measure_frozen`), each
    as a ratio to the fp32 matmul GFLOP/s measured at the start and the end of the run
    (the higher one counts), training images/s, the input pipeline's images/s as a multiple of that, the
    SavedModel and TFLite latency (uint8 image -> labels + probabilities, :func:`run_inference_benchmark`) and
    peak resident memory. ``accelerate``: ``"auto"`` uses XLA and mixed precision when a GPU is visible.
    ``precisions``: one row per model and precision, ``"float32"`` and/or ``"mixed"`` (default: ``"mixed"``
    when accelerated, else ``"float32"``); the exported formats are timed once per model, in float32, and the
    targets apply to float32 rows on a CPU.
    A second table has what users run, in float32 on a CPU: the default :func:`refinenet_tf.inference.predict`
    path (:func:`measure_predict`) and the exported SavedModel, each as a ratio to the matmul rate, against
    :data:`TARGETS`; peak memory of the default path and of the Keras path; with ``peer``, the official PyTorch
    code of the same structure (:data:`PEER_ARCHITECTURES`, :func:`measure_peer`) and our speed as a multiple of
    its. With ``agreement``, a third table has ``mixed_bfloat16`` and TFLite int8 beside float32: latency and
    the share of pixels whose labels equal float32's (:func:`measure_agreement`, on ``agreement_images`` or a
    synthetic scene).
    With ``op_profile``, each float32 row that misses its target on a CPU (frozen, default predict or
    SavedModel) gets the op profile of its frozen graph (:func:`measure_op_profile`) and a line saying what
    bounds it.
    With ``multitask_size`` (``(height, width)``, the paper's 640 x 480 by default; ``None``: none), a row for the
    multi-task model (:func:`measure_multitask`): its compute next to the paper's and its forward latency.
    Then ``soak_images`` images of random sizes go through ``soak_model`` in one process (:func:`run_soak`),
    with resident memory at the start, half-way and the end.
    """
    import platform

    if accelerate == "auto":
        accelerate = _gpu_available()
    precisions = tuple(precisions or (("mixed",) if accelerate else ("float32",)))
    _check_precisions(precisions)
    log = log or (lambda line: None)
    matmul = in_fresh_process("measure_matmul", matmul_size)
    pipeline = in_fresh_process("measure_pipeline", size, train_batch)
    log(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {matmul['device']}; "
        f"{'XLA' if accelerate else 'no XLA'}, precision {' and '.join(precisions)}. Input {size}x{size}, "
        f"batch 1 for inference, {train_batch} for training, random weights, 21 classes.")
    log(f"fp32 matmul {matmul['n']}x{matmul['n']}: {matmul['gflops_per_second']:.0f} GFLOP/s (start of run); "
        f"input pipeline: {pipeline['images_per_second']:.1f} images/s (VOC-sized JPEGs, crop {size}, colour).")
    header = ["model", "variant", "precision", "GFLOPs", "forward ms (Keras / frozen)", "GFLOP/s (Keras / frozen)",
              "x fp32 matmul (Keras / frozen)", "target (frozen)", "train img/s", "pipeline x train", "SavedModel ms",
              "TFLite ms", "peak RSS MiB (frozen inference / training)"]
    rows = []
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in model_names:
        served = {}
        if formats:
            served = {r["format"]: r for r in run_inference_benchmark(name, size, runs=runs, formats=list(formats),
                                                                       log=lambda line: None)}
        for precision in precisions:
            row = in_fresh_process("measure_model", name, size, runs, 2, train_batch, train_steps,
                                    bool(accelerate), precision)
            row["frozen"] = in_fresh_process("measure_frozen", name, size, runs, 2, precision, bool(accelerate))
            row["frozen"]["gflops_per_second"] = row["gflops"] / (row["frozen"]["best_latency_ms"] / 1000)
            row["serving"] = served if precision == precisions[0] else {}
            if precision == "float32" and not accelerate:
                row["predict"] = in_fresh_process("measure_predict", name, size, runs, 2, "auto")
                row["predict_keras"] = in_fresh_process("measure_predict", name, size, 1, 0, False)
                if peer and name in PEER_ARCHITECTURES:
                    row["peer"] = in_fresh_process("measure_peer", name, size, runs, 2)
                if agreement:  # a process that dies (e.g. out of memory converting to int8) leaves a note
                    try:
                        row["agreement"] = in_fresh_process("measure_agreement", name, list(agreement_images), size)
                    except RuntimeError as error:
                        row["agreement_error"] = str(error).splitlines()[0][:200]
            row["pipeline_ratio"] = pipeline["images_per_second"] / row["train_images_per_second"]
            rows.append(row)
            log(f"({name}, {row['policy']}: measured)")
    closing = in_fresh_process("measure_matmul", matmul_size)
    ceiling = max(matmul["gflops_per_second"], closing["gflops_per_second"])
    for row in rows:
        row["matmul_ratio"] = row["gflops_per_second"] / ceiling
        row["frozen"]["matmul_ratio"] = row["frozen"]["gflops_per_second"] / ceiling
        target = TARGETS.get(row["model"]) if not accelerate and row["policy"] == "float32" else None
        row["target"] = target
        met = target is not None and row["frozen"]["matmul_ratio"] >= target
        verdict = "-" if target is None else f"{target:.2f} {'met' if met else 'NOT met'}"
        serving = row["serving"]
        cells = [row["model"], row["variant"], row["policy"], f"{row['gflops']:.1f}",
                 f"{row['latency_ms']:.0f} / {row['frozen']['latency_ms']:.0f}",
                 f"{row['gflops_per_second']:.0f} / {row['frozen']['gflops_per_second']:.0f}",
                 f"{row['matmul_ratio']:.2f} / {row['frozen']['matmul_ratio']:.2f}", verdict,
                 f"{row['train_images_per_second']:.2f}",
                 f"{row['pipeline_ratio']:.0f}" + ("" if row["pipeline_ratio"] >= PIPELINE_TARGET else " (< 4)"),
                 f"{serving['saved_model']['median_ms']:.0f}" if "saved_model" in serving else "-",
                 f"{serving['tflite_float32']['median_ms']:.0f}" if "tflite_float32" in serving else "-",
                 f"{row['frozen']['peak_rss_mib']:.0f} / {row['peak_rss_mib']:.0f}"]
        table.append("| " + " | ".join(cells) + " |")
    for line in table:
        log(line)
    log(f"fp32 matmul at the end of the run: {closing['gflops_per_second']:.0f} GFLOP/s; ratios use "
        f"{ceiling:.0f}. GFLOP/s = profiler FLOPs / best forward time; forward ms is the median of {runs}; "
        "frozen = inference.freeze (the weights as snapshots where TensorFlow runs on oneDNN, else constants), timed "
        "in a process of its own.")
    _log_default_paths(rows, ceiling, runs, peer, log)
    if op_profile:
        for row in rows:
            if row["target"] is not None and not _meets_target(row):
                row["op_profile"] = in_fresh_process("measure_op_profile", row["model"], size)
        _log_bounds(rows, ceiling, log)
    multitask = None
    if multitask_size:
        multitask = in_fresh_process("measure_multitask", "multitask_mobilenetv2_official", *multitask_size, 40, runs)
        _log_multitask(multitask, ceiling, log)
    soak = None
    if soak_images:
        soak = in_fresh_process("measure_soak", soak_model, soak_images)
        log(f"\nSoak: {soak_images} random-size images predicted one by one in one process.")
        log("| model | images | sides | traces | RSS first image MiB | RSS half-way MiB | RSS end MiB | "
            "peak RSS after first image MiB | peak RSS at end MiB | seconds |")
        log("|---|---|---|---|---|---|---|---|---|---|")
        log(soak["line"])
    return {"matmul": [matmul, closing], "pipeline": pipeline, "rows": rows, "accelerate": bool(accelerate),
            "multitask": multitask, "soak": soak}


def _meets_target(row):
    """Whether a float32 row meets its target through the frozen graph, the default predict path and the
    SavedModel (those measured)."""
    ratios = [row["frozen"]["matmul_ratio"], row.get("predict", {}).get("matmul_ratio"),
              row["serving"].get("saved_model", {}).get("matmul_ratio")]
    return all(ratio >= row["target"] for ratio in ratios if ratio is not None)


def _log_default_paths(rows, ceiling, runs, peer, log):
    """The second and third tables of :func:`run_benchmark` (see there)."""
    rows = [row for row in rows if "predict" in row]
    if not rows:
        return
    log("\nWhat users run (float32): the default predict path (inference.predict, one image after another) and the "
        "SavedModel in a fresh process, as ratios to the fp32 matmul rate; peak RSS of the default path and of the "
        "Keras path (freeze=False)" + ("; the official PyTorch code of the same structure (random weights, same "
                                        "work: preprocessing, network, resize, softmax, argmax)." if peer else "."))
    header = ["model", "predict ms (default)", "x fp32 matmul (predict / SavedModel)", "target",
              "peak RSS MiB (predict default / Keras)"] + (["PyTorch ms", "our speed x PyTorch"] if peer else [])
    log("| " + " | ".join(header) + " |")
    log("|" + "---|" * len(header))
    for row in rows:
        flops = row["gflops"] * 1e9
        predict = row["predict"]
        predict["matmul_ratio"] = flops / (predict["best_latency_ms"] / 1000) / 1e9 / ceiling
        saved = row["serving"].get("saved_model")
        if saved:
            saved["matmul_ratio"] = flops / (saved["min_ms"] / 1000) / 1e9 / ceiling
        target = TARGETS.get(row["model"])
        verdict = "-"
        if target is not None:
            verdict = f"{target:.2f}: predict {'met' if predict['matmul_ratio'] >= target else 'NOT met'}"
            if saved:
                verdict += f", SavedModel {'met' if saved['matmul_ratio'] >= target else 'NOT met'}"
        cells = [row["model"], f"{predict['latency_ms']:.0f}" + ("" if predict["frozen"] else " (not frozen)"),
                 f"{predict['matmul_ratio']:.2f} / " + (f"{saved['matmul_ratio']:.2f}" if saved else "-"), verdict,
                 f"{predict['peak_rss_mib']:.0f} / {row['predict_keras']['peak_rss_mib']:.0f}"]
        if peer:
            other = row.get("peer")
            row["peer_speedup"] = other and other["best_latency_ms"] / predict["best_latency_ms"]
            cells += [f"{other['latency_ms']:.0f}" if other else "-",
                      f"{row['peer_speedup']:.2f}" if other else "-"]
        log("| " + " | ".join(cells) + " |")
    log(f"Ratios: profiler FLOPs of the network / best of {runs} calls (the resize and softmax to the input size "
        "are not counted) / the matmul rate; our speed x PyTorch = its best time / ours.")
    for row in rows:
        if "agreement_error" in row:
            log(f"({row['model']}: the agreement measurement failed: {row['agreement_error']})")
    agreeing = [row for row in rows if "agreement" in row]
    if agreeing:
        log(f"\nFaster precisions: latency and labels equal to float32's (share of pixels over "
            f"{agreeing[0]['agreement']['images']} image(s), same random weights).")
        log("| model | float32 ms | mixed_bfloat16 ms | agree | TFLite int8 ms | agree |")
        log("|---|---|---|---|---|---|")
        for row in agreeing:
            result = row["agreement"]
            log(f"| {row['model']} | {result['float32']['latency_ms']:.0f} | "
                f"{result['mixed_bfloat16']['latency_ms']:.0f} | {100 * result['mixed_bfloat16']['agreement']:.2f} % | "
                f"{result['tflite_int8']['latency_ms']:.0f} | {100 * result['tflite_int8']['agreement']:.2f} % |")


def measure_soak(model_name="lw_mobilenetv2", num_images=300, min_side=64, max_side=640):
    """:func:`run_soak` on a preset (random weights, 21 classes), in this process; returns its report and
    the table line."""
    lines = []
    report = run_soak(_build(model_name), num_images, min_side, max_side, log=lines.append)
    report.pop("sizes")
    return dict(report, model=model_name, line=lines[0])


def run_training_benchmarks(model_names, sizes, batch_size=1, steps=3, jit_options=(False, True), log=print):
    """Runs :func:`measure_training` for every combination, each in a fresh process; returns the rows."""
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


def measure_served(fmt, path, size, runs=10, warmup=2):
    """Times one exported model as a serving process runs it, in this process: the first call, then ``runs``
    calls after ``warmup`` more, on a uint8 ``[1, size, size, 3]`` image (labels and probabilities out).

    ``fmt``: ``"keras"`` (a ``.keras`` file, run through the SavedModel's serving function), ``"saved_model"``,
    ``"tflite_*"`` or ``"onnx"``. It imports only what the format needs: the SavedModel, TFLite and ONNX rows
    import no Keras and no TensorFlow-dependent part of refinenet_tf. Returns a dict: ``median_ms``, ``min_ms``,
    ``first_ms``, ``peak_rss_mib``, ``file_mib``.
    """
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3)).astype(np.uint8)
    if fmt == "keras":
        import tensorflow as tf

        from refinenet_tf import export, saving

        serving = export._Serving(saving.load_model(path, compile=False))  # what the SavedModel signature runs
        run = tf.function(serving.outputs, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        call = lambda: run(tf.constant(image))["probabilities"].numpy()  # noqa: E731
    elif fmt == "saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(path).signatures["serving_default"]
        call = lambda: serve(images=tf.constant(image))["probabilities"].numpy()  # noqa: E731
    elif fmt.startswith("tflite"):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner("serving_default")
        call = lambda: runner(images=image)["probabilities"]  # noqa: E731
    elif fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        call = lambda: session.run(["probabilities"], {"images": image})[0]  # noqa: E731
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {options.INFERENCE_FORMATS}")
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    best, median = _best_seconds(call, runs, warmup)
    if os.path.isdir(path):
        size_bytes = sum(os.path.getsize(os.path.join(top, name)) for top, _, names in os.walk(path) for name in names)
    else:
        size_bytes = os.path.getsize(path)
    return {"median_ms": 1000 * median, "min_ms": 1000 * best, "first_ms": 1000 * first, "peak_rss_mib": _rss_mib("VmHWM"),
            "file_mib": size_bytes / 2**20}


def run_inference_benchmark(model_name="lw_resnet50", size=512, runs=10, warmup=2, formats=None, workdir=None,
                            log=print):
    """Latency of one model served four ways: in-process Keras, SavedModel, TFLite (float32, float16, int8) and,
    when ``tf2onnx`` and ``onnxruntime`` are installed, ONNX Runtime.

    ``model_name``: a preset (built with random weights and 21 classes), a keras model, or anything
    :func:`refinenet_tf.runs.load_inference_model` takes (a training run folder, a ``.keras`` file, a
    SavedModel written by ``model.save``), so that a trained model is timed as it is.
    All formats compute the same thing: uint8 ``[1, size, size, 3]`` -> labels and probabilities at the input
    size. The model is exported once into ``workdir`` (a temporary folder by default); each format is then timed
    in a fresh process: the first call, then the median over ``runs`` calls after ``warmup`` more. Returns the
    rows.
    """
    import shutil
    import tempfile

    from refinenet_tf import export, models
    from refinenet_tf.runs import load_inference_model  # (``runs`` is this function's count of calls)

    formats = list(formats or options.INFERENCE_FORMATS)
    if not isinstance(model_name, str):
        model, model_name = model_name, model_name.name
    elif model_name in models.PRESETS:
        model = _build(model_name)
    else:
        model = load_inference_model(model_name)
    folder = workdir or tempfile.mkdtemp(prefix="refinenet_tf-bench-")
    try:
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
            row = dict(in_fresh_process("measure_served", fmt, path, size, runs, warmup), format=fmt,
                       model=model_name, size=size)
            reference = reference or row["median_ms"]
            row["vs_keras"] = row["median_ms"] / reference
            rows.append(row)
            log(f"| {model_name} | {size}x{size} | {fmt} | {row['median_ms']:.0f} | {row['min_ms']:.0f} | "
                f"{row['vs_keras']:.2f} | {row['first_ms']:.0f} | {row['file_mib']:.1f} | {row['peak_rss_mib']:.0f} |")
        return rows
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


def run_soak(model, num_images=300, min_side=64, max_side=640, seed=0, log=print):
    """Predicts ``num_images`` random images of random sizes, one by one, in this process, and reports memory.

    A serving loop must neither retrace per image size (each trace keeps a graph) nor hold on to earlier
    results. Returns a dict: ``images``, ``sizes`` (``(height, width)`` per image), ``traces`` (of the
    prediction function), resident memory after the first image (``rss_start_mib``), after half
    (``rss_half_mib``) and at the end (``rss_end_mib``), the process's peak at those three points
    (``peak_rss_start_mib``, ``peak_rss_half_mib``, ``peak_rss_mib``) and ``seconds``.
    """
    import numpy as np

    from refinenet_tf import inference

    rng = np.random.default_rng(seed)
    sizes = [tuple(int(v) for v in rng.integers(min_side, max_side + 1, 2)) for _ in range(num_images)]
    report = {"images": num_images, "sizes": sizes}
    start = time.perf_counter()
    for index, (height, width) in enumerate(sizes):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        labels = inference.predict(model, image)
        assert labels.shape == (height, width)
        if index == 0:
            report["rss_start_mib"], report["peak_rss_start_mib"] = _rss_mib(), _rss_mib("VmHWM")
        if index == num_images // 2:
            report["rss_half_mib"], report["peak_rss_half_mib"] = _rss_mib(), _rss_mib("VmHWM")
    report["seconds"] = time.perf_counter() - start
    report["rss_end_mib"] = _rss_mib()
    report["peak_rss_mib"] = _rss_mib("VmHWM")
    report["traces"] = inference._segment_function(model, (1.0,), False, None).experimental_get_tracing_count()
    if log:
        log(f"| {model.name} | {num_images} | {min_side}-{max_side} | {report['traces']} | "
            f"{report['rss_start_mib']:.0f} | {report['rss_half_mib']:.0f} | {report['rss_end_mib']:.0f} | "
            f"{report['peak_rss_start_mib']:.0f} | {report['peak_rss_mib']:.0f} | {report['seconds']:.0f} |")
    return report


def measure_multitask(model_name="multitask_mobilenetv2_official", height=480, width=640, num_classes=40, runs=5,
                      warmup=2):
    """The multi-task model's row, in this process: inference GFLOPs at ``height x width`` (counted by
    :func:`refinenet_tf.profiling.count_flops`, a multiply-add = 2 FLOPs) next to the paper's figure, and the
    CPU latency of one forward pass (batch 1, float32, median and best of ``runs`` after ``warmup``) as a Keras
    model and frozen (:func:`refinenet_tf.inference.freeze`, what the default predict path runs for many images).

    The paper (Nekrasov et al., ICRA 2019) quotes 6.5 GFLOPs at 640 x 480 for the model; its counting convention
    is not stated, so both FLOPs and multiply-adds (GMACs = GFLOPs / 2) are reported.
    ``python -m refinenet_tf.benchmarks measure_multitask '[]'`` prints the JSON row.
    """
    import tensorflow as tf

    from refinenet_tf import inference, models, profiling

    preset = models.get(model_name)
    model = preset.build(num_classes=num_classes, backbone_weights=None)
    flops = profiling.count_flops(model, height, width)
    forward = tf.function(lambda images: model(images, training=False))
    images = tf.random.uniform([1, height, width, 3], 0, 255)
    best, median = _best_seconds(lambda: {k: v.numpy() for k, v in forward(images).items()}, runs, warmup)
    frozen = inference.freeze(model)
    frozen_best, frozen_median = _best_seconds(lambda: {k: v.numpy() for k, v in frozen(images).items()}, runs,
                                               warmup)
    return {"model": model_name, "size": f"{width}x{height}", "num_classes": num_classes,
            "trainable_parameters": profiling.count_parameters(model)[1], "gflops": flops / 1e9,
            "gmacs": flops / 2e9, "published_gflops": preset.published.get("gflops_640x480"),
            "latency_ms": 1000 * median, "best_latency_ms": 1000 * best,
            "frozen_latency_ms": 1000 * frozen_median, "frozen_best_latency_ms": 1000 * frozen_best,
            "peak_rss_mib": _rss_mib("VmHWM")}


def _traced_run(function, images, repeats):
    """Best wall time of a frozen ``function`` run in a v1 session that runs one op at a time, and per op type
    the summed kernel microseconds and count of one fully traced run."""
    import collections

    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(function.graph.as_graph_def(), name="")
    feed = {function.inputs[0].name: images}
    fetch = function.outputs[0].name
    # one op at a time (each op still uses every core): kernel times then add up to the wall time instead of
    # overlapping, so their shares and the convolutions' rate mean what they say
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=1)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        best, _ = _best_seconds(lambda: session.run(fetch, feed), repeats, warmup=1)
        metadata = tf.compat.v1.RunMetadata()
        session.run(fetch, feed, options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE),
                    run_metadata=metadata)
    micros, counts = collections.Counter(), collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op = label.split(" = ")[1].split("(")[0] if " = " in label else node.node_name
            micros[op] += node.op_end_rel_micros - node.op_start_rel_micros
            counts[op] += 1
    return best, micros, counts


def measure_op_profile(model_name, size=512, repeats=3, top=6):
    """Where the frozen forward pass of a preset spends its time, in this process: batch 1 at ``size``, random
    weights, 21 classes, float32, run in a TensorFlow session with a full trace.

    Ops run one at a time (``inter_op_parallelism_threads=1``; each op still uses every core), so kernel times
    do not overlap. Returns the profiler FLOPs (all and of the convolutions), the best wall time, the summed
    kernel time, and the convolutions' kernel time and rate (their FLOPs / their summed time); that rate bounds
    the whole forward pass, which cannot beat its convolutions even with every other op free. ``ops``: the ``top`` op types by
    kernel time (ms, count, share). ``python -m refinenet_tf.benchmarks measure_op_profile '["lw_resnet50"]'``.
    """
    import numpy as np

    from refinenet_tf import inference, profiling

    model = _build(model_name)
    by_op = profiling.flops_by_op(model, size, size)
    flops = sum(by_op.values())
    conv_flops = sum(value for op, value in by_op.items() if "Conv2D" in op)
    images = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    # with constant weights: a session runs a graph that captures no variables. Its convolutions carry each
    # BatchNorm folded into a bias; the default path's snapshots fuse the BatchNorm as post-ops instead
    # (docs/benchmarks.md), so this profiles the constants' graph, not theirs
    frozen = inference.freeze(model, batch_shape=images.shape, weights_as="constants")
    best, micros, counts = _traced_run(frozen.function, images, repeats)
    total = sum(micros.values())
    conv_micros = sum(value for op, value in micros.items() if "Conv2D" in op)
    return {"model": model_name, "size": size, "gflops": flops / 1e9, "conv_gflops": conv_flops / 1e9,
            "best_ms": 1000 * best, "kernel_ms": total / 1000, "conv_ms": conv_micros / 1000,
            "conv_share": conv_micros / total if total else 0.0,
            "conv_gflops_per_second": conv_flops / conv_micros / 1e3 if conv_micros else 0.0,
            "ops": [{"op": op, "ms": value / 1000, "count": counts[op], "share": value / total}
                    for op, value in micros.most_common(top)]}


def _log_bounds(rows, ceiling, log):
    """For each row that misses its target: what bounds it (:func:`measure_op_profile`)."""
    for row in rows:
        profile = row.get("op_profile")
        if not profile:
            continue
        conv_ratio = profile["conv_gflops_per_second"] / ceiling
        # every other op free: the forward pass would take the convolutions' time and do all its FLOPs in it
        bound = profile["gflops"] / (profile["conv_ms"] / 1000) / ceiling if profile["conv_ms"] else float("nan")
        row["bound_ratio"] = bound
        ops = ", ".join(f"{op['op']} {100 * op['share']:.0f} %" for op in profile["ops"])
        paths = [("frozen graph", row["frozen"].get("matmul_ratio")),
                 ("default predict", row.get("predict", {}).get("matmul_ratio")),
                 ("SavedModel", row["serving"].get("saved_model", {}).get("matmul_ratio"))]
        measured = "; ".join(f"{name} {ratio:.2f} x" for name, ratio in paths if ratio is not None)
        log(f"What bounds {row['model']} (target {row['target']:.2f} x the fp32 matmul): in its frozen graph "
            f"with constant weights (the SavedModel's) the convolutions take {100 * profile['conv_share']:.0f} % "
            f"of the kernel time and run at {profile['conv_gflops_per_second']:.0f} GFLOP/s = {conv_ratio:.2f} x "
            f"the matmul rate, so even with every other op free the forward pass would reach {bound:.2f} x "
            f"(measured: {measured}). Kernel time by op, one op at a time: {ops} "
            f"(python -m refinenet_tf.benchmarks measure_op_profile '[\"{row['model']}\"]').")


def _log_multitask(row, ceiling, log):
    """The multi-task row of :func:`run_benchmark`: compute next to the paper's, latency, ratio to the matmul."""
    row["matmul_ratio"] = row["gflops"] / (row["best_latency_ms"] / 1000) / ceiling
    row["frozen_matmul_ratio"] = row["gflops"] / (row["frozen_best_latency_ms"] / 1000) / ceiling
    log(f"\nJoint segmentation and depth ({row['size']}, {row['num_classes']} classes, batch 1, float32, random "
        "weights): the paper's compute next to ours (it does not say whether it counts multiply-adds or FLOPs).")
    log("| model | parameters | GFLOPs (G multiply-adds) | paper | forward ms (Keras / frozen) | "
        "x fp32 matmul (Keras / frozen) |")
    log("|---|---|---|---|---|---|")
    published = row["published_gflops"]
    log(f"| {row['model']} | {row['trainable_parameters']:,} | {row['gflops']:.2f} ({row['gmacs']:.2f}) | "
        f"{published if published is not None else '-'} | {row['latency_ms']:.0f} / {row['frozen_latency_ms']:.0f} | "
        f"{row['matmul_ratio']:.2f} / {row['frozen_matmul_ratio']:.2f} |")


def _main(argv):
    """``python -m refinenet_tf.benchmarks FUNCTION JSON_ARGUMENTS``: prints the function's JSON result (see
    :func:`in_fresh_process`)."""
    function, arguments = argv
    if function not in __all__ or not function.startswith("measure_"):
        raise SystemExit(f"unknown measurement {function!r}; use one of "
                         f"{[name for name in __all__ if name.startswith('measure_')]}")
    print(json.dumps(globals()[function](*json.loads(arguments))))


if __name__ == "__main__":
    _main(sys.argv[1:])
