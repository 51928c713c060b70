"""Plan -> real torch objects: optimizers, schedulers, and the setup that holds them.

:func:`build` turns a plan and its parameters (already assigned to groups) into
torch optimizers and one scheduler object. Every (group, hyperparameter) comes from
the one resolver, :func:`optbridge.slots.slots`; per optimizer the lr schedules
become

* torch's own scheduler classes (:mod:`optbridge_adapters.torch.forms`) where one
  computes them exactly (fidelity ``native``), and
* a :class:`~optbridge_adapters.torch.drivers.PlanScheduler` elsewhere, which
  writes the reference evaluator's values (fidelity ``table``: values precomputed
  by the reference and written per step, as ``docs/adapters.md`` defines the forms),

and every other scheduled hyperparameter is written by the PlanScheduler. An
:class:`~optbridge_adapters.torch.drivers.UpdateGuard` hooks every optimizer's step
(schedule horizon, scheduler not stepped, groups joining mid-run).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from optbridge import ir
from optbridge.errors import ConfigError, UnsupportedError
from optbridge.params import ParamRecord, Resolution, effective_options, resolve
from optbridge.plan import (
    GROUP_FEATURES,
    OPTIMIZER_DEFAULTS,
    Group,
    OptimizerSpec,
    Plan,
    check_group_features,
    group_feature,
    scheduled_hypers,
)
from optbridge.report import Fidelity
from optbridge.slots import Slot, fingerprint, slots
from optbridge.source import CHUNK, ValueSource

from .drivers import AmbiguousOptimizer, Entry, Join, PlanScheduler, SetupScheduler, UpdateGuard, position_of
from .forms import NotNative, Spec, construct, lower_lr, pair_momentum
from .optimizers import OPTIMIZERS

__all__ = ["to_torch", "model_records", "build", "TorchSetup", "FORMS"]

BACKEND = "torch"
#: ``form=`` values of :func:`to_torch`.
FORMS = ("auto", "table")

_NO_TORCH = {
    "LAMB": "torch 2.13 has no LAMB optimizer (torch.optim has no layer-wise trust ratio)",
    "Lion": "torch 2.13 has no Lion optimizer",
}


# --------------------------------------------------------------------------- the setup

@dataclass(frozen=True, eq=False)
class TorchSetup:
    """What :func:`to_torch` builds.

    Attributes:
        optimizers: ``name -> torch.optim.Optimizer`` (one per plan optimizer with trained groups).
        scheduler: The object to step once per update: a torch scheduler when one torch
            scheduler does everything, else a
            :class:`~optbridge_adapters.torch.drivers.SetupScheduler`; both have ``step()``,
            ``get_last_lr()``, ``state_dict()`` and ``load_state_dict()``.
        fidelity: How each (group, hyperparameter) is driven (:class:`optbridge.report.Fidelity`).
        resolution: Which parameter went to which group (None for a trace's probe parameters).
        plan: The plan.
        plateau_every: Updates between ReduceLROnPlateau steps (``scheduler.step(metric)`` is due
            then, unless ``metrics`` were given), or None.
        excluded: Parameters left out of every optimizer (``frozen: exclude``).
        schedulers: Every scheduler object, in stepping order.
        guard: The step pre-hooks (``guard.strict = False`` opts out of the "scheduler not
            stepped" check; ``guard.remove()`` removes the hooks).
    """

    optimizers: Mapping[str, torch.optim.Optimizer]
    scheduler: Any
    fidelity: tuple[Fidelity, ...]
    resolution: Resolution | None
    plan: Plan
    plateau_every: int | None = None
    excluded: tuple[str, ...] = ()
    schedulers: tuple[Any, ...] = field(default=())
    guard: UpdateGuard | None = None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, when there is exactly one."""
        if len(self.optimizers) != 1:
            raise AmbiguousOptimizer(list(self.optimizers))
        return next(iter(self.optimizers.values()))

    def param_group(self, name: str) -> dict[str, Any]:
        """The torch param group dict of plan group ``name`` (a group joining later: once it has joined)."""
        for o in self.optimizers.values():
            for g in o.param_groups:
                if g.get("name") == name:
                    return g
        have = [g["name"] for o in self.optimizers.values() for g in o.param_groups]
        raise ConfigError("name", f"is not a trained group of this setup (groups: {', '.join(have)})", name)

    def clip_gradients(self) -> dict[str, float | None]:
        """Clip gradients as the plan says; call after ``backward()``, before ``step()``.

        An optimizer's ``clip`` clips all of its parameters together (one norm, as
        ``torch.nn.utils.clip_grad_norm_(model.parameters(), ...)`` in a training loop);
        a group's ``clip`` clips that group's parameters only (one norm per group).
        ``max_norm`` uses ``clip_grad_norm_``, ``value`` uses ``clip_grad_value_``.
        A group that joins at this update (``start_step``) is added to its optimizer
        first, so its own clip and its optimizer's cover its first update.

        Returns:
            ``optimizer or group name -> total gradient norm before clipping`` (None for
            value clipping).
        """
        out: dict[str, float | None] = {}
        if self.guard is not None and self.guard.active:  # a group joining at this update is in this update's clip
            self.guard.join(self.guard.position())
        for o in self.plan.optimizers:
            if o.clip is not None and o.name in self.optimizers:
                params = [p for g in self.optimizers[o.name].param_groups for p in g["params"] if p.grad is not None]
                out[o.name] = _clip(params, o.clip)
        for g in self.plan.groups:
            if g.clip is None or g.frozen == "exclude":
                continue
            try:
                tg = self.param_group(g.name)
            except ConfigError:
                continue  # joins later (start_step): nothing to clip yet
            out[g.name] = _clip([p for p in tg["params"] if p.grad is not None], g.clip)
        return out


def _clip(params: list[torch.Tensor], clip: Any) -> float | None:
    if clip.max_norm is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, clip.max_norm, clip.norm_type))
    torch.nn.utils.clip_grad_value_(params, clip.value)
    return None


