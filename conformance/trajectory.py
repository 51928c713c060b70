"""Trajectory cases: the PARAMETERS after every update, on every backend, against torch's (the oracle).

A trajectory case (``trajectory:`` in the case file, family ``trajectory``) gives
every group ``size`` float32 parameters named ``<group>.w``, the same float32
initial values and the same fixed float32 gradient sequence on every backend (made
here, once, by :func:`inputs`: seeded normal draws times ``grad_scales`` in turn, so
gradients near 1e-7, where the placement of eps shows, sit next to gradients near 1).

The contract of a trajectory backend (registered like trace backends, by name)::

    trajectory(plan, steps, init, grads, metrics=None) -> ndarray (steps, n_params) float32

* ``init``: ``parameter name -> float32 1-D array`` (in column order);
* ``grads``: ``(steps, n_params)`` float32, the gradient of update ``k`` in row ``k``
  (columns: the parameters of ``init`` concatenated in order);
* the result: the parameters after update ``k`` in row ``k``, same columns.

It builds the framework's objects with the public entry points
(``optbridge.to_torch`` / ``to_mindspore`` / ``to_megengine``), sets the gradients,
steps the optimizers and the schedule the way a training loop does, and records the
parameters. The oracle is torch through ``optbridge.to_torch`` with torch's own
scheduler classes wherever they are exact (:func:`optbridge_conformance.traj_torch.oracle`);
the ``torch`` row runs the same plan with the reference's values written per step
(``form="table"``), so it checks that the two ways torch can be driven move the
parameters alike.

Tolerances are data (``tolerances.yaml``, section ``trajectory``): float32 ulps of
each parameter's peak ``|value|`` over the run, with the measured worst next to each.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from optbridge.errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from optbridge.plan import Plan

    from .cases import Case
    from .compare import SeriesResult, Tolerance

__all__ = ["TRAJECTORY_BACKENDS", "ORACLE", "Inputs", "inputs", "register_trajectory",
           "get_trajectory", "compare_trajectories", "trajectory_tolerance", "HYPER"]

#: Trajectory backends: name -> ``"module:function"`` (the trace backends' names).
TRAJECTORY_BACKENDS: dict[str, str] = {
    "torch": "optbridge_conformance.traj_torch:trajectory",
    "mindspore-list": "optbridge_conformance.traj_mindspore:trajectory_list",
    "mindspore-cell": "optbridge_conformance.traj_mindspore:trajectory_cell",
    "mindspore-experimental": "optbridge_conformance.traj_mindspore:trajectory_experimental",
    "megengine": "optbridge_conformance.traj_megengine:trajectory",
}
#: The oracle every trajectory is compared with.
ORACLE = "optbridge_conformance.traj_torch:oracle"
#: The "hyperparameter" name of trajectory series (ledger entries may name it).
HYPER = "params"


def register_trajectory(name: str, target: str, *, clobber: bool = False) -> None:
    """Register trajectory backend ``name`` -> ``"module:function"``; refuses to overwrite unless ``clobber``."""
    if name in TRAJECTORY_BACKENDS and not clobber:
        raise ValueError(f"trajectory backend {name!r} is already registered (pass clobber=True to replace it)")
    TRAJECTORY_BACKENDS[name] = target


def _load(target: str, name: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    try:
        fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise BackendUnavailable(f"trajectory backend {name!r} is not available ({e})") from e
    return fn


def get_trajectory(name: str) -> Callable[..., Any] | None:
    """The trajectory function of backend ``name`` (None: the backend has no trajectory runner).

    Raises:
        BackendUnavailable: its framework is not importable here.
    """
    target = TRAJECTORY_BACKENDS.get(name)
    return None if target is None else _load(target, name)


def oracle() -> Callable[..., Any]:
    """torch's trajectory (:data:`ORACLE`)."""
    return _load(ORACLE, "torch (oracle)")


