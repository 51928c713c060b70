"""torch optimizer state to and from optbridge's neutral form (:mod:`optbridge.state`).

torch's ``optimizer.state_dict()`` numbers parameters in the order the param groups
list them (``{"state": {index: {name: tensor}}, "param_groups": [{..., "params":
[index]}]}``); the names come from the model (or from ``param_names``, which torch
2.13 adds to the groups of an optimizer built from ``named_parameters()``). The
neutral form is torch's own vocabulary, so reading and writing are copies: state
tensors become numpy arrays of the parameter's dtype, ``step`` and ``mu_product``
0-d float32 (torch's scalar dtype), and a parameter without state has no entry.
Writing goes through ``optimizer.load_state_dict`` (which casts the moments to the
parameter's dtype and keeps ``step`` float32, as torch saves it).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch

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

from .build import model_records

__all__ = ["read_state", "write_state"]

_NOT_HYPERS = ("params", "param_names")


def _kind(optimizer: Any) -> str:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError("optimizer", "must be a torch.optim optimizer", type(optimizer).__name__)
    kind = type(optimizer).__name__
    if kind not in KINDS:
        raise ConfigError("optimizer", f"must be one of torch's {', '.join(KINDS)} (no state conversion for "
                          f"{kind})", kind)
    return kind


def _records(optimizer: torch.optim.Optimizer, model: Any, saved_groups: Any = None) -> list[ParamRecord]:
    """One record per optimized parameter, in the optimizer's order (names from the model or ``param_names``)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if model is not None:
        records, _ = model_records(model)
        by_id: dict[Hashable, ParamRecord] = {}
        for r in records:
            by_id.setdefault(r.ident, r)  # torch records carry id(tensor)
        out = []
        for i, p in enumerate(params):
            found = by_id.get(id(p))
            if found is None:
                raise ConfigError(f"optimizer.params[{i}]", "is not a parameter of the model (pass the model the "
                                  "optimizer trains)", tuple(p.shape))
            out.append(found)
        return out
    for groups in (saved_groups, optimizer.param_groups):
        if groups and all(isinstance(g, Mapping) and "param_names" in g for g in groups):
            names = [n for g in groups for n in g["param_names"]]
            if len(names) == len(params):
                return [ParamRecord(str(n), tuple(p.shape), "", id(p)) for n, p in zip(names, params)]
    raise ConfigError("model", "is needed to name the parameters (or build the optimizer from "
                      "model.named_parameters(), which gives torch's param_names)", None, show_value=False)


def _hypers(group: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in group.items():
        if k in _NOT_HYPERS:
            continue
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().tolist()
        out[k] = tuple(float(x) if isinstance(x, torch.Tensor) else x for x in v) if isinstance(v, (list, tuple)) \
            else v
    return out


def _array(name: str, v: Any, kind: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        a = v.detach().cpu().numpy().copy()
    else:
        a = np.asarray(v)
    if name in SCALAR_STATES[kind]:
        return np.asarray(a, dtype=np.float32).reshape(())
    return a


def read_state(optimizer: Any, *, model: Any = None, scheduler: Any = None, state_dict: Any = None) -> OptimizerState:
    """The neutral state of a torch optimizer (or of its saved ``state_dict``); see :func:`optbridge.read_state`."""
    kind = _kind(optimizer)
    sd = optimizer.state_dict() if state_dict is None else state_dict
    if not isinstance(sd, Mapping) or not isinstance(sd.get("state"), Mapping) \
            or not isinstance(sd.get("param_groups"), (list, tuple)):
        raise ConfigError("state_dict", "must be a torch optimizer state_dict ({'state': ..., 'param_groups': ...})",
                          type(sd).__name__)
    saved = sd["param_groups"]
    if len(saved) != len(optimizer.param_groups):
        raise ConfigError("state_dict.param_groups", f"must have the optimizer's {len(optimizer.param_groups)} "
                          "groups", len(saved))
    records = _records(optimizer, model, saved)
    params: list[ParamState] = []
    i = 0
    for gi, (mine, g) in enumerate(zip(optimizer.param_groups, saved)):
        if not isinstance(g, Mapping) or len(g.get("params", ())) != len(mine["params"]):
            raise ConfigError(f"state_dict.param_groups[{gi}].params", f"must list {len(mine['params'])} "
                              "parameters", g.get("params") if isinstance(g, Mapping) else g)
        for index, p in zip(g["params"], mine["params"]):
            entry = sd["state"].get(index, {})
            if not isinstance(entry, Mapping):
                raise ConfigError(f"state_dict.state[{index}]", "must map state names to tensors", entry)
            values = {k: _array(k, v, kind) for k, v in entry.items() if v is not None}
            r = records[i]
            params.append(ParamState(r.name, tuple(p.shape), gi, r.module_type, values))
            i += 1
    notes = []
    dtypes = {str(p.dtype) for g in optimizer.param_groups for p in g["params"]}
    if dtypes != {"torch.float32"}:
        notes.append(f"parameters of dtype {', '.join(sorted(dtypes))}: the moments keep it; a float32 target "
                     "rounds them")
    return OptimizerState(kind, tuple(params), tuple(_hypers(g) for g in saved), read_position(scheduler),
                          "torch", tuple(notes))


def write_state(state: OptimizerState, optimizer: Any, *, model: Any = None, names: Overrides | NameMap = None,
                scheduler: Any = None, lossy: bool = False, load: bool = True) -> Converted:
    """Load a neutral state into a torch optimizer; see :func:`optbridge.convert_state`."""
    kind = _kind(optimizer)
    records = _records(optimizer, model)
    flat = [(gi, p) for gi, g in enumerate(optimizer.param_groups) for p in g["params"]]
    targets = [TargetParam(r, gi) for r, (gi, _) in zip(records, flat)]
    mapped, nm = remap(state, targets, names=names, frameworks=(state.origin.split(":")[0] or "source", "torch"))
    fitted, notes = fit_state(mapped, kind, optimizer.param_groups, lossy=lossy)
    native = optimizer.state_dict()
    current = native["state"]
    out_state: dict[int, dict[str, Any]] = {}
    rounded = set()
    for index, (ps, (_, p)) in enumerate(zip(fitted.params, flat)):
        if not ps.values:
            if index in current and kind == "Adagrad":  # torch made Adagrad's state in the constructor
                out_state[index] = current[index]
            continue
        entry: dict[str, Any] = {}
        for k, a in ps.values.items():
            a = np.asarray(a)
            if k in SCALAR_STATES[kind]:
                entry[k] = torch.tensor(float(a), dtype=torch.float32)
            else:
                t = torch.from_numpy(np.array(a, copy=True))
                if t.dtype != p.dtype:
                    if t.dtype.itemsize > p.dtype.itemsize:
                        rounded.add(f"{t.dtype} -> {p.dtype}")
                    t = t.to(p.dtype)
                entry[k] = t
        out_state[index] = entry
    native = {"state": out_state, "param_groups": native["param_groups"]}
    all_notes = list(state.notes) + list(notes)
    all_notes += [f"state tensors rounded {r} (the target parameters' dtype)" for r in sorted(rounded)]
    if load:
        optimizer.load_state_dict(native)
    note = apply_position(state.position, scheduler) if load else None
    if note:
        all_notes.append(note)
    result = OptimizerState(kind, fitted.params, tuple(_hypers(g) for g in optimizer.param_groups), state.position,
                            "torch", ())
    return Converted(result, native, nm, tuple(all_notes), state.position)
