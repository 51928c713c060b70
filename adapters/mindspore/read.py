"""MindSpore to plan: list-function specs, LearningRateSchedule cells, nn optimizers, experimental schedulers.

:func:`read_spec` reads a MindSpore-dialect document or a ``learning_rate`` spec
(a mapping such as ``{"type": "cosine_decay_lr", "min_lr": 0.0, ...}``, or a list
of list-function specs, concatenated) through :mod:`optbridge.dialects.mindspore`,
which knows the list functions' arguments and MindSpore's code semantics.

:func:`from_mindspore` reads live objects:

* a ``LearningRateSchedule`` cell (MindSpore's own, read from its attributes, or
  one optbridge generated, which carries its node);
* a ``mindspore.nn`` optimizer (SGD, Momentum, Adam, AdamWeightDecay): its group
  setup as MindSpore holds it per parameter (lr object, weight decay), including
  the beta/gamma weight-decay name filter of an ungrouped optimizer, made an
  explicit group;
* a ``mindspore.experimental.optim`` optimizer (SGD, Adam, AdamW), with an
  optional ``scheduler=`` from its ``lr_scheduler`` module (read from its
  attributes; a scheduler already stepped starts where it stands: update 0 of the
  plan is the optimizer's next update, as with ``from_torch``);
* an optimizer :func:`~optbridge_adapters.mindspore.build.to_mindspore` built (its
  part of the plan, started where it stands), or optbridge's torch-exact optimizers
  (their groups and the hyperparameters' current values).

Groups select their parameters by exact name (regex selectors), so the plan
resolves over the same net.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from mindspore import Parameter, nn
from mindspore.experimental.optim import lr_scheduler as MLS
from mindspore.experimental.optim.optimizer import Optimizer as ExpOptimizer
from mindspore.nn.learning_rate_schedule import LearningRateSchedule
from mindspore.nn.optim.optimizer import _ConvertToCell, _IteratorLearningRate, _WrappedWeightDecay

from optbridge import ir
from optbridge.dialects import mindspore as dialect
from optbridge.errors import ConfigError
from optbridge.ir import FrozenMap
from optbridge.plan import Group, OptimizerSpec, Plan, Selector, hyper_base
from optbridge.shift import shift
from optbridge.slots import applies, schedule_path

from . import cells
from .optim import EXPERIMENTAL_KEYS
from .optimizers import ExactOptimizer

__all__ = ["from_mindspore", "read_spec"]


def _f(x: Any) -> float:
    if isinstance(x, Parameter) or hasattr(x, "asnumpy"):
        return float(np.asarray(x.asnumpy()).reshape(-1)[0])
    return float(x)


# --------------------------------------------------------------------------- cells


def cell_to_node(cell: Any, path: str = "learning_rate") -> tuple[ir.Node | None, float, int | None]:
    """``(node, base, length)`` for a MindSpore lr object (cell, list wrapper, static Parameter)."""
    if isinstance(cell, cells.ScheduleCell):
        if cell.node is None:
            raise ConfigError(path, "is an optbridge cell without its node", type(cell).__name__)
        return cell.node, float(cell.base or 0.0), None
    if isinstance(cell, cells.ConstantCell):
        return None, _f(cell.value), None
    if isinstance(cell, (cells.TableCell, _IteratorLearningRate)):
        held = cell.values if isinstance(cell, cells.TableCell) else cell.learning_rate
        vals = np.asarray(held.asnumpy(), dtype=np.float64)
        return ir.Table(values=tuple(float(v) for v in vals)), float(vals[0]), int(vals.size)
    if isinstance(cell, _ConvertToCell):
        return None, _f(cell.learning_rate), None
    if isinstance(cell, _WrappedWeightDecay):
        node, base, n = cell_to_node(cell.weight_decay, path)
        if _f(cell.loss_scale) != 1.0:
            raise ConfigError(path, "has a loss_scale other than 1.0 (not modelled)", _f(cell.loss_scale))
        return node, base, n
    if isinstance(cell, Parameter):
        return None, _f(cell), None
    kind = type(cell).__name__
    if kind in dialect.CELLS:
        a = _cell_args(cell, kind)
        lr = dialect._cell(kind, a, path)  # noqa: SLF001 - the dialect's cell reader (validation and semantics)
        return lr.node, lr.base, None
    raise ConfigError(path, "is not a LearningRateSchedule optbridge can read (MindSpore's "
                      + ", ".join(dialect.CELLS) + ", or an optbridge cell)", kind)


def _cell_args(cell: Any, kind: str) -> dict[str, Any]:
    if kind in ("ExponentialDecayLR", "NaturalExpDecayLR", "InverseDecayLR"):
        return {"learning_rate": float(cell.learning_rate), "decay_rate": float(cell.decay_rate),
                "decay_steps": int(cell.decay_steps), "is_stair": bool(cell.is_stair)}
    if kind == "CosineDecayLR":
        return {"min_lr": float(cell.min_lr), "max_lr": float(cell.max_lr), "decay_steps": int(cell.decay_steps)}
    if kind == "PolynomialDecayLR":
        return {"learning_rate": float(cell.start_learning_rate), "end_learning_rate": float(cell.end_learning_rate),
                "decay_steps": int(cell.decay_steps), "power": float(cell.power),
                "update_decay_steps": bool(cell.update_decay_steps)}
    return {"learning_rate": float(cell.learning_rate), "warmup_steps": int(cell.warmup_steps)}


def _names(model: Any) -> dict[int, str]:
    if not hasattr(model, "parameters_and_names"):
        raise ConfigError("model", "must be a mindspore.nn.Cell (its parameters_and_names() name the groups' "
                          "parameters)", type(model).__name__)
    return {id(p): n for n, p in model.parameters_and_names()}


def _exact(names: Sequence[str]) -> tuple[Selector, ...]:
    return (Selector(regex=tuple(re.escape(n) for n in names)),)


# --------------------------------------------------------------------------- nn optimizers


def _nn_optimizer(opt: Any) -> Plan:
    kind = type(opt).__name__
    options: dict[str, Any] = {}
    if kind == "SGD":
        ptype = "SGD"
        options.update(momentum=_f(opt.momentum), dampening=float(opt.dampening), nesterov=bool(opt.nesterov))
    elif kind == "Momentum":
        ptype = "SGD"
        options.update(momentum=_f(opt.momentum), nesterov=bool(opt.use_nesterov))
    elif kind in ("Adam", "AdamWeightDecay"):
        ptype = kind
        options.update(betas=(_f(opt.beta1), _f(opt.beta2)), eps=_f(opt.eps))
        if kind == "Adam" and (getattr(opt, "use_nesterov", False) or getattr(opt, "use_amsgrad", False)):
            raise ConfigError("optimizer", "nn.Adam with use_nesterov or use_amsgrad is not modelled", kind)
    else:
        raise ConfigError("optimizer", "must be one of mindspore.nn SGD, Momentum, Adam, AdamWeightDecay", kind)
    if opt.loss_scale != 1.0:
        raise ConfigError("optimizer.loss_scale", "must be 1.0 (loss scaling is not modelled)", opt.loss_scale)
    params = list(opt._parameters)  # noqa: SLF001
    if opt.is_group_lr:
        lrs = list(opt.learning_rate)
    else:
        lrs = [opt.learning_rate] * len(params)
    if opt.is_group:
        wds = list(opt.group_weight_decay)
    else:  # MindSpore's name filter: names containing 'beta' or 'gamma' get no weight decay
        wds = [opt.weight_decay if flag else 0.0 for flag in opt.decay_flags]
    keyed: dict[tuple[int, Any], list[str]] = {}
    objs: dict[tuple[int, Any], tuple[Any, Any]] = {}
    for p, lr, wd in zip(params, lrs, wds):
        key = (id(lr), id(wd) if not isinstance(wd, (int, float)) and not hasattr(wd, "asnumpy") else _f(wd))
        keyed.setdefault(key, []).append(p.name)
        objs[key] = (lr, wd)
    groups, schedules, total = [], [], None
    for i, (key, names) in enumerate(keyed.items()):
        lr, wd = objs[key]
        node, base, n = cell_to_node(lr, f"groups[{i}].lr")
        total = n if n is not None else total
        sched: dict[str, ir.Node] = {}
        gopts: dict[str, Any] = {"lr": base}
        if node is not None:
            sched["lr"] = node
        if isinstance(wd, (int, float)) or hasattr(wd, "asnumpy"):
            gopts["weight_decay"] = _f(wd)
        else:
            wnode, wbase, wn = cell_to_node(wd, f"groups[{i}].weight_decay")
            gopts["weight_decay"] = wbase
            if wnode is not None:
                sched["weight_decay"] = wnode
            total = wn if wn is not None else total
        groups.append(Group(name=f"group{i}", select=_exact(names), options=FrozenMap(gopts),
                            schedule=FrozenMap(sched)))
        schedules.append(sched)
    spec = OptimizerSpec(type=ptype, options=FrozenMap(options), groups=tuple(groups))
    plan = Plan(optimizers=(spec,), total_steps=total, description=f"imported from mindspore.nn.{kind}")
    k = int(np.asarray(opt.global_step.asnumpy()).reshape(-1)[0])
    return _shift_plan(plan, k) if k else plan


# --------------------------------------------------------------------------- experimental


def scheduler_to_node(s: Any, path: str = "scheduler") -> ir.Node:
    """The node an experimental lr_scheduler computes from its construction (its attributes).

    How far it was stepped (``last_epoch``) is the caller's: :func:`from_mindspore`
    starts the plan there (:func:`optbridge.shift.shift`).
    """
    kind = type(s).__name__
    if kind == "SequentialLR":
        parts = tuple(scheduler_to_node(c, f"{path}.schedulers[{i}]") for i, c in enumerate(s._schedulers))  # noqa: SLF001
        for i, c in enumerate(s._schedulers[1:], 1):  # noqa: SLF001
            if type(c).__name__ in ("MultiStepLR", "MultiplicativeLR"):
                raise ConfigError(f"{path}.schedulers[{i}]", "MindSpore's SequentialLR does not run "
                                  f"{type(c).__name__} as torch does after a milestone (MultiStepLR raises "
                                  "AttributeError, MultiplicativeLR skips its first factor)", type(c).__name__)
        return ir.Sequence(parts=parts, boundaries=tuple(int(m) for m in s.milestones))
    if kind == "ReduceLROnPlateau":
        mins = {_f(m) for m in s.min_lrs}
        if len(mins) != 1:
            raise ConfigError(f"{path}.min_lr", "must be one value for every group (the plan has one plateau node)",
                              sorted(mins))
        return ir.Plateau(mode=s.mode, factor=float(s.factor), patience=int(s.patience), threshold=float(s.threshold),
                          threshold_mode=s.threshold_mode, cooldown=int(s.cooldown), min_value=mins.pop(),
                          eps=float(s.eps))
    if kind == "StepLR":
        return ir.Exponential(gamma=float(s.gamma), every=int(s.step_size), stair=True)
    if kind == "ExponentialLR":
        return ir.Exponential(gamma=float(s.gamma))
    if kind == "LinearLR":
        return ir.Linear(start_factor=float(s.start_factor), end_factor=float(s.end_factor), steps=int(s.total_iters))
    if kind == "ConstantLR":
        return ir.Constant(factor=float(s.factor), steps=int(s.total_iters))
    if kind == "PolynomialLR":
        return ir.Polynomial(steps=int(s.total_iters), power=float(s.power))
    if kind == "MultiStepLR":
        ms = sorted(m for m, c in s.milestones.items() for _ in range(c))
        return ir.MultiStep(milestones=tuple(int(m) for m in ms), gamma=float(s.gamma))
    if kind == "CosineAnnealingLR":
        return ir.Cosine(steps=int(s.T_max), end=float(s.eta_min))
    if kind == "CosineAnnealingWarmRestarts":
        return ir.CosineRestarts(period=int(_f(s.T_0)), mult=int(s.T_mult), end=_f(s.eta_min))
    if kind == "CyclicLR":
        if s._scale_fn_custom is not None:  # noqa: SLF001
            raise ConfigError(f"{path}.scale_fn", "a custom scale_fn cannot be read", "function")
        maxs = {_f(m) for m in s.max_lrs}
        if len(maxs) != 1:
            raise ConfigError(f"{path}.max_lr", "must be one value for every group", sorted(maxs))
        total = float(s.total_step_size)
        up = int(round(s.step_up_ratio * total))
        return ir.Cyclic(low=None, high=maxs.pop(), step_size_up=up, step_size_down=int(round(total)) - up,
                         mode=s.mode, gamma=float(s.gamma))
    if kind in ("LambdaLR", "MultiplicativeLR"):
        exprs = {getattr(f, "optbridge_expr", None) for f in s.lr_lambdas}
        if None in exprs or len(exprs) != 1:
            raise ConfigError(f"{path}.lr_lambda", "is a Python function: its body cannot be read (write the plan "
                              "with an expression, e.g. '0.95 ** epoch')", kind)
        e: Any = exprs.pop()
        return ir.Lambda(expr=e) if kind == "LambdaLR" else ir.Multiplicative(expr=e)
    raise ConfigError(path, "is not an experimental lr_scheduler optbridge reads", kind)


def _plateau_state(s: Any, path: str) -> ir.Plateau:
    """MindSpore's ReduceLROnPlateau as a plateau node, with its state (best, bad steps, cooldown) when stepped."""
    node = scheduler_to_node(s, path)
    assert isinstance(node, ir.Plateau)
    if _f(s.last_epoch) == 0.0:
        return node
    best = _f(s.best)
    return dataclasses.replace(node, best=None if not np.isfinite(best) else best, bad_steps=int(_f(s.wait)),
                               cooldown_left=int(_f(s.cooldown_counter)))


