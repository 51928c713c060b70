"""Porting traps: warnings about plans and native optimizers that run, but not as the author likely meant.

:func:`lint` looks at a plan; :func:`native_lints` at a native MindSpore or MegEngine
optimizer a user chose (``optbridge.from_mindspore`` / ``from_megengine`` warn with
them). Each finding is a :class:`Lint`: a stable ``code``, the config ``path``, a
message, and the ``size`` of the effect, measured or computed by the reference
evaluator (its unit depends on the code, see :data:`CODES`). ``optbridge validate``
prints them (``--strict`` makes them errors).

Every trap comes from the frameworks' measured behaviour
(``../shared/reference/semantics.md``) or from the measured native-vs-exact optimizer
tables (``optbridge_adapters.mindspore.native``, ``optbridge_adapters.megengine.native``,
framework-free modules).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ir
from .checks import option_path
from .errors import OptbridgeWarning
from .plan import Plan
from .slots import Slot, slots

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["Lint", "LintWarning", "CODES", "FRAMEWORKS", "lint", "native_lints", "warn"]

FRAMEWORKS = ("torch", "mindspore", "megengine")

#: code -> what the lint is about, and the unit of its ``size``.
CODES: dict[str, str] = {
    "floor-above-base": "an absolute floor (cosine/polynomial end, plateau min_value) at or above a group's base "
                        "value: the value climbs or never decays; size: floor / base",
    "float32-underflow": "a group lr below float32's smallest normal number at some update (float32 parameters "
                         "take it as float32 in every framework; MindSpore and MegEngine store it as float32): "
                         "precision lost or the lr is 0; size: worst relative error of the float32 lr (1 = lost)",
    "mindspore-static-lr": "a static group lr beside a dynamic one: MindSpore's nn optimizers compute it as "
                           "lr + 1.0 - 1.0 in float32; size: worst relative error of the applied lr",
    "float32-step": "a run past 2**24 updates: float32 step counters (MindSpore cells, experimental schedulers, "
                    "MegEngine Adam's step) stop counting exactly; size: largest counter error, in updates",
    "cosine-past-tmax": "a periodic cosine (torch's CosineAnnealingLR) run past its steps: the value climbs back "
                        "towards base; size: the largest climb above end, in the hyperparameter's units",
    "one-cycle-extrapolates": "a one_cycle run to update total_steps, where torch's OneCycleLR extrapolates past "
                              "final; size: |value there - final|",
    "natural-exp-every": "natural_exp with every != 1 and no stair: MindSpore's code ignores decay_epoch / "
                         "decay_steps there, its docstring divides by it; size: largest relative difference "
                         "between the two over the run",
    "plateau-eps": "a plateau whose first reduction is smaller than eps: torch's ReduceLROnPlateau never reduces "
                   "the value; size: the relative reduction it skips",
    "native-update": "a native optimizer that computes another update than torch's for these options; size: the "
                     "measured difference (MindSpore: max |p_native - p_torch| over 100 steps; MegEngine: worst "
                     "difference in units of torch's own float32 error)",
    "not-torch-adamw": "MindSpore's nn.AdamWeightDecay (no bias correction) is not torch's AdamW; size: measured "
                       "max |p_native - p_torch| over 100 steps",
}


@dataclass(frozen=True)
class Lint:
    """One porting trap found.

    Attributes:
        code: Stable identifier (a key of :data:`CODES`).
        path: Config path of what triggers it (``schedule.lr.parts[1].end``, ``optimizer``).
        message: What happens, in words, with the numbers.
        size: How large the effect is (unit per :data:`CODES`), or None when not measurable.
        frameworks: Where it bites (empty: everywhere).
    """

    code: str
    path: str
    message: str
    size: float | None = None
    frameworks: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f" ({', '.join(self.frameworks)})" if self.frameworks else ""
        return f"{self.path}: {self.message} [{self.code}{where}]"


class LintWarning(OptbridgeWarning):
    """A :class:`Lint` as a Python warning (``.lint`` holds the record)."""

    def __init__(self, item: Lint) -> None:
        super().__init__(str(item))
        self.lint = item


def warn(items: Iterable[Lint], stacklevel: int = 2) -> None:
    """Emit each lint as a :class:`LintWarning`."""
    for item in items:
        warnings.warn(LintWarning(item), stacklevel=stacklevel + 1)


# --------------------------------------------------------------------------- helpers

def _names(groups: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(g) for g in groups[:limit])
    more = f" (+{len(groups) - limit} more)" if len(groups) > limit else ""
    return f"group{'s' if len(groups) > 1 else ''} {shown}{more}"


def _g(x: float) -> str:
    return f"{x:.4g}"


def _tree(node: ir.Node, path: str, unit: str, spe: int | None, start: int, end: int | None
          ) -> Iterator[tuple[ir.Node, str, str, int, int | None]]:
    """``(node, path, inherited unit, first update, first update past it or None)`` of every node in the tree.

    A sequence part runs from its boundary to the next one (or the end); a chain's parts
    run as long as the chain.
    """
    yield node, path, unit, start, end
    u = node.unit or unit
    if isinstance(node, ir.Sequence):
        starts = node.starts(unit, spe)
        for i, part in enumerate(node.parts):
            s = start + starts[i]
            e = start + starts[i + 1] if i + 1 < len(starts) else end
            if end is not None and e is not None:
                e = min(e, end)
            if end is None or s < end:
                yield from _tree(part, f"{path}.parts[{i}]", u, spe, s, e)
    elif isinstance(node, ir.Chain):
        for i, part in enumerate(node.parts):
            yield from _tree(part, f"{path}.parts[{i}]", u, spe, start, end)


def _horizon(plan: Plan, steps: int | None) -> int | None:
    """Updates of the run: ``steps``, at most the plan's ``total_steps``."""
    if steps is None:
        return plan.total_steps
    return steps if plan.total_steps is None else min(steps, plan.total_steps)


