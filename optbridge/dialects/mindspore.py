"""The MindSpore dialect: ``mindspore.nn`` optimizers and dynamic learning rates (MindSpore 2.10).

A document::

    dialect: mindspore
    optimizer: {type: Momentum, momentum: 0.9, weight_decay: 1.0e-4}
    learning_rate:                     # here or inside optimizer
      - {type: warmup_lr, learning_rate: 0.1, total_step: 200, step_per_epoch: 100, warmup_epoch: 2}
      - {type: cosine_decay_lr, min_lr: 0.0, max_lr: 0.1, total_step: 800, step_per_epoch: 100, decay_epoch: 8}
    group_params:                      # optional
      - {name: backbone, params: "backbone.*", lr: 0.01}
      - {name: head, params: rest}

``learning_rate`` is a number, a plain list of numbers (one lr per step), a
dynamic-lr list function (``piecewise_constant_lr``, ``exponential_decay_lr``,
``natural_exp_decay_lr``, ``inverse_decay_lr``, ``cosine_decay_lr``,
``polynomial_decay_lr``, ``warmup_lr``), a list of list functions (their lists
concatenated, as ``warmup_lr(...) + cosine_decay_lr(...)`` in Python), or a
``LearningRateSchedule`` cell (``ExponentialDecayLR``, ``NaturalExpDecayLR``,
``InverseDecayLR``, ``CosineDecayLR``, ``PolynomialDecayLR``, ``WarmUpLR``).
Arguments are spelled and validated as MindSpore does (e.g. floats must be
written as floats: ``0.0``, not ``0``).

Semantics follow MindSpore's *code* (``semantics.md`` §2), not its docstrings:

* list functions are epoch-granular: ``current_epoch = i // step_per_epoch``.
  They become ``unit: epoch`` nodes, the plan gets ``steps_per_epoch =
  step_per_epoch`` (which must then be the same for every list function) and
  ``total_steps`` = the list's length (MindSpore fails past the end of a list);
* cells are per step (``unit`` inherited: the plan's ``step_unit`` is ``iter``)
  and have no horizon;
* ``natural_exp_decay_lr``/``NaturalExpDecayLR`` ignore the decay epoch/steps
  unless ``is_stair``; cosine, polynomial and warmup schedules clamp;
* the schedule's base (``learning_rate``, ``max_lr``) becomes the optimizer's (or
  the group's) lr; piecewise values and plain lists are absolute.

Concatenated parts with different bases are rebased onto the first part's base
(scaled by a :class:`~optbridge.ir.Chain` with a constant factor), so the plan
reproduces every list element.

Optimizers: ``SGD``, ``Momentum`` (plan type SGD; ``use_nesterov`` -> ``nesterov``,
although MindSpore's CPU kernel ignores it), ``Adam`` (MindSpore applies eps
outside the bias correction, "eps-hat"; the plan type is torch's Adam) and
``AdamWeightDecay`` (plan type ``AdamWeightDecay``). Not modelled: the name
filter MindSpore applies to weight decay when params are *not* grouped (names
containing ``beta`` or ``gamma`` get no decay; write ``group_params`` to say so),
and the float32 ``lr + 1 - 1`` rounding of static group lrs next to dynamic ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import ir
from ..configio import expect_mapping, selectors_from_config
from ..errors import ConfigError
from ..plan import Group, OptimizerSpec, Plan
from ._common import REQUIRED, check_document, check_keywords, group_path, join, make_node, suggest
from ._common import description as _description

__all__ = ["parse", "looks_like", "from_mindspore", "LIST_FUNCTIONS", "CELLS", "OPTIMIZERS"]

_TOP_KEYS = ("dialect", "description", "optimizer", "learning_rate", "group_params", "step_unit",
             "steps_per_epoch", "total_steps")
_GROUP_KEYS = ("params", "lr", "weight_decay", "name")
_MS_GROUP_KEYS = ("params", "lr", "weight_decay", "grad_centralization", "order_params")

_DECAY = {"learning_rate": REQUIRED, "decay_rate": REQUIRED, "total_step": REQUIRED, "step_per_epoch": REQUIRED,
          "decay_epoch": REQUIRED, "is_stair": False}
#: mindspore.nn dynamic-lr list functions and their arguments.
LIST_FUNCTIONS: dict[str, dict[str, Any]] = {
    "piecewise_constant_lr": {"milestone": REQUIRED, "learning_rates": REQUIRED},
    "exponential_decay_lr": dict(_DECAY),
    "natural_exp_decay_lr": dict(_DECAY),
    "inverse_decay_lr": dict(_DECAY),
    "cosine_decay_lr": {"min_lr": REQUIRED, "max_lr": REQUIRED, "total_step": REQUIRED, "step_per_epoch": REQUIRED,
                        "decay_epoch": REQUIRED},
    "polynomial_decay_lr": {"learning_rate": REQUIRED, "end_learning_rate": REQUIRED, "total_step": REQUIRED,
                            "step_per_epoch": REQUIRED, "decay_epoch": REQUIRED, "power": REQUIRED,
                            "update_decay_epoch": False},
    "warmup_lr": {"learning_rate": REQUIRED, "total_step": REQUIRED, "step_per_epoch": REQUIRED,
                  "warmup_epoch": REQUIRED},
}
_CELL_DECAY = {"learning_rate": REQUIRED, "decay_rate": REQUIRED, "decay_steps": REQUIRED, "is_stair": False}
#: mindspore.nn LearningRateSchedule cells and their arguments.
CELLS: dict[str, dict[str, Any]] = {
    "ExponentialDecayLR": dict(_CELL_DECAY),
    "NaturalExpDecayLR": dict(_CELL_DECAY),
    "InverseDecayLR": dict(_CELL_DECAY),
    "CosineDecayLR": {"min_lr": REQUIRED, "max_lr": REQUIRED, "decay_steps": REQUIRED},
    "PolynomialDecayLR": {"learning_rate": REQUIRED, "end_learning_rate": REQUIRED, "decay_steps": REQUIRED,
                          "power": REQUIRED, "update_decay_steps": False},
    "WarmUpLR": {"learning_rate": REQUIRED, "warmup_steps": REQUIRED},
}
#: mindspore.nn optimizers read by the dialect (``learning_rate`` handled separately).
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "SGD": {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False, "loss_scale": 1.0},
    "Momentum": {"momentum": REQUIRED, "weight_decay": 0.0, "loss_scale": 1.0, "use_nesterov": False},
    "Adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "use_locking": False, "use_nesterov": False,
             "weight_decay": 0.0, "loss_scale": 1.0, "use_amsgrad": False},
    "AdamWeightDecay": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-6, "weight_decay": 0.0},
}
#: MindSpore's default learning_rate per optimizer (REQUIRED: no default).
_DEFAULT_LR = {"SGD": 0.1, "Momentum": REQUIRED, "Adam": 1e-3, "AdamWeightDecay": 1e-3}
_OTHER_MS_OPTIMIZERS = ("LARS", "LazyAdam", "AdamOffload", "Lamb", "ASGD", "Rprop", "FTRL", "RMSProp",
                        "ProximalAdagrad", "Adagrad", "AdaFactor", "AdaMax", "Adadelta", "thor")


# --------------------------------------------------------------------------- MindSpore's validators

def _pos_int(path: str, v: Any) -> int:
    """validator.check_positive_int: an int (not bool, not float) > 0."""
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError(path, "must be a positive integer", v)
    return v


def _float(path: str, v: Any, rel: str | None = None) -> float:
    """validator.check_is_float / check_positive_float / check_non_negative_float: the float type, finite, rel 0."""
    if not isinstance(v, float):
        rule = {"pos": "must be a positive float", "nonneg": "must be a non-negative float"}.get(rel or "",
                                                                                                 "must be a float")
        raise ConfigError(path, f"{rule} (MindSpore requires the float type: write 1 as 1.0)", v)
    if not math.isfinite(v):
        raise ConfigError(path, "must be a finite float", v)
    if rel == "pos" and not v > 0:
        raise ConfigError(path, "must be a positive float", v)
    if rel == "nonneg" and not v >= 0:
        raise ConfigError(path, "must be a non-negative float", v)
    return v


def _number(path: str, v: Any, *, nonneg: bool = True) -> float:
    """A float or int (MindSpore converts ints with float()), finite, >= 0."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise ConfigError(path, "must be a number", v)
    if nonneg and v < 0:
        raise ConfigError(path, "must be >= 0", v)
    return float(v)


