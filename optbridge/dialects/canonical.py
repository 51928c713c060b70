"""The canonical dialect: optbridge's own IR document (``optbridge: 1``).

The document::

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
An optimizer is required: a document without ``optimizer`` or ``optimizers``
is an error (it used to become SGD with torch's default lr 1e-3, silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..configio import expect_mapping, rethrow, schedule_map, selectors_from_config
from ..configio import join_path as _join
from ..errors import ConfigError
from ..plan import Clip, Group, OptimizerSpec, Plan

__all__ = ["parse", "looks_like", "from_dict", "PLAN_KEYS"]

_GROUP_KEYS = {"name", "params", "schedule", "frozen", "clip"}
_OPT_KEYS = {"name", "type", "groups", "clip"}
#: Top-level keys of the canonical document.
PLAN_KEYS = ("optbridge", "dialect", "step_unit", "steps_per_epoch", "total_steps", "optimizer",
             "optimizers", "groups", "schedule", "description")
#: Keys only the canonical document uses (besides ``optbridge``).
_MARKERS = ("schedule", "groups", "optimizers")


def looks_like(doc: Mapping[str, Any]) -> bool:
    """True when ``doc`` has a key only the canonical document uses (``schedule``, ``groups``, ``optimizers``)."""
    return any(k in doc for k in _MARKERS)


def from_dict(d: object, path: str = "") -> Plan:
    """Build a :class:`Plan` from the canonical document (see the module docstring).

    Raises:
        ConfigError: naming the field path, the rule and the value.
    """
    d = expect_mapping(path, d)
    for key in d:
        if key not in PLAN_KEYS:
            raise ConfigError(_join(path, key), "is not a plan field (fields: " + ", ".join(sorted(PLAN_KEYS)) + ")",
                              d[key])
    if d.get("dialect", "optbridge") != "optbridge":
        raise ConfigError(_join(path, "dialect"), "must be optbridge here", d["dialect"])
    sched = schedule_map(d.get("schedule", {}), _join(path, "schedule"))  # its errors first: the most specific
    if "optimizer" in d and "optimizers" in d:
        raise ConfigError(_join(path, "optimizers"), "cannot be given together with optimizer", d["optimizers"])
    if "optimizers" in d:
        if "groups" in d:
            raise ConfigError(_join(path, "groups"), "must sit inside each optimizer when optimizers is a list",
                              d["groups"])
        raw = d["optimizers"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(_join(path, "optimizers"), "must be a non-empty list", raw)
        opts = tuple(_optimizer(o, _join(path, f"optimizers[{i}]"), None) for i, o in enumerate(raw))
    elif "optimizer" in d:
        opts = (_optimizer(d["optimizer"], _join(path, "optimizer"), d.get("groups"), _join(path, "groups")),)
    else:
        raise ConfigError(_join(path, "optimizer"), "is required (e.g. {type: SGD, lr: 0.1}), or optimizers: [...] "
                          "for several", None, show_value=False)
    kw = {k: d[k] for k in ("step_unit", "steps_per_epoch", "total_steps",
                            "description") if k in d and d[k] is not None}
    if "optbridge" in d:
        kw["version"] = d["optbridge"]
    try:
        return Plan(optimizers=opts, schedule=sched, **kw)
    except ConfigError as e:
        raise rethrow(path, e) from None


def parse(doc: Mapping[str, Any], *, path: str = "") -> Plan:
    """The dialect entry point: :func:`from_dict`."""
    return from_dict(doc, path)


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
    kw: dict[str, Any] = {"name": o["name"]} if "name" in o else {}
    clip = _clip(o.get("clip"), f"{path}.clip")
    if clip is not None:
        kw["clip"] = clip
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
    sched = schedule_map(g.get("schedule", {}), f"{path}.schedule")
    clip = _clip(g.get("clip"), f"{path}.clip")
    try:
        return Group(name=g["name"], select=select, options=options, schedule=sched,
                     frozen=g.get("frozen"), clip=clip)
    except ConfigError as e:
        raise rethrow(path, e) from None


def _clip(raw: object, path: str) -> Clip | None:
    """A ``clip: {max_norm, norm_type} | {value}`` mapping (group level or optimizer level)."""
    if raw is None:
        return None
    c = expect_mapping(path, raw)
    for k in c:
        if k not in ("max_norm", "norm_type", "value"):
            raise ConfigError(f"{path}.{k}", "is not a clip field (max_norm, norm_type, value)", c[k])
    try:
        return Clip(**c)
    except ConfigError as e:
        raise rethrow(path, e) from None
