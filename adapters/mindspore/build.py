"""The MindSpore 2.10 backend: plans to real MindSpore optimizers, traces, lr lists, and back.

Entry points (lazy attributes of :mod:`optbridge`): :func:`to_mindspore`,
:func:`to_mindspore_lists`, :func:`from_mindspore`; trace backends
``mindspore-list`` (:func:`trace_list`), ``mindspore-cell`` (:func:`trace_cell`)
and ``mindspore-experimental`` (:func:`trace_experimental`). See docs/mindspore.md
for the form table, the traps and the tolerances.

Forms:

* ``list``: ``mindspore.nn`` optimizers with one float32 lr list per group
  (``learning_rate=[...]``, gathered at ``global_step``), computed by the
  reference evaluator: exact to float32 storage. Needs ``total_steps``
  (MindSpore raises past the end of a list). A weight-decay schedule becomes a
  cell gathering its float32 list (nn optimizers take dynamic weight decay only
  as a Cell).
* ``cell``: one ``LearningRateSchedule`` per group: MindSpore's own cell where its
  code computes the node, else a generated cell of float64 MindSpore ops
  (:mod:`optbridge_adapters.mindspore.cells`).
* ``experimental``: ``mindspore.experimental.optim`` optimizers with torch-like
  groups, stepped by its ``lr_scheduler`` classes where they compute the node, else
  by a driver that assigns the reference's values each step.

Every group always gets an explicit group dict with its own lr and weight decay,
every lr is dynamic (a list or a cell, constants included) so MindSpore never
computes a static group lr as ``lr + 1.0 - 1.0``, nesterov uses ``nn.SGD``, AdamW
uses the experimental AdamW, and lr values change through ``ops.assign``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops
    from mindspore.common import dtype as mstype
except ImportError as e:  # pragma: no cover - exercised only without mindspore
    from optbridge.errors import BackendUnavailable
    raise BackendUnavailable(f"the MindSpore backend needs mindspore ({e}); pip install 'optbridge[mindspore]' "
                             "(mindspore==2.10.0)") from e

from optbridge import ir
from optbridge.errors import ConfigError, EvaluationError, UnsupportedError
from optbridge.params import ParamRecord, effective_options, resolve
from optbridge.plan import Group, OptimizerSpec, Plan, has_hyper, hyper_base, scheduled_hypers
from optbridge.report import Fidelity

from . import cells
from . import optim as mopt_

__all__ = ["to_mindspore", "to_mindspore_lists",
           "MindSporeSetup", "FORMS", "INT32_STEP_LIMIT"]

FORMS = ("auto", "list", "cell", "experimental")
#: nn optimizers count updates in an int32 global_step.
INT32_STEP_LIMIT = 2**31 - 1
_NN_TYPES = ("SGD", "Adam", "AdamWeightDecay")
_EXP_TYPES = ("SGD", "Adam", "AdamW")
_NN_OPT_KEYS = {"SGD": ("momentum", "dampening", "nesterov"), "Adam": ("betas", "eps"),
                "AdamWeightDecay": ("betas", "eps")}
_ADAM_EPS_NOTE = (
    "MindSpore's Adam (nn.Adam and experimental Adam, the same ops.Adam kernel) puts eps outside the bias "
    "correction: p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps), i.e. torch's Adam with eps replaced by "
    "eps*sqrt(1-b2^t) (eps*{f1:.3g} at step 1, eps*{f100:.3g} at step 100 for beta2={b2:g}). The relative change "
    "of an update is below eps/(sqrt(v_hat)+eps): under 1e-6 while |grad| >> {eps:g}*1e6; measured over 100 "
    "steps: 3.6e-7 max |dp| for N(0,1) gradients, 6.8e-2 for gradients ~1e-7 (semantics.md section 5.2). "
    "No MindSpore optimizer has torch's placement; not corrected.")


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True, eq=False)
class MindSporeSetup:
    """What :func:`to_mindspore` built.

    Attributes:
        optimizers: The MindSpore optimizers (one per plan optimizer, or more when
            an nn optimizer cannot hold the groups' options together).
        form: ``list``, ``cell`` or ``experimental`` (what was used).
        fidelity: One :class:`~optbridge.report.Fidelity` per group and scheduled hyperparameter.
        report: Text explaining each choice.
        groups: Group names, in the optimizers' order.
        params: ``group -> list of Parameters``.
        lr: ``group -> the lr object`` (float32 list, cell, or the group's lr Parameter).
        hypers: ``group -> {hyper: object}`` for other scheduled hyperparameters (weight-decay cell or list,
            driven momentum / weight-decay Parameter).
        steppers: Schedulers / drivers that :meth:`step` advances (experimental form).
        excluded: Parameters left out (``frozen: exclude``).
    """

    optimizers: tuple[Any, ...]
    form: str
    fidelity: tuple[Fidelity, ...]
    report: str
    groups: tuple[str, ...]
    params: Mapping[str, list[Any]] = field(default_factory=dict)
    lr: Mapping[str, Any] = field(default_factory=dict)
    hypers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    steppers: tuple[Any, ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def optimizer(self) -> Any:
        """The optimizer, when there is exactly one."""
        if len(self.optimizers) != 1:
            raise ValueError(f"this setup has {len(self.optimizers)} optimizers (see .optimizers and .report)")
        return self.optimizers[0]

    def step(self, metric: float | None = None) -> None:
        """Call after each optimizer update (experimental form: schedulers and drivers advance; list and cell
        forms need nothing, MindSpore advances ``global_step`` itself). ``metric`` feeds ReduceLROnPlateau."""
        for s in self.steppers:
            s.step(metric)

    def __repr__(self) -> str:
        return f"MindSporeSetup(form={self.form!r}, optimizers={[type(o).__name__ for o in self.optimizers]}, groups={self.groups})"


# --------------------------------------------------------------------------- planning


@dataclass
class _GroupPlan:
    group: Group
    spec: OptimizerSpec
    options: dict[str, Any]
    params: list[Any]


def _path(plan: Plan, g: Group, hyper: str) -> str:
    return f"groups.{g.name}.schedule.{hyper}" if hyper in g.schedule else f"schedule.{hyper}"


def _applies(plan: Plan, g: Group, hyper: str) -> bool:
    """False for a plan-wide schedule of a hyperparameter this group's optimizer lacks (beta1 over SGD)."""
    return hyper in g.schedule or has_hyper(plan, g, hyper)


def _node(plan: Plan, g: Group, hyper: str) -> ir.Node | None:
    if (hyper == "lr" and g.frozen == "zero_lr") or not _applies(plan, g, hyper):
        return None
    return plan.schedule_for(g, hyper)


def _held(plan: Plan, g: Group, hyper: str) -> float:
    """The float32 constant MindSpore holds for an unscheduled hyperparameter (NaN: not applicable)."""
    return float(np.float32(_base(plan, g, hyper))) if _applies(plan, g, hyper) else math.nan


def _base(plan: Plan, g: Group, hyper: str) -> float:
    if hyper == "lr" and g.frozen == "zero_lr":
        return 0.0
    return hyper_base(plan, g, hyper, path=_path(plan, g, hyper))


def _nn_kind(spec: OptimizerSpec, gps: list[_GroupPlan], plan: Plan) -> tuple[str | None, str]:
    """The nn optimizer class for these groups, or (None, why not)."""
    if spec.type not in _NN_TYPES:
        if spec.type == "AdamW":
            return None, ("AdamW needs the experimental AdamW: nn.AdamWeightDecay is not torch's AdamW (no bias "
                          "correction, eps 1e-6; 0.93 max |dp| apart over 100 steps, semantics.md 5.2)")
        return None, f"{spec.type} has no verified MindSpore counterpart"
    for gp in gps:
        o = gp.options
        if o.get("maximize"):
            return None, "maximize=True: nn optimizers cannot maximize"
        if o.get("amsgrad"):
            return None, "amsgrad=True is not verified in MindSpore (experimental Adam ignores it)"
    for gp in gps:
        node = _node(plan, gp.group, "lr")
        if node is not None and any(isinstance(x, ir.Plateau) for x in ir.walk(node)):
            return None, ("a plateau schedule needs the metric at run time: only MindSpore's ReduceLROnPlateau "
                          "(experimental lr_scheduler) runs it")
    hypers = {h for gp in gps for h in scheduled_hypers(plan) if _node(plan, gp.group, h) is not None}
    bad = sorted(hypers - {"lr", "weight_decay"})
    if bad:
        return None, (f"{', '.join(bad)} is scheduled: nn optimizers hold it as one constant per optimizer "
                      "(only lr and weight_decay can be dynamic)")
    kind = spec.type
    if "weight_decay" in hypers and kind == "SGD":
        o = gps[0].options
        if o.get("dampening", 0.0) != 0.0 or o.get("nesterov"):
            return None, "a weight-decay schedule with nn.SGD (MindSpore refuses dynamic weight decay in nn.SGD, " \
                         "and nn.Momentum has no dampening / ignores nesterov on CPU)"
        kind = "Momentum"
    return kind, ""


def _split_by_options(spec: OptimizerSpec, gps: list[_GroupPlan]) -> list[list[_GroupPlan]]:
    keys = _NN_OPT_KEYS.get(spec.type, ())
    out: dict[tuple, list[_GroupPlan]] = {}
    for gp in gps:
        out.setdefault(tuple(gp.options.get(k) for k in keys), []).append(gp)
    return list(out.values())


def _check_steps(total_steps: int | None, what: str) -> None:
    if total_steps is not None and total_steps > INT32_STEP_LIMIT:
        raise UnsupportedError("total_steps", what, f"{total_steps} steps exceed MindSpore's int32 global_step "
                               f"(at most {INT32_STEP_LIMIT})")


# --------------------------------------------------------------------------- lists


def to_mindspore_lists(plan: Plan, total_steps: int | None = None, *, hyper: str = "lr") -> dict[str, np.ndarray]:
    """Per-group float32 lists of ``hyper`` (``learning_rate=[...]`` for MindSpore's nn optimizers).

    Values come from the reference evaluator (float64) and are rounded once to
    float32, as MindSpore stores a list (``np.array(list).astype(float32)``).

    Args:
        plan: The plan.
        total_steps: List length (default: the plan's ``total_steps``).
        hyper: The hyperparameter (``lr`` by default).

    Returns:
        ``group name -> float32 array of length total_steps`` (``frozen: exclude``
        groups left out).
    """
    from .convert import lists
    return lists(plan, total_steps, hyper=hyper)


# --------------------------------------------------------------------------- building


def _records(net: Any) -> tuple[list[ParamRecord], dict[str, Any]]:
    """ParamRecords (module type = owning Cell's class name, ident = id) of the net's trainable parameters."""
    owner: dict[int, str] = {}
    for _, cell in net.cells_and_names():
        for _, p in cell.parameters_and_names(expand=False):
            owner.setdefault(id(p), type(cell).__name__)
    records, by_name = [], {}
    for name, p in net.parameters_and_names():
        if not p.requires_grad:
            continue
        records.append(ParamRecord(name, tuple(p.shape), owner.get(id(p), type(net).__name__), id(p)))
        by_name[name] = p
    return records, by_name


def _resolve_params(plan: Plan, net: Any) -> tuple[dict[str, list[Any]], tuple[str, ...], list[Any]]:
    records, by_name = _records(net)
    res = resolve(plan, records)
    order = [by_name[r.name] for r in records if r.name not in res.aliases and r.name not in res.excluded]
    return {g.name: [by_name[n] for n in g.params] for g in res.groups}, res.excluded, order


def to_mindspore(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
                 metrics: Sequence[float] | None = None, scheduler: str = "native") -> MindSporeSetup:
    """Build real MindSpore optimizers for ``plan`` over ``net``'s trainable parameters.

    Args:
        plan: The plan.
        model: A ``mindspore.nn.Cell``; groups are resolved over
            ``net.parameters_and_names()`` (trainable ones), module type = the
            owning Cell's class name.
        total_steps: The horizon (default: the plan's). Required by the list
            form; enables table cells and the native-cell checks.
        form: ``auto`` (default), ``list``, ``cell`` or ``experimental`` (see the module docstring).
        metrics: Plateau metrics known in advance (not supported yet: pass them to ``step(metric)``).
        scheduler: Experimental form: ``native`` (MindSpore's lr_scheduler classes
            where they compute the node, float32 recursion) or ``driver`` (assign
            the reference's float32 values every step, exact).

    Returns:
        A :class:`MindSporeSetup` (``.optimizer(s)``, ``.fidelity``, ``.report``, ``.step()``).

    Raises:
        UnsupportedError: no exact form exists (the message says why).
        ConfigError: the plan's groups do not resolve over the net.
    """
    if metrics is not None:
        raise ConfigError("metrics", "is not supported by to_mindspore yet: pass each metric to setup.step(metric)",
                          None, show_value=False)
    params, excluded, order = _resolve_params(plan, model)
    return _build(plan, params, total_steps=total_steps, form="auto" if form is None else form, scheduler=scheduler,
                  order=order, excluded=excluded)


def _build(plan: Plan, params: Mapping[str, list[Any]], *, total_steps: int | None, form: str,
           scheduler: str = "native", order: list[Any] | None = None, excluded: tuple[str, ...] = (),
           plain: bool = False, backend: str | None = None) -> MindSporeSetup:
    if form not in FORMS:
        raise ConfigError("form", "must be one of " + ", ".join(map(repr, FORMS)), form)
    if scheduler not in ("native", "driver"):
        raise ConfigError("scheduler", "must be 'native' or 'driver'", scheduler)
    total = total_steps if total_steps is not None else plan.total_steps
    if total is not None and plan.total_steps is not None and total > plan.total_steps:
        raise EvaluationError(f"the plan is defined for {plan.total_steps} steps (total_steps), {total} were asked for")
    _check_steps(total, "mindspore")
    report: list[str] = []
    fid: list[Fidelity] = []
    hypers = scheduled_hypers(plan)

    per_opt: list[tuple[OptimizerSpec, list[_GroupPlan]]] = []
    for spec in plan.optimizers:
        gps = [_GroupPlan(g, spec, effective_options(plan, g), list(params.get(g.name, [])))
               for g in spec.groups if g.frozen != "exclude"]
        if gps:
            per_opt.append((spec, gps))

    # ---- choose the form
    chosen = form
    nn_ok = {spec.name: _nn_kind(spec, gps, plan) for spec, gps in per_opt}
    if form == "auto":
        blockers = [f"{name}: {why}" for name, (k, why) in nn_ok.items() if k is None]
        splits = [spec.name for spec, gps in per_opt if len(_split_by_options(spec, gps)) > 1]
        if blockers or splits:
            chosen = "experimental"
            for b in blockers:
                report.append(f"form experimental: {b}.")
            for s in splits:
                report.append(f"form experimental: optimizer {s!r} has groups with different "
                              f"{'/'.join(_NN_OPT_KEYS[dict((sp.name, sp) for sp, _ in per_opt)[s].type])}; nn "
                              "optimizers accept only params, lr, weight_decay, grad_centralization and order_params "
                              "in a group, the experimental optimizers take torch-like groups (one optimizer "
                              "instead of one nn optimizer per option set).")
        else:
            natives = all(_all_native(plan, gp.group, h, total) for _, gps in per_opt for gp in gps for h in hypers
                          if _node(plan, gp.group, h) is not None)
            if natives:
                chosen = "cell"
                report.append("form cell: every schedule has a MindSpore LearningRateSchedule cell that computes it "
                              "(float32 arithmetic, bounds in docs/mindspore.md).")
            elif total is not None:
                chosen = "list"
                report.append(f"form list: not every schedule has a native cell; float32 lists of {total} reference "
                              "values (MindSpore's own list mechanism) are exact to float32 storage.")
            else:
                chosen = "cell"
                report.append("form cell: not every schedule has a native cell and no total_steps is known for "
                              "lists; generated cells evaluate the closed forms in float64 ops (float32(ref) within "
                              "1 ulp).")
    if chosen == "list" and total is None:
        raise ConfigError("total_steps", "is required for form='list': MindSpore raises past the end of an lr "
                          "list, and the plan sets no total_steps", None, show_value=False)
    name = backend or f"mindspore-{chosen}"

    optimizers: list[Any] = []
    steppers: list[Any] = []
    lr_obj: dict[str, Any] = {}
    hyper_obj: dict[str, dict[str, Any]] = {}
    groups_out: list[str] = []
    for spec, gps in per_opt:
        if chosen == "experimental" or nn_ok[spec.name][0] is None:
            if chosen != "experimental":
                if spec.type != "AdamW":
                    raise UnsupportedError(f"optimizers.{spec.name}", name, nn_ok[spec.name][1] +
                                           "; use form='experimental'")
                report.append(f"{spec.name}: AdamW -> mindspore.experimental.optim.AdamW (nn.AdamWeightDecay is not "
                              f"torch's AdamW); its lr is driven by ops.assign from the {chosen} form each step: "
                              "call setup.step() after every update.")
            o, st = _build_experimental(plan, spec, gps, total, chosen, scheduler, name, report, fid, lr_obj,
                                        hyper_obj, plain)
            optimizers.append(o)
            steppers.extend(st)
            groups_out.extend(gp.group.name for gp in gps)
            continue
        kind = nn_ok[spec.name][0]
        parts = _split_by_options(spec, gps)
        if len(parts) > 1:
            report.append(f"{spec.name}: {len(parts)} nn optimizers, one per set of "
                          f"{'/'.join(_NN_OPT_KEYS[spec.type])} values (nn group dicts accept only params, lr, "
                          "weight_decay, grad_centralization and order_params); form='experimental' keeps one "
                          "optimizer with torch-like groups.")
        for part in parts:
            o = _build_nn(plan, spec, kind, part, total, chosen, name, report, fid, lr_obj, hyper_obj, plain, order)
            optimizers.append(o)
            groups_out.extend(gp.group.name for gp in part)

    sources = [x for st in steppers if isinstance(st, list) for x in st]
    steppers = [st for st in steppers if not isinstance(st, list)]
    if sources:
        steppers.append(mopt_.Driver(sources, total_steps=total))
    if not plain:
        _option_notes(per_opt, report, nn_ok, chosen)
    if excluded:
        report.append(f"frozen: exclude leaves out {len(excluded)} parameter(s): {', '.join(excluded[:8])}"
                      + (" ..." if len(excluded) > 8 else ""))
    return MindSporeSetup(tuple(optimizers), chosen, tuple(fid), "\n".join(report), tuple(groups_out),
                          {gp.group.name: gp.params for _, gps in per_opt for gp in gps}, lr_obj, hyper_obj,
                          tuple(steppers), tuple(excluded))


def _all_native(plan: Plan, g: Group, hyper: str, total: int | None) -> bool:
    node = _node(plan, g, hyper)
    if node is None:
        return True
    try:
        ch = cells.build_cell(node, _base(plan, g, hyper), unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                              total_steps=total, path=_path(plan, g, hyper))
    except (UnsupportedError, EvaluationError):
        return False
    return ch.form == "native"


def _option_notes(per_opt: list, report: list[str], nn_ok: dict, chosen: str) -> None:
    for spec, gps in per_opt:
        if spec.type == "Adam":
            o = gps[0].options
            b2 = float(o["betas"][1])
            report.append(f"{spec.name}: " + _ADAM_EPS_NOTE.format(f1=math.sqrt(1 - b2), f100=math.sqrt(1 - b2**100),
                                                                   b2=b2, eps=float(o["eps"])))
        if spec.type == "SGD" and any(gp.options.get("nesterov") for gp in gps):
            report.append(f"{spec.name}: nesterov -> SGD(nesterov=True) (nn.Momentum(use_nesterov=True) is ignored on "
                          "CPU: 0.56 max |dp| from torch over 100 steps).")
        if spec.type == "AdamW":
            report.append(f"{spec.name}: AdamW -> mindspore.experimental.optim.AdamW (torch's update: decoupled decay, "
                          "bias correction, eps inside); nn.AdamWeightDecay is not torch's AdamW (no bias correction, "
                          "eps 1e-6: 0.93 max |dp| apart over 100 steps).")
        if spec.type == "SGD" and nn_ok[spec.name][0] == "Momentum" and chosen != "experimental":
            report.append(f"{spec.name}: weight decay is scheduled, so nn.Momentum (v = mu*v + g, the same update as "
                          "torch SGD without dampening) replaces nn.SGD, which refuses a dynamic weight decay.")
        if any(gp.group.clip is not None for gp in gps):
            report.append(f"{spec.name}: clipping is not part of a MindSpore optimizer: clip the group's gradients "
                          "(ops.clip_by_global_norm / ops.clip_by_value) before calling it.")
    report.append("groups: always explicit group dicts with their own lr and weight_decay (MindSpore's default "
                  "name filter, no weight decay for names containing 'beta' or 'gamma', never applies).")


def _lr_value(plan: Plan, gp: _GroupPlan, hyper: str, total: int | None, form: str, name: str,
              fid: list[Fidelity]) -> tuple[Any, Any]:
    """The dynamic value object for one group's hyper in list/cell forms: (object for MindSpore, data source)."""
    g = gp.group
    node = _node(plan, g, hyper)
    base = _base(plan, g, hyper)
    path = _path(plan, g, hyper)
    if form == "list":
        if node is not None and any(isinstance(x, ir.Plateau) for x in ir.walk(node)):
            raise UnsupportedError(path, name, "plateau needs the metric at run time; a list cannot be precomputed "
                                   "(use form='experimental')")
        vals = to_mindspore_lists(_single(plan, g), total, hyper=hyper)[g.name] if node is not None else \
            np.full(int(total), base, dtype=np.float32)  # type: ignore[arg-type]
        if hyper == "lr":
            fid.append(Fidelity(name, g.name, hyper, "table", f"float32 list of {total} reference values "
                                "(learning_rate=[...], Gather at global_step)"))
            return vals, vals
        cell = cells.TableCell(vals, name=f"optbridge_{hyper}_{g.name}")
        fid.append(Fidelity(name, g.name, hyper, "table", f"cell gathering a float32 list of {total} reference "
                            f"values (nn optimizers take a dynamic {hyper} only as a Cell)"))
        return cell, vals
    ch = cells.build_cell(node, base, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch, total_steps=total,
                          path=path)
    if ch.form == "native" and total is None:
        msg = (f"{path}: native MindSpore cells cast global_step to float32; beyond 2**24 = "
               f"{cells.FLOAT32_STEP_LIMIT} steps consecutive steps share values (pass total_steps to check)")
        warnings.warn(msg, stacklevel=3)
    fid.append(Fidelity(name, g.name, hyper, ch.form, ch.detail))
    return ch.cell, ch.cell


def _single(plan: Plan, g: Group) -> Plan:
    """``plan`` with only ``g`` (for a per-group list)."""
    import dataclasses
    spec = plan.optimizer_of(g)
    return dataclasses.replace(plan, optimizers=(dataclasses.replace(spec, groups=(g,)),))


def _build_nn(plan: Plan, spec: OptimizerSpec, kind: str, gps: list[_GroupPlan], total: int | None, form: str,
              name: str, report: list[str], fid: list[Fidelity], lr_obj: dict, hyper_obj: dict, plain: bool,
              order: list[Any] | None) -> Any:
    dicts = []
    for gp in gps:
        lr, lr_data = _lr_value(plan, gp, "lr", total, form, name, fid)
        lr_obj[gp.group.name] = lr_data
        d: dict[str, Any] = {"params": gp.params, "lr": lr}
        wd_node = _node(plan, gp.group, "weight_decay")
        hyper_obj.setdefault(gp.group.name, {})
        if wd_node is not None:
            wd, wd_data = _lr_value(plan, gp, "weight_decay", total, form, name, fid)
            hyper_obj[gp.group.name]["weight_decay"] = wd_data
            d["weight_decay"] = 0.0 if plain else wd
        else:
            d["weight_decay"] = 0.0 if plain else float(gp.options.get("weight_decay", 0.0))
        for h in scheduled_hypers(plan):
            if h not in ("lr", "weight_decay") and _node(plan, gp.group, h) is not None:
                raise UnsupportedError(_path(plan, gp.group, h), name, f"{h} is scheduled: nn optimizers hold it as "
                                       "one constant (use form='experimental')")
        dicts.append(d)
    opts = dict(gps[0].options)
    if plain:
        kind, opts = "SGD", {}
    if order is not None:
        mine = {id(p) for d in dicts for p in d["params"]}
        ordered = [p for p in order if id(p) in mine]
        if [id(p) for p in ordered] != [id(p) for d in dicts for p in d["params"]]:
            dicts.append({"order_params": ordered})
    opt = mopt_.nn_optimizer(kind, dicts, opts)
    if not plain:
        cls = {"Momentum": "nn.Momentum"}.get(kind, f"nn.{kind}")
        report.append(f"{spec.name}: {cls} over groups {', '.join(gp.group.name for gp in gps)} "
                      f"({form} form; every group has its own dynamic lr, never a static lr beside a dynamic one, "
                      "which MindSpore computes as lr + 1.0 - 1.0 in float32).")
    return opt


def _build_experimental(plan: Plan, spec: OptimizerSpec, gps: list[_GroupPlan], total: int | None, form: str,
                        scheduler: str, name: str, report: list[str], fid: list[Fidelity], lr_obj: dict,
                        hyper_obj: dict, plain: bool) -> tuple[Any, list[Any]]:
    kind = spec.type if spec.type in _EXP_TYPES else None
    if kind is None:
        raise UnsupportedError(f"optimizers.{spec.name}", name, f"{spec.type} has no verified counterpart in "
                               "mindspore.experimental.optim (SGD, Adam, AdamW are mapped)")
    if plain:
        kind = "SGD"
    dicts = []
    for gp in gps:
        o = gp.options
        if not plain and o.get("amsgrad"):
            raise UnsupportedError(f"optimizers.{spec.name}", name, "amsgrad=True: MindSpore's experimental Adam "
                                   "ignores it (not verified for AdamW)")
        d: dict[str, Any] = {"params": gp.params, "lr": float(_base(plan, gp.group, "lr"))}
        if kind == "SGD":
            d.update(momentum=0.0 if plain else float(o.get("momentum", 0.0)),
                     dampening=0.0 if plain else float(o.get("dampening", 0.0)),
                     nesterov=False if plain else bool(o.get("nesterov", False)),
                     weight_decay=0.0 if plain else float(o.get("weight_decay", 0.0)),
                     maximize=bool(o.get("maximize", False)) and not plain)
        else:
            d.update(betas=tuple(float(b) for b in o["betas"]), eps=float(o["eps"]),
                     weight_decay=float(o.get("weight_decay", 0.0)), amsgrad=False,
                     maximize=bool(o.get("maximize", False)))
        dicts.append(d)
    opt = mopt_.experimental_optimizer(kind, dicts)
    for i, grp in enumerate(opt.param_groups):  # unique across optimizers (one Driver assigns them all)
        grp["lr"].name = f"{spec.name}.learning_rate_group_{i}"
    steppers: list[Any] = []
    sources: list[mopt_.Source] = []

    # ---- lr: one native scheduler for the optimizer when every group shares a node that maps, else a driver
    nodes = [_node(plan, gp.group, "lr") for gp in gps]
    bases = [_base(plan, gp.group, "lr") for gp in gps]
    native = None
    why = ""
    if form == "experimental" and scheduler == "native" and nodes[0] is not None:
        if any(n != nodes[0] for n in nodes) or any(gp.group.frozen == "zero_lr" for gp in gps):
            why = "groups have different lr schedules (one lr_scheduler drives every group of an optimizer)"
        else:
            steps = mopt_.scheduler_steps(nodes[0], plan.step_unit, total, plan.steps_per_epoch)
            if steps is not None and steps > mopt_.EXPERIMENTAL_STEP_LIMIT:
                why = (f"{steps} scheduler steps exceed 2**24 = {mopt_.EXPERIMENTAL_STEP_LIMIT}: the experimental "
                       "schedulers count in a float32 last_epoch, which stops advancing there")
            else:
                native = mopt_.native_scheduler(nodes[0], unit=plan.step_unit, bases=bases, horizon=steps)
                if native is None:
                    why = f"no mindspore.experimental lr_scheduler computes {nodes[0].kind} as optbridge does"
    plateau = any(n is not None and isinstance(n, ir.Plateau) for n in nodes)
    mid_run = [n for n in nodes if isinstance(n, ir.Plateau) and (n.best is not None or n.bad_steps or n.cooldown_left)]
    if mid_run:
        n = mid_run[0]
        raise UnsupportedError(_path(plan, gps[0].group, "lr"), name,
                               "MindSpore's ReduceLROnPlateau starts fresh and keeps best as float32, so a plateau "
                               f"imported mid-run (best={n.best}, bad_steps={n.bad_steps}, cooldown_left="
                               f"{n.cooldown_left}) cannot continue exactly")
    if plateau and native is None:
        raise UnsupportedError(_path(plan, gps[0].group, "lr"), name,
                               "plateau runs only as MindSpore's ReduceLROnPlateau (form='experimental', "
                               "scheduler='native', one plateau schedule for all groups of the optimizer): " + why)
    if native is not None:
        unit = nodes[0].unit or plan.step_unit
        every = int(plan.steps_per_epoch or 1) if unit == "epoch" else 1
        sched = native[0](opt)
        steppers.append(mopt_.NativeStepper(sched, every, plateau=isinstance(nodes[0], ir.Plateau)))
        if total is None:
            warnings.warn(f"{spec.name}: experimental lr_schedulers count steps in a float32 last_epoch, which stops "
                          f"advancing at 2**24 = {mopt_.EXPERIMENTAL_STEP_LIMIT} steps (pass total_steps to check)",
                          stacklevel=3)
        for gp in gps:
            fid.append(Fidelity(name, gp.group.name, "lr", "native", f"mindspore.experimental.optim.lr_scheduler."
                                f"{native[1]}" + ("" if every == 1 else f" stepped every {every} updates") +
                                " (float32 recursion)"))
        if not plain:
            report.append(f"{spec.name}: lr schedule -> lr_scheduler.{native[1]} (float32 state and recursion; "
                          "drift bound in docs/mindspore.md).")
    else:
        for gp, node, base in zip(gps, nodes, bases):
            src = _driver_source(plan, gp, "lr", node, base, total, form, name, fid, opt.param_groups[gps.index(gp)]["lr"])
            sources.append(src)
        if not plain and any(n is not None for n in nodes):
            report.append(f"{spec.name}: lr driven by ops.assign into each group's lr Parameter every step"
                          + (f" ({why})" if why else "") + ".")
    for gp, grp in zip(gps, opt.param_groups):
        lr_obj[gp.group.name] = grp["lr"]
        hyper_obj.setdefault(gp.group.name, {})

    # ---- other hyperparameters: a Parameter in the group, driven
    for h in scheduled_hypers(plan):
        if h == "lr":
            continue
        for gp, grp in zip(gps, opt.param_groups):
            node = _node(plan, gp.group, h)
            if node is None:
                continue
            path = _path(plan, gp.group, h)
            if h == "momentum" and spec.type == "SGD":
                key = "momentum"
            elif h == "weight_decay" and spec.type in ("Adam", "AdamW"):
                key = "weight_decay"
            else:
                why_not = {"beta1": "ops.Adam takes beta1 as a constant (a Parameter in its place makes the update "
                                    "0: measured)", "beta2": "ops.Adam takes beta2 as a constant",
                           "eps": "ops.Adam takes eps as a constant",
                           "weight_decay": "experimental SGD builds ops.SGD(dampening, weight_decay, nesterov) with "
                                           "a constant weight decay (use form='list' or 'cell': nn.Momentum takes a "
                                           "weight-decay Cell)"}.get(h, f"{spec.type} has no schedulable {h}")
                raise UnsupportedError(path, name, why_not)
            param = Parameter(Tensor(np.float32(_base(plan, gp.group, h))), name=f"optbridge_{h}_{gp.group.name}_"
                              f"{id(opt)}", requires_grad=False)
            if not plain:
                grp[key] = param
            hyper_obj[gp.group.name][h] = param
            sources.append(_driver_source(plan, gp, h, node, _base(plan, gp.group, h), total, form, name, fid, param))
            if not plain:
                report.append(f"{spec.name}/{gp.group.name}: {h} is a float32 Parameter in the group, driven by "
                              "ops.assign every step.")
    if sources:
        steppers.append(sources)  # merged into one Driver (one compiled assign per step) by _build
    if not plain:
        report.append(f"{spec.name}: mindspore.experimental.optim.{kind} over groups "
                      f"{', '.join(gp.group.name for gp in gps)} (torch-like groups; gradients in "
                      "optimizer.parameters order).")
    return opt, steppers


def _driver_source(plan: Plan, gp: _GroupPlan, hyper: str, node: ir.Node | None, base: float, total: int | None,
                   form: str, name: str, fid: list[Fidelity], target: Any) -> mopt_.Source:
    path = _path(plan, gp.group, hyper)
    if node is None:
        fid.append(Fidelity(name, gp.group.name, hyper, "native", f"constant {base:g} (float32 Parameter)"))
        return mopt_.Source(target, None, base)
    if form == "cell":
        ch = cells.build_cell(node, base, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                              total_steps=total, path=path)
        fid.append(Fidelity(name, gp.group.name, hyper, ch.form, ch.detail + "; assigned each step by a driver"))
        return mopt_.Source(target, cell=ch.cell, path=path)
    if any(isinstance(x, ir.Plateau) for x in ir.walk(node)):
        raise UnsupportedError(path, name, "plateau needs the metric at run time (only MindSpore's ReduceLROnPlateau "
                               "runs it, for lr)")
    if form == "list":
        vals = to_mindspore_lists(_single(plan, gp.group), total, hyper=hyper)[gp.group.name]
        fid.append(Fidelity(name, gp.group.name, hyper, "table", f"float32 list of {total} reference values, "
                            "assigned each step by a driver (ops.assign)"))
        return mopt_.Source(target, values=vals, path=path)
    fid.append(Fidelity(name, gp.group.name, hyper, "table", "reference values (optbridge.evaluate), assigned each "
                        "step by a driver (ops.assign), exact to float32"))
    return mopt_.Source(target, node, base, plan.step_unit, plan.steps_per_epoch, path=path)
