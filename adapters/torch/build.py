"""Plan -> real torch objects: optimizers, schedulers, and the setup that holds them.

:func:`build` turns a plan and its parameters (already assigned to groups) into
torch optimizers and one scheduler object, choosing per optimizer and
hyperparameter between

* torch's own scheduler classes (:mod:`optbridge_adapters.torch.forms`) where one
  computes the schedule exactly (fidelity ``native``), and
* :class:`PlanScheduler`, which writes the reference evaluator's values
  (:func:`optbridge.evaluate.values`, computed 4096 steps at a time) into the
  param groups (fidelity ``table``: values precomputed by the reference and written
  per step, as ``docs/adapters.md`` defines the forms).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from optbridge import evaluate, ir
from optbridge.errors import ConfigError, EvaluationError, UnsupportedError
from optbridge.params import ParamRecord, Resolution, effective_options, resolve
from optbridge.plan import OPTIMIZER_DEFAULTS, Group, OptimizerSpec, Plan, has_hyper, hyper_base, scheduled_hypers
from optbridge.report import Fidelity
from optbridge.serialize import to_dict

from .forms import NotNative, Spec, construct, lower_lr, pair_momentum

__all__ = ["to_torch", "model_records", "PlanScheduler", "SetupScheduler", "TorchSetup", "Slot", "Entry", "build", "step_scheduler", "plan_hash",
           "CHUNK"]

BACKEND = "torch"
CHUNK = 4096
#: ``form=`` values of :func:`to_torch`.
FORMS = ("auto", "table")

_NO_TORCH = {
    "LAMB": "torch 2.13 has no LAMB optimizer (torch.optim has no layer-wise trust ratio)",
    "Lion": "torch 2.13 has no Lion optimizer",
    "AdamWeightDecay": "MindSpore's nn.AdamWeightDecay has no bias correction (and eps 1e-6); torch.optim.AdamW "
                       "bias-corrects, so it is a different update (semantics.md §5)",
}


def plan_hash(plan: Plan) -> str:
    """A stable hash of the plan's canonical document (schedulers' state records it)."""
    text = json.dumps(to_dict(plan), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(group: Mapping[str, Any], hyper: str) -> float:
    if hyper == "beta1":
        return float(group["betas"][0])
    if hyper == "beta2":
        return float(group["betas"][1])
    return float(group[hyper])


# --------------------------------------------------------------------------- the table scheduler

@dataclass
class Slot:
    """One generated (group, hyperparameter): its node, base value and config path."""

    group: int
    hyper: str
    node: ir.Node
    base: float
    path: str


class PlanScheduler(LRScheduler):
    """A torch scheduler that writes the reference evaluator's values for any hyperparameter.

    Each ``step()`` writes, for every slot (group, hyperparameter), the value
    ``optbridge.evaluate.values`` gives for the next update; values are computed
    ``chunk`` steps at a time (vectorised), so a step costs a few dict writes.
    ``beta1``/``beta2`` write ``group['betas']``. The state is the step counter and
    the plan's hash; the plan itself is data, so ``load_state_dict`` into a fresh
    setup of the same plan continues exactly (it also writes the values of the
    restored step into the groups).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, slots: list[Slot], *, plan_hash: str, unit: str,
                 steps_per_epoch: int | None, total_steps: int | None, chunk: int = CHUNK) -> None:
        self.plan_hash = plan_hash
        self._unit, self._spe, self._total, self._chunk = unit, steps_per_epoch, total_steps, int(chunk)
        self._slots = [(s.node, s.base, s.path) for s in slots]
        # group indices, not dicts: optimizer.load_state_dict() replaces the group dicts
        self._scalar = [(s.group, s.hyper, j) for j, s in enumerate(slots) if s.hyper not in ("beta1", "beta2")]
        betas: dict[int, list[int | None]] = {}
        for j, s in enumerate(slots):
            if s.hyper in ("beta1", "beta2"):
                betas.setdefault(s.group, [None, None])[s.hyper == "beta2"] = j
        self._betas = [(g, j1, j2) for g, (j1, j2) in betas.items()]
        self._off, self._n, self._rows = 0, 0, []  # rows[i][j]: value of slot j at step off + i
        super().__init__(optimizer)

    # ---------------------------------------------------------------- values

    def _evaluate(self, t: int, n: int) -> list[list[float]]:
        return evaluate.table(self._slots, t, n, unit=self._unit, steps_per_epoch=self._spe).T.tolist()

    def _fill(self, t: int) -> bool:
        """Values from step ``t`` on; False at ``t == total_steps`` (no update uses them)."""
        n = self._chunk
        if self._total is not None:
            if t >= self._total:
                if t > self._total:
                    raise EvaluationError(f"the plan is defined for {self._total} steps (total_steps), and the "
                                          f"scheduler was stepped to step {t}")
                self._off, self._n, self._rows = t, 0, []
                return False
            n = min(n, self._total - t)
        while True:
            try:
                rows = self._evaluate(t, n)
                break
            except EvaluationError:  # undefined somewhere in the chunk: take a shorter one, raise at the step itself
                if n == 1:
                    raise
                n //= 2
        self._off, self._n, self._rows = t, n, rows
        return True

    def _write(self, t: int) -> None:
        i = t - self._off
        if not 0 <= i < self._n:
            if not self._fill(t):
                return
            i = 0
        row = self._rows[i]
        groups = self.optimizer.param_groups
        for gi, key, j in self._scalar:
            groups[gi][key] = row[j]
        for gi, j1, j2 in self._betas:
            g = groups[gi]
            b = g["betas"]
            g["betas"] = (b[0] if j1 is None else row[j1], b[1] if j2 is None else row[j2])

    # ---------------------------------------------------------------- torch interface

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        """Write the values of the next update (call after ``optimizer.step()``)."""
        if epoch is not None:
            raise TypeError("PlanScheduler.step() takes no epoch: it counts updates itself")
        t = self.last_epoch + 1
        self._write(t)
        self.last_epoch = t
        self._step_count += 1
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "plan_hash": self.plan_hash,
                "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if state_dict.get("plan_hash") != self.plan_hash:
            raise ConfigError("scheduler state", f"was saved for another plan (plan hash {state_dict.get('plan_hash')!r}, "
                              f"this scheduler's plan has {self.plan_hash!r})", None, show_value=False)
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self._n = 0
        if self.last_epoch >= 0:
            self._write(self.last_epoch)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


