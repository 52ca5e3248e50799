"""The notebooks in notebooks/ execute with their smoke settings and show what they say they show.

Each notebook runs in a fresh ``python3`` kernel (ipykernel in this interpreter) with ``tmp_path`` as its
current folder and ``REFINENET_TF_NOTEBOOK_SMOKE=1`` (tiny data, a tiny registered backbone where it trains, one
or two epochs). The checks read what the notebook printed, displayed and wrote under ``notebook_runs/``. The
committed files must carry no outputs.
"""

import json
import math
import os
import re

import nbclient  # the [dev] extra
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = ("01_quickstart", "02_train_on_voc", "03_export_and_serve", "04_inside_refinenet",
             "05_joint_segmentation_depth")


def _read(name):
    return nbformat.read(os.path.join(NOTEBOOK_DIR, f"{name}.ipynb"), as_version=4)


def _execute(name, tmp_path, monkeypatch, voc_sample=None):
    """Runs notebook ``name`` in ``tmp_path``; returns (executed notebook, its outputs, the folder it wrote).

    ``voc_sample``: the folder holding ``VOCdevkit/VOC2012`` that notebook 02 prepares; ``None``: it generates one.
    """
    monkeypatch.setenv("REFINENET_TF_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures become image/png
    monkeypatch.delenv("REFINENET_TF_DOWNLOAD", raising=False)
    monkeypatch.delenv("REFINENET_TF_MODEL", raising=False)
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    if voc_sample is None:
        monkeypatch.delenv("REFINENET_TF_VOC_SAMPLE", raising=False)
    else:
        monkeypatch.setenv("REFINENET_TF_VOC_SAMPLE", voc_sample)
    notebook = _read(name)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if a cell fails
    return notebook, _Outputs(notebook), tmp_path / "notebook_runs" / name


class _Outputs:
    """Text (stdout and text results) and the number of PNG images an executed notebook produced."""

    def __init__(self, notebook):
        texts, self.images = [], 0
        for cell in notebook.cells:
            for output in cell.get("outputs", []):
                if output["output_type"] == "error":
                    raise AssertionError(f"{output['ename']}: {output['evalue']}")
                if output["output_type"] == "stream" and output["name"] == "stdout":
                    texts.append(output["text"])
                elif output["output_type"] in ("display_data", "execute_result"):
                    self.images += "image/png" in output["data"]
                    texts.append(output["data"].get("text/markdown", output["data"].get("text/plain", "")))
        self.text = "\n".join(texts)

    def number(self, pattern):
        match = re.search(pattern, self.text)
        assert match, f"{pattern!r} not in the notebook's output:\n{self.text[-3000:]}"
        return float(match.group(1))


def _json(path):
    with open(path) as stream:
        return json.load(stream)


def test_the_five_notebooks_are_there():
    found = sorted(name[:-len(".ipynb")] for name in os.listdir(NOTEBOOK_DIR) if name.endswith(".ipynb"))
    assert found == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_valid_and_has_no_outputs(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.cells[0].cell_type == "markdown"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and "REFINENET_TF_NOTEBOOK_SMOKE" in code[0].source  # the first code cell holds the parameters
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: a cell has outputs: {cell.source[:80]}"
        assert "execution" not in cell.metadata


def test_quickstart_trains_evaluates_and_plots(tmp_path, monkeypatch):
    _, outputs, written = _execute("01_quickstart", tmp_path, monkeypatch)
    assert outputs.images >= 4  # scenes, training curves, confusion matrix, prediction overlays
    printed = outputs.number(r"held-out mean IoU (\d\.\d+)")
    metrics = _json(written / "evaluation" / "metrics.json")
    assert 0 < metrics["mean_iou"] <= 1 and abs(metrics["mean_iou"] - printed) < 1e-3
    assert set(metrics["iou"]) == {"background", "disc", "rectangle", "triangle"}
    assert metrics["pixels"] > 0
    assert "| **mean** |" in outputs.text  # the evaluation table
    assert re.search(r"Epoch 2/2\s+4/4 - .*loss: \d", outputs.text)  # model.fit ran both epochs of 4 steps
    assert "the restored model predicts the same labels: True" in outputs.text
    assert (written / "model.keras").is_file()


@pytest.mark.parametrize("source", ["generated", "voc_sample"])
def test_train_on_voc_prepares_tfds_offline_and_trains(source, tmp_path, monkeypatch, request):
    # "voc_sample": the real VOC images (skipped, with the reason, where ../shared is absent); "generated": none
    # given, so the notebook writes a VOC-layout tree of synthetic shapes itself and prepares TFDS from it.
    voc_sample = None
    if source == "voc_sample":
        voc_sample = os.path.dirname(os.path.dirname(request.getfixturevalue("voc_sample_dir")))
    _, outputs, written = _execute("02_train_on_voc", tmp_path, monkeypatch, voc_sample=voc_sample)
    summary = _json(written / "summary.json")
    assert summary["data_source"] == source
    assert summary["spec"].startswith("tfds:voc2012_segmentation:")  # offline through the TFDS builder (manual_dir)
    if source == "voc_sample":
        assert (summary["num_classes"], summary["train_examples"], summary["val_examples"]) == (21, 2, 2)
        assert "{'train': 2, 'validation': 2}" in outputs.text  # the prepared TFDS splits
    else:
        assert (summary["num_classes"], summary["train_examples"], summary["val_examples"]) == (4, 8, 4)
        assert "{'train': 8, 'validation': 4}" in outputs.text
    assert summary["backbone_weights"] is None and summary["epochs_run"] == 2
    assert 0 <= summary["mean_iou"] <= 1 and 0 <= summary["mean_iou_tta"] <= 1
    run = written / "run"
    assert {"config.json", "best.weights.h5", "last.weights.h5", "model.keras", "log.csv"} <= set(os.listdir(run))
    assert _json(run / "config.json")["recipe"] == "lw_mobilenetv2_voc"
    assert outputs.images >= 4  # images with masks, training crops, curves, predictions


def test_export_and_serve_agree_with_keras(tmp_path, monkeypatch):
    _, outputs, written = _execute("03_export_and_serve", tmp_path, monkeypatch)
    comparison = _json(written / "comparison.json")
    fresh = comparison["saved_model (fresh process)"]
    assert fresh["refinenet_tf_imported"] is False  # the serving process needed TensorFlow only
    assert fresh["agreement"] >= 0.999 and fresh["max_probability_difference"] < 1e-4
    assert comparison["tflite float32"]["agreement"] >= 0.999
    assert comparison["tflite float32"]["max_probability_difference"] < 1e-3
    for name, row in comparison.items():
        assert row["median_ms"] > 0 and math.isfinite(row["median_ms"]), name
    assert outputs.number(r"fresh-process SavedModel: (\d+\.\d+) % of labels agree") >= 99.9
    assert "serving_bytes on the PNG gives the labels of serving_default: True" in outputs.text
    assert outputs.images >= 2  # latency / size bars, side-by-side masks


def test_inside_refinenet_shows_every_block_and_the_cascade(tmp_path, monkeypatch):
    _, outputs, _ = _execute("04_inside_refinenet", tmp_path, monkeypatch)
    for block in ("ConvBNReLU", "ResidualConvUnit", "ChainedResidualPooling", "MultiResolutionFusion",
                  "RefineBlock"):
        assert re.search(rf"{block}.*parameters \d+", outputs.text) or f"top {block}" in outputs.text, block
    height, width = 96, 128  # the smoke image
    for level, stride in (("P5", 32), ("P4", 16), ("P3", 8), ("P2", 4)):
        shape = rf"\(1, {height // stride}, {width // stride}, "
        assert re.search(rf"{level} stride +{stride}: backbone {shape}\d+\) -> refine_{level.lower()} {shape}256\)",
                         outputs.text), level
    assert f"logits (1, {height}, {width}, 21)" in outputs.text
    assert "Total params" in outputs.text  # the model.summary excerpt
    assert outputs.images >= 4  # pooled regions, activation maps, input/logits, parameter bars


def test_joint_segmentation_depth_trains_from_asymmetric_labels_and_shows_both_tasks(tmp_path, monkeypatch):
    _, outputs, written = _execute("05_joint_segmentation_depth", tmp_path, monkeypatch)
    summary = _json(written / "summary.json")
    assert summary["smoke"] is True and summary["epochs_run"] == 2
    assert 0 <= summary["mean_iou"] <= 1 and summary["depth_pixels"] > 0
    assert math.isfinite(summary["depth"]["rmse"]) and summary["baseline_rmse"] > 0
    assert outputs.number(r"majority-class baseline (\d\.\d+)") == pytest.approx(summary["baseline_mean_iou"], abs=1e-3)
    assert 0 < summary["baseline_mean_iou"] < 0.5
    assert "8 training scenes: 2 without a mask, 2 without depth" in outputs.text  # 20 % + 20 % of 8, rounded
    assert "'segmentation': (1, 64, 64, 5)" in outputs.text and "'depth': (1, 64, 64, 1)" in outputs.text
    assert "| **mean** |" in outputs.text and "| RMSE (linear) |" in outputs.text  # both tables
    assert outputs.number(r"held-out mean IoU (\d\.\d+)") == pytest.approx(summary["mean_iou"], abs=1e-3)
    assert "config.json model builder: MultiTaskRefineNet" in outputs.text
    assert outputs.images >= 3  # scenes, curves, side-by-side predictions
