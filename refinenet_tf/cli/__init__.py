"""The ``refinenet-tf`` command (:mod:`.commands`), ``make demo``'s job (:mod:`.demo`) and the engines'
benchmark of ``refinenet-tf benchmark`` (:mod:`.benchmark`; the training and input-pipeline benchmarks are scripts
in the repository's ``benchmarks/``)."""

from refinenet_tf._lazy import lazy_names

_NAMES = {"main": "commands", "build_parser": "commands", "run_demo": "demo"}

__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_names(__name__, _NAMES, ("benchmark", "commands", "demo"))
