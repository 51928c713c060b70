"""Plans to and from plain data, and files (JSON, YAML, TOML).

The canonical document::

    optbridge: 1                  # IR version (marks the canonical dialect)
    step_unit: iter               # or epoch
    steps_per_epoch: 100          # optional
    optimizer: {type: SGD, lr: 0.1, momentum: 0.9}
    groups:
      - {name: head, params: ["head.*"], lr_mult: 10}
      - {name: rest, params: rest}
    schedule:
      lr: {kind: sequence, parts: [{kind: linear, start_factor: 0.0, steps: 5},
                                   {kind: cosine, steps: 95}], boundaries: [5]}

Several optimizers: ``optimizers: [{name, type, ..., groups: [...]}, ...]``.
``schedule: {kind: ...}`` is shorthand for ``schedule: {lr: {kind: ...}}``.
Loading never executes code: YAML is read with ``safe_load``; expressions are
parsed by :mod:`optbridge.expr`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from . import ir
from .errors import ConfigError, join_path as _join
from .plan import Clip, Group, OptimizerSpec, Plan, Selector

__all__ = ["load", "dump", "loads", "dumps", "to_dict", "from_dict", "node_to_dict", "node_from_dict",
           "selectors_from_config", "expect_mapping"]


# --------------------------------------------------------------------------- errors with paths

def rethrow(prefix: str, err: ConfigError) -> ConfigError:
    """A copy of ``err`` whose path is prefixed with ``prefix``."""
    return err.under(prefix)


def expect_mapping(path: str, v: object) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(path, "must be a mapping", v)
    for k in v:
        if not isinstance(k, str):
            raise ConfigError(path, "keys must be strings", k)
    return v


# --------------------------------------------------------------------------- nodes

def node_from_dict(d: object, path: str = "schedule") -> ir.Node:
    """Build a node from ``{"kind": ..., field: value}``, validating with paths."""
    d = expect_mapping(path, d)
    kind = d.get("kind")
    cls = ir.NODE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"{path}.kind", "must be one of " + ", ".join(ir.NODE_TYPES), kind)
    names = {f.name for f in fields(cls)}
    kw: dict[str, Any] = {}
    for key, v in d.items():
        if key == "kind":
            continue
        if key not in names:
            raise ConfigError(f"{path}.{key}", f"is not a field of {kind} (fields: {', '.join(sorted(names))})", v)
        if key == "parts":
            if not isinstance(v, list) or not v:
                raise ConfigError(f"{path}.parts", "must be a non-empty list of schedules", v)
            v = tuple(node_from_dict(p, f"{path}.parts[{i}]") for i, p in enumerate(v))
        elif isinstance(v, list):
            v = tuple(v)
        kw[key] = v
    try:
        return cls(**kw)
    except ConfigError as e:
        raise rethrow(path, e) from None


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

_GROUP_KEYS = {"name", "params", "schedule", "frozen", "clip"}
_OPT_KEYS = {"name", "type", "groups"}
_PLAN_KEYS = {"optbridge", "dialect", "step_unit", "steps_per_epoch", "total_steps", "optimizer",
              "optimizers", "groups", "schedule", "description"}


def from_dict(d: object, path: str = "") -> Plan:
    """Build a :class:`Plan` from the canonical document (see the module docstring)."""
    d = expect_mapping(path, d)
    for key in d:
        if key not in _PLAN_KEYS:
            raise ConfigError(_join(path, key), "is not a plan field (fields: " + ", ".join(sorted(_PLAN_KEYS)) + ")", d[key])
    if "optimizer" in d and "optimizers" in d:
        raise ConfigError(_join(path, "optimizers"), "cannot be given together with optimizer", d["optimizers"])
    if "optimizers" in d:
        if "groups" in d:
            raise ConfigError(_join(path, "groups"), "must sit inside each optimizer when optimizers is a list", d["groups"])
        raw = d["optimizers"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(_join(path, "optimizers"), "must be a non-empty list", raw)
        opts = tuple(_optimizer(o, _join(path, f"optimizers[{i}]"), None) for i, o in enumerate(raw))
    else:
        opt = d.get("optimizer", {"type": "SGD"})
        opts = (_optimizer(opt, _join(path, "optimizer"), d.get("groups"), _join(path, "groups")),)
    sched = _schedule_map(d.get("schedule", {}), _join(path, "schedule"))
    kw = {k: d[k] for k in ("step_unit", "steps_per_epoch", "total_steps", "description") if k in d and d[k] is not None}
    if "optbridge" in d:
        kw["version"] = d["optbridge"]
    try:
        return Plan(optimizers=opts, schedule=sched, **kw)
    except ConfigError as e:
        raise rethrow(path, e) from None


def _schedule_map(v: object, path: str) -> dict[str, ir.Node]:
    v = expect_mapping(path, v)
    if "kind" in v:
        return {"lr": node_from_dict(v, path)}
    return {h: node_from_dict(n, f"{path}.{h}") for h, n in v.items()}


def _optimizer(o: object, path: str, groups: object = None, groups_path: str | None = None) -> OptimizerSpec:
    o = expect_mapping(path, o)
    if "type" not in o:
        raise ConfigError(f"{path}.type", "is required (SGD, Adam, AdamW, ...)", None, show_value=False)
    options = {k: v for k, v in o.items() if k not in _OPT_KEYS}
    gpath = groups_path or f"{path}.groups"
    graw = o.get("groups", groups)
    if graw is None:
        graw = []
    if not isinstance(graw, list):
        raise ConfigError(gpath, "must be a list of groups", graw)
    gs = tuple(_group(g, f"{gpath}[{i}]") for i, g in enumerate(graw))
    kw = {"name": o["name"]} if "name" in o else {}
    try:
        return OptimizerSpec(type=o["type"], options=options, groups=gs, **kw)
    except ConfigError as e:
        if e.path.startswith("groups"):
            raise rethrow(gpath.rsplit(".groups", 1)[0] if ".groups" in gpath else "", e) from None
        raise rethrow(path, e) from None


def _group(g: object, path: str) -> Group:
    g = expect_mapping(path, g)
    if "name" not in g:
        raise ConfigError(f"{path}.name", "is required", None, show_value=False)
    options = {k: v for k, v in g.items() if k not in _GROUP_KEYS}
    select = selectors_from_config(g.get("params"), f"{path}.params")
    sched = _schedule_map(g.get("schedule", {}), f"{path}.schedule")
    clip = None
    if g.get("clip") is not None:
        c = expect_mapping(f"{path}.clip", g["clip"])
        for k in c:
            if k not in ("max_norm", "norm_type", "value"):
                raise ConfigError(f"{path}.clip.{k}", "is not a clip field (max_norm, norm_type, value)", c[k])
        try:
            clip = Clip(**c)
        except ConfigError as e:
            raise rethrow(f"{path}.clip", e) from None
    try:
        return Group(name=g["name"], select=select, options=options, schedule=sched,
                     frozen=g.get("frozen"), clip=clip)
    except ConfigError as e:
        raise rethrow(path, e) from None


def selectors_from_config(v: object, path: str) -> tuple[Selector, ...]:
    """Selectors from a config value: "rest", a glob, a selector mapping, or a list of them."""
    if v is None:
        return ()
    if v == "rest":
        return (Selector(rest=True),)
    if isinstance(v, (str, Mapping)):
        v = [v]
    if not isinstance(v, list):
        raise ConfigError(path, "must be 'rest', a glob, a selector mapping or a list of them", v)
    out = []
    for i, s in enumerate(v):
        p = f"{path}[{i}]"
        if s == "rest":
            out.append(Selector(rest=True))
        elif isinstance(s, str):
            out.append(Selector(names=(s,)))
        else:
            s = expect_mapping(p, s)
            for k in s:
                if k not in ("names", "regex", "modules", "ndim", "leaf", "rest"):
                    raise ConfigError(f"{p}.{k}", "is not a selector field (names, regex, modules, ndim, leaf, rest)", s[k])
            try:
                out.append(Selector(**{k: (tuple(x) if isinstance(x, list) else x) for k, x in s.items()}))
            except ConfigError as e:
                raise rethrow(p, e) from None
    return tuple(out)


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
    d["groups"] = [_group_to_dict(g) for g in o.groups]
    return d


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
        d["clip"] = {k: v for k, v in (("max_norm", g.clip.max_norm), ("norm_type", g.clip.norm_type),
                                       ("value", g.clip.value)) if v is not None}
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


def loads(text: str, fmt: str = "yaml") -> Plan:
    """Parse a document in ``fmt`` (json, yaml, toml) and build the plan."""
    return _from_any(_parse(text, fmt, "<string>"))


def load(src: str | os.PathLike[str] | Mapping[str, Any]) -> Plan:
    """Load a plan from a path, a document string, or a dict, in any dialect.

    Dialects: the canonical IR (``optbridge: 1``), torch-style
    (``dialect: torch`` or an ``optimizer``/``scheduler`` with torch class names)
    and MindSpore-style (``dialect: mindspore``).

    Raises:
        ConfigError: naming the field path, the rule and the value.
    """
    if isinstance(src, Mapping):
        return _from_any(src)
    if isinstance(src, os.PathLike) or (isinstance(src, str) and "\n" not in src and Path(src).suffix.lower() in _FORMATS):
        p = Path(src)
        if not p.is_file():
            raise ConfigError("", f"config file {str(p)!r} does not exist", str(p), show_value=False)
        fmt = _FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise ConfigError("", "config files must end in .json, .yaml, .yml or .toml", str(p))
        return _from_any(_parse(p.read_text(encoding="utf-8"), fmt, str(p)))
    if isinstance(src, str):
        return _from_any(_parse(src, "json" if src.lstrip().startswith("{") else "yaml", "<string>"))
    raise ConfigError("", "load() takes a path, a document string or a dict", type(src).__name__)


def _from_any(d: Mapping[str, Any]) -> Plan:
    from .dialects import detect, from_dialect
    d = expect_mapping("", d)
    dialect = detect(d)
    if dialect == "optbridge":
        return from_dict({k: v for k, v in d.items() if k != "dialect"})
    return from_dialect(dialect, d)


def _parse(text: str, fmt: str, where: str) -> Mapping[str, Any]:
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "yaml":
            import yaml
            data = yaml.safe_load(text)
        elif fmt == "toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
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
