"""What moves a torch setup's values step by step: the PlanScheduler, the SetupScheduler and the update guard.

* :class:`PlanScheduler` -- a torch ``LRScheduler`` that writes the reference
  evaluator's values for any hyperparameter, served by one
  :class:`optbridge.source.ValueSource` (evaluated :data:`optbridge.source.CHUNK`
  updates at a time; one failure policy at the end of a schedule).
* :class:`SetupScheduler` -- one object that steps every scheduler of a setup on its
  own clock (an epoch scheduler every ``steps_per_epoch`` updates) and feeds
  ReduceLROnPlateau its metric (given in advance, or to ``step(metric)``).
* :class:`UpdateGuard` -- a step pre-hook on every optimizer of a setup. Before each
  update it checks that the scheduler was stepped since the previous update (else
  :class:`SchedulerNotStepped`), adds the groups that join at this update
  (``start_step``), and raises :class:`~optbridge.source.PastHorizon` when the
  update would use a value at or past the end of the schedule. Stepping a
  scheduler to the horizon after the last update of a run writes nothing and is
  not an error: only an update that would use a missing value is.

Drivers store :func:`optbridge.slots.fingerprint` in their ``state_dict`` and
refuse a state saved by a driver of other schedules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from optbridge.errors import ConfigError, EvaluationError
from optbridge.slots import Slot, hyper_key
from optbridge.source import CHUNK, NotStepped, PastHorizon, ValueSource
from optbridge.state import saved_joins

__all__ = ["PlanScheduler", "SetupScheduler", "Entry", "UpdateGuard", "Join", "SchedulerNotStepped",
           "MissingMetric", "AmbiguousOptimizer", "read_hyper", "write_hyper", "position_of"]


#: The torch name of :class:`optbridge.source.NotStepped` (the optimizer made an update the scheduler was
#: not stepped for).
SchedulerNotStepped = NotStepped


class MissingMetric(EvaluationError, TypeError):
    """A ReduceLROnPlateau step is due and no metric was given (``step(metric)``, or ``metrics=`` up front)."""


class AmbiguousOptimizer(ConfigError, AttributeError):
    """``.optimizer`` of a setup with several optimizers (use ``.optimizers[name]``)."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__("optimizer", f"is ambiguous: this setup has {len(names)} optimizers ({', '.join(names)}): "
                         "use .optimizers[name]", None, show_value=False)


def read_hyper(group: Mapping[str, Any], hyper: str) -> float:
    """The value of ``hyper`` in a torch param group dict (``beta1`` is ``betas[0]``; tensors as floats)."""
    key, pos = hyper_key(hyper)
    v = group[key]
    return float(v[pos] if pos is not None else v)


def write_hyper(group: dict[str, Any], key: str, value: float) -> None:
    """Write a scalar hyperparameter into a group dict (a tensor is filled in place, as torch's schedulers do)."""
    cur = group.get(key)
    if isinstance(cur, torch.Tensor):
        cur.fill_(value)
    else:
        group[key] = value


def position_of(scheduler: Any) -> int:
    """The update the next ``optimizer.step()`` is, as a scheduler stepped once per update counts it.

    ``last_epoch`` (the steps since construction); a ChainedScheduler has none, its first
    child counts for it.
    """
    while not hasattr(scheduler, "last_epoch") and getattr(scheduler, "_schedulers", None):
        scheduler = scheduler._schedulers[0]
    return int(scheduler.last_epoch)


def _check_state(state: Any, fp: str, what: str) -> Mapping[str, Any]:
    if not isinstance(state, Mapping):
        raise ConfigError("state_dict", f"must be the mapping {what}.state_dict() returned", type(state).__name__)
    got = state.get("fingerprint")
    if got != fp:
        raise ConfigError("state_dict.fingerprint", f"was saved for another plan or setup (fingerprint {got!r}, "
                          f"this {what} drives {fp!r})", None, show_value=False)
    return state


def _count(state: Mapping[str, Any], key: str, minimum: int) -> int:
    v = state.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"state_dict.{key}", f"must be an integer >= {minimum}", v)
    return v


