"""Template of the torch module ``optbridge port --to torch`` writes (never imported by optbridge).

:mod:`optbridge.port.render` writes the generated module from the ``<imports>``,
``<body>`` and ``<main>`` blocks here and in :mod:`.common`, with the port's
constants in between; the ``<template>`` block only makes this file valid Python.
"""

# <imports>
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from optbridge.port.templates.common import (
    SLOTS,
    TOTAL,
    NotStepped,
    Record,
    Values,
    resolve,
    saved_joins,
    slot_values,
    verify,
)

# </imports>
# <template>
FINGERPRINT = ""
HORIZON: int | None = None
OPTIMIZERS: list[dict[str, Any]] = []
GROUPS: list[dict[str, Any]] = []
# </template>
# <body>
# ----------------------------------------------------------------------------- the model's parameters


def records(model: torch.nn.Module) -> list[Record]:
    """``(name, shape, owning module type, identity)`` of every parameter (tied ones under each name)."""
    out: list[Record] = []
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod._parameters.items():
            if p is not None:
                out.append((f"{mname}.{pname}" if mname else pname, tuple(p.shape), type(mod).__name__, id(p)))
    return out


# ----------------------------------------------------------------------------- the schedule driver


class TableScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Writes the port's values into an optimizer's groups: call ``step()`` once after every ``optimizer.step()``.

    The constructor writes update 0 (as torch's schedulers do); ``step()`` writes the
    next update's values (``beta1``/``beta2`` into ``betas``), after adding the groups
    that join the optimizer at that update (``add_param_group``: ``start`` in
    ``GROUPS``; a resumed scheduler adds the ones its position has passed, and
    ``optimizer.load_state_dict`` the ones the saved state holds: either may be loaded
    first). Stepping to the end of
    the schedule writes nothing: the optimizer update that would use a value there
    raises :class:`PastHorizon` (see :func:`guard`). ``state_dict()`` is plain data and
    carries the port's fingerprint; ``load_state_dict`` refuses another port's state.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, slots: list[int],
                 joins: Iterable[tuple[int, dict[str, Any]]] = ()) -> None:
        self.values = Values(slots)
        self._targets = [(GROUPS[SLOTS[j]["group"]]["index"], SLOTS[j]["key"], SLOTS[j]["position"]) for j in slots]
        self._joins = list(joins)  # (update, group dict), in param_groups order
        super().__init__(optimizer)
        if self._joins:
            optimizer.register_load_state_dict_pre_hook(self._join_saved)

    def _join_saved(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
        """Before ``optimizer.load_state_dict``: add the joining groups the saved state holds (saved after they
        joined); only when they are exactly the next ones, else nothing changes and torch refuses the state."""
        saved = list(state_dict.get("param_groups", ()))
        for _ in range(saved_joins(len(optimizer.param_groups), saved, [len(d["params"]) for _, d in self._joins])):
            optimizer.add_param_group(self._joins.pop(0)[1])

    def _write(self, t: int) -> None:
        if HORIZON is not None and t >= HORIZON:
            return  # no update uses it: the update that would raises
        while self._joins and self._joins[0][0] <= t:
            self.optimizer.add_param_group(self._joins.pop(0)[1])
        groups = self.optimizer.param_groups
        for (gi, key, pos), v in zip(self._targets, self.values.row(t)):
            if gi >= len(groups):
                continue  # joins later
            g = groups[gi]
            if pos is not None:
                b = list(g[key])
                b[pos] = v
                g[key] = tuple(b)
            elif isinstance(g[key], torch.Tensor):
                g[key].fill_(v)
            else:
                g[key] = v

    def step(self, epoch: None = None) -> None:  # type: ignore[override]  # counts updates itself, takes no epoch
        """Write the values of the next update (call after ``optimizer.step()``)."""
        if epoch is not None:
            raise TypeError("TableScheduler.step() takes no epoch: it counts updates itself")
        t = self.last_epoch + 1
        self._write(t)
        self.last_epoch = t
        self._step_count += 1
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:  # type: ignore[override]  # the values are written by step()
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count, "fingerprint": FINGERPRINT}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("fingerprint") != FINGERPRINT:
            raise ValueError(f"state_dict was saved for another plan or port (fingerprint "
                             f"{state_dict.get('fingerprint')!r}, this port drives {FINGERPRINT!r})")
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        self._write(self.last_epoch)


