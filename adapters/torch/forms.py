"""Lowering a plan's schedules to torch's own scheduler classes, where one is exact.

:func:`lower_lr` maps the lr schedules of one optimizer's groups to a tree of
:class:`Spec` (a torch scheduler class and its arguments) or raises
:class:`NotNative` with the reason. Rules (torch 2.13, measured in
``semantics.md`` §1 and by ``tests/test_reference_vs_torch.py``):

* one torch scheduler drives every group of an optimizer: the groups' nodes must
  be equal, except the fields torch takes per group (LambdaLR / MultiplicativeLR
  functions, CyclicLR ``base_lr``/``max_lr``, OneCycleLR ``max_lr``,
  ReduceLROnPlateau ``min_lr``);
* a ``frozen: zero_lr`` group (lr 0) may share a scheduler only when the
  scheduler keeps 0 at 0 (every factor is relative, or the per-group values are 0);
* ``constant``: ConstantLR needs ``0 < factor <= 1`` (it divides by the factor at
  ``total_iters``); ``linear``: LinearLR needs ``0 < start_factor <= 1`` (so a
  warmup from 0 is not a LinearLR); ``exponential``: ExponentialLR (every 1) or
  StepLR (stair); ``polynomial``: PolynomialLR only with ``end = 0``, no cycle;
  ``cosine``: CosineAnnealingLR is periodic, so a clamped cosine only when the
  plan's horizon never passes ``steps``;
* ``sequence`` -> SequentialLR with no SequentialLR/ChainedScheduler inside, all
  parts on the sequence's clock, OneCycleLR only first (it is constructed last,
  so the others keep the group's lr as their base);
* ``chain`` -> ChainedScheduler of chainable children (ConstantLR, LinearLR,
  StepLR, ExponentialLR, MultiStepLR, PolynomialLR, MultiplicativeLR,
  CosineAnnealingLR with ``eta_min = 0`` while the horizon stays within
  ``T_max``); a root chain whose parts run on different clocks becomes several
  schedulers stacked on the optimizer, each stepped on its own clock;
* ``lambda`` -> LambdaLR and ``multiplicative`` -> MultiplicativeLR with
  :class:`~optbridge_adapters.torch.Lambda` callables; ``plateau`` ->
  ReduceLROnPlateau with its state; ``table``, ``piecewise``, ``natural_exp`` and
  ``inverse_time`` have no torch class.

This module builds no torch object; :func:`construct` does, from a :class:`Spec`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from optbridge import ir
from optbridge.expr import parse

from .lambdas import Lambda

__all__ = ["Spec", "NotNative", "lower_lr", "pair_momentum", "construct", "CHAINABLE"]

CHAINABLE = ("ConstantLR", "LinearLR", "StepLR", "ExponentialLR", "MultiStepLR", "PolynomialLR",
             "MultiplicativeLR", "CosineAnnealingLR", "ChainedScheduler")


class NotNative(Exception):
    """No torch scheduler class expresses the node exactly (the message says why)."""


@dataclass
class Spec:
    """A torch scheduler to construct: ``cls(optimizer, **kwargs)`` (children first)."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    children: list[Spec] = field(default_factory=list)

    def describe(self) -> str:
        if not self.children:
            return self.cls
        return f"{self.cls}[{', '.join(c.describe() for c in self.children)}]"


def _relative_only(n: ir.Node) -> bool:
    """Every value is ``base * factor``: a base of 0 stays 0."""
    if isinstance(n, ir.Constant | ir.Linear | ir.Exponential | ir.MultiStep | ir.Lambda | ir.Multiplicative):
        return True
    if isinstance(n, ir.Polynomial | ir.Cosine | ir.CosineRestarts):
        return n.end == 0.0
    if isinstance(n, ir.Sequence | ir.Chain):
        return all(_relative_only(p) for p in n.parts)
    return False


_PER_GROUP = (ir.Lambda, ir.Multiplicative, ir.Cyclic, ir.OneCycle, ir.Plateau)


