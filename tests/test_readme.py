"""The Python examples of the README and of the documentation pages run as written, each block in a namespace and a
folder of its own, in a fresh interpreter that the pages share (TensorFlow starts once, not once per page; Keras'
state is cleared between pages). A block that sets the environment runs in an interpreter of its own.

They run in a fresh folder that holds what a reader has after ``make demo``: the demo's data in the VOC layout
under ``checkpoints/demo/data`` (written here by the same writer, smaller). The pages about converting downloaded
checkpoints also find the file they name, written in its original format with random weights by the tests' own
oracles (``tests/slim_reference.py``, ``tests/torch_reference.py``). Nothing outside the repository is needed.
The CLI reference is checked in ``tests/test_docs.py``.
"""

import glob
import os
import re

import numpy as np
import pytest

from refinenet_tf.data import synthetic
from tests.fresh_python import FreshInterpreter

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


def _alone(block):
    """A block that sets the environment (``TF_USE_LEGACY_KERAS`` before the first TensorFlow import) needs an
    interpreter of its own."""
    return "os.environ" in block


#: Run between two pages in their shared interpreter: the next page starts with an empty Keras graph, as in a new one.
_BETWEEN_PAGES = """
import gc, sys
if "tf_keras" in sys.modules:
    sys.modules["tf_keras"].backend.clear_session()
gc.collect()
"""


@pytest.fixture(scope="module")
def run_page(demo_data, tmp_path_factory):
    """``run_page(page)``: ``[{"output": what it printed, "error": traceback or None}]``, one per block of
    ``page``, each block run once as a reader runs it, in a folder with the demo's data and the page's files."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_USE_LEGACY_KERAS", None)
    pages = {}
    shared = []  # the interpreter the pages share, started by the first page

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
            for group in filter(None, groups):
                # each block in its own namespace and folder, its prints captured, a failing block leaving the next
                # ones to run (tests/fresh_python.py); a block that sets the environment in a fresh interpreter
                alone = _alone(group[0][1])
                if alone:
                    interpreter = FreshInterpreter(env=environment)
                else:
                    if shared:
                        cleared = shared[0].run(_BETWEEN_PAGES, name="between pages")
                        assert cleared["error"] is None, cleared["error"]
                    else:
                        shared.append(FreshInterpreter(env=environment))
                    interpreter = shared[0]
                for folder, block in group:
                    results[folder] = interpreter.run(block, cwd=folder, name=f"{page} block")
                if alone:
                    interpreter.close()
            pages[page] = [results[folder] for folder in folders]
        return pages[page]

    yield run
    for interpreter in shared:
        interpreter.close()


@pytest.mark.parametrize("page, index, block", BLOCKS, ids=[f"{page}:{index}" for page, index, _ in BLOCKS])
def test_python_block_runs(page, index, block, run_page):
    result = run_page(page)[index]
    assert result["error"] is None, f"{page} block {index} failed:\n{block}\n{result['error'][-3000:]}"
    # Each `print(...)  # expected` comment in the block is checked against what it printed.
    expected = [c.strip() for c in re.findall(r"^print\(.*\)\s+#\s*(.*)$", block, flags=re.M)]
    printed = [line.strip() for line in result["output"].splitlines()]
    for value in expected:
        value = value.split(":")[0] if value.startswith("(") and "):" in value else value
        assert any(line.startswith(value) for line in printed), (value, printed)
