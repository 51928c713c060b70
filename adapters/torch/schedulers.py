"""Live torch schedulers, read: their torch-dialect documents, their step counts, and what they are.

:class:`Reader` writes each scheduler of the torch classes optbridge models (every
``torch.optim.lr_scheduler`` class and ``torch.optim.swa_utils.SWALR``) as the
torch-dialect dict :mod:`optbridge.dialects.torch` translates, recovering what torch
stores only in derived form (CyclicLR's step sizes, OneCycleLR's ``pct_start`` and
divisors, SWALR's starting lr). :func:`steps_done` says how far a scheduler was
stepped, :func:`pairs` normalises the ``scheduler`` argument, and :func:`kind`
sorts a scheduler into what :func:`~optbridge_adapters.torch.read.from_torch` can
model (``"modelled"``), only replay (``"replayed"``: a subclass or another class
with a ``step()``) or not take at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import lr_scheduler as S
from torch.optim.swa_utils import SWALR

from optbridge import ir
from optbridge.dialects import torch as dialect
from optbridge.errors import ConfigError
from optbridge.expr import Expr

from .lambdas import Lambda

__all__ = ["Reader", "steps_done", "pairs", "kind", "leaves", "CLASSES", "is_plateau", "PLACEHOLDER"]

#: The classes optbridge models, by name (the dialect's SCHEDULERS).
CLASSES: dict[str, type] = {name: getattr(S, name) for name in dialect.SCHEDULERS if hasattr(S, name)}
CLASSES["SWALR"] = SWALR

#: Source of the expression that stands for a plain Python function (unique per function).
PLACEHOLDER = "0 * epoch + {} * 0.0009765625"


def is_plateau(s: Any) -> bool:
    """Whether ``s`` steps with a metric (ReduceLROnPlateau or a subclass)."""
    return isinstance(s, S.ReduceLROnPlateau)


def kind(s: Any) -> str:
    """``"modelled"`` for the torch classes optbridge models, ``"replayed"`` for other schedulers with a
    ``step()`` (subclasses, other libraries' schedulers), ``"unknown"`` otherwise."""
    name = type(s).__name__
    if CLASSES.get(name) is type(s):
        if name in ("SequentialLR", "ChainedScheduler"):
            return "modelled" if all(kind(c) == "modelled" for c in s._schedulers) else "replayed"
        return "modelled"
    return "replayed" if callable(getattr(s, "step", None)) else "unknown"


def leaves(s: Any) -> list[Any]:
    """``s`` and every scheduler it holds (SequentialLR / ChainedScheduler children), depth first."""
    out = [s]
    for c in getattr(s, "_schedulers", None) or []:
        out += leaves(c)
    return out


def pairs(scheduler: Any, step_unit: str) -> list[tuple[Any, str]]:
    """``scheduler`` as ``[(scheduler, unit), ...]``: None, one scheduler, a list, or ``(scheduler, unit)`` pairs.

    Raises:
        ConfigError: a unit that is not ``iter``/``epoch``, or the same scheduler twice.
    """
    if scheduler is None:
        return []
    if not isinstance(scheduler, list | tuple):
        return [(scheduler, step_unit)]
    out = []
    for i, item in enumerate(scheduler):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
            ir.check_choice(f"scheduler[{i}][1]", item[1], ir.UNITS)
            out.append((item[0], item[1]))
        else:
            out.append((item, step_unit))
    if len({id(s) for s, _ in out}) != len(out):
        raise ConfigError("scheduler", "lists the same scheduler twice", [type(s).__name__ for s, _ in out])
    return out


def steps_done(s: Any, path: str) -> int | None:
    """How many times ``s`` was stepped (None for ReduceLROnPlateau, which keeps state instead).

    Raises:
        ConfigError: children of a ChainedScheduler stepped different numbers of times, or a
            CosineAnnealingWarmRestarts stepped with explicit (fractional) epochs.
    """
    if is_plateau(s):
        return None
    if isinstance(s, S.ChainedScheduler):
        ks = {steps_done(c, path) for c in s._schedulers}
        if len(ks) != 1:
            raise ConfigError(path, "holds schedulers stepped different numbers of times", sorted(ks, key=str))
        return ks.pop()
    if isinstance(s, SWALR):
        return int(s._step_count) - 1  # SWALR counts with _step_count
    k = int(s.last_epoch)
    if isinstance(s, S.CosineAnnealingWarmRestarts):
        start, length = ir.CosineRestarts(period=s.T_0, mult=s.T_mult).cycle_at(k)
        if s.T_cur != k - start or s.T_i != length:
            raise ConfigError(path, "was stepped with explicit (fractional) epochs: its T_cur/T_i do not follow "
                              "its step count", (s.T_cur, s.T_i, k))
    return k


def _recover(ok: Callable[[float], bool], guess: float) -> float | None:
    """A float near ``guess`` for which ``ok`` holds (torch stores only derived values)."""
    cands = [guess]
    lo = hi = guess
    for _ in range(4):
        lo, hi = math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)
        cands += [lo, hi]
    return next((c for c in cands if ok(c)), None)


