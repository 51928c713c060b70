"""Generated float64 cells, one per schedule node kind: the node's closed form in MindSpore ops.

Each cell maps a float64 tensor of *local* counter values to float64 values, with
the node's closed form (its docstring in :mod:`optbridge.ir`), in the operation
order of :mod:`optbridge.evaluate`, and the geometry the IR node derives
(``OneCycle.phases()``/``anchors()``, ``CosineRestarts.cycles()``,
``Cyclic.cycle_steps``/``up_ratio``). :mod:`.cells` composes them into a
``LearningRateSchedule`` that casts ``global_step`` to float64 and rounds the result
to float32 once.

These cells are translations of the reference, tested against it
(tests/test_mindspore_forms.py): they are not a second definition of any schedule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from optbridge import ir

from .exprcells import F64, I32, Leaf, f64

__all__ = ['Epoch', 'Native', 'Table', 'ConstantNode', 'Linear', 'Exponential', 'MultiStep', 'NaturalExp',
           'InverseTime', 'Polynomial', 'Cosine', 'CosineRestarts', 'Cyclic', 'OneCycle', 'Piecewise', 'Lambda',
           'Sequence', 'Chain', "GENERATED"]


class Epoch(Leaf):
    """``child(floor(t / steps_per_epoch))``: the counter of an epoch node."""

    def __init__(self, child: nn.Cell, spe: int) -> None:
        super().__init__()
        self.child = child
        self.spe = f64(spe)

    def construct(self, t):
        return self.child(ops.floor(t / self.spe))


class Native(Leaf):
    """A MindSpore LearningRateSchedule evaluated at int32 steps, widened to float64."""

    def __init__(self, cell: nn.Cell) -> None:
        super().__init__()
        self.cell = cell

    def construct(self, t):
        return ops.cast(self.cell(ops.cast(t, I32)), F64)


class Table(Leaf):
    """``values[min(t, n - 1)]``: precomputed reference values (float64 Parameter, gathered)."""

    _count = 0

    def __init__(self, values: np.ndarray, name: str = "optbridge_table") -> None:
        super().__init__()
        Table._count += 1
        self.values = Parameter(Tensor(np.ascontiguousarray(values, dtype=np.float64)),
                                name=f"{name}_{Table._count}", requires_grad=False)
        self.last = f64(values.size - 1)

    def construct(self, t):
        idx = ops.cast(ops.minimum(ops.maximum(t, 0.0), self.last), I32)
        return ops.gather(self.values, idx, 0)


class ConstantNode(Leaf):
    def __init__(self, base: float, factor: float, steps: int | None) -> None:
        super().__init__()
        self.a = Tensor(base * factor, F64)
        self.b = Tensor(float(base), F64)
        self.has_steps = steps is not None
        self.steps = f64(steps if steps is not None else 0)

    def construct(self, t):
        a = ops.zeros_like(t) + self.a
        if not self.has_steps:
            return a
        return ops.select(t < self.steps, a, ops.zeros_like(t) + self.b)


class Linear(Leaf):
    def __init__(self, base: float, n: ir.Linear) -> None:
        super().__init__()
        self.base, self.s = f64(base), f64(n.start_factor)
        self.d, self.T = f64(n.end_factor - n.start_factor), f64(n.steps)

    def construct(self, t):
        return self.base * (self.s + self.d * ops.minimum(t, self.T) / self.T)


class Exponential(Leaf):
    def __init__(self, base: float, n: ir.Exponential) -> None:
        super().__init__()
        self.base, self.every, self.stair, self.every1 = f64(base), f64(n.every), n.stair, n.every == 1
        self.gamma = f64(n.gamma)

    def construct(self, t):
        if self.stair:
            x = ops.floor(t / self.every)
        elif self.every1:
            x = t
        else:
            x = t / self.every
        return self.base * ops.pow(self.gamma, x)


class MultiStep(Leaf):
    def __init__(self, base: float, n: ir.MultiStep) -> None:
        super().__init__()
        self.base = f64(base)
        self.gamma = f64(n.gamma)
        self.ms = Tensor(np.asarray(n.milestones if n.milestones else (2**62,), dtype=np.float64))

    def construct(self, t):
        count = ops.cast(ops.expand_dims(t, -1) >= self.ms, F64).sum(-1)
        return self.base * ops.pow(self.gamma, count)


class NaturalExp(Leaf):
    def __init__(self, base: float, n: ir.NaturalExp) -> None:
        super().__init__()
        self.base, self.rate, self.every, self.stair = f64(base), f64(n.rate), f64(n.every), n.stair
        self.e = f64(math.e)

    def construct(self, t):
        x = ops.floor(t / self.every) * self.every if self.stair else t
        return self.base * ops.pow(self.e, -self.rate * x)


class InverseTime(Leaf):
    def __init__(self, base: float, n: ir.InverseTime) -> None:
        super().__init__()
        self.base, self.rate, self.every, self.stair = f64(base), f64(n.rate), f64(n.every), n.stair

    def construct(self, t):
        if self.stair:
            return self.base / (1.0 + self.rate * ops.floor(t / self.every))
        return self.base / (1.0 + self.rate * t / self.every)


class Polynomial(Leaf):
    def __init__(self, base: float, n: ir.Polynomial) -> None:
        super().__init__()
        self.diff, self.end, self.T, self.cycle = f64(float(base) - n.end), f64(n.end), f64(n.steps), n.cycle
        self.power = f64(n.power)

    def construct(self, t):
        if self.cycle:
            horizon = self.T * ops.maximum(ops.ceil(t / self.T), 1.0)
            frac = t / horizon
        else:
            frac = ops.minimum(t, self.T) / self.T
        return self.diff * ops.pow(1.0 - frac, self.power) + self.end


class Cosine(Leaf):
    def __init__(self, base: float, n: ir.Cosine) -> None:
        super().__init__()
        self.diff, self.end, self.T, self.clamp = f64(float(base) - n.end), f64(n.end), f64(n.steps), n.clamp
        self.pi = f64(math.pi)

    def construct(self, t):
        kk = ops.minimum(t, self.T) if self.clamp else t
        return self.end + self.diff * ((1.0 + ops.cos(self.pi * kk / self.T)) / 2)


class CosineRestarts(Leaf):
    def __init__(self, base: float, n: ir.CosineRestarts) -> None:
        super().__init__()
        self.diff, self.end, self.pi = f64(float(base) - n.end), f64(n.end), f64(math.pi)
        self.mult1 = n.mult == 1
        self.period = f64(n.period)
        # every cycle start below 2**53 (an exact float64 integer): at most 54 cycles for mult >= 2
        starts, lengths = n.cycles(2**53 - 1) if n.mult > 1 else ((0,), (n.period,))
        self.starts = Tensor(np.asarray(starts, dtype=np.float64))
        self.lengths = Tensor(np.asarray(lengths, dtype=np.float64))

    def construct(self, t):
        if self.mult1:
            cur = t - ops.floor(t / self.period) * self.period
            period = ops.zeros_like(t) + self.period
        else:
            i = ops.cast(ops.cast(ops.expand_dims(t, -1) >= self.starts, F64).sum(-1) - 1.0, I32)
            cur = t - ops.gather(self.starts, i, 0)
            period = ops.gather(self.lengths, i, 0)
        return self.end + self.diff * ((1.0 + ops.cos(self.pi * cur / period)) / 2)


class Cyclic(Leaf):
    def __init__(self, base: float, n: ir.Cyclic) -> None:
        super().__init__()
        self.low = float(base) if n.low is None else n.low
        total, ratio = float(n.cycle_steps), n.up_ratio
        self.height = f64(n.high - self.low)
        self.low, self.total, self.ratio, self.ratio1 = f64(self.low), f64(total), f64(ratio), f64(ratio - 1)
        self.mode = {"triangular": 0, "triangular2": 1, "exp_range": 2}[n.mode]
        self.gamma = Tensor(n.gamma, F64)

    def construct(self, t):
        cycle = ops.floor(1.0 + t / self.total)
        x = 1.0 + t / self.total - cycle
        scale = ops.select(x <= self.ratio, x / self.ratio, (x - 1.0) / self.ratio1)
        height = self.height * scale
        if self.mode == 0:
            return self.low + height * 1.0
        if self.mode == 1:
            return self.low + height * (1.0 / ops.pow(ops.zeros_like(cycle) + 2.0, cycle - 1.0))
        return self.low + height * ops.pow(self.gamma, t)


class OneCycle(Leaf):
    """torch OneCycleLR's phases; ``k > total_steps`` is refused before building (as the reference does)."""

    def __init__(self, base: float, n: ir.OneCycle) -> None:
        super().__init__()
        anchors = n.anchors(float(base))
        # (start, end, a, b) per phase; a zero-length phase is refused by the reference first
        phases = [(start, end, anchors[frm], anchors[to]) for start, end, frm, to in n.phases()]
        self.ends = tuple(f64(p[1]) for p in phases)
        self.starts = tuple(f64(p[0]) for p in phases)
        self.lens = tuple(f64(p[1] - p[0]) for p in phases)
        self.a = tuple(f64(p[2]) for p in phases)
        self.b = tuple(f64(p[3]) for p in phases)
        self.half = tuple(f64((p[2] - p[3]) / 2.0) for p in phases)
        self.ba = tuple(f64(p[3] - p[2]) for p in phases)
        self.cos = n.anneal == "cos"
        self.n = len(phases)
        self.pi = f64(math.pi)

    def _segment(self, t, i: int):
        pct = (t - self.starts[i]) / self.lens[i]
        if self.cos:
            return self.b[i] + self.half[i] * (ops.cos(self.pi * pct) + 1.0)
        return self.ba[i] * pct + self.a[i]

    def construct(self, t):
        out = self._segment(t, self.n - 1)
        for i in range(self.n - 2, -1, -1):
            out = ops.select(t <= self.ends[i], self._segment(t, i), out)
        return out


