"""The expression compiler of the MindSpore cell form: an :class:`optbridge.expr.Expr` as float64 op cells.

A ``lambda`` node's expression (``0.95 ** (epoch // 3) if epoch > 10 else 1``) is a
syntax tree that :mod:`optbridge.expr` parsed and whitelisted. :func:`expression_cell`
turns the same tree into a tree of small MindSpore cells, one per operation, each
mapping a float64 tensor of counter values to float64 values, so a
``LearningRateSchedule`` evaluates it in the graph (PyNative and GRAPH mode).

This is a *translation* of the expression into MindSpore ops, not a second
definition: the reference evaluator (:mod:`optbridge.evaluate`, through
``optbridge.expr``) is the meaning, and the cell form is tested against it
(tests/test_mindspore_forms.py). The leaf cells (:class:`Leaf`, :class:`Const`,
:class:`Var`, :func:`f64`) are shared with :mod:`.nodecells`.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from mindspore import Tensor, nn, ops
from mindspore.common import dtype as mstype

from optbridge.errors import UnsupportedError

__all__ = ["expression_cell", "Leaf", "Const", "Var", "f64", "F64", "I32"]

F64 = mstype.float64
I32 = mstype.int32


def f64(x: float) -> Tensor:
    """A float64 constant (a Python float in an op would be taken as float32)."""
    return Tensor(float(x), F64)


class Leaf(nn.Cell):
    """Base of the float64 cells: ``construct(t)`` maps float64 counter values to float64 values."""


class Const(Leaf):
    """A constant (broadcast to the counter's shape)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = Tensor(float(value), F64)

    def construct(self, t):
        return ops.zeros_like(t) + self.value


class Var(Leaf):
    """The counter itself."""

    def construct(self, t):
        return t


class _Unary(Leaf):
    def __init__(self, prim: Any, a: nn.Cell) -> None:
        super().__init__()
        self.f, self.a = prim, a

    def construct(self, t):
        return self.f(self.a(t))


class _Binary(Leaf):
    def __init__(self, prim: Any, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.f, self.a, self.b = prim, a, b

    def construct(self, t):
        return self.f(self.a(t), self.b(t))


class _Compare(Leaf):
    def __init__(self, prim: Any, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.f, self.a, self.b = prim, a, b

    def construct(self, t):
        return ops.cast(self.f(self.a(t), self.b(t)), F64)


class _FloorDiv(Leaf):
    def __init__(self, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.a, self.b = a, b

    def construct(self, t):
        return ops.floor(self.a(t) / self.b(t))


class _Mod(Leaf):
    def __init__(self, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.a, self.b = a, b

    def construct(self, t):
        x = self.a(t)
        y = self.b(t)
        return x - y * ops.floor(x / y)


class _Select(Leaf):
    """``body if test else orelse`` (test truthy = non-zero)."""

    def __init__(self, test: nn.Cell, body: nn.Cell, orelse: nn.Cell) -> None:
        super().__init__()
        self.test, self.body, self.orelse = test, body, orelse

    def construct(self, t):
        return ops.select(self.test(t) != 0, self.body(t), self.orelse(t))


class _AndOr(Leaf):
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


class _Not(Leaf):
    def __init__(self, a: nn.Cell) -> None:
        super().__init__()
        self.a = a

    def construct(self, t):
        return ops.cast(self.a(t) == 0, F64)


class _Trunc(Leaf):
    def __init__(self, a: nn.Cell) -> None:
        super().__init__()
        self.a = a

    def construct(self, t):
        x = self.a(t)
        return ops.select(x < 0, ops.ceil(x), ops.floor(x))


class _Round(Leaf):
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


class _LogBase(Leaf):
    def __init__(self, a: nn.Cell, b: nn.Cell) -> None:
        super().__init__()
        self.a, self.b = a, b

    def construct(self, t):
        return ops.log(self.a(t)) / ops.log(self.b(t))


class _Log2(Leaf):
    def __init__(self, a: nn.Cell, base: float) -> None:
        super().__init__()
        self.a, self.c = a, f64(1.0 / math.log(base))

    def construct(self, t):
        return ops.log(self.a(t)) * self.c


_BIN_PRIMS: dict[type, Any] = {ast.Add: ops.Add, ast.Sub: ops.Sub, ast.Mult: ops.Mul, ast.Div: ops.RealDiv,
                               ast.Pow: ops.Pow}
_CMP_PRIMS: dict[type, Any] = {ast.Lt: ops.Less, ast.LtE: ops.LessEqual, ast.Gt: ops.Greater, ast.GtE: ops.GreaterEqual,
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
        if isinstance(node, ast.Constant):  # ast.parse builds these exact classes: isinstance is `type(node) is`
            return Const(float(node.value))
        if isinstance(node, ast.Name):
            name = node.id
            return Var() if name in names else Const(_CONSTANTS[name])
        if isinstance(node, ast.BinOp):
            a, b = build(node.left), build(node.right)
            op = type(node.op)
            if op is ast.FloorDiv:
                return _FloorDiv(a, b)
            if op is ast.Mod:
                return _Mod(a, b)
            return _Binary(_BIN_PRIMS[op](), a, b)
        if isinstance(node, ast.UnaryOp):
            a = build(node.operand)
            uop = type(node.op)
            if uop is ast.Not:
                return _Not(a)
            return a if uop is ast.UAdd else _Unary(ops.Neg(), a)
        if isinstance(node, ast.Compare):
            left = node.left
            out: nn.Cell | None = None
            for cop, right in zip(node.ops, node.comparators):
                c = _Compare(_CMP_PRIMS[type(cop)](), build(left), build(right))
                out = c if out is None else _AndOr(False, out, c)
                left = right
            assert out is not None
            return out
        if isinstance(node, ast.BoolOp):
            is_or = type(node.op) is ast.Or
            vals = [build(v) for v in node.values]
            out = vals[0]
            for v in vals[1:]:
                out = _AndOr(is_or, out, v)
            return out
        if isinstance(node, ast.IfExp):
            return _Select(build(node.test), build(node.body), build(node.orelse))
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)  # a validated Expr: calls are by bare name
            name = node.func.id
            args = [build(a) for a in node.args]
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
        raise UnsupportedError(f"lambda {expr.source!r}", "mindspore-cell",
                               f"no MindSpore op for {type(node).__name__}")

    return build(expr._tree.body)  # noqa: SLF001

