"""``refinenet-tf doctor``: what it prints and measures, on tiny models."""

import functools
import math
import re

import pytest

from refinenet_tf import cli
from refinenet_tf.training import doctor


def _number(pattern, text):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in:\n{text}"
    return float(match.group(1))


def test_doctor_prints_devices_versions_and_a_training_run(capsys, monkeypatch, tiny_backbone):
    # the command's report is what is tested: its training run builds the preset's decoder on the tiny test
    # backbone (test_doctor_with_xla_and_mixed_precision measures the same function directly)
    monkeypatch.setattr(doctor, "measure_training_steps", functools.partial(
        doctor.measure_training_steps, backbone=tiny_backbone, decoder_features=8))
    status = cli.main(["doctor", "--model", "lw_mobilenetv2", "--size", "32", "--batch-size", "2", "--steps", "4"])
    out = capsys.readouterr().out
    assert status == 0
    assert re.search(r"TensorFlow 2\.\d+\.\d+.*, tf-keras 2\.\d+", out)
    assert re.search(r"device /?CPU:0 \(CPU\): XLA yes; float16 yes; bfloat16 yes", out)
    assert "policy float32, XLA train step False" in out  # no GPU here: "auto" leaves XLA off
    assert _number(r"images/s: ([\d.]+)", out) > 0
    assert _number(r"train function traced (\d+) time", out) == 1
    before = _number(r"loss at step 1 ([\d.]+)", out)
    after = _number(r"at step 4 ([\d.]+):", out)
    assert math.isfinite(before) and math.isfinite(after) and before > 0


def test_doctor_with_xla_and_mixed_precision(tiny_backbone):
    run = doctor.measure_training_steps("lw_mobilenetv2", size=32, batch_size=2, steps=6, jit_compile=True,
                                        mixed_precision="mixed_bfloat16", learning_rate=3e-3,
                                        backbone=tiny_backbone, decoder_features=8, dropout=None)
    assert run["policy"] == "mixed_bfloat16" and run["jit_compile"] is True
    assert run["traces"] == 1 and run["xla_traces"] == 1  # one shape: traced and compiled once
    assert run["images_per_second"] > 0
    assert math.isfinite(run["loss_after"]) and run["loss_after"] < run["loss_before"]


def test_doctor_refuses_bad_input(capsys, tiny_backbone):
    with pytest.raises(ValueError, match="steps=1: need 2 or more"):
        doctor.measure_training_steps("lw_mobilenetv2", steps=1, backbone=tiny_backbone)
    status = cli.main(["doctor", "--model", "no_such_model", "--steps", "2"])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "no_such_model" in error[0]
