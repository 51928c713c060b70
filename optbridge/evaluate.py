"""The reference evaluator: the one place that owns schedule math.

:func:`values` evaluates a node over a sorted array of update indices as whole
numpy float64 arrays. Closed-form nodes never loop per step in Python; only
:class:`~optbridge.ir.Plateau` (which depends on a metric series) is sequential.

Formulas follow the operation order of the framework code they reproduce
(torch's ``_get_closed_form_lr``, MindSpore's ``dynamic_lr``), so the reference
agrees with them to a few ulps; the conformance tests state the tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass
from typing import Union

import numpy as np

from . import ir
from .errors import ConfigError, EvaluationError

__all__ = ["values", "table", "Context"]

Array = np.ndarray
#: A scalar base value, or a column ``(groups, 1)`` of them.
Base = Union[float, np.ndarray]


@dataclass(frozen=True)
class Context:
    """What a node needs besides its own fields.

    Attributes:
        unit: The inherited unit (``"iter"`` or ``"epoch"``).
        steps_per_epoch: Updates per epoch (1 when not given).
        metrics: Metric series for plateau nodes (one value per plateau step).
        path: Location of the node, for error messages.
    """

    unit: str = "iter"
    steps_per_epoch: int = 1
    metrics: Array | None = None
    path: str = "schedule"

    def child(self, node: ir.Node, suffix: str) -> Context:
        return Context(node.unit or self.unit, self.steps_per_epoch, self.metrics, self.path + suffix)


def values(
    node: ir.Node,
    t: Array | int,
    *,
    base: Base,
    unit: str = "iter",
    steps_per_epoch: int | None = None,
    metrics: Seq[float] | Array | None = None,
    path: str = "schedule",
) -> Array:
    """Evaluate ``node`` at update indices ``t``.

    Args:
        node: The schedule.
        t: Number of updates (``arange(t)``) or a sorted int array of update indices.
        base: The group's base value of the hyperparameter, or a column
            ``(groups, 1)`` of base values: groups that share a schedule are
            evaluated in one pass (the counter-dependent part is computed once).
        unit: The plan's step unit, inherited by nodes without their own.
        steps_per_epoch: Updates per epoch for epoch-unit nodes.
        metrics: Metric series for a plateau node.
        path: Config path of ``node`` for error messages.

    Returns:
        float64 array, ``out[..., i]`` = value used by update ``t[i]``; shape
        ``t.shape`` for a scalar base, ``(groups, len(t))`` for a column.

    Raises:
        EvaluationError: The schedule is undefined at some requested step.
    """
    tt = np.arange(t, dtype=np.int64) if isinstance(t, (int, np.integer)) else np.asarray(t, dtype=np.int64)
    m = None if metrics is None else np.asarray(metrics, dtype=np.float64)
    ctx = Context(unit, int(steps_per_epoch or 1), m, path)
    b = np.asarray(base, dtype=np.float64)
    b = float(b) if b.ndim == 0 else b.reshape(-1, 1)
    out = _eval(node, tt, b, ctx.child(node, ""))
    shape = np.broadcast_shapes(np.shape(b), tt.shape)
    return out if out.shape == shape and out.flags.writeable else np.array(np.broadcast_to(out, shape))


def table(slots: Seq[tuple[ir.Node, float, str]], start: int, n: int, *, unit: str = "iter",
          steps_per_epoch: int | None = None, metrics: Seq[float] | Array | None = None) -> Array:
    """Values of many ``(node, base, path)`` slots over updates ``start .. start + n - 1``.

    Slots that share a node are evaluated in one pass over a column of their bases
    (the step-dependent part is computed once). Returns ``(len(slots), n)`` float64.
    Backends that write values step by step (torch's and MegEngine's drivers) and
    the reference trace all go through here.
    """
    t = np.arange(start, start + n, dtype=np.int64)
    batches: dict[tuple[ir.Node, str], list[int]] = {}
    for j, (node, _, path) in enumerate(slots):
        batches.setdefault((node, path), []).append(j)
    out: Array | None = None
    for (node, path), rows in batches.items():
        column = np.asarray([slots[j][1] for j in rows], dtype=np.float64)[:, None]
        block = values(node, t, base=column, unit=unit, steps_per_epoch=steps_per_epoch, metrics=metrics, path=path)
        if len(batches) == 1:
            return block  # one shared node: no copy
        if out is None:
            out = np.empty((len(slots), n))
        out[rows] = block
    return out if out is not None else np.empty((0, n))


# --------------------------------------------------------------------------- dispatch

def _eval(node: ir.Node, t: Array, base: Base, ctx: Context) -> Array:
    if t.size == 0:
        return np.zeros(np.broadcast_shapes(np.shape(base), t.shape))
    fn = _COMBINATORS.get(type(node))
    if fn is not None:
        return fn(node, t, base, ctx)
    k = t if ctx.unit == "iter" else t // ctx.steps_per_epoch
    leaf = _LEAVES[type(node)]
    lo, hi = int(k[0]), int(k[-1])
    if hi - lo + 1 < k.size:  # held values (epochs): evaluate each counter once
        return leaf(node, np.arange(lo, hi + 1, dtype=np.int64), base, ctx)[..., k - lo]
    return leaf(node, k, base, ctx)


# --------------------------------------------------------------------------- closed forms

def _constant(n: ir.Constant, k: Array, base: Base, ctx: Context) -> Array:
    if n.steps is None:
        return np.broadcast_to(np.multiply(base, n.factor), np.broadcast_shapes(np.shape(base), k.shape))
    return np.where(k < n.steps, np.multiply(base, n.factor), base)


def _linear(n: ir.Linear, k: Array, base: Base, ctx: Context) -> Array:
    s, e, T = n.start_factor, n.end_factor, n.steps
    f = np.minimum(k, T) * (e - s)  # same value as (e - s) * min(k, T): multiplication commutes exactly
    f /= T
    f += s
    return _scale(base, f)


def _exponential(n: ir.Exponential, k: Array, base: Base, ctx: Context) -> Array:
    x = k // n.every if n.stair else (k if n.every == 1 else k / n.every)
    return base * np.power(n.gamma, x.astype(np.float64))


def _multistep(n: ir.MultiStep, k: Array, base: Base, ctx: Context) -> Array:
    count = np.searchsorted(np.asarray(n.milestones, dtype=np.int64), k, side="right")
    return base * np.power(n.gamma, count.astype(np.float64))


def _natural_exp(n: ir.NaturalExp, k: Array, base: Base, ctx: Context) -> Array:
    x = (k // n.every) * n.every if n.stair else k
    return base * np.power(math.e, -n.rate * x)  # MindSpore computes math.e ** (...), not exp()


def _inverse_time(n: ir.InverseTime, k: Array, base: Base, ctx: Context) -> Array:
    if n.stair:
        return base / (1.0 + n.rate * (k // n.every))
    return base / (1.0 + n.rate * k / n.every)


def _polynomial(n: ir.Polynomial, k: Array, base: Base, ctx: Context) -> Array:
    T = n.steps
    if n.cycle:
        horizon = T * np.maximum(-(-k // T), 1)
        frac = k / horizon
    else:
        frac = np.minimum(k, T) / T
    return (base - n.end) * np.power(1.0 - frac, n.power) + n.end


def _cosine(n: ir.Cosine, k: Array, base: Base, ctx: Context) -> Array:
    kk = np.minimum(k, n.steps) if n.clamp else k
    return _cosine_between(base, n.end, kk, n.steps)


def _cosine_restarts(n: ir.CosineRestarts, k: Array, base: Base, ctx: Context) -> Array:
    if n.mult == 1:
        cur, period = k % n.period, np.full(k.shape, n.period, dtype=np.int64)
    else:  # exact integer cycle starts: B_i = T0 (m^i - 1) / (m - 1)
        starts, lengths, b, length = [0], [n.period], 0, n.period
        while b + length <= int(k[-1]):
            b += length
            length *= n.mult
            starts.append(b)
            lengths.append(length)
        i = np.searchsorted(np.asarray(starts, dtype=np.int64), k, side="right") - 1
        cur, period = k - np.asarray(starts, dtype=np.int64)[i], np.asarray(lengths, dtype=np.int64)[i]
    return _cosine_between(base, n.end, cur, period)


def _cosine_between(base: Base, end: float, num: Array, den: Array | int) -> Array:
    """``end + (base - end) * (1 + cos(pi * num / den)) / 2`` with few temporaries.

    Same operation order as torch's closed form; ``(x * y) / 2 == x * (y / 2)``
    exactly, so halving the step-dependent factor first changes nothing.
    """
    f = num * math.pi
    f /= den
    np.cos(f, out=f)
    f += 1.0
    f /= 2
    out = _scale(base - end, f)
    out += end
    return out


def _scale(base: Base, f: Array) -> Array:
    """``base * f`` as a new array: ``(groups, steps)`` for a column of bases."""
    if np.ndim(base) == 0:
        f *= base
        return f
    return np.multiply(base, f)


def _cyclic(n: ir.Cyclic, k: Array, base: Base, ctx: Context) -> Array:
    low = base if n.low is None else n.low
    up = float(n.step_size_up)
    down = float(n.step_size_down) if n.step_size_down is not None else up
    total = up + down
    ratio = up / total
    cycle = np.floor(1 + k / total)
    x = 1.0 + k / total - cycle
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
    height = (n.high - low) * scale
    if n.mode == "triangular":
        return low + height * 1.0
    if n.mode == "triangular2":
        return low + height * (1 / (2.0 ** (cycle - 1)))
    return low + height * np.power(n.gamma, k.astype(np.float64))


def _one_cycle(n: ir.OneCycle, k: Array, base: Base, ctx: Context) -> Array:
    N = n.total_steps
    if int(k[-1]) > N:
        raise EvaluationError(
            f"{ctx.path}: one_cycle is defined for steps 0..{N} (total_steps={N}, as torch's OneCycleLR), "
            f"got step {int(k[-1])}")
    peak = base if n.peak is None else n.peak
    initial = peak / n.div_factor if n.initial is None else n.initial
    final = initial / n.final_div_factor if n.final is None else n.final
    e1 = float(n.pct_start * N) - 1
    if n.three_phase:
        phases = [(e1, initial, peak), (float(2 * n.pct_start * N) - 2, peak, initial), (N - 1, initial, final)]
    else:
        phases = [(e1, initial, peak), (N - 1, peak, final)]
    kf = k.astype(np.float64)
    out = np.empty(np.broadcast_shapes(np.shape(peak), np.shape(initial), np.shape(final), k.shape))
    start, done = 0.0, np.zeros(k.shape, dtype=bool)
    for i, (end, a, b) in enumerate(phases):
        sel = ~done if i == len(phases) - 1 else (~done & (kf <= end))
        if sel.any():
            if end == start:
                raise EvaluationError(
                    f"{ctx.path}: one_cycle phase {i} has zero length (pct_start={n.pct_start}, "
                    f"total_steps={N}); torch raises ZeroDivisionError here")
            pct = (kf[sel] - start) / (end - start)
            if n.anneal == "cos":
                out[..., sel] = b + (a - b) / 2.0 * (np.cos(math.pi * pct) + 1)
            else:
                out[..., sel] = (b - a) * pct + a
        done |= sel
        start = end
    return out


def _lambda(n: ir.Lambda, k: Array, base: Base, ctx: Context) -> Array:
    return base * _expr(n.expr, k, ctx.path + ".expr")


def _multiplicative(n: ir.Multiplicative, k: Array, base: Base, ctx: Context,
                    anchor: float | Array | None = None) -> Array:
    hi = int(k[-1])
    if anchor is None:  # standalone: v(k) = base * prod_{j=1..k} f(j)
        factors, start, offset = _expr(n.expr, np.arange(1, hi + 1, dtype=np.int64), ctx.path + ".expr"), base, 0
    else:  # continuation inside a sequence: v(k) = anchor * prod_{j=0..k} f(j)
        factors, start, offset = _expr(n.expr, np.arange(0, hi + 1, dtype=np.int64), ctx.path + ".expr"), anchor, 1
    # cumprod([start, f...]) multiplies in torch's order, so the result is bit-identical to its recursion
    starts = np.atleast_1d(np.asarray(start, dtype=np.float64)).ravel()
    runs = np.vstack([np.cumprod(np.concatenate(([s0], factors))) for s0 in starts])
    out = runs[:, k + offset]
    return out if np.ndim(start) else out[0]


def _table(n: ir.Table, k: Array, base: Base, ctx: Context) -> Array:
    vals = np.asarray(n.values, dtype=np.float64)
    if int(k[-1]) >= vals.size:
        if not n.hold:
            raise EvaluationError(
                f"{ctx.path}: table has {vals.size} values, step {int(k[-1])} is past its end "
                "(set hold: true to keep the last value)")
        k = np.minimum(k, vals.size - 1)
    out = vals[k]
    return base * out if n.relative else out


def _piecewise(n: ir.Piecewise, k: Array, base: Base, ctx: Context) -> Array:
    idx = np.searchsorted(np.asarray(n.boundaries, dtype=np.int64), k, side="right")
    out = np.asarray(n.values, dtype=np.float64)[idx]
    return base * out if n.relative else out


def _plateau(n: ir.Plateau, k: Array, base: Base, ctx: Context) -> Array:
    hi = int(k[-1])
    m = ctx.metrics
    if hi > 0 and (m is None or m.size < hi):
        got = 0 if m is None else m.size
        raise EvaluationError(
            f"{ctx.path}: plateau needs a metric after each of its first {hi} steps "
            f"(pass metrics= with at least {hi} values), got {got}")
    if np.ndim(base):
        return np.vstack([_plateau(n, k, float(b), ctx) for b in np.ravel(base)])
    out = np.empty(hi + 1)
    fresh = math.inf if n.mode == "min" else -math.inf
    lr, best, bad, cool = base, fresh if n.best is None else n.best, n.bad_steps, n.cooldown_left
    out[0] = lr
    for j in range(hi):  # sequential by nature: each value depends on the metric history
        cur = float(m[j])  # type: ignore[index]
        if n.mode == "min":
            better = cur < best * (1.0 - n.threshold) if n.threshold_mode == "rel" else cur < best - n.threshold
        else:
            better = cur > best * (n.threshold + 1.0) if n.threshold_mode == "rel" else cur > best + n.threshold
        if better:
            best, bad = cur, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0
        if bad > n.patience:
            new = max(lr * n.factor, n.min_value)
            if lr - new > n.eps:
                lr = new
            cool, bad = n.cooldown, 0
        out[j + 1] = lr
    return out[k]


# --------------------------------------------------------------------------- combinators

def _sequence(n: ir.Sequence, t: Array, base: Base, ctx: Context) -> Array:
    scale = ctx.steps_per_epoch if ctx.unit == "epoch" else 1
    starts = [0] + [min(b * scale, 2**62) for b in n.boundaries]  # beyond 2**62 no step is ever reached
    cuts = np.searchsorted(t, np.asarray(starts[1:], dtype=np.int64), side="left")
    out = np.empty(np.broadcast_shapes(np.shape(base), t.shape))
    lo = 0
    for i, part in enumerate(n.parts):
        hi = int(cuts[i]) if i < len(cuts) else t.size
        if hi > lo:
            local = t[lo:hi] - starts[i]
            sub = ctx.child(part, f".parts[{i}]")
            if isinstance(part, ir.Multiplicative) and starts[i] > 0:
                anchor = _sequence(n, np.asarray([starts[i] - 1], dtype=np.int64), base, ctx)[..., 0]
                k = local if sub.unit == "iter" else local // sub.steps_per_epoch
                out[..., lo:hi] = _multiplicative(part, k, base, sub, anchor=anchor)
            else:
                out[..., lo:hi] = _eval(part, local, base, sub)
        lo = max(lo, hi)
    return out


def _chain(n: ir.Chain, t: Array, base: float, ctx: Context) -> Array:
    if np.any(np.asarray(base) == 0.0):
        raise EvaluationError(f"{ctx.path}: chain multiplies factors relative to base, and base is 0")
    out = np.multiply(base, np.ones(t.shape))
    for i, part in enumerate(n.parts):
        out = out * (_eval(part, t, base, ctx.child(part, f".parts[{i}]")) / base)
    return out


def _expr(e: object, k: Array, path: str) -> Array:
    try:
        out = np.asarray(e.evaluate({name: k for name in e.variables}), dtype=np.float64)  # type: ignore[attr-defined]
        return out if out.shape == k.shape else np.broadcast_to(out, k.shape)
    except ConfigError:
        raise
    except EvaluationError as err:
        raise EvaluationError(f"{path}: {err}") from None


_LEAVES: dict[type, Callable[..., Array]] = {
    ir.Constant: _constant, ir.Linear: _linear, ir.Exponential: _exponential,
    ir.MultiStep: _multistep, ir.NaturalExp: _natural_exp, ir.InverseTime: _inverse_time,
    ir.Polynomial: _polynomial, ir.Cosine: _cosine, ir.CosineRestarts: _cosine_restarts,
    ir.Cyclic: _cyclic, ir.OneCycle: _one_cycle, ir.Lambda: _lambda,
    ir.Multiplicative: _multiplicative, ir.Table: _table, ir.Piecewise: _piecewise,
    ir.Plateau: _plateau,
}
_COMBINATORS: dict[type, Callable[..., Array]] = {ir.Sequence: _sequence, ir.Chain: _chain}
