"""Live torch objects -> Plan (:func:`from_torch`).

The optimizer and schedulers are read into a torch-dialect document
(:mod:`optbridge.dialects.torch`, which owns the class-by-class translation and
its composition rules), and the resulting plan is then completed with what a
document cannot say:

* plain Python ``lr_lambda`` functions are sampled into tables (with a warning);
  :class:`~optbridge_adapters.torch.Lambda` / :class:`optbridge.expr.Expr`
  callables stay expressions;
* schedulers already stepped ``K`` times start where they stand
  (:mod:`optbridge.shift`); an epoch scheduler in the middle of an
  epoch (known from an iteration scheduler next to it) holds its value for the
  rest of that epoch;
* ReduceLROnPlateau keeps its state (best, bad epochs, cooldown, current lr);
* the imported plan is checked against the optimizer: its values for the next
  update must be the ones the param groups hold.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import lr_scheduler as S

from optbridge import ir
from optbridge.dialects import torch as dialect
from optbridge.errors import ConfigError
from optbridge.expr import Expr
from optbridge.plan import OPTIMIZER_DEFAULTS, Group, Plan, Selector

from .lambdas import Lambda
from optbridge.shift import shift, value_at

__all__ = ["from_torch", "SampledLambdaWarning", "glob_escape"]


class SampledLambdaWarning(UserWarning):
    """A plain Python ``lr_lambda`` was sampled into a table (it is not portable as code)."""


def glob_escape(name: str) -> str:
    """``name`` as an fnmatch pattern that matches exactly it."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


_PLACEHOLDER = "0 * epoch + {} * 0.0009765625"  # an expression no user writes, unique per function
_SCHED_KEYS = ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum")


