"""Plot a :class:`~optbridge.tracing.Trace` to a PNG (matplotlib, headless).

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
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .tracing import Trace

__all__ = ["plot_trace"]

# Colour-blind friendly, high-contrast (Okabe-Ito, with black moved last).
_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
_STYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))


def plot_trace(
    tr: Trace,
    path: str | os.PathLike[str],
    *,
    hypers: Sequence[str] | None = None,
    title: str | None = None,
    subtitle: str | None = None,
    log: bool = False,
    steps_per_epoch: int | None = None,
    marks: Iterable[int] = (),
    dpi: int = 130,
) -> Path:
    """Draw one subplot per hyperparameter, one line per group, and save a PNG.

    Args:
        tr: The trace (``optbridge.trace(plan, steps)``).
        path: Where to write the image (the format follows the suffix; ``.png``).
        hypers: Hyperparameters to draw, in order (default: all of the trace's).
        title: Figure title (for instance the config's file name).
        subtitle: A smaller line under the title (wrapped).
        log: Log-scale y axes (values <= 0 are left out of the line); subplots
            whose positive values span less than a factor of 10 stay linear.
        steps_per_epoch: Adds an ``epoch`` axis on top when given.
        marks: Steps to mark with faint vertical lines (phase boundaries).
        dpi: Resolution.

    Returns:
        The path written.

    Raises:
        BackendUnavailable: matplotlib is not installed.
        ConfigError: a name in ``hypers`` is not in the trace.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError as e:
        raise BackendUnavailable(f"plotting needs matplotlib ({e}): pip install matplotlib") from None
    import numpy as np

    names = list(tr) if hypers is None else list(hypers)
    for h in names:
        if h not in tr:
            raise ConfigError("hypers", f"must be traced hyperparameters ({', '.join(tr)})", h)
    if not names:
        raise ConfigError("hypers", "must name at least one hyperparameter", [])

    n = len(names)
    steps = tr.steps
    x = np.arange(steps)
    groups = tr.groups
    legend_cols = 1 if len(groups) <= 12 else 2
    fig_w = 10.5 + (1.6 if legend_cols == 2 else 0.0)
    fig_h = 1.25 + 2.9 * n + (0.35 if subtitle else 0.0)
    try:
        fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, layout="constrained")
    except TypeError:  # matplotlib < 3.6
        fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    marks = sorted({int(m) for m in marks if 0 < int(m) < steps})

    for i, (ax, hyper) in enumerate(zip(axes, names)):
        values = np.asarray(tr[hyper], dtype=np.float64)
        positive = values[values > 0]
        # A log axis over less than a decade shows nothing a linear one does not (momentum 0.85..0.95).
        use_log = log and positive.size > 0 and positive.max() / positive.min() >= 10.0
        for g, name in enumerate(groups):
            y = values[g]
            same = next((groups[j] for j in range(g) if np.array_equal(values[j], y)), None)
            label = name if same is None else f"{name} (= {same})"
            if use_log:
                y = np.where(y > 0, y, np.nan)
            ax.plot(x, y, color=_COLORS[g % len(_COLORS)], linestyle=_STYLES[(g // len(_COLORS) + g) % len(_STYLES)],
                    linewidth=2.4 if g == 0 else 1.9, label=label, zorder=3 + g)
        for m in marks:
            ax.axvline(m, color="0.45", linewidth=0.8, linestyle=(0, (2, 3)), zorder=1)
        if use_log:
            ax.set_yscale("log")
        ax.set_ylabel(hyper, fontsize=12)
        ax.grid(True, which="major", color="0.88", linewidth=0.8, zorder=0)
        if use_log:
            ax.grid(True, which="minor", axis="y", color="0.94", linewidth=0.5, zorder=0)
        ax.tick_params(labelsize=10)
        ax.set_xlim(0, max(steps - 1, 1))
        if not use_log:  # plain numbers (0.0008, 1e-05): no "x10^-3" offset text to decode
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: "0" if v == 0 else f"{v:.4g}"))
        lo, hi = np.nanmin(values), np.nanmax(values)
        _annotate_range(ax, hyper, lo, hi)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=10, frameon=False,
                  title="group" if i == 0 else None, title_fontsize=10, ncol=legend_cols,
                  handlelength=2.8)
        if i == 0 and steps_per_epoch:
            spe = float(steps_per_epoch)
            top = ax.secondary_xaxis("top", functions=(lambda s: s / spe, lambda e: e * spe))
            top.set_xlabel("epoch", fontsize=11)
            top.tick_params(labelsize=10)
    axes[-1].set_xlabel("step (optimizer update)", fontsize=11)
    if marks:
        axes[-1].annotate("dotted lines: phase boundaries", xy=(1.0, 0.0), xycoords="axes fraction",
                          xytext=(0, -30), textcoords="offset points", ha="right", va="top",
                          fontsize=8.5, color="0.45")
    if title:
        fig.suptitle(title, fontsize=14, fontweight="bold")
    if subtitle:
        axes[0].set_title("\n".join(textwrap.wrap(subtitle, 110)), fontsize=9.5, color="0.3", loc="center")
    out = Path(path)
    fig.savefig(out, dpi=dpi, facecolor="white")
    return out


def _annotate_range(ax, hyper: str, lo: float, hi: float) -> None:
    """A small ``min .. max`` note in the corner: exact numbers without reading the axis."""
    if not (lo == lo and hi == hi):  # all NaN
        return
    text = f"{lo:.4g}" if lo == hi else f"range {lo:.4g} .. {hi:.4g}"
    ax.text(1.02, 0.0, text, transform=ax.transAxes, ha="left", va="bottom", fontsize=8.5, color="0.35")