# --------------------------------------------------------------------------- the setup's scheduler

@dataclass
class Entry:
    sched: Any
    every: int
    plateau: bool
    optimizer: str


class SetupScheduler:
    """One scheduler object for a setup: steps every torch scheduler it holds, each on its own clock.

    Call ``step()`` once per update (after ``optimizer.step()``), or
    ``step(metric)`` when a ReduceLROnPlateau is due (it is due every
    ``plateau_every`` updates; ``metric`` is ignored at other steps).
    """

    def __init__(self, entries: list[Entry], optimizers: Mapping[str, torch.optim.Optimizer], plan_hash: str) -> None:
        self.entries = entries
        self.optimizers = dict(optimizers)
        self.plan_hash = plan_hash
        self.last_epoch = 0
        pl = [e.every for e in entries if e.plateau]
        self.plateau_every = pl[0] if pl else None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if len(self.optimizers) != 1:
            raise AttributeError(f"this setup has {len(self.optimizers)} optimizers: use .optimizers")
        return next(iter(self.optimizers.values()))

    @property
    def schedulers(self) -> tuple[Any, ...]:
        return tuple(e.sched for e in self.entries)

    def step(self, metrics: Any = None) -> None:
        t = self.last_epoch + 1
        for e in self.entries:
            if t % e.every:
                continue
            if e.plateau:
                if metrics is None:
                    raise TypeError(f"ReduceLROnPlateau is due after update {t}: call step(metric)")
                e.sched.step(metrics)
            else:
                e.sched.step()
        self.last_epoch = t

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for o in self.optimizers.values() for g in o.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "plan_hash": self.plan_hash,
                "schedulers": [e.sched.state_dict() for e in self.entries]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if state_dict.get("plan_hash") != self.plan_hash:
            raise ConfigError("scheduler state", f"was saved for another plan (plan hash {state_dict.get('plan_hash')!r}, "
                              f"this setup's plan has {self.plan_hash!r})", None, show_value=False)
        if len(state_dict["schedulers"]) != len(self.entries):
            raise ConfigError("scheduler state", f"holds {len(state_dict['schedulers'])} schedulers, this setup has "
                              f"{len(self.entries)}", None, show_value=False)
        self.last_epoch = int(state_dict["last_epoch"])
        for e, sd in zip(self.entries, state_dict["schedulers"]):
            e.sched.load_state_dict(sd)


