"""Which optimizer class a generated module builds, per framework (no framework is imported here).

The rule is the measured one: a framework's own class where the native-vs-exact
tables (``optbridge_adapters.mindspore.native`` and ``optbridge_adapters.megengine.native``,
framework-free data measured against torch 2.13; ``../shared/reference/semantics.md`` §5)
say it computes torch's update for every group's options; otherwise optbridge's
torch-exact class for that framework (``optbridge_adapters.<framework>.optimizers``),
which makes the generated module need optbridge at run time (the port says so in
the module's header and in ``port.json``). ``optimizer="native"`` refuses instead;
``optimizer="exact"`` takes optbridge's classes everywhere.

* torch: ``torch.optim.<type>`` (torch is the reference).
* MindSpore: the table's native when it is an ``experimental`` class (torch-like
  groups), or ``nn.SGD`` / ``nn.Adadelta`` in the list and cell forms when the groups
  agree in what an nn optimizer holds once (momentum, dampening, nesterov / rho, eps).
  ``AdamWeightDecay`` (MindSpore's own algorithm, which the plan names) is
  ``nn.AdamWeightDecay`` (list and cell forms); on torch and MegEngine optbridge's
  class of the same update (``optbridge_adapters.<framework>.optimizers.AdamWeightDecay``).
* MegEngine: the table's native when its verdict is ``float32`` (SGD without
  dampening or maximize, Adadelta), SGD only when the groups agree in nesterov
  (MegEngine holds it once per optimizer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, UnsupportedError

__all__ = ["Choice", "choose", "IMPL_FLAGS", "OPTIMIZER_MODES", "TORCH_KWARGS", "mindspore_native"]

#: torch implementation switches: they change no value, no other framework takes them.
IMPL_FLAGS = frozenset({"foreach", "fused", "capturable", "differentiable"})
OPTIMIZER_MODES = ("auto", "native", "exact")

#: torch 2.13's keyword options per optimizer, without the implementation switches (the exact
#: classes of every framework take exactly these).
TORCH_KWARGS: dict[str, tuple[str, ...]] = {
    "SGD": ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
    "Adam": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"),
    "AdamW": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "RMSprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"),
    "Adagrad": ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize"),
    "Adadelta": ("lr", "rho", "eps", "weight_decay", "maximize"),
    "Adamax": ("lr", "betas", "eps", "weight_decay", "maximize"),
    "NAdam": ("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay", "maximize"),
    "RAdam": ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "maximize"),
}

#: MindSpore's experimental classes take torch's keywords, except these (checked against their signatures).
_MS_EXPERIMENTAL_LACKS = {"Adam": ("decoupled_weight_decay",), "NAdam": ("decoupled_weight_decay", "maximize"),
                          "RAdam": ("decoupled_weight_decay", "maximize")}
#: What a MindSpore nn optimizer holds once for all groups (groups carry only lr and weight_decay).
_MS_NN = {"nn.SGD": ("momentum", "dampening", "nesterov"), "nn.Adadelta": ("rho", "eps")}
#: MegEngine's native classes: group keys and constructor-only keys.
_MGE = {"megengine.optimizer.SGD": (("lr", "momentum", "weight_decay"), ("nesterov",)),
        "megengine.optimizer.Adadelta": (("lr", "rho", "eps", "weight_decay"), ())}


@dataclass(frozen=True)
class Choice:
    """The class a generated module builds for one plan optimizer.

    Attributes:
        cls: What the generated code names (``"torch.optim.AdamW"``, ``"nn.SGD"``,
            ``"experimental.AdamW"``, ``"megengine.optimizer.SGD"``, ``"exact.Adam"``).
        api: ``"torch"``, ``"nn"`` (a MindSpore nn optimizer: groups carry ``lr`` and
            ``weight_decay`` only), ``"experimental"`` (torch-like groups),
            ``"megengine"`` or ``"exact"`` (optbridge's torch-exact class).
        group_keys: Options each group dict carries (torch's names).
        ctor_keys: Options given to the constructor once (equal in every group).
        module: The module the class comes from (``port.json``; for exact classes
            ``optbridge_adapters.<framework>.optimizers``).
        why: Why this class (the report).
    """

    cls: str
    api: str
    group_keys: tuple[str, ...]
    ctor_keys: tuple[str, ...]
    module: str
    why: str

    @property
    def needs_optbridge(self) -> bool:
        """Whether the generated module imports optbridge's classes at run time."""
        return self.api == "exact"


def _same(options: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> bool:
    return all(len({repr(o.get(k)) for o in options}) <= 1 for k in keys)


def mindspore_native(kind: str, options: Mapping[str, Any], native: str) -> bool:
    """Whether the MindSpore class ``native`` (``"experimental.SGD"``) computes torch's ``kind`` for ``options``.

    The per-class form of ``optbridge_adapters.mindspore.native.native_equivalent``
    (which returns the first qualifying class): ``native`` has an exact measured row for
    ``kind`` and every option that differs from torch's default was measured non-default
    in one of those rows (nothing is extrapolated).
    """
    from optbridge_adapters.mindspore import native as table  # framework-free data

    defaults = table._defaults(kind)
    rows = [r for r in table.NATIVE if r.kind == kind and r.native == native and r.exact]
    measured = {k for r in rows for k, v in r.options if k != "lr" and v != defaults.get(k)}
    changed = {k for k, v in options.items() if k != "lr" and k in defaults and v != defaults[k]}
    return bool(rows) and changed <= measured


def _adamweightdecay(framework: str, form: str, mode: str, path: str, backend: str) -> Choice:
    """MindSpore's own algorithm, which the plan names: ``nn.AdamWeightDecay`` or optbridge's class of its update."""
    if framework == "mindspore" and form in ("list", "cell"):
        return Choice("nn.AdamWeightDecay", "nn", ("lr", "weight_decay"), ("betas", "eps"), "mindspore.nn",
                      "MindSpore's own AdamWeightDecay, which the plan names")
    if framework in ("torch", "megengine") and mode != "native":
        return Choice("exact.AdamWeightDecay", "exact", ("lr", "betas", "eps", "weight_decay"), (),
                      f"optbridge_adapters.{framework}.optimizers", f"{framework} has no AdamWeightDecay: optbridge's "
                      "class computes MindSpore's nn.AdamWeightDecay update (no bias correction)")
    raise UnsupportedError(f"{path}.type", backend, "AdamWeightDecay is MindSpore's nn.AdamWeightDecay (no bias "
                           "correction): the MindSpore list and cell forms build it, torch and MegEngine optbridge's "
                           "class of its update (not with optimizer='native')")


def _exact(framework: str, kind: str, why: str) -> Choice:
    return Choice(f"exact.{kind}", "exact", TORCH_KWARGS[kind], (), f"optbridge_adapters.{framework}.optimizers",
                  why)


def _mindspore(kind: str, options: Sequence[Mapping[str, Any]], form: str) -> tuple[Choice | None, str]:
    candidates = ([f"nn.{kind}"] if form in ("list", "cell") and f"nn.{kind}" in _MS_NN else []) + \
        [f"experimental.{kind}"]
    for native in candidates:
        if not all(mindspore_native(kind, o, native) for o in options):
            continue
        if native in _MS_NN:
            if not _same(options, _MS_NN[native]):
                continue
            return Choice(native, "nn", ("lr", "weight_decay"), _MS_NN[native], "mindspore.nn",
                          f"{native} computes torch's {kind} (measured)"), ""
        keys = tuple(k for k in TORCH_KWARGS[kind] if k not in _MS_EXPERIMENTAL_LACKS.get(kind, ()))
        return Choice(native, "experimental", keys, (), "mindspore.experimental.optim",
                      f"{native} computes torch's {kind} (measured)"), ""
    from optbridge_adapters.mindspore import native as table
    exact = [r for r in table.NATIVE if r.kind == kind and r.exact]
    if exact:
        defaults = table._defaults(kind)
        measured = {k for r in exact for k, v in r.options if k != "lr" and v != defaults.get(k)}
        unmeasured = sorted({k for o in options for k, v in o.items()
                             if k != "lr" and k in defaults and v != defaults[k]} - measured)
        return None, (f"{exact[0].native} was measured equal to torch's {kind} only with "
                      f"{', '.join(sorted(measured)) or 'default options'} changed, not with "
                      f"{', '.join(unmeasured) or 'these groups'}")
    rows = [r for r in table.NATIVE if r.kind == kind]
    return None, f"MindSpore's own {kind} differs from torch's ({rows[0].note})" if rows else \
        f"MindSpore has no {kind} measured against torch's"


def _megengine(kind: str, options: Sequence[Mapping[str, Any]]) -> tuple[Choice | None, str]:
    from optbridge_adapters.megengine import native as table  # framework-free data

    rows = [table.native_equivalent(kind, o) for o in options]
    natives = {r.native for r in rows}
    bad = next((r for r in rows if r.verdict != "float32"), None)
    if bad is not None:
        return None, f"MegEngine's {kind}: {bad.reason}"
    native = rows[0].native
    if len(natives) > 1 or native not in _MGE:
        return None, f"no single MegEngine class computes torch's {kind} for every group"
    group_keys, ctor_keys = _MGE[native]
    if not _same(options, ctor_keys):
        return None, f"{native} holds {', '.join(ctor_keys)} once per optimizer, and the groups differ in it"
    return Choice(native, "megengine", group_keys, ctor_keys, "megengine.optimizer",
                  f"{native} computes torch's {kind} (measured)"), ""


def choose(framework: str, kind: str, options: Sequence[Mapping[str, Any]], *, form: str, mode: str,
           path: str, backend: str) -> Choice:
    """The class for optimizer type ``kind`` whose built groups have the effective ``options``.

    Args:
        framework: ``"torch"``, ``"mindspore"`` or ``"megengine"``.
        kind: The plan optimizer's type (torch's class name).
        options: Effective options of its built groups (:func:`optbridge.params.effective_options`).
        form: The generated form (MindSpore: ``list``, ``cell``, ``experimental``).
        mode: ``"auto"``, ``"native"`` or ``"exact"`` (see the module docstring).
        path: Config path of the optimizer, for errors.
        backend: Backend name for errors.

    Raises:
        ConfigError: ``mode`` or ``framework`` is unknown.
        UnsupportedError: no class computes torch's update (or ``mode="native"`` and
            the native class does not).
    """
    if mode not in OPTIMIZER_MODES:
        raise ConfigError("optimizer", "must be one of " + ", ".join(OPTIMIZER_MODES), mode)
    if kind == "AdamWeightDecay":
        return _adamweightdecay(framework, form, mode, path, backend)
    if framework == "torch":
        if kind not in TORCH_KWARGS:
            raise UnsupportedError(f"{path}.type", backend, f"torch has no {kind} optimizer")
        return Choice(f"torch.optim.{kind}", "torch", TORCH_KWARGS[kind], (), "torch.optim", "torch's own class")
    if kind not in TORCH_KWARGS:
        raise UnsupportedError(f"{path}.type", backend, f"{kind} has no torch-exact {framework} optimizer")
    if framework == "mindspore":
        native, why = _mindspore(kind, options, form)
    elif framework == "megengine":
        native, why = _megengine(kind, options)
    else:
        raise ConfigError("to", "must be one of torch, mindspore, megengine", framework)
    if mode == "exact" or (native is None and mode == "auto"):
        return _exact(framework, kind, why or "optimizer='exact'")
    if native is None:
        raise UnsupportedError(f"{path}.type", backend, f"{why}; optimizer='auto' uses optbridge's torch-exact "
                               f"{kind} for {framework} (the generated module then needs optbridge at run time)")
    return native
