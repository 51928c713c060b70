"""The loss curve of an lr range test: smoothing, the divergence stop, and lr suggestions.

Pure numpy over float64 arrays; no framework. :class:`LossMonitor` is fed one raw
loss per optimizer update and says when to stop; :func:`suggest` reads the
smoothed curve against the reference group's lrs.

The algorithms are the published ones, written down here once:

* **Smoothing** is fastai's ``AvgSmoothLoss`` (fastai/learner.py) and the seed
  recipe's ``find_lr``: an exponential moving average started at 0 and divided by
  ``1 - smooth ** n`` (bias correction), so the first value is the first loss.
  fastai computes it as ``lerp(loss, avg, smooth)`` on float32 tensors; here it is
  ``smooth * avg + (1 - smooth) * loss`` in float64. torch-lr-finder 0.2.2 instead
  starts the average at the first loss with weight ``smooth_f = 1 - smooth`` and no
  bias correction (``docs/lr_find.md`` shows the difference).
* **Divergence**: stop when the smoothed loss exceeds ``diverge`` times the best
  smoothed loss so far (fastai: 4, torch-lr-finder: 5), or when a loss is NaN or
  infinite (fastai and torch-lr-finder keep going on NaN: a comparison with NaN is
  false). The ratio test needs a positive best loss; while the best smoothed loss is
  <= 0 only the NaN/inf rule applies.
* **Suggestions** (fastai/callback/schedule.py ``steep``, ``valley``, ``minimum``;
  torch-lr-finder ``LRFinder.plot(suggest_lr=True)``) are read on the window fastai
  uses: ``smoothed[steps // 10 : -5]``, cut before the first NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LossMonitor", "Suggestion", "suggest", "window", "noise", "SKIP_END"]

#: Points left out at the end of the curve (fastai's ``[:-5]``, torch-lr-finder's ``skip_end=5``).
SKIP_END = 5


class LossMonitor:
    """Bias-corrected exponential smoothing of the raw losses and the divergence stop.

    Args:
        smooth: The average's weight on the past, in ``[0, 1)`` (fastai's ``beta``,
            0.98; 0 disables smoothing).
        diverge: Stop when the smoothed loss exceeds ``diverge`` times the best one
            (None: never on the ratio, only on NaN/inf).
    """

    def __init__(self, smooth: float, diverge: float | None) -> None:
        self.smooth, self.diverge = float(smooth), diverge
        self._avg, self._n = 0.0, 0
        self.best = math.inf

    def add(self, loss: float) -> tuple[float, str | None]:
        """Take the raw loss of the next update.

        Returns:
            ``(smoothed, stop)``: the smoothed loss (NaN once a loss is not finite)
            and ``None``, ``"nonfinite"`` or ``"diverged"``.
        """
        self._n += 1
        if not math.isfinite(loss):
            return math.nan, "nonfinite"
        self._avg = self.smooth * self._avg + (1.0 - self.smooth) * loss
        value = self._avg / (1.0 - self.smooth ** self._n)
        if value < self.best:
            self.best = value
        if self.diverge is not None and self.best > 0 and value > self.diverge * self.best:
            return value, "diverged"
        return value, None


@dataclass(frozen=True)
class Suggestion:
    """One suggested lr, with where it came from.

    Attributes:
        name: ``"steep"``, ``"valley"`` or ``"minimum"``.
        lr: The suggested lr of the reference group.
        step: The update whose point the rule picked (``minimum``: the lowest point;
            its lr is ten times ``lr``).
        loss: The smoothed loss at ``step``.
        group_lrs: The suggested lr of every group (the ramp keeps the groups' ratios).
        text: What the rule measured, in one or two sentences.
        reliable: False when the curve's shape makes this rule misleading (see ``text``).
    """

    name: str
    lr: float
    step: int
    loss: float
    group_lrs: dict[str, float]
    text: str
    reliable: bool = True


def window(n: int, steps: int, smoothed: np.ndarray) -> tuple[int, int]:
    """The points suggestions are read on: ``[steps // 10, n - SKIP_END)``, cut before the first NaN."""
    lo, hi = steps // 10, n - SKIP_END
    bad = np.flatnonzero(~np.isfinite(smoothed[lo:hi])) if hi > lo else np.empty(0, dtype=np.int64)
    if bad.size:
        hi = lo + int(bad[0])
    return lo, max(hi, lo)


def _steep(w: np.ndarray, lrs: np.ndarray, log_uniform: bool) -> tuple[int, float]:
    """Index of the steepest descent (central differences) and its slope per decade of lr.

    On an exponential ramp the points are equally spaced in log lr by construction, so
    the index axis is used (torch-lr-finder's ``np.gradient(losses).argmin()``, exact);
    a linear ramp uses ``log10(lr)`` as the axis.
    """
    x = np.log10(lrs)
    g = np.gradient(w) if log_uniform else np.gradient(w, x)
    i = int(np.argmin(g))
    slope = float(np.gradient(w, x)[i])
    return i, slope


def _valley(w: np.ndarray) -> tuple[int, int, int]:
    """fastai's ``valley``: the longest decreasing run and a point ~halfway along it.

    A vectorised transcription of fastai/callback/schedule.py ``valley`` (O(n^2) like
    the original), including its bookkeeping: ``max_start`` is taken when ``lds[i]``
    first exceeds the longest run so far, and is ``max_end - lds`` (one before the
    run's first point). Returns ``(idx, max_start, max_end)``.
    """
    n = w.size
    lds = np.ones(n, dtype=np.int64)
    max_start = max_end = 0
    for i in range(1, n):
        cand = np.where(w[i] < w[:i], lds[:i] + 1, 1)
        running = np.maximum.accumulate(cand)
        lds[i] = running[-1]
        if running[-1] > lds[max_end]:
            first = int(np.argmax(running > lds[max_end]))
            max_end, max_start = i, i - int(running[first])
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return idx % n, max_start, max_end  # idx -1 (a run of 2 from the first point) is lrs[-1] in fastai too


def noise(raw: np.ndarray) -> float:
    """The batch-to-batch noise of the raw loss: a robust standard deviation of successive differences / sqrt(2).

    ``1.4826 * median(|diff|)`` estimates the standard deviation of the differences
    (Gaussian noise) and ignores the few huge ones at the divergence.
    """
    d = np.diff(raw[np.isfinite(raw)])
    return float(1.4826 * np.median(np.abs(d)) / np.sqrt(2.0)) if d.size else 0.0


def suggest(lrs: np.ndarray, ref: int, raw: np.ndarray, smoothed: np.ndarray, *, steps: int, log_uniform: bool,
            groups: tuple[str, ...]) -> tuple[tuple[Suggestion, ...], tuple[str, ...]]:
    """Suggested lrs of reference group ``ref`` read off the smoothed curve, and warnings.

    A curve whose smoothed loss falls by no more than the raw loss's batch-to-batch
    :func:`noise` over the whole window is *flat* -- typical of a model that is already
    (partly) trained: ``steep`` and ``valley`` then mark noise and are flagged
    unreliable, and a warning says what to do instead.

    Args:
        lrs: ``(groups, n)`` lrs of the recorded updates.
        ref: Row of the reference group (the group with the largest lr).
        raw: ``(n,)`` raw losses.
        smoothed: ``(n,)`` smoothed losses.
        steps: The planned number of updates (the window starts at ``steps // 10``).
        log_uniform: True for an exponential ramp (equal spacing in log lr).
        groups: Group names (rows of ``lrs``).

    Returns:
        ``(suggestions, warnings)``; no suggestions when the window holds fewer than
        3 points (a warning says so).
    """
    n = smoothed.size
    lo, hi = window(n, steps, smoothed)
    if hi - lo < 3:
        return (), (f"only {hi - lo} usable points between update {lo} (steps // 10) and {SKIP_END} before the end "
                    f"of the {n} recorded: too few to suggest an lr (run more steps or start lower)",)
    w, x = smoothed[lo:hi], lrs[ref, lo:hi]
    start, low = float(w[0]), float(np.min(w))
    spread = noise(raw[lo:hi])
    flat = start - low <= spread
    warnings: list[str] = []
    if flat:
        warnings.append(
            f"flat curve: the smoothed loss falls by only {start - low:.3g} over the window (from {start:.4g} at lr "
            f"{x[0]:.3g}), no more than the batch-to-batch noise of the loss ({spread:.3g}); typical of a model "
            f"that is already (partly) trained: steep and valley then mark noise. Keep the current lr, or stay "
            f"well below the lr where the loss starts to rise")

    def point(name: str, i: int, lr: float, text: str, reliable: bool = True) -> Suggestion:
        k = lo + i
        scale = lr / lrs[ref, k] if lrs[ref, k] else 0.0
        return Suggestion(name, float(lr), k, float(w[i]), {g: float(lrs[j, k] * scale) for j, g in enumerate(groups)},
                          text, reliable)

    out = []
    i, slope = _steep(w, x, log_uniform)
    out.append(point("steep", i, float(x[i]),
                     f"steepest descent: the smoothed loss falls fastest at lr {x[i]:.3g} ({slope:.3g} per decade of "
                     f"lr, central differences; torch-lr-finder's suggestion, fastai's steep)"
                     + ("; unreliable here: the curve is flat, so the steepest point is noise" if flat else ""),
                     not flat and slope < 0))
    i, a, b = _valley(w)
    out.append(point("valley", i, float(x[i]),
                     f"valley (fastai): the longest run over which the smoothed loss keeps falling spans lr "
                     f"{x[max(a, 0)]:.3g} to {x[b]:.3g}; the suggestion sits about halfway along it"
                     + ("; unreliable here: on a flat curve the longest falling run is noise" if flat else ""),
                     not flat and b > a + 1))
    i = int(np.argmin(w))
    out.append(point("minimum", i, float(x[i]) / 10,
                     f"minimum / 10 (fastai): the smoothed loss is lowest at lr {x[i]:.3g}; a tenth of it stays clear "
                     f"of the edge where training blows up"
                     + ("; on a flat curve the lowest point is where noise dipped, so this is only a rough upper "
                        "bound" if flat else "")))
    return tuple(out), tuple(warnings)
