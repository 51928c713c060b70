"""Refusal advice, checked: "use form='experimental'" stays in a refusal only if that form runs the plan.

A backend's refusal may point to another form of the same framework. The suite
checks every such pointer by trying: the advised backend's own result in this run
when it ran the case, else a short trace of the case on it. Advice to a form that
refuses the plan too is removed from the message, and the result's ``advice`` says
so (with that form's reason); advice that holds is confirmed there.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence

from optbridge.errors import UnsupportedError

from .cases import Case
from .results import RAN, Result

__all__ = ["check_advice", "advised_backend", "strip_advice"]

_FORM = re.compile(r"form='(\w+)'")
#: "use form='x'" clauses, with the punctuation around them (removed when the advice does not hold).
_CLAUSES = (
    re.compile(r"\s*[;,]?\s*\(use (?:optbridge\.\w+\([^()]*\)|form='\w+')[^()]*\)"),
    re.compile(r"\s*[;,]\s*use (?:optbridge\.\w+\([^()]*\)|form='\w+')[^;()]*"),
)


def advised_backend(backend: str, message: str) -> str | None:
    """The backend a refusal of ``backend`` points to (``form='x'`` of the same framework), or None."""
    m = _FORM.search(message)
    if m is None or "-" not in backend:
        return None
    advised = f"{backend.split('-', 1)[0]}-{m.group(1)}"
    return None if advised == backend else advised


def strip_advice(message: str) -> str:
    """``message`` without its "use form=..." clauses."""
    for pat in _CLAUSES:
        message = pat.sub("", message)
    return message.strip()


def _try(case: Case, backend: str) -> tuple[bool | None, str]:
    """Whether ``backend`` accepts ``case``'s plan (None: could not tell), and its reason when it refuses."""
    import optbridge
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optbridge.trace(case.plan, min(2, case.steps), backend=backend, metrics=case.metrics)
    except UnsupportedError as e:
        return False, f"{e.node}: {e.reason}"
    except Exception as e:  # unavailable, or another failure: cannot tell
        return None, f"{type(e).__name__}: {' '.join(str(e).split())}"
    return True, ""


def check_advice(cases: Sequence[Case], results: Mapping[tuple[str, str], Result]) -> None:
    """Check every refusal's advice in ``results`` (edits the results' ``message`` and ``advice``)."""
    by_id = {c.id: c for c in cases}
    tried: dict[tuple[str, str], tuple[bool | None, str]] = {}
    for (cid, backend), r in results.items():
        if r.status != "unsupported" or cid not in by_id:
            continue
        advised = advised_backend(backend, r.message)
        if advised is None:
            continue
        other = results.get((cid, advised))
        if other is not None and other.status in RAN:
            r.advice = f"checked: {advised} runs this case ({other.status})"
            continue
        if other is not None and other.status == "unsupported":
            verdict: tuple[bool | None, str] = (False, other.message)
        else:
            key = (cid, advised)
            if key not in tried:
                unavailable = other is not None and other.status == "unavailable"
                tried[key] = (None, other.message) if unavailable and other is not None else _try(by_id[cid], advised)
            verdict = tried[key]
        accepted, why = verdict
        if accepted is True:
            r.advice = f"checked: {advised} runs this case"
        elif accepted is False:
            r.message = strip_advice(r.message)
            form = advised.split("-", 1)[1]
            r.advice = f"advice to use form='{form}' removed: {advised} refuses this plan too ({why})"
        else:
            r.advice = f"advice to use {advised} not checked ({why or 'not run'})"
