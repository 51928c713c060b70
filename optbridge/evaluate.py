"""The reference evaluator: the one place that owns schedule math.

:func:`values` evaluates a node over a sorted array of update indices as whole
numpy float64 arrays. Closed-form nodes never loop per step in Python; only
:class:`~optbridge.ir.Plateau` (which depends on a metric series) is sequential.

Formulas follow the operation order of the framework code they reproduce
(torch's ``_get_closed_form_lr``, MindSpore's ``dynamic_lr``), so the reference
agrees with them to a few ulps; the conformance tests state the tolerances.

Most leaves have a *factor form*: ``value = (base - c) * g(k) + c`` with ``g``
independent of the base (``base * g(k)`` when ``c == 0``), applied last in the
framework's own operation order. Groups that share a schedule then share ``g``:
it is computed once and scaled by each group's base straight into the result
(:func:`table`), bit for bit the value each group would get alone.

Portability: integer powers with few distinct exponents (``multistep``) use
Python's ``**`` (the C library's ``pow``, as torch's and MegEngine's closed
forms), so they are bit for bit theirs on every CPU. Elsewhere numpy's
``power``/``exp``/``cos`` are used; on CPUs where numpy dispatches them to
SIMD kernels (AVX-512) they may differ from the C library by one ulp, well
inside every stated tolerance (docs/design.md, "Exactness").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import ir
from .errors import ConfigError, EvaluationError

if TYPE_CHECKING:  # pragma: no cover
    from .expr import Expr

__all__ = ["values", "table", "scales_base", "history_dependent", "Context"]

Array = np.ndarray
#: A scalar base value, or a column ``(groups, 1)`` of them.
Base = float | np.ndarray


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
    arr = np.asarray(base, dtype=np.float64)
    b: Base = float(arr) if arr.ndim == 0 else arr.reshape(-1, 1)
    out = _eval(node, tt, b, ctx.child(node, ""))
    shape = np.broadcast_shapes(np.shape(b), tt.shape)
    return out if out.shape == shape and out.flags.writeable else np.array(np.broadcast_to(out, shape))


def table(slots: Seq[tuple[ir.Node, float, str]], start: int, n: int, *, unit: str = "iter",
          steps_per_epoch: int | None = None, metrics: Seq[float] | Array | None = None,
          out: Array | None = None) -> Array:
    """Values of many ``(node, base, path)`` slots over updates ``start .. start + n - 1``.

    Slots that share a node are evaluated in one pass: the update-dependent part
    (the factor form ``g``) is computed once and scaled by the column of their
    bases straight into the result. Each value is bit for bit what :func:`values`
    gives for that slot alone. Backends that write values step by step (through
    :class:`optbridge.source.ValueSource`) and the reference trace all go through here.

    Args:
        slots: ``(node, base, path)`` per row.
        start: First update.
        n: Number of updates.
        unit: The plan's step unit.
        steps_per_epoch: Updates per epoch.
        metrics: Plateau metric series.
        out: Optional ``(len(slots), n)`` float64 array (or view) to write into.

    Returns:
        ``(len(slots), n)`` float64 (``out`` when given).
    """
    t = np.arange(start, start + n, dtype=np.int64)
    batches: dict[tuple[ir.Node, str], list[int]] = {}
    for j, (node, _, path) in enumerate(slots):
        batches.setdefault((node, path), []).append(j)
    m = None if metrics is None else np.asarray(metrics, dtype=np.float64)
    dest = np.empty((len(slots), n)) if out is None else out
    for (node, path), rows in batches.items():
        ctx = Context(node.unit or unit, int(steps_per_epoch or 1), m, path)
        column = np.asarray([slots[j][1] for j in rows], dtype=np.float64)[:, None]
        if rows == list(range(rows[0], rows[-1] + 1)):  # contiguous rows: write in place
            _into(node, t, column, dest[rows[0]:rows[-1] + 1], ctx)
        else:
            block = np.empty((len(rows), n))
            _into(node, t, column, block, ctx)
            dest[rows] = block
    return dest


def scales_base(node: ir.Node, unit: str = "iter") -> bool:
    """Whether the value for every base is exactly ``base * (the value for base 1)``.

    True for nodes whose factor form has no offset (``value = base * g(k)``, the form
    groups sharing a schedule are evaluated in), and for sequences of such parts
    (without a running product continued across a boundary); False for an absolute
    ``end``, ``chain``, ``multiplicative``, ``cyclic``, ``one_cycle``, ``plateau`` and
    absolute tables. Exports use it to store one table for groups that share a schedule.
    """
    if isinstance(node, ir.Sequence):
        return (all(scales_base(p, node.unit or unit) for p in node.parts)
                and not any(isinstance(p, ir.Multiplicative) for p in node.parts[1:]))
    if type(node) not in _FACTORS:
        return False
    try:
        form = _factor(node, np.zeros(1, dtype=np.int64), Context(node.unit or unit, 1, None, "schedule"))
    except (EvaluationError, ConfigError):
        return False
    return form is not None and form[1] == 0.0


def history_dependent(node: ir.Node) -> bool:
    """Whether a value depends on the whole history before it (plateau, running products).

    Such nodes are evaluated from update 0 whatever window is asked for, so callers
    evaluate them in one window instead of many.
    """
    return any(isinstance(x, (ir.Plateau, ir.Multiplicative)) for x in ir.walk(node))


# --------------------------------------------------------------------------- dispatch

def _counter(t: Array, ctx: Context) -> tuple[Array, Array | None]:
    """The node's counter for updates ``t``, and how to expand per-counter values back to ``t``.

    On the epoch clock a value is held within an epoch: each counter is evaluated
    once (``k`` is then the distinct counters and the index maps them back to ``t``).
    """
    k = t if ctx.unit == "iter" else t // ctx.steps_per_epoch
    lo, hi = int(k[0]), int(k[-1])
    if hi - lo + 1 < k.size:
        return np.arange(lo, hi + 1, dtype=np.int64), k - lo
    return k, None


def _eval(node: ir.Node, t: Array, base: Base, ctx: Context) -> Array:
    if t.size == 0:
        return np.zeros(np.broadcast_shapes(np.shape(base), t.shape))
    fn = _COMBINATORS.get(type(node))
    if fn is not None:
        return fn(node, t, base, ctx)
    form = _factor(node, t, ctx)
    if form is not None:
        return _affine(base, form[1], form[0])
    k, idx = _counter(t, ctx)
    out = _LEAVES[type(node)](node, k, base, ctx)
    return out if idx is None else out[..., idx]


def _factor(node: ir.Node, t: Array, ctx: Context) -> tuple[Array, float] | None:
    """``(g, c)`` with ``value = (base - c) * g + c`` (``base * g`` when ``c == 0``), or None.

    ``g`` depends on the update only, so groups that share the node share ``g``.
    """
    f = _FACTORS.get(type(node))
    if f is None:
        return None
    k, idx = _counter(t, ctx)
    form = f(node, k, ctx)
    if form is None or idx is None:
        return form
    return form[0][idx], form[1]


def _affine(base: Base, c: float, g: Array) -> Array:
    """``(base - c) * g + c`` (``base * g`` for ``c == 0``) as a new array; ``g`` may be consumed."""
    if c == 0.0:
        return _scale(base, g)
    out = _scale(base - c, g)
    out += c
    return out


def _scale(base: Base, f: Array) -> Array:
    """``base * f`` as a new array (``f`` is reused for a scalar base): ``(groups, steps)`` for a column."""
    if np.ndim(base) == 0:
        f *= base
        return f
    return np.multiply(base, f)


def _into(node: ir.Node, t: Array, column: Array, out: Array, ctx: Context) -> None:
    """``out[...] = values of node`` for a column of bases, with the operations of :func:`_eval`
    (bit for bit) but no temporary of ``out``'s size where the node has a factor form."""
    if t.size == 0:
        return
    if isinstance(node, ir.Sequence):
        _sequence(node, t, column, ctx, out=out)
        return
    form = _factor(node, t, ctx)
    if form is None:
        out[...] = _eval(node, t, column, ctx)
        return
    g, c = form
    if c == 0.0:
        np.multiply(column, g, out=out)
    else:
        np.multiply(column - c, g, out=out)
        out += c


