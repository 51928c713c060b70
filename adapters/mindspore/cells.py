"""MindSpore ``LearningRateSchedule`` cells for schedule nodes: native where exact, else generated.

:func:`build_cell` turns one schedule node (with the group's base value, the plan's
clock) into a ``LearningRateSchedule`` cell whose ``construct(global_step)`` returns
the value update ``global_step`` uses, as a float32 tensor (what MindSpore's
``nn`` optimizers expect).

Internally every node is a small cell mapping a float64 tensor of *local iteration
counts* to float64 values; the top-level cell casts ``global_step`` to float64
(exact for every int32 step) and casts the result to float32 once. So:

* **generated** cells evaluate the node's closed form (its docstring in
  :mod:`optbridge.ir`, in the operation order of :mod:`optbridge.evaluate`) in
  float64 MindSpore ops, in PyNative and GRAPH mode: the value is
  ``float32(reference)`` within 1 ulp, and ``global_step`` is not limited to 2**24;
* **native** cells are MindSpore's own classes (``WarmUpLR``, ``CosineDecayLR``,
  ``PolynomialDecayLR``, ``InverseDecayLR``, ``ExponentialDecayLR``,
  ``NaturalExpDecayLR``), used only where their code computes the node (same
  formula, same horizon). They run in float32 (their error bounds are in
  :data:`NATIVE_BOUNDS`) and cast the step to float32, so they are not used past
  2**24 steps;
* **table** cells gather precomputed reference values (nodes with no closed form
  in-graph: ``multiplicative``, and anything holding one), from a float64
  Parameter; they need a horizon (``total_steps``).

``plateau`` has no in-graph form (it needs the metric at run time): UnsupportedError.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from optbridge import evaluate, ir
from optbridge.errors import UnsupportedError

__all__ = ["build_cell", "CellChoice", "NATIVE_BOUNDS", "FLOAT32_STEP_LIMIT", "ScheduleCell", "TableCell",
           "ConstantCell"]

F64 = mstype.float64
F32 = mstype.float32
I32 = mstype.int32

#: Native cells cast global_step to float32: consecutive steps share values beyond this.
FLOAT32_STEP_LIMIT = 2**24

#: Measured/derived float32 error bounds of the native cells used, in float32 ulps:
#: ``|cell(k) - float32(ref(k))| <= rel * ulp(float32(ref(k))) + abs * ulp(float32(scale))``,
#: where ``scale`` is the node's start value (``max_lr``, ``learning_rate``).
NATIVE_BOUNDS: dict[str, tuple[float, float]] = {
    "WarmUpLR": (2, 0),           # lr * (float32(min(k, W)) / W): two roundings
    "InverseDecayLR": (4, 0),     # lr / (1 + rate * (k / ds)): four roundings
    "ExponentialDecayLR": (4, 0),  # lr * pow(rate, p), rate exact in float32 and p an exact integer
    "CosineDecayLR": (2, 4),      # min + delta * (1 + sin(pi * (p / ds + 0.5))): cancellation near min_lr
    "PolynomialDecayLR": (2, 6),  # diff * pow(1 - p, power) + end, power >= 1: 1 - p rounds in absolute terms
}

_SCALAR_OK = (int, float)


def _c(x: float) -> Tensor:
    """A float64 constant (a Python float in an op would be taken as float32)."""
    return Tensor(float(x), F64)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CellChoice:
    """What :func:`build_cell` built: the cell, its fidelity form and a description."""

    cell: Any
    form: str      # native | generated | table
    detail: str


# --------------------------------------------------------------------------- leaf helpers (float64 cells)


class _Node(nn.Cell):
    """Base: ``construct(t)`` maps float64 local iteration counts to float64 values."""


class _Const(_Node):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = Tensor(float(value), F64)

    def construct(self, t):
        return ops.zeros_like(t) + self.value


class _Var(_Node):
    """The counter itself (inside expressions)."""

    def construct(self, t):
        return t


class _Epoch(_Node):
    """``child(floor(t / steps_per_epoch))``: the counter of an epoch node."""

    def __init__(self, child: nn.Cell, spe: int) -> None:
        super().__init__()
        self.child = child
        self.spe = _c(spe)

    def construct(self, t):
        return self.child(ops.floor(t / self.spe))


class _Native(_Node):
    """A MindSpore LearningRateSchedule evaluated at int32 steps, widened to float64."""

    def __init__(self, cell: nn.Cell) -> None:
        super().__init__()
        self.cell = cell

    def construct(self, t):
        return ops.cast(self.cell(ops.cast(t, I32)), F64)


class _Table(_Node):
    """``values[min(t, n - 1)]``: precomputed reference values (float64 Parameter, gathered)."""

    _count = 0

    def __init__(self, values: np.ndarray, name: str = "optbridge_table") -> None:
        super().__init__()
        _Table._count += 1
        self.values = Parameter(Tensor(np.ascontiguousarray(values, dtype=np.float64)),
                                name=f"{name}_{_Table._count}", requires_grad=False)
        self.last = _c(values.size - 1)

    def construct(self, t):
        idx = ops.cast(ops.minimum(ops.maximum(t, 0.0), self.last), I32)
        return ops.gather(self.values, idx, 0)


class _ConstantNode(_Node):
    def __init__(self, base: float, factor: float, steps: int | None) -> None:
        super().__init__()
        self.a = Tensor(base * factor, F64)
        self.b = Tensor(float(base), F64)
        self.has_steps = steps is not None
        self.steps = _c(steps if steps is not None else 0)

    def construct(self, t):
        a = ops.zeros_like(t) + self.a
        if not self.has_steps:
            return a
        return ops.select(t < self.steps, a, ops.zeros_like(t) + self.b)


class _Linear(_Node):
    def __init__(self, base: float, n: ir.Linear) -> None:
        super().__init__()
        self.base, self.s, self.d, self.T = _c(base), _c(n.start_factor), _c(n.end_factor - n.start_factor), _c(n.steps)

    def construct(self, t):
        return self.base * (self.s + self.d * ops.minimum(t, self.T) / self.T)


class _Exponential(_Node):
    def __init__(self, base: float, n: ir.Exponential) -> None:
        super().__init__()
        self.base, self.every, self.stair, self.every1 = _c(base), _c(n.every), n.stair, n.every == 1
        self.gamma = _c(n.gamma)

    def construct(self, t):
        if self.stair:
            x = ops.floor(t / self.every)
        elif self.every1:
            x = t
        else:
            x = t / self.every
        return self.base * ops.pow(self.gamma, x)


class _MultiStep(_Node):
    def __init__(self, base: float, n: ir.MultiStep) -> None:
        super().__init__()
        self.base = _c(base)
        self.gamma = _c(n.gamma)
        self.ms = Tensor(np.asarray(n.milestones if n.milestones else (2**62,), dtype=np.float64))

    def construct(self, t):
        count = ops.cast(ops.expand_dims(t, -1) >= self.ms, F64).sum(-1)
        return self.base * ops.pow(self.gamma, count)


class _NaturalExp(_Node):
    def __init__(self, base: float, n: ir.NaturalExp) -> None:
        super().__init__()
        self.base, self.rate, self.every, self.stair = _c(base), _c(n.rate), _c(n.every), n.stair
        self.e = _c(math.e)

    def construct(self, t):
        x = ops.floor(t / self.every) * self.every if self.stair else t
        return self.base * ops.pow(self.e, -self.rate * x)


class _InverseTime(_Node):
    def __init__(self, base: float, n: ir.InverseTime) -> None:
        super().__init__()
        self.base, self.rate, self.every, self.stair = _c(base), _c(n.rate), _c(n.every), n.stair

    def construct(self, t):
        if self.stair:
            return self.base / (1.0 + self.rate * ops.floor(t / self.every))
        return self.base / (1.0 + self.rate * t / self.every)


class _Polynomial(_Node):
    def __init__(self, base: float, n: ir.Polynomial) -> None:
        super().__init__()
        self.diff, self.end, self.T, self.cycle = _c(float(base) - n.end), _c(n.end), _c(n.steps), n.cycle
        self.power = _c(n.power)

    def construct(self, t):
        if self.cycle:
            horizon = self.T * ops.maximum(ops.ceil(t / self.T), 1.0)
            frac = t / horizon
        else:
            frac = ops.minimum(t, self.T) / self.T
        return self.diff * ops.pow(1.0 - frac, self.power) + self.end


class _Cosine(_Node):
    def __init__(self, base: float, n: ir.Cosine) -> None:
        super().__init__()
        self.diff, self.end, self.T, self.clamp = _c(float(base) - n.end), _c(n.end), _c(n.steps), n.clamp
        self.pi = _c(math.pi)

    def construct(self, t):
        kk = ops.minimum(t, self.T) if self.clamp else t
        return self.end + self.diff * ((1.0 + ops.cos(self.pi * kk / self.T)) / 2)


class _CosineRestarts(_Node):
    def __init__(self, base: float, n: ir.CosineRestarts) -> None:
        super().__init__()
        self.diff, self.end, self.pi = _c(float(base) - n.end), _c(n.end), _c(math.pi)
        self.mult1 = n.mult == 1
        self.period = _c(n.period)
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


class _Cyclic(_Node):
    def __init__(self, base: float, n: ir.Cyclic) -> None:
        super().__init__()
        self.low = float(base) if n.low is None else n.low
        total, ratio = float(n.cycle_steps), n.up_ratio
        self.height = _c(n.high - self.low)
        self.low, self.total, self.ratio, self.ratio1 = _c(self.low), _c(total), _c(ratio), _c(ratio - 1)
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


class _OneCycle(_Node):
    """torch OneCycleLR's phases; ``k > total_steps`` is refused before building (as the reference does)."""

    def __init__(self, base: float, n: ir.OneCycle) -> None:
        super().__init__()
        anchors = n.anchors(float(base))
        # (start, end, a, b) per phase; a zero-length phase is refused by the reference first
        phases = [(start, end, anchors[frm], anchors[to]) for start, end, frm, to in n.phases()]
        self.ends = tuple(_c(p[1]) for p in phases)
        self.starts = tuple(_c(p[0]) for p in phases)
        self.lens = tuple(_c(p[1] - p[0]) for p in phases)
        self.a = tuple(_c(p[2]) for p in phases)
        self.b = tuple(_c(p[3]) for p in phases)
        self.half = tuple(_c((p[2] - p[3]) / 2.0) for p in phases)
        self.ba = tuple(_c(p[3] - p[2]) for p in phases)
        self.cos = n.anneal == "cos"
        self.n = len(phases)
        self.pi = _c(math.pi)

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


