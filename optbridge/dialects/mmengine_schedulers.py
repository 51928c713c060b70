"""MMEngine ``param_scheduler`` lists as IR schedules (part of the MMEngine dialect).

MMEngine 0.10's schedulers (``mmengine/optim/scheduler/param_scheduler.py``) are
*chainable*: each ``step()`` inside its window ``[begin, end)`` reads the current
value of the group's hyperparameter and writes a new one, so schedulers on the
same hyperparameter compose in the order their steps run. This module turns such
a list into one IR tree per (hyperparameter, group base value):

* every scheduler becomes a **window node** on its own clock: ``1`` before
  ``begin``, its closed form on the local counter ``k = step - begin`` inside,
  and its last value held after ``end`` (MMEngine stops touching the value);
* **multiplicative** schedulers (Constant, Linear, Step, MultiStep, Exponential,
  Poly with ``eta_min == 0``, CosineAnnealing with ``eta_min == 0`` inside
  ``T_max``) multiply: the tree is the :class:`~optbridge.ir.Chain` of windows;
* **affine** (Poly / CosineAnnealing with ``eta_min`` or ``eta_min_ratio``, or a
  cosine past ``T_max``) and **overwriting** ones (OneCycle, CosineRestart) are
  exact only while no other scheduler changes the value during their steps; then
  their window is their closed form divided by the product ``P`` the other
  schedulers hold at that time (``eta_min`` becomes ``eta_min / P``), so the chain
  still multiplies to MMEngine's value. An interleaving that is not a product is a
  :class:`~optbridge.errors.ConfigError` naming both schedulers;
* ReduceOnPlateau must be the only scheduler of its hyperparameter.

Clocks (``mmengine/hooks/param_scheduler_hook.py``): iteration-based schedulers
step after every iteration, epoch-based ones after each epoch's last iteration
(after the iteration-based ones), and every scheduler steps once at construction,
in list order. ``convert_to_iter_based`` scales ``begin``/``end`` and the
per-class counts by the epoch length exactly as ``build_iter_from_epoch`` does.

All values come from :mod:`optbridge.evaluate`; this module only decides the
tree (held values and the products ``P`` are evaluated there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from ..errors import ConfigError
from ..ir import check_bool, check_choice, check_int, check_real
from ..serialize import expect_mapping
from ._common import REQUIRED, check_keywords, join, suggest

__all__ = ["INF", "SCHEDULER_TYPES", "FAMILY_ARGS", "Clock", "parse_schedulers", "compose"]

#: MMEngine's default ``end`` (``INF = int(1e9)`` in param_scheduler.py).
INF = 10**9

#: Keyword arguments (besides the common ones) of each scheduler family, with MMEngine 0.10.7's defaults.
FAMILY_ARGS: dict[str, dict[str, Any]] = {
    "Constant": {"factor": 1.0 / 3},
    "Linear": {"start_factor": 1.0 / 3, "end_factor": 1.0},
    "Step": {"step_size": REQUIRED, "gamma": 0.1},
    "MultiStep": {"milestones": REQUIRED, "gamma": 0.1},
    "Exponential": {"gamma": REQUIRED},
    "CosineAnnealing": {"T_max": None, "eta_min": None, "eta_min_ratio": None},
    "Poly": {"eta_min": 0, "power": 1.0},
    "OneCycle": {"eta_max": 0, "total_steps": None, "pct_start": 0.3, "anneal_strategy": "cos", "div_factor": 25.0,
                 "final_div_factor": 1e4, "three_phase": False},
    "CosineRestart": {"periods": REQUIRED, "restart_weights": (1,), "eta_min": None, "eta_min_ratio": None},
    "ReduceOnPlateau": {"monitor": "loss", "rule": "less", "factor": 0.1, "patience": 10, "threshold": 1e-4,
                        "threshold_rule": "rel", "cooldown": 0, "min_value": 0.0, "eps": 1e-8},
}
_COMMON = {"begin": 0, "end": None, "last_step": -1, "by_epoch": True, "verbose": False,
           "convert_to_iter_based": False}
_LR = ("Constant", "CosineAnnealing", "Exponential", "Linear", "MultiStep", "Step", "Poly", "OneCycle",
       "CosineRestart", "ReduceOnPlateau")
_MOMENTUM = ("Constant", "CosineAnnealing", "Exponential", "Linear", "MultiStep", "Step", "Poly", "CosineRestart",
             "ReduceOnPlateau")

#: Every scheduler MMEngine 0.10.7 registers: type name -> (family, param_name; None = the ``param_name`` argument).
SCHEDULER_TYPES: dict[str, tuple[str, str | None]] = {
    **{f"{f}LR": (f, "lr") for f in _LR},
    **{f"{f}Momentum": (f, "momentum") for f in _MOMENTUM},
    **{f"{f}ParamScheduler": (f, None) for f in FAMILY_ARGS},
}

_MULTIPLICATIVE = "mult"
_AFFINE = "affine"        # reads the current value at its step 1 and moves it towards an absolute value
_OVERWRITE = "overwrite"  # writes absolute values (OneCycle, CosineRestart)
_PLATEAU = "plateau"


@dataclass(frozen=True)
class Clock:
    """How the document's steps relate to optimizer updates.

    Attributes:
        unit: The plan's step unit: ``"iter"`` (one step per optimizer update) or
            ``"epoch"`` (no iteration-based scheduler and no epoch length given).
        steps_per_epoch: Iterations per epoch (None when unknown).
        max_epochs: ``train_cfg.max_epochs`` (default ``end`` of epoch-based schedulers).
        max_iters: ``train_cfg.max_iters`` (default ``end`` of iteration-based schedulers).
        iter_loop: The train loop is an ``IterBasedTrainLoop``.
        val_interval: ``train_cfg.val_interval`` (plateau schedulers need 1).
    """

    unit: str = "iter"
    steps_per_epoch: int | None = None
    max_epochs: int | None = None
    max_iters: int | None = None
    iter_loop: bool = False
    val_interval: int = 1


@dataclass
class Sched:
    """One parsed scheduler after ``convert_to_iter_based``: its window on its own clock."""

    index: int
    path: str
    cls: str
    family: str
    hyper: str
    unit: str
    begin: int
    end: int
    args: dict[str, Any]
    kind: str = _MULTIPLICATIVE
    scale: int = 1  # update indices per step of this scheduler's clock

    @property
    def last(self) -> int:
        """The last local step inside the window (MMEngine's ``total_iters = end - begin - 1``)."""
        return self.end - self.begin - 1

    @property
    def phase(self) -> int:
        return 0 if self.unit == "iter" else 1

    def key(self, k: int) -> tuple[int, int, int]:
        """Order of step ``k`` among all schedulers' steps: update index, iter-before-epoch, list order."""
        tau = (self.begin + k) * self.scale
        return (tau, 0 if tau == 0 else self.phase, self.index)

    def first_after(self, key: tuple[int, int, int]) -> int:
        t0 = self.begin * self.scale
        if key[0] < t0:
            return 0
        k = -(-(key[0] - t0) // self.scale)
        if self.key(k) <= key:
            k += 1
        return k

    def last_before(self, key: tuple[int, int, int]) -> int:
        t0 = self.begin * self.scale
        if key[0] < t0:
            return -1
        k = (key[0] - t0) // self.scale
        if self.key(k) >= key:
            k -= 1
        return k

    def update_index(self, k: int) -> int:
        """First optimizer update that sees step ``k``."""
        return (self.begin + k) * self.scale

    # ------------------------------------------------------------------ when the value changes

    @property
    def last_change(self) -> int:
        """The last local step that can change the value (later steps of the window keep it)."""
        if self.family == "CosineRestart":
            return min(self.last, sum(self.args["periods"]) - 1)
        return self.last

    def first_change(self, lo: int, hi: int) -> int | None:
        """The first local step ``k`` with ``lo <= k <= hi`` that changes the value (None if none does)."""
        lo, hi = max(lo, 0), min(hi, self.last_change)
        if lo > hi:
            return None
        a, f = self.args, self.family
        first: int | None = lo if f in ("OneCycle", "CosineRestart") else (max(lo, 1) if max(lo, 1) <= hi else None)
        if f == "Linear":
            if lo == 0 and a["start_factor"] != 1.0:
                return 0
            first = first if a["end_factor"] != a["start_factor"] else None
        elif f == "Constant":
            if a["factor"] == 1.0:
                return None
            first = 0 if lo == 0 else (self.last if self.last > 0 and lo <= self.last <= hi else None)
        elif f == "Step":
            m = -(-max(lo, 1) // a["step_size"]) * a["step_size"]
            first = m if a["gamma"] != 1.0 and m <= hi else None
        elif f == "MultiStep":
            first = next((m for m in a["milestones"] if lo <= m <= hi), None) if a["gamma"] != 1.0 else None
        elif f == "Exponential":
            first = first if a["gamma"] != 1.0 else None
        return first

    def sensitive(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Keys between which (exclusive) no other scheduler may change the value."""
        first = 1 if self.kind == _AFFINE else 0
        return self.key(first), self.key(self.last_change)


# --------------------------------------------------------------------------- parsing

def parse_schedulers(raw: Any, path: str, clock: Clock, *, momentum_hyper: str | None, hypers: Sequence[str],
                     n_groups: int | None) -> list[Sched]:
    """Parse ``param_scheduler`` (one dict or a list) into :class:`Sched` records.

    Args:
        raw: The document's ``param_scheduler``.
        path: Its config path.
        clock: Epoch length and train-loop defaults.
        momentum_hyper: The IR name momentum schedulers drive (``"momentum"`` or ``"beta1"``), None when the
            optimizer has neither (MMEngine: "optimizer must support momentum").
        hypers: Hyperparameters the optimizer's groups hold (for ``param_name``).
        n_groups: Number of param groups MMEngine builds, when known (for per-group lists).
    """
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else [raw]
    return [_parse_one(s, f"{path}[{i}]" if isinstance(raw, list) else path, i, clock, momentum_hyper, hypers,
                       n_groups) for i, s in enumerate(items)]


def _parse_one(spec: Any, path: str, index: int, clock: Clock, momentum_hyper: str | None, hypers: Sequence[str],
               n_groups: int | None) -> Sched:
    spec = expect_mapping(path, spec)
    if "type" not in spec:
        raise ConfigError(join(path, "type"), "is required (an MMEngine scheduler such as LinearLR)", None,
                          show_value=False)
    cls = spec["type"]
    name = cls[len("mmengine."):] if isinstance(cls, str) and cls.startswith("mmengine.") else cls
    if not isinstance(name, str) or name not in SCHEDULER_TYPES:
        why = " (only MMEngine's own schedulers are supported)" if isinstance(name, str) and "." in name else ""
        raise ConfigError(join(path, "type"), "is not an MMEngine 0.10 scheduler" + suggest(name, SCHEDULER_TYPES)
                          + why, cls)
    family, param = SCHEDULER_TYPES[name]
    signature = dict(FAMILY_ARGS[family], **_COMMON)
    if param is None:
        signature = {"param_name": REQUIRED, **signature}
    given = {k: v for k, v in spec.items() if k not in ("type", "_scope_")}
    args = check_keywords(path, given, signature, name)
    if args["last_step"] != -1:
        raise ConfigError(join(path, "last_step"), "must be -1 (a plan starts at step 0; resuming a scheduler "
                          "mid-run is not expressible)", args["last_step"])
    check_bool(join(path, "verbose"), args["verbose"])
    by_epoch = check_bool(join(path, "by_epoch"), args["by_epoch"])
    convert = check_bool(join(path, "convert_to_iter_based"), args["convert_to_iter_based"])

    # ---- which hyperparameter
    if param is None:
        param = args["param_name"]
        if not isinstance(param, str) or param not in hypers:
            raise ConfigError(join(path, "param_name"), "must name a hyperparameter the optimizer's param groups "
                              "hold" + suggest(param, hypers) + " (" + ", ".join(hypers) + ")", param)
        hyper = param
    elif param == "momentum":
        if momentum_hyper is None:
            raise ConfigError(join(path, "type"), "needs an optimizer with momentum or betas (MMEngine: 'optimizer "
                              "must support momentum when using momentum scheduler')", cls)
        hyper = momentum_hyper
    else:
        hyper = param
    if family == "OneCycle" and param != "lr":
        raise ConfigError(join(path, "param_name"), "must be 'lr' (MMEngine's OneCycle only updates the learning "
                          "rate)", param)

    # ---- window and clock (the runner's default end, then build_iter_from_epoch)
    if convert and not by_epoch:
        raise ConfigError(join(path, "convert_to_iter_based"), "needs by_epoch=True (MMEngine: 'Only epoch-based "
                          "parameter scheduler can be converted to iter-based')", convert)
    if by_epoch and not convert and clock.iter_loop:
        raise ConfigError(join(path, "by_epoch"), "an epoch-based scheduler in an IterBasedTrainLoop steps once, after "
                          "training (MMEngine treats the whole run as one epoch): set by_epoch=False", by_epoch)
    end = args["end"]
    if end is None:
        default = clock.max_epochs if by_epoch else clock.max_iters
        end = INF if default is None else default
    begin = args["begin"]
    if convert:
        spe = clock.steps_per_epoch
        if spe is None:
            raise ConfigError(join(path, "convert_to_iter_based"), "needs the epoch length: give steps_per_epoch "
                              "(in the document or as a keyword)", convert)
        begin = int(check_real(join(path, "begin"), begin) * spe)
        if end != INF:
            end = int(check_real(join(path, "end"), end) * spe)
        unit = "iter"
    else:
        unit = "epoch" if by_epoch else "iter"
    begin = check_int(join(path, "begin"), begin, minimum=0)
    end = check_int(join(path, "end"), end, minimum=1)
    if end <= begin:
        raise ConfigError(join(path, "end"), f"must be larger than begin ({begin}) (MMEngine: 'end should be larger "
                          "than begin')", end)
    if unit == "epoch" and clock.unit == "iter" and clock.steps_per_epoch is None:
        raise ConfigError(join(path, "by_epoch"), "an epoch-based scheduler next to iteration-based ones needs the "
                          "epoch length: give steps_per_epoch (in the document or as a keyword)", by_epoch)
    scale = clock.steps_per_epoch if (unit == "epoch" and clock.unit == "iter") else 1
    s = Sched(index, path, name, family, hyper, unit, begin, end, {}, scale=scale or 1)
    s.args, s.kind = _FAMILY_CHECKS[family](args, path, s, convert, clock, n_groups)
    return s


def _scaled(convert: bool, clock: Clock, v: int) -> int:
    return v * (clock.steps_per_epoch or 1) if convert else v


def _per_group(path: str, v: Any, n_groups: int | None, check: Callable[[str, Any], Any]) -> tuple[Any, ...]:
    """MMEngine's ``_format_param``: a scalar, or one value per param group MMEngine builds."""
    if isinstance(v, (list, tuple)):
        if n_groups is None or len(v) != n_groups:
            rule = (f"must be one value, or one per param group MMEngine builds ({n_groups})" if n_groups is not None
                    else "must be one value: with paramwise_cfg MMEngine builds one param group per parameter, so a "
                         "per-group list cannot be related to optbridge's groups")
            raise ConfigError(path, rule, list(v))
        return tuple(check(f"{path}[{i}]", x) for i, x in enumerate(v))
    return (check(path, v),)


def _constant(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    f = check_real(join(path, "factor"), args["factor"])
    if not 0.0 <= f <= 1.0:
        raise ConfigError(join(path, "factor"), "must be between 0 and 1 (MMEngine: 'Constant multiplicative factor "
                          "should between 0 and 1')", args["factor"])
    if f == 0.0 and s.last > 0:
        raise ConfigError(join(path, "factor"), "must not be 0 when the window has more than one step: MMEngine lifts "
                          "the factor by multiplying with 1/factor (ZeroDivisionError)", f)
    return {"factor": f}, _MULTIPLICATIVE


def _linear(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    out = {}
    for key in ("start_factor", "end_factor"):
        v = check_real(join(path, key), args[key])
        if not 0.0 <= v <= 1.0:
            raise ConfigError(join(path, key), "must be between 0 and 1 (MMEngine requires 0 <= factor <= 1)", v)
        out[key] = v
    if out["start_factor"] == 0.0 and s.last > 0:
        raise ConfigError(join(path, "start_factor"), "must not be 0 (MMEngine's chainable LinearLR divides by "
                          "total_iters * start_factor at its second step: ZeroDivisionError)", 0.0)
    return out, _MULTIPLICATIVE


def _step(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    size = check_int(join(path, "step_size"), args["step_size"], minimum=1)
    return {"step_size": _scaled(convert, clock, size), "gamma": check_real(join(path, "gamma"), args["gamma"])}, \
        _MULTIPLICATIVE


def _multistep(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    ms = args["milestones"]
    p = join(path, "milestones")
    if not isinstance(ms, (list, tuple)):
        raise ConfigError(p, "must be a list of integers", ms)
    checked = sorted(_scaled(convert, clock, check_int(f"{p}[{i}]", m, minimum=0)) for i, m in enumerate(ms))
    return {"milestones": tuple(checked), "gamma": check_real(join(path, "gamma"), args["gamma"])}, _MULTIPLICATIVE


def _exponential(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    return {"gamma": check_real(join(path, "gamma"), args["gamma"])}, _MULTIPLICATIVE


def _eta(args: dict[str, Any], path: str, *, default_zero: bool) -> dict[str, Any]:
    eta, ratio = args["eta_min"], args["eta_min_ratio"]
    if eta is None and ratio is None:
        if not default_zero:
            raise ConfigError(join(path, "eta_min"), "is required, or eta_min_ratio (MMEngine asserts exactly one of "
                              "them)", None, show_value=False)
        eta = 0.0
    if eta is not None and ratio is not None:
        raise ConfigError(join(path, "eta_min_ratio"), "cannot be given together with eta_min (MMEngine: 'Either "
                          "`eta_min` or `eta_min_ratio should be specified')", ratio)
    return {"eta_min": None if eta is None else check_real(join(path, "eta_min"), eta),
            "eta_min_ratio": None if ratio is None else check_real(join(path, "eta_min_ratio"), ratio)}


def _cosine(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    out = _eta(args, path, default_zero=True)
    t_max = args["T_max"]
    if t_max is not None:
        t_max = _scaled(convert, clock, check_int(join(path, "T_max"), t_max, minimum=0))
    out["T_max"] = t_max or (s.end - s.begin)  # MMEngine: ``T_max or (end - begin)``
    mult = out["eta_min_ratio"] is None and out["eta_min"] == 0.0 and s.last <= out["T_max"]
    return out, _MULTIPLICATIVE if mult else _AFFINE


def _poly(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    out = {"eta_min": check_real(join(path, "eta_min"), args["eta_min"]),
           "power": check_real(join(path, "power"), args["power"])}
    return out, _MULTIPLICATIVE if out["eta_min"] == 0.0 else _AFFINE


def _one_cycle(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    total = args["total_steps"]
    if total is not None:
        if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
            raise ConfigError(join(path, "total_steps"), "must be a positive integer (MMEngine: 'Expected positive "
                              "integer total_steps')", total)
        total = _scaled(convert, clock, total)
    else:
        total = s.end - s.begin
    pct = args["pct_start"]
    if not isinstance(pct, float) or not 0.0 <= pct <= 1.0:
        raise ConfigError(join(path, "pct_start"), "must be a float between 0 and 1 (MMEngine rejects ints: write "
                          "0.0 or 1.0)", pct)
    check_choice(join(path, "anneal_strategy"), args["anneal_strategy"], ("cos", "linear"))
    out = {"total_steps": total, "pct_start": pct, "anneal_strategy": args["anneal_strategy"],
           "three_phase": check_bool(join(path, "three_phase"), args["three_phase"]),
           "eta_max": _per_group(join(path, "eta_max"), args["eta_max"], n, check_real)}
    for key in ("div_factor", "final_div_factor"):
        v = check_real(join(path, key), args[key])
        if v == 0:
            raise ConfigError(join(path, key), "must be non-zero", v)
        out[key] = v
    return out, _OVERWRITE


def _restart(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    out = _eta(args, path, default_zero=False)
    periods, weights = args["periods"], args["restart_weights"]
    if not isinstance(periods, (list, tuple)) or not periods:
        raise ConfigError(join(path, "periods"), "must be a non-empty list of positive integers", periods)
    if not isinstance(weights, (list, tuple)) or len(weights) != len(periods):
        raise ConfigError(join(path, "restart_weights"), f"must have one weight per period ({len(periods)}) (MMEngine: "
                          "'periods and restart_weights should have the same length')", weights)
    out["periods"] = tuple(_scaled(convert, clock, check_int(join(path, f"periods[{i}]"), p, minimum=1))
                           for i, p in enumerate(periods))
    out["restart_weights"] = tuple(check_real(join(path, f"restart_weights[{i}]"), w) for i, w in enumerate(weights))
    if out["eta_min"] not in (None, 0.0) and 0.0 in out["restart_weights"]:
        raise ConfigError(join(path, "restart_weights"), "a weight of 0 with eta_min != 0 is not expressible exactly "
                          "(the period would rise from 0 to eta_min)", list(weights))
    return out, _OVERWRITE


def _plateau(args: dict[str, Any], path: str, s: Sched, convert: bool, clock: Clock, n: int | None):
    if s.unit != "epoch" or convert:
        raise ConfigError(join(path, "by_epoch"), "must be true without convert_to_iter_based (MMEngine: "
                          f"'{s.cls} only support by_epoch=True')", False)
    if clock.val_interval != 1:
        raise ConfigError("train_cfg.val_interval", "must be 1 for a ReduceOnPlateau scheduler: it steps on each "
                          "validation's metric, and a plan's plateau takes one metric per epoch", clock.val_interval)
    if s.begin > 1:
        raise ConfigError(join(path, "begin"), "must be 0 or 1 for ReduceOnPlateau (a plan's plateau takes every "
                          "epoch's metric)", s.begin)
    limit = INF if clock.max_epochs is None else clock.max_epochs
    if s.end < limit:
        raise ConfigError(join(path, "end"), f"must reach the end of training ({limit}) for ReduceOnPlateau (a plan's "
                          "plateau cannot stop reducing)", s.end)
    f = check_real(join(path, "factor"), args["factor"])
    if f >= 1.0:
        raise ConfigError(join(path, "factor"), "must be < 1.0 (MMEngine: 'Factor should be < 1.0.')", f)
    th = check_real(join(path, "threshold"), args["threshold"])
    if th < 0:
        raise ConfigError(join(path, "threshold"), "must be >= 0", th)
    out = {"mode": {"less": "min", "greater": "max"}.get(check_choice(join(path, "rule"), args["rule"],
                                                                      ("less", "greater"))),
           "threshold_mode": check_choice(join(path, "threshold_rule"), args["threshold_rule"], ("rel", "abs")),
           "factor": f, "threshold": th,
           "patience": check_int(join(path, "patience"), args["patience"], minimum=0),
           "cooldown": check_int(join(path, "cooldown"), args["cooldown"], minimum=0),
           "eps": check_real(join(path, "eps"), args["eps"]),
           "min_value": _per_group(join(path, "min_value"), args["min_value"], n, check_real),
           "monitor": args["monitor"]}
    if not isinstance(out["monitor"], str):
        raise ConfigError(join(path, "monitor"), "must be a metric name", out["monitor"])
    return out, _PLATEAU


_FAMILY_CHECKS: dict[str, Callable[..., tuple[dict[str, Any], str]]] = {
    "Constant": _constant, "Linear": _linear, "Step": _step, "MultiStep": _multistep, "Exponential": _exponential,
    "CosineAnnealing": _cosine, "Poly": _poly, "OneCycle": _one_cycle, "CosineRestart": _restart,
    "ReduceOnPlateau": _plateau,
}


# --------------------------------------------------------------------------- composition

@dataclass
class _Built:
    sched: Sched
    node: ir.Node
    relative: bool  # node / base does not depend on base (evaluate factors with base 1)


@dataclass
class _Evaluator:
    """Evaluates built window nodes at one update index (through :mod:`optbridge.evaluate`)."""

    unit: str
    steps_per_epoch: int
    cache: dict[Any, float] = field(default_factory=dict)

    def value(self, node: ir.Node, t: int, base: float, unit: str | None = None, spe: int | None = None) -> float:
        import numpy as np

        from .. import evaluate
        u, s = unit or self.unit, spe or self.steps_per_epoch
        key = (node, t, base, u, s)
        if key not in self.cache:
            self.cache[key] = float(evaluate.values(node, np.asarray([t], dtype=np.int64), base=base, unit=u,
                                                    steps_per_epoch=s)[0])
        return self.cache[key]

    def factor(self, built: _Built, t: int, base: float) -> float:
        if built.relative:
            return self.value(built.node, t, 1.0)
        return self.value(built.node, t, base) / base


def compose(scheds: Sequence[Sched], base: float, clock: Clock) -> ir.Node:
    """The IR tree of the schedulers of one hyperparameter, for a group whose base value is ``base``.

    Raises:
        ConfigError: an affine/overwriting scheduler whose steps interleave with another scheduler's
            changes (not a product: not expressible).
    """
    ev = _Evaluator(clock.unit, clock.steps_per_epoch or 1)
    built: dict[int, _Built] = {}
    for s in scheds:
        if s.kind == _MULTIPLICATIVE:
            inner = _inner(s, 1.0, 1.0)
            built[s.index] = _Built(s, _window(s, inner, ev, 1.0, relative=True), True)
    pending = sorted((s for s in scheds if s.kind != _MULTIPLICATIVE), key=lambda s: s.sensitive()[0])
    for a in pending:
        if a.last_change < (1 if a.kind == _AFFINE else 0):
            built[a.index] = _Built(a, ir.Constant(factor=1.0), True)  # a one-step affine window changes nothing
            continue
        lo, hi = a.sensitive()
        for s in scheds:
            if s is a:
                continue
            k = s.first_change(s.first_after(lo), s.last_before(hi))
            if k is not None:
                raise ConfigError(a.path, f"{a.cls} computes each value from the current one (MMEngine's chainable "
                                  f"form) and {s.path} ({s.cls}) changes {a.hyper!r} between its steps (at update "
                                  f"{s.update_index(k)}): the result is not a product of closed forms, so optbridge "
                                  "cannot express it exactly; make the windows disjoint", a.cls)
        p = 1.0
        if base != 0.0:
            for b in built.values():
                k = b.sched.last_before(lo)
                if k >= 0:
                    p *= ev.factor(b, b.sched.update_index(k), base)
        if p == 0.0 and len(scheds) > 1:
            raise ConfigError(a.path, f"{a.cls} starts when the other schedulers have driven {a.hyper!r} to 0; its "
                              "absolute values cannot be written as a factor of 0", a.cls)
        if a.family == "CosineAnnealing" and a.last > a.args["T_max"]:
            if abs(p - 1.0) > 1e-12:
                raise ConfigError(join(a.path, "T_max"), f"a CosineAnnealing window longer than T_max restarts from "
                                  f"the initial value, and here other schedulers hold {a.hyper!r} at {p!r} times it "
                                  "when it starts: not expressible exactly (set T_max to cover the window)",
                                  a.args["T_max"])
            p = 1.0  # the product is 1 up to rounding of factors that are exactly 1 (e.g. a warmup ending at 1.0)
            if any(o.family == "OneCycle" and o.index < a.index for o in scheds):
                raise ConfigError(a.path, "a CosineAnnealing past T_max restarts from initial values that an earlier "
                                  "OneCycle overwrote: not supported", a.cls)
        if a.family in ("CosineAnnealing", "CosineRestart") and a.args["eta_min_ratio"] is not None and any(
                o.family == "OneCycle" and o.index < a.index for o in scheds):
            raise ConfigError(join(a.path, "eta_min_ratio"), "is relative to initial values that an earlier OneCycle "
                              "overwrote: not supported", a.args["eta_min_ratio"])
        if a.family == "CosineRestart" and any(o.family == "OneCycle" and o.index < a.index for o in scheds):
            raise ConfigError(a.path, "CosineRestart restarts from initial values that an earlier OneCycle overwrote: "
                              "not supported", a.cls)
        inner = _inner(a, base, p)
        built[a.index] = _Built(a, _window(a, inner, ev, base, relative=False), False)
    parts = [built[s.index].node for s in scheds]
    if len(parts) == 1:
        return parts[0]
    if base == 0.0:
        if all(built[s.index].relative for s in scheds):
            return ir.Constant(factor=1.0)  # every scheduler scales 0: the value stays 0
        raise ConfigError(scheds[0].path, "a group whose base value is 0 under several schedulers, one of them with "
                          "absolute values (eta_min, OneCycle, CosineRestart), is not expressible as a product",
                          base)
    return ir.Chain(parts=tuple(parts))


def _inner(s: Sched, base: float, p: float) -> ir.Node:
    """The scheduler's closed form on its local counter, divided by ``p`` where it is absolute."""
    a, f, last = s.args, s.family, s.last
    if f == "Constant":
        return ir.Constant(factor=a["factor"], steps=last if last > 0 else None)
    if f == "Linear":
        if last == 0:
            return ir.Constant(factor=a["start_factor"])
        return ir.Linear(start_factor=a["start_factor"], end_factor=a["end_factor"], steps=last)
    if f == "Step":
        return ir.Exponential(gamma=a["gamma"], every=a["step_size"], stair=True)
    if f == "MultiStep":
        return ir.MultiStep(milestones=tuple(m for m in a["milestones"] if m <= last), gamma=a["gamma"])
    if f == "Exponential":
        return ir.Exponential(gamma=a["gamma"])
    if f == "Poly":
        if last == 0:
            return ir.Constant(factor=1.0)
        return ir.Polynomial(steps=last, power=a["power"], end=a["eta_min"] / p)
    if f == "CosineAnnealing":
        eta = a["eta_min"] if a["eta_min_ratio"] is None else base * a["eta_min_ratio"]
        return ir.Cosine(steps=a["T_max"], end=eta / p)
    if f == "OneCycle":
        peak = a["eta_max"][0]
        return ir.OneCycle(total_steps=a["total_steps"], pct_start=a["pct_start"], anneal=a["anneal_strategy"],
                           three_phase=a["three_phase"], peak=peak if p == 1.0 else peak / p,
                           div_factor=a["div_factor"], final_div_factor=a["final_div_factor"])
    if f == "CosineRestart":
        eta = a["eta_min"] if a["eta_min_ratio"] is None else base * a["eta_min_ratio"]
        parts: list[ir.Node] = []
        for period, w in zip(a["periods"], a["restart_weights"]):
            if w == 1.0 and p == 1.0:
                parts.append(ir.Cosine(steps=period, end=eta))
            elif w == 0.0:
                parts.append(ir.Constant(factor=0.0))
            else:
                parts.append(ir.Chain(parts=(ir.Constant(factor=w / p), ir.Cosine(steps=period, end=eta / w))))
        bounds = [sum(a["periods"][: i + 1]) for i in range(len(parts) - 1)]
        return parts[0] if len(parts) == 1 else ir.Sequence(parts=tuple(parts), boundaries=tuple(bounds))
    raise AssertionError(f)  # pragma: no cover


_NATURAL_HOLD = ("Constant", "Linear", "MultiStep", "Poly")


def _window(s: Sched, inner: ir.Node, ev: _Evaluator, base: float, *, relative: bool) -> ir.Node:
    """``1`` before ``begin``, ``inner`` on the local counter, the last value held after the window."""
    parts: list[ir.Node] = []
    bounds: list[int] = []
    if s.begin > 0:
        parts.append(ir.Constant(factor=1.0))
        bounds.append(s.begin)
    parts.append(inner)
    last = s.last_change
    needs_hold = s.family not in _NATURAL_HOLD and not (s.family == "OneCycle" and last > s.args["total_steps"])
    if needs_hold:
        value = ev.value(inner, last, 1.0 if relative else base, unit="iter", spe=1)
        parts.append(ir.Constant(factor=value) if relative else ir.Piecewise(boundaries=(), values=(value,)))
        bounds.append(s.begin + last + 1)
    node = parts[0] if len(parts) == 1 else ir.Sequence(parts=tuple(parts), boundaries=tuple(bounds))
    return dataclasses.replace(node, unit=s.unit)


def plateau_node(s: Sched, group_index: int) -> ir.Plateau:
    """The plateau node of a ReduceOnPlateau scheduler for one group (MMEngine's fresh ``best`` is +-1e9)."""
    a = s.args
    mins = a["min_value"]
    return ir.Plateau(unit="epoch", mode=a["mode"], factor=a["factor"], patience=a["patience"],
                      threshold=a["threshold"], threshold_mode=a["threshold_mode"], cooldown=a["cooldown"],
                      min_value=mins[group_index] if len(mins) > 1 else mins[0], eps=a["eps"],
                      best=float(INF) if a["mode"] == "min" else -float(INF))
