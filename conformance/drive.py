"""What a training loop feeds a schedule besides ``step()``: the plateau metric, when it is due.

The trajectory runners give the metric series to ``to_<framework>(metrics=...)``
up front; a setup that takes the metric at run time instead gets it from
:meth:`MetricFeed.after` (one value per plateau step: per update on the iteration
clock, per epoch on the epoch clock, as the reference reads the series).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MetricFeed"]


class MetricFeed:
    """The plateau metric of a plan's run.

    Attributes:
        upfront: The series to pass as ``metrics=`` (None when the plan has no plateau
            or the setup takes it at run time; set to None to feed it per step).
    """

    def __init__(self, plan: Any, metrics: Sequence[float] | None) -> None:
        from optbridge import ir
        units = {(node.unit or plan.step_unit) for g in plan.groups for h in plan.schedule
                 for node in [plan.schedule_for(g, h)] if isinstance(node, ir.Plateau)}
        units |= {(node.unit or plan.step_unit) for g in plan.groups for node in g.schedule.values()
                  if isinstance(node, ir.Plateau)}
        self.metrics = None if metrics is None or not units else [float(m) for m in metrics]
        self.every = int(plan.steps_per_epoch or 1) if "epoch" in units else 1
        self.upfront: list[float] | None = self.metrics

    def after(self, k: int) -> float | None:
        """The metric to give ``step()`` after update ``k`` (None: not due, or given up front)."""
        if self.upfront is not None or self.metrics is None or (k + 1) % self.every:
            return None
        j = (k + 1) // self.every - 1
        return self.metrics[j] if j < len(self.metrics) else None