class _Piecewise(_Node):
    def __init__(self, base: float, n: ir.Piecewise) -> None:
        super().__init__()
        vals = np.asarray(n.values, dtype=np.float64) * (float(base) if n.relative else 1.0)
        self.values = Tensor(vals)
        self.bounds = Tensor(np.asarray(n.boundaries if n.boundaries else (2**62,), dtype=np.float64))

    def construct(self, t):
        idx = ops.cast(ops.cast(ops.expand_dims(t, -1) >= self.bounds, F64).sum(-1), I32)
        return ops.gather(self.values, idx, 0)


class _Lambda(_Node):
    def __init__(self, base: float, expr_cell: nn.Cell) -> None:
        super().__init__()
        self.base = _c(base)
        self.f = expr_cell

    def construct(self, t):
        return self.base * self.f(t)


class _Sequence(_Node):
    def __init__(self, parts: list[nn.Cell], starts: list[int]) -> None:
        super().__init__()
        self.parts = nn.CellList(parts)
        self.starts = tuple(_c(s) for s in starts)
        self.n = len(parts)

    def construct(self, t):
        out = self.parts[self.n - 1](ops.maximum(t - self.starts[self.n - 1], 0.0))
        for i in range(self.n - 2, -1, -1):
            out = ops.select(t < self.starts[i + 1], self.parts[i](ops.maximum(t - self.starts[i], 0.0)), out)
        return out


