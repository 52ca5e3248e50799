"""A griffe extension for the API reference: reads the package's docstrings the way its tests do.

- ``Example:`` (the package's spelling, run by ``tests/test_docstrings.py``) becomes griffe's ``Examples:``
  section, so the doctest lines render as code, not as Markdown;
- an ``Args:`` entry that documents several parameters at once (``scales, flip, max_side: ...``) becomes one
  entry per parameter, so griffe still checks each name against the signature (a stale name fails the strict
  build); where the names are none of the signature's and it has ``**kwargs`` (layers passing arguments on
  to their base class), the entry documents ``**kwargs``.
"""

import re

import griffe

_GROUPED = re.compile(r"^(?P<indent>\s+)(?P<names>\*{0,2}\w+(?:, \*{0,2}\w+)+): (?P<text>.*)$")


def _parameters(obj):
    """``(names, name of the **kwargs parameter or None)`` of a function, or of a class's ``__init__``."""
    function = obj.members.get("__init__") if obj.is_class else obj
    if function is None or not function.is_function:
        return set(), None
    names = {parameter.name for parameter in function.parameters}
    var_keyword = [p.name for p in function.parameters if p.kind is griffe.ParameterKind.var_keyword]
    return names, (var_keyword[0] if var_keyword else None)


def _rewrite(text, parameters=frozenset(), var_keyword=None):
    lines, out, in_args = text.split("\n"), [], False
    for line in lines:
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:"):
            in_args = True
        elif stripped.endswith(":") and not line.startswith(" ") and stripped[:-1].isalpha():
            in_args = False
        if re.fullmatch(r"Example:", stripped) and not line.startswith("    "):
            line = line.replace("Example:", "Examples:")
        match = _GROUPED.match(line) if in_args else None
        if match:
            names = match["names"].split(", ")
            if var_keyword and not set(names) & parameters:
                listed = ", ".join(f"``{name}``" for name in names)
                out.append(f"{match['indent']}**{var_keyword}: {listed}: {match['text']}")
                continue
            out.append(f"{match['indent']}{names[0]}: {match['text']}")
            out.extend(f"{match['indent']}{name}: see ``{names[0]}``." for name in names[1:])
            continue
        out.append(line)
    return "\n".join(out)


def _rewrite_all(obj):
    if obj.docstring is not None:
        parameters, var_keyword = _parameters(obj) if (obj.is_class or obj.is_function) else (set(), None)
        obj.docstring.value = _rewrite(obj.docstring.value, parameters, var_keyword)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite_all(member)


class DoctestExamples(griffe.Extension):
    """Rewrites every docstring of a package once it is loaded (see the module docstring)."""

    def on_package(self, *, pkg, **kwargs):
        _rewrite_all(pkg)
