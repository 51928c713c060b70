"""The PyTorch backend: plans to real torch optimizers and schedulers, and live torch setups to plans.

Entry points (also ``optbridge.to_torch`` / ``optbridge.from_torch``):

* :func:`to_torch` -- torch optimizers with the plan's param groups (each keeps
  its ``name``) and one scheduler object that drives every scheduled
  hyperparameter, using torch's own scheduler classes wherever one is exact and a
  :class:`~optbridge_adapters.torch_build.PlanScheduler` (the reference
  evaluator's values, written per step) elsewhere. Every choice is reported as
  :class:`optbridge.report.Fidelity`.
* :func:`from_torch` -- the plan of a live optimizer and its schedulers.
* :func:`trace` -- the ``"torch"`` trace backend (``optbridge.trace(plan, n, backend="torch")``).
* :class:`Lambda` -- a portable ``lr_lambda`` for LambdaLR / MultiplicativeLR.

See ``docs/torch.md`` for the mapping table, the import rules, resume and clipping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from optbridge.errors import BackendUnavailable, ConfigError

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise BackendUnavailable(f"the torch backend needs PyTorch ({e}); install torch: pip install 'optbridge[torch]'") \
        from e

import numpy as np

from optbridge.params import ParamRecord, resolve
from optbridge.plan import Group, OptimizerSpec, Plan, scheduled_hypers
from optbridge.tracing import Trace

from .torch_build import CHUNK, PlanScheduler, SetupScheduler, TorchSetup, _read, applies, build, step_scheduler
from .torch_import import SampledLambdaWarning, from_torch as _from_torch
from .torch_lambda import Lambda

__all__ = ["to_torch", "from_torch", "trace", "Lambda", "TorchSetup", "PlanScheduler", "SetupScheduler",
           "SampledLambdaWarning", "model_records"]


def model_records(model: Any) -> tuple[list[ParamRecord], dict[str, torch.Tensor]]:
    """Parameter records of ``model`` for :func:`optbridge.params.resolve`, and ``name -> tensor``.

    ``model`` is an ``nn.Module`` (module type = the owning module's class name;
    tied parameters are listed under every name, with one ``ident``), or a mapping /
    iterable of ``(name, tensor)`` pairs (no module types).
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
    else:
        items = model.items() if isinstance(model, Mapping) else model
        for name, p in items:
            if not isinstance(p, torch.Tensor):
                raise ConfigError(f"model[{name!r}]", "must be a tensor", type(p).__name__)
            records.append(ParamRecord(name, tuple(p.shape), "", id(p), p.requires_grad))
            tensors.setdefault(name, p)
    return records, tensors


def to_torch(plan: Plan, model: Any, *, native: bool = True, freeze_excluded: bool = True,
             chunk: int = CHUNK) -> TorchSetup:
    """Torch optimizers and a scheduler for ``plan`` over ``model``'s parameters.

    Args:
        plan: The plan.
        model: An ``nn.Module`` (or ``(name, tensor)`` pairs). Groups are resolved
            with :func:`optbridge.params.resolve` over ``model.named_parameters()``;
            tied weights count once.
        native: Use torch's own scheduler classes where exact (False: the
            PlanScheduler drives every scheduled hyperparameter).
        freeze_excluded: Set ``requires_grad=False`` on the parameters of
            ``frozen: exclude`` groups (they are in no optimizer either way).
        chunk: Steps the PlanScheduler evaluates at once.

    Returns:
        A :class:`TorchSetup`: ``.optimizers`` (``.optimizer`` when there is one),
        ``.scheduler`` (call ``step()`` once per update, after ``optimizer.step()``;
        ``step(metric)`` when ``.plateau_every`` says a ReduceLROnPlateau is due),
        ``.clip_gradients()`` (per-group clipping, before ``optimizer.step()``),
        ``.fidelity``, ``.resolution``.

    Raises:
        ConfigError: the groups do not resolve over the model, or torch rejects an option.
        UnsupportedError: an optimizer torch lacks (LAMB, Lion, AdamWeightDecay), or a
            schedule with no exact torch form (plateau on another hyperparameter than lr).
    """
    records, tensors = model_records(model)
    res = resolve(plan, records)
    params = {g.name: [tensors[n] for n in g.params] for g in res.groups}
    if freeze_excluded:
        for n in res.excluded:
            tensors[n].requires_grad_(False)
    return build(plan, params, resolution=res, native=native, chunk=chunk, excluded=tuple(res.excluded))


