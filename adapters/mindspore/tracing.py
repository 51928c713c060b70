"""The MindSpore trace backends: ``mindspore-list``, ``mindspore-cell``, ``mindspore-experimental``.

Each builds the plan's optimizers over one float32 probe parameter per group
(:func:`~optbridge_adapters.mindspore.build._build`), reads what every group
holds before each update, and measures the lr MindSpore applied from the probe's
change under plain SGD with gradient 1.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from optbridge import ir
from optbridge.errors import ConfigError
from optbridge.plan import Plan, scheduled_hypers
from optbridge.tracing import Trace

from .build import _build, _held

__all__ = ["trace_list", "trace_cell", "trace_experimental"]


class _Zero(nn.Cell):
    def __init__(self, params: list[Any]) -> None:
        super().__init__()
        self.ps = ms.ParameterTuple(params)
        self.z = Tensor(np.zeros(1, np.float32))
        self.n = len(params)

    @ms.jit
    def construct(self):
        for i in range(self.n):
            ops.assign(self.ps[i], self.z)
        return self.z


class _ProbeSum(nn.Cell):
    """loss = sum of the probe parameters: its gradient is exactly 1 for every probe."""

    def __init__(self, params: list[Any]) -> None:
        super().__init__()
        self.ps = ms.ParameterTuple(params)
        self.n = len(params)

    def construct(self):
        s = self.ps[0].sum()
        for i in range(1, self.n):
            s = s + self.ps[i].sum()
        return s


_RUNS = itertools.count()


def _trace(plan: Plan, steps: int, form: str, metrics: Sequence[float] | None, mode: str, **options: Any) -> Trace:
    if mode not in ("pynative", "graph"):
        raise ConfigError("mode", "must be 'pynative' or 'graph'", mode)
    scheduler = options.pop("scheduler", "native")
    if options:
        raise ConfigError(next(iter(options)), "is not an option of the MindSpore trace backends (mode, scheduler)",
                          options[next(iter(options))])
    backend = f"mindspore-{form}"
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        groups = [g for g in plan.groups if g.frozen != "exclude"]
        run = next(_RUNS)
        probes = {g.name: [Parameter(Tensor(np.zeros(1, np.float32)), name=f"optbridge_probe_{run}_{i}")]
                  for i, g in enumerate(groups)}
        total = steps if form == "list" else (plan.total_steps or steps)
        setup = _build(plan, probes, total_steps=total, form=form, plain=True, backend=backend,
                       scheduler=scheduler)
        names = [g.name for g in groups]
        hypers = scheduled_hypers(plan)
        data = {h: np.zeros((len(names), steps)) for h in hypers}
        applied = np.zeros((len(names), steps))
        idx = {n: i for i, n in enumerate(names)}
        plist = [probes[n][0] for n in names]
        zero = _Zero(plist)
        ones = {id(p): Tensor(np.ones(1, np.float32)) for p in plist}
        if mode == "graph":
            runners = [nn.TrainOneStepCell(_ProbeSum(list(o.parameters)), o) for o in setup.optimizers]
        else:
            grads = [ms.mutable(tuple(ones[id(p)] for p in o.parameters)) for o in setup.optimizers]
        # Lists and cells are read once for all steps; a driven Parameter (e.g. experimental AdamW, which
        # list/cell forms use for AdamW) holds only the current value, so it is read before each step.
        driven = {g for g in names if isinstance(setup.lr[g], Parameter)} if form in ("list", "cell") else set(names)
        if form in ("list", "cell"):  # values the objects hold / compute for update k, read once
            t = Tensor(np.arange(steps, dtype=np.int32))
            for g in names:
                if g in driven:
                    continue
                obj = setup.lr[g]
                data["lr"][idx[g]] = _values(obj, t, steps)
                for h, o in setup.hypers.get(g, {}).items():
                    data[h][idx[g]] = _values(o, t, steps)
            for h in hypers:
                for g in groups:
                    if h != "lr" and h not in setup.hypers.get(g.name, {}):
                        data[h][idx[g.name]] = _held(plan, g, h)
        m = None if metrics is None else np.asarray(metrics, dtype=np.float64)
        # metrics are one per plateau step (per epoch on the epoch clock), as the reference reads them
        plateau_units = {n.unit or plan.step_unit for g in groups for n in [plan.schedule_for(g, "lr")]
                         if isinstance(n, ir.Plateau)}
        plateau_every = int(plan.steps_per_epoch or 1) if "epoch" in plateau_units else 1
        for k in range(steps):
            for g in groups:
                if g.name in driven:
                    data["lr"][idx[g.name]][k] = float(setup.lr[g.name].asnumpy())
                    for h in hypers:
                        if h == "lr":
                            continue
                        o = setup.hypers.get(g.name, {}).get(h)
                        data[h][idx[g.name]][k] = float(o.asnumpy()) if o is not None else _held(plan, g, h)
            zero()
            if mode == "graph":
                for r in runners:
                    r()
            else:
                for o, gr in zip(setup.optimizers, grads):
                    o(gr)
            for i, p in enumerate(plist):
                applied[i, k] = 0.0 - float(p.asnumpy()[0])  # +0.0 for a zero lr
            if k + 1 < steps:
                j = (k + 1) // plateau_every - 1 if (k + 1) % plateau_every == 0 else -1  # plateau step that ends here
                metric = float(m[j]) if m is not None and 0 <= j < m.size else None
                setup.step(metric)
        return Trace(tuple(names), data, backend, setup.fidelity, {"lr": applied})
    finally:
        ms.set_context(mode=prev)


def _values(obj: Any, t: Any, steps: int) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        return obj[:steps].astype(np.float64)
    return obj(t).asnumpy().astype(np.float64).reshape(-1)


def trace_list(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, mode: str = "pynative",
               **options: Any) -> Trace:
    """Trace the list form: nn.SGD with per-group float32 lr lists; ``data`` = the list entries,
    ``applied["lr"]`` = the parameter change of plain SGD with gradient 1 (probe reset to 0 before each step)."""
    return _trace(plan, steps, "list", metrics, mode, **options)


def trace_cell(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, mode: str = "pynative",
               **options: Any) -> Trace:
    """Trace the cell form: ``data`` = each group's LearningRateSchedule at ``global_step=k``; ``applied`` as above."""
    return _trace(plan, steps, "cell", metrics, mode, **options)


def trace_experimental(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, mode: str = "pynative",
                       **options: Any) -> Trace:
    """Trace the experimental form: ``data`` = each group's lr Parameter before update k; ``applied`` as above.

    Options: ``scheduler="native"`` (default) or ``"driver"``.
    """
    return _trace(plan, steps, "experimental", metrics, mode, **options)


