"""Plans to and from plain data, and files (JSON, YAML, TOML).

Reading: :func:`load` / :func:`loads` parse a document, find its dialect
(:mod:`optbridge.dialects`: the canonical IR of
:mod:`optbridge.dialects.canonical`, torch, MindSpore, MMEngine, timm, Hugging
Face) and build the plan. Writing: :func:`to_dict` / :func:`dumps` /
:func:`dump` give the canonical document. Loading never executes code: YAML is
read with ``safe_load``; expressions are parsed by :mod:`optbridge.expr`.

What :func:`load` does with a string (a path, or the text of a document):

* a string with a newline, or starting with ``{``, is document text;
* any other string names a file when it is an existing path, ends in ``.json``,
  ``.yaml``, ``.yml`` or ``.toml``, or has no colon (a one-line YAML mapping
  needs one: ``"optbridge: 1"``); such a path must be a readable UTF-8 file, or
  the error says it does not exist, is a directory, or is not text;
* other one-line strings (``"{optbridge: 1, ...}"``, ``"optbridge: 1"``) are
  document text. :func:`loads` always takes text.

The shared reading helpers (:func:`expect_mapping`, :func:`selectors_from_config`,
:func:`node_from_dict`) live in :mod:`optbridge.configio`, the canonical reader
(:func:`from_dict`) in :mod:`optbridge.dialects.canonical`; both names stay
importable from here.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from . import ir
from .configio import expect_mapping, node_from_dict, selectors_from_config
from .dialects import detect, from_dialect
from .dialects import module as dialect_module
from .dialects.canonical import from_dict
from .errors import ConfigError
from .plan import Clip, Group, OptimizerSpec, Plan, Selector

__all__ = ["load", "dump", "loads", "dumps", "to_dict", "from_dict", "node_to_dict", "node_from_dict",
           "selectors_from_config", "expect_mapping"]


# --------------------------------------------------------------------------- nodes

def node_to_dict(node: ir.Node) -> dict[str, Any]:
    """``{"kind": ..., non-default fields...}`` for a node (expressions as strings)."""
    out: dict[str, Any] = {"kind": node.kind}
    for f in fields(node):
        v = getattr(node, f.name)
        if f.default is not MISSING and _same(v, f.default):
            continue
        if f.name == "expr":
            v = v.source
        elif f.name == "parts":
            v = [node_to_dict(p) for p in v]
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- plan

def to_dict(plan: Plan) -> dict[str, Any]:
    """The canonical document of ``plan`` (JSON-compatible)."""
    out: dict[str, Any] = {"optbridge": plan.version}
    if plan.description is not None:
        out["description"] = plan.description
    out["step_unit"] = plan.step_unit
    if plan.steps_per_epoch is not None:
        out["steps_per_epoch"] = plan.steps_per_epoch
    if plan.total_steps is not None:
        out["total_steps"] = plan.total_steps
    opts = [_optimizer_to_dict(o) for o in plan.optimizers]
    if len(opts) == 1 and plan.optimizers[0].name == "optimizer":
        groups = opts[0].pop("groups")
        opts[0].pop("name", None)
        out["optimizer"] = opts[0]
        out["groups"] = groups
    else:
        out["optimizers"] = opts
    if plan.schedule:
        out["schedule"] = {h: node_to_dict(n) for h, n in plan.schedule.items()}
    return out


def _optimizer_to_dict(o: OptimizerSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"name": o.name, "type": o.type, **_plain(o.options)}
    if o.clip is not None:
        d["clip"] = _clip_to_dict(o.clip)
    d["groups"] = [_group_to_dict(g) for g in o.groups]
    return d


def _clip_to_dict(c: Clip) -> dict[str, Any]:
    return {k: v for k, v in (("max_norm", c.max_norm), ("norm_type", c.norm_type), ("value", c.value))
            if v is not None}


def _group_to_dict(g: Group) -> dict[str, Any]:
    d: dict[str, Any] = {"name": g.name}
    if g.select:
        d["params"] = [_selector_to_dict(s) for s in g.select]
    d.update(_plain(g.options))
    if g.schedule:
        d["schedule"] = {h: node_to_dict(n) for h, n in g.schedule.items()}
    if g.frozen is not None:
        d["frozen"] = g.frozen
    if g.clip is not None:
        d["clip"] = _clip_to_dict(g.clip)
    return d


def _selector_to_dict(s: Selector) -> Any:
    if s.rest:
        return "rest"
    fields_ = {k: list(getattr(s, k)) for k in ("names", "regex", "modules", "ndim", "leaf") if getattr(s, k)}
    if list(fields_) == ["names"] and len(fields_["names"]) == 1:
        return fields_["names"][0]
    return fields_


def _plain(m: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in m.items()}


# --------------------------------------------------------------------------- documents and files

_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}


def loads(text: str, fmt: str = "yaml", *, dialect: str | None = None, **options: Any) -> Plan:
    """Parse a document in ``fmt`` (json, yaml, toml) and build the plan, in any dialect.

    ``dialect`` and ``options`` are as in :func:`load`.

    Raises:
        ConfigError: the text is not valid ``fmt``, or the document is not a valid plan.
    """
    if not isinstance(text, str):
        raise ConfigError("", "loads() takes the text of a document (str)", type(text).__name__)
    return _from_any(_parse(text, fmt, "<string>"), dialect, options)


def load(src: str | os.PathLike[str] | Mapping[str, Any], *, dialect: str | None = None, **options: Any) -> Plan:
    """Load a plan from a path, a document string, or a dict, in any dialect.

    Dialects: the canonical IR (``optbridge: 1``), torch-style
    (``dialect: torch`` or an ``optimizer``/``scheduler`` with torch class names),
    MindSpore-style (``dialect: mindspore``), and the library dialects ``mmengine``,
    ``timm`` and ``hf`` (see :mod:`optbridge.dialects`). Which strings are paths
    is said in the module docstring.

    Args:
        src: A path, a document string, or a dict.
        dialect: The document's dialect when it does not say (``dialect:`` key) or
            detection should not decide.
        **options: Passed to the dialect's reader: ``model=`` (an ``nn.Module``: mmengine
            and timm rules that depend on module types or layer ids), ``steps_per_epoch=``
            (mmengine).

    Raises:
        ConfigError: naming the field path, the rule and the value; or the file
            that does not exist, is a directory, or is not UTF-8 text.
    """
    if isinstance(src, Mapping):
        return _from_any(src, dialect, options)
    if isinstance(src, os.PathLike) or (isinstance(src, str) and _names_a_file(src)):
        p = Path(src)
        return _from_any(_parse(_read(p), _format_of(p), str(p)), dialect, options)
    if isinstance(src, str):
        return _from_any(_parse(src, "json" if src.lstrip().startswith("{") else "yaml", "<string>"), dialect, options)
    raise ConfigError("", "load() takes a path, a document string or a dict", type(src).__name__)


def _names_a_file(s: str) -> bool:
    """Whether :func:`load` reads string ``s`` as a path (the rule in the module docstring)."""
    if "\n" in s or s.lstrip().startswith("{"):
        return False
    try:
        exists = Path(s).exists()
    except (OSError, ValueError):  # a NUL byte, a name too long
        exists = False
    return exists or Path(s).suffix.lower() in _FORMATS or ":" not in s


def _format_of(p: Path) -> str:
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ConfigError("", "config files must end in .json, .yaml, .yml or .toml", str(p))
    return fmt


def _read(p: Path) -> str:
    """The text of config file ``p``; every failure is a ConfigError naming the file."""
    try:
        if p.is_dir():
            raise ConfigError("", f"{str(p)!r} is a directory, not a config file", None, show_value=False)
        if not p.is_file():
            raise ConfigError("", f"config file {str(p)!r} does not exist (no such file)", None, show_value=False)
        _format_of(p)
        data = p.read_bytes()
    except ConfigError:
        raise
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError("", f"cannot read config file {str(p)!r}: {reason}", None, show_value=False) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("", f"config file {str(p)!r} is not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); "
                          "configs are JSON, YAML or TOML text", None, show_value=False) from None


def _from_any(d: Mapping[str, Any], dialect: str | None = None, options: Mapping[str, Any] | None = None) -> Plan:
    d = expect_mapping("", d)
    name = detect(d if dialect is None else {**d, "dialect": dialect})
    if options:
        import inspect
        takes = inspect.signature(dialect_module(name).parse).parameters
        extra = sorted(k for k in options if k not in takes)
        if extra:
            raise ConfigError("options", f"the {name} dialect's reader does not take " + ", ".join(extra), None,
                              show_value=False)
    return from_dialect(name, d, **(options or {}))


def _parse(text: str, fmt: str, where: str) -> Mapping[str, Any]:
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "yaml":
            import yaml
            data = yaml.safe_load(text)
        elif fmt == "toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            raise ConfigError("", "format must be json, yaml or toml", fmt)
    except ConfigError:
        raise
    except Exception as e:  # parser errors of json/yaml/toml
        msg = " ".join(str(e).split())
        raise ConfigError("", f"{where} is not valid {fmt.upper()}: {msg}", None, show_value=False) from None
    if not isinstance(data, Mapping):
        raise ConfigError("", f"{where} must hold a mapping at the top level", type(data).__name__)
    return data


def dumps(plan: Plan, fmt: str = "yaml") -> str:
    """The canonical document of ``plan`` as text in ``fmt`` (json, yaml, toml)."""
    d = to_dict(plan)
    if fmt == "json":
        return json.dumps(d, indent=2) + "\n"
    if fmt == "yaml":
        import yaml
        return yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=100)
    if fmt == "toml":
        return _toml(d)
    raise ConfigError("format", "must be json, yaml or toml", fmt)


def dump(plan: Plan, path: str | os.PathLike[str] | None = None, fmt: str | None = None) -> str:
    """Write ``plan`` to ``path`` (format from the suffix) and return the text."""
    if fmt is None:
        fmt = _FORMATS.get(Path(path).suffix.lower(), "yaml") if path is not None else "yaml"
    text = dumps(plan, fmt)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------------- a small TOML writer

def _toml(d: Mapping[str, Any]) -> str:
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in d.items() if v is not None]
    return "\n".join(lines) + "\n"


def _toml_key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else _toml_string(k)


def _toml_string(s: str) -> str:
    """A TOML basic string: escape quotes, backslashes and every control character (DEL included)."""
    out = []
    for c in s:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'



def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None) + "}"
    raise ConfigError("", "cannot be written as TOML", v)
