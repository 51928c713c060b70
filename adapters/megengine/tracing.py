"""The ``"megengine"`` trace backend, in this interpreter (imports megengine).

``optbridge.trace(plan, n, backend="megengine")`` lands here in the MegEngine
environment (elsewhere :mod:`.backend` runs it through the worker). It builds the
plan with :func:`~.build.build` (the same optimizers, schedulers and step guards as
:func:`~.build.to_megengine`) over one float32 probe parameter per group and steps
them as a training loop does. Per update ``k``:

1. ``Trace.data``: every scheduled hyperparameter is read from the MegEngine group
   dicts (what the framework holds before ``optimizer.step()``);
2. every real optimizer's ``step()`` runs (through its step guard: the horizon and
   the driver's position are checked, and MegEngine's own classes convert the
   group values to float32 tensors, optbridge's exact classes check them);
3. ``Trace.applied["lr"]``: a mirror plain SGD (no momentum, no weight decay) gets each
   group's lr and updates a probe with a one-hot gradient: element ``k mod W`` of the
   probe becomes exactly ``-float32(lr_k)`` and every other element is unchanged
   (``p - lr*0``), so the probes are read once every ``W`` updates instead of once per
   update. The mirror converts the lr as the group's optimizer does: :class:`ProbeSGD`
   (MegEngine's own SGD update at momentum 0 without weight decay, its lines:
   ``tensor(lr, dtype="float32")``, ``param -= lr * grad``) for groups of MegEngine's
   classes, optbridge's exact SGD for the others;
4. every scheduler steps (not after the last update).

By default (``updates=False``) the real optimizers' probes carry no gradient in
step 2: MegEngine then skips their tensor updates, whose results no trace reads
(a group's values are read from its dict, the applied lr from the mirror); this is
what keeps a 28-group AdamW trace within a few times torch's per-update cost.
``updates=True`` gives them gradient 1 and clips, as a training loop would: the
trace is the same (``tests_megengine/test_mge_schedules.py`` checks every case).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import megengine as mge
import megengine.optimizer as mopt
import numpy as np
from megengine import tensor

from optbridge import ir
from optbridge.errors import ConfigError, EvaluationError
from optbridge.plan import Plan, hyper_base, scheduled_hypers
from optbridge.slots import applies, hyper_key, schedule_path
from optbridge.source import CHUNK
from optbridge.tracing import Trace, nan_before_joins

from . import optimizers as exact
from .build import BACKEND, build, setup_of
from .driver import check_metrics

__all__ = ["trace", "WINDOW", "ProbeSGD"]

#: Updates recorded in the mirror probes between two reads.
WINDOW = 256
_OPTIONS = ("native", "chunk", "split_nesterov", "optimizer", "updates")


class ProbeSGD(mopt.Optimizer):
    """Plain SGD as MegEngine's own ``SGD._updates`` computes it at momentum 0 without weight decay.

    The same lines (``megengine/optimizer/sgd.py``): the group's lr converted with
    ``tensor(lr, dtype="float32")`` and ``param -= lr * grad``, without MegEngine SGD's
    conversions of the momentum and weight decay it would not use: the trace's mirror
    for groups of MegEngine's own classes (``test_mge_schedules.py`` checks it against
    ``megengine.optimizer.SGD`` bit for bit).
    """

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr})
        self._disable_type_convert = True

    def _create_state(self, param_group: dict[str, Any]) -> None:
        pass

    def _updates(self, param_group: dict[str, Any]) -> None:
        _lr = tensor(param_group["lr"], dtype="float32")
        for param in param_group["params"]:
            if param.grad is not None:
                param -= _lr * param.grad


def trace(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, **options: Any) -> Trace:
    """The MegEngine trace (docs/adapters.md, rule 4; the module docstring says what is measured).

    Args:
        plan: The plan.
        steps: Updates to trace.
        metrics: Plateau metrics, one per plateau step.
        **options: ``native`` (MegEngine's MultiStepLR where exact, default True),
            ``chunk`` (updates the drivers evaluate at once), ``split_nesterov``,
            ``optimizer`` (``"auto"`` | ``"native"`` | ``"exact"``, as for
            :func:`~.build.to_megengine`), ``updates`` (run the real optimizers'
            tensor updates too, default False).

    Raises:
        ConfigError: a bad argument or option.
        EvaluationError: a schedule has no value at some update (``PastHorizon``).
        UnsupportedError: the plan has no exact MegEngine form.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError("options", "are not options of the megengine backend (it takes " + ", ".join(_OPTIONS) + ")",
                          unknown)
    native, updates = options.get("native", True), options.get("updates", False)
    split_nesterov = options.get("split_nesterov", True)
    for name, v in (("native", native), ("updates", updates), ("split_nesterov", split_nesterov)):
        if not isinstance(v, bool):
            raise ConfigError(f"options.{name}", "must be true or false", v)
    chunk = options.get("chunk", CHUNK)
    if not isinstance(plan, Plan):
        raise ConfigError("plan", "must be an optbridge Plan (optbridge.load)", type(plan).__name__)
    steps = ir.check_int("steps", steps, minimum=1)
    if plan.total_steps is not None and steps > plan.total_steps:
        raise EvaluationError(f"the plan is defined for {plan.total_steps} steps (total_steps), {steps} were asked for")
    groups = [g for g in plan.groups if g.frozen != "exclude"]
    if not groups:
        raise ConfigError("groups", "every group is frozen: exclude, so there is nothing to trace", [])
    checked = check_metrics("metrics", metrics)
    bounded = dataclasses.replace(plan, total_steps=steps)  # the horizon: the guards refuse later updates
    probes = {g.name: [mge.Parameter(np.zeros(1, np.float32))] for g in groups}
    built, fid = build(bounded, probes, metrics=checked, native=native, split_nesterov=split_nesterov,
                       optimizer=options.get("optimizer", "auto"), chunk=chunk)
    setup = setup_of(bounded, built, fid, ())

    # the mirror: plain SGD of the same family as each group's optimizer, lr copied from the real group
    exact_groups = {g.name for b in built if b.part.choice.exact for g in b.part.groups}
    width = min(WINDOW, steps)
    mprobes = [mge.Parameter(np.zeros(width, np.float32)) for _ in groups]
    families: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for g, q in zip(groups, mprobes):
        families[g.name in exact_groups].append({"params": [q], "name": g.name, "lr": 0.0})
    mirrors = [cls(gds, lr=0.0) for cls, gds in ((exact.SGD, families[True]), (ProbeSGD, families[False])) if gds]
    mirror_group = {gd["name"]: gd for m in mirrors for gd in m.param_groups}
    pairs = [(mirror_group[g.name], setup.param_group(g.name)) for g in groups]
    onehot = [mge.tensor(row) for row in np.eye(width, dtype=np.float32)]
    zeros = np.zeros(width, np.float32)

    hypers = scheduled_hypers(plan)
    data = {h: np.full((len(groups), steps), np.nan) for h in hypers}
    readers: list[tuple[np.ndarray, dict[str, Any], str, int | None]] = []
    for row, g in enumerate(groups):
        gd = setup.param_group(g.name)
        for h in hypers:
            if not applies(plan, g, h):
                continue  # NaN: the group's optimizer has no such hyperparameter
            key, pos = hyper_key(h)
            if key in gd:
                readers.append((data[h][row], gd, key, pos))
            else:  # a torch option MegEngine's own class does not read, held at its base here
                data[h][row, :] = hyper_base(plan, g, h, path=schedule_path(g, h))
    applied = np.empty((len(groups), steps))
    real = [p for g in groups for p in probes[g.name]]
    one = mge.tensor(np.ones(1, np.float32))
    optimizers, schedulers = setup.optimizers, setup.schedulers
    for k in range(steps):
        j = k % width
        for arr, gd, key, pos in readers:
            v = gd[key]
            arr[k] = v if pos is None else v[pos]
        for mg, rg in pairs:
            mg["lr"] = rg["lr"]
        if updates:
            for p in real:
                p.grad = one
            setup.clip_gradients()
        for o in optimizers:
            o.step()
        grad = onehot[j]
        for q in mprobes:
            q.grad = grad
        for m in mirrors:
            m.step()
        if j == width - 1 or k == steps - 1:
            lo = k - j
            for r, q in enumerate(mprobes):
                applied[r, lo:k + 1] = 0.0 - q.numpy()[:j + 1]
                q._reset(mge.Tensor(zeros))
        if k + 1 < steps:
            for s in schedulers:
                s.step()
    nan_before_joins(plan, [g.name for g in groups], [*data.values(), applied])
    return Trace(tuple(g.name for g in groups), data, BACKEND, tuple(fid), {"lr": applied})
