"""The Python examples of the README and of the documentation pages run as written, each in a fresh interpreter.

They run in a fresh folder that holds what a reader has after ``make demo``: the demo's data in the VOC layout
under ``checkpoints/demo/data`` (written here by the same writer, smaller). Nothing outside the repository is
needed. The CLI reference is checked in ``tests/test_docs.py``.
"""

import glob
import os
import re
import subprocess
import sys

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


@pytest.mark.parametrize("page, index, block", BLOCKS, ids=[f"{page}:{index}" for page, index, _ in BLOCKS])
def test_python_block_runs(page, index, block, demo_data, tmp_path):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_USE_LEGACY_KERAS", None)
    workdir = tmp_path / "reader"
    workdir.mkdir()
    (workdir / "checkpoints").symlink_to(demo_data / "checkpoints")
    result = subprocess.run([sys.executable, "-c", block], cwd=workdir, env=environment, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"{page} block {index} failed:\n{block}\n{result.stderr[-3000:]}"
    # Each `print(...)  # expected` comment in the block is checked against what it printed.
    expected = [c.strip() for c in re.findall(r"^print\(.*\)\s+#\s*(.*)$", block, flags=re.M)]
    printed = [line.strip() for line in result.stdout.splitlines()]
    for value in expected:
        value = value.split(":")[0] if value.startswith("(") and "):" in value else value
        assert any(line.startswith(value) for line in printed), (value, printed)
