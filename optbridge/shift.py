"""Start a schedule where it stands: ``shift(node, K)`` is a node whose value at ``t`` is the original's at ``t + K``.

:func:`optbridge.from_torch` uses it for schedulers that
were already stepped ``K`` times. The counter is the node's own (all nodes of one
torch scheduler run on one clock). Forms, per kind:

* closed forms relative to the base (constant, linear, exponential, multistep,
  polynomial and cosine with end 0): the same node with fewer steps / later
  milestones where that is exact, else a ``lambda`` whose expression is the node's
  closed form at ``epoch + K``, written in the evaluator's operation order (so the
  values are bit for bit the same);
* ``lambda``: its expression with every counter replaced by ``(counter + K)``;
* ``multiplicative``: the value reached at ``K`` (one-entry table), then the
  running product continues with ``f(j + K + 1)``, as torch multiplies its current lr;
* a polynomial to an absolute ``end`` (SWALR's linear anneal): the rest of the decay as
  a table of the reference's values, then ``end`` held;
* periodic or absolute forms (cosine with ``end != 0``, ``cosine_restarts``,
  ``cyclic``): the rest of the current period as a table of the reference's values,
  then the node from the start of its next period (``cyclic`` with ``triangular2`` /
  ``exp_range`` amplitudes adjusted); ``one_cycle``: the rest of the cycle as a table
  (it is finite: torch raises past ``total_steps``);
* ``table`` / ``piecewise``: sliced; ``sequence``: the active part shifted, the later
  parts with earlier boundaries; ``chain``: every part shifted; ``plateau``: carries
  its state in its own fields instead.

Values in tables come from :func:`optbridge.evaluate.values` (the one evaluator).
"""

from __future__ import annotations

import ast
import bisect
import dataclasses

import numpy as np

from optbridge import evaluate, ir
from optbridge.errors import ConfigError
from optbridge.expr import Expr, parse

__all__ = ["shift", "shift_expr", "value_at", "base_at"]

_MAX_EXPR = 1500


def value_at(node: ir.Node, k: int, base: float) -> float:
    """The node's value at counter ``k`` (counter units: the node's clock)."""
    return float(evaluate.values(node, np.asarray([k], dtype=np.int64), base=base)[0])


def base_at(node: ir.Node, k: int, value: float) -> float | None:
    """The base for which ``node`` gives ``value`` at counter ``k``, or None if its value there ignores the base.

    Every closed-form node is affine in its base (``c + (base - c) * g(k)``), so two
    evaluations at bases 1 and 2 give ``g`` and ``c`` (exactly for relative nodes,
    where ``c = 0``). Used to continue a schedule for a value that was not reached
    from the group's own base (a group added after its scheduler, an SWALR that
    anneals from the lr it found).
    """
    v1, v2 = value_at(node, k, 1.0), value_at(node, k, 2.0)
    g = v2 - v1
    if g == 0.0:
        return None
    return (value - (v1 - g)) / g


def _table(node: ir.Node, start: int, n: int, base: float) -> ir.Table:
    vals = evaluate.values(node, np.arange(start, start + n, dtype=np.int64), base=base)
    return ir.Table(values=tuple(float(v) for v in vals))


