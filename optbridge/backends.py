"""A tiny lazy registry of trace backends.

Each backend is a dotted path to a function ``trace(plan, steps, *, metrics, **options)
-> Trace`` and an install hint. Nothing is imported until a backend is used, so
``import optbridge`` never imports a framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .errors import BackendUnavailable, ConfigError
from .versions import check_version, framework_of_backend

__all__ = ["register_backend", "get_backend", "available_backends"]

_TABLE: dict[str, tuple[str, str]] = {
    "reference": ("optbridge.tracing:reference_trace", "built in"),
    "megengine": ("optbridge_adapters.megengine.backend:trace",
                  "MegEngine runs in its own Python 3.10 env: `./dev setup` builds .venv-mge "
                  "(or set OPTBRIDGE_MGE_PYTHON)"),
    "torch": ("optbridge_adapters.torch.tracing:trace", "install torch: pip install 'optbridge[torch]'"),
    "mindspore-list": ("optbridge_adapters.mindspore.tracing:trace_list", "pip install 'optbridge[mindspore]'"),
    "mindspore-cell": ("optbridge_adapters.mindspore.tracing:trace_cell", "pip install 'optbridge[mindspore]'"),
    "mindspore-experimental": ("optbridge_adapters.mindspore.tracing:trace_experimental",
                               "pip install 'optbridge[mindspore]'"),
}
_CACHE: dict[str, Callable[..., Any]] = {}


def register_backend(name: str, target: str, hint: str = "", *, clobber: bool = False) -> None:
    """Register ``name`` -> ``"module:function"``; refuses to overwrite unless ``clobber``."""
    if name in _TABLE and not clobber:
        raise ValueError(f"backend {name!r} is already registered (pass clobber=True to replace it)")
    _TABLE[name] = (target, hint)
    _CACHE.pop(name, None)


def available_backends() -> tuple[str, ...]:
    """Registered backend names (nothing is imported)."""
    return tuple(_TABLE)


def get_backend(name: str) -> Callable[..., Any]:
    """The trace function of backend ``name``, imported on first use."""
    if name in _CACHE:
        return _CACHE[name]
    if name not in _TABLE:
        raise ConfigError("backend", "must be one of " + ", ".join(map(repr, _TABLE)), name)
    target, hint = _TABLE[name]
    framework = framework_of_backend(name)
    if framework is not None:  # once per process: is this a framework version optbridge verified?
        check_version(framework)
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} is not available ({e}); {hint}") from e
    _CACHE[name] = fn
    return fn
