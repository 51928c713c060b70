"""The Hugging Face dialect: ``TrainingArguments`` fields and ``transformers.get_scheduler`` (transformers 4.57).

A document::

    dialect: hf
    learning_rate: 5.0e-5
    weight_decay: 0.01
    optim: adamw_torch
    adam_beta1: 0.9
    adam_beta2: 0.999
    adam_epsilon: 1.0e-8
    lr_scheduler_type: cosine_with_restarts
    lr_scheduler_kwargs: {num_cycles: 3}
    warmup_ratio: 0.1                  # or warmup_steps: 500
    num_train_epochs: 3                # with steps_per_epoch (optimizer updates per epoch), or max_steps: 10000
    steps_per_epoch: 1000

What the translation models (transformers' code):

* **Training loop.** The Trainer calls ``lr_scheduler.step()`` after every
  optimizer update; every HF schedule is a ``LambdaLR``, so update ``k`` uses
  ``learning_rate * f(k)``. Each ``f`` becomes a ``lambda`` node spelling the
  library's own function (``optimization.py``) with its constants.
* **Lengths.** ``num_training_steps`` is ``max_steps`` when it is positive,
  else ``ceil(num_train_epochs * steps_per_epoch)`` (the Trainer's rule, with
  ``steps_per_epoch`` the optimizer updates per epoch); the warmup is
  ``warmup_steps`` when positive, else ``ceil(num_training_steps *
  warmup_ratio)`` (``TrainingArguments.get_warmup_steps``).
* **reduce_lr_on_plateau** is torch's ReduceLROnPlateau with
  ``lr_scheduler_kwargs``; the Trainer steps it after each evaluation, so the
  plan's plateau runs on an epoch clock of ``eval_steps`` updates.
* **Groups.** The Trainer's no-decay rule (``Trainer.get_decay_parameter_names``):
  parameters inside an ``nn.LayerNorm`` and parameters whose lower-cased name
  contains ``bias``, ``layernorm``, ``rmsnorm``, a ``norm`` path component or
  ``_norm`` get weight decay 0. Without a model this is the group ``no_decay``
  with the selectors ``modules: [LayerNorm]`` and a case-insensitive name
  regex (a ``LayerNorm`` subclass with another class name is not caught by
  the module selector: pass ``parse(doc, model=...)``, which lists the exact
  names); the group ``decay`` (listed first, as the Trainer does) takes the
  rest.

Refused, with the reason: optimizers that are not ``torch.optim`` classes
(``adafactor``, 8-bit, GaLore, ...), keyword arguments that ``get_scheduler``
ignores for a schedule (``constant``, ``inverse_sqrt``), and fields this
dialect does not read (they are listed in the error).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .. import ir
from ..errors import ConfigError
from ..plan import Clip, Group, OptimizerSpec, Plan, Selector
from ._common import REQUIRED, check_document, check_keywords, description, expect_mapping

__all__ = ["parse", "looks_like", "SCHEDULES", "NO_DECAY_PATTERNS", "FIELDS"]

#: The TrainingArguments fields this dialect reads, with transformers 4.57's defaults.
FIELDS: dict[str, Any] = {
    "learning_rate": 5e-5, "weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8,
    "optim": "adamw_torch", "lr_scheduler_type": "linear", "lr_scheduler_kwargs": None, "warmup_steps": 0,
    "warmup_ratio": 0.0, "max_steps": -1, "num_train_epochs": 3.0, "eval_steps": None, "max_grad_norm": 1.0,
}
_TOP_KEYS = ("dialect", "description", "steps_per_epoch", *FIELDS)
_MARKERS = ("lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps", "num_train_epochs",
            "max_steps", "adam_beta1", "adam_beta2", "adam_epsilon", "optim")

#: ``get_scheduler`` names -> the keyword arguments ``scheduler_specific_kwargs`` may carry, with defaults.
SCHEDULES: dict[str, dict[str, Any]] = {
    "linear": {}, "cosine": {"num_cycles": 0.5}, "cosine_with_restarts": {"num_cycles": 1},
    "polynomial": {"lr_end": 1e-7, "power": 1.0}, "constant": {}, "constant_with_warmup": {},
    "inverse_sqrt": {}, "reduce_lr_on_plateau": {
        "mode": "min", "factor": 0.1, "patience": 10, "threshold": 1e-4, "threshold_mode": "rel", "cooldown": 0,
        "min_lr": 0.0, "eps": 1e-8},
    "cosine_with_min_lr": {"num_cycles": 0.5, "min_lr": None, "min_lr_rate": None},
    "cosine_warmup_with_min_lr": {"num_cycles": 0.5, "min_lr": None, "min_lr_rate": None, "warmup_lr_rate": None},
    "warmup_stable_decay": {"num_decay_steps": REQUIRED, "num_stable_steps": None, "warmup_type": "linear",
                            "decay_type": "cosine", "min_lr_ratio": 0.0, "num_cycles": 0.5},
}

#: Trainer.get_decay_parameter_names: regexes searched in the lower-cased parameter name.
NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")

#: ``optim`` names that are torch.optim classes, with the class and whether Adam's betas/eps apply.
_OPTIMS = {"adamw_torch": ("AdamW", True), "adamw_torch_fused": ("AdamW", True), "sgd": ("SGD", False),
           "adagrad": ("Adagrad", False), "rmsprop": ("RMSprop", False)}


def looks_like(doc: Mapping[str, Any]) -> bool:
    """True when ``doc`` has a ``TrainingArguments`` field no other dialect uses (``lr_scheduler_type``, ...)."""
    return any(k in doc for k in _MARKERS)


def _f(x: float | int) -> str:
    return repr(float(x))


def _num(path: str, v: Any, *, minimum: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(path, "must be a finite number", v)
    if minimum is not None and v < minimum:
        raise ConfigError(path, f"must be >= {minimum:g}", v)
    return float(v)


def _int(path: str, v: Any, minimum: int = 0) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum or v > 2**53:
        raise ConfigError(path, f"must be an integer >= {minimum}", v)
    return v


def _warm(W: int) -> str:
    """HF's linear warmup ``float(current_step) / float(max(1, num_warmup_steps))``."""
    return f"k / {_f(max(1, W))}"


