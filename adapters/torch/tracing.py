"""The ``"torch"`` trace backend: ``optbridge.trace(plan, n, backend="torch")``.

Steps real torch objects built by :func:`~optbridge_adapters.torch.build.build`
and reads what every group holds before each update, plus the lr a plain SGD
probe really applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from optbridge.errors import ConfigError
from optbridge.ir import FrozenMap
from optbridge.plan import Group, OptimizerSpec, Plan, group_feature, scheduled_hypers
from optbridge.slots import slots
from optbridge.tracing import Trace

from .build import TorchSetup, build
from .drivers import read_hyper

__all__ = ["trace"]

#: Group options the applied-lr probe keeps (what decides the lr, nothing that changes the update rule).
_LR_OPTIONS = ("lr", "lr_mult", "lr_dtype", "start_step", "empty")


def _sgd_plan(plan: Plan) -> Plan:
    """The same lr schedules on plain SGD (no momentum, no weight decay): to measure the lr torch applies."""
    opts = []
    for o in plan.optimizers:
        groups = [Group(name=g.name, options=FrozenMap({k: g.options[k] for k in _LR_OPTIONS if k in g.options}),
                        schedule=FrozenMap({"lr": g.schedule["lr"]} if "lr" in g.schedule else {}), frozen=g.frozen)
                  for g in o.groups]
        # foreach=False: the single-tensor update (the same -lr on a float64 probe at 0) without torch choosing
        # foreach or not on every step (47 against 62 us per step, measured)
        options: dict[str, Any] = {"lr": float(o.option("lr")), "foreach": False}
        if "lr_dtype" in o.options:
            options["lr_dtype"] = o.options["lr_dtype"]
        opts.append(OptimizerSpec(type="SGD", name=o.name, options=FrozenMap(options), groups=tuple(groups)))
    sched = {"lr": plan.schedule["lr"]} if "lr" in plan.schedule else {}
    return dataclasses.replace(plan, optimizers=tuple(opts), schedule=FrozenMap(sched))


def _probes(groups: list[Group]) -> dict[str, list[torch.Tensor]]:
    return {g.name: [torch.zeros(1, dtype=torch.float64, requires_grad=True)] for g in groups}


def _joined(setup: TorchSetup, name: str) -> dict[str, Any] | None:
    for o in setup.optimizers.values():
        for g in o.param_groups:
            if g.get("name") == name:
                return g
    return None


def trace(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, native: bool = True,
          **options: Any) -> Trace:
    """The ``"torch"`` backend: step real torch objects built by :func:`to_torch`'s machinery.

    One float64 probe parameter per group; each update reads every scheduled
    hyperparameter from the group (``Trace.data``; NaN where it does not apply, and
    before a group joins at its ``start_step``), runs ``optimizer.step()`` with
    gradient 1, then ``scheduler.step()`` (metrics given up front, so plateaus take
    them in order). ``Trace.applied["lr"]`` is the parameter change of plain SGD (no
    momentum, no weight decay) driven by the same scheduler classes, with the
    parameter reset to 0 before each update: exactly ``-lr`` in float64.

    Args:
        plan: The plan.
        steps: Updates to trace.
        metrics: Plateau metrics (one per plateau step).
        native: Torch's own scheduler classes where exact (False: the PlanScheduler).

    Raises:
        ConfigError: an option this backend does not take.
    """
    if options:
        raise ConfigError("options", "are not options of the torch backend (it takes metrics and native)",
                          sorted(options))
    groups = [g for g in plan.groups if g.frozen != "exclude"]
    real_p, sgd_p = _probes(groups), _probes(groups)
    setup = build(plan, real_p, native=native, metrics=metrics)
    sgd = build(_sgd_plan(plan), sgd_p, native=native, metrics=metrics)
    hypers = scheduled_hypers(plan)
    applicable = {(s.group, s.hyper) for s in slots(plan, held=True)}
    data = {h: np.full((len(groups), steps), np.nan) for h in hypers}
    applied = np.full((len(groups), steps), np.nan)
    probes_sgd = [sgd_p[g.name][0] for g in groups]
    for p in [p for ps in real_p.values() for p in ps] + probes_sgd:
        p.grad = torch.ones_like(p)
    starts = [group_feature(plan, g, "start_step") for g in groups]
    # per group: its param_group dict (torch keeps the dict; schedulers write into it), or None while it may
    # still join (looked up each update), and the rows of the hyperparameters that apply to it
    fixed = [None if starts[i] else setup.param_group(g.name) for i, g in enumerate(groups)]
    reads = [[(data[h], h) for h in hypers if (g.name, h) in applicable] for g in groups]
    guards = []
    for st in (setup, sgd):
        assert st.guard is not None
        guards.append(st.guard)
    real_opts, sgd_opts = list(setup.optimizers.values()), list(sgd.optimizers.values())
    resets = [p.detach() for p in probes_sgd]  # writes to the probes outside autograd, without a no_grad block
    for k in range(steps):
        for gd in guards:  # groups joining at this update join before it is read (the hook would, at step)
            gd.join(k)
        for i, g in enumerate(groups):
            if k < starts[i]:
                continue
            tg = fixed[i] if fixed[i] is not None else _joined(setup, g.name)
            if tg is None:
                continue
            for row, h in reads[i]:
                row[i, k] = read_hyper(tg, h)
        for o in real_opts:
            o.step()
        for r in resets:
            r.zero_()
        for o in sgd_opts:
            o.step()
        for i, p in enumerate(probes_sgd):
            if k >= starts[i]:
                applied[i, k] = -p.item()
        if k < steps - 1:
            setup.scheduler.step()
            sgd.scheduler.step()
    return Trace(tuple(g.name for g in groups), data, "torch", setup.fidelity, {"lr": applied})