def _local(node: ir.Node, unit: str, spe: int | None, t: Sequence[int], base: float) -> np.ndarray:
    """Values of ``node`` alone at updates ``t`` counted from its start (the reference evaluator)."""
    import numpy as np

    from . import evaluate
    return evaluate.values(node, np.asarray(t, dtype=np.int64), base=base, unit=unit, steps_per_epoch=spe)


# --------------------------------------------------------------------------- plan lints

def _floors(plan: Plan, driven: Sequence[Slot], end: int | None) -> Iterator[Lint]:
    found: dict[str, tuple[list[str], float, float, str, str]] = {}
    for s in driven:
        assert s.node is not None
        for node, path, _, _, _ in _tree(s.node, s.path, plan.step_unit, plan.steps_per_epoch, 0, end):
            if isinstance(node, (ir.Cosine, ir.CosineRestarts, ir.Polynomial)):
                field, floor = "end", float(node.end)
            elif isinstance(node, ir.Plateau):
                field, floor = "min_value", float(node.min_value)
            else:
                continue
            if floor < s.base or (floor == s.base == 0.0):
                continue
            ratio = math.inf if s.base == 0 else floor / s.base
            groups, worst, _, _, _ = found.get(f"{path}.{field}", ([], 0.0, 0.0, "", ""))
            found[f"{path}.{field}"] = (groups + [s.group], max(worst, ratio), floor, node.kind, s.hyper)
    for path, (groups, worst, floor, kind, hyper) in found.items():
        verb = "climbs towards it" if worst > 1 else "never decays"
        yield Lint("floor-above-base", path,
                   f"the {kind}'s absolute floor {_g(floor)} is at or above the base {hyper} of {_names(groups)}: "
                   f"that {hyper} {verb} (floor / base up to {_g(worst)}); a floor meant relative to each group "
                   "needs a relative schedule, or a per-group override", worst)