# --------------------------------------------------------------------------- the setup

@dataclass(frozen=True, eq=False)
class TorchSetup:
    """What :func:`to_torch` builds.

    Attributes:
        optimizers: ``name -> torch.optim.Optimizer`` (one per plan optimizer with trained groups).
        scheduler: The object to step once per update: a torch scheduler when one torch scheduler does
            everything, else a :class:`SetupScheduler`; both have ``step()``, ``get_last_lr()``,
            ``state_dict()`` and ``load_state_dict()``.
        fidelity: How each (group, hyperparameter) is driven (:class:`optbridge.report.Fidelity`).
        resolution: Which parameter went to which group (None for a trace's probe parameters).
        plan: The plan.
        plateau_every: Updates between ReduceLROnPlateau steps (``scheduler.step(metric)`` is due then), or None.
        excluded: Parameters left out of every optimizer (``frozen: exclude``).
    """

    optimizers: Mapping[str, torch.optim.Optimizer]
    scheduler: Any
    fidelity: tuple[Fidelity, ...]
    resolution: Resolution | None
    plan: Plan
    plateau_every: int | None = None
    excluded: tuple[str, ...] = ()
    schedulers: tuple[Any, ...] = field(default=())

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, when there is exactly one."""
        if len(self.optimizers) != 1:
            raise AttributeError(f"this setup has {len(self.optimizers)} optimizers ({', '.join(self.optimizers)}): "
                                 "use .optimizers[name]")
        return next(iter(self.optimizers.values()))

    def param_group(self, name: str) -> dict[str, Any]:
        """The torch param group dict of plan group ``name``."""
        for o in self.optimizers.values():
            for g in o.param_groups:
                if g.get("name") == name:
                    return g
        raise KeyError(f"no trained group {name!r} (groups: {', '.join(g['name'] for o in self.optimizers.values() for g in o.param_groups)})")

    def clip_gradients(self) -> dict[str, float | None]:
        """Clip each group's gradients as its ``clip`` says; call after ``backward()``, before ``step()``.

        ``max_norm`` groups use ``torch.nn.utils.clip_grad_norm_`` over that group's
        parameters only (one norm per group), ``value`` groups ``clip_grad_value_``.

        Returns:
            ``group -> total gradient norm before clipping`` (None for value clipping).
        """
        out: dict[str, float | None] = {}
        for g in self.plan.groups:
            if g.clip is None or g.frozen == "exclude":
                continue
            params = [p for p in self.param_group(g.name)["params"] if p.grad is not None]
            if g.clip.max_norm is not None:
                out[g.name] = float(torch.nn.utils.clip_grad_norm_(params, g.clip.max_norm, g.clip.norm_type))
            else:
                torch.nn.utils.clip_grad_value_(params, g.clip.value)
                out[g.name] = None
        return out


# --------------------------------------------------------------------------- building

def _optimizer_class(o: OptimizerSpec, path: str) -> type:
    if o.type in _NO_TORCH:
        raise UnsupportedError(f"{path}.type", BACKEND, _NO_TORCH[o.type])
    cls = getattr(torch.optim, o.type, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise UnsupportedError(f"{path}.type", BACKEND, f"torch {torch.__version__} has no torch.optim.{o.type}")
    return cls


def _torch_kwargs(options: Mapping[str, Any], accepted: set[str], path: str, otype: str) -> dict[str, Any]:
    out = {}
    for key, v in options.items():
        if key in accepted:
            out[key] = tuple(v) if isinstance(v, (list, tuple)) else v
        elif v not in (None, False):
            raise UnsupportedError(f"{path}.{key}", BACKEND, f"torch.optim.{otype} has no option {key!r}")
    return out


def _path(plan: Plan, oi: int) -> str:
    return "optimizer" if len(plan.optimizers) == 1 else f"optimizers[{oi}]"


def _node_path(g: Group, hyper: str) -> str:
    return f"groups.{g.name}.schedule.{hyper}" if hyper in g.schedule else f"schedule.{hyper}"


def applies(plan: Plan, g: Group, hyper: str) -> bool:
    """False for a plan-wide schedule of a hyperparameter ``g``'s optimizer lacks (beta1 over SGD): NaN in traces."""
    return hyper in g.schedule or has_hyper(plan, g, hyper)


