"""The one resolver: which schedule drives each hyperparameter of each group, from what base.

Every consumer of a plan (the reference trace, every backend's driver, list
exports, generated code) needs the same facts per (group, hyperparameter): the
node that drives it (group override, else plan default), the base value it
scales, the config path that names it in errors, the group dict key it lives in
(``beta1`` is ``betas[0]``), and whether it applies at all (an SGD group has no
``beta1``). :func:`slots` computes them once; nobody else formats
``groups.<name>.schedule.<hyper>`` or re-derives a base.

A plan's schedules, clock and bases are summed up by :func:`fingerprint`, the
one state fingerprint that drivers store in their ``state_dict`` so a state is
never loaded into a setup that drives other schedules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import ir
from .plan import Group, Plan, has_hyper, hyper_base, scheduled_hypers

__all__ = ["Slot", "slots", "evaluation_items", "schedule_path", "applies", "hyper_key", "fingerprint"]

#: Hyperparameters stored inside a tuple in a group dict: ``name -> (key, position)``.
_TUPLE_KEYS = {"beta1": ("betas", 0), "beta2": ("betas", 1)}


def hyper_key(hyper: str) -> tuple[str, int | None]:
    """Where ``hyper`` lives in a torch-style group dict: ``("betas", 0)`` for beta1, ``("lr", None)`` for lr."""
    return _TUPLE_KEYS.get(hyper, (hyper, None))


def schedule_path(group: Group, hyper: str) -> str:
    """Config path of the schedule of ``hyper`` in ``group``: its own override, else the plan-wide one."""
    return f"groups.{group.name}.schedule.{hyper}" if hyper in group.schedule else f"schedule.{hyper}"


def applies(plan: Plan, group: Group, hyper: str) -> bool:
    """Whether ``hyper`` exists for ``group``.

    False for a plan-wide schedule of a hyperparameter the group's optimizer lacks
    (``beta1`` over an SGD group): traces hold NaN there ("not applicable"). A
    group's own schedule always applies (and :func:`slots` raises if its optimizer
    lacks the hyperparameter).
    """
    return hyper in group.schedule or has_hyper(plan, group, hyper)


@dataclass(frozen=True)
class Slot:
    """One hyperparameter of one group, resolved.

    Attributes:
        group: The group's name.
        optimizer: The name of the optimizer the group belongs to.
        index: The group's position among its optimizer's groups that are built
            (``frozen: exclude`` groups are left out), i.e. its index in the
            framework optimizer's ``param_groups``.
        row: The group's position among all built groups of the plan (the row of
            traces).
        hyper: ``"lr"``, ``"momentum"``, ``"beta1"``, ``"weight_decay"``, ...
        key: The group dict key holding it (``"betas"`` for beta1 and beta2).
        position: Index inside a tuple key (0 or 1 for the betas), else None.
        node: The schedule driving it, or None when it is held at ``base``.
        base: Its base value (group option, optimizer option, torch default; 0 for
            the lr of a ``frozen: zero_lr`` group).
        path: Config path naming it in messages.
    """

    group: str
    optimizer: str
    index: int
    row: int
    hyper: str
    key: str
    position: int | None
    node: ir.Node | None
    base: float
    path: str

    @property
    def scheduled(self) -> bool:
        return self.node is not None


def slots(plan: Plan, *, hypers: Iterable[str] | None = None, held: bool = False) -> tuple[Slot, ...]:
    """The resolved slots of ``plan``, group by group in plan order.

    Args:
        plan: The plan.
        hypers: Hyperparameters to resolve (default: every scheduled one, lr first;
            see :func:`optbridge.plan.scheduled_hypers`).
        held: Also return slots whose value is held constant (no schedule, or the
            lr of a ``zero_lr`` group); by default only slots with a node.

    Returns:
        One :class:`Slot` per (built group, hyperparameter) that applies.

    Raises:
        ConfigError: a group's own schedule names a hyperparameter its optimizer lacks,
            or no group at all has a plan-wide scheduled hyperparameter.
    """
    wanted = tuple(scheduled_hypers(plan) if hypers is None else hypers)
    out: list[Slot] = []
    row = 0
    for opt in plan.optimizers:
        index = 0
        for g in opt.groups:
            if g.frozen == "exclude":
                continue
            for h in wanted:
                if not applies(plan, g, h):
                    continue
                path = schedule_path(g, h)
                node = None if (h == "lr" and g.frozen == "zero_lr") else plan.schedule_for(g, h)
                if node is None and not held:
                    continue
                key, pos = hyper_key(h)
                out.append(Slot(g.name, opt.name, index, row, h, key, pos, node, hyper_base(plan, g, h, path=path),
                                path))
            index += 1
            row += 1
    for h in wanted:  # a plan-wide schedule no built group can take is an error, not an empty row
        built = [g for g in plan.groups if g.frozen != "exclude"]
        if h in plan.schedule and built and not any(applies(plan, g, h) for g in built):
            hyper_base(plan, built[0], h, path=f"schedule.{h}")  # raises, naming the optimizer
    return tuple(out)


def evaluation_items(items: Sequence[Slot]) -> list[tuple[ir.Node, float, str]]:
    """``(node, base, path)`` of the driven slots, what :func:`optbridge.evaluate.table` evaluates."""
    return [(s.node, s.base, s.path) for s in items if s.node is not None]


def fingerprint(items: Sequence[Slot], *, unit: str, steps_per_epoch: int | None,
                total_steps: int | None) -> str:
    """A short stable hash of what a driver drives: its slots (node, base, path) and the clock.

    Drivers store it in their ``state_dict`` and refuse a state saved by a driver of
    other schedules (another plan, group order or clock).
    """
    from .serialize import node_to_dict
    doc = {"clock": [unit, steps_per_epoch, total_steps],
           "slots": [[s.optimizer, s.group, s.index, s.hyper, None if s.node is None else node_to_dict(s.node),
                      repr(s.base), s.path] for s in items]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()[:16]