# --------------------------------------------------------------------------- factor forms
# ``(g, c)`` per :func:`_factor`. Each computes what the framework code computes, in
# its operation order.

def _constant(n: ir.Constant, k: Array, ctx: Context) -> tuple[Array, float]:
    if n.steps is None:
        return np.full(k.shape, n.factor), 0.0
    return np.where(k < n.steps, n.factor, 1.0), 0.0


def _linear(n: ir.Linear, k: Array, ctx: Context) -> tuple[Array, float]:
    s, e, T = n.start_factor, n.end_factor, n.steps
    f = np.minimum(k, T) * (e - s)  # same value as (e - s) * min(k, T): multiplication commutes exactly
    f /= T
    f += s
    return f, 0.0


def _exponential(n: ir.Exponential, k: Array, ctx: Context) -> tuple[Array, float]:
    x = k // n.every if n.stair else (k if n.every == 1 else k / n.every)
    return np.power(n.gamma, x.astype(np.float64)), 0.0


def _multistep(n: ir.MultiStep, k: Array, ctx: Context) -> tuple[Array, float]:
    # gamma ** count for the few possible counts with Python's pow (the C library's), as
    # torch's and MegEngine's closed forms compute it: bit for bit theirs on every CPU
    count = np.searchsorted(np.asarray(n.milestones, dtype=np.int64), k, side="right")
    powers = np.asarray([n.gamma ** c for c in range(len(n.milestones) + 1)], dtype=np.float64)
    return powers[count], 0.0


