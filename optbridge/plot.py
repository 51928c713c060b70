"""Plot traces to a PNG (matplotlib, headless): one backend, or several overlaid with their differences.

:func:`plot_trace` draws one panel per hyperparameter, one line per group. With
``overlay=`` (other backends' traces of the same window) it draws them over the
first trace (the reference) and adds, under each panel, the difference of each
backend to the reference per update: relative for float64 backends, in float32
ulps for float32 backends (:func:`differences`), from the values the framework
really applied where the backend measured them (``Trace.applied``).

Many groups stay readable: groups whose schedules are identical up to their
base value are folded (:func:`fold_groups`) into one legend entry with their
count, every line is coloured by the group's peak value (a colour ramp with a
colorbar), and legends sit outside the axes. Long traces are drawn from the
minimum and maximum of each pixel column, which keeps every extreme.

matplotlib is optional: it is imported inside :func:`plot_trace` only, and a
missing matplotlib raises :class:`~optbridge.errors.BackendUnavailable` with the
``pip install matplotlib`` hint. Drawing goes through matplotlib's Agg canvas
directly (no ``pyplot``), so it works without a display and leaves the caller's
global matplotlib backend alone.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .tracing import Trace

__all__ = ["plot_trace", "draw_trace", "differences", "Difference", "fold_groups", "MAX_LINES"]

# Colour-blind friendly, high-contrast (Okabe-Ito, with black moved last).
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
_STYLES: tuple[Any, ...] = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))
#: Overlaid backends: colour (difference panels, legend) and dash pattern (value panels), reference excluded.
_BACKEND_COLORS = ("#D55E00", "#009E73", "#CC79A7", "#0072B2", "#E69F00", "#56B4E9", "#000000")
_BACKEND_DASHES: tuple[Any, ...] = ((0, (4, 2)), (0, (1, 1.2)), (0, (6, 2, 1, 2)), (0, (2, 2)), (0, (8, 2)),
                                    (0, (3, 1, 1, 1)))
#: Up to this many groups get one labelled line each; more are folded and coloured by peak.
MAX_LINES = 8
#: Points per line: longer series are reduced to each pixel column's minimum and maximum.
_POINTS = 2400


# --------------------------------------------------------------------------- differences

@dataclass(frozen=True)
class Difference:
    """How far one backend's series of one hyperparameter is from the reference.

    Attributes:
        backend: The backend.
        hyper: The hyperparameter.
        source: ``"applied"`` (measured from what the framework applied) or ``"held"``
            (the value the framework holds).
        unit: ``"relative"`` (``|b - ref| / |ref|``, float64 backends) or ``"ulps"``
            (float32 backends: ``|b - f32(ref)|`` in float32 ulps of ``f32(ref)``).
        per_step: The worst over groups at each update, float64 ``(steps,)`` (inf where
            the reference is 0 and the backend is not, or one of them is NaN).
        worst: The largest value of ``per_step``.
        step: The update where it occurs (real update number).
        group: The group where it occurs.
    """

    backend: str
    hyper: str
    source: str
    unit: str
    per_step: np.ndarray
    worst: float
    step: int
    group: str

    def describe(self) -> str:
        """``2.5e-15 relative (update 312, head)``, ``3 float32 ulps (update 7, backbone)``, ``0 float32 ulps``."""
        unit = "relative" if self.unit == "relative" else "float32 ulps"
        if self.worst == 0:
            return f"0 {unit} (exact)" if self.unit == "relative" else f"0 {unit} (the nearest float32, always)"
        value = f"{self.worst:.2g}" if self.unit == "relative" else f"{self.worst:.4g}"
        return f"{value} {unit} (update {self.step}, {self.group})"


def _is_float32(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.all(finite.astype(np.float32).astype(np.float64) == finite))


def differences(ref: Trace, other: Trace, hypers: Sequence[str] | None = None) -> list[Difference]:
    """Per hyperparameter, how far ``other`` is from ``ref`` at every update (worst over groups).

    A backend is judged by what it applied where it measured it (``other.applied``),
    else by what it holds (``other.data``). Its series is float32 when every value
    is a float32 number and the reference's are not: then the unit is float32
    ulps from the reference rounded to float32 (0: exactly the nearest float32),
    else the relative difference. NaN in both (a group not there yet) counts as equal.

    Raises:
        ConfigError: the traces do not cover the same groups and updates.
    """
    if tuple(other.groups) != tuple(ref.groups):
        raise ConfigError("overlay", f"must trace the same groups as the reference ({', '.join(ref.groups)})",
                          f"{other.backend}: {', '.join(other.groups)}")
    if (other.start, other.steps) != (ref.start, ref.steps):
        raise ConfigError("overlay", f"must cover updates {ref.start}..{ref.start + ref.steps - 1} as the reference",
                          f"{other.backend}: {other.start}..{other.start + other.steps - 1}")
    out = []
    for h in (list(ref) if hypers is None else hypers):
        if h not in other:
            continue
        source = "applied" if h in other.applied else "held"
        got = np.asarray(other.applied[h] if source == "applied" else other[h], dtype=np.float64)
        want = np.asarray(ref[h], dtype=np.float64)
        ulps = _is_float32(got) and not _is_float32(want)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if ulps:
                w32 = want.astype(np.float32)
                d = np.abs(got - w32.astype(np.float64)) / np.spacing(np.abs(w32)).astype(np.float64)
            else:
                d = np.abs(got - want) / np.abs(want)
        same = (got == want) | (np.isnan(got) & np.isnan(want))
        d = np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))
        per_step = d.max(axis=0)
        g, k = np.unravel_index(int(np.argmax(d)), d.shape)
        out.append(Difference(other.backend, h, source, "ulps" if ulps else "relative", per_step,
                              float(d[g, k]), int(ref.start + k), ref.groups[g]))
    return out


# --------------------------------------------------------------------------- folding

def fold_groups(values: np.ndarray) -> list[list[int]]:
    """Rows that are the same schedule up to their scale, as lists of row indices (first-seen order).

    Each row is divided by its peak ``max |v|``; rows whose scaled values agree to
    1e-9 (NaN with NaN) share a shape (257 evenly spread updates are compared
    first, then all). All-zero rows are one shape.
    """
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        peak = np.nanmax(np.where(np.isfinite(v), np.abs(v), np.nan), axis=1) if v.shape[1] else np.zeros(len(v))
        peak = np.where(np.isnan(peak), 0.0, peak)
        scaled = v / np.where(peak > 0, peak, 1.0)[:, None]
    probe = np.unique(np.linspace(0, v.shape[1] - 1, min(v.shape[1], 257)).astype(np.int64))
    shapes: list[list[int]] = []
    for g in range(v.shape[0]):
        for members in shapes:
            r = members[0]
            if (np.allclose(scaled[g, probe], scaled[r, probe], rtol=1e-9, atol=1e-12, equal_nan=True)
                    and np.allclose(scaled[g], scaled[r], rtol=1e-9, atol=1e-12, equal_nan=True)):
                members.append(g)
                break
        else:
            shapes.append([g])
    return shapes


# --------------------------------------------------------------------------- drawing helpers

def _reduce(x: np.ndarray, y: np.ndarray, how: str = "minmax") -> tuple[np.ndarray, np.ndarray]:
    """At most about :data:`_POINTS` points: each bucket's min and max in order (or its max)."""
    n = y.shape[-1]
    if n <= _POINTS:
        return x, y
    per = -(-n // (_POINTS // 2))
    pad = (-n) % per
    yy = np.concatenate([y, np.full(y.shape[:-1] + (pad,), np.nan)], axis=-1) if pad else y
    yy = yy.reshape(y.shape[:-1] + (-1, per))
    xb = x[::per]
    with np.errstate(invalid="ignore"):
        hi = np.nanmax(np.where(np.isnan(yy), -np.inf, yy), axis=-1)
        hi = np.where(np.isneginf(hi), np.nan, hi)
        if how == "max":
            return xb, hi
        lo = np.nanmin(np.where(np.isnan(yy), np.inf, yy), axis=-1)
        lo = np.where(np.isposinf(lo), np.nan, lo)
    xs = np.repeat(xb, 2)
    ys = np.stack([lo, hi], axis=-1).reshape(y.shape[:-1] + (-1,))
    return xs, ys


def _wrap(text: str, width: int = 30) -> str:
    return "\n".join(textwrap.wrap(text, width, break_long_words=True)) or text


def _names(groups: Sequence[str], members: Sequence[int]) -> str:
    if len(members) == 1:
        return groups[members[0]]
    if len(members) == 2:
        return f"{groups[members[0]]}, {groups[members[1]]}"
    return f"{groups[members[0]]} … {groups[members[-1]]}"


def _log_wanted(log: bool | None, values: np.ndarray, many: bool) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        return False
    span = positive.max() / positive.min()
    if log is None:  # auto: many groups whose values span three decades (layer decay)
        return many and span >= 1e3
    # A log axis over less than a decade shows nothing a linear one does not (momentum 0.85..0.95).
    return log and span >= 10.0


def _number(v: float, _pos: Any = None) -> str:
    return "0" if v == 0 else f"{v:.4g}"


class _Figure:
    """The figure's layout: per hyperparameter, a values panel and its difference panels."""

    def __init__(self, panels: list[tuple[str, str, int]], width: float, subtitle: str | None, dpi: int) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        # a difference panel grows with its legend (about two lines per backend)
        heights = [2.9 if kind == "values" else max(1.45, 0.45 + 0.36 * n) for _, kind, n in panels]
        fig_h = 1.25 + sum(heights) + (0.35 if subtitle else 0.0)
        try:
            self.fig = Figure(figsize=(width, fig_h), dpi=dpi, layout="constrained")
        except TypeError:  # matplotlib < 3.6
            self.fig = Figure(figsize=(width, fig_h), dpi=dpi, constrained_layout=True)
        FigureCanvasAgg(self.fig)
        self.axes = self.fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                                      gridspec_kw={"height_ratios": heights})[:, 0]


