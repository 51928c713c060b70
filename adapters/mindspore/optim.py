"""MindSpore optimizer construction for optbridge plans (one function per family).

* :func:`nn_optimizer`: a ``mindspore.nn`` optimizer over explicit group dicts
  (never MindSpore's beta/gamma weight-decay name filter, never a static group lr
  beside a dynamic one).
* :func:`experimental_optimizer`: a ``mindspore.experimental.optim`` optimizer with
  torch-like groups (its group lrs are float32 Parameters).
* :func:`exact_optimizer`: optbridge's torch-exact optimizer
  (:mod:`optbridge_adapters.mindspore.optimizers`), with the scheduled
  hyperparameters as float64 Parameters.

Which family runs a plan optimizer is decided in :mod:`.choose`; the per-step
mechanisms are in :mod:`.driver` (values), :mod:`.schedulers` (experimental
lr_schedulers) and :mod:`.guard` (checks and clipping).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mindspore import nn
from mindspore.experimental import optim as mopt

from optbridge.errors import ConfigError

from . import optimizers as exact

__all__ = ["nn_optimizer", "experimental_optimizer", "exact_optimizer", "EXPERIMENTAL_KEYS"]

#: The torch options each mindspore.experimental.optim class takes (its constructor's, checked in 2.10).
EXPERIMENTAL_KEYS: dict[str, tuple[str, ...]] = {
    "SGD": ("momentum", "dampening", "weight_decay", "nesterov", "maximize"),
    "Adam": ("betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "AdamW": ("betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "RMSprop": ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    "Adagrad": ("lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"),
    "Adadelta": ("rho", "eps", "weight_decay", "maximize"),
    "Adamax": ("betas", "eps", "weight_decay", "maximize"),
    "NAdam": ("betas", "eps", "weight_decay", "momentum_decay"),
    "RAdam": ("betas", "eps", "weight_decay"),
}


def nn_optimizer(kind: str, groups: list[dict[str, Any]], options: dict[str, Any]) -> nn.Optimizer:
    """A ``mindspore.nn`` optimizer over explicit group dicts (``params``, ``lr``, ``weight_decay``, ``order_params``).

    Args:
        kind: ``SGD`` (nn.SGD), ``Momentum`` (nn.Momentum: momentum without
            dampening/nesterov, for a dynamic weight decay, which nn.SGD refuses),
            ``Adam`` (nn.Adam) or ``AdamWeightDecay``.
        groups: Group dicts; every group has its own ``lr`` and ``weight_decay``.
        options: Optimizer-level options (momentum, dampening, nesterov, betas, eps).
    """
    first_lr = next(g["lr"] for g in groups if "lr" in g)
    if kind == "SGD":
        return nn.SGD(groups, learning_rate=first_lr, momentum=float(options.get("momentum", 0.0)),
                      dampening=float(options.get("dampening", 0.0)), weight_decay=0.0,
                      nesterov=bool(options.get("nesterov", False)))
    if kind == "Momentum":
        return nn.Momentum(groups, learning_rate=first_lr, momentum=float(options.get("momentum", 0.0)),
                           weight_decay=0.0, use_nesterov=False)
    b1, b2 = options.get("betas", (0.9, 0.999))
    if kind == "Adam":
        return nn.Adam(groups, learning_rate=first_lr, beta1=float(b1), beta2=float(b2), eps=float(options["eps"]),
                       weight_decay=0.0)
    if kind == "AdamWeightDecay":
        return nn.AdamWeightDecay(groups, learning_rate=first_lr, beta1=float(b1), beta2=float(b2),
                                  eps=float(options["eps"]), weight_decay=0.0)
    raise ConfigError("kind", "must be SGD, Momentum, Adam or AdamWeightDecay", kind)


def experimental_optimizer(kind: str, groups: Sequence[dict[str, Any]], options: Sequence[dict[str, Any]]) -> Any:
    """A ``mindspore.experimental.optim.<kind>`` with torch-like groups.

    Args:
        kind: The class (``SGD``, ``AdamW``, ``RMSprop``, ...; :data:`EXPERIMENTAL_KEYS`).
        groups: One dict per group with ``params`` and ``lr`` (a float).
        options: The torch options of each group (only the class's keys are passed).
    """
    if kind not in EXPERIMENTAL_KEYS:
        raise ConfigError("kind", "must be one of " + ", ".join(EXPERIMENTAL_KEYS), kind)
    keys = EXPERIMENTAL_KEYS[kind]
    dicts = []
    for g, o in zip(groups, options):
        d = dict(g)
        for k in keys:
            if k in o:
                v = o[k]
                d[k] = tuple(float(b) for b in v) if k == "betas" else v if isinstance(v, bool) else float(v)
        dicts.append(d)
    cls = getattr(mopt, kind)
    defaults = {k: v for k, v in dicts[0].items() if k in keys}
    return cls(dicts, lr=dicts[0]["lr"], **defaults)


def exact_optimizer(kind: str, groups: Sequence[dict[str, Any]], options: Sequence[dict[str, Any]],
                    scheduled: Iterable[str], prefix: str) -> exact.ExactOptimizer:
    """optbridge's torch-exact ``kind`` over torch-like groups; ``scheduled`` hyperparameters become Parameters.

    Args:
        kind: torch's class name.
        groups: One dict per group with ``params`` (and ``lr``).
        options: The torch options of each group.
        scheduled: Hyperparameters that will change (``beta1``/``beta2`` as ``betas``); lr always.
        prefix: Name prefix of the hyperparameter Parameters (unique per optimizer).
    """
    cls = exact.OPTIMIZERS[kind]
    hypers = {n for n, _ in cls.HYPERS}
    allowed = (hypers - {"beta1", "beta2"}) | {"betas"} | {n for n, _ in cls.FLAGS} | {n for n, _ in cls.INIT}
    dicts = []
    for g, o in zip(groups, options):
        d = dict(g)
        d.update({k: v for k, v in o.items() if k in allowed and k not in {n for n, _ in cls.INIT}})
        dicts.append(d)
    init = {k: options[0][k] for k, _ in cls.INIT if k in options[0]}
    sched = sorted({"betas" if h in ("beta1", "beta2") else h for h in scheduled} | {"lr"})
    return exact.exact_optimizer(kind, dicts, scheduled=sched, prefix=prefix, **init)