def shift_expr(expr: Expr, k: int) -> str:
    """The expression's source with every counter ``c`` replaced by ``(c + k)``."""
    names = expr.variables

    class _Shift(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id in names:
                return ast.BinOp(left=ast.Name(id=node.id, ctx=ast.Load()), op=ast.Add(), right=ast.Constant(k))
            return node

    tree = _Shift().visit(ast.parse(expr.source, mode="eval"))
    return ast.unparse(ast.fix_missing_locations(tree))


def _lit(x: float) -> str:
    return f"({x!r})"


def _lam(src: str) -> ir.Lambda:
    return ir.Lambda(expr=parse(src, path="expr"))


def _then(head: ir.Node, length: int, tail: ir.Node) -> ir.Node:
    return ir.Sequence(parts=(head, tail), boundaries=(length,))


def shift(node: ir.Node, k: int, base: float) -> ir.Node:
    """``node`` started ``k`` steps in (``k >= 0``); ``base`` is the group's base value.

    Raises:
        ConfigError: a kind that cannot be shifted exactly.
    """
    if k == 0:
        return node
    out = _shift(node, k, base)
    return out if out.unit == node.unit else dataclasses.replace(out, unit=node.unit)


def _shift(n: ir.Node, k: int, base: float) -> ir.Node:  # noqa: C901 - one branch per kind
    K = k
    if isinstance(n, ir.Constant):
        return n if n.steps is None else dataclasses.replace(n, steps=max(n.steps - K, 0))
    if isinstance(n, ir.Linear):
        s, e, T = _lit(n.start_factor), _lit(n.end_factor), n.steps
        return _lam(f"{s} + ({e} - {s}) * min(epoch + {K}, {T}) / {T}")
    if isinstance(n, ir.Exponential):
        x = f"(epoch + {K}) // {n.every}" if n.stair else (
            f"epoch + {K}" if n.every == 1 else f"(epoch + {K}) / {n.every}")
        return _lam(f"{_lit(n.gamma)} ** ({x})")
    if isinstance(n, ir.MultiStep):
        passed = sum(1 for m in n.milestones if m <= K)
        rest = tuple(m - K for m in n.milestones if m > K)
        if passed == 0:
            return dataclasses.replace(n, milestones=rest)
        src = f"{_lit(n.gamma)} ** ({passed}" + "".join(f" + (epoch >= {m})" for m in rest) + ")"
        if len(src) <= _MAX_EXPR:
            return _lam(src)
        return ir.Chain(parts=(_lam(f"{_lit(n.gamma)} ** {passed}"), dataclasses.replace(n, milestones=rest)))
    if isinstance(n, ir.Polynomial) and not n.cycle:
        if n.end == 0.0:
            return _lam(f"(1.0 - min(epoch + {K}, {n.steps}) / {n.steps}) ** {_lit(n.power)}")
        end: ir.Node = ir.Table(values=(n.end,), hold=True)  # an absolute end: the rest of the decay, then it
        return end if K >= n.steps else _then(_table(n, K, n.steps - K, base), n.steps - K, end)
    if isinstance(n, ir.Cosine):
        T = n.steps
        if n.end == 0.0:
            kk = f"min(epoch + {K}, {T})" if n.clamp else f"(epoch + {K})"
            return _lam(f"(1.0 + cos(pi * {kk} / {T})) / 2")
        if n.clamp:
            held: ir.Node = ir.Table(values=(n.end,), hold=True)
            return held if K >= T else _then(_table(n, K, T - K, base), T - K, held)
        r = K % (2 * T)
        return n if r == 0 else _then(_table(n, K, 2 * T - r, base), 2 * T - r, n)
    if isinstance(n, ir.CosineRestarts):
        start, length = n.cycle_at(K)
        restart = dataclasses.replace(n, period=length * n.mult if K > start else length)
        if K == start:
            return dataclasses.replace(n, period=length)
        rel = n.end == 0.0
        head = _table(n, K, start + length - K, 1.0 if rel else base)
        return _then(dataclasses.replace(head, relative=rel), start + length - K, restart)
    if isinstance(n, ir.Cyclic):
        if n.low is None:
            n = dataclasses.replace(n, low=base)
        total = n.cycle_steps
        r = K % total
        L = 0 if r == 0 else total - r
        c0 = (K + L) // total  # cycles completed before the tail starts
        low = float(n.low if n.low is not None else base)
        if n.mode == "triangular2":
            cycles = dataclasses.replace(n, high=low + (n.high - low) / (2.0 ** c0))
        elif n.mode == "exp_range":
            cycles = dataclasses.replace(n, high=low + (n.high - low) * n.gamma ** (K + L))
        else:
            cycles = n
        return cycles if L == 0 else _then(_table(n, K, L, base), L, cycles)
    if isinstance(n, ir.OneCycle):
        if K > n.total_steps:
            raise ConfigError("schedule", f"one_cycle was stepped {K} times, past its total_steps "
                              f"({n.total_steps})", K)
        return _table(n, K, n.total_steps - K + 1, base)
    if isinstance(n, ir.Lambda):
        return _lam(shift_expr(n.function, K))
    if isinstance(n, ir.Multiplicative):
        return _then(ir.Table(values=(value_at(n, K, base),)), 1,
                     ir.Multiplicative(expr=parse(shift_expr(n.function, K + 1), path="expr")))
    if isinstance(n, ir.Table):
        if K < len(n.values):
            return dataclasses.replace(n, values=n.values[K:])
        if n.hold:
            return dataclasses.replace(n, values=n.values[-1:])
        raise ConfigError("schedule", f"table has {len(n.values)} values, and the scheduler stands at step {K}", K)
    if isinstance(n, ir.Piecewise):
        i = bisect.bisect_right(n.boundaries, K)
        return dataclasses.replace(n, boundaries=tuple(b - K for b in n.boundaries[i:]), values=n.values[i:])
    if isinstance(n, ir.Sequence):
        i = bisect.bisect_right(n.boundaries, K)
        start = n.boundaries[i - 1] if i else 0
        part = n.parts[i]
        if isinstance(part, ir.Multiplicative) and start > 0:  # continues from the value before its boundary
            m = K - start
            first: ir.Node = _then(ir.Table(values=(value_at(n, K, base),)), 1,
                                   ir.Multiplicative(expr=parse(shift_expr(part.function, m + 1), path="expr")))
        else:
            first = shift(part, K - start, base)
        later = n.parts[i + 1:]
        if not later:
            return first
        return ir.Sequence(parts=(first, *later), boundaries=tuple(b - K for b in n.boundaries[i:]))
    if isinstance(n, ir.Chain):
        return ir.Chain(parts=tuple(shift(p, K, base) for p in n.parts))
    if isinstance(n, ir.Plateau):
        return n
    raise ConfigError("schedule", f"a {n.kind} schedule cannot be started mid-run", n.kind)