class _Lowerer:
    def __init__(self, bases: list[float], zero: list[bool]) -> None:
        self.bases = bases
        self.zero = zero

    # ------------------------------------------------------------------ helpers

    def live(self, nodes: list[ir.Node | None]) -> list[ir.Node]:
        """The nodes of the groups that are not frozen at lr 0 (those always have one)."""
        return [n for n, z in zip(nodes, self.zero, strict=True) if not z and n is not None]

    @staticmethod
    def uniform(live: list[ir.Node], cls: str, strip: dict[str, Any] | None = None) -> None:
        norm = [dataclasses.replace(n, **strip) if strip else n for n in live]
        if any(n != norm[0] for n in norm):
            raise NotNative(f"the groups have different {live[0].kind} schedules, and torch's {cls} takes one "
                            "set of arguments for all groups of an optimizer")

    # ------------------------------------------------------------------ dispatch

    def spec(self, nodes: list[ir.Node | None], where: str, index: int, unit: str, horizon: int | None) -> Spec:
        live = self.live(nodes)
        first = live[0]
        if any(type(n) is not type(first) for n in live):
            raise NotNative("the groups have different kinds of schedule, and one torch scheduler drives every "
                            "group of an optimizer")
        units = {n.unit or unit for n in live}
        if len(units) > 1 or (where != "top" and units != {unit}):
            raise NotNative(f"a {first.kind} part runs on its own clock ({first.unit}) inside a {unit} "
                            "composition, and torch steps a composition's children on one clock")
        if any(self.zero) and not isinstance(first, _PER_GROUP) and not _relative_only(first):
            raise NotNative(f"a frozen zero_lr group must keep lr 0, and the {first.kind} schedule has absolute "
                            "values that would move it")
        fn = getattr(self, "_" + first.kind, None)
        if fn is None:
            raise NotNative(f"torch has no scheduler class for a {first.kind} schedule")
        return fn(nodes, live, where, index, unit, horizon)

    # ------------------------------------------------------------------ closed forms

    def _constant(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                  horizon: int | None) -> Spec:
        self.uniform(live, "ConstantLR")
        n: ir.Constant = live[0]  # the dispatch chose this method by kind
        f, T = n.factor, n.steps
        if f == 1.0 or T == 0:  # base at every step
            return Spec("ConstantLR", {"factor": 1.0, "total_iters": 1})
        if not 0.0 <= f <= 1.0:
            raise NotNative("torch's ConstantLR requires 0 <= factor <= 1")
        if T is None:
            if where == "chained":
                raise NotNative("a constant factor that never ends has no chainable torch scheduler")
            return Spec("LambdaLR", {"lr_lambda": [Lambda(repr(f))] * len(nodes)})
        if f == 0.0 and (horizon is None or horizon >= T):
            raise NotNative("torch's ConstantLR divides by factor at total_iters, and factor is 0")
        return Spec("ConstantLR", {"factor": f, "total_iters": T})

    def _linear(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                horizon: int | None) -> Spec:
        self.uniform(live, "LinearLR")
        n: ir.Linear = live[0]  # the dispatch chose this method by kind
        if not 0.0 < n.start_factor <= 1.0:
            raise NotNative("torch's LinearLR requires 0 < start_factor <= 1 (it cannot warm up from 0)")
        if not 0.0 <= n.end_factor <= 1.0:
            raise NotNative("torch's LinearLR requires 0 <= end_factor <= 1")
        return Spec("LinearLR", {"start_factor": n.start_factor, "end_factor": n.end_factor, "total_iters": n.steps})

    def _exponential(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                     horizon: int | None) -> Spec:
        self.uniform(live, "ExponentialLR")
        n: ir.Exponential = live[0]  # the dispatch chose this method by kind
        if n.stair:
            return Spec("StepLR", {"step_size": n.every, "gamma": n.gamma})
        if n.every == 1:
            return Spec("ExponentialLR", {"gamma": n.gamma})
        raise NotNative("gamma ** (k / every) with every > 1 and no staircase has no torch scheduler")

    def _multistep(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                   horizon: int | None) -> Spec:
        self.uniform(live, "MultiStepLR")
        n: ir.MultiStep = live[0]  # the dispatch chose this method by kind
        return Spec("MultiStepLR", {"milestones": list(n.milestones), "gamma": n.gamma})

    def _polynomial(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                    horizon: int | None) -> Spec:
        self.uniform(live, "PolynomialLR")
        n: ir.Polynomial = live[0]  # the dispatch chose this method by kind
        if n.end != 0.0 or n.cycle:
            raise NotNative("torch's PolynomialLR decays to 0 and clamps (no end value, no cycle)")
        return Spec("PolynomialLR", {"total_iters": n.steps, "power": n.power})

    def _cosine(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                horizon: int | None) -> Spec:
        self.uniform(live, "CosineAnnealingLR")
        n: ir.Cosine = live[0]  # the dispatch chose this method by kind
        within = horizon is not None and horizon <= n.steps
        if where == "chained" and (n.end != 0.0 or not within):
            raise NotNative("a chained CosineAnnealingLR multiplies only with eta_min 0 and within T_max "
                            + ("(eta_min is not 0)" if n.end != 0.0 else
                               "(the plan may run past T_max: set total_steps to bound it)"))
        if n.clamp and not within:
            raise NotNative("torch's CosineAnnealingLR is periodic past T_max and the cosine is clamped "
                            "(the plan may run past steps)")
        return Spec("CosineAnnealingLR", {"T_max": n.steps, "eta_min": n.end})

    def _cosine_restarts(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                         horizon: int | None) -> Spec:
        self.uniform(live, "CosineAnnealingWarmRestarts")
        n: ir.CosineRestarts = live[0]  # the dispatch chose this method by kind
        if where == "chained":
            raise NotNative("CosineAnnealingWarmRestarts sets the lr from initial_lr, so it is not chainable")
        return Spec("CosineAnnealingWarmRestarts", {"T_0": n.period, "T_mult": n.mult, "eta_min": n.end})

    # ------------------------------------------------------------------ per-group classes

    def _cyclic(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                horizon: int | None) -> Spec:
        if where == "chained":
            raise NotNative("CyclicLR computes the lr from absolute values, so it is not chainable")
        down = lambda n: n.step_size_down if n.step_size_down is not None else n.step_size_up  # noqa: E731
        norm = [dataclasses.replace(n, low=None, high=0.0, step_size_down=down(n)) for n in live]
        if any(x != norm[0] for x in norm):
            raise NotNative("the groups' cyclic schedules differ beyond their low/high values")
        n: ir.Cyclic = live[0]  # the dispatch chose this method by kind
        low = [0.0 if z else (x.low if x.low is not None else b)
               for x, z, b in zip(nodes, self.zero, self.bases, strict=True)]
        high = [0.0 if z else x.high for x, z in zip(nodes, self.zero, strict=True)]
        return Spec("CyclicLR", {"base_lr": low, "max_lr": high, "step_size_up": n.step_size_up,
                                 "step_size_down": n.step_size_down, "mode": n.mode, "gamma": n.gamma,
                                 "cycle_momentum": False})

    def _one_cycle(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                   horizon: int | None) -> Spec:
        if where == "chained":
            raise NotNative("OneCycleLR computes the lr from absolute values, so it is not chainable")
        if where == "sequential" and index > 0:
            raise NotNative("OneCycleLR inside SequentialLR only as the first scheduler (its constructor "
                            "overwrites initial_lr, the base SequentialLR resets to)")
        norm = [dataclasses.replace(n, peak=None, initial=None, final=None) for n in live]
        if any(x != norm[0] for x in norm):
            raise NotNative("the groups' one_cycle schedules differ beyond their peak values")
        n: ir.OneCycle = live[0]  # the dispatch chose this method by kind
        peaks = []
        for x, z, b in zip(nodes, self.zero, self.bases, strict=True):
            if z:
                peaks.append(0.0)
                continue
            peak = x.peak if x.peak is not None else b
            initial = peak / n.div_factor  # what torch's constructor computes
            if x.initial is not None and x.initial != initial:
                raise NotNative("OneCycleLR starts at max_lr / div_factor, and the node's initial differs")
            if x.final is not None and x.final != initial / n.final_div_factor:
                raise NotNative("OneCycleLR ends at initial / final_div_factor, and the node's final differs")
            peaks.append(peak)
        return Spec("OneCycleLR", {"max_lr": peaks, "total_steps": n.total_steps, "pct_start": float(n.pct_start),
                                   "anneal_strategy": n.anneal, "div_factor": n.div_factor,
                                   "final_div_factor": n.final_div_factor, "three_phase": n.three_phase,
                                   "cycle_momentum": False})

    def _lambdas(self, nodes: list[Any]) -> list[Lambda]:
        return [Lambda("1") if z else Lambda(x.expr) for x, z in zip(nodes, self.zero, strict=True)]

    def _lambda(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                horizon: int | None) -> Spec:
        if where == "chained":
            raise NotNative("LambdaLR sets lr = initial_lr * f(k), so it is not chainable")
        return Spec("LambdaLR", {"lr_lambda": self._lambdas(nodes)})

    def _multiplicative(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                        horizon: int | None) -> Spec:
        return Spec("MultiplicativeLR", {"lr_lambda": self._lambdas(nodes)})

    def _plateau(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                 horizon: int | None) -> Spec:
        self.uniform(live, "ReduceLROnPlateau", {"min_value": 0.0})
        n: ir.Plateau = live[0]  # the dispatch chose this method by kind
        min_lr = [0.0 if z else x.min_value for x, z in zip(nodes, self.zero, strict=True)]
        return Spec("ReduceLROnPlateau", {"mode": n.mode, "factor": n.factor, "patience": n.patience,
                                          "threshold": n.threshold, "threshold_mode": n.threshold_mode,
                                          "cooldown": n.cooldown, "min_lr": min_lr, "eps": n.eps,
                                          "_state": (n.best, n.bad_steps, n.cooldown_left)})

    # ------------------------------------------------------------------ combinators

    def _sequence(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
                  horizon: int | None) -> Spec:
        if where != "top":
            raise NotNative("torch cannot nest SequentialLR or ChainedScheduler inside a SequentialLR")
        n: ir.Sequence = live[0]  # the dispatch chose this method by kind
        if any(x.boundaries != n.boundaries or x.unit != n.unit for x in live):
            raise NotNative("the groups' sequences have different milestones, and torch's SequentialLR takes one "
                            "list of milestones for all groups")
        u = n.unit or unit
        starts = (0,) + n.boundaries
        children = []
        for i in range(len(n.parts)):
            part_nodes = [None if z else x.parts[i] for x, z in zip(nodes, self.zero, strict=True)]
            end = n.boundaries[i] - 1 if i < len(n.boundaries) else None
            if horizon is not None:
                end = horizon if end is None else min(end, horizon)
            local = None if end is None else max(end - starts[i], 0)
            children.append(self.spec(part_nodes, "sequential", i, u, local))
        return Spec("SequentialLR", {"milestones": list(n.boundaries)}, children)

    def _chain(self, nodes: list[Any], live: list[Any], where: str, index: int, unit: str,
               horizon: int | None) -> Spec:
        if where == "sequential":
            raise NotNative("torch cannot nest a ChainedScheduler inside a SequentialLR")
        n: ir.Chain = live[0]  # the dispatch chose this method by kind
        if any(len(x.parts) != len(n.parts) for x in live):
            raise NotNative("the groups' chains have different numbers of parts")
        u = n.unit or unit
        children = [self.spec([None if z else x.parts[i] for x, z in zip(nodes, self.zero, strict=True)], "chained",
                              i, u, horizon) for i in range(len(n.parts))]
        for c in children:
            if c.cls not in CHAINABLE:
                raise NotNative(f"{c.cls} is not chainable")
        return Spec("ChainedScheduler", {}, children)