# --------------------------------------------------------------------------- the plot

def plot_trace(
    tr: Trace,
    path: str | os.PathLike[str],
    *,
    hypers: Sequence[str] | None = None,
    title: str | None = None,
    subtitle: str | None = None,
    log: bool | None = False,
    steps_per_epoch: int | None = None,
    marks: Iterable[int] = (),
    dpi: int = 130,
    overlay: Sequence[Trace] = (),
) -> Path:
    """Draw the trace (:func:`draw_trace`, same arguments) and save it as a PNG.

    Returns:
        The path written.

    Raises:
        BackendUnavailable: matplotlib is not installed.
        ConfigError: a name in ``hypers`` is not in the trace, or an overlaid trace
            covers other groups or updates.
    """
    fig = draw_trace(tr, hypers=hypers, title=title, subtitle=subtitle, log=log, steps_per_epoch=steps_per_epoch,
                     marks=marks, dpi=dpi, overlay=overlay)
    out = Path(path)
    fig.savefig(out, dpi=dpi, facecolor="white")
    return out


def draw_trace(
    tr: Trace,
    *,
    hypers: Sequence[str] | None = None,
    title: str | None = None,
    subtitle: str | None = None,
    log: bool | None = False,
    steps_per_epoch: int | None = None,
    marks: Iterable[int] = (),
    dpi: int = 130,
    overlay: Sequence[Trace] = (),
) -> Any:
    """One panel per hyperparameter, one line per group: a matplotlib ``Figure`` (Agg canvas, no pyplot).

    Args:
        tr: The trace (``optbridge.trace(plan, steps)``); with ``overlay``, the
            reference the others are compared with.
        hypers: Hyperparameters to draw, in order (default: all of the trace's).
        title: Figure title (for instance the config's file name).
        subtitle: A smaller line under the title (wrapped).
        log: Log-scale y axes (values <= 0 are left out of the line); panels whose
            positive values span less than a factor of 10 stay linear. ``None``:
            log only for many groups whose values span three decades.
        steps_per_epoch: Adds an ``epoch`` axis on top when given.
        marks: Updates to mark with faint vertical lines (phase boundaries).
        dpi: Resolution.
        overlay: Other backends' traces of the same groups and updates, drawn over
            ``tr`` (dashed, the applied values where measured), each with its
            difference to ``tr`` per update in panels below (:func:`differences`).

    Returns:
        The figure, laid out (constrained layout) at its final size.

    Raises:
        BackendUnavailable: matplotlib is not installed.
        ConfigError: a name in ``hypers`` is not in the trace, or an overlaid trace
            covers other groups or updates.
    """
    try:
        from matplotlib.ticker import FuncFormatter
    except ImportError as e:
        raise BackendUnavailable(f"plotting needs matplotlib ({e}): pip install matplotlib") from None

    names = list(tr) if hypers is None else list(hypers)
    for h in names:
        if h not in tr:
            raise ConfigError("hypers", f"must be traced hyperparameters ({', '.join(tr)})", h)
    if not names:
        raise ConfigError("hypers", "must name at least one hyperparameter", [])
    diffs = {h: [d for o in overlay for d in differences(tr, o, [h])] for h in names}

    panels: list[tuple[str, str, int]] = []
    for h in names:
        panels.append((h, "values", 0))
        for unit in ("relative", "ulps"):
            n = sum(d.unit == unit for d in diffs[h])
            if n:
                panels.append((h, unit, n))
    many = len(tr.groups) > MAX_LINES
    layout = _Figure(panels, 12.0 if (many or overlay) else 10.5 + (1.6 if len(tr.groups) > 12 else 0.0),
                     subtitle, dpi)
    fig, axes = layout.fig, layout.axes
    steps, start = tr.steps, tr.start
    x = np.arange(start, start + steps, dtype=np.float64)
    marks = sorted({int(m) for m in marks if start < int(m) < start + steps})

    for i, ((hyper, kind, _), ax) in enumerate(zip(panels, axes)):
        if kind == "values":
            _values_panel(ax, tr, hyper, x, log, overlay, first=i == 0)
        else:
            _difference_panel(ax, [d for d in diffs[hyper] if d.unit == kind], x, kind, overlay)
        for m in marks:
            ax.axvline(m, color="0.45", linewidth=0.8, linestyle=(0, (2, 3)), zorder=1)
        ax.grid(True, which="major", color="0.88", linewidth=0.8, zorder=0)
        ax.tick_params(labelsize=10)
        ax.set_xlim(start, max(start + steps - 1, start + 1))
        if kind == "values" and ax.get_yscale() != "log":
            ax.yaxis.set_major_formatter(FuncFormatter(_number))  # no "x10^-3" offset text to decode
        if i == 0 and steps_per_epoch:
            spe = float(steps_per_epoch)
            top = ax.secondary_xaxis("top", functions=(lambda s, spe=spe: s / spe, lambda e, spe=spe: e * spe))
            top.set_xlabel("epoch", fontsize=11)
            top.tick_params(labelsize=10)
    axes[-1].set_xlabel("update (optimizer step)" + (f", from {start}" if start else ""), fontsize=11)
    if marks:
        axes[-1].annotate("dotted lines: phase boundaries", xy=(1.0, 0.0), xycoords="axes fraction",
                          xytext=(0, -30), textcoords="offset points", ha="right", va="top",
                          fontsize=8.5, color="0.45")
    if title:
        fig.suptitle(title, fontsize=14, fontweight="bold")
    if subtitle:
        axes[0].set_title("\n".join(textwrap.wrap(subtitle, 110)), fontsize=9.5, color="0.3", loc="center")
    fig.canvas.draw()  # lay out now: the figure is final when returned
    return fig