class _Reader:
    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.opt = optimizer
        self.n = len(optimizer.param_groups)
        self.functions: dict[str, Any] = {}  # placeholder source -> the Python function
        self.momentum_cycled = False

    def fn(self, f: Any) -> str:
        if isinstance(f, Lambda):
            return f.expr
        if isinstance(f, Expr):
            return f.source
        for src, g in self.functions.items():
            if g is f:
                return src
        src = _PLACEHOLDER.format(len(self.functions) + 1)
        self.functions[src] = f
        return src

    def check(self, s: Any, path: str) -> str:
        name = type(s).__name__
        if type(s) is not getattr(S, name, None) or name not in dialect.SCHEDULERS:
            if hasattr(s, "plan_hash"):
                raise ConfigError(path, "is an optbridge scheduler: its plan is already known (use the plan given "
                                  "to to_torch)", name)
            raise ConfigError(path, "must be a torch.optim.lr_scheduler class optbridge knows ("
                              + ", ".join(dialect.SCHEDULERS) + "); subclasses are not", name)
        if getattr(s, "optimizer", None) is not self.opt:
            raise ConfigError(path, "drives another optimizer than the one given", name)
        return name

    def doc(self, s: Any, path: str) -> dict[str, Any]:
        """The torch-dialect dict of scheduler ``s``."""
        name = self.check(s, path)
        d: dict[str, Any] = {"type": name}
        if name in ("LambdaLR", "MultiplicativeLR"):
            d["lr_lambda"] = [self.fn(f) for f in s.lr_lambdas]
        elif name == "StepLR":
            d.update(step_size=s.step_size, gamma=s.gamma)
        elif name == "MultiStepLR":
            d.update(milestones=sorted(s.milestones.elements()), gamma=s.gamma)
        elif name == "ConstantLR":
            d.update(factor=s.factor, total_iters=s.total_iters)
        elif name == "LinearLR":
            d.update(start_factor=s.start_factor, end_factor=s.end_factor, total_iters=s.total_iters)
        elif name == "ExponentialLR":
            d.update(gamma=s.gamma)
        elif name == "PolynomialLR":
            d.update(total_iters=s.total_iters, power=s.power)
        elif name == "CosineAnnealingLR":
            d.update(T_max=s.T_max, eta_min=s.eta_min)
        elif name == "CosineAnnealingWarmRestarts":
            d.update(T_0=s.T_0, T_mult=s.T_mult, eta_min=s.eta_min)
        elif name == "CyclicLR":
            d.update(self._cyclic(s, path))
        elif name == "OneCycleLR":
            d.update(self._one_cycle(s, path))
        elif name == "SequentialLR":
            d.update(schedulers=[self.doc(c, f"{path}.schedulers[{i}]") for i, c in enumerate(s._schedulers)],
                     milestones=list(s._milestones))
        elif name == "ChainedScheduler":
            d.update(schedulers=[self.doc(c, f"{path}.schedulers[{i}]") for i, c in enumerate(s._schedulers)])
        elif name == "ReduceLROnPlateau":
            d.update(mode=s.mode, factor=s.factor, patience=s.patience, threshold=s.threshold,
                     threshold_mode=s.threshold_mode, cooldown=s.cooldown, min_lr=list(s.min_lrs), eps=s.eps)
        return d

    def _cyclic(self, s: Any, path: str) -> dict[str, Any]:
        if s._scale_fn_custom is not None:
            raise ConfigError(f"{path}.scale_fn", "is a custom Python function: only the modes triangular, "
                              "triangular2 and exp_range are portable", s._scale_fn_custom)
        total, ratio = s.total_size, s.step_ratio
        up = round(total * ratio)
        down = round(total) - up
        if up < 1 or down < 1 or float(up) + float(down) != total or float(up) / total != ratio:
            raise ConfigError(f"{path}.step_size_up", "cannot be recovered as integers from total_size and "
                              "step_ratio", (total, ratio))
        d: dict[str, Any] = dict(base_lr=list(s.base_lrs), max_lr=list(s.max_lrs), step_size_up=up,
                                 step_size_down=down, mode=s.mode, gamma=s.gamma, cycle_momentum=s.cycle_momentum)
        if s.cycle_momentum:
            self.momentum_cycled = True
            d.update(base_momentum=list(s.base_momentums), max_momentum=list(s.max_momentums))
        return d

    def _one_cycle(self, s: Any, path: str) -> dict[str, Any]:
        N = s.total_steps
        phases = s._schedule_phases
        groups = self.opt.param_groups
        e1 = phases[0]["end_step"]
        pct = _recover(lambda p: float(p * N) - 1 == e1 and (len(phases) == 2 or float(2 * p * N) - 2 ==
                                                              phases[1]["end_step"]), (e1 + 1) / N)
        if pct is None:
            raise ConfigError(f"{path}.pct_start", "cannot be recovered from the scheduler's phases", e1)
        peaks = [float(g["max_lr"]) for g in groups]
        initial = [float(g["initial_lr"]) for g in groups]
        final = [float(g["min_lr"]) for g in groups]
        div = _recover(lambda d: all(p / d == i for p, i in zip(peaks, initial)), peaks[0] / initial[0]
                       if initial[0] else 25.0)
        fdiv = _recover(lambda d: all(i / d == f for i, f in zip(initial, final)), initial[0] / final[0]
                        if final[0] else 1e4)
        if div is None or fdiv is None:
            raise ConfigError(f"{path}.div_factor", "cannot be recovered from the groups' max_lr, initial_lr and "
                              "min_lr", (peaks, initial, final))
        d: dict[str, Any] = dict(max_lr=peaks, total_steps=N, pct_start=pct, anneal_strategy=s._anneal_func_type,
                                 three_phase=len(phases) == 3, div_factor=div, final_div_factor=fdiv,
                                 cycle_momentum=s.cycle_momentum)
        if s.cycle_momentum:
            self.momentum_cycled = True
            d.update(base_momentum=[float(g["base_momentum"]) for g in groups],
                     max_momentum=[float(g["max_momentum"]) for g in groups])
        return d


def _recover(ok: Any, guess: float) -> float | None:
    """A float near ``guess`` for which ``ok`` holds (torch stores only derived values)."""
    cands = [guess]
    lo = hi = guess
    for _ in range(4):
        lo, hi = math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)
        cands += [lo, hi]
    return next((c for c in cands if ok(c)), None)


