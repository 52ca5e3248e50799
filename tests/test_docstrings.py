"""Every ``Example:`` in the package's docstrings runs (doctest), so the documentation cannot rot."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest
import tensorflow as tf

import refinenet_tf

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(refinenet_tf.__path__, "refinenet_tf."))


@pytest.mark.parametrize("module_name", ["refinenet_tf"] + MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, extraglobs={"tf": tf, "np": np}, optionflags=doctest.ELLIPSIS,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {module_name} failed (see output)"