def build(plan: Plan, params: Mapping[str, list[torch.Tensor]], *, resolution: Resolution | None = None,
          native: bool = True, chunk: int = CHUNK, excluded: tuple[str, ...] = ()) -> TorchSetup:
    """Torch optimizers and a scheduler for ``plan``, with ``params[group name]`` as each group's parameters."""
    hypers = scheduled_hypers(plan)
    trained = [g for g in plan.groups if g.frozen != "exclude"]
    for hyper in hypers:
        if trained and not any(applies(plan, g, hyper) for g in trained):
            hyper_base(plan, trained[0], hyper, path=f"schedule.{hyper}")  # raises: no optimizer has it
    h = plan_hash(plan)
    optimizers: dict[str, torch.optim.Optimizer] = {}
    entries: list[Entry] = []
    fid: dict[tuple[str, str], Fidelity] = {}
    spe = plan.steps_per_epoch or 1
    for oi, o in enumerate(plan.optimizers):
        groups = [g for g in o.groups if g.frozen != "exclude"]
        if not groups:
            continue
        path = _path(plan, oi)
        cls = _optimizer_class(o, path)
        accepted = set(inspect.signature(cls).parameters) - {"params"}
        defaults = {**OPTIMIZER_DEFAULTS[o.type], **o.options}
        defaults.pop("lr_mult", None)
        defaults.pop("weight_decay_mult", None)
        tgroups = [{"params": list(params[g.name]), "name": g.name,
                    **_torch_kwargs(effective_options(plan, g), accepted, f"{path}.groups.{g.name}", o.type)}
                   for g in groups]
        try:
            opt = cls(tgroups, **_torch_kwargs(defaults, accepted, path, o.type))
        except (ValueError, TypeError) as e:
            raise ConfigError(path, f"torch.optim.{o.type} rejects the options: {e}", o.type) from None
        optimizers[o.name] = opt
        cname = f"torch.optim.{o.type}"

        # ---- lr: torch's own scheduler classes where exact
        lr_nodes = [None if g.frozen == "zero_lr" else plan.schedule_for(g, "lr") for g in groups]
        zero = [g.frozen == "zero_lr" for g in groups]
        bases = [hyper_base(plan, g, "lr") for g in groups]
        specs: list[tuple[Spec, str]] = []
        why = "native=False was asked for"
        plateau_nodes = [n for n in lr_nodes if isinstance(n, ir.Plateau)]
        if native or plateau_nodes:  # a plateau has no table form (it reacts to metrics): always torch's class
            try:
                specs = lower_lr(lr_nodes, zero, bases, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                                 total_steps=plan.total_steps)
            except NotNative as e:
                why = str(e)
                specs = []
        if plateau_nodes and not specs:
            raise UnsupportedError(_node_path(groups[0], "lr"), BACKEND, f"a plateau schedule needs torch's "
                                   f"ReduceLROnPlateau (it reacts to metrics), and that cannot be used here: {why}")
        lr_native = bool(specs)

        # ---- momentum / beta1 cycled by CyclicLR / OneCycleLR
        mh = "beta1" if "betas" in opt.defaults else ("momentum" if "momentum" in opt.defaults else None)
        paired = False
        if len(specs) == 1 and mh is not None and mh in hypers:
            m_nodes = [plan.schedule_for(g, mh) for g in groups]
            if all(m is not None for m in m_nodes):
                paired = pair_momentum(specs[0][0], lr_nodes, m_nodes, [hyper_base(plan, g, mh) for g in groups])

        if specs:
            for tg in opt.param_groups:  # the base of every torch scheduler is the group's lr (see torch_lower)
                tg["initial_lr"] = tg["lr"]
            desc = " + ".join(s.describe() for s, _ in specs)
            for s, unit in specs:
                entries.append(Entry(construct(s, opt), spe if unit == "epoch" else 1, s.cls == "ReduceLROnPlateau",
                                     o.name))
        # ---- everything else: the reference's values, written per step
        slots: list[Slot] = []
        for gi, g in enumerate(groups):
            for hyper in hypers:
                node = plan.schedule_for(g, hyper)
                key = (g.name, hyper)
                if not applies(plan, g, hyper):
                    fid[key] = Fidelity(BACKEND, g.name, hyper, "native", f"not applicable: {cname} has no {hyper} "
                                        "(NaN in traces)")
                elif hyper == "lr" and g.frozen == "zero_lr":
                    fid[key] = Fidelity(BACKEND, g.name, hyper, "native", f"lr 0 (frozen: zero_lr), held by {cname}"
                                        + (f" under {desc}, which keeps 0 at 0" if lr_native else ""))
                elif hyper == "lr" and lr_native:
                    fid[key] = Fidelity(BACKEND, g.name, hyper, "native", "torch.optim.lr_scheduler." + desc)
                elif hyper == mh and paired:
                    fid[key] = Fidelity(BACKEND, g.name, hyper, "native",
                                        f"torch.optim.lr_scheduler.{specs[0][0].cls} (cycle_momentum)")
                elif node is None:
                    v = hyper_base(plan, g, hyper, path=_node_path(g, hyper))
                    fid[key] = Fidelity(BACKEND, g.name, hyper, "native", f"constant {v!r} held by {cname}")
                elif isinstance(node, ir.Plateau):
                    raise UnsupportedError(_node_path(g, hyper), BACKEND, f"a plateau schedule on {hyper}: torch's "
                                           "ReduceLROnPlateau only reduces lr")
                else:
                    slots.append(Slot(gi, hyper, node, hyper_base(plan, g, hyper, path=_node_path(g, hyper)),
                                      _node_path(g, hyper)))
                    reason = why if hyper == "lr" else "torch's schedulers only drive lr (and momentum/beta1 " \
                                                       "cycled with a CyclicLR/OneCycleLR lr)"
                    fid[key] = Fidelity(BACKEND, g.name, hyper, "table", "optbridge PlanScheduler writes the "
                                        f"reference evaluator's values per step (no exact torch class: {reason})")
        if slots:
            entries.append(Entry(PlanScheduler(opt, slots, plan_hash=h, unit=plan.step_unit,
                                               steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total_steps,
                                               chunk=chunk), 1, False, o.name))
    if len(entries) == 1 and entries[0].every == 1 and len(optimizers) == 1:
        scheduler: Any = entries[0].sched
    else:
        scheduler = SetupScheduler(entries, optimizers, h)
    pl = [e.every for e in entries if e.plateau]
    order = [(g.name, hyper) for g in plan.groups if g.frozen != "exclude" for hyper in hypers]
    return TorchSetup(optimizers, scheduler, tuple(fid[k] for k in order), resolution, plan,
                      pl[0] if pl else None, excluded, tuple(e.sched for e in entries))


