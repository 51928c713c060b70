"""Per-step, per-group traces: :func:`trace` and the :class:`Trace` it returns."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import evaluate
from .backends import get_backend
from .checks import check_plan, check_trace
from .errors import ConfigError, EvaluationError, NotTraced
from .plan import Plan, group_feature, scheduled_hypers
from .slots import evaluation_items, slots

__all__ = ["Trace", "trace", "reference_trace", "nan_before_joins"]


@dataclass(frozen=True, eq=False)
class Trace(Mapping[str, np.ndarray]):
    """Values per hyperparameter, each a float64 array of shape ``(groups, steps)``.

    ``trace["lr"][g, k]`` is the lr the k-th optimizer update of group ``g`` uses.

    Attributes:
        groups: Group names, in the plan's order (groups left out of every
            optimizer are not traced).
        data: ``hyper -> array``.
        backend: Backend that produced the trace.
        fidelity: How the backend expressed each schedule (:class:`~optbridge.report.Fidelity`).
        applied: ``hyper -> (groups, steps)`` values measured from what the framework
            really applied (e.g. the parameter delta of plain SGD with gradient 1),
            where the backend measured them.
        start: The update of column 0 (``trace(plan, n, start=k)``: updates ``k .. k+n-1``).
    """

    groups: tuple[str, ...]
    data: Mapping[str, np.ndarray]
    backend: str = "reference"
    fidelity: tuple[Any, ...] = field(default=())
    applied: Mapping[str, np.ndarray] = field(default_factory=dict)
    start: int = 0

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self.data[key]
        except (KeyError, TypeError):
            raise NotTraced(f"{key!r} is not scheduled in this trace (it has {', '.join(self.data)})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def steps(self) -> int:
        return next(iter(self.data.values())).shape[1]

    def group(self, name: str) -> dict[str, np.ndarray]:
        """All hyperparameters of one group, by name."""
        if name not in self.groups:
            raise NotTraced(f"group {name!r} is not in this trace (it has {', '.join(self.groups)})")
        i = self.groups.index(name)
        return {h: a[i] for h, a in self.data.items()}

    def __repr__(self) -> str:
        return f"Trace(backend={self.backend!r}, groups={self.groups}, hypers={tuple(self.data)}, steps={self.steps})"


def trace(plan: Plan, steps: int | None = None, backend: str = "reference",
          metrics: Sequence[float] | None = None, *, start: int = 0, **options: Any) -> Trace:
    """Per-step values of every scheduled hyperparameter of every group.

    Args:
        plan: The plan (see :func:`optbridge.load`).
        steps: Number of optimizer updates to trace (default: the plan's ``total_steps``).
        backend: ``"reference"`` (the exact float64 evaluator) or a framework
            backend (``"torch"``, ``"mindspore-list"``, ``"mindspore-cell"``,
            ``"mindspore-experimental"``, ``"megengine"``) once installed.
        metrics: Metric series for plateau schedules (one value per plateau step,
            counted from the plan's start, not from ``start``).
        start: The first update to trace: the result holds updates
            ``start .. start + steps - 1`` (what a run resumed at update ``start``
            uses), exactly those columns of a trace from 0.
        **options: Backend-specific options.

    Returns:
        A :class:`Trace` (``trace.start == start``).

    Raises:
        ConfigError: ``plan`` is not a plan, ``steps``/``start`` are not valid counts,
            or the backend is unknown.
        EvaluationError: A schedule is undefined at some requested step.
        BackendUnavailable: The backend's framework is not installed.
    """
    if not isinstance(plan, Plan):
        raise ConfigError("plan", "must be an optbridge Plan (optbridge.load(...) reads one from a config)",
                          type(plan).__name__)
    if steps is None:
        if plan.total_steps is None:
            raise ConfigError("steps", "is required (the plan sets no total_steps)", None, show_value=False)
        steps = plan.total_steps - (start if isinstance(start, int) else 0)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError("steps", "must be a positive integer", steps)
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ConfigError("start", "must be an integer >= 0", start)
    steps, start = int(steps), int(start)
    if plan.total_steps is not None and start + steps > plan.total_steps:
        raise EvaluationError(
            f"the plan is defined for {plan.total_steps} steps (total_steps), updates {start}..{start + steps - 1} "
            "were asked for")
    fn = get_backend(backend)
    # values no optimizer can use are config errors (optbridge.checks); the reference's own values are checked
    # once computed, a framework backend's before it runs them
    check_plan(plan, start=start, steps=steps, metrics=metrics, values=backend != "reference")
    if not start:
        out = fn(plan, steps, metrics=metrics, **options)
    elif "start" in inspect.signature(fn).parameters:
        out = fn(plan, steps, metrics=metrics, start=start, **options)
    else:  # a backend that can only run from update 0: run it through and keep the window (exact, slower)
        full = fn(plan, start + steps, metrics=metrics, **options)
        window = slice(start, start + steps)
        out = Trace(full.groups, {h: a[:, window].copy() for h, a in full.data.items()}, full.backend,
                    full.fidelity, {h: a[:, window].copy() for h, a in full.applied.items()}, start)
    if backend == "reference":
        check_trace(plan, out)
    return out


def reference_trace(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, start: int = 0) -> Trace:
    """The reference backend: evaluate every schedule in float64 with numpy.

    Every (group, hyperparameter) is resolved once (:func:`optbridge.slots.slots`).
    Groups that share a schedule node are evaluated in one pass over a column of
    their base values, so the step-dependent part is computed once, and long
    traces are evaluated a window of :data:`WINDOW` updates at a time straight
    into the result, so memory stays close to the result's size. A plan-wide
    schedule of a hyperparameter that some group's optimizer lacks (``beta1`` over
    an SGD and an Adam) leaves NaN rows for those groups ("not applicable").

    ``start`` evaluates the window of updates ``start .. start + steps - 1`` (exactly
    the same values as that slice of a whole trace), so long exports can go in chunks.
    """
    names = tuple(g.name for g in plan.groups if g.frozen != "exclude")
    resolved = slots(plan, held=True)
    data: dict[str, np.ndarray] = {}
    for hyper in scheduled_hypers(plan):
        mine = [s for s in resolved if s.hyper == hyper]
        out = np.empty((len(names), steps))
        if len(mine) < len(names):
            out.fill(np.nan)  # not applicable to some group's optimizer
        held = [s for s in mine if s.node is None]
        for s in held:
            out[s.row] = s.base
        driven = [s for s in mine if s.node is not None]
        if driven:
            rows = [s.row for s in driven]
            every = rows == list(range(len(names)))
            items = evaluation_items(driven)
            sequential = any(evaluate.history_dependent(node) for node, _, _ in items)
            step = steps if sequential else max(1, WINDOW // max(1, len(driven)))
            for lo in range(0, steps, step):
                n = min(step, steps - lo)
                dest = out[:, lo:lo + n] if every else None  # all rows: straight into the result
                block = evaluate.table(items, start + lo, n, unit=plan.step_unit,
                                       steps_per_epoch=plan.steps_per_epoch, metrics=metrics, out=dest)
                if not every:
                    out[rows, lo:lo + n] = block
        data[hyper] = out
    _group_features(plan, data, start)
    return Trace(names, data, "reference", start=start)


def _group_features(plan: Plan, data: dict[str, np.ndarray], start: int) -> None:
    """Apply the groups' ``lr_dtype`` and ``start_step`` (:data:`optbridge.plan.GROUP_FEATURES`) in place.

    A float32 lr is what every update uses (the framework stores it as float32); a
    group that joins at ``start_step`` has no value before it (NaN, "not there yet").
    """
    built = [g for g in plan.groups if g.frozen != "exclude"]
    for row, g in enumerate(built):
        if group_feature(plan, g, "lr_dtype") == "float32" and "lr" in data:
            data["lr"][row] = data["lr"][row].astype(np.float32)
    nan_before_joins(plan, [g.name for g in built], data.values(), start)


def nan_before_joins(plan: Plan, names: Sequence[str], arrays: Iterable[np.ndarray], start: int = 0) -> None:
    """NaN, in place, where a group has not joined its optimizer yet (``start_step``: "not there yet").

    Row ``i`` of every ``(groups, steps)`` array is group ``names[i]``, column 0 update ``start``.
    The reference and every framework trace mark the updates before a join this one way.
    """
    by_name = {g.name: g for g in plan.groups}
    late = [(row, group_feature(plan, by_name[n], "start_step") - start) for row, n in enumerate(names)]
    late = [(row, k) for row, k in late if k > 0]
    for a in arrays:
        for row, k in late:
            a[row, :k] = np.nan


#: Values evaluated at once by :func:`reference_trace` (rows x updates).
WINDOW = 1 << 23


