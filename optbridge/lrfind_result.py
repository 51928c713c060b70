"""The result of an lr range test: the curve, where and why it stopped, the suggestions.

Written by :func:`optbridge.lrfind.run`. ``to_json`` / ``to_csv`` write it as data
(non-finite numbers as JSON ``null`` / CSV ``nan``); ``plot`` draws the loss
against the reference group's lr on a log axis with the suggestions marked
(matplotlib, imported on first use, Agg canvas: no display needed).
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BackendUnavailable, ConfigError
from .lrcurve import Suggestion, window

if TYPE_CHECKING:  # pragma: no cover
    from .lrfind_settings import RangeTest
    from .plan import Plan

__all__ = ["LRFindResult"]

_MARKS = {"steep": ("#D55E00", "o"), "valley": ("#009E73", "s"), "minimum": ("#CC79A7", "D")}


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True, eq=False)
class LRFindResult:
    """What an lr range test measured.

    Attributes:
        groups: Trained group names (rows of ``lrs``).
        reference: The group whose lr runs ``start_lr .. end_lr`` (the largest lr).
        lrs: ``(groups, n)`` float64: the lr update ``k`` of each group used, read from
            the framework before the update (as it holds it: float32 in MindSpore).
        losses: ``(n,)`` the raw loss of update ``k`` (mean over the accumulated passes),
            computed before update ``k`` is applied.
        smoothed: ``(n,)`` the bias-corrected smoothed loss.
        stop: ``"completed"``, ``"diverged"`` or ``"nonfinite"``.
        stop_step: The update at which it stopped (not taken), or None.
        stop_text: Why it stopped, in words.
        suggestions: ``steep``, ``valley``, ``minimum`` (each with its explanation).
        warnings: What makes the curve hard to read (a flat curve, dropped schedules).
        settings: The :class:`~optbridge.lrfind_settings.RangeTest`.
        backend: ``"torch"``, ``"mindspore"`` or ``"megengine"``.
        plan: The ramp plan: ``optbridge.trace(result.plan, result.n)["lr"]`` is the
            planned ``lrs``.
        fidelity: How the ramp reached the framework.
    """

    groups: tuple[str, ...]
    reference: str
    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    stop: str
    stop_step: int | None
    stop_text: str
    suggestions: tuple[Suggestion, ...]
    warnings: tuple[str, ...]
    settings: RangeTest
    backend: str
    plan: Plan
    fidelity: tuple[Any, ...] = field(default=())

    @property
    def n(self) -> int:
        """Recorded updates."""
        return int(self.losses.size)

    @property
    def lr(self) -> np.ndarray:
        """The reference group's lrs, ``(n,)``."""
        return self.lrs[self.groups.index(self.reference)]

    def suggestion(self, name: str) -> Suggestion:
        """The suggestion called ``name`` (``"steep"``, ``"valley"``, ``"minimum"``)."""
        for s in self.suggestions:
            if s.name == name:
                return s
        raise ConfigError("name", "must be one of the suggestions " + ", ".join(s.name for s in self.suggestions)
                          if self.suggestions else "names no suggestion: the curve had too few points", name)

    def __str__(self) -> str:
        lines = [f"lr range test on {self.backend}: {self.settings.mode} ramp {self.settings.start_lr:g} -> "
                 f"{self.settings.end_lr:g}, {self.n} of {self.settings.steps} updates, reference group "
                 f"{self.reference!r}", self.stop_text]
        for s in self.suggestions:
            flag = "" if s.reliable else "  [unreliable]"
            lines.append(f"  {s.name:<8} lr {s.lr:.3g}{flag}: {s.text}")
            if len(self.groups) > 1:
                lines.append("           per group: " + ", ".join(f"{g} {v:.3g}" for g, v in s.group_lrs.items()))
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    # ------------------------------------------------------------------ data

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists of floats, None for non-finite numbers)."""
        s = self.settings
        return {
            "backend": self.backend,
            "settings": {"start_lr": s.start_lr, "end_lr": s.end_lr, "steps": s.steps, "mode": s.mode,
                         "smooth": s.smooth, "diverge": s.diverge, "accumulate": s.accumulate},
            "groups": list(self.groups),
            "reference": self.reference,
            "stop": {"reason": self.stop, "step": self.stop_step, "text": self.stop_text},
            "suggestions": [{"name": x.name, "lr": x.lr, "step": x.step, "loss": _num(x.loss),
                             "group_lrs": x.group_lrs, "reliable": x.reliable, "text": x.text}
                            for x in self.suggestions],
            "warnings": list(self.warnings),
            "lrs": {g: [_num(v) for v in self.lrs[i].tolist()] for i, g in enumerate(self.groups)},
            "losses": [_num(v) for v in self.losses.tolist()],
            "smoothed": [_num(v) for v in self.smoothed.tolist()],
            "fidelity": [str(f) for f in self.fidelity],
        }

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The result as JSON (also written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """One row per update: ``step, lr_<group>..., loss, smoothed`` (full float64 precision)."""
        out = Path(path)
        with out.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["step", *(f"lr_{g}" for g in self.groups), "loss", "smoothed"])
            for k in range(self.n):
                w.writerow([k, *(repr(float(v)) for v in self.lrs[:, k]), repr(float(self.losses[k])),
                            repr(float(self.smoothed[k]))])
        return out

    # ------------------------------------------------------------------ plot

    def plot(self, path: str | os.PathLike[str], *, title: str | None = None, dpi: int = 130) -> Path:
        """Loss against the reference group's lr (log axis), suggestions and the stop marked; save a PNG.

        Raises:
            BackendUnavailable: matplotlib is not installed.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as e:
            raise BackendUnavailable(f"plotting needs matplotlib ({e}): pip install matplotlib") from None
        x, raw, sm = self.lr, self.losses, self.smoothed
        fig = Figure(figsize=(12.0, 6.2), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ok = np.isfinite(raw)
        ax.plot(x[ok], raw[ok], color="0.72", linewidth=1.0, marker=".", markersize=3, label="loss (raw)", zorder=2)
        ax.plot(x, sm, color="#0072B2", linewidth=2.4, label=f"smoothed (smooth={self.settings.smooth:g})", zorder=3)
        lo, hi = window(self.n, self.settings.steps, sm)
        if hi > lo:
            ax.axvspan(x[lo], x[hi - 1], color="#56B4E9", alpha=0.08, zorder=0,
                       label="window the suggestions read")
            span = np.concatenate([sm[lo:hi], raw[lo:hi]])
            span = span[np.isfinite(span)]
            top, bottom = float(np.percentile(span, 97)), float(np.min(span))
            pad = 0.15 * (top - bottom) if top > bottom else 0.1 * abs(top) + 1e-12
            ax.set_ylim(bottom - pad, top + 3 * pad)  # the divergence runs off the top: the window stays readable
        for s in self.suggestions:
            color, marker = _MARKS.get(s.name, ("0.2", "o"))
            at = float(np.interp(math.log(s.lr), np.log(x[lo:hi]), sm[lo:hi])) if hi > lo else s.loss
            face = color if s.reliable else "white"
            ax.plot([s.lr], [at], linestyle="none", marker=marker, markersize=10, markerfacecolor=face,
                    markeredgecolor=color, markeredgewidth=2, zorder=5,
                    label=f"{'minimum / 10' if s.name == 'minimum' else s.name}: {s.lr:.2e}"
                    + ("" if s.reliable else " (unreliable)"))
            if s.name == "minimum":
                ax.plot([x[s.step]], [s.loss], linestyle="none", marker="v", markersize=7, color=color, zorder=5,
                        label="lowest smoothed loss")
            ax.axvline(s.lr, color=color, linewidth=0.9, linestyle=(0, (3, 3)), zorder=1)
        if self.stop_step is not None:
            ax.axvline(x[self.stop_step], color="#E69F00" if self.stop == "diverged" else "#000000", linewidth=1.4,
                       zorder=1, label=f"stopped ({self.stop}) at {x[self.stop_step]:.2e}")
        ax.set_xscale("log")
        ax.set_xlabel(f"learning rate of group {self.reference!r}" if len(self.groups) > 1 else "learning rate",
                      fontsize=11)
        ax.set_ylabel("loss", fontsize=11)
        ax.grid(True, which="major", color="0.88", linewidth=0.8, zorder=0)
        ax.grid(True, which="minor", axis="x", color="0.95", linewidth=0.5, zorder=0)
        ax.tick_params(labelsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9.5, frameon=False)
        sub = [self.stop_text] + [f"warning: {w}" for w in self.warnings[:1]]
        ax.set_title("\n".join(textwrap.wrap("  ".join(sub), 120)), fontsize=9, color="0.3")
        fig.suptitle(title or f"lr range test ({self.backend}, {self.settings.mode} ramp, {self.n} updates)",
                     fontsize=13, fontweight="bold")
        out = Path(path)
        fig.savefig(out, dpi=dpi, facecolor="white")
        return out
