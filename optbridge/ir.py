"""The schedule IR: a closed set of immutable, JSON-serializable nodes.

A schedule maps an update counter to a value of one hyperparameter of one param
group. Every node is a frozen dataclass with a stable ``kind`` tag; validation
happens at construction, so an invalid node cannot exist.

Conventions shared by every node (see docs/design.md):

* ``k`` is the node's *local* counter: the number of scheduler steps since the
  node became active (0 for the first update it governs). Inside a
  :class:`Sequence` a part's counter restarts at its boundary.
* ``base`` is the group's base value of the scheduled hyperparameter (for lr:
  the group's initial lr). Most nodes scale ``base``; fields documented as
  *absolute* (``end`` of :class:`Cosine`, the values of :class:`Cyclic`, ...) are
  plain values, as torch's ``eta_min`` is.
* ``unit`` is ``"iter"`` or ``"epoch"``; ``None`` inherits the enclosing node's
  unit (the plan's ``step_unit`` at the root). With ``steps_per_epoch = S`` an
  epoch node's counter is ``k = t // S`` for the local iteration count ``t``: the
  value is held within an epoch, as when ``scheduler.step()`` runs once per epoch.

The one evaluator that owns the math is :mod:`optbridge.evaluate`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, SupportsFloat, TypeGuard, cast

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .expr import Expr

__all__ = [
    "Node", "Constant", "Linear", "Exponential", "MultiStep", "NaturalExp", "InverseTime",
    "Polynomial", "Cosine", "CosineRestarts", "Cyclic", "OneCycle", "Lambda",
    "Multiplicative", "Table", "Piecewise", "Sequence", "Chain", "Plateau",
    "NODE_TYPES", "Schedule", "FrozenMap", "walk", "UNITS",
]

UNITS = ("iter", "epoch")


# --------------------------------------------------------------------------- checks

def _is_real(v: object) -> TypeGuard[SupportsFloat]:
    """A real number: Python int/float, or a real scalar of numpy or a framework (0-d, not bool)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    # numpy scalars and 0-d arrays, torch / MindSpore 0-d tensors: duck-typed (no framework import)
    if getattr(v, "ndim", None) == 0 or getattr(v, "shape", None) == ():
        kind = getattr(getattr(v, "dtype", None), "kind", None)
        if kind is not None:
            return kind in "iuf"
        name = str(getattr(v, "dtype", ""))
        return any(t in name for t in ("float", "int")) and "complex" not in name and "bool" not in name
    return False


def check_real(path: str, v: object, *, finite: bool = True) -> float:
    """Return ``v`` as float, or raise ConfigError naming ``path``.

    numpy and framework scalars (0-d) are accepted and converted with ``float()``.
    """
    if not _is_real(v):
        raise ConfigError(path, "must be a number", v)
    f = float(v)
    if finite and not math.isfinite(f):
        raise ConfigError(path, "must be a finite number", v)
    return f


#: Ranges of optimizer hyperparameters: kind -> (low, high, high excluded).
HYPER_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "real": (None, None, False), "nonneg": (0.0, None, False), "unit": (0.0, 1.0, False), "beta": (0.0, 1.0, True)}


def check_hyper(path: str, v: object, kind: str = "real") -> float:
    """Return an optimizer hyperparameter as a finite float in its range, or raise ConfigError naming ``path``.

    ``kind`` is a key of :data:`HYPER_RANGES`: ``real`` (any finite number), ``nonneg``
    (``>= 0``: lr, weight decay, eps), ``unit`` (``[0, 1]``: momentum, dampening) or
    ``beta`` (``[0, 1)``: an Adam beta, whose bias correction ``1 - beta**t`` is 0 at 1).
    The torch-exact optimizers of every backend check their groups with it.
    """
    if type(v) is float and v - v == 0.0:  # the common case, checked every update: a finite Python float
        f = v
    else:
        if not _is_real(v):
            raise ConfigError(path, "must be a real number", v)
        f = float(v)
        if not math.isfinite(f):
            raise ConfigError(path, "must be finite", v)
    low, high, open_high = HYPER_RANGES[kind]
    if high is None:
        if low is not None and f < low:
            raise ConfigError(path, f"must be >= {low:g}", v)
    elif not ((low is None or low <= f) and (f < high if open_high else f <= high)):
        raise ConfigError(path, f"must be in [{low:g}, {high:g}{')' if open_high else ']'}", v)
    return f


