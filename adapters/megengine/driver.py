"""The MegEngine schedule driver, :class:`PlanScheduler`, and the guard on each optimizer's step (imports megengine).

Values come from :class:`optbridge.source.ValueSource` over :func:`optbridge.slots.slots`
(the reference evaluator, :data:`~optbridge.source.CHUNK` updates at a time), so
the driver holds no schedule math and applies the one horizon policy of the core:

* stepping the driver to the horizon (the step a training loop makes after its last
  update) writes nothing and does not raise;
* the MegEngine ``optimizer.step()`` that would use a value at or after the
  horizon raises :class:`~optbridge.source.PastHorizon` (an EvaluationError naming
  the update, the horizon and its cause), before any tensor changes;
* an ``optimizer.step()`` made while the driver still stands where the previous
  update left it (``scheduler.step()`` was not called in between) raises
  :class:`NotStepped`, naming the update.

MegEngine has no optimizer step pre-hook, so the checks run in a :class:`StepGuard`
installed as the **instance attribute** ``optimizer.step``: ``optimizer.step()``
(and a ``MultipleOptimizer`` or a training loop calling it) goes through the guard,
which then calls the class's own ``step``. The guard belongs to the driver that
installed it; a newer driver on the same optimizer replaces it. ``type(opt).step(opt)``
bypasses it. A driver with nothing to drive and no ``total_steps`` installs none (its
position never matters).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import megengine.optimizer as mopt

from optbridge import ir
from optbridge.errors import ConfigError
from optbridge.slots import Slot, fingerprint
from optbridge.source import CHUNK, NotStepped, ValueSource
from optbridge.state import saved_joins

__all__ = ["PlanScheduler", "StepGuard", "NotStepped", "install_guard", "guard_native", "check_metrics"]


class StepGuard:
    """``optimizer.step`` with the driver's checks in front (installed by :func:`install_guard`).

    Before each update it reads the driver's position ``t`` (``scheduler.current_epoch``:
    the update whose values the groups hold), raises :class:`NotStepped` when the
    previous update already used ``t``, then calls ``prepare(t)`` (the horizon check,
    and the values of ``t`` if the driver has not written them yet), then the class's
    own ``step()``.

    Attributes:
        optimizer: The guarded optimizer.
        scheduler: The driver whose position is checked.
        total_steps: The updates the setup is defined for (None: unbounded), for readers.
        last: The position the previous update used (None before the first update and
            after :meth:`reset`).
    """

    def __init__(self, optimizer: Any, scheduler: Any, prepare: Callable[[int], None],
                 total_steps: int | None = None) -> None:
        self.optimizer, self.scheduler, self._prepare = optimizer, scheduler, prepare
        self.total_steps = total_steps
        self.last: int | None = None
        self._step = type(optimizer).step

    def __call__(self) -> Any:
        t = int(self.scheduler.current_epoch)
        if self.last is not None and t == self.last:
            raise NotStepped(
                f"optimizer.step() for update {t + 1}: the schedule driver ({type(self.scheduler).__name__}) still "
                f"stands at update {t}, whose values the previous optimizer.step() already used; call "
                "scheduler.step() once after every optimizer.step()", update=t + 1, stepped=t)
        self._prepare(t)
        out = self._step(self.optimizer)
        self.last = t
        return out

    def reset(self) -> None:
        """Forget the previous update (after a state was loaded: the driver may stand anywhere)."""
        self.last = None


def install_guard(optimizer: Any, scheduler: Any, prepare: Callable[[int], None],
                  total_steps: int | None = None) -> StepGuard:
    """Guard ``optimizer.step`` with ``scheduler``'s position and ``prepare`` (see :class:`StepGuard`)."""
    guard = StepGuard(optimizer, scheduler, prepare, total_steps)
    optimizer.step = guard
    return guard


def check_metrics(path: str, metrics: Any) -> list[float] | None:
    """``metrics`` as a list of finite floats (None stays None), or ConfigError naming the bad entry."""
    if metrics is None:
        return None
    if isinstance(metrics, (str, bytes, Mapping)) or not hasattr(metrics, "__len__"):
        raise ConfigError(path, "must be a sequence of metric values", type(metrics).__name__)
    return [ir.check_real(f"{path}[{i}]", m) for i, m in enumerate(list(metrics))]


