"""docs/layout.md cannot drift from the code: every module of the package is in its table, and every path the
table names exists."""

import os
import re

import refinenet_tf

PACKAGE = os.path.dirname(refinenet_tf.__file__)
ROOT = os.path.dirname(PACKAGE)


def _rows():
    """``{first cell: the whole row}`` of the layout table."""
    with open(os.path.join(ROOT, "docs", "layout.md"), encoding="utf-8") as stream:
        return {line.split("|")[1].strip(): line for line in stream if line.startswith("| `")}


def test_every_module_of_the_package_is_in_the_layout_table():
    rows = _rows()
    missing = []
    for top, folders, names in os.walk(PACKAGE):
        folders[:] = [name for name in folders if name != "__pycache__"]
        for name in sorted(n for n in names if n.endswith(".py")):
            relative = os.path.relpath(os.path.join(top, name), ROOT).replace(os.sep, "/")
            folder = os.path.dirname(relative)
            if folder == "refinenet_tf":  # a module of the top level has a row naming its path
                if not any(f"`{relative}`" in cell for cell in rows):
                    missing.append(relative)
            else:  # a module in a folder is named in its folder's row (its __init__.py by the row itself)
                row = rows.get(f"`{folder}/`")
                if row is None or (name != "__init__.py" and name not in row):
                    missing.append(relative)
    assert not missing, f"docs/layout.md does not list {missing}"


def test_every_path_the_layout_table_names_exists():
    named = [path for cell in _rows() for path in re.findall(r"`([^`]+)`", cell)]
    absent = [path for path in named if not os.path.exists(os.path.join(ROOT, path))]
    assert named and not absent, f"docs/layout.md names paths that do not exist: {absent}"


def test_the_layout_table_lists_the_folders_in_the_order_of_the_layers():
    from tests.test_imports import LAYERS

    folders = [cell.strip("`").split("/")[1] for cell in _rows() if re.fullmatch(r"`refinenet_tf/\w+/`", cell)]
    assert folders == list(LAYERS)