#: Largest step count, boundary or period accepted (2**53: every count is exact in float64).
MAX_INT = 2**53


def _non_negative(path: str, v: object) -> float:
    f = check_real(path, v)
    if f < 0:
        raise ConfigError(path, "must be >= 0 (a negative factor makes the value negative)", v)
    return f


def check_int(path: str, v: object, *, minimum: int | None = None) -> int:
    """Return ``v`` as int (floats with integral value accepted), or raise."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        rule = "must be an integer" if minimum is None else (
            "must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}")
        raise ConfigError(path, rule, v)
    if minimum is not None and v < minimum:
        rule = "must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}"
        raise ConfigError(path, rule, v)
    if abs(v) > MAX_INT:
        raise ConfigError(path, "must be at most 2**53", v)
    return v


def check_choice(path: str, v: object, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise ConfigError(path, "must be one of " + ", ".join(repr(c) for c in choices), v)
    return cast(str, v)  # v is one of choices (checked above)


def check_bool(path: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(path, "must be true or false", v)
    return v


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _check_every_stair(node: Exponential | NaturalExp | InverseTime) -> None:
    _set(node, "every", check_int("every", node.every, minimum=1))
    check_bool("stair", node.stair)


# --------------------------------------------------------------------------- frozen map

class FrozenMap(Mapping[str, Any]):
    """An immutable, hashable, insertion-ordered ``str -> value`` mapping."""

    __slots__ = ("_d", "_h")

    def __init__(self, data: Mapping[str, Any] | None = None, /, **kw: Any) -> None:
        d = dict(data or {})
        d.update(kw)
        self._d = {k: _freeze(v) for k, v in d.items()}
        self._h: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(frozenset(self._d.items()))
        return self._h

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._d) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"

    def replace(self, **kw: Any) -> FrozenMap:
        return FrozenMap({**self._d, **kw})


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return FrozenMap(v)
    return v


# --------------------------------------------------------------------------- base

@dataclass(frozen=True, kw_only=True)
class Node:
    """Base of every schedule node.

    Attributes:
        unit: ``"iter"``, ``"epoch"`` or ``None`` (inherit from the parent node,
            or the plan's ``step_unit`` at the root).
    """

    kind: ClassVar[str] = ""
    #: True when every value is ``base`` times a factor (no absolute fields in use).
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.unit is not None:
            check_choice("unit", self.unit, UNITS)
        self._validate()

    def _validate(self) -> None:  # overridden
        pass

    @property
    def children(self) -> tuple[Node, ...]:
        return ()

    def params(self) -> dict[str, Any]:
        """The node's fields as plain values (children stay nodes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ------------------------------------------------------------ derived geometry
    # The one place that derives where phases start and where a schedule ends; the
    # evaluator, the generated framework forms, ``optbridge.shift`` and the CLI use it.

    def scale(self, unit: str = "iter", steps_per_epoch: int | None = None) -> int:
        """Updates per counter step: ``steps_per_epoch`` on the epoch clock, else 1.

        Args:
            unit: The unit inherited from the parent (or the plan's ``step_unit``).
            steps_per_epoch: Updates per epoch (1 when not given).
        """
        return int(steps_per_epoch or 1) if (self.unit or unit) == "epoch" else 1

    def defined_until(self) -> int | None:
        """The first counter value at which the node has no value, or None (defined everywhere)."""
        return None

    def phase_starts(self, until: int) -> tuple[int, ...]:
        """Counter values in ``(0, until)`` where a new phase begins (warmup end, milestone, restart, ...)."""
        return ()

    def horizon(self, unit: str = "iter", steps_per_epoch: int | None = None) -> int | None:
        """The first update (counted from the node's start) with no value, or None.

        ``one_cycle`` ends after ``total_steps``, a ``table`` without ``hold`` after its
        values; combinators end where their first part does. ``plateau`` is defined as
        far as its metric series goes, which the node does not know.
        """
        d = self.defined_until()
        return None if d is None else d * self.scale(unit, steps_per_epoch)

    def marks(self, until: int, unit: str = "iter", steps_per_epoch: int | None = None) -> tuple[int, ...]:
        """Updates in ``(0, until)`` where a new phase begins, counted from the node's start."""
        sc = self.scale(unit, steps_per_epoch)
        return tuple(k * sc for k in self.phase_starts(-(-until // sc)) if 0 < k * sc < until)


# --------------------------------------------------------------------------- closed-form nodes

@dataclass(frozen=True, kw_only=True)
class Constant(Node):
    r"""``base * factor`` for ``k < steps``, then ``base`` (torch ``ConstantLR``).

    .. math:: v(k) = \begin{cases} base \cdot factor & k < steps \\ base & k \ge steps \end{cases}

    With ``steps=None`` the factor holds forever (a plain constant).
    """

    kind: ClassVar[str] = "constant"
    factor: float = 1.0
    steps: int | None = None

    def _validate(self) -> None:
        _set(self, "factor", check_real("factor", self.factor))
        if self.steps is not None:
            _set(self, "steps", check_int("steps", self.steps, minimum=0))

    def phase_starts(self, until: int) -> tuple[int, ...]:
        return (self.steps,) if self.steps and self.steps < until else ()


@dataclass(frozen=True, kw_only=True)
class Linear(Node):
    r"""Linear interpolation of a factor, clamped after ``steps`` (torch ``LinearLR``).

    .. math:: v(k) = base \cdot \Big(s + (e - s)\,\frac{\min(k, T)}{T}\Big)

    with ``s = start_factor``, ``e = end_factor``, ``T = steps``. ``start_factor=0``
    is a warmup from 0 (MindSpore ``WarmUpLR``/``warmup_lr``).
    """

    kind: ClassVar[str] = "linear"
    start_factor: float = 1.0 / 3.0
    end_factor: float = 1.0
    steps: int = 5

    def _validate(self) -> None:
        _set(self, "start_factor", check_real("start_factor", self.start_factor))
        _set(self, "end_factor", check_real("end_factor", self.end_factor))
        _set(self, "steps", check_int("steps", self.steps, minimum=1))

    def phase_starts(self, until: int) -> tuple[int, ...]:
        return (self.steps,) if self.steps < until else ()


@dataclass(frozen=True, kw_only=True)
class Exponential(Node):
    r"""Exponential decay, continuous or staircase.

    .. math:: v(k) = base \cdot \gamma^{k / every}
              \quad\text{or, with stair,}\quad base \cdot \gamma^{\lfloor k / every \rfloor}

    torch ``ExponentialLR`` is ``every=1``; ``StepLR(step_size, gamma)`` is
    ``stair=True, every=step_size``; MindSpore ``exponential_decay_lr`` and
    ``ExponentialDecayLR`` are ``every=decay_epoch`` / ``decay_steps``.
    """

    kind: ClassVar[str] = "exponential"
    gamma: float = 0.1
    every: int = 1
    stair: bool = False

    def _validate(self) -> None:
        _set(self, "gamma", _non_negative("gamma", self.gamma))
        _check_every_stair(self)


@dataclass(frozen=True, kw_only=True)
class MultiStep(Node):
    r"""Decay by ``gamma`` at each milestone (torch ``MultiStepLR``).

    .. math:: v(k) = base \cdot \gamma^{\#\{m \in milestones : m \le k\}}

    Repeated milestones count repeatedly, as torch's ``Counter`` does.
    """

    kind: ClassVar[str] = "multistep"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def _validate(self) -> None:
        ms = _int_tuple("milestones", self.milestones, minimum=0)
        if list(ms) != sorted(ms):
            raise ConfigError("milestones", "must be in increasing order", list(ms))
        _set(self, "milestones", ms)
        _set(self, "gamma", _non_negative("gamma", self.gamma))

    def phase_starts(self, until: int) -> tuple[int, ...]:
        return tuple(sorted({m for m in self.milestones if 0 < m < until}))


@dataclass(frozen=True, kw_only=True)
class NaturalExp(Node):
    r"""Natural-exponential decay, as MindSpore's code computes it.

    .. math:: v(k) = base \cdot e^{-rate \cdot k}
              \quad\text{or, with stair,}\quad base \cdot e^{-rate \cdot \lfloor k/every \rfloor \cdot every}

    ``every`` is ignored unless ``stair`` (MindSpore ``natural_exp_decay_lr`` and
    ``NaturalExpDecayLR`` do this; their docstring claims ``exp(-rate*k/every)``).
    """

    kind: ClassVar[str] = "natural_exp"
    rate: float = 0.1
    every: int = 1
    stair: bool = False

    def _validate(self) -> None:
        _set(self, "rate", check_real("rate", self.rate))
        _check_every_stair(self)


@dataclass(frozen=True, kw_only=True)
class InverseTime(Node):
    r"""Inverse-time decay (MindSpore ``inverse_decay_lr`` / ``InverseDecayLR``).

    .. math:: v(k) = \frac{base}{1 + rate \cdot k / every}
              \quad\text{or, with stair,}\quad \frac{base}{1 + rate \cdot \lfloor k/every \rfloor}
    """

    kind: ClassVar[str] = "inverse_time"
    rate: float = 0.1
    every: int = 1
    stair: bool = False

    def _validate(self) -> None:
        _set(self, "rate", check_real("rate", self.rate))
        _check_every_stair(self)


@dataclass(frozen=True, kw_only=True)
class Polynomial(Node):
    r"""Polynomial decay to an absolute ``end`` value.

    .. math:: v(k) = (base - end)\Big(1 - \frac{\min(k, T)}{T}\Big)^{p} + end

    torch ``PolynomialLR`` is ``end=0`` (it stays at 0 after ``T``). With
    ``cycle=True`` the horizon re-grows instead of clamping:
    ``T_k = T \cdot \max(\lceil k/T \rceil, 1)`` and ``v = (base-end)(1-k/T_k)^p + end``
    (MindSpore ``update_decay_epoch`` / ``update_decay_steps``).
    """

    kind: ClassVar[str] = "polynomial"
    steps: int = 5
    power: float = 1.0
    end: float = 0.0
    cycle: bool = False

    def _validate(self) -> None:
        _set(self, "steps", check_int("steps", self.steps, minimum=1))
        _set(self, "power", check_real("power", self.power))
        _set(self, "end", check_real("end", self.end))
        check_bool("cycle", self.cycle)

    def phase_starts(self, until: int) -> tuple[int, ...]:
        return (self.steps,) if not self.cycle and self.steps < until else ()


@dataclass(frozen=True, kw_only=True)
class Cosine(Node):
    r"""Cosine annealing from ``base`` to the absolute value ``end`` over ``steps``.

    .. math:: v(k) = end + (base - end)\,\frac{1 + \cos(\pi k / T)}{2}

    Past ``T`` the formula is periodic with period ``2T`` (torch
    ``CosineAnnealingLR`` climbs back to ``base`` at ``2T``). ``clamp=True`` holds
    ``end`` after ``T`` instead (MindSpore ``CosineDecayLR`` / ``cosine_decay_lr``).
    """

    kind: ClassVar[str] = "cosine"
    steps: int = 1
    end: float = 0.0
    clamp: bool = False

    def _validate(self) -> None:
        _set(self, "steps", check_int("steps", self.steps, minimum=1))
        _set(self, "end", check_real("end", self.end))
        check_bool("clamp", self.clamp)

    def phase_starts(self, until: int) -> tuple[int, ...]:
        return (self.steps,) if self.steps < until else ()


@dataclass(frozen=True, kw_only=True)
class CosineRestarts(Node):
    r"""Cosine annealing with warm restarts, SGDR (torch ``CosineAnnealingWarmRestarts``).

    Cycle ``i`` lasts ``T_i = period \cdot mult^i`` steps; with ``c`` the position
    inside the current cycle,

    .. math:: v(k) = end + (base - end)\,\frac{1 + \cos(\pi c / T_i)}{2}
    """

    kind: ClassVar[str] = "cosine_restarts"
    period: int = 1
    mult: int = 1
    end: float = 0.0

    def _validate(self) -> None:
        _set(self, "period", check_int("period", self.period, minimum=1))
        _set(self, "mult", check_int("mult", self.mult, minimum=1))
        _set(self, "end", check_real("end", self.end))

    def cycle_at(self, k: int) -> tuple[int, int]:
        """``(start, length)`` of the cycle that counter ``k`` falls in (exact integers).

        Cycle starts are ``B_i = T_0 (m^i - 1) / (m - 1)`` (``i T_0`` when ``m = 1``).
        """
        if self.mult == 1:
            return k - k % self.period, self.period
        start, length = 0, self.period
        while start + length <= k:
            start += length
            length *= self.mult
        return start, length

    def cycles(self, until: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Starts and lengths of every cycle that starts at or before counter ``until``."""
        starts, lengths = [0], [self.period]
        while starts[-1] + lengths[-1] <= until:
            starts.append(starts[-1] + lengths[-1])
            lengths.append(lengths[-1] * self.mult)
        return tuple(starts), tuple(lengths)

    def phase_starts(self, until: int) -> tuple[int, ...]:
        return self.cycles(until - 1)[0][1:] if until > 1 else ()


CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


@dataclass(frozen=True, kw_only=True)
class Cyclic(Node):
    r"""Cyclical schedule between two absolute values (torch ``CyclicLR``).

    With ``c = \lfloor 1 + k/(u+d) \rfloor``, ``x = 1 + k/(u+d) - c`` and
    ``r = u/(u+d)``, the position is ``s = x/r`` if ``x \le r`` else ``(x-1)/(r-1)``;

    .. math:: v(k) = low + (high - low)\cdot s \cdot g

    where ``g`` is 1 (triangular), ``1/2^{c-1}`` (triangular2) or ``\gamma^k``
    (exp_range). ``low=None`` means the group's base value. Momentum cycling is
    the same node with ``low = max_momentum`` and ``high = base_momentum``.
    """

    kind: ClassVar[str] = "cyclic"
    low: float | None = None
    high: float = 0.0
    step_size_up: int = 2000
    step_size_down: int | None = None
    mode: str = "triangular"
    gamma: float = 1.0

    def _validate(self) -> None:
        if self.low is not None:
            _set(self, "low", check_real("low", self.low))
        _set(self, "high", check_real("high", self.high))
        _set(self, "step_size_up", check_int("step_size_up", self.step_size_up, minimum=1))
        if self.step_size_down is not None:
            _set(self, "step_size_down", check_int("step_size_down", self.step_size_down, minimum=1))
        check_choice("mode", self.mode, CYCLIC_MODES)
        _set(self, "gamma", check_real("gamma", self.gamma))

    @property
    def cycle_steps(self) -> int:
        """Steps per cycle, ``step_size_up + step_size_down`` (``down`` defaults to ``up``)."""
        return self.step_size_up + (self.step_size_down if self.step_size_down is not None else self.step_size_up)

    @property
    def up_ratio(self) -> float:
        """The rising fraction of a cycle, ``up / (up + down)``."""
        return float(self.step_size_up) / float(self.cycle_steps)


@dataclass(frozen=True, kw_only=True)
class OneCycle(Node):
    r"""The 1cycle policy (torch ``OneCycleLR``), for lr or for momentum.

    Phases interpolate (``anneal`` = ``"cos"``: ``b + (a-b)(\cos(\pi p)+1)/2``,
    ``"linear"``: ``(b-a)p + a``) between three absolute values: ``initial``
    (default ``peak/div_factor``), ``peak`` (default the group's base value) and
    ``final`` (default ``initial/final_div_factor``). Two phases: initial→peak
    until step ``pct_start·N - 1``, then peak→final until ``N - 1``. Three phases:
    initial→peak, peak→initial until ``2·pct_start·N - 2``, initial→final.
    Momentum cycling is the same node with ``initial=final=max_momentum`` and
    ``peak=base_momentum``. Like torch, ``k = N`` still extrapolates and
    ``k > N`` is an error.
    """

    kind: ClassVar[str] = "one_cycle"
    total_steps: int = 1
    pct_start: float = 0.3
    anneal: str = "cos"
    three_phase: bool = False
    peak: float | None = None
    initial: float | None = None
    final: float | None = None
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def _validate(self) -> None:
        _set(self, "total_steps", check_int("total_steps", self.total_steps, minimum=1))
        p = check_real("pct_start", self.pct_start)
        if not 0.0 <= p <= 1.0:
            raise ConfigError("pct_start", "must be between 0 and 1", self.pct_start)
        _set(self, "pct_start", p)
        check_choice("anneal", self.anneal, ("cos", "linear"))
        check_bool("three_phase", self.three_phase)
        for name in ("peak", "initial", "final"):
            if getattr(self, name) is not None:
                _set(self, name, check_real(name, getattr(self, name)))
        for name in ("div_factor", "final_div_factor"):
            v = check_real(name, getattr(self, name))
            if v == 0:
                raise ConfigError(name, "must be non-zero", v)
            _set(self, name, v)

    def phases(self) -> tuple[tuple[float, float, str, str], ...]:
        """``(start, end, from, to)`` of each phase, in counter steps; ``from``/``to`` name anchors.

        As torch's ``OneCycleLR``: phase ends are ``pct_start·N - 1`` (and
        ``2·pct_start·N - 2`` with three phases) and ``N - 1``, as floats; a phase
        takes the counters up to its end, the last one everything after.
        """
        N = self.total_steps
        ends: list[tuple[float, str, str]] = [(float(self.pct_start * N) - 1, "initial", "peak")]
        if self.three_phase:
            ends += [(float(2 * self.pct_start * N) - 2, "peak", "initial"), (float(N - 1), "initial", "final")]
        else:
            ends += [(float(N - 1), "peak", "final")]
        out, start = [], 0.0
        for end, a, b in ends:
            out.append((start, end, a, b))
            start = end
        return tuple(out)

    def anchors(self, base: Any) -> dict[str, Any]:
        """``{"initial", "peak", "final"}`` for the group base ``base`` (a float or an array of bases)."""
        peak = base if self.peak is None else self.peak
        initial = peak / self.div_factor if self.initial is None else self.initial
        final = initial / self.final_div_factor if self.final is None else self.final
        return {"initial": initial, "peak": peak, "final": final}

    def defined_until(self) -> int | None:
        return self.total_steps + 1  # like torch: k = N still extrapolates, k > N raises

    def phase_starts(self, until: int) -> tuple[int, ...]:
        return tuple(b for b in (math.floor(end) + 1 for _, end, _, _ in self.phases()[:-1]) if 0 < b < until)


# --------------------------------------------------------------------------- expression / data nodes

def _expr_field(path: str, v: object) -> Expr:
    from .expr import Expr  # numpy loads only when expressions are used
    from .expr import parse as parse_expr
    if isinstance(v, Expr):
        return v
    if not isinstance(v, str):
        raise ConfigError(path, "must be an expression string such as '0.95 ** epoch'", v)
    return parse_expr(v, path=path)


@dataclass(frozen=True, kw_only=True)
class _ExpressionNode(Node):
    """A node defined by a safe expression of its counter (given as text or parsed; stored parsed)."""

    expr: Expr | str = ""

    def _validate(self) -> None:
        _set(self, "expr", _expr_field("expr", self.expr))

    @property
    def function(self) -> Expr:
        """The parsed expression (validation stored it parsed)."""
        assert not isinstance(self.expr, str)  # noqa: S101 - an invariant of _validate, not input checking
        return self.expr


@dataclass(frozen=True, kw_only=True)
class Lambda(_ExpressionNode):
    r"""``base * f(k)`` for an expression ``f`` (torch ``LambdaLR``).

    .. math:: v(k) = base \cdot f(k)

    ``f`` is a safe expression (:mod:`optbridge.expr`) over the counter, which it
    may call ``epoch``, ``step``, ``k``, ``t``, ``x`` or ``it``.
    """

    kind: ClassVar[str] = "lambda"


@dataclass(frozen=True, kw_only=True)
class Multiplicative(_ExpressionNode):
    r"""Running product of an expression (torch ``MultiplicativeLR``).

    .. math:: v(k) = base \cdot \prod_{j=1}^{k} f(j)

    Inside a :class:`Sequence` (after the first boundary) it continues from the
    value ``v_{m-1}`` the sequence had just before its boundary ``m``, as torch's
    ``SequentialLR`` does: ``v(k) = v_{m-1} \cdot \prod_{j=0}^{k} f(j)``.
    """

    kind: ClassVar[str] = "multiplicative"


@dataclass(frozen=True, kw_only=True)
class Table(Node):
    r"""Values given as data: ``v(k) = values[k]`` (times ``base`` if ``relative``).

    Past the end of the table the value is an error unless ``hold`` (then the last
    value holds), since MindSpore raises past the end of an lr list.
    """

    kind: ClassVar[str] = "table"
    values: tuple[float, ...] = ()
    relative: bool = False
    hold: bool = False

    def _validate(self) -> None:
        vals = _real_tuple("values", self.values)
        if not vals:
            raise ConfigError("values", "must not be empty", list(vals))
        _set(self, "values", vals)
        check_bool("relative", self.relative)
        check_bool("hold", self.hold)

    def defined_until(self) -> int | None:
        return None if self.hold else len(self.values)


@dataclass(frozen=True, kw_only=True)
class Piecewise(Node):
    r"""Piecewise-constant values on intervals (MindSpore ``piecewise_constant_lr``).

    .. math:: v(k) = values[i] \text{ for } boundaries[i-1] \le k < boundaries[i]

    ``len(values) == len(boundaries) + 1``; the last value holds after the last
    boundary. Values are absolute unless ``relative`` (then times ``base``).
    """

    kind: ClassVar[str] = "piecewise"
    boundaries: tuple[int, ...] = ()
    values: tuple[float, ...] = (1.0,)
    relative: bool = False

    def _validate(self) -> None:
        b = _int_tuple("boundaries", self.boundaries, minimum=1)
        if any(x >= y for x, y in zip(b, b[1:])):
            raise ConfigError("boundaries", "must be strictly increasing", list(b))
        v = _real_tuple("values", self.values)
        if len(v) != len(b) + 1:
            raise ConfigError("values", f"must have len(boundaries) + 1 = {len(b) + 1} entries", list(v))
        _set(self, "boundaries", b)
        _set(self, "values", v)
        check_bool("relative", self.relative)

    def phase_starts(self, until: int) -> tuple[int, ...]:
        return tuple(b for b in self.boundaries if b < until)


# --------------------------------------------------------------------------- combinators

@dataclass(frozen=True, kw_only=True)
class Sequence(Node):
    r"""Run ``parts[i]`` from ``boundaries[i-1]`` on, each with a local counter.

    .. math:: v(k) = parts[i](k - b_{i-1}) \text{ for } b_{i-1} \le k < b_i \quad (b_{-1} = 0)

    This is torch's ``SequentialLR``: at a milestone the next scheduler restarts
    from ``base`` (closed form at its step 0), except :class:`Multiplicative`,
    which continues from the current value. Boundaries count in this node's unit.
    """

    kind: ClassVar[str] = "sequence"
    parts: tuple[Node, ...] = ()
    boundaries: tuple[int, ...] = ()

    def _validate(self) -> None:
        parts = tuple(self.parts)
        if not parts:
            raise ConfigError("parts", "must have at least one schedule", [])
        for i, p in enumerate(parts):
            if not isinstance(p, Node):
                raise ConfigError(f"parts[{i}]", "must be a schedule node", p)
            if isinstance(p, Plateau):
                raise ConfigError(f"parts[{i}]", "cannot be a plateau schedule (it needs a metric; torch's "
                                  "SequentialLR refuses it too)", p.kind)
        b = _int_tuple("boundaries", self.boundaries, minimum=0)
        if len(b) != len(parts) - 1:
            raise ConfigError("boundaries", f"must have len(parts) - 1 = {len(parts) - 1} entries", list(b))
        if any(x >= y for x, y in zip(b, b[1:])):
            raise ConfigError("boundaries", "must be strictly increasing", list(b))
        _set(self, "parts", parts)
        _set(self, "boundaries", b)

    @property
    def children(self) -> tuple[Node, ...]:
        return self.parts

    def starts(self, unit: str = "iter", steps_per_epoch: int | None = None) -> tuple[int, ...]:
        """The update at which each part starts (boundaries in this node's unit, converted)."""
        sc = self.scale(unit, steps_per_epoch)
        return (0,) + tuple(b * sc for b in self.boundaries)

    def horizon(self, unit: str = "iter", steps_per_epoch: int | None = None) -> int | None:
        u = self.unit or unit
        starts = self.starts(unit, steps_per_epoch)
        for i, part in enumerate(self.parts):
            h = part.horizon(u, steps_per_epoch)
            if h is not None and (i == len(self.parts) - 1 or starts[i] + h < starts[i + 1]):
                return starts[i] + h
        return None

    def marks(self, until: int, unit: str = "iter", steps_per_epoch: int | None = None) -> tuple[int, ...]:
        u = self.unit or unit
        starts = self.starts(unit, steps_per_epoch)
        out = {s for s in starts[1:] if 0 < s < until}
        for i, part in enumerate(self.parts):
            end = min(until, starts[i + 1]) if i + 1 < len(starts) else until
            out.update(starts[i] + m for m in part.marks(end - starts[i], u, steps_per_epoch))
        return tuple(sorted(out))


@dataclass(frozen=True, kw_only=True)
class Chain(Node):
    r"""Product of schedules (torch ``ChainedScheduler``, or schedulers stacked on one optimizer).

    .. math:: v(k) = base \cdot \prod_i \frac{parts[i](k)}{base}

    Equal to torch when every child is chainable (multiplicative): ConstantLR,
    LinearLR, StepLR, MultiStepLR, ExponentialLR, PolynomialLR, MultiplicativeLR,
    and CosineAnnealingLR with ``eta_min=0`` within ``T_max``.
    """

    kind: ClassVar[str] = "chain"
    parts: tuple[Node, ...] = ()

    def _validate(self) -> None:
        parts = tuple(self.parts)
        if not parts:
            raise ConfigError("parts", "must have at least one schedule", [])
        for i, p in enumerate(parts):
            if not isinstance(p, Node):
                raise ConfigError(f"parts[{i}]", "must be a schedule node", p)
            if isinstance(p, Plateau):
                raise ConfigError(f"parts[{i}]",
                                  "cannot be a plateau schedule (torch's ChainedScheduler refuses it too)", p.kind)
        _set(self, "parts", parts)

    @property
    def children(self) -> tuple[Node, ...]:
        return self.parts

    def horizon(self, unit: str = "iter", steps_per_epoch: int | None = None) -> int | None:
        hs = [h for p in self.parts if (h := p.horizon(self.unit or unit, steps_per_epoch)) is not None]
        return min(hs) if hs else None

    def marks(self, until: int, unit: str = "iter", steps_per_epoch: int | None = None) -> tuple[int, ...]:
        return tuple(sorted({m for p in self.parts for m in p.marks(until, self.unit or unit, steps_per_epoch)}))


@dataclass(frozen=True, kw_only=True)
class Plateau(Node):
    r"""Reduce on plateau (torch ``ReduceLROnPlateau``), driven by a metric series.

    Starting at ``v_0 = base``, after each step ``j`` the metric ``m_j`` is
    compared with the best so far (``mode`` min/max, ``threshold_mode`` rel/abs);
    after more than ``patience`` bad steps outside ``cooldown``,
    ``v \leftarrow \max(v \cdot factor, min\_value)`` if that lowers ``v`` by more
    than ``eps``. Not closed form: evaluated sequentially; only at a schedule's root.

    ``best``, ``bad_steps`` and ``cooldown_left`` are the starting state (torch's
    ``best``, ``num_bad_epochs``, ``cooldown_counter``): a plan imported from a
    scheduler mid-run continues from where it stands. ``best=None`` is the fresh
    state (``inf`` for mode min, ``-inf`` for max).
    """

    kind: ClassVar[str] = "plateau"
    mode: str = "min"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_value: float = 0.0
    eps: float = 1e-8
    best: float | None = None
    bad_steps: int = 0
    cooldown_left: int = 0

    def _validate(self) -> None:
        check_choice("mode", self.mode, ("min", "max"))
        f = check_real("factor", self.factor)
        if not f < 1.0:
            raise ConfigError("factor", "must be < 1.0", f)
        _set(self, "factor", f)
        _set(self, "patience", check_int("patience", self.patience, minimum=0))
        _set(self, "threshold", check_real("threshold", self.threshold))
        check_choice("threshold_mode", self.threshold_mode, ("rel", "abs"))
        _set(self, "cooldown", check_int("cooldown", self.cooldown, minimum=0))
        _set(self, "min_value", check_real("min_value", self.min_value))
        _set(self, "eps", check_real("eps", self.eps))
        if self.best is not None:
            _set(self, "best", check_real("best", self.best))
        _set(self, "bad_steps", check_int("bad_steps", self.bad_steps, minimum=0))
        _set(self, "cooldown_left", check_int("cooldown_left", self.cooldown_left, minimum=0))


# --------------------------------------------------------------------------- registry / helpers

Schedule = (Constant | Linear | Exponential | MultiStep | NaturalExp | InverseTime | Polynomial | Cosine
            | CosineRestarts | Cyclic | OneCycle | Lambda | Multiplicative | Table | Piecewise | Sequence | Chain
            | Plateau)

NODE_TYPES: dict[str, type[Node]] = {
    cls.kind: cls for cls in (
        Constant, Linear, Exponential, MultiStep, NaturalExp, InverseTime, Polynomial, Cosine,
        CosineRestarts, Cyclic, OneCycle, Lambda, Multiplicative, Table, Piecewise, Sequence,
        Chain, Plateau)
}


def walk(node: Node) -> Iterator[Node]:
    """Yield ``node`` and all its descendants, depth first."""
    yield node
    for child in node.children:
        yield from walk(child)


def _int_tuple(path: str, v: object, *, minimum: int | None = None) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(path, "must be a list of integers", v)
    return tuple(check_int(f"{path}[{i}]", x, minimum=minimum) for i, x in enumerate(v))


def _real_tuple(path: str, v: object) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(path, "must be a list of numbers", v)
    return tuple(check_real(f"{path}[{i}]", x) for i, x in enumerate(v))