def _units(n: ir.Node, unit: str) -> set[str]:
    u = n.unit or unit
    return {u}.union(*(_units(p, u) for p in n.children)) if n.children else {u}


def lower_lr(nodes: list[ir.Node | None], zero: list[bool], bases: list[float], *, unit: str,
             steps_per_epoch: int | None, total_steps: int | None) -> list[tuple[Spec, str]]:
    """Torch schedulers for one optimizer's lr schedules (one node per group, None = constant).

    Returns:
        ``[(spec, unit), ...]``: usually one scheduler; a root chain over different clocks gives one per part
        (stacked on the optimizer, each stepped on its own clock). Empty when no group's lr is scheduled.

    Raises:
        NotNative: no exact torch form, with the reason.
    """
    live = [n for n, z in zip(nodes, zero, strict=True) if not z]
    if not live or all(n is None for n in live):
        return []
    if any(n is None for n in live):
        if not all(isinstance(n, ir.Lambda) for n in live if n is not None):
            raise NotNative("some groups of the optimizer have no lr schedule, and a torch scheduler drives every "
                            "group (only per-group LambdaLR functions can leave a group at its base)")
        one = ir.Lambda(expr=parse("1", path="expr"))
        nodes = [one if n is None and not z else n for n, z in zip(nodes, zero, strict=True)]
    spe = steps_per_epoch or 1
    low = _Lowerer(bases, zero)
    root = next(n for n in nodes if n is not None)

    def horizon(u: str) -> int | None:
        if total_steps is None:
            return None
        return total_steps - 1 if u == "iter" else (total_steps - 1) // spe

    ru = root.unit or unit
    if isinstance(root, ir.Chain) and len(_units(root, unit)) > 1:
        # a root chain over several clocks: one scheduler per part, stacked on the optimizer
        out = []
        for i in range(len(root.parts)):
            parts = [None if z or not isinstance(n, ir.Chain) else n.parts[i]
                     for n, z in zip(nodes, zero, strict=True)]
            pu = next(p for p in parts if p is not None).unit or ru
            if len(_units(next(p for p in parts if p is not None), pu)) > 1:
                raise NotNative("a chain inside a chain runs on several clocks")
            s = low.spec(parts, "chained", i, pu, horizon(pu))
            if s.cls not in CHAINABLE:
                raise NotNative(f"{s.cls} is not chainable")
            out.append((s, pu))
        return out
    if len(_units(root, unit)) > 1 and not isinstance(root, ir.Chain):
        raise NotNative("parts of the schedule run on different clocks (iter and epoch) inside a composition")
    return [(low.spec(nodes, "top", 0, ru, horizon(ru)), ru)]


