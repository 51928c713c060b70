"""The settings of an lr range test (:class:`RangeTest`), checked on construction.

Their own module, below :mod:`optbridge.lrfind` (the ramp and the loop) and
:mod:`optbridge.lrfind_result` (which keeps the settings it ran with), so neither
imports the other's module for them.
"""

from __future__ import annotations

import dataclasses
import math

from . import ir
from .errors import ConfigError

__all__ = ["RangeTest", "MODES"]

MODES = ("exp", "linear")


def _real(path: str, v: object, *, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ConfigError(path, "must be a finite number", v)
    if positive and float(v) <= 0:
        raise ConfigError(path, "must be > 0", v)
    return float(v)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RangeTest:
    """The settings of one range test (checked on construction).

    Attributes:
        start_lr: lr of update 0 in the reference group (the group with the largest lr).
        end_lr: lr of the last update (``steps - 1``) in the reference group; > start_lr.
        steps: Planned optimizer updates (>= 2).
        mode: ``"exp"`` (equal ratios per update) or ``"linear"``.
        smooth: Weight of the past in the smoothed loss, in ``[0, 1)`` (fastai's 0.98).
        diverge: Stop when the smoothed loss exceeds ``diverge`` x the best one (> 1),
            or None (stop only on a NaN/inf loss).
        accumulate: Forward/backward passes per update (gradients of the loss / k,
            the recorded loss is the mean of the k losses).
    """

    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    mode: str = "exp"
    smooth: float = 0.98
    diverge: float | None = 4.0
    accumulate: int = 1

    def __post_init__(self) -> None:
        start = _real("start_lr", self.start_lr, positive=True)
        end = _real("end_lr", self.end_lr, positive=True)
        if end <= start:
            raise ConfigError("end_lr", f"must be > start_lr ({start:g})", self.end_lr)
        object.__setattr__(self, "start_lr", start)
        object.__setattr__(self, "end_lr", end)
        object.__setattr__(self, "steps", ir.check_int("steps", self.steps, minimum=2))
        ir.check_choice("mode", self.mode, MODES)
        smooth = _real("smooth", self.smooth)
        if not 0.0 <= smooth < 1.0:
            raise ConfigError("smooth", "must be in [0, 1)", self.smooth)
        object.__setattr__(self, "smooth", smooth)
        if self.diverge is not None:
            d = _real("diverge", self.diverge)
            if d <= 1.0:
                raise ConfigError("diverge", "must be > 1 (or None: stop only on NaN/inf)", self.diverge)
            object.__setattr__(self, "diverge", d)
        object.__setattr__(self, "accumulate", ir.check_int("accumulate", self.accumulate, minimum=1))

    def node(self) -> ir.Node:
        """The ramp as an IR node relative to the group's base (factor 1 at update 0)."""
        ratio = self.end_lr / self.start_lr
        if self.mode == "exp":
            from .expr import parse  # numpy loads with the expression, not with optbridge

            return ir.Lambda(expr=parse(f"{ratio!r} ** (k / {self.steps - 1})", path="lr_find.ramp"))
        return ir.Linear(start_factor=1.0, end_factor=ratio, steps=self.steps - 1)