def _underflow(plan: Plan, driven: Sequence[Slot], steps: int | None, metrics: Any) -> Iterator[Lint]:
    import numpy as np

    from .checks import value_windows
    tiny = float(np.finfo(np.float32).tiny)
    lr = [s for s in driven if s.hyper == "lr"]
    worst: dict[str, tuple[float, int, float]] = {}  # group -> (relative error, first update, value there)
    for items, block, first in value_windows(plan, lr, steps=steps, metrics=metrics):
        sub = (block != 0) & (np.abs(block) < tiny) & np.isfinite(block)
        if not sub.any():
            continue
        for j in np.flatnonzero(sub.any(axis=1)):
            cols = np.flatnonzero(sub[j])
            v = block[j, cols]
            rel = np.abs(v.astype(np.float32).astype(np.float64) - v) / np.abs(v)
            g = items[j].group
            prev = worst.get(g)
            k = first + int(cols[0])
            worst[g] = (max(float(rel.max()), prev[0] if prev else 0.0), min(k, prev[1]) if prev else k,
                        float(v[0]) if prev is None or k < prev[1] else prev[2])
    for g, (rel, k, v) in worst.items():
        path = next(s.path for s in lr if s.group == g)
        lost = "is 0 in float32 (no update)" if rel >= 1 else f"loses precision in float32 (relative error {_g(rel)})"
        yield Lint("float32-underflow", path,
                   f"group {g!r}: the lr falls below float32's smallest normal number {_g(tiny)} from update {k} "
                   f"({_g(v)}) and {lost}; float32 parameters take the lr as float32 in every framework, and "
                   "MegEngine, which flushes subnormals to zero, applies 0", rel)


def _static_mix(plan: Plan, held: Sequence[Slot], driven: Sequence[Slot]) -> Iterator[Lint]:
    import numpy as np
    one = np.float32(1.0)
    for opt in plan.optimizers:
        dynamic = [s for s in driven if s.optimizer == opt.name and s.hyper == "lr"]
        static = [s for s in held if s.optimizer == opt.name and s.hyper == "lr" and s.base > 0]
        if not dynamic or not static:
            continue
        errs = []
        for s in static:
            applied = float((np.float32(s.base) + one) - one)  # what MindSpore's _ConvertToCell computes (§6)
            errs.append((abs(applied - s.base) / s.base, s, applied))
        rel, s, applied = max(errs, key=lambda e: e[0])
        group = next(g for g in opt.groups if g.name == s.group)
        key = "lr" if "lr" in group.options or "lr_mult" not in group.options else "lr_mult"
        yield Lint("mindspore-static-lr", option_path(plan, group, key),
                   f"{_names([e[1].group for e in errs])} {'keeps' if len(errs) == 1 else 'keep'} a static lr beside "
                   f"the dynamic lr of {_names([d.group for d in dynamic])}: MindSpore's nn optimizers then apply "
                   f"lr + 1.0 - 1.0 in float32 (group {s.group!r}: {s.base!r} is applied as {applied!r}, "
                   f"relative error {_g(rel)}); optbridge's to_mindspore makes every group lr dynamic, "
                   "a hand port must too", rel,
                   ("mindspore",))


def _step_counter(plan: Plan, driven: Sequence[Slot], end: int | None) -> Iterator[Lint]:
    if end is None or end <= 2**24 or not driven:
        return
    e = math.floor(math.log2(end - 1))
    err = float(2 ** (e - 24))
    yield Lint("float32-step", "total_steps",
               f"the run has {end} updates, past 2**24 = 16777216: float32 step counters stop counting exactly "
               f"(errors up to {_g(err)} updates): MindSpore's LearningRateSchedule cells (global_step cast to "
               "float32) and experimental schedulers (float32 last_epoch) repeat values; MegEngine's Adam step "
               "stops at 2**24 (harmless: its bias correction is 1 by then); optbridge's list and driver forms "
               "count in integers", err, ("mindspore", "megengine"))