def step_scheduler(setup: TorchSetup, k: int, metrics: Any, used: list[int]) -> None:
    """Step ``setup.scheduler`` after update ``k`` the way a training loop does (metric when a plateau is due)."""
    every = setup.plateau_every
    if every is None or (k + 1) % every:
        setup.scheduler.step()
        return
    j = used[0]
    if metrics is None or j >= len(metrics):
        got = 0 if metrics is None else len(metrics)
        raise EvaluationError(f"plateau needs a metric at each of its steps (pass metrics= with at least {j + 1} "
                              f"values), got {got}")
    setup.scheduler.step(float(metrics[j]))
    used[0] = j + 1


# --------------------------------------------------------------------------- entry point

def model_records(model: Any) -> tuple[list[ParamRecord], dict[str, torch.Tensor]]:
    """Parameter records of ``model`` for :func:`optbridge.params.resolve`, and ``name -> tensor``.

    ``model`` is an ``nn.Module`` (module type = the owning module's class name;
    tied parameters are listed under every name, with one ``ident``), or a mapping /
    iterable of ``(name, tensor)`` pairs (no module types).
    """
    records: list[ParamRecord] = []
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(model, torch.nn.Module):
        for mname, mod in model.named_modules(remove_duplicate=False):
            for pname, p in mod._parameters.items():
                if p is None:
                    continue
                full = f"{mname}.{pname}" if mname else pname
                records.append(ParamRecord(full, tuple(p.shape), type(mod).__name__, id(p), p.requires_grad))
                tensors.setdefault(full, p)
    else:
        items = model.items() if isinstance(model, Mapping) else model
        for name, p in items:
            if not isinstance(p, torch.Tensor):
                raise ConfigError(f"model[{name!r}]", "must be a tensor", type(p).__name__)
            records.append(ParamRecord(name, tuple(p.shape), "", id(p), p.requires_grad))
            tensors.setdefault(name, p)
    return records, tensors


