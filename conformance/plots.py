"""PNGs of a run: every backend overlaid on the reference, a difference panel, and the first divergence.

One figure per case (failing and expected-failing cases; every case with
``optbridge conform --plot``). For each hyperparameter (at most three, divergent
ones first) a row of three panels:

1. values: the reference (thick grey) and every backend that ran, per group; with
   many groups only a few are drawn (the divergent group first, then the most
   distinct ones) and the panel says how many;
2. difference: per backend, the largest ``|backend - reference|`` over all groups,
   relative to the series' peak (log scale; exact agreement sits on the floor), so
   it stays readable with 150 groups;
3. the first divergence, zoomed: the record :meth:`Result.first_divergence` gives,
   the same step, group, hyperparameter, expected and got as the terminal table and
   report.json (its text is in the panel title).

matplotlib is drawn through its Agg canvas (no pyplot, no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .results import RAN, Result, Run
from .sections import fmt

__all__ = ["plot_cases", "plot_case", "figure", "first_divergence", "MAX_GROUPS"]

_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
_STYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))
_PLOTTED = ("fail", "xfail", "xpass")
#: Groups drawn in the values panel at most.
MAX_GROUPS = 6
#: Floor of the difference panel (relative to the peak): exact agreement is drawn here.
_FLOOR = 1e-18


def plot_cases(run: Run, out: Path, *, every_case: bool = False) -> list[Path]:
    """A PNG per case with a failing / expected-failing / unexpectedly passing backend (``every_case``: every case
    where some backend ran)."""
    todo = []
    for c in run.cases:
        rs = [run.results[(c.id, b)] for b in run.backend_names]
        if any(r.status in _PLOTTED for r in rs) or (every_case and any(r.plot for r in rs)):
            todo.append((c, rs))
    if not todo:
        return []
    import matplotlib  # noqa: F401  (ImportError here: the caller notes that plots are skipped)
    out.mkdir(parents=True, exist_ok=True)
    return [plot_case(c, rs, out / f"{c.id}.png") for c, rs in todo]


def first_divergence(results: list[Result]) -> tuple[Result, Any] | None:
    """The earliest first divergence over the backends (ties: the first backend in report order)."""
    best: tuple[Result, Any] | None = None
    for r in results:
        fd = r.first_divergence()
        if fd is not None and r.plot and (best is None or (fd.first_step or 0) < (best[1].first_step or 0)):
            best = (r, fd)
    return best


def _shown_groups(groups: list[str], ref: np.ndarray, first: str | None) -> list[int]:
    """Indices of the groups drawn: all when few; else the divergent one, then the most distinct series."""
    if len(groups) <= MAX_GROUPS:
        return list(range(len(groups)))
    chosen = [groups.index(first)] if first in groups else []
    rows = np.nan_to_num(ref, nan=0.0)
    peak = float(np.max(np.abs(rows))) or 1.0
    norm = rows / peak
    while len(chosen) < MAX_GROUPS:
        if not chosen:
            chosen.append(0)
            continue
        dist = np.min(np.stack([np.max(np.abs(norm - norm[i]), axis=1) for i in chosen]), axis=0)
        dist[chosen] = -1.0
        chosen.append(int(np.argmax(dist)))
    return sorted(chosen)


def plot_case(case: Any, results: list[Result], path: Path) -> Path:
    """Draw :func:`figure` of one case into the PNG ``path``."""
    fig = figure(case, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def figure(case: Any, results: list[Result]) -> Any:
    """The matplotlib Figure of one case (Agg canvas attached)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = [r for r in results if r.plot and r.backend != "reference" and r.status in RAN]
    div = first_divergence(drawn)
    hypers: list[str] = [div[1].hyper] if div is not None else []
    for r in drawn:
        for s in r.series:
            if not s.ok and s.hyper not in hypers:
                hypers.append(s.hyper)
    for r in drawn:
        hypers += [h for h in (r.plot or {}) if h != "groups" and h not in hypers]
    hypers = hypers[:3] or ["lr"]
    fig = Figure(figsize=(16, 3.8 * len(hypers) + 1.0), dpi=100)
    FigureCanvasAgg(fig)
    status = ", ".join(_status(r) for r in results if r.status not in ("skip", "unavailable"))
    fig.suptitle(f"{case.id}  ({status})", fontsize=11, x=0.01, ha="left")
    for row, hyper in enumerate(hypers):
        axv = fig.add_subplot(len(hypers), 3, 3 * row + 1)
        axd = fig.add_subplot(len(hypers), 3, 3 * row + 2)
        axz = fig.add_subplot(len(hypers), 3, 3 * row + 3)
        first_group = div[1].group if div is not None and div[1].hyper == hyper else None
        _values(axv, drawn, hyper, first_group)
        _differences(axd, drawn, hyper)
        _zoom(axz, drawn, hyper, div)
        for ax in (axv, axd, axz):
            ax.set_xlabel("optimizer update", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax, size in ((axv, 7), (axd, 7), (axz, 7)):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=size, loc="best")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def _status(r: Result) -> str:
    fd = r.first_divergence()
    where = "" if fd is None else f" (first divergence: step {fd.first_step}, group {fd.group}, {fd.hyper})"
    return f"{r.backend}: {r.status}{where}"


