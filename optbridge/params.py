"""Resolve a plan's param groups over parameter records, framework-neutrally.

Adapters read :class:`ParamRecord` s off real models (name, shape, owning
module's type, identity); :func:`resolve` assigns each parameter to exactly one
group or reports, by group and pattern, why it cannot.

Rules:

* a parameter is taken by the one non-rest group whose selector matches it;
  two matching groups is an error naming both;
* the rest group (at most one in the plan) takes every other parameter; with no
  rest group an unmatched parameter is an error;
* a group that gets no parameter, and a pattern that matches no parameter, are
  errors naming the group and the pattern (except a group with ``empty: true``,
  which selects nothing on purpose: torch accepts a group without parameters);
* tied (shared) parameters, records with the same ``ident``, count once, under
  their first name; the other names are reported as aliases;
* groups with ``frozen: exclude`` are left out of the optimizer (their
  parameters are listed in ``Resolution.excluded``); ``frozen: zero_lr`` groups
  stay with lr 0.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from .errors import ConfigError
from .plan import GROUP_FEATURES, OPTIMIZER_DEFAULTS, Group, Plan, Selector

__all__ = ["ParamRecord", "ResolvedGroup", "Resolution", "resolve", "effective_options"]


@dataclass(frozen=True)
class ParamRecord:
    """What the resolver needs to know about one parameter.

    Attributes:
        name: Full dotted name (``"backbone.0.weight"``).
        shape: Its shape.
        module_type: Type name of the module that owns it (``"BatchNorm2d"``).
        ident: Identity of the underlying tensor (tied weights share it); the
            name when not given.
        requires_grad: Whether the framework trains it.
    """

    name: str
    shape: tuple[int, ...] = ()
    module_type: str = ""
    ident: Hashable = None
    requires_grad: bool = True

    @property
    def key(self) -> Hashable:
        return self.name if self.ident is None else self.ident

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ResolvedGroup:
    """A group bound to parameters, with every option filled in.

    Attributes:
        name: Group name.
        optimizer: Name of the optimizer it belongs to.
        params: Parameter names, in record order.
        options: Effective options (torch defaults, optimizer options, group
            options; ``lr`` absolute).
        frozen: The group's frozen mode, if any.
        clip: The group's clipping spec, if any.
    """

    name: str
    optimizer: str
    params: tuple[str, ...]
    options: Mapping[str, Any]
    frozen: str | None = None
    clip: Any = None


@dataclass(frozen=True)
class Resolution:
    """The result of :func:`resolve`.

    Attributes:
        groups: Groups that go into optimizers, in plan order.
        excluded: Parameters of ``frozen: exclude`` groups (not in any optimizer).
        aliases: ``alias name -> canonical name`` for tied parameters.
    """

    groups: tuple[ResolvedGroup, ...]
    excluded: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)

    def by_optimizer(self) -> dict[str, list[ResolvedGroup]]:
        out: dict[str, list[ResolvedGroup]] = {}
        for g in self.groups:
            out.setdefault(g.optimizer, []).append(g)
        return out


def effective_options(plan: Plan, group: Group) -> dict[str, Any]:
    """Options of ``group`` as torch would fill them: defaults < optimizer < group.

    ``lr_mult`` and ``weight_decay_mult`` are applied and removed; a
    ``frozen: zero_lr`` group gets lr 0. The :data:`~optbridge.plan.GROUP_FEATURES`
    (``lr_dtype``, ``start_step``, ``empty``) are not optimizer arguments: they are
    left out (read them with :func:`optbridge.plan.group_feature`).
    """
    opt = plan.optimizer_of(group)
    out: dict[str, Any] = dict(OPTIMIZER_DEFAULTS[opt.type])
    out.update(opt.options)
    out.pop("lr_mult", None)
    out.pop("weight_decay_mult", None)
    g = dict(group.options)
    lr_mult = g.pop("lr_mult", None)
    wd_mult = g.pop("weight_decay_mult", None)
    if lr_mult is not None:
        out["lr"] = float(out["lr"]) * float(lr_mult)
    if wd_mult is not None and "weight_decay" not in g:
        out["weight_decay"] = float(out.get("weight_decay", 0.0)) * float(wd_mult)
    out.update(g)
    for key in GROUP_FEATURES:
        out.pop(key, None)
    if group.frozen == "zero_lr":
        out["lr"] = 0.0
    return out


def _criteria(sel: Selector) -> list[tuple[str, Any]]:
    return ([("names", p) for p in sel.names] + [("regex", p) for p in sel.regex]
            + [("modules", p) for p in sel.modules] + [("ndim", n) for n in sel.ndim]
            + [("leaf", p) for p in sel.leaf])


def _hit(crit: str, pattern: Any, r: ParamRecord) -> bool:
    if crit == "names":
        return fnmatchcase(r.name, pattern)
    if crit == "regex":
        return re.fullmatch(pattern, r.name) is not None
    if crit == "modules":
        return fnmatchcase(r.module_type, pattern)
    if crit == "ndim":
        return len(r.shape) == pattern
    return fnmatchcase(r.leaf, pattern)


def _matches(sel: Selector, r: ParamRecord) -> bool:
    """All given criteria hold; within one criterion any pattern may match."""
    for crit in ("names", "regex", "modules", "ndim", "leaf"):
        pats = getattr(sel, crit)
        if pats and not any(_hit(crit, p, r) for p in pats):
            return False
    return True


def resolve(plan: Plan, records: Iterable[ParamRecord]) -> Resolution:
    """Assign every parameter to one group of ``plan``.

    Args:
        plan: The plan.
        records: The model's parameters, in the model's order.

    Returns:
        A :class:`Resolution`.

    Raises:
        ConfigError: overlapping groups, an unmatched parameter, an empty group,
            a pattern that matches nothing (each names the group and pattern).
    """
    unique: list[ParamRecord] = []
    aliases: dict[str, str] = {}
    first: dict[Hashable, str] = {}
    for r in records:
        if r.key in first:
            aliases[r.name] = first[r.key]
            continue
        first[r.key] = r.name
        unique.append(r)

    all_groups = plan.groups
    paths = {}
    for i, o in enumerate(plan.optimizers):
        for j, g in enumerate(o.groups):
            paths[g.name] = f"groups[{j}]" if len(plan.optimizers) == 1 else f"optimizers[{i}].groups[{j}]"
    rest = [g for g in all_groups if g.is_rest]
    if len(rest) > 1:
        raise ConfigError("groups", "at most one rest group may exist across all optimizers", [g.name for g in rest])

    for g in all_groups:
        if not g.select and g.options.get("empty"):
            continue  # selects nothing, on purpose
        if not g.select:
            raise ConfigError(f"{paths[g.name]}.params", f"group {g.name!r} needs a params selector to be bound to a "
                              "model", None, show_value=False)
        for s_i, sel in enumerate(g.select):
            for crit, pat in _criteria(sel):
                if not any(_hit(crit, pat, r) for r in unique):
                    raise ConfigError(f"{paths[g.name]}.params[{s_i}].{crit}",
                                      f"pattern of group {g.name!r} matches no parameter", pat)

    taken: dict[str, list[str]] = {g.name: [] for g in all_groups}
    for r in unique:
        hits = [g for g in all_groups if not g.is_rest and any(_matches(s, r) for s in g.select)]
        if len(hits) > 1:
            a, b = hits[0], hits[1]
            raise ConfigError(
                f"{paths[b.name]}.params",
                f"parameter {r.name!r} is matched by group {a.name!r} ({_describe(a)}) and by group "
                f"{b.name!r} ({_describe(b)}); groups must be disjoint", r.name)
        if hits:
            taken[hits[0].name].append(r.name)
        elif rest:
            taken[rest[0].name].append(r.name)
        else:
            raise ConfigError("groups", f"parameter {r.name!r} is matched by no group (add a group with params: rest, "
                              "or a group with frozen: exclude for parameters you do not train)", r.name)

    for g in all_groups:
        if not taken[g.name] and not g.options.get("empty"):
            raise ConfigError(f"{paths[g.name]}.params", f"group {g.name!r} matches no parameter (every match went "
                              "to other groups)", _describe(g))

    groups, excluded = [], []
    for o in plan.optimizers:
        for g in o.groups:
            if g.frozen == "exclude":
                excluded.extend(taken[g.name])
                continue
            groups.append(ResolvedGroup(g.name, o.name, tuple(taken[g.name]), effective_options(plan, g), g.frozen,
                                        g.clip))
    return Resolution(tuple(groups), tuple(excluded), aliases)


def _describe(g: Group) -> str:
    return " | ".join(s.describe() for s in g.select)