def _stepped(s: Any) -> int:
    """How many times an experimental scheduler was stepped after construction (its last_epoch)."""
    return int(round(_f(s.last_epoch))) if hasattr(s, "last_epoch") else 0


def _experimental(opt: Any, scheduler: Any | None, names: Mapping[int, str] | None) -> Plan:
    kind = type(opt).__name__
    if kind not in EXPERIMENTAL_KEYS:
        raise ConfigError("optimizer", "must be a mindspore.experimental.optim optimizer optbridge reads ("
                          + ", ".join(EXPERIMENTAL_KEYS) + ")", kind)
    keys = EXPERIMENTAL_KEYS[kind]
    plateau = scheduler is not None and type(scheduler).__name__ == "ReduceLROnPlateau"
    k = 0 if scheduler is None or plateau else _stepped(scheduler)
    node: ir.Node | None = None
    if scheduler is not None:
        if getattr(scheduler, "optimizer", opt) is not opt:
            raise ConfigError("scheduler", "belongs to another optimizer", type(scheduler).__name__)
        if plateau:
            node = _plateau_state(scheduler, "scheduler")
        else:
            node = scheduler_to_node(scheduler)  # the node as constructed, shifted below
    groups = []
    for i, g in enumerate(opt.param_groups):
        base = _f(g["initial_lr"]) if "initial_lr" in g else _f(g["lr"])
        o: dict[str, Any] = {"lr": _f(g["lr"]) if plateau else base}
        for key in keys:
            if key in g:
                v = g[key]
                o[key] = tuple(_f(b) for b in v) if key == "betas" else (bool(v) if isinstance(v, bool) else _f(v))
        pnames = [names.get(id(p), p.name) if names else p.name for p in g["params"]]
        sched: dict[str, ir.Node] = {}
        if node is not None and k:
            sched["lr"] = shift(node, k, base)
        groups.append(Group(name=f"group{i}", select=_exact(pnames), options=FrozenMap(o), schedule=FrozenMap(sched)))
    schedule = {"lr": node} if node is not None and not k else {}
    return Plan(optimizers=(OptimizerSpec(type=kind, groups=tuple(groups)),), schedule=FrozenMap(schedule),
                description=f"imported from mindspore.experimental.optim.{kind}"
                + (f", its scheduler {k} step(s) in" if k else ""))


