"""The package's import graph has no cycle, counting imports inside functions too (no module relies on a
function-level import to break a cycle), and ``import refinenet_tf`` loads no TensorFlow."""

import ast
import os
import subprocess
import sys

import refinenet_tf

PACKAGE_DIR = os.path.dirname(refinenet_tf.__file__)
ROOT = os.path.dirname(PACKAGE_DIR)


def _modules():
    """``{module name: its file}`` for every module of the package (``__init__`` files as their package)."""
    found = {}
    for top, _, names in os.walk(PACKAGE_DIR):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(top, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path, modules):
    """The package modules that the file imports anywhere (module level, functions, methods)."""
    targets = set()
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from a.b import c``: the module a.b.c if c is one, else a.b
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: relative import"
            continue
        targets.update(name for name in names if name in modules)
    return targets


def _find_cycle(graph):
    """A cycle of ``graph`` as a list of nodes, or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert {"refinenet_tf.runs", "refinenet_tf.evaluation", "refinenet_tf.recipes"} <= set(graph)
    # The seams of issue 13: training and inference share the run folder's owner; evaluation builds on
    # inference; recipes are data that import nothing.
    assert {"refinenet_tf.runs", "refinenet_tf.recipes"} <= graph["refinenet_tf.training.loop"]
    assert "refinenet_tf.inference" in graph["refinenet_tf.evaluation"]
    assert "refinenet_tf.evaluation" not in graph["refinenet_tf.inference"]
    assert graph["refinenet_tf.recipes"] == set() and graph["refinenet_tf.options"] == set()
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_importing_the_package_loads_no_tensorflow():
    code = ("import sys, refinenet_tf, refinenet_tf.recipes, refinenet_tf.options, refinenet_tf.runs; "
            "print('tensorflow' in sys.modules, 'tf_keras' in sys.modules, refinenet_tf.__version__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False", refinenet_tf.__version__]
