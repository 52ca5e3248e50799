"""The package's folders are layers whose imports only point down, its import graph has no cycle (imports inside
functions count too: no module relies on a function-level import to break a cycle), and ``import refinenet_tf``
loads no TensorFlow."""

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


#: The package's folders, lowest first: a module imports only from its own folder and the folders before it
#: (docs/layout.md). The private helpers and ``options`` at the top level come before every folder, the package's
#: own ``__init__`` (which names everything, loaded when used) after them all.
LAYERS = ("models", "data", "convert", "training", "export", "inference", "tasks", "cli")
_HELPERS = ("_checks", "_files", "_lazy", "_processes", "_version", "options")


def _layer(module):
    """The rank of ``module`` in :data:`LAYERS` (-1 for the helpers, ``len(LAYERS)`` for the package)."""
    parts = module.split(".")
    if len(parts) == 1:
        return len(LAYERS)
    if parts[1] in _HELPERS:
        return -1
    return LAYERS.index(parts[1])


def _graph():
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_every_module_lives_in_a_folder_of_the_layers_or_is_a_helper():
    assert {name.split(".")[1] for name in _graph() if "." in name} == set(LAYERS) | set(_HELPERS)


def test_imports_between_folders_only_point_down():
    upward = sorted(f"{source} -> {target}" for source, targets in _graph().items() for target in targets
                    if _layer(target) > _layer(source))
    assert not upward, "imports that point up the layers " + " < ".join(LAYERS) + ":\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import():
    assert _layer("refinenet_tf.models.layers") < _layer("refinenet_tf.inference.prediction") < _layer("refinenet_tf")
    assert _layer("refinenet_tf._files") < _layer("refinenet_tf.models.layers")


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    # recipes are data that import nothing; the options need no TensorFlow
    assert graph["refinenet_tf.training.recipes"] == set() and graph["refinenet_tf.options"] == set()
    assert "refinenet_tf.inference.prediction" in graph["refinenet_tf.inference.evaluation"]
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_importing_the_package_loads_no_tensorflow():
    code = ("import sys, refinenet_tf, refinenet_tf.training.recipes, refinenet_tf.options, "
            "refinenet_tf.training.runs, refinenet_tf.cli.commands, refinenet_tf.inference.engines; print('tensorflow' in sys.modules, 'tf_keras' in sys.modules, refinenet_tf.__version__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "False", refinenet_tf.__version__]
