"""Which MindSpore optimizer runs each plan optimizer, and which form the setup takes.

Two independent choices, both reported (``setup.report``, ``setup.choices``):

* **the optimizer** (``optimizer="auto" | "native" | "exact"``): MindSpore's own
  optimizer where it computes torch's update (the measured table
  :data:`optbridge_adapters.mindspore.optimizers.NATIVE`, through
  ``native_equivalent``), else the torch-exact optimizer of
  :mod:`optbridge_adapters.mindspore.optimizers` (hyperparameters as float64
  Parameters, so momentum and betas can be scheduled). ``"native"`` forces
  MindSpore's (the report gives its measured difference from torch), ``"exact"``
  forces optbridge's. Families: ``nn`` (``mindspore.nn``: lists and cells),
  ``experimental`` (``mindspore.experimental.optim``: torch-like groups, lr_schedulers)
  and ``exact``.
* **the form** (``form="auto" | "list" | "cell" | "experimental"``): how schedule
  values reach the optimizer (docs/mindspore.md has the rules and the node table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mindspore.experimental import optim as mopt

from optbridge.errors import UnsupportedError
from optbridge.params import effective_options
from optbridge.plan import Group, OptimizerSpec, Plan, group_feature
from optbridge.slots import Slot

from .optimizers import NATIVE, OPTIMIZERS, native_equivalent

__all__ = ["Choice", "choose_optimizer", "FAMILIES", "OPTIMIZER_MODES", "NN_KINDS", "group_options",
           "split_nn", "NN_SPLIT_KEYS"]

OPTIMIZER_MODES = ("auto", "native", "exact")
FAMILIES = ("nn", "experimental", "exact")
#: nn optimizers optbridge builds (plan type -> verified rule), and the options they hold once per optimizer.
NN_KINDS = ("SGD", "Adam", "AdamWeightDecay")
NN_SPLIT_KEYS = {"SGD": ("momentum", "dampening", "nesterov"), "Adam": ("betas", "eps"),
                 "AdamWeightDecay": ("betas", "eps")}
#: torch implementation switches: they select torch's kernel, not the update rule.
_IMPL_KEYS = ("foreach", "fused", "differentiable", "capturable")


@dataclass(frozen=True)
class Choice:
    """The MindSpore optimizer chosen for one plan optimizer.

    Attributes:
        spec: The plan optimizer.
        family: ``nn``, ``experimental`` or ``exact``.
        kind: The class: ``SGD``, ``Momentum``, ``Adam``, ``AdamWeightDecay`` (nn), a
            ``mindspore.experimental.optim`` class name, or a torch name (exact).
        exact: Whether the update is torch's (measured), or MindSpore's own definition
            for ``AdamWeightDecay``.
        note: Why, with the measured native difference where there is one.
    """

    spec: OptimizerSpec
    family: str
    kind: str
    exact: bool
    note: str

    @property
    def label(self) -> str:
        """``nn.SGD``, ``experimental.AdamW`` or ``exact AdamW`` (optbridge's torch-exact optimizer)."""
        return f"exact {self.kind}" if self.family == "exact" else f"{self.family}.{self.kind}"


def group_options(plan: Plan, group: Group) -> dict[str, Any]:
    """The group's torch options (defaults filled), without torch's implementation switches."""
    return {k: v for k, v in effective_options(plan, group).items() if k not in _IMPL_KEYS}


def _scheduled(items: Sequence[Slot]) -> set[str]:
    return {s.hyper for s in items if s.node is not None}


def _nn_blocker(spec: OptimizerSpec, opts: list[dict[str, Any]], scheduled: set[str]) -> str:
    """Why no nn optimizer can run ``spec`` with these options and schedules ("" if one can)."""
    if spec.type not in NN_KINDS:
        return f"mindspore.nn has no verified {spec.type}"
    if any(o.get("maximize") for o in opts):
        return "maximize=True: nn optimizers cannot maximize"
    if any(o.get("amsgrad") for o in opts):
        return "amsgrad=True is not verified in nn.Adam"
    other = sorted(scheduled - {"lr", "weight_decay"})
    if other:
        return (f"{', '.join(other)} is scheduled: nn optimizers hold it as one constant per optimizer (only "
                "learning_rate and weight_decay can be dynamic)")
    if spec.type == "SGD" and "weight_decay" in scheduled and any(
            o.get("dampening", 0.0) != 0.0 or o.get("nesterov") for o in opts):
        return ("a weight-decay schedule with dampening or nesterov: nn.SGD refuses a dynamic weight decay and "
                "nn.Momentum has no dampening and ignores nesterov on CPU")
    return ""


def _nn_kind(spec: OptimizerSpec, scheduled: set[str]) -> str:
    return "Momentum" if spec.type == "SGD" and "weight_decay" in scheduled else spec.type


def _experimental_blocker(spec: OptimizerSpec, opts: list[dict[str, Any]], scheduled: set[str]) -> str:
    """Why no mindspore.experimental.optim optimizer can run ``spec`` ("" if one can)."""
    if not hasattr(mopt, spec.type) or spec.type not in OPTIMIZERS:
        return f"mindspore.experimental.optim has no {spec.type}"
    if spec.type == "Adam" and any(o.get("amsgrad") for o in opts):
        return "experimental Adam ignores amsgrad (measured)"
    if spec.type in ("NAdam", "RAdam") and any(o.get("decoupled_weight_decay") or o.get("maximize") for o in opts):
        return f"experimental {spec.type} has no decoupled_weight_decay or maximize"
    holds = {"SGD": {"lr", "momentum"}, "Adam": {"lr", "weight_decay"}, "AdamW": {"lr", "weight_decay"}}
    other = sorted(scheduled - holds.get(spec.type, {"lr"}))
    if other:
        why = {"beta1": "ops.Adam takes beta1 as a constant (a Parameter in its place makes the update 0: measured)",
               "beta2": "ops.Adam takes beta2 as a constant", "eps": "its kernel takes eps as a constant",
               "weight_decay": "experimental SGD builds ops.SGD with a constant weight decay"}
        return f"{other[0]} is scheduled: " + why.get(other[0], f"experimental {spec.type} holds it as a constant")
    return ""


def _native_rows(kind: str, native: str) -> list[Any]:
    return [r for r in NATIVE if r.kind == kind and r.native == native]


def _measured(kind: str, native: str) -> str:
    """The measured native-vs-torch rows of ``native`` for torch's ``kind`` (for reports)."""
    rows = _native_rows(kind, native)
    if not rows:
        return "not measured against torch"
    return "; ".join(f"{r.case}: {'torch-exact' if r.exact else 'NOT torch'} ({r.worst:.2g} max |dp| over 100 steps"
                     + (f", {r.note}" if r.note else "") + ")" for r in rows)


def choose_optimizer(plan: Plan, spec: OptimizerSpec, items: Sequence[Slot], *, form: str, mode: str,
                     backend: str) -> Choice:
    """The MindSpore optimizer for ``spec`` (its built groups' slots ``items``) in ``form`` under ``mode``.

    Raises:
        UnsupportedError: no MindSpore optimizer of the asked family computes the plan's update or holds
            its schedules (the message says why).
    """
    groups = [g for g in spec.groups if g.frozen != "exclude"]
    opts = [group_options(plan, g) for g in groups]
    scheduled = _scheduled(items)
    path = f"optimizers.{spec.name}"
    late = next((g for g in groups if group_feature(plan, g, "start_step")), None)
    if late is not None:  # nn and experimental optimizers take their parameters once, at construction
        why = (f"group {late.name!r} joins at update {group_feature(plan, late, 'start_step')} (start_step): "
               "MindSpore's nn and experimental optimizers take every group at construction")
        if mode == "native" or spec.type not in OPTIMIZERS:
            raise UnsupportedError(f"{path}.groups.{late.name}.start_step", backend,
                                   why + ("" if spec.type in OPTIMIZERS else f", and optbridge has no exact "
                                          f"{spec.type}") + " (optbridge's exact optimizers leave a group untouched "
                                   "until its update)")
        return Choice(spec, "exact", spec.type, True, f"optbridge's torch-exact {spec.type}: {why}; it leaves the "
                      "group's parameters and state untouched until that update")
    if spec.type == "AdamWeightDecay":  # MindSpore's own optimizer: nn.AdamWeightDecay is its definition
        why = _nn_blocker(spec, opts, scheduled)
        if why:
            raise UnsupportedError(path, backend, why + " (nn.AdamWeightDecay is the only AdamWeightDecay)")
        return Choice(spec, "nn", "AdamWeightDecay", True, "nn.AdamWeightDecay is MindSpore's own optimizer (the plan "
                      "type names it): no torch counterpart to differ from")
    if mode == "exact":
        if spec.type not in OPTIMIZERS:
            raise UnsupportedError(path, backend, f"no torch-exact MindSpore optimizer for {spec.type} (optbridge has "
                                   + ", ".join(OPTIMIZERS) + ")")
        return Choice(spec, "exact", spec.type, True, f"optimizer='exact': optbridge's torch-exact {spec.type}")
    nn_ok = form in ("list", "cell") and not _nn_blocker(spec, opts, scheduled)
    exp_ok = not _experimental_blocker(spec, opts, scheduled)
    if mode == "native":
        if nn_ok:
            kind = _nn_kind(spec, scheduled)
            measured = _measured(spec.type, f"nn.{kind}")
            return Choice(spec, "nn", kind, _is_exact(spec.type, f"nn.{kind}", opts, scheduled),
                          f"optimizer='native': nn.{kind}; measured against torch: {measured}")
        if exp_ok:
            return Choice(spec, "experimental", spec.type, _is_exact(spec.type, f"experimental.{spec.type}", opts,
                                                                     scheduled),
                          f"optimizer='native': experimental.{spec.type}; measured against torch: "
                          f"{_measured(spec.type, f'experimental.{spec.type}')}")
        why = _experimental_blocker(spec, opts, scheduled) if form == "experimental" else \
            _nn_blocker(spec, opts, scheduled) + "; " + _experimental_blocker(spec, opts, scheduled)
        raise UnsupportedError(path, backend, f"optimizer='native': {why} (optimizer='exact' runs it)")
    # auto: MindSpore's own optimizer where the measured table says it computes torch's update
    rows = [native_equivalent(spec.type, o, [s.hyper for s in items if s.node is not None and s.group == g.name])
            for o, g in zip(opts, groups)] if spec.type in OPTIMIZERS else [None]
    natives = {r.native for r in rows if r is not None}
    if None not in rows and len(natives) == 1:
        native = natives.pop()
        family, kind = native.split(".", 1)
        if family == "nn" and form in ("list", "cell") and nn_ok and kind == _nn_kind(spec, scheduled):
            return Choice(spec, "nn", kind, True, f"nn.{kind} computes torch's {spec.type} update (measured: "
                          f"{_measured(spec.type, native)})")
        if exp_ok and (family == "experimental" or _native_rows(spec.type, f"experimental.{spec.type}")):
            ex = f"experimental.{spec.type}"
            return Choice(spec, "experimental", spec.type, True, f"{ex} computes torch's {spec.type} update "
                          f"(measured: {_measured(spec.type, ex)})")
    if spec.type not in OPTIMIZERS:
        raise UnsupportedError(path, backend, f"no MindSpore optimizer is verified to compute torch's {spec.type}")
    nat = "nn" if form in ("list", "cell") and spec.type in NN_KINDS else "experimental"
    native = f"{nat}.{_nn_kind(spec, scheduled) if nat == 'nn' else spec.type}"
    blocked = _nn_blocker(spec, opts, scheduled) if nat == "nn" else _experimental_blocker(spec, opts, scheduled)
    others = sorted(scheduled - {"lr"})
    if blocked:
        why = blocked
    elif others:
        why = (f"{', '.join(others)} is scheduled: no native optimizer was measured against torch with it (the "
               "native table covers lr schedules)")
    else:
        why = f"{native} is not torch's update for these options (measured: {_measured(spec.type, native)})"
    return Choice(spec, "exact", spec.type, True, f"optbridge's torch-exact {spec.type}: {why}")


def _is_exact(kind: str, native: str, opts: list[dict[str, Any]], scheduled: set[str]) -> bool:
    """Whether ``native`` is measured to compute torch's ``kind`` update with these options."""
    rows = [native_equivalent(kind, o, sorted(scheduled)) for o in opts] if kind in OPTIMIZERS else [None]
    return all(r is not None and r.native == native for r in rows)


def split_nn(spec: OptimizerSpec, groups: Sequence[Group], opts: Sequence[dict[str, Any]]) -> list[list[int]]:
    """Group indices per nn optimizer: nn optimizers hold momentum/dampening/nesterov or betas/eps once."""
    keys = NN_SPLIT_KEYS.get(spec.type, ())
    out: dict[tuple, list[int]] = {}
    for i, o in enumerate(opts):
        out.setdefault(tuple(repr(o.get(k)) for k in keys), []).append(i)
    return list(out.values())
