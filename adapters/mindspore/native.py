"""Native MindSpore 2.10 optimizers against torch 2.13, as measured (pure data, no framework import).

:data:`NATIVE` records, per measured case, whether a native MindSpore optimizer
(``nn.Adam``, ``experimental.AdamW``, ...) computes torch's update, with the measured
size of the difference; :func:`native_equivalent` picks an exact native for a torch
setup, and :func:`differences` lists the measured differences of a native a user
chose. The rows are measured by
``tests/test_mindspore_exact_optimizers.py::test_native_table_is_measured``; the
exact optimizers that replace the non-exact natives live in :mod:`.optimizers`
(which re-exports these names). This module imports neither MindSpore nor numpy, so
:mod:`optbridge.lint` can read it anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from optbridge.errors import ConfigError
from optbridge.plan import OPTIMIZER_DEFAULTS

__all__ = ["NativeEquivalence", "NATIVE", "KINDS", "native_equivalent", "differences", "native_name"]

#: torch optimizers the exact MindSpore optimizers implement (``optimizers.OPTIMIZERS``' keys).
KINDS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam")


@dataclass(frozen=True)
class NativeEquivalence:
    """One measured case: does a native MindSpore optimizer compute torch's update?

    Measured by ``tests/test_mindspore_exact_optimizers.py::test_native_table_is_measured``:
    the same float32 initial parameters (shapes (5, 3) and (4,), N(0, 1)) and 100 gradient
    steps (``grads``: N(0, 1) "normal" or N(0, 1) * 1e-7 "tiny") fed to
    ``torch.optim.<kind>(**options, foreach=False)`` and to the native class built from the
    same options.

    Attributes:
        kind: torch optimizer class name.
        native: MindSpore class (``nn.SGD``, ``experimental.AdamW``...).
        case: short name of the case.
        options: torch options of the case (lr included).
        grads: gradient sequence, ``"normal"`` or ``"tiny"``.
        exact: the native computes torch's update: its trajectory is float32 noise away from
            torch's, like the exact optimizer's on the same case.
        worst: measured max |p_native - p_torch| over the 100 steps.
        note: why, and the scope of the verdict.
        trigger: for a row that is not exact, the options that must be set (true or
            non-zero) in a setup for the difference to apply; empty: it applies to every
            setup of ``native`` (the other options of ``options`` are the measured case's).
    """

    kind: str
    native: str
    case: str
    options: tuple[tuple[str, Any], ...]
    grads: str
    exact: bool
    worst: float
    note: str
    trigger: tuple[str, ...] = ()

    def applies(self, options: Mapping[str, Any]) -> bool:
        """Whether this row's difference applies to a setup with ``options`` (torch's names)."""
        return not self.exact and all(bool(options.get(k)) for k in self.trigger)


def _row(kind: str, native: str, case: str, options: dict[str, Any], grads: str, exact: bool, worst: float,
         note: str, trigger: tuple[str, ...] = ()) -> NativeEquivalence:
    return NativeEquivalence(kind, native, case, tuple(options.items()), grads, exact, worst, note, trigger)


_NESTEROV = {"momentum": 0.9, "nesterov": True}
#: Native MindSpore optimizers against torch, measured (see NativeEquivalence). ``exact`` rows are float32 noise
#: (a few ulps of parameters that moved by 0.05..20); the others are a different update.
NATIVE: tuple[NativeEquivalence, ...] = (
    _row("SGD", "nn.SGD", "plain", {"lr": 0.1}, "normal", True, 4.77e-7, "P.SGD kernel"),
    _row("SGD", "nn.SGD", "momentum+dampening", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, "normal", True,
         9.54e-7, "first step buf = grad, as torch"),
    _row("SGD", "nn.SGD", "nesterov", {"lr": 0.1, **_NESTEROV}, "normal", True, 3.81e-6, "displacement 20"),
    _row("SGD", "nn.SGD", "momentum+wd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}, "normal", True,
         9.54e-7, "L2 in the gradient, as torch; no maximize option"),
    _row("SGD", "nn.Momentum", "momentum+wd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}, "normal", True,
         9.54e-7, "ApplyMomentum: v = mu*v + g from v = 0 (= torch's first buf = grad)"),
    _row("SGD", "nn.Momentum", "nesterov", {"lr": 0.1, **_NESTEROV}, "normal", False, 0.719,
         "use_nesterov ignored on CPU: plain momentum", trigger=("nesterov",)),
    _row("SGD", "nn.Momentum", "dampening", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, "normal", False, 8.72,
         "no dampening parameter", trigger=("dampening",)),
    _row("SGD", "experimental.SGD", "momentum+dampening+wd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5,
                                                              "weight_decay": 0.05}, "normal", True, 4.77e-7, ""),
    _row("SGD", "experimental.SGD", "nesterov+maximize", {"lr": 0.1, **_NESTEROV, "maximize": True}, "normal",
         True, 2.86e-6, ""),
    _row("Adam", "nn.Adam", "tiny grads", {"lr": 0.01}, "tiny", False, 6.92e-2,
         "eps outside the bias correction (eps-hat); 2.7e-7 with N(0,1) gradients, where eps is negligible"),
    _row("Adam", "nn.Adam", "amsgrad, tiny grads", {"lr": 0.01, "amsgrad": True}, "tiny", False, 6.92e-2, "eps-hat",
         trigger=("amsgrad",)),
    _row("Adam", "experimental.Adam", "tiny grads", {"lr": 0.01}, "tiny", False, 6.92e-2, "same ops.Adam kernel"),
    _row("Adam", "experimental.Adam", "amsgrad", {"lr": 0.01, "amsgrad": True}, "normal", False, 1.58e-5,
         "amsgrad ignored (= torch's plain Adam)", trigger=("amsgrad",)),
    _row("AdamW", "experimental.AdamW", "tiny grads", {"lr": 0.01}, "tiny", True, 3.58e-7, "torch's eps placement"),
    _row("AdamW", "experimental.AdamW", "amsgrad+maximize", {"lr": 0.01, "amsgrad": True, "maximize": True},
         "normal", True, 2.38e-7, ""),
    _row("AdamW", "nn.AdamWeightDecay", "eps 1e-6", {"lr": 0.01, "eps": 1e-6}, "normal", False, 0.876,
         "no bias correction at all"),
    _row("RMSprop", "nn.RMSProp", "plain", {"lr": 0.01}, "normal", False, 0.345,
         "ApplyRMSProp: a different update (eps inside the sqrt)"),
    _row("RMSprop", "experimental.RMSprop", "plain", {"lr": 0.01}, "normal", True, 7.15e-7, ""),
    _row("RMSprop", "experimental.RMSprop", "centered+momentum+wd+maximize",
         {"lr": 0.01, "centered": True, "momentum": 0.9, "weight_decay": 0.05, "maximize": True}, "normal", True,
         2.38e-6, "displacement 4.5"),
    _row("Adagrad", "nn.Adagrad", "tiny grads", {"lr": 0.1}, "tiny", False, 0.496,
         "no eps (ApplyAdagrad: g / sqrt(sum)); 2.7e-7 with N(0,1) gradients, where eps is negligible"),
    _row("Adagrad", "experimental.Adagrad", "tiny grads", {"lr": 0.1}, "tiny", True, 2.38e-7, ""),
    _row("Adagrad", "experimental.Adagrad", "lr_decay+initial+wd+maximize",
         {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "weight_decay": 0.05, "maximize": True},
         "normal", True, 2.38e-7, ""),
    _row("Adadelta", "nn.Adadelta", "plain", {"lr": 1.0}, "normal", True, 1.19e-7, ""),
    _row("Adadelta", "experimental.Adadelta", "wd+maximize", {"lr": 1.0, "weight_decay": 0.05, "maximize": True},
         "normal", True, 1.19e-7, ""),
    _row("Adamax", "nn.AdaMax", "tiny grads", {"lr": 0.01}, "tiny", False, 9.52e-5,
         "eps added to the denominator, torch puts it inside the max"),
    _row("Adamax", "experimental.Adamax", "tiny grads, wd, maximize",
         {"lr": 0.01, "weight_decay": 0.05, "maximize": True}, "tiny", True, 5.96e-8, ""),
    _row("NAdam", "experimental.NAdam", "wd", {"lr": 0.01, "weight_decay": 0.05}, "normal", True, 4.77e-7,
         "no decoupled_weight_decay, no maximize"),
    _row("RAdam", "experimental.RAdam", "wd", {"lr": 0.01, "weight_decay": 0.05}, "normal", True, 8.34e-7,
         "no decoupled_weight_decay, no maximize"),
    _row("RAdam", "experimental.RAdam", "lr 0.1", {"lr": 0.1}, "normal", False, 8.07e-6,
         "float32 rounding in its kernel: 29 ulps from torch at lr 0.1 (torch's own float32 error 2.8, optbridge's "
         "RAdam 0.8); the trajectory cases measure 1.5e-7 at lr 0.1"),
)


def _defaults(kind: str) -> dict[str, Any]:
    """torch 2.13's defaults of ``kind`` (those the exact optimizers take; Adam also has ``decoupled_weight_decay``)."""
    if kind not in KINDS:
        raise ConfigError("optimizer.type", f"must be one of {', '.join(KINDS)} for the exact MindSpore optimizers",
                          kind)
    out = dict(OPTIMIZER_DEFAULTS[kind])
    if kind == "Adam":
        out.setdefault("decoupled_weight_decay", False)
    return out