@dataclass(frozen=True)
class Inputs:
    """The initial parameters and gradients of one trajectory case (the same on every backend).

    Attributes:
        init: ``<group>.w -> float32 (size,)`` in column order.
        grads: ``(steps, n_params)`` float32.
        groups: Group names, in column order (group ``i`` owns columns ``i*size .. (i+1)*size - 1``).
        size: Parameters per group.
    """

    init: Mapping[str, np.ndarray]
    grads: np.ndarray
    groups: tuple[str, ...]
    size: int

    def columns(self, group: str) -> slice:
        i = self.groups.index(group)
        return slice(i * self.size, (i + 1) * self.size)

    def start(self) -> np.ndarray:
        """The initial parameters as one ``(n_params,)`` float32 row."""
        return np.concatenate([self.init[n] for n in self.init]).astype(np.float32)


def trained_groups(plan: Plan) -> tuple[str, ...]:
    return tuple(g.name for g in plan.groups if g.frozen != "exclude")


def inputs(case: Case, steps: int) -> Inputs:
    """Initial float32 parameters in [-1, 1) and ``steps`` float32 gradients for ``case`` (deterministic)."""
    spec = case.trajectory
    if spec is None:
        raise ConfigError(case.where, "is not a trajectory case (no trajectory: field)", None, show_value=False)
    groups = trained_groups(case.plan)
    size = int(spec["size"])
    rng = np.random.Generator(np.random.PCG64(int(spec["seed"])))
    init = {f"{g}.w": rng.uniform(-1.0, 1.0, size).astype(np.float32) for g in groups}
    n = size * len(groups)
    scales = np.resize(np.asarray(spec["grad_scales"], dtype=np.float64), size)
    draws = rng.standard_normal((steps, n)) * np.tile(scales, len(groups))
    return Inputs(init, draws.astype(np.float32), groups, size)


# --------------------------------------------------------------------------- comparison

def trajectory_tolerance(backend: str, override: Mapping[str, Any] | None = None, case_id: str = "") -> Tolerance:
    """The float32 bound of ``backend``'s trajectories (``tolerances.yaml``: ``trajectory``), then the case's."""
    from .compare import _make, _table
    t = _table().get("trajectory") or {}
    entry = (t.get("backends") or {}).get(backend) or t.get("default") or {"peak_ulps": 0, "reason": "no entry"}
    tol: Tolerance = _make(entry, "float32", f"tolerances.yaml: trajectory.{backend}" if backend in
                           (t.get("backends") or {}) else "tolerances.yaml: trajectory.default")
    if override:
        tol = tol.merged(override, f"case {case_id}")
    return tol


def measured_worst(backend: str) -> float | None:
    """The worst error (ulps of a parameter's peak) recorded next to ``backend``'s trajectory bound."""
    from .compare import _table
    t = _table().get("trajectory") or {}
    entry = (t.get("backends") or {}).get(backend) or t.get("default") or {}
    m = entry.get("measured")
    return None if m is None else float(m)


