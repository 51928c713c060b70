"""Verdicts: a raw outcome (ok / mismatch / unsupported / error) and the ledger give a result's status.

The ledgers (``xfail/<backend>.yaml``) are strict: an expected deviation that
passes is ``xpass`` (it fails the run), a mismatch outside the listed groups and
hyperparameters is ``fail``, and a listed mismatch that became a refusal is
``fail`` too (the ledger no longer describes the backend).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .cases import Case, Deviation
from .results import Result

__all__ = ["judge", "check_pins", "RAW"]

#: Raw outcomes of running one case on one backend.
RAW = ("ok", "mismatch", "unsupported", "error")


def check_pins(case: Case, tr: Any) -> list[str]:
    """Hand-computed values (the case's ``pins``) that anchor the reference itself."""
    out = []
    for pin in case.pins:
        h = pin.get("hyper", "lr")
        k = int(pin["step"])
        if h not in tr.data or pin["group"] not in tr.groups or k >= tr.steps:
            out.append(f"pin {pin}: not in the trace")
            continue
        v = float(tr.data[h][tr.groups.index(pin["group"]), k])
        want = float(pin["value"])
        if not abs(v - want) <= float(pin.get("rel", 1e-12)) * abs(want):
            out.append(f"pin: step {k}, group {pin['group']}, {h}: hand-computed {want!r}, reference {v!r}")
    return out


def judge(res: Result, raw: str, devs: Sequence[Deviation]) -> None:
    """Set ``res.status`` from the raw outcome, applying the ledger entries ``devs`` of this case and backend."""
    if not devs:
        res.status = {"ok": "pass", "mismatch": "fail", "unsupported": "unsupported", "error": "error"}[raw]
        return
    res.deviations = [f"{d.label()}: expected {d.expect}" + (" (backend bug)" if d.kind == "backend-bug" else "")
                      + f": {d.reason}" for d in devs]
    res.bug = any(d.kind == "backend-bug" for d in devs)
    expects = {d.expect for d in devs}
    if raw == "ok":
        if res.capped:  # the deviation lies beyond the capped horizon
            res.status = "pass"
            res.message = "capped by --max-steps before the expected deviation"
            return
        res.status = "xpass"
        res.message = ("listed as expected " + "/".join(sorted(expects)) + f" but passed: update xfail/{res.backend}"
                       f".yaml ({'; '.join(d.reason for d in devs)})")
        return
    match = [d for d in devs if d.expect == raw]
    if not match:
        res.status = {"mismatch": "fail", "unsupported": "unsupported", "error": "error"}[raw]
        res.message = (res.message + "; " if res.message else "") + \
            f"expected {'/'.join(sorted(expects))} per xfail/{res.backend}.yaml, got {raw}"
        if raw == "unsupported":  # listed as a mismatch, now refused: the ledger is stale
            res.status = "fail"
        return
    if raw != "mismatch":
        res.status = "unsupported" if raw == "unsupported" else "xfail"
        res.expected = True
        return
    bad = [s for s in res.series if not s.ok]
    uncovered: list[Any] = [s for s in bad if not any(d.covers(s.group, s.hyper) for d in match)]
    if res.problems and not any(d.group is None and d.hyper is None for d in match):
        uncovered.append(None)
    stale = [d for d in match if not any(d.covers(s.group, s.hyper) for s in bad)
             and not (res.problems and d.group is None and d.hyper is None)]
    if uncovered:
        res.status = "fail"
        names = ", ".join(f"{s.group}/{s.hyper}" for s in uncovered if s is not None) or "trace structure"
        res.message = f"mismatch not covered by xfail/{res.backend}.yaml: {names}"
    elif stale and not res.capped:
        res.status = "xpass"
        res.message = "expected mismatch passes: " + "; ".join(d.label() for d in stale)
    else:
        res.status, res.expected = "xfail", True
