"""Build one plan optimizer as MindSpore objects, per optimizer family (nn, experimental, exact).

Each builder gets the plan optimizer's resolved slots (:func:`optbridge.slots.slots`)
and returns the framework optimizers, and records in the shared :class:`Parts`
how every (group, hyperparameter) value is held (a list, a cell, a Parameter the
driver writes, an experimental lr_scheduler), its fidelity, and the report lines.
The driver itself is assembled by :mod:`.build` from the driven slots.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mindspore import Parameter, Tensor
from mindspore.common import dtype as mstype

from optbridge import ir
from optbridge.errors import UnsupportedError
from optbridge.plan import Group, Plan, group_feature
from optbridge.report import Fidelity
from optbridge.slots import Slot

from . import cells
from .choose import NN_SPLIT_KEYS, Choice, group_options, split_nn
from .convert import slot_values
from .optim import exact_optimizer, experimental_optimizer, nn_optimizer
from .schedulers import EXPERIMENTAL_STEP_LIMIT, NativeStepper, native_scheduler, scheduler_steps
from .setup import Holder

__all__ = ["Parts", "build_family"]

F32, F64 = mstype.float32, mstype.float64


@dataclass
class Parts:
    """What the family builders collect for the whole setup."""

    plan: Plan
    total: int | None
    form: str
    scheduler: str
    backend: str
    plain: bool
    metrics: Sequence[float] | None
    fid: list[Fidelity] = field(default_factory=list)
    report: list[str] = field(default_factory=list)
    holders: dict[tuple[str, str], Holder] = field(default_factory=dict)
    driven: list[tuple[Slot, Parameter]] = field(default_factory=list)
    steppers: list[NativeStepper] = field(default_factory=list)
    #: framework optimizer index -> whether its updates need setup.step() (driven values or lr_schedulers)
    stepped: set[int] = field(default_factory=set)
    #: the framework optimizer being built (its index in the setup)
    current: int = 0
    _ids: int = 0

    def note(self, s: Slot, form: str, detail: str) -> None:
        self.fid.append(Fidelity(self.backend, s.group, s.hyper, form, detail))

    def say(self, text: str) -> None:
        if not self.plain:
            self.report.append(text)

    def param(self, s: Slot, dtype: Any) -> Parameter:
        """A fresh 0-d Parameter holding ``s``'s base value (the driver writes it)."""
        self._ids += 1
        value = np.float32(s.base) if dtype == F32 else np.float64(s.base)
        return Parameter(Tensor(value, dtype), name=f"optbridge_{s.hyper}_{s.group}_{self._ids}", requires_grad=False)

    def drive(self, s: Slot, target: Parameter, how: str) -> None:
        """``target`` gets ``s``'s reference values from the driver before every update."""
        self.driven.append((s, target))
        self.stepped.add(self.current)
        kind = "float64" if target.dtype == F64 else "float32"
        self.note(s, "table", f"reference values written by the driver (ops.assign) into the {kind} {how} "
                  "before every update")


def _plateau(s: Slot) -> bool:
    return s.node is not None and any(isinstance(x, ir.Plateau) for x in ir.walk(s.node))


