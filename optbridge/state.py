"""Optimizer state between frameworks: one neutral form, checked conversions, an interchange file.

A resumed run needs more than the plan: the optimizer's state (momentum buffers,
Adam moments, step counts, NAdam's ``mu_product``) and where the schedule stands.
This module holds them in one framework-neutral form, :class:`OptimizerState`, in
**torch's vocabulary**: the optimizer is named by its torch class (``"AdamW"``), each
parameter's state by torch's names (``exp_avg``, ``step``, ...) with torch's meaning
(a parameter that was never updated has no state; SGD's ``momentum_buffer`` is absent
until the first update with momentum). Arrays are numpy (float32 as the frameworks
keep them), so the core runs in any environment; the framework readers and writers
live in ``optbridge_adapters.<framework>.state``.

The pieces:

* :func:`read_state` -- a live optimizer (torch, MindSpore, MegEngine), or a saved
  ``state_dict()`` / checkpoint interpreted against it, to an :class:`OptimizerState`
  (with the schedule position when a driver is given);
* :func:`convert_state` -- an :class:`OptimizerState` (or a saved file) into a live
  optimizer of any framework: parameter names mapped by :func:`optbridge.names.map_names`
  (with the known reshapes), the state checked against the target optimizer's type
  and options, written in the target's own format and loaded; returns a
  :class:`Converted` report (the native state object, the name map, notes);
* :func:`save_state` / :func:`load_state` -- the interchange file: one zip (``.npz``)
  holding ``manifest.json`` and one ``.npy`` per array, read with
  ``allow_pickle=False`` (loading never executes code). Either Python environment
  writes and reads it: this is how state crosses to MegEngine's Python 3.10 env.

Refusals are :class:`~optbridge.errors.ConfigError` s naming the parameter and state:
another optimizer type, a moment the target needs that the source lacks (amsgrad's
``max_exp_avg_sq``), a state the target cannot hold (MindSpore's
``nn.AdamWeightDecay`` keeps no step count) unless ``lossy=True`` -- and then every
loss is listed in :attr:`Converted.notes` -- and shapes that no known reshape relates.
docs/state.md has the formats and the measured bounds.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import ConfigError
from .ir import FrozenMap
from .names import NameMap, Overrides, map_names
from .params import ParamRecord

__all__ = ["saved_joins", "TENSOR_STATES", "SCALAR_STATES", "KINDS", "ParamState", "SchedulePosition", "OptimizerState",
           "TargetParam", "Converted", "read_state", "convert_state", "save_state", "load_state", "remap",
           "fit_state", "required_states", "framework_of", "read_position", "apply_position", "single_step",
           "float32_power", "FORMAT", "VERSION"]


def saved_joins(current: int, saved: Sequence[Mapping[str, Any]], pending: Sequence[int]) -> int:
    """How many of an optimizer's groups that join later a saved optimizer state already holds.

    The state's ``param_groups`` (``saved``) were saved after some late groups joined; the optimizer
    now has ``current`` groups, and ``pending`` lists the parameter count of each group still to
    join, in the order they join. Returns the number to add before loading: the extra saved
    groups when they are exactly the next pending ones (as many, with as many parameters each),
    else 0 (nothing changes, and the framework refuses the state itself).
    """
    extra = list(saved[current:])
    if len(extra) > len(pending) or any(len(g.get("params", ())) != n for g, n in zip(extra, pending)):
        return 0
    return len(extra)

FORMAT = "optbridge-state"
VERSION = 1

#: torch optimizer -> its per-parameter tensor states (torch's names), in torch's order.
TENSOR_STATES: Mapping[str, tuple[str, ...]] = FrozenMap({
    "SGD": ("momentum_buffer",),
    "Adam": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "AdamW": ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    "RMSprop": ("square_avg", "momentum_buffer", "grad_avg"),
    "Adagrad": ("sum",),
    "Adadelta": ("square_avg", "acc_delta"),
    "Adamax": ("exp_avg", "exp_inf"),
    "NAdam": ("exp_avg", "exp_avg_sq"),
    "RAdam": ("exp_avg", "exp_avg_sq"),
})

#: torch optimizer -> its per-parameter scalar states (torch's 0-d float32 tensors).
SCALAR_STATES: Mapping[str, tuple[str, ...]] = FrozenMap({
    "SGD": (), "Adam": ("step",), "AdamW": ("step",), "RMSprop": ("step",), "Adagrad": ("step",),
    "Adadelta": ("step",), "Adamax": ("step",), "NAdam": ("step", "mu_product"), "RAdam": ("step",),
})

#: The optimizers whose state converts (torch's class names).
KINDS: tuple[str, ...] = tuple(TENSOR_STATES)

_FRAMEWORKS = ("torch", "mindspore", "megengine")


def _f32(x: float) -> float:
    return float(np.float32(x))


# --------------------------------------------------------------------------- the neutral form

@dataclass(frozen=True, eq=False)
class ParamState:
    """One parameter's optimizer state, in torch's names and meaning (compared by identity: it holds arrays).

    Attributes:
        name: The parameter's name in its framework (``"features.0.weight"``).
        shape: Its shape there.
        group: Index of its param group.
        module_type: Class name of the layer that owns it (for name mapping; ``""`` unknown).
        values: ``state name -> numpy array`` (tensors with the parameter's shape; ``step``
            and ``mu_product`` 0-d float32). Empty: never updated (torch keeps no entry).
    """

    name: str
    shape: tuple[int, ...]
    group: int
    module_type: str = ""
    values: Mapping[str, np.ndarray] = field(default_factory=FrozenMap)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "values", FrozenMap(self.values))

    @property
    def record(self) -> ParamRecord:
        """The parameter as :func:`optbridge.names.map_names` sees it."""
        return ParamRecord(self.name, self.shape, self.module_type)

    @property
    def step(self) -> float | None:
        """The step count, or None when the optimizer keeps none (SGD) or the parameter has no state."""
        v = self.values.get("step")
        return None if v is None else float(v)


@dataclass(frozen=True)
class SchedulePosition:
    """Where the schedule stands: what the plan's drivers store, framework-neutral.

    Attributes:
        update: Updates done (= the index of the next update, the driver's step counter).
        metrics: Plateau metrics given so far (the reference evaluator recomputes the
            plateau's best, bad steps and cooldown from them exactly).
        fingerprint: :func:`optbridge.slots.fingerprint` of the driver's slots and clock
            (the same for the same plan in every framework); the target driver refuses
            another plan's position.
        plateau: A native ReduceLROnPlateau's own counters when no metric history
            exists: ``{"best", "num_bad_epochs", "cooldown_counter", "last_epoch",
            "last_lr"}`` (``last_lr``: the lrs it reduced to, one per group: torch keeps
            them in the optimizer's groups).
    """

    update: int
    metrics: tuple[float, ...] = ()
    fingerprint: str | None = None
    plateau: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.update, bool) or not isinstance(self.update, (int, np.integer)) or self.update < 0:
            raise ConfigError("position.update", "must be an integer >= 0 (updates done)", self.update)
        object.__setattr__(self, "update", int(self.update))
        try:
            ms = tuple(float(m) for m in self.metrics)
        except (TypeError, ValueError):
            raise ConfigError("position.metrics", "must be a list of numbers", self.metrics) from None
        object.__setattr__(self, "metrics", ms)
        if self.plateau is not None:
            try:
                pl = {str(k): (tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v))
                      for k, v in self.plateau.items()}
            except (TypeError, ValueError):
                raise ConfigError("position.plateau", "must map counter names to numbers", self.plateau) from None
            object.__setattr__(self, "plateau", FrozenMap(pl))

    def epoch(self, steps_per_epoch: int) -> int:
        """The epoch the next update belongs to."""
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ConfigError("steps_per_epoch", "must be a positive integer", steps_per_epoch)
        return self.update // steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return {"update": self.update, "metrics": list(self.metrics), "fingerprint": self.fingerprint,
                "plateau": None if self.plateau is None else dict(self.plateau)}

    @staticmethod
    def from_dict(d: Any, path: str = "position") -> SchedulePosition:
        if not isinstance(d, Mapping):
            raise ConfigError(path, "must be a mapping", type(d).__name__)
        extra = set(d) - {"update", "metrics", "fingerprint", "plateau"}
        if extra:
            raise ConfigError(f"{path}.{sorted(extra)[0]}", "is not a position field", sorted(extra))
        fp = d.get("fingerprint")
        if fp is not None and not isinstance(fp, str):
            raise ConfigError(f"{path}.fingerprint", "must be a string", fp)
        pl = d.get("plateau")
        if pl is not None and not isinstance(pl, Mapping):
            raise ConfigError(f"{path}.plateau", "must be a mapping", pl)
        metrics = d.get("metrics", [])
        if not isinstance(metrics, (list, tuple)):
            raise ConfigError(f"{path}.metrics", "must be a list of numbers", metrics)
        return SchedulePosition(d.get("update", -1), tuple(metrics), fp, pl)  # a missing update is refused there


@dataclass(frozen=True, eq=False)
class OptimizerState:
    """An optimizer's state, framework-neutral (torch's names and meaning).

    Attributes:
        optimizer: torch's class name (``"SGD"``, ``"Adam"``, ... :data:`KINDS`).
        params: One :class:`ParamState` per optimized parameter, in the optimizer's order.
        groups: Each param group's hyperparameters in torch's keys (``lr``, ``betas``,
            ``momentum``, ..., flags), as the source held them.
        position: Where the schedule stands (None: not recorded).
        origin: What it was read from (``"torch"``, ``"mindspore:nn.Adam"``,
            ``"megengine:exact"``, ...).
        notes: What the reading rounded, derived or could not keep.
    """

    optimizer: str
    params: tuple[ParamState, ...]
    groups: tuple[Mapping[str, Any], ...] = ()
    position: SchedulePosition | None = None
    origin: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.optimizer not in TENSOR_STATES:
            raise ConfigError("optimizer", f"must be one of {', '.join(KINDS)} (torch's class names)", self.optimizer)
        object.__setattr__(self, "params", tuple(self.params))
        object.__setattr__(self, "groups", tuple(FrozenMap(g) for g in self.groups))
        object.__setattr__(self, "notes", tuple(self.notes))
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ConfigError("params", "must name each parameter once",
                              sorted({n for n in names if names.count(n) > 1}))
        allowed = set(TENSOR_STATES[self.optimizer]) | set(SCALAR_STATES[self.optimizer])
        for p in self.params:
            for k, v in p.values.items():
                path = f"state[{p.name!r}].{k}"
                if k not in allowed:
                    raise ConfigError(path, f"is not a state of torch's {self.optimizer} "
                                            f"({', '.join(sorted(allowed))})", k)
                shape = tuple(np.shape(v))
                if k in SCALAR_STATES[self.optimizer]:
                    if shape not in ((), (1,)):
                        raise ConfigError(path, "must be a scalar", shape)
                elif shape != p.shape:
                    raise ConfigError(path, f"must have the parameter's shape {p.shape}", shape)

    def __getitem__(self, name: str) -> ParamState:
        for p in self.params:
            if p.name == name:
                return p
        raise ConfigError("state", f"has no parameter {name!r} (it has {len(self.params)})", name)

    @property
    def records(self) -> list[ParamRecord]:
        return [p.record for p in self.params]

    def steps(self) -> set[float]:
        """The distinct step counts of the parameters that have one."""
        return {s for s in (p.step for p in self.params) if s is not None}


@dataclass(frozen=True)
class TargetParam:
    """A parameter of the target optimizer, as its framework writer describes it.

    Attributes:
        record: Name, shape and owning layer type (for the name map).
        group: Index of its param group in the target optimizer.
    """

    record: ParamRecord
    group: int


@dataclass(frozen=True)
class Converted:
    """The result of :func:`convert_state`.

    Attributes:
        state: The state in the target's names and shapes (neutral form).
        native: What was loaded, in the target framework's own format (a torch
            ``state_dict``, a MindSpore ``{name: Parameter}`` checkpoint dict, a MegEngine
            ``state_dict``).
        names: The parameter-name map used (source -> target).
        notes: What was rounded, derived, dropped (``lossy=True``) or held differently.
        position: The schedule position carried (and applied to ``scheduler=`` when given).
    """

    state: OptimizerState
    native: Any
    names: NameMap
    notes: tuple[str, ...]
    position: SchedulePosition | None = None

    def __str__(self) -> str:
        lines = [f"{self.state.optimizer} state of {len(self.state.params)} parameters -> {self.state.origin}"]
        if self.position is not None:
            lines.append(f"schedule position: update {self.position.update}")
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


# --------------------------------------------------------------------------- what a target needs

def required_states(kind: str, options: Mapping[str, Any]) -> tuple[str, ...]:
    """The states a parameter that has been updated must have for a group of ``kind`` with ``options``.

    These are the states torch reads on the next update (a missing one is a KeyError in
    torch). SGD needs none: its ``momentum_buffer`` starts at the first update with
    momentum, so a missing buffer is a state ("none yet"), not a loss.
    """
    needed = list(SCALAR_STATES[kind])
    if kind == "SGD":
        return ()
    if kind in ("Adam", "AdamW"):
        needed += ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if options.get("amsgrad") else [])
    elif kind == "RMSprop":
        needed.append("square_avg")
        if _num(options.get("momentum", 0.0)) > 0:
            needed.append("momentum_buffer")
        if options.get("centered"):
            needed.append("grad_avg")
    else:
        needed += list(TENSOR_STATES[kind])
    return tuple(needed)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# --------------------------------------------------------------------------- names and shapes

def remap(state: OptimizerState, target: Sequence[TargetParam], *, names: Overrides | NameMap = None,
          frameworks: tuple[str, str] = ("source", "target")) -> tuple[OptimizerState, NameMap]:
    """The state under the target's parameter names, shapes, order and groups.

    Args:
        state: The source state.
        target: The target optimizer's parameters, in its order.
        names: Overrides for :func:`optbridge.names.map_names` (a dict, a function or
            ``NameRules``), or a complete :class:`~optbridge.names.NameMap` to use as is.
        frameworks: Labels for messages.

    Raises:
        NameMapError: parameters that do not pair (each side listed).
        ConfigError: a shape no known reshape relates, a target parameter whose twin
            the source optimizer did not hold.
    """
    if isinstance(names, NameMap):
        nm = names
    else:
        nm = map_names(state.records, [t.record for t in target], names, frameworks=frameworks)
    by_target = {p.target: p for p in nm.pairs}
    src = {p.name: p for p in state.params}
    out = []
    for t in target:
        pair = by_target.get(t.record.name)
        if pair is None or pair.source not in src:
            raise ConfigError(f"state[{t.record.name!r}]", f"has no twin in the {frameworks[0]} optimizer's state "
                              "(the source optimizer did not hold this parameter)", t.record.name)
        sp = src[pair.source]
        values = {}
        for k, v in sp.values.items():
            a = np.asarray(v)
            if k in SCALAR_STATES[state.optimizer]:
                values[k] = a.reshape(())
            elif tuple(a.shape) == tuple(t.record.shape):
                values[k] = a
            elif a.size == math.prod(t.record.shape) and pair.reshape:
                values[k] = a.reshape(t.record.shape)  # the known reshape (MegEngine (1, C, 1, 1), grouped conv)
            else:
                raise ConfigError(f"state[{sp.name!r}].{k}", f"has shape {tuple(a.shape)}, the {frameworks[1]} "
                                  f"parameter {t.record.name!r} has {tuple(t.record.shape)} (no known reshape)",
                                  tuple(a.shape), show_value=False)
        out.append(ParamState(t.record.name, tuple(t.record.shape), t.group, t.record.module_type, values))
    return replace(state, params=tuple(out)), nm


# --------------------------------------------------------------------------- optimizer type and options

_SAME_STATE = {("Adam", "AdamW"), ("AdamW", "Adam")}


def fit_state(state: OptimizerState, kind: str, group_options: Sequence[Mapping[str, Any]], *,
              holds: Callable[[ParamState, str], bool] | None = None, lossy: bool = False,
              target: str | None = None) -> tuple[OptimizerState, tuple[str, ...]]:
    """Check the (remapped) state against a target optimizer of ``kind`` with these groups' options.

    Args:
        state: The state in the target's names (:func:`remap`).
        kind: The target optimizer's torch class name.
        group_options: The target's groups, torch's keys (``amsgrad``, ``momentum``,
            ``centered``).
        holds: Whether the target can hold state ``name`` of a parameter (default: any
            state of ``kind``; optbridge's exact MindSpore optimizers keep no
            ``max_exp_avg_sq`` outside amsgrad groups, ``nn.AdamWeightDecay`` no ``step``).
        lossy: Drop what the target cannot hold, and start what it needs and the source
            lacks (``max_exp_avg_sq`` from ``exp_avg_sq``, a buffer at zero), instead of
            refusing; every such change is a note.
        target: The target class for messages (``"nn.AdamWeightDecay"``; default ``kind``).

    Returns:
        The state to write and the notes.

    Raises:
        ConfigError: another optimizer type; a state the target needs and the source
            lacks; a state the target cannot hold (both unless ``lossy``).
    """
    notes: list[str] = []
    label = target or kind
    changed: dict[str, list[str]] = {}
    if kind != state.optimizer:
        if (state.optimizer, kind) not in _SAME_STATE:
            raise ConfigError("optimizer", f"the state is {state.optimizer}'s and the target optimizer is {kind}: "
                              "their states differ (convert between the same optimizer type)", kind)
        notes.append(f"{state.optimizer} state loaded into {kind}: the same moments and step "
                     "(the weight-decay form is the target's own)")
    out = []
    for p in state.params:
        if p.group >= len(group_options):
            raise ConfigError(f"state[{p.name!r}]", f"belongs to group {p.group}, the target has "
                              f"{len(group_options)} groups", p.group)
        if not p.values:
            out.append(p)
            continue
        opts = group_options[p.group]
        have = dict(p.values)
        for n in required_states(kind, opts):
            if n in have:
                continue
            if not lossy:
                raise ConfigError(f"state[{p.name!r}].{n}", f"is missing: the target {label} needs it with these "
                                  f"options ({_opts(opts)}) and the source state has only "
                                  f"{', '.join(sorted(p.values))}; pass lossy=True to start it "
                                  "(max_exp_avg_sq from exp_avg_sq, others at zero)", None, show_value=False)
            if n == "max_exp_avg_sq":
                have[n] = np.array(have["exp_avg_sq"], copy=True)
                changed.setdefault("max_exp_avg_sq started from exp_avg_sq", []).append(p.name)
            elif n == "step":
                raise ConfigError(f"state[{p.name!r}].step", "is missing and cannot be made up (the bias "
                                  "corrections depend on it)", None, show_value=False)
            else:
                have[n] = np.zeros(p.shape, np.float32)
                changed.setdefault(f"{n} started at zero", []).append(p.name)
        for n in [n for n in have if holds is not None and not holds(p, n)]:
            if not lossy:
                raise ConfigError(f"state[{p.name!r}].{n}", f"cannot be held by the target {label} "
                                  f"({_opts(opts)}): {_loss(n, p)} would be lost; pass lossy=True to drop it", None,
                                  show_value=False)
            del have[n]
            changed.setdefault(f"{n} dropped (the target {label} cannot hold it)", []).append(p.name)
        out.append(replace(p, values=have))
    for what, who in changed.items():
        notes.append(f"{what}: {len(who)} parameter(s) ({', '.join(who[:4])}{', ...' if len(who) > 4 else ''}); "
                     "lossy=True")
    return replace(state, optimizer=kind, params=tuple(out)), tuple(notes)


def _loss(name: str, p: ParamState) -> str:
    if name == "step":
        return f"its step count ({p.step:g}; the bias corrections use it)"
    return f"its {name}"


def _opts(opts: Mapping[str, Any]) -> str:
    keys = ("momentum", "dampening", "nesterov", "amsgrad", "centered", "decoupled_weight_decay")
    return ", ".join(f"{k}={opts[k]!r}" for k in keys if k in opts) or "defaults"


# --------------------------------------------------------------------------- the schedule position

def read_position(scheduler: Any) -> SchedulePosition | None:
    """The schedule position a driver holds, read from its ``state_dict()`` (or an int: updates done).

    Knows optbridge's drivers in every framework -- torch's ``PlanScheduler`` /
    ``SetupScheduler`` (``last_epoch`` = updates done), MegEngine's ``PlanScheduler``
    (``current_epoch``), the MindSpore driver and setup (``k``), a setup holding one of
    them (``.scheduler`` / ``.driver``) --
    and torch's ``ReduceLROnPlateau`` (its counters, without a metric history).

    Raises:
        ConfigError: an object whose position cannot be read.
    """
    if scheduler is None:
        return None
    if isinstance(scheduler, (int, np.integer)) and not isinstance(scheduler, bool):
        return SchedulePosition(int(scheduler))
    if isinstance(scheduler, SchedulePosition):
        return scheduler
    sd = _driver_state(scheduler)
    fp = sd.get("fingerprint")
    if "current_epoch" in sd:
        return SchedulePosition(sd["current_epoch"], tuple(sd.get("metrics", ())), fp)
    if "k" in sd and "fingerprint" in sd:  # the MindSpore driver
        return SchedulePosition(sd["k"], tuple(sd.get("metrics", ())), fp)
    if "schedulers" in sd and "last_epoch" in sd:
        metrics: tuple[float, ...] = ()
        counters = None
        for child in sd["schedulers"]:
            if isinstance(child, Mapping) and child.get("metrics"):
                metrics = tuple(child["metrics"])
            if isinstance(child, Mapping) and "num_bad_epochs" in child and "best" in child:
                counters = _plateau_counters(child)  # torch's own ReduceLROnPlateau in the setup
        return SchedulePosition(sd["last_epoch"], metrics, fp, None if metrics else counters)
    if "num_bad_epochs" in sd and "best" in sd:
        return SchedulePosition(int(sd.get("last_epoch", 0)), (), None, _plateau_counters(sd))
    if "last_epoch" in sd:
        return SchedulePosition(sd["last_epoch"], tuple(sd.get("metrics", ())), fp)
    raise ConfigError("scheduler", "must be an optbridge driver (PlanScheduler, SetupScheduler), a setup holding "
                      "one, ReduceLROnPlateau or an int (updates done)", type(scheduler).__name__)


def _plateau_counters(sd: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")
    out: dict[str, Any] = {k: float(sd[k]) for k in keys if k in sd}
    if isinstance(sd.get("_last_lr"), (list, tuple)):
        out["last_lr"] = [float(x) for x in sd["_last_lr"]]
    return out


def _set_plateau(sched: Any, sd: dict[str, Any], counters: Mapping[str, Any]) -> dict[str, Any]:
    """A ReduceLROnPlateau state with the position's counters; the reduced lrs go into the optimizer's groups."""
    for key, v in counters.items():
        if key == "last_lr":
            groups = getattr(getattr(sched, "optimizer", None), "param_groups", None)
            if not isinstance(groups, list) or len(groups) != len(v):
                raise ConfigError("position.plateau.last_lr", "holds one lr per group of the source's "
                                  "ReduceLROnPlateau; the target's has another number of groups", list(v))
            for g, lr in zip(groups, v):
                g["lr"] = float(lr)
            sd["_last_lr"] = [float(x) for x in v]
        else:
            sd[key] = int(v) if key != "best" else v
    return sd


def _driver(obj: Any) -> Any:
    for attr in ("scheduler", "driver"):
        inner = getattr(obj, attr, None)
        if inner is not None and not callable(getattr(obj, "state_dict", None)):
            return inner
    return obj


def _driver_state(scheduler: Any) -> Mapping[str, Any]:
    d = _driver(scheduler)
    fn = getattr(d, "state_dict", None)
    sd = fn() if callable(fn) else None
    if not isinstance(sd, Mapping):
        raise ConfigError("scheduler", "must have a state_dict() (an optbridge driver or a setup holding one)",
                          type(scheduler).__name__)
    return sd


def apply_position(position: SchedulePosition | None, scheduler: Any) -> str | None:
    """Move a target driver to ``position`` through its own ``load_state_dict`` (fingerprint checked).

    Returns a note on what was set, or None when there is nothing to apply.

    Raises:
        ConfigError: the position was saved for other schedules (fingerprints differ), a
            native plateau's counters meet a driver that needs the metric history, or a
            driver whose state cannot be set.
    """
    if position is None or scheduler is None:
        return None
    d = _driver(scheduler)
    sd = dict(_driver_state(d))
    fp = sd.get("fingerprint")
    if position.fingerprint is not None and fp is not None and fp != position.fingerprint:
        raise ConfigError("position.fingerprint", f"was saved by a driver of other schedules ({position.fingerprint}"
                          f"; the target driver drives {fp}): build the target from the same plan", None,
                          show_value=False)
    if position.plateau is not None and "metrics" in sd:
        raise ConfigError("position.plateau", "holds a native ReduceLROnPlateau's counters without the metric "
                          "history, which the target driver needs (read the position from an optbridge driver)",
                          None, show_value=False)
    k = position.update
    if "current_epoch" in sd:
        sd.update(current_epoch=k, metrics=list(position.metrics))
    elif "k" in sd and "fingerprint" in sd:
        if sd.get("steppers"):
            raise ConfigError("scheduler", "runs MindSpore lr_scheduler objects, which keep no state: build the "
                              "target setup with scheduler='driver'", None, show_value=False)
        sd.update(k=k, metrics=list(position.metrics))
    elif "schedulers" in sd and "last_epoch" in sd:
        entries = getattr(d, "entries", None)
        if entries is None or len(entries) != len(sd["schedulers"]):
            raise ConfigError("scheduler", "is a setup scheduler whose schedulers cannot be reached", None,
                              show_value=False)
        children = []
        for e, child in zip(entries, sd["schedulers"]):
            every = int(getattr(e, "every", 1) or 1)
            if isinstance(child, Mapping) and "fingerprint" in child and "last_epoch" in child:
                children.append({**child, "last_epoch": k // every, "_step_count": k // every + 1,
                                 "metrics": list(position.metrics)})
            else:
                children.append(_fast_forward(e.sched, k // every, bool(getattr(e, "plateau", False)), position))
        sd.update(last_epoch=k, schedulers=children)
    elif "last_epoch" in sd and "fingerprint" in sd:
        sd.update(last_epoch=k, _step_count=k + 1, metrics=list(position.metrics))
    elif "num_bad_epochs" in sd and position.plateau is not None:
        sd = _set_plateau(d, sd, position.plateau)
    else:
        raise ConfigError("scheduler", "must be an optbridge driver whose position can be set",
                          type(d).__name__)
    d.load_state_dict(sd)
    return f"schedule position: update {k}" + (f", {len(position.metrics)} plateau metrics" if position.metrics
                                                else "")


def _fast_forward(sched: Any, n: int, plateau: bool, position: SchedulePosition) -> dict[str, Any]:
    """Step a native scheduler (a fresh one of the same plan) to its ``n``-th step; its state afterwards.

    A framework's own scheduler classes keep their position in their own state
    (torch's SequentialLR holds its children's), so they are stepped there: ``n``
    plain steps, or, for a ReduceLROnPlateau, one step per plateau metric of the
    position (its counters come out exactly as the source's). O(n) scheduler steps.
    """
    import warnings

    done = int(getattr(sched, "last_epoch", 0))
    if plateau:
        if position.plateau is not None and not position.metrics:
            return _set_plateau(sched, dict(sched.state_dict()), position.plateau)
        if n > len(position.metrics):
            raise ConfigError("position.metrics", f"holds {len(position.metrics)} plateau metrics; the target's "
                              f"{type(sched).__name__} needs {n} to reach update {position.update}", None,
                              show_value=False)
    if done > n:
        raise ConfigError("scheduler", f"{type(sched).__name__} is already at step {done}, past the position's "
                          f"{n}: give a freshly built setup", done)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns of scheduler steps before optimizer steps
        for j in range(done, n):
            if plateau:
                sched.step(position.metrics[j])
            else:
                sched.step()
    return dict(sched.state_dict())


# --------------------------------------------------------------------------- framework dispatch

def framework_of(obj: Any) -> str:
    """``"torch"``, ``"mindspore"`` or ``"megengine"`` for a live optimizer (by the module of its class).

    Raises:
        ConfigError: an object of none of them.
    """
    for cls in type(obj).__mro__:
        root = cls.__module__.split(".")[0]
        if root in _FRAMEWORKS:
            return root
        if root == "optbridge_adapters":
            fw = cls.__module__.split(".")[1]
            if fw in _FRAMEWORKS:
                return fw
    raise ConfigError("optimizer", "must be a torch, MindSpore or MegEngine optimizer", type(obj).__name__)


def _adapter(framework: str, name: str) -> Any:
    """``optbridge_adapters.<framework>.state.<name>`` (BackendUnavailable when the framework is missing)."""
    from .entry import _adapter as load
    return load(framework, "state", name)


def read_state(optimizer: Any, *, model: Any = None, scheduler: Any = None, state_dict: Any = None) -> OptimizerState:
    """The state of a live optimizer (or of a saved state dict interpreted against it), framework-neutral.

    Args:
        optimizer: A torch optimizer, a MindSpore optimizer (``nn``, ``experimental`` or
            optbridge's exact ones) or a MegEngine optimizer (native or exact).
        model: The model whose parameter names and layer types name the state (torch and
            MegEngine need it unless the state dict carries ``param_names``; MindSpore's
            Parameters carry their names).
        scheduler: The driver whose position travels with the state (optbridge's
            drivers, a setup, or an int: updates done).
        state_dict: A saved ``optimizer.state_dict()`` (torch, MegEngine) or checkpoint
            dict (MindSpore ``load_checkpoint``) to read instead of the live state.

    Raises:
        ConfigError: an optimizer type without a state conversion, names that cannot be
            read, a saved state that does not fit the optimizer.
    """
    fw = framework_of(optimizer)
    return _adapter(fw, "read_state")(optimizer, model=model, scheduler=scheduler, state_dict=state_dict)


def convert_state(state: OptimizerState | str | os.PathLike[str], optimizer: Any, *, model: Any = None,
                  names: Overrides | NameMap = None, scheduler: Any = None, lossy: bool = False,
                  load: bool = True) -> Converted:
    """Load an optimizer state read in one framework into a live optimizer of another (or the same).

    Args:
        state: An :class:`OptimizerState` (:func:`read_state`) or the path of a saved one
            (:func:`save_state`).
        optimizer: The target optimizer (torch, MindSpore or MegEngine).
        model: The target model (parameter names and layer types; MindSpore may omit it).
        names: Name-map overrides (dict, function, ``NameRules``) or a complete ``NameMap``.
        scheduler: The target driver: the state's schedule position is applied to it.
        lossy: Allow dropping what the target cannot hold (listed in the notes).
        load: Load into ``optimizer`` (False: only build the native state).

    Returns:
        A :class:`Converted` report.

    Raises:
        ConfigError: see :func:`fit_state` and :func:`remap`; a schedule position for
            another plan (the target driver's fingerprint differs).
    """
    if isinstance(state, (str, os.PathLike)):
        state = load_state(state)
    if not isinstance(state, OptimizerState):
        raise ConfigError("state", "must be an OptimizerState (read_state) or the path of a saved state",
                          type(state).__name__)
    if not isinstance(lossy, bool):
        raise ConfigError("lossy", "must be true or false", lossy)
    fw = framework_of(optimizer)
    out: Converted = _adapter(fw, "write_state")(state, optimizer, model=model, names=names, scheduler=scheduler,
                                                 lossy=lossy, load=load)
    return out


# --------------------------------------------------------------------------- the interchange file

def _json_value(v: Any, path: str) -> Any:
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(x, f"{path}[{i}]") for i, x in enumerate(v)]
    if hasattr(v, "item") and getattr(v, "size", 2) == 1:  # a 0-d tensor of any framework
        return _json_value(v.item(), path)
    return repr(v)  # kept for reading only (not a hyperparameter the state needs)


def save_state(state: OptimizerState, path: str | os.PathLike[str]) -> None:
    """Write ``state`` to ``path``: a zip of ``manifest.json`` and one ``.npy`` per array (an ``.npz``).

    The manifest: ``{"format": "optbridge-state", "version": 1, "optimizer", "origin",
    "groups", "params": [{"name", "shape", "group", "module_type", "state": {name:
    array key}}], "position", "notes"}``. Arrays are written one at a time; member dates
    are fixed, so the same state gives the same bytes.
    """
    if not isinstance(state, OptimizerState):
        raise ConfigError("state", "must be an OptimizerState", type(state).__name__)
    manifest: dict[str, Any] = {"format": FORMAT, "version": VERSION, "optimizer": state.optimizer,
                                "origin": state.origin, "notes": list(state.notes),
                                "groups": [{k: _json_value(v, f"groups[{i}].{k}") for k, v in g.items()}
                                           for i, g in enumerate(state.groups)],
                                "position": None if state.position is None else state.position.to_dict(),
                                "params": []}
    with zipfile.ZipFile(os.fspath(path), "w", compression=zipfile.ZIP_STORED) as z:
        for i, p in enumerate(state.params):
            keys = {}
            for k, v in p.values.items():
                key = f"p{i}.{k}"
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.require(np.asarray(v), requirements="C"), allow_pickle=False)
                z.writestr(_member(f"{key}.npy"), buf.getvalue())
                keys[k] = key
            manifest["params"].append({"name": p.name, "shape": list(p.shape), "group": p.group,
                                       "module_type": p.module_type, "state": keys})
        z.writestr(_member("manifest.json"), json.dumps(manifest, indent=1))


def _member(name: str) -> zipfile.ZipInfo:
    """A zip member with a fixed date: the same state gives the same file, byte for byte."""
    return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))


def load_state(path: str | os.PathLike[str]) -> OptimizerState:
    """Read a state written by :func:`save_state` (never unpickles: arrays are plain ``.npy``).

    Raises:
        ConfigError: not such a file, or a manifest that does not describe a valid state
            (the message names the field).
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ConfigError("path", "must be an existing optbridge state file", p)
    try:
        z = zipfile.ZipFile(p)
    except zipfile.BadZipFile:
        raise ConfigError("path", "is not an optbridge state file (not a zip/npz)", p) from None
    with z:
        try:
            manifest = json.loads(z.read("manifest.json").decode("utf-8"))
        except KeyError:
            raise ConfigError("path", "is not an optbridge state file (no manifest.json)", p) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError("manifest.json", f"must be JSON ({e})", p) from None
        if not isinstance(manifest, Mapping) or manifest.get("format") != FORMAT:
            raise ConfigError("manifest.format", f"must be {FORMAT!r}", manifest.get("format")
                              if isinstance(manifest, Mapping) else manifest)
        if manifest.get("version") != VERSION:
            raise ConfigError("manifest.version", f"must be {VERSION}", manifest.get("version"))
        members = set(z.namelist())
        params = []
        for i, d in enumerate(_list(manifest, "params")):
            mp = f"manifest.params[{i}]"
            if not isinstance(d, Mapping):
                raise ConfigError(mp, "must be a mapping", d)
            values = {}
            st = d.get("state", {})
            if not isinstance(st, Mapping):
                raise ConfigError(f"{mp}.state", "must map state names to array keys", st)
            for k, key in st.items():
                member = f"{key}.npy"
                if not isinstance(key, str) or member not in members:
                    raise ConfigError(f"{mp}.state.{k}", "must name an array of the file", key)
                try:
                    values[k] = np.lib.format.read_array(io.BytesIO(z.read(member)), allow_pickle=False)
                except ValueError as e:
                    raise ConfigError(f"{mp}.state.{k}", f"must be a plain numpy array ({e})", key) from None
            shape = d.get("shape")
            if not isinstance(shape, list) or not all(isinstance(x, int) and x >= 0 for x in shape):
                raise ConfigError(f"{mp}.shape", "must be a list of sizes", shape)
            name, group, mt = d.get("name"), d.get("group"), d.get("module_type", "")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{mp}.name", "must be a parameter name", name)
            if isinstance(group, bool) or not isinstance(group, int) or group < 0:
                raise ConfigError(f"{mp}.group", "must be a group index", group)
            if not isinstance(mt, str):
                raise ConfigError(f"{mp}.module_type", "must be a string", mt)
            params.append(ParamState(name, tuple(shape), group, mt, values))
        groups = _list(manifest, "groups")
        for i, g in enumerate(groups):
            if not isinstance(g, Mapping):
                raise ConfigError(f"manifest.groups[{i}]", "must be a mapping", g)
        pos = manifest.get("position")
        notes = _list(manifest, "notes")
        origin = manifest.get("origin", "")
        if not isinstance(origin, str):
            raise ConfigError("manifest.origin", "must be a string", origin)
        kind = manifest.get("optimizer")
        if not isinstance(kind, str):
            raise ConfigError("manifest.optimizer", f"must be one of {', '.join(KINDS)}", kind)
        return OptimizerState(kind, tuple(params),
                              tuple({k: tuple(v) if isinstance(v, list) else v for k, v in g.items()}
                                    for g in groups),
                              None if pos is None else SchedulePosition.from_dict(pos, "manifest.position"),
                              origin, tuple(str(n) for n in notes))


def _list(manifest: Mapping[str, Any], key: str) -> list[Any]:
    v = manifest.get(key, [])
    if not isinstance(v, list):
        raise ConfigError(f"manifest.{key}", "must be a list", v)
    return v


# --------------------------------------------------------------------------- helpers for the framework writers

def single_step(state: OptimizerState, what: str, *, lossy: bool) -> tuple[float | None, tuple[str, ...]]:
    """The one step count shared by every parameter, for targets that keep one global counter.

    Returns ``(step or None when no parameter has state, notes)``.

    Raises:
        ConfigError: parameters with different steps (the target holds one), unless ``lossy``
            (then the largest is used and the difference noted).
    """
    steps = state.steps()
    with_state = [p for p in state.params if p.values]
    if not with_state:
        return None, ()
    if any("step" not in p.values for p in with_state) and SCALAR_STATES[state.optimizer]:
        steps.add(0.0)
    if len(steps) == 1:
        return next(iter(steps)), ()
    if not steps:
        return None, ()
    if not lossy:
        raise ConfigError("state.step", f"{what} keeps one step count for all parameters; these parameters "
                          f"have different ones ({sorted(steps)[:6]}): pass lossy=True to use the largest",
                          sorted(steps)[:6], show_value=False)
    top = max(steps)
    return top, (f"step counts {sorted(steps)[:6]} became one ({top:g}): {what} keeps one (lossy=True)",)


def float32_power(beta: float, n: int, *, chunk: int = 1 << 16) -> float:
    """``beta ** n`` as a float32 running product (``p = float32(p * float32(beta))``, ``n`` times).

    MindSpore's ``nn.Adam`` keeps ``beta1_power`` / ``beta2_power`` this way; the
    product is reproduced bit for bit (numpy float32 multiplication rounds as
    MindSpore's CPU Mul does), ``chunk`` factors at a time.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError("step", "must be an integer >= 0", n)
    b = np.float32(beta)
    p = np.float32(1.0)
    left = int(n)
    while left > 0:
        m = min(left, chunk)
        seq = np.full(m + 1, b, dtype=np.float32)
        seq[0] = p
        p = np.multiply.accumulate(seq, dtype=np.float32)[-1]
        left -= m
    return float(p)