def _values_panel(ax: Any, tr: Trace, hyper: str, x: np.ndarray, log: bool | None, overlay: Sequence[Trace],
                  *, first: bool) -> None:
    values = np.asarray(tr[hyper], dtype=np.float64)
    groups = tr.groups
    many = len(groups) > MAX_LINES
    use_log = _log_wanted(log, values, many)

    def line(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = _reduce(x, y)
        return xs, (np.where(ys > 0, ys, np.nan) if use_log else ys)

    shown: list[int]
    if not many:
        for g, name in enumerate(groups):
            same = next((groups[j] for j in range(g) if np.array_equal(values[j], values[g], equal_nan=True)), None)
            label = _wrap(name if same is None else f"{name} (= {same})")
            ax.plot(*line(values[g]), color=_COLORS[g % len(_COLORS)],
                    linestyle=_STYLES[(g // len(_COLORS) + g) % len(_STYLES)],
                    linewidth=(3.4 if overlay else 2.4 if g == 0 else 1.9), alpha=0.55 if overlay else 1.0,
                    label=label, zorder=3 + g)
        shown = list(range(len(groups)))
        group_legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9.5, frameon=False,
                                 title="group" if first else None, title_fontsize=10, handlelength=2.8,
                                 alignment="left")
    else:
        shown, group_legend, bar_ax = _many_groups(ax, values, groups, line, hyper, dimmed=bool(overlay))
    if overlay:
        _overlay_lines(ax, overlay, hyper, shown, line, group_legend, many, bar_ax if many else None)
    if use_log:
        ax.set_yscale("log")
        ax.grid(True, which="minor", axis="y", color="0.94", linewidth=0.5, zorder=0)
    ax.set_ylabel(hyper, fontsize=12)
    if not many and not overlay:  # (with an overlay, the backend legend takes that corner)
        finite = values[np.isfinite(values)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            text = f"{lo:.4g}" if lo == hi else f"range {lo:.4g} .. {hi:.4g}"
            ax.text(1.02, 0.0, text, transform=ax.transAxes, ha="left", va="bottom", fontsize=8.5, color="0.35")


def _many_groups(ax: Any, values: np.ndarray, groups: Sequence[str], line: Any, hyper: str,
                 *, dimmed: bool) -> tuple[list[int], Any, Any]:
    """Every group as a thin line coloured by its peak (colorbar); one legend entry per folded shape."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.lines import Line2D

    with np.errstate(invalid="ignore"):
        peak = np.nanmax(np.where(np.isfinite(values), np.abs(values), np.nan), axis=1)
    peak = np.where(np.isnan(peak), 0.0, peak)
    positive = peak[peak > 0]
    if positive.size and positive.max() / positive.min() >= 10:
        norm: Any = LogNorm(vmin=positive.min(), vmax=positive.max())
    else:
        norm = Normalize(vmin=float(peak.min()), vmax=float(peak.max()) if peak.max() > peak.min() else 1.0)
    cmap = colormaps["viridis"]
    shapes = sorted(fold_groups(values), key=len, reverse=True)  # stable: first-seen order among equals
    named = [m for m in shapes if len(m) > 1][: len(_STYLES) - 1]  # folded shapes, one line style each
    rest = sorted(g for m in shapes if not any(m is n for n in named) for g in m)
    style_of = {g: _STYLES[s] for s, members in enumerate(named) for g in members}
    style_of.update({g: _STYLES[len(named)] if named else "-" for g in rest})
    ramp = peak.max() > peak.min()  # all peaks equal: a colour ramp would say nothing
    order = np.argsort(peak, kind="stable")  # the largest on top
    for z, g in enumerate(order):
        if not ramp:
            color: Any = _COLORS[0]
        elif peak[g] > 0 or not isinstance(norm, LogNorm):
            color = cmap(norm(peak[g]))
        else:
            color = (0.6, 0.6, 0.6, 1.0)  # an all-zero group on a log colour scale
        ax.plot(*line(values[g]), color=color, linestyle=style_of[int(g)], linewidth=1.1,
                alpha=0.45 if dimmed else 0.95, zorder=3 + z * 1e-3)
    host, anchor = ax, (1.01, 1.0)
    if ramp:
        from matplotlib.cm import ScalarMappable
        # the colour bar sits just right of the axes, as an inset (so it never changes the panels' widths), with
        # its ticks and label on its left; the legends go on its right
        cax = ax.inset_axes((1.085, 0.0, 0.018, 1.0))
        bar = ax.figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        bar.set_label(f"peak {hyper} of the group", fontsize=9)
        bar.ax.tick_params(labelsize=8)
        bar.ax.yaxis.set_ticks_position("left")  # the right side of the bar holds the legends
        bar.ax.yaxis.set_label_position("left")
        host, anchor = bar.ax, (1.6, 1.0)
    handles, labels = [], []
    for s, members in enumerate(named):
        handles.append(Line2D([], [], color="0.25", linestyle=_STYLES[s], linewidth=1.4))
        equal = " (all equal)" if all(np.array_equal(values[m], values[members[0]], equal_nan=True)
                                      for m in members) else ""
        labels.append(_wrap(f"{len(members)} groups{equal}: {_names(groups, members)}", 26))
    if rest:
        handles.append(Line2D([], [], color="0.25", linestyle=style_of[rest[0]], linewidth=1.4))
        if len(rest) == 1:
            labels.append(_wrap(f"{groups[rest[0]]}: its own shape", 26))
        else:
            labels.append(_wrap(f"{len(rest)} groups, each its own shape: {_names(groups, rest)}", 26))
    title = f"{len(groups)} groups, {len(shapes)} shape{'s' if len(shapes) > 1 else ''}\n(equal up to the base)"
    if ramp:
        title += f"\ncolour: the group's peak {hyper}"
    # the overlay draws, per shape, its highest and lowest group
    shown = sorted({m for members in [*named, rest] if members for m in (
        members[int(np.argmax(peak[members]))], members[int(np.argmin(peak[members]))])})
    legend = host.legend(handles, labels, loc="upper left", bbox_to_anchor=anchor, fontsize=9, frameon=False,
                         title=title, title_fontsize=9, handlelength=2.8, borderaxespad=0.0, alignment="left")
    return shown, legend, host if ramp else None


def _overlay_lines(ax: Any, overlay: Sequence[Trace], hyper: str, shown: Sequence[int], line: Any,
                   group_legend: Any, many: bool, bar_ax: Any = None) -> None:
    """Each backend's values (applied where measured) as thin dashed lines, with a backend legend."""
    from matplotlib.lines import Line2D
    if many:
        handles = [Line2D([], [], color="#3b528b", linewidth=1.1)]
        labels = ["reference (coloured)"]
    else:
        handles = [Line2D([], [], color="0.55", linewidth=3.4, alpha=0.55)]
        labels = ["reference (thick)"]
    for b, other in enumerate(overlay):
        if hyper not in other:
            continue
        applied = hyper in other.applied
        y = np.asarray(other.applied[hyper] if applied else other[hyper], dtype=np.float64)
        dash = _BACKEND_DASHES[b % len(_BACKEND_DASHES)]
        for g in shown:
            color = "0.1" if many else _COLORS[g % len(_COLORS)]
            ax.plot(*line(y[g]), color=color, linestyle=dash, linewidth=1.2, zorder=50 + b)
        handles.append(Line2D([], [], color="0.1", linestyle=dash, linewidth=1.2))
        labels.append(_wrap(f"{other.backend}: {'applied' if applied else 'held'} {hyper}", 28))
    title = "backend" if not many else "backend (dashed: the highest\nand lowest group of each shape)"
    host, anchor = (ax, (1.01, 0.0)) if bar_ax is None else (bar_ax, (1.6, 0.0))
    if group_legend is not None:
        host.add_artist(group_legend)  # a second legend() call replaces the first otherwise
    host.legend(handles, labels, loc="lower left", bbox_to_anchor=anchor, fontsize=8.5, frameon=False,
                title=title, title_fontsize=9, handlelength=2.8, borderaxespad=0.0, alignment="left")


def _difference_panel(ax: Any, diffs: Sequence[Difference], x: np.ndarray, unit: str,
                      overlay: Sequence[Trace]) -> None:
    """The worst difference over groups per update, one line per backend, on a symlog axis (0 at the bottom)."""
    order = [o.backend for o in overlay]
    top = 0.0
    for d in diffs:
        b = order.index(d.backend)
        y = np.where(np.isfinite(d.per_step), d.per_step, np.nan)
        xs, ys = _reduce(x, y, "max")
        worst = "0 at every update" if d.worst == 0 else f"max {d.worst:.3g} (update {d.step}, {d.group})"
        label = f"{d.backend}, {d.source}: {worst}"
        if not np.all(np.isfinite(d.per_step)):
            label += f"; {int(np.sum(~np.isfinite(d.per_step)))} updates off the axis (0 or NaN on one side only)"
        ax.plot(xs, ys, color=_BACKEND_COLORS[b % len(_BACKEND_COLORS)], linewidth=1.3,
                linestyle=_BACKEND_DASHES[b % len(_BACKEND_DASHES)] if d.worst == 0 else "-",
                label=_wrap(label, 30), zorder=5 + b)
        if np.isfinite(d.worst):
            top = max(top, d.worst)
    if unit == "relative":
        ax.set_yscale("symlog", linthresh=1e-16, linscale=0.35)
        ax.set_ylim(-0.25e-16, max(top * 3, 1e-15))  # zero lines just above the bottom spine
        ax.set_ylabel("relative difference\n|b − ref| / |ref|\n(float64 backends)", fontsize=9)
    else:
        ax.set_yscale("symlog", linthresh=1.0, linscale=0.35)
        ax.set_ylim(-0.25, max(top * 1.6, 2.0))
        ax.set_ylabel("float32 ulps\nfrom f32(ref)\n(float32 backends)", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False, handlelength=2.2,
              title="difference to the reference", title_fontsize=9, borderaxespad=0.0)
