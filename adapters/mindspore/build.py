"""Plans to real MindSpore optimizers: :func:`to_mindspore` and :func:`to_mindspore_lists`.

Forms (how schedule values reach the optimizers; docs/mindspore.md has the node table):

* ``list``: ``mindspore.nn`` optimizers take one float32 list per group
  (``learning_rate=[...]``, gathered at ``global_step``): the reference's values
  rounded once to float32. Needs ``total_steps``.
* ``cell``: ``mindspore.nn`` optimizers take one ``LearningRateSchedule`` per group:
  MindSpore's own cell where its code computes the whole node, else a generated
  float64 cell (:mod:`.cells`).
* ``experimental``: torch-like optimizers whose group lr is a Parameter, moved by
  ``mindspore.experimental.optim.lr_scheduler`` classes where they compute the node
  (``scheduler="native"``), else by the driver.

In every form, what the form's mechanism cannot hold is written per update by the
**driver** (:mod:`.driver`): the lr and other hyperparameters of experimental and
torch-exact optimizers in the list and cell forms, scheduled momentum and betas
(torch-exact optimizers hold them as float64 Parameters), plateaus (which need the
metric at run time). Then ``setup.step()`` must follow every update, and the
optimizer guard (:mod:`.guard`) refuses an update it was not called for, or one past
the schedule's end. Which optimizer runs each plan optimizer is :mod:`.choose`'s
decision (``optimizer="auto" | "native" | "exact"``).

Every group always gets an explicit group dict with its own lr and weight decay,
every nn lr is dynamic (a list or a cell, constants included) so MindSpore never
computes a static group lr as ``lr + 1.0 - 1.0``, and values change through
``ops.assign``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:
    import mindspore  # noqa: F401  # the backend's framework: a clear error when it is missing
except ImportError as e:  # pragma: no cover - exercised only without mindspore
    from optbridge.errors import BackendUnavailable
    raise BackendUnavailable(f"the MindSpore backend needs mindspore ({e}); pip install 'optbridge[mindspore]' "
                             "(mindspore==2.10.0)") from e

from optbridge import ir
from optbridge.errors import ConfigError, EvaluationError, UnsupportedError
from optbridge.params import ParamRecord, resolve
from optbridge.plan import Plan, check_group_features, group_feature
from optbridge.slots import Slot, slots
from optbridge.source import INT32_STEPS, ValueSource

from . import cells
from .choose import NN_SPLIT_KEYS, OPTIMIZER_MODES, Choice, choose_optimizer, group_options, split_nn
from .driver import Driver
from .families import Parts, build_family
from .guard import ClipGroup, Guard, install
from .setup import MindSporeSetup

__all__ = ["to_mindspore", "to_mindspore_lists", "build", "model_records", "FORMS", "SCHEDULERS", "INT32_STEP_LIMIT"]

FORMS = ("auto", "list", "cell", "experimental")
SCHEDULERS = ("native", "driver")
#: nn optimizers count updates in an int32 global_step.
INT32_STEP_LIMIT = INT32_STEPS


def to_mindspore_lists(plan: Plan, total_steps: int | None = None, *, hyper: str = "lr") -> dict[str, np.ndarray]:
    """Per-group float32 lists of ``hyper`` (``learning_rate=[...]`` for MindSpore's nn optimizers).

    Values come from the reference evaluator (float64) and are rounded once to
    float32, as MindSpore stores a list (``np.array(list).astype(float32)``).

    Args:
        plan: The plan.
        total_steps: List length (default: the plan's ``total_steps``).
        hyper: The hyperparameter (``lr`` by default).

    Returns:
        ``group name -> float32 array of length total_steps`` (``frozen: exclude``
        groups left out; NaN where the group's optimizer lacks ``hyper``).
    """
    from .convert import lists
    return lists(plan, total_steps, hyper=hyper)


# --------------------------------------------------------------------------- parameters of a net


def model_records(net: Any) -> tuple[list[ParamRecord], dict[str, Any]]:
    """ParamRecords (module type = owning Cell's class name, ident = id) of the net's trainable parameters."""
    if not (hasattr(net, "parameters_and_names") and hasattr(net, "cells_and_names")):
        raise ConfigError("model", "must be a mindspore.nn.Cell (groups resolve over its parameters_and_names())",
                          type(net).__name__)
    owner: dict[int, str] = {}
    for _, cell in net.cells_and_names():
        for _, p in cell.parameters_and_names(expand=False):
            owner.setdefault(id(p), type(cell).__name__)
    records, by_name = [], {}
    for name, p in net.parameters_and_names():
        if not p.requires_grad:
            continue
        records.append(ParamRecord(name, tuple(p.shape), owner.get(id(p), type(net).__name__), id(p)))
        by_name[name] = p
    return records, by_name


def _resolve_params(plan: Plan, net: Any) -> tuple[dict[str, list[Any]], tuple[str, ...], list[Any]]:
    records, by_name = model_records(net)
    res = resolve(plan, records)
    order = [by_name[r.name] for r in records if r.name not in res.aliases and r.name not in res.excluded]
    return {g.name: [by_name[n] for n in g.params] for g in res.groups}, res.excluded, order


def to_mindspore(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
                 metrics: Sequence[float] | None = None, scheduler: str = "native",
                 optimizer: str = "auto") -> MindSporeSetup:
    """Build real MindSpore optimizers for ``plan`` over ``model``'s trainable parameters.

    Args:
        plan: The plan.
        model: A ``mindspore.nn.Cell``; groups are resolved over
            ``model.parameters_and_names()`` (trainable ones), module type = the
            owning Cell's class name.
        total_steps: The horizon (default: the plan's). Required by the list form;
            bounds every form (an update past it raises).
        form: ``auto`` (default), ``list``, ``cell`` or ``experimental`` (module docstring).
        metrics: Plateau metrics known in advance (one per plateau step); later ones go
            to ``setup.step(metric)``.
        scheduler: Experimental form: ``native`` (MindSpore's lr_scheduler classes where
            they compute the node, float32 recursion) or ``driver`` (the reference's
            values every update, exact).
        optimizer: ``auto`` (MindSpore's optimizer where it computes torch's update,
            else optbridge's torch-exact one), ``native`` or ``exact``.

    Returns:
        A :class:`MindSporeSetup` (``.optimizer(s)``, ``.fidelity``, ``.report``, ``.step()``).

    Raises:
        UnsupportedError: no exact form exists (the message says why).
        ConfigError: bad arguments, or the plan's groups do not resolve over the model.
    """
    if not isinstance(plan, Plan):
        raise ConfigError("plan", "must be an optbridge Plan (optbridge.load(...) reads one)", type(plan).__name__)
    params, excluded, order = _resolve_params(plan, model)
    empty = [g.name for o in plan.optimizers for g in o.groups if g.frozen != "exclude" and not params.get(g.name)]
    setup = build(_without(plan, empty), params, total_steps=total_steps, form="auto" if form is None else form,
                  scheduler=scheduler, optimizer=optimizer, metrics=metrics, order=order, excluded=excluded)
    if empty:  # torch keeps a group without parameters; MindSpore refuses one, and it would apply nothing
        note = (f"groups without parameters left out ({', '.join(map(repr, empty))}): MindSpore's optimizers refuse "
                "an empty group, and a group without parameters applies nothing")
        setup = dataclasses.replace(setup, report=setup.report + "\n" + note)
    return setup


def _without(plan: Plan, names: Sequence[str]) -> Plan:
    """``plan`` with the groups ``names`` left out of their optimizers (``frozen: exclude``)."""
    if not names:
        return plan
    optimizers = tuple(dataclasses.replace(o, groups=tuple(dataclasses.replace(g, frozen="exclude")
                                                           if g.name in names else g for g in o.groups))
                       for o in plan.optimizers)
    return dataclasses.replace(plan, optimizers=optimizers)


# --------------------------------------------------------------------------- checks and choices


def _check_args(plan: Plan, total_steps: Any, form: Any, scheduler: Any, optimizer: Any, metrics: Any,
                backend: str) -> int | None:
    if form not in FORMS:
        raise ConfigError("form", "must be one of " + ", ".join(map(repr, FORMS)), form)
    if scheduler not in SCHEDULERS:
        raise ConfigError("scheduler", "must be 'native' or 'driver'", scheduler)
    if optimizer not in OPTIMIZER_MODES:
        raise ConfigError("optimizer", "must be one of " + ", ".join(map(repr, OPTIMIZER_MODES)), optimizer)
    if metrics is not None:
        if isinstance(metrics, (str, bytes)) or not isinstance(metrics, (Sequence, np.ndarray)):
            raise ConfigError("metrics", "must be a sequence of numbers (one per plateau step)", type(metrics).__name__)
        for i, m in enumerate(metrics):
            if isinstance(m, bool) or not isinstance(m, (int, float, np.number)) or not math.isfinite(float(m)):
                raise ConfigError(f"metrics[{i}]", "must be a finite number", m)
    total = total_steps if total_steps is not None else plan.total_steps
    if total is not None:
        if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 1:
            raise ConfigError("total_steps", "must be a positive integer", total)
        total = int(total)
        if plan.total_steps is not None and total > plan.total_steps:
            raise EvaluationError(f"the plan is defined for {plan.total_steps} steps (total_steps), {total} were "
                                  "asked for")
        if total > INT32_STEP_LIMIT:
            raise UnsupportedError("total_steps", backend, f"{total} steps exceed MindSpore's int32 global_step "
                                   f"(at most {INT32_STEP_LIMIT})")
    check_group_features(plan, backend, ("lr_dtype", "empty", "start_step"))  # lr_dtype: every MindSpore lr is float32
    return total


def _all_native_cells(plan: Plan, items: Sequence[Slot], total: int | None) -> bool:
    for s in items:
        if s.node is None or s.hyper not in ("lr", "weight_decay"):
            continue
        try:
            ch = cells.build_cell(s.node, s.base, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                                  total_steps=total, path=s.path)
        except (UnsupportedError, EvaluationError):
            return False
        if ch.form != "native":
            return False
    return True


def _choose(plan: Plan, per_opt: list[tuple[Any, list[Slot]]], form: str, mode: str, total: int | None,
            backend: str, report: list[str]) -> tuple[str, dict[str, Choice]]:
    """The form and the optimizer of every plan optimizer."""
    if form != "auto":
        return form, {spec.name: choose_optimizer(plan, spec, items, form=form, mode=mode, backend=backend)
                      for spec, items in per_opt}
    tentative = {spec.name: choose_optimizer(plan, spec, items, form="list", mode=mode, backend=backend)
                 for spec, items in per_opt}
    not_nn = [f"{n}: {c.label} ({c.note})" for n, c in tentative.items() if c.family != "nn"]
    splits = [spec.name for spec, _ in per_opt if tentative[spec.name].family == "nn" and len(split_nn(
        spec, [g for g in spec.groups if g.frozen != "exclude"],
        [group_options(plan, g) for g in spec.groups if g.frozen != "exclude"])) > 1]
    plateau = [s.path for _, items in per_opt for s in items
               if s.node is not None and any(isinstance(x, ir.Plateau) for x in ir.walk(s.node))]
    if not_nn or splits:
        for b in not_nn:
            report.append(f"form experimental: {b}.")
        for name in splits:
            keys = NN_SPLIT_KEYS[next(spec.type for spec, _ in per_opt if spec.name == name)]
            report.append(f"form experimental: optimizer {name!r} has groups with different {'/'.join(keys)}; nn "
                          "optimizers accept only params, lr, weight_decay, grad_centralization and order_params in a "
                          "group, the experimental optimizers take torch-like groups (one optimizer instead of one nn "
                          "optimizer per option set).")
        chosen = "experimental"
    elif plateau:
        chosen = "experimental"
        report.append(f"form experimental: {plateau[0]} is a plateau, which needs the metric at run time "
                      "(MindSpore's ReduceLROnPlateau where it computes it, else the driver).")
    elif all(_all_native_cells(plan, items, total) for _, items in per_opt):
        chosen = "cell"
        report.append("form cell: every schedule has a MindSpore LearningRateSchedule cell that computes it "
                      "(float32 arithmetic, bounds in docs/mindspore.md).")
    elif total is not None:
        chosen = "list"
        report.append(f"form list: not every schedule has a native cell; float32 lists of {total} reference values "
                      "(MindSpore's own list mechanism) are exact to float32 storage.")
    else:
        chosen = "cell"
        report.append("form cell: not every schedule has a native cell and no total_steps is known for lists; "
                      "generated cells evaluate the closed forms in float64 ops (float32(ref) within 1 ulp).")
    return chosen, {spec.name: choose_optimizer(plan, spec, items, form=chosen, mode=mode, backend=backend)
                    for spec, items in per_opt}


# --------------------------------------------------------------------------- assembly


def _clips(plan: Plan, spec: Any, opt: Any, params: Mapping[str, list[Any]]) -> list[ClipGroup]:
    """The clip groups of the framework optimizer ``opt`` (positions in ``opt.parameters``)."""
    where = {id(p): i for i, p in enumerate(opt.parameters)}
    out = []
    for g in spec.groups:
        if g.clip is None or g.frozen == "exclude":
            continue
        idx = tuple(where[id(p)] for p in params.get(g.name, []) if id(p) in where)
        if idx:
            out.append(ClipGroup(g.name, idx, g.clip))
    if spec.clip is not None:  # over the groups in the optimizer: one that joins later (start_step) counts from then
        start = {id(p): int(group_feature(plan, g, "start_step")) for g in spec.groups for p in params.get(g.name, [])}
        out.append(ClipGroup(spec.name, tuple(range(len(opt.parameters))), spec.clip,
                             tuple(start.get(id(p), 0) for p in opt.parameters)))
    return out


def _option_notes(choices: Mapping[str, Choice], plan: Plan, report: list[str]) -> None:
    for name, c in choices.items():
        report.append(f"{name}: {c.label}: {c.note}.")
        if c.spec.type == "SGD" and c.family == "nn" and c.kind == "Momentum":
            report.append(f"{name}: weight decay is scheduled, so nn.Momentum (v = mu*v + g, the same update as torch "
                          "SGD without dampening) replaces nn.SGD, which refuses a dynamic weight decay.")
        if any(g.clip is not None for g in c.spec.groups) or c.spec.clip is not None:
            report.append(f"{name}: gradient clipping runs inside the optimizer's update, before it (torch's "
                          "clip_grad_norm_ / clip_grad_value_ per group or over the optimizer, float32).")
    report.append("groups: always explicit group dicts with their own lr and weight_decay (MindSpore's default name "
                  "filter, no weight decay for names containing 'beta' or 'gamma', never applies).")


def build(plan: Plan, params: Mapping[str, list[Any]], *, total_steps: int | None, form: str,
          scheduler: str = "native", optimizer: str = "auto", metrics: Sequence[float] | None = None,
          order: list[Any] | None = None, excluded: tuple[str, ...] = (), plain: bool = False,
          backend: str | None = None) -> MindSporeSetup:
    """The setup for ``plan`` over ``params`` (``group -> Parameters``); see :func:`to_mindspore`.

    ``plain`` (tracing) replaces every optimizer by plain SGD of the same family (no
    momentum, no weight decay) driven by the same mechanisms, so the applied lr shows
    in a parameter's change.
    """
    name0 = backend or "mindspore"
    total = _check_args(plan, total_steps, form, scheduler, optimizer, metrics, name0)
    items = slots(plan, held=True)
    per_opt = [(spec, [s for s in items if s.optimizer == spec.name]) for spec in plan.optimizers
               if any(g.frozen != "exclude" for g in spec.groups)]
    report: list[str] = []
    chosen, choices = _choose(plan, per_opt, form, optimizer, total, name0, report)
    if chosen == "list" and total is None:
        raise ConfigError("total_steps", "is required for form='list': MindSpore raises past the end of an lr list, "
                          "and the plan sets no total_steps", None, show_value=False)
    parts = Parts(plan, total, chosen, scheduler, backend or f"mindspore-{chosen}", plain, metrics, report=report)
    optimizers: list[Any] = []
    owners: dict[str, int] = {}
    spans: list[tuple[Any, list[Slot], int, int]] = []
    for spec, its in per_opt:
        first = len(optimizers)
        for o, names in build_family(parts, choices[spec.name], its, params, order, first):
            owners.update({g: len(optimizers) for g in names})
            optimizers.append(o)
        spans.append((spec, its, first, len(optimizers)))
    driver = None
    if parts.driven or parts.steppers:
        driver = Driver([s for s, _ in parts.driven], [t for _, t in parts.driven], unit=plan.step_unit,
                        steps_per_epoch=plan.steps_per_epoch, total_steps=total, metrics=metrics,
                        steppers=parts.steppers)
    driven = {(s.group, s.hyper) for s, _ in parts.driven}
    bounded = plan if total == plan.total_steps else dataclasses.replace(plan, total_steps=total)  # read back
    for spec, its, lo, hi in spans:
        for i in range(lo, hi):
            own = [s for s in its if owners.get(s.group) == i and (s.group, s.hyper) not in driven
                   and not isinstance(s.node, ir.Plateau)]  # a native plateau's metrics are its stepper's
            source = ValueSource(own, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch, total_steps=total) \
                if (own or total is not None) else None
            guard = Guard(spec.name, source, driver if i in parts.stepped else None, bounded,
                          [g for g, j in owners.items() if j == i])
            install(optimizers[i], guard, () if plain else _clips(plan, spec, optimizers[i], params),
                    movable_horizon=plain)
    if not plain:
        _option_notes(choices, plan, report)
        if driver is not None:
            report.append("setup.step() must follow every update (a driver writes values, or an experimental "
                          "lr_scheduler steps): an update it was not called for raises.")
    if excluded:
        report.append(f"frozen: exclude leaves out {len(excluded)} parameter(s): {', '.join(excluded[:8])}"
                      + (" ..." if len(excluded) > 8 else ""))
    groups_out = tuple(g.name for spec, _ in per_opt for g in spec.groups if g.frozen != "exclude")
    lr = {g: parts.holders[(g, "lr")].obj for g in groups_out}
    hypers = {g: {h: hd.obj for (gg, h), hd in parts.holders.items() if gg == g and h != "lr"} for g in groups_out}
    return MindSporeSetup(tuple(optimizers), chosen, tuple(parts.fid), "\n".join(report), groups_out,
                          {g: list(params.get(g, [])) for g in groups_out}, lr, hypers, driver, choices,
                          tuple(excluded), dict(parts.holders), owners)