def native_equivalent(kind: str, options: Mapping[str, Any], scheduled: Iterable[str] = ("lr",)
                      ) -> NativeEquivalence | None:
    """The measured exact native row for torch's ``kind`` with ``options``, or None (use the exact optimizer).

    A native qualifies when it has an exact row for ``kind``, every option that differs
    from torch's default was measured non-default in one of its exact rows (nothing is
    extrapolated), no measured difference of it applies to ``options`` (:func:`differences`),
    and only ``lr`` is scheduled (native optimizers hold momentum and
    betas as constants; other schedules were not measured here).

    Raises:
        ConfigError: ``kind`` is not one of :data:`KINDS`.
    """
    defaults = _defaults(kind)
    if set(scheduled) - {"lr"}:
        return None
    changed = {k for k, v in options.items() if k != "lr" and k in defaults and v != defaults[k]}
    rows = [r for r in NATIVE if r.kind == kind and r.exact]
    for native in dict.fromkeys(r.native for r in rows):
        measured = {k for r in rows if r.native == native for k, v in r.options if k != "lr" and v != defaults.get(k)}
        if changed <= measured and not differences(native, {**defaults, **options}):
            return next(r for r in rows if r.native == native)
    return None


def differences(native: str, options: Mapping[str, Any]) -> tuple[NativeEquivalence, ...]:
    """The measured rows where the native class ``native`` (``"nn.Adam"``) computes another update than torch.

    Args:
        native: The MindSpore class as :data:`NATIVE` names it (:func:`native_name` of a live object).
        options: The setup's options in torch's names (what the class was given).

    Returns:
        The rows that are not exact and whose :attr:`~NativeEquivalence.trigger` holds; empty when
        the native computes torch's update for these options (or was not measured).
    """
    return tuple(r for r in NATIVE if r.native == native and r.applies(options))


def native_name(module: str, name: str) -> str | None:
    """How :data:`NATIVE` names the class ``module.name`` (``"nn.Adam"``), or None when it is not MindSpore's own."""
    if module.startswith("mindspore.experimental.optim"):
        return f"experimental.{name}"
    if module.startswith("mindspore.nn"):
        return f"nn.{name}"
    return None
