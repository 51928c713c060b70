"""Native MegEngine 1.13 optimizers against torch 2.13, as measured (pure data, no framework import).

:data:`NATIVE` says, per torch optimizer and options, which native MegEngine class
comes closest and whether it computes torch's update (``verdict``), with the measured
size of the difference; :func:`native_equivalent` looks a setup up. The numbers are
re-measured by ``tests_megengine/test_exact_optimizers.py``; the exact classes that
replace the non-exact natives live in :mod:`.optimizers` (which re-exports these
names). This module imports neither MegEngine nor numpy, so :mod:`optbridge.lint`
can read it from any environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optbridge.errors import ConfigError
from optbridge.plan import OPTIMIZER_DEFAULTS

__all__ = ["NativeEquivalence", "NATIVE", "KINDS", "native_equivalent", "native_name"]

#: torch optimizers the exact MegEngine classes implement (``optimizers.OPTIMIZERS``' keys).
KINDS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam")


@dataclass(frozen=True)
class NativeEquivalence:
    """Whether a native MegEngine 1.13 optimizer computes torch 2.13's update, as measured.

    Attributes:
        optimizer: torch's optimizer class name.
        requires: ``(option, value)`` pairs a torch setup must have for this row
            (torch's defaults filled in); rows are tried in order, the first match wins.
        native: the MegEngine class that comes closest (``"megengine.optimizer.SGD"``),
            or None when MegEngine has none.
        verdict: ``"float32"``: the same update, differences at torch's own float32
            rounding level (at most 4x torch's float32 error, the bound the exact
            classes here meet); ``"float32-betas"``: Adam's formula with bias
            corrections from float32 betas and a float32 step, a small systematic
            difference; ``"different"``: another formula for some inputs;
            ``"missing"``: no such class or option.
        measured: ``(fixture config, worst ulps, worst vs noise)`` per measured
            config of ``tests_megengine/fixtures/torch_exact_optimizers.npz``: over 60
            updates, ``max_k max|p_native - p_torch| / ulp(max|p_torch|)`` and
            ``max_k max|p_native - p_torch| / max(ulp, torch's float32 error)``
            (``tests_megengine/test_exact_optimizers.py`` re-measures them).
        reason: what differs, in words.
    """

    optimizer: str
    requires: tuple[tuple[str, Any], ...]
    native: str | None
    verdict: str
    measured: tuple[tuple[str, float, float], ...]
    reason: str

    def matches(self, options: Mapping[str, Any]) -> bool:
        """Whether a setup with these options (torch's defaults filled in) falls under this row."""
        return all(options.get(k) == v for k, v in self.requires)

    @property
    def worst_vs_noise(self) -> float | None:
        """The largest measured difference, in units of torch's own float32 error."""
        return max((m[2] for m in self.measured), default=None)


def _missing(optimizer: str, requires: tuple[tuple[str, Any], ...], reason: str) -> NativeEquivalence:
    return NativeEquivalence(optimizer, requires, None, "missing", (), reason)


_ADAM_BETAS = ("bias corrections 1 - beta**step computed in float32 from float32 betas and a float32 step "
               "(torch: Python float64 from the group's betas): measured per-update relative difference up to "
               "3.4e-6 (constant gradient, 300 updates, betas (0.9, 0.999)); harmless at N(0,1) gradients, "
               "up to 26x torch's own float32 error on the 1e-7 gradients")

#: Which native MegEngine optimizer computes torch's update for which options (measured, see the fields).
NATIVE: tuple[NativeEquivalence, ...] = (
    _missing("SGD", (("maximize", True),), "MegEngine's SGD has no maximize flag"),
    NativeEquivalence("SGD", (("dampening", 0.0),), "megengine.optimizer.SGD", "float32", (
        ("sgd_normal", 1.0, 0.68), ("sgd_tiny", 1.0, 0.40),
        ("sgd_momentum_normal", 1.0, 0.70), ("sgd_momentum_tiny", 1.0, 0.49),
        ("sgd_nesterov_normal", 1.0, 1.0), ("sgd_nesterov_tiny", 1.25, 0.50),
        ("sgd_wd_normal", 4.0, 1.1), ("sgd_wd_tiny", 1.0, 0.56),
        ("sgd_wd_momentum_normal", 2.5, 1.19), ("sgd_wd_momentum_tiny", 4.0, 1.48)),
        "same update (v = momentum*v + g; v starts at 0, so the first v is g, as torch's); nesterov is one flag "
        "per optimizer, and the momentum buffer exists only for groups whose momentum is non-zero at construction"),
    NativeEquivalence("SGD", (), "megengine.optimizer.SGD", "different", (
        ("sgd_dampening_normal", 1.8e7, 5.5e6), ("sgd_dampening_tiny", 5.6e6, 3.5e6)),
        "no dampening: v = momentum*v + g instead of momentum*v + (1 - dampening)*g"),
    _missing("Adam", (("amsgrad", True),), "MegEngine's Adam has no amsgrad"),
    _missing("Adam", (("maximize", True),), "MegEngine's Adam has no maximize flag"),
    NativeEquivalence("Adam", (("decoupled_weight_decay", True),), "megengine.optimizer.AdamW", "float32-betas", (
        ("adam_decoupled_normal", 14.0, 1.5), ("adam_decoupled_tiny", 17.0, 12.0)), _ADAM_BETAS),
    NativeEquivalence("Adam", (), "megengine.optimizer.Adam", "float32-betas", (
        ("adam_normal", 1.0, 0.53), ("adam_tiny", 18.0, 11.2),
        ("adam_l2_normal", 1.0, 1.0), ("adam_l2_tiny", 718.0, 26.0)), _ADAM_BETAS),
    _missing("AdamW", (("amsgrad", True),), "MegEngine's AdamW has no amsgrad"),
    _missing("AdamW", (("maximize", True),), "MegEngine's AdamW has no maximize flag"),
    NativeEquivalence("AdamW", (), "megengine.optimizer.AdamW", "float32-betas", (
        ("adamw_normal", 10.5, 1.3), ("adamw_tiny", 17.0, 11.5),
        ("adamw_wd_normal", 14.0, 1.5), ("adamw_wd_tiny", 17.0, 12.0)),
        _ADAM_BETAS + "; decay as p - lr*(delta + wd*p) instead of p*(1 - lr*wd) - lr*delta (float32 order only)"),
    _missing("Adagrad", (("maximize", True),), "MegEngine's Adagrad has no maximize flag"),
    NativeEquivalence("Adagrad", (), "megengine.optimizer.Adagrad", "different", (
        ("adagrad_normal", 1.0, 0.74), ("adagrad_tiny", 1.7e7, 1.1e7),
        ("adagrad_decay_normal", 0.75, 0.5), ("adagrad_decay_tiny", 2.0, 0.72)),
        "eps inside the square root, sqrt(sum + eps), where torch has sqrt(sum) + eps: the same while sum >> "
        "eps, off by 0.67 absolute on the 1e-7 gradients; no initial_accumulator_value option (the adagrad_decay "
        "rows write it into the state 'square_avg', then it matches)"),
    _missing("Adadelta", (("maximize", True),), "MegEngine's Adadelta has no maximize flag"),
    NativeEquivalence("Adadelta", (), "megengine.optimizer.Adadelta", "float32", (
        ("adadelta_normal", 1.0, 0.56), ("adadelta_tiny", 0.0, 0.0),
        ("adadelta_wd_normal", 1.0, 0.63), ("adadelta_wd_tiny", 2.0, 1.42)),
        "same update; 1 - rho is computed in float32 (torch: float64, then rounded)"),
    _missing("RMSprop", (), "MegEngine 1.13 has no RMSprop"),
    _missing("Adamax", (), "MegEngine 1.13 has no Adamax"),
    _missing("NAdam", (), "MegEngine 1.13 has no NAdam"),
    _missing("RAdam", (), "MegEngine 1.13 has no RAdam"),
)


def _defaults(optimizer: str) -> dict[str, Any]:
    """torch 2.13's defaults of ``optimizer`` (as the exact classes take them; Adam has ``decoupled_weight_decay``)."""
    if optimizer not in KINDS:
        raise ConfigError("optimizer.type", f"must be one of {sorted(KINDS)}", optimizer)
    out = dict(OPTIMIZER_DEFAULTS[optimizer])
    if optimizer == "Adam":
        out.setdefault("decoupled_weight_decay", False)
    return out


def native_equivalent(optimizer: str, options: Mapping[str, Any] | None = None) -> NativeEquivalence:
    """The :data:`NATIVE` row for a torch optimizer with these options (torch's defaults filled in).

    Args:
        optimizer: torch's class name (``"SGD"``, ``"Adam"``, ...).
        options: the group's options in torch's names; ``betas`` may be a list.

    Returns:
        The first matching row. Its ``verdict`` says whether the native class is good
        enough: ``"float32"`` computes torch's update; anything else needs the exact
        class (``optimizers.OPTIMIZERS``).

    Raises:
        ConfigError: ``optimizer`` is not one of :data:`KINDS`.
    """
    full = {**_defaults(optimizer), **(options or {})}
    for row in NATIVE:
        if row.optimizer == optimizer and row.matches(full):
            return row
    raise AssertionError(f"NATIVE has no catch-all row for {optimizer}")  # pragma: no cover


def native_name(module: str, name: str) -> str | None:
    """How :data:`NATIVE` names the class ``module.name`` (``"megengine.optimizer.SGD"``), or None when it is not
    MegEngine's own."""
    return f"megengine.optimizer.{name}" if module.startswith("megengine.optimizer") else None
