"""The recorder: a hand-driven torch training loop's hyperparameters, run without training, as a plan.

``record(optimizer, steps, ...)`` runs the caller's real optimizer, schedulers and
lr code for ``steps`` updates **without updating any parameter** and returns the
plan of what every update would have used::

    plan = optbridge.record(optimizer, 600_000, before_step=lambda it, opt: set_lr(opt, get_lr(it)))

How it runs: before each update it calls ``on_epoch_start(epoch, optimizer)`` at the
first update of an epoch and ``before_step(step, optimizer)``, reads every group's
lr, momentum, betas and weight decay, marks the optimizer as stepped the way torch's
scheduler wrapper does (``optimizer._opt_called``, the only thing schedulers read
from an update), and steps the schedulers as the loop would: iteration schedulers
after every update, epoch schedulers after an epoch's last update, in list order, a
ReduceLROnPlateau with ``metrics[j]`` at its ``j``-th step. ``optimizer.step()``
itself is never called. Afterwards everything is put back: the param groups (values
filled in place into tensor lrs included; groups added during the run removed), the
schedulers' state, ``_opt_called``, and the model's ``requires_grad`` and training
flags, so the caller's state dicts are what they were.

The recorded series (float64 arrays of ``(steps, groups)`` per hyperparameter,
memory-mapped to a temporary file past :data:`MEMMAP_BYTES`) are turned into nodes
by :func:`optbridge.recover.recover_groups` (closed forms where they reproduce the
series at 1e-12 relative at every step, tables elsewhere), and the plan is verified
against the recording with the reference evaluator before it is returned. A group
added during the run gets ``start_step`` (the update it joined at) and a schedule on
the plan's clock; traces hold NaN before it.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from optbridge import ir
from optbridge.errors import ConfigError, OptbridgeError
from optbridge.ir import FrozenMap
from optbridge.plan import Group, OptimizerSpec, Plan
from optbridge.recover import recover, recover_groups

from .groups import GroupInfo, optimizer_options, optimizer_type, read_groups, select
from .schedulers import is_plateau, pairs

__all__ = ["record", "replay", "Recording", "RTOL", "MEMMAP_BYTES"]

#: Relative tolerance of the recovered plan at every recorded update (exact zeros stay exact).
RTOL = 1e-12
#: Recordings larger than this (bytes per hyperparameter) go to a temporary memory-mapped file.
MEMMAP_BYTES = 1 << 28
#: Hyperparameters recorded: ``plan name -> (group key, tuple position)``.
HYPERS: dict[str, tuple[str, int | None]] = {"lr": ("lr", None), "momentum": ("momentum", None),
                                             "beta1": ("betas", 0), "beta2": ("betas", 1),
                                             "weight_decay": ("weight_decay", None)}


class RecordError(OptbridgeError, RuntimeError):
    """The user's loop code or a scheduler raised while being recorded (the message names the update)."""


# --------------------------------------------------------------------------- putting things back

