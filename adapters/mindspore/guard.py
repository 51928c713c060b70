"""The optimizer guard: every update of a built optimizer checks the schedule's horizon and the driver's clock.

:func:`install` turns a MindSpore optimizer (``nn``, experimental or torch-exact)
into an instance of a subclass of its own class (``isinstance`` still holds, every
attribute stays) whose update:

* refuses an update at or past the schedule's horizon: the end of an lr list, the
  plan's ``total_steps``, a ``one_cycle`` or ``table`` end, a plateau step whose
  metric was not given (:class:`~optbridge.source.PastHorizon`, naming the update,
  the horizon and its cause) -- never MindSpore's raw ``Gather`` index error, never a
  silently held last value;
* refuses an update the driver was not stepped for (:class:`NotStepped`): with a
  driver (experimental and torch-exact optimizers, plateaus) the values of update
  ``k`` are in place only after ``setup.step()`` was called ``k`` times;
* clips the gradients of the groups that say so (torch's ``clip_grad_norm_`` /
  ``clip_grad_value_``, per group or over the whole optimizer), before the update.

Called from Python (PyNative, or a GRAPH-mode optimizer called directly) the checks
raise the optbridge errors above before anything changes. Inside a compiled training
cell (``nn.TrainOneStepCell`` in GRAPH mode, ``Model.train``) Python does not run per
update; the same checks run in the graph as ``ops.Assert`` on the update counter and
the driver's clock, and MindSpore raises ``RuntimeError('assert failed')`` printing
both (docs/mindspore.md). The update counter is a Parameter of the optimizer
(``optbridge_updates_<n>``), so checkpoints hold it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops

from optbridge.plan import Clip, Plan
from optbridge.source import INT32_STEPS, NotStepped, ValueSource

from .driver import Driver

__all__ = ["Guard", "NotStepped", "ClipGroup", "install", "INT32_MAX"]

I32, F32, F64 = ms.int32, ms.float32, ms.float64
#: The largest int32: MindSpore counts updates in int32.
INT32_MAX = INT32_STEPS
_IDS = itertools.count()
_ONE = Tensor(1, I32)
_EPS = Tensor(1e-6, F32)
_UNIT = Tensor(1.0, F32)


@dataclass(frozen=True)
class ClipGroup:
    """Gradient clipping of some of an optimizer's parameters (torch's rules, in float32).

    Attributes:
        name: The group (or ``"optimizer"`` for an optimizer-level clip), for messages.
        indices: Positions in ``optimizer.parameters`` (the order of its gradients).
        clip: The plan's :class:`~optbridge.plan.Clip`.
        starts: Per index, the update from which the gradient counts in the norm (its group's
            ``start_step``: torch clips the groups in the optimizer at that update); empty: all from 0.
    """

    name: str
    indices: tuple[int, ...]
    clip: Clip
    starts: tuple[int, ...] = ()


class Guard:
    """What one optimizer's updates check, and the Python side of the check.

    Args:
        name: The optimizer's name in the plan (messages).
        source: A value source over the optimizer's slots that MindSpore itself holds
            (lists, cells, experimental lr_schedulers): its horizon and cause. None
            when there are none.
        driver: The setup's driver when this optimizer needs ``setup.step()`` between
            updates (driven Parameters, experimental lr_schedulers), else None.
        plan: The plan the optimizer was built for (``from_mindspore`` reads it back).
        groups: The plan groups this optimizer holds.
    """

    def __init__(self, name: str, source: ValueSource | None, driver: Driver | None, plan: Plan | None = None,
                 groups: Sequence[str] = ()) -> None:
        self.name, self.source, self.driver = name, source, driver
        self.plan, self.groups = plan, tuple(groups)

    def static_horizon(self) -> int | None:
        """The first update the optimizer's own schedule objects have no value for (None: unbounded)."""
        return None if self.source is None else self.source.horizon

    def check(self, update: int) -> None:
        """Raise unless update ``update`` may run now (Python side; the graph side is in the update itself).

        Raises:
            PastHorizon: ``update`` is at or past the end of the schedule (the message says which end).
            NotStepped: the driver was not stepped exactly ``update`` times.
        """
        if self.source is not None:
            self.source.check(update)
        d = self.driver
        if d is None:
            return
        if d.k != update:
            if d.k < update:
                why = (f"setup.step() was called {d.k} time(s), so the values in place are those of update {d.k}: "
                       "call setup.step() after every update")
            else:
                why = f"setup.step() was called {d.k} time(s), more than the {update} update(s) made"
            raise NotStepped(f"optimizer {self.name!r}: update {update} was not stepped for: {why}",
                             update=update, stepped=d.k)
        d.check(update)


def _counted(x: Any, start: int, k: Any) -> Any:
    """``x``, or 0 before update ``start`` (a gradient of a group that has not joined yet)."""
    return x if start == 0 else ops.select(k >= start, x, ops.zeros_like(x))


