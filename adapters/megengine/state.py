"""MegEngine optimizer state to and from optbridge's neutral form (:mod:`optbridge.state`); imports megengine.

MegEngine's ``optimizer.state_dict()`` has torch's layout (``{"param_groups": [{...,
"params": [index]}], "state": {index: {name: array}}}``, parameters numbered in group
order). Names come from the model (``named_parameters``). Two families:

* optbridge's torch-exact optimizers (``optbridge_adapters.megengine.optimizers``):
  torch's state names and meaning (``step`` and ``mu_product`` 0-d float32, no entry
  before a parameter's first update, Adagrad's ``sum`` from the constructor) -- a copy
  both ways;
* MegEngine's own classes, whose state exists from the constructor: ``SGD``
  (``momentum_buffer``, zeros, only in groups with momentum; it has no step count,
  and ``v = mu*v + g`` from zero is torch's first ``buf = g``, so a buffer not yet
  started is written as zeros and read back as a buffer), ``Adam`` / ``AdamW``
  (``exp_avg``, ``exp_avg_sq``, ``step`` as a float32 tensor: integral steps below
  2**24 are exact), ``Adagrad`` (``square_avg`` is torch's ``sum``; MegEngine has no
  initial accumulator value), ``Adadelta`` (``square_avg``, ``acc_delta``, ``step``).

The interchange with the other environment is :func:`optbridge.save_state` /
:func:`optbridge.load_state` (a zip of ``manifest.json`` and ``.npy`` arrays).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import megengine.optimizer as mopt
import numpy as np

from optbridge.errors import ConfigError
from optbridge.names import NameMap, Overrides
from optbridge.params import ParamRecord
from optbridge.state import (
    KINDS,
    SCALAR_STATES,
    Converted,
    OptimizerState,
    ParamState,
    TargetParam,
    apply_position,
    fit_state,
    read_position,
    remap,
)

from .build import named_parameters
from .optimizers import TorchExactOptimizer

__all__ = ["NATIVE_STATES", "read_state", "write_state"]

#: MegEngine class -> (torch kind, ``torch state -> MegEngine state``) of its native state.
NATIVE_STATES: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "SGD": ("SGD", {"momentum_buffer": "momentum_buffer"}),
    "Adam": ("Adam", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "step": "step"}),
    "AdamW": ("AdamW", {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "step": "step"}),
    "Adagrad": ("Adagrad", {"sum": "square_avg", "step": "step"}),
    "Adadelta": ("Adadelta", {"square_avg": "square_avg", "acc_delta": "acc_delta", "step": "step"}),
}


def _family(optimizer: Any) -> tuple[str, Mapping[str, str] | None]:
    """``(torch kind, native name map or None for the exact classes)``."""
    if isinstance(optimizer, TorchExactOptimizer):
        return type(optimizer).__name__ if type(optimizer).__name__ in KINDS else \
            next(c.__name__ for c in type(optimizer).__mro__ if c.__name__ in KINDS), None
    if isinstance(optimizer, mopt.Optimizer):
        for cls in type(optimizer).__mro__:
            if cls.__module__.startswith("megengine.") and cls.__name__ in NATIVE_STATES:
                kind, names = NATIVE_STATES[cls.__name__]
                return kind, names
        raise ConfigError("optimizer", f"must be optbridge's exact MegEngine optimizer or MegEngine's "
                          f"{', '.join(NATIVE_STATES)} (no state conversion for this class)", type(optimizer).__name__)
    raise ConfigError("optimizer", "must be a megengine optimizer", type(optimizer).__name__)


def _records(optimizer: Any, model: Any) -> list[ParamRecord]:
    if model is None:
        raise ConfigError("model", "is needed to name MegEngine's parameters", None, show_value=False)
    named, owners = named_parameters(model)
    by_id: dict[int, ParamRecord] = {}
    for n, p in named:
        by_id.setdefault(id(p), ParamRecord(n, tuple(p.shape), owners.get(n, ""), id(p)))
    out = []
    for i, p in enumerate(q for g in optimizer.param_groups for q in g["params"]):
        r = by_id.get(id(p))
        if r is None:
            raise ConfigError(f"optimizer.params[{i}]", "is not a parameter of the model", tuple(p.shape))
        out.append(r)
    return out


def _hypers(group: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else v)
            for k, v in group.items() if k != "params"}


def read_state(optimizer: Any, *, model: Any = None, scheduler: Any = None, state_dict: Any = None) -> OptimizerState:
    """The neutral state of a MegEngine optimizer (or of a saved ``state_dict``); see :func:`optbridge.read_state`."""
    kind, native = _family(optimizer)
    sd = optimizer.state_dict() if state_dict is None else state_dict
    if not isinstance(sd, Mapping) or not isinstance(sd.get("state"), Mapping) \
            or not isinstance(sd.get("param_groups"), (list, tuple)):
        raise ConfigError("state_dict", "must be a MegEngine optimizer state_dict ({'state', 'param_groups'})",
                          type(sd).__name__)
    if len(sd["param_groups"]) != len(optimizer.param_groups):
        raise ConfigError("state_dict.param_groups", f"must have the optimizer's {len(optimizer.param_groups)} groups",
                          len(sd["param_groups"]))
    records = _records(optimizer, model)
    back = {v: k for k, v in native.items()} if native is not None else None
    params: list[ParamState] = []
    notes: list[str] = []
    i = 0
    for gi, (mine, saved) in enumerate(zip(optimizer.param_groups, sd["param_groups"])):
        if not isinstance(saved, Mapping) or len(saved.get("params", ())) != len(mine["params"]):
            raise ConfigError(f"state_dict.param_groups[{gi}].params", f"must list {len(mine['params'])} parameters",
                              saved.get("params") if isinstance(saved, Mapping) else saved)
        for index, p in zip(saved["params"], mine["params"]):
            entry = sd["state"].get(index, {})
            if not isinstance(entry, Mapping):
                raise ConfigError(f"state_dict.state[{index}]", "must map state names to arrays", type(entry).__name__)
            values: dict[str, np.ndarray] = {}
            for k, v in entry.items():
                name = k if back is None else back.get(k)
                if name is None:
                    raise ConfigError(f"state_dict.state[{index}].{k}", f"is not a state of MegEngine's {kind}", k)
                a = np.array(v.numpy() if hasattr(v, "numpy") else v, copy=True)
                values[name] = a.astype(np.float32).reshape(()) if name in SCALAR_STATES[kind] else a
            if native is not None and "step" in values and float(values["step"]) == 0.0:
                values = {}  # the constructor's state: torch's "never updated"
            r = records[i]
            params.append(ParamState(r.name, tuple(p.shape), gi, r.module_type, values))
            i += 1
    origin = "megengine:exact" if native is None else f"megengine:native.{type(optimizer).__name__}"
    if native is not None and kind == "SGD":
        notes.append("MegEngine's SGD starts its buffers at zero in the constructor and counts no steps: a buffer "
                     "is read as present (for dampening 0 a zero buffer is torch's first update, buf = g)")
    return OptimizerState(kind, tuple(params), tuple(_hypers(g) for g in sd["param_groups"]),
                          read_position(scheduler), origin, tuple(notes))


def write_state(state: OptimizerState, optimizer: Any, *, model: Any = None, names: Overrides | NameMap = None,
                scheduler: Any = None, lossy: bool = False, load: bool = True) -> Converted:
    """Load a neutral state into a MegEngine optimizer; see :func:`optbridge.convert_state`.

    The native result is the ``state_dict`` given to ``optimizer.load_state_dict``
    (numpy arrays).
    """
    kind, native = _family(optimizer)
    records = _records(optimizer, model)
    flat = [(gi, p) for gi, g in enumerate(optimizer.param_groups) for p in g["params"]]
    targets = [TargetParam(r, gi) for r, (gi, _) in zip(records, flat)]
    mapped, nm = remap(state, targets, names=names, frameworks=(state.origin.split(":")[0] or "source", "megengine"))
    groups = optimizer.param_groups
    if native is None:
        holds = None
    else:
        def holds(ps: ParamState, n: str) -> bool:
            if n == "momentum_buffer":
                return float(groups[ps.group].get("momentum", 0.0)) != 0.0
            return n in native
    label = f"MegEngine {'exact ' if native is None else ''}{type(optimizer).__name__}"
    fitted, fit_notes = fit_state(mapped, kind, [_hypers(g) for g in groups], holds=holds, lossy=lossy,
                                  target=label)
    notes = list(state.notes) + list(fit_notes)
    current = optimizer.state_dict()
    out_state: dict[int, dict[str, Any]] = {}
    for index, ps in enumerate(fitted.params):
        gi, p = flat[index]
        if native is None:
            if not ps.values:
                if kind == "Adagrad" and index in current["state"]:
                    out_state[index] = current["state"][index]
                continue
            out_state[index] = {k: np.asarray(v, np.float32) for k, v in ps.values.items()}
            continue
        entry: dict[str, Any] = {}
        for torch_name, mge_name in native.items():
            if torch_name == "momentum_buffer" and float(groups[gi].get("momentum", 0.0)) == 0.0:
                continue
            v = ps.values.get(torch_name)
            if torch_name == "step":
                entry[mge_name] = np.asarray(0.0 if v is None else v, np.float32).reshape(())
            else:
                entry[mge_name] = np.zeros(tuple(p.shape), np.float32) if v is None else np.asarray(v, np.float32)
        out_state[index] = entry  # MegEngine's own load_state_dict wants an entry for every parameter
    result_sd = {"param_groups": current["param_groups"], "state": out_state}
    rounded = sorted({str(np.asarray(v).dtype) for p in fitted.params for v in p.values.values()} - {"float32"})
    if rounded:
        notes.append(f"state arrays of dtype {', '.join(rounded)} rounded to float32 (MegEngine's state dtype)")
    if load:
        optimizer.load_state_dict(result_sd)
        note = apply_position(state.position, scheduler)
        if note:
            notes.append(note)
    origin = "megengine:exact" if native is None else f"megengine:native.{type(optimizer).__name__}"
    result = OptimizerState(kind, fitted.params, tuple(_hypers(g) for g in groups), state.position, origin, ())
    return Converted(result, result_sd, nm, tuple(notes), state.position)
