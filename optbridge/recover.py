"""Closed forms recovered from recorded or sampled values.

A recorder that runs a hand-driven training loop, or an importer that samples a
Python ``lr_lambda`` it cannot parse, ends up with a float64 series per (group,
hyperparameter). :func:`recover` turns such a series into readable IR wherever it
equals a closed form, and into a ``table`` only where nothing fits::

    r = recover(lrs, base=6e-4)
    r.node          # Sequence(parts=(Linear(...), Cosine(steps=598000, end=6e-05, clamp=True)), ...)
    r.description   # 'closed form: linear warmup 2000 steps from 0.00049975, cosine to 6e-05 until 600000,
                    #  then constant'

:func:`recover_groups` does a whole ``(groups, steps)`` array and recovers a
schedule once for every set of groups that share it up to their base (layer
decay, ``lr_mult``): the other groups only verify it.

**Tolerance.** A candidate is accepted only if :func:`optbridge.evaluate.values`
(the one evaluator) reproduces the series at every step:
``|fit - y| <= rtol * |y| + ptol * peak`` with ``rtol = 1e-12``, ``ptol = 1e-15``
(``peak`` = largest ``|y|`` of the series), and exact zeros stay exact (a zero lr
freezes a parameter; ``1e-20`` does not). The ``ptol`` term is a few ulps of the
peak: a closed form evaluated near 0 (the end of a cosine to 0, ``1 - k/T`` near
``T``) has an absolute error of a few ulps of its peak in *any* implementation, and
numpy's ``cos``/``power`` differ from the C library's by an ulp on some CPUs, so a
fit must never rely on bit equality.

**Algorithm** (O(steps) vectorised numpy per segment, see docs/recover.md): the
series is cut greedily into parts. At a part's start every fitter proposes a
candidate whose parameters are solved exactly from a few well-separated points
(integers rounded: steps, milestones, phases; floats snapped to their shortest
decimal form when that still fits), and the evaluator measures how far each
candidate reproduces the series, in windows that grow geometrically (a wrong
candidate costs a few dozen evaluations). The candidate that reaches furthest
wins; the boundary to the next part is settled among the last few steps where
both parts fit, preferring the start from which the next part reaches furthest.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from . import evaluate, ir
from .errors import ConfigError, EvaluationError

__all__ = ["RTOL", "PTOL", "Recovered", "RecoveredGroups", "recover", "recover_groups", "describe"]

#: Relative tolerance at every step.
RTOL = 1e-12
#: Absolute allowance, as a fraction of the series' peak (a few ulps of it).
PTOL = 1e-15

_MAX_RUNS = 64          # milestones a multistep / runs a stair candidate looks at
_LOOK_BACK = 3          # steps before a break where the next part may start
_SCAN_EXACT = 64        # unfit starts tried one by one before galloping
_CHUNK = 1 << 16        # steps per evaluation when verifying long series
_FIRST_WINDOW = 16      # first verification window (grows 4x)

Array = np.ndarray


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Recovered:
    """One recovered series.

    Attributes:
        node: The schedule: closed-form IR, with ``table`` parts only where nothing fits.
            Its root carries the series' unit explicitly.
        base: The base value the node is relative to (the given one, or the series' peak).
        form: ``"closed form"``, ``"table"`` (nothing fits) or ``"mixed"`` (closed form
            with table parts).
        description: One line: ``closed form: linear warmup 2000 steps from 0, ...`` or
            ``table: no closed form fits steps 0..99``.
        max_error: Worst ``|fit - y| / max(|y|, ptol / rtol * peak)`` over the series,
            measured with the evaluator (the relative error wherever the value is not
            tiny next to the peak).
        table_steps: ``(first, last)`` step ranges covered by table parts.
        source: For :func:`recover_groups`: the group whose recovery this result
            reuses (its own index when it was recovered from its own values).
    """

    node: ir.Node
    base: float
    form: str
    description: str
    max_error: float
    table_steps: tuple[tuple[int, int], ...] = ()
    source: int | None = None

    @property
    def closed_form(self) -> bool:
        """True when no part of the series needed a table."""
        return self.form == "closed form"

    def __str__(self) -> str:
        return self.description


@dataclass(frozen=True)
class RecoveredGroups:
    """Recovered series of several groups (rows of one ``(groups, steps)`` array).

    Attributes:
        results: One :class:`Recovered` per row.
    """

    results: tuple[Recovered, ...]

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, g: int) -> Recovered:
        return self.results[g]

    def __iter__(self) -> Iterator[Recovered]:
        return iter(self.results)

    @property
    def shared(self) -> tuple[tuple[int, ...], ...]:
        """Rows that share one node (with their own bases), in order of first appearance."""
        out: dict[ir.Node, list[int]] = {}
        for g, r in enumerate(self.results):
            out.setdefault(r.node, []).append(g)
        return tuple(tuple(v) for v in out.values())

    @property
    def recovered(self) -> tuple[int, ...]:
        """Rows whose schedule was recovered from their own values (the others only verified one)."""
        return tuple(g for g, r in enumerate(self.results) if r.source == g)

    def report(self, names: Seq[str] | None = None) -> str:
        """One line per group: ``name (base 0.001): closed form: ...``."""
        labels = list(names) if names is not None else [f"group {g}" for g in range(len(self.results))]
        return "\n".join(f"{label} (base {_fmt(r.base)}): {r.description}" for label, r in zip(labels, self.results))


# --------------------------------------------------------------------------- public API

def recover(values: Any, *, base: float | None = None, unit: str = "iter", steps_per_epoch: int | None = None,
            rtol: float = RTOL, ptol: float = PTOL) -> Recovered:
    """The closed form of one recorded series, or a table where none fits.

    Args:
        values: 1-D float64 values; ``values[k]`` is the value update ``k`` used
            (one per epoch when ``unit="epoch"``).
        base: The group's base value (its initial lr, momentum, ...), which relative
            nodes scale. Default: the series' peak (largest ``|value|``).
        unit: What one index of ``values`` is: ``"iter"`` (an update) or ``"epoch"``.
            The returned node carries it at its root.
        steps_per_epoch: Updates per epoch, for ``unit="iter"``: values held over
            whole epochs (a per-epoch scheduler stepped inside a per-iteration loop)
            come back as epoch-unit nodes.
        rtol: Relative tolerance at every step.
        ptol: Absolute allowance as a fraction of the series' peak.

    Returns:
        The :class:`Recovered` node, base, form, description and measured error.

    Raises:
        ConfigError: Values that are not a non-empty 1-D array of finite numbers, or
            bad options.
    """
    y = _as_series(values, "values", ndim=1)
    unit, spe, rtol, ptol = _check_options(unit, steps_per_epoch, rtol, ptol)
    b = _base_for(y, base, "base")
    return _recover_row(y, b, unit, spe, rtol, ptol)


def recover_groups(values: Any, *, bases: Seq[float | None] | None = None, unit: str = "iter",
                   steps_per_epoch: int | None = None, rtol: float = RTOL, ptol: float = PTOL) -> RecoveredGroups:
    """Recover every row of a ``(groups, steps)`` array, once per schedule shared up to the base.

    Rows whose values are proportional (layer decay, ``lr_mult``) or that share a
    node with their own base (torch's ``lr_mult`` with an absolute ``eta_min``) are
    recovered once; the others verify that node (or the node with its absolute
    fields scaled by the ratio of the bases) with the evaluator, in one pass per
    chunk of steps.

    Args:
        values: ``(groups, steps)`` float64 (a ``np.memmap`` works; rows are read in chunks).
        bases: Base value per group (default, or a ``None`` entry: that row's peak).
        unit, steps_per_epoch, rtol, ptol: As for :func:`recover`.

    Returns:
        :class:`RecoveredGroups`, one result per row.

    Raises:
        ConfigError: Bad values or options.
    """
    Y = _as_series(values, "values", ndim=2)
    unit, spe, rtol, ptol = _check_options(unit, steps_per_epoch, rtol, ptol)
    G, n = Y.shape
    if bases is not None:
        if not isinstance(bases, (list, tuple, np.ndarray)) or len(bases) != G:
            raise ConfigError("bases", f"must be a list of {G} numbers (one per group)", bases)
    rows_base = [_base_for(Y[g], None if bases is None else bases[g], f"bases[{g}]") for g in range(G)]
    peaks = [float(np.max(np.abs(Y[g]))) if n else 0.0 for g in range(G)]
    clusters = _clusters(Y, peaks)
    results: list[Recovered | None] = [None] * G
    found: list[tuple[ir.Node, int]] = []
    clock = _Clock(unit, spe)
    for members in clusters:
        rep = members[0]
        res = None
        for node, src in reversed(found[-8:]):  # a node already recovered, with this row's base
            if _matches_quick(node, Y[rep], rows_base[rep], peaks[rep], clock, rtol, ptol):
                err = _verify_rows([node], [rows_base[rep]], Y, [rep], [peaks[rep]], clock, rtol, ptol)[0]
                if err is not None:
                    res = _result(node, rows_base[rep], err, src)
                    break
        if res is None:
            res = dataclasses.replace(_recover_row(Y[rep], rows_base[rep], unit, spe, rtol, ptol), source=rep)
            found.append((res.node, rep))
        results[rep] = res
        rest = members[1:]
        if not rest:
            continue
        ref = res
        # 1) the same node with each row's own base (one node shared), 2) absolute fields scaled
        errs = _verify_rows([ref.node] * len(rest), [rows_base[g] for g in rest], Y, rest,
                            [peaks[g] for g in rest], clock, rtol, ptol)
        todo = []
        for g, err in zip(rest, errs):
            if err is not None:
                results[g] = _result(ref.node, rows_base[g], err, ref.source)
            else:
                todo.append(g)
        if todo and ref.base != 0.0:
            scaled = [_rescaled(ref.node, rows_base[g] / ref.base) for g in todo]
            errs = _verify_rows(scaled, [rows_base[g] for g in todo], Y, todo, [peaks[g] for g in todo],
                                clock, rtol, ptol)
            left = []
            for g, node, err in zip(todo, scaled, errs):
                if err is not None:
                    results[g] = _result(node, rows_base[g], err, ref.source)
                else:
                    left.append(g)
            todo = left
        for g in todo:
            row = dataclasses.replace(_recover_row(Y[g], rows_base[g], unit, spe, rtol, ptol), source=g)
            results[g] = row
            found.append((row.node, g))
    return RecoveredGroups(tuple(r for r in results if r is not None))


# --------------------------------------------------------------------------- input checks

def _as_series(values: Any, path: str, *, ndim: int) -> Array:
    try:
        y = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(path, "must be an array of numbers", type(values).__name__) from None
    if y.ndim != ndim:
        shape = "(steps,)" if ndim == 1 else "(groups, steps)"
        raise ConfigError(path, f"must be a {ndim}-D array {shape}", f"shape {y.shape}")
    if y.shape[-1] == 0:
        raise ConfigError(path, "must hold at least one step", f"shape {y.shape}")
    rows = [y] if ndim == 1 else list(y)
    for g, row in enumerate(rows):
        bad = ~np.isfinite(row)
        if bad.any():
            k = int(np.argmax(bad))
            where = f"{path}[{k}]" if ndim == 1 else f"{path}[{g}, {k}]"
            raise ConfigError(where, "must be a finite number", float(row[k]))
    return y


def _check_options(unit: object, spe: object, rtol: object, ptol: object) -> tuple[str, int | None, float, float]:
    ir.check_choice("unit", unit, ir.UNITS)
    if spe is not None:
        spe = ir.check_int("steps_per_epoch", spe, minimum=1)
    r = ir.check_real("rtol", rtol)
    p = ir.check_real("ptol", ptol)
    if not 0.0 < r < 1.0:
        raise ConfigError("rtol", "must be between 0 and 1", rtol)
    if not 0.0 <= p < 1.0:
        raise ConfigError("ptol", "must be between 0 and 1", ptol)
    return str(unit), (spe if unit == "iter" else None), r, p


def _base_for(y: Array, base: object, path: str) -> float:
    peak_at = int(np.argmax(np.abs(y)))
    peak = float(y[peak_at])
    if base is None:
        return _short(peak, abs(peak), rel=4 * 2.0**-52) if peak != 0.0 else 0.0
    b = ir.check_real(path, base)
    if b == 0.0 and peak != 0.0:
        raise ConfigError(path, "must be non-zero for a series with non-zero values (nodes scale the base)", base)
    return b


# --------------------------------------------------------------------------- tolerance and verification

@dataclass(frozen=True)
class _Clock:
    """How the evaluator reads a node against a series index."""

    unit: str
    spe: int | None

    def evaluate(self, node: ir.Node, t: Array, base: Any) -> Array:
        with np.errstate(all="ignore"):
            return evaluate.values(node, t, base=base, unit="iter", steps_per_epoch=self.spe or 1)


def _bad(fit: Array, y: Array, rtol: float, atol: float | Array) -> Array:
    """Steps where ``fit`` misses ``y``: ``|fit - y| > rtol |y| + atol``, or a zero that is not exact."""
    ok = np.abs(fit - y) <= rtol * np.abs(y) + atol
    ok &= (fit == 0.0) == (y == 0.0)
    return ~ok


class _Series:
    """One series under recovery: values, base, tolerance, clock and cached structure."""

    def __init__(self, y: Array, base: float, rtol: float, atol: float, spe: int | None) -> None:
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        self.n = int(self.y.size)
        self.base = base
        self.rtol, self.atol = rtol, atol
        self.spe = spe
        self.clock = _Clock("iter", spe)
        same = self.y[1:] == self.y[:-1]
        self.cp = np.flatnonzero(~same) + 1              # change points: y[i] != y[i-1]
        self.holds = np.flatnonzero(same)                # y[i] == y[i+1]
        self._misaligned: dict[int, Array] = {}
        self._best: dict[int, _Cand | None] = {}

    # ---- structure
    def misaligned(self, phase: int) -> Array:
        """Change points off the epoch grid that starts at ``phase`` (cached per phase)."""
        if phase not in self._misaligned:
            S = self.spe or 1
            self._misaligned[phase] = self.cp[(self.cp - phase) % S != 0]
        return self._misaligned[phase]

    def next_change(self, s: int) -> int:
        i = int(np.searchsorted(self.cp, s, side="right"))
        return int(self.cp[i]) if i < self.cp.size else self.n

    def changes_after(self, s: int, k: int) -> Array:
        i = int(np.searchsorted(self.cp, s, side="right"))
        return self.cp[i:i + k]

    def next_hold(self, s: int) -> int | None:
        """First ``i > s`` with ``y[i] == y[i+1]``."""
        i = int(np.searchsorted(self.holds, s, side="right"))
        return int(self.holds[i]) if i < self.holds.size else None

    def at_base(self, s: int) -> bool:
        return not _bad(np.asarray([self.base]), self.y[s:s + 1], self.rtol, self.atol)[0]

    def factor(self, v: float) -> float:
        return 1.0 if v == self.base else v / self.base

    # ---- verification
    def extent(self, node: ir.Node, s: int, limit: int | None = None) -> int:
        """How many steps from ``s`` the node (local time) reproduces: the first miss, or ``limit``."""
        m = self.n - s if limit is None else min(limit, self.n - s)
        a, size = 0, _FIRST_WINDOW
        while a < m:
            b = min(m, a + size)
            try:
                fit = self.clock.evaluate(node, np.arange(a, b, dtype=np.int64), self.base)
            except (EvaluationError, ConfigError, OverflowError, ZeroDivisionError, ValueError):
                return a
            bad = _bad(fit, self.y[s + a:s + b], self.rtol, self.atol)
            if bad.any():
                return a + int(np.argmax(bad))
            a, size = b, min(size * 4, _CHUNK * 4)
        return m

    def fits(self, node: ir.Node, s: int, length: int) -> bool:
        return self.extent(node, s, length) >= length

    # ---- candidates
    def best(self, s: int) -> _Cand | None:
        if s not in self._best:
            m = self.n - s
            cands = [c for fit in _FITTERS for c in fit(self, s) if c.extent >= min(c.min_len, m) and c.extent > 0]
            self._best[s] = min(cands, key=lambda c: (-c.extent, c.rank)) if cands else None
        return self._best[s]


@dataclass(frozen=True)
class _Cand:
    """A candidate part starting at some step: its node (local time) and how far it reaches.

    ``grow(length)`` rebuilds the node for a final part length when a parameter depends
    on it (a linear ramp that ends at its boundary); ``back`` says the candidate's
    schedule started that many steps earlier (a cosine entered ``phase`` steps in), a
    hint for where the boundary really is.
    """

    node: ir.Node
    extent: int
    rank: int
    min_len: int = 3
    grow: Callable[[int], ir.Linear] | None = None
    back: int = 0


# --------------------------------------------------------------------------- number forms

def _short(x: float, scale: float, rel: float = 1e-10) -> float:
    """The shortest decimal within ``rel`` of ``x`` (0 when ``|x|`` is below ``1e-12 * scale``)."""
    if x == 0.0 or not math.isfinite(x):
        return x
    if abs(x) <= 1e-12 * scale:
        return 0.0
    for d in range(1, 17):
        v = float(f"{x:.{d - 1}e}")
        if abs(v - x) <= rel * abs(x):
            return v
    return x


def _digits(x: float) -> int:
    """Significant digits of ``x`` in its shortest decimal form (how readable a parameter is)."""
    mantissa = repr(_short(x, abs(x))).split("e")[0].replace("-", "").replace(".", "")
    return max(1, len(mantissa.strip("0")))


def _lit(x: float) -> str:
    """A float literal for an expression (integral values keep a ``.0``)."""
    return repr(float(x))


#: Float fields snapped to short decimals (integers are exact already).
_SNAP_FIELDS = {
    ir.Constant: ("factor",), ir.Linear: ("start_factor", "end_factor"), ir.Exponential: ("gamma",),
    ir.MultiStep: ("gamma",), ir.NaturalExp: ("rate",), ir.InverseTime: ("rate",),
    ir.Polynomial: ("power", "end"), ir.Cosine: ("end",),
}


_N = TypeVar("_N", bound=ir.Node)


def _tidy(ser: _Series, node: _N, s: int, length: int) -> _N:
    """``node`` with its floats in their shortest decimal form, where that still fits ``[s, s+length)``."""
    names = _SNAP_FIELDS.get(type(node), ())
    scale = abs(ser.base) or 1.0
    snapped = {f: _short(getattr(node, f), scale) for f in names}
    changed: dict[str, Any] = {f: v for f, v in snapped.items() if v != getattr(node, f)}  # fields of node's class
    if not changed:
        return node
    trial = dataclasses.replace(node, **changed)
    if ser.fits(trial, s, length):
        return trial
    for f, v in changed.items():
        one = dataclasses.replace(node, **{f: v})
        if ser.fits(one, s, length):
            node = one
    return node


# --------------------------------------------------------------------------- fitters

def _fit_constant(ser: _Series, s: int) -> Iterator[_Cand]:
    node = ir.Constant(factor=ser.factor(float(ser.y[s])))
    p = ser.extent(node, s)  # within the tolerance, not only while bit-equal
    if p:
        yield _Cand(node, p, rank=0, min_len=2)


def _fit_epoch(ser: _Series, s: int) -> Iterator[_Cand]:
    """Values held over whole epochs from ``s``: recover the per-epoch series and run it on the epoch clock."""
    S = ser.spe
    if not S or S < 2 or (ser.next_change(s) - s) % S:
        return
    off = ser.misaligned(s % S)
    i = int(np.searchsorted(off, s, side="right"))
    end = int(off[i]) if i < off.size else ser.n
    if end - s < 2 * S or ser.next_change(s) >= end:
        return
    z = ser.y[s:end:S]
    sub = _Series(z, ser.base, ser.rtol, ser.atol, None)
    node = _assemble(sub, _segment(sub))
    node = dataclasses.replace(node, unit="epoch")
    p = ser.extent(node, s, end - s)
    first = sub.best(0)
    if p:
        yield _Cand(node, p, rank=1, min_len=2 * S, back=first.back * S if first is not None else 0)


def _fit_linear(ser: _Series, s: int) -> Iterator[_Cand]:
    y, m, b = ser.y, ser.n - s, ser.base
    if m < 2:
        return
    z0 = float(y[s])

    def line(slope: float, T: int) -> ir.Linear:
        return ir.Linear(start_factor=ser.factor(z0), end_factor=(z0 + slope * T) / b, steps=T)

    slope, p, far = float(y[s + 1]) - z0, 0, 1
    for _ in range(6):  # refit the slope from the farthest point reproduced so far
        q = ser.extent(line(slope, max(m, 1)), s)
        if q <= p:
            break
        p = q
        if p >= m or p - 1 <= far:
            break
        far = p - 1
        slope = (float(y[s + far]) - z0) / far
    if p < 2:
        return
    if p < m and y[s + p] == y[s + p - 1] and p - 1 >= 2:  # the ramp stops and holds: clamp at T
        K = p - 1
        clamped = ir.Linear(start_factor=ser.factor(z0), end_factor=ser.factor(float(y[s + K])), steps=K)
        q = ser.extent(clamped, s)
        if q > p:
            yield _Cand(clamped, q, rank=2)
            return

    def grow(length: int) -> ir.Linear:
        last = min(length, p) - 1
        sl = (float(y[s + last]) - z0) / last if last >= 1 else slope
        return line(sl, length)

    yield _Cand(line(slope, max(m, 1)), p, rank=2, grow=grow)


def _refine(ser: _Series, s: int, make: Callable[[int], _N | None]) -> tuple[_N, int] | None:
    """Fit a one-parameter family from point ``j``, verify, refit from the farthest point reproduced."""
    m, j, best = ser.n - s, 1, None
    for _ in range(6):
        if j >= m:
            break
        try:
            node = make(j)
        except (ConfigError, ValueError, OverflowError, ZeroDivisionError):
            node = None
        if node is None:
            break
        p = ser.extent(node, s)
        if best is not None and p <= best[1]:
            break
        best = (node, p)
        if p >= m or p - 1 <= j:
            break
        j = p - 1
    return best


def _fit_geometric(ser: _Series, s: int) -> Iterator[_Cand]:
    """Exponential, natural-exponential and inverse-time decay from the base (continuous).

    An exponential that starts elsewhere (a decay stacked on a warmup continues from
    ``gamma^W``) is a chain: ``constant ×a`` times the exponential.
    """
    if ser.n - s < 3:
        return
    y, b = ser.y, ser.base
    if not ser.at_base(s):
        z0 = float(y[s])
        if z0 == 0.0 or (z0 > 0) != (b > 0):
            return
        a = z0 / b

        def chain(gamma: float) -> ir.Chain:
            return ir.Chain(parts=(ir.Constant(factor=a), ir.Exponential(gamma=gamma)))

        def scaled(j: int) -> ir.Chain | None:
            r = float(y[s + j]) / z0
            return chain(r ** (1.0 / j)) if r > 0 else None

        one = _refine(ser, s, scaled)
        if one is not None and one[1] >= 4:
            node, p = one
            decay = node.parts[1]
            assert isinstance(decay, ir.Exponential)  # chain() builds (Constant, Exponential)
            gamma = decay.gamma
            if _short(gamma, 1.0) != gamma and ser.extent(chain(_short(gamma, 1.0)), s) >= p:
                node = chain(_short(gamma, 1.0))
            yield _Cand(node, p, rank=5, min_len=4)
        return

    def ratio(j: int) -> float:
        return float(y[s + j]) / b

    def exp(j: int) -> ir.Exponential | None:
        r = ratio(j)
        return ir.Exponential(gamma=r ** (1.0 / j)) if r > 0 else None

    def nat(j: int) -> ir.NaturalExp | None:
        r = ratio(j)
        return ir.NaturalExp(rate=-math.log(r) / j) if r > 0 else None

    def inv(j: int) -> ir.InverseTime | None:
        r = ratio(j)
        return ir.InverseTime(rate=(1.0 / r - 1.0) / j) if r != 0 else None

    ex, nx = _refine(ser, s, exp), _refine(ser, s, nat)
    got: dict[str, tuple[ir.Node, int] | None] = {"exp": ex, "nat": nx, "inv": _refine(ser, s, inv)}
    if ex is not None and nx is not None and ex[1] == nx[1]:  # one function, two spellings: the shorter one
        if _digits(nx[0].rate) < _digits(ex[0].gamma):
            got["exp"] = None
        else:
            got["nat"] = None
    for name, rank in (("exp", 5), ("nat", 5), ("inv", 9)):
        fit = got[name]
        if fit is not None and fit[1] >= 3:
            yield _Cand(fit[0], fit[1], rank=rank)


def _fit_stair(ser: _Series, s: int) -> Iterator[_Cand]:
    """Held values dropping by a constant ratio: step decay (equal spacing) or multistep."""
    if not ser.at_base(s):
        return
    cps = ser.changes_after(s, _MAX_RUNS)
    if cps.size == 0:
        return
    b = ser.base
    vals = ser.y[cps] / b
    local = cps - s
    every = int(local[0])
    # gamma from the farthest run that keeps a constant ratio
    with np.errstate(all="ignore"):
        ratios = np.concatenate(([vals[0]], vals[1:] / vals[:-1]))
    g0 = float(ratios[0])
    if not g0 > 0 or g0 == 1.0:
        return
    same = np.abs(ratios - g0) <= 1e-9 * abs(g0)
    runs = int(np.argmin(same)) if not same.all() else int(same.size)
    gamma = float(vals[runs - 1]) ** (1.0 / runs) if vals[runs - 1] > 0 else g0
    if every == 1:
        return  # a change every step: the continuous forms (geometric fitter)
    if runs >= 2 and np.all(local[:runs] == every * np.arange(1, runs + 1)):
        rate = -math.log(gamma) / every
        nicer = _digits(rate) < _digits(gamma)  # one function, two spellings: the shorter one first
        stairs: tuple[tuple[ir.Node, int], ...] = (
            (ir.Exponential(gamma=gamma, every=every, stair=True), 4 if nicer else 3),
            (ir.NaturalExp(rate=_short(rate, 1.0), every=every, stair=True), 3 if nicer else 8),
            (ir.NaturalExp(rate=rate, every=every, stair=True), 8))
        for stair, rank in stairs:
            p = ser.extent(stair, s)
            if p > 2 * every:
                yield _Cand(stair, p, rank=rank, min_len=2 * every + 1)
    node = ir.MultiStep(milestones=tuple(int(x) for x in local[:runs]), gamma=gamma)
    p = ser.extent(node, s)
    if p > every:
        yield _Cand(node, p, rank=4, min_len=every + 1)
    # inverse time with stair: 1/f - 1 grows by `rate` per run
    if np.all(vals[:2] > 0) and (cps.size < 2 or int(local[1]) == 2 * every):
        rate = (1.0 / float(vals[0]) - 1.0)
        if cps.size >= 2:
            rate = (1.0 / float(vals[1]) - 1.0) / 2
        node2 = ir.InverseTime(rate=rate, every=every, stair=True)
        p = ser.extent(node2, s)
        if p > 2 * every:
            yield _Cand(node2, p, rank=9, min_len=2 * every + 1)


def _fit_polynomial(ser: _Series, s: int) -> Iterator[_Cand]:
    """Polynomial decay from the base to an end the series reaches (and holds, or ends on)."""
    m = ser.n - s
    if m < 5 or not ser.at_base(s):
        return
    y, b = ser.y, ser.base
    ends = []
    h = ser.next_hold(s)
    if h is not None:
        ends.append(h - s)
    if m - 1 not in ends:
        ends.append(m - 1)
    for K in ends:
        if K < 4:
            continue
        e = float(y[s + K])
        j = K // 2
        if b == e:
            continue
        r = (float(y[s + j]) - e) / (b - e)
        if not 0.0 < r < 1.0:
            continue
        power = math.log(r) / math.log(1.0 - j / K)
        if abs(power - 1.0) <= 1e-9:  # a straight line: the linear fitter's
            continue
        node = ir.Polynomial(steps=K, power=power, end=e)
        p = ser.extent(node, s)
        if p >= K:
            yield _Cand(node, p, rank=7, min_len=5)
            return


def _sinusoid(z: Array, j: int) -> tuple[int, int, float, float] | None:
    """``(T, phase, mid, amp)`` with ``z[k] = mid + amp cos(pi (k + phase) / T)`` from ``z[0], z[j], z[2j], z[3j]``.

    The cosine recurrence ``z[k-j] + z[k+j] - 2 mid = 2 cos(w j) (z[k] - mid)`` at
    ``k = j, 2j`` gives ``cos(w j)`` and ``mid``; ``T = pi / w`` is rounded to an
    integer, then ``mid, amp`` and the phase (rounded too) are solved from the points.
    """
    z0, z1, z2, z3 = (float(z[i * j]) for i in range(4))
    d = z1 - z2
    if d == 0.0:
        return None
    C = (z0 + z2 - z1 - z3) / (2.0 * d)
    if not -1.0 < C < 1.0:
        return None
    w = math.acos(C) / j
    if w <= 0.0:
        return None
    Tf = math.pi / w
    if not 1.0 <= Tf < ir.MAX_INT:
        return None
    T = int(round(Tf))
    w = math.pi / T
    ks = np.asarray([0, j, 2 * j, 3 * j], dtype=np.float64)
    A = np.stack([np.ones(4), np.cos(w * ks), np.sin(w * ks)], axis=1)
    try:
        (mid, P, Q), *_ = np.linalg.lstsq(A, np.asarray([z0, z1, z2, z3]), rcond=None)
    except np.linalg.LinAlgError:
        return None
    amp = math.hypot(P, Q)
    if amp == 0.0:
        return None
    phase = int(round(math.atan2(-Q, P) / w)) % (2 * T)
    return T, phase, float(mid), amp


def _cosine_lambda(t_f: float, e_f: float, T: int, phase: int, clamp: bool) -> ir.Lambda:
    k = f"min(step + {phase}, {T})" if clamp else (f"(step + {phase})" if phase else "step")
    c = f"(1 + cos(pi * {k} / {T})) / 2"
    if e_f == 0.0:
        src = c if t_f == 1.0 else f"{_lit(t_f)} * {c}"
    else:
        src = f"{_lit(e_f)} + ({_lit(t_f)} - {_lit(e_f)}) * {c}"
    return ir.Lambda(expr=src)


def _fit_cosine(ser: _Series, s: int) -> Iterator[_Cand]:
    """Cosine annealing: from the base to an absolute end (``cosine``), or entered mid-way (a ``lambda``)."""
    m = ser.n - s
    if m < 6:
        return
    z = ser.y[s:]
    b, scale = ser.base, abs(ser.base) or 1.0
    j = (m - 1) // 3
    while j >= 1:
        fit = _sinusoid(z, j)
        j_now, j = j, j // 2
        if fit is None:
            continue
        T, phase, mid, amp = fit
        probe = [k for k in (1, j_now // 2, (3 * j_now) // 2, 3 * j_now - 1) if 0 < k < m]
        guess = [mid + amp * math.cos(math.pi * (k + phase) / T) for k in probe]
        if any(abs(g - float(z[k])) > 1e-9 * amp for g, k in zip(guess, probe)):
            continue  # cheap reject before the evaluator
        top, bottom = mid + amp, mid - amp
        kb, kt = (T - phase) % (2 * T), (2 * T - phase) % (2 * T)
        if kb < m and abs(float(z[kb]) - bottom) <= 1e-6 * amp:
            bottom = float(z[kb])  # an extreme is in the data: take it exactly
        if kt < m and abs(float(z[kt]) - top) <= 1e-6 * amp:
            top = float(z[kt])
        need = max(6, 3 * j_now + 1)
        best: tuple[ir.Node, int] | None = None
        for node in _cosine_nodes(ser, top, bottom, T, phase, scale, b):
            for clamp in (True, False):  # a tie (the data ends before the bottom) holds the end
                cand = _with_clamp(node, clamp, phase, T)
                if cand is not None:
                    p = ser.extent(cand, s)
                    if best is None or p > best[1]:
                        best = (cand, p)
        if best is not None and best[1] >= need:
            node, p = best
            if isinstance(node, ir.Cosine) and not (kb < m and float(z[kb]) == bottom):
                node, p = _cosine_end(ser, s, node, p)
            lam = not isinstance(node, ir.Cosine)
            yield _Cand(node, p, rank=11 if lam else 6, min_len=need,
                        back=phase if lam and phase < T else 0)
            return


def _cosine_end(ser: _Series, s: int, node: ir.Cosine, p: int) -> tuple[ir.Cosine, int]:
    """Re-solve a cosine's end from the reproduced point nearest its bottom (the end is not in the data).

    ``y_k = end + (base - end) c_k`` with ``c_k = (1 + cos(pi k / T)) / 2`` known once ``T``
    is: ``end = (y_k - base c_k) / (1 - c_k)``, well conditioned where ``c_k`` is small.
    """
    k = min(p - 1, node.steps)
    c = (1.0 + math.cos(math.pi * k / node.steps)) / 2.0
    if not c < 0.5:
        return node, p
    end = (float(ser.y[s + k]) - ser.base * c) / (1.0 - c)
    for e in (_short(end, abs(ser.base) or 1.0), end):
        trial = dataclasses.replace(node, end=e)
        q = ser.extent(trial, s)
        if q >= p:
            return trial, q
    return node, p


def _cosine_nodes(ser: _Series, top: float, bottom: float, T: int, phase: int, scale: float,
                  b: float) -> Iterator[ir.Node]:
    if phase in (0, T):  # starts at an extreme: a cosine node from the base to the other extreme
        first, other = (top, bottom) if phase == 0 else (bottom, top)
        if abs(first - b) <= 1e-9 * abs(b):
            e_s = _short(other, scale)
            yield ir.Cosine(steps=T, end=e_s)
            if e_s != other:
                yield ir.Cosine(steps=T, end=other)
            return
    t_f, e_f = ser.factor(top), ser.factor(bottom)
    yield _cosine_lambda(_short(t_f, 1.0), _short(e_f, 1.0), T, phase, False)
    if (_short(t_f, 1.0), _short(e_f, 1.0)) != (t_f, e_f):
        yield _cosine_lambda(t_f, e_f, T, phase, False)


def _with_clamp(node: ir.Node, clamp: bool, phase: int, T: int) -> ir.Node | None:
    if isinstance(node, ir.Cosine):
        return dataclasses.replace(node, clamp=clamp)
    if not clamp:
        return node
    if phase > T or not isinstance(node, ir.Lambda):
        return None  # a rising half: no clamp
    src = node.function.source
    k_old = f"(step + {phase})" if phase else "step"
    return ir.Lambda(expr=src.replace(f"pi * {k_old} /", f"pi * min(step + {phase}, {T}) /", 1))


def _fit_invsqrt(ser: _Series, s: int) -> Iterator[_Cand]:
    """Inverse square root decay ``(c / (step + c)) ** 0.5`` (Noam, HF ``get_inverse_sqrt_schedule``)."""
    y = ser.y
    z0 = float(y[s])
    if ser.n - s < 4 or z0 == 0.0:
        return
    t_f = _short(ser.factor(z0), 1.0)

    def make(j: int) -> ir.Node | None:
        zj = float(y[s + j])
        if zj == 0.0 or (zj > 0) != (z0 > 0):
            return None
        w = (z0 / zj) ** 2
        if not w > 1.0:
            return None
        c = j / (w - 1.0)
        if not 0.0 < c < ir.MAX_INT:
            return None
        cr = round(c)
        c_txt = str(int(cr)) if cr >= 1 and abs(c - cr) <= 1e-6 * max(1.0, c) else _lit(c)
        body = f"({c_txt} / (step + {c_txt})) ** 0.5"
        return ir.Lambda(expr=body if t_f == 1.0 else f"{_lit(t_f)} * {body}")

    got = _refine(ser, s, make)
    if got is not None and got[1] >= 4:
        yield _Cand(got[0], got[1], rank=10, min_len=4)


_FITTERS: tuple[Callable[[_Series, int], Iterator[_Cand]], ...] = (
    _fit_constant, _fit_epoch, _fit_linear, _fit_stair, _fit_geometric, _fit_cosine, _fit_polynomial, _fit_invsqrt)


# --------------------------------------------------------------------------- segmentation

@dataclass(frozen=True)
class _Part:
    start: int
    node: ir.Node
    table: bool = False


def _segment(ser: _Series) -> list[_Part]:
    """Cut the series into parts: the furthest-reaching candidate at each start, tables where none fits."""
    parts: list[_Part] = []
    s, table_from, fails = 0, -1, 0
    while s < ser.n:
        cand = ser.best(s)
        if cand is None:
            if table_from < 0:
                table_from, fails = s, 0
            fails += 1
            # past the first starts, gallop: steps of 1/8 of the unfit stretch so far (a closed form
            # shorter than that may stay in the table, which is exact anyway)
            s += 1 if fails <= _SCAN_EXACT else max(1, (s - table_from) // 8)
            continue
        if table_from >= 0:
            if fails > _SCAN_EXACT:  # galloped past the start of the fit: find the earliest start that reaches as far
                reach, lo = s + cand.extent, table_from + _SCAN_EXACT - 1
                while s - lo > 1:
                    mid = (lo + s) // 2
                    got = ser.best(mid)
                    if got is not None and mid + got.extent >= reach:
                        s, cand = mid, got
                    else:
                        lo = mid
            parts.append(_table_part(ser, table_from, s))
            table_from = -1
        p = s + cand.extent
        nxt = _next_start(ser, s, p, cand) if p < ser.n else ser.n
        parts.append(_Part(s, _finish(ser, cand, s, nxt - s)))
        s = nxt
    if table_from >= 0:
        parts.append(_table_part(ser, table_from, ser.n))
    return parts


def _table_part(ser: _Series, a: int, b: int) -> _Part:
    return _Part(a, ir.Table(values=tuple(ser.y[a:b].tolist())), table=True)


def _next_start(ser: _Series, s: int, p: int, cand: _Cand) -> int:
    """Where the next part starts: among the last steps the current part still fits, the start
    from which the next part reaches furthest (the earliest such start on a tie)."""
    starts = {c for c in range(max(s + 1, p - _LOOK_BACK), p + 1)}
    nxt = ser.best(p)
    if nxt is not None and nxt.back and s < p - nxt.back < p:
        starts.add(p - nxt.back)
    i = int(np.searchsorted(ser.cp, p - 1, side="right")) - 1
    held = int(ser.cp[i]) if i >= 0 else 0  # where the value the current part ends on started to hold
    if s < held < p:
        starts.add(held)
    best_c, best_reach = p, -1
    for c in sorted(starts):
        got = ser.best(c)
        reach = c + got.extent if got is not None else c
        if reach > best_reach:
            best_c, best_reach = c, reach
    return best_c


def _finish(ser: _Series, cand: _Cand, s: int, length: int) -> ir.Node:
    """The part's final node: parameters that depend on its length settled, floats tidied.

    A ramp that runs to the end of the data may end where the data ends (``T = length - 1``,
    then holds) or where its boundary would be (``T = length``): the one with the shorter
    end factor wins (HF's decay reaches 0 one step past the data; a one-cycle ramp reaches
    its final value on the last step).
    """
    if cand.grow is None:
        return _tidy(ser, cand.node, s, length)
    options = [length, length - 1] if s + length == ser.n and length >= 3 else [length]
    best: ir.Linear | None = None  # grow() builds a new node: never cand.node itself
    for T in options:
        grown = cand.grow(T)
        if ser.fits(grown, s, length):
            grown = _tidy(ser, grown, s, length)
            if best is None or _digits(grown.end_factor) < _digits(best.end_factor):
                best = grown
    return best if best is not None else _tidy(ser, cand.node, s, length)


def _assemble(ser: _Series, parts: list[_Part]) -> ir.Node:
    """One node from the parts: constants merged into a piecewise, cosine restarts recognised."""
    parts = _merge_constants(ser, parts)
    parts = _merge_restarts(ser, parts)
    if len(parts) == 1:
        return parts[0].node
    return ir.Sequence(parts=tuple(p.node for p in parts), boundaries=tuple(p.start for p in parts[1:]))


def _plain_constant(p: _Part) -> bool:
    return isinstance(p.node, ir.Constant) and p.node.steps is None and p.node.unit is None


def _runs_of(ser: _Series, p: _Part, end: int) -> list[_Part] | None:
    """A multistep part as its constant runs (so that it can join a piecewise)."""
    n = p.node
    if not isinstance(n, ir.MultiStep) or n.unit is not None or len(set(n.milestones)) != len(n.milestones):
        return None
    starts = [p.start] + [p.start + m for m in n.milestones if p.start + m < end]
    return [_Part(a, ir.Constant(factor=n.gamma ** i)) for i, a in enumerate(starts)]


def _merge_constants(ser: _Series, parts: list[_Part]) -> list[_Part]:
    expanded: list[_Part] = []
    for i, p in enumerate(parts):
        end = parts[i + 1].start if i + 1 < len(parts) else ser.n
        near = [q for q in parts[i + 1:i + 2] if _plain_constant(q)]  # the ratio changed after the milestones
        runs = _runs_of(ser, p, end) if near else None
        if runs is not None and all(ser.fits(r.node, r.start, b - r.start) for r, b in
                                    zip(runs, [q.start for q in runs[1:]] + [end])):
            expanded.extend(runs)
        else:
            expanded.append(p)
    parts = expanded
    out: list[_Part] = []
    i = 0
    while i < len(parts):
        j = i
        while j + 1 < len(parts) and _plain_constant(parts[i]) and _plain_constant(parts[j + 1]):
            j += 1
        if j == i:
            out.append(parts[i])
        else:
            run = parts[i:j + 1]
            factors = tuple(cast(ir.Constant, p.node).factor for p in run)  # _plain_constant parts: Constant nodes
            if len(run) == 2 and factors[1] == 1.0 and j == len(parts) - 1:
                node: ir.Node = ir.Constant(factor=factors[0], steps=run[1].start - run[0].start)
            else:
                node = ir.Piecewise(boundaries=tuple(p.start - run[0].start for p in run[1:]), values=factors,
                                    relative=True)
            out.append(_Part(run[0].start, node))
        i = j + 1
    return out


def _merge_restarts(ser: _Series, parts: list[_Part]) -> list[_Part]:
    out: list[_Part] = []
    i = 0
    while i < len(parts):
        j = i
        first = parts[i].node
        if isinstance(first, ir.Cosine) and first.unit is None:
            mult = None
            cur = first  # parts[j].node: a Cosine (the loop only moves on to one)
            while j + 1 < len(parts):
                nxt = parts[j + 1].node
                if not (isinstance(nxt, ir.Cosine) and nxt.unit is None and nxt.end == first.end
                        and parts[j + 1].start - parts[j].start == cur.steps):
                    break
                ratio = nxt.steps // cur.steps
                if ratio < 1 or nxt.steps != ratio * cur.steps or (mult is not None and ratio != mult):
                    break
                mult = ratio
                j += 1
                cur = nxt
            if j > i:
                node = ir.CosineRestarts(period=first.steps, mult=mult or 1, end=first.end)
                end = parts[j + 1].start if j + 1 < len(parts) else ser.n
                if ser.fits(node, parts[i].start, end - parts[i].start):
                    out.append(_Part(parts[i].start, node))
                    i = j + 1
                    continue
                j = i
        out.append(parts[i])
        i += 1
    return out


# --------------------------------------------------------------------------- one row

def _recover_row(y: Array, base: float, unit: str, spe: int | None, rtol: float, ptol: float) -> Recovered:
    peak = float(np.max(np.abs(y)))
    atol = ptol * peak
    if peak == 0.0:
        node: ir.Node = ir.Constant(factor=0.0 if base != 0.0 else 1.0, unit=unit)
        return _result(node, base, 0.0, None, ())
    ser = _Series(y, base, rtol, atol, spe)
    parts = _segment(ser)
    node = _assemble(ser, parts)
    if node.unit is None:
        node = dataclasses.replace(node, unit=unit)
    tables = tuple((p.start, (parts[i + 1].start if i + 1 < len(parts) else ser.n) - 1)
                   for i, p in enumerate(parts) if p.table)
    err = _verify_rows([node], [base], y[None, :], [0], [peak], _Clock(unit, spe), rtol, ptol)[0]
    if err is None:  # cannot happen when every part was verified; never return an unverified node
        node = ir.Table(values=tuple(y.tolist()), unit=unit)
        tables = ((0, ser.n - 1),)
        err = 0.0
    return _result(node, base, err, None, tables)


def _result(node: ir.Node, base: float, err: float, source: int | None,
            tables: tuple[tuple[int, int], ...] | None = None) -> Recovered:
    if tables is None:
        tables = _table_steps(node)
    if isinstance(node, ir.Table):
        form, text = "table", "table: no closed form fits steps " + _ranges(tables)
    elif tables:
        form = "mixed"
        text = f"closed form except steps {_ranges(tables)} (table): {describe(node)}"
    else:
        form, text = "closed form", f"closed form: {describe(node)}"
    return Recovered(node=node, base=base, form=form, description=text, max_error=err, table_steps=tables,
                     source=source)


def _ranges(tables: Seq[tuple[int, int]]) -> str:
    return ", ".join(f"{a}..{b}" for a, b in tables)


def _table_steps(node: ir.Node) -> tuple[tuple[int, int], ...]:
    """Table ranges of a top-level sequence (as :func:`_recover_row` builds them)."""
    if isinstance(node, ir.Table):
        return ((0, len(node.values) - 1),)
    if isinstance(node, ir.Sequence):
        starts = (0,) + node.boundaries
        return tuple((starts[i], starts[i] + len(p.values) - 1) for i, p in enumerate(node.parts)
                     if isinstance(p, ir.Table))
    return ()


# --------------------------------------------------------------------------- groups

def _clusters(Y: Array, peaks: Seq[float]) -> list[list[int]]:
    """Rows grouped by their shape (values at a few steps over the row's peak value)."""
    G, n = Y.shape
    idx = np.unique(np.linspace(0, n - 1, 33).round().astype(np.int64))
    out: dict[bytes, list[int]] = {}
    for g in range(G):
        row = Y[g]
        if peaks[g] == 0.0:
            key = b"zero"
        else:
            pv = float(row[int(np.argmax(np.abs(row)))])
            key = np.round(row[idx] / pv, 9).tobytes()
        out.setdefault(key, []).append(g)
    return list(out.values())


def _matches_quick(node: ir.Node, row: Array, base: float, peak: float, clock: _Clock, rtol: float,
                   ptol: float) -> bool:
    n = min(row.size, 64)
    try:
        fit = clock.evaluate(node, np.arange(n, dtype=np.int64), base)
    except (EvaluationError, ConfigError, ValueError):
        return False
    return not _bad(fit, row[:n], rtol, ptol * peak).any()


def _verify_rows(nodes: Seq[ir.Node], bases: Seq[float], Y: Array, rows: Seq[int], peaks: Seq[float],
                 clock: _Clock, rtol: float, ptol: float) -> list[float | None]:
    """Each row's worst error against its node (``None`` where it fails), chunk by chunk of steps.

    Rows that share a node are evaluated in one pass (:func:`optbridge.evaluate.table`).
    """
    n = Y.shape[1]
    rows = list(rows)
    atol = (ptol * np.asarray(peaks, dtype=np.float64))[:, None]
    floor = np.maximum(atol / rtol, np.finfo(np.float64).tiny)
    slots = [(node, float(b), "schedule") for node, b in zip(nodes, bases)]
    ok = np.ones(len(rows), dtype=bool)
    err = np.zeros(len(rows))
    spe = clock.spe or 1
    chunk = max(1024, _CHUNK * 16 // max(1, len(rows)))
    for a in range(0, n, chunk):
        live = np.flatnonzero(ok)
        if live.size == 0:
            break
        m = min(chunk, n - a)
        try:
            with np.errstate(all="ignore"):
                fit = evaluate.table([slots[i] for i in live], a, m, unit="iter", steps_per_epoch=spe)
        except (EvaluationError, ConfigError, ValueError):
            ok[live] = False
            break
        block = Y[[rows[i] for i in live], a:a + m]
        bad = _bad(fit, block, rtol, atol[live]).any(axis=1)
        ok[live[bad]] = False
        good = live[~bad]
        if good.size:
            gi = ~bad
            e = np.max(np.abs(fit[gi] - block[gi]) / np.maximum(np.abs(block[gi]), floor[good]), axis=1)
            err[good] = np.maximum(err[good], e)
    return [float(e) if k else None for k, e in zip(ok, err)]


def _rescaled(node: ir.Node, r: float) -> ir.Node:
    """``node`` with its absolute fields multiplied by ``r`` (for a row that is ``r`` times another)."""
    if r == 1.0:
        return node
    if isinstance(node, (ir.Cosine, ir.Polynomial, ir.CosineRestarts)):
        return dataclasses.replace(node, end=node.end * r) if node.end != 0.0 else node
    if isinstance(node, (ir.Table, ir.Piecewise)) and not node.relative:
        return dataclasses.replace(node, values=tuple(v * r for v in node.values))
    if isinstance(node, (ir.Sequence, ir.Chain)):
        return dataclasses.replace(node, parts=tuple(_rescaled(p, r) for p in node.parts))
    return node


# --------------------------------------------------------------------------- descriptions

def describe(node: ir.Node, unit: str = "iter") -> str:
    """A one-line reading of a schedule.

    ``linear warmup 2000 steps from 0, cosine to 6e-05 until 600000, then constant``.
    Factors of the base are printed bare (``from 0``, ``×0.1``); ``cosine``/``polynomial``
    ends are absolute values, as in the IR. Positions inside a sequence are absolute
    steps of the sequence's clock (``until 600000``); a part on another clock reads in
    durations (``per epoch: [linear from 0.85 to 0.01 over 17 epochs]``).

    Args:
        node: Any schedule node.
        unit: The inherited unit (the plan's ``step_unit``).
    """
    return _describe(node, unit, 0, None)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


_NUM = r"[-+0-9.e]+"
_COS_RE = re.compile(
    rf"^(?:(?P<e>{_NUM}) \+ \((?P<t>{_NUM}) - {_NUM}\) \* |(?P<t2>{_NUM}) \* )?"
    r"\(1 \+ cos\(pi \* (?:step|\(step \+ (?P<ph>\d+)\)|min\(step \+ (?P<phc>\d+), (?P<Tc>\d+)\))"
    r" / (?P<T>\d+)\)\) / 2$")
_INVSQRT_RE = re.compile(rf"^(?:(?P<t>{_NUM}) \* )?\((?P<c>[0-9.e+]+) / \(step \+ [0-9.e+]+\)\) \*\* 0\.5$")


class _Words:
    """How positions read: absolute (``until 600000``) or as durations (``over 17 epochs``)."""

    def __init__(self, unit: str, off: int | None) -> None:
        self.off = off
        self.steps = "epochs" if unit == "epoch" else "steps"
        self.at = "epoch " if unit == "epoch" else ""

    def until(self, k: int) -> str:
        return f"over {k} {self.steps}" if self.off is None else f"until {self.at}{self.off + k}"

    def marks(self, ks: Seq[int]) -> str:
        if self.off is None:
            return f"after {self.steps} {_fmt(list(ks))}"
        return f"at {self.at}{_fmt([self.off + k for k in ks])}"


def _describe_lambda(src: str, w: _Words) -> str:
    m = _COS_RE.match(src)
    if m:
        e = float(m["e"]) if m["e"] else 0.0
        t = float(m["t"] or m["t2"] or 1.0)
        phase, T = int(m["ph"] or m["phc"] or 0), int(m["T"])
        top = "" if t == 1.0 else f" from ×{_fmt(t)}"
        if phase < T:
            text = f"cosine{top} to ×{_fmt(e)} {w.until(T - phase)}"
            text += f" (entered {phase} {w.steps} in)" if phase else ""
        else:
            text = f"rising cosine to{top or ' ×1'} from ×{_fmt(e)} {w.until(2 * T - phase)}"
        return text + (", then constant" if m["phc"] else "")
    m = _INVSQRT_RE.match(src)
    if m:
        scale = f" ×{_fmt(float(m['t']))}" if m["t"] else ""
        return f"inverse sqrt decay{scale}, timescale {m['c']}"
    return f"lambda {src}"


def _describe(node: ir.Node, unit: str, off: int | None, length: int | None) -> str:  # noqa: C901
    u = node.unit or unit
    if u != unit:
        return f"per {u}: [{_describe(dataclasses.replace(node, unit=None), u, None, None)}]"
    w = _Words(u, off)
    if isinstance(node, ir.Sequence):
        texts = []
        starts = (0,) + node.boundaries
        for i, part in enumerate(node.parts):
            size = starts[i + 1] - starts[i] if i + 1 < len(starts) else None
            t = _describe(part, u, None if off is None else off + starts[i], size)
            if off is None and i:
                t = f"from {w.steps[:-1]} {starts[i]}: {t}"
            if i and isinstance(part, ir.Constant) and part.factor == 1.0 and part.steps is None:
                t = "then constant"
            texts.append(t)
        return ", ".join(texts)
    if isinstance(node, ir.Chain):
        return " × ".join(f"({_describe(p, u, off, length)})" for p in node.parts)
    if isinstance(node, ir.Constant):
        if node.steps is None:
            return "constant" if node.factor == 1.0 else f"constant ×{_fmt(node.factor)}"
        return f"×{_fmt(node.factor)} {w.until(node.steps)}, then constant"
    if isinstance(node, ir.Linear):
        s, e, T = node.start_factor, node.end_factor, node.steps
        text = (f"linear warmup {T} {w.steps} from {_fmt(s)}" if e == 1.0 and s < 1.0
                else f"linear from {_fmt(s)} to {_fmt(e)} {w.until(T)}")
        return text + (", then holds" if length is not None and length > T else "")
    if isinstance(node, ir.Cosine):
        after = "" if length is not None and length <= node.steps else (
            ", then constant" if node.clamp else ", periodic after")
        return f"cosine to {_fmt(node.end)} {w.until(node.steps)}{after}"
    if isinstance(node, ir.Exponential):
        if node.stair:
            return f"step decay ×{_fmt(node.gamma)} every {node.every} {w.steps}"
        per = w.steps[:-1] if node.every == 1 else f"{node.every} {w.steps}"
        return f"exponential ×{_fmt(node.gamma)} per {per}"
    if isinstance(node, ir.MultiStep):
        return f"multistep ×{_fmt(node.gamma)} {w.marks(node.milestones)}"
    if isinstance(node, ir.NaturalExp):
        return f"natural exp decay rate {_fmt(node.rate)}" + (
            f" stepped every {node.every} {w.steps}" if node.stair else "")
    if isinstance(node, ir.InverseTime):
        per = "" if node.every == 1 else f" per {node.every} {w.steps}"
        return f"inverse time decay rate {_fmt(node.rate)}{per}" + (" (stepped)" if node.stair else "")
    if isinstance(node, ir.Polynomial):
        return f"polynomial power {_fmt(node.power)} to {_fmt(node.end)} {w.until(node.steps)}" + (
            ", cyclic" if node.cycle else ", then constant")
    if isinstance(node, ir.CosineRestarts):
        grow = f" ×{node.mult}" if node.mult != 1 else ""
        return f"cosine restarts every {node.period}{grow} {w.steps} to {_fmt(node.end)}"
    if isinstance(node, ir.Piecewise):
        vals = ("×" if node.relative else "") + _fmt(node.values)
        return f"piecewise constant {vals} {w.marks((0,) + node.boundaries)}"
    if isinstance(node, ir.Table):
        return f"table of {len(node.values)} values" + (" (relative)" if node.relative else "")
    if isinstance(node, ir.Lambda):
        return _describe_lambda(node.function.source, w)
    from .serialize import node_to_dict  # the generic form, for kinds recovery does not produce
    d = node_to_dict(node)
    kind = d.pop("kind")
    d.pop("unit", None)
    return f"{kind}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in d.items()) + ")"