def _cosines(plan: Plan, driven: Sequence[Slot], end: int | None) -> Iterator[Lint]:
    if end is None:
        return
    found: dict[str, tuple[list[str], float, int]] = {}
    spe = plan.steps_per_epoch
    for s in driven:
        assert s.node is not None
        for node, path, unit, first, stop in _tree(s.node, s.path, plan.step_unit, spe, 0, end):
            if isinstance(node, ir.OneCycle):
                continue
            if not isinstance(node, ir.Cosine) or node.clamp or stop is None:
                continue
            sc = node.scale(unit, spe)
            t_end = node.steps * sc  # the first update past T (the value is end there)
            if stop - first <= t_end + sc - 1:  # no counter beyond T is reached
                continue
            last = min(stop - first - 1, 2 * t_end)
            v = _local(node, unit, spe, [t_end, last], s.base)
            climb = float(v[1] - v[0])
            groups, worst, _ = found.get(path, ([], 0.0, 0))
            found[path] = (groups + [s.group], max(worst, climb), first + t_end)
    for path, (groups, climb, at) in found.items():
        yield Lint("cosine-past-tmax", path,
                   f"the cosine reaches its end at update {at} but the run goes on: like torch's CosineAnnealingLR "
                   f"it is periodic and climbs back (by up to {_g(climb)} for {_names(groups)}); set clamp: true to "
                   "hold the end (MindSpore's CosineDecayLR), or make steps cover the run", climb)


def _one_cycles(plan: Plan, driven: Sequence[Slot], end: int | None) -> Iterator[Lint]:
    if end is None:
        return
    found: dict[str, tuple[list[str], float, int]] = {}
    for s in driven:
        assert s.node is not None
        for node, path, unit, first, stop in _tree(s.node, s.path, plan.step_unit, plan.steps_per_epoch, 0, end):
            if not isinstance(node, ir.OneCycle) or stop is None:
                continue
            sc = node.scale(unit, plan.steps_per_epoch)
            at = node.total_steps * sc
            if stop - first <= at:
                continue
            v = float(_local(node, unit, plan.steps_per_epoch, [at], s.base)[0])
            gap = abs(v - float(node.anchors(s.base)["final"]))
            groups, worst, _ = found.get(path, ([], 0.0, 0))
            found[path] = (groups + [s.group], max(worst, gap), first + at)
    for path, (groups, gap, at) in found.items():
        yield Lint("one-cycle-extrapolates", path,
                   f"update {at} uses the one_cycle at k = total_steps, where torch's OneCycleLR extrapolates past "
                   f"final (off by up to {_g(gap)} for {_names(groups)}) and any later update raises; total_steps is "
                   "probably one short of the run", gap)


def _natural_exps(plan: Plan, driven: Sequence[Slot], end: int | None) -> Iterator[Lint]:
    found: dict[str, float] = {}
    for s in driven:
        assert s.node is not None
        for node, path, unit, first, stop in _tree(s.node, s.path, plan.step_unit, plan.steps_per_epoch, 0, end):
            if not isinstance(node, ir.NaturalExp) or node.stair or node.every == 1:
                continue
            sc = node.scale(unit, plan.steps_per_epoch)
            last = (stop - first - 1) if stop is not None else node.every * sc
            documented = ir.NaturalExp(rate=node.rate / node.every, unit=node.unit)
            a = _local(node, unit, plan.steps_per_epoch, [last], s.base)[0]
            b = _local(documented, unit, plan.steps_per_epoch, [last], s.base)[0]
            rel = abs(float(a) - float(b)) / abs(float(b)) if b else math.inf
            found[path] = max(found.get(path, 0.0), rel)
    for path, rel in found.items():
        yield Lint("natural-exp-every", path,
                   "natural_exp ignores every unless stair, as MindSpore's natural_exp_decay_lr / NaturalExpDecayLR "
                   "code does (their docstring says exp(-rate * k / every)); if the docstring was meant, use rate / "
                   f"every with every 1 (the two differ by up to {_g(rel)} relative over the run)", rel, ("mindspore",))


def _plateaus(plan: Plan, driven: Sequence[Slot]) -> Iterator[Lint]:
    import numpy as np

    from . import evaluate
    for s in driven:
        node = s.node
        if not isinstance(node, ir.Plateau) or node.eps <= 0:
            continue
        n = (node.patience + 2) * (node.cooldown + 1) + node.cooldown_left + 2
        # a metric that never improves: a reduction is due after patience + 1 steps
        kw: dict[str, Any] = dict(base=s.base, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                                  metrics=[1.0] * n)
        t = np.arange(n, dtype=np.int64) * node.scale(plan.step_unit, plan.steps_per_epoch)
        blocked = evaluate.values(node, t, **kw)
        free = evaluate.values(dataclasses.replace(node, eps=0.0), t, **kw)
        lower = np.flatnonzero(free < s.base)
        if blocked[-1] == s.base and lower.size:
            first = float(free[lower[0]])
            yield Lint("plateau-eps", f"{s.path}.eps",
                       f"group {s.group!r}: reducing its {s.hyper} {_g(s.base)} to {_g(first)} changes it by "
                       f"{_g(s.base - first)}, not more than eps {_g(node.eps)}, so torch's ReduceLROnPlateau never "
                       "reduces it; lower eps", (s.base - first) / s.base)