def _nn_value(parts: Parts, s: Slot, what: str) -> Any:
    """The object an nn optimizer takes for ``s`` (``what``: "lr" or "weight_decay"): list, cell or driven cell."""
    if _plateau(s) or parts.form == "experimental":  # no list or cell can hold it: a Parameter the driver writes
        p = parts.param(s, F32)
        parts.drive(s, p, f"Parameter read by an nn {what} cell (ParameterCell)")
        parts.holders[(s.group, s.hyper)] = Holder("param", p)
        return cells.ParameterCell(p)
    if parts.form == "list":
        vals = slot_values([s], int(parts.total or 0), unit=parts.plan.step_unit,  # total checked by build
                           steps_per_epoch=parts.plan.steps_per_epoch)[0]
        parts.holders[(s.group, s.hyper)] = Holder("list", vals)
        if what == "lr":
            parts.note(s, "table", f"float32 list of {parts.total} reference values (learning_rate=[...], Gather at "
                       "global_step)")
            return vals
        parts.note(s, "table", f"cell gathering a float32 list of {parts.total} reference values (nn optimizers take a "
                   f"dynamic {what} only as a Cell)")
        return cells.TableCell(vals, name=f"optbridge_{s.hyper}_{s.group}")
    ch = cells.build_cell(s.node, s.base, unit=parts.plan.step_unit, steps_per_epoch=parts.plan.steps_per_epoch,
                          total_steps=parts.total, path=s.path)
    if ch.form == "native" and parts.total is None:
        warnings.warn(f"{s.path}: native MindSpore cells cast global_step to float32; beyond 2**24 = "
                      f"{cells.FLOAT32_STEP_LIMIT} steps consecutive steps share values (pass total_steps to check)",
                      stacklevel=4)
    parts.holders[(s.group, s.hyper)] = Holder("cell", ch.cell)
    parts.note(s, ch.form, ch.detail)
    return ch.cell


def _by_group(items: Sequence[Slot]) -> dict[str, dict[str, Slot]]:
    out: dict[str, dict[str, Slot]] = {}
    for s in items:
        out.setdefault(s.group, {})[s.hyper] = s
    return out


def _build_nn(parts: Parts, choice: Choice, groups: list[Group], items: Sequence[Slot],
              params: Mapping[str, list[Any]], order: list[Any] | None, index: int) -> list[tuple[Any, list[str]]]:
    plan, spec = parts.plan, choice.spec
    opts = [group_options(plan, g) for g in groups]
    by = _by_group(items)
    out = []
    chunks = split_nn(spec, groups, opts)
    if len(chunks) > 1:
        parts.say(f"{spec.name}: {len(chunks)} nn optimizers, one per set of {'/'.join(NN_SPLIT_KEYS[spec.type])} "
                  "values (nn group dicts accept only params, lr, weight_decay, grad_centralization and "
                  "order_params); form='experimental' keeps one optimizer with torch-like groups.")
    for j, chunk in enumerate(chunks):
        parts.current = index + j
        dicts = []
        for i in chunk:
            g, o = groups[i], opts[i]
            d: dict[str, Any] = {"params": list(params.get(g.name, [])), "lr": _nn_value(parts, by[g.name]["lr"], "lr")}
            wd = by[g.name].get("weight_decay")
            if wd is not None and wd.node is not None:
                obj = _nn_value(parts, wd, "weight_decay")
                d["weight_decay"] = 0.0 if parts.plain else obj
            else:
                d["weight_decay"] = 0.0 if parts.plain else float(o.get("weight_decay", 0.0))
            dicts.append(d)
        kind, options = ("SGD", {}) if parts.plain else (choice.kind, opts[chunk[0]])
        if order is not None:
            mine = {id(p) for d in dicts for p in d["params"]}
            ordered = [p for p in order if id(p) in mine]
            if [id(p) for p in ordered] != [id(p) for d in dicts for p in d["params"]]:
                dicts.append({"order_params": ordered})
        out.append((nn_optimizer(kind, dicts, options), [groups[i].name for i in chunk]))
        parts.say(f"{spec.name}: nn.{kind} over groups {', '.join(groups[i].name for i in chunk)} ({parts.form} form; "
                  "every group has its own dynamic lr, never a static lr beside a dynamic one, which MindSpore "
                  "computes as lr + 1.0 - 1.0 in float32).")
    return out