def from_torch(optimizer: Any, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
               steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """The plan of a live torch optimizer and its scheduler(s).

    Args:
        optimizer: A ``torch.optim`` optimizer (SGD, Adam, AdamW, RMSprop, Adagrad,
            Adadelta, Adamax, NAdam, RAdam). Every group option is written as torch
            filled it (defaults explicit at the optimizer level, differences per group).
        scheduler: None, a torch scheduler, a list of schedulers stacked on the
            optimizer, or a list of ``(scheduler, "iter" | "epoch")`` pairs (what each
            ``step()`` counts). Schedulers already stepped ``K`` times start where they
            stand: update 0 of the plan is the optimizer's next update.
        model: The module (or ``(name, tensor)`` pairs) whose ``named_parameters()``
            name the groups' parameters: each group selects exactly its names;
            parameters in no group go to a ``frozen: exclude`` group. Without a model
            the groups have no selectors (enough for tracing).
        step_unit: What ``scheduler.step()`` counts when not given per pair.
        steps_per_epoch: Updates per epoch (needed to mix iteration and epoch schedulers).
        total_steps: Updates the plan is defined for; needed to sample plain Python
            ``lr_lambda`` functions into tables (with a :class:`SampledLambdaWarning`).
            :class:`Lambda` functions need no horizon.

    Raises:
        ConfigError: a scheduler torch cannot compose that way, a plain Python function
            without ``total_steps``, a parameter not in ``model``, or a scheduler whose
            state does not follow its schedule.
    """
    return _from_torch(optimizer, scheduler, model=model, step_unit=step_unit, steps_per_epoch=steps_per_epoch,
                       total_steps=total_steps)


def _sgd_plan(plan: Plan) -> Plan:
    """The same lr schedules on plain SGD (no momentum, no weight decay): to measure the lr torch applies."""
    opts = []
    for o in plan.optimizers:
        groups = [Group(name=g.name, options={k: g.options[k] for k in ("lr", "lr_mult") if k in g.options},
                        schedule={"lr": g.schedule["lr"]} if "lr" in g.schedule else {}, frozen=g.frozen)
                  for g in o.groups]
        opts.append(OptimizerSpec(type="SGD", name=o.name, options={"lr": float(o.option("lr"))}, groups=tuple(groups)))
    sched = {"lr": plan.schedule["lr"]} if "lr" in plan.schedule else {}
    return dataclasses.replace(plan, optimizers=tuple(opts), schedule=sched)


def trace(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, native: bool = True,
          **options: Any) -> Trace:
    """The ``"torch"`` backend: step real torch objects built by :func:`to_torch`'s machinery.

    One float64 probe parameter per group; each update reads every scheduled
    hyperparameter from the group (``Trace.data``), runs ``optimizer.step()`` with
    gradient 1, then ``scheduler.step()`` (``step(metric)`` when a plateau is due,
    taking ``metrics`` in order). ``Trace.applied["lr"]`` is the parameter change of
    plain SGD (no momentum, no weight decay) driven by the same scheduler classes,
    with the parameter reset to 0 before each update: exactly ``-lr`` in float64.
    """
    if options:
        raise ConfigError("options", "are not options of the torch backend (it takes metrics and native)",
                          sorted(options))
    groups = [g for g in plan.groups if g.frozen != "exclude"]

    def probes() -> dict[str, list[torch.Tensor]]:
        return {g.name: [torch.zeros(1, dtype=torch.float64, requires_grad=True)] for g in groups}

    real_p, sgd_p = probes(), probes()
    setup = build(plan, real_p, native=native)
    sgd = build(_sgd_plan(plan), sgd_p, native=native)
    hypers = scheduled_hypers(plan)
    tgroups = [setup.param_group(g.name) for g in groups]
    data = {h: np.full((len(groups), steps), np.nan) for h in hypers}
    read = [[h for h in hypers if applies(plan, g, h)] for g in groups]  # others: NaN ("not applicable")
    applied = np.empty((len(groups), steps))
    probes_sgd = [sgd_p[g.name][0] for g in groups]
    for p in [p for ps in real_p.values() for p in ps] + probes_sgd:
        p.grad = torch.ones_like(p)
    used_real, used_sgd = [0], [0]
    for k in range(steps):
        for i, tg in enumerate(tgroups):
            for h in read[i]:
                data[h][i, k] = _read(tg, h)
        for o in setup.optimizers.values():
            o.step()
        with torch.no_grad():
            for p in probes_sgd:
                p.zero_()
        for o in sgd.optimizers.values():
            o.step()
        for i, p in enumerate(probes_sgd):
            applied[i, k] = -float(p.detach()[0])
        if k < steps - 1:
            step_scheduler(setup, k, metrics, used_real)
            step_scheduler(sgd, k, metrics, used_sgd)
    return Trace(tuple(g.name for g in groups), data, "torch", setup.fidelity, {"lr": applied})
