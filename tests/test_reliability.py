"""Faults and safety: training killed with SIGKILL and resumed, a full disk, pickles and Python code in model or
config files, and an inference loop that neither retraces nor grows over images of many sizes."""

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from refinenet_tf import cli, models, training
from refinenet_tf.models import backbones, saving
from benchmarks import soak
from refinenet_tf.training import runs
from refinenet_tf.data import synthetic
from tests.conftest import TINY_BACKBONE, tiny_demo_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def shapes_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    synthetic.write_shapes_dataset(str(root), num_train=8, num_val=2, height=48, width=48, seed=0)
    return f"voc:{root}"


# ------------------------------------------------------------------------------------ SIGKILL and resume


def trainer_config(run_dir, spec):
    """The run that the test kills twice and then finishes: the demo recipe on the tiny test backbone
    (tests.conftest.tiny_demo_recipe, decoder 16 wide), 3 epochs of 3 steps. What is saved, killed and resumed is
    the same as with the slim decoder, and this model builds and traces in each process in about 5 s instead of
    27 on the 2-core test machine."""
    return training.TrainConfig(recipe=tiny_demo_recipe(16), data=spec, val_data=spec, num_classes=4,
                                run_dir=str(run_dir), epochs=3, steps_per_epoch=3, batch_size=2, crop_size=32,
                                learning_rate=3e-3, backbone_weights=None, verbose=0, seed=0)


# A training run in its own process (the config of trainer_config). It announces the moment named by argv[3] by
# creating the file argv[4] and then waits there, so that the test kills it with SIGKILL at exactly that point:
#   "batch"  -- mid-epoch: the second batch of the second epoch (index 1) of this process's run;
#   "write"  -- halfway through writing last.weights.h5 at the end of that epoch (half the bytes are on disk),
#               whether the weights are saved there or copied from best.weights.h5 (SafeCheckpoint's same_as).
_TRAINER = r"""
import contextlib, os, sys, time
sys.path.insert(0, sys.argv[1])
import tests.conftest  # registers the tiny test backbone
import tf_keras as keras
from refinenet_tf import training
from refinenet_tf.training import callbacks
from tests.test_reliability import trainer_config

run_dir, spec, pause, announce = sys.argv[2], sys.argv[5], sys.argv[3], sys.argv[4]
current = {"epoch": None}

def wait_for_the_kill():
    open(announce, "w").close()
    time.sleep(600)

class PauseMidEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        current["epoch"] = epoch
    def on_train_batch_begin(self, batch, logs=None):
        if pause == "batch" and current["epoch"] == 1 and batch == 1:
            wait_for_the_kill()

if pause == "write":
    atomic_path = callbacks.atomic_path
    @contextlib.contextmanager
    def half_written(path, *args, **kwargs):
        with atomic_path(path, *args, **kwargs) as temporary:
            yield temporary
            if current["epoch"] == 1 and path.endswith("last.weights.h5"):
                with open(temporary, "r+b") as stream:
                    stream.truncate(os.path.getsize(temporary) // 2)
                wait_for_the_kill()
    callbacks.atomic_path = half_written

training.train(trainer_config(run_dir, spec), callbacks=[PauseMidEpoch()])
"""