def _native_lr(parts: Parts, choice: Choice, lr_slots: list[Slot]) -> tuple[Any, str, str]:
    """``(make(optimizer) -> scheduler, description, why not)`` for one experimental lr_scheduler over every group."""
    plan = parts.plan
    nodes = [s.node for s in lr_slots]
    if parts.form != "experimental" or parts.scheduler != "native" or nodes[0] is None:
        return None, "", ""
    if any(n != nodes[0] for n in nodes) or any(s.node is None for s in lr_slots):
        return None, "", "groups have different lr schedules (one lr_scheduler drives every group of an optimizer)"
    node = nodes[0]
    steps = scheduler_steps(node, plan.step_unit, parts.total, plan.steps_per_epoch)
    if steps is not None and steps > EXPERIMENTAL_STEP_LIMIT:
        return None, "", (f"{steps} scheduler steps exceed 2**24 = {EXPERIMENTAL_STEP_LIMIT}: the experimental "
                          "schedulers count in a float32 last_epoch, which stops advancing there")
    m = native_scheduler(node, unit=plan.step_unit, bases=[s.base for s in lr_slots], horizon=steps)
    if m is None:
        return None, "", f"no mindspore.experimental lr_scheduler computes {node.kind} as optbridge does"
    return m[0], m[1], ""


def _rename(sched: Any, prefix: str) -> None:
    """Give a scheduler's Parameters (``last_epoch_StepLR``, ...) names unique to its optimizer: two schedulers of
    one class in one graph would clash."""
    for obj in [sched, *getattr(sched, "_schedulers", [])]:
        for key, value in vars(obj).items():
            if isinstance(value, Parameter) and not value.name.startswith(prefix):
                value.name = f"{prefix}.{type(obj).__name__}.{key}"


#: Hyperparameters an experimental optimizer reads from its group dict at every update (measured).
_EXPERIMENTAL_DRIVABLE = {"SGD": ("momentum",), "Adam": ("weight_decay",), "AdamW": ("weight_decay",)}


def _torch_like_groups(parts: Parts, choice: Choice, groups: list[Group], items: Sequence[Slot],
                       params: Mapping[str, list[Any]]) -> tuple[dict[str, dict[str, Slot]], str, list[dict[str, Any]],
                                                                 list[dict[str, Any]]]:
    """Slots by group, the optimizer kind (plain SGD when tracing), torch-like group dicts and their options."""
    by = _by_group(items)
    kind = "SGD" if parts.plain else choice.kind
    dicts = [{"params": list(params.get(g.name, [])), "lr": float(by[g.name]["lr"].base)} for g in groups]
    return by, kind, dicts, [{} if parts.plain else group_options(parts.plan, g) for g in groups]


def _build_experimental(parts: Parts, choice: Choice, groups: list[Group], items: Sequence[Slot],
                        params: Mapping[str, list[Any]], index: int) -> Any:
    plan, spec = parts.plan, choice.spec
    by, kind, dicts, opts = _torch_like_groups(parts, choice, groups, items, params)
    opt = experimental_optimizer(kind, dicts, opts)
    for i, grp in enumerate(opt.param_groups):  # unique across optimizers (one driver assigns them all)
        grp["lr"].name = f"{spec.name}.learning_rate_group_{i}"
    lr_slots = [by[g.name]["lr"] for g in groups]
    make, desc, why = _native_lr(parts, choice, lr_slots)
    node = lr_slots[0].node
    if make is not None and node is not None:
        every = node.scale(plan.step_unit, plan.steps_per_epoch)
        plateau = isinstance(node, ir.Plateau)
        sched = make(opt)
        _rename(sched, f"optbridge.{spec.name}")
        parts.steppers.append(NativeStepper(sched, every, plateau, parts.metrics if plateau else None,
                                            lr_slots[0].path))
        parts.stepped.add(index)
        if parts.total is None:
            warnings.warn(f"{spec.name}: experimental lr_schedulers count steps in a float32 last_epoch, which stops "
                          f"advancing at 2**24 = {EXPERIMENTAL_STEP_LIMIT} steps (pass total_steps to check)",
                          stacklevel=4)
        for s, grp in zip(lr_slots, opt.param_groups):
            parts.holders[(s.group, "lr")] = Holder("param", grp["lr"])
            parts.note(s, "native", f"mindspore.experimental.optim.lr_scheduler.{desc}"
                       + ("" if every == 1 else f" stepped every {every} updates") + " (float32 recursion)")
        parts.say(f"{spec.name}: lr schedule -> lr_scheduler.{desc} (float32 state and recursion; drift bound in "
                  "docs/mindspore.md).")
    else:
        for s, grp in zip(lr_slots, opt.param_groups):
            parts.holders[(s.group, "lr")] = Holder("param", grp["lr"])
            if s.node is None:
                parts.note(s, "native", f"constant {s.base:g} (the group's float32 lr Parameter)")
            else:
                parts.drive(s, grp["lr"], "group lr Parameter")
        if any(s.node is not None for s in lr_slots):
            parts.say(f"{spec.name}: lr written into each group's lr Parameter by the driver before every update"
                      + (f" ({why})" if why else "") + ": call setup.step() after every update.")
    for g, grp in zip(groups, opt.param_groups):
        for h, s in by[g.name].items():
            if h == "lr" or s.node is None:
                continue
            p = parts.param(s, F32)
            if not parts.plain:
                if h not in _EXPERIMENTAL_DRIVABLE.get(spec.type, ()):
                    raise UnsupportedError(s.path, parts.backend, f"experimental {spec.type} reads {h} as a constant "
                                           "(optimizer='exact' schedules it)")
                grp[h] = p
            parts.holders[(s.group, h)] = Holder("param", p)
            parts.drive(s, p, f"{h} Parameter of the group")
    parts.say(f"{spec.name}: mindspore.experimental.optim.{kind} over groups {', '.join(g.name for g in groups)} "
              "(torch-like groups; gradients in optimizer.parameters order).")
    return opt


