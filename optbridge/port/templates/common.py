"""Template of the framework-neutral part of every module ``optbridge port`` writes (never imported by optbridge).

:mod:`optbridge.port.render` copies the ``<imports>`` and ``<body>`` blocks into
the generated module, after the constants it writes there. The ``<template>``
block gives the constants placeholder values so that this file is valid Python
that ruff and mypy check. Standalone: the standard library and numpy only.
"""

# <imports>
from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

# </imports>
# <template>
HERE = Path(__file__).resolve().parent
TOTAL = 1
HORIZON: int | None = None
WHY = ""
CHUNK = 4096
COLUMNS: list[dict[str, Any]] = []
GROUPS: list[dict[str, Any]] = []
EXCLUDED: list[dict[str, Any]] = []
SLOTS: list[dict[str, Any]] = []
# </template>
# <body>
# ----------------------------------------------------------------------------- errors (the core's policy)


class PastHorizon(ValueError):
    """An update at or past the end of the schedule (the message names the update and the reason).

    Attributes:
        step: The update asked for.
        horizon: The first update without a value.
    """

    def __init__(self, step: int) -> None:
        super().__init__(past_horizon(step))
        self.step, self.horizon = step, HORIZON


def past_horizon(step: int) -> str:
    """The message of :class:`PastHorizon` (the words of ``optbridge.source.PastHorizon``)."""
    return f"update {step} is past the end of the schedule: {WHY}"


class NotStepped(ValueError):
    """The optimizer made an update the schedule driver was not stepped for (the message names the update)."""


class GroupError(ValueError):
    """The model's parameters do not fit the port's groups (the message names the group and the pattern)."""


# ----------------------------------------------------------------------------- groups: the plan's selectors
# The rules of optbridge.params.resolve: a parameter belongs to the one group whose selector matches it
# (every given criterion holds; any pattern of a criterion may match), else to the rest group; groups are
# disjoint, every pattern matches something, every group gets a parameter; tied parameters (one identity)
# count once, under their first name.

#: A parameter as the resolver sees it: (name, shape, owning module's type name, identity).
Record = tuple[str, tuple[int, ...], str, Any]
_CRITERIA = ("names", "regex", "modules", "ndim", "leaf")


def _selector(sel: Any) -> dict[str, Any]:
    if sel == "rest":
        return {"rest": True}
    return {"names": [sel]} if isinstance(sel, str) else dict(sel)


def _hit(crit: str, pattern: Any, rec: Record) -> bool:
    name, shape, module, _ = rec
    if crit == "names":
        return fnmatch.fnmatchcase(name, pattern)
    if crit == "regex":
        return re.fullmatch(pattern, name) is not None
    if crit == "modules":
        return fnmatch.fnmatchcase(module, pattern)
    if crit == "ndim":
        return len(shape) == pattern
    return fnmatch.fnmatchcase(name.rsplit(".", 1)[-1], pattern)


def _matches(sel: dict[str, Any], rec: Record) -> bool:
    return not sel.get("rest") and all(any(_hit(c, p, rec) for p in sel[c]) for c in _CRITERIA if sel.get(c))


def resolve(records: Iterable[Record]) -> tuple[dict[str, list[str]], list[str]]:
    """Assign the model's parameters to the port's groups.

    Args:
        records: ``(name, shape, module type, identity)`` per parameter, in model order.

    Returns:
        ``({group: [parameter names]}, [names of frozen: exclude parameters])``.

    Raises:
        GroupError: overlapping groups, an unmatched parameter, a group or pattern that
            matches nothing (each names the group and the pattern).
    """
    unique: list[Record] = []
    seen: set[Any] = set()
    for r in records:
        if r[3] in seen:
            continue
        seen.add(r[3])
        unique.append(r)
    everyone = [(g["name"], [_selector(s) for s in g["select"]]) for g in GROUPS + EXCLUDED]
    rest = [n for n, sels in everyone if any(s.get("rest") for s in sels)]
    for gname, sels in everyone:
        if not sels:
            raise GroupError(f"group {gname!r} has no params selector")
        for sel in sels:
            for crit in _CRITERIA:
                for pat in sel.get(crit, ()):
                    if not any(_hit(crit, pat, r) for r in unique):
                        raise GroupError(f"group {gname!r}: pattern {crit}={pat!r} matches no parameter of the model")
    taken: dict[str, list[str]] = {n: [] for n, _ in everyone}
    for r in unique:
        hits = [n for n, sels in everyone if n not in rest and any(_matches(s, r) for s in sels)]
        if len(hits) > 1:
            raise GroupError(f"parameter {r[0]!r} is matched by groups {hits[0]!r} and {hits[1]!r}; groups must be "
                             "disjoint")
        if not hits and not rest:
            raise GroupError(f"parameter {r[0]!r} is matched by no group (the plan has no rest group)")
        taken[(hits or rest)[0]].append(r[0])
    for n, names in taken.items():
        if not names:
            raise GroupError(f"group {n!r} matches no parameter (every match went to other groups)")
    return {g["name"]: taken[g["name"]] for g in GROUPS}, [n for g in EXCLUDED for n in taken[g["name"]]]


