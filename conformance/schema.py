"""A small JSON-Schema validator for the suite's own data files (no ``jsonschema`` dependency).

It implements the subset of draft 2020-12 that ``case.schema.json`` and
``xfail.schema.json`` use, and refuses any other keyword, so a schema can never
silently ask for a check this validator does not make:

``type`` (one name or a list), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties`` (false or a schema), ``propertyNames``, ``minProperties``,
``items``, ``minItems``, ``uniqueItems``, ``minLength``, ``pattern``
(``re.search``), ``minimum``, ``exclusiveMinimum``, ``maximum``, ``anyOf``, ``oneOf``,
``not``, ``$ref`` to ``#/$defs/<name>``, and the annotations ``$schema``, ``$id``,
``$comment``, ``title``, ``description``, ``default``, ``examples``, ``$defs``.

:func:`errors` returns every violation as ``"<json path>: <message>"``; the
test suite cross-checks this validator against ``jsonschema`` when it is
installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["load_schema", "errors", "SchemaError"]

HERE = Path(__file__).resolve().parent

_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "default", "examples", "$defs"}
_KEYWORDS = {"type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames",
             "minProperties", "items", "minItems", "uniqueItems", "minLength", "pattern", "minimum",
             "exclusiveMinimum", "maximum", "anyOf", "oneOf", "not", "$ref"} | _ANNOTATIONS


class SchemaError(ValueError):
    """The schema itself uses something this validator does not implement."""


@cache
def _load(name: str) -> str:
    return (HERE / name).read_text(encoding="utf-8")


def load_schema(name: str = "case.schema.json") -> dict[str, Any]:
    """A schema shipped next to this module (``case.schema.json``, ``xfail.schema.json``)."""
    return json.loads(_load(name))


def _type_ok(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, Mapping)
    if name == "array":
        return isinstance(value, (list, tuple))
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise SchemaError(f"unknown type {name!r}")


def _path(base: str, key: Any) -> str:
    return f"{base}[{key}]" if isinstance(key, int) else (f"{base}.{key}" if base else str(key))


def errors(doc: Any, schema: Mapping[str, Any] | None = None) -> list[str]:
    """Every violation of ``schema`` (default: the case schema) by ``doc``, as ``path: message``."""
    root = load_schema() if schema is None else schema
    return list(_check(doc, root, root, ""))


def _check(v: Any, s: Mapping[str, Any] | bool, root: Mapping[str, Any], path: str) -> Iterator[str]:
    where = path or "(document)"
    if s is True:
        return
    if s is False:
        yield f"{where}: is not allowed"
        return
    unknown = set(s) - _KEYWORDS
    if unknown:
        raise SchemaError(f"schema keyword(s) {sorted(unknown)} not implemented by optbridge_conformance.schema")
    if "$ref" in s:
        ref = s["$ref"]
        if not ref.startswith("#/$defs/"):
            raise SchemaError(f"only local #/$defs/ references are implemented, got {ref!r}")
        yield from _check(v, root["$defs"][ref[len("#/$defs/"):]], root, path)
    if "type" in s:
        names = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_type_ok(v, n) for n in names):
            yield f"{where}: must be of type {' or '.join(names)}, got {type(v).__name__} {_short(v)}"
            return
    if "enum" in s and v not in s["enum"]:
        yield f"{where}: must be one of {', '.join(map(repr, s['enum']))}, got {_short(v)}"
    if "const" in s and v != s["const"]:
        yield f"{where}: must be {s['const']!r}, got {_short(v)}"
    if isinstance(v, str):
        if "minLength" in s and len(v) < s["minLength"]:
            yield f"{where}: must have at least {s['minLength']} characters, got {_short(v)}"
        if "pattern" in s and not re.search(s["pattern"], v):
            yield f"{where}: must match {s['pattern']!r}, got {_short(v)}"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            yield f"{where}: must be >= {s['minimum']}, got {v!r}"
        if "exclusiveMinimum" in s and v <= s["exclusiveMinimum"]:
            yield f"{where}: must be > {s['exclusiveMinimum']}, got {v!r}"
        if "maximum" in s and v > s["maximum"]:
            yield f"{where}: must be <= {s['maximum']}, got {v!r}"
    if isinstance(v, Mapping):
        for key in s.get("required", ()):
            if key not in v:
                yield f"{_path(path, key)}: is required"
        if "minProperties" in s and len(v) < s["minProperties"]:
            yield f"{where}: must have at least {s['minProperties']} entries"
        props = s.get("properties", {})
        extra = s.get("additionalProperties", True)
        for key, item in v.items():
            if "propertyNames" in s:
                for e in _check(key, s["propertyNames"], root, ""):
                    yield f"{_path(path, key)}: key {key!r} {e.split(': ', 1)[1]}"
            if key in props:
                yield from _check(item, props[key], root, _path(path, key))
            elif extra is False:
                yield f"{_path(path, key)}: is not a known field (known: {', '.join(props)})"
            else:
                yield from _check(item, extra, root, _path(path, key))
    if isinstance(v, (list, tuple)):
        if "minItems" in s and len(v) < s["minItems"]:
            yield f"{where}: must have at least {s['minItems']} items, got {len(v)}"
        if s.get("uniqueItems") and len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
            yield f"{where}: items must be unique"
        if "items" in s:
            for i, item in enumerate(v):
                yield from _check(item, s["items"], root, _path(path, i))
    if "anyOf" in s:
        results = [list(_check(v, sub, root, path)) for sub in s["anyOf"]]
        if all(results):
            yield from min(results, key=len) if len(s["anyOf"]) == 1 else [
                f"{where}: matches none of the allowed forms ({'; '.join(r[0] for r in results)})"]
    if "oneOf" in s:
        results = [list(_check(v, sub, root, path)) for sub in s["oneOf"]]
        ok = sum(not r for r in results)
        if ok == 0:
            yield f"{where}: matches none of the allowed forms ({'; '.join(r[0] for r in results)})"
        elif ok > 1:
            yield f"{where}: matches more than one of the allowed forms"
    if "not" in s and not list(_check(v, s["not"], root, path)):
        yield f"{where}: matches a form that is not allowed"


def _short(v: Any, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
