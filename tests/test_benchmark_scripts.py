"""The repository's benchmark scripts (``benchmarks/training.py``, ``benchmarks/input_pipeline.py``,
``benchmarks/flops.py``): what they measure and print, on tiny models and data. They stay out of the wheel; these tests keep them working."""

import functools
import json
import re
import sys

import pytest

import refinenet_tf
from benchmarks import flops, input_pipeline, training
from refinenet_tf import _processes
from refinenet_tf.cli import benchmark


@pytest.fixture
def tiny_presets(monkeypatch, tiny_backbone):
    """The benchmarks' preset models get the preset's decoder on the tiny test backbone: the tables and
    measurements are what is tested, not MobileNetV2."""
    monkeypatch.setattr(benchmark, "benchmark_model", lambda name, seed=0: benchmark.randomize_batch_norms(
        refinenet_tf.models.build(name, num_classes=21, backbone_weights=None, backbone=tiny_backbone,
                                  decoder_features=8), seed))


def test_training_step_measures_one_configuration(tiny_presets):
    row = training.measure_training("lw_mobilenetv2", 64, batch_size=2, steps=1, jit_compile=False)
    assert row["images_per_second"] > 0 and row["seconds_per_step"] > 0
    # the peak (VmHWM) is at least the resident memory after building (VmRSS), up to the few MiB by which Linux
    # lets its per-thread RSS counters run ahead of the peak it records (proc(5): "inaccurate because of a
    # kernel-internal scalability optimization"); here, in-process on a tiny model, memory hardly grows after build
    assert row["peak_rss_mib"] >= row["built_rss_mib"] - 16 and row["built_rss_mib"] > 0


def test_update_table_times_the_fused_and_keras_updates(monkeypatch, capsys, tiny_presets):
    # every measurement in this process (the script gives each a fresh one), its rows kept
    measured = []
    monkeypatch.setattr(training, "in_fresh_process",
                        lambda name, *args: measured.append(getattr(training, name)(*args)) or measured[-1])
    assert training.main(["--update", "--optimizer", "sgd", "--models", "lw_mobilenetv2", "--size", "32",
                          "--batch-size", "2", "--steps", "1"]) == 0
    # the two rows train with Keras' SGD and with the recipes' (whose update is the fused one)
    assert [row["optimizer_class"] for row in measured] == ["SGD", "SGDWithMultipliers"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("| model | input | batch | optimizer | update | first step (s) | s/step | "
                        "update alone: first call (s) | update (ms) |")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[3:5]]
    assert [row[:5] for row in rows] == [["lw_mobilenetv2", "32x32", "2", "sgd", update]
                                         for update in ("keras", "fused")]
    assert all(float(cell) > 0 for row in rows for cell in row[5:])
    with pytest.raises(ValueError, match="update='sparse'"):
        training.measure_update("lw_mobilenetv2", 32, update="sparse")
    with pytest.raises(SystemExit) as exit_info:  # two modes at once: argparse's usage error, not one silently
        training.main(["--update", "--validation"])
    assert exit_info.value.code == 2


