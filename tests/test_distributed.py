"""The recipes' optimizer updates do not depend on the number of replicas or on the precision: weight decay 5e-4
and a decoder learning-rate multiplier of 10, trained for 5 steps with ``MirroredStrategy`` on two logical CPUs,
under ``mixed_bfloat16`` and with two ``MultiWorkerMirroredStrategy`` workers on the loopback address, end with
the weights (and their moving averages) of the same steps on one device.

TensorFlow must be told to split the CPU before it initialises its devices, so each run happens in a fresh
interpreter: this module is also the script (``python -m tests.test_distributed MODE OUT``) that trains there.
One process trains every single-device and mirrored run; the multi-worker workers start from its initial weights
and are compared with its single-device SGD run.

The same processes also train the plain case (moved here from tests/test_training.py, to share their TensorFlow
start-up): a model compiled with plain SGD and no recipe extras, fitted for 3 epochs on one device and with
``MirroredStrategy`` (the weights must agree), and by the two ``MultiWorkerMirroredStrategy`` workers, each from
its own identically seeded initial weights (their losses and weights must agree, and the loss must go down).
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The largest relative difference allowed: ``max |a - b| / max |b|`` over all the trainable weights.
TOLERANCE = 1e-5
STEPS = 5
GLOBAL_BATCH = 4
DECAY, MULTIPLIER = 5e-4, 10.0
#: (optimizer, precision policy) pairs trained on two replicas and on one device; mixed_float16 adds the
#: LossScaleOptimizer, which sums the replicas' gradients before the inner optimizer sees them.
RUNS = [("sgd", "float32"), ("adam", "float32"), ("adamw", "mixed_bfloat16"), ("sgd", "mixed_float16")]


def _recipe(optimizer):
    from refinenet_tf.training import recipes

    learning_rate = 0.01 if optimizer == "sgd" else 1e-3
    return recipes.Recipe(f"distributed_{optimizer}", "lw_resnet50", "tests/test_distributed.py",
                          optimizer=optimizer, learning_rate=learning_rate, decoder_lr_multiplier=MULTIPLIER,
                          weight_decay=DECAY if optimizer != "adamw" else 0.0,
                          decoupled_weight_decay=DECAY if optimizer == "adamw" else 0.0,
                          freeze_batch_norm=True, use_ema=True, ema_momentum=0.5)


def _tiny_model(initial):
    """The tiny Light-Weight RefineNet (3 classes, decoder 8 wide, no dropout), built in the current strategy's
    scope; every run starts from the very same weights: those in ``initial`` (``.npz``), written by the first."""
    import refinenet_tf
    from tests import conftest  # registers the tiny backbone

    model = refinenet_tf.models.build("lw_resnet50", num_classes=3, backbone_weights=None,
                                      backbone=conftest.TINY_BACKBONE, decoder_features=8, dropout=0)
    if os.path.exists(initial):
        with np.load(initial) as stored:
            model.set_weights([stored[f"arr_{i}"] for i in range(len(stored.files))])
    else:
        np.savez(initial, *model.get_weights())
    return model


def _train(strategy, recipe, initial, policy="float32", halves=False):
    """``STEPS`` steps of a tiny Light-Weight RefineNet (BatchNorm frozen, so that per-replica batches normalise
    alike) on a fixed batch of ``GLOBAL_BATCH``, compiled by ``compile_model`` for ``recipe``; returns the trainable
    weights ``before`` and after (``weights``) and their moving ``averages``, each flattened.

    ``fit`` trains, unless ``halves``: then each step sums the gradients of the batch's two halves, each of half
    its loss, as two replicas compute them, and gives the sum to the optimizer (on one device, two replicas'
    sum of float32 gradients is the same sum; ``fit`` on the whole batch would round differently under
    ``mixed_bfloat16``, by far more than a decay counted twice, and Adam magnifies float32 rounding of gradients
    near 0). These reference runs build the optimizer's variables first, so that ``step`` is traced once (its
    first call would otherwise trace it twice, once only to create them); ``fit``, the code under test, builds
    them lazily as training does.
    """
    import tensorflow as tf
    import tf_keras as keras

    from refinenet_tf import training

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = _tiny_model(initial)
        training.compile_model(model, recipe, 3, steps_per_epoch=1, epochs=STEPS, jit_compile=False)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (GLOBAL_BATCH, 32, 32, 3)).astype(np.float32)
    masks = rng.integers(0, 3, (GLOBAL_BATCH, 32, 32)).astype(np.int32)
    flat = lambda variables: np.concatenate([v.numpy().ravel() for v in variables])  # noqa: E731
    result = {"before": flat(model.trainable_weights)}

    class _Record(keras.callbacks.Callback):
        def __init__(self, model):
            super().__init__()
            self.trained = model

        def on_epoch_end(self, epoch, logs=None):  # the raw weights (fit ends with the averages in the model)
            result["weights"] = flat(self.trained.trainable_weights)
            result["averages"] = flat(average for _, average in training.optimizers.weight_averages(self.trained))

    if not halves:
        model.fit(images, masks, batch_size=GLOBAL_BATCH, epochs=STEPS, verbose=0, shuffle=False,
                  callbacks=[_Record(model)])
    else:
        half, images, masks = GLOBAL_BATCH // 2, tf.constant(images), tf.constant(masks)
        scaling = isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)  # mixed_float16

        @tf.function
        def step():
            summed = None
            for part in (slice(0, half), slice(half, None)):
                with tf.GradientTape() as tape:
                    outputs = model(images[part], training=True)
                    loss = model.compute_loss(images[part], masks[part], outputs) / 2
                    if scaling:
                        loss = model.optimizer.get_scaled_loss(loss)
                gradients = tape.gradient(loss, model.trainable_variables)
                if scaling:
                    gradients = model.optimizer.get_unscaled_gradients(gradients)
                summed = gradients if summed is None else [a + b for a, b in zip(summed, gradients)]
            model.optimizer.apply_gradients(zip(summed, model.trainable_variables))

        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
        for _ in range(STEPS):
            step()
        _Record(model).on_epoch_end(STEPS - 1)
    keras.mixed_precision.set_global_policy("float32")
    return result


def _fit_plain(strategy, initial, out):
    """The plain case: the tiny Light-Weight RefineNet (BatchNorm frozen: replicas would otherwise normalise with
    their own batches) compiled for SGD at 0.05, fitted for 3 epochs on a fixed batch of 4 under ``strategy``;
    saves its trainable weights (flattened) and per-epoch losses to ``out``. Every run starts from ``initial``
    (written by the first)."""
    import tensorflow as tf  # noqa: F401 (TensorFlow first, as in every run)
    import tf_keras as keras

    from refinenet_tf import training
    from refinenet_tf.training import recipes

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = _tiny_model(initial)
        training.freeze_batch_norm(model)
        recipe = recipes.Recipe("t", "lw_resnet50", "", optimizer="sgd", learning_rate=0.05)
        training.compile_model(model, recipe, 3, jit_compile=False)
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    masks = rng.integers(0, 3, (4, 32, 32)).astype(np.int32)
    before = np.concatenate([w.numpy().ravel() for w in model.trainable_weights])
    history = model.fit(images, masks, batch_size=4, epochs=3, verbose=0, shuffle=False)
    after = np.concatenate([w.numpy().ravel() for w in model.trainable_weights])
    assert np.abs(after - before).max() > 1e-4, "training did not move the weights"
    np.savez(out, weights=after, losses=np.array(history.history["loss"]))


def _save(out, name, result):
    np.savez(os.path.join(out, f"{name}.npz"), **result)


def _main(mode, out):
    import tensorflow as tf

    from refinenet_tf import training

    initial = os.path.join(out, "initial.npz")
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        # the plain case: the default (one-device) strategy, then two mirrored replicas
        plain_initial = os.path.join(out, "plain_initial.npz")
        _fit_plain(tf.distribute.get_strategy(), plain_initial, os.path.join(out, "plain_single.npz"))
        plain_mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert plain_mirrored.num_replicas_in_sync == 2
        _fit_plain(plain_mirrored, plain_initial, os.path.join(out, "plain_mirrored.npz"))
        one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert mirrored.num_replicas_in_sync == 2
        _save(out, "sgd_whole_batch", _train(one_device, _recipe("sgd"), initial))  # fit on one device
        for optimizer, policy in RUNS:
            name = f"{optimizer}_{policy}"
            _save(out, f"{name}_single", _train(one_device, _recipe(optimizer), initial, policy, halves=True))
            _save(out, f"{name}_mirrored", _train(mirrored, _recipe(optimizer), initial, policy))
        # what the decay counted once per replica (the bug this guards against) would have given
        twice = dataclasses.replace(_recipe("sgd"), weight_decay=2 * DECAY)
        _save(out, "sgd_twice_the_decay", _train(one_device, twice, initial, halves=True))
    elif mode == "worker":
        strategy = training.make_strategy("multiworker")
        assert strategy.num_replicas_in_sync == 2
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        _save(out, f"sgd_worker{index}", _train(strategy, _recipe("sgd"), initial))
        # the plain case, from this worker's own initial weights (seeded alike in both workers)
        _fit_plain(strategy, os.path.join(out, f"plain_initial_worker{index}.npz"),
                   os.path.join(out, f"plain_worker{index}.npz"))
    else:
        raise ValueError(f"unknown mode {mode!r}; use mirrored or worker.")


def _start(mode, out, tf_config=None):
    environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    environment.update(TF_CPP_MIN_LOG_LEVEL="2", **({"TF_CONFIG": tf_config} if tf_config else {}))
    return subprocess.Popen([sys.executable, "-m", "tests.test_distributed", mode, str(out)], cwd=ROOT,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(processes, timeout):
    """Waits for every process (``timeout`` seconds in all), kills whatever is left, and fails with its stderr when
    one did not succeed."""
    try:
        outputs = [process.communicate(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]


def _relative_difference(actual, expected):
    assert actual.shape == expected.shape and np.isfinite(actual).all() and np.isfinite(expected).all()
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _load(out, name):
    with np.load(os.path.join(out, f"{name}.npz")) as stored:
        return {key: stored[key] for key in stored.files}


def _assert_same_run(out, name, reference):
    actual, expected = _load(out, name), _load(out, reference)
    moved = _relative_difference(expected["weights"], expected["before"])
    assert moved > 100 * TOLERANCE, f"{reference}: training hardly moved the weights ({moved:.2e})"
    for key in ("weights", "averages"):
        difference = _relative_difference(actual[key], expected[key])
        assert difference <= TOLERANCE, f"{name} vs {reference}: {key} differ by {difference:.2e} relative"


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    """The folder of the ``mirrored`` process's results: ``initial.npz`` and every single-device and mirrored run."""
    out = tmp_path_factory.mktemp("distributed")
    _finish([_start("mirrored", out)], timeout=600)
    return out


