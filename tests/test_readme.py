"""The Python examples of the README and of the documentation pages run as written: each page in a fresh
interpreter, each block in a namespace and a folder of its own (a block that sets the environment in an interpreter
of its own).

They run in a fresh folder that holds what a reader has after ``make demo``: the demo's data in the VOC layout
under ``checkpoints/demo/data`` (written here by the same writer, smaller). The pages about converting downloaded
checkpoints also find the file they name, written in its original format with random weights by the tests' own
oracles (``tests/slim_reference.py``, ``tests/torch_reference.py``). Nothing outside the repository is needed.
The CLI reference is checked in ``tests/test_docs.py``.
"""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from refinenet_tf.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _python_blocks(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as stream:
        return re.findall(r"```python\n(.*?)```", stream.read(), flags=re.S)


BLOCKS = [(page, index, block) for page in PAGES for index, block in enumerate(_python_blocks(page))]


def test_the_readme_and_the_docs_have_examples():
    assert len(_python_blocks("README.md")) == 2  # predict; export and serve
    assert len(BLOCKS) >= 9


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """A folder with ``checkpoints/demo/data``: the demo's synthetic VOC-layout scenes (fewer of them)."""
    root = tmp_path_factory.mktemp("demo_data")
    synthetic.write_shapes_dataset(str(root / "checkpoints" / "demo" / "data"), num_train=4, num_val=2, seed=0)
    return root


def _slim_imagenet_checkpoint(folder):
    """TF-slim's ``resnet_v1_101.ckpt`` (V1 format, 1000-class logits, global_step), random weights."""
    from tests import slim_reference

    slim_reference.in_tf1("save_backbone", folder, checkpoint_prefix=str(folder / "resnet_v1_101.ckpt"),
                          image=np.zeros((32, 32, 3), np.float32), resnet="resnet_v1_101")


def _official_lw50_checkpoint(folder):
    """The Light-Weight RefineNet release's ``rf_lw50_voc.pth.tar`` (a state dict of its modules), random weights."""
    import torch  # the [torch] extra, part of [dev]

    from tests import torch_reference

    model = torch_reference.randomize(torch_reference.build("lw_resnet50_official"), seed=0)
    torch.save(model.state_dict(), str(folder / "rf_lw50_voc.pth.tar"))
    # The multi-task release's ExpNYUD_joint.ckpt: its state dict under "state_dict", 40 classes, 2 heads.
    joint = torch_reference.randomize(torch_reference.build("multitask_mobilenetv2_official", 40, 2), seed=0)
    torch.save({"state_dict": joint.state_dict()}, str(folder / "ExpNYUD_joint.ckpt"))


# The files a page's examples open, as a reader has them after downloading what the page links to.
PAGE_FILES = {
    os.path.join("docs", "slim_checkpoints.md"): _slim_imagenet_checkpoint,
    os.path.join("docs", "official_checkpoints.md"): _official_lw50_checkpoint,
}


# Runs one page's blocks in one fresh interpreter (TensorFlow starts once per page, not once per block): each block
# in a namespace of its own (a name defined by an earlier block is not there), in a folder of its own that holds
# the reader's files, its prints captured; a failing block leaves the next ones to run.
_PAGE_RUNNER = """
import contextlib, io, json, os, sys, traceback
blocks, results_file = json.loads(sys.argv[1]), sys.argv[2]
results = []
for folder, block in blocks:
    os.chdir(folder)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(block, folder, "exec"), {"__name__": "__main__"})
        error = None
    except BaseException:
        error = traceback.format_exc()
    results.append({"stdout": printed.getvalue(), "error": error})
    with open(results_file, "w") as stream:
        json.dump(results, stream)
"""


def _alone(block):
    """A block that sets the environment (``TF_USE_LEGACY_KERAS`` before the first TensorFlow import) needs an
    interpreter of its own."""
    return "os.environ" in block


@pytest.fixture(scope="module")
def run_page(demo_data, tmp_path_factory):
    """``run_page(page)``: ``[{"stdout": ..., "error": traceback or None}]``, one per block of ``page``, each block
    run once as a reader runs it (see ``_PAGE_RUNNER``) in a folder with the demo's data and the page's files."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_USE_LEGACY_KERAS", None)
    pages = {}

    def run(page):
        if page not in pages:
            root = tmp_path_factory.mktemp("reader")
            files = root / "files"
            files.mkdir()
            if page in PAGE_FILES:
                PAGE_FILES[page](files)
            folders = []
            for index in range(len(_python_blocks(page))):
                folder = root / f"block_{index}"
                folder.mkdir()
                (folder / "checkpoints").symlink_to(demo_data / "checkpoints")
                for name in os.listdir(files):
                    (folder / name).symlink_to(files / name)
                folders.append(str(folder))
            blocks = list(zip(folders, _python_blocks(page)))
            groups = [[item] for item in blocks if _alone(item[1])] + [[item for item in blocks if not _alone(item[1])]]
            results = {}
            for number, group in enumerate(group for group in groups if group):
                results_file = root / f"results_{number}.json"
                run = subprocess.run([sys.executable, "-c", _PAGE_RUNNER, json.dumps(group), str(results_file)],
                                     env=environment, capture_output=True, text=True, timeout=900)
                done = json.loads(results_file.read_text()) if results_file.exists() else []
                for (folder, _), result in zip(group, done + [None] * (len(group) - len(done))):
                    results[folder] = result or {"stdout": "", "error": f"the interpreter ended (exit code "
                                                                        f"{run.returncode}):\n{run.stderr[-3000:]}"}
            pages[page] = [results[folder] for folder in folders]
        return pages[page]

    return run


@pytest.mark.parametrize("page, index, block", BLOCKS, ids=[f"{page}:{index}" for page, index, _ in BLOCKS])
def test_python_block_runs(page, index, block, run_page):
    result = run_page(page)[index]
    assert result["error"] is None, f"{page} block {index} failed:\n{block}\n{result['error'][-3000:]}"
    # Each `print(...)  # expected` comment in the block is checked against what it printed.
    expected = [c.strip() for c in re.findall(r"^print\(.*\)\s+#\s*(.*)$", block, flags=re.M)]
    printed = [line.strip() for line in result["stdout"].splitlines()]
    for value in expected:
        value = value.split(":")[0] if value.startswith("(") and "):" in value else value
        assert any(line.startswith(value) for line in printed), (value, printed)
