"""The README's Python examples run as written, each in a fresh interpreter, and its CLI section is current."""

import os
import re
import subprocess
import sys

import pytest

from refinenet_tf import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_examples():
    assert len(PYTHON_BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    environment.pop("TF_USE_LEGACY_KERAS", None)
    # Run where the README's relative paths hold: a fresh folder beside ../shared, like the checkout.
    (tmp_path / "shared").symlink_to(os.path.join(ROOT, "..", "shared"))
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    result = subprocess.run([sys.executable, "-c", PYTHON_BLOCKS[index]], cwd=workdir, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README block {index} failed:\n{PYTHON_BLOCKS[index]}\n{result.stderr[-3000:]}"
    # Each `print(...)  # expected` comment in the block is checked against what it printed.
    expected = [c.strip() for c in re.findall(r"^print\(.*\)\s+#\s*(.*)$", PYTHON_BLOCKS[index], flags=re.M)]
    printed = [line.strip() for line in result.stdout.splitlines()]
    for value in expected:
        value = value.split(":")[0] if value.startswith("(") and "):" in value else value
        assert any(line.startswith(value) for line in printed), (value, printed)


def _cli_reference():
    """The README's CLI reference: ``{command: its synopsis}`` from the sh block under "## Command line"."""
    section = README.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S).group(1)
    synopses, command = {}, None
    for line in block.splitlines():
        match = re.match(r"refinenet-tf (\S+)", line)
        if match:
            command = match.group(1)
            synopses[command] = line
        else:
            synopses[command] += " " + line.strip()
    return synopses


def _long_options(parser):
    return {option for action in parser._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def test_the_cli_reference_matches_the_parser_command_by_command():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    synopses = _cli_reference()
    documented = {name for name in synopses if not name.startswith("-")}
    assert documented == set(subparsers), f"commands in README vs parser: {documented ^ set(subparsers)}"
    for name, subparser in subparsers.items():
        listed = set(re.findall(r"--[a-z0-9][a-z0-9-]*", synopses[name]))
        options = _long_options(subparser)
        assert options <= listed, f"README's `refinenet-tf {name}` lacks {sorted(options - listed)}"
        assert listed <= options, f"README's `refinenet-tf {name}` lists {sorted(listed - options)}, which it lacks"
    assert {name for name in synopses if name.startswith("-")} == _long_options(parser)  # --version
