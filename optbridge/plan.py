"""The plan: optimizers, their param groups, and the schedules that drive them.

A :class:`Plan` is pure data (frozen dataclasses); it names parameters by
patterns, never by framework objects. :mod:`optbridge.params` resolves the
patterns over parameter records that adapters read off real models.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import ir
from .errors import ConfigError
from .ir import FrozenMap, check_choice, check_int, check_real

__all__ = ["Plan", "OptimizerSpec", "Group", "Selector", "Clip", "OPTIMIZER_DEFAULTS",
           "GROUP_OPTIONS", "GROUP_FEATURES", "hyper_base", "has_hyper", "scheduled_hypers", "group_feature",
           "check_group_features"]

#: torch 2.13 defaults per optimizer (what torch fills into every group).
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "SGD": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False),
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False),
    "RMSprop": dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False),
    "Adagrad": dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False),
    "Adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False),
    "Adamax": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False),
    "NAdam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False, maximize=False),
    "RAdam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
                  maximize=False),
    "LAMB": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    "Lion": dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
    # MindSpore's nn.AdamWeightDecay: decoupled decay but no bias correction (not torch's AdamW).
    "AdamWeightDecay": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0),
}

#: Group options that are not optimizer arguments (``effective_options`` leaves them out; a backend
#: reads them with :func:`group_feature` and refuses what it cannot do with :func:`check_group_features`):
#:
#: * ``lr_dtype``: ``"float32"`` when the framework holds the group's lr as a float32 tensor (torch's
#:   ``lr=torch.tensor(...)``): every update uses the float32 value; also allowed on the optimizer;
#: * ``start_step``: the update at which the group joins its optimizer (``add_param_group`` mid-run);
#:   its schedules run on the plan's clock and traces hold NaN before it;
#: * ``empty``: the group selects no parameter (torch accepts a group with ``params: []``); its
#:   ``params`` must be empty.
GROUP_FEATURES = ("lr_dtype", "start_step", "empty")

#: Options a group (or an optimizer's defaults) may set.
GROUP_OPTIONS = frozenset(
    {k for d in OPTIMIZER_DEFAULTS.values() for k in d}
    | {"lr_mult", "weight_decay_mult", "foreach", "fused", "differentiable", "capturable"} | set(GROUP_FEATURES))

_FEATURE_WHY = {
    "lr_dtype": "holds the group's lr as float32, which this backend cannot reproduce exactly",
    "start_step": "adds the group to its optimizer mid-run, which this backend does not support yet",
    "empty": "has a group without parameters, which this backend cannot build",
}

_SCHEDULABLE_ALIASES = {"beta1": ("betas", 0), "beta2": ("betas", 1)}


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_options(path: str, options: Mapping[str, Any]) -> FrozenMap:
    """Validate optimizer/group options: known names, numeric values, betas pairs."""
    out: dict[str, Any] = {}
    for key, v in options.items():
        p = f"{path}.{key}" if path else key
        if key not in GROUP_OPTIONS:
            raise ConfigError(p, "is not a known optimizer option" + _suggest(key, GROUP_OPTIONS), v)
        if key == "lr_dtype":
            out[key] = check_choice(p, v, ("float32", "float64"))
        elif key == "start_step":
            out[key] = check_int(p, v, minimum=0)
        elif key == "empty":
            if not isinstance(v, bool):
                raise ConfigError(p, "must be true or false", v)
            out[key] = v
        elif key in ("nesterov", "amsgrad", "maximize", "centered", "foreach", "fused",
                   "differentiable", "capturable", "decoupled_weight_decay"):
            if v is not None and not isinstance(v, bool):
                raise ConfigError(p, "must be true or false", v)
            out[key] = v
        elif key == "betas":
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise ConfigError(p, "must be a pair [beta1, beta2]", v)
            out[key] = (check_real(f"{p}[0]", v[0]), check_real(f"{p}[1]", v[1]))
        else:
            f = check_real(p, v)
            if key in ("lr", "lr_mult", "eps") and f < 0:
                raise ConfigError(p, "must be >= 0", v)
            out[key] = f
    return FrozenMap(out)


# --------------------------------------------------------------------------- selectors

@dataclass(frozen=True, kw_only=True)
class Selector:
    """Which parameters a group takes. All given criteria must hold (AND).

    Attributes:
        names: Glob patterns over full parameter names (``"backbone.*"``); any may match.
        regex: Regular expressions (``re.fullmatch``) over names; any may match.
        modules: Globs over the owning module's type name (``"*Norm*"``, ``"Linear"``).
        ndim: Allowed numbers of dimensions (``[1]`` for all 1-D parameters).
        leaf: Globs over the last name component (``["bias"]`` for all biases).
        rest: The catch-all: every parameter no other group takes.
    """

    names: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    ndim: tuple[int, ...] = ()
    leaf: tuple[str, ...] = ()
    rest: bool = False

    def __post_init__(self) -> None:
        for name in ("names", "regex", "modules", "leaf"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = (v,)
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
                raise ConfigError(name, "must be a list of non-empty strings", v)
            object.__setattr__(self, name, tuple(v))
        for i, pat in enumerate(self.regex):
            try:
                re.compile(pat)
            except re.error as e:
                raise ConfigError(f"regex[{i}]", f"must be a valid regular expression ({e})", pat) from None
        nd = self.ndim if isinstance(self.ndim, (list, tuple)) else (self.ndim,)
        object.__setattr__(self, "ndim", tuple(check_int(f"ndim[{i}]", x, minimum=0) for i, x in enumerate(nd)))
        if not isinstance(self.rest, bool):
            raise ConfigError("rest", "must be true or false", self.rest)
        if self.rest and (self.names or self.regex or self.modules or self.ndim or self.leaf):
            raise ConfigError("rest", "cannot be combined with other criteria", True)
        if not self.rest and not (self.names or self.regex or self.modules or self.ndim or self.leaf):
            raise ConfigError("", "a selector needs at least one of names, regex, modules, ndim, leaf or rest", {})

    def describe(self) -> str:
        if self.rest:
            return "rest"
        bits = [f"{k}={list(getattr(self, k))}" for k in ("names", "regex", "modules", "ndim", "leaf") if getattr(self,
                                                                                                                  k)]
        return ", ".join(bits)


@dataclass(frozen=True, kw_only=True)
class Clip:
    """Per-group gradient clipping, applied before the optimizer step.

    Attributes:
        max_norm: Clip the group's total gradient norm to this (torch ``clip_grad_norm_``).
        norm_type: The norm's order (2.0; ``inf`` allowed).
        value: Clip each gradient element to ``[-value, value]`` (torch ``clip_grad_value_``).
    """

    max_norm: float | None = None
    norm_type: float = 2.0
    value: float | None = None

    def __post_init__(self) -> None:
        if (self.max_norm is None) == (self.value is None):
            raise ConfigError("", "clip needs exactly one of max_norm or value", {"max_norm": self.max_norm,
                                                                                  "value": self.value})
        if self.max_norm is not None:
            v = check_real("max_norm", self.max_norm)
            if v <= 0:
                raise ConfigError("max_norm", "must be > 0", v)
            object.__setattr__(self, "max_norm", v)
        if self.value is not None:
            v = check_real("value", self.value)
            if v <= 0:
                raise ConfigError("value", "must be > 0", v)
            object.__setattr__(self, "value", v)
        object.__setattr__(self, "norm_type", check_real("norm_type", self.norm_type, finite=False))


# --------------------------------------------------------------------------- groups / optimizers / plan

@dataclass(frozen=True, kw_only=True)
class Group:
    """One param group.

    Attributes:
        name: Unique name (kept as the group's ``name`` key in torch).
        select: Union of selectors; empty means the group is not bound to
            parameters (enough for ``trace``, an error for ``resolve``).
        options: lr (absolute) or lr_mult (times the optimizer's lr), weight_decay,
            momentum, betas, eps, nesterov, ...
        schedule: Per-hyperparameter schedules overriding the plan's.
        frozen: ``None``; ``"exclude"`` (left out of the optimizer) or ``"zero_lr"``
            (kept with lr 0).
        clip: Gradient clipping for this group's parameters.
    """

    name: str
    select: tuple[Selector, ...] = ()
    # given as any mapping, stored as a FrozenMap (hashable, immutable)
    options: Mapping[str, Any] = field(default_factory=FrozenMap)
    schedule: Mapping[str, ir.Node] = field(default_factory=FrozenMap)
    frozen: str | None = None
    clip: Clip | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", "must be a non-empty string", self.name)
        object.__setattr__(self, "select", tuple(self.select))
        object.__setattr__(self, "options", check_options("", self.options))
        if "lr" in self.options and "lr_mult" in self.options:
            raise ConfigError("lr_mult", "cannot be combined with lr (lr is absolute, lr_mult scales the optimizer's "
                              "lr)", self.options["lr_mult"])
        if self.options.get("empty") and self.select:
            raise ConfigError("params", "must be empty for a group with empty: true (it selects no parameter)",
                              [s.describe() for s in self.select])
        object.__setattr__(self, "schedule", _check_schedule_map("schedule", self.schedule))
        if self.frozen is not None:
            check_choice("frozen", self.frozen, ("exclude", "zero_lr"))

    @property
    def is_rest(self) -> bool:
        return any(s.rest for s in self.select)


@dataclass(frozen=True, kw_only=True)
class OptimizerSpec:
    """One optimizer over disjoint groups.

    Attributes:
        name: Unique name (``"optimizer"`` when there is one).
        type: Optimizer class name as torch spells it (SGD, Adam, AdamW, ...).
        options: Defaults for every group (torch's optimizer keyword arguments).
        groups: The param groups, in order.
        clip: Gradient clipping over ALL of this optimizer's parameters together
            (``torch.nn.utils.clip_grad_norm_(every param, max_norm)``, as the HF
            Trainer's ``max_grad_norm`` and MMEngine's ``clip_grad`` do), before the
            step. Group clips (``Group.clip``) clip each group on its own; a plan
            uses one or the other per optimizer.
    """

    type: str
    name: str = "optimizer"
    options: Mapping[str, Any] = field(default_factory=FrozenMap)
    groups: tuple[Group, ...] = ()
    clip: Clip | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or self.type not in OPTIMIZER_DEFAULTS:
            raise ConfigError("type", "must be one of " + ", ".join(OPTIMIZER_DEFAULTS)
                              + _suggest(str(self.type), OPTIMIZER_DEFAULTS), self.type)
        object.__setattr__(self, "options", check_options("", self.options))
        groups = tuple(self.groups) or (Group(name="all", select=(Selector(rest=True),)),)
        for key in ("start_step", "empty"):
            if key in self.options:
                raise ConfigError(key, "is a group option (it says when one group joins, or that it has no "
                                  "parameters), not an optimizer option", self.options[key])
        starts = [g.options.get("start_step", 0) for g in groups]
        for i in range(1, len(groups)):
            if starts[i] < starts[i - 1]:
                raise ConfigError(f"groups[{i}].start_step", f"must be >= the start_step of the group before it "
                                  f"({groups[i - 1].name!r}: {starts[i - 1]}): groups that join mid-run come after "
                                  "the groups already there, in the order they join (torch's add_param_group "
                                  "appends)", starts[i])
        names = [g.name for g in groups]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ConfigError(f"groups[{i}].name", "must be unique within the optimizer", n)
        if self.clip is not None:
            if not isinstance(self.clip, Clip):
                raise ConfigError("clip", "must be a Clip (max_norm/norm_type or value)", self.clip)
            clipped = [g.name for g in groups if g.clip is not None]
            if clipped:
                raise ConfigError("clip", "clips the whole optimizer; its groups cannot clip on their own too "
                                  "(give the clip at one level)", clipped)
        if sum(g.is_rest for g in groups) > 1:
            raise ConfigError("groups", "at most one group may be the rest group",
                              [g.name for g in groups if g.is_rest])
        object.__setattr__(self, "groups", groups)

    def option(self, key: str) -> Any:
        """The optimizer-level value of ``key``: given, else torch's default (None if neither)."""
        if key in self.options:
            return self.options[key]
        return OPTIMIZER_DEFAULTS[self.type].get(key)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything optbridge translates: optimizers, groups, schedules, clock.

    Attributes:
        optimizers: One or more optimizers over disjoint groups.
        schedule: Default schedule per hyperparameter (``"lr"``, ``"momentum"``,
            ``"beta1"``, ``"beta2"``, ``"weight_decay"``, ...).
        step_unit: ``"iter"`` or ``"epoch"``: what one scheduler step counts.
        steps_per_epoch: Updates per epoch, to expand epoch schedules per update.
        total_steps: Updates the plan is defined for (None: unbounded).
        description: Free text saying what the plan is for.
        version: IR version.
    """

    optimizers: tuple[OptimizerSpec, ...]
    schedule: Mapping[str, ir.Node] = field(default_factory=FrozenMap)
    step_unit: str = "iter"
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    description: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        opts = tuple(self.optimizers)
        if self.description is not None and not isinstance(self.description, str):
            raise ConfigError("description", "must be a string", self.description)
        if not opts:
            raise ConfigError("optimizers", "must name at least one optimizer", [])
        names = [o.name for o in opts]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ConfigError(f"optimizers[{i}].name", "must be unique", n)
        seen: dict[str, int] = {}
        selectors: dict[Selector, str] = {}
        for i, o in enumerate(opts):
            for j, g in enumerate(o.groups):
                if g.name in seen:
                    raise ConfigError(f"optimizers[{i}].groups[{j}].name", "must be unique across optimizers", g.name)
                seen[g.name] = i
                for k, sel in enumerate(g.select):
                    other = selectors.setdefault(sel, g.name)
                    if other != g.name and not sel.rest:
                        raise ConfigError(f"optimizers[{i}].groups[{j}].params[{k}]",
                                          f"selects the same parameters as group {other!r} (groups must be "
                                          "disjoint: a parameter belongs to one group)", sel.describe())
        object.__setattr__(self, "optimizers", opts)
        object.__setattr__(self, "schedule", _check_schedule_map("schedule", self.schedule))
        check_choice("step_unit", self.step_unit, ir.UNITS)
        if self.steps_per_epoch is not None:
            object.__setattr__(self, "steps_per_epoch", check_int("steps_per_epoch", self.steps_per_epoch, minimum=1))
        if self.total_steps is not None:
            object.__setattr__(self, "total_steps", check_int("total_steps", self.total_steps, minimum=1))
        if self.version != 1:
            raise ConfigError("optbridge", "must be IR version 1", self.version)

    @property
    def groups(self) -> tuple[Group, ...]:
        """All groups of all optimizers, in order (frozen 'exclude' groups included)."""
        return tuple(g for o in self.optimizers for g in o.groups)

    def optimizer_of(self, group: Group) -> OptimizerSpec:
        """The optimizer ``group`` belongs to (by identity first: comparing groups field by field is slow)."""
        for o in self.optimizers:
            if any(g is group for g in o.groups):
                return o
        return next(o for o in self.optimizers if group in o.groups)

    def schedule_for(self, group: Group, hyper: str) -> ir.Node | None:
        """The schedule driving ``hyper`` in ``group`` (group override, else plan default)."""
        return group.schedule.get(hyper, self.schedule.get(hyper))


def _check_schedule_map(path: str, m: Mapping[str, Any]) -> FrozenMap:
    if isinstance(m, ir.Node):
        m = {"lr": m}
    if not isinstance(m, Mapping):
        raise ConfigError(path, "must map hyperparameter names to schedules", m)
    for key, node in m.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(path, "keys must be hyperparameter names such as lr, momentum, beta1, weight_decay", key)
        if key in ("lr_mult", "weight_decay_mult", "nesterov", "amsgrad", "maximize", "centered", "foreach", "fused"):
            raise ConfigError(f"{path}.{key}", "is not a schedulable hyperparameter", key)
        if not isinstance(node, ir.Node):
            raise ConfigError(f"{path}.{key}", "must be a schedule node", node)
    return FrozenMap(m)


def scheduled_hypers(plan: Plan) -> tuple[str, ...]:
    """Hyperparameters with a schedule in any group, ``"lr"`` first and always present."""
    keys = ["lr"]
    for k in plan.schedule:
        if k not in keys:
            keys.append(k)
    for g in plan.groups:
        for k in g.schedule:
            if k not in keys:
                keys.append(k)
    return tuple(keys)


def has_hyper(plan: Plan, group: Group, hyper: str) -> bool:
    """Whether ``group``'s optimizer has ``hyper`` at all (SGD has no ``beta1``, Adagrad no ``momentum``)."""
    if hyper == "lr":
        return True
    key = _SCHEDULABLE_ALIASES.get(hyper, (hyper, None))[0]
    return key in group.options or plan.optimizer_of(group).option(key) is not None


def hyper_base(plan: Plan, group: Group, hyper: str, *, path: str = "") -> float:
    """Base value of ``hyper`` for ``group``: group option, optimizer option, torch default.

    ``lr_mult`` scales the optimizer's lr; a ``frozen: zero_lr`` group has lr 0;
    ``beta1``/``beta2`` read ``betas``.
    """
    opt = plan.optimizer_of(group)
    if hyper == "lr":
        if group.frozen == "zero_lr":
            return 0.0
        if "lr" in group.options:
            return float(group.options["lr"])
        lr = opt.option("lr")
        return float(lr) * float(group.options.get("lr_mult", 1.0))
    key, idx = _SCHEDULABLE_ALIASES.get(hyper, (hyper, None))
    v = group.options.get(key, opt.option(key))
    if key == "weight_decay" and "weight_decay_mult" in group.options and key not in group.options:
        v = float(v) * float(group.options["weight_decay_mult"])
    if v is None:
        raise ConfigError(path or f"groups.{group.name}.schedule.{hyper}",
                          f"{opt.type} has no hyperparameter {key!r} to schedule", hyper)
    return float(v[idx] if idx is not None else v)


def group_feature(plan: Plan, group: Group, key: str) -> Any:
    """The value of a :data:`GROUP_FEATURES` option for ``group`` (``lr_dtype`` falls back to its optimizer's).

    Defaults: ``lr_dtype`` ``"float64"``, ``start_step`` 0, ``empty`` False.
    """
    if key not in GROUP_FEATURES:
        raise ConfigError("key", "must be one of " + ", ".join(GROUP_FEATURES), key)
    if key in group.options:
        return group.options[key]
    if key == "lr_dtype":
        return plan.optimizer_of(group).options.get("lr_dtype", "float64")
    return 0 if key == "start_step" else False


def check_group_features(plan: Plan, backend: str, supported: tuple[str, ...] = ()) -> None:
    """Refuse every :data:`GROUP_FEATURES` option in use that ``backend`` does not support.

    A feature counts as used when it differs from its default (``lr_dtype: float64``,
    ``start_step: 0`` and ``empty: false`` change nothing).

    Raises:
        UnsupportedError: naming the group option, the backend and what it would take.
    """
    from .errors import UnsupportedError
    defaults = {"lr_dtype": "float64", "start_step": 0, "empty": False}
    for o in plan.optimizers:
        for g in o.groups:
            for key in GROUP_FEATURES:
                if key not in supported and group_feature(plan, g, key) != defaults[key]:
                    raise UnsupportedError(f"groups.{g.name}.{key}", backend,
                                           f"the plan {_FEATURE_WHY[key]} ({key}: {group_feature(plan, g, key)!r})")
