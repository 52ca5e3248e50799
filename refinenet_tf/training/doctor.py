"""``refinenet-tf doctor``: what this machine offers for training, and a short training run that proves it.

:func:`environment_report` lists the devices, whether XLA compiles on each, whether float16 and bfloat16 run
there, and the versions. :func:`measure_training_steps` trains a few steps on generated scenes and reports
images per second, how many times the train function was traced and the loss of the first and last steps.
Nothing here assumes a CPU or a GPU: it measures what it finds.
"""

import platform
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import models
from refinenet_tf.training import recipes
from refinenet_tf.training.compiling import (compile_model, mixed_precision_policy, resolve_jit_compile,
                                             xla_train_step_function)
from refinenet_tf.training.loop import make_strategy

__all__ = ["environment_report", "measure_training_steps", "run_doctor"]


def _runs_on(device, function):
    """``"yes"`` when ``function()`` runs on ``device`` and gives finite numbers, else the error's first line."""
    try:
        with tf.device(device):
            result = function()
        return "yes" if bool(tf.reduce_all(tf.math.is_finite(tf.cast(result, tf.float32)))) else "non-finite result"
    except (tf.errors.OpError, RuntimeError, ValueError) as error:
        return f"no ({str(error).strip().splitlines()[0][:80]})"


def _precision_probe(dtype):
    """A convolution and a matrix product in ``dtype`` (what a mixed-precision step runs most)."""
    def probe():
        images = tf.cast(tf.random.stateless_uniform([1, 8, 8, 4], seed=[0, 1]), dtype)
        kernel = tf.cast(tf.random.stateless_uniform([3, 3, 4, 4], seed=[0, 2]), dtype)
        features = tf.nn.conv2d(images, kernel, 1, "SAME")
        return tf.matmul(tf.reshape(features, [8, 32]), tf.reshape(features, [32, 8]))
    return probe


def _xla_probe():
    return tf.function(lambda x: tf.reduce_sum(tf.nn.relu(x * 2.0 - 1.0)), jit_compile=True)(tf.ones([4, 4]))


def _fast_precisions(device):
    """Where the device says so: its compute capability (GPU) or CPU flags (Linux), the precisions it runs fast."""
    if device.device_type == "GPU":
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        if not capability:
            return "compute capability unknown"
        fast = [name for name, needed in (("float16", (7, 0)), ("bfloat16", (8, 0))) if tuple(capability) >= needed]
        return (f"{details.get('device_name', 'GPU')}, compute capability {capability[0]}.{capability[1]}: fast "
                f"{', '.join(fast) or 'float32 only'}")
    try:
        with open("/proc/cpuinfo") as stream:
            flags = set(next((line for line in stream if line.startswith("flags")), "").split())
    except OSError:
        return "CPU flags unknown"
    native = sorted(flags & {"avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16"})
    return f"native low-precision instructions: {', '.join(native) or 'none'} (otherwise emulated, slower)"


def environment_report():
    """The devices, XLA, float16 / bfloat16 and versions of this machine, as a dict of printable values.

    Example:
        >>> report = environment_report()
        >>> sorted(report)
        ['built_with_cuda', 'devices', 'python', 'tensorflow', 'tf_keras']
        >>> report["devices"][0]["type"], report["devices"][0]["xla"]
        ('CPU', 'yes')
    """
    build = tf.sysconfig.get_build_info()
    devices = []
    for device in tf.config.list_physical_devices():
        if device.device_type not in ("CPU", "GPU", "TPU"):
            continue
        name = device.name.replace("physical_device:", "")
        devices.append({"name": name, "type": device.device_type, "xla": _runs_on(name, _xla_probe),
                        "float16": _runs_on(name, _precision_probe(tf.float16)),
                        "bfloat16": _runs_on(name, _precision_probe(tf.bfloat16)),
                        "details": _fast_precisions(device)})
    cuda = (f"yes (CUDA {build.get('cuda_version')}, cuDNN {build.get('cudnn_version')})"
            if build.get("is_cuda_build") else "no")
    return {"tensorflow": tf.__version__, "tf_keras": keras.__version__, "python": platform.python_version(),
            "built_with_cuda": cuda, "devices": devices}


class _StepRecord(keras.callbacks.Callback):
    """When each training batch ended, and its loss.

    Keras logs the mean loss of the epoch so far; with equal batches step ``k``'s own loss is
    ``k * mean_k - (k - 1) * mean_(k-1)``.
    """

    def __init__(self):
        super().__init__()
        self.times, self.losses, self._total = [], [], 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())
        total = (batch + 1) * float(logs["loss"])
        self.losses.append(total - self._total)
        self._total = total


def _generated_scenes(count, height, width, seed):
    from refinenet_tf.data import synthetic

    rng = np.random.default_rng(seed)
    scenes = [synthetic.render_scene(rng, height, width) for _ in range(count)]
    return (np.stack([image for image, _ in scenes]).astype(np.float32),
            np.stack([mask for _, mask in scenes]).astype(np.int32))


