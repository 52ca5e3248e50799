"""Packages whose public names load when first used, so that importing one (``refinenet-tf --help``, the recipe
list) imports no TensorFlow: a package's ``__getattr__`` and ``__dir__`` over ``{name: its submodule}``."""

import importlib
import sys


def lazy_names(package, names, submodules=()):
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps a public name to the submodule (relative to
    ``package``) that defines it; ``submodules`` are loaded by their own name."""

    def __getattr__(name):
        if name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names) | set(submodules))

    return __getattr__, __dir__
