"""Write the generated module's text from the templates (``optbridge/port/templates/``) and a :class:`PortSpec`.

The templates are real Python files (ruff and mypy check them) with marked
blocks: ``<imports>``, ``<body>`` and ``<main>`` are copied, ``<template>``
(placeholder constants and the imports that make a template valid on its own)
is dropped. The module is: a docstring saying what it holds and how to use it,
the merged imports, the port's constants, :mod:`.templates.common`'s body, the
framework's body, and ``if __name__ == "__main__"`` (a self-check).
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import resources
from pprint import pformat
from typing import Any

from .. import __version__
from .spec import PortSpec

__all__ = ["render", "module_name", "constants"]

_BLOCK = re.compile(r"^# <(?P<name>[a-z]+)>\n(?P<text>.*?)^# </(?P=name)>\n", re.S | re.M)


def module_name(framework: str) -> str:
    """The generated module's name: ``optim_torch``, ``optim_mindspore``, ``optim_megengine``."""
    return f"optim_{framework}"


def _blocks(name: str) -> dict[str, str]:
    text = resources.files("optbridge.port.templates").joinpath(f"{name}.py").read_text(encoding="utf-8")
    return {m["name"]: m["text"] for m in _BLOCK.finditer(text)}


def _imports(*blocks: str) -> str:
    """The blocks' import statements merged and sorted (``__future__``, standard library, third party); imports
    of the templates themselves are dropped (their code is inlined)."""
    plain: set[tuple[str, str | None]] = set()
    froms: dict[str, set[str]] = {}
    for block in blocks:
        for stmt in ast.parse(block).body:
            if isinstance(stmt, ast.Import):
                plain.update((a.name, a.asname) for a in stmt.names)
            elif isinstance(stmt, ast.ImportFrom) and not (stmt.module or "").startswith("optbridge.port.templates"):
                froms.setdefault(stmt.module or "", set()).update(
                    a.name + (f" as {a.asname}" if a.asname else "") for a in stmt.names)
    future = [f"from __future__ import {', '.join(sorted(froms.pop('__future__')))}"] if "__future__" in froms else []
    std: list[tuple[bool, str, str]] = []
    third: list[tuple[bool, str, str]] = []
    for mod, alias in plain:
        (std if mod.split(".")[0] in sys.stdlib_module_names else third).append(
            (False, mod, f"import {mod}" + (f" as {alias}" if alias else "")))
    for mod, names in froms.items():
        (std if mod.split(".")[0] in sys.stdlib_module_names else third).append(
            (True, mod, f"from {mod} import {', '.join(sorted(names, key=_by_type))}"))
    sections = [future, [t for *_, t in sorted(std)], [t for *_, t in sorted(third)]]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def _by_type(name: str) -> tuple[int, str]:
    """isort's order of imported names: CONSTANTS, Classes, functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def _literal(value: Any) -> str:
    """A Python literal: a list one element per line (each on one line when it fits), else ``pformat``."""
    if isinstance(value, list) and value:
        items = []
        for v in value:
            text = repr(v)
            items.append(text if len(text) <= 112 else pformat(v, width=112, sort_dicts=False).replace("\n", "\n    "))
        return "[\n    " + ",\n    ".join(items) + ",\n]"
    return pformat(value, width=116, sort_dicts=False)


def constants(spec: PortSpec, columns: list[dict[str, Any]], source: str) -> str:
    """The constants block: everything the module knows about the port (no values: those are in the tables)."""
    groups = [{"name": g.name, "optimizer": g.optimizer, "index": g.index, "select": g.select, "options": g.options,
               "frozen": g.frozen, "clip": g.clip, "start": g.start} for g in spec.groups]
    optimizers = [{"name": o.name, "type": o.type, "class": o.choice.cls, "api": o.choice.api,
                   "options": o.options, "clip": o.clip} for o in spec.optimizers]
    slots = [{"group": s.group, "hyper": s.hyper, "key": s.key, "position": s.position, "column": s.column,
              "scale": s.scale, "path": s.path} for s in spec.slots]
    rows = [
        ("HERE", "Path(__file__).resolve().parent"),
        ("FRAMEWORK", repr(spec.framework)),
        ("FORM", repr(spec.form)),
        ("SOURCE", repr(source)),
        ("OPTBRIDGE_VERSION", repr(__version__)),
        ("FINGERPRINT", repr(spec.fingerprint)),
        ("STEP_UNIT", repr(spec.unit)),
        ("STEPS_PER_EPOCH", repr(spec.steps_per_epoch)),
        ("#: Updates the tables hold (update k = the k-th optimizer update, from 0).", None),
        ("TOTAL", repr(spec.total)),
        ("#: The first update without a value (None: every schedule holds its last value).", None),
        ("HORIZON", repr(spec.horizon)),
        ("WHY", repr(spec.why)),
        ("CHUNK", "4096"),
        ("#: One float64 .npy per column: value(slot, k) = slot['scale'] * column[k].", None),
        ("COLUMNS", _literal(columns)),
        ("OPTIMIZERS", _literal(optimizers)),
        ("GROUPS", _literal(groups)),
        ("EXCLUDED", _literal([{"name": n, "select": s} for n, s in spec.excluded])),
        ("SLOTS", _literal(slots)),
        ("HELD", _literal([{"group": g, "value": v} for g, v in spec.held])),
    ]
    return "\n".join(name if value is None else f"{name} = {value}" for name, value in rows) + "\n"


def render(spec: PortSpec, columns: list[dict[str, Any]], *, source: str, docstring: str) -> str:
    """The generated module's text."""
    common = _blocks("common")
    fw = _blocks(f"{spec.framework}_module")
    head = f'"""{docstring.rstrip()}\n"""\n\n' + _imports(common["imports"], fw["imports"]) + "\n" + \
        constants(spec, columns, source)
    return "\n\n".join(p.strip("\n") + "\n" for p in (head, common["body"], fw["body"], fw["main"]) if p.strip())
