"""Reading plain config data: the checks that :mod:`optbridge.serialize` and every dialect share.

This module sits below both: it imports the IR, the plan dataclasses and the
errors, never :mod:`optbridge.serialize` or :mod:`optbridge.dialects`, so a
dialect can use it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from . import ir
from .errors import ConfigError, join_path
from .plan import Selector

__all__ = ["join_path", "rethrow", "expect_mapping", "expect_list", "node_from_dict", "schedule_map",
           "selectors_from_config", "SELECTOR_FIELDS"]

#: Keys of a selector mapping (``params: [{names: [...], ndim: [1]}]``).
SELECTOR_FIELDS = ("names", "regex", "modules", "ndim", "leaf", "rest")


def rethrow(prefix: str, err: ConfigError) -> ConfigError:
    """A copy of ``err`` whose path is prefixed with ``prefix``."""
    return err.under(prefix)


def expect_mapping(path: str, v: object) -> Mapping[str, Any]:
    """``v`` if it is a mapping with string keys.

    Raises:
        ConfigError: ``path: must be a mapping`` or ``path: keys must be strings``.
    """
    if not isinstance(v, Mapping):
        raise ConfigError(path, "must be a mapping", v)
    for k in v:
        if not isinstance(k, str):
            raise ConfigError(path, "keys must be strings", k)
    return v


def expect_list(path: str, v: object, what: str = "a list") -> list[Any]:
    """``v`` as a list (a tuple is accepted).

    Raises:
        ConfigError: ``path: must be <what>``.
    """
    if not isinstance(v, (list, tuple)):
        raise ConfigError(path, f"must be {what}", v)
    return list(v)


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


def schedule_map(v: object, path: str) -> dict[str, ir.Node]:
    """``{hyper: node}`` from ``{lr: {kind: ...}, ...}``; a bare ``{kind: ...}`` means lr."""
    v = expect_mapping(path, v)
    if "kind" in v:
        return {"lr": node_from_dict(v, path)}
    return {h: node_from_dict(n, f"{path}.{h}") for h, n in v.items()}


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
                if k not in SELECTOR_FIELDS:
                    raise ConfigError(f"{p}.{k}", "is not a selector field (" + ", ".join(SELECTOR_FIELDS) + ")", s[k])
            try:
                fields_: dict[str, Any] = {k: (tuple(x) if isinstance(x, list) else x) for k, x in s.items()}
                out.append(Selector(**fields_))
            except ConfigError as e:
                raise rethrow(p, e) from None
    return tuple(out)