# --------------------------------------------------------------------------- optimizers

def _optimizer_class(o: OptimizerSpec, path: str) -> type[torch.optim.Optimizer]:
    if o.type in _NO_TORCH:
        raise UnsupportedError(f"{path}.type", BACKEND, _NO_TORCH[o.type])
    cls = OPTIMIZERS.get(o.type) or getattr(torch.optim, o.type, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise UnsupportedError(f"{path}.type", BACKEND, f"torch {torch.__version__} has no torch.optim.{o.type}")
    return cls


def _torch_kwargs(options: Mapping[str, Any], accepted: set[str], path: str, otype: str) -> dict[str, Any]:
    out = {}
    for key, v in options.items():
        if key in GROUP_FEATURES:
            continue
        if key in accepted:
            out[key] = tuple(v) if isinstance(v, list | tuple) else v
        elif v not in (None, False):
            raise UnsupportedError(f"{path}.{key}", BACKEND, f"torch.optim.{otype} has no option {key!r}")
    return out


def _opt_path(plan: Plan, oi: int) -> str:
    return "optimizer" if len(plan.optimizers) == 1 else f"optimizers[{oi}]"


def _group_dict(plan: Plan, g: Group, params: list[torch.Tensor], accepted: set[str], path: str,
                otype: str) -> dict[str, Any]:
    d: dict[str, Any] = {"params": list(params), "name": g.name,
                         **_torch_kwargs(effective_options(plan, g), accepted, f"{path}.groups.{g.name}", otype)}
    if group_feature(plan, g, "lr_dtype") == "float32":
        d["lr"] = torch.tensor(float(d["lr"]), dtype=torch.float32)  # as torch holds lr=torch.tensor(...)
    return d


def _make_optimizer(plan: Plan, oi: int, o: OptimizerSpec, first: list[dict[str, Any]]) -> torch.optim.Optimizer:
    path = _opt_path(plan, oi)
    cls = _optimizer_class(o, path)
    accepted = set(inspect.signature(cls).parameters) - {"params"}
    defaults = {**OPTIMIZER_DEFAULTS[o.type], **o.options}
    defaults.pop("lr_mult", None)
    defaults.pop("weight_decay_mult", None)
    try:
        return cls(first, **_torch_kwargs(defaults, accepted, path, o.type))
    except (ValueError, TypeError, RuntimeError) as e:
        raise ConfigError(path, f"{cls.__module__.split('.')[0]}.{o.type} rejects the options: {e}", o.type) from None


# --------------------------------------------------------------------------- building

@dataclass
class _Built:
    """One optimizer's schedulers and fidelity notes."""

    entries: list[Entry] = field(default_factory=list)
    fidelity: dict[tuple[str, str], Fidelity] = field(default_factory=dict)
    table: list[Slot] = field(default_factory=list)
    native_plateau: bool = False


def _lower(plan: Plan, groups: list[Group], lr: list[Slot], native: bool, metrics: Sequence[float] | None,
           path: str) -> tuple[list[tuple[Spec, str]], str]:
    """Torch's own lr schedulers for one optimizer, or ``[]`` and why not."""
    nodes = [s.node for s in lr]
    plateau = any(isinstance(n, ir.Plateau) for n in nodes)
    if any(group_feature(plan, g, "start_step") for g in groups):
        why = ("a group joins mid-run (start_step), and torch's schedulers keep one base lr per group they were "
               "built with")
    elif any(group_feature(plan, g, "lr_dtype") == "float32" for g in groups):
        why = "a float32 (tensor) lr makes torch's schedulers compute in float32, not the schedule rounded to float32"
    elif not native and not (plateau and metrics is None):
        why = "form='table' was asked for"
    else:
        try:
            specs = lower_lr(nodes, [g.frozen == "zero_lr" for g in groups], [s.base for s in lr],
                             unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total_steps)
            return specs, ""
        except NotNative as e:
            why = str(e)
    if plateau and metrics is None:
        raise UnsupportedError(path, BACKEND, "a plateau schedule reacts to metrics: without metrics known in "
                               f"advance it needs torch's ReduceLROnPlateau, and that cannot be used here: {why}")
    return [], why


def _build_optimizer(plan: Plan, o: OptimizerSpec, opt: torch.optim.Optimizer, groups: list[Group],
                     mine: list[Slot], hypers: tuple[str, ...], *, native: bool, metrics: Sequence[float] | None,
                     spe: int) -> _Built:
    out = _Built()
    cname = f"torch.optim.{o.type}"
    lr = [s for s in mine if s.hyper == "lr"]
    specs, why = _lower(plan, groups, lr, native, metrics, lr[0].path if lr else "schedule.lr")
    desc = " + ".join(spec.describe() for spec, _ in specs)
    mh = "beta1" if "betas" in opt.defaults else ("momentum" if "momentum" in opt.defaults else None)
    paired = False
    if len(specs) == 1 and mh is not None and mh in hypers:
        m = [s for s in mine if s.hyper == mh]
        if len(m) == len(groups) and all(s.node is not None for s in m):
            paired = pair_momentum(specs[0][0], [s.node for s in lr], [s.node for s in m], [s.base for s in m])
    if specs:
        for tg in opt.param_groups:  # the base of every torch scheduler is the group's lr (see forms.construct)
            tg["initial_lr"] = tg["lr"]
        for spec, unit in specs:
            every = spe if unit == "epoch" else 1
            is_plateau = spec.cls == "ReduceLROnPlateau"
            out.native_plateau |= is_plateau
            out.entries.append(Entry(construct(spec, opt), every, is_plateau, o.name))
    by_name = {g.name: g for g in groups}
    for s in mine:
        key = (s.group, s.hyper)
        g = by_name[s.group]
        if s.hyper == "lr" and g.frozen == "zero_lr":
            out.fidelity[key] = Fidelity(BACKEND, s.group, s.hyper, "native", f"lr 0 (frozen: zero_lr), held by "
                                         f"{cname}" + (f" under {desc}, which keeps 0 at 0" if specs else ""))
        elif s.hyper == "lr" and specs:
            out.fidelity[key] = Fidelity(BACKEND, s.group, s.hyper, "native", "torch.optim.lr_scheduler." + desc)
        elif s.hyper == mh and paired:
            out.fidelity[key] = Fidelity(BACKEND, s.group, s.hyper, "native",
                                         f"torch.optim.lr_scheduler.{specs[0][0].cls} (cycle_momentum)")
        elif s.node is None:
            how = " as a float32 tensor lr" if s.hyper == "lr" and group_feature(plan, g, "lr_dtype") == "float32" \
                else ""
            out.fidelity[key] = Fidelity(BACKEND, s.group, s.hyper, "native", f"constant {s.base!r} held by "
                                         f"{cname}{how}")
        else:
            out.table.append(s)
            reason = why if s.hyper == "lr" else ("torch's schedulers only drive lr (and momentum/beta1 cycled "
                                                  "with a CyclicLR/OneCycleLR lr)")
            out.fidelity[key] = Fidelity(BACKEND, s.group, s.hyper, "table", "optbridge PlanScheduler writes the "
                                         f"reference evaluator's values per step (no exact torch class: {reason})")
    return out


def build(plan: Plan, params: Mapping[str, Sequence[torch.Tensor]], *, resolution: Resolution | None = None,
          native: bool = True, chunk: int = CHUNK, excluded: tuple[str, ...] = (),
          metrics: Sequence[float] | None = None) -> TorchSetup:
    """Torch optimizers and a scheduler for ``plan``, with ``params[group name]`` as each group's parameters.

    Args:
        plan: The plan.
        params: Tensors per (built) group name.
        resolution: How ``params`` were resolved (kept on the setup).
        native: Use torch's own scheduler classes where exact (``form="auto"``).
        chunk: Updates a PlanScheduler evaluates at once.
        excluded: Parameters left out (``frozen: exclude``), kept on the setup.
        metrics: Plateau metrics known in advance.
    """
    check_group_features(plan, BACKEND, supported=GROUP_FEATURES)
    hypers = scheduled_hypers(plan)
    every_slot = slots(plan, held=True)  # raises for a plan-wide hyper no built group has
    clock: dict[str, Any] = dict(unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                                 total_steps=plan.total_steps)
    spe = plan.steps_per_epoch or 1
    optimizers: dict[str, torch.optim.Optimizer] = {}
    entries: list[Entry] = []
    fid: dict[tuple[str, str], Fidelity] = {}
    joins: list[Join] = []
    planners: list[PlanScheduler] = []
    guarded: list[Slot] = []
    for oi, o in enumerate(plan.optimizers):
        groups = [g for g in o.groups if g.frozen != "exclude"]
        if not groups:
            continue
        path = _opt_path(plan, oi)
        cls = _optimizer_class(o, path)
        accepted = set(inspect.signature(cls).parameters) - {"params"}
        dicts = [_group_dict(plan, g, list(params[g.name]), accepted, path, o.type) for g in groups]
        starts = [group_feature(plan, g, "start_step") for g in groups]
        if all(starts):
            raise UnsupportedError(f"{path}.groups.{groups[0].name}.start_step", BACKEND, "torch builds an optimizer "
                                   "with at least one param group: at least one group must be there from update 0")
        opt = _make_optimizer(plan, oi, o, [d for d, s in zip(dicts, starts, strict=True) if not s])
        optimizers[o.name] = opt
        joins += [Join(s, o.name, d) for d, s in zip(dicts, starts, strict=True) if s]
        mine = [s for s in every_slot if s.optimizer == o.name]
        built = _build_optimizer(plan, o, opt, groups, mine, hypers, native=native, metrics=metrics, spe=spe)
        fid.update(built.fidelity)
        entries += built.entries
        table = {(s.group, s.hyper) for s in built.table}  # their PlanScheduler's source bounds them
        guarded += [s for s in mine if s.node is not None and (s.group, s.hyper) not in table
                    and not (built.native_plateau and s.hyper == "lr")]
        for g in groups:  # a plan-wide hyper this optimizer lacks has no slot
            for h in hypers:
                fid.setdefault((g.name, h), Fidelity(BACKEND, g.name, h, "native", f"not applicable: "
                                                     f"torch.optim.{o.type} has no {h} (NaN in traces)"))
        if built.table:
            fp = fingerprint(built.table, **clock)
            sched = PlanScheduler(opt, built.table, fingerprint=fp, metrics=metrics, chunk=chunk, **clock)
            planners.append(sched)
            feeds = metrics is None and any(isinstance(s.node, ir.Plateau) for s in built.table)
            entries.append(Entry(sched, 1, feeds, o.name))
    single = len(entries) == 1 and entries[0].every == 1 and len(optimizers) == 1
    scheduler: Any = entries[0].sched if single else None  # one scheduler does everything (a plateau: step(metric))
    pl = [e.every if not isinstance(e.sched, PlanScheduler) else _plateau_every(plan, e.sched) for e in entries
          if e.plateau]
    if not single or (entries[0].plateau and (metrics is not None or isinstance(entries[0].sched, PlanScheduler))):
        scheduler = SetupScheduler(entries, optimizers, fingerprint(every_slot, **clock), metrics,
                                   pl[0] if pl else None)

    def refresh() -> None:
        for p in planners:
            p.refresh()

    sources = [ValueSource(guarded, metrics=metrics, chunk=chunk, **clock)] + [p.source for p in planners]
    guard = UpdateGuard(optimizers, position=lambda: position_of(scheduler), sources=sources, joins=joins,
                        refresh=refresh)
    order = [(g.name, h) for g in plan.groups if g.frozen != "exclude" for h in hypers]
    return TorchSetup(optimizers, scheduler, tuple(fid[k] for k in order if k in fid), resolution, plan,
                      pl[0] if pl else None, excluded, tuple(e.sched for e in entries), guard)


def _plateau_every(plan: Plan, sched: PlanScheduler) -> int:
    p = sched.source._plateau
    assert p is not None
    return p[0].scale(plan.step_unit, plan.steps_per_epoch)


# --------------------------------------------------------------------------- entry point

def model_records(model: Any) -> tuple[list[ParamRecord], dict[str, torch.Tensor]]:
    """Parameter records of ``model`` for :func:`optbridge.params.resolve`, and ``name -> tensor``.

    ``model`` is an ``nn.Module`` (module type = the owning module's class name;
    tied parameters are listed under every name, with one ``ident``), or a mapping /
    iterable of ``(name, tensor)`` pairs (no module types).

    Raises:
        ConfigError: ``model`` is none of these, or holds something that is not a tensor.
    """
    records: list[ParamRecord] = []
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(model, torch.nn.Module):
        for mname, mod in model.named_modules(remove_duplicate=False):
            for pname, p in mod._parameters.items():
                if p is None:
                    continue
                full = f"{mname}.{pname}" if mname else pname
                records.append(ParamRecord(full, tuple(p.shape), type(mod).__name__, id(p), p.requires_grad))
                tensors.setdefault(full, p)
        return records, tensors
    if isinstance(model, Mapping):
        items: Any = model.items()
    elif isinstance(model, list | tuple):
        items = model
    else:
        raise ConfigError("model", "must be a torch.nn.Module, a mapping name -> tensor, or (name, tensor) pairs",
                          type(model).__name__)
    for i, item in enumerate(items):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigError(f"model[{i}]", "must be a (name, tensor) pair", type(item).__name__)
        name, p = item
        if not isinstance(p, torch.Tensor):
            raise ConfigError(f"model[{name!r}]", "must be a tensor", type(p).__name__)
        records.append(ParamRecord(name, tuple(p.shape), "", id(p), p.requires_grad))
        tensors.setdefault(name, p)
    return records, tensors


def to_torch(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
             metrics: Sequence[float] | None = None, freeze_excluded: bool = True) -> TorchSetup:
    """Torch optimizers and a scheduler for ``plan`` over ``model``'s parameters.

    Args:
        plan: The plan.
        model: An ``nn.Module`` (or ``(name, tensor)`` pairs). Groups are resolved
            with :func:`optbridge.params.resolve` over ``model.named_parameters()``;
            tied weights count once.
        total_steps: Updates the setup must be exact for (default: the plan's).
        form: ``"auto"`` (default; torch's own scheduler classes where exact) or
            ``"table"`` (the PlanScheduler drives every scheduled hyperparameter; a
            plateau too when ``metrics`` are given).
        metrics: Plateau metrics known in advance: ``scheduler.step()`` then takes the
            next one whenever a ReduceLROnPlateau (or a plateau in the PlanScheduler)
            is due, and the setup is defined as far as they go. Without them call
            ``scheduler.step(metric)`` when ``setup.plateau_every`` says a plateau is due.
        freeze_excluded: Set ``requires_grad=False`` on the parameters of
            ``frozen: exclude`` groups (they are in no optimizer either way).

    Returns:
        A :class:`TorchSetup`: ``.optimizers`` (``.optimizer`` when there is one),
        ``.scheduler`` (call ``step()`` once per update, after ``optimizer.step()``),
        ``.clip_gradients()``, ``.fidelity``, ``.resolution``, ``.guard``.

    Raises:
        ConfigError: bad arguments, groups that do not resolve over the model, or an
            option torch rejects.
        UnsupportedError: an optimizer torch lacks (LAMB, Lion), or a
            schedule with no exact torch form (a plateau without metrics where torch's
            ReduceLROnPlateau cannot be used).
    """
    if not isinstance(plan, Plan):
        raise ConfigError("plan", "must be an optbridge Plan (optbridge.load(...) reads one)", type(plan).__name__)
    form = ir.check_choice("form", "auto" if form is None else form, FORMS)
    if total_steps is not None:
        plan = dataclasses.replace(plan, total_steps=ir.check_int("total_steps", total_steps, minimum=1))
    metrics = _check_metrics(metrics)
    records, tensors = model_records(model)
    res = resolve(plan, records)
    groups = {g.name: [tensors[n] for n in g.params] for g in res.groups}
    if freeze_excluded:
        for n in res.excluded:
            tensors[n].requires_grad_(False)
    return build(plan, groups, resolution=res, native=form == "auto", excluded=tuple(res.excluded), metrics=metrics)


def _check_metrics(metrics: Any) -> list[float] | None:
    if metrics is None:
        return None
    if isinstance(metrics, str | bytes | Mapping) or not hasattr(metrics, "__iter__"):
        raise ConfigError("metrics", "must be a sequence of numbers (one per plateau step)", type(metrics).__name__)
    out = []
    for i, m in enumerate(metrics):
        try:
            out.append(float(m))
        except (TypeError, ValueError):
            raise ConfigError(f"metrics[{i}]", "must be a number", m) from None
    return out