def _natural_exp(n: ir.NaturalExp, k: Array, ctx: Context) -> tuple[Array, float]:
    x = (k // n.every) * n.every if n.stair else k
    return np.power(math.e, -n.rate * x), 0.0  # MindSpore computes math.e ** (...), not exp()


def _polynomial(n: ir.Polynomial, k: Array, ctx: Context) -> tuple[Array, float]:
    T = n.steps
    if n.cycle:
        horizon = T * np.maximum(-(-k // T), 1)
        frac = k / horizon
    else:
        frac = np.minimum(k, T) / T
    return np.power(1.0 - frac, n.power), n.end


def _cosine(n: ir.Cosine, k: Array, ctx: Context) -> tuple[Array, float]:
    kk = np.minimum(k, n.steps) if n.clamp else k
    return _half_cosine(kk, n.steps), n.end


def _cosine_restarts(n: ir.CosineRestarts, k: Array, ctx: Context) -> tuple[Array, float]:
    if n.mult == 1:
        cur, period = k % n.period, np.full(k.shape, n.period, dtype=np.int64)
    else:  # exact integer cycle starts from the node
        starts, lengths = (np.asarray(x, dtype=np.int64) for x in n.cycles(int(k[-1])))
        i = np.searchsorted(starts, k, side="right") - 1
        cur, period = k - starts[i], lengths[i]
    return _half_cosine(cur, period), n.end


def _half_cosine(num: Array, den: Array | int) -> Array:
    """``(1 + cos(pi * num / den)) / 2``; with :func:`_affine` this is torch's closed form
    ``end + (base - end) * (1 + cos(pi * k / T)) / 2`` in its operation order
    (``(x * y) / 2 == x * (y / 2)`` exactly, so halving first changes nothing)."""
    f = num * math.pi
    f /= den
    np.cos(f, out=f)
    f += 1.0
    f /= 2
    return f


def _lambda(n: ir.Lambda, k: Array, ctx: Context) -> tuple[Array, float]:
    return np.array(_expr(n.function, k, ctx.path + ".expr"), dtype=np.float64), 0.0


def _table(n: ir.Table, k: Array, ctx: Context) -> tuple[Array, float] | None:
    if not n.relative:
        return None  # absolute: the same values for every base (a leaf below)
    return _table_values(n, k, ctx), 0.0


def _piecewise(n: ir.Piecewise, k: Array, ctx: Context) -> tuple[Array, float] | None:
    if not n.relative:
        return None
    return _piecewise_values(n, k), 0.0


# --------------------------------------------------------------------------- other leaves

def _inverse_time(n: ir.InverseTime, k: Array, base: Base, ctx: Context) -> Array:
    if n.stair:
        return base / (1.0 + n.rate * (k // n.every))
    return base / (1.0 + n.rate * k / n.every)


def _cyclic(n: ir.Cyclic, k: Array, base: Base, ctx: Context) -> Array:
    low = base if n.low is None else n.low
    total, ratio = float(n.cycle_steps), n.up_ratio
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
    anchors = n.anchors(base)
    kf = k.astype(np.float64)
    out = np.empty(np.broadcast_shapes(*(np.shape(v) for v in anchors.values()), k.shape))
    phases = n.phases()
    done = np.zeros(k.shape, dtype=bool)
    for i, (start, end, frm, to) in enumerate(phases):
        sel = ~done if i == len(phases) - 1 else (~done & (kf <= end))
        if sel.any():
            if end == start:
                raise EvaluationError(
                    f"{ctx.path}: one_cycle phase {i} has zero length (pct_start={n.pct_start}, "
                    f"total_steps={N}); torch raises ZeroDivisionError here")
            a, b = anchors[frm], anchors[to]
            pct = (kf[sel] - start) / (end - start)
            if n.anneal == "cos":
                out[..., sel] = b + (a - b) / 2.0 * (np.cos(math.pi * pct) + 1)
            else:
                out[..., sel] = (b - a) * pct + a
        done |= sel
    return out


def _multiplicative(n: ir.Multiplicative, k: Array, base: Base, ctx: Context,
                    anchor: float | Array | None = None) -> Array:
    hi = int(k[-1])
    if anchor is None:  # standalone: v(k) = base * prod_{j=1..k} f(j)
        factors, start, offset = _expr(n.function, np.arange(1, hi + 1, dtype=np.int64), ctx.path + ".expr"), base, 0
    else:  # continuation inside a sequence: v(k) = anchor * prod_{j=0..k} f(j)
        factors, start, offset = _expr(n.function, np.arange(0, hi + 1, dtype=np.int64), ctx.path + ".expr"), anchor, 1
    # cumprod([start, f...]) multiplies in torch's order, so the result is bit-identical to its recursion
    starts = np.atleast_1d(np.asarray(start, dtype=np.float64)).ravel()
    runs = np.vstack([np.cumprod(np.concatenate(([s0], factors))) for s0 in starts])
    out = runs[:, k + offset]
    return out if np.ndim(start) else out[0]


def _table_values(n: ir.Table, k: Array, ctx: Context) -> Array:
    vals = np.asarray(n.values, dtype=np.float64)
    if int(k[-1]) >= vals.size:
        if not n.hold:
            raise EvaluationError(
                f"{ctx.path}: table has {vals.size} values, step {int(k[-1])} is past its end "
                "(set hold: true to keep the last value)")
        k = np.minimum(k, vals.size - 1)
    return vals[k]


def _piecewise_values(n: ir.Piecewise, k: Array) -> Array:
    idx = np.searchsorted(np.asarray(n.boundaries, dtype=np.int64), k, side="right")
    return np.asarray(n.values, dtype=np.float64)[idx]


def _absolute_table(n: ir.Table, k: Array, base: Base, ctx: Context) -> Array:
    return _table_values(n, k, ctx)


def _absolute_piecewise(n: ir.Piecewise, k: Array, base: Base, ctx: Context) -> Array:
    return _piecewise_values(n, k)


def _plateau(n: ir.Plateau, k: Array, base: Base, ctx: Context) -> Array:
    hi = int(k[-1])
    m = ctx.metrics
    if hi > 0 and (m is None or m.size < hi):
        got = 0 if m is None else m.size
        raise EvaluationError(
            f"{ctx.path}: plateau needs a metric after each of its first {hi} steps "
            f"(pass metrics= with at least {hi} values), got {got}")
    if isinstance(base, np.ndarray):
        return np.vstack([_plateau(n, k, float(b), ctx) for b in np.ravel(base)])
    out = np.empty(hi + 1)
    fresh = math.inf if n.mode == "min" else -math.inf
    lr, best, bad, cool = base, fresh if n.best is None else n.best, n.bad_steps, n.cooldown_left
    out[0] = lr
    if m is None:  # then hi == 0 (checked above): no step to take
        return out[k]
    for j in range(hi):  # sequential by nature: each value depends on the metric history
        cur = float(m[j])
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

def _sequence(n: ir.Sequence, t: Array, base: Base, ctx: Context, out: Array | None = None) -> Array:
    starts = [min(s, 2**62) for s in n.starts(ctx.unit, ctx.steps_per_epoch)]  # beyond 2**62 no update is reached
    cuts = np.searchsorted(t, np.asarray(starts[1:], dtype=np.int64), side="left")
    if out is None:
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
            elif isinstance(base, np.ndarray):
                _into(part, local, base, out[..., lo:hi], sub)
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


def _expr(e: Expr, k: Array, path: str) -> Array:
    try:
        out = np.asarray(e.evaluate({name: k for name in e.variables}), dtype=np.float64)
        return out if out.shape == k.shape else np.broadcast_to(out, k.shape)
    except ConfigError:
        raise
    except EvaluationError as err:
        raise EvaluationError(f"{path}: {err}") from None


_FACTORS: dict[type, Callable[..., tuple[Array, float] | None]] = {
    ir.Constant: _constant, ir.Linear: _linear, ir.Exponential: _exponential, ir.MultiStep: _multistep,
    ir.NaturalExp: _natural_exp, ir.Polynomial: _polynomial, ir.Cosine: _cosine,
    ir.CosineRestarts: _cosine_restarts, ir.Lambda: _lambda, ir.Table: _table, ir.Piecewise: _piecewise,
}
#: Leaves without a factor form, and absolute tables / piecewise (``_FACTORS`` gives None for them).
_LEAVES: dict[type, Callable[..., Array]] = {
    ir.InverseTime: _inverse_time, ir.Cyclic: _cyclic, ir.OneCycle: _one_cycle,
    ir.Multiplicative: _multiplicative, ir.Table: _absolute_table, ir.Piecewise: _absolute_piecewise,
    ir.Plateau: _plateau,
}
_COMBINATORS: dict[type, Callable[..., Array]] = {ir.Sequence: _sequence, ir.Chain: _chain}