def _run_trainer_and_kill_it(run_dir, spec, pause, tmp_path):
    """Starts the trainer in its own process and SIGKILLs it at its pause point."""
    announce = str(tmp_path / f"at_{pause}")
    process = subprocess.Popen([sys.executable, "-c", _TRAINER, ROOT, str(run_dir), pause, announce, spec],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    deadline = time.time() + 600
    while not os.path.exists(announce):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "the trainer never reached its pause point"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def _weights_load(path):
    model = models.build("lw_mobilenetv2", num_classes=4, backbone_weights=None, backbone=TINY_BACKBONE,
                         decoder_features=16)
    model.load_weights(str(path))
    return all(np.isfinite(w.numpy()).all() for w in model.weights)


def test_training_killed_twice_with_sigkill_resumes_and_loses_nothing(shapes_spec, tmp_path):
    run_dir = tmp_path / "run"
    # Kill 1: in the middle of the second epoch. The backup holds the first epoch.
    _run_trainer_and_kill_it(run_dir, shapes_spec, "batch", tmp_path)
    with open(run_dir / "log.csv") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["0"]
    assert _weights_load(run_dir / "last.weights.h5")
    # Kill 2: the resumed run redoes the second epoch and is killed while last.weights.h5 is half written.
    _run_trainer_and_kill_it(run_dir, shapes_spec, "write", tmp_path)
    partial = [name for name in os.listdir(run_dir) if name.startswith(".tmp-")]
    assert partial, "the half-written temporary file is there, under its temporary name"
    assert _weights_load(run_dir / "last.weights.h5"), "the previous last.weights.h5 is intact"
    # The third run resumes at the second epoch again (its end was never recorded) and finishes. It needs no process
    # of its own (nothing kills it): it starts from what the killed processes left on disk, here in this process.
    epochs = []
    training.train(trainer_config(run_dir, shapes_spec),
                   callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))])
    assert epochs == [1, 2], epochs
    with open(run_dir / "log.csv") as stream:
        assert [row["epoch"] for row in csv.DictReader(stream)] == ["0", "1", "2"], "each epoch logged once"
    assert not [name for name in os.listdir(run_dir) if name.startswith(".tmp-")], "partial files removed"
    assert not runs.has_backup(str(run_dir / "backup")), "a finished run leaves no backup"
    for name in ("best.weights.h5", "last.weights.h5"):
        assert _weights_load(run_dir / name), name
    assert saving.load_model(str(run_dir / "model.keras"), compile=False).output_shape[-1] == 4
    assert json.load(open(run_dir / "best.weights.h5.json"))["monitor"] == "val_mean_iou"


def test_a_full_disk_fails_before_training(shapes_spec, tmp_path, tiny_backbone, monkeypatch):
    class _Usage:
        free = 2**20  # 1 MiB

    monkeypatch.setattr(training.loop.shutil, "disk_usage", lambda path: _Usage())
    config = training.TrainConfig(recipe="demo_shapes", data=shapes_spec, num_classes=4, run_dir=str(tmp_path / "run"),
                                  epochs=1, steps_per_epoch=1, batch_size=2, crop_size=32, backbone_weights=None,
                                  verbose=0, model_kwargs={"backbone": tiny_backbone, "decoder_features": 16})
    with pytest.raises(OSError, match=r"run' has 1 MiB free but the checkpoints of this model need about .* MiB; "
                                      "free space or choose another run_dir. Nothing was trained."):
        training.train(config)
    assert sorted(os.listdir(tmp_path / "run")) == ["config.json"], "no log, weights or backup were started"


# ------------------------------------------------------------------------------------ pickles and code


