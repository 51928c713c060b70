"""One windowed value source for every driver that writes schedule values step by step.

Torch's and MegEngine's ``PlanScheduler``, the MindSpore driver and the sampled
``lr_lambda`` callables all need "the values of these slots at update ``k``",
one update at a time, at the cost of a list lookup. :class:`ValueSource` serves
them all: it evaluates :data:`CHUNK` updates at once with the reference
evaluator (:func:`optbridge.evaluate.table`), so memory is O(chunk × slots)
whatever the horizon, and it applies one policy at the end of a schedule.

**The horizon policy.** Every source knows the first update it has no value for,
:attr:`ValueSource.horizon`: the plan's ``total_steps``, the end of a
``one_cycle`` (after ``total_steps``, as torch) or of a ``table`` without
``hold``, or the first plateau step whose metric has not been given yet,
whichever comes first. :meth:`ValueSource.row` raises :class:`PastHorizon` (an
:class:`~optbridge.errors.EvaluationError`) there, naming the update, the horizon
and its cause. A driver stepped to the horizon after the last update of a run
writes nothing; the framework update that would use a value there raises
(every backend hooks its optimizer's step for this), and so does an update the
driver was not stepped for (:class:`NotStepped`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import evaluate, ir
from .errors import ConfigError, EvaluationError
from .slots import evaluation_items

if TYPE_CHECKING:  # pragma: no cover
    from .slots import Slot

__all__ = ["ValueSource", "PastHorizon", "NotStepped", "CHUNK", "INT32_STEPS"]

#: Updates evaluated at once: a driver's ``step()`` then costs a list lookup.
CHUNK = 4096
#: The most updates a framework that counts them in int32 can make (MindSpore's ``global_step``).
INT32_STEPS = 2**31 - 1


class PastHorizon(EvaluationError):
    """An update past the end of the schedule was asked for (the message says which end and why).

    Attributes:
        step: The update asked for.
        horizon: The first update without a value.
    """

    def __init__(self, message: str, *, step: int, horizon: int) -> None:
        super().__init__(message)
        self.step, self.horizon = step, horizon


class NotStepped(EvaluationError):
    """An optimizer update whose values the driver had not written: its ``step()`` was not called.

    Every backend's update guard raises it, with a message naming the update and
    how to fix the loop (call the driver's ``step()`` once after every update).

    Attributes:
        update: The update the optimizer was about to make.
        stepped: Where the driver stood (the update whose values it last wrote).
    """

    def __init__(self, message: str, *, update: int, stepped: int) -> None:
        super().__init__(message)
        self.update, self.stepped = update, stepped


class ValueSource:
    """Values of many slots, update by update.

    Args:
        slots: What to evaluate: :class:`~optbridge.slots.Slot` records (a slot
            without a node holds its base).
        unit: The plan's step unit.
        steps_per_epoch: Updates per epoch.
        total_steps: Updates the plan is defined for (None: unbounded).
        metrics: Plateau metrics known so far (one per plateau step); more can be
            added with :meth:`add_metric`.
        chunk: Updates evaluated at once.

    Raises:
        ConfigError: ``chunk`` is not a positive integer.
    """

    def __init__(self, slots: Sequence[Slot], *, unit: str = "iter", steps_per_epoch: int | None = None,
                 total_steps: int | None = None, metrics: Sequence[float] | np.ndarray | None = None,
                 chunk: int = CHUNK) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ConfigError("chunk", "must be a positive integer", chunk)
        self.slots = tuple(slots)
        self.unit, self.steps_per_epoch, self.total_steps, self.chunk = unit, steps_per_epoch, total_steps, chunk
        self._metrics: list[float] = [] if metrics is None else [float(m) for m in metrics]
        self._driven = [(j, s) for j, s in enumerate(self.slots) if s.node is not None]
        self._plateau = next(((s.node, s.path) for _, s in self._driven
                              if isinstance(s.node, ir.Plateau)), None)
        ends: list[tuple[int, str]] = []
        if total_steps is not None:
            ends.append((total_steps, f"the plan is defined for {total_steps} updates (total_steps)"))
        for _, s in self._driven:
            node = s.node
            assert node is not None  # _driven: the slots with a node
            h = node.horizon(unit, steps_per_epoch)
            if h is not None:
                ends.append((h, f"{s.path} has no value from update {h} on ({_why(node)})"))
        self._ends = sorted(ends)
        self._lo = self._hi = 0
        self._rows: list[list[float]] = []

    # ------------------------------------------------------------------ the horizon

    @property
    def metrics(self) -> tuple[float, ...]:
        """Plateau metrics given so far."""
        return tuple(self._metrics)

    def add_metric(self, value: float) -> None:
        """Append the metric observed after the latest plateau step (it decides the next plateau value)."""
        self._metrics.append(float(value))
        if self._plateau is not None:
            self._lo = self._hi = 0  # plateau values past the old metrics are now known

    def _plateau_end(self) -> int | None:
        if self._plateau is None:
            return None
        node = self._plateau[0]
        return (len(self._metrics) + 1) * node.scale(self.unit, self.steps_per_epoch)

    @property
    def horizon(self) -> int | None:
        """The first update without a value (None: unbounded)."""
        ends = [e for e, _ in self._ends[:1]]
        p = self._plateau_end()
        if p is not None:
            ends.append(p)
        return min(ends) if ends else None

    def check(self, k: int) -> None:
        """Raise :class:`PastHorizon` unless update ``k`` has a value."""
        if k < 0:
            raise ConfigError("step", "must be >= 0", k)
        h = self.horizon
        if h is None or k < h:
            return
        p = self._plateau_end()
        if p is not None and p == h and (not self._ends or p < self._ends[0][0]):
            assert self._plateau is not None
            per = self._plateau[0].scale(self.unit, self.steps_per_epoch)
            why = (f"{self._plateau[1]}: the plateau value of update {k} needs {k // per} metric(s), got "
                   f"{len(self._metrics)} (pass metrics= up front, or give each metric to the scheduler's step)")
        else:
            why = self._ends[0][1]
        raise PastHorizon(f"update {k} is past the end of the schedule: {why}", step=k, horizon=h)

    # ------------------------------------------------------------------ values

    def row(self, k: int) -> list[float]:
        """Every slot's value at update ``k``, as Python floats (slot order).

        Raises:
            PastHorizon: ``k`` is at or past :attr:`horizon`.
        """
        if not self._lo <= k < self._hi:
            self._fill(k)
        return self._rows[k - self._lo]

    def window(self, start: int, n: int) -> np.ndarray:
        """Values of every slot over updates ``start .. start + n - 1``: float64 ``(len(slots), n)``.

        Raises:
            PastHorizon: the window reaches past :attr:`horizon`.
        """
        if n > 0:
            self.check(start + n - 1)
        out = np.empty((len(self.slots), max(n, 0)))
        for j, s in enumerate(self.slots):
            if s.node is None:
                out[j] = s.base
        if self._driven and n > 0:
            m = None if self._plateau is None else np.asarray(self._metrics, dtype=np.float64)
            rows = [j for j, _ in self._driven]
            out[rows] = evaluate.table(evaluation_items([s for _, s in self._driven]), start, n,
                                       unit=self.unit, steps_per_epoch=self.steps_per_epoch, metrics=m)
        return out

    def _fill(self, k: int) -> None:
        self.check(k)
        h = self.horizon
        n = self.chunk if h is None else min(self.chunk, h - k)
        self._rows = self.window(k, n).T.tolist()
        self._lo, self._hi = k, k + n


def _why(node: ir.Node) -> str:
    for x in ir.walk(node):
        if isinstance(x, ir.OneCycle):
            return f"one_cycle ends after total_steps={x.total_steps}"
        if isinstance(x, ir.Table) and not x.hold:
            return f"a table of {len(x.values)} values without hold"
    return "the schedule ends there"