def pair_momentum(spec: Spec, lr_nodes: list[Any], m_nodes: list[Any], m_bases: list[float]) -> bool:
    """Turn on ``cycle_momentum`` in a CyclicLR/OneCycleLR ``spec`` if the momentum (or beta1) schedules are
    exactly the ones it cycles; return whether it did."""
    if spec.cls not in ("CyclicLR", "OneCycleLR") or any(m is None for m in m_nodes):
        return False
    ref = next(n for n in lr_nodes if n is not None)
    base_m, max_m = [], []
    for m, b in zip(m_nodes, m_bases, strict=True):
        if type(m) is not type(ref) or m.unit != ref.unit:
            return False
        if isinstance(m, ir.Cyclic):
            down = lambda n: n.step_size_down if n.step_size_down is not None else n.step_size_up  # noqa: E731
            if dataclasses.replace(m, low=None, high=0.0, step_size_down=down(m)) != dataclasses.replace(
                    ref, low=None, high=0.0, step_size_down=down(ref)):
                return False
            max_m.append(m.low if m.low is not None else b)
            base_m.append(m.high)
        else:
            strip = dict(peak=None, initial=None, final=None, div_factor=25.0, final_div_factor=1e4)
            if m.initial is None or m.final != m.initial or dataclasses.replace(m, **strip) != dataclasses.replace(
                    ref, **strip):
                return False
            max_m.append(m.initial)
            base_m.append(m.peak if m.peak is not None else b)
    spec.kwargs.update(cycle_momentum=True, base_momentum=base_m, max_momentum=max_m)
    return True


