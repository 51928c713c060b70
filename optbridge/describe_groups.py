"""Readable selectors: the shortest exact description of a param-group assignment.

Given a model's parameter records and which group each parameter belongs to,
:func:`readable_selectors` writes the plan's :class:`~optbridge.plan.Selector` s
a person would write (``names: [backbone.*]``, ``ndim: [1]``, ``leaf: [bias]``,
``modules: ["*Norm*"]``, ``rest``) instead of exhaustive name lists, and proves
them: the selectors are resolved back with :func:`optbridge.params.resolve` and
must give exactly the same assignment.

How it works: every candidate criterion (a module-path glob ``prefix.*``, an
``ndim`` set, a leaf, a module type or a type glob such as ``*Norm*``, and the
conjunctions of a path with the others) is a bit mask over the model's unique
parameters. A group may only use candidates whose mask lies inside the group
(then the union is exact by construction); a greedy weighted set cover picks
the candidates with the most parameters per pattern, and exact names cover
what no candidate covers better. Selectors that differ in one criterion only
are merged (``names: [blocks.0.*, blocks.1.*]``). The costliest group becomes
the ``rest`` group (when allowed). The masks only propose; the final
:func:`~optbridge.params.resolve` decides.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from .errors import ConfigError, OptbridgeError
from .params import ParamRecord, resolve
from .plan import Group, OptimizerSpec, Plan, Selector

__all__ = ["readable_selectors", "exact_selectors", "glob_escape", "RecordIndex", "selector_text"]

#: Order of criteria inside a selector (as :class:`~optbridge.plan.Selector` lists them).
_CRITERIA = ("names", "regex", "modules", "ndim", "leaf")
_GLOB_META = re.compile(r"([*?\[])")
_TYPE_SUFFIX = re.compile(r"\d+[dD]$")
_TYPE_WORD = re.compile(r"[A-Z][a-z]+")

Atom = tuple[tuple[str, tuple[object, ...]], ...]
"""A selector under construction: ``((criterion, patterns), ...)`` in :data:`_CRITERIA` order."""


def glob_escape(text: str) -> str:
    """``text`` as a glob that matches only itself (``*``, ``?``, ``[`` in brackets)."""
    return _GLOB_META.sub(r"[\1]", text)


def selector_text(sel: Selector) -> str:
    """A selector as config text (``{names: [backbone.*], ndim: [1]}``, ``rest``)."""
    if sel.rest:
        return "rest"
    parts = []
    for crit in _CRITERIA:
        pats = getattr(sel, crit)
        if pats:
            parts.append(f"{crit}: [{', '.join(str(p) for p in pats)}]")
    return "{" + ", ".join(parts) + "}"


class RecordIndex:
    """Bit masks over a model's unique parameters, one per candidate criterion.

    Tied parameters (records with the same ``key``) count once, under their
    first name, as in :func:`optbridge.params.resolve`. Bit ``i`` is
    ``records[i]``.

    Attributes:
        records: The unique records, in model order.
        aliases: ``alias name -> first name`` of tied parameters.
        pos: ``name -> bit`` (aliases included).
        prefix: ``module path -> mask`` of the parameters under it (``backbone.1``).
        ndim: ``ndim -> mask``.
        leaf: ``leaf -> mask``.
        module: ``module type -> mask``.
        module_globs: ``type glob -> mask`` for globs that cover two or more types:
            ``BatchNorm*`` for ``BatchNorm1d`` and ``BatchNorm2d``, ``*Norm*`` for a word
            two types share.
    """

    def __init__(self, records: Iterable[ParamRecord]) -> None:
        unique: list[ParamRecord] = []
        first: dict[Hashable, str] = {}
        self.aliases: dict[str, str] = {}
        self.pos: dict[str, int] = {}
        for r in records:
            if r.key in first:
                self.aliases[r.name] = first[r.key]
                self.pos[r.name] = self.pos[first[r.key]]
                continue
            first[r.key] = r.name
            self.pos[r.name] = len(unique)
            unique.append(r)
        self.records: tuple[ParamRecord, ...] = tuple(unique)
        self.full = (1 << len(unique)) - 1
        self.prefix: dict[str, int] = {}
        self.ndim: dict[int, int] = {}
        self.leaf: dict[str, int] = {}
        self.module: dict[str, int] = {}
        self._types: dict[str, int] = {}  # every module type, "" included
        self._patterns: dict[tuple[str, object], int] = {}
        for i, r in enumerate(unique):
            bit = 1 << i
            parts = r.name.split(".")
            for k in range(1, len(parts)):
                p = ".".join(parts[:k])
                self.prefix[p] = self.prefix.get(p, 0) | bit
            self.ndim[len(r.shape)] = self.ndim.get(len(r.shape), 0) | bit
            self.leaf[r.leaf] = self.leaf.get(r.leaf, 0) | bit
            self._types[r.module_type] = self._types.get(r.module_type, 0) | bit
            if r.module_type:
                self.module[r.module_type] = self.module.get(r.module_type, 0) | bit
        self.module_globs: dict[str, int] = {}
        types = sorted(self.module)
        stem_of = {t: _TYPE_SUFFIX.sub("", t) + "*" for t in types if _TYPE_SUFFIX.search(t)}
        stems = {g for g in stem_of.values() if list(stem_of.values()).count(g) >= 2}
        words: dict[str, int] = {}
        for t in types:
            for w in set(_TYPE_WORD.findall(t)):
                words[w] = words.get(w, 0) + 1
        globs = sorted(stems) + sorted(f"*{w}*" for w, n in words.items() if n >= 2)
        for g in globs:
            mask = 0
            for t in types:
                if fnmatchcase(t, g):
                    mask |= self.module[t]
            self.module_globs[g] = mask

    def select(self, sel: Selector) -> int | None:
        """Mask of the parameters ``sel`` matches, by :func:`optbridge.params.resolve`'s rules.

        None when one of its patterns matches no parameter (``resolve`` refuses
        such a selector). Each pattern is evaluated once over the distinct values
        (globs compiled with :func:`fnmatch.translate`, as ``fnmatchcase`` does).
        """
        if sel.rest:
            raise ValueError("a rest selector has no mask of its own")
        mask = self.full
        for crit in _CRITERIA:
            pats = getattr(sel, crit)
            if not pats:
                continue
            any_of = 0
            for p in pats:
                m = self.pattern(crit, p)
                if not m:
                    return None
                any_of |= m
            mask &= any_of
        return mask

    def pattern(self, crit: str, pattern: object) -> int:
        """Mask of the parameters one pattern of criterion ``crit`` matches."""
        key = (crit, pattern)
        if key not in self._patterns:
            self._patterns[key] = self._pattern(crit, pattern)
        return self._patterns[key]

    def _pattern(self, crit: str, p: object) -> int:
        if crit == "ndim":
            assert isinstance(p, int)  # Selector.ndim and the ndim atoms are ints
            return self.ndim.get(p, 0)
        assert isinstance(p, str)
        if crit in ("modules", "leaf"):
            table = self._types if crit == "modules" else self.leaf
            mask = 0
            for value, m in table.items():
                if fnmatchcase(value, p):
                    mask |= m
            return mask
        if crit == "names" and not _GLOB_META.search(p):
            i = self.pos.get(p)
            return 1 << i if i is not None and self.records[i].name == p else 0
        rx = re.compile(p if crit == "regex" else fnmatch.translate(p))
        mask = 0
        for i, r in enumerate(self.records):
            if rx.fullmatch(r.name):
                mask |= 1 << i
        return mask

    def mask_of(self, names: Iterable[str]) -> int:
        """The mask of ``names`` (aliases count as their first name)."""
        mask = 0
        for n in names:
            mask |= 1 << self.pos[n]
        return mask

    def names_of(self, mask: int) -> list[str]:
        """Record names of the bits set in ``mask``, in model order."""
        return [r.name for i, r in enumerate(self.records) if mask >> i & 1]

    def prefixes_of(self, mask: int) -> set[str]:
        """Module paths holding at least one parameter of ``mask``."""
        out: set[str] = set()
        for r in (self.records[i] for i in _bits(mask)):
            parts = r.name.split(".")
            out.update(".".join(parts[:k]) for k in range(1, len(parts)))
        return out


def _bits(mask: int) -> Iterable[int]:
    i = 0
    while mask:
        if mask & 1:
            yield i
        mask >>= 1
        i += 1


@dataclass(frozen=True)
class _Candidate:
    atom: Atom
    mask: int
    cost: float
    order: int


def _cost(atom: Atom) -> float:
    """Patterns written, plus one per extra criterion (an AND is harder to read than a list)."""
    return sum(len(p) for _, p in atom) + (len(atom) - 1)


def _candidates(index: RecordIndex, group: int) -> list[_Candidate]:
    """Every proposed criterion (and path conjunction) whose parameters all lie in ``group``."""
    out: list[_Candidate] = []

    def add(atom: Atom, mask: int) -> None:
        if mask and not mask & ~group:
            out.append(_Candidate(atom, mask, _cost(atom), len(out)))

    def values(table: Mapping[Any, int], within: int) -> tuple[tuple[Any, ...], int]:
        keys = tuple(k for k, m in table.items() if m & within)
        mask = 0
        for k in keys:
            mask |= table[k]
        return keys, mask

    simple: list[tuple[str, Mapping[Any, int], Callable[[Any], object]]] = [
        ("modules", index.module, glob_escape), ("leaf", index.leaf, glob_escape), ("ndim", index.ndim, int)]
    prefixes = sorted(index.prefixes_of(group))
    # single criteria first, most readable first (names, module types, leaves, ndim): ties go to the earlier
    for p in prefixes:
        add((("names", (glob_escape(p) + ".*",)),), index.prefix[p])
    for crit, table, fmt in simple:
        for k, m in table.items():
            add(((crit, (fmt(k),)),), m)
        if crit == "modules":
            for g, m in index.module_globs.items():
                add((("modules", (g,)),), m)
        keys, m = values(table, group)
        if len(keys) > 1:
            add(((crit, tuple(fmt(k) for k in sorted(keys, key=str))),), m)
    # then a module path, or a module type, narrowed by the other criteria
    for p in prefixes:
        m = index.prefix[p]
        inside = m & group
        if m == inside:
            continue
        for crit, table, fmt in simple:
            keys, km = values(table, inside)
            add((("names", (glob_escape(p) + ".*",)), (crit, tuple(fmt(k) for k in sorted(keys, key=str)))), m & km)
    module_like = [((glob_escape(t),), m) for t, m in index.module.items()] + \
                  [((g,), m) for g, m in index.module_globs.items()]
    for pats, m in module_like:
        inside = m & group
        if not inside or m == inside:
            continue
        for crit, table, fmt in simple[1:]:
            keys, km = values(table, inside)
            add((("modules", pats), (crit, tuple(fmt(k) for k in sorted(keys, key=str)))), m & km)
    return out


def _cover(index: RecordIndex, group: int) -> list[Atom]:
    """Atoms whose union is exactly ``group``: greedy set cover, then exact names."""
    cands = _candidates(index, group)
    chosen: list[_Candidate] = []
    left = group
    while left:
        best, best_key = None, None
        for c in cands:
            gain = (c.mask & left).bit_count()
            if gain:
                key = (gain / c.cost, gain, -c.cost, -c.order)
                if best_key is None or key > best_key:
                    best, best_key = c, key
        if best is None or best_key is None or best_key[0] <= 1.0:
            break  # exact names cover the rest at least as well
        chosen.append(best)
        left &= ~best.mask
        cands = [c for c in cands if c.mask & left]
    for c in list(chosen):  # drop candidates the others cover
        others = 0
        for o in chosen:
            if o is not c:
                others |= o.mask
        if not c.mask & ~others:
            chosen.remove(c)
    atoms = [c.atom for c in sorted(chosen, key=lambda c: _lowest(c.mask))]
    atoms += [(("names", (glob_escape(n),)),) for n in index.names_of(left)]
    return _merge(atoms)


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length()


def _merge(atoms: list[Atom]) -> list[Atom]:
    """Merge atoms that differ in one criterion's patterns only (the union of the two)."""
    atoms = list(atoms)
    merged = True
    while merged:
        merged = False
        for i in range(len(atoms)):
            for j in range(i + 1, len(atoms)):
                a, b = atoms[i], atoms[j]
                if [c for c, _ in a] != [c for c, _ in b]:
                    continue
                diff = [k for k in range(len(a)) if a[k][1] != b[k][1]]
                if len(diff) != 1:
                    continue
                k = diff[0]
                pats = a[k][1] + tuple(p for p in b[k][1] if p not in a[k][1])
                atoms[i] = a[:k] + ((a[k][0], pats),) + a[k + 1:]
                del atoms[j]
                merged = True
                break
            if merged:
                break
    return atoms


def _selector(atom: Atom) -> Selector:
    fields: dict[str, Any] = {crit: pats for crit, pats in atom}  # criterion -> patterns (Selector checks them)
    return Selector(**fields)


def _group_masks(index: RecordIndex, assignment: Mapping[str, str], path: str) -> dict[str, int]:
    """``group -> mask`` from ``parameter name -> group`` (checked: known names, complete, consistent)."""
    masks: dict[str, int] = {}
    owner: dict[int, str] = {}
    for name, group in assignment.items():
        if name not in index.pos:
            raise ConfigError(f"{path}[{name!r}]", "is not a parameter of the model", name)
        if not isinstance(group, str) or not group:
            raise ConfigError(f"{path}[{name!r}]", "must be a group name (a non-empty string)", group)
        i = index.pos[name]
        if owner.get(i, group) != group:
            first = index.records[i].name
            raise ConfigError(f"{path}[{name!r}]", f"is tied to {first!r}, which is assigned to group "
                              f"{owner[i]!r}; tied parameters are one parameter and take one group", group)
        owner[i] = group
        masks[group] = masks.get(group, 0) | 1 << i
    missing = [r.name for i, r in enumerate(index.records) if i not in owner]
    if missing:
        raise ConfigError(path, f"every parameter needs a group; {len(missing)} have none "
                          "(put parameters that are not trained in a group with frozen: exclude)", missing)
    return masks


def exact_selectors(index: RecordIndex, mask: int) -> tuple[Selector, ...]:
    """Selectors (no ``rest``) that match exactly the parameters of ``mask`` over ``index``."""
    return tuple(_selector(a) for a in _cover(index, mask))


def readable_selectors(records: Iterable[ParamRecord], assignment: Mapping[str, str], *,
                       rest: bool | str = True) -> dict[str, tuple[Selector, ...]]:
    """The most readable exact selectors for each group of ``assignment``.

    Args:
        records: The model's parameter records, in model order (tied parameters
            share an ``ident``; they count once, under their first name).
        assignment: ``parameter name -> group name`` for every parameter (a tied
            parameter may be named by any of its names).
        rest: ``True``: the group whose exact description is longest becomes
            ``rest`` (the last group when its description is at most one pattern
            shorter: rest is conventionally last); a group name: that group;
            ``False``: no rest group (every group is described exactly).

    Returns:
        ``group -> selectors`` in order of the groups' first appearance in
        ``assignment``. A plan whose groups use these selectors resolves over
        ``records`` (:func:`optbridge.params.resolve`) to exactly ``assignment``.

    Raises:
        ConfigError: an unknown parameter name, a parameter without a group, two
            groups for one tied parameter, or ``rest`` naming no group.
    """
    index = RecordIndex(records)
    masks = _group_masks(index, assignment, "assignment")
    order = list(dict.fromkeys(assignment.values()))
    if isinstance(rest, str) and rest not in masks:
        raise ConfigError("rest", "must name a group of the assignment (" + ", ".join(order) + ")", rest)
    covers = {g: _cover(index, masks[g]) for g in order}
    rest_group: str | None = None
    if isinstance(rest, str):
        rest_group = rest
    elif rest and len(order) > 1:
        costs = {g: sum(_cost(a) for a in covers[g]) + len(covers[g]) - 1 for g in order}
        top = max(reversed(order), key=lambda g: costs[g])
        rest_group = order[-1] if costs[order[-1]] >= costs[top] - 1 else top  # rest is conventionally last
    out = {g: (Selector(rest=True),) if g == rest_group else tuple(_selector(a) for a in covers[g]) for g in order}
    _verify(index, out, masks)
    return out


def _verify(index: RecordIndex, selectors: Mapping[str, Sequence[Selector]], masks: Mapping[str, int]) -> None:
    """Resolve ``selectors`` back over the records; they must give ``masks`` exactly."""
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", groups=tuple(
        Group(name=g, select=tuple(s)) for g, s in selectors.items())),))
    got = {g.name: g.params for g in resolve(plan, index.records).groups}
    for g, mask in masks.items():
        if index.mask_of(got.get(g, ())) != mask:
            raise OptbridgeError(f"readable selectors for group {g!r} do not resolve back to its parameters "
                                 f"(expected {index.names_of(mask)}, got {list(got.get(g, ()))}); "
                                 "this is a bug in optbridge.describe_groups")