class _Evil:
    """Unpickling this creates the file ``path``: the proof that a loader ran code from a weights file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickles(tmp_path):
    marker = str(tmp_path / "pwned")
    plain = tmp_path / "weights.pkl"
    with open(plain, "wb") as stream:
        pickle.dump({"conv1": _Evil(marker)}, stream)
    torch_like = tmp_path / "model.pth"  # PyTorch's zip format: the state dict is archive/data.pkl
    with zipfile.ZipFile(torch_like, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"conv1": _Evil(marker)}))
        archive.writestr("archive/version", "3\n")
    return marker, [str(plain), str(torch_like)]


def test_every_weights_loader_refuses_pickles_without_unpickling(tmp_path, tiny_backbone, shapes_spec, capsys):
    marker, files = _pickles(tmp_path)
    model = models.RefineNet(num_classes=4, backbone=tiny_backbone, backbone_weights=None, variant="light_weight")
    for path in files:
        name = os.path.basename(path)
        with pytest.raises(ValueError, match=rf"{name}' is a (Python pickle|PyTorch/pickle archive).*never unpickles"):
            runs.load_weights_checked(model, path)
        with pytest.raises(ValueError, match=rf"backbone_weights= '.*{name}' is a .*pickle"):
            backbones.build_backbone("resnet50", weights=path)
        assert cli.main(["predict", "--model", "lw_mobilenetv2", "--backbone-weights", "none", "--weights", path,
                         "--output", str(tmp_path / "out"), path]) == 2
        assert "never unpickles" in capsys.readouterr().err
        assert cli.main(["train", "--recipe", "demo_shapes", "--data", shapes_spec, "--init-from", path,
                         "--backbone-weights", "none", "--run-dir", str(tmp_path / "run"), "--epochs", "1"]) == 2
        error = capsys.readouterr().err.strip()
        assert "--init-from" in error and "never unpickles" in error and "\n" not in error
    npy = tmp_path / "weights.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match=r"weights\.npy' is a NumPy array file"):
        runs.load_weights_checked(model, str(npy))
    assert not os.path.exists(marker), "a pickle was loaded"


def _lambda_model(marker):
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Lambda(lambda x: (open(marker, "a").close(), x)[1])(inputs)  # leaves a trace when run
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(outputs))


@pytest.mark.parametrize("fmt", ["keras", "h5", "saved_model"])
def test_models_load_in_safe_mode_and_never_run_python_code_from_the_file(tmp_path, fmt, capsys):
    marker = str(tmp_path / "code_ran")
    path = str(tmp_path / {"keras": "lambda.keras", "h5": "lambda.h5", "saved_model": "lambda_savedmodel"}[fmt])
    _lambda_model(marker).save(path, **({"save_format": "tf"} if fmt == "saved_model" else {}))
    if os.path.exists(marker):
        os.remove(marker)  # tracing at save time ran the lambda in this process: that is not the loader
    if fmt == "saved_model":
        # A SavedModel carries the traced graph: refinenet_tf loads it without the Lambda's bytecode, so the
        # model runs the graph and no Python from the file.
        loaded = saving.load_model(path, compile=False)
        loaded(np.zeros((1, 4, 4, 3), np.float32))
    else:
        with pytest.raises(ValueError, match=r"lambda\.(keras|h5)' contains Python code \(a Lambda layer\), which "
                                             "safe_mode refuses to load"):
            saving.load_model(path, compile=False)
        assert cli.main(["predict", "--model", path, "--output", str(tmp_path / "out"), path]) == 2
        assert "contains Python code" in capsys.readouterr().err
    assert not os.path.exists(marker), "Python code from the model file ran"


def test_run_config_files_are_data_not_code(tmp_path):
    marker = tmp_path / "code_ran"
    run = tmp_path / "run"
    run.mkdir()
    payload = f"__import__('os').system('touch {marker}')"
    (run / "best.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    for config, message in (({"recipe": payload, "num_classes": 4}, "Unknown recipe"),
                            ({"recipe": "demo_shapes", "num_classes": 4, "model_kwargs": {"backbone": payload}},
                             "Unknown backbone")):
        (run / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match=message):
            runs.load_inference_model(str(run))
    assert not marker.exists()


# ------------------------------------------------------------------------------------ soak


def test_inference_over_many_sizes_traces_once_and_memory_settles(tmp_path, tiny_backbone):
    model = models.RefineNet(num_classes=4, backbone=tiny_backbone, backbone_weights=None, variant="light_weight",
                             decoder_features=16)
    report = soak.run_soak(model, num_images=200, min_side=16, max_side=160, seed=0, log=None)
    assert report["images"] == 200 and len(set(report["sizes"])) > 150, "many different sizes"
    assert report["traces"] == 1, "one trace for every image size"
    # Memory: after the first half (allocator pools warmed up), the second half adds almost nothing, neither
    # to the resident memory nor to its peak.
    assert report["rss_end_mib"] - report["rss_half_mib"] < 64, report
    assert report["peak_rss_mib"] - report["peak_rss_half_mib"] < 64, report
    assert report["peak_rss_start_mib"] <= report["peak_rss_half_mib"] <= report["peak_rss_mib"]