class PlanScheduler(mopt.LRScheduler):
    """Writes the values of an optbridge plan's scheduled hyperparameters into a MegEngine optimizer's groups.

    A ``megengine.optimizer.LRScheduler``: the constructor writes the values of update
    0, and each ``step()`` those of the next update (call it after
    ``optimizer.step()``, as MegEngine's MultiStepLR). Every value comes from the
    reference evaluator through :class:`~optbridge.source.ValueSource`, evaluated
    ``chunk`` updates at a time, so a step costs a few dict writes of Python floats
    (MegEngine converts them to float32 inside ``optimizer.step()``). lr, momentum,
    weight_decay, eps, rho, ... go into their group keys; beta1/beta2 into the
    ``betas`` tuple (the other component keeps its value).

    Plateau schedules need the metric series: give it up front (``metrics=``) or one
    value at a time, ``step(metric=m)`` / :meth:`add_metric`. The metric of plateau
    step ``j`` decides the value of step ``j + 1``.

    The end of a schedule follows the core's horizon policy (module docstring):
    stepping to the horizon writes nothing, and the optimizer update that would use
    a value there raises :class:`~optbridge.source.PastHorizon`; the guard on
    ``optimizer.step`` also raises :class:`NotStepped` for an update made without
    ``step()``. ``state_dict()`` / ``load_state_dict()`` save and restore the position
    and the metric history with the slots' fingerprint (:func:`optbridge.slots.fingerprint`),
    and refuse a state saved by a driver of other schedules. (MegEngine's base class
    raises NotImplementedError for both.)

    Args:
        optimizer: The MegEngine optimizer (any ``megengine.optimizer.Optimizer``).
        slots: What to drive: :class:`optbridge.slots.Slot` records whose ``index``
            is the position of their group in ``optimizer.param_groups``.
        unit: The plan's step unit.
        steps_per_epoch: Updates per epoch.
        total_steps: Updates the plan is defined for (None: unbounded).
        metrics: Plateau metrics known up front.
        chunk: Updates evaluated at once.
        joins: ``(update, group dict)`` of groups that join the optimizer mid-run (``start_step``),
            in order: before that update the driver calls ``optimizer.add_param_group(group)``
            (the optimizer must create state lazily, as optbridge's do), then writes its values.
            Their slots index ``param_groups`` as if they had joined. Joining is one-way: loading
            an earlier position does not remove a joined group.

    Raises:
        ConfigError: a bad argument, or a slot whose group or key the optimizer does not hold.
    """

    current_epoch: int  # set by MegEngine's LRScheduler: the update whose values the groups hold

    def __init__(self, optimizer: Any, slots: Sequence[Slot], *, unit: str = "iter",
                 steps_per_epoch: int | None = None, total_steps: int | None = None,
                 metrics: Sequence[float] | None = None, chunk: int = CHUNK,
                 joins: Sequence[tuple[int, dict[str, Any]]] = ()) -> None:
        if not isinstance(optimizer, mopt.Optimizer):
            raise ConfigError("optimizer", "must be a megengine.optimizer.Optimizer", type(optimizer).__name__)
        if isinstance(slots, (str, bytes)) or not isinstance(slots, Sequence):
            raise ConfigError("slots", "must be a sequence of optbridge.slots.Slot", type(slots).__name__)
        self.slots: tuple[Slot, ...] = tuple(slots)
        self.unit = ir.check_choice("unit", unit, ir.UNITS)
        self.steps_per_epoch = None if steps_per_epoch is None else ir.check_int("steps_per_epoch", steps_per_epoch,
                                                                                  minimum=1)
        self.total_steps = None if total_steps is None else ir.check_int("total_steps", total_steps, minimum=1)
        self.chunk = chunk
        self._joins = sorted(((ir.check_int(f"joins[{i}][0]", st, minimum=1), gd) for i, (st, gd) in enumerate(joins)),
                             key=lambda j: j[0])
        defaults = getattr(optimizer, "_defaults", {})
        groups = list(optimizer.param_groups) + [gd for _, gd in self._joins]
        tuples: dict[tuple[int, str], list[int | None]] = {}
        self._scalar: list[tuple[int, str, int]] = []
        for j, s in enumerate(self.slots):
            if not isinstance(s, Slot):
                raise ConfigError(f"slots[{j}]", "must be an optbridge.slots.Slot", type(s).__name__)
            if not 0 <= s.index < len(groups):
                raise ConfigError(s.path, f"names param_groups[{s.index}], and the optimizer has {len(groups)} "
                                  "group(s)", s.index)
            held = groups[s.index]
            if s.key not in held and not (s.index >= len(optimizer.param_groups) and s.key in defaults):
                raise ConfigError(s.path, f"is written into param_groups[{s.index}][{s.key!r}], a key this "
                                  f"{type(optimizer).__name__} group does not hold", sorted(k for k in held
                                                                                            if k != "params"))
            if s.position is None:
                self._scalar.append((s.index, s.key, j))
            else:
                pair = tuples.setdefault((s.index, s.key), [None, None])
                pair[s.position] = j
        self._tuples = [(gi, key, pair[0], pair[1]) for (gi, key), pair in tuples.items()]
        self.source = self._source(check_metrics("metrics", metrics))
        self.fingerprint = fingerprint(self.slots, unit=self.unit, steps_per_epoch=self.steps_per_epoch,
                                       total_steps=self.total_steps)
        self._written: int | None = None
        # nothing to check for a driver without slots or horizon: its position never matters
        self.guard = install_guard(optimizer, self, self._prepare, self.total_steps) \
            if self.slots or self.total_steps else None
        if self._joins:
            self._wrap_load(optimizer)
        super().__init__(optimizer)

    def _wrap_load(self, optimizer: Any) -> None:
        """``optimizer.load_state_dict`` first adds the joining groups the saved state holds (it was saved after
        they joined), so a resume loads the two states in either order (MegEngine has no load pre-hook)."""
        load = optimizer.load_state_dict

        def load_state_dict(state: Any) -> None:
            saved = list(state.get("param_groups", ())) if isinstance(state, Mapping) else []
            sizes = [len(gd["params"]) for _, gd in self._joins]
            for _ in range(saved_joins(len(optimizer.param_groups), saved, sizes)):
                optimizer.add_param_group(self._joins.pop(0)[1])
            load(state)

        optimizer.load_state_dict = load_state_dict

    def _source(self, metrics: Sequence[float] | None) -> ValueSource:
        return ValueSource(self.slots, unit=self.unit, steps_per_epoch=self.steps_per_epoch,
                           total_steps=self.total_steps, metrics=metrics, chunk=self.chunk)

    # ------------------------------------------------------------------ MegEngine's LRScheduler interface

    def step(self, epoch: int | None = None, metric: float | None = None) -> None:
        """Move to the next update (or to update ``epoch``) and write its values into the groups.

        Args:
            epoch: Jump to this update instead (an int >= 0).
            metric: The plateau metric observed after the latest plateau step.

        Raises:
            ConfigError: ``epoch`` or ``metric`` is not valid.
        """
        if metric is not None:
            self.add_metric(metric)
        if epoch is None:
            t = self.current_epoch + 1
        else:
            t = ir.check_int("epoch", epoch, minimum=0)
        self.current_epoch = t
        self._sync()

    def get_lr(self) -> list[float]:
        """The lr of every group (as written for the current update)."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """``{"current_epoch", "metrics", "fingerprint"}``: everything needed to continue exactly."""
        return {"current_epoch": self.current_epoch, "metrics": list(self.source.metrics),
                "fingerprint": self.fingerprint}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (checked first: nothing changes when it does not fit).

        Raises:
            ConfigError: not a state of a PlanScheduler, or one that drives other schedules.
        """
        if not isinstance(state_dict, Mapping):
            raise ConfigError("state_dict", "must be a dict saved by PlanScheduler.state_dict()",
                              type(state_dict).__name__)
        for key in ("current_epoch", "metrics", "fingerprint"):
            if key not in state_dict:
                raise ConfigError(f"state_dict.{key}", "is missing (not a PlanScheduler state)", sorted(state_dict))
        if state_dict["fingerprint"] != self.fingerprint:
            raise ConfigError("state_dict.fingerprint", "was saved by a PlanScheduler driving other schedules "
                              "(a different plan, group order or clock)", state_dict["fingerprint"], show_value=False)
        t = ir.check_int("state_dict.current_epoch", state_dict["current_epoch"], minimum=0)
        metrics = check_metrics("state_dict.metrics", state_dict["metrics"])
        self.source = self._source(metrics)
        self.current_epoch = t
        self._written = None
        if self.guard is not None:
            self.guard.reset()
        self._sync()

    # ------------------------------------------------------------------ metrics and the horizon

    def add_metric(self, value: float) -> None:
        """Append the metric observed after the latest plateau step (writes the update it makes known)."""
        self.source.add_metric(ir.check_real("metric", value))
        self._sync()

    @property
    def metrics(self) -> tuple[float, ...]:
        """Plateau metrics given so far."""
        return self.source.metrics

    @property
    def horizon(self) -> int | None:
        """The first update without a value (None: unbounded); see :class:`~optbridge.source.ValueSource`."""
        return self.source.horizon

    # ------------------------------------------------------------------ writing

    def _sync(self) -> None:
        """Write the values of the current update, unless they are written or past the horizon (then: nothing)."""
        t = self.current_epoch
        if self._written == t:
            return
        h = self.source.horizon
        if h is None or t < h:
            self._write(t)

    def _prepare(self, t: int) -> None:
        """Before an update (the guard): the horizon check, and the values of ``t`` in the groups."""
        self.source.check(t)
        if self._written != t:
            self._write(t)

    def _write(self, t: int) -> None:
        while self._joins and self._joins[0][0] <= t:
            self.optimizer.add_param_group(self._joins.pop(0)[1])
        row = self.source.row(t)
        groups = self.optimizer.param_groups
        n = len(groups)
        for gi, key, j in self._scalar:
            if gi < n:
                groups[gi][key] = row[j]
        for gi, key, j0, j1 in self._tuples:
            if gi >= n:
                continue  # joins later
            g = groups[gi]
            old = g[key]
            g[key] = (old[0] if j0 is None else row[j0], old[1] if j1 is None else row[j1])
        self._written = t


def guard_native(optimizer: Any, scheduler: Any, source: ValueSource) -> StepGuard:
    """Guard an optimizer driven by a MegEngine scheduler (MultiStepLR): the same checks, ``source``'s horizon."""
    return install_guard(optimizer, scheduler, source.check, source.total_steps)