def _norm(grads: tuple, indices: tuple, norm_type: float, starts: tuple, k: Any) -> Any:
    """torch's total norm of the gradients at ``indices`` (norm of the per-tensor norms), float32.

    Each norm is computed in float64 from the float32 gradient and rounded once; torch
    accumulates in float32 lanes, so the two agree to a few float32 ulps. At update ``k``
    the gradient at ``indices[j]`` counts once ``k >= starts[j]`` (all, when ``starts`` is empty).
    """
    at = starts or (0,) * len(indices)
    if math.isinf(norm_type):
        total = _counted(ops.cast(ops.abs(grads[indices[0]]).max(), F64), at[0], k)
        for j in range(1, len(indices)):
            total = ops.maximum(total, _counted(ops.cast(ops.abs(grads[indices[j]]).max(), F64), at[j], k))
        return ops.cast(total, F32)
    p = float(norm_type)
    acc = Tensor(0.0, F64)
    for j in range(len(indices)):
        g = ops.abs(ops.cast(grads[indices[j]], F64))
        n = ops.cast(ops.cast(ops.pow(ops.pow(g, p).sum(), 1.0 / p), F32), F64) if p != 2.0 else \
            ops.cast(ops.cast(ops.sqrt((g * g).sum()), F32), F64)
        acc = acc + _counted(n * n if p == 2.0 else ops.pow(n, p), at[j], k)
    return ops.cast(ops.sqrt(acc) if p == 2.0 else ops.pow(acc, 1.0 / p), F32)


def _clipped(grads: tuple, clips: tuple, owner: tuple, k: Any) -> tuple:
    """The gradients of update ``k`` with every clip group applied (torch: ``g *= min(max_norm / (norm + 1e-6), 1)``
    or clamp).

    ``clips``: per clip group ``(indices, max_norm, norm_type, value, starts)`` (``value`` None: norm clipping);
    ``owner``: per gradient, the index of its clip group or -1.
    """
    coefs: tuple = ()
    for indices, max_norm, norm_type, value, starts in clips:
        if value is None:
            coefs = coefs + (ops.minimum(Tensor(max_norm, F32) / (_norm(grads, indices, norm_type, starts, k) + _EPS),
                                         _UNIT),)
        else:
            coefs = coefs + (_UNIT,)
    out: tuple = ()
    for i in range(len(grads)):
        g = grads[i]
        c = owner[i]
        if c >= 0:
            if clips[c][3] is None:
                g = g * coefs[c]
            else:
                g = ops.clip_by_value(g, Tensor(-clips[c][3], F32), Tensor(clips[c][3], F32))
        out = out + (g,)
    return out


_CLASSES: dict[type, type] = {}


def _guarded_class(base: type) -> type:
    """A subclass of the optimizer class ``base`` whose update runs the guard first (one class per base)."""
    if base in _CLASSES:
        return _CLASSES[base]

    class Guarded(base):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            self.optbridge_guard.check(int(self.optbridge_updates.item()))  # item(): 0.5 against 10 us
            return super().__call__(*args, **kwargs)

        @ms.jit
        def construct(self, gradients):
            ok = self.optbridge_updates < self.optbridge_horizon
            if self.optbridge_stepped:
                ok = ops.logical_and(ok, self.optbridge_updates == self.optbridge_clock)
            ops.Assert(summarize=2)(ok, (self.optbridge_updates, self.optbridge_clock))
            ops.assign_add(self.optbridge_updates, _ONE)
            if self.optbridge_clips:
                # the update's index on the clock the exact optimizer joins its late groups by (checkpointed)
                k = self.update_count if self.optbridge_joins else self.optbridge_updates - _ONE
                gradients = _clipped(gradients, self.optbridge_clips, self.optbridge_owner, k)
            return super().construct(gradients)  # the base's own update (jit-decorated or not)

    Guarded.__name__, Guarded.__qualname__, Guarded.__module__ = base.__name__, base.__qualname__, base.__module__
    Guarded.__doc__ = base.__doc__
    _CLASSES[base] = Guarded
    return Guarded


def install(optimizer: Any, guard: Guard, clips: Sequence[ClipGroup] = (), *, movable_horizon: bool = False) -> Any:
    """Make ``optimizer`` check ``guard`` (and clip ``clips``) on every update; returns it (same object).

    ``movable_horizon`` (traces) holds the horizon the graph checks in a Parameter instead of a compile-time
    constant, so that one compiled optimizer serves traces of every length (:mod:`.reuse`); a built setup keeps
    it a constant (a checkpoint must not carry it).
    """
    n = next(_IDS)
    h = guard.static_horizon()
    optimizer.optbridge_guard = guard
    optimizer.optbridge_updates = Parameter(Tensor(0, I32), name=f"optbridge_updates_{n}", requires_grad=False)
    horizon = Tensor(INT32_MAX if h is None else min(int(h), INT32_MAX), I32)
    optimizer.optbridge_horizon = (Parameter(horizon, name=f"optbridge_horizon_{n}", requires_grad=False)
                                   if movable_horizon else horizon)
    optimizer.optbridge_stepped = guard.driver is not None
    optimizer.optbridge_clock = guard.driver.clock if guard.driver is not None else Tensor(0, I32)
    optimizer.optbridge_clips = tuple((c.indices, float(c.clip.max_norm or 0.0), float(c.clip.norm_type),
                                       None if c.clip.value is None else float(c.clip.value),
                                       c.starts if any(c.starts) else ()) for c in clips)
    # late groups run on optbridge's exact class, whose update_count is the join clock (restored from checkpoints)
    optimizer.optbridge_joins = any(any(c.starts) for c in clips) and hasattr(optimizer, "update_count")
    owner = [-1] * len(optimizer.parameters)
    for j, c in enumerate(clips):
        for i in c.indices:
            owner[i] = j
    optimizer.optbridge_owner = tuple(owner)
    optimizer.__class__ = _guarded_class(type(optimizer))
    return optimizer


def updates(optimizer: Any) -> int:
    """How many updates a guarded optimizer has made."""
    return int(np.asarray(optimizer.optbridge_updates.asnumpy()).reshape(()))
