"""MegEngine objects from a plan and back (imports megengine; loaded lazily by megengine_backend).

What it builds (docs/megengine.md has the full story):

* one real MegEngine optimizer per plan optimizer (SGD, Adam, AdamW, Adagrad,
  Adadelta, LAMB), every group given to the constructor at once: MegEngine creates
  optimizer state only in ``__init__``, so a group added later crashes ``step()``;
* SGD groups that differ in ``nesterov`` go to separate SGD optimizers (MegEngine's
  nesterov is an optimizer attribute; SGD updates are per parameter, so the split
  is exact); ``dampening != 0`` is refused (MegEngine's SGD has none);
* a scheduler per MegEngine optimizer: MegEngine's own ``MultiStepLR`` where it is
  exact (the lr is the only scheduled hyperparameter and every group follows the
  same ``multistep`` node, or a staircase ``exponential`` over a known horizon),
  else :class:`PlanScheduler`, which writes every scheduled hyperparameter (lr,
  momentum, betas, weight_decay, eps, rho, lr_decay) into the groups from values of
  the reference evaluator (:mod:`optbridge.evaluate`, evaluated in chunks);
* per-group gradient clipping with MegEngine's ``clip_grad_norm`` /
  ``clip_grad_value`` (torch's symmetric ``±value`` mapped to ``lower=-value, upper=value``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import megengine as mge
import megengine.optimizer as mopt
import numpy as np
from megengine.optimizer import LRScheduler, MultiStepLR

from optbridge import evaluate, ir
from optbridge.errors import ConfigError, EvaluationError, UnsupportedError
from optbridge.params import ParamRecord, effective_options, resolve
from optbridge.plan import Group, OptimizerSpec, Plan, Selector, hyper_base, scheduled_hypers
from optbridge.report import Fidelity
from optbridge.serialize import node_to_dict
from optbridge.tracing import Trace

__all__ = ["to_megengine", "from_megengine", "trace", "MegEngineSetup", "PlanScheduler",
           "MultipleOptimizer", "MultipleScheduler", "SGD", "LAMB", "BACKEND"]

BACKEND = "megengine"
#: ``form=`` values of :func:`to_megengine`.
FORMS = ("auto", "table")


# --------------------------------------------------------------------------- optimizers

class LAMB(mopt.LAMB):
    """MegEngine's LAMB with its constructor repaired.

    MegEngine 1.13's ``LAMB._create_state`` calls ``_add_state(..., dtype="float32")``,
    but ``Optimizer._add_state`` has no ``dtype`` argument, so ``megengine.optimizer.LAMB(...)``
    raises TypeError for every input (measured). States are float32 by default, so
    dropping the argument is what the code meant; the update itself is MegEngine's.
    """

    def _create_state(self, param_group: dict) -> None:
        for param in param_group["params"]:
            self._add_state(param, "exp_avg")
            self._add_state(param, "exp_avg_sq")
            self._add_state(param, "step", initializer=0.0)


class SGD(mopt.SGD):
    """MegEngine's SGD whose ``load_state_dict`` accepts its own ``state_dict``.

    MegEngine 1.13's ``Optimizer.load_state_dict`` looks up a saved state for every
    parameter, but SGD keeps none for groups without momentum, so
    ``SGD(...).load_state_dict(sgd.state_dict())`` raises KeyError (measured).
    Parameters without saved state get none here; everything else is MegEngine's.
    """

    def load_state_dict(self, state: dict) -> None:
        saved = dict(state["state"])
        for g in state["param_groups"]:
            for i in g["params"]:
                saved.setdefault(i, {})
        super().load_state_dict({**state, "state": saved})
        for p in [p for p, st in self._state.items() if not st]:
            del self._state[p]


#: plan type -> (MegEngine class, the per-group keys it reads besides lr)
OPTIMIZERS: dict[str, tuple[type, tuple[str, ...]]] = {
    "SGD": (SGD, ("momentum", "weight_decay")),
    "Adam": (mopt.Adam, ("betas", "eps", "weight_decay")),
    "AdamW": (mopt.AdamW, ("betas", "eps", "weight_decay")),
    "Adagrad": (mopt.Adagrad, ("lr_decay", "eps", "weight_decay")),
    "Adadelta": (mopt.Adadelta, ("rho", "eps", "weight_decay")),
    "LAMB": (LAMB, ("betas", "eps", "weight_decay")),
}

#: torch options MegEngine has no counterpart for: only torch's default is exact.
_TORCH_ONLY = {
    "SGD": {"dampening": 0.0, "maximize": False},
    "Adam": {"amsgrad": False, "maximize": False},
    "AdamW": {"amsgrad": False, "maximize": False},
    "Adagrad": {"maximize": False},
    "Adadelta": {"maximize": False},
    "LAMB": {},
}
_WHY = {
    "dampening": "MegEngine's SGD has no dampening (its buffer is v = momentum*v + g)",
    "maximize": "MegEngine's optimizers have no maximize flag",
    "amsgrad": "MegEngine's Adam/AdamW have no amsgrad variant",
}

#: hyperparameter -> (group key, index into the key's tuple)
_KEYS = {"lr": ("lr", None), "beta1": ("betas", 0), "beta2": ("betas", 1)}


def _key(hyper: str) -> tuple[str, int | None]:
    return _KEYS.get(hyper, (hyper, None))


def _holdable(typ: str, hyper: str) -> bool:
    key, _ = _key(hyper)
    return key == "lr" or key in OPTIMIZERS[typ][1]


# --------------------------------------------------------------------------- the schedule driver

@dataclass(frozen=True)
class _Row:
    """One scheduled hyperparameter of one MegEngine group."""

    group: int          # index into optimizer.param_groups
    hyper: str
    node: ir.Node
    base: float
    path: str

    @property
    def key(self) -> tuple[str, int | None]:
        return _key(self.hyper)


class PlanScheduler(LRScheduler):
    """Writes every scheduled hyperparameter of an optbridge plan into a MegEngine optimizer's groups.

    A ``megengine.optimizer.LRScheduler``: the constructor writes the values of
    update 0, and each ``step()`` writes those of the next update (call it after
    ``optimizer.step()``, as MegEngine's MultiStepLR). Values come from the
    reference evaluator, :func:`optbridge.evaluate.values`, evaluated over
    ``chunk`` updates at a time, so a step costs a few dict writes. lr, momentum,
    weight_decay, eps, rho and lr_decay are written as Python floats into their
    group keys; beta1/beta2 into the ``betas`` tuple. MegEngine converts them to
    float32 inside ``step()``.

    Plateau schedules need the metric series: give it up front (``metrics=``) or
    one value at a time, ``step(metric=m)`` / :meth:`add_metric`. The metric of
    plateau step ``j`` decides the value of step ``j + 1``. Each new metric re-runs
    the evaluator on the whole history (cost O(history)), which is fine for metrics
    per epoch.

    The step after the last defined update (the one a training loop makes after
    its final ``optimizer.step()``) does not raise when the schedule is undefined
    there (OneCycleLR's end, a table without ``hold``, a missing metric): the
    groups keep their values and the next ``step()`` raises the EvaluationError.

    ``state_dict()`` / ``load_state_dict()`` save and restore the position and the
    metric history (MegEngine's base class raises NotImplementedError for both).
    """

    def __init__(self, optimizer: mopt.Optimizer, rows: Sequence[_Row], *, step_unit: str = "iter",
                 steps_per_epoch: int | None = None, total_steps: int | None = None,
                 metrics: Sequence[float] | None = None, chunk: int = 1024, current_epoch: int = -1,
                 defer_errors: bool = True) -> None:
        if not isinstance(chunk, int) or chunk < 1:
            raise ConfigError("chunk", "must be a positive integer", chunk)
        self.rows: tuple[_Row, ...] = tuple(rows)
        self.step_unit = step_unit
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.chunk = chunk
        self.defer_errors = defer_errors
        self._metrics: list[float] = [float(m) for m in metrics] if metrics is not None else []
        self._pending: EvaluationError | None = None
        self._lo = self._hi = 0
        self._scalar: list[tuple[dict, str, list[float]]] = []
        self._betas: list[tuple[dict, list[float] | None, list[float] | None, float, float]] = []
        self._plateaus = [r.node for r in self.rows if isinstance(r.node, ir.Plateau)]
        self._fingerprint = _fingerprint(self.rows, step_unit, steps_per_epoch, total_steps)
        super().__init__(optimizer, current_epoch)

    # -- MegEngine's LRScheduler interface
    def step(self, epoch: int | None = None, metric: float | None = None) -> None:
        """Move to the next update (or to ``epoch``) and write its values into the groups."""
        if metric is not None:
            self.add_metric(metric)
        t = self.current_epoch + 1 if epoch is None else int(epoch)
        self.current_epoch = t
        try:
            self._write(t)
        except EvaluationError as e:
            if self.defer_errors and self._pending is None and t > 0:
                self._pending = e  # the post-final step of a training loop: raise only if stepped again
                return
            first, self._pending = self._pending, None
            if first is not None:
                raise first from None  # the first undefined update is the cause
            raise
        self._pending = None

    def get_lr(self) -> list[float]:
        """The lr of every group (as written for the current update)."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"current_epoch": self.current_epoch, "metrics": list(self._metrics),
                "fingerprint": self._fingerprint}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        for key in ("current_epoch", "metrics", "fingerprint"):
            if key not in state_dict:
                raise KeyError(f"key {key!r} is not specified in state_dict when loading state dict")
        if state_dict["fingerprint"] != self._fingerprint:
            raise ConfigError("scheduler.state_dict", "was saved by a PlanScheduler driving other schedules "
                              "(a different plan, group order or clock)", state_dict["fingerprint"], show_value=False)
        self._metrics = [float(m) for m in state_dict["metrics"]]
        self._lo = self._hi = 0
        self._pending = None
        self.current_epoch = int(state_dict["current_epoch"])
        if self.current_epoch >= 0:
            self._write(self.current_epoch)

    # -- metrics
    def add_metric(self, value: float) -> None:
        """Append the metric observed after the latest plateau step."""
        self._metrics.append(float(value))

    @property
    def metrics(self) -> tuple[float, ...]:
        return tuple(self._metrics)

    def schedules(self) -> tuple[dict[int, dict[str, ir.Node]], dict[int, dict[str, float]]]:
        """``({group index: {hyper: node}}, {group index: {hyper: base}})`` (used by from_megengine)."""
        nodes: dict[int, dict[str, ir.Node]] = {}
        bases: dict[int, dict[str, float]] = {}
        for r in self.rows:
            nodes.setdefault(r.group, {})[r.hyper] = r.node
            bases.setdefault(r.group, {})[r.hyper] = r.base
        return nodes, bases

    # -- internals
    def _write(self, t: int) -> None:
        if not (self._lo <= t < self._hi):
            self._fill(t)
        i = t - self._lo
        for gd, key, vals in self._scalar:
            gd[key] = vals[i]
        for gd, b1, b2, f1, f2 in self._betas:
            gd["betas"] = (b1[i] if b1 is not None else f1, b2[i] if b2 is not None else f2)

    def _plateau_end(self) -> int:
        """First update whose plateau value needs a metric not given yet."""
        node = self._plateaus[0]
        unit = node.unit or self.step_unit
        per = (self.steps_per_epoch or 1) if unit == "epoch" else 1
        return (len(self._metrics) + 1) * per

    def _fill(self, t: int) -> None:
        if t < 0:
            raise EvaluationError(f"PlanScheduler: update index must be >= 0, got {t}")
        if not self.rows:
            self._lo, self._hi, self._scalar, self._betas = t, t + 2**62, [], []
            return
        end = t + self.chunk
        if self.total_steps is not None:
            if t > self.total_steps:
                raise EvaluationError(f"the plan is defined for {self.total_steps} steps (total_steps); "
                                      f"the scheduler was stepped to update {t}")
            end = min(end, self.total_steps + 1)
        if self._plateaus:
            avail = self._plateau_end()
            if t >= avail:
                path = next(r.path for r in self.rows if isinstance(r.node, ir.Plateau))
                raise EvaluationError(
                    f"{path}: the plateau value of update {t} needs {t // (avail // (len(self._metrics) + 1))} "
                    f"metric(s), got {len(self._metrics)} "
                    "(pass metrics= up front, or call scheduler.step(metric=m) after each plateau step)")
            end = min(end, avail)
        size = end - t
        while True:
            try:
                values = self._evaluate(t, t + size)
                break
            except EvaluationError:
                if size == 1:
                    raise
                size = max(1, size // 8)  # the schedule may end inside the chunk: retry shorter
        self._lo, self._hi = t, t + size
        groups = self.optimizer.param_groups
        scalar, betas = [], {}
        for r, vals in zip(self.rows, values):
            key, idx = r.key
            if idx is None:
                scalar.append((groups[r.group], key, vals))
            else:
                betas.setdefault(r.group, [None, None])[idx] = vals
        self._scalar = scalar
        self._betas = []
        for gi, (b1, b2) in betas.items():
            f1, f2 = self._fixed_betas(gi)
            self._betas.append((groups[gi], b1, b2, f1, f2))

    def _fixed_betas(self, gi: int) -> tuple[float, float]:
        # the unscheduled component keeps its base (the group's value when the scheduler was made)
        if not hasattr(self, "_beta_base"):
            self._beta_base = {i: tuple(g.get("betas", (0.0, 0.0))) for i, g in enumerate(self.optimizer.param_groups)}
        b = self._beta_base[gi]
        return float(b[0]), float(b[1])

    def _evaluate(self, lo: int, hi: int) -> list[list[float]]:
        metrics = np.asarray(self._metrics, dtype=np.float64) if self._plateaus else None
        slots = [(r.node, r.base, r.path) for r in self.rows]
        return evaluate.table(slots, lo, hi - lo, unit=self.step_unit, steps_per_epoch=self.steps_per_epoch,
                              metrics=metrics).tolist()


def _fingerprint(rows: Sequence[_Row], unit: str, spe: int | None, total: int | None) -> str:
    doc = {"clock": [unit, spe, total],
           "rows": [[r.group, r.hyper, node_to_dict(r.node), repr(r.base), r.path] for r in rows]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- several optimizers / schedulers

class MultipleOptimizer:
    """Several MegEngine optimizers stepped together (the ``MultipleOptimizer`` of MegEngine's guide)."""

    def __init__(self, *opts: mopt.Optimizer) -> None:
        self.opts = tuple(opts)

    @property
    def optimizers(self) -> tuple[mopt.Optimizer, ...]:
        return self.opts

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.opts for g in o.param_groups]

    def step(self) -> MultipleOptimizer:
        for o in self.opts:
            o.step()
        return self

    def clear_grad(self) -> None:
        for o in self.opts:
            o.clear_grad()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.opts]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        states = state["optimizers"]
        if len(states) != len(self.opts):
            raise ValueError(f"state holds {len(states)} optimizers, this MultipleOptimizer has {len(self.opts)}")
        for o, s in zip(self.opts, states):
            o.load_state_dict(s)


class MultipleScheduler:
    """The schedulers of several optimizers stepped together."""

    def __init__(self, *schedulers: LRScheduler) -> None:
        self.schedulers = tuple(schedulers)

    @property
    def current_epoch(self) -> int:
        return self.schedulers[0].current_epoch

    def step(self, epoch: int | None = None, metric: float | None = None) -> None:
        for s in self.schedulers:
            if isinstance(s, PlanScheduler):
                s.step(epoch, metric=metric)
            else:
                s.step(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        states = state["schedulers"]
        if len(states) != len(self.schedulers):
            raise ValueError(f"state holds {len(states)} schedulers, this MultipleScheduler has {len(self.schedulers)}")
        for s, st in zip(self.schedulers, states):
            s.load_state_dict(st)


# --------------------------------------------------------------------------- the result

@dataclass(frozen=True)
class MegEngineSetup:
    """What :func:`to_megengine` builds.

    Attributes:
        plan: The plan.
        optimizers: The MegEngine optimizers (one per plan optimizer; an SGD whose
            groups differ in nesterov becomes two).
        schedulers: One scheduler per optimizer (``MultiStepLR`` or :class:`PlanScheduler`).
        optimizer: The optimizer, or a :class:`MultipleOptimizer` over several.
        scheduler: The scheduler, or a :class:`MultipleScheduler` over several.
        gradmanager_params: Parameters to attach to the GradManager: everything in
            an optimizer (``frozen: exclude`` parameters are in neither).
        excluded: Names of the ``frozen: exclude`` parameters.
        fidelity: How each group's hyperparameters reached MegEngine.
        groups: Group name -> ``(optimizer index, param_groups index)``.
    """

    plan: Plan
    optimizers: tuple[Any, ...]
    schedulers: tuple[Any, ...]
    optimizer: Any
    scheduler: Any
    gradmanager_params: tuple[Any, ...]
    excluded: tuple[str, ...]
    fidelity: tuple[Fidelity, ...]
    groups: Mapping[str, tuple[int, int]]
    clips: tuple[tuple[str, tuple[Any, ...], Any], ...] = field(default=(), repr=False)

    def param_group(self, name: str) -> dict:
        """The MegEngine param group dict of plan group ``name``."""
        oi, gi = self.groups[name]
        return self.optimizers[oi].param_groups[gi]

    def clip_gradients(self) -> dict[str, float]:
        """Clip each group's gradients as its plan says; call after backward, before ``step()``.

        ``max_norm`` uses ``megengine.optimizer.clip_grad_norm`` (the same formula as
        torch's ``clip_grad_norm_``: scale ``min(max_norm / (total + 1e-6), 1)``);
        ``value`` uses ``clip_grad_value(lower=-value, upper=value)`` (MegEngine's
        range is asymmetric, torch's ``clip_grad_value_`` symmetric).

        Returns:
            Group name -> total gradient norm before clipping, for ``max_norm`` groups.
        """
        norms: dict[str, float] = {}
        for name, params, clip in self.clips:
            if clip.max_norm is not None:
                n = mopt.clip_grad_norm(list(params), max_norm=clip.max_norm, ord=clip.norm_type)
                norms[name] = float(np.asarray(n.numpy()).reshape(-1)[0])
            else:
                mopt.clip_grad_value(list(params), lower=-clip.value, upper=clip.value)
        return norms


# --------------------------------------------------------------------------- building

@dataclass
class _Slot:
    group: Group
    spec: OptimizerSpec
    params: list[Any]
    options: dict[str, Any]


@dataclass
class _Built:
    spec: OptimizerSpec
    slots: list[_Slot]
    optimizer: Any
    scheduler: Any
    rows: list[_Row]
    native: tuple[list[int], float] | None


def _check_options(spec: OptimizerSpec, g: Group, eff: Mapping[str, Any]) -> None:
    for key, default in _TORCH_ONLY[spec.type].items():
        v = eff.get(key, default)
        if v is not None and v != default:
            raise UnsupportedError(f"groups.{g.name}.{key}", BACKEND, f"{_WHY[key]}; only {key}={default!r} is exact, got {v!r}")


def _group_dict(spec: OptimizerSpec, slot: _Slot, plan: Plan) -> dict[str, Any]:
    eff = slot.options
    gd: dict[str, Any] = {"params": list(slot.params), "name": slot.group.name, "lr": float(eff["lr"])}
    for key in OPTIMIZERS[spec.type][1]:
        v = eff[key]
        gd[key] = (float(v[0]), float(v[1])) if key == "betas" else float(v)
    if spec.type == "SGD" and gd["momentum"] == 0.0 and plan.schedule_for(slot.group, "momentum") is not None:
        # MegEngine creates the momentum buffer only for groups whose momentum is non-zero in the
        # constructor; a momentum scheduled up from 0 would hit a KeyError in step(). The scheduler
        # writes the scheduled value before the first update, and a zero buffer equals torch's
        # "no buffer yet" (its first buffer is the gradient, as MegEngine's 1*0 + g).
        gd["momentum"] = 1.0
    return gd


def _native_multistep(plan: Plan, rows: list[_Row], slots: list[_Slot], horizon: int | None) -> tuple[list[int], float, str] | None:
    """(milestones, gamma, detail) when MegEngine's MultiStepLR reproduces these rows exactly."""
    if not rows or any(r.hyper != "lr" for r in rows):
        return None
    lr_groups = {r.group for r in rows}
    for i, s in enumerate(slots):
        if i not in lr_groups and s.group.frozen != "zero_lr":
            return None  # MultiStepLR would decay an unscheduled group too
    node = rows[0].node
    if any(r.node != node for r in rows):
        return None
    unit = node.unit or plan.step_unit
    scale = (plan.steps_per_epoch or 1) if unit == "epoch" else 1
    if isinstance(node, ir.MultiStep):
        ms = [int(m) * scale for m in node.milestones]
        return ms, float(node.gamma), f"megengine.optimizer.MultiStepLR(milestones={_short_list(ms)}, gamma={node.gamma!r})"
    if isinstance(node, ir.Exponential) and node.stair and horizon is not None:
        every = node.every * scale
        count = horizon // every
        if count > 100_000:
            return None
        ms = [every * j for j in range(1, count + 1)]
        return ms, float(node.gamma), (f"megengine.optimizer.MultiStepLR(milestones={_short_list(ms)}, gamma={node.gamma!r}): "
                                       f"the staircase exponential, exact for updates 0..{horizon}")
    return None


def _short_list(xs: Sequence[int], n: int = 6) -> str:
    return str(list(xs)) if len(xs) <= n else "[" + ", ".join(map(str, xs[:n])) + f", ... ({len(xs)} milestones)]"


def _build(plan: Plan, bind: Mapping[str, Sequence[Any]], *, horizon: int | None = None,
           metrics: Sequence[float] | None = None, native: bool = True, split_nesterov: bool = True,
           strict: bool = False, chunk: int = 1024, defer_errors: bool = True) -> tuple[list[_Built], list[Fidelity]]:
    hypers = scheduled_hypers(plan)
    fid: list[Fidelity] = []
    built: list[_Built] = []
    horizon = horizon if horizon is not None else plan.total_steps
    for oi, spec in enumerate(plan.optimizers):
        if spec.type not in OPTIMIZERS:
            where = "optimizer.type" if len(plan.optimizers) == 1 else f"optimizers[{oi}].type"
            raise UnsupportedError(where, BACKEND, f"MegEngine 1.13 has no {spec.type} optimizer "
                                   f"(it has {', '.join(OPTIMIZERS)})")
        slots: list[_Slot] = []
        for g in spec.groups:
            if g.frozen == "exclude":
                continue
            eff = effective_options(plan, g)
            _check_options(spec, g, eff)
            slots.append(_Slot(g, spec, list(bind[g.name]), eff))
        if not slots:
            continue
        parts: list[tuple[bool, list[_Slot]]] = []
        if spec.type == "SGD":
            for s in slots:
                flag = bool(s.options.get("nesterov") or False)
                for f, lst in parts:
                    if f == flag:
                        lst.append(s)
                        break
                else:
                    parts.append((flag, [s]))
            if len(parts) > 1 and not split_nesterov:
                a, b = parts[0][1][0].group.name, parts[1][1][0].group.name
                raise UnsupportedError(f"groups.{b}.nesterov", BACKEND,
                                       f"MegEngine's SGD takes nesterov per optimizer, not per group, and groups {a!r} "
                                       f"and {b!r} differ (split_nesterov=True runs them in separate SGD optimizers)")
        else:
            parts.append((False, slots))
        for pi, (flag, pslots) in enumerate(parts):
            b = _build_one(plan, spec, pslots, flag, hypers, horizon=horizon, metrics=metrics, native=native,
                           strict=strict, chunk=chunk, defer_errors=defer_errors, fid=fid)
            built.append(b)
            if len(parts) > 1:
                for s in pslots:
                    fid.append(Fidelity(BACKEND, s.group.name, "nesterov", "native",
                                        f"SGD(nesterov={flag}), optimizer {pi + 1} of {len(parts)}: MegEngine's nesterov is "
                                        f"per optimizer, so {spec.name!r} is split by nesterov (exact: SGD updates each "
                                        "parameter on its own)"))
    return built, fid


def _build_one(plan: Plan, spec: OptimizerSpec, slots: list[_Slot], nesterov: bool, hypers: Sequence[str], *,
               horizon: int | None, metrics: Sequence[float] | None, native: bool, strict: bool, chunk: int,
               defer_errors: bool, fid: list[Fidelity]) -> _Built:
    cls, _ = OPTIMIZERS[spec.type]
    gds = [_group_dict(spec, s, plan) for s in slots]
    ctor: dict[str, Any] = {"lr": float(spec.option("lr"))}
    if spec.type == "SGD":
        # ctor defaults are only setdefault-ed into groups that lack a key; every group sets all keys
        ctor["momentum"] = max(gd["momentum"] for gd in gds) or (1.0 if nesterov else 0.0)
        ctor["nesterov"] = nesterov
    opt = cls(gds, **ctor)  # every group at once: MegEngine creates optimizer state only here
    opt._optbridge_name = spec.name  # read back by from_megengine
    if spec.type == "Adagrad":
        for s in slots:
            v = float(s.options.get("initial_accumulator_value", 0.0) or 0.0)
            if v:
                for p in s.params:
                    opt._state[p]["square_avg"]._reset(mge.tensor(np.full(p.shape, v, np.float32)))
        for s in slots:
            note = ("MegEngine's Adagrad divides by sqrt(sum + eps), torch's by sqrt(sum) + eps: the same to float32 "
                    "noise while the squared-gradient sum is far above eps (gradients above ~1e-4 for eps=1e-10), "
                    "different for tiny gradients")
            if strict:
                raise UnsupportedError(f"groups.{s.group.name}.eps", BACKEND, note)
            fid.append(Fidelity(BACKEND, s.group.name, "eps", "unsupported", note))

    rows: list[_Row] = []
    for gi, s in enumerate(slots):
        g = s.group
        for h in hypers:
            node = plan.schedule_for(g, h)
            path = f"groups.{g.name}.schedule.{h}" if h in g.schedule else f"schedule.{h}"
            if h == "lr" and g.frozen == "zero_lr":
                fid.append(Fidelity(BACKEND, g.name, h, "native", "frozen: zero_lr, param_group['lr'] = 0.0"))
                continue
            if node is None:
                if h == "lr":
                    fid.append(Fidelity(BACKEND, g.name, h, "native", "fixed param_group['lr'] (no schedule)"))
                continue
            base = hyper_base(plan, g, h, path=path)  # the reference's base (and its error for a missing key)
            if not _holdable(spec.type, h):
                raise UnsupportedError(path, BACKEND, f"MegEngine's {spec.type} keeps no per-group {h!r} to schedule "
                                       f"(its groups hold lr, {', '.join(OPTIMIZERS[spec.type][1])})")
            rows.append(_Row(gi, h, node, base, path))

    nat = _native_multistep(plan, rows, slots, horizon) if native else None
    if nat is not None:
        milestones, gamma, detail = nat
        sched: Any = MultiStepLR(opt, milestones, gamma)
        for r in rows:
            fid.append(Fidelity(BACKEND, slots[r.group].group.name, r.hyper, "native", detail))
        native_spec: tuple[list[int], float] | None = (milestones, gamma)
    else:
        sched = PlanScheduler(opt, rows, step_unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                              total_steps=plan.total_steps, metrics=metrics, chunk=chunk, defer_errors=defer_errors)
        for r in rows:
            key, idx = r.key
            where = f"param_group[{key!r}]" + (f"[{idx}]" if idx is not None else "")
            fid.append(Fidelity(BACKEND, slots[r.group].group.name, r.hyper, "table",
                                f"{r.node.kind}: reference values written to {where} before each step by PlanScheduler"))
        native_spec = None
    return _Built(spec, slots, opt, sched, rows, native_spec)


def _setup(plan: Plan, built: list[_Built], fid: list[Fidelity], excluded: Sequence[str]) -> MegEngineSetup:
    opts = tuple(b.optimizer for b in built)
    scheds = tuple(b.scheduler for b in built)
    groups: dict[str, tuple[int, int]] = {}
    params: list[Any] = []
    clips = []
    for oi, b in enumerate(built):
        for gi, s in enumerate(b.slots):
            groups[s.group.name] = (oi, gi)
            params.extend(s.params)
            if s.group.clip is not None:
                clips.append((s.group.name, tuple(s.params), s.group.clip))
    order = {g.name: i for i, g in enumerate(plan.groups)}
    clips.sort(key=lambda c: order[c[0]])
    optimizer = opts[0] if len(opts) == 1 else MultipleOptimizer(*opts)
    scheduler = scheds[0] if len(scheds) == 1 else MultipleScheduler(*scheds)
    return MegEngineSetup(plan, opts, scheds, optimizer, scheduler, tuple(params), tuple(excluded),
                          tuple(fid), groups, tuple(clips))


def _named_params(module: Any) -> tuple[list[tuple[str, Any]], dict[str, str]]:
    """``[(name, Parameter)]`` and ``{name: owner module type}`` from a Module, mapping or pairs."""
    owners: dict[str, str] = {}
    if hasattr(module, "named_parameters"):
        named = list(module.named_parameters())
        if hasattr(module, "named_modules"):
            mods = {n: type(m).__name__ for n, m in module.named_modules()}
            for n, _ in named:
                owners[n] = mods.get(n.rsplit(".", 1)[0] if "." in n else "", "")
    elif isinstance(module, Mapping):
        named = list(module.items())
    elif isinstance(module, Iterable):
        named = [tuple(x) for x in module]
    else:
        raise ConfigError("module", "must be a megengine Module, a mapping name -> Parameter or (name, Parameter) pairs",
                          type(module).__name__)
    for n, p in named:
        if not isinstance(p, mge.Parameter):
            raise ConfigError(f"module.{n}", "must be a megengine Parameter", type(p).__name__)
    return named, owners


def to_megengine(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
                 metrics: Sequence[float] | None = None, split_nesterov: bool = True,
                 strict: bool = False) -> MegEngineSetup:
    """See :func:`optbridge.to_megengine`."""
    form = ir.check_choice("form", "auto" if form is None else form, FORMS)
    named, owners = _named_params(model)
    records = [ParamRecord(n, tuple(p.shape), owners.get(n, ""), id(p)) for n, p in named]
    by_name = dict(named)
    res = resolve(plan, records)
    bind = {rg.name: [by_name[n] for n in rg.params] for rg in res.groups}
    built, fid = _build(plan, bind, horizon=total_steps, metrics=metrics, native=form == "auto",
                        split_nesterov=split_nesterov, strict=strict)
    return _setup(plan, built, fid, res.excluded)


# --------------------------------------------------------------------------- trace

def trace(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, native: bool = True,
          chunk: int = 1024, split_nesterov: bool = True) -> Trace:
    """The MegEngine trace (docs/adapters.md, rule 4), in this interpreter.

    One float32 probe parameter of shape (1,) per group, bound to the plan's groups
    directly. Each update ``k``: read every scheduled hyperparameter from the
    groups (``data``), give every probe gradient 1, clip, ``optimizer.step()``; in
    a mirror of every optimizer as plain SGD (no momentum, no weight decay) driven
    by the same scheduler mechanism (MultiStepLR or PlanScheduler with the same lr
    rows), reset the probe to 0, step with gradient 1 and record ``-probe``
    (``applied["lr"]`` = float32(lr)); then ``scheduler.step()``.
    """
    groups = [g for g in plan.groups if g.frozen != "exclude"]
    if not groups:
        raise ConfigError("groups", "every group is frozen: exclude, so there is nothing to trace", [])
    probes = {g.name: [mge.Parameter(np.zeros(1, np.float32))] for g in groups}
    built, fid = _build(plan, probes, horizon=steps, metrics=metrics, native=native,
                        split_nesterov=split_nesterov, chunk=chunk, defer_errors=False)
    setup = _setup(plan, built, fid, ())
    mirror_opts, mirror_scheds, mirror_probes = [], [], {}
    for b in built:
        gds = []
        for s in b.slots:
            p = mge.Parameter(np.zeros(1, np.float32))
            mirror_probes[s.group.name] = p
            gds.append({"params": [p], "name": s.group.name, "lr": float(s.options["lr"]),
                        "momentum": 0.0, "weight_decay": 0.0})
        o = mopt.SGD(gds, lr=float(b.spec.option("lr")))
        if b.native is not None:
            sch: Any = MultiStepLR(o, b.native[0], b.native[1])
        else:
            sch = PlanScheduler(o, [r for r in b.rows if r.hyper == "lr"], step_unit=plan.step_unit,
                                steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total_steps,
                                metrics=metrics, chunk=chunk, defer_errors=False)
        mirror_opts.append(o)
        mirror_scheds.append(sch)

    hypers = scheduled_hypers(plan)
    data = {h: np.empty((len(groups), steps)) for h in hypers}
    applied = np.empty((len(groups), steps))
    readers = []
    for row, g in enumerate(groups):
        gd = setup.param_group(g.name)
        items = []
        for h in hypers:
            key, idx = _key(h)
            if key not in gd:  # a torch-only key MegEngine never reads, unscheduled here: its constant base
                path = f"groups.{g.name}.schedule.{h}" if h in g.schedule else f"schedule.{h}"
                data[h][row, :] = hyper_base(plan, g, h, path=path)
                continue
            items.append((data[h][row], key, idx))
        readers.append((gd, items))
    real_probes = [probes[g.name][0] for g in groups]
    mprobes = [mirror_probes[g.name] for g in groups]
    one = mge.tensor(np.ones(1, np.float32))
    zero = np.zeros(1, np.float32)
    scheds = list(setup.schedulers) + mirror_scheds
    for k in range(steps):
        for gd, items in readers:
            for arr, key, idx in items:
                v = gd[key]
                arr[k] = v if idx is None else v[idx]
        for p in real_probes:
            p.grad = one
        setup.clip_gradients()
        for o in setup.optimizers:
            o.step()
        for p in mprobes:
            p[...] = mge.tensor(zero)
            p.grad = one
        for o in mirror_opts:
            o.step()
        for row, p in enumerate(mprobes):
            applied[row, k] = 0.0 - float(p.numpy()[0])
        if k + 1 < steps:
            for s in scheds:
                s.step()
    return Trace(tuple(g.name for g in groups), data, BACKEND, tuple(fid), {"lr": applied})


# --------------------------------------------------------------------------- from MegEngine

def _type_name(o: Any) -> str:
    if isinstance(o, mopt.LAMBFp16):
        raise UnsupportedError(type(o).__name__, BACKEND, "LAMBFp16 keeps float16 parameters with float32 copies; "
                               "optbridge plans describe float32 training")
    for name, cls in (("AdamW", mopt.AdamW), ("Adam", mopt.Adam), ("SGD", mopt.SGD), ("Adagrad", mopt.Adagrad),
                      ("Adadelta", mopt.Adadelta), ("LAMB", mopt.LAMB)):
        if isinstance(o, cls):
            return name
    raise UnsupportedError(type(o).__name__, BACKEND, "only SGD, Adam, AdamW, Adagrad, Adadelta and LAMB can be read")


def _as_list(x: Any, attrs: tuple[str, ...]) -> list[Any]:
    if x is None:
        return []
    for a in attrs:
        inner = getattr(x, a, None)
        if isinstance(inner, (list, tuple)):
            return [y for i in inner for y in _as_list(i, attrs)]
    if isinstance(x, (list, tuple)):
        return [y for i in x for y in _as_list(i, attrs)]
    return [x]


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def from_megengine(optimizer: Any, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
                   steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """See :func:`optbridge.from_megengine`."""
    ir.check_choice("step_unit", step_unit, ir.UNITS)
    module, description = model, None
    opts = _as_list(optimizer, ("opts", "optimizers"))
    if not opts or not all(isinstance(o, mopt.Optimizer) for o in opts):
        raise ConfigError("optimizer", "must be a MegEngine optimizer, a list of them or a MultipleOptimizer",
                          type(optimizer).__name__)
    scheds = _as_list(scheduler, ("schedulers",))
    by_opt: dict[int, Any] = {}
    for s in scheds:
        if not isinstance(s, LRScheduler):
            raise ConfigError("scheduler", "must be a MegEngine LRScheduler", type(s).__name__)
        if not any(s.optimizer is o for o in opts):
            raise ConfigError("scheduler", "drives an optimizer that is not among the given optimizers", type(s).__name__)
        if id(s.optimizer) in by_opt:
            raise UnsupportedError("scheduler", BACKEND, "two schedulers drive one optimizer; optbridge reads one each")
        by_opt[id(s.optimizer)] = s

    names: dict[int, str] | None = None
    named: list[tuple[str, Any]] = []
    if module is not None:
        named, _ = _named_params(module)
        names = {id(p): n for n, p in named}

    clock: tuple[str, int | None, int | None] | None = None
    specs: list[dict[str, Any]] = []
    used: set[str] = set()
    seen_params: set[int] = set()
    for oi, o in enumerate(opts):
        typ = _type_name(o)
        s = by_opt.get(id(o))
        nodes: dict[int, dict[str, ir.Node]] = {}
        bases: dict[int, dict[str, float]] = {}
        if s is None:
            pass
        elif isinstance(s, PlanScheduler):
            nodes, bases = s.schedules()
            c = (s.step_unit, s.steps_per_epoch, s.total_steps)
            if clock is not None and c != clock:
                raise UnsupportedError("scheduler", BACKEND, f"the schedulers run on different clocks ({clock} and {c})")
            clock = c
        elif type(s) is MultiStepLR:
            node = ir.MultiStep(milestones=tuple(int(m) for m in s.milestones), gamma=float(s.gamma))
            for gi, gd in enumerate(o.param_groups):
                nodes[gi] = {"lr": node}
                bases[gi] = {"lr": float(gd.get("initial_lr", gd["lr"]))}
        else:
            raise UnsupportedError(type(s).__name__, BACKEND, "only MultiStepLR and optbridge's PlanScheduler can be "
                                   "read back (other LRScheduler subclasses are arbitrary Python code)")
        groups = []
        for gi, gd in enumerate(o.param_groups):
            gname = gd.get("name")
            if not isinstance(gname, str) or not gname or gname in used:
                gname = f"group{len(used)}"
                while gname in used:
                    gname += "_"
            used.add(gname)
            base = bases.get(gi, {})
            options: dict[str, Any] = {"lr": base.get("lr", float(gd["lr"]))}
            for key in OPTIMIZERS[typ][1]:
                if key == "betas":
                    b1, b2 = gd["betas"]
                    options["betas"] = (base.get("beta1", float(b1)), base.get("beta2", float(b2)))
                else:
                    options[key] = base.get(key, float(gd[key]))
            if typ == "SGD" and o.nesterov:
                options["nesterov"] = True
            select: tuple[Selector, ...] = ()
            if names is not None:
                missing = [p for p in gd["params"] if id(p) not in names]
                if missing:
                    raise ConfigError(f"optimizer.param_groups[{gi}].params", "holds a parameter that is not in module",
                                      f"{len(missing)} parameter(s)", show_value=False)
                select = (Selector(names=tuple(_glob_escape(names[id(p)]) for p in gd["params"])),)
            seen_params.update(id(p) for p in gd["params"])
            groups.append(Group(name=gname, select=select, options=options, schedule=nodes.get(gi, {})))
        oname = getattr(o, "_optbridge_name", None)
        target = next((sp for sp in specs if oname is not None and sp["name"] == oname and sp["type"] == typ), None)
        if target is not None:  # an SGD that to_megengine split by nesterov: one optimizer again
            target["groups"].extend(groups)
            continue
        if not isinstance(oname, str) or not oname or any(sp["name"] == oname for sp in specs):
            oname = "optimizer" if len(opts) == 1 else f"optimizer{oi}"
        specs.append({"name": oname, "type": typ, "groups": groups, "lr": float(o._defaults.get("lr", 0.0) or 0.0)})

    if names is not None:
        rest = [n for n, p in named if id(p) not in seen_params]
        if rest:
            gname = "excluded"
            while gname in used:
                gname += "_"
            specs[0]["groups"].append(Group(name=gname, select=(Selector(names=tuple(_glob_escape(n) for n in rest)),),
                                            frozen="exclude"))

    all_groups = [g for sp in specs for g in sp["groups"] if g.frozen != "exclude"]
    plan_schedule: dict[str, ir.Node] = {}
    first = dict(all_groups[0].schedule) if all_groups else {}
    if first and all(dict(g.schedule) == first for g in all_groups):
        plan_schedule = first  # every group follows the same schedules: write them once, plan-wide
        for sp in specs:
            sp["groups"] = [Group(name=g.name, select=g.select, options=g.options, frozen=g.frozen, clip=g.clip)
                            for g in sp["groups"]]
    optimizers = tuple(OptimizerSpec(type=sp["type"], name=sp["name"], options={"lr": sp["lr"]},
                                     groups=tuple(sp["groups"])) for sp in specs)
    unit, spe, total = clock if clock is not None else (step_unit, steps_per_epoch, total_steps)
    return Plan(optimizers=optimizers, schedule=plan_schedule, step_unit=unit, steps_per_epoch=spe,
                total_steps=total, description=description)
