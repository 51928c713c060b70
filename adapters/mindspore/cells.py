"""MindSpore ``LearningRateSchedule`` cells for schedule nodes: MindSpore's own where exact, else generated.

:func:`build_cell` turns one schedule node (with the group's base value and the
plan's clock) into a ``LearningRateSchedule`` whose ``construct(global_step)``
returns the value update ``global_step`` uses, as the float32 tensor MindSpore's
``nn`` optimizers expect. Three forms:

* **native**: MindSpore's own cell (``WarmUpLR``, ``CosineDecayLR``,
  ``PolynomialDecayLR``, ``InverseDecayLR``, ``ExponentialDecayLR``) where its code
  computes the node (same formula, same horizon), and only as the whole schedule (a
  sequence or chain is always generated). It computes in float32 and casts the step
  to float32, so it is not used past 2**24 steps; its measured error bounds are
  :data:`NATIVE_BOUNDS`.
* **generated**: a translation of the node's closed form into float64 MindSpore
  ops (:mod:`.nodecells`, :mod:`.exprcells` for ``lambda`` expressions), composed
  for sequences and chains, with ``global_step`` cast to float64 (exact for every
  int32 step) and the result rounded to float32 once. It is tested against the
  reference evaluator: ``|cell(k) - float32(ref(k))| <= 1 ulp`` (docs/mindspore.md
  has the measured figures).
* **table**: precomputed reference values gathered per step (nodes with no closed
  form in-graph: ``multiplicative`` and anything holding one); needs ``total_steps``.

``plateau`` has no cell (it needs the metric at run time): the builder gives it a
driven Parameter instead (:class:`ParameterCell`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from optbridge import evaluate, ir
from optbridge.errors import UnsupportedError

from . import nodecells as nc
from .exprcells import F64, expression_cell

__all__ = ["build_cell", "CellChoice", "NATIVE_BOUNDS", "FLOAT32_STEP_LIMIT", "ScheduleCell", "TableCell",
           "ConstantCell", "ParameterCell"]

F32 = mstype.float32

#: Native cells cast global_step to float32: consecutive steps share values beyond this.
FLOAT32_STEP_LIMIT = 2**24

#: Float32 error bounds of the native cells, in float32 ulps (derived from their operations, checked by
#: tests/test_mindspore_forms.py): ``|cell(k) - float32(ref(k))| <= rel * ulp(float32(ref(k))) +
#: abs * ulp(float32(peak))``, where ``peak`` is the largest value of the schedule.
NATIVE_BOUNDS: dict[str, tuple[float, float]] = {
    "WarmUpLR": (2, 0),           # lr * (float32(min(k, W)) / W): two roundings
    "InverseDecayLR": (4, 0),     # lr / (1 + rate * (k / ds)): four roundings
    "ExponentialDecayLR": (4, 0),  # lr * pow(rate, p), rate exact in float32 and p an exact integer
    "CosineDecayLR": (2, 4),      # min + delta * (1 + sin(pi * (p / ds + 0.5))): cancellation near min_lr
    "PolynomialDecayLR": (2, 6),  # diff * pow(1 - p, power) + end, power >= 1: 1 - p rounds in absolute terms
}


@dataclass(frozen=True)
class CellChoice:
    """What :func:`build_cell` built: the cell, its fidelity form (native, generated, table) and a description."""

    cell: Any
    form: str
    detail: str


# --------------------------------------------------------------------------- top-level cells


class ScheduleCell(LearningRateSchedule):
    """The LearningRateSchedule an optimizer calls: float64 evaluation of ``root``, one float32 rounding.

    Attributes:
        node: The optbridge schedule node it evaluates (read back by ``from_mindspore``).
        base: The group's base value.
        unit: The plan's step unit.
        steps_per_epoch: Updates per epoch.
    """

    def __init__(self, root: nn.Cell, node: ir.Node | None = None, base: float | None = None,
                 unit: str = "iter", steps_per_epoch: int | None = None) -> None:
        super().__init__()
        self.root = root
        self.node = node
        self.base = base
        self.unit = unit
        self.steps_per_epoch = steps_per_epoch

    def construct(self, global_step):
        return ops.cast(self.root(ops.cast(global_step, F64)), F32)


class TableCell(LearningRateSchedule):
    """``values[global_step]`` from a float32 Parameter (MindSpore's own list mechanism, as a cell).

    Used for weight-decay lists (nn optimizers take a dynamic weight decay only as a
    Cell). The optimizer guard refuses updates past the end before the Gather runs.
    """

    _count = 0

    def __init__(self, values: np.ndarray, name: str = "optbridge_values") -> None:
        super().__init__()
        TableCell._count += 1
        self.values = Parameter(Tensor(np.ascontiguousarray(values, dtype=np.float32)),
                                name=f"{name}_{TableCell._count}", requires_grad=False)

    def construct(self, global_step):
        return ops.gather(self.values, global_step, 0)


class ConstantCell(LearningRateSchedule):
    """A constant float32 value as a dynamic lr (never MindSpore's ``lr + 1.0 - 1.0`` static wrapper)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = Tensor(np.float32(value), F32)

    def construct(self, global_step):
        return ops.zeros_like(ops.cast(global_step, F32)) + self.value


class ParameterCell(LearningRateSchedule):
    """The current value of a float32 Parameter that a driver writes (``ops.assign``) before each update.

    How an ``nn`` optimizer takes a value no list or cell can hold (a plateau, which
    needs the metric at run time): a dynamic lr like the others, so no static lr sits
    beside a dynamic one.

    Attributes:
        value: The float32 0-d Parameter.
    """

    def __init__(self, value: Parameter) -> None:
        super().__init__()
        self.value = value

    def construct(self, global_step):
        return ops.zeros_like(ops.cast(global_step, F32)) + self.value


# --------------------------------------------------------------------------- node -> cell


def _is_f32(x: float) -> bool:
    return float(np.float32(x)) == x


def _native(node: ir.Node, base: float, horizon: int | None) -> tuple[nn.Cell, str] | None:
    """MindSpore's own cell for ``node`` when its code computes the node (same formula and horizon)."""
    if not (isinstance(base, float) and math.isfinite(base)):
        return None
    if isinstance(node, ir.Linear) and node.start_factor == 0.0 and node.end_factor == 1.0 and base >= 0.0:
        return nn.WarmUpLR(float(base), node.steps), f"nn.WarmUpLR({base:g}, warmup_steps={node.steps})"
    if isinstance(node, ir.Cosine) and 0.0 <= node.end < base and (
            node.clamp or (horizon is not None and horizon <= node.steps + 1)):
        return (nn.CosineDecayLR(float(node.end), float(base), node.steps),
                f"nn.CosineDecayLR(min_lr={node.end:g}, max_lr={base:g}, decay_steps={node.steps})")
    if isinstance(node, ir.Polynomial) and 0.0 <= node.end < base and node.power >= 1.0:
        return (nn.PolynomialDecayLR(float(base), float(node.end), node.steps, float(node.power), node.cycle),
                f"nn.PolynomialDecayLR({base:g}, {node.end:g}, decay_steps={node.steps}, power={node.power:g}, "
                f"update_decay_steps={node.cycle})")
    if isinstance(node, ir.InverseTime) and base > 0.0 and node.rate > 0.0:
        return (nn.InverseDecayLR(float(base), float(node.rate), node.every, node.stair),
                f"nn.InverseDecayLR({base:g}, {node.rate:g}, decay_steps={node.every}, is_stair={node.stair})")
    if (isinstance(node, ir.Exponential) and base > 0.0 and node.gamma > 0.0 and _is_f32(node.gamma)
            and (node.stair or node.every == 1)):
        return (nn.ExponentialDecayLR(float(base), float(node.gamma), node.every, node.stair),
                f"nn.ExponentialDecayLR({base:g}, {node.gamma:g}, decay_steps={node.every}, is_stair={node.stair})")
    return None


def _generated(node: ir.Node, base: float, unit: str, spe: int, path: str) -> nn.Cell:
    """The float64 cell of ``node`` on its local counter (update counts; epoch nodes divide by ``spe``)."""
    unit = node.unit or unit
    if isinstance(node, ir.Plateau):
        raise UnsupportedError(path, "mindspore-cell", "plateau needs the metric at run time; no cell computes it "
                               "(the builder drives it through a Parameter instead)")
    if isinstance(node, ir.Sequence):
        starts = list(node.starts(unit, spe))
        return nc.Sequence([_generated(p, base, unit, spe, f"{path}.parts[{i}]") for i, p in enumerate(node.parts)],
                           starts)
    if isinstance(node, ir.Chain):
        if base == 0.0:
            raise UnsupportedError(path, "mindspore-cell", "chain multiplies factors relative to base, and base is 0")
        return nc.Chain(base, [_generated(p, base, unit, spe, f"{path}.parts[{i}]") for i, p in enumerate(node.parts)])
    leaf: nn.Cell
    if isinstance(node, ir.Constant):
        leaf = nc.ConstantNode(base, node.factor, node.steps)
    elif isinstance(node, ir.Lambda):
        leaf = nc.Lambda(base, expression_cell(node.expr))
    elif isinstance(node, ir.Table):
        leaf = nc.Table(np.asarray(node.values, dtype=np.float64) * (base if node.relative else 1.0))
    else:
        leaf = nc.GENERATED[type(node)](base, node)
    return nc.Epoch(leaf, spe) if unit == "epoch" else leaf


def _kinds(node: ir.Node) -> str:
    return ", ".join(dict.fromkeys(n.kind for n in ir.walk(node)))


def build_cell(node: ir.Node | None, base: float, *, unit: str = "iter", steps_per_epoch: int | None = None,
               total_steps: int | None = None, allow_native: bool = True, path: str = "schedule") -> CellChoice:
    """A LearningRateSchedule computing ``node`` for a group with base value ``base``.

    Args:
        node: The schedule (None: the constant ``base``).
        base: The group's base value of the hyperparameter.
        unit: The plan's step unit (inherited by nodes without one).
        steps_per_epoch: Updates per epoch, for epoch-unit nodes.
        total_steps: The horizon, when known: needed for table cells; native
            cells (float32 step) are not used beyond 2**24 steps.
        allow_native: Use MindSpore's own cell where it computes the whole node.
        path: Config path of the node, for errors.

    Returns:
        A :class:`CellChoice` (form ``native``, ``generated`` or ``table``).

    Raises:
        UnsupportedError: plateau nodes; multiplicative without a horizon.
        EvaluationError: the schedule is undefined within ``total_steps`` (the reference says where).
    """
    if node is None:
        return CellChoice(ConstantCell(base), "generated", f"constant {base:g} (float32 tensor, a dynamic lr)")
    if any(isinstance(n, ir.Plateau) for n in ir.walk(node)):
        raise UnsupportedError(path, "mindspore-cell", "plateau needs the metric at run time; no cell computes it "
                               "(the builder drives it through a Parameter instead)")
    spe = int(steps_per_epoch or 1)
    if any(isinstance(n, ir.Multiplicative) for n in ir.walk(node)):
        if total_steps is None:
            raise UnsupportedError(path, "mindspore-cell", "multiplicative has no closed form in-graph; its values are "
                                   "precomputed into a table, which needs total_steps")
        vals = evaluate.values(node, total_steps, base=base, unit=unit, steps_per_epoch=steps_per_epoch, path=path)
        return CellChoice(ScheduleCell(nc.Table(vals), node, base, unit, steps_per_epoch), "table",
                          f"table: {total_steps} reference values gathered per step (multiplicative has no "
                          "closed form in-graph)")
    if total_steps is not None:  # the reference raises where the schedule is undefined (one_cycle past its end, 1/0)
        evaluate.values(node, np.arange(min(total_steps, 1 << 20)), base=base, unit=unit,
                        steps_per_epoch=steps_per_epoch, path=path)
    root_unit = node.unit or unit
    counter_horizon = None if total_steps is None else -(-total_steps // node.scale(unit, spe))
    native = None
    if allow_native and (total_steps is None or total_steps <= FLOAT32_STEP_LIMIT):
        native = _native(node, base, counter_horizon)
    if native is not None:
        if root_unit != "epoch":
            return CellChoice(native[0], "native", native[1] + " (float32 arithmetic)")
        cell = ScheduleCell(nc.Epoch(nc.Native(native[0]), spe), node, base, unit, steps_per_epoch)
        return CellChoice(cell, "native", native[1] + " at the epoch counter (float32 arithmetic)")
    root = _generated(node, base, unit, spe, path)
    table = any(isinstance(n, ir.Table) for n in ir.walk(node))
    return CellChoice(ScheduleCell(root, node, base, unit, steps_per_epoch), "table" if table else "generated",
                      f"generated cell ({_kinds(node)}: float64 MindSpore ops, one float32 rounding)")
