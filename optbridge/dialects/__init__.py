"""Config dialects: documents written in torch's or MindSpore's vocabulary."""
from __future__ import annotations
from collections.abc import Mapping
from typing import Any
from ..errors import ConfigError


def detect(d: Mapping[str, Any]) -> str:
    if "optbridge" in d or d.get("dialect") in (None, "optbridge"):
        return "optbridge"
    return str(d["dialect"])


def from_dialect(name: str, d: Mapping[str, Any]):
    raise ConfigError("dialect", "must be optbridge", name)