def test_unknown_model_fails_with_one_line(capsys):
    assert training.main(["--models", "lw_vgg"]) == 2
    assert input_pipeline.main(["--models", "lw_vgg"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("lw_vgg" in line and "--models" in line for line in errors)


def test_validation_counts_sizes(tiny_backbone):
    row = training.measure_validation("lw_mobilenetv2", num_images=4, min_side=32, max_side=64,
                                      backbone=tiny_backbone, decoder_features=8)
    assert row["images"] == 4 and 1 <= row["sizes"] <= 4 and row["images_per_second"] > 0
    assert row["xla_test_step"] is False
    with pytest.raises(ValueError, match="min_side"):
        training.measure_validation("lw_mobilenetv2", min_side=16)


def test_validation_table(capsys, monkeypatch, tiny_backbone):
    monkeypatch.setattr(training, "measure_validation", functools.partial(
        training.measure_validation, backbone=tiny_backbone, decoder_features=8))
    status = training.main(["--validation", "--models", "lw_mobilenetv2", "--size", "48", "--validation-images",
                            "3", "--jit", "off"])
    out = capsys.readouterr().out
    assert status == 0
    row = re.search(r"\| lw_mobilenetv2 \| 32-48 \| (\d) \| off \| ([\d.]+) \| ([\d.]+) \|", out)
    assert row and 1 <= int(row.group(1)) <= 3 and float(row.group(3)) > 0


def test_input_pipeline_prints_crops_next_to_the_step(monkeypatch, capsys, voc_tiny_dir, tiny_presets):
    # every measurement in this process (the script gives each a fresh one), on small scenes
    measures = {"measure_training": training.measure_training,
                "measure_input_pipeline": input_pipeline.measure_input_pipeline}
    monkeypatch.setattr(input_pipeline, "in_fresh_process", lambda name, *args: measures[name](*args))
    monkeypatch.setattr(input_pipeline, "_VOC_SIZE", (40, 30))
    assert input_pipeline.main(["--models", "lw_mobilenetv2", "--size", "32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Input pipeline alone:") and "32 x 32 crops/s" in lines[0]
    assert lines[1] == "| model | crop | batch | train img/s | pipeline crops/s | pipeline x train | keeps up |"
    cells = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert cells[:3] == ["lw_mobilenetv2", "32", "2"] and all(float(cell) > 0 for cell in cells[3:6])
    assert cells[6] == ("yes" if float(cells[5]) >= 4 else "NO (< 4x)")
    # --data times the same pipeline on a dataset of yours
    assert input_pipeline.main(["--data", f"voc:{voc_tiny_dir}", "--crop-size", "32", "--batch-size", "2",
                                "--batches", "2", "--warmup", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith(f"| voc:{voc_tiny_dir} (train) | 32 | 2 | False |") and float(row.split("|")[5]) > 0


def test_input_pipeline_runs_in_a_fresh_process():
    # the scripts' own way to measure: `python -m benchmarks.input_pipeline` from the repository's root
    row = input_pipeline.in_fresh_process("measure_input_pipeline", None, "train", 32, 2, 1, 0, False, 2)
    assert row["images_per_second"] > 0 and row["source"].startswith("VOC-sized JPEGs")


def test_a_script_runs_a_measurement_by_name_or_else_its_command_line(monkeypatch, capsys):
    # the scripts' entry (_processes.run_script): what in_fresh_process starts prints the named measurement's JSON
    measurements = {"measure_sum": lambda a, b: {"sum": a + b}}
    monkeypatch.setattr(sys, "argv", ["script.py", "measure_sum", "[2, 3]"])
    _processes.run_script(lambda: pytest.fail("the command line ran instead of the measurement"), measurements)
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"sum": 5}
    monkeypatch.setattr(sys, "argv", ["script.py", "measure_other", "[]"])  # not a measurement of the script
    with pytest.raises(SystemExit) as exit_info:
        _processes.run_script(lambda: 7, measurements)
    assert exit_info.value.code == 7


@pytest.mark.parametrize("argument, value", [("batches", 0), ("warmup", -1), ("crop_size", 0)])
def test_input_pipeline_refuses_bad_counts(argument, value):
    with pytest.raises(ValueError, match=f"{argument} must be a"):
        input_pipeline.measure_input_pipeline(**{argument: value})


def test_flops_prints_a_table_row_per_model(capsys):
    assert flops.main(["lw_mobilenetv2", "--size", "64x64", "--num-classes", "21"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    row = next(line for line in lines if line.startswith("| lw_mobilenetv2"))
    cells = dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["trainable (M)"] == "3.28" and cells["published (M)"] == "3.3"
    assert float(cells["GFLOPs 64x64"]) == pytest.approx(2 * float(cells["GMACs 64x64"]), abs=0.11)
    assert 0.1 < float(cells["GFLOPs 64x64"]) < 1.0  # 17.6 GFLOPs at 512x512 scaled by (64/512)**2 = 0.28
    assert cells["published VOC12 test mIoU"] == "79.2"


def test_flops_unknown_model_fails_with_one_line(capsys):
    assert flops.main(["lw_vgg", "--size", "64x64"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "lw_vgg" in error[0]


def test_flops_bad_size_is_a_usage_error():
    with pytest.raises(SystemExit) as exit_info:
        flops.main(["--size", "64"])
    assert exit_info.value.code == 2