def compare_trajectories(want: np.ndarray, got: np.ndarray, ins: Inputs, tol: Tolerance) -> tuple[
        list[SeriesResult], list[str]]:
    """Compare ``got`` with the oracle's ``want`` (both ``(steps, n_params)``), one series per group.

    The error of parameter ``i`` after update ``k`` is ``|got - want|`` (float32 values,
    computed in float64); the bound is ``ulps * ulp32(want) + peak_ulps * ulp32(peak_i)``
    with ``peak_i`` the largest ``|want[:, i]|`` (and the initial value) of that parameter.
    """
    from .compare import SeriesResult, _nanmax, _ulp32
    problems: list[str] = []
    got = np.asarray(got)
    if got.shape != want.shape:
        return [], [f"{HYPER}: shape {got.shape}, expected {want.shape} (updates, parameters)"]
    start = ins.start().astype(np.float64)
    w64, g64 = want.astype(np.float64), got.astype(np.float64)
    out: list[SeriesResult] = []
    for group in ins.groups:
        c = ins.columns(group)
        w, g = w64[:, c], g64[:, c]
        r = SeriesResult(group=group, hyper=HYPER, source="parameters", tolerance=tol, forms=(), max_ulps=0.0)
        peak = np.maximum(np.nanmax(np.abs(w), axis=0), np.abs(start[c]))
        with np.errstate(all="ignore"):
            err = np.abs(g - w)
            bound = tol.ulps * _ulp32(w) + tol.peak_ulps * _ulp32(peak)[None, :]
            same = (g == w) | (np.isnan(g) & np.isnan(w))
            bad = ~same & ~(err <= bound)
            r.max_abs = _nanmax(np.where(same, 0.0, err))
            r.max_rel = _nanmax(np.where(same, 0.0, np.where(w != 0, err / np.abs(w), np.inf)))
            r.max_ulps = _nanmax(np.where(same, 0.0, err / _ulp32(w)))
            r.max_peak = _nanmax(np.where(same, 0.0, err / _ulp32(peak)[None, :]))
            r.worst_ratio = _nanmax(np.where(same, 0.0, np.where(bound > 0, err / bound, np.inf)))
        if bad.any():
            k, i = np.unravel_index(int(np.argmax(bad)), bad.shape)
            r.ok = False
            r.first_step, r.expected, r.got, r.bound = int(k), float(w[k, i]), float(g[k, i]), float(bound[k, i])
            r.n_bad = int(bad.any(axis=1).sum())
            r.note = f"parameter {group}.w[{int(i)}]"
        out.append(r)
    return out, problems


def plot_series(want: np.ndarray, got: np.ndarray, ins: Inputs, steps: int, series: Sequence[SeriesResult] = (),
                points: int = 600) -> dict[str, Any]:
    """The plot payload of a trajectory: per group, its first divergent parameter (else its first), sampled,
    with the steps around each divergence kept, and the worst error over every parameter at each sampled update
    in float32 ulps of that parameter's peak (the unit of the bound; ``plots.py`` draws it)."""
    idx = np.linspace(0, steps - 1, min(points, steps)).astype(np.int64)
    cols = []
    for group in ins.groups:
        c = ins.columns(group).start
        for s in series:
            m = re.search(r"\.w\[(\d+)\]", s.note) if s.group == group and not s.ok else None
            if m is not None and s.first_step is not None:
                c += int(m.group(1))
                idx = np.concatenate([idx, np.arange(max(0, s.first_step - 40), min(steps, s.first_step + 41))])
        cols.append(c)
    idx = np.unique(idx)
    from .compare import _ulp32
    w64, g64 = want.astype(np.float64), got.astype(np.float64)
    peak = np.maximum(np.nanmax(np.abs(w64), axis=0), np.abs(ins.start().astype(np.float64)))
    with np.errstate(all="ignore"):
        worst = np.nanmax(np.abs(g64[idx] - w64[idx]) / _ulp32(peak)[None, :], axis=1)
    return {"groups": list(ins.groups), HYPER: {
        "idx": idx, "ref": want[idx][:, cols].T.astype(np.float64), "got": got[idx][:, cols].T.astype(np.float64),
        "source": "parameters", "first": None, "peak_ulps": worst}}


def run_backend(fn: Callable[..., Any], plan: Plan, steps: int, ins: Inputs,
                metrics: Sequence[float] | None) -> np.ndarray:
    """Call a trajectory function and check its result's shape and dtype."""
    out = np.asarray(fn(plan, steps, ins.init, ins.grads[:steps], metrics=metrics))
    n = ins.size * len(ins.groups)
    if out.shape != (steps, n):
        raise ConfigError("trajectory", f"the backend returned shape {out.shape}, expected ({steps}, {n})", None,
                          show_value=False)
    return out.astype(np.float32, copy=False)