def test_two_mirrored_replicas_update_as_one_device_in_every_precision(mirrored_runs):
    tmp_path = mirrored_runs
    for optimizer, policy in RUNS:
        _assert_same_run(tmp_path, f"{optimizer}_{policy}_mirrored", f"{optimizer}_{policy}_single")
    # fit on the whole batch on one device too (float32 rounds the same sums differently, by ~1e-7)
    _assert_same_run(tmp_path, "sgd_float32_mirrored", "sgd_whole_batch")
    # the test can tell a decay counted once per replica
    twice = _relative_difference(_load(tmp_path, "sgd_twice_the_decay")["weights"],
                                 _load(tmp_path, "sgd_float32_single")["weights"])
    assert twice > 20 * TOLERANCE, twice


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def worker_runs(mirrored_runs):
    """The folder of ``mirrored_runs`` once two ``MultiWorkerMirroredStrategy`` workers on the loopback address have
    added their runs to it: ``sgd_worker{0,1}.npz`` and the plain case's ``plain_worker{0,1}.npz``."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
            processes.append(_start("worker", mirrored_runs, tf_config))
    finally:
        _finish(processes, timeout=300)
    return mirrored_runs


def test_two_multi_worker_mirrored_workers_update_as_one_device(worker_runs):
    # the workers start from the initial weights of the mirrored process; its single-device SGD run (the float32
    # step of two half-batch gradients summed) is the reference
    for index in range(2):
        _assert_same_run(worker_runs, f"sgd_worker{index}", "sgd_float32_single")


def test_mirrored_strategy_on_two_cpus_matches_one_device(mirrored_runs):
    # the plain case (formerly in tests/test_training.py), trained in the mirrored process
    single, mirrored = (_load(mirrored_runs, name)["weights"] for name in ("plain_single", "plain_mirrored"))
    assert single.size == mirrored.size and np.isfinite(single).all()
    np.testing.assert_allclose(mirrored, single, rtol=1e-4, atol=1e-5)


def test_multi_worker_mirrored_strategy_with_two_local_workers(worker_runs):
    # the plain case (formerly in tests/test_training.py), trained by each worker from its own initial weights
    runs = [_load(worker_runs, f"plain_worker{index}") for index in range(2)]
    losses = [run["losses"].tolist() for run in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and losses[0][-1] < losses[0][0]
    np.testing.assert_allclose(runs[0]["weights"], runs[1]["weights"], rtol=1e-6)


if __name__ == "__main__":
    _main(*sys.argv[1:])