def to_torch(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
             metrics: Sequence[float] | None = None, freeze_excluded: bool = True) -> TorchSetup:
    """Torch optimizers and a scheduler for ``plan`` over ``model``'s parameters.

    Args:
        plan: The plan.
        model: An ``nn.Module`` (or ``(name, tensor)`` pairs). Groups are resolved
            with :func:`optbridge.params.resolve` over ``model.named_parameters()``;
            tied weights count once.
        total_steps: Updates the setup must be exact for (default: the plan's).
        form: ``"auto"`` (default; torch's own scheduler classes where exact) or
            ``"table"`` (the PlanScheduler drives every scheduled hyperparameter).
        metrics: Plateau metrics known in advance (not supported yet: call
            ``scheduler.step(metric)``).
        freeze_excluded: Set ``requires_grad=False`` on the parameters of
            ``frozen: exclude`` groups (they are in no optimizer either way).

    Returns:
        A :class:`TorchSetup`: ``.optimizers`` (``.optimizer`` when there is one),
        ``.scheduler`` (call ``step()`` once per update, after ``optimizer.step()``;
        ``step(metric)`` when ``.plateau_every`` says a ReduceLROnPlateau is due),
        ``.clip_gradients()`` (per-group clipping, before ``optimizer.step()``),
        ``.fidelity``, ``.resolution``.

    Raises:
        ConfigError: the groups do not resolve over the model, or torch rejects an option.
        UnsupportedError: an optimizer torch lacks (LAMB, Lion, AdamWeightDecay), or a
            schedule with no exact torch form (plateau on another hyperparameter than lr).
    """
    form = ir.check_choice("form", "auto" if form is None else form, FORMS)
    if metrics is not None:
        raise ConfigError("metrics", "is not supported by to_torch yet: call scheduler.step(metric)", None,
                          show_value=False)
    if total_steps is not None:
        plan = dataclasses.replace(plan, total_steps=ir.check_int("total_steps", total_steps, minimum=1))
    records, tensors = model_records(model)
    res = resolve(plan, records)
    params = {g.name: [tensors[n] for n in g.params] for g in res.groups}
    if freeze_excluded:
        for n in res.excluded:
            tensors[n].requires_grad_(False)
    return build(plan, params, resolution=res, native=form == "auto", excluded=tuple(res.excluded))
