"""A live torch optimizer's param groups, read as plan groups (for :func:`from_torch` and :func:`record`).

* **Options** as torch filled them: the optimizer's ``defaults`` explicitly at the
  optimizer level (AdamW ``weight_decay: 0.01``, ``betas``, ``eps``, ...), per
  group what differs from them; tensors are read as numbers, and a float32 tensor lr
  (``lr=torch.tensor(0.5)``) adds the group option ``lr_dtype: float32``.
* **Names.** Each group keeps its ``name`` key when it is a unique string, else
  ``group<i>``.
* **Selectors.** With a model, :func:`optbridge.describe_groups.readable_selectors`
  describes the groups by patterns, module types and ``ndim`` where those are exact
  (resolved back to prove it), else by exact names; parameters of the model that no
  group holds form a ``frozen: exclude`` group; a group without parameters is an
  ``empty: true`` group. Without a model the groups have no selectors (enough to trace).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from optbridge.describe_groups import glob_escape, readable_selectors
from optbridge.dialects.torch import OPTIMIZER_KWARGS
from optbridge.errors import ConfigError, OptbridgeError
from optbridge.plan import OPTIMIZER_DEFAULTS, Group, Selector

from .build import model_records

__all__ = ["GroupInfo", "optimizer_type", "optimizer_options", "read_groups", "select", "plain", "EXCLUDED"]

#: Name of the group of model parameters no param group holds (``frozen: exclude``).
EXCLUDED = "not_optimized"


def plain(v: Any) -> Any:
    """An option value as plain data: tensors as floats, tuples as lists."""
    if isinstance(v, torch.Tensor):
        return float(v)
    if isinstance(v, tuple):
        return [plain(x) for x in v]
    return v


def _accepted(otype: str) -> tuple[str, ...]:
    """The keyword options of torch's class ``otype``, or of optbridge's torch class of MindSpore's AdamWeightDecay."""
    return OPTIMIZER_KWARGS.get(otype) or tuple(OPTIMIZER_DEFAULTS[otype])


def optimizer_type(optimizer: Any) -> str:
    """The torch.optim class name of ``optimizer`` (or ``AdamWeightDecay``: optbridge's torch class of MindSpore's
    update, which ``optbridge port --to torch`` builds), or a ConfigError naming the classes optbridge knows."""
    from .optimizers import OPTIMIZERS as EXACT

    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError("optimizer", "must be a torch.optim optimizer", type(optimizer).__name__)
    otype = type(optimizer).__name__
    if EXACT.get(otype) is type(optimizer):
        return otype
    if type(optimizer) is not getattr(torch.optim, otype, None) or otype not in OPTIMIZER_KWARGS:
        raise ConfigError("optimizer", "must be one of the torch.optim classes optbridge knows ("
                          + ", ".join(k for k in OPTIMIZER_DEFAULTS if k in OPTIMIZER_KWARGS)
                          + ") or optbridge_adapters.torch.optimizers." + ", ".join(EXACT), otype)
    return otype


def optimizer_options(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's ``defaults`` as plan options (every accepted key, tensors as numbers)."""
    accepted = _accepted(type(optimizer).__name__)
    return {k: plain(v) for k, v in optimizer.defaults.items() if k in accepted}


@dataclass
class GroupInfo:
    """One param group read off a live optimizer.

    Attributes:
        name: Its plan name.
        options: Options that differ from the optimizer's (lr always; ``lr_dtype`` for a
            float32 tensor lr).
        params: Its parameter tensors.
        select: Its selectors (empty without a model, or when it has no parameters).
    """

    name: str
    options: dict[str, Any]
    params: list[torch.Tensor]
    select: tuple[Selector, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.params


def _tensor_dtype(v: Any) -> str | None:
    if isinstance(v, torch.Tensor):
        if v.dtype == torch.float32:
            return "float32"
        if v.dtype != torch.float64:
            raise ConfigError("lr", "a tensor lr must be float32 or float64 (torch fills it in place)", str(v.dtype))
    return None


def read_groups(optimizer: torch.optim.Optimizer, defaults: Mapping[str, Any],
                groups: Sequence[Mapping[str, Any]] | None = None) -> list[GroupInfo]:
    """The groups of ``optimizer`` (or the given group dicts) with options relative to ``defaults``.

    The lr is the group's current ``lr``; callers replace it with the base their
    schedules scale (``initial_lr``, ...).
    """
    accepted = _accepted(type(optimizer).__name__)
    out: list[GroupInfo] = []
    taken: set[str] = set()
    for i, g in enumerate(optimizer.param_groups if groups is None else groups):
        name = g.get("name")
        if not isinstance(name, str) or not name or name in taken or name == EXCLUDED:
            name = f"group{i}"
        taken.add(name)
        opts = {k: plain(g[k]) for k in accepted if k in g and k != "lr" and plain(g[k]) != plain(defaults.get(k))}
        opts["lr"] = float(g["lr"])
        dtype = _tensor_dtype(g["lr"])
        if dtype:
            opts["lr_dtype"] = dtype
        out.append(GroupInfo(name, opts, list(g["params"])))
    return out


def select(infos: list[GroupInfo], model: Any) -> Group | None:
    """Give every group its selectors over ``model``; return the ``frozen: exclude`` group of the rest (or None).

    Raises:
        ConfigError: a parameter of a group is not a parameter of ``model``.
    """
    records, tensors = model_records(model)
    names: dict[int, str] = {}
    for n, p in tensors.items():
        names.setdefault(id(p), n)
    assignment: dict[str, str] = {}
    for gi, info in enumerate(infos):
        for j, p in enumerate(info.params):
            if id(p) not in names:
                raise ConfigError(f"param_groups[{gi}].params[{j}]", "is not a parameter of the model",
                                  tuple(p.shape))
            assignment[names[id(p)]] = info.name
    rest = [n for i, n in names.items() if n not in assignment]
    for n in rest:
        assignment[n] = EXCLUDED
    order = [info.name for info in infos if not info.empty] + ([EXCLUDED] if rest else [])
    ordered = {n: assignment[n] for n in names.values()}
    try:
        found = readable_selectors(records, ordered)
    except OptbridgeError:  # pragma: no cover - readable_selectors proves its result; exact names never fail
        found = {g: (Selector(names=tuple(glob_escape(n) for n, a in ordered.items() if a == g)),) for g in order}
    for info in infos:
        info.select = tuple(found.get(info.name, ()))
    return Group(name=EXCLUDED, select=tuple(found[EXCLUDED]), frozen="exclude") if rest else None
