"""Live torch objects -> Plan (:func:`from_torch`).

Two ways, chosen per setup:

* **Modelled.** The optimizer and schedulers are read into a torch-dialect document
  (:mod:`optbridge.dialects.torch` owns the class-by-class translation and its
  composition rules; :mod:`.schedulers` reads the live objects) and the plan is then
  completed with what a document cannot say: schedulers already stepped start where
  they stand (:mod:`optbridge.shift`), an epoch scheduler in the middle of an epoch
  holds its value for the rest of it, ReduceLROnPlateau keeps its state, SWALR
  anneals from the lr it found, groups added after their scheduler continue from
  their own lr (a chainable scheduler multiplies whatever lr a group holds). No
  horizon is needed.
* **Replayed.** What the IR cannot say with these nodes -- plain Python ``lr_lambda``
  functions, a float32 tensor lr (torch then computes in float32), scheduler classes
  optbridge does not model (subclasses, other libraries), compositions torch runs
  differently from their parts (several schedulers stacked where one is not
  chainable, nested SequentialLR), state that does not follow the schedule (an lr
  edited by hand) -- is replayed on the live objects over ``total_steps`` with
  :func:`~optbridge_adapters.torch.recorder.replay` (nothing trains; everything is put
  back) and turned into closed forms where exact, tables elsewhere
  (:mod:`optbridge.recover`), with a :class:`ReplayedWarning`. Plain Python
  functions are therefore called only at the steps torch calls them at.

``total_steps`` counts the REMAINING updates, from the optimizer's next update
(update 0 of the plan). When it runs past where an imported schedule is defined
(a CosineAnnealingLR past ``T_max`` is periodic, a PolynomialLR past
``total_iters`` holds 0) a :class:`HorizonWarning` says so.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from optbridge import ir
from optbridge.dialects import torch as dialect
from optbridge.errors import ConfigError, UnsupportedError
from optbridge.ir import FrozenMap
from optbridge.plan import Group, Plan, hyper_base
from optbridge.shift import base_at, shift, value_at

from .checks import (
    FromTorchWarning,
    HorizonWarning,
    NotModelled,
    ReplayedWarning,
    SampledLambdaWarning,
    check_bases,
    check_current,
    warn_horizon,
)
from .groups import optimizer_options, optimizer_type, read_groups, select
from .recorder import RecordError, replay, to_plan, verify
from .schedulers import CLASSES, Reader, is_plateau, kind, leaves, pairs, steps_done

__all__ = ["from_torch", "FromTorchWarning", "SampledLambdaWarning", "ReplayedWarning", "HorizonWarning"]


_CHAINABLE = {"StepLR", "MultiStepLR", "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR"}
_TENSOR_LR_SAFE = {"CyclicLR", "OneCycleLR"}  # lrs from Python floats, filled into the tensor: rounded once


def _path(entries: Sequence[Any], i: int) -> str:
    return "scheduler" if len(entries) == 1 else f"scheduler[{i}]"


# --------------------------------------------------------------------------- entry point

def from_torch(optimizer: torch.optim.Optimizer, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
               steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """The plan of a live torch optimizer and its scheduler(s).

    Args:
        optimizer: A ``torch.optim`` optimizer (SGD, Adam, AdamW, RMSprop, Adagrad,
            Adadelta, Adamax, NAdam, RAdam). Every group option is written as torch
            filled it (defaults explicit at the optimizer level, differences per group);
            a float32 tensor lr gives ``lr_dtype: float32``, a group without parameters
            ``empty: true``.
        scheduler: None, a torch scheduler, a list of schedulers stacked on the
            optimizer, or a list of ``(scheduler, "iter" | "epoch")`` pairs (what each
            ``step()`` counts; stepped in list order, epoch ones after an epoch's last
            update). Schedulers already stepped start where they stand: update 0 of the
            plan is the optimizer's next update.
        model: The module (or ``(name, tensor)`` pairs) whose parameter names the groups
            select, with readable selectors where they are exact; parameters in no group
            go to a ``frozen: exclude`` group. Without a model the groups have no
            selectors (enough for tracing).
        step_unit: What ``scheduler.step()`` counts when not given per pair.
        steps_per_epoch: Updates per epoch (needed to mix iteration and epoch schedulers).
        total_steps: The REMAINING updates the plan is defined for, counted from the
            optimizer's next update. Needed when the schedulers must be replayed (see the
            module docstring); a :class:`HorizonWarning` says when it runs past where an
            imported schedule is defined.

    Raises:
        ConfigError: bad arguments, a scheduler of another optimizer, a parameter not in
            ``model``, or a setup that must be replayed without ``total_steps``.
        UnsupportedError: a setup torch runs in a way no plan can say (a
            ReduceLROnPlateau stacked with a scheduler that still changes the lr; a float32
            tensor lr under ReduceLROnPlateau).
    """
    optimizer_type(optimizer)
    ir.check_choice("step_unit", step_unit, ir.UNITS)
    if total_steps is not None:
        total_steps = ir.check_int("total_steps", total_steps, minimum=1)
    if steps_per_epoch is not None:
        steps_per_epoch = ir.check_int("steps_per_epoch", steps_per_epoch, minimum=1)
    entries = pairs(scheduler, step_unit)
    for i, (s, _) in enumerate(entries):
        if kind(s) == "unknown":
            raise ConfigError(_path(entries, i), "must be a torch scheduler (an object with step())",
                              type(s).__name__)
        if getattr(s, "optimizer", optimizer) is not optimizer:
            raise ConfigError(_path(entries, i), "drives another optimizer than the one given", type(s).__name__)
    spe = steps_per_epoch or 1
    offsets, behind = _offsets(entries, step_unit, spe)
    why = _replay_reasons(optimizer, entries)
    plan = None
    if not why:
        try:
            plan = _modelled(optimizer, entries, model, step_unit, steps_per_epoch, total_steps, offsets, behind)
        except NotModelled as e:
            why = [str(e)]
    if plan is None:
        plan = _replayed(optimizer, entries, model, step_unit, steps_per_epoch, total_steps, offsets, why)
    if total_steps is not None:
        warn_horizon(entries, offsets, step_unit, spe, total_steps)
    return plan


# --------------------------------------------------------------------------- where the schedulers stand

def _offsets(entries: list[tuple[Any, str]], step_unit: str, spe: int) -> tuple[list[tuple[int, int]], int]:
    """Per entry ``(scheduler steps K, updates into the current epoch r)``, and the updates done overall."""
    counts = [steps_done(s, _path(entries, i)) if kind(s) == "modelled" else _last_epoch(s)
              for i, (s, _) in enumerate(entries)]
    iters = {k for k, (s, u) in zip(counts, entries, strict=True) if k is not None and u == "iter"}
    if len(iters) > 1:
        raise ConfigError("scheduler", "holds iteration schedulers stepped different numbers of times", sorted(iters))
    done = iters.pop() if iters else None  # updates done, when an iteration scheduler tells
    offsets = []
    for i, (k, (_, u)) in enumerate(zip(counts, entries, strict=True)):
        r = 0
        if k is not None and u == "epoch" and step_unit == "iter" and done is not None:
            r = done - k * spe
            if not 0 <= r < spe:
                raise ConfigError(_path(entries, i), f"was stepped {k} epochs while the iteration schedulers were "
                                  f"stepped {done} times: with steps_per_epoch={spe} these disagree", k)
        offsets.append((k or 0, r))
    behind = max((k * (spe if u == "epoch" and step_unit == "iter" else 1) + r
                  for (k, r), (_, u) in zip(offsets, entries, strict=True)), default=0)
    return offsets, behind


def _last_epoch(s: Any) -> int | None:
    k = getattr(s, "last_epoch", None)
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 0 and not is_plateau(s) else None


# --------------------------------------------------------------------------- which path

def _replay_reasons(optimizer: torch.optim.Optimizer, entries: list[tuple[Any, str]]) -> list[str]:
    """Why the setup cannot be modelled (empty: it can be)."""
    why = []
    plateau = any(is_plateau(s) for s, _ in entries)
    for i, (s, _) in enumerate(entries):
        if kind(s) != "modelled":
            odd = next(x for x in leaves(s) if CLASSES.get(type(x).__name__) is not type(x))
            why.append(f"{_path(entries, i)} holds a {type(odd).__name__}, which is not one of the torch classes "
                       "optbridge models")
            continue
        for leaf in leaves(s):
            fns = [f for f in getattr(leaf, "lr_lambdas", []) if not _portable(f)]
            if fns:
                names = ", ".join(getattr(f, "__qualname__", type(f).__name__) for f in fns)
                why.append(f"lr_lambda function(s) {names} are plain Python code, not optbridge expressions "
                           "(optbridge_adapters.torch.Lambda('<expression>') keeps a schedule portable)")
                break
    tensor = [i for i, g in enumerate(optimizer.param_groups) if isinstance(g["lr"], torch.Tensor)
              and g["lr"].dtype == torch.float32]
    if tensor and entries and not all(type(s).__name__ in _TENSOR_LR_SAFE for s, _ in entries):
        if plateau:
            raise UnsupportedError(f"param_groups[{tensor[0]}].lr", "torch", "a float32 tensor lr under "
                                   "ReduceLROnPlateau: torch rounds the lr to float32 at every reduction, which a "
                                   "plateau schedule rounded once cannot say (use a float lr)")
        why.append(f"param_groups[{tensor[0]}].lr is a float32 tensor, and torch's schedulers then compute in float32")
    if len(entries) > 1 and not plateau:
        for i, (s, _) in enumerate(entries):
            if not _chainable(s):
                why.append(f"{_path(entries, i)} ({type(s).__name__}) is stacked with other schedulers and is not "
                           "chainable: torch's result is not the product of the schedules")
                break
    added = [i for i, g in enumerate(optimizer.param_groups) if "initial_lr" not in g]
    if added and entries and not all(_chainable(s, strict=True) or is_plateau(s) for s, _ in entries):
        why.append(f"param_groups[{added[0]}] was added after the scheduler was built, and only plain chainable "
                   "schedulers (which multiply whatever lr a group holds) continue it without their base lr")
    return why


def _portable(f: Any) -> bool:
    from optbridge.expr import Expr

    from .lambdas import Lambda
    return isinstance(f, Lambda | Expr)


def _chainable(s: Any, strict: bool = False) -> bool:
    name = type(s).__name__
    if name == "ChainedScheduler":
        return all(_chainable(c, strict) for c in s._schedulers)
    if name in ("CosineAnnealingLR", "MultiplicativeLR") and not strict:
        return name == "MultiplicativeLR" or s.eta_min == 0
    return name in _CHAINABLE


# --------------------------------------------------------------------------- the replayed path

def _replayed(optimizer: torch.optim.Optimizer, entries: list[tuple[Any, str]], model: Any, step_unit: str,
              steps_per_epoch: int | None, total: int | None, offsets: list[tuple[int, int]],
              why: list[str]) -> Plan:
    plateaus = [i for i, (s, _) in enumerate(entries) if is_plateau(s)]
    if plateaus:
        return _plateau_stack(optimizer, entries, model, step_unit, steps_per_epoch, total, offsets, why, plateaus)
    if total is None:
        raise ConfigError("total_steps", f"is needed: {why[0]}; from_torch then replays the schedulers on the live "
                          "objects over total_steps updates (nothing trains, they are left as they were)", None,
                          show_value=False)
    spe = steps_per_epoch or 1
    r = max((r for _, r in offsets), default=0)
    try:
        rec = replay(optimizer, total, entries, steps_per_epoch=spe, offset=r)
    except RecordError as e:
        raise ConfigError("scheduler", f"cannot be replayed over total_steps={total}: {e}", None,
                          show_value=False) from None
    plan = to_plan(rec, optimizer, model=model, steps_per_epoch=steps_per_epoch)
    verify(plan, rec)
    category = SampledLambdaWarning if any("lr_lambda" in w for w in why) else ReplayedWarning
    warnings.warn(f"from_torch: {'; '.join(why)}: the schedulers were replayed over total_steps={total} (the plan is "
                  "defined for those updates only; closed forms where they are exact, tables elsewhere)",
                  category, stacklevel=3)
    return plan


def _plateau_stack(optimizer: torch.optim.Optimizer, entries: list[tuple[Any, str]], model: Any, step_unit: str,
                   steps_per_epoch: int | None, total: int | None, offsets: list[tuple[int, int]],
                   why: list[str], plateaus: list[int]) -> Plan:
    """A ReduceLROnPlateau with other schedulers: exact only while the others no longer change the lr."""
    i = plateaus[0]
    reason = (f"{_path(entries, i)} (ReduceLROnPlateau) is stacked with other schedulers: torch reduces the lr they "
              "leave in the group, and the other schedulers multiply the reduced lr, which no plateau node says (it "
              "needs a plateau over a product, an IR change); exact only while the others no longer change the lr")
    others = [e for j, e in enumerate(entries) if j != i]
    if len(plateaus) > 1 or total is None or any(kind(s) != "modelled" for s, _ in others):
        raise UnsupportedError(_path(entries, i), "torch", reason + (" (pass total_steps to check that)"
                                                                     if total is None else ""))
    spe = steps_per_epoch or 1
    try:
        rec = replay(optimizer, total, others, steps_per_epoch=spe, offset=max((r for _, r in offsets), default=0))
    except RecordError as e:
        raise ConfigError("scheduler", f"cannot be replayed over total_steps={total}: {e}", None,
                          show_value=False) from None
    lr = rec.values["lr"]
    if not np.all(lr == lr[:1]):
        raise UnsupportedError(_path(entries, i), "torch", reason + f": over total_steps={total} they still do")
    plan = _modelled(optimizer, [entries[i]], model, step_unit, steps_per_epoch, total, [offsets[i]], 0)
    return plan


# --------------------------------------------------------------------------- the modelled path

def _modelled(optimizer: torch.optim.Optimizer, entries: list[tuple[Any, str]], model: Any, step_unit: str,
              steps_per_epoch: int | None, total: int | None, offsets: list[tuple[int, int]], behind: int) -> Plan:
    reader = Reader(optimizer)
    docs = []
    for i, (s, unit) in enumerate(entries):
        d = reader.doc(s, _path(entries, i))
        if unit != step_unit:
            d["step_unit"] = unit
        docs.append(d)
    defaults = optimizer_options(optimizer)
    first = entries[0][0] if entries else None
    based = first is not None and not is_plateau(first)  # the schedulers scale initial_lr
    for g in optimizer.param_groups:  # a tensor lr given to the constructor is shared with the defaults (filled)
        if g["lr"] is optimizer.defaults.get("lr") and "initial_lr" in g and based:
            defaults["lr"] = float(g["initial_lr"])
    infos = read_groups(optimizer, defaults)
    for info, g in zip(infos, optimizer.param_groups, strict=True):
        if based and "initial_lr" in g and not isinstance(first, CLASSES["SWALR"]):
            info.options["lr"] = float(g["initial_lr"])  # the schedulers' base
    features = [{k: info.options.pop(k) for k in ("lr_dtype",) if k in info.options} for info in infos]
    doc: dict[str, Any] = {"dialect": "torch", "optimizer": {"type": type(optimizer).__name__, **defaults},
                           "param_groups": [{"name": info.name, "params": {"names": [f"__group{i}"]}, **info.options}
                                            for i, info in enumerate(infos)], "step_unit": step_unit}
    if steps_per_epoch is not None:
        doc["steps_per_epoch"] = steps_per_epoch
    if total is not None:
        doc["total_steps"] = total + behind  # the dialect checks chained cosines on the scheduler's clock
    if docs:
        doc["scheduler"] = docs[0] if len(docs) == 1 else docs
    try:
        plan = dialect.parse(doc)
    except ConfigError as e:
        raise NotModelled(str(e)) from None
    plan = _complete(plan, optimizer, entries, offsets, step_unit, steps_per_epoch or 1)
    groups = list(plan.optimizers[0].groups)
    excluded = select(infos, model) if model is not None else None
    out: list[Group] = []
    for info, grp, feat in zip(infos, groups, features, strict=True):
        opts = dict(grp.options, **feat)
        if info.empty:
            opts["empty"] = True
        out.append(dataclasses.replace(grp, select=info.select, options=FrozenMap(opts)))
    if excluded is not None:
        out.append(excluded)
    opt = dataclasses.replace(plan.optimizers[0], groups=tuple(out))
    plan = dataclasses.replace(plan, optimizers=(opt,), total_steps=total)
    check_bases(entries, plan)
    check_current(plan, optimizer)
    return plan


def _complete(plan: Plan, optimizer: torch.optim.Optimizer, entries: list[tuple[Any, str]],
              offsets: list[tuple[int, int]], step_unit: str, spe: int) -> Plan:
    """Shift every schedule to where its scheduler stands; plateau state; SWALR's and added groups' bases."""
    groups = list(plan.optimizers[0].groups)
    hypers = sorted({h for g in groups for h in (set(plan.schedule) | set(g.schedule))}, key=lambda h: (h != "lr", h))
    lrs = [float(g["lr"]) for g in optimizer.param_groups]
    new: dict[str, list[ir.Node | None]] = {}
    bases: dict[int, float] = {}
    for h in hypers:
        nodes: list[ir.Node | None] = []
        for gi, g in enumerate(groups):
            node = plan.schedule_for(g, h)
            if node is not None:
                base = hyper_base(plan, g, h)
                if h == "lr" and _own_base(optimizer, entries, gi):
                    base = _found_base(node, entries, offsets, lrs[gi], base)
                    bases[gi] = base
                node = _at_current(node, base, entries, offsets, spe)
            nodes.append(node)
        new[h] = nodes
    plan_sched: dict[str, ir.Node] = {}
    group_sched: list[dict[str, ir.Node]] = [{} for _ in groups]
    for h, nodes in new.items():
        if all(n == nodes[0] for n in nodes):
            if nodes[0] is not None:
                plan_sched[h] = nodes[0]
        else:
            for gi, n in enumerate(nodes):
                if n is not None:
                    group_sched[gi][h] = n
    out = []
    for gi, g in enumerate(groups):
        opts = dict(g.options)
        if gi in bases:
            opts["lr"] = bases[gi]
        out.append(dataclasses.replace(g, schedule=FrozenMap(group_sched[gi]), options=FrozenMap(opts)))
    opt = dataclasses.replace(plan.optimizers[0], groups=tuple(out))
    return dataclasses.replace(plan, optimizers=(opt,), schedule=FrozenMap(plan_sched))


def _own_base(optimizer: torch.optim.Optimizer, entries: list[tuple[Any, str]], gi: int) -> bool:
    """The group's lr schedule continues from the lr it holds, not from a base its scheduler kept."""
    g = optimizer.param_groups[gi]
    first = entries[0][0] if entries else None
    return first is not None and not is_plateau(first) and (
        "initial_lr" not in g or isinstance(first, CLASSES["SWALR"]))