class _Saved:
    """Everything a recording may touch, to put back afterwards."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedulers: Sequence[Any], model: Any) -> None:
        self.opt = optimizer
        self.groups = [(g, dict(g), {k: v.detach().clone() for k, v in g.items() if isinstance(v, torch.Tensor)})
                       for g in optimizer.param_groups]
        self.defaults = dict(optimizer.defaults)
        self.opt_called = optimizer.__dict__.get("_opt_called", _MISSING)
        self.scheds = [(s, _sched_state(s, optimizer)) for s in schedulers]
        self.model = model if isinstance(model, torch.nn.Module) else None
        self.flags = [] if self.model is None else [(p, p.requires_grad) for p in self.model.parameters()]
        self.modes = [] if self.model is None else [(m, m.training) for m in self.model.modules()]

    def restore(self) -> None:
        self.opt.param_groups[:] = [g for g, _, _ in self.groups]
        for g, items, tensors in self.groups:
            g.clear()
            g.update(items)
            for k, v in tensors.items():
                with torch.no_grad():
                    items[k].copy_(v)  # a tensor lr is filled in place: same object, old value
        self.opt.defaults.clear()
        self.opt.defaults.update(self.defaults)
        if self.opt_called is _MISSING:
            self.opt.__dict__.pop("_opt_called", None)
        else:
            self.opt._opt_called = self.opt_called  # type: ignore[attr-defined]  # torch's own flag
        for s, state in self.scheds:
            _load_sched_state(s, state)
        for p, flag in self.flags:
            p.requires_grad_(flag)
        for m, mode in self.modes:
            m.training = mode


_MISSING = object()


def _sched_state(s: Any, optimizer: torch.optim.Optimizer) -> Any:
    if callable(getattr(s, "state_dict", None)) and callable(getattr(s, "load_state_dict", None)):
        return ("state_dict", copy.deepcopy(s.state_dict()))
    memo = {id(optimizer): optimizer}
    return ("dict", copy.deepcopy(vars(s), memo))


def _load_sched_state(s: Any, state: Any) -> None:
    how, value = state
    if how == "state_dict":
        s.load_state_dict(copy.deepcopy(value))
    else:
        s.__dict__.clear()
        s.__dict__.update(value)


# --------------------------------------------------------------------------- recording

@dataclass
class Recording:
    """What a run recorded, before it becomes a plan.

    Attributes:
        steps: Updates recorded.
        values: ``hyper -> (steps, groups)`` float64 (NaN where a group has no such value or has
            not joined yet).
        groups: Every group dict seen, in order (later ones joined during the run).
        starts: The update each group joined at.
        configured: Each group's values when it was first seen, before the loop's code ran
            (the bases its schedules scale).
    """

    steps: int
    values: dict[str, np.ndarray]
    groups: list[dict[str, Any]]
    starts: list[int]
    configured: list[dict[str, float]]
    _files: list[Any] = field(default_factory=list)


def _buffer(steps: int, cols: int, files: list[Any]) -> np.ndarray:
    if steps * cols * 8 <= MEMMAP_BYTES:
        return np.full((steps, cols), np.nan)
    f = tempfile.TemporaryFile()
    files.append(f)
    out = np.memmap(f, dtype=np.float64, mode="w+", shape=(steps, cols))
    out[:] = np.nan
    return out


def _configured(g: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for h, (key, pos) in HYPERS.items():
        if key in g:
            v = g["initial_lr"] if h == "lr" and "initial_lr" in g else g[key]
            out[h] = float(v[pos] if pos is not None else v)
    return out


def replay(optimizer: torch.optim.Optimizer, steps: int, entries: Sequence[tuple[Any, str]], *,
           before_step: Callable[[int, Any], Any] | None = None,
           on_epoch_start: Callable[[int, Any], Any] | None = None, steps_per_epoch: int = 1,
           metrics: Sequence[float] | None = None, offset: int = 0, model: Any = None) -> Recording:
    """Run the loop ``steps`` updates without updating parameters; record and put everything back.

    Args:
        optimizer: The live optimizer.
        steps: Updates to record.
        entries: ``(scheduler, "iter" | "epoch")`` in stepping order.
        before_step: ``before_step(step, optimizer)`` before each update.
        on_epoch_start: ``on_epoch_start(epoch, optimizer)`` before an epoch's first update.
        steps_per_epoch: Updates per epoch.
        metrics: One per plateau step (of any ReduceLROnPlateau in ``entries``).
        offset: Updates already done in the current epoch (the epoch schedulers' next step
            comes after ``steps_per_epoch - offset`` updates).
        model: The model whose flags the loop's code may change (put back afterwards).

    Raises:
        RecordError: the loop's code or a scheduler raised (the message names the update).
        ConfigError: a plateau step without its metric.
    """
    saved = _Saved(optimizer, [s for s, _ in entries], model)
    files: list[Any] = []
    try:
        return _run(optimizer, steps, entries, before_step, on_epoch_start, steps_per_epoch, metrics, offset, files)
    finally:
        saved.restore()


def _run(optimizer: torch.optim.Optimizer, steps: int, entries: Sequence[tuple[Any, str]],
         before_step: Callable[[int, Any], Any] | None, on_epoch_start: Callable[[int, Any], Any] | None,
         spe: int, metrics: Sequence[float] | None, offset: int, files: list[Any]) -> Recording:
    pg = optimizer.param_groups
    groups: list[dict[str, Any]] = []
    starts: list[int] = []
    configured: list[dict[str, float]] = []
    cap = len(pg)
    bufs: dict[str, np.ndarray] = {}  # only for the hyperparameters some group has
    used = 0  # plateau metrics consumed
    readers: list[tuple[np.ndarray, Any, list[dict[str, Any]], str, int | None]] = []

    def take(k: int) -> None:
        nonlocal cap, bufs, readers
        if len(pg) == len(groups):
            return
        for g in pg[len(groups):]:
            groups.append(g)
            starts.append(k)
            configured.append(_configured(g))
        if len(groups) > cap:  # groups joined: room for twice as many
            cap = 2 * len(groups)
            grown = {h: _buffer(steps, cap, files) for h in bufs}
            for h, b in bufs.items():
                grown[h][:, :b.shape[1]] = b
            bufs = grown
        readers = []  # per hyperparameter: the groups that have it, and where their column is
        for h, (key, pos) in HYPERS.items():
            cols = [i for i, g in enumerate(groups) if key in g]
            if cols:
                if h not in bufs:
                    bufs[h] = _buffer(steps, cap, files)
                where: Any = slice(cols[0], cols[-1] + 1) if cols == list(range(cols[0], cols[-1] + 1)) else cols
                readers.append((bufs[h], where, [groups[i] for i in cols], key, pos))

    def call(f: Callable[[int, Any], Any], arg: int, what: str, k: int) -> None:
        try:
            f(arg, optimizer)
        except OptbridgeError:
            raise
        except Exception as e:  # the user's code
            raise RecordError(f"update {k}: {what}({arg}, optimizer) raised {type(e).__name__}: {e}") from e

    take(0)
    if not readers:
        raise ConfigError("optimizer", "has no param groups to record", 0)
    for k in range(steps):
        if on_epoch_start is not None and (k + offset) % spe == 0:
            call(on_epoch_start, (k + offset) // spe, "on_epoch_start", k)
        take(k)
        if before_step is not None:
            call(before_step, k, "before_step", k)
        take(k)
        if len(pg) < len(groups) or any(a is not b for a, b in zip(pg, groups, strict=False)):
            raise RecordError(f"update {k}: param groups were removed or replaced during the run (only "
                              "add_param_group is recorded)")
        for buf, where, gs, key, pos in readers:
            try:
                buf[k, where] = [float(g[key]) for g in gs] if pos is None else [float(g[key][pos]) for g in gs]
            except (TypeError, ValueError, IndexError, KeyError) as e:
                raise RecordError(f"update {k}: a param group's {key} is not a number ({type(e).__name__}: {e})"
                                  ) from None
        optimizer._opt_called = True  # type: ignore[attr-defined]  # what torch's step wrapper sets
        if k == steps - 1:
            break  # nothing after the last update is used: torch's functions are never asked for it
        end_of_epoch = (k + offset + 1) % spe == 0
        for s, unit in entries:
            if unit == "epoch" and not end_of_epoch:
                continue
            try:
                if is_plateau(s):
                    if metrics is None or used >= len(metrics):
                        raise ConfigError("metrics", f"needs a value for the ReduceLROnPlateau step after update "
                                          f"{k} (plateau step {used + 1}), got "
                                          f"{0 if metrics is None else len(metrics)} metrics", None,
                                          show_value=False)
                    s.step(metrics[used])
                else:
                    s.step()
            except OptbridgeError:
                raise
            except Exception as e:  # torch's or the user's scheduler
                raise RecordError(f"update {k}: {type(s).__name__}.step() after it raised {type(e).__name__}: {e}"
                                  ) from e
        if any(is_plateau(s) for s, unit in entries if unit == "iter" or end_of_epoch):
            used += 1
    n = len(groups)
    return Recording(steps, {h: b[:, :n] for h, b in bufs.items()}, groups, starts, configured, files)


# --------------------------------------------------------------------------- recording -> plan

def _recover_hyper(rec: Recording, h: str, spe: int | None) -> list[tuple[ir.Node | None, float] | None]:
    """Per group: ``(node or None when held, base)``, or None where the group has no ``h``."""
    Y = rec.values[h]
    out: list[tuple[ir.Node | None, float] | None] = [None] * len(rec.groups)
    early = [i for i, s in enumerate(rec.starts) if s == 0 and not np.isnan(Y[0, i])]
    moving = []
    for i in early:
        col = Y[:, i]
        if np.all(col == col[0]):
            out[i] = (None, float(col[0]))
        else:
            moving.append(i)
    if moving:
        bases = [_base(rec.configured[i].get(h), Y[:, i]) for i in moving]
        res = recover_groups(np.ascontiguousarray(Y[:, moving].T),
                             bases=bases,  # None: that row's peak
                             steps_per_epoch=spe, rtol=RTOL, ptol=0.0)
        for i, r in zip(moving, res, strict=True):
            out[i] = (r.node, r.base)
    for i, s in enumerate(rec.starts):
        if s == 0 or np.isnan(Y[s, i]):
            continue
        col = np.ascontiguousarray(Y[s:, i])
        if np.all(col == col[0]):
            out[i] = (None, float(col[0]))
            continue
        aligned = spe if spe is not None and s % spe == 0 else None
        r = recover(col, base=_base(rec.configured[i].get(h), col), steps_per_epoch=aligned, rtol=RTOL, ptol=0.0)
        out[i] = (ir.Sequence(parts=(ir.Constant(), r.node), boundaries=(s,), unit="iter"), r.base)
    return out


def _base(configured: float | None, col: np.ndarray) -> float | None:
    """The base the recovered nodes scale: the configured value when the series takes it (1e-12), else its peak.

    A schedule usually starts from, or reaches, the group's configured value (nanoGPT's
    lr, a LambdaLR's ``initial_lr``); a loop that scales every group's value on the way
    (MAE's ``lr_scale``) never takes it, and nodes relative to the series' own peak
    read better there (a cosine from the peak instead of a lambda).
    """
    if configured is None or configured == 0.0 or not np.any(np.abs(col - configured) <= RTOL * abs(configured)):
        return None
    return configured


def to_plan(rec: Recording, optimizer: torch.optim.Optimizer, *, model: Any = None,
            steps_per_epoch: int | None = None) -> Plan:
    """The plan of a recording: groups as :mod:`.groups` reads them, schedules recovered from the values."""
    otype = optimizer_type(optimizer)
    defaults = optimizer_options(optimizer)
    infos = read_groups(optimizer, defaults, rec.groups)
    excluded = select(infos, model) if model is not None else None
    per_hyper = {h: _recover_hyper(rec, h, steps_per_epoch) for h in HYPERS
                 if h in rec.values and not np.all(np.isnan(rec.values[h]))}
    sched: dict[str, list[ir.Node | None]] = {}
    for h, cols in per_hyper.items():
        key, pos = HYPERS[h]
        nodes: list[ir.Node | None] = []
        for i, item in enumerate(cols):
            if item is None:
                nodes.append(None)
                continue
            node, base = item
            _set_option(infos[i], defaults, key, pos, base)
            nodes.append(node)
        sched[h] = nodes
    plan_sched: dict[str, ir.Node] = {}
    group_sched: list[dict[str, ir.Node]] = [{} for _ in infos]
    for h, nodes in sched.items():
        have = [n for n, c in zip(nodes, per_hyper[h], strict=True) if c is not None]
        if have and all(n == have[0] for n in have) and len(have) == len(nodes):
            if have[0] is not None:
                plan_sched[h] = have[0]
            continue
        for i, n in enumerate(nodes):
            if n is not None:
                group_sched[i][h] = n
    out_groups = []
    for i, info in enumerate(infos):
        opts = dict(info.options)
        if rec.starts[i]:
            opts["start_step"] = rec.starts[i]
        if info.empty:
            opts["empty"] = True
        out_groups.append(Group(name=info.name, select=info.select, options=FrozenMap(opts),
                                schedule=FrozenMap(group_sched[i])))
    if excluded is not None:
        out_groups.append(excluded)
    spec = OptimizerSpec(type=otype, options=FrozenMap(defaults), groups=tuple(out_groups))
    return Plan(optimizers=(spec,), schedule=FrozenMap(plan_sched), step_unit="iter", steps_per_epoch=steps_per_epoch,
                total_steps=rec.steps)


def _set_option(info: GroupInfo, defaults: dict[str, Any], key: str, pos: int | None, value: float) -> None:
    """Set a group option to the base (or held value) of a recorded hyperparameter, if it differs."""
    cur = info.options.get(key, defaults.get(key))
    if pos is None:
        if key == "lr" or cur != value:
            info.options[key] = value
        return
    pair = list(cur)
    if pair[pos] != value:
        pair[pos] = value
        info.options[key] = pair


def verify(plan: Plan, rec: Recording, *, chunk: int = 1 << 16) -> None:
    """The plan's reference trace must equal the recording (1e-12 relative, NaN where nothing was recorded).

    Raises:
        OptbridgeError: a mismatch (a bug: every node was verified when it was recovered).
    """
    from optbridge.tracing import reference_trace
    for lo in range(0, rec.steps, chunk):
        n = min(chunk, rec.steps - lo)
        tr = reference_trace(plan, n, start=lo)
        for h in tr:
            got = tr[h].T
            want = rec.values[h][lo:lo + n] if h in rec.values else None
            if want is None:
                continue
            want = np.asarray(want)
            bad = ~((np.abs(got - want) <= RTOL * np.abs(want)) | (np.isnan(got) & np.isnan(want)))
            if bad.any():
                k, g = (int(x) for x in np.argwhere(bad)[0])
                raise OptbridgeError(f"the recorded plan gives {got[k, g]!r} for {h} of group {g} at update "
                                     f"{lo + k}, the recording {want[k, g]!r}: this is a bug in optbridge")


# --------------------------------------------------------------------------- entry point

def record(optimizer: torch.optim.Optimizer, steps: int, *, model: Any = None, schedulers: Any = None,
           before_step: Callable[[int, Any], Any] | None = None,
           on_epoch_start: Callable[[int, Any], Any] | None = None, step_unit: str = "iter",
           steps_per_epoch: int | None = None, metrics: Sequence[float] | None = None) -> Plan:
    """The plan of a hand-driven training loop, recorded without training (see the module docstring).

    Args:
        optimizer: The live torch optimizer (left as it was).
        steps: Updates to record (the plan's ``total_steps``).
        model: The module whose parameter names the groups select (readable selectors).
        schedulers: A scheduler or a list of ``(scheduler, "iter" | "epoch")`` pairs (or
            schedulers, each counting ``step_unit``): iteration schedulers step after every
            update, epoch schedulers after an epoch's last update, in list order.
        before_step: ``before_step(step, optimizer)``: the loop's own code before each update
            (writing ``group["lr"]``, momentum, weight decay, ...).
        on_epoch_start: ``on_epoch_start(epoch, optimizer)`` before an epoch's first update
            (it may add param groups: they join the plan with ``start_step``).
        step_unit: What a scheduler given without a unit counts.
        steps_per_epoch: Updates per epoch (default 1 when something runs per epoch).
        metrics: The metric of each ReduceLROnPlateau step, in order.

    Returns:
        A plan whose reference trace equals every group's recorded lr, momentum, betas and
        weight decay at every update (1e-12 relative), with closed forms where they are exact.

    Raises:
        ConfigError: bad arguments, or a plateau step without its metric.
        RecordError: the loop's code or a scheduler raised.
    """
    optimizer_type(optimizer)
    steps = ir.check_int("steps", steps, minimum=1)
    ir.check_choice("step_unit", step_unit, ir.UNITS)
    entries = pairs(schedulers, step_unit)
    for i, (s, _) in enumerate(entries):
        if not callable(getattr(s, "step", None)):
            raise ConfigError(f"schedulers[{i}]", "must be a scheduler (an object with step())", type(s).__name__)
        if getattr(s, "optimizer", optimizer) is not optimizer:
            raise ConfigError(f"schedulers[{i}]", "drives another optimizer than the one given", type(s).__name__)
    for name, f in (("before_step", before_step), ("on_epoch_start", on_epoch_start)):
        if f is not None and not callable(f):
            raise ConfigError(name, "must be a function (step or epoch, optimizer)", type(f).__name__)
    spe = None if steps_per_epoch is None else ir.check_int("steps_per_epoch", steps_per_epoch, minimum=1)
    if metrics is not None:
        if isinstance(metrics, str | bytes) or not hasattr(metrics, "__iter__"):
            raise ConfigError("metrics", "must be a sequence of numbers (one per plateau step)", type(metrics).__name__)
        metrics = [ir.check_real(f"metrics[{i}]", m.item() if hasattr(m, "item") else m)
                   for i, m in enumerate(metrics)]
    rec = replay(optimizer, steps, entries, before_step=before_step, on_epoch_start=on_epoch_start,
                 steps_per_epoch=spe or 1, metrics=metrics, model=model)
    plan = to_plan(rec, optimizer, model=model, steps_per_epoch=spe)
    verify(plan, rec)
    return plan