def _lambda(name: str, kw: Mapping[str, Any], W: int, N: int | None, lr: float) -> str:
    """The body of HF's lr_lambda for schedule ``name`` (relative to the base lr)."""
    p = "lr_scheduler_kwargs"
    if name == "constant":
        return "1"
    if name == "constant_with_warmup":
        return f"k / {_f(max(1.0, W))} if k < {W} else 1.0"
    if name == "inverse_sqrt":
        timescale = W or 10_000
        return f"{_warm(W)} if k < {W} else 1.0 / sqrt((k + {timescale - W}) / {timescale})"
    if N is None:
        raise ConfigError("max_steps", f"or num_train_epochs with steps_per_epoch is required by {name} "
                          "(num_training_steps)", None, show_value=False)
    D = _f(max(1, N - W))
    progress = f"((k - {W}) / {D})"
    if name == "linear":
        return f"{_warm(W)} if k < {W} else max(0.0, ({N} - k) / {D})"
    if name == "cosine":
        c = _f(_num(f"{p}.num_cycles", kw["num_cycles"]))
        return f"{_warm(W)} if k < {W} else max(0.0, 0.5 * (1.0 + cos(pi * {c} * 2.0 * {progress})))"
    if name == "cosine_with_restarts":
        c = _f(_num(f"{p}.num_cycles", kw["num_cycles"]))
        return (f"{_warm(W)} if k < {W} else (0.0 if {progress} >= 1.0 else "
                f"max(0.0, 0.5 * (1.0 + cos(pi * (({c} * {progress}) % 1.0)))))")
    if name == "polynomial":
        end, power = _num(f"{p}.lr_end", kw["lr_end"]), _num(f"{p}.power", kw["power"])
        if not lr > end:
            raise ConfigError("learning_rate", f"must be greater than lr_end ({end!r}), as transformers requires", lr)
        if N == W:
            raise ConfigError("warmup_steps", "must leave decay steps for polynomial (num_training_steps - warmup "
                              "would be 0: transformers divides by it)", W)
        return (f"{_warm(W)} if k < {W} else ({_f(end)} / {_f(lr)} if k > {N} else "
                f"({_f(lr - end)} * (1 - (k - {W}) / {N - W}) ** {_f(power)} + {_f(end)}) / {_f(lr)})")
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        if kw["min_lr"] is not None and kw["min_lr_rate"] is not None:
            raise ConfigError(f"{p}.min_lr_rate", "cannot be given with min_lr (transformers raises)",
                              kw["min_lr_rate"])
        if kw["min_lr"] is not None:
            rate = _num(f"{p}.min_lr", kw["min_lr"]) / lr
        elif kw["min_lr_rate"] is not None:
            rate = _num(f"{p}.min_lr_rate", kw["min_lr_rate"])
        else:
            raise ConfigError(f"{p}.min_lr", f"or min_lr_rate is required by {name}", None, show_value=False)
        c, r = _f(_num(f"{p}.num_cycles", kw["num_cycles"])), _f(rate)
        if name == "cosine_with_min_lr":
            return (f"{_warm(W)} if k < {W} else max(0, 0.5 * (1.0 + cos(pi * {c} * 2.0 * {progress})) * "
                    f"(1 - {r}) + {r})")
        wr = kw["warmup_lr_rate"]
        warm = (f"(k + 1.0) / {_f(max(1.0, W))}" if wr is None else
                f"{_f(_num(f'{p}.warmup_lr_rate', wr))} + (1.0 - {_f(wr)}) * k / {_f(max(1, W - 1))}")
        prog = f"((k - {_f(W)} + 1.0) / {_f(max(1.0, float(N) - W))})"
        return f"{warm} if k < {W} else max(0, 0.5 * (1.0 + cos(pi * {c} * 2.0 * {prog})) * (1 - {r}) + {r})"
    # warmup_stable_decay (get_scheduler passes num_training_steps)
    decay = _int(f"{p}.num_decay_steps", kw["num_decay_steps"])
    stable = N - W - decay if kw["num_stable_steps"] is None else _int(f"{p}.num_stable_steps", kw["num_stable_steps"])
    m, c = _f(_num(f"{p}.min_lr_ratio", kw["min_lr_ratio"])), _f(_num(f"{p}.num_cycles", kw["num_cycles"]))
    shapes = {"linear": "{x}", "cosine": "0.5 * (1.0 - cos(pi * {x}))", "1-sqrt": "1.0 - sqrt(1.0 - {x})"}
    decays = {"linear": "1.0 - {x}", "cosine": f"0.5 * (1.0 + cos(pi * {c} * 2.0 * {{x}}))",
              "1-sqrt": "1.0 - sqrt({x})"}
    for key, table in (("warmup_type", shapes), ("decay_type", decays)):
        if not isinstance(kw[key], str) or kw[key] not in table:
            raise ConfigError(f"{p}.{key}", "must be one of " + ", ".join(table), kw[key])
    wx = f"(k / {_f(max(1, W))})"
    dx = f"((k - {W} - {stable}) / {_f(max(1, decay))})"
    warm = f"max(0.0, ({shapes[kw['warmup_type']].format(x=wx)}) * (1.0 - {m}) + {m})"
    dec = f"max(0.0, ({decays[kw['decay_type']].format(x=dx)}) * (1.0 - {m}) + {m})"
    return (f"{warm} if k < {W} else (1.0 if k < {W + stable} else ({dec} if k < {W + stable + decay} "
            f"else {m}))")