# ----------------------------------------------------------------------------- groups that join mid-run


def saved_joins(current: int, saved: list[dict[str, Any]], pending: list[int]) -> int:
    """How many of the groups still to join (``pending``: their parameter counts, in join order) a saved optimizer
    state holds beyond the ``current`` groups: all its extra groups when they are exactly the next ones, else 0
    (nothing changes, and the framework refuses the state). ``optbridge.state.saved_joins``, standalone."""
    extra = list(saved[current:])
    if len(extra) > len(pending) or any(len(g.get("params", ())) != n for g, n in zip(extra, pending)):
        return 0
    return len(extra)


# ----------------------------------------------------------------------------- the tables


def verify() -> None:
    """Check every table file against the SHA-256 written into this module.

    Raises:
        ValueError: a file was changed or replaced.
    """
    for c in COLUMNS:
        h = hashlib.sha256()
        with open(HERE / c["file"], "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        if h.hexdigest() != c["sha256"]:
            raise ValueError(f"{c['file']}: sha256 {h.hexdigest()} differs from the port's {c['sha256']} (the table "
                             "was changed; port again)")


def column(j: int) -> np.ndarray:
    """Column ``j`` as a read-only float64 memory map of ``TOTAL`` values."""
    c = COLUMNS[j]
    arr = np.load(HERE / c["file"], mmap_mode="r", allow_pickle=False)
    if arr.dtype != np.float64 or arr.shape != (TOTAL,):
        raise ValueError(f"{c['file']}: expected float64 ({TOTAL},), got {arr.dtype} {arr.shape}")
    return arr


def slot_values(j: int) -> np.ndarray:
    """All ``TOTAL`` values of slot ``j`` (float64): ``scale * column``, the reference's values bit for bit."""
    s = SLOTS[j]
    return np.multiply(s["scale"], column(s["column"]))


class Values:
    """The values of every slot, update by update, from the tables.

    ``row(k)`` is a list lookup: rows are read :data:`CHUNK` updates at a time from
    the memory-mapped columns and multiplied by each slot's scale (the same float64
    product the reference evaluator computes). Past the end, the one policy of
    ``optbridge.source``: an update at or past :data:`HORIZON` raises
    :class:`PastHorizon`; with no horizon (every schedule holds) the last row holds.
    """

    def __init__(self, slots: list[int] | None = None, chunk: int = CHUNK) -> None:
        self.slots = list(range(len(SLOTS))) if slots is None else list(slots)
        self.chunk = chunk
        self._maps = [column(j) for j in range(len(COLUMNS))]
        self._cols = np.asarray([SLOTS[j]["column"] for j in self.slots], dtype=np.int64)
        self._scale = np.asarray([SLOTS[j]["scale"] for j in self.slots], dtype=np.float64)
        self._lo = self._hi = 0
        self._rows: list[list[float]] = []

    @staticmethod
    def check(k: int) -> None:
        """Raise :class:`PastHorizon` unless update ``k`` has a value."""
        if HORIZON is not None and k >= HORIZON:
            raise PastHorizon(k)

    def row(self, k: int) -> list[float]:
        """The values of this source's slots at update ``k`` (Python floats, slot order)."""
        self.check(k)
        if not self.slots:
            return []
        k = min(k, TOTAL - 1)  # past TOTAL only with a hold
        if not self._lo <= k < self._hi:
            n = min(self.chunk, TOTAL - k)
            block = np.empty((n, len(self._maps)))
            for i, m in enumerate(self._maps):
                block[:, i] = m[k:k + n]
            self._rows = np.multiply(block[:, self._cols], self._scale).tolist()
            self._lo, self._hi = k, k + n
        return self._rows[k - self._lo]


# </body>
