"""Hyperparameter values that cannot work: checked before anything runs.

A schedule can drive a hyperparameter where no optimizer can use it: a beta that
reaches 1 (Adam's bias correction ``1 - beta**t`` is then 0, a division by zero), a
momentum of 1 or more, a negative lr or weight decay, an eps of 0, a value that is
not finite. Each hyperparameter has a :class:`Domain` (:func:`domain`); three checks
hold a plan to it:

* :func:`check_options`: the base value of every hyperparameter of every built group
  (group option, optimizer option, ``lr_mult`` / ``weight_decay_mult`` applied);
* :func:`check_nodes`: the fields of schedule nodes that fix a value the schedule
  takes, decidable without evaluating: a ``one_cycle`` anchor (``initial``, ``peak``,
  ``final``, :meth:`~optbridge.ir.OneCycle.anchors`), a ``cyclic`` ``low``/``high``,
  the absolute ``end`` of ``cosine``, ``cosine_restarts`` and ``polynomial``, the
  values of a ``table`` or ``piecewise``;
* :func:`check_values`: every value of every scheduled slot over a span of updates,
  streamed through the reference evaluator (:func:`optbridge.evaluate.table`) in
  windows of at most :data:`WINDOW` values, so memory is O(window) whatever the
  horizon (a ``multiplicative`` or ``plateau`` slot, whose values depend on the whole
  history, is evaluated one slot at a time).

:func:`check_plan` runs all three (values only when the span is known: ``steps`` or
the plan's ``total_steps``); :func:`check_trace` checks the values of a trace that is
already computed. ``optbridge.trace`` and every ``optbridge.to_<framework>`` call
them. A value out of its domain raises :class:`DomainError` (a
:class:`~optbridge.errors.ConfigError`) naming the config path, the group, the
update and the value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import ir
from .errors import ConfigError
from .plan import OPTIMIZER_DEFAULTS, Group, OptimizerSpec, Plan, hyper_base
from .slots import Slot, slots

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["Domain", "DomainError", "domain", "check_plan", "check_options", "check_nodes", "check_values",
           "check_trace", "TraceValues", "value_windows", "option_path", "WINDOW"]

#: Values evaluated at once by :func:`check_values` (slots x updates): 16 MB of float64.
WINDOW = 1 << 21


@dataclass(frozen=True)
class Domain:
    """The values a hyperparameter can take: ``low <= v`` (``<`` if ``low_open``), ``v < high`` or ``v <= high``.

    Attributes:
        low: Lower bound.
        high: Upper bound (``inf``: none).
        low_open: The lower bound itself is excluded (eps > 0).
        high_open: The upper bound itself is excluded (beta < 1).
        why: What goes wrong outside, in words.
    """

    low: float = 0.0
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    why: str = "no optimizer takes a negative value here"

    @property
    def rule(self) -> str:
        """``"must be >= 0"``, ``"must be in [0, 1)"``, ..."""
        lo = f"{self.low:g}"
        if math.isinf(self.high):
            return f"must be finite and {'>' if self.low_open else '>='} {lo}"
        return f"must be in {'(' if self.low_open else '['}{lo}, {self.high:g}{')' if self.high_open else ']'}"

    def contains(self, v: float) -> bool:
        """Whether the finite or infinite number ``v`` is in the domain (NaN and infinities never are)."""
        if not math.isfinite(v):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def holds_all(self, a: np.ndarray) -> bool:
        """Whether every entry of ``a`` is in the domain: two reductions, no temporaries (NaN makes min/max NaN)."""
        if a.size == 0:
            return True
        return self.contains(float(a.min())) and self.contains(float(a.max()))

    def outside(self, a: np.ndarray) -> np.ndarray:
        """Boolean mask of the entries of ``a`` that are not in the domain (NaN and infinities included)."""
        import numpy as np
        bad = ~np.isfinite(a)
        bad |= (a <= self.low) if self.low_open else (a < self.low)
        if not math.isinf(self.high):
            bad |= (a >= self.high) if self.high_open else (a > self.high)
        return bad


_BETA = Domain(0.0, 1.0, high_open=True,
               why="the bias correction 1 - beta**t is 0 at beta = 1, a division by zero")
_AVERAGE = Domain(0.0, 1.0, why="it weighs a moving average")
#: hyperparameter -> its domain (hyperparameters not listed: a finite number >= 0).
DOMAINS: Mapping[str, Domain] = {
    "lr": Domain(why="a negative lr climbs the loss; torch refuses it"),
    "weight_decay": Domain(why="a negative weight decay grows the weights; torch refuses it"),
    "momentum": Domain(0.0, 1.0, high_open=True,
                       why="a momentum of 1 or more never forgets a gradient: the update grows without bound"),
    "dampening": Domain(0.0, 1.0, why="(1 - dampening) scales the gradient"),
    "beta1": _BETA,
    "beta2": _BETA,
    "eps": Domain(low_open=True, why="eps keeps the denominator away from 0"),
    "alpha": _AVERAGE,
    "rho": _AVERAGE,
}
#: Lion has no bias correction: its betas may be 1.
_LION_BETA = Domain(0.0, 1.0, why="it weighs a moving average")
_DEFAULT = Domain()


def domain(hyper: str, optimizer: str = "SGD") -> Domain:
    """The domain of ``hyper`` in an optimizer of type ``optimizer`` (torch's class name)."""
    if optimizer == "Lion" and hyper in ("beta1", "beta2"):
        return _LION_BETA
    return DOMAINS.get(hyper, _DEFAULT)


class DomainError(ConfigError):
    """A hyperparameter takes a value it cannot work with.

    Attributes:
        path: Config path of the schedule or option that produces the value.
        hyper: The hyperparameter.
        group: The group's name.
        step: The first update that uses the value (None when the check is static and the
            update is not known).
        value: The value.
    """

    def __init__(self, path: str, hyper: str, dom: Domain, value: float, *, group: str, step: int | None,
                 where: str = "") -> None:
        at = f"at update {step}" if step is not None else where
        super().__init__(path, f"{hyper} {dom.rule} ({dom.why}): group {group!r} reaches it {at}", value)
        self.hyper, self.group, self.step = hyper, group, step


# --------------------------------------------------------------------------- static: base values

def option_path(plan: Plan, group: Group, key: str) -> str:
    """Config path of option ``key`` of ``group``: the group's own, else its optimizer's (canonical spelling).

    ``groups[1].lr`` / ``optimizer.lr`` for a one-optimizer plan, ``optimizers[0].groups[1].lr`` /
    ``optimizers[0].lr`` otherwise.
    """
    opt = plan.optimizer_of(group)
    i = plan.optimizers.index(opt)
    prefix = "" if len(plan.optimizers) == 1 else f"optimizers[{i}]."
    if key in group.options:
        return f"{prefix}groups[{opt.groups.index(group)}].{key}"
    return f"{prefix}optimizer.{key}" if not prefix else f"{prefix.rstrip('.')}.{key}"


_SOURCE = {"lr": ("lr", "lr_mult"), "weight_decay": ("weight_decay", "weight_decay_mult"),
           "beta1": ("betas",), "beta2": ("betas",)}


def _numeric_hypers(opt: OptimizerSpec) -> Iterator[str]:
    for key, v in OPTIMIZER_DEFAULTS[opt.type].items():
        if key == "betas":
            yield from ("beta1", "beta2")
        elif isinstance(v, float) and not isinstance(v, bool):
            yield key


def check_options(plan: Plan) -> None:
    """The base value of every numeric hyperparameter of every built group is in its domain.

    Raises:
        DomainError: naming the option that sets the value (the group's own, else the optimizer's).
    """
    for opt in plan.optimizers:
        for g in opt.groups:
            if g.frozen == "exclude":
                continue
            for h in _numeric_hypers(opt):
                v = hyper_base(plan, g, h)
                dom = domain(h, opt.type)
                if dom.contains(v):
                    continue
                keys = _SOURCE.get(h, (h,))
                key = next((k for k in keys if k in g.options), next((k for k in keys if k in opt.options), keys[0]))
                path = option_path(plan, g, key)
                if key == "betas":
                    path += "[0]" if h == "beta1" else "[1]"
                raise DomainError(path, h, dom, v, group=g.name, step=0)


# --------------------------------------------------------------------------- static: node fields

def _value_nodes(node: ir.Node, path: str, unit: str, spe: int | None, start: int
                 ) -> Iterator[tuple[ir.Node, str, str, int]]:
    """``(node, path, unit, first update)`` of every node whose values are the slot's values.

    The root and, recursively, the parts of a sequence (a chain's parts are factors, not values).
    """
    yield node, path, unit, start
    if isinstance(node, ir.Sequence):
        u = node.unit or unit
        for i, (part, s) in enumerate(zip(node.parts, node.starts(unit, spe))):
            yield from _value_nodes(part, f"{path}.parts[{i}]", u, spe, start + s)


def _fields(node: ir.Node, base: float, unit: str, spe: int | None
            ) -> Iterator[tuple[str, float, int | None, str]]:
    """``(field, value, update from the node's start or None, where)`` of the values a node's fields fix."""
    sc = node.scale(unit, spe)
    if isinstance(node, ir.OneCycle):
        anchors = node.anchors(base)
        for start, end, a, b in node.phases():
            if start == 0:
                yield a, float(anchors[a]), 0, ""
            yield b, float(anchors[b]), None, f"at the end of a one_cycle phase (about update {round(end) * sc})"
    elif isinstance(node, ir.Cyclic):
        yield "low", float(base if node.low is None else node.low), 0, ""
        yield "high", float(node.high), None, "at the top of each cycle"
    elif isinstance(node, (ir.Cosine, ir.Polynomial)):
        yield "end", float(node.end), node.steps * sc, ""
    elif isinstance(node, ir.CosineRestarts):
        yield "end", float(node.end), None, "as each restart cycle ends"
    elif isinstance(node, (ir.Table, ir.Piecewise)):
        firsts = (range(len(node.values)) if isinstance(node, ir.Table)
                  else (0, *node.boundaries))  # where each value starts
        for i, (v, k) in enumerate(zip(node.values, firsts)):
            yield f"values[{i}]", float(v * base if node.relative else v), k * sc, ""


def check_nodes(plan: Plan, *, until: int | None = None) -> None:
    """Every value a scheduled slot's node fields fix is in the hyperparameter's domain.

    Args:
        plan: The plan.
        until: Only nodes that start before this update (default: the plan's ``total_steps``,
            else every node).

    Raises:
        DomainError: naming the field (``schedule.momentum.initial``), the group and the update.
    """
    until = plan.total_steps if until is None else until
    for s in slots(plan):
        assert s.node is not None
        dom = domain(s.hyper, plan.optimizers[_optimizer_index(plan, s)].type)
        for node, path, unit, first in _value_nodes(s.node, s.path, plan.step_unit, plan.steps_per_epoch, 0):
            if until is not None and first >= until:
                continue
            for name, v, k, where in _fields(node, s.base, unit, plan.steps_per_epoch):
                if dom.contains(v):
                    continue
                step = None if k is None else first + k
                if step is not None and until is not None and step >= until:
                    continue
                raise DomainError(f"{path}.{name}", s.hyper, dom, v, group=s.group, step=step, where=where)


def _optimizer_index(plan: Plan, s: Slot) -> int:
    return next(i for i, o in enumerate(plan.optimizers) if o.name == s.optimizer)


# --------------------------------------------------------------------------- values

def _sequential(node: ir.Node) -> bool:
    return any(isinstance(x, (ir.Plateau, ir.Multiplicative)) for x in ir.walk(node))


def _scan(items: Sequence[tuple[Slot, Domain]], block: np.ndarray, first: int) -> None:
    """Raise for the earliest out-of-domain entry of ``block`` (row ``j`` holds ``items[j]``, column 0 is ``first``)."""
    import numpy as np
    by_domain: dict[Domain, list[int]] = {}
    for j, (_, dom) in enumerate(items):
        by_domain.setdefault(dom, []).append(j)
    hits: list[tuple[int, int]] = []
    for dom, rows in by_domain.items():
        sub = block if len(rows) == len(items) else block[rows]
        if dom.holds_all(sub):  # the common case, at the cost of two reductions
            continue
        bad = dom.outside(sub)
        if bad.any():
            cols = bad.any(axis=0)
            c = int(np.argmax(cols))
            hits.append((c, rows[int(np.argmax(bad[:, c]))]))
    if hits:
        c, j = min(hits)
        s, dom = items[j]
        raise DomainError(s.path, s.hyper, dom, float(block[j, c]), group=s.group, step=first + c)


def value_windows(plan: Plan, items: Sequence[Slot], *, start: int = 0, steps: int | None = None,
                  metrics: Sequence[float] | np.ndarray | None = None) -> Iterator[tuple[list[Slot], np.ndarray, int]]:
    """The values of the scheduled ``items`` over updates ``start .. start + steps - 1``, window by window.

    Yields ``(slots, block, first)``: ``block[j, c]`` is the value of ``slots[j]`` at update
    ``first + c``. A window holds at most :data:`WINDOW` values, except for slots whose values
    depend on the whole history (``multiplicative``, ``plateau``), which come one slot at a
    time over the whole span (the evaluator computes them from update 0 anyway). The span
    stops where the schedule ends (:attr:`optbridge.source.ValueSource.horizon`: ``total_steps``,
    a ``one_cycle`` or ``table`` end, the last plateau step the metrics decide); with
    ``steps=None`` it runs to the plan's ``total_steps`` (nothing for an unbounded plan).
    Slots without a node are skipped.
    """
    from . import evaluate
    from .source import ValueSource
    driven = [(s, s.node) for s in items if s.node is not None]
    if not driven:
        return
    m = None if metrics is None else _metrics(metrics)
    end = plan.total_steps if steps is None else start + steps
    horizon = ValueSource([s for s, _ in driven], unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                          total_steps=plan.total_steps, metrics=m).horizon
    if horizon is not None:
        end = horizon if end is None else min(end, horizon)
    if end is None or end <= start:
        return

    def block(part: list[tuple[Slot, ir.Node]], lo: int, n: int) -> tuple[list[Slot], np.ndarray, int]:
        values = evaluate.table([(node, s.base, s.path) for s, node in part], lo, n, unit=plan.step_unit,
                                steps_per_epoch=plan.steps_per_epoch, metrics=m)
        return [s for s, _ in part], values, lo

    for item in (it for it in driven if _sequential(it[1])):
        yield block([item], start, end - start)
    windowed = [it for it in driven if not _sequential(it[1])]
    if windowed:
        n = max(1, WINDOW // len(windowed))
        for lo in range(start, end, n):
            yield block(windowed, lo, min(n, end - lo))


def check_values(plan: Plan, *, start: int = 0, steps: int | None = None,
                 metrics: Sequence[float] | np.ndarray | None = None) -> None:
    """Every value of every scheduled slot over updates ``start .. start + steps - 1`` is in its domain.

    The values come from :func:`value_windows` (memory O(:data:`WINDOW`)); the span stops
    where the schedule ends, since what lies past it is the tracing or driving code's
    error to raise.

    Args:
        plan: The plan.
        start: First update.
        steps: Updates to check (default: up to the plan's ``total_steps``; nothing when
            the plan is unbounded).
        metrics: Plateau metric series.

    Raises:
        DomainError: the first update (and, among those, the first slot) whose value is out
            of its domain, in each window.
    """
    types = {o.name: o.type for o in plan.optimizers}
    for items, block, first in value_windows(plan, slots(plan), start=start, steps=steps, metrics=metrics):
        _scan([(s, domain(s.hyper, types[s.optimizer])) for s in items], block, first)


def _metrics(metrics: Sequence[float] | np.ndarray) -> np.ndarray:
    """The metric series as a 1-D float64 array (ConfigError for anything else)."""
    import numpy as np
    try:
        m = np.asarray(metrics, dtype=np.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.ndim != 1:
        raise ConfigError("metrics", "must be a sequence of numbers (one metric per plateau step)",
                          type(metrics).__name__)
    return m


class TraceValues(Protocol):
    """What :func:`check_trace` reads of a trace (an :class:`optbridge.Trace`; named by its shape, so this module
    stays below :mod:`optbridge.tracing`, which calls it)."""

    @property
    def groups(self) -> Sequence[str]: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    @property
    def start(self) -> int: ...


def check_trace(plan: Plan, trace: TraceValues) -> None:
    """The values of a computed trace of ``plan`` are in their domains (NaN where a group has not joined yet is fine).

    Raises:
        DomainError: the first out-of-domain value, as :func:`check_values`.
    """
    import numpy as np
    types = {o.name: o.type for o in plan.optimizers}
    joins = {g.name: int(g.options.get("start_step", 0)) for g in plan.groups}
    index = {g: i for i, g in enumerate(trace.groups)}
    by_hyper: dict[str, list[Slot]] = {}
    for s in slots(plan):
        if s.hyper in trace.data and s.group in index:
            by_hyper.setdefault(s.hyper, []).append(s)
    for hyper, items in by_hyper.items():
        arr = np.asarray(trace.data[hyper])
        rows = [index[s.group] for s in items]
        doms = [domain(hyper, types[s.optimizer]) for s in items]
        if rows == list(range(arr.shape[0])) and len(set(doms)) == 1 and \
                all(joins.get(s.group, 0) <= trace.start for s in items):
            _scan(list(zip(items, doms)), arr, trace.start)  # every row at once, without a copy
            continue
        for s, dom, r in zip(items, doms, rows):
            skip = max(0, joins.get(s.group, 0) - trace.start)
            if skip < arr.shape[1]:
                _scan([(s, dom)], arr[r][None, skip:], trace.start + skip)


def check_plan(plan: Plan, *, start: int = 0, steps: int | None = None,
               metrics: Sequence[float] | np.ndarray | None = None, values: bool = True) -> None:
    """:func:`check_options`, :func:`check_nodes` and (with ``values``) :func:`check_values`.

    Args:
        plan: The plan.
        start: First update of the span to check.
        steps: Updates in the span (default: up to the plan's ``total_steps``; an unbounded
            plan gets the static checks only).
        metrics: Plateau metric series.
        values: Also check every value of the span.

    Raises:
        DomainError: a hyperparameter value out of its domain.
    """
    check_options(plan)
    check_nodes(plan, until=None if steps is None else start + steps)
    if values:
        check_values(plan, start=start, steps=steps, metrics=metrics)
