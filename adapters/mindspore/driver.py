"""The MindSpore driver: the reference's values written into Parameters, update by update.

A :class:`Driver` serves every hyperparameter that no MindSpore mechanism (an lr
list, a ``LearningRateSchedule`` cell, an experimental lr_scheduler) can hold: an lr
of an experimental or torch-exact optimizer, a scheduled momentum or beta, a
plateau (which needs the metric at run time). Its values come from one
:class:`optbridge.source.ValueSource` (the reference evaluator, :data:`~optbridge.source.CHUNK`
updates at a time) and reach MindSpore through ``ops.assign`` in one compiled call
per update (``Parameter.set_data`` is ignored by PyNative's jitted optimizers).

The driver also owns the setup's **clock**: an int32 Parameter holding the update
whose values are in place (``-1`` when the driver is past its horizon). The
optimizer guards (:mod:`.guard`) compare it with their own update counters, so an
update made without ``setup.step()`` after the previous one, or past the end of the
schedule, raises instead of silently reusing stale values.

The horizon policy is the value source's: stepping to the horizon after the last
update writes nothing; the update that would use a value there raises
:class:`~optbridge.source.PastHorizon`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from optbridge import ir
from optbridge.errors import ConfigError
from optbridge.slots import Slot, fingerprint
from optbridge.source import PastHorizon, ValueSource

__all__ = ["Assigner", "Driver", "as_metric", "EAGER_WRITES"]

I32 = ms.int32
F64 = ms.float64
_IDS = itertools.count()
#: Writes (one per target and the clock, per update) the driver makes eagerly before it compiles its
#: :class:`Assigner` (ski rental). Measured: an eager ``ops.assign`` of a 0-d Parameter costs ~0.05-0.15 ms;
#: compiling the Assigner 0.2 s (1 target) to 1.2 s (32 targets), a call of it 0.2-2 ms. Below ~16 targets
#: the eager writes are as cheap per update; above, the compile pays for itself after ~1000 updates. A
#: conformance trace (60 experimental updates) compiles none.
EAGER_WRITES = 20_000


def as_metric(metric: Any) -> float | None:
    """A plateau metric as a float (numbers, 0-d numpy or MindSpore tensors); None stays None.

    Raises:
        ConfigError: not a finite number.
    """
    if metric is None:
        return None
    if hasattr(metric, "asnumpy"):
        metric = np.asarray(metric.asnumpy())
    if isinstance(metric, np.ndarray) and metric.size == 1:
        metric = metric.reshape(()).item()
    if isinstance(metric, bool) or not isinstance(metric, (int, float, np.floating, np.integer)) or \
            not np.isfinite(float(metric)):
        raise ConfigError("metric", "must be a finite number (the metric observed after this update)", metric)
    return float(metric)


class Assigner(nn.Cell):
    """``ops.assign(targets[i], values[i])`` for every target (cast to its dtype) and the clock, in one call."""

    def __init__(self, targets: Sequence[Parameter], clock: Parameter) -> None:
        super().__init__()
        self.targets = ms.ParameterTuple(targets) if targets else ()
        self.clock = clock
        self.n = len(targets)

    @ms.jit
    def construct(self, values, k):
        for i in range(self.n):
            ops.assign(self.targets[i], ops.cast(values[i], self.targets[i].dtype))
        ops.assign(self.clock, k)
        return k


class Driver:
    """Writes the values of ``slots`` into ``targets`` (one Parameter per slot) before each update.

    The constructor writes update 0's values; :meth:`step` after each update writes
    the next update's, as torch's ``scheduler.step()`` does. Stepping to the horizon
    writes nothing but the clock (``-1``).

    Args:
        slots: The driven slots (:func:`optbridge.slots.slots`), one per target.
        targets: The Parameters (float32 or float64, 0-d) holding each slot's value.
        unit: The plan's step unit.
        steps_per_epoch: Updates per epoch.
        total_steps: Updates the setup is exact for (None: unbounded).
        metrics: Plateau metrics known in advance (one per plateau step).
        steppers: Other per-update mechanisms advanced with the driver (MindSpore's
            experimental lr_schedulers, :class:`~optbridge_adapters.mindspore.optim.NativeStepper`).

    Attributes:
        k: The update whose values are in place (the number of :meth:`step` calls).
        source: The value source (its ``horizon`` is the first update without a value).
        clock: The int32 Parameter the optimizer guards read.
    """

    def __init__(self, slots: Sequence[Slot], targets: Sequence[Parameter], *, unit: str = "iter",
                 steps_per_epoch: int | None = None, total_steps: int | None = None,
                 metrics: Sequence[float] | None = None, steppers: Sequence[Any] = ()) -> None:
        if len(slots) != len(targets):
            raise ConfigError("targets", f"must be one Parameter per slot ({len(slots)})", len(targets))
        self.slots, self.targets, self.steppers = tuple(slots), tuple(targets), tuple(steppers)
        self.unit, self.steps_per_epoch, self.total_steps = unit, steps_per_epoch, total_steps
        self.source = ValueSource(self.slots, unit=unit, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                                  metrics=metrics)
        self._given = len(self.source.metrics)
        plateau = next((s.node for s in self.slots if isinstance(s.node, ir.Plateau)), None)
        self._plateau_every = None if plateau is None else plateau.scale(unit, steps_per_epoch)
        self.clock = Parameter(Tensor(0, I32), name=f"optbridge_clock_{next(_IDS)}", requires_grad=False)
        self.assigner = Assigner(self.targets, self.clock)
        self.k = 0
        self._eager = 0  # writes made eagerly by step() (EAGER_WRITES)
        self._write(eager=True)

    def rebind(self, mapping: Mapping[int, Any]) -> None:
        """Write into other Parameters from now on: ``mapping`` is ``id(Parameter) -> Parameter`` (the equal
        Parameters of a reused optimizer, :mod:`.reuse`); targets and the clock it does not name stay."""
        self.targets = tuple(mapping.get(id(t), t) for t in self.targets)
        self.clock = mapping.get(id(self.clock), self.clock)
        self.assigner = Assigner(self.targets, self.clock)

    # ------------------------------------------------------------------ values

    @property
    def horizon(self) -> int | None:
        """The first update without a value (None: unbounded; grows as plateau metrics arrive)."""
        return self.source.horizon

    def check(self, k: int) -> None:
        """Raise :class:`~optbridge.source.PastHorizon` unless update ``k`` has values (slots and steppers)."""
        self.source.check(k)
        for s in self.steppers:
            why = getattr(s, "blocked", None)
            if why:
                raise PastHorizon(f"update {k} is past the end of the schedule: {why}", step=k, horizon=k)

    def valid(self, k: int) -> bool:
        """Whether update ``k`` has values (before the horizon, and no stepper waits for a metric)."""
        try:
            self.check(k)
        except PastHorizon:
            return False
        return True

    def window(self, start: int, n: int) -> np.ndarray:
        """The float64 values of every slot for updates ``start .. start + n - 1``: ``(len(slots), n)``."""
        return self.source.window(start, n)

    def _write(self, eager: bool = False) -> None:
        """Write update ``k``'s values and the clock ``k``; past the horizon only the clock ``-1``.

        Eagerly (one in-place ``copy_`` per target from Python: the write ``ops.assign`` makes, at ~40% of
        its cost, and the compiled graphs that read the target see it in PyNative and GRAPH mode) for the
        writes made once (construction, :meth:`set_clock`) and for the first :data:`EAGER_WRITES` writes of
        :meth:`step`; then the compiled :class:`Assigner` writes every target and the clock in one
        call. A setup that :meth:`step` never drives (a compiled trace writes its own values), or
        drives for a short run, compiles none. The clock alone is always one eager ``copy_``.
        Both write the same values: float64 rounded once to each target's dtype.
        """
        valid = self.valid(self.k)
        if valid and self.slots and not eager and self._eager >= EAGER_WRITES:
            self.assigner(Tensor(np.asarray(self.source.row(self.k), dtype=np.float64)), Tensor(self.k, I32))
            return
        if valid:
            if not eager:
                self._eager += len(self.targets) + 1
            for t, v in zip(self.targets, self.source.row(self.k)):
                dtype = np.float32 if t.dtype == ms.float32 else np.float64  # the Assigner's cast, in numpy
                t.copy_(Tensor(np.asarray(v, dtype=np.float64).astype(dtype)))
        self.clock.copy_(Tensor(self.k if valid else -1, I32))

    def set_clock(self, k: int) -> None:
        """Move to update ``k`` without stepping (resume, or after a compiled run of many updates)."""
        self.k = int(k)
        self._write(eager=True)

    # ------------------------------------------------------------------ stepping

    def _take_metric(self, metric: float | None) -> None:
        """Record ``metric`` if the update just made ended a plateau step (others are ignored)."""
        every = self._plateau_every
        if every is None or metric is None or (self.k + 1) % every:
            return
        j = (self.k + 1) // every - 1  # the plateau step that ended with update self.k
        have = len(self.source.metrics)
        if j < self._given:
            raise ConfigError("metric", f"plateau step {j} already has its metric (given up front with metrics=); "
                              "call step() without it", metric)
        if j != have:
            raise ConfigError("metric", f"is for plateau step {j}, but the metric of plateau step {have} was never "
                              "given (call step(metric) at the end of every plateau step)", metric)
        self.source.add_metric(float(metric))

    def step(self, metric: float | None = None) -> None:
        """Call after every update: advances the steppers and writes the next update's values.

        Args:
            metric: The metric observed after this update, for a plateau schedule: used
                when the update ends a plateau step (every update on the iteration
                clock, every ``steps_per_epoch`` updates on the epoch clock), ignored
                otherwise.
        """
        metric = as_metric(metric)
        self._take_metric(metric)
        for s in self.steppers:
            s.step(None if metric is None else float(metric))
        self.k += 1
        self._write()

    # ------------------------------------------------------------------ state

    def fingerprint(self) -> str:
        """The plan fingerprint of what this driver drives (:func:`optbridge.slots.fingerprint`)."""
        return fingerprint(self.slots, unit=self.unit, steps_per_epoch=self.steps_per_epoch,
                           total_steps=self.total_steps)

    def state_dict(self) -> dict[str, Any]:
        """``{"fingerprint", "k", "metrics", "steppers"}``: what :meth:`load_state_dict` restores."""
        return {"fingerprint": self.fingerprint(), "k": self.k, "metrics": list(self.source.metrics),
                "steppers": [s.k for s in self.steppers]}

    def load_state_dict(self, state: Any) -> None:
        """Continue at the state of :meth:`state_dict` (the optimizers' own state comes from their checkpoint).

        Raises:
            ConfigError: a state of another plan (fingerprint), or a malformed state.
        """
        if not isinstance(state, dict):
            raise ConfigError("state", "must be a dict from setup.state_dict()", type(state).__name__)
        for key in ("fingerprint", "k", "metrics", "steppers"):
            if key not in state:
                raise ConfigError(f"state.{key}", "is missing (a dict from setup.state_dict())", None,
                                  show_value=False)
        if state["fingerprint"] != self.fingerprint():
            raise ConfigError("state.fingerprint", "was saved by a setup of other schedules (another plan, group "
                              "order or clock)", state["fingerprint"])
        k = state["k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError("state.k", "must be an integer >= 0", k)
        if any(sk for sk in state["steppers"]):
            from optbridge.errors import UnsupportedError
            raise UnsupportedError("state.steppers", "mindspore", "MindSpore's experimental lr_schedulers have no "
                                   "state_dict, so they cannot resume: build the setup with scheduler='driver'")
        self.source = ValueSource(self.slots, unit=self.unit, steps_per_epoch=self.steps_per_epoch,
                                  total_steps=self.total_steps, metrics=[float(m) for m in state["metrics"]])
        self._given = min(self._given, len(self.source.metrics))
        self.set_clock(k)
