"""Two clocks under mixed precision: schedule steps and applied updates.

With dynamic loss scaling an iteration whose gradients overflow skips the optimizer
update. The frameworks then disagree on what the schedule counts (measured, docs/amp.md):

* **torch** (``GradScaler.step`` skips ``optimizer.step()``; the loop still calls
  ``scheduler.step()``): the schedule counts **iterations**. The ``j``-th applied
  update uses the value of the iteration it happens in.
* **MindSpore** (``nn.TrainOneStepWithLossScaleCell`` with ``DynamicLossScaleUpdateCell``,
  or ``mindspore.amp.all_finite`` in a loop): the skipped update skips the optimizer and
  its ``global_step``, so list and cell schedules count **applied updates**; the ``j``-th
  applied update uses ``schedule(j)`` and falls one step further behind torch per overflow.

A plan's trace is indexed by schedule position. :class:`Clock` counts both and says
which position the next update uses under either convention (``"schedule"`` or
``"updates"``, :data:`CLOCKS`); :func:`positions` and :func:`applied_values` turn a
record of which iterations applied into the positions and values the applied updates
used. A driver that is told about skipped updates (:meth:`Clock.tick`) can follow either
clock in any framework: what each backend must do is in docs/amp.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .ir import check_choice, check_int

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["CLOCKS", "Clock", "positions", "applied_values"]

#: ``"schedule"``: the schedule advances every iteration (torch, and a MindSpore experimental scheduler stepped
#: every iteration); ``"updates"``: only with applied updates (MindSpore nn optimizers' ``global_step``).
CLOCKS = ("schedule", "updates")


@dataclass
class Clock:
    """Counts iterations and applied updates; :attr:`position` is the schedule position of the next update.

    Attributes:
        kind: ``"schedule"`` or ``"updates"`` (:data:`CLOCKS`).
        iterations: Iterations done (applied or skipped).
        updates: Updates applied.

    Raises:
        ConfigError: ``kind`` is not a clock, or a count is negative or inconsistent.
    """

    kind: str = "schedule"
    iterations: int = 0
    updates: int = 0

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, CLOCKS)
        self.iterations = check_int("iterations", self.iterations, minimum=0)
        self.updates = check_int("updates", self.updates, minimum=0)
        if self.updates > self.iterations:
            raise ConfigError("updates", f"must be at most iterations ({self.iterations})", self.updates)

    @property
    def position(self) -> int:
        """The schedule position (trace column) the next update uses."""
        return self.iterations if self.kind == "schedule" else self.updates

    @property
    def skipped(self) -> int:
        """Iterations whose update was skipped so far."""
        return self.iterations - self.updates

    def tick(self, applied: bool) -> int:
        """Record one iteration; returns the schedule position its update used (or would have used).

        Args:
            applied: Whether the optimizer update of this iteration was applied (False: the
                loss scaler found an overflow and skipped it).
        """
        if not isinstance(applied, bool):
            try:
                applied = bool(applied)
            except Exception:  # a framework tensor that is not a scalar
                raise ConfigError("applied", "must be true or false", type(applied).__name__) from None
        used = self.position
        self.iterations += 1
        self.updates += int(applied)
        return used

    def state_dict(self) -> dict[str, Any]:
        """``{"kind", "iterations", "updates"}`` (plain ints, for a checkpoint)."""
        return {"kind": self.kind, "iterations": self.iterations, "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the kind must match: a state of the other clock is refused)."""
        if not isinstance(state, Mapping) or set(state) != {"kind", "iterations", "updates"}:
            raise ConfigError("state", "must be a Clock.state_dict() (kind, iterations, updates)", state)
        if state["kind"] != self.kind:
            raise ConfigError("state.kind", f"must be this clock's kind {self.kind!r}", state["kind"])
        other = Clock(self.kind, state["iterations"], state["updates"])
        self.iterations, self.updates = other.iterations, other.updates


def _mask(applied: Sequence[bool] | np.ndarray) -> np.ndarray:
    import numpy as np
    a = np.asarray(applied)
    if a.ndim != 1 or a.dtype != bool:
        raise ConfigError("applied", "must be a 1-D sequence of true/false, one per iteration",
                          f"shape {a.shape}, dtype {a.dtype}", show_value=True)
    return a


def positions(applied: Sequence[bool] | np.ndarray, kind: str = "schedule", *, start: int = 0) -> np.ndarray:
    """The schedule position each applied update used.

    Args:
        applied: One flag per iteration: was its update applied.
        kind: The clock (:data:`CLOCKS`).
        start: The schedule position of the first iteration (a resumed run).

    Returns:
        int64 array, one entry per applied update: its iteration index (``"schedule"``) or its
        rank among the applied updates (``"updates"``), plus ``start``.
    """
    import numpy as np
    check_choice("kind", kind, CLOCKS)
    a = _mask(applied)
    out = np.flatnonzero(a) if kind == "schedule" else np.arange(int(a.sum()))
    return out.astype(np.int64) + int(start)


def applied_values(values: np.ndarray, applied: Sequence[bool] | np.ndarray, kind: str = "schedule") -> np.ndarray:
    """The values the applied updates used: ``values[..., positions(applied, kind)]``.

    Args:
        values: A trace row or array ``(groups, positions)`` (``optbridge.trace(plan, n)["lr"]``),
            with at least as many positions as the clock reaches.
        applied: One flag per iteration.
        kind: The clock.

    Raises:
        ConfigError: ``values`` has fewer positions than the applied updates need.
    """
    import numpy as np
    pos = positions(applied, kind)
    v = np.asarray(values)
    if pos.size and pos[-1] >= v.shape[-1]:
        raise ConfigError("values", f"must hold at least {int(pos[-1]) + 1} positions for these iterations",
                          v.shape[-1])
    return v[..., pos]