def _values(ax: Any, drawn: list[Result], hyper: str, first_group: str | None) -> None:
    ref_done = False
    shown: list[int] = []
    groups: list[str] = []
    for bi, r in enumerate(drawn):
        p = (r.plot or {}).get(hyper)
        if p is None:
            continue
        groups = list((r.plot or {})["groups"])
        if not ref_done:
            shown = _shown_groups(groups, np.asarray(p["ref"]), first_group)
            label = "torch (oracle)" if hyper == "params" else "reference"
            for j, gi in enumerate(shown):
                ax.plot(p["idx"], p["ref"][gi], color="0.78", lw=3.5, label=label if j == 0 else None)
            ref_done = True
        color = _COLORS[bi % len(_COLORS)]
        for j, gi in enumerate(shown):
            ax.plot(p["idx"], p["got"][gi], color=color, ls=_STYLES[j % len(_STYLES)], lw=1.1,
                    label=f"{r.backend} [{r.status}]" if j == 0 else None)
    what = "parameters (first of each group)" if hyper == "params" else f"{hyper}: values"
    more = f"; {len(shown)} of {len(groups)} groups shown" if groups and len(shown) < len(groups) else ""
    ax.set_title(f"{what} (line style = group{more})", fontsize=9)


def _differences(ax: Any, drawn: list[Result], hyper: str) -> None:
    any_line = False
    for bi, r in enumerate(drawn):
        p = (r.plot or {}).get(hyper)
        if p is None:
            continue
        ref, got = np.asarray(p["ref"], dtype=np.float64), np.asarray(p["got"], dtype=np.float64)
        with np.errstate(all="ignore"):
            peak = np.nanmax(np.abs(ref), axis=1, keepdims=True)
            rel = np.abs(got - ref) / np.where(peak > 0, peak, 1.0)
            worst = np.nanmax(np.where(np.isnan(rel), np.inf, rel), axis=0)
        ax.plot(p["idx"], np.maximum(worst, _FLOOR), color=_COLORS[bi % len(_COLORS)], lw=1.0, label=r.backend)
        any_line = True
    if any_line:
        ax.set_yscale("log")
        ax.axhline(2.0 ** -24, color="0.5", lw=0.6, ls="--")
        ax.text(0.01, 2.0 ** -24, " float32 half-ulp", transform=ax.get_yaxis_transform(), fontsize=6, color="0.4",
                va="bottom")
    ax.set_title(f"{hyper}: max over groups |backend - reference| / peak (floor = equal)", fontsize=9)


def _zoom(ax: Any, drawn: list[Result], hyper: str, div: tuple[Result, Any] | None) -> None:
    if div is None or div[1].hyper != hyper:
        ax.set_title("no divergent step" if div is None else f"first divergence is in {div[1].hyper}", fontsize=9)
        return
    r0, fd = div
    k, gname = int(fd.first_step or 0), fd.group
    ax.set_title(f"first divergence: {r0.backend}, step {k}, group {gname}, {hyper}\nexpected {fmt(fd.expected)}, "
                 f"got {fmt(fd.got)}", fontsize=8)
    ref_done = False
    for bi, r in enumerate(drawn):
        p = (r.plot or {}).get(hyper)
        if p is None or gname not in (r.plot or {})["groups"]:
            continue
        gi = list((r.plot or {})["groups"]).index(gname)
        sel = (p["idx"] >= k - 40) & (p["idx"] <= k + 40)
        if not ref_done:
            ax.plot(p["idx"][sel], p["ref"][gi][sel], color="0.78", lw=3.5, marker="o", ms=3,
                    label="torch (oracle)" if hyper == "params" else "reference")
            ref_done = True
        ax.plot(p["idx"][sel], p["got"][gi][sel], color=_COLORS[bi % len(_COLORS)], lw=1.1, marker=".", ms=4,
                label=r.backend)
    if fd.expected is not None and fd.got is not None:
        ax.plot([k], [fd.got], marker="x", color="red", ms=8, mew=2)
    ax.axvline(k, color="red", lw=0.8, ls=":")
