"""Whether a backend can run here: available only when it can run, else the reason and the set-up command.

A backend is available when its trace function imports AND its runtime is
present: a backend module may define ``availability() -> str | None`` (None:
available, else the reason with the set-up command), which the probe calls;
MegEngine's (``optbridge_adapters.megengine.backend.availability``) says whether
megengine is importable here or its worker interpreter exists. A backend whose
framework IS present but fails when it runs is not "unavailable": its traces
raise, and those results are errors (failures).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable

from optbridge.errors import BackendUnavailable, ConfigError

from .results import ALL_BACKENDS, BackendInfo

__all__ = ["probe_backend", "availability"]


def availability(name: str, fn: Callable[..., object]) -> str | None:
    """None when backend ``name`` (trace function ``fn``, already imported) can run, else why not."""
    mod = sys.modules.get(getattr(fn, "__module__", "") or "")
    check = getattr(mod, "availability", None)
    if not callable(check):
        return None
    try:
        reason = check()
    except BackendUnavailable as e:
        reason = str(e)
    return None if reason is None else " ".join(str(reason).split())


def probe_backend(name: str) -> BackendInfo:
    """Import backend ``name`` and check that it can run (:func:`availability`).

    Raises:
        ConfigError: ``name`` is neither registered nor one of the contract's backends.
    """
    from optbridge.backends import get_backend

    from .compare import backend_tolerances
    prec = backend_tolerances(name)["default"].precision
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = get_backend(name)
    except ConfigError:
        if name in ALL_BACKENDS:
            return BackendInfo(name, False, "not registered in optbridge.backends yet", prec)
        raise ConfigError("--backends", "must name registered backends (" + ", ".join(ALL_BACKENDS) + ")",
                          name) from None
    except ImportError as e:  # BackendUnavailable is an ImportError
        return BackendInfo(name, False, " ".join(str(e).split()), prec)
    reason = availability(name, fn)
    if reason is not None:
        return BackendInfo(name, False, reason, prec)
    return BackendInfo(name, True, "", prec, time.perf_counter() - t0)