def _options(plan: Plan) -> Iterator[tuple[int, Any, list[tuple[str, dict[str, Any]]]]]:
    """``(optimizer index, spec, [(group name, torch options)])`` of every optimizer (built groups)."""
    from .params import effective_options
    for i, opt in enumerate(plan.optimizers):
        yield i, opt, [(g.name, effective_options(plan, g)) for g in opt.groups if g.frozen != "exclude"]


def _opt_path(plan: Plan, i: int) -> str:
    return "optimizer" if len(plan.optimizers) == 1 else f"optimizers[{i}]"


def _mindspore_natives(plan: Plan) -> Iterator[Lint]:
    from optbridge_adapters.mindspore import native as ms
    for i, opt, groups in _options(plan):
        if opt.type not in ms.KINDS:
            continue
        rows: dict[str, tuple[Any, list[str]]] = {}  # native class -> (its worst applicable row, groups)
        for name, options in groups:
            for native in dict.fromkeys(r.native for r in ms.NATIVE if r.kind == opt.type):
                hits = [r for r in ms.differences(native, options) if r.kind == opt.type]
                if hits:
                    worst = max(hits, key=lambda r: r.worst)
                    prev = rows.get(native)
                    rows[native] = (worst if prev is None or worst.worst > prev[0].worst else prev[0],
                                    (prev[1] if prev else []) + [name])
        for native, (r, names) in rows.items():
            yield Lint("native-update", _opt_path(plan, i),
                       f"MindSpore's {native} does not compute torch's {opt.type} update for {_names(names)}: "
                       f"{r.note} (measured max |dp| {_g(r.worst)} over 100 steps, {r.grads} gradients); "
                       f"optbridge's to_mindspore runs its torch-exact {opt.type} instead", r.worst, ("mindspore",))


def _megengine_natives(plan: Plan) -> Iterator[Lint]:
    from optbridge_adapters.megengine import native as mge
    for i, opt, groups in _options(plan):
        if opt.type not in mge.KINDS:
            continue
        rows: dict[int, tuple[Any, list[str]]] = {}
        for name, options in groups:
            r = mge.native_equivalent(opt.type, options)
            if r.verdict != "float32":
                rows.setdefault(id(r), (r, []))[1].append(name)
        for r, names in rows.values():
            what = (f"{r.native} does not compute torch's {opt.type} update" if r.native
                    else f"MegEngine has no native {opt.type}")
            size = r.worst_vs_noise
            measured = f" (measured up to {_g(size)} x torch's own float32 error)" if size is not None else ""
            yield Lint("native-update", _opt_path(plan, i),
                       f"{what} for {_names(names)}: {r.reason}{measured}; optbridge's to_megengine runs its "
                       f"torch-exact {opt.type} instead", size, ("megengine",))


def _adamweightdecay(plan: Plan) -> Iterator[Lint]:
    from optbridge_adapters.mindspore import native as ms
    row = next(r for r in ms.NATIVE if r.native == "nn.AdamWeightDecay")
    for i, opt in enumerate(plan.optimizers):
        if opt.type == "AdamWeightDecay":
            yield Lint("not-torch-adamw", f"{_opt_path(plan, i)}.type",
                       "AdamWeightDecay is MindSpore's nn.AdamWeightDecay: no bias correction, eps 1e-6, so it is "
                       f"not torch's AdamW (measured max |dp| {_g(row.worst)} over 100 steps against AdamW); torch "
                       "and MegEngine have no such optimizer, port it as AdamW only if the change of update is meant",
                       row.worst, ("torch", "megengine"))