class Piecewise(Leaf):
    def __init__(self, base: float, n: ir.Piecewise) -> None:
        super().__init__()
        vals = np.asarray(n.values, dtype=np.float64) * (float(base) if n.relative else 1.0)
        self.values = Tensor(vals)
        self.bounds = Tensor(np.asarray(n.boundaries if n.boundaries else (2**62,), dtype=np.float64))

    def construct(self, t):
        idx = ops.cast(ops.cast(ops.expand_dims(t, -1) >= self.bounds, F64).sum(-1), I32)
        return ops.gather(self.values, idx, 0)


class Lambda(Leaf):
    def __init__(self, base: float, expr_cell: nn.Cell) -> None:
        super().__init__()
        self.base = f64(base)
        self.f = expr_cell

    def construct(self, t):
        return self.base * self.f(t)


class Sequence(Leaf):
    def __init__(self, parts: list[nn.Cell], starts: list[int]) -> None:
        super().__init__()
        self.parts = nn.CellList(parts)
        self.starts = tuple(f64(s) for s in starts)
        self.n = len(parts)

    def construct(self, t):
        out = self.parts[self.n - 1](ops.maximum(t - self.starts[self.n - 1], 0.0))
        for i in range(self.n - 2, -1, -1):
            out = ops.select(t < self.starts[i + 1], self.parts[i](ops.maximum(t - self.starts[i], 0.0)), out)
        return out


class Chain(Leaf):
    def __init__(self, base: float, parts: list[nn.Cell]) -> None:
        super().__init__()
        self.base = f64(base)
        self.parts = nn.CellList(parts)
        self.n = len(parts)

    def construct(self, t):
        out = ops.zeros_like(t) + self.base
        for i in range(self.n):
            out = out * (self.parts[i](t) / self.base)
        return out


# --------------------------------------------------------------------------- expressions


#: Node kinds with a generated cell: ``ir class -> cell class(base, node)``.
GENERATED: dict[type[ir.Node], Any] = {
    ir.Linear: Linear, ir.Exponential: Exponential, ir.MultiStep: MultiStep, ir.NaturalExp: NaturalExp,
    ir.InverseTime: InverseTime, ir.Polynomial: Polynomial, ir.Cosine: Cosine,
    ir.CosineRestarts: CosineRestarts, ir.Cyclic: Cyclic, ir.OneCycle: OneCycle, ir.Piecewise: Piecewise,
}
