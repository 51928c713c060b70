"""The timm dialect: ``create_optimizer_v2`` and ``create_scheduler_v2`` arguments (timm 1.0).

A document::

    dialect: timm
    optimizer:                         # create_optimizer_v2 keyword arguments
      opt: adamw
      lr: 1.0e-3
      weight_decay: 0.05
      no_weight_decay_list: [pos_embed, cls_token]   # what model.no_weight_decay() returns
    scheduler:                         # create_scheduler_v2 keyword arguments
      sched: cosine
      num_epochs: 300
      warmup_epochs: 5
      warmup_lr: 1.0e-6
      min_lr: 1.0e-5
      step_on_epochs: false            # timm train.py --sched-on-updates
      updates_per_epoch: 1000

What the translation models (timm's code, ``timm/scheduler/*.py`` and ``train.py``):

* **Training loop.** timm's ``train.py`` builds the scheduler (its constructor
  writes the first value into the param groups), calls
  ``step_update(num_updates)`` after every optimizer update and
  ``step(epoch + 1, metric)`` after every epoch. A scheduler stepped per update
  therefore gives update ``u`` the value ``F(u)`` for ``u >= 1``, one stepped per
  epoch gives epoch ``e`` the value ``F(e)`` for ``e >= 1``; the very first
  updates use what the constructor wrote: ``warmup_lr`` with a warmup, else the
  base lr (which differs from ``F(0)`` for ``tanh``, whose curve starts below
  the base, and for ``multistep`` with a milestone at 0 or 1).
* **Formulas.** ``cosine``, ``tanh`` and ``poly`` (cycles, ``cycle_mul``,
  ``cycle_decay``, ``cycle_limit``, ``k_decay``, ``min_lr``) become ``lambda``
  nodes that spell timm's own expression; ``step`` becomes an ``exponential``
  staircase, ``multistep`` a ``multistep`` node (timm decays at ``t + 1 >=
  milestone``, one step before torch's MultiStepLR would), ``constant`` a
  constant, ``plateau`` a ``plateau`` node (timm wraps torch's
  ReduceLROnPlateau), and the linear warmup a ``linear`` part of a
  ``sequence``. With ``warmup_prefix: false`` (the default) the schedule keeps
  counting through the warmup. ``cycle_mul != 1`` gives one ``sequence`` part
  per cycle; where a cycle starts is decided as timm decides it,
  ``floor(math.log(1 - t/t_initial*(1 - cycle_mul), cycle_mul))``, evaluated
  with Python's ``math.log`` at the candidate steps (so the reference restarts
  on the step timm restarts on, ulp for ulp).
* **Per update.** ``step_on_epochs: false`` multiplies every length by
  ``updates_per_epoch``, as ``create_scheduler_v2`` does.
* **Param groups.** As ``create_optimizer_v2`` builds them from a model:
  ``param_groups_weight_decay`` (a ``no_decay`` group with weight decay 0 for
  1-d parameters, names ending in ``.bias`` and ``no_weight_decay_list``
  globs, then a ``decay`` group) and, with ``layer_decay``,
  ``param_groups_layer_decay`` (groups ``layer_<i>_decay`` /
  ``layer_<i>_no_decay`` with ``lr_scale = max(min_scale, layer_decay ** (L -
  1 - i))``; timm's schedulers multiply every value by ``lr_scale``, which the
  plan writes as the group's ``lr_mult``). Layer decay needs the model
  (``parse(doc, model=...)``, any object with ``named_parameters()``) and the
  layer map: ``layer_map: {name: layer id}`` in the document, what timm's
  ``group_parameters(model, model.group_matcher(coarse=False), reverse=True)``
  returns, or, for a model without ``group_matcher``, timm's own fallback
  (``auto_group_layers``: 12 parameters per layer, the
  ``pretrained_cfg['classifier']`` parameters last). Without a model the
  weight-decay groups are selectors (``ndim: [1]``, ``*.bias``, the list
  globs): a 0-d trainable parameter, which timm puts in ``no_decay``, is then
  not caught, so pass ``model=`` for models that have one.

Refused, with the reason: lr noise (``noise``: timm draws it from
``torch.randn`` with a ``torch.Generator`` seeded ``noise_seed + t``; only
torch's generator reproduces it), ``plateau`` with a warmup (the IR's plateau
must be a schedule's root), ``cycle_mul < 1`` (timm's log fails once the cycles
shrink to nothing), ``wsd``/``rsqrt``, fallback (hybrid) optimizers, and
``layer_decay_no_opt_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from .. import ir
from ..errors import ConfigError
from ..plan import Group, OptimizerSpec, Plan, Selector
from ._common import check_document, check_keywords, description, expect_list, expect_mapping, join

__all__ = ["parse", "looks_like", "SCHEDULER_KWARGS", "OPTIMIZERS"]

_TOP_KEYS = ("dialect", "description", "optimizer", "scheduler", "layer_map")

#: ``create_scheduler_v2`` keyword arguments and their defaults (timm 1.0.31), plus ``updates_per_epoch``.
SCHEDULER_KWARGS: dict[str, Any] = {
    "sched": "cosine", "num_epochs": 300, "decay_epochs": None, "decay_milestones": (90, 180, 270),
    "cooldown_epochs": 0, "patience_epochs": 10, "decay_rate": 0.1, "min_lr": 0.0, "warmup_lr": 1e-5,
    "warmup_epochs": 0, "warmup_prefix": False, "noise": None, "noise_pct": 0.67, "noise_std": 1.0,
    "noise_seed": 42, "cycle_mul": 1.0, "cycle_decay": 0.1, "cycle_limit": 1, "k_decay": 1.0, "decay_fn": None,
    "stable_timescale": None, "plateau_mode": "max", "step_on_epochs": True, "updates_per_epoch": 0,
}

#: timm optimizer name -> (torch class, defaults timm adds, has momentum, has eps, has betas).
OPTIMIZERS: dict[str, tuple[str, dict[str, Any], bool, bool, bool]] = {
    "sgd": ("SGD", {"nesterov": True}, True, False, False),
    "nesterov": ("SGD", {"nesterov": True}, True, False, False),
    "momentum": ("SGD", {"nesterov": False}, True, False, False),
    "adam": ("Adam", {}, False, True, True),
    "adamw": ("AdamW", {}, False, True, True),
    "nadam": ("NAdam", {}, False, True, True),
    "radam": ("RAdam", {}, False, True, True),
    "adamax": ("Adamax", {}, False, True, True),
    "adadelta": ("Adadelta", {}, False, True, False),
    "adagrad": ("Adagrad", {"eps": 1e-8}, False, True, False),
    "rmsprop": ("RMSprop", {"alpha": 0.9}, True, True, False),
}

_OPT_KWARGS: dict[str, Any] = {
    "opt": "sgd", "lr": None, "weight_decay": 0.0, "momentum": 0.9, "foreach": None, "filter_bias_and_bn": True,
    "weight_decay_exclude_1d": None, "no_weight_decay_list": (), "fallback_list": (),
    "fallback_no_weight_decay": False, "layer_decay": None, "layer_decay_min_scale": 0.0,
    "layer_decay_no_opt_scale": None, "eps": None, "betas": None, "nesterov": None, "alpha": None,
    "amsgrad": None, "dampening": None, "momentum_decay": None, "lr_decay": None, "rho": None, "centered": None,
}

_SCHED_NAMES = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "constant", "none")
#: The largest step a part boundary may sit at (the IR's integer limit).
_MAX_STEP = 2**53


def looks_like(doc: Mapping[str, Any]) -> bool:
    """True when ``doc`` names a timm scheduler (``scheduler.sched``) or optimizer (``optimizer.opt``)."""
    sched, opt = doc.get("scheduler"), doc.get("optimizer")
    return (isinstance(sched, Mapping) and "sched" in sched) or (isinstance(opt, Mapping) and "opt" in opt)


# --------------------------------------------------------------------------- small checks

def _num(path: str, v: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(path, "must be a finite number", v)
    if positive and not v > 0:
        raise ConfigError(path, "must be > 0", v)
    if minimum is not None and v < minimum:
        raise ConfigError(path, f"must be >= {minimum:g}", v)
    return float(v)


def _int(path: str, v: Any, *, minimum: int = 0) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v > _MAX_STEP:
        raise ConfigError(path, f"must be an integer >= {minimum}", v)
    return v


def _bool(path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(path, "must be true or false", v)
    return v


def _lit(x: float | int) -> str:
    """``x`` as an expression literal that parses back to the same float."""
    return repr(x) if isinstance(x, int) else repr(float(x))


# --------------------------------------------------------------------------- schedule

class _Sched:
    """The checked ``create_scheduler_v2`` arguments, with lengths in scheduler steps."""

    def __init__(self, raw: Mapping[str, Any], path: str, base: float) -> None:
        a = check_keywords(path, raw, SCHEDULER_KWARGS, "create_scheduler_v2")
        p = lambda k: join(path, k)  # noqa: E731
        self.path = path
        self.sched = a["sched"]
        if not isinstance(self.sched, str) or self.sched not in _SCHED_NAMES:
            if self.sched in ("wsd", "rsqrt"):
                raise ConfigError(p("sched"), "is not supported yet (timm's warmup-stable-decay schedules)", self.sched)
            raise ConfigError(p("sched"), "must be one of " + ", ".join(_SCHED_NAMES), self.sched)
        if a["noise"] is not None:
            raise ConfigError(p("noise"), "is not supported: timm draws lr noise from torch.randn with a "
                              "torch.Generator seeded noise_seed + t, which only torch reproduces (the reference "
                              "evaluator does not run torch)", a["noise"])
        for k in ("decay_fn", "stable_timescale"):
            if a[k] is not None:
                raise ConfigError(p(k), "is only used by the wsd / rsqrt schedules, which are not supported yet", a[k])
        self.on_epochs = _bool(p("step_on_epochs"), a["step_on_epochs"])
        self.upe = _int(p("updates_per_epoch"), a["updates_per_epoch"])
        if not self.on_epochs and self.upe < 1:
            raise ConfigError(p("updates_per_epoch"), "must be > 0 when step_on_epochs is false (timm asserts it)",
                              a["updates_per_epoch"])
        scale = 1 if self.on_epochs else self.upe
        self.base = base
        self.t_initial = _int(p("num_epochs"), a["num_epochs"], minimum=1) * scale
        self.warmup_t = _int(p("warmup_epochs"), a["warmup_epochs"]) * scale
        self.warmup_lr = _num(p("warmup_lr"), a["warmup_lr"], minimum=0.0)
        self.prefix = _bool(p("warmup_prefix"), a["warmup_prefix"])
        self.min_lr = _num(p("min_lr"), a["min_lr"], minimum=0.0)
        self.rate = _num(p("decay_rate"), a["decay_rate"])
        decay_t: float | int = _num(p("decay_epochs"), 90 if a["decay_epochs"] is None else a["decay_epochs"],
                                    positive=True) * scale
        self.decay_t = int(decay_t) if float(decay_t).is_integer() else decay_t
        self.milestones = [_int(join(p("decay_milestones"), f"[{i}]"), m) * scale for i, m in
                           enumerate(expect_list(p("decay_milestones"), a["decay_milestones"], "a list of epochs"))]
        if self.milestones != sorted(self.milestones):
            raise ConfigError(p("decay_milestones"), "must be in increasing order (timm bisects them)",
                              a["decay_milestones"])
        self.cycle_mul = _num(p("cycle_mul"), a["cycle_mul"], positive=True)
        if self.cycle_mul < 1:
            raise ConfigError(p("cycle_mul"), "must be >= 1: timm's cycle index log(1 - t/t_initial*(1 - cycle_mul)) "
                              "fails (math domain error) once t reaches t_initial/(1 - cycle_mul)", a["cycle_mul"])
        self.cycle_decay = _num(p("cycle_decay"), a["cycle_decay"])
        self.cycle_limit = _int(p("cycle_limit"), a["cycle_limit"], minimum=0)
        self.k = _num(p("k_decay"), a["k_decay"], positive=True)
        self.patience = _int(p("patience_epochs"), a["patience_epochs"])
        self.mode = a["plateau_mode"]
        if not isinstance(self.mode, str) or self.mode not in ("min", "max"):
            raise ConfigError(p("plateau_mode"), "must be 'min' or 'max'", self.mode)
        _int(p("cooldown_epochs"), a["cooldown_epochs"])
        if self.sched != "none" and self.sched != "plateau" and not base > 0:
            raise ConfigError("optimizer.lr", "must be > 0 for a timm schedule (its values are written relative to "
                              "the base lr)", base)

    # ------------------------------------------------------------------ the node

    def node(self) -> ir.Node | None:
        """The lr schedule (relative to the base lr), or None for ``sched: none``."""
        s = self.sched
        if s == "none":
            return None
        if s == "plateau":
            return self._plateau()
        W = self.warmup_t
        main = self._main(offset=0 if self.prefix or not W else W)
        if not W:
            return self._first_value_is_base(main)
        return ir.Sequence(parts=(self._warmup(), main), boundaries=(W,))

    def _plateau(self) -> ir.Node:
        if not self.on_epochs:
            raise ConfigError(join(self.path, "step_on_epochs"), "must be true for plateau (timm asserts it)", False)
        if self.warmup_t:
            raise ConfigError(join(self.path, "warmup_epochs"), "is not supported with plateau: the IR's plateau "
                              "must be a schedule's root, so it cannot follow a warmup", self.warmup_t)
        # timm: torch.optim.lr_scheduler.ReduceLROnPlateau(patience, factor=decay_rate, threshold=1e-4,
        # cooldown=0, mode, min_lr=lr_min), stepped with the epoch's metric after every epoch.
        try:
            return ir.Plateau(mode=self.mode, factor=self.rate, patience=self.patience, threshold=1e-4,
                              threshold_mode="rel", cooldown=0, min_value=self.min_lr)
        except ConfigError as e:
            raise ConfigError(join(self.path, "decay_rate"), e.rule, self.rate) from None

    def _warmup(self) -> ir.Node:
        W, wl, B = self.warmup_t, self.warmup_lr, self.base
        if self.sched == "tanh" and not self.prefix:
            # TanhLRScheduler warms up towards its own value at warmup_t, not towards the base lr.
            target = "(" + self._value_at(W) + ") * " + _lit(B)
            return ir.Lambda(expr=f"({_lit(wl)} + k * ({target} - {_lit(wl)}) / {W}) / {_lit(B)}")
        return ir.Linear(start_factor=wl / B, end_factor=1.0, steps=W)

    def _value_at(self, t: int) -> str:
        """The expression of timm's value at the fixed step ``t`` (relative to the base lr)."""
        if self.cycle_mul == 1:
            return self._formula(str(t), None, with_limit=True)
        m, T = self.cycle_mul, self.t_initial
        cycle = math.floor(math.log(1 - t / T * (1 - m), m))  # timm's own cycle index
        if cycle >= self.cycle_limit:
            return f"{_lit(self.min_lr)} / {_lit(self.base)}"
        return self._formula(str(t), cycle, with_limit=False)

    def _first_value_is_base(self, main: ir.Node) -> ir.Node:
        """Without warmup the constructor writes the base lr, which the first step uses."""
        needs = self.sched == "tanh" or (self.sched == "multistep" and any(m <= 1 for m in self.milestones))
        if not needs:
            return main
        return ir.Sequence(parts=(ir.Constant(factor=1.0), self._main(offset=1)), boundaries=(1,))

    def _main(self, offset: int) -> ir.Node:
        """The schedule after the warmup; its local counter ``k`` is timm's ``t - offset``."""
        s, t = self.sched, ("k" if offset == 0 else f"(k + {offset})")
        if s == "constant":
            return ir.Constant(factor=1.0)
        if s == "step":
            if offset == 0 and float(self.decay_t).is_integer():
                return ir.Exponential(gamma=self.rate, every=int(self.decay_t), stair=True)
            return ir.Lambda(expr=f"{_lit(self.rate)} ** ({t} // {_lit(self.decay_t)})")
        if s == "multistep":  # timm: decay_rate ** bisect_right(milestones, t + 1)
            return ir.MultiStep(milestones=tuple(max(m - 1 - offset, 0) for m in self.milestones), gamma=self.rate)
        if self.cycle_mul == 1:
            return ir.Lambda(expr=self._formula(t, None, with_limit=True))
        return self._cycles(offset)

    def _cycles(self, offset: int) -> ir.Node:
        """``cycle_mul != 1``: one part per cycle, starting where timm's float cycle index says."""
        L = self.cycle_limit
        starts: list[int] = []
        for j in range(1, L + 1):
            b = self._cycle_start(j) - offset
            if b >= _MAX_STEP:
                break
            starts.append(max(b, 1))
        parts: list[ir.Node] = []
        for j in range(len(starts) + 1):
            local0 = offset + (starts[j - 1] if j else 0)
            t = "k" if local0 == 0 else f"(k + {local0})"
            if j >= L:
                parts.append(ir.Constant(factor=self.min_lr / self.base))
            else:
                parts.append(ir.Lambda(expr=self._formula(t, j, with_limit=False)))
        if len(parts) == 1:
            return parts[0]
        return ir.Sequence(parts=tuple(parts), boundaries=tuple(starts))

    def _cycle_start(self, j: int) -> int:
        """The first step at which timm's cycle index reaches ``j`` (cycle_mul > 1)."""
        m, T = self.cycle_mul, self.t_initial
        exact = Fraction(T) * (Fraction(m) ** j - 1) / (Fraction(m) - 1)
        t = max(math.ceil(exact) - 1, 0)

        def index(t: int) -> int:  # timm's own expression (CosineLRScheduler._get_lr)
            return math.floor(math.log(1 - t / T * (1 - m), m))

        while index(t) < j:
            t += 1
        return t

    def _formula(self, t: str, cycle: int | None, *, with_limit: bool) -> str:
        """timm's value at step ``t`` divided by the base lr, as an expression.

        ``cycle`` None: the cycle index is ``t // t_initial`` (cycle_mul 1); else the given cycle of a
        cycle_mul schedule, whose start and length are literals computed as timm computes them.
        """
        T, m, B, LM, K = self.t_initial, self.cycle_mul, self.base, self.min_lr, self.k
        if cycle is None:
            i = f"({t} // {T})"
            t_i = f"{T}"
            t_curr = f"({t} - {T} * {i})"
            gamma = f"{_lit(self.cycle_decay)} ** {i}" if self.cycle_limit > 1 else "1"
        else:
            i = str(cycle)
            t_i = _lit(m ** cycle * T)
            t_curr = f"({t} - {_lit((1 - m ** cycle) / (1 - m) * T)})"
            gamma = _lit(self.cycle_decay ** cycle)
        lr_max = f"{_lit(B)} * {gamma}" if gamma != "1" else _lit(B)
        if self.sched in ("cosine", "poly"):
            ratio = f"{t_curr} / {t_i}" if K == 1 else f"{t_curr} ** {_lit(K)} / {t_i} ** {_lit(K)}"
            if self.sched == "cosine":
                value = f"{_lit(LM)} + 0.5 * ({lr_max} - {_lit(LM)}) * (1 + cos(pi * {ratio}))"
            else:
                value = f"{_lit(LM)} + ({lr_max} - {_lit(LM)}) * (1 - {ratio}) ** {_lit(self.rate)}"
        else:  # tanh: 0.5 * (1 - tanh(y)) == 1 / (1 + exp(2 y)), y = lb * (1 - tr) + ub * tr, lb = -7, ub = 3
            tr = f"({t_curr} / {t_i})"
            value = f"{_lit(LM)} + ({lr_max} - {_lit(LM)}) / (1 + exp(2 * (-7.0 * (1.0 - {tr}) + 3.0 * {tr})))"
        expr = f"({value}) / {_lit(B)}"
        if with_limit and cycle is None:
            expr = f"{expr} if {i} < {self.cycle_limit} else {_lit(LM)} / {_lit(B)}"
        return expr


