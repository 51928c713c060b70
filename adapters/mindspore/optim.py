"""MindSpore optimizers and per-step mechanisms for optbridge plans.

* :func:`nn_optimizer` builds a ``mindspore.nn`` optimizer over explicit group
  dicts (never MindSpore's name filter for weight decay, never a static group lr
  beside a dynamic one).
* :func:`experimental_optimizer` builds a ``mindspore.experimental.optim``
  optimizer with torch-like groups.
* :func:`native_scheduler` maps a schedule node to
  ``mindspore.experimental.optim.lr_scheduler`` classes where they compute it
  (torch semantics, float32 recursion), else returns None.
* :class:`Driver` writes per-step values into Parameters with ``ops.assign``
  (``Parameter.set_data`` is ignored by PyNative's jitted optimizers), in one
  compiled call per step.

Values a driver writes come from :mod:`optbridge.evaluate` (the one evaluator)
or from a LearningRateSchedule cell evaluated by MindSpore.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.experimental import optim as mopt
from mindspore.experimental.optim import lr_scheduler as MLS

from optbridge import evaluate, ir

__all__ = ["nn_optimizer", "experimental_optimizer", "native_scheduler", "Driver", "NativeStepper", "Assigner",
           "Source", "EXPERIMENTAL_STEP_LIMIT"]

#: Experimental schedulers count steps in a float32 Parameter: they freeze at 2**24.
EXPERIMENTAL_STEP_LIMIT = 2**24
F32 = mstype.float32


# --------------------------------------------------------------------------- optimizers


def nn_optimizer(kind: str, groups: list[dict[str, Any]], options: dict[str, Any]) -> nn.Optimizer:
    """A ``mindspore.nn`` optimizer over explicit group dicts (``params``, ``lr``, ``weight_decay``, ``order_params``).

    Args:
        kind: ``SGD`` (nn.SGD), ``Momentum`` (nn.Momentum: momentum without
            dampening/nesterov, for dynamic weight decay, which nn.SGD refuses),
            ``Adam`` (nn.Adam) or ``AdamWeightDecay``.
        groups: Group dicts; every group has its own ``lr`` and ``weight_decay``.
        options: Optimizer-level options (momentum, dampening, nesterov, betas, eps).
    """
    first_lr = next(g["lr"] for g in groups if "lr" in g)
    if kind == "SGD":
        return nn.SGD(groups, learning_rate=first_lr, momentum=float(options.get("momentum", 0.0)),
                      dampening=float(options.get("dampening", 0.0)), weight_decay=0.0,
                      nesterov=bool(options.get("nesterov", False)))
    if kind == "Momentum":
        return nn.Momentum(groups, learning_rate=first_lr, momentum=float(options.get("momentum", 0.0)),
                           weight_decay=0.0, use_nesterov=False)
    b1, b2 = options.get("betas", (0.9, 0.999))
    if kind == "Adam":
        return nn.Adam(groups, learning_rate=first_lr, beta1=float(b1), beta2=float(b2), eps=float(options["eps"]),
                       weight_decay=0.0)
    if kind == "AdamWeightDecay":
        return nn.AdamWeightDecay(groups, learning_rate=first_lr, beta1=float(b1), beta2=float(b2),
                                  eps=float(options["eps"]), weight_decay=0.0)
    raise ValueError(kind)


def experimental_optimizer(kind: str, groups: list[dict[str, Any]]) -> Any:
    """A ``mindspore.experimental.optim`` optimizer (SGD, Adam or AdamW) with torch-like groups."""
    lr = groups[0]["lr"]
    if kind == "SGD":
        g0 = groups[0]
        return mopt.SGD(groups, lr=lr, momentum=g0.get("momentum", 0.0), dampening=g0.get("dampening", 0.0),
                        weight_decay=g0.get("weight_decay", 0.0), nesterov=g0.get("nesterov", False),
                        maximize=g0.get("maximize", False))
    if kind == "Adam":
        return mopt.Adam(groups, lr=lr)
    if kind == "AdamW":
        return mopt.AdamW(groups, lr=lr)
    raise ValueError(kind)


# --------------------------------------------------------------------------- per-step writers


class Assigner(nn.Cell):
    """``ops.assign(targets[i], values[i])`` for every target, in one compiled call."""

    def __init__(self, targets: Sequence[Parameter]) -> None:
        super().__init__()
        self.targets = ms.ParameterTuple(targets)
        self.n = len(targets)

    @ms.jit
    def construct(self, values):
        for i in range(self.n):
            ops.assign(self.targets[i], values[i])
        return values


@dataclass
class Source:
    """Where a driven Parameter's values come from.

    Exactly one of ``node`` (evaluated by :mod:`optbridge.evaluate` in chunks),
    ``values`` (a precomputed float32 array) or ``cell`` (a LearningRateSchedule
    evaluated by MindSpore at each step).
    """

    target: Parameter
    node: ir.Node | None = None
    base: float = 0.0
    unit: str = "iter"
    steps_per_epoch: int | None = None
    values: np.ndarray | None = None
    cell: Any = None
    path: str = "schedule"


class Driver:
    """Assigns each step's values into Parameters (group lr, momentum, weight decay).

    ``step()`` after each optimizer update moves to the next update's values, as
    torch's ``scheduler.step()`` does; the constructor writes update 0's values.
    """

    CHUNK = 4096

    def __init__(self, sources: Sequence[Source], total_steps: int | None = None) -> None:
        self.sources = list(sources)
        self.total_steps = total_steps
        self.k = 0
        self._chunk_start = -1
        self._chunk: np.ndarray | None = None
        self.assigner = Assigner([s.target for s in self.sources])
        self._write()

    def values_at(self, k: int) -> np.ndarray:
        """float32 values of every source for update ``k``."""
        if self.total_steps is not None and k >= self.total_steps:
            raise IndexError(f"the schedule is defined for {self.total_steps} updates (total_steps); update {k} "
                             "is past its end")
        if not (self._chunk_start <= k < self._chunk_start + self.CHUNK) or self._chunk is None:
            self._chunk_start = k
            t = np.arange(k, k + self.CHUNK if self.total_steps is None else min(k + self.CHUNK, self.total_steps))
            cols = []
            for s in self.sources:
                if s.values is not None:
                    cols.append(np.asarray(s.values[t], dtype=np.float32))
                elif s.cell is not None:
                    cols.append(s.cell(Tensor(t.astype(np.int32))).asnumpy().astype(np.float32).reshape(-1))
                elif s.node is None:
                    cols.append(np.full(t.size, s.base, dtype=np.float32))
                else:
                    cols.append(evaluate.values(s.node, t, base=s.base, unit=s.unit, steps_per_epoch=s.steps_per_epoch,
                                                path=s.path).astype(np.float32))
            self._chunk = np.stack(cols, axis=1)
        return self._chunk[k - self._chunk_start]

    def _write(self) -> None:
        self.assigner(Tensor(self.values_at(self.k)))

    def step(self, metric: float | None = None) -> None:
        self.k += 1
        if self.total_steps is None or self.k < self.total_steps:
            self._write()


class NativeStepper:
    """Steps an experimental lr_scheduler once per ``every`` optimizer updates (``every`` = steps_per_epoch for
    epoch schedules); ReduceLROnPlateau gets the metric."""

    def __init__(self, scheduler: Any, every: int = 1, plateau: bool = False) -> None:
        self.scheduler, self.every, self.plateau, self.k = scheduler, every, plateau, 0

    def step(self, metric: float | None = None) -> None:
        """Call after every optimizer update; the metric is needed only on the updates that end a
        scheduler step (every ``every`` updates: the epoch's metric for an epoch-clock plateau)."""
        self.k += 1
        if self.k % self.every:
            return
        if self.plateau:
            if metric is None:
                raise ValueError("ReduceLROnPlateau needs the metric: call step(metric) at the end of each "
                                 f"scheduler step (every {self.every} updates)")
            self.scheduler.step(Tensor(float(metric), F32))
        else:
            self.scheduler.step()


# --------------------------------------------------------------------------- experimental lr_scheduler mapping


def _f(node_expr: Any) -> Callable[[Any], float]:
    """A LambdaLR / MultiplicativeLR function: the expression, evaluated by optbridge.expr on the integer counter."""
    def fn(epoch: Any) -> float:
        return float(node_expr(int(round(float(epoch)))))
    fn.optbridge_expr = node_expr.source  # type: ignore[attr-defined]  # read back by from_mindspore
    return fn


def _unit_of(node: ir.Node, inherited: str) -> str:
    return node.unit or inherited


def native_scheduler(node: ir.Node, *, unit: str, bases: Sequence[float], horizon: int | None,
                     in_sequence: bool = False) -> tuple[Callable[[Any], Any], str] | None:
    """``(make(optimizer) -> scheduler, description)`` for an experimental lr_scheduler that computes ``node``.

    Returns None where MindSpore's class differs from the node (or does not exist):
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
        return (lambda o: MLS.LambdaLR(o, lr_lambda=_f(node.expr)),
                f"LambdaLR({node.expr.source!r}, evaluated by optbridge.expr in float64)")
    if isinstance(node, ir.Multiplicative):
        if in_sequence:
            return None
        return (lambda o: MLS.MultiplicativeLR(o, lr_lambda=_f(node.expr)),
                f"MultiplicativeLR({node.expr.source!r})")
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


def math_isfinite(x: float) -> bool:
    return math.isfinite(x)
