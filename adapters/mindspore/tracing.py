"""The MindSpore trace backends: ``mindspore-list``, ``mindspore-cell``, ``mindspore-experimental``.

Each builds the plan's setup over one float32 probe parameter per group
(:func:`~optbridge_adapters.mindspore.build.build` with ``plain=True``: plain SGD of
the same optimizer family, driven by the same lists, cells, driver and lr_schedulers),
and returns, per update, the value every group holds (``Trace.data``) and the lr
MindSpore applied, measured from the probe's change under gradient 1
(``Trace.applied["lr"]``, exactly ``float32(lr)``).

Two paths, the same verdicts (tests/test_mindspore_trace.py compares them):

* ``fast=True``: compiled calls: one update per call (:class:`.runner.Stepper`, a
  graph without a loop: cheap to compile) up to :data:`.runner.STEPPER_STEPS` updates,
  beyond that many updates per call (:class:`.runner.Runner`, a graph ``while`` loop:
  cheap per update); lists and cells evaluated once per chunk;
* ``fast=False``: a training loop as a user writes it, one update at a time
  (PyNative: ``optimizer(grads)``; GRAPH: ``nn.TrainOneStepCell``), then
  ``setup.step(metric)``;
* ``fast=None`` (default): the cheaper of the two, measured (:func:`use_fast`): in PyNative, the
  loop for the experimental form up to :data:`LOOP_STEPS` updates, and for every form up to
  :data:`ONE_CPU_LOOP_STEPS` in a process on one CPU with ``MS_DEV_LAUNCH_BLOCKING=1`` (a
  conformance worker); else the compiled calls.

Options: ``mode`` (``"pynative"`` or ``"graph"``), ``scheduler`` (``"native"`` or
``"driver"``), ``optimizer`` (``"auto"``, ``"native"``, ``"exact"``), ``fast``.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Sequence
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn

from optbridge.errors import ConfigError
from optbridge.plan import Plan, scheduled_hypers
from optbridge.slots import slots
from optbridge.source import CHUNK
from optbridge.tracing import Trace, nan_before_joins

from .build import build
from .reuse import POOL, SETUPS, reuse_enabled
from .runner import COMPILED_SCHEDULERS, STEPPER_STEPS, Runner, Stepper
from .setup import MindSporeSetup

__all__ = ["trace_list", "trace_cell", "trace_experimental", "use_fast", "one_cpu_blocking"]

_RUNS = itertools.count()
#: ``fast=None`` (default) runs the experimental form in PyNative one update at a time up to this many updates:
#: there the loop costs less than compiling the runner (measured on 17 conformance cases at 60 updates: 11.4 s
#: against 15.2 s; the list and cell forms' nn optimizers compile their own graph in the loop too, so they gain
#: nothing from it).
LOOP_STEPS = 100
#: In a process on one CPU with ``MS_DEV_LAUNCH_BLOCKING=1`` (MindSpore launching in the calling thread: a
#: conformance worker), ``fast=None`` runs every form's loop up to this many updates: there an eager op costs
#: ~0.05 ms and compiling the runner (which needs a second core to overlap its threads) costs most. Measured
#: 2026-12-06 on the conformance cases (147 list-form traces of up to 400 updates, one core): 80 s for the loop
#: against 112 s for the compiled calls with runner reuse; cell form 103 s (loop); on two free cores and without
#: the variable the compiled calls win (30 list traces: 9.4 s against 15.7 s).
ONE_CPU_LOOP_STEPS = 400
_OPTIONS = ("scheduler", "optimizer", "fast")


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


def _known(holder: Any, start: int, n: int) -> np.ndarray | None:
    """Values of a list / cell / constant holder for updates ``start .. start + n - 1`` (None for a Parameter)."""
    if holder.kind == "list":
        return np.asarray(holder.obj[start:start + n], dtype=np.float64)
    if holder.kind == "cell":
        t = Tensor(np.arange(start, start + n, dtype=np.int32))
        return np.asarray(holder.obj(t).asnumpy(), dtype=np.float64).reshape(-1)
    return None


def _held_value(setup: MindSporeSetup, group_family: str, base: float) -> float:
    """What MindSpore holds for an unscheduled hyperparameter: float64 in exact optimizers, float32 elsewhere."""
    return float(base) if group_family == "exact" else float(np.float32(base))


def _trace(plan: Plan, steps: int, form: str, metrics: Sequence[float] | None, mode: str,
           options: dict[str, Any]) -> Trace:
    if not isinstance(plan, Plan):
        raise ConfigError("plan", "must be an optbridge Plan", type(plan).__name__)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError("steps", "must be a positive integer", steps)
    if mode not in ("pynative", "graph"):
        raise ConfigError("mode", "must be 'pynative' or 'graph'", mode)
    for key in options:
        if key not in _OPTIONS:
            raise ConfigError(key, "is not an option of the MindSpore trace backends (mode, " + ", ".join(_OPTIONS)
                              + ")", options[key])
    fast = options.get("fast")
    if fast is not None and not isinstance(fast, bool):
        raise ConfigError("fast", "must be True, False or None (choose by cost)", fast)
    steps = int(steps)
    if fast is None:
        fast = use_fast(form, mode, steps, one_cpu_blocking())
    backend = f"mindspore-{form}"
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        groups = [g for g in plan.groups if g.frozen != "exclude"]
        run = next(_RUNS)
        probes = {g.name: [Parameter(Tensor(np.zeros(1, np.float32)), name=f"optbridge_probe_{run}_{i}")]
                  for i, g in enumerate(groups)}
        total = steps if form == "list" else (plan.total_steps or steps)
        setup = build(plan, probes, total_steps=total, form=form, scheduler=options.get("scheduler", "native"),
                      optimizer=options.get("optimizer", "auto"), metrics=metrics, plain=True, backend=backend)
        return (_fast if fast else _loop)(plan, steps, setup, probes, metrics, mode, backend)
    finally:
        ms.set_context(mode=prev)


def one_cpu_blocking() -> bool:
    """Whether this process runs on one CPU and MindSpore launches in the calling thread (MS_DEV_LAUNCH_BLOCKING)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        cpus = os.cpu_count() or 1
    return cpus == 1 and os.environ.get("MS_DEV_LAUNCH_BLOCKING") == "1"


