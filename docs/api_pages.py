"""Writes the API reference (``docs/api/``) and its part of the nav in ``mkdocs.yml`` from the package's ``__all__``
lists, so that the reference cannot drift from the code: ``tests/test_docs.py`` fails when what is written differs
from what this script would write.

    .venv/bin/python docs/api_pages.py           # write the pages and the nav
    .venv/bin/python docs/api_pages.py --check   # exit 1 if they are stale

Each folder of the package (and the package itself) gets a page with its docstring and a table of its public
names (its ``__all__``), each linked to where mkdocstrings renders it: the page of the module that defines it,
one page per public module.
"""

import importlib
import inspect
import os
import pkgutil
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(ROOT, "docs", "api")
NAV_START = "  - API reference:\n"


def public_modules():
    """Every public module and package of refinenet_tf (no part of its name starts with ``_``), sorted."""
    import refinenet_tf

    names = {"refinenet_tf"} | {name for _, name, _ in pkgutil.walk_packages(refinenet_tf.__path__, "refinenet_tf.")
                                if not any(part.startswith("_") for part in name.split("."))}
    return sorted(names)


def packages():
    """The packages: the top level and its folders (those with an ``__init__.py``), sorted."""
    return [name for name in public_modules() if hasattr(importlib.import_module(name), "__path__")]


def _defines(module_name, name):
    """Whether the source of a module (or a package's ``__init__``) defines ``name`` at its top level."""
    source = inspect.getsource(importlib.import_module(module_name))
    return re.search(rf"^(class|def) {re.escape(name)}\b|^{re.escape(name)}\s*[:=]", source, re.M) is not None


def defining_module(package, name):
    """The public module whose source defines ``package.name`` (a name of the package's ``__all__``); it must list
    the name in its own ``__all__`` too, which is what mkdocstrings renders."""
    found = [module for module in public_modules() if _defines(module, name)]
    if len(found) != 1:
        raise LookupError(f"{package}.{name} is in {package}.__all__ but is defined in "
                          f"{found or 'no public module'}: define it in one.")
    if name not in getattr(importlib.import_module(found[0]), "__all__", ()):
        raise LookupError(f"{package}.{name} is defined in {found[0]}, whose __all__ does not list it.")
    return found[0]


def comment_above(module_name, name):
    """The ``#:`` comment above ``NAME = ...`` in a module's source (how a constant is documented), or ``""``."""
    lines = inspect.getsource(importlib.import_module(module_name)).splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"{name} = ") or line.startswith(f"{name}: "):
            comment = []
            while index > 0 and lines[index - 1].startswith("#:"):
                index -= 1
                comment.insert(0, lines[index][2:].strip())
            return " ".join(comment)
    return ""


def summary(module_name, name):
    """The first sentence of the docstring of ``module.name`` (a class or function), or its ``#:`` comment (a
    constant); ``""`` if it has neither."""
    value = getattr(importlib.import_module(module_name), name)
    if inspect.isclass(value) or inspect.isroutine(value):
        doc = inspect.getdoc(value) or ""
        if value.__doc__ is None or (inspect.isclass(value) and "__doc__" not in vars(value)):
            doc = ""
    else:
        doc = comment_above(module_name, name)
    text = " ".join(doc.split("\n\n")[0].split())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")  # reST roles and literals as Markdown
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def _cell(text):
    return text.replace("|", "\\|")


def package_page(package):
    module = importlib.import_module(package)
    names = sorted(getattr(module, "__all__", ()), key=str.lower)
    names = [name for name in names if not name.startswith("__")]
    lines = [f"# `{package}`", "", f"::: {package}", ""]
    if not any(_defines(package, name) for name in names):  # its names live in its modules' pages
        lines[3:3] = ["    options:", "      members: false"]
    if names:
        lines += ["## Public names", "", "| name | defined in | what |", "|---|---|---|"]
        for name in names:
            where = defining_module(package, name)
            lines.append(f"| [`{name}`]({where}.md#{where}.{name}) | `{where}` | {_cell(summary(where, name))} |")
        lines.append("")
    children = [name for name in public_modules() if name.rsplit(".", 1)[0] == package and name != package]
    if children:
        lines += ["## Modules", ""] + [f"- [`{child}`]({child}.md)" for child in children] + [""]
    return "\n".join(lines)


def module_page(module):
    return f"# `{module}`\n\n::: {module}\n"


def pages():
    """``{file name: text}`` of every page of docs/api/, the index included."""
    written = {}
    for name in public_modules():
        written[f"{name}.md"] = package_page(name) if name in packages() else module_page(name)
    index = ["# API reference", "",
             "Generated by `docs/api_pages.py` from the package's `__all__` lists and docstrings (mkdocstrings): "
             "a page per folder, with its public names, and a page per module.", ""]
    for package in packages():
        modules = [name for name in public_modules() if name.rsplit(".", 1)[0] == package and name not in packages()]
        index.append(f"- [`{package}`]({package}.md)" + (": " + ", ".join(
            f"[`{name.rsplit('.', 1)[1]}`]({name}.md)" for name in modules) if modules else ""))
    written["index.md"] = "\n".join(index) + "\n"
    return written


def nav():
    """The API reference's part of mkdocs.yml's nav (the end of the file)."""
    lines = [NAV_START, "      - api/index.md\n"]
    for name in public_modules():
        lines.append(f"      - {name}: api/{name}.md\n")
    return "".join(lines)


def stale():
    """What differs between the written reference and the generated one: a list of file names."""
    differing = []
    wanted = pages()
    present = set(os.listdir(API)) if os.path.isdir(API) else set()
    for name in sorted(present | set(wanted)):
        path = os.path.join(API, name)
        current = open(path, encoding="utf-8").read() if name in present else None
        if current != wanted.get(name):
            differing.append(f"docs/api/{name}")
    config = open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8").read()
    if NAV_START not in config or config[config.index(NAV_START):] != nav():
        differing.append("mkdocs.yml (the API reference's nav)")
    return differing


def write():
    os.makedirs(API, exist_ok=True)
    wanted = pages()
    for name in os.listdir(API):
        if name not in wanted:
            os.remove(os.path.join(API, name))
    for name, text in wanted.items():
        with open(os.path.join(API, name), "w", encoding="utf-8") as stream:
            stream.write(text)
    path = os.path.join(ROOT, "mkdocs.yml")
    config = open(path, encoding="utf-8").read()
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(config[:config.index(NAV_START)] + nav())


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    if sys.argv[1:] == ["--check"]:
        differing = stale()
        print("stale: " + ", ".join(differing) if differing else "the API reference is up to date")
        sys.exit(1 if differing else 0)
    write()