def _count(s: Any, path: str) -> int | None:
    """How many times ``s`` was stepped (None for ReduceLROnPlateau, which keeps state instead)."""
    if isinstance(s, S.ReduceLROnPlateau):
        return None
    if isinstance(s, S.ChainedScheduler):
        ks = {_count(c, path) for c in s._schedulers}
        if len(ks) != 1:
            raise ConfigError(path, "holds schedulers stepped different numbers of times", sorted(ks))
        return ks.pop()
    k = int(s.last_epoch)
    if isinstance(s, S.CosineAnnealingWarmRestarts):
        start, length = 0, s.T_0
        while start + length <= k:
            start, length = start + length, length * s.T_mult
        if s.T_cur != k - start or s.T_i != length:
            raise ConfigError(path, "was stepped with explicit (fractional) epochs: its T_cur/T_i do not follow "
                              "its step count", (s.T_cur, s.T_i, k))
    return k


def _pairs(scheduler: Any, step_unit: str) -> list[tuple[Any, str]]:
    if scheduler is None:
        return []
    if not isinstance(scheduler, (list, tuple)):
        return [(scheduler, step_unit)]
    out = []
    for i, item in enumerate(scheduler):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
            ir.check_choice(f"scheduler[{i}][1]", item[1], ir.UNITS)
            out.append((item[0], item[1]))
        else:
            out.append((item, step_unit))
    if len({id(s) for s, _ in out}) != len(out):
        raise ConfigError("scheduler", "lists the same scheduler twice", [type(s).__name__ for s, _ in out])
    return out


def _names(model: Any) -> dict[int, str]:
    if isinstance(model, torch.nn.Module):
        items = list(model.named_parameters())
    elif isinstance(model, Mapping):
        items = list(model.items())
    else:
        items = list(model)
    out: dict[int, str] = {}
    for name, p in items:
        out.setdefault(id(p), name)
    return out