def lint(plan: Plan, *, steps: int | None = None, metrics: Sequence[float] | np.ndarray | None = None,
         frameworks: Iterable[str] | None = None, values: bool = True) -> tuple[Lint, ...]:
    """The porting traps of ``plan`` (see :data:`CODES`).

    Args:
        plan: The plan.
        steps: Updates the run has (default: the plan's ``total_steps``); lints about the
            end of a schedule and the streamed value lints need it.
        metrics: Plateau metric series (for the streamed value lints).
        frameworks: Only lints that concern these frameworks (default: all).
        values: Also stream every lr over the run (``float32-underflow``; memory
            O(:data:`optbridge.checks.WINDOW`)).

    Returns:
        The lints, in a stable order.
    """
    want = set(FRAMEWORKS if frameworks is None else frameworks)
    end = _horizon(plan, steps)
    resolved = slots(plan, held=True)
    driven = [s for s in resolved if s.node is not None]
    held = [s for s in resolved if s.node is None]
    found: list[Lint] = []
    found += _floors(plan, driven, end)
    if values:
        found += _underflow(plan, driven, steps, metrics)
    found += _static_mix(plan, held, driven)
    found += _step_counter(plan, driven, end)
    found += _cosines(plan, driven, end)
    found += _one_cycles(plan, driven, end)
    found += _natural_exps(plan, driven, end)
    found += _plateaus(plan, driven)
    found += _adamweightdecay(plan)
    if "mindspore" in want:
        found += _mindspore_natives(plan)
    if "megengine" in want:
        found += _megengine_natives(plan)
    return tuple(x for x in found if not x.frameworks or want & set(x.frameworks))


def native_lints(framework: str, native: str | None, plan: Plan, optimizer: int = 0) -> tuple[Lint, ...]:
    """Where a user's native optimizer computed another update than the torch optimizer ``plan`` describes.

    Args:
        framework: ``"mindspore"`` or ``"megengine"``.
        native: The class as the measured table names it (``"nn.Adam"``,
            ``"megengine.optimizer.Adagrad"``: ``native_name(module, name)`` of the framework's
            ``native`` module), or None (an optbridge exact optimizer: nothing to say).
        plan: The plan read from that optimizer.
        optimizer: Which of the plan's optimizers it is.

    Returns:
        ``native-update`` lints with the measured size.
    """
    if native is None or not 0 <= optimizer < len(plan.optimizers):
        return ()
    i, opt, groups = next(x for x in _options(plan) if x[0] == optimizer)
    out: list[Lint] = []
    if framework == "mindspore":
        from optbridge_adapters.mindspore import native as ms
        rows: dict[str, tuple[Any, list[str]]] = {}
        for name, options in groups:
            for r in ms.differences(native, options):
                rows.setdefault(r.case, (r, []))[1].append(name)
        for r, names in rows.values():
            out.append(Lint("native-update", _opt_path(plan, i),
                            f"your MindSpore {native} ({_names(names)}) computed another update than the torch "
                            f"{r.kind} this plan describes: {r.note} (measured max |dp| {_g(r.worst)} over 100 steps, "
                            f"{r.grads} gradients); optbridge's to_mindspore runs the torch-exact one", r.worst,
                            ("mindspore",)))
    elif framework == "megengine":
        from optbridge_adapters.megengine import native as mge
        if opt.type not in mge.KINDS:
            return ()
        seen: dict[int, tuple[Any, list[str]]] = {}
        for name, options in groups:
            r = mge.native_equivalent(opt.type, options)
            if r.native == native and r.verdict != "float32":
                seen.setdefault(id(r), (r, []))[1].append(name)
        for r, names in seen.values():
            size = r.worst_vs_noise
            out.append(Lint("native-update", _opt_path(plan, i),
                            f"your {native} ({_names(names)}) computed another update than the torch {opt.type} this "
                            f"plan describes: {r.reason}"
                            + (f" (measured up to {_g(size)} x torch's own float32 error)" if size is not None else "")
                            + "; optbridge's to_megengine runs the torch-exact one", size, ("megengine",)))
    return tuple(out)