def _exact_optimizer(opt: Any, names: Mapping[int, str] | None) -> Plan:
    """optbridge's torch-exact optimizer: its groups with the hyperparameters' current values."""
    groups = []
    for i, g in enumerate(opt.param_groups):
        o: dict[str, Any] = {k: (tuple(float(b) for b in v) if k == "betas" else v) for k, v in g.items()
                             if k != "params"}
        for gi, h, param in opt.hypers():
            if gi == i:
                v = _f(param)
                if h in ("beta1", "beta2"):
                    b = list(o["betas"])
                    b[0 if h == "beta1" else 1] = v
                    o["betas"] = tuple(b)
                else:
                    o[h] = v
        pnames = [names.get(id(p), p.name) if names else p.name for p in g["params"]]
        groups.append(Group(name=f"group{i}", select=_exact(pnames), options=FrozenMap(o)))
    return Plan(optimizers=(OptimizerSpec(type=opt.KIND, groups=tuple(groups)),),
                description=f"imported from optbridge's torch-exact MindSpore {opt.KIND}")


def _built(opt: Any) -> Plan:
    """The plan part of an optimizer ``to_mindspore`` built, started where it stands (its updates so far)."""
    guard = opt.optbridge_guard
    plan, mine = guard.plan, set(guard.groups)
    specs = []
    for spec in plan.optimizers:
        gs = tuple(g for g in spec.groups if g.name in mine)
        if gs:
            specs.append(dataclasses.replace(spec, groups=gs))
    out = dataclasses.replace(plan, optimizers=tuple(specs))
    u = int(np.asarray(opt.optbridge_updates.asnumpy()).reshape(()))
    if not u:
        return out
    return _shift_plan(out, u)


