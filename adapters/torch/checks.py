"""What :func:`~optbridge_adapters.torch.read.from_torch` checks and warns about once a plan is built.

* :func:`check_bases` -- a SequentialLR restarts its schedulers from their own
  ``base_lrs``: they must be the plan's base lrs;
* :func:`check_current` -- the plan's values for the next update must be what the
  optimizer's groups hold (a scheduler stepped with an explicit epoch or an lr edited
  by hand is replayed instead, see :class:`NotModelled`);
* :func:`warn_horizon` -- a :class:`HorizonWarning` where ``total_steps`` runs a
  CosineAnnealingLR past ``T_max`` (periodic) or a PolynomialLR past ``total_iters``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.optim import lr_scheduler as S

from optbridge.errors import ConfigError, OptbridgeWarning
from optbridge.plan import Plan, hyper_base

from .drivers import read_hyper
from .schedulers import leaves

__all__ = ["FromTorchWarning", "ReplayedWarning", "SampledLambdaWarning", "HorizonWarning", "NotModelled",
           "check_bases", "check_current", "warn_horizon"]


class FromTorchWarning(OptbridgeWarning):
    """Base class of the warnings :func:`from_torch` gives."""


class ReplayedWarning(FromTorchWarning):
    """The schedulers were replayed over ``total_steps`` (the plan is defined for those updates only)."""


class SampledLambdaWarning(ReplayedWarning):
    """Plain Python ``lr_lambda`` functions were replayed (they are not portable as code)."""


class HorizonWarning(FromTorchWarning):
    """``total_steps`` runs past where an imported schedule is defined (the plan follows torch there)."""


class NotModelled(Exception):
    """The modelled path cannot say what torch does (the message says why): replay instead."""


def _path(entries: list[tuple[Any, str]], i: int) -> str:
    return "scheduler" if len(entries) == 1 else f"scheduler[{i}]"


# --------------------------------------------------------------------------- checks and warnings

def check_bases(entries: list[tuple[Any, str]], plan: Plan) -> None:
    """SequentialLR restarts its schedulers from their own base_lrs: they must be the plan's base lrs.

    torch takes a scheduler's base from ``initial_lr`` when it is constructed, so
    schedulers built after a OneCycleLR start from its ``max_lr / div_factor`` (what
    the dialect assumes), and ones built before it from the group's lr (what
    ``to_torch`` builds for a plan whose base differs): the plan cannot say both.
    """
    groups = [g for g in plan.groups if g.frozen != "exclude"]
    want = [hyper_base(plan, g, "lr") for g in groups]
    for i, (s, _) in enumerate(entries):
        if not isinstance(s, S.SequentialLR):
            continue
        for j, c in enumerate(s._schedulers):
            for leaf in leaves(c):
                if isinstance(leaf, S.CyclicLR | S.OneCycleLR | S.ChainedScheduler):
                    continue
                _check_base(entries, i, j, leaf, want)


def _check_base(entries: list[tuple[Any, str]], i: int, j: int, c: Any, want: list[float]) -> None:
    got = [float(b) for b in c.base_lrs]
    if got != want:
        raise ConfigError(f"{_path(entries, i)}.schedulers[{j}]", f"restarts from base lrs {got}, not the groups' "
                          f"base lrs {want} (torch takes a scheduler's base from initial_lr when it is constructed): "
                          "a plan has one base per group", type(c).__name__)


def check_current(plan: Plan, optimizer: torch.optim.Optimizer) -> None:
    """The imported plan's values for the next update must be what the optimizer's groups hold.

    A float32 tensor lr is compared as float32 (what the group holds); the reference
    trace rounds it so (``lr_dtype``).
    """
    from optbridge.tracing import reference_trace
    tr = reference_trace(plan, 1)
    for i, g in enumerate(optimizer.param_groups):
        for h in tr:
            want, got = float(tr[h][i, 0]), read_hyper(g, h)
            if not (abs(want - got) <= 1e-9 * abs(got)):
                raise NotModelled(f"param_groups[{i}].{h}: the imported plan gives {want!r} for the next update but "
                                  f"the optimizer holds {got!r}: the scheduler's state does not follow its schedule "
                                  "(stepped with an explicit epoch, or the value edited by hand?)")


def warn_horizon(entries: list[tuple[Any, str]], offsets: list[tuple[int, int]], step_unit: str, spe: int,
                  total: int) -> None:
    """Warn where ``total`` updates run a CosineAnnealingLR past T_max or a PolynomialLR past total_iters."""
    for i, ((s, unit), (k, r)) in enumerate(zip(entries, offsets, strict=True)):
        per = spe if unit == "epoch" and step_unit == "iter" else 1
        last = k + (total - 1 + r) // per  # the scheduler's counter at the last update
        for path, leaf, lo, hi in _windows(s, _path(entries, i), 0, None):
            end = last if hi is None else min(last, hi - 1)
            local = end - lo
            if isinstance(leaf, S.CosineAnnealingLR) and local > leaf.T_max:
                what = (f"torch's CosineAnnealingLR is periodic past T_max={leaf.T_max} (the lr climbs back "
                        "towards the base lr)")
            elif isinstance(leaf, S.PolynomialLR) and local > leaf.total_iters:
                what = f"torch's PolynomialLR holds lr 0 past total_iters={leaf.total_iters}"
            else:
                continue
            warnings.warn(f"from_torch: total_steps={total} runs {path} to its step {local}: {what}; the plan "
                          "follows torch", HorizonWarning, stacklevel=3)


def _windows(s: Any, path: str, lo: int, hi: int | None) -> list[tuple[str, Any, int, int | None]]:
    """Leaves of ``s`` with the window of the parent's counter they run in."""
    if isinstance(s, S.SequentialLR):
        out = []
        starts = [0, *s._milestones]
        for j, c in enumerate(s._schedulers):
            a = lo + starts[j]
            b = lo + starts[j + 1] if j + 1 < len(starts) else hi
            out += _windows(c, f"{path}.schedulers[{j}]", a, b)
        return out
    if isinstance(s, S.ChainedScheduler):
        return [w for j, c in enumerate(s._schedulers) for w in _windows(c, f"{path}.schedulers[{j}]", lo, hi)]
    return [(path, s, lo, hi)]