def _decay_names(model: Any) -> set[str]:
    """The Trainer's decay parameters of ``model`` (``get_parameter_names(model, [LayerNorm], patterns)``)."""
    pats = [re.compile(x) for x in NO_DECAY_PATTERNS]

    def is_layernorm(mod: Any) -> bool:
        return any(c.__name__ == "LayerNorm" and c.__module__.startswith("torch.nn") for c in type(mod).__mro__)

    def walk(mod: Any) -> list[str]:
        out = []
        for name, child in mod.named_children():
            out += [f"{name}.{n}" for n in walk(child) if not is_layernorm(child)
                    and not any(p.search(f"{name}.{n}".lower()) for p in pats)]
        out += [k for k in mod._parameters if not any(p.search(k.lower()) for p in pats)]
        return out

    try:
        return set(walk(model))
    except AttributeError as e:
        raise ConfigError("model", f"must be a torch nn.Module ({e})", type(model).__name__) from None


def _groups(wd: float, model: Any) -> tuple[Group, ...]:
    if model is None:
        no = (Selector(modules=("LayerNorm",)),
              Selector(regex=("(?i).*(?:" + "|".join(NO_DECAY_PATTERNS) + ").*",)))
        return (Group(name="decay", select=(Selector(rest=True),), options={"weight_decay": wd}),
                Group(name="no_decay", select=no, options={"weight_decay": 0.0}))
    decay = _decay_names(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    esc = lambda n: "".join(f"[{c}]" if c in "*?[]" else c for c in n)  # noqa: E731
    out = []
    for gname, members, w in (("decay", [n for n in names if n in decay], wd),
                              ("no_decay", [n for n in names if n not in decay], 0.0)):
        if members:
            out.append(Group(name=gname, select=(Selector(names=tuple(esc(n) for n in members)),),
                             options={"weight_decay": w}))
    return tuple(out)


def parse(doc: Mapping[str, Any], *, model: Any = None) -> Plan:
    """Build a plan from a Hugging Face document (see the module docstring).

    Args:
        doc: The document.
        model: Optional torch model: the groups then list the exact parameter names the Trainer decays.

    Raises:
        ConfigError: naming the field, the rule and the value.
    """
    d = check_document(doc, "hf", _TOP_KEYS)
    a = {k: d.get(k, v) for k, v in FIELDS.items()}
    lr = _num("learning_rate", a["learning_rate"], minimum=0.0)
    wd = _num("weight_decay", a["weight_decay"], minimum=0.0)
    optim = a["optim"]
    if not isinstance(optim, str) or optim not in _OPTIMS:
        raise ConfigError("optim", "must be one of " + ", ".join(_OPTIMS) + " (the optimizers that are torch.optim "
                          "classes)", optim)
    ptype, adam = _OPTIMS[optim]
    options: dict[str, Any] = {"lr": lr}
    if adam:
        options.update(betas=(_num("adam_beta1", a["adam_beta1"]), _num("adam_beta2", a["adam_beta2"])),
                       eps=_num("adam_epsilon", a["adam_epsilon"], minimum=0.0))
    if optim == "adamw_torch_fused":
        options["fused"] = True
    name = a["lr_scheduler_type"]
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ConfigError("lr_scheduler_type", "must be one of " + ", ".join(SCHEDULES), name)
    raw = {} if a["lr_scheduler_kwargs"] is None else expect_mapping("lr_scheduler_kwargs", a["lr_scheduler_kwargs"])
    if raw and name in ("constant", "inverse_sqrt"):
        raise ConfigError("lr_scheduler_kwargs", f"is ignored by transformers.get_scheduler for {name}: remove it",
                          dict(raw))
    kw = check_keywords("lr_scheduler_kwargs", raw, SCHEDULES[name], f"the {name} schedule")
    spe = None if d.get("steps_per_epoch") is None else _int("steps_per_epoch", d["steps_per_epoch"], 1)
    max_steps = _int("max_steps", a["max_steps"], -1) if a["max_steps"] != -1 else -1
    if max_steps > 0:
        N: int | None = max_steps
    elif spe is not None:
        N = math.ceil(_num("num_train_epochs", a["num_train_epochs"], minimum=0.0) * spe)
    else:
        N = None
    ws = _int("warmup_steps", a["warmup_steps"])
    ratio = _num("warmup_ratio", a["warmup_ratio"], minimum=0.0)
    if ws > 0:
        W = ws
    elif ratio > 0:
        if N is None:
            raise ConfigError("warmup_ratio", "needs max_steps, or num_train_epochs with steps_per_epoch", ratio)
        W = math.ceil(N * ratio)
    else:
        W = 0
    step_unit, plan_spe = "iter", spe
    if name == "reduce_lr_on_plateau":
        if a["eval_steps"] is None:
            raise ConfigError("eval_steps", "is required by reduce_lr_on_plateau (the Trainer steps it after each "
                              "evaluation)", None, show_value=False)
        step_unit, plan_spe = "epoch", _int("eval_steps", a["eval_steps"], 1)
        try:
            node: ir.Node = ir.Plateau(mode=kw["mode"], factor=kw["factor"], patience=kw["patience"],
                                       threshold=kw["threshold"], threshold_mode=kw["threshold_mode"],
                                       cooldown=kw["cooldown"], min_value=kw["min_lr"], eps=kw["eps"])
        except ConfigError as e:
            raise ConfigError("lr_scheduler_kwargs." + {"min_value": "min_lr"}.get(e.path, e.path), e.rule,
                              e.value) from None
    else:
        node = ir.Lambda(expr=_lambda(name, kw, W, N, lr))
    try:
        # the Trainer clips the norm of all parameters together before each step (default 1.0; 0/None: off)
        mgn = a["max_grad_norm"]
        clip = None if mgn is None or mgn == 0 else Clip(max_norm=_num("max_grad_norm", mgn, minimum=0.0))
        spec = OptimizerSpec(type=ptype, options=options, groups=_groups(wd, model), clip=clip)
        return Plan(optimizers=(spec,), schedule={"lr": node}, step_unit=step_unit, steps_per_epoch=plan_spe,
                    **description(d))
    except ConfigError as e:
        raise e.under("") from None