# --------------------------------------------------------------------------- optimizer and groups

def _optimizer(raw: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(torch type, plan options, grouping arguments) from ``create_optimizer_v2`` arguments."""
    a = check_keywords("optimizer", raw, _OPT_KWARGS, "create_optimizer_v2")
    name = a["opt"]
    if not isinstance(name, str):
        raise ConfigError("optimizer.opt", "must be a timm optimizer name", name)
    parts = name.lower().split("_")
    if len(parts) > 1 and parts[0] == "lookahead":
        raise ConfigError("optimizer.opt", "is not supported: Lookahead wraps the optimizer (slow weights)", name)
    key = parts[-1]
    if key not in OPTIMIZERS:
        raise ConfigError("optimizer.opt", "must be one of " + ", ".join(OPTIMIZERS)
                          + " (timm optimizers that are torch.optim classes)", name)
    ptype, defaults, has_momentum, has_eps, has_betas = OPTIMIZERS[key]
    for k in ("fallback_list", "layer_decay_no_opt_scale"):
        if a[k] not in ((), None, []):
            raise ConfigError(f"optimizer.{k}", "is not supported (hybrid fallback optimizers / parameters left "
                              "out below a layer scale)", a[k])
    if a["fallback_no_weight_decay"]:
        raise ConfigError("optimizer.fallback_no_weight_decay", "is not supported (hybrid fallback optimizers)", True)
    opts: dict[str, Any] = {}
    if a["lr"] is not None:
        opts["lr"] = _num("optimizer.lr", a["lr"], minimum=0.0)
    for k, v in defaults.items():
        opts[k] = v
    if has_momentum:
        opts["momentum"] = _num("optimizer.momentum", a["momentum"], minimum=0.0)
    for k in ("eps", "betas", "nesterov", "alpha", "amsgrad", "dampening", "momentum_decay", "lr_decay", "rho",
              "centered", "foreach"):
        v = a[k]
        if v is None or (k == "eps" and not has_eps) or (k == "betas" and not has_betas):
            continue  # timm drops eps / betas for optimizers without them
        opts[k] = tuple(v) if isinstance(v, list) else v
    wd = _num("optimizer.weight_decay", a["weight_decay"], minimum=0.0)
    exclude = a["weight_decay_exclude_1d"]
    exclude = _bool("optimizer.filter_bias_and_bn", a["filter_bias_and_bn"]) if exclude is None else \
        _bool("optimizer.weight_decay_exclude_1d", exclude)
    nwd = [str(x) for x in expect_list("optimizer.no_weight_decay_list", a["no_weight_decay_list"], "a list of globs")]
    layer_decay = None if a["layer_decay"] is None else _num("optimizer.layer_decay", a["layer_decay"])
    grouping = {"weight_decay": wd, "exclude_1d": exclude, "nwd": nwd, "layer_decay": layer_decay,
                "min_scale": _num("optimizer.layer_decay_min_scale", a["layer_decay_min_scale"])}
    return ptype, opts, grouping


def _escape(name: str) -> str:
    """A glob that matches exactly ``name``."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _groups(g: Mapping[str, Any], model: Any, layer_map: Mapping[str, int] | None, scheduled: bool) -> list[Group]:
    from fnmatch import fnmatch
    wd, exclude, nwd = g["weight_decay"], g["exclude_1d"], g["nwd"]
    if g["layer_decay"] is None:
        if model is None:  # selectors, as timm's rule reads
            if not wd:  # timm: no weight decay at all, one group
                return [Group(name="no_decay", select=(Selector(rest=True),), options={"weight_decay": 0.0})]
            no_decay = ([Selector(ndim=(1,)), Selector(names=("*.bias",))] if exclude else []) + \
                [Selector(names=(p,)) for p in nwd]
            decay_group = Group(name="decay", select=(Selector(rest=True),), options={"weight_decay": wd})
            if not no_decay:
                return [decay_group]
            return [Group(name="no_decay", select=tuple(no_decay), options={"weight_decay": 0.0}), decay_group]
    params = _named(model)
    assign: dict[str, list[str]] = {}
    options: dict[str, dict[str, Any]] = {}
    if g["layer_decay"] is None:  # param_groups_weight_decay over the model
        for name, ndim in params:
            decay = bool(wd) and not ((exclude and (ndim <= 1 or name.endswith(".bias")))
                                      or any(fnmatch(name, p) for p in nwd))
            key = "decay" if decay else "no_decay"
            assign.setdefault(key, []).append(name)
            options[key] = {"weight_decay": wd if decay else 0.0}
        order = [k for k in ("no_decay", "decay") if k in assign]
    else:  # param_groups_layer_decay
        if layer_map is None:
            layer_map = _auto_group_layers(model, [n for n, _ in params])
        num_layers = max(layer_map.values()) + 1
        layer_max = num_layers - 1
        scales = [max(g["min_scale"], g["layer_decay"] ** (layer_max - i)) for i in range(num_layers)]
        order = []
        for name, ndim in params:
            if (exclude and ndim <= 1) or any(fnmatch(name, p) for p in nwd):
                kind, this_wd = "no_decay", 0.0
            else:
                kind, this_wd = "decay", wd
            layer = layer_map.get(name, layer_max)
            key = f"layer_{layer}_{kind}"
            if key not in assign:
                order.append(key)
                options[key] = {"weight_decay": this_wd}
                if scheduled:  # timm's schedulers multiply by lr_scale; without one it is never applied
                    options[key]["lr_mult"] = scales[layer]
            assign.setdefault(key, []).append(name)
    return [Group(name=k, select=(Selector(names=tuple(_escape(n) for n in assign[k])),), options=options[k])
            for k in order]


def _named(model: Any) -> list[tuple[str, int]]:
    """(name, ndim) of the trainable parameters of ``model`` (anything with ``named_parameters()``)."""
    try:
        return [(n, int(p.ndim)) for n, p in model.named_parameters() if getattr(p, "requires_grad", True)]
    except (AttributeError, TypeError) as e:
        raise ConfigError("model", f"must have named_parameters() yielding (name, tensor) pairs ({e})",
                          type(model).__name__) from None


def _auto_group_layers(model: Any, names: list[str], layers_per_group: int = 12) -> dict[str, int]:
    """timm's ``auto_group_layers`` (the fallback layer map of models without ``group_matcher``)."""
    if hasattr(model, "group_matcher"):
        raise ConfigError("layer_map", "is required for a model with group_matcher(): give the map timm builds, "
                          "group_parameters(model, model.group_matcher(coarse=False), reverse=True)", None,
                          show_value=False)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    head = cfg.get("classifier") if isinstance(cfg, Mapping) else None

    def in_head(n: str) -> bool:
        if not head:
            return True
        if isinstance(head, (tuple, list)):
            return any(n.startswith(h) for h in head)
        return n.startswith(head)

    trunk = [n for n in names if not in_head(n)]
    groups = [trunk[i:i + layers_per_group] for i in range(0, len(trunk), layers_per_group)]
    out = {n: i for i, grp in enumerate(groups) for n in grp}
    out.update({n: len(groups) for n in names if in_head(n)})
    return out


def _layer_map(v: Any) -> dict[str, int] | None:
    if v is None:
        return None
    m = expect_mapping("layer_map", v)
    return {k: _int(f"layer_map.{k}", x) for k, x in m.items()}


# --------------------------------------------------------------------------- the document

def parse(doc: Mapping[str, Any], *, model: Any = None) -> Plan:
    """Build a plan from a timm-dialect document (see the module docstring).

    Args:
        doc: The document.
        model: Optional model (anything with ``named_parameters()``): groups then list exact names, and
            ``layer_decay`` becomes possible.

    Raises:
        ConfigError: naming the path of the bad field, the rule and the value.
    """
    d = check_document(doc, "timm", _TOP_KEYS)
    if "optimizer" not in d:
        raise ConfigError("optimizer", "is required (create_optimizer_v2 arguments, e.g. {opt: sgd, lr: 0.1})", None,
                          show_value=False)
    ptype, options, grouping = _optimizer(expect_mapping("optimizer", d["optimizer"]))
    from ..plan import OPTIMIZER_DEFAULTS
    base = float(options.get("lr", OPTIMIZER_DEFAULTS[ptype]["lr"]))
    sraw = expect_mapping("scheduler", d.get("scheduler", {"sched": "none"}))
    sched = _Sched(sraw, "scheduler", base)
    node = sched.node()
    if grouping["layer_decay"] is not None and model is None:
        raise ConfigError("optimizer.layer_decay", "needs the model: timm assigns layers from the model's parameters "
                          "(parse(doc, model=...))", grouping["layer_decay"])
    groups = _groups(grouping, model, _layer_map(d.get("layer_map")), scheduled=node is not None)
    try:
        spec = OptimizerSpec(type=ptype, options=options, groups=tuple(groups))
        return Plan(optimizers=(spec,), schedule={"lr": node} if node is not None else {},
                    step_unit="epoch" if sched.on_epochs else "iter",
                    steps_per_epoch=sched.upe or None, **description(d))
    except ConfigError as e:
        raise e.under("optimizer") from None

