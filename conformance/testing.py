"""Deliberately wrong and misbehaving backends, to prove the runner catches them.

``tests/test_conformance.py`` registers these under test names with
:func:`optbridge.backends.register_backend`; none is registered by default.

* :func:`perturbed_trace`: the reference, with one value of one group (or of each of
  several comma-separated groups) and one hyperparameter off by a relative ``delta``
  at one step (set by :func:`perturb`);
* :func:`unsupported_trace`: raises ``UnsupportedError`` for every plan;
* :func:`crashing_trace`: raises ``RuntimeError`` (a backend bug);
* :func:`shuffled_trace`: the reference with its groups in the wrong order;
* :func:`advising_trace`: refuses every plan with the advice set by :func:`advise`
  (``"use form='perturbed'"`` points to ``test-perturbed``, which runs every plan;
  ``"use form='unsupported'"`` to ``test-unsupported``, which refuses every plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Perturbation", "perturb", "perturbed_trace", "unsupported_trace", "crashing_trace", "shuffled_trace",
           "advise", "advising_trace", "TARGETS"]


@dataclass(frozen=True)
class Perturbation:
    step: int
    group: str
    hyper: str = "lr"
    delta: float = 1e-9        # relative change of that one value
    applied: bool = True       # also report the perturbed lr as the measured applied lr


_CURRENT = Perturbation(step=0, group="")


def perturb(step: int, group: str, hyper: str = "lr", delta: float = 1e-9, applied: bool = True) -> Perturbation:
    """Set the perturbation :func:`perturbed_trace` applies (returns the previous one)."""
    global _CURRENT
    prev, _CURRENT = _CURRENT, Perturbation(step, group, hyper, delta, applied)
    return prev


def perturbed_trace(plan: Any, steps: int, *, metrics: Sequence[float] | None = None, **options: Any) -> Any:
    from optbridge.report import Fidelity
    from optbridge.tracing import Trace, reference_trace
    tr = reference_trace(plan, steps, metrics=metrics)
    p = _CURRENT
    data = {h: a.copy() for h, a in tr.data.items()}
    for group in p.group.split(","):
        if group in tr.groups and p.hyper in data and p.step < steps:
            g = tr.groups.index(group)
            data[p.hyper][g, p.step] *= 1.0 + p.delta
            if data[p.hyper][g, p.step] == 0.0:
                data[p.hyper][g, p.step] = p.delta
    fid = tuple(Fidelity("perturbed", "*", h, "table", "reference values, one of them perturbed") for h in data)
    applied = {"lr": data["lr"].copy()} if p.applied else {}
    return Trace(tr.groups, data, "perturbed", fid, applied)


def unsupported_trace(plan: Any, steps: int, *, metrics: Sequence[float] | None = None, **options: Any) -> Any:
    from optbridge.errors import UnsupportedError
    raise UnsupportedError("schedule.lr", "refusing", "this test backend supports nothing")


def crashing_trace(plan: Any, steps: int, *, metrics: Sequence[float] | None = None, **options: Any) -> Any:
    raise RuntimeError("simulated backend bug")


def shuffled_trace(plan: Any, steps: int, *, metrics: Sequence[float] | None = None, **options: Any) -> Any:
    from optbridge.tracing import Trace, reference_trace
    tr = reference_trace(plan, steps, metrics=metrics)
    return Trace(tuple(reversed(tr.groups)), {h: a[::-1].copy() for h, a in tr.data.items()}, "shuffled")


_ADVICE = ["use form='unsupported'"]


def advise(text: str) -> str:
    """Set the advice :func:`advising_trace` gives (returns the previous one)."""
    prev, _ADVICE[0] = _ADVICE[0], text
    return prev


def advising_trace(plan: Any, steps: int, *, metrics: Sequence[float] | None = None, **options: Any) -> Any:
    from optbridge.errors import UnsupportedError
    raise UnsupportedError("schedule.lr", "test-advising", f"this test backend cannot express it; {_ADVICE[0]}")


#: Registry targets of the test backends.
TARGETS = {
    "test-perturbed": "optbridge_conformance.testing:perturbed_trace",
    "test-unsupported": "optbridge_conformance.testing:unsupported_trace",
    "test-crashing": "optbridge_conformance.testing:crashing_trace",
    "test-shuffled": "optbridge_conformance.testing:shuffled_trace",
    "test-advising": "optbridge_conformance.testing:advising_trace",
    "test-missing": "optbridge_conformance.no_such_module:trace",
}
