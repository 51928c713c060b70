"""What a port holds: a plan resolved for one framework and form, as plain data (:class:`PortSpec`).

:func:`build_spec` decides everything the generated module needs and nothing
it computes: the optimizer classes (:mod:`.optimizers`), the built groups with
their effective options and selectors, the scheduled slots
(:func:`optbridge.slots.slots`), the tables the slots read (one per schedule
that groups share up to their base, see :mod:`.tables`), and the end of the
port: its length ``total`` and its horizon, with the reason, from
:class:`optbridge.source.ValueSource` (the core's one horizon policy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import ir
from ..errors import ConfigError, UnsupportedError
from ..params import effective_options
from ..plan import OPTIMIZER_DEFAULTS, Plan, check_group_features, group_feature
from ..serialize import _clip_to_dict, _selector_to_dict
from ..slots import Slot, fingerprint, slots
from ..source import PastHorizon, ValueSource
from .optimizers import IMPL_FLAGS, Choice, choose

__all__ = ["PortSpec", "PortOptimizer", "PortGroup", "PortSlot", "Column", "build_spec", "TARGETS", "FORMS",
           "backend_name"]

TARGETS = ("torch", "mindspore", "megengine")
#: Forms per framework (the first is the default).
FORMS: dict[str, tuple[str, ...]] = {"torch": ("table",), "megengine": ("table",),
                                     "mindspore": ("cell", "list", "experimental")}


def backend_name(framework: str, form: str) -> str:
    """The backend label in errors: ``port-torch``, ``port-mindspore-list``, ..."""
    return f"port-{framework}" if framework != "mindspore" else f"port-mindspore-{form}"


@dataclass(frozen=True)
class PortOptimizer:
    """One optimizer of the generated module.

    Attributes:
        name: The plan's optimizer name.
        type: Its type (torch's class name).
        choice: The class built (:class:`~optbridge.port.optimizers.Choice`).
        options: Constructor-level options (``choice.ctor_keys``), equal in every group.
        clip: Optimizer-level clipping (``max_norm``/``norm_type`` or ``value``), or None.
    """

    name: str
    type: str
    choice: Choice
    options: dict[str, Any]
    clip: dict[str, float] | None


@dataclass(frozen=True)
class PortGroup:
    """One built group (``frozen: exclude`` groups are listed in :attr:`PortSpec.excluded`).

    Attributes:
        name: Group name.
        optimizer: Index into :attr:`PortSpec.optimizers`.
        index: Its ``param_groups`` index once it is in the optimizer: its position among its
            optimizer's groups (the plan puts groups that join later after the others, in the order
            they join, so ``add_param_group`` appends them there).
        select: Selectors as plain data (``"rest"``, a glob, or a mapping of criteria).
        options: The group dict's options (``choice.group_keys``; lr is the base).
        frozen: ``None`` or ``"zero_lr"``.
        clip: Group clipping, or None.
        start: The update at which the group joins its optimizer (``start_step``; 0: from the start).
    """

    name: str
    optimizer: int
    index: int
    select: list[Any]
    options: dict[str, Any]
    frozen: str | None
    clip: dict[str, float] | None
    start: int = 0


@dataclass(frozen=True)
class Column:
    """One table file: the values of one schedule over updates ``0 .. total - 1`` (float64).

    Attributes:
        name: File stem (``c0``).
        relative: The values are the schedule at base 1, and a slot reads
            ``scale * column[k]`` with its own base as ``scale`` (the evaluator's
            value is exactly that product, see :func:`optbridge.evaluate.scales_base`);
            else the slot's own values (``scale`` 1).
        node: The schedule.
        base: 1.0 for a relative column, else the slot's base.
        path: Config path of the first slot that reads it (errors, metadata).
    """

    name: str
    relative: bool
    node: ir.Node
    base: float
    path: str


@dataclass(frozen=True)
class PortSlot:
    """A scheduled hyperparameter of one built group.

    Attributes:
        group: Index into :attr:`PortSpec.groups`.
        hyper: ``lr``, ``momentum``, ``beta1``, ...
        key: Group dict key (``betas`` for beta1/beta2).
        position: Index in a tuple key, else None.
        column: Index into :attr:`PortSpec.columns`.
        scale: The value is ``scale * column[k]`` (the base for a relative column, else 1).
        base: The slot's base value.
        path: Config path of its schedule.
    """

    group: int
    hyper: str
    key: str
    position: int | None
    column: int
    scale: float
    base: float
    path: str


@dataclass(frozen=True)
class PortSpec:
    """Everything the generated module needs (plain data plus the columns' nodes).

    Attributes:
        framework, form: The target.
        plan: The plan ported (after the name map, if any).
        optimizers, groups, slots, columns: See the classes.
        excluded: ``(name, select)`` of the ``frozen: exclude`` groups.
        held: ``(group index, value)`` of the lr of groups whose lr is not scheduled
            (a MindSpore nn optimizer needs a dynamic lr in every group).
        total: Updates the tables hold.
        horizon: The first update without a value (None: the tables hold their last
            value, because every schedule says ``hold``).
        why: Why the schedule ends at ``horizon`` (the core's wording).
        unit, steps_per_epoch: The plan's clock.
        fingerprint: :func:`optbridge.slots.fingerprint` of the slots and clock.
        metrics: Plateau metrics the values were computed with.
    """

    framework: str
    form: str
    plan: Plan
    optimizers: tuple[PortOptimizer, ...]
    groups: tuple[PortGroup, ...]
    excluded: tuple[tuple[str, list[Any]], ...]
    slots: tuple[PortSlot, ...]
    columns: tuple[Column, ...]
    held: tuple[tuple[int, float], ...]
    total: int
    horizon: int | None
    why: str
    unit: str
    steps_per_epoch: int | None
    fingerprint: str
    metrics: tuple[float, ...] | None

    @property
    def backend(self) -> str:
        return backend_name(self.framework, self.form)

    @property
    def hold(self) -> bool:
        return self.horizon is None

    @property
    def needs_optbridge(self) -> bool:
        return any(o.choice.needs_optbridge for o in self.optimizers)


def _json_value(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _optimizers(plan: Plan, framework: str, form: str, mode: str, backend: str
                ) -> tuple[list[PortOptimizer], list[PortGroup]]:
    opts: list[PortOptimizer] = []
    groups: list[PortGroup] = []
    for oi, spec in enumerate(plan.optimizers):
        built = [g for g in spec.groups if g.frozen != "exclude"]
        eff = [{k: v for k, v in effective_options(plan, g).items() if k not in IMPL_FLAGS} for g in built]
        path = f"optimizers[{oi}]" if len(plan.optimizers) > 1 else "optimizer"
        starts = [int(group_feature(plan, g, "start_step")) for g in built]
        choice = choose(framework, spec.type, eff, form=form, mode=mode, path=path, backend=backend)
        if any(starts) and framework != "torch" and mode == "auto" and choice.api != "exact":
            exact = choose(framework, spec.type, eff, form=form, mode="exact", path=path, backend=backend)
            if exact.api == "exact":  # only optbridge's classes take a group mid-run
                choice = dataclasses.replace(exact, why=f"a group joins mid-run (start_step), which {choice.cls} "
                                             f"cannot do ({_NO_JOIN[framework]}): optbridge's class can")
        defaults = OPTIMIZER_DEFAULTS[spec.type]
        if any(starts):
            _check_joins(framework, spec.type, built, starts, choice, mode, backend)
        for j, (g, o) in enumerate(zip(built, eff)):
            # an option the class does not take is fine only at torch's default (maximize: false)
            dropped = sorted(k for k in o if k not in choice.group_keys and k not in choice.ctor_keys
                             and (k not in defaults or o[k] != defaults[k]))
            if dropped:
                raise UnsupportedError(f"groups.{g.name}.{dropped[0]}", backend,
                                       f"{choice.cls} has no option {dropped[0]!r} (it takes "
                                       f"{', '.join(choice.group_keys + choice.ctor_keys)})")
            groups.append(PortGroup(g.name, oi, j, [_selector_to_dict(s) for s in g.select],
                                    {k: _json_value(o[k]) for k in choice.group_keys if k in o}, g.frozen,
                                    None if g.clip is None else _clip_to_dict(g.clip), starts[j]))
        ctor = {k: _json_value(eff[0][k]) for k in choice.ctor_keys if eff and k in eff[0]}
        opts.append(PortOptimizer(spec.name, spec.type, choice, ctor,
                                  None if spec.clip is None else _clip_to_dict(spec.clip)))
    return opts, groups


#: Why a framework's own optimizers cannot take a group mid-run.
_NO_JOIN = {"mindspore": "MindSpore's optimizers take every group at construction and update it from the first "
                         "update",
            "megengine": "MegEngine's own optimizers create their state in the constructor only"}


def _check_joins(framework: str, kind: str, built: Sequence[Any], starts: Sequence[int], choice: Choice, mode: str,
                 backend: str) -> None:
    """Refuse groups joining mid-run (``start_step``) where the generated module cannot add them exactly."""
    late = next(g for g, s in zip(built, starts) if s)
    where = f"groups.{late.name}.start_step"
    if framework in ("torch", "megengine") and all(starts):
        raise UnsupportedError(where, backend, f"{framework} builds an optimizer over at least one group, and every "
                               "group of this optimizer joins later (start_step > 0 in each)")
    if framework != "torch" and choice.api != "exact":
        way = ("optimizer='auto' uses optbridge's class, which can" if mode == "native" else
               f"and optbridge has no {framework} class of {kind}")
        raise UnsupportedError(where, backend, f"{choice.cls} cannot take a group mid-run ({_NO_JOIN[framework]}); "
                               + way)


def _horizon(items: Sequence[Slot], plan: Plan, total_steps: int | None, metrics: Sequence[float] | None
             ) -> tuple[int, int | None, str]:
    """``(total, horizon, why)`` for the scheduled ``items`` (see :class:`PortSpec`).

    The plan's own end (its ``total_steps``, a one-cycle or table end, the metrics
    given) bounds ``total_steps``; a shorter ``total_steps`` ends the port earlier.
    """
    def source(bound: int | None) -> ValueSource:
        return ValueSource(items, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch, total_steps=bound,
                           metrics=metrics)

    src = source(plan.total_steps)
    if total_steps is not None:
        if src.horizon is not None and total_steps > src.horizon:
            src.check(total_steps - 1)  # raises PastHorizon: the plan has no values that far
        src = source(total_steps)
    h = src.horizon
    if h is None and not items:
        return 0, None, "nothing is scheduled: every value is held"
    if h is None:
        holds = [s for s in items if s.node is not None]
        tables = [s.node for s in holds if isinstance(s.node, ir.Table) and s.node.hold]
        if holds and len(tables) == len(holds):
            total = max(len(t.values) for t in tables)
            return total, None, "every schedule holds its last value (table with hold: true)"
        raise ConfigError("total_steps", "is required: the plan sets no total_steps and its schedules have no end "
                          "(give the number of updates the port must hold)", None, show_value=False)
    why = f"the plan is defined for {h} updates"
    try:
        src.check(h)
    except PastHorizon as e:  # always: h is the horizon; the core's words say why
        why = str(e).split(": ", 1)[1]
    return h, h, why


def build_spec(plan: Plan, to: str, *, form: str | None = None, total_steps: int | None = None,
               metrics: Sequence[float] | None = None, optimizer: str = "auto") -> PortSpec:
    """Resolve ``plan`` for framework ``to`` (see the module docstring).

    Raises:
        ConfigError: a bad argument, or no end known (``total_steps`` missing).
        UnsupportedError: something the target cannot run exactly (the reason says what).
        EvaluationError: ``total_steps`` reaches past the end of the plan's schedules.
    """
    to = ir.check_choice("to", to, TARGETS)
    form = ir.check_choice("form", FORMS[to][0] if form is None else form, FORMS[to])
    if total_steps is not None:
        total_steps = ir.check_int("total_steps", total_steps, minimum=1)
    backend = backend_name(to, form)
    check_group_features(plan, backend, ("start_step",))
    items = slots(plan, held=True)
    scheduled = [s for s in items if s.node is not None]
    for s in scheduled:
        assert s.node is not None  # scheduled: the slots with a node
        if any(isinstance(x, ir.Plateau) for x in ir.walk(s.node)) and metrics is None:
            raise UnsupportedError(s.path, backend, "plateau needs the metric series: pass metrics= (the values are "
                                   "precomputed from it), or use optbridge.to_<framework>, which steps with the metric")
        if to == "mindspore" and s.hyper != "lr":
            raise UnsupportedError(s.path, backend, f"the MindSpore port drives lr only ({s.hyper} is scheduled); "
                                   "optbridge.to_mindspore(plan, net, form='experimental') drives momentum and "
                                   "weight decay Parameters")
    opts, groups = _optimizers(plan, to, form, optimizer, backend)
    total, horizon, why = _horizon(scheduled, plan, total_steps, metrics)
    from ..evaluate import scales_base  # numpy: loaded on use
    columns: list[Column] = []
    where: dict[tuple[Any, ...], int] = {}
    port_slots: list[PortSlot] = []
    row_of = {(g.optimizer, g.index): i for i, g in enumerate(groups)}
    opt_index = {o.name: i for i, o in enumerate(plan.optimizers)}
    held: list[tuple[int, float]] = []
    for s in items:
        gi = row_of[(opt_index[s.optimizer], s.index)]
        if s.node is None:
            if s.hyper == "lr":
                held.append((gi, s.base))
            continue
        rel = scales_base(s.node, plan.step_unit)
        key: tuple[Any, ...] = ("rel", s.node) if rel else ("abs", s.node, s.base)
        if key not in where:
            where[key] = len(columns)
            columns.append(Column(f"c{len(columns)}", rel, s.node, 1.0 if rel else s.base, s.path))
        port_slots.append(PortSlot(gi, s.hyper, s.key, s.position, where[key], s.base if rel else 1.0, s.base,
                                   s.path))
    fp = fingerprint(scheduled, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch, total_steps=horizon)
    excluded = tuple((g.name, [_selector_to_dict(x) for x in g.select]) for g in plan.groups if g.frozen == "exclude")
    plan = dataclasses.replace(plan, total_steps=horizon) if horizon is not None else plan
    return PortSpec(to, form, plan, tuple(opts), tuple(groups), excluded, tuple(port_slots), tuple(columns),
                    tuple(held), total, horizon, why, plan.step_unit, plan.steps_per_epoch, fp,
                    None if metrics is None else tuple(float(m) for m in metrics))

