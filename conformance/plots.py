"""PNGs of a run: every backend overlaid on the reference, a difference panel, and the first divergence.

One figure per case (failing and expected-failing cases; every case with
``optbridge conform --plot``). For each hyperparameter (at most three, divergent
ones first) a row of three panels:

1. values: the reference (thick grey) and every backend that ran, per group; with
   many groups one per schedule shape is drawn (:func:`optbridge.plot.fold_groups`),
   the divergent group always, and the panel says how many;
2. difference: per backend, the worst difference over all groups at each update,
   in the units of ``optbridge plot --backend`` (:func:`optbridge.plot.differences`:
   float32 ulps from the reference rounded to float32, or relative for float64
   backends), so it stays readable with 150 groups;
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
    """Indices of the groups drawn: all when few; else one per schedule shape (``optbridge.plot.fold_groups``:
    the same schedule up to its base), its largest, at most :data:`MAX_GROUPS`, and the divergent group."""
    if len(groups) <= MAX_GROUPS:
        return list(range(len(groups)))
    from optbridge.plot import fold_groups
    rows = np.asarray(ref, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        peak = np.nan_to_num(np.nanmax(np.abs(rows), axis=1), nan=0.0)
    shapes = sorted(fold_groups(rows), key=len, reverse=True)
    chosen = [groups.index(first)] if first in groups else []
    for members in shapes:
        if len(chosen) >= MAX_GROUPS:
            break
        top = members[int(np.argmax(peak[members]))]
        if top not in chosen:
            chosen.append(top)
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
        for ax, size in ((axv, 7), (axz, 7)):  # the difference panel makes its own legend
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
    values = np.concatenate([np.ravel((r.plot or {})[hyper]["ref"]) for r in drawn if hyper in (r.plot or {})] or
                            [np.zeros(1)])
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size and positive.max() / positive.min() >= 1e3 and not (values < 0).any():
        ax.set_yscale("log")  # a ramp over decades (an lr range test, a decay to 1e-6)
    what = "parameters (first of each group)" if hyper == "params" else f"{hyper}: values"
    more = (f"; {len(shown)} of {len(groups)} groups: one per schedule shape" if groups and len(shown) < len(groups)
            else "")
    ax.set_title(f"{what} (line style = group{more})", fontsize=9)


def _differences(ax: Any, drawn: list[Result], hyper: str) -> None:
    """Per backend, the worst difference over all groups at each sampled update, in ``optbridge plot``'s units
    (:func:`optbridge.plot.differences`: float32 ulps from f32(ref) for float32 backends, relative otherwise);
    relative ones on a second axis."""
    from optbridge.plot import differences
    from optbridge.tracing import Trace
    axes: dict[str, Any] = {"ulps": ax, "relative": None}
    top = {"ulps": 0.0, "relative": 0.0}
    for bi, r in enumerate(drawn):
        p = (r.plot or {}).get(hyper)
        if p is None:
            continue
        if "peak_ulps" in p:  # a trajectory: every parameter, in ulps of its peak (the bound's unit)
            unit, per_step = "ulps", np.asarray(p["peak_ulps"], dtype=np.float64)
            worst_v = float(np.nanmax(per_step)) if per_step.size else 0.0
            name = "ulps of the parameter's peak"
        else:
            groups = tuple((r.plot or {})["groups"])
            got = np.asarray(p["got"], dtype=np.float64)
            ref_tr = Trace(groups, {hyper: np.asarray(p["ref"], dtype=np.float64)}, "reference")
            tr = Trace(groups, {hyper: got}, r.backend, applied={hyper: got} if p.get("source") == "applied" else {})
            (d,) = differences(ref_tr, tr, [hyper])
            unit, per_step, worst_v, name = d.unit, d.per_step, d.worst, d.unit
        if axes[unit] is None:
            axes[unit] = ax.twinx()
        y = np.where(np.isfinite(per_step), per_step, np.nan)
        if np.isfinite(worst_v):
            top[unit] = max(top[unit], worst_v)
        worst = "0 everywhere" if worst_v == 0 else f"max {worst_v:.3g}"
        axes[unit].plot(p["idx"], y, color=_COLORS[bi % len(_COLORS)], lw=1.1,
                        ls="-" if unit == "ulps" else "--", label=f"{r.backend}: {worst} {name}")
    ax.set_yscale("symlog", linthresh=1.0, linscale=0.35)
    ax.set_ylim(-0.25, max(top["ulps"] * 1.6, 2.0))  # 0 just above the bottom spine
    ax.set_ylabel("float32 ulps of each parameter's peak" if hyper == "params" else
                  "float32 ulps from f32(ref) (solid)", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    rel = axes["relative"]
    if rel is not None:
        rel.set_yscale("symlog", linthresh=1e-16, linscale=0.35)
        rel.set_ylim(-0.25e-16, max(top["relative"] * 3, 1e-15))
        rel.set_ylabel("relative |b - ref| / |ref| (dashed)", fontsize=8)
        rel.tick_params(labelsize=7)
        h2, l2 = rel.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper left")
    ax.set_title(f"{hyper}: worst difference over all groups, per update", fontsize=9)


def _zoom(ax: Any, drawn: list[Result], hyper: str, div: tuple[Result, Any] | None) -> None:
    if div is None or div[1].hyper != hyper:
        ax.set_axis_off()
        text = ("no divergent update: every backend drawn is within its tolerance" if div is None
                else f"the first divergence is in {div[1].hyper} (its row)")
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="0.3", transform=ax.transAxes, wrap=True)
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
