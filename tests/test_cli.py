"""The ``refinenet-tf`` command line, called through ``main(argv)``."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from refinenet_tf.cli import commands as cli_commands
from refinenet_tf import cli
from refinenet_tf.cli import benchmark as benchmarks


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``refinenet-tf demo`` at smoke settings (one short epoch on a few scenes): its folder and what it printed.
    The real demo trains for minutes; this checks that every step runs, and its run is the trained model the
    benchmark test measures."""
    folder = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["demo", "--output", str(folder), "--epochs", "1", "--num-train", "8", "--num-val", "2"]) == 0
    return folder, printed.getvalue()


def test_demo_trains_evaluates_and_writes_its_files(demo_run, voc_tiny_dir, run_fresh):
    tmp_path, output = demo_run
    assert "Held-out mean IoU" in output and "Training took" in output
    overlay = Image.open(tmp_path / "predictions.png")
    assert overlay.mode == "RGB" and overlay.size == (3 * 160, 2 * 160)  # image | truth | prediction, 2 scenes
    for name in ("best.weights.h5", "last.weights.h5", "model.keras", "config.json", "log.csv"):
        assert (tmp_path / "run" / name).exists(), name
    assert len(os.listdir(tmp_path / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages")) == 10
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")], "no temporary files left"

    # The demo's checkpoint exported as a SavedModel segments a VOC-layout JPEG in a process without refinenet_tf.
    saved = tmp_path / "saved_model"
    assert cli.main(["export", "--model", str(tmp_path / "run"), "--output", str(saved)]) == 0
    jpeg = os.path.join(voc_tiny_dir, "JPEGImages", "shapes_0001.jpg")
    printed = run_fresh(f"""
        serve = tf.saved_model.load({str(saved)!r}).signatures["serving_bytes"]
        result = serve(image_bytes=tf.constant([open({jpeg!r}, "rb").read()]))
        names = json.load(open({str(saved / "refinenet_tf.json")!r}))["class_names"]
        labels = result["labels"][0].numpy()
        print(result["image_sizes"].numpy().tolist(), labels.shape, int(labels.min()) >= 0,
              int(labels.max()) < len(names), names)
    """)
    with Image.open(jpeg) as image:
        width, height = image.size
    assert printed.splitlines()[-1] == (f"[[{height}, {width}]] ({height}, {width}) True True "
                                        "['background', 'disc', 'rectangle', 'triangle']")


def test_demo_into_a_file_fails_with_one_clear_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli.main(["demo", "--output", str(blocker)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("refinenet-tf demo: error:") and "a_file" in error and "\n" not in error


@pytest.mark.parametrize("argv", [["demo", "--epochs", "0"], ["train", "--recipe", "vgg", "--data", "voc:x"],
                                  ["train", "--preset", "vgg", "--data", "voc:x"], ["train", "--data", "voc:x"],
                                  ["nope"]])
def test_bad_arguments_exit_with_usage_error(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2


def test_version(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("refinenet_tf ")


def test_benchmark_compares_engines_and_precisions_as_ratios_to_the_matmul(demo_run, tmp_path, capsys):
    # The README's last step: the demo's trained model (its run folder), each engine and precision in a fresh
    # process. ONNX Runtime stands for the converting engines (it converts in a quarter of TFLite's time); the
    # engines themselves are compared with Keras in tests/test_engines.py and test_openvino.py, and the multi-task
    # model's rows in the next test.
    run = str(demo_run[0] / "run")
    results_file = tmp_path / "bench.json"
    assert cli.main(["benchmark", "--models", run, "--size", "64", "--runs", "1", "--no-multitask",
                     "--engines", "keras", "onnxruntime", "--precision", "float32", "bfloat16", "--matmul-size", "256",
                     "--json", str(results_file)]) == 0
    output = capsys.readouterr().out
    results = json.loads(results_file.read_text())
    assert "Matmul float32 " in output and ", bfloat16 " in output
    rows = {(row["engine"], row["precision"]): row for row in results["rows"]}
    assert len(rows) == 4 and {row["model"] for row in results["rows"]} == {run}  # two engines, two precisions
    reference = rows["keras", "float32"]
    assert reference["agreement"] == 1.0 and reference["gflops"] > 0 and reference["depth_difference"] is None
    assert rows["onnxruntime", "float32"]["agreement"] > 0.99
    assert rows["keras", "bfloat16"]["agreement"] > 0.5  # emulated here: slow, but it runs
    # ONNX Runtime has no bfloat16: its row says so in one line instead of a measurement
    assert "runs float32 only" in rows["onnxruntime", "bfloat16"]["error"]
    for (_, precision), row in rows.items():
        if "error" not in row:
            assert row["matmul_ratio"] == pytest.approx(
                reference["gflops"] / (row["best_latency_ms"] / 1000) / results["ceiling"][precision])
    line = next(line for line in output.splitlines() if line.startswith(f"| {run} | onnxruntime | float32 |"))
    assert line.count("|") == 11
    keras_line = next(line for line in output.splitlines() if line.startswith(f"| {run} | keras | float32 |"))
    assert keras_line.strip("|").split("|")[6].strip() == "100.00 %"  # the agreement column
    assert any(line.startswith(f"{run}: fastest float32 engine ") and "keras takes" in line
               for line in output.splitlines())
    with pytest.raises(SystemExit) as exit_info:  # argparse: not a choice
        cli.main(["benchmark", "--precision", "float16"])
    assert exit_info.value.code == 2


def test_benchmark_rows_of_the_multitask_model_compare_its_depth(monkeypatch, tmp_path):
    # `benchmark --multitask` (the default) adds these rows; here measured in this process (the command gives each
    # a fresh one, as the test above shows): each engine's labels and depth against the keras float32 engine's
    monkeypatch.setattr(benchmarks, "in_fresh_process", lambda name, *args: getattr(benchmarks, name)(*args))
    keras_row, onnx_row = benchmarks._engine_rows(benchmarks.MULTITASK_MODEL, (48, 64), 1, ["keras", "onnxruntime"],
                                                  ["float32"], (), str(tmp_path), log=lambda line: None)
    assert keras_row["agreement"] == 1.0 and keras_row["depth_difference"] == 0.0 and keras_row["gflops"] > 0
    assert onnx_row["agreement"] > 0.99 and onnx_row["depth_difference"] < 1e-3


def test_help_of_every_command_answers_without_tensorflow():
    script = """
import sys
from refinenet_tf import cli
from refinenet_tf.cli import benchmark as benchmarks
parser = cli.build_parser()
commands = next(a for a in parser._actions if a.dest == "command").choices
for argv in [["--help"]] + [[name, "--help"] for name in commands] + [["convert", "slim", "--help"]]:
    try:
        cli.main(argv)
    except SystemExit as exit:
        assert exit.code == 0, argv
print(len(commands), "tensorflow" in sys.modules, "tf_keras" in sys.modules)
"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root,
                            env=dict(os.environ, PYTHONPATH=root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "9 False False", result.stdout[-500:]


def test_train_preset_is_a_deprecated_alias_of_recipe(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--preset", "demo_shapes", "--data", "voc:x"])
    assert args.recipe == "demo_shapes"
    assert capsys.readouterr().err.strip() == "refinenet-tf train: warning: --preset is deprecated; use --recipe"
    assert parser.parse_args(["train", "--recipe", "lw_resnet50_voc", "--data", "voc:x"]).recipe == "lw_resnet50_voc"
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", "voc:x"])
    assert "the following arguments are required: --recipe" in capsys.readouterr().err


def test_library_errors_are_told_in_the_commands_flags():
    commands = next(a for a in cli.build_parser()._actions if a.dest == "command").choices
    assert cli_commands.as_flags("spec='m.keras' predicts 21 classes, not num_classes=3; leave num_classes out",
                                     commands["predict"]) == "--model 'm.keras' predicts 21 classes, not --num-classes 3; leave " \
                                                             "--num-classes out"
    assert cli_commands.as_flags("use resume=True to continue it or resume=False; try a lower learning_rate",
                                     commands["train"]) == "use --resume to continue it or --no-resume; try a lower --lr"
    # Quoted text (a file name) stays as it is; so do names the command has no flag for.
    assert cli_commands.as_flags("run_dir='/x/run_dir' holds a finished run; overwrite=True", commands["train"]) == \
        "--run-dir '/x/run_dir' holds a finished run; --overwrite"
    assert cli_commands.as_flags("path='a.tflite' exists; pass overwrite=True", commands["export"]) == \
        "--output 'a.tflite' exists; pass --overwrite"
    assert cli_commands.as_flags("max_pixels= and run_dir", commands["predict"]) == "--max-pixels and run_dir"


def test_a_fresh_process_runs_only_measurements():
    # (the benchmark test above runs measure_matmul and measure_engine in fresh processes by name)
    with pytest.raises(RuntimeError, match="unknown measurement 'run_benchmark'"):
        benchmarks.in_fresh_process("run_benchmark")
