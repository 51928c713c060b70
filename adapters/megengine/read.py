"""Live MegEngine objects -> Plan: :func:`from_megengine` (imports megengine).

Reads MegEngine's own optimizers (SGD, Adam, AdamW, Adagrad, Adadelta, LAMB),
optbridge's torch-exact ones (:mod:`.optimizers`: every option, as group keys),
``MultiStepLR`` and optbridge's :class:`~.driver.PlanScheduler`. The plan's update 0
is the optimizers' **next** update: a scheduler that already stepped starts where it
stands (:func:`optbridge.shift.shift`, the core's one way to start a schedule
mid-run), and the plan's values for that update are checked against what the
groups hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import megengine.optimizer as mopt
from megengine.optimizer import LRScheduler, MultiStepLR

from optbridge import evaluate, ir
from optbridge.describe_groups import glob_escape
from optbridge.errors import ConfigError, EvaluationError, UnsupportedError
from optbridge.plan import OPTIMIZER_DEFAULTS, Group, OptimizerSpec, Plan, Selector
from optbridge.shift import shift
from optbridge.slots import slots

from . import optimizers as exact
from .build import BACKEND, NATIVE_CLASSES, named_parameters
from .driver import PlanScheduler, StepGuard

__all__ = ["from_megengine"]

_NATIVE_ORDER = (("AdamW", mopt.AdamW), ("Adam", mopt.Adam), ("SGD", mopt.SGD), ("Adagrad", mopt.Adagrad),
                 ("Adadelta", mopt.Adadelta), ("LAMB", mopt.LAMB))


def _kind(o: Any, path: str) -> tuple[str, bool]:
    """``(plan type, is optbridge's exact class)``."""
    for cls in type(o).__mro__:
        for name, ex in exact.OPTIMIZERS.items():
            if cls is ex:
                return name, True
    if isinstance(o, mopt.LAMBFp16):
        raise UnsupportedError(path, BACKEND, "LAMBFp16 keeps float16 parameters with float32 copies; optbridge plans "
                               "describe float32 training")
    for name, cls in _NATIVE_ORDER:
        if isinstance(o, cls):
            return name, False
    raise UnsupportedError(path, BACKEND, f"{type(o).__name__} is neither one of MegEngine's SGD, Adam, AdamW, "
                           f"Adagrad, Adadelta, LAMB nor one of optbridge's exact {', '.join(exact.OPTIMIZERS)}")


def _as_list(x: Any, attrs: tuple[str, ...]) -> list[Any]:
    if x is None:
        return []
    for a in attrs:
        inner = getattr(x, a, None)
        if isinstance(inner, (list, tuple)):
            return [y for i in inner for y in _as_list(i, attrs)]
    if isinstance(x, (list, tuple)):
        return [y for i in x for y in _as_list(i, attrs)]
    return [x]


def _option_keys(typ: str, is_exact: bool) -> list[str]:
    """The group keys that become plan options (torch's names)."""
    if not is_exact:
        return list(NATIVE_CLASSES[typ][1])
    torch_opts = OPTIMIZER_DEFAULTS[typ]
    ctor = exact.torch_defaults(typ)
    return [k for k in exact.OPTIMIZERS[typ].HYPERS if k != "lr" and (k in torch_opts or k in ctor)]


def _plain(key: str, v: Any) -> Any:
    if key == "betas":
        return (float(v[0]), float(v[1]))
    return bool(v) if isinstance(v, bool) else float(v)


def _advance(node: ir.Node, base: float, c: int, unit: str, spe: int | None, path: str) -> ir.Node:
    """``node`` (on the plan clock ``unit``) started ``c`` updates in: update 0 is update ``c``."""
    if c == 0:
        return node
    if any(isinstance(x, ir.Plateau) for x in ir.walk(node)):
        raise UnsupportedError(path, BACKEND, f"the scheduler stands at update {c}, and a plateau schedule's state "
                               "(best, bad steps, cooldown) lives in its metric history: read the setup before it "
                               "steps, or save and load its state_dict instead")
    root = node.unit or unit
    if any((x.unit or root) != root for x in ir.walk(node)):
        raise UnsupportedError(path, BACKEND, f"the scheduler stands at update {c} of a schedule that mixes "
                               "iteration and epoch clocks, which cannot be started mid-run exactly; read the setup "
                               "before it steps, or save and load its state_dict instead")
    scale = node.scale(unit, spe)
    e, r = divmod(c, scale)
    try:
        if r == 0:
            return shift(node, e, base)
        now, nxt = shift(node, e, base), shift(node, e + 1, base)
    except ConfigError as err:
        raise err.under(path) from None
    return ir.Sequence(parts=(dataclasses.replace(now, unit="epoch"), dataclasses.replace(nxt, unit="epoch")),
                       boundaries=(scale - r,), unit="iter")


def _read_scheduler(s: Any, o: Any, path: str, step_unit: str, spe: int | None
                    ) -> tuple[dict[int, dict[str, ir.Node]], dict[int, dict[str, float]], tuple[Any, ...]]:
    """``({group index: {hyper: node}}, {group index: {hyper: base}}, (unit, spe, total or None))``."""
    nodes: dict[int, dict[str, ir.Node]] = {}
    bases: dict[int, dict[str, float]] = {}
    c = int(s.current_epoch)
    if isinstance(s, PlanScheduler):
        if spe is not None and s.steps_per_epoch is not None and spe != s.steps_per_epoch:
            raise ConfigError("steps_per_epoch", f"must be the PlanScheduler's own ({s.steps_per_epoch}) or None", spe)
        unit, sspe = s.unit, s.steps_per_epoch
        for sl in s.slots:
            if sl.node is None:
                continue
            nodes.setdefault(sl.index, {})[sl.hyper] = _advance(sl.node, sl.base, c, unit, sspe,
                                                                f"{path}.{sl.path}")
            bases.setdefault(sl.index, {})[sl.hyper] = sl.base
        total = None if s.total_steps is None else s.total_steps - c
        return nodes, bases, (unit, sspe, total)
    if type(s) is MultiStepLR:
        node = ir.MultiStep(milestones=tuple(int(m) for m in s.milestones), gamma=float(s.gamma))
        for gi, gd in enumerate(o.param_groups):
            base = float(gd.get("initial_lr", gd["lr"]))
            nodes[gi] = {"lr": _advance(node, base, c, "iter", None, path)}
            bases[gi] = {"lr": base}
        guard = vars(o).get("step")  # to_megengine's guard knows the setup's total_steps (in updates)
        total = guard.total_steps - c if isinstance(guard, StepGuard) and guard.scheduler is s and \
            guard.total_steps is not None and step_unit == "iter" else None
        return nodes, bases, (step_unit, spe, total)
    raise UnsupportedError(path, BACKEND, f"{type(s).__name__}: only MultiStepLR and optbridge's PlanScheduler can be "
                           "read back (other LRScheduler subclasses are arbitrary Python code)")


def from_megengine(optimizer: Any, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
                   steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """The plan of live MegEngine optimizer(s) and scheduler(s) (see :func:`optbridge.from_megengine`).

    Args:
        optimizer: A MegEngine optimizer (MegEngine's own or optbridge's exact one), a
            list of them, or a ``MultipleOptimizer``.
        scheduler: None, ``MultiStepLR``, :class:`~.driver.PlanScheduler`, or a list
            or ``MultipleScheduler`` of them; at most one per optimizer.
        model: The module (or ``name -> Parameter`` pairs) whose names the groups
            select; parameters in no optimizer become a ``frozen: exclude`` group.
        step_unit: What ``MultiStepLR.step()`` counts (a PlanScheduler carries its own clock).
        steps_per_epoch: Updates per epoch.
        total_steps: Updates the plan is defined for, from the optimizers' next update
            (at most what a PlanScheduler's own ``total_steps`` leaves).

    Raises:
        ConfigError: a bad argument, or groups that do not hold what their scheduler says.
        UnsupportedError: an optimizer or scheduler that cannot be read exactly.
    """
    step_unit = ir.check_choice("step_unit", step_unit, ir.UNITS)
    if steps_per_epoch is not None:
        steps_per_epoch = ir.check_int("steps_per_epoch", steps_per_epoch, minimum=1)
    if total_steps is not None:
        total_steps = ir.check_int("total_steps", total_steps, minimum=1)
    opts = _as_list(optimizer, ("opts", "optimizers"))
    if not opts or not all(isinstance(o, mopt.Optimizer) for o in opts):
        raise ConfigError("optimizer", "must be a MegEngine optimizer, a list of them or a MultipleOptimizer",
                          type(optimizer).__name__)
    scheds = _as_list(scheduler, ("schedulers",))
    by_opt: dict[int, tuple[int, Any]] = {}
    for i, s in enumerate(scheds):
        where = "scheduler" if len(scheds) == 1 else f"scheduler[{i}]"
        if not isinstance(s, LRScheduler):
            raise ConfigError(where, "must be a MegEngine LRScheduler", type(s).__name__)
        if not any(s.optimizer is o for o in opts):
            raise ConfigError(where, "drives an optimizer that is not among the given optimizers", type(s).__name__)
        if id(s.optimizer) in by_opt:
            raise UnsupportedError(where, BACKEND, "two schedulers drive one optimizer; optbridge reads one each")
        by_opt[id(s.optimizer)] = (i, s)

    names: dict[int, str] | None = None
    named: list[tuple[str, Any]] = []
    if model is not None:
        named, _ = named_parameters(model)
        names = {id(p): n for n, p in named}

    clock: tuple[Any, ...] | None = None
    specs: list[dict[str, Any]] = []
    used: set[str] = set()
    seen_params: set[int] = set()
    held: dict[str, dict[str, Any]] = {}
    for oi, o in enumerate(opts):
        opath = "optimizer" if len(opts) == 1 else f"optimizer[{oi}]"
        typ, is_exact = _kind(o, opath)
        nodes: dict[int, dict[str, ir.Node]] = {}
        bases: dict[int, dict[str, float]] = {}
        if id(o) in by_opt:
            si, s = by_opt[id(o)]
            nodes, bases, c = _read_scheduler(s, o, "scheduler" if len(scheds) == 1 else f"scheduler[{si}]",
                                              step_unit, steps_per_epoch)
            if clock is not None and c[:2] != clock[:2]:
                raise UnsupportedError("scheduler", BACKEND, f"the schedulers run on different clocks ({clock[:2]} "
                                       f"and {c[:2]})")
            if clock is None or (c[2] is not None and (clock[2] is None or c[2] < clock[2])):
                clock = c
        groups = []
        for gi, gd in enumerate(o.param_groups):
            gname = gd.get("name")
            if not isinstance(gname, str) or not gname or gname in used:
                gname = f"group{len(used)}"
                while gname in used:
                    gname += "_"
            used.add(gname)
            held[gname] = gd
            base = bases.get(gi, {})
            options: dict[str, Any] = {"lr": base.get("lr", float(gd["lr"]))}
            for key in _option_keys(typ, is_exact):
                if key not in gd:
                    continue
                v = _plain(key, gd[key])
                if key == "betas":
                    v = (base.get("beta1", v[0]), base.get("beta2", v[1]))
                elif key in base:
                    v = base[key]
                options[key] = v
            if not is_exact and typ == "SGD" and o.nesterov:
                options["nesterov"] = True
            select: tuple[Selector, ...] = ()
            if names is not None:
                missing = [p for p in gd["params"] if id(p) not in names]
                if missing:
                    raise ConfigError(f"{opath}.param_groups[{gi}].params", "holds a parameter that is not in model",
                                      f"{len(missing)} parameter(s)", show_value=False)
                select = (Selector(names=tuple(glob_escape(names[id(p)]) for p in gd["params"])),)
            seen_params.update(id(p) for p in gd["params"])
            groups.append(Group(name=gname, select=select, options=ir.FrozenMap(options),
                                schedule=ir.FrozenMap(nodes.get(gi, {}))))
        oname = getattr(o, "_optbridge_name", None)
        target = next((sp for sp in specs if oname is not None and sp["name"] == oname and sp["type"] == typ), None)
        if target is not None:  # an SGD that to_megengine split by nesterov: one optimizer again
            target["groups"].extend(groups)
            continue
        if not isinstance(oname, str) or not oname or any(sp["name"] == oname for sp in specs):
            oname = "optimizer" if len(opts) == 1 else f"optimizer{oi}"
        lr = o._defaults.get("lr") if isinstance(getattr(o, "_defaults", None), Mapping) else None
        specs.append({"name": oname, "type": typ, "groups": groups, "lr": float(lr or 0.0)})

    if names is not None:
        rest = [n for n, p in named if id(p) not in seen_params]
        if rest:
            gname = "excluded"
            while gname in used:
                gname += "_"
            specs[0]["groups"].append(Group(name=gname, select=(Selector(names=tuple(glob_escape(n) for n in rest)),),
                                            frozen="exclude"))

    all_groups = [g for sp in specs for g in sp["groups"] if g.frozen != "exclude"]
    plan_schedule: dict[str, ir.Node] = {}
    first = dict(all_groups[0].schedule) if all_groups else {}
    if first and all(dict(g.schedule) == first for g in all_groups):
        plan_schedule = first  # every group follows the same schedules: write them once, plan-wide
        for sp in specs:
            sp["groups"] = [dataclasses.replace(g, schedule=ir.FrozenMap()) for g in sp["groups"]]
    optimizers = tuple(OptimizerSpec(type=sp["type"], name=sp["name"], options=ir.FrozenMap(lr=sp["lr"]),
                                     groups=tuple(sp["groups"])) for sp in specs)
    unit, spe, left = clock if clock is not None else (step_unit, steps_per_epoch, None)
    if left is not None and left < 1:
        raise ConfigError("scheduler", "stands at the end of its plan (total_steps): no update is left to read", left)
    if total_steps is not None and left is not None and total_steps > left:
        raise ConfigError("total_steps", f"must be at most {left}: the PlanScheduler's plan ends there", total_steps)
    plan = Plan(optimizers=optimizers, schedule=ir.FrozenMap(plan_schedule), step_unit=unit, steps_per_epoch=spe,
                total_steps=total_steps if total_steps is not None else left)
    _check_current(plan, held)
    return plan


def _check_current(plan: Plan, held: Mapping[str, Mapping[str, Any]]) -> None:
    """The plan's values for the next update must be what the groups hold (a scheduler moved by hand is refused)."""
    for s in slots(plan):
        if s.node is None or s.group not in held:
            continue
        try:
            want = float(evaluate.table([(s.node, s.base, s.path)], 0, 1, unit=plan.step_unit,
                                        steps_per_epoch=plan.steps_per_epoch)[0, 0])
        except EvaluationError:  # a plateau without metrics: nothing to compare
            continue
        gd = held[s.group]
        got = gd.get(s.key)
        if got is None:
            continue
        got = float(got if s.position is None else got[s.position])
        if not (want == got or abs(want - got) <= 1e-12 * abs(got)):
            raise ConfigError(f"groups.{s.group}.{s.hyper}", f"the imported plan gives {want!r} for the next "
                              f"update but the optimizer holds {got!r}: the scheduler's position does not match its "
                              "groups (stepped with an explicit epoch, or a value edited by hand?)", got)