def _bool(path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(path, "must be true or false", v)
    return v


# --------------------------------------------------------------------------- learning rates

@dataclass
class _Lr:
    """A parsed learning_rate: node (None for a constant), base, and the list's length/epoch size."""

    node: ir.Node | None
    base: float
    path: str
    total: int | None = None           # length of the lr list (list functions, plain lists)
    spe: int | None = None             # step_per_epoch of its list functions
    spe_path: str | None = None
    shape: str = "scale"               # scale: base * f(k); affine: end + (base - end) f(k); absolute


def _list_function(kind: str, a: dict[str, Any], path: str) -> _Lr:
    p = lambda k: join(path, k)  # noqa: E731
    if kind == "piecewise_constant_lr":
        ms, lrs = a["milestone"], a["learning_rates"]
        if not isinstance(ms, (list, tuple)):
            raise ConfigError(p("milestone"), "must be a list of integers", ms)
        if not isinstance(lrs, (list, tuple)):
            raise ConfigError(p("learning_rates"), "must be a list of floats", lrs)
        if len(ms) != len(lrs):
            raise ConfigError(p("learning_rates"), f"must have as many entries as milestone ({len(ms)}), as MindSpore "
                              "requires", list(lrs))
        if not ms:
            raise ConfigError(p("milestone"), "must not be empty", list(ms))
        last = 0
        bounds: list[int] = []
        values: list[float] = []
        for i, (m, v) in enumerate(zip(ms, lrs)):
            _pos_int(f"{p('milestone')}[{i}]", m)
            _float(f"{p('learning_rates')}[{i}]", v)
            if m < last:
                raise ConfigError(f"{p('milestone')}[{i}]", f"must be >= milestone[{i - 1}] ({last})", m)
            if m > last:  # an interval of length 0 holds no step
                if values:
                    bounds.append(last)
                values.append(v)
            last = m
        node = make_node(ir.Piecewise, path, {"values": "learning_rates", "boundaries": "milestone"},
                         boundaries=tuple(bounds), values=tuple(values))
        return _Lr(node, values[0], path, total=ms[-1], shape="absolute")

    if kind in ("exponential_decay_lr", "natural_exp_decay_lr", "inverse_decay_lr"):
        # dynamic_lr._check_inputs order
        total = _pos_int(p("total_step"), a["total_step"])
        spe = _pos_int(p("step_per_epoch"), a["step_per_epoch"])
        de = _pos_int(p("decay_epoch"), a["decay_epoch"])
        lr = _float(p("learning_rate"), a["learning_rate"], "pos")
        rate = _float(p("decay_rate"), a["decay_rate"], "pos")
        stair = _bool(p("is_stair"), a["is_stair"])
        if kind == "exponential_decay_lr":
            node = ir.Exponential(gamma=rate, every=de, stair=stair, unit="epoch")
        elif kind == "natural_exp_decay_lr":
            node = ir.NaturalExp(rate=rate, every=de, stair=stair, unit="epoch")
        else:
            node = ir.InverseTime(rate=rate, every=de, stair=stair, unit="epoch")
        return _Lr(node, lr, path, total, spe, p("step_per_epoch"))

    if kind == "cosine_decay_lr":
        mn = _float(p("min_lr"), a["min_lr"], "nonneg")
        mx = _float(p("max_lr"), a["max_lr"], "pos")
        total = _pos_int(p("total_step"), a["total_step"])
        spe = _pos_int(p("step_per_epoch"), a["step_per_epoch"])
        de = _pos_int(p("decay_epoch"), a["decay_epoch"])
        if mn >= mx:
            raise ConfigError(p("max_lr"), f"must be greater than min_lr ({mn})", mx)
        node = ir.Cosine(steps=de, end=mn, clamp=True, unit="epoch")
        return _Lr(node, mx, path, total, spe, p("step_per_epoch"), shape="affine")

    if kind == "polynomial_decay_lr":
        lr = _float(p("learning_rate"), a["learning_rate"], "pos")
        end = _float(p("end_learning_rate"), a["end_learning_rate"], "nonneg")
        power = _float(p("power"), a["power"], "pos")
        total = _pos_int(p("total_step"), a["total_step"])
        spe = _pos_int(p("step_per_epoch"), a["step_per_epoch"])
        de = _pos_int(p("decay_epoch"), a["decay_epoch"])
        cycle = _bool(p("update_decay_epoch"), a["update_decay_epoch"])
        node = ir.Polynomial(steps=de, power=power, end=end, cycle=cycle, unit="epoch")
        return _Lr(node, lr, path, total, spe, p("step_per_epoch"), shape="affine")

    assert kind == "warmup_lr"
    lr = _float(p("learning_rate"), a["learning_rate"], "nonneg")
    we = _pos_int(p("warmup_epoch"), a["warmup_epoch"])
    total = _pos_int(p("total_step"), a["total_step"])
    spe = _pos_int(p("step_per_epoch"), a["step_per_epoch"])
    node = ir.Linear(start_factor=0.0, end_factor=1.0, steps=we, unit="epoch")
    return _Lr(node, lr, path, total, spe, p("step_per_epoch"))


def _cell(kind: str, a: dict[str, Any], path: str) -> _Lr:
    p = lambda k: join(path, k)  # noqa: E731
    if kind in ("ExponentialDecayLR", "NaturalExpDecayLR", "InverseDecayLR"):
        ds = _pos_int(p("decay_steps"), a["decay_steps"])
        lr = _float(p("learning_rate"), a["learning_rate"], "pos")
        rate = _float(p("decay_rate"), a["decay_rate"], "pos")
        stair = _bool(p("is_stair"), a["is_stair"])
        node: ir.Node
        if kind == "ExponentialDecayLR":
            node = ir.Exponential(gamma=rate, every=ds, stair=stair)
        elif kind == "NaturalExpDecayLR":
            node = ir.NaturalExp(rate=rate, every=ds, stair=stair)
        else:
            node = ir.InverseTime(rate=rate, every=ds, stair=stair)
        return _Lr(node, lr, path)
    if kind == "CosineDecayLR":
        mn = _float(p("min_lr"), a["min_lr"], "nonneg")
        mx = _float(p("max_lr"), a["max_lr"], "pos")
        ds = _pos_int(p("decay_steps"), a["decay_steps"])
        if mn >= mx:
            raise ConfigError(p("max_lr"), f"must be greater than min_lr ({mn})", mx)
        return _Lr(ir.Cosine(steps=ds, end=mn, clamp=True), mx, path, shape="affine")
    if kind == "PolynomialDecayLR":
        lr = _float(p("learning_rate"), a["learning_rate"], "pos")
        end = _float(p("end_learning_rate"), a["end_learning_rate"], "nonneg")
        ds = _pos_int(p("decay_steps"), a["decay_steps"])
        cycle = _bool(p("update_decay_steps"), a["update_decay_steps"])
        power = _float(p("power"), a["power"], "pos")
        return _Lr(ir.Polynomial(steps=ds, power=power, end=end, cycle=cycle), lr, path, shape="affine")
    assert kind == "WarmUpLR"
    lr = _float(p("learning_rate"), a["learning_rate"], "nonneg")
    ws = _pos_int(p("warmup_steps"), a["warmup_steps"])
    return _Lr(ir.Linear(start_factor=0.0, end_factor=1.0, steps=ws), lr, path)


def _spec(v: Any, path: str, *, allow_cell: bool = True) -> _Lr:
    v = expect_mapping(path, v)
    kind = v.get("type")
    if "type" not in v:
        raise ConfigError(join(path, "type"), "is required (a dynamic-lr function such as cosine_decay_lr, or a "
                          "LearningRateSchedule cell such as CosineDecayLR)", None, show_value=False)
    known = list(LIST_FUNCTIONS) + (list(CELLS) if allow_cell else [])
    if not isinstance(kind, str) or kind not in known:
        if isinstance(kind, str) and kind in CELLS:
            raise ConfigError(join(path, "type"), "a LearningRateSchedule cell cannot be concatenated with lists "
                              "(MindSpore takes one cell as the learning_rate); use the list functions", kind)
        raise ConfigError(join(path, "type"), "is not a MindSpore dynamic-lr function or cell" + suggest(kind, known)
                          + " (known: " + ", ".join(known) + ")", kind)
    args = {k: x for k, x in v.items() if k != "type"}
    if kind in LIST_FUNCTIONS:
        return _list_function(kind, check_keywords(path, args, LIST_FUNCTIONS[kind], f"nn.{kind}"), path)
    return _cell(kind, check_keywords(path, args, CELLS[kind], f"nn.{kind}"), path)


def _rebase(part: _Lr, base: float) -> ir.Node:
    """``part``'s node as seen from a Sequence whose base is ``base`` (not ``part.base``)."""
    assert part.node is not None
    if part.shape == "absolute" or part.base == base:
        return part.node
    r = part.base / base
    node = part.node
    if part.shape == "affine" and isinstance(node, (ir.Cosine, ir.Polynomial)) and node.end != 0.0:
        # end + (b - end) f  ==  r * (end/r + (base - end/r) f)   with b = r * base
        node = dataclasses.replace(node, end=node.end / r)
    return ir.Chain(parts=(node, ir.Constant(factor=r)))


def _learning_rate(v: Any, path: str) -> _Lr:
    """Parse a learning_rate: number, list of numbers, spec, or list of list-function specs."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return _Lr(None, _number(path, v), path)
    if isinstance(v, Mapping):
        return _spec(v, path)
    if isinstance(v, (list, tuple)):
        if not v:
            raise ConfigError(path, "must not be an empty list", list(v))
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            vals = tuple(_number(f"{path}[{i}]", x) for i, x in enumerate(v))
            return _Lr(ir.Table(values=vals), vals[0], path, total=len(vals), shape="absolute")
        parts: list[_Lr] = []
        for i, x in enumerate(v):
            if not isinstance(x, Mapping):
                raise ConfigError(f"{path}[{i}]", "must be a list-function spec such as {type: warmup_lr, ...} "
                                  "(a list is either all numbers or all list functions)", x)
            parts.append(_spec(x, f"{path}[{i}]", allow_cell=False))
        if len(parts) == 1:
            return parts[0]
        spe, spe_path = None, None
        for part in parts:
            if part.spe is not None:
                if spe is not None and part.spe != spe:
                    raise ConfigError(part.spe_path or part.path, f"must equal the step_per_epoch of the other list "
                                      f"functions ({spe}): the plan has one steps_per_epoch", part.spe)
                spe, spe_path = part.spe, part.spe_path
        relative = [p for p in parts if p.shape != "absolute"]
        base = next((p.base for p in relative if p.base != 0.0), relative[0].base if relative else parts[0].base)
        bounds, acc = [], 0
        totals = [p.total for p in parts]
        for total in totals[:-1]:
            assert total is not None  # parts are list functions (allow_cell=False): each has its length
            acc += total
            bounds.append(acc)
        last = totals[-1]
        assert last is not None
        node = ir.Sequence(parts=tuple(_rebase(p, base) for p in parts), boundaries=tuple(bounds), unit="iter")
        return _Lr(node, base, path, total=acc + last, spe=spe, spe_path=spe_path,
                   shape="absolute" if not relative else "scale")
    raise ConfigError(path, "must be a number, a list of numbers, a dynamic-lr function or cell spec, or a list of "
                      "list-function specs", v)


# --------------------------------------------------------------------------- the document

def _optimizer(opt: Mapping[str, Any]) -> tuple[str, dict[str, Any], Any]:
    """MindSpore optimizer dict -> (plan type, plan options without lr, raw learning_rate or None)."""
    if "type" not in opt:
        raise ConfigError("optimizer.type", "is required (a mindspore.nn optimizer: " + ", ".join(OPTIMIZERS) + ")",
                          None, show_value=False)
    mtype = opt["type"]
    if not isinstance(mtype, str) or mtype not in OPTIMIZERS:
        extra = (" (its update rule is not verified against a plan optimizer type)"
                 if mtype in _OTHER_MS_OPTIMIZERS else suggest(mtype, OPTIMIZERS))
        raise ConfigError("optimizer.type", "must be one of " + ", ".join(OPTIMIZERS) + extra, mtype)
    sig = OPTIMIZERS[mtype]
    given = {k: v for k, v in opt.items() if k not in ("type", "learning_rate")}
    if "lr" in given:
        raise ConfigError("optimizer.lr", "is spelled learning_rate in MindSpore", given["lr"])
    a = check_keywords("optimizer", given, sig, f"nn.{mtype}")
    p = lambda k: f"optimizer.{k}"  # noqa: E731
    out: dict[str, Any] = {"weight_decay": _number(p("weight_decay"), a["weight_decay"])}
    if "loss_scale" in a:
        ls = _number(p("loss_scale"), a["loss_scale"])
        if ls != 1.0:
            raise ConfigError(p("loss_scale"), "must be 1.0: a loss_scale divides the gradients (the plan does not "
                              "model loss scaling)", a["loss_scale"])
    if mtype == "SGD":
        for key in ("momentum", "dampening"):
            v = a[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(p(key), "must be a float", v)
            if v < 0.0:
                raise ConfigError(p(key), "must be at least 0.0", v)
        nesterov = _bool(p("nesterov"), a["nesterov"])
        if nesterov and (a["momentum"] <= 0.0 or a["dampening"] != 0.0):
            raise ConfigError(p("nesterov"), "needs momentum > 0.0 and dampening == 0.0 (MindSpore's SGD requires it)",
                              nesterov)
        out.update(momentum=float(a["momentum"]), dampening=float(a["dampening"]), nesterov=nesterov)
        return "SGD", out, opt.get("learning_rate")
    if mtype == "Momentum":
        m = a["momentum"]
        if not isinstance(m, float):
            raise ConfigError(p("momentum"), "must be a float (MindSpore's Momentum requires the float type: write 1 "
                              "as 1.0)", m)
        if m < 0.0:
            raise ConfigError(p("momentum"), "must be at least 0.0", m)
        out.update(momentum=m, dampening=0.0, nesterov=_bool(p("use_nesterov"), a["use_nesterov"]))
        return "SGD", out, opt.get("learning_rate")
    # Adam / AdamWeightDecay: adam._check_param_value
    for key in ("beta1", "beta2"):
        v = a[key]
        if not isinstance(v, float):
            raise ConfigError(p(key), "must be a float (MindSpore requires the float type)", v)
        if not 0.0 < v < 1.0:
            raise ConfigError(p(key), "must be in the open interval (0, 1)", v)
    eps = _float(p("eps"), a["eps"], "pos")
    if mtype == "Adam":
        _bool(p("use_locking"), a["use_locking"])
        if _bool(p("use_nesterov"), a["use_nesterov"]):
            raise ConfigError(p("use_nesterov"), "is not supported (no plan optimizer has Adam with nesterov)", True)
        if _bool(p("use_amsgrad"), a["use_amsgrad"]):
            raise ConfigError(p("use_amsgrad"), "is not supported (MindSpore's amsgrad is not verified against "
                              "torch's)", True)
    out.update(betas=(a["beta1"], a["beta2"]), eps=eps)
    return mtype, out, opt.get("learning_rate")


def parse(d: Mapping[str, Any]) -> Plan:
    """Build a plan from a MindSpore-dialect document (see the module docstring).

    Raises:
        ConfigError: naming the dialect path (``learning_rate.decay_epoch``), the rule and the value.
    """
    d = check_document(d, "mindspore", _TOP_KEYS)
    if "optimizer" not in d:
        raise ConfigError("optimizer", "is required (e.g. {type: Momentum, momentum: 0.9})", None, show_value=False)
    opt = expect_mapping("optimizer", d["optimizer"])
    mtype = opt.get("type")
    ptype, options, inner_lr = _optimizer(opt)
    if inner_lr is not None and "learning_rate" in d:
        raise ConfigError("learning_rate", "is also given inside optimizer: give it once", d["learning_rate"])
    if "learning_rate" in d:
        lr_raw, lr_path = d["learning_rate"], "learning_rate"
    elif inner_lr is not None:
        lr_raw, lr_path = inner_lr, "optimizer.learning_rate"
    else:
        default = _DEFAULT_LR[str(mtype)]
        if default is REQUIRED:
            raise ConfigError("learning_rate", f"is required (nn.{mtype} has no default learning_rate)", None,
                              show_value=False)
        lr_raw, lr_path = default, "learning_rate"
    top = _learning_rate(lr_raw, lr_path)
    options["lr"] = top.base

    # ---- groups
    lists: list[_Lr] = [top] if top.total is not None else []
    epochs: list[_Lr] = [top] if top.spe is not None else []
    raw_groups = d.get("group_params")
    groups: list[tuple[str, tuple, dict[str, Any], _Lr | None, str]] = []
    if raw_groups is not None:
        if not isinstance(raw_groups, list) or not raw_groups:
            raise ConfigError("group_params", "must be a non-empty list of group dicts", raw_groups)
        for i, g in enumerate(raw_groups):
            gp = f"group_params[{i}]"
            g = expect_mapping(gp, g)
            for key in g:
                if key not in _GROUP_KEYS:
                    why = ("is not supported by optbridge" if key in _MS_GROUP_KEYS
                           else "is not a MindSpore group key" + suggest(key, _GROUP_KEYS))
                    raise ConfigError(f"{gp}.{key}", f"{why} (MindSpore group dicts accept "
                                      + ", ".join(_MS_GROUP_KEYS) + "; optbridge reads " + ", ".join(_GROUP_KEYS) + ")",
                                      g[key])
            if "params" not in g:
                raise ConfigError(f"{gp}.params", "is required (a glob, a list, a selector mapping or 'rest')", None,
                                  show_value=False)
            gopts: dict[str, Any] = {}
            glr = None
            if "lr" in g:
                glr = _learning_rate(g["lr"], f"{gp}.lr")
                gopts["lr"] = glr.base
                if glr.total is not None:
                    lists.append(glr)
                if glr.spe is not None:
                    epochs.append(glr)
            if "weight_decay" in g:
                gopts["weight_decay"] = _number(f"{gp}.weight_decay", g["weight_decay"])
            groups.append((g.get("name", f"group{i}"), selectors_from_config(g["params"], f"{gp}.params"), gopts, glr,
                           gp))
    else:
        groups.append(("all", selectors_from_config("rest", "group_params"), {}, None, "optimizer"))

    # ---- one clock: list lengths and epoch sizes must agree
    total = None
    for x in lists:
        if total is None:
            total = x.total
        elif x.total != total:
            raise ConfigError(x.path, f"must be as long as the other lr lists ({total} steps; MindSpore requires "
                              f"dynamic lrs of equal length), got {x.total} steps", x.total)
    spe = None
    for x in epochs:
        if spe is None:
            spe = x.spe
        elif x.spe != spe:
            raise ConfigError(x.spe_path or x.path, f"must equal the step_per_epoch of the other list functions "
                              f"({spe}): the plan has one steps_per_epoch", x.spe)
    step_unit = d.get("step_unit", "iter")
    if step_unit != "iter":
        raise ConfigError("step_unit", "must be iter (MindSpore optimizers evaluate the lr at every update)", step_unit)
    if d.get("steps_per_epoch") is not None:
        if spe is not None and d["steps_per_epoch"] != spe:
            raise ConfigError("steps_per_epoch", f"must equal the list functions' step_per_epoch ({spe})",
                              d["steps_per_epoch"])
        spe = d["steps_per_epoch"]
    if d.get("total_steps") is not None:
        t = d["total_steps"]
        if total is not None and isinstance(t, int) and not isinstance(t, bool) and t > total:
            raise ConfigError("total_steps", f"must be at most the length of the lr lists ({total}): MindSpore fails "
                              "past the end of an lr list", t)
        total = t

    # ---- assemble
    plan_schedule = {"lr": top.node} if top.node is not None else {}
    built = []
    for name, select, gopts, glr, gp in groups:
        sched: dict[str, ir.Node] = {}
        if glr is not None:
            if glr.node is not None:
                sched["lr"] = glr.node
            elif plan_schedule:  # a static group lr next to a dynamic optimizer lr
                sched["lr"] = ir.Constant()
        try:
            built.append(Group(name=name, select=select, options=gopts, schedule=sched))
        except ConfigError as e:
            raise e.under(gp) from None
    try:
        spec = OptimizerSpec(type=ptype, options=options, groups=tuple(built))
    except ConfigError as e:
        raise group_path(e, [g[4] for g in groups], "optimizer", "group_params") from None
    try:
        return Plan(optimizers=(spec,), schedule=plan_schedule, step_unit="iter", steps_per_epoch=spe,
                    total_steps=total, **_description(d))
    except ConfigError as e:
        raise group_path(e, [g[4] for g in groups], "", "group_params") from None


from_mindspore = parse  # the reader's former name (optbridge.from_mindspore is the live-object importer)


def looks_like(doc: Mapping[str, Any]) -> bool:
    """True when ``doc`` has ``learning_rate`` or ``group_params`` (top level or ``optimizer.learning_rate``)."""
    opt = doc.get("optimizer")
    return any(k in doc for k in ("learning_rate", "group_params")) or (
        isinstance(opt, Mapping) and "learning_rate" in opt)