def construct(spec: Spec, optimizer: Any) -> Any:
    """Build the torch scheduler of ``spec`` on ``optimizer`` (children first; OneCycleLR last, see above)."""
    from torch.optim import lr_scheduler as S
    kwargs = dict(spec.kwargs)
    state = kwargs.pop("_state", None)
    if spec.cls == "SequentialLR":
        order = sorted(range(len(spec.children)), key=lambda i: spec.children[i].cls == "OneCycleLR")
        built: dict[int, Any] = {i: construct(spec.children[i], optimizer) for i in order}
        return S.SequentialLR(optimizer, [built[i] for i in range(len(spec.children))], **kwargs)
    if spec.cls == "ChainedScheduler":
        return S.ChainedScheduler([construct(c, optimizer) for c in spec.children], optimizer)
    if spec.cls == "CyclicLR":
        # CyclicLR's first step reads base_lrs from initial_lr before it sets its own base_lr list; torch's
        # setdefault makes initial_lr = base_lr on a fresh optimizer. Give it that, then restore the group's
        # base for the schedulers built after it (and for SequentialLR's reset).
        saved = [g.get("initial_lr") for g in optimizer.param_groups]
        for g, b in zip(optimizer.param_groups, kwargs["base_lr"], strict=True):
            g["initial_lr"] = b
        cyclic = S.CyclicLR(optimizer, **kwargs)
        for g, v in zip(optimizer.param_groups, saved, strict=True):
            if v is not None:
                g["initial_lr"] = v
        return cyclic
    sched: Any = getattr(S, spec.cls)(optimizer, **kwargs)
    if state is not None:  # ReduceLROnPlateau mid-run
        best, bad, cool = state
        if best is not None:
            sched.best = best
        sched.num_bad_epochs, sched.cooldown_counter = bad, cool
    return sched