class Reader:
    """Writes live schedulers of one optimizer as torch-dialect dicts.

    Attributes:
        functions: ``placeholder source -> Python function`` for every plain Python
            ``lr_lambda`` met (:class:`~optbridge_adapters.torch.Lambda` and
            :class:`optbridge.expr.Expr` callables are written as their expressions).
        momentum_cycled: A CyclicLR/OneCycleLR cycles momentum (or beta1).
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.opt = optimizer
        self.functions: dict[str, Any] = {}
        self.momentum_cycled = False

    def fn(self, f: Any) -> str:
        if isinstance(f, Lambda):
            return f.expr
        if isinstance(f, Expr):
            return f.source
        for src, g in self.functions.items():
            if g is f:
                return src
        src = PLACEHOLDER.format(len(self.functions) + 1)
        self.functions[src] = f
        return src

    def check(self, s: Any, path: str) -> str:
        name = type(s).__name__
        if CLASSES.get(name) is not type(s):
            raise ConfigError(path, "must be a torch scheduler class optbridge models (" + ", ".join(CLASSES)
                              + "); subclasses and other schedulers are replayed instead, which needs total_steps",
                              name)
        if getattr(s, "optimizer", None) is not self.opt:
            raise ConfigError(path, "drives another optimizer than the one given", name)
        return name

    def doc(self, s: Any, path: str) -> dict[str, Any]:
        """The torch-dialect dict of scheduler ``s``."""
        name = self.check(s, path)
        d: dict[str, Any] = {"type": name}
        if name in ("LambdaLR", "MultiplicativeLR"):
            d["lr_lambda"] = [self.fn(f) for f in s.lr_lambdas]
        elif name == "StepLR":
            d.update(step_size=s.step_size, gamma=s.gamma)
        elif name == "MultiStepLR":
            d.update(milestones=sorted(s.milestones.elements()), gamma=s.gamma)
        elif name == "ConstantLR":
            d.update(factor=s.factor, total_iters=s.total_iters)
        elif name == "LinearLR":
            d.update(start_factor=s.start_factor, end_factor=s.end_factor, total_iters=s.total_iters)
        elif name == "ExponentialLR":
            d.update(gamma=s.gamma)
        elif name == "PolynomialLR":
            d.update(total_iters=s.total_iters, power=s.power)
        elif name == "CosineAnnealingLR":
            d.update(T_max=s.T_max, eta_min=s.eta_min)
        elif name == "CosineAnnealingWarmRestarts":
            d.update(T_0=s.T_0, T_mult=s.T_mult, eta_min=s.eta_min)
        elif name == "CyclicLR":
            d.update(self._cyclic(s, path))
        elif name == "OneCycleLR":
            d.update(self._one_cycle(s, path))
        elif name == "SWALR":
            d.update(swa_lr=[float(g["swa_lr"]) for g in self.opt.param_groups], anneal_epochs=s.anneal_epochs,
                     anneal_strategy=s._anneal_strategy)
        elif name == "SequentialLR":
            d.update(schedulers=[self.doc(c, f"{path}.schedulers[{i}]") for i, c in enumerate(s._schedulers)],
                     milestones=list(s._milestones))
        elif name == "ChainedScheduler":
            d.update(schedulers=[self.doc(c, f"{path}.schedulers[{i}]") for i, c in enumerate(s._schedulers)])
        elif name == "ReduceLROnPlateau":
            d.update(mode=s.mode, factor=s.factor, patience=s.patience, threshold=s.threshold,
                     threshold_mode=s.threshold_mode, cooldown=s.cooldown, min_lr=self._min_lrs(s, path), eps=s.eps)
        return d

    def _min_lrs(self, s: Any, path: str) -> list[float]:
        n = len(self.opt.param_groups)
        if len(s.min_lrs) == n:
            return [float(x) for x in s.min_lrs]
        if s.default_min_lr is not None:  # torch re-expands a scalar min_lr to the groups added since
            return [float(s.default_min_lr)] * n
        raise ConfigError(f"{path}.min_lr", f"has {len(s.min_lrs)} values for {n} param groups: torch raises "
                          "RuntimeError at the next reduction (a group was added after the scheduler was built "
                          "with a list of min_lrs); set scheduler.min_lrs to one value per group", list(s.min_lrs))

    def _cyclic(self, s: Any, path: str) -> dict[str, Any]:
        if s._scale_fn_custom is not None:
            raise ConfigError(f"{path}.scale_fn", "is a custom Python function: only the modes triangular, "
                              "triangular2 and exp_range are portable", s._scale_fn_custom)
        total, ratio = s.total_size, s.step_ratio
        up = round(total * ratio)
        down = round(total) - up
        if up < 1 or down < 1 or float(up) + float(down) != total or float(up) / total != ratio:
            raise ConfigError(f"{path}.step_size_up", "cannot be recovered as integers from total_size and "
                              "step_ratio", (total, ratio))
        d: dict[str, Any] = dict(base_lr=[float(x) for x in s.base_lrs], max_lr=[float(x) for x in s.max_lrs],
                                 step_size_up=up, step_size_down=down, mode=s.mode, gamma=s.gamma,
                                 cycle_momentum=s.cycle_momentum)
        if s.cycle_momentum:
            self.momentum_cycled = True
            d.update(base_momentum=list(s.base_momentums), max_momentum=list(s.max_momentums))
        return d

    def _one_cycle(self, s: Any, path: str) -> dict[str, Any]:
        N = s.total_steps
        phases = s._schedule_phases
        groups = self.opt.param_groups
        e1 = phases[0]["end_step"]
        pct = _recover(lambda p: float(p * N) - 1 == e1 and (len(phases) == 2 or float(2 * p * N) - 2 ==
                                                              phases[1]["end_step"]), (e1 + 1) / N)
        if pct is None:
            raise ConfigError(f"{path}.pct_start", "cannot be recovered from the scheduler's phases", e1)
        peaks = [float(g["max_lr"]) for g in groups]
        initial = [float(g["initial_lr"]) for g in groups]
        final = [float(g["min_lr"]) for g in groups]
        div = _recover(lambda d: all(p / d == i for p, i in zip(peaks, initial, strict=True)), peaks[0] / initial[0]
                       if initial[0] else 25.0)
        fdiv = _recover(lambda d: all(i / d == f for i, f in zip(initial, final, strict=True)), initial[0] / final[0]
                        if final[0] else 1e4)
        if div is None or fdiv is None:
            raise ConfigError(f"{path}.div_factor", "cannot be recovered from the groups' max_lr, initial_lr and "
                              "min_lr", (peaks, initial, final))
        d: dict[str, Any] = dict(max_lr=peaks, total_steps=N, pct_start=pct, anneal_strategy=_anneal(s, path),
                                 three_phase=len(phases) == 3, div_factor=div, final_div_factor=fdiv,
                                 cycle_momentum=s.cycle_momentum)
        if s.cycle_momentum:
            self.momentum_cycled = True
            d.update(base_momentum=[float(g["base_momentum"]) for g in groups],
                     max_momentum=[float(g["max_momentum"]) for g in groups])
        return d


def _anneal(s: Any, path: str) -> str:
    """OneCycleLR's anneal strategy; legacy states (before ``_anneal_func_type``) keep the function."""
    t = getattr(s, "_anneal_func_type", None)
    if t in ("cos", "linear"):
        return str(t)
    f = getattr(s, "anneal_func", None)
    f = getattr(f, "__func__", f)
    for name in ("cos", "linear"):
        if f is getattr(S.OneCycleLR, f"_annealing_{name}", None) or getattr(f, "__name__", "") == f"_annealing_{name}":
            return name
    raise ConfigError(f"{path}.anneal_strategy", "cannot be read: the scheduler has neither _anneal_func_type "
                      "nor one of torch's anneal functions", t if t is not None else f)