def _doctor_recipe(model_name, learning_rate):
    return recipes.Recipe("doctor", model_name, "refinenet-tf doctor: a short run on generated scenes",
                          optimizer="adam", learning_rate=learning_rate)


def measure_training_steps(model="lw_mobilenetv2", size=128, batch_size=4, steps=20, jit_compile="auto",
                           mixed_precision=False, strategy="default", learning_rate=1e-3, seed=0, **model_kwargs):
    """Trains ``model`` (a preset, random weights) ``steps`` steps on generated scenes and measures the run.

    The scenes (:func:`refinenet_tf.data.synthetic.render_scene`, 4 classes) are ``2 * batch_size`` images of
    ``size`` x ``size``, cycled. Compiled by :func:`refinenet_tf.training.compile_model` (XLA train step when
    ``jit_compile``) under ``mixed_precision``'s policy (:func:`mixed_precision_policy`) and ``strategy``
    (:func:`refinenet_tf.training.make_strategy`; ``batch_size`` is per replica).

    Returns:
        A dict: ``images_per_second`` (the steps after the first, which traces and compiles), ``traces`` (how many
        times Keras traced its train function; 1 is right), ``xla_traces`` (of the XLA train step, None without
        XLA), ``loss_before`` and ``loss_after`` (the first and the last step's training loss), the ``policy``,
        ``jit_compile`` as resolved, ``replicas`` and ``seconds`` (the whole ``fit``, compiles included).
    """
    if steps < 2:
        raise ValueError(f"steps={steps}: need 2 or more (the first one traces and compiles; the rest are timed).")
    jit = resolve_jit_compile(jit_compile)
    policy = mixed_precision_policy(mixed_precision)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        distribution = make_strategy(strategy)
        global_batch = batch_size * distribution.num_replicas_in_sync
        images, masks = _generated_scenes(2 * global_batch, size, size, seed)
        with distribution.scope():
            network = models.build(model, num_classes=4, backbone_weights=None, **model_kwargs)
            compile_model(network, _doctor_recipe(model, learning_rate), 4, jit_compile=jit)
        dataset = tf.data.Dataset.from_tensor_slices((images, masks)).batch(global_batch).repeat()
        timer = _StepRecord()
        start = time.perf_counter()
        network.fit(dataset, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
        seconds = time.perf_counter() - start
        xla_function = xla_train_step_function(network)
        return {"model": model, "size": size, "batch_size": global_batch, "steps": steps, "policy": policy,
                "jit_compile": jit, "replicas": distribution.num_replicas_in_sync,
                "images_per_second": global_batch * (steps - 1) / (timer.times[-1] - timer.times[0]),
                "traces": network.train_function.experimental_get_tracing_count(),
                "xla_traces": None if xla_function is None else xla_function.experimental_get_tracing_count(),
                "loss_before": timer.losses[0], "loss_after": timer.losses[-1], "seconds": seconds}
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def run_doctor(model="lw_mobilenetv2", size=128, batch_size=4, steps=20, jit_compile="auto", mixed_precision=False,
               strategy="default", log=print):
    """Prints :func:`environment_report` and a :func:`measure_training_steps` run; returns both as a dict."""
    report = environment_report()
    log(f"TensorFlow {report['tensorflow']}, tf-keras {report['tf_keras']}, Python {report['python']}; "
        f"built with CUDA: {report['built_with_cuda']}")
    for device in report["devices"]:
        log(f"device {device['name']} ({device['type']}): XLA {device['xla']}; float16 {device['float16']}; "
            f"bfloat16 {device['bfloat16']}; {device['details']}")
    if not any(device["type"] == "GPU" for device in report["devices"]):
        log("no GPU visible: jit_compile='auto' leaves XLA off and mixed precision means mixed_bfloat16")
    log(f"training {model} {steps} steps on generated {size}x{size} scenes, batch {batch_size} per replica ...")
    run = measure_training_steps(model, size=size, batch_size=batch_size, steps=steps, jit_compile=jit_compile,
                                 mixed_precision=mixed_precision, strategy=strategy)
    log(f"policy {run['policy']}, XLA train step {run['jit_compile']}, {run['replicas']} replica(s)")
    log(f"images/s: {run['images_per_second']:.2f} (steps 2-{steps}); fit took {run['seconds']:.1f} s with "
        "tracing and compiling")
    xla = "" if run["xla_traces"] is None else f", XLA train step traced {run['xla_traces']} time(s)"
    log(f"train function traced {run['traces']} time(s){xla}")
    verdict = "decreased" if run["loss_after"] < run["loss_before"] else "did NOT decrease"
    log(f"loss at step 1 {run['loss_before']:.4f}, at step {steps} {run['loss_after']:.4f}: {verdict}")
    return {"environment": report, "training": run}
