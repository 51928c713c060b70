"""Helpers shared by the dialect readers: keyword checks, IR-error translation, document checks.

The config-reading helpers every dialect needs (:func:`expect_mapping`,
:func:`selectors_from_config`, :func:`node_from_dict`, ...) live in
:mod:`optbridge.configio` and are re-exported here, so a dialect module imports
from ``._common`` only, and never from :mod:`optbridge.serialize` (which
imports the dialects).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .. import ir
from ..configio import expect_list, expect_mapping, node_from_dict, schedule_map, selectors_from_config
from ..errors import ConfigError
from ..errors import join_path as join

__all__ = ["REQUIRED", "join", "suggest", "check_keywords", "make_node", "translate", "rename_path", "group_path",
           "description", "check_document", "expect_mapping", "expect_list", "node_from_dict", "schedule_map",
           "selectors_from_config"]


class _Required:
    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "REQUIRED"


#: Marks a keyword argument without a default in a signature table.
REQUIRED: Any = _Required()


def suggest(word: object, options: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the closest option, or ``""``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    if not close:  # case-insensitive second try: "steplr" -> "StepLR"
        lowered = {o.lower(): o for o in options}
        close = [lowered[c] for c in difflib.get_close_matches(word.lower(), sorted(lowered), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keywords(path: str, given: Mapping[str, Any], signature: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Check ``given`` against ``signature`` (name -> default or REQUIRED); return the filled arguments.

    An unknown keyword is an error listing the accepted ones (with a close match);
    a missing required one is an error naming the signature.
    """
    for key, v in given.items():
        if key not in signature:
            accepted = ", ".join(signature)
            raise ConfigError(join(path, str(key)), f"is not an argument of {what}{suggest(key, signature)} "
                              f"(accepted: {accepted})", v)
    out: dict[str, Any] = {}
    for key, default in signature.items():
        if key in given:
            out[key] = given[key]
        elif default is REQUIRED:
            sig = ", ".join(k if d is REQUIRED else f"{k}={d!r}" for k, d in signature.items())
            raise ConfigError(join(path, key), f"is required ({what}({sig}))", None, show_value=False)
        else:
            out[key] = default
    return out


_HEAD = re.compile(r"^([^.\[]*)(.*)$", re.S)


def rename_path(path: str, names: Mapping[str, str]) -> str:
    """Replace the first component of ``path`` through ``names`` (``steps[0]`` -> ``T_max[0]``)."""
    m = _HEAD.match(path)
    assert m is not None
    head, rest = m.group(1), m.group(2)
    return names.get(head, head) + rest


def translate(err: ConfigError, path: str, names: Mapping[str, str]) -> ConfigError:
    """``err`` raised by an IR node, with its field renamed to the dialect's name and put under ``path``."""
    renamed = ConfigError(rename_path(err.path, names), err.rule, err.value, show_value=err.show_value)
    return renamed.under(path)


def make_node(cls: type[ir.Node], path: str, names: Mapping[str, str], **kw: Any) -> ir.Node:
    """``cls(**kw)``; a validation error comes back in the dialect's names, under ``path``."""
    try:
        return cls(**kw)
    except ConfigError as e:
        raise translate(e, path, names) from None


_GROUP = re.compile(r"^(?:optimizers\[0\]\.)?groups\[(\d+)\](.*)$", re.S)


def group_path(e: ConfigError, group_paths: list[str], prefix: str, groups_key: str) -> ConfigError:
    """An error from OptimizerSpec/Plan with ``groups[i]...`` mapped back to the dialect's group path.

    ``groups`` becomes ``groups_key``, ``optimizers[0].x`` becomes ``optimizer.x``; any other path goes
    under ``prefix``.
    """
    m = _GROUP.match(e.path)
    if m and int(m.group(1)) < len(group_paths):
        return ConfigError(group_paths[int(m.group(1))] + m.group(2), e.rule, e.value, show_value=e.show_value)
    if e.path in ("groups", "optimizers[0].groups"):
        return ConfigError(groups_key, e.rule, e.value, show_value=e.show_value)
    if e.path.startswith("optimizers[0]."):
        return ConfigError("optimizer." + e.path[len("optimizers[0]."):], e.rule, e.value, show_value=e.show_value)
    return e.under(prefix)


def description(d: Mapping[str, Any]) -> dict[str, Any]:
    """``{"description": ...}`` for Plan(), when the document has one and Plan has the field (else ``{}``)."""
    from dataclasses import fields

    from ..plan import Plan
    if d.get("description") is None or "description" not in {f.name for f in fields(Plan)}:
        return {}
    return {"description": d["description"]}


def check_document(d: Any, dialect: str, keys: Iterable[str]) -> Mapping[str, Any]:
    """The dialect document as a mapping whose keys are all ``keys`` and whose ``dialect`` (if any) is ``dialect``."""
    d = expect_mapping("", d)
    keys = tuple(keys)
    for key in d:
        if key not in keys:
            raise ConfigError(key, f"is not a key of the {dialect} dialect" + suggest(key, keys)
                              + " (keys: " + ", ".join(keys) + ")", d[key])
    if d.get("dialect", dialect) != dialect:
        raise ConfigError("dialect", f"must be {dialect} here", d["dialect"])
    return d