def from_torch(optimizer: torch.optim.Optimizer, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
               steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """The plan of a live torch optimizer and its scheduler(s).

    Args:
        optimizer: A ``torch.optim`` optimizer (SGD, Adam, AdamW, RMSprop, Adagrad,
            Adadelta, Adamax, NAdam, RAdam). Every group option is written as torch
            filled it (defaults explicit at the optimizer level, differences per group).
        scheduler: None, a torch scheduler, a list of schedulers stacked on the
            optimizer, or a list of ``(scheduler, "iter" | "epoch")`` pairs (what each
            ``step()`` counts). Schedulers already stepped ``K`` times start where they
            stand: update 0 of the plan is the optimizer's next update.
        model: The module (or ``(name, tensor)`` pairs) whose ``named_parameters()``
            name the groups' parameters: each group selects exactly its names;
            parameters in no group go to a ``frozen: exclude`` group. Without a model
            the groups have no selectors (enough for tracing).
        step_unit: What ``scheduler.step()`` counts when not given per pair.
        steps_per_epoch: Updates per epoch (needed to mix iteration and epoch schedulers).
        total_steps: Updates the plan is defined for; needed to sample plain Python
            ``lr_lambda`` functions into tables (with a :class:`SampledLambdaWarning`).
            :class:`Lambda` functions need no horizon.

    Raises:
        ConfigError: a scheduler torch cannot compose that way, a plain Python function
            without ``total_steps``, a parameter not in ``model``, or a scheduler whose
            state does not follow its schedule.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError("optimizer", "must be a torch.optim optimizer", type(optimizer).__name__)
    otype = type(optimizer).__name__
    if type(optimizer) is not getattr(torch.optim, otype, None) or otype not in OPTIMIZER_DEFAULTS:
        raise ConfigError("optimizer", "must be one of the torch.optim classes optbridge knows ("
                          + ", ".join(k for k in OPTIMIZER_DEFAULTS if hasattr(torch.optim, k)) + ")", otype)
    ir.check_choice("step_unit", step_unit, ir.UNITS)
    if total_steps is not None:
        total_steps = ir.check_int("total_steps", total_steps, minimum=1)
    pairs = _pairs(scheduler, step_unit)
    reader = _Reader(optimizer)
    docs = []
    for i, (s, unit) in enumerate(pairs):
        path = "scheduler" if len(pairs) == 1 else f"scheduler[{i}]"
        d = reader.doc(s, path)
        if unit != step_unit:
            d["step_unit"] = unit
        docs.append(d)
    counts = [_count(s, "scheduler" if len(pairs) == 1 else f"scheduler[{i}]") for i, (s, _) in enumerate(pairs)]
    spe = steps_per_epoch or 1

    # ---- where the plan's clock (update index 0 = the next update) stands on each scheduler's clock
    iters = {k for k, (s, u) in zip(counts, pairs) if k is not None and u == "iter"}
    if len(iters) > 1:
        raise ConfigError("scheduler", "holds iteration schedulers stepped different numbers of times", sorted(iters))
    done = iters.pop() if iters else None  # updates done, when an iteration scheduler tells
    offsets = []  # per entry: (scheduler steps K, updates into the current epoch r)
    for i, (k, (s, u)) in enumerate(zip(counts, pairs)):
        r = 0
        if k is not None and u == "epoch" and step_unit == "iter" and done is not None:
            r = done - k * spe
            if not 0 <= r < spe:
                raise ConfigError(f"scheduler[{i}]", f"was stepped {k} epochs while the iteration schedulers were "
                                  f"stepped {done} times: with steps_per_epoch={spe} these disagree", k)
        offsets.append((k or 0, r))
    behind = max((k * (spe if u == "epoch" and step_unit == "iter" else 1) + r
                  for (k, r), (_, u) in zip(offsets, pairs)), default=0)

    # ---- param groups
    has_sched = bool(pairs) and not isinstance(pairs[0][0], S.ReduceLROnPlateau)
    defaults = dict(optimizer.defaults)
    for g in optimizer.param_groups:  # a tensor lr is shared with the defaults and filled in place by schedulers
        if g["lr"] is defaults.get("lr") and has_sched and "initial_lr" in g:
            defaults["lr"] = g["initial_lr"]
    accepted = dialect.OPTIMIZER_KWARGS[otype]
    names = _names(model) if model is not None else None
    groups_doc, taken = [], set()
    for i, g in enumerate(optimizer.param_groups):
        gname = g.get("name")
        if not isinstance(gname, str) or not gname or gname in taken:
            gname = f"group{i}"
        taken.add(gname)
        opts = {k: _plain(g[k]) for k in accepted if k in g and k != "lr" and _plain(g[k]) != _plain(defaults.get(k))}
        lr = g["initial_lr"] if has_sched and "initial_lr" in g else g["lr"]
        opts["lr"] = float(lr)
        if reader.momentum_cycled and "max_momentum" in g:
            if "betas" in g:
                opts["betas"] = [float(g["max_momentum"]), float(g["betas"][1])]
            else:
                opts["momentum"] = float(g["max_momentum"])
        if names is None:
            params: Any = {"names": [f"__group{i}"]}
        else:
            pn = []
            for j, p in enumerate(g["params"]):
                if id(p) not in names:
                    raise ConfigError(f"param_groups[{i}].params[{j}]", "is not a parameter of the model",
                                      tuple(p.shape))
                pn.append(glob_escape(names[id(p)]))
            params = {"names": pn}
        groups_doc.append({"name": gname, "params": params, **opts})
    doc: dict[str, Any] = {"dialect": "torch", "optimizer": {"type": otype, **{k: _plain(v) for k, v in defaults.items()
                                                                            if k in accepted}},
                           "param_groups": groups_doc, "step_unit": step_unit}
    if steps_per_epoch is not None:
        doc["steps_per_epoch"] = steps_per_epoch
    if total_steps is not None:
        doc["total_steps"] = total_steps + behind  # the dialect checks chained cosines on the scheduler's clock
    if docs:
        doc["scheduler"] = docs[0] if len(docs) == 1 else docs
    plan = dialect.from_torch(doc)

    # ---- complete the plan: sampled functions, shifts, plateau state
    groups = list(plan.optimizers[0].groups)
    hypers = sorted({h for g in groups for h in (set(plan.schedule) | set(g.schedule))}, key=lambda h: (h != "lr", h))
    new: dict[str, list[ir.Node | None]] = {}
    for h in hypers:
        nodes = []
        for g in groups:
            node = plan.schedule_for(g, h)
            if node is not None:
                node = _complete(node, _base(plan, g, h), pairs, offsets, reader, step_unit, spe, total_steps)
            nodes.append(node)
        new[h] = nodes
    plan_sched: dict[str, ir.Node] = {}
    group_sched: list[dict[str, ir.Node]] = [{} for _ in groups]
    for h, nodes in new.items():
        if all(n == nodes[0] for n in nodes):
            if nodes[0] is not None:
                plan_sched[h] = nodes[0]
        else:
            for gi, n in enumerate(nodes):
                if n is not None:
                    group_sched[gi][h] = n
    out_groups = []
    for gi, g in enumerate(groups):
        out_groups.append(dataclasses.replace(g, schedule=group_sched[gi],
                                              select=g.select if names is not None else ()))
    if names is not None:
        used = {id(p) for g in optimizer.param_groups for p in g["params"]}
        left = [glob_escape(n) for i, n in names.items() if i not in used]
        if left:
            extra = "not_optimized"
            while extra in taken:
                extra = "_" + extra
            out_groups.append(Group(name=extra, select=(Selector(names=tuple(left)),), frozen="exclude"))
    opt = dataclasses.replace(plan.optimizers[0], groups=tuple(out_groups))
    plan = dataclasses.replace(plan, optimizers=(opt,), schedule=plan_sched, total_steps=total_steps)
    if reader.functions:
        _warn(reader, total_steps)
    _check_bases(pairs, plan)
    _check_current(plan, optimizer)
    return plan


def _check_bases(pairs: list[tuple[Any, str]], plan: Plan) -> None:
    """SequentialLR restarts its schedulers from their own base_lrs: they must be the plan's base lrs.

    torch takes a scheduler's base from ``initial_lr`` when it is constructed, so
    schedulers built after a OneCycleLR start from its ``max_lr / div_factor`` (what
    the dialect assumes), and ones built before it from the group's lr (what
    ``to_torch`` builds for a plan whose base differs): the plan cannot say both.
    """
    from optbridge.plan import hyper_base
    groups = [g for g in plan.groups if g.frozen != "exclude"]
    want = [hyper_base(plan, g, "lr") for g in groups]
    for i, (s, _) in enumerate(pairs):
        if not isinstance(s, S.SequentialLR):
            continue
        for j, c in enumerate(s._schedulers):
            if isinstance(c, (S.CyclicLR, S.OneCycleLR)):
                continue
            got = [float(b) for b in c.base_lrs]
            if got != want:
                path = ("scheduler" if len(pairs) == 1 else f"scheduler[{i}]") + f".schedulers[{j}]"
                raise ConfigError(path, f"restarts from base lrs {got}, not the groups' base lrs {want} (torch "
                                  "takes a scheduler's base from initial_lr when it is constructed): a plan has one "
                                  "base per group", type(c).__name__)


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return float(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _base(plan: Plan, g: Group, h: str) -> float:
    from optbridge.plan import hyper_base
    return hyper_base(plan, g, h)


def _warn(reader: _Reader, total: int | None) -> None:
    names = ", ".join(getattr(f, "__qualname__", type(f).__name__) for f in reader.functions.values())
    warnings.warn(f"from_torch: lr_lambda function(s) {names} are plain Python code, not optbridge expressions: "
                  f"sampled into tables over total_steps={total} (the plan is defined for those steps only); pass "
                  "optbridge_adapters.torch.Lambda('<expression>') to keep a schedule portable",
                  SampledLambdaWarning, stacklevel=3)


def _complete(node: ir.Node, base: float, pairs: list, offsets: list, reader: _Reader, step_unit: str, spe: int,
              total: int | None) -> ir.Node:
    """Sample functions, shift to where each scheduler stands, restore plateau state (one group's node)."""
    if isinstance(node, ir.Plateau):
        s = pairs[0][0]
        best = s.best if math.isfinite(s.best) else None
        return dataclasses.replace(node, best=best, bad_steps=int(s.num_bad_epochs),
                                   cooldown_left=int(s.cooldown_counter))
    if len(pairs) > 1:
        assert isinstance(node, ir.Chain)
        return ir.Chain(parts=tuple(_entry(p, base, k, r, u, reader, step_unit, spe, total)
                                    for p, (k, r), (_, u) in zip(node.parts, offsets, pairs)), unit=node.unit)
    (k, r), (_, u) = offsets[0], pairs[0]
    return _entry(node, base, k, r, u, reader, step_unit, spe, total)


def _entry(node: ir.Node, base: float, k: int, r: int, unit: str, reader: _Reader, step_unit: str, spe: int,
           total: int | None) -> ir.Node:
    """One scheduler's node: sampled functions, then shifted to where it stands (``k`` steps, ``r`` updates into
    the current epoch for an epoch scheduler next to an iteration one)."""
    root_unit = node.unit
    n = dataclasses.replace(node, unit=None)  # on the scheduler's own clock from here on
    if reader.functions:
        if total is None:
            raise ConfigError("total_steps", "is needed: the schedulers use plain Python lr_lambda functions, which "
                              "from_torch samples into tables over total_steps (or pass "
                              "optbridge_adapters.torch.Lambda('<expression>') functions instead)", None,
                              show_value=False)
        horizon = k + total * (spe if unit == "iter" and step_unit == "epoch" else 1) + 2
        n = _sample(n, base, horizon, reader, False)
    if r == 0:
        out = shift(n, k, base)
        return dataclasses.replace(out, unit=root_unit) if out.unit != root_unit else out
    now, nxt = shift(n, k, base), shift(n, k + 1, base)
    return ir.Sequence(parts=(dataclasses.replace(now, unit="epoch"), dataclasses.replace(nxt, unit="epoch")),
                       boundaries=(spe - r,), unit="iter")


def _sample(n: ir.Node, base: float, horizon: int, reader: _Reader, continuation: bool,
            anchor: float | None = None) -> ir.Node:
    """Replace placeholder lambdas by tables of the Python function's values."""
    if isinstance(n, (ir.Lambda, ir.Multiplicative)) and n.expr.source in reader.functions:
        f = reader.functions[n.expr.source]
        vals = [_call(f, j) for j in range(horizon)]
        if isinstance(n, ir.Lambda):
            return ir.Table(values=tuple(vals), relative=True)
        out, v = [], (anchor * vals[0] if continuation else base)  # type: ignore[operator]
        out.append(v)
        for j in range(1, horizon):
            v = v * vals[j]
            out.append(v)
        return ir.Table(values=tuple(out))
    if isinstance(n, ir.Sequence):
        parts: list[ir.Node] = []
        starts = (0,) + n.boundaries
        for i, p in enumerate(n.parts):
            cont = i > 0 and starts[i] > 0 and isinstance(p, ir.Multiplicative)
            anc = None
            if cont and p.expr.source in reader.functions:
                prefix = ir.Sequence(parts=tuple(parts), boundaries=n.boundaries[:i - 1])
                anc = value_at(prefix, starts[i] - 1, base)
            parts.append(_sample(p, base, horizon, reader, cont, anc))
        return dataclasses.replace(n, parts=tuple(parts))
    if isinstance(n, ir.Chain):
        return dataclasses.replace(n, parts=tuple(_sample(p, base, horizon, reader, False) for p in n.parts))
    return n


def _call(f: Any, j: int) -> float:
    try:
        v = f(j)
        return float(v)
    except Exception as e:  # the user's function
        raise ConfigError("lr_lambda", f"raised {type(e).__name__}: {e} when sampled at epoch {j}", f) from None


def _check_current(plan: Plan, optimizer: torch.optim.Optimizer) -> None:
    """The imported plan's values for the next update must be what the optimizer's groups hold."""
    from optbridge.tracing import reference_trace
    from .build import _read
    tr = reference_trace(plan, 1)
    for i, g in enumerate(optimizer.param_groups):
        for h in tr:
            want, got = float(tr[h][i, 0]), _read(g, h)
            if abs(want - got) > 1e-9 * abs(got) and not (want == got):
                raise ConfigError(f"param_groups[{i}].{h}", f"the imported plan gives {want!r} for the next update "
                                  f"but the optimizer holds {got!r}: the scheduler's state does not follow its "
                                  "schedule (stepped with an explicit epoch, or the value edited by hand?)", got)

