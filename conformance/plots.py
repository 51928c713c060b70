"""PNGs of failing and expected-failing cases: every backend's trace over the reference, and the difference.

One figure per case. For each hyperparameter that diverges somewhere (at most
three), a row of three panels:

1. the values: the reference (thick grey) and each backend that ran, per group;
2. the difference ``backend - reference`` over the whole run;
3. a zoom on the first divergent step (marked), values of that group.

matplotlib is drawn through its Agg canvas (no pyplot, no display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .runner import Result, Run

__all__ = ["plot_failures", "plot_case"]

_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
_STYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))
_PLOTTED = ("fail", "xfail", "xpass")


def plot_failures(run: Run, out: Path) -> list[Path]:
    """A PNG per case with a failing, expected-failing or unexpectedly passing backend."""
    cases = []
    for c in run.cases:
        rs = [run.results[(c.id, b)] for b in run.backend_names]
        if any(r.status in _PLOTTED for r in rs):
            cases.append((c, rs))
    if not cases:
        return []
    import matplotlib  # noqa: F401  (ImportError here: the caller notes that plots are skipped)
    out.mkdir(parents=True, exist_ok=True)
    return [plot_case(c, rs, out / f"{c.id}.png") for c, rs in cases]


def plot_case(case: Any, results: list[Result], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = [r for r in results if r.plot and r.backend != "reference"]  # the reference is the grey line
    hypers: list[str] = []
    for r in drawn:
        for s in r.series:
            if not s.ok and s.hyper not in hypers:
                hypers.append(s.hyper)
    if not hypers:
        hypers = [h for h in (drawn[0].plot if drawn else {}) if h != "groups"][:1] or ["lr"]
    hypers = hypers[:3]
    fig = Figure(figsize=(15, 3.6 * len(hypers) + 0.9), dpi=100)
    FigureCanvasAgg(fig)
    status = ", ".join(f"{r.backend}: {r.status}" for r in results if r.status not in ("skip", "unavailable"))
    fig.suptitle(f"{case.id}  ({status})", fontsize=11, x=0.01, ha="left")
    for row, hyper in enumerate(hypers):
        axv = fig.add_subplot(len(hypers), 3, 3 * row + 1)
        axd = fig.add_subplot(len(hypers), 3, 3 * row + 2)
        axz = fig.add_subplot(len(hypers), 3, 3 * row + 3)
        ref_done = False
        within: list[str] = []
        first: tuple[int, str, Result] | None = None
        for bi, r in enumerate(drawn):
            p = r.plot.get(hyper) if r.plot else None
            if p is None:
                continue
            groups = r.plot["groups"]
            idx, ref, got = p["idx"], p["ref"], p["got"]
            if not ref_done:
                for gi, g in enumerate(groups):
                    axv.plot(idx, ref[gi], color="0.75", lw=3.5, label="reference" if gi == 0 else None)
                ref_done = True
            color = _COLORS[bi % len(_COLORS)]
            diverges = any(not s.ok for s in r.series if s.hyper == hyper)
            for gi, g in enumerate(groups):
                style = _STYLES[gi % len(_STYLES)]
                axv.plot(idx, got[gi], color=color, ls=style, lw=1.1,
                         label=f"{r.backend} [{r.status}]" if gi == 0 else None)
                if diverges:
                    axd.plot(idx, got[gi] - ref[gi], color=color, ls=style, lw=1.0, label=f"{r.backend} {g}")
            if not diverges:
                within.append(r.backend)
            bad = [s for s in r.series if s.hyper == hyper and not s.ok]
            if bad:
                s = min(bad, key=lambda s: s.first_step)
                if first is None or s.first_step < first[0]:
                    first = (s.first_step, s.group, r)
        axv.set_title(f"{hyper}: values (line style = group)", fontsize=9)
        axd.set_title(f"{hyper}: backend - reference", fontsize=9)
        axd.axhline(0.0, color="0.5", lw=0.6)
        if within:
            axd.text(0.01, 0.01, "within tolerance (not drawn): " + ", ".join(within), transform=axd.transAxes,
                     fontsize=7, color="0.3", va="bottom")
        if first is not None:
            k, gname, r0 = first
            axd.axvline(k, color="red", lw=0.8, ls=":")
            axz.set_title(f"zoom: first divergence, step {k}, group {gname}", fontsize=9)
            for bi, r in enumerate(drawn):
                p = r.plot.get(hyper) if r.plot else None
                if p is None or gname not in r.plot["groups"]:
                    continue
                gi = r.plot["groups"].index(gname)
                sel = (p["idx"] >= k - 40) & (p["idx"] <= k + 40)
                if bi == 0 or not axz.lines:
                    axz.plot(p["idx"][sel], p["ref"][gi][sel], color="0.75", lw=3.5, marker="o", ms=3,
                             label="reference")
                axz.plot(p["idx"][sel], p["got"][gi][sel], color=_COLORS[bi % len(_COLORS)], lw=1.1, marker=".",
                         ms=4, label=r.backend)
            axz.axvline(k, color="red", lw=0.8, ls=":")
        else:
            axz.set_title("no divergent step (expected deviation passed?)", fontsize=9)
        for ax in (axv, axd, axz):
            ax.set_xlabel("optimizer update", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax, size, ncol in ((axv, 7, 1), (axd, 6, 2), (axz, 7, 1)):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=size, loc="best", ncol=ncol)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
