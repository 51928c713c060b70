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
from optbridge.plan import Group, OptimizerSpec, Plan, scheduled_hypers
from optbridge.tracing import Trace

from .build import _read, applies, build, step_scheduler

__all__ = ["trace"]


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
