"""The documentation site builds strictly, its API reference covers every public module, and its CLI
reference is the parser's.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the nav, a ``::: module`` that
no longer exists and a docstring that documents a parameter its function lacks (``docs/griffe_examples.py``).
"""

import argparse
import importlib
import os
import re
import subprocess
import sys

import refinenet_tf
from refinenet_tf import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as stream:
        return stream.read()


def test_the_site_builds_strictly(tmp_path):
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                       NO_MKDOCS_2_WARNING="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             os.path.join(ROOT, "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "site" / "index.html").is_file()
    layers = (tmp_path / "site" / "api" / "refinenet_tf.models.layers" / "index.html").read_text(encoding="utf-8")
    assert "ChainedResidualPooling" in layers and "RefineBlock" in layers  # generated from the docstrings


def _api_pages():
    """docs/api_pages.py, the generator of the API reference, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("api_pages", os.path.join(DOCS, "api_pages.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_reference_is_generated_from_the_public_names():
    # every public module has a page, every folder a table of its __all__, and the nav lists them all
    assert _api_pages().stale() == [], "the API reference is stale: run .venv/bin/python docs/api_pages.py"


def test_every_public_name_has_a_docstring_and_a_page():
    api = _api_pages()
    undocumented = []
    for package in api.packages():
        names = [name for name in importlib.import_module(package).__all__ if not name.startswith("__")]
        assert names, f"{package} lists no public name in __all__"
        for name in names:
            module = api.defining_module(package, name)  # raises unless one module defines and lists it
            if not api.summary(module, name):
                undocumented.append(f"{package}.{name} ({module})")
    assert not undocumented, f"public names without a docstring (or a #: comment above a constant): {undocumented}"


def test_the_docstring_check_sees_a_missing_docstring(tmp_path):
    api = _api_pages()
    assert api.summary("refinenet_tf.models.presets", "get").startswith("The `ModelPreset` called `name`")
    assert api.summary("refinenet_tf.models.presets", "PRESETS") == "preset name -> `ModelPreset`."
    assert api.summary("refinenet_tf.models.outputs", "tf") == ""  # a module's import: no comment above it


def _cli_reference():
    """``{"command" or "command subcommand": synopsis}`` from the first sh block of docs/cli.md."""
    block = re.search(r"```sh\n(.*?)```", _read("docs", "cli.md"), flags=re.S).group(1)
    synopses, command = {}, None
    for line in block.splitlines():
        if line.startswith("refinenet-tf "):
            words = []
            for word in line.split()[1:]:
                if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
                    break
                words.append(word)
            command = " ".join(words) or line.split()[1]  # "--version" for the top-level options
            synopses[command] = line
        else:
            synopses[command] += " " + line.strip()
    return synopses


def _commands(parser, prefix=""):
    """``{"command" or "command subcommand": its parser}`` for every leaf of the parser's subcommand tree."""
    commands = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                nested = _commands(subparser, f"{prefix}{name} ")
                commands.update(nested or {f"{prefix}{name}": subparser})
    return commands


def _options(parser):
    """``(every long option string, the options a reference must list)`` of a parser.

    An option listed must be one of the parser's strings. Every visible option must be listed under its first
    spelling (``--recipe``, not its old alias ``--preset``), and both spellings of a ``--x / --no-x`` pair;
    options whose help is suppressed (hidden aliases) need not be listed.
    """
    spellings, required = set(), set()
    for action in parser._actions:
        strings = [option for option in action.option_strings if option.startswith("--") and option != "--help"]
        spellings.update(strings)
        if strings and action.help != argparse.SUPPRESS:
            required.update(strings if isinstance(action, argparse.BooleanOptionalAction) else strings[:1])
    return spellings, required


def test_the_cli_reference_matches_the_parser_command_by_command():
    parser = cli.build_parser()
    commands = _commands(parser)
    synopses = _cli_reference()
    documented = {name for name in synopses if not name.startswith("-")}
    assert documented == set(commands), f"commands in docs/cli.md vs the parser: {sorted(documented ^ set(commands))}"
    for name, subparser in commands.items():
        listed = set(re.findall(r"--[a-z0-9][a-z0-9-]*", synopses[name]))
        spellings, required = _options(subparser)
        assert required <= listed, f"docs/cli.md's `refinenet-tf {name}` lacks {sorted(required - listed)}"
        assert listed <= spellings, f"docs/cli.md's `refinenet-tf {name}` lists {sorted(listed - spellings)}"
        for positional in (a for a in subparser._actions if not a.option_strings and a.metavar):
            assert positional.metavar in synopses[name], (name, positional.metavar)
    top = {name for name in synopses if name.startswith("-")}
    assert top == _options(parser)[1], top  # --version



def test_the_griffe_extension_keeps_every_documented_name_checked():
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_examples", os.path.join(DOCS, "griffe_examples.py"))
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    docstring = ("Summary.\n\nArgs:\n    x: an input.\n    scales, flip: augmentation,\n        see segment.\n"
                 "    momentum: of the base.\n    ghost: gone.\n\nExample:\n    >>> 1 + 1\n    2")
    rewritten = extension._rewrite(docstring, parameters={"x", "scales", "flip", "kwargs"}, var_keyword="kwargs",
                                   inherited={"momentum"})
    assert rewritten.split("\n") == [
        "Summary.", "", "Args:", "    x: an input.", "    scales: augmentation,", "        see segment.",
        "    flip: see ``scales``.", "    **kwargs: ``momentum``: of the base.", "    ghost: gone.",  # griffe reports it
        "", "Examples:", "    >>> 1 + 1", "    2"]