class _Chain(_Node):
    def __init__(self, base: float, parts: list[nn.Cell]) -> None:
        super().__init__()
        self.base = _c(base)
        self.parts = nn.CellList(parts)
        self.n = len(parts)

    def construct(self, t):
        out = ops.zeros_like(t) + self.base
        for i in range(self.n):
            out = out * (self.parts[i](t) / self.base)
        return out


# --------------------------------------------------------------------------- expressions


class _Unary(_Node):
    def __init__(self, prim: Any, a: nn.Cell) -> None:
        super().__init__()
        self.f, self.a = prim, a

    def construct(self, t):
        return self.f(self.a(t))


class _Binary(_Node):
    def __init__(self, prim: Any, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.f, self.a, self.b = prim, a, b

    def construct(self, t):
        return self.f(self.a(t), self.b(t))


class _Compare(_Node):
    def __init__(self, prim: Any, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.f, self.a, self.b = prim, a, b

    def construct(self, t):
        return ops.cast(self.f(self.a(t), self.b(t)), F64)


class _FloorDiv(_Node):
    def __init__(self, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.a, self.b = a, b

    def construct(self, t):
        return ops.floor(self.a(t) / self.b(t))


class _Mod(_Node):
    def __init__(self, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.a, self.b = a, b

    def construct(self, t):
        x = self.a(t)
        y = self.b(t)
        return x - y * ops.floor(x / y)


class _Select(_Node):
    """``body if test else orelse`` (test truthy = non-zero)."""

    def __init__(self, test: nn.Cell, body: nn.Cell, orelse: nn.Cell) -> None:
        super().__init__()
        self.test, self.body, self.orelse = test, body, orelse

    def construct(self, t):
        return ops.select(self.test(t) != 0, self.body(t), self.orelse(t))


class _AndOr(_Node):
    """Python's ``a and b`` (b if a is truthy else a) / ``a or b`` (a if truthy else b)."""

    def __init__(self, is_or: bool, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.is_or, self.a, self.b = is_or, a, b

    def construct(self, t):
        x = self.a(t)
        y = self.b(t)
        if self.is_or:
            return ops.select(x != 0, x, y)
        return ops.select(x != 0, y, x)


class _Not(_Node):
    def __init__(self, a: nn.Cell) -> None:
        super().__init__()
        self.a = a

    def construct(self, t):
        return ops.cast(self.a(t) == 0, F64)


class _Trunc(_Node):
    def __init__(self, a: nn.Cell) -> None:
        super().__init__()
        self.a = a

    def construct(self, t):
        x = self.a(t)
        return ops.select(x < 0, ops.ceil(x), ops.floor(x))


class _Round(_Node):
    """Python's round(): half to even."""

    def __init__(self, a: nn.Cell) -> None:
        super().__init__()
        self.a = a

    def construct(self, t):
        x = self.a(t)
        f = ops.floor(x)
        d = x - f
        half = f + (f - 2.0 * ops.floor(f / 2.0))
        return ops.select(d > 0.5, f + 1.0, ops.select(d < 0.5, f, half))


class _LogBase(_Node):
    def __init__(self, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.a, self.b = a, b

    def construct(self, t):
        return ops.log(self.a(t)) / ops.log(self.b(t))


class _Log2(_Node):
    def __init__(self, a: nn.Cell, base: float) -> None:
        super().__init__()
        self.a, self.c = a, _c(1.0 / math.log(base))

    def construct(self, t):
        return ops.log(self.a(t)) * self.c


_BIN_PRIMS = {ast.Add: ops.Add, ast.Sub: ops.Sub, ast.Mult: ops.Mul, ast.Div: ops.RealDiv, ast.Pow: ops.Pow}
_CMP_PRIMS = {ast.Lt: ops.Less, ast.LtE: ops.LessEqual, ast.Gt: ops.Greater, ast.GtE: ops.GreaterEqual,
              ast.Eq: ops.Equal, ast.NotEq: ops.NotEqual}
_UNARY_FN = {"cos": ops.Cos, "sin": ops.Sin, "tan": ops.Tan, "sqrt": ops.Sqrt, "exp": ops.Exp, "log": ops.Log,
             "floor": ops.Floor, "ceil": ops.Ceil, "abs": ops.Abs}
_CONSTANTS = {"pi": math.pi, "e": math.e, "inf": math.inf}


def expression_cell(expr: Any) -> nn.Cell:
    """A float64 cell computing ``expr`` (an :class:`optbridge.expr.Expr`) of the counter, element-wise.

    Every counter name is the node's counter. Python semantics carry over for
    the values a schedule meets: integers are exact in float64 below 2**53,
    ``//`` and ``%`` are floor division and floor modulo, ``round`` is half to
    even, comparisons and ``not`` give 1.0/0.0, ``and``/``or`` return an
    operand, and a conditional selects a branch per element. Where Python
    raises (``1/0``, ``log(0)``), the cell yields inf/nan instead: the reference
    evaluator (which raises) is run over the plan's horizon before building.
    """
    names = expr._names  # noqa: SLF001 - the counter names the expression was parsed with

    def build(node: ast.AST) -> nn.Cell:
        kind = type(node)
        if kind is ast.Constant:
            return _Const(float(node.value))  # type: ignore[attr-defined]
        if kind is ast.Name:
            name = node.id  # type: ignore[attr-defined]
            return _Var() if name in names else _Const(_CONSTANTS[name])
        if kind is ast.BinOp:
            a, b = build(node.left), build(node.right)  # type: ignore[attr-defined]
            op = type(node.op)  # type: ignore[attr-defined]
            if op is ast.FloorDiv:
                return _FloorDiv(a, b)
            if op is ast.Mod:
                return _Mod(a, b)
            return _Binary(_BIN_PRIMS[op](), a, b)
        if kind is ast.UnaryOp:
            a = build(node.operand)  # type: ignore[attr-defined]
            op = type(node.op)  # type: ignore[attr-defined]
            if op is ast.Not:
                return _Not(a)
            return a if op is ast.UAdd else _Unary(ops.Neg(), a)
        if kind is ast.Compare:
            left = node.left  # type: ignore[attr-defined]
            out: nn.Cell | None = None
            for op, right in zip(node.ops, node.comparators):  # type: ignore[attr-defined]
                c = _Compare(_CMP_PRIMS[type(op)](), build(left), build(right))
                out = c if out is None else _AndOr(False, out, c)
                left = right
            assert out is not None
            return out
        if kind is ast.BoolOp:
            is_or = type(node.op) is ast.Or  # type: ignore[attr-defined]
            vals = [build(v) for v in node.values]  # type: ignore[attr-defined]
            out = vals[0]
            for v in vals[1:]:
                out = _AndOr(is_or, out, v)
            return out
        if kind is ast.IfExp:
            return _Select(build(node.test), build(node.body), build(node.orelse))  # type: ignore[attr-defined]
        if kind is ast.Call:
            name = node.func.id  # type: ignore[attr-defined]
            args = [build(a) for a in node.args]  # type: ignore[attr-defined]
            if name in ("min", "max"):
                out = args[0]
                for v in args[1:]:  # Python keeps the first extreme: replace only if strictly better
                    cmp = _Compare(ops.Less() if name == "min" else ops.Greater(), v, out)
                    out = _Select(cmp, v, out)
                return out
            if name == "pow":
                return _Binary(ops.Pow(), args[0], args[1])
            if name == "float":
                return args[0]
            if name == "int":
                return _Trunc(args[0])
            if name == "round":
                return _Round(args[0])
            if name == "log" and len(args) == 2:
                return _LogBase(args[0], args[1])
            if name in ("log2", "log10"):
                return _Log2(args[0], 2.0 if name == "log2" else 10.0)
            return _Unary(_UNARY_FN[name](), args[0])
        raise UnsupportedError(f"lambda {expr.source!r}", "mindspore-cell", f"no MindSpore op for {kind.__name__}")

    return build(expr._tree.body)  # noqa: SLF001


# --------------------------------------------------------------------------- top-level cells


class ScheduleCell(LearningRateSchedule):
    """The LearningRateSchedule an optimizer calls: float64 evaluation of ``root``, one float32 rounding.

    Attributes:
        node: The optbridge schedule node it evaluates (kept for ``from_mindspore``).
        base: The group's base value.
        forms: The fidelity forms of its parts.
    """

    def __init__(self, root: nn.Cell, node: ir.Node | None = None, base: float | None = None,
                 unit: str = "iter", steps_per_epoch: int | None = None) -> None:
        super().__init__()
        self.root = root
        self.node = node
        self.base = base
        self.unit = unit
        self.steps_per_epoch = steps_per_epoch

    def construct(self, global_step):
        return ops.cast(self.root(ops.cast(global_step, F64)), F32)


class TableCell(LearningRateSchedule):
    """``values[global_step]`` from a float32 Parameter (MindSpore's own list mechanism, as a cell).

    Used for weight-decay schedules in list form (nn optimizers take a dynamic
    weight decay only as a Cell). Past the end it raises, as MindSpore's lists do.
    """

    _count = 0

    def __init__(self, values: np.ndarray, name: str = "optbridge_values") -> None:
        super().__init__()
        TableCell._count += 1
        self.values = Parameter(Tensor(np.ascontiguousarray(values, dtype=np.float32)),
                                name=f"{name}_{TableCell._count}", requires_grad=False)

    def construct(self, global_step):
        return ops.gather(self.values, global_step, 0)


class ConstantCell(LearningRateSchedule):
    """A constant float32 value as a dynamic lr (never MindSpore's ``lr + 1.0 - 1.0`` static wrapper)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = Tensor(np.float32(value), F32)

    def construct(self, global_step):
        return ops.zeros_like(ops.cast(global_step, F32)) + self.value


# --------------------------------------------------------------------------- node -> cell


def _is_f32(x: float) -> bool:
    return float(np.float32(x)) == x


def _native(node: ir.Node, base: float, horizon: int | None, allow: bool) -> tuple[nn.Cell, str] | None:
    """MindSpore's own cell for ``node`` when its code computes the node (same formula and horizon)."""
    if not allow or not (isinstance(base, float) and math.isfinite(base)):
        return None
    if isinstance(node, ir.Linear) and node.start_factor == 0.0 and node.end_factor == 1.0 and base >= 0.0:
        return nn.WarmUpLR(float(base), node.steps), f"nn.WarmUpLR({base:g}, warmup_steps={node.steps})"
    if isinstance(node, ir.Cosine) and 0.0 <= node.end < base and (
            node.clamp or (horizon is not None and horizon <= node.steps + 1)):
        return (nn.CosineDecayLR(float(node.end), float(base), node.steps),
                f"nn.CosineDecayLR(min_lr={node.end:g}, max_lr={base:g}, decay_steps={node.steps})")
    if isinstance(node, ir.Polynomial) and 0.0 <= node.end < base and node.power >= 1.0:
        return (nn.PolynomialDecayLR(float(base), float(node.end), node.steps, float(node.power), node.cycle),
                f"nn.PolynomialDecayLR({base:g}, {node.end:g}, decay_steps={node.steps}, power={node.power:g}, "
                f"update_decay_steps={node.cycle})")
    if isinstance(node, ir.InverseTime) and base > 0.0 and node.rate > 0.0:
        return (nn.InverseDecayLR(float(base), float(node.rate), node.every, node.stair),
                f"nn.InverseDecayLR({base:g}, {node.rate:g}, decay_steps={node.every}, is_stair={node.stair})")
    if (isinstance(node, ir.Exponential) and base > 0.0 and node.gamma > 0.0 and _is_f32(node.gamma)
            and (node.stair or node.every == 1)):
        return (nn.ExponentialDecayLR(float(base), float(node.gamma), node.every, node.stair),
                f"nn.ExponentialDecayLR({base:g}, {node.gamma:g}, decay_steps={node.every}, is_stair={node.stair})")
    return None


_GENERATED = {
    ir.Linear: _Linear, ir.Exponential: _Exponential, ir.MultiStep: _MultiStep, ir.NaturalExp: _NaturalExp,
    ir.InverseTime: _InverseTime, ir.Polynomial: _Polynomial, ir.Cosine: _Cosine,
    ir.CosineRestarts: _CosineRestarts, ir.Cyclic: _Cyclic, ir.OneCycle: _OneCycle, ir.Piecewise: _Piecewise,
}


def _needs_table(node: ir.Node) -> bool:
    return any(isinstance(n, ir.Multiplicative) for n in ir.walk(node))


@dataclass
class _Ctx:
    unit: str
    spe: int
    allow_native: bool
    notes: list[tuple[str, str]]


def _build(node: ir.Node, base: float, ctx: _Ctx, horizon: int | None, path: str) -> nn.Cell:
    unit = node.unit or ctx.unit
    if isinstance(node, ir.Plateau):
        raise UnsupportedError(path, "mindspore-cell", "plateau needs the metric at run time; no cell can compute it "
                               "(use form='experimental', which steps MindSpore's ReduceLROnPlateau)")
    if isinstance(node, ir.Sequence):
        scale = ctx.spe if unit == "epoch" else 1
        starts = [0] + [b * scale for b in node.boundaries]
        sub = _Ctx(unit, ctx.spe, ctx.allow_native, ctx.notes)
        parts = []
        for i, p in enumerate(node.parts):
            h = (starts[i + 1] - starts[i]) if i + 1 < len(starts) else (None if horizon is None else horizon - starts[i])
            parts.append(_build(p, base, sub, h, f"{path}.parts[{i}]"))
        return _Sequence(parts, starts)
    if isinstance(node, ir.Chain):
        if base == 0.0:
            raise UnsupportedError(path, "mindspore-cell", "chain multiplies factors relative to base, and base is 0")
        sub = _Ctx(unit, ctx.spe, ctx.allow_native, ctx.notes)
        return _Chain(base, [_build(p, base, sub, horizon, f"{path}.parts[{i}]") for i, p in enumerate(node.parts)])
    # leaves: counter k = t (iter) or floor(t / spe) (epoch)
    khorizon = horizon
    if unit == "epoch" and horizon is not None:
        khorizon = -(-horizon // ctx.spe)
    nat = _native(node, base, khorizon, ctx.allow_native)
    if nat is not None:
        leaf: nn.Cell = _Native(nat[0])
        ctx.notes.append(("native", nat[1]))
    else:
        if isinstance(node, ir.Constant):
            leaf = _ConstantNode(base, node.factor, node.steps)
        elif isinstance(node, ir.Lambda):
            leaf = _Lambda(base, expression_cell(node.expr))
        elif isinstance(node, ir.Table):
            vals = np.asarray(node.values, dtype=np.float64) * (base if node.relative else 1.0)
            leaf = _Table(vals)
            ctx.notes.append(("table", f"table of {vals.size} values"))
        else:
            leaf = _GENERATED[type(node)](base, node)
        if not isinstance(node, ir.Table):
            ctx.notes.append(("generated", f"{node.kind} (float64 ops)"))
    return _Epoch(leaf, ctx.spe) if unit == "epoch" else leaf


def build_cell(node: ir.Node | None, base: float, *, unit: str = "iter", steps_per_epoch: int | None = None,
               total_steps: int | None = None, allow_native: bool = True, path: str = "schedule") -> CellChoice:
    """A LearningRateSchedule computing ``node`` for a group with base value ``base``.

    Args:
        node: The schedule (None: the constant ``base``).
        base: The group's base value of the hyperparameter.
        unit: The plan's step unit (inherited by nodes without one).
        steps_per_epoch: Updates per epoch, for epoch-unit nodes.
        total_steps: The horizon, when known: needed for table cells; native
            cells (float32 step) are not used beyond 2**24 steps.
        allow_native: Use MindSpore's own cells where they compute the node.
        path: Config path of the node, for errors.

    Returns:
        A :class:`CellChoice`. ``form`` is ``native`` when every leaf is a native
        cell and the root is that cell, ``table`` when precomputed values are
        gathered, else ``generated``.

    Raises:
        UnsupportedError: plateau nodes; table nodes without a horizon.
    """
    if node is None:
        return CellChoice(ConstantCell(base), "generated", f"constant {base:g} (float32 tensor, a dynamic lr)")
    if any(isinstance(n, ir.Plateau) for n in ir.walk(node)):
        raise UnsupportedError(path, "mindspore-cell", "plateau needs the metric at run time; no cell can compute it "
                               "(use form='experimental', which steps MindSpore's ReduceLROnPlateau)")
    spe = int(steps_per_epoch or 1)
    allow = allow_native and (total_steps is None or total_steps <= FLOAT32_STEP_LIMIT)
    if _needs_table(node):
        if total_steps is None:
            raise UnsupportedError(path, "mindspore-cell", "multiplicative has no closed form in-graph; its values are "
                                   "precomputed into a table, which needs total_steps")
        vals = evaluate.values(node, total_steps, base=base, unit=unit, steps_per_epoch=steps_per_epoch, path=path)
        root = _Table(vals)
        return CellChoice(ScheduleCell(root, node, base, unit, steps_per_epoch), "table",
                          f"table: {total_steps} reference values gathered per step (multiplicative has no "
                          "closed form in-graph)")
    if total_steps is not None:  # the reference raises where the schedule is undefined (one_cycle past its end, 1/0)
        evaluate.values(node, np.arange(min(total_steps, 1 << 20)), base=base, unit=unit,
                        steps_per_epoch=steps_per_epoch, path=path)
    ctx = _Ctx(unit, spe, allow, [])
    root = _build(node, base, ctx, total_steps, path)
    cell = ScheduleCell(root, node, base, unit, steps_per_epoch)
    forms = {f for f, _ in ctx.notes}
    details = "; ".join(d for _, d in ctx.notes)
    if forms == {"native"} and len(ctx.notes) == 1 and not isinstance(node, (ir.Sequence, ir.Chain)):
        if (node.unit or unit) != "epoch":
            return CellChoice(_unwrap_native(root), "native", details + " (float32 arithmetic)")
        return CellChoice(cell, "native", details + " at the epoch counter (float32 arithmetic)")
    form = "table" if "table" in forms else "generated"
    if isinstance(node, (ir.Sequence, ir.Chain)):
        details = f"generated {node.kind} of: " + details
    return CellChoice(cell, form, details)


def _unwrap_native(root: nn.Cell) -> nn.Cell:
    assert isinstance(root, _Native)
    return root.cell