def use_fast(form: str, mode: str, steps: int, one_cpu: bool) -> bool:
    """``fast=None``'s choice: the compiled calls (True) or the training loop (False), whichever costs less.

    In PyNative the loop wins for the experimental form up to :data:`LOOP_STEPS` updates (compiling the runner
    costs 0.5-1 s, an update of the loop 5-20 ms), and for every form up to :data:`ONE_CPU_LOOP_STEPS` when
    ``one_cpu`` (:func:`one_cpu_blocking`); GRAPH mode's loop compiles a training cell per optimizer, never cheaper.
    """
    if mode != "pynative":
        return True
    limit = ONE_CPU_LOOP_STEPS if one_cpu else (LOOP_STEPS if form == "experimental" else 0)
    return steps > limit


def _layout(plan: Plan, setup: MindSporeSetup, steps: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """Group rows and the data arrays, with held values (and NaN where a hyperparameter does not apply) filled in."""
    names = list(setup.groups)
    row = {n: i for i, n in enumerate(names)}
    data = {h: np.full((len(names), steps), np.nan) for h in scheduled_hypers(plan)}
    family = {g: setup.choices[s.optimizer].family for s in slots(plan, held=True) for g in [s.group]}
    for s in slots(plan, held=True):
        if (s.group, s.hyper) not in setup.holders:
            data[s.hyper][row[s.group]] = _held_value(setup, family[s.group], s.base)
    return names, data


def _fast(plan: Plan, steps: int, setup: MindSporeSetup, probes: dict[str, list[Any]],
          metrics: Sequence[float] | None, mode: str, backend: str) -> Trace:
    names, data = _layout(plan, setup, steps)
    row = {n: i for i, n in enumerate(names)}
    applied = np.zeros((len(names), steps))
    driver = setup.driver
    targets = [] if driver is None else list(driver.targets)
    # what the driver writes is known: its window, rounded to each target's dtype (MindSpore 2.10 reads a float64
    # 0-d Parameter assigned inside a graph while loop back as float32, measured); lr_scheduler values are read
    driven = {id(t): (j, np.float32 if t.dtype == ms.float32 else np.float64) for j, t in enumerate(targets)}
    known = [(key, driven[id(h.obj)]) for key, h in setup.holders.items() if h.kind == "param" and id(h.obj) in driven]
    watched = [(key, h.obj) for key, h in setup.holders.items() if h.kind == "param" and id(h.obj) not in driven]
    steppers = list(driver.steppers) if driver is not None else []
    compiled = [st for st in steppers if type(st.scheduler).__name__ in COMPILED_SCHEDULERS and not st.plateau]
    python = [st for st in steppers if st not in compiled]  # stepped from Python between calls
    per_call = math.gcd(*(st.every for st in python)) if python else min(steps, CHUNK)
    kind = Stepper if steps <= STEPPER_STEPS else Runner
    runner = kind(setup.optimizers, [probes[n][0] for n in names], targets, driver.clock if driver else None,
                  [p for _, p in watched], [st.scheduler for st in compiled], [st.every for st in compiled], per_call)
    if not python and reuse_enabled():  # lr_schedulers stepped from Python move this setup's Parameters
        runner = POOL.take(runner)
    k = 0
    while k < steps:
        n = min(per_call, steps - k)
        values = driver.window(k, n) if driver is not None and targets else np.zeros((0, n))
        for key, (j, dtype) in known:
            data[key[1]][row[key[0]], k:k + n] = values[j].astype(dtype)
        for key, h in setup.holders.items():  # lists and cells: read once per call
            v = _known(h, k, n)
            if v is not None:
                data[key[1]][row[key[0]], k:k + n] = v
        got, held = runner.run(k, n, values)
        applied[:, k:k + n] = got
        for j, (key, _) in enumerate(watched):
            data[key[1]][row[key[0]], k:k + n] = held[j]
        if driver is not None:
            driver.k = k + n - 1  # the runner wrote the values of every update it made
        for st in python:  # plateau metrics were given to the setup up front
            for u in range(k, k + n):
                if u + 1 < steps:
                    st.step(None)
        k += n
    for v in data.values():
        v[v == 0.0] = 0.0  # -0.0 from a zero lr reads as 0.0
    np.add(applied, 0.0, out=applied)
    nan_before_joins(plan, names, [*data.values(), applied])
    return Trace(tuple(names), data, backend, setup.fidelity, {"lr": applied})


def _loop(plan: Plan, steps: int, setup: MindSporeSetup, probes: dict[str, list[Any]],
          metrics: Sequence[float] | None, mode: str, backend: str) -> Trace:
    """One update at a time, as a training loop (the reference path the fast one is checked against)."""
    if mode == "pynative" and reuse_enabled():  # the optimizers' graphs of an earlier trace of this structure
        setup, probes = SETUPS.adopt(setup, probes)
    names, data = _layout(plan, setup, steps)
    row = {n: i for i, n in enumerate(names)}
    applied = np.zeros((len(names), steps))
    plist = [probes[n][0] for n in names]
    resets = _resets(plist)
    # one update of every optimizer: GRAPH mode's training cell, or PyNative's call with gradient 1
    if mode == "graph":
        updates = [nn.TrainOneStepCell(_ProbeSum(list(o.parameters)), o) for o in setup.optimizers]
    else:
        updates = [functools.partial(o, ms.mutable(tuple(Tensor(np.ones(1, np.float32)) for _ in o.parameters)))
                   for o in setup.optimizers]
    for key, h in setup.holders.items():
        v = _known(h, 0, steps)
        if v is not None:
            data[key[1]][row[key[0]]] = v
    params = [(key, h.obj) for key, h in setup.holders.items() if h.kind == "param"]
    for k in range(steps):
        for key, p in params:  # item(): the same value as asnumpy() without a numpy array (0.3 against 10 us)
            data[key[1]][row[key[0]], k] = float(p.item())
        for reset in resets:
            reset()
        for u in updates:
            u()
        for i, p in enumerate(plist):
            applied[i, k] = 0.0 - float(p.item())  # +0.0 for a zero lr
        if k + 1 < steps:
            setup.step()  # plateau metrics were given to the setup up front
    nan_before_joins(plan, names, [*data.values(), applied])
    return Trace(tuple(names), data, backend, setup.fidelity, {"lr": applied})


def _resets(plist: Sequence[Any]) -> list[Any]:
    """Per probe, a callable that writes 0 into it before an update (the loop reads every probe after each update,
    so no write can overtake a pending kernel).

    On the CPU a Tensor and its ``asnumpy()`` array share storage (documented: "Changes to self tensor will be
    reflected in the ndarray", and its example writes through the array): the write is a numpy store, 0.1 us
    against 27 us for an in-place ``copy_`` (measured, one core). A probe whose array does not take the write
    through (another device: a host copy) is reset with ``copy_``, the write ``ops.assign`` makes.
    """
    zero = Tensor(np.zeros(1, np.float32))
    out = []
    for p in plist:
        view = p.asnumpy()
        view[0] = 1.0
        if np.shares_memory(view, p.asnumpy()) and p.item() == 1.0:
            out.append(functools.partial(view.__setitem__, 0, 0.0))
        else:
            out.append(functools.partial(p.copy_, zero))
        out[-1]()
    return out


def trace_list(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, mode: str = "pynative",
               **options: Any) -> Trace:
    """Trace the list form: ``data`` = the list entries (driven Parameters where a list cannot hold the value),
    ``applied["lr"]`` = the parameter change of plain SGD with gradient 1 (probe reset to 0 before each step)."""
    return _trace(plan, steps, "list", metrics, mode, options)


def trace_cell(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, mode: str = "pynative",
               **options: Any) -> Trace:
    """Trace the cell form: ``data`` = each group's LearningRateSchedule at ``global_step=k``; ``applied`` as above."""
    return _trace(plan, steps, "cell", metrics, mode, options)


def trace_experimental(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, mode: str = "pynative",
                       **options: Any) -> Trace:
    """Trace the experimental form: ``data`` = each group's lr Parameter before update k; ``applied`` as above.

    Options: ``scheduler="native"`` (default) or ``"driver"``.
    """
    return _trace(plan, steps, "experimental", metrics, mode, options)