def _shift_plan(plan: Plan, u: int) -> Plan:
    """``plan`` started ``u`` updates in: every schedule shifted (on its own clock), total_steps reduced."""
    def moved(node: ir.Node, base: float, path: str) -> ir.Node:
        if any(isinstance(x, ir.Plateau) for x in ir.walk(node)):
            raise ConfigError(path, "is a plateau driven by optbridge: its state lives in the driver; read the "
                              "optimizer before its first update", node.kind)
        sc = node.scale(plan.step_unit, plan.steps_per_epoch)
        if u % sc:
            raise ConfigError(path, f"runs on the epoch clock and the optimizer stands mid-epoch (update {u}, "
                              f"{sc} per epoch): read it at an epoch boundary", u)
        return shift(node, u // sc, base)

    specs = []
    for spec in plan.optimizers:
        groups = []
        for g in spec.groups:
            sched = {}
            for h in set(plan.schedule) | set(g.schedule):
                node = plan.schedule_for(g, h)
                if node is not None and applies(plan, g, h) and not (h == "lr" and g.frozen == "zero_lr"):
                    path = schedule_path(g, h)
                    sched[h] = moved(node, hyper_base(plan, g, h, path=path), path)
            groups.append(dataclasses.replace(g, schedule=FrozenMap(sched)))
        specs.append(dataclasses.replace(spec, groups=tuple(groups)))
    total = None if plan.total_steps is None else plan.total_steps - u
    return dataclasses.replace(plan, optimizers=tuple(specs), schedule=FrozenMap(), total_steps=total)


# --------------------------------------------------------------------------- entry point


def read_spec(spec: Any, *, optimizer: str = "SGD") -> Plan:
    """A plan from a MindSpore-dialect document or a ``learning_rate`` spec.

    Args:
        spec: A dialect document (a mapping with ``optimizer``), a list-function
            spec (``{"type": "cosine_decay_lr", ...}``) or a list of them (concatenated).
        optimizer: The plan's optimizer type when ``spec`` does not name one.
    """
    if isinstance(spec, Mapping) and ("optimizer" in spec or "dialect" in spec):
        return dialect.from_mindspore(spec)
    if isinstance(spec, (Mapping, list, tuple)):
        return dialect.from_mindspore({"optimizer": {"type": optimizer}, "learning_rate": spec})
    raise ConfigError("spec", "must be a MindSpore-dialect document or a learning_rate spec (mapping or list)",
                      type(spec).__name__)


def from_mindspore(optimizer: Any, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
                   steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """A plan from live MindSpore objects (see the module docstring and :func:`optbridge.from_mindspore`).

    Args:
        optimizer: An nn optimizer, an experimental optimizer, or a
            LearningRateSchedule cell (then the plan's optimizer is SGD).
        scheduler: With an experimental optimizer: its lr_scheduler (or SequentialLR /
            ReduceLROnPlateau).
        model: The net whose ``parameters_and_names()`` name the parameters (default:
            the names the parameters carry, the same for a net built as usual).
        step_unit: What the experimental scheduler's ``step()`` counts.
        steps_per_epoch: Updates per epoch.
        total_steps: Updates the plan is defined for.

    Raises:
        ConfigError: naming what cannot be read and why.
    """
    obj = optimizer
    if isinstance(obj, (Mapping, list, tuple)):
        raise ConfigError("optimizer", "from_mindspore reads live MindSpore objects; for a MindSpore-dialect "
                          "document or a learning_rate spec use optbridge.load / optbridge.loads, or "
                          "optbridge_adapters.mindspore.read.read_spec(spec)", type(obj).__name__)
    ir.check_choice("step_unit", step_unit, ir.UNITS)
    names = None if model is None else _names(model)
    if getattr(obj, "optbridge_guard", None) is not None:
        if scheduler is not None:
            raise ConfigError("scheduler", "must be None for an optimizer to_mindspore built (its schedules are in "
                              "the setup)", type(scheduler).__name__)
        plan = _built(obj)
    elif isinstance(obj, ExactOptimizer):
        if scheduler is not None:
            raise ConfigError("scheduler", "applies to experimental optimizers only", type(scheduler).__name__)
        plan = _exact_optimizer(obj, names)
    elif isinstance(obj, ExpOptimizer):
        plan = _experimental(obj, scheduler, names)
    elif isinstance(obj, nn.Optimizer):
        if scheduler is not None:
            raise ConfigError("scheduler", "applies to experimental optimizers only (nn optimizers carry their lr)",
                              type(scheduler).__name__)
        plan = _nn_optimizer(obj)
    elif isinstance(obj, (LearningRateSchedule, Parameter)):
        node, base, n = cell_to_node(obj)
        plan = Plan(optimizers=(OptimizerSpec(type="SGD", options=FrozenMap({"lr": base})),),
                    schedule=FrozenMap({"lr": node} if node is not None else {}), total_steps=n,
                    description=f"imported from {type(obj).__name__}")
    elif isinstance(obj, (MLS.LRScheduler, MLS.SequentialLR, MLS.ReduceLROnPlateau)):
        plan = _experimental(obj.optimizer, obj, names)
    else:
        raise ConfigError("optimizer", "from_mindspore reads an nn optimizer, an experimental optimizer (with "
                          "scheduler=) or a LearningRateSchedule", type(obj).__name__)
    if total_steps is not None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError("total_steps", "must be a positive integer", total_steps)
        if plan.total_steps is not None and total_steps > plan.total_steps:
            raise ConfigError("total_steps", f"must be at most the {plan.total_steps} updates the optimizer's lr "
                              "list still covers", total_steps)
    if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int)
                                        or steps_per_epoch < 1):
        raise ConfigError("steps_per_epoch", "must be a positive integer", steps_per_epoch)
    changes: dict[str, Any] = {}
    if step_unit != plan.step_unit:
        changes["step_unit"] = step_unit
    if steps_per_epoch is not None:
        changes["steps_per_epoch"] = steps_per_epoch
    if total_steps is not None:
        changes["total_steps"] = total_steps
    return dataclasses.replace(plan, **changes) if changes else plan
