"""MindSpore lr lists from any plan (numpy and optbridge only, no MindSpore).

Lists are computed by the reference evaluator and rounded once to float32, as
MindSpore stores a list (``np.array(list).astype(float32)``). Writing them with a
runnable MindSpore script is ``optbridge port --to mindspore --form list``
(:mod:`optbridge.port`; ``optbridge convert`` is its shorthand).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from optbridge import ir
from optbridge.errors import ConfigError, EvaluationError, UnsupportedError
from optbridge.plan import Plan, scheduled_hypers
from optbridge.slots import Slot, slots
from optbridge.source import INT32_STEPS, ValueSource

__all__ = ["lists", "slot_values", "CHUNK"]

INT32_STEP_LIMIT = INT32_STEPS
#: Updates evaluated at once for long lists (keeps the float64 intermediates window-sized).
CHUNK = 1 << 20


def slot_values(items: Sequence[Slot], total_steps: int, *, unit: str = "iter", steps_per_epoch: int | None = None,
                dtype: Any = np.float32) -> np.ndarray:
    """The values of ``items`` over updates ``0 .. total_steps - 1``, rounded once to ``dtype``: ``(len(items), n)``.

    Evaluated by one :class:`optbridge.source.ValueSource` (the reference evaluator)
    in windows of :data:`CHUNK` updates, each rounded straight into the result, so the
    float64 intermediates stay window-sized.

    Raises:
        EvaluationError: a schedule ends before ``total_steps`` (the message names the update and why).
    """
    src = ValueSource(items, unit=unit, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    out = np.empty((len(items), total_steps), dtype=dtype)
    for lo in range(0, total_steps, CHUNK):
        out[:, lo:lo + CHUNK] = src.window(lo, min(CHUNK, total_steps - lo))
    return out


def lists(plan: Plan, total_steps: int | None = None, *, hyper: str = "lr") -> dict[str, np.ndarray]:
    """Per-group float32 lists of ``hyper`` (see ``optbridge.to_mindspore_lists``).

    A group whose optimizer lacks ``hyper`` gets NaN (not applicable), as in a trace.
    """
    if not isinstance(plan, Plan):
        raise ConfigError("plan", "must be an optbridge Plan (optbridge.load(...) reads one)", type(plan).__name__)
    n = total_steps if total_steps is not None else plan.total_steps
    if n is None:
        raise ConfigError("total_steps", "is required: MindSpore's lr lists must cover every step (it raises past "
                          "their end), and the plan sets no total_steps", None, show_value=False)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError("total_steps", "must be a positive integer", n)
    if plan.total_steps is not None and n > plan.total_steps:
        raise EvaluationError(f"the plan is defined for {plan.total_steps} steps (total_steps), {n} were asked for")
    if n > INT32_STEP_LIMIT:
        raise UnsupportedError("total_steps", "mindspore-list", f"{n} steps exceed MindSpore's int32 global_step "
                               f"(at most {INT32_STEP_LIMIT})")
    if not isinstance(hyper, str):
        raise ConfigError("hyper", "must be a hyperparameter name", hyper)
    if hyper not in scheduled_hypers(plan):
        raise ConfigError("hyper", "is not scheduled in this plan (scheduled: " + ", ".join(scheduled_hypers(plan))
                          + ")", hyper)
    items = slots(plan, hypers=(hyper,), held=True)
    for s in items:
        if s.node is not None and any(isinstance(x, ir.Plateau) for x in ir.walk(s.node)):
            raise UnsupportedError(s.path, "mindspore-list", "plateau needs the metric at run time; a list cannot be "
                                   "precomputed (to_mindspore drives it through a Parameter)")
    vals = slot_values(items, int(n), unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch)
    by = {s.group: vals[j] for j, s in enumerate(items)}
    return {g.name: by.get(g.name, np.full(int(n), np.nan, dtype=np.float32)) for g in plan.groups
            if g.frozen != "exclude"}