def guard(optimizer: torch.optim.Optimizer, scheduler: TableScheduler, name: str) -> Any:
    """A step pre-hook: before each update, the scheduler must have been stepped since the last one,
    and the update must have a value (else :class:`NotStepped` / :class:`PastHorizon`)."""
    last: list[int] = []

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        k = scheduler.last_epoch
        if last and k <= last[0]:
            raise NotStepped(f"scheduler.step() was not called after update {last[0]}: optimizer {name!r} is about "
                             f"to make another update, and the schedule still stands at update {k} (call "
                             "scheduler.step() once after every optimizer.step())")
        Values.check(k)
        last[:] = [k]

    return optimizer.register_step_pre_hook(hook)


class Schedulers:
    """Steps the scheduler of every optimizer (several optimizers): ``step()`` once per update."""

    def __init__(self, schedulers: Mapping[str, TableScheduler]) -> None:
        self.schedulers = dict(schedulers)

    def step(self) -> None:
        for s in self.schedulers.values():
            s.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: s.state_dict() for name, s in self.schedulers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, s in self.schedulers.items():
            s.load_state_dict(state[name])


# ----------------------------------------------------------------------------- the setup


class Setup:
    """The port built over a model: ``optimizer`` (or ``optimizers``), ``scheduler``, ``clip_gradients()``.

    Attributes:
        optimizers: ``{name: torch optimizer}``, in the plan's order.
        schedulers: ``{name: TableScheduler}``.
        scheduler: The one scheduler to step (a :class:`Schedulers` with several optimizers).
        groups: ``{group: [parameter names]}``.
        excluded: Parameters of ``frozen: exclude`` groups (in no optimizer).
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], schedulers: dict[str, TableScheduler],
                 params: dict[str, list[torch.Tensor]], groups: dict[str, list[str]], excluded: list[str]) -> None:
        self.optimizers, self.schedulers, self.groups, self.excluded = optimizers, schedulers, groups, excluded
        self.scheduler: Any = next(iter(schedulers.values())) if len(schedulers) == 1 else Schedulers(schedulers)
        self._params = params

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if len(self.optimizers) != 1:
            raise AttributeError(f"this port has {len(self.optimizers)} optimizers: use .optimizers[name]")
        return next(iter(self.optimizers.values()))

    def clip_gradients(self) -> dict[str, float | None]:
        """Clip gradients as the plan says, before ``optimizer.step()``: ``{group or optimizer: norm before}``."""
        out: dict[str, float | None] = {}
        for o in OPTIMIZERS:
            if o["clip"] is not None:
                params = [p for g in GROUPS if OPTIMIZERS[g["optimizer"]] is o and self.joined(g)
                          for p in self._params[g["name"]]]
                out[o["name"]] = _clip(params, o["clip"])
        for g in GROUPS:
            if g["clip"] is not None and self.joined(g):
                out[g["name"]] = _clip(self._params[g["name"]], g["clip"])
        return out

    def joined(self, group: dict[str, Any]) -> bool:
        """Whether ``group`` (a ``GROUPS`` entry) is in its optimizer at the current update."""
        return self.schedulers[OPTIMIZERS[group["optimizer"]]["name"]].last_epoch >= group["start"]


def _clip(params: list[torch.Tensor], clip: dict[str, float]) -> float | None:
    if "max_norm" in clip:
        return float(torch.nn.utils.clip_grad_norm_(params, clip["max_norm"], clip.get("norm_type", 2.0)))
    torch.nn.utils.clip_grad_value_(params, clip["value"])
    return None


def _class(name: str) -> Callable[..., torch.optim.Optimizer]:
    """torch's class, or optbridge's (``exact.<Name>``: MindSpore's AdamWeightDecay; needs optbridge installed)."""
    where, _, cls_name = name.rpartition(".")
    if where == "exact":
        try:
            mod = importlib.import_module("optbridge_adapters.torch.optimizers")
        except ImportError as e:
            raise ImportError(f"this port uses optbridge's torch class of MindSpore's {cls_name} (torch has none): "
                              f"install optbridge in this environment ({e})") from e
        out: Callable[..., torch.optim.Optimizer] = getattr(mod, cls_name)
        return out
    cls: Callable[..., torch.optim.Optimizer] = getattr(torch.optim, cls_name)
    return cls


def build_on(params: dict[str, list[torch.Tensor]], *, check: bool = True) -> tuple[
        dict[str, torch.optim.Optimizer], dict[str, TableScheduler]]:
    """The optimizers and schedulers over ``{group: [tensors]}`` (every built group must be present).

    Args:
        params: The parameters of each group (from :func:`resolve`, or any tensors).
        check: Verify the tables' SHA-256 first.
    """
    if check:
        verify()
    optimizers: dict[str, torch.optim.Optimizer] = {}
    schedulers: dict[str, TableScheduler] = {}
    for oi, o in enumerate(OPTIMIZERS):
        mine = sorted((g for g in GROUPS if g["optimizer"] == oi), key=lambda g: g["index"])
        groups = [(g["start"], {"params": params[g["name"]], "name": g["name"], **_options(g["options"])})
                  for g in mine]
        opt = _class(o["class"])([d for start, d in groups if start == 0], **_options(o["options"]))
        slots = [j for j, s in enumerate(SLOTS) if GROUPS[s["group"]]["optimizer"] == oi]
        sched = TableScheduler(opt, slots, [(start, d) for start, d in groups if start > 0])
        guard(opt, sched, o["name"])
        optimizers[o["name"]], schedulers[o["name"]] = opt, sched
    return optimizers, schedulers


def _options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def build(model: torch.nn.Module, *, freeze_excluded: bool = True, check: bool = True) -> Setup:
    """The port over ``model``: groups resolved from the plan's selectors, optimizers, the scheduler.

    Args:
        model: The ``torch.nn.Module`` whose parameters the plan's groups select.
        freeze_excluded: Set ``requires_grad=False`` on ``frozen: exclude`` parameters.
        check: Verify the tables' SHA-256 first.

    Raises:
        GroupError: the model's parameters do not fit the groups.
    """
    recs = records(model)
    tensors: dict[str, torch.Tensor] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod._parameters.items():
            if p is not None:
                tensors.setdefault(f"{mname}.{pname}" if mname else pname, p)
    groups, excluded = resolve(recs)
    params = {g: [tensors[n] for n in names] for g, names in groups.items()}
    if freeze_excluded:
        for n in excluded:
            tensors[n].requires_grad_(False)
    optimizers, schedulers = build_on(params, check=check)
    return Setup(optimizers, schedulers, params, groups, excluded)


# ----------------------------------------------------------------------------- a training step


def train(model: torch.nn.Module, batches: Iterable[tuple[Any, Any]], loss_fn: Callable[[Any, Any], torch.Tensor],
          setup: Setup | None = None) -> Setup:
    """A minimal training loop: the order every update needs (clip, step, then the scheduler)."""
    setup = setup or build(model)
    for x, y in batches:
        for ps in setup._params.values():  # every group's, also those that join later (gradients accumulate)
            for p in ps:
                p.grad = None
        loss_fn(model(x), y).backward()
        setup.clip_gradients()
        for opt in setup.optimizers.values():
            opt.step()
        setup.scheduler.step()
    return setup


def selfcheck(steps: int | None = None) -> int:
    """Drive one probe parameter per group through ``steps`` updates and compare every written value with
    the tables (what the optimizer reads is what the reference evaluator computed). Returns the updates checked."""
    n = min(TOTAL if HORIZON is None else HORIZON, steps or 200)
    params = {g["name"]: [torch.zeros(1, dtype=torch.float64, requires_grad=True)] for g in GROUPS}
    optimizers, schedulers = build_on(params)
    want = [slot_values(j) for j in range(len(SLOTS))]
    for k in range(n):
        for name, opt in optimizers.items():
            for j in schedulers[name].values.slots:
                s = SLOTS[j]
                if GROUPS[s["group"]]["start"] > k:
                    continue  # not in the optimizer yet
                g = opt.param_groups[GROUPS[s["group"]]["index"]]
                got = g[s["key"]] if s["position"] is None else g[s["key"]][s["position"]]
                if float(got) != want[j][k]:
                    raise AssertionError(f"update {k}: {s['path']} of group {GROUPS[s['group']]['name']!r} is "
                                         f"{float(got)!r}, the table says {want[j][k]!r}")
            for p in params.values():
                p[0].grad = torch.ones_like(p[0])
            opt.step()
        for sched in schedulers.values():
            sched.step()
    return n


# </body>
# <main>
if __name__ == "__main__":
    print(__doc__)
    print(f"selfcheck: {selfcheck()} updates, every value equals the table")
# </main>
