"""MindSpore's experimental lr_schedulers for schedule nodes, and the stepper that advances them.

:func:`native_scheduler` maps a node to ``mindspore.experimental.optim.lr_scheduler``
classes where they compute it as torch does (float32 state and recursion: the
bound is in docs/mindspore.md), else returns None (the driver writes the
reference's values instead). :class:`NativeStepper` steps one scheduler every
``every`` updates (``steps_per_epoch`` for epoch-clock schedules) and feeds
``ReduceLROnPlateau`` its metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mindspore import Tensor
from mindspore.common import dtype as mstype
from mindspore.experimental.optim import lr_scheduler as MLS

from optbridge import ir

__all__ = ["native_scheduler", "scheduler_steps", "NativeStepper", "lambda_function", "EXPERIMENTAL_STEP_LIMIT"]

#: Experimental schedulers count steps in a float32 Parameter: they freeze at 2**24.
EXPERIMENTAL_STEP_LIMIT = 2**24
F32 = mstype.float32


class NativeStepper:
    """Steps an experimental lr_scheduler once per ``every`` optimizer updates.

    ``every`` is ``steps_per_epoch`` for epoch-clock schedules. ``ReduceLROnPlateau``
    takes the metric of each of its steps: from ``metrics`` (given up front) while it
    lasts, then from :meth:`step`'s argument. A plateau step without its metric leaves
    the scheduler where it is and sets :attr:`blocked`: the next update raises (the
    driver's horizon policy), instead of running on a stale lr.

    Attributes:
        k: Updates stepped so far.
        blocked: Why the next update has no lr (a missing metric), or "".
    """

    def __init__(self, scheduler: Any, every: int = 1, plateau: bool = False,
                 metrics: Sequence[float] | None = None, path: str = "schedule.lr") -> None:
        self.scheduler, self.every, self.plateau, self.k = scheduler, every, plateau, 0
        self.metrics = [] if metrics is None else [float(m) for m in metrics]
        self.path = path
        self.blocked = ""

    def step(self, metric: float | None = None) -> None:
        """Call after every optimizer update (the metric matters only on updates that end a scheduler step)."""
        self.k += 1
        if self.k % self.every or self.blocked:
            return
        if not self.plateau:
            self.scheduler.step()
            return
        j = self.k // self.every - 1
        if j < len(self.metrics):
            metric = self.metrics[j]
        if metric is None:
            self.blocked = (f"{self.path}: ReduceLROnPlateau needs the metric of plateau step {j} (after update "
                            f"{self.k - 1}); pass metrics= up front or call setup.step(metric) at the end of every "
                            f"plateau step (every {self.every} update(s))")
            return
        self.scheduler.step(Tensor(float(metric), F32))


def lambda_function(node_expr: Any) -> Callable[[Any], float]:
    """A LambdaLR / MultiplicativeLR function: the expression, evaluated by optbridge.expr on the integer counter.

    It carries the expression's source (``optbridge_expr``), so :func:`from_mindspore` reads it back.
    """
    def fn(epoch: Any) -> float:
        return float(node_expr(int(round(float(epoch)))))
    fn.optbridge_expr = node_expr.source  # type: ignore[attr-defined]  # a function attribute, read back by from_mindspore
    return fn


def _unit_of(node: ir.Node, inherited: str) -> str:
    return node.unit or inherited


def native_scheduler(node: ir.Node, *, unit: str, bases: Sequence[float], horizon: int | None,
                     in_sequence: bool = False) -> tuple[Callable[[Any], Any], str] | None:
    """``(make(optimizer) -> scheduler, description)`` for an experimental lr_scheduler that computes ``node``.

    Returns None where MindSpore's class differs from the node (or does not exist), or adds
    nothing but a rounding (LambdaLR: the expression is optbridge's either way):
    OneCycleLR, ChainedScheduler, MultiStepLR inside SequentialLR (AttributeError),
    MultiplicativeLR inside SequentialLR (no λ(0) factor at the milestone),
    clamped cosine past its horizon, warmups from 0 (LinearLR needs start > 0),
    natural-exp / inverse-time / piecewise / table nodes, nested sequences, units
    that differ inside a sequence.
    """
    u = _unit_of(node, unit)
    if isinstance(node, ir.Constant):
        # steps=0 means the factor never applies; torch's and MindSpore's ConstantLR(total_iters=0) apply it forever
        if node.steps is not None and node.steps >= 1 and 0.0 <= node.factor <= 1.0 and node.factor != 0.0:
            return (lambda o: MLS.ConstantLR(o, factor=node.factor, total_iters=node.steps),
                    f"ConstantLR(factor={node.factor:g}, total_iters={node.steps})")
        return None
    if isinstance(node, ir.Linear):
        if 0.0 < node.start_factor <= 1.0 and 0.0 <= node.end_factor <= 1.0:
            return (lambda o: MLS.LinearLR(o, start_factor=node.start_factor, end_factor=node.end_factor,
                                           total_iters=node.steps),
                    f"LinearLR(start_factor={node.start_factor:g}, end_factor={node.end_factor:g}, "
                    f"total_iters={node.steps})")
        return None
    if isinstance(node, ir.Exponential):
        if node.stair:
            return (lambda o: MLS.StepLR(o, step_size=node.every, gamma=float(node.gamma)),
                    f"StepLR(step_size={node.every}, gamma={node.gamma:g})")
        if node.every == 1:
            return lambda o: MLS.ExponentialLR(o, gamma=float(node.gamma)), f"ExponentialLR(gamma={node.gamma:g})"
        return None
    if isinstance(node, ir.MultiStep):
        if in_sequence:
            return None
        return (lambda o: MLS.MultiStepLR(o, milestones=list(node.milestones), gamma=float(node.gamma)),
                f"MultiStepLR(milestones={list(node.milestones)}, gamma={node.gamma:g})")
    if isinstance(node, ir.Polynomial):
        if node.end == 0.0 and not node.cycle:
            return (lambda o: MLS.PolynomialLR(o, total_iters=node.steps, power=float(node.power)),
                    f"PolynomialLR(total_iters={node.steps}, power={node.power:g})")
        return None
    if isinstance(node, ir.Cosine):
        if not node.clamp or (horizon is not None and horizon <= node.steps + 1):
            return (lambda o: MLS.CosineAnnealingLR(o, T_max=node.steps, eta_min=float(node.end)),
                    f"CosineAnnealingLR(T_max={node.steps}, eta_min={node.end:g})")
        return None
    if isinstance(node, ir.CosineRestarts):
        return (lambda o: MLS.CosineAnnealingWarmRestarts(o, T_0=node.period, T_mult=node.mult,
                                                          eta_min=float(node.end)),
                f"CosineAnnealingWarmRestarts(T_0={node.period}, T_mult={node.mult}, eta_min={node.end:g})")
    if isinstance(node, ir.Cyclic):
        if in_sequence:
            return None
        low = [float(b) for b in bases] if node.low is None else float(node.low)
        return (lambda o: MLS.CyclicLR(o, base_lr=low, max_lr=float(node.high), step_size_up=node.step_size_up,
                                       step_size_down=node.step_size_down, mode=node.mode, gamma=float(node.gamma)),
                f"CyclicLR(max_lr={node.high:g}, step_size_up={node.step_size_up}, mode={node.mode})")
    if isinstance(node, ir.Lambda):
        # MindSpore's LambdaLR would only multiply its float32 base lr by optbridge's own evaluation of the
        # expression (one more float32 rounding, 1 ulp measured): the driver writes the same values exactly
        return None
    if isinstance(node, ir.Multiplicative):
        if in_sequence:
            return None
        return (lambda o: MLS.MultiplicativeLR(o, lr_lambda=lambda_function(node.expr)),
                f"MultiplicativeLR({getattr(node.expr, 'source', node.expr)!r})")
    if isinstance(node, ir.Sequence):
        # a boundary at 0: experimental SequentialLR continues the second scheduler from the first's value,
        # while torch and the IR start it fresh at update 0
        if in_sequence or (node.boundaries and node.boundaries[0] == 0):
            return None
        kids = []
        for i, p in enumerate(node.parts):
            if _unit_of(p, u) != u or isinstance(p, (ir.Sequence, ir.Chain)):
                return None
            h = (node.boundaries[i] - (node.boundaries[i - 1] if i else 0)) if i < len(node.boundaries) else (
                None if horizon is None else horizon - (node.boundaries[-1] if node.boundaries else 0))
            m = native_scheduler(p, unit=u, bases=bases, horizon=h, in_sequence=True)
            if m is None:
                return None
            kids.append(m)
        milestones = list(node.boundaries)

        def make(o: Any) -> Any:
            return MLS.SequentialLR(o, schedulers=[k[0](o) for k in kids], milestones=milestones)
        return make, "SequentialLR([" + ", ".join(k[1] for k in kids) + f"], milestones={milestones})"
    if isinstance(node, ir.Plateau):
        if node.best is not None or node.bad_steps or node.cooldown_left:
            return None  # MindSpore's ReduceLROnPlateau starts fresh: a plateau imported mid-run is driven
        return (lambda o: MLS.ReduceLROnPlateau(o, mode=node.mode, factor=node.factor, patience=node.patience,
                                                threshold=node.threshold, threshold_mode=node.threshold_mode,
                                                cooldown=node.cooldown, min_lr=node.min_value, eps=node.eps),
                f"ReduceLROnPlateau(mode={node.mode}, factor={node.factor:g}, patience={node.patience})")
    return None


def scheduler_steps(node: ir.Node, unit: str, total_steps: int | None, spe: int | None) -> int | None:
    """How many scheduler steps a horizon of ``total_steps`` updates makes (None when unknown)."""
    if total_steps is None:
        return None
    return -(-total_steps // int(spe or 1)) if (node.unit or unit) == "epoch" else total_steps