def _build_exact(parts: Parts, choice: Choice, groups: list[Group], items: Sequence[Slot],
                 params: Mapping[str, list[Any]], index: int) -> Any:
    spec = choice.spec
    by, kind, dicts, opts = _torch_like_groups(parts, choice, groups, items, params)
    for d, g in zip(dicts, groups):  # a group that joins mid-run: untouched until its update
        if group_feature(parts.plan, g, "start_step"):
            d["start_step"] = int(group_feature(parts.plan, g, "start_step"))
    scheduled = {"lr"} if parts.plain else {s.hyper for s in items if s.node is not None}
    opt = exact_optimizer(kind, dicts, opts, scheduled, prefix=f"optbridge.{spec.name}")
    for i, g in enumerate(groups):
        for h, s in by[g.name].items():
            if s.node is None and h != "lr":
                continue
            if h == "lr" or not parts.plain:
                target = opt.hyper(i, h)
            else:  # tracing: plain SGD has no such hyperparameter; a Parameter of the same dtype shows the values
                target = parts.param(s, F64)
            parts.holders[(s.group, h)] = Holder("param", target)
            if s.node is None:
                parts.note(s, "native", f"constant {s.base:g} (float64 Parameter of the exact optimizer)")
            else:
                parts.drive(s, target, f"{h} Parameter of optbridge's exact {kind}")
    parts.say(f"{spec.name}: optbridge's torch-exact {kind} (adapters/mindspore/optimizers.py) over groups "
              f"{', '.join(g.name for g in groups)}: {choice.note}.")
    return opt


def build_family(parts: Parts, choice: Choice, items: Sequence[Slot], params: Mapping[str, list[Any]],
                 order: list[Any] | None, first_index: int) -> list[tuple[Any, list[str]]]:
    """The framework optimizers for one plan optimizer, each with its group names.

    ``first_index`` is the index of the first of them among the setup's optimizers.
    """
    groups = [g for g in choice.spec.groups if g.frozen != "exclude"]
    parts.current = first_index
    if choice.family == "nn":
        return _build_nn(parts, choice, groups, items, params, order, first_index)
    if choice.family == "experimental":
        return [(_build_experimental(parts, choice, groups, items, params, first_index), [g.name for g in groups])]
    return [(_build_exact(parts, choice, groups, items, params, first_index), [g.name for g in groups])]