# --------------------------------------------------------------------------- the table scheduler

class PlanScheduler(LRScheduler):
    """A torch scheduler that writes the reference evaluator's values for any hyperparameter.

    Each ``step()`` writes, for every slot (group, hyperparameter), the value of the
    next update from a :class:`~optbridge.source.ValueSource` (a list lookup and a
    dict write per slot). ``beta1``/``beta2`` write ``group['betas']``, keeping the
    other entry; a tensor value (``lr_dtype: float32``) is filled in place. Groups
    that have not joined the optimizer yet (``start_step``) are skipped. Stepping to
    the end of the schedule writes nothing (the update that would use it raises, see
    :class:`UpdateGuard`).

    The state is plain data: the step counter, the metrics given to ``step(metric)``,
    and the fingerprint of the slots, so ``load_state_dict`` into a fresh setup of the
    same plan continues exactly (it also writes the restored update's values).

    Args:
        optimizer: The torch optimizer.
        slots: The slots it drives (``slot.index`` = the group's index in ``param_groups``).
        unit, steps_per_epoch, total_steps: The plan's clock and horizon.
        metrics: Plateau metrics known in advance.
        chunk: Updates evaluated at once.
        fingerprint: :func:`optbridge.slots.fingerprint` of the slots and clock.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, slots: Sequence[Slot], *, unit: str,
                 steps_per_epoch: int | None, total_steps: int | None, fingerprint: str,
                 metrics: Sequence[float] | None = None, chunk: int = CHUNK) -> None:
        self.fingerprint = fingerprint
        self._source = ValueSource(slots, unit=unit, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                                   metrics=metrics, chunk=chunk)
        self._given = 0 if metrics is None else len(metrics)  # metrics passed up front (not part of the state)
        # group indices, not dicts: optimizer.load_state_dict() replaces the group dicts
        self._scalar = [(s.index, s.key, j) for j, s in enumerate(slots) if s.position is None]
        betas: dict[int, list[int | None]] = {}
        for j, s in enumerate(slots):
            if s.position is not None:
                betas.setdefault(s.index, [None, None])[s.position] = j
        self._betas = [(g, j1, j2) for g, (j1, j2) in betas.items()]
        super().__init__(optimizer)

    @property
    def source(self) -> ValueSource:
        """The value source (its ``horizon`` is the first update without a value)."""
        return self._source

    def _write(self, t: int) -> None:
        try:
            row = self._source.row(t)  # a list lookup, but for one evaluation per chunk
        except PastHorizon:
            return  # no update uses it (the update that would raises in the guard)
        groups = self.optimizer.param_groups
        n = len(groups)
        for gi, key, j in self._scalar:
            if gi < n:
                write_hyper(groups[gi], key, row[j])
        for gi, j1, j2 in self._betas:
            if gi < n:
                g = groups[gi]
                b = g["betas"]
                g["betas"] = (b[0] if j1 is None else row[j1], b[1] if j2 is None else row[j2])

    def refresh(self) -> None:
        """Write the values of the current update again (after a group joined the optimizer)."""
        if self.last_epoch >= 0:
            self._write(self.last_epoch)

    # ---------------------------------------------------------------- torch interface

    def step(self, metrics: Any = None) -> None:
        """Write the values of the next update (call after ``optimizer.step()``).

        Args:
            metrics: The metric of a plateau schedule, when one of the slots has one and it
                is due (the metric observed after this step's update).
        """
        if metrics is not None:
            if self._source._plateau is None:
                raise ConfigError("metrics", "is only taken by a PlanScheduler that drives a plateau schedule "
                                  "(PlanScheduler.step() takes no epoch: it counts updates itself)", metrics)
            self._source.add_metric(_metric(metrics))
        t = self.last_epoch + 1
        self._write(t)
        self.last_epoch = t
        self._step_count += 1
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:  # type: ignore[override]  # floats; torch declares list[float | Tensor]
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "fingerprint": self.fingerprint,
                "_last_lr": list(self._last_lr), "metrics": list(self._source.metrics[self._given:])}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state = _check_state(state_dict, self.fingerprint, "PlanScheduler")
        last = _count(state, "last_epoch", 0)
        steps = state.get("_step_count", last + 1)
        extra = state.get("metrics", [])
        if not isinstance(extra, list | tuple):
            raise ConfigError("state_dict.metrics", "must be a list of numbers", extra)
        for i, m in enumerate(extra[len(self._source.metrics) - self._given:]):
            self._source.add_metric(_metric(m, f"state_dict.metrics[{i}]"))
        self.last_epoch = last
        self._step_count = int(steps)
        self._write(last)
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]


def _metric(v: Any, path: str = "metrics") -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(path, "must be a number (the metric a plateau schedule compares)", v) from None


# --------------------------------------------------------------------------- the setup's scheduler

@dataclass
class Entry:
    """One scheduler of a setup.

    Attributes:
        sched: The scheduler object.
        every: Updates per ``step()`` (``steps_per_epoch`` for an epoch scheduler).
        plateau: It takes the plateau metric when one is due (ReduceLROnPlateau, or a
            PlanScheduler that drives a plateau schedule whose metrics come step by step).
        optimizer: The name of its optimizer.
    """

    sched: Any
    every: int
    plateau: bool
    optimizer: str


class SetupScheduler:
    """One scheduler object for a setup: steps every scheduler it holds, each on its own clock.

    Call ``step()`` once per update, after ``optimizer.step()``. A plateau is due
    every ``plateau_every`` updates: it takes the next of the ``metrics`` given up
    front, else the metric given to ``step(metric)`` (ignored at other steps).
    ``last_epoch`` counts updates.
    """

    def __init__(self, entries: list[Entry], optimizers: Mapping[str, torch.optim.Optimizer], fingerprint: str,
                 metrics: Sequence[float] | None = None, plateau_every: int | None = None) -> None:
        self.entries = entries
        self.optimizers = dict(optimizers)
        self.fingerprint = fingerprint
        self.metrics = None if metrics is None else [_metric(m, f"metrics[{i}]") for i, m in enumerate(metrics)]
        self.last_epoch = 0
        self.plateau_every = plateau_every

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, when the setup has exactly one."""
        if len(self.optimizers) != 1:
            raise AmbiguousOptimizer(list(self.optimizers))
        return next(iter(self.optimizers.values()))

    @property
    def schedulers(self) -> tuple[Any, ...]:
        return tuple(e.sched for e in self.entries)

    def _plateau_metric(self, t: int, given: Any) -> float:
        every = self.plateau_every or 1
        j = t // every - 1  # plateau steps done before this one
        if self.metrics is not None:
            if given is not None:
                raise ConfigError("metrics", "were given to to_torch(metrics=...): step() takes no metric then",
                                  given)
            if j >= len(self.metrics):
                raise MissingMetric(f"update {t - 1}: the ReduceLROnPlateau step after it needs metric "
                                    f"{j + 1}, and to_torch got {len(self.metrics)} metrics")
            return self.metrics[j]
        if given is None:
            raise MissingMetric(f"update {t - 1}: ReduceLROnPlateau is due after it: call scheduler.step(metric) "
                                "(or pass metrics= to to_torch)")
        return _metric(given)

    def step(self, metrics: Any = None) -> None:
        """Step every scheduler that is due after this update (the plateau ones with the metric when due)."""
        t = self.last_epoch + 1
        due = self.plateau_every is not None and t % self.plateau_every == 0
        m = self._plateau_metric(t, metrics) if due and any(e.plateau for e in self.entries) else None
        for e in self.entries:
            if t % e.every:
                continue
            if e.plateau:
                e.sched.step(m)
            else:
                e.sched.step()
        self.last_epoch = t

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for o in self.optimizers.values() for g in o.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "fingerprint": self.fingerprint,
                "schedulers": [e.sched.state_dict() for e in self.entries]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state = _check_state(state_dict, self.fingerprint, "SetupScheduler")
        last = _count(state, "last_epoch", 0)
        scheds = state.get("schedulers")
        if not isinstance(scheds, list | tuple) or len(scheds) != len(self.entries):
            raise ConfigError("state_dict.schedulers", f"must hold {len(self.entries)} scheduler states, one per "
                              "scheduler of this setup", None if not isinstance(scheds, list | tuple) else len(scheds))
        self.last_epoch = last
        for e, sd in zip(self.entries, scheds, strict=True):
            e.sched.load_state_dict(sd)


# --------------------------------------------------------------------------- the update guard

@dataclass
class Join:
    """A group that joins its optimizer at update ``start`` (``start_step``)."""

    start: int
    optimizer: str
    group: dict[str, Any]
    joined: bool = False


@dataclass
class UpdateGuard:
    """Step pre-hooks that keep a setup's optimizers and scheduler in step (see the module docstring).

    Attributes:
        strict: Check that the scheduler was stepped after every update (set False to
            opt out, e.g. for a loop that deliberately skips scheduler steps).
        sources: The value sources whose horizons bound the updates (their
            ``check(k)`` raises :class:`~optbridge.source.PastHorizon`).
        position: The scheduler's position: the update the next ``optimizer.step()`` is.
        joins: Groups that join mid-run.
        refresh: Called after groups joined (a PlanScheduler writes their values).
    """

    optimizers: Mapping[str, torch.optim.Optimizer]
    position: Callable[[], int]
    sources: list[ValueSource] = field(default_factory=list)
    joins: list[Join] = field(default_factory=list)
    refresh: Callable[[], None] | None = None
    strict: bool = True
    _last: dict[str, int] = field(default_factory=dict)
    _handles: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, o in self.optimizers.items():
            self._handles.append(o.register_step_pre_hook(self._hook(name)))
            if any(j.optimizer == name for j in self.joins):
                self._handles.append(o.register_load_state_dict_pre_hook(self._load_hook(name)))

    def _load_hook(self, name: str) -> Callable[..., None]:
        def hook(optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
            self.join_saved(name, list(state_dict.get("param_groups", ())))
        return hook

    def join_saved(self, name: str, saved: Sequence[Mapping[str, Any]]) -> None:
        """Before ``optimizer.load_state_dict`` (a pre-hook): add optimizer ``name``'s next joining groups that
        the saved ``param_groups`` hold (it was saved after they joined). Only when the saved groups are exactly
        those, with as many parameters each; otherwise nothing changes and torch refuses the state."""
        opt = self.optimizers[name]
        pending = [j for j in self.joins if j.optimizer == name and not j.joined]  # in the order they join
        n = saved_joins(len(opt.param_groups), saved, [len(j.group["params"]) for j in pending])
        for j in pending[:n]:
            opt.add_param_group(j.group)
            j.joined = True
        if n and self.refresh is not None:
            self.refresh()

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self.before_update(name)
        return hook

    def before_update(self, name: str) -> None:
        """Run the checks before an update of optimizer ``name`` (called by its step pre-hook)."""
        k = self.position()
        last = self._last.get(name)
        if self.strict and last is not None and k <= last:
            raise SchedulerNotStepped(
                f"scheduler.step() was not called after update {last}: optimizer {name!r} is about to make "
                f"another update, and the schedule still stands at update {k} (call scheduler.step() once after "
                "every optimizer.step(), or set setup.guard.strict = False to opt out)", update=last + 1, stepped=k)
        self.join(k)
        for src in self.sources:
            try:
                src.check(k)
            except PastHorizon as e:
                raise PastHorizon(f"optimizer {name!r}: {e}", step=e.step, horizon=e.horizon) from None
        self._last[name] = k

    def join(self, k: int) -> None:
        """Add the groups that join at or before update ``k`` (once)."""
        added = False
        for j in self.joins:
            if not j.joined and j.start <= k:
                self.optimizers[j.optimizer].add_param_group(j.group)
                j.joined = added = True
        if added and self.refresh is not None:
            self.refresh()

    @property
    def active(self) -> bool:
        """Whether the hooks are installed (False after :meth:`remove`)."""
        return bool(self._handles)

    def remove(self) -> None:
        """Remove the hooks (no checks, no joins from now on)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
