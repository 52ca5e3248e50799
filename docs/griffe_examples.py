"""A griffe extension for the API reference: reads the package's docstrings the way its tests do.

- ``Example:`` (the package's spelling, run by ``tests/test_docstrings.py``) becomes griffe's ``Examples:``
  section, so the doctest lines render as code, not as Markdown;
- an ``Args:`` entry that documents several parameters at once (``scales, flip, max_side: ...``) becomes one
  entry per parameter, so griffe still checks each name against the signature: a stale name fails the strict
  build;
- a class whose ``__init__`` passes ``**kwargs`` on to a base class (the layers) may document the base class's
  parameters: such an entry becomes a ``**kwargs`` entry when the name is a parameter of a base class's
  ``__init__``; any other unknown name is left for griffe to report.
"""

import re

import griffe

_ENTRY = re.compile(r"^(?P<indent>\s+)(?P<names>\*{0,2}\w+(?:, \*{0,2}\w+)*): (?P<text>.*)$")


def _init(obj):
    function = obj.members.get("__init__") if obj.is_class else obj
    return function if function is not None and not function.is_alias and function.is_function else None


def _signature(obj):
    """``(parameter names, name of the **kwargs parameter or None, parameter names of the bases' __init__)``."""
    function = _init(obj)
    if function is None:
        return set(), None, set()
    names = {parameter.name for parameter in function.parameters}
    var_keyword = next((p.name for p in function.parameters if p.kind is griffe.ParameterKind.var_keyword), None)
    inherited = set()
    if obj.is_class and var_keyword:
        try:
            bases = obj.mro()
        except Exception:  # an unresolved base (e.g. keras.layers.Layer): its own parameters are not known
            bases = []
        for base in bases:
            base_init = _init(base)
            if base_init is not None:
                inherited |= {parameter.name for parameter in base_init.parameters}
    return names, var_keyword, inherited


def _rewrite(text, parameters=frozenset(), var_keyword=None, inherited=frozenset()):
    out, entry_indent, pending = [], None, []
    for line in text.split("\n"):
        if pending and not (entry_indent and line.startswith(entry_indent + " ")):  # the entry's text ended
            out.extend(pending)
            pending = []
        stripped = line.strip()
        if not line.startswith(" ") and stripped.endswith(":") and stripped[:-1].isalpha():
            entry_indent = "" if stripped in ("Args:", "Arguments:") else None
            if stripped == "Example:":
                line = "Examples:"
        elif entry_indent == "" and stripped:
            entry_indent = line[:len(line) - len(line.lstrip())]  # the indent of the first entry
        match = _ENTRY.match(line) if entry_indent and line.startswith(entry_indent) else None
        if match and match["indent"] == entry_indent:
            names = match["names"].split(", ")
            if var_keyword and not set(names) & parameters and set(names) <= inherited:
                listed = ", ".join(f"``{name}``" for name in names)
                out.append(f"{entry_indent}**{var_keyword}: {listed}: {match['text']}")
                continue
            if len(names) > 1:
                out.append(f"{entry_indent}{names[0]}: {match['text']}")
                pending = [f"{entry_indent}{name}: see ``{names[0]}``." for name in names[1:]]
                continue
        out.append(line)
    return "\n".join(out + pending)


def _rewrite_all(obj):
    if obj.docstring is not None:
        signature = _signature(obj) if (obj.is_class or obj.is_function) else (set(), None, set())
        obj.docstring.value = _rewrite(obj.docstring.value, *signature)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite_all(member)


class DoctestExamples(griffe.Extension):
    """Rewrites every docstring of a package once it is loaded (see the module docstring)."""

    def on_package(self, *, pkg, **kwargs):
        _rewrite_all(pkg)