def _found_base(node: ir.Node, entries: list[tuple[Any, str]], offsets: list[tuple[int, int]], lr: float,
                fallback: float) -> float:
    """The base that puts ``node`` (stepped as its schedulers were) at the lr the group holds now."""
    if len(entries) > 1:  # a stack of chainable schedulers: the product of their factors where they stand
        assert isinstance(node, ir.Chain)
        factor = 1.0
        for p, (k, _) in zip(node.parts, offsets, strict=True):
            factor *= value_at(dataclasses.replace(p, unit=None), k, 1.0)
        b: float | None = lr / factor if factor else None
    else:
        b = base_at(dataclasses.replace(node, unit=None), offsets[0][0], lr)
    if b is None:
        if len(entries) > 1:
            raise NotModelled("a group was added after its schedulers reached a factor of 0")
        return fallback  # the value there ignores the base (SWALR fully annealed)
    if not math.isfinite(b):
        raise NotModelled("the group's lr cannot be continued from a base (its scheduler stands at a factor of 0)")
    return b


def _at_current(node: ir.Node, base: float, entries: list[tuple[Any, str]], offsets: list[tuple[int, int]],
                spe: int) -> ir.Node:
    """One group's node shifted to where each scheduler stands (plateau: its state)."""
    if isinstance(node, ir.Plateau):
        s = entries[0][0]
        best = s.best if math.isfinite(s.best) else None
        return dataclasses.replace(node, best=best, bad_steps=int(s.num_bad_epochs),
                                   cooldown_left=int(s.cooldown_counter))
    if len(entries) > 1:
        assert isinstance(node, ir.Chain)
        return ir.Chain(parts=tuple(_entry(p, base, k, r, spe) for p, (k, r) in zip(node.parts, offsets, strict=True)),
                        unit=node.unit)
    (k, r), = offsets
    return _entry(node, base, k, r, spe)


def _entry(node: ir.Node, base: float, k: int, r: int, spe: int) -> ir.Node:
    """One scheduler's node shifted to where it stands (``k`` steps, ``r`` updates into the current epoch for an
    epoch scheduler next to an iteration one)."""
    root_unit = node.unit
    n = dataclasses.replace(node, unit=None)  # on the scheduler's own clock from here on
    if r == 0:
        out = shift(n, k, base)
        return dataclasses.replace(out, unit=root_unit) if out.unit != root_unit else out
    now, nxt = shift(n, k, base), shift(n, k + 1, base)  # the rest of this epoch, then the epochs after it
    return ir.Sequence(parts=(dataclasses.replace(now, unit="epoch"), dataclasses.replace(nxt, unit="epoch")),
                       boundaries=(spe - r,), unit="iter")
