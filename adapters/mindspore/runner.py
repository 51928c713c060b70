"""Many traced updates per compiled call: the fast path of the MindSpore trace backends.

A :class:`Runner` wraps a setup built over one float32 probe per group (plain SGD,
gradient 1) and runs ``n`` updates in one compiled MindSpore call (a ``while`` loop in
the graph). Per update, in order, exactly what a training step does with the setup:

1. the driver's values of that update go into their Parameters (``ops.assign``: the
   same write :meth:`~optbridge_adapters.mindspore.driver.Driver.step` makes, taken
   from the driver's value source window) and the clock moves to the update;
2. every watched Parameter (the group lrs experimental lr_schedulers move) is recorded:
   what the update will use, as the framework holds it (the driver's values are known
   from its window: MindSpore 2.10 reads a float64 0-d Parameter assigned inside a
   graph ``while`` loop back rounded to float32, measured, so they are not re-read in
   the graph; the kernels take float32 lrs, so the applied lr is unaffected);
3. the probes are reset to 0 and every optimizer is called with gradient 1 (its guard,
   lists, cells and kernel run as in training);
4. ``-probe`` is recorded: the lr the kernel applied, exactly ``float32(lr)``.

Experimental lr_schedulers step after the update that ends one of their steps: in the
graph, inside the loop, for the classes verified to step there as in Python
(:data:`COMPILED_SCHEDULERS`); the others from Python between calls of as many updates
as one scheduler step. Records are read once per call.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

__all__ = ["Runner", "Stepper", "STEPPER_STEPS", "COMPILED_SCHEDULERS"]

F32, F64, I32 = ms.float32, ms.float64, ms.int32
_IDS = itertools.count()

#: Experimental lr_scheduler classes whose ``step()`` compiled into a graph gives the values Python stepping
#: gives (tests/test_mindspore_trace.py checks each). SequentialLR compiled steps wrong values (measured),
#: CosineAnnealingWarmRestarts does not compile, LambdaLR / MultiplicativeLR call Python functions.
COMPILED_SCHEDULERS = ("ConstantLR", "LinearLR", "StepLR", "ExponentialLR", "MultiStepLR", "PolynomialLR",
                       "CosineAnnealingLR", "CyclicLR")


class Runner(nn.Cell):
    """``n`` traced updates per call (see the module docstring).

    Args:
        optimizers: The setup's (guarded) optimizers.
        probes: One float32 ``(1,)`` Parameter per group, in trace row order.
        targets: The driver's Parameters, in its slot order.
        clock: The driver's clock Parameter (None without a driver).
        watch: Parameters recorded before each update.
        schedulers: Experimental lr_schedulers stepped in the graph after the updates that end one of their steps.
        everies: Per scheduler, the updates per scheduler step (``steps_per_epoch`` on the epoch clock).
        chunk: The most updates per call.
    """

    def __init__(self, optimizers: Sequence[Any], probes: Sequence[Parameter], targets: Sequence[Parameter],
                 clock: Parameter | None, watch: Sequence[Parameter], schedulers: Sequence[Any],
                 everies: Sequence[int], chunk: int) -> None:
        super().__init__()
        self.opts = nn.CellList(list(optimizers))
        self.n_opts = len(optimizers)
        self.grads = tuple(tuple(Tensor(np.ones(tuple(p.shape), np.float32)) for p in o.parameters)
                           for o in optimizers)
        self.probes = ms.ParameterTuple(list(probes))
        self.n_probes = len(probes)
        self.targets = ms.ParameterTuple(list(targets)) if targets else ()
        self.n_targets = len(targets)
        self.has_clock = clock is not None
        self.clock = clock if clock is not None else Parameter(Tensor(0, I32), name="optbridge_runner_clock",
                                                               requires_grad=False)
        self.watch = ms.ParameterTuple(list(watch)) if watch else ()
        self.n_watch = len(watch)
        self.schedulers = tuple(schedulers)
        self.everies = tuple(int(e) for e in everies)
        self.n_sched = len(schedulers)
        self.zero = Tensor(np.zeros(1, np.float32))
        self.none = Tensor(np.zeros(1, np.float64))
        self.chunk = chunk
        n = next(_IDS)  # not id(self): a freed runner's id comes back
        self.applied = Parameter(Tensor(np.zeros((chunk, max(len(probes), 1)), np.float32)),
                                 name=f"optbridge_runner_applied_{n}", requires_grad=False)
        self.held = Parameter(Tensor(np.zeros((chunk, max(len(watch), 1)), np.float64)),
                              name=f"optbridge_runner_held_{n}", requires_grad=False)

    def _one(self, k, row):
        """Update ``k`` (``row``: the driver's values of it): returns ``(applied, held)`` of the update."""
        if self.n_targets:
            for j in range(self.n_targets):
                ops.assign(self.targets[j], ops.cast(row[j], self.targets[j].dtype))
        if self.has_clock:
            ops.assign(self.clock, k)
        held = self.none
        if self.n_watch:
            held = ops.stack([ops.cast(ops.reshape(self.watch[j], ()), F64) for j in range(self.n_watch)])
        for j in range(self.n_probes):
            ops.assign(self.probes[j], self.zero)
        for j in range(self.n_opts):
            self.opts[j](self.grads[j])
        applied = ops.concat([ops.neg(self.probes[j]) for j in range(self.n_probes)]) if self.n_probes else self.zero
        for j in range(self.n_sched):
            if self.everies[j] == 1:
                self.schedulers[j].step()
            elif (k + 1) % self.everies[j] == 0:
                self.schedulers[j].step()
        return applied, held

    def _update(self, i, k, values):
        applied, held = self._one(k, values[i])
        if self.n_watch:
            self.held[i] = held
        self.applied[i] = applied
        return i

    @ms.jit
    def construct(self, start, n, values):
        i = 0
        while i < n:
            self._update(i, start + i, values)
            i = i + 1
        return n

    def run(self, start: int, n: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Updates ``start .. start + n - 1`` (``values``: the driver's ``(targets, n)`` window).

        Returns:
            ``(applied, held)``: float64 ``(probes, n)`` and ``(watch, n)``.
        """
        v = np.zeros((self.chunk, max(self.n_targets, 1)))  # one shape for every call: one compilation
        if self.n_targets:
            v[:n] = values.T
        self(Tensor(start, I32), Tensor(n, I32), Tensor(v))
        applied = self.applied.asnumpy()[:n].T.astype(np.float64)
        held = self.held.asnumpy()[:n].T
        return applied, held


class Stepper(Runner):
    """One traced update per compiled call: the same update as :class:`Runner`'s, without the graph loop.

    Measured on the conformance cases (list form, 1-4 groups): this graph compiles in 0.15-0.4 s
    where the :class:`Runner`'s ``while`` loop takes ~0.45 s, and a call costs ~0.3 ms on an idle
    2-core machine (MindSpore overlaps the Python side and the kernels), ~1.1 ms on one core; so a
    400-update trace takes about half the Runner's time alone, about the same on a busy machine.
    Outside a loop MindSpore reads the watched float64 Parameters back exactly (inside one, rounded
    to float32: :class:`Runner`).
    """

    def __init__(self, optimizers: Sequence[Any], probes: Sequence[Parameter], targets: Sequence[Parameter],
                 clock: Parameter | None, watch: Sequence[Parameter], schedulers: Sequence[Any],
                 everies: Sequence[int], chunk: int) -> None:
        super().__init__(optimizers, probes, targets, clock, watch, schedulers, everies, 1)

    @ms.jit
    def construct(self, k, row):
        return self._one(k, row)

    def run(self, start: int, n: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Updates ``start .. start + n - 1``, one call each (see :meth:`Runner.run`)."""
        applied = np.zeros((self.n_probes, n))
        held = np.zeros((self.n_watch, n))
        row = np.zeros(max(self.n_targets, 1))
        for i in range(n):
            if self.n_targets:
                row[:] = values[:, i]
            a, h = self(Tensor(start + i, I32), Tensor(row))
            applied[:, i] = a.asnumpy()[:self.n_probes]
            if self.n_watch:
                held[:, i] = h.asnumpy()
        return applied, held


#: :func:`optbridge_adapters.mindspore.tracing` runs a trace of up to this many updates on a :class:`Stepper`
#: (cheaper to compile), longer ones on a :class:`Runner` (cheaper per update). Measured on 40 conformance
#: cases, list and cell forms, 400 updates: 13.5-17 s against 26-31 s on an idle 2-core machine; two such runs
#: side by side (each process then has one core): 28-30 s against 32-34 s.
STEPPER_STEPS = 400
