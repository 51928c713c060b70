"""Template of the MegEngine module ``optbridge port --to megengine`` writes (never imported by optbridge).

:mod:`optbridge.port.render` writes the generated module from the ``<imports>``,
``<body>`` and ``<main>`` blocks here and in :mod:`.common`, with the port's
constants in between; the ``<template>`` block only makes this file valid Python.
"""

# <imports>
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

import megengine
import megengine.optimizer as mopt
from megengine.autodiff import GradManager

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


def records(model: megengine.module.Module) -> list[Record]:
    """``(name, shape, owning module type, identity)`` of every parameter of ``model``."""
    owners = {n: type(m).__name__ for n, m in model.named_modules()}
    return [(n, tuple(p.shape), owners.get(n.rsplit(".", 1)[0] if "." in n else "", ""), id(p))
            for n, p in model.named_parameters()]


# ----------------------------------------------------------------------------- the schedule driver


class TableScheduler:
    """Writes the port's values into an optimizer's groups: call ``step()`` once after every ``optimizer.step()``.

    The constructor writes update 0; ``step()`` writes the next update's values
    (``beta1``/``beta2`` into ``betas``), after adding the groups that join the optimizer
    at that update (``add_param_group``: ``start`` in ``GROUPS``; a resumed scheduler adds
    the ones its position has passed, and ``optimizer.load_state_dict`` the ones the saved
    state holds: either may be loaded first); MegEngine reads ``group[key]`` at every
    ``step()`` (lr as float32). Stepping to the end of the schedule writes nothing: the
    optimizer update that would use a value there raises :class:`PastHorizon`
    (``optimizer.step`` is wrapped, see :func:`guard`).
    """

    def __init__(self, optimizer: mopt.Optimizer, slots: list[int],
                 joins: Iterable[tuple[int, dict[str, Any]]] = ()) -> None:
        self.optimizer = optimizer
        self.values = Values(slots)
        self._targets = [(GROUPS[SLOTS[j]["group"]]["index"], SLOTS[j]["key"], SLOTS[j]["position"]) for j in slots]
        self._joins = list(joins)  # (update, group dict), in param_groups order
        self.last_epoch = 0
        self._write(0)
        if self._joins:  # MegEngine has no load pre-hook: wrap optimizer.load_state_dict
            load = optimizer.load_state_dict

            def load_state_dict(state: dict[str, Any]) -> None:
                """Add the joining groups the saved state holds (saved after they joined; only when they are
                exactly the next ones, else nothing changes and MegEngine refuses the state), then load it."""
                saved = list(state.get("param_groups", ()))
                for _ in range(saved_joins(len(optimizer.param_groups), saved,
                                           [len(d["params"]) for _, d in self._joins])):
                    optimizer.add_param_group(self._joins.pop(0)[1])
                load(state)

            optimizer.load_state_dict = load_state_dict

    def _write(self, t: int) -> None:
        if HORIZON is not None and t >= HORIZON:
            return  # no update uses it: the update that would raises
        while self._joins and self._joins[0][0] <= t:
            self.optimizer.add_param_group(self._joins.pop(0)[1])
        groups = self.optimizer.param_groups
        for (gi, key, pos), v in zip(self._targets, self.values.row(t)):
            if gi >= len(groups):
                continue  # joins later
            if pos is not None:
                b = list(groups[gi][key])
                b[pos] = v
                groups[gi][key] = tuple(b)
            else:
                groups[gi][key] = v

    def step(self) -> None:
        """Write the values of the next update (call after ``optimizer.step()``)."""
        self.last_epoch += 1
        self._write(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "fingerprint": FINGERPRINT}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("fingerprint") != FINGERPRINT:
            raise ValueError(f"state_dict was saved for another plan or port (fingerprint "
                             f"{state_dict.get('fingerprint')!r}, this port drives {FINGERPRINT!r})")
        self.last_epoch = int(state_dict["last_epoch"])
        self._write(self.last_epoch)


def guard(optimizer: mopt.Optimizer, scheduler: TableScheduler, name: str) -> None:
    """Wrap ``optimizer.step``: before each update the scheduler must have been stepped since the last one,
    and the update must have a value (else :class:`NotStepped` / :class:`PastHorizon`, before any tensor changes)."""
    update = optimizer.step
    last: list[int] = []

    def step(*args: Any, **kwargs: Any) -> Any:
        k = scheduler.last_epoch
        if last and k <= last[0]:
            raise NotStepped(f"scheduler.step() was not called after update {last[0]}: optimizer {name!r} is about "
                             f"to make another update, and the schedule still stands at update {k} (call "
                             "scheduler.step() once after every optimizer.step())")
        Values.check(k)
        last[:] = [k]
        return update(*args, **kwargs)

    optimizer.step = step  # the guarded update


class Schedulers:
    """Steps the scheduler of every optimizer (several optimizers): ``step()`` once per update."""

    def __init__(self, schedulers: dict[str, TableScheduler]) -> None:
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
    """The port built over a model: ``optimizer`` (or ``optimizers``), ``scheduler``, ``params``, ``clip_gradients()``.

    Attributes:
        optimizers: ``{name: MegEngine optimizer}``, in the plan's order.
        schedulers: ``{name: TableScheduler}``; ``scheduler`` is the one to step.
        params: The parameters to attach to a ``GradManager`` (``frozen: exclude`` ones left out).
        groups: ``{group: [parameter names]}``; ``excluded``: the left-out names.
    """

    def __init__(self, optimizers: dict[str, mopt.Optimizer], schedulers: dict[str, TableScheduler],
                 params: dict[str, list[Any]], groups: dict[str, list[str]], excluded: list[str]) -> None:
        self.optimizers, self.schedulers, self.groups, self.excluded = optimizers, schedulers, groups, excluded
        self.scheduler: Any = next(iter(schedulers.values())) if len(schedulers) == 1 else Schedulers(schedulers)
        self._params = params
        self.params = [p for g in GROUPS for p in params[g["name"]]]

    @property
    def optimizer(self) -> mopt.Optimizer:
        if len(self.optimizers) != 1:
            raise AttributeError(f"this port has {len(self.optimizers)} optimizers: use .optimizers[name]")
        return next(iter(self.optimizers.values()))

    def clip_gradients(self) -> dict[str, float | None]:
        """Clip gradients as the plan says, before ``optimizer.step()``: ``{group or optimizer: norm before}``."""
        out: dict[str, float | None] = {}
        for oi, o in enumerate(OPTIMIZERS):
            if o["clip"] is not None:
                out[o["name"]] = _clip([p for g in GROUPS if g["optimizer"] == oi and self.joined(g)
                                        for p in self._params[g["name"]]], o["clip"])
        for g in GROUPS:
            if g["clip"] is not None and self.joined(g):
                out[g["name"]] = _clip(self._params[g["name"]], g["clip"])
        return out

    def joined(self, group: dict[str, Any]) -> bool:
        """Whether ``group`` (a ``GROUPS`` entry) is in its optimizer at the current update."""
        return self.schedulers[OPTIMIZERS[group["optimizer"]]["name"]].last_epoch >= group["start"]


def _clip(params: list[Any], clip: dict[str, float]) -> float | None:
    if "max_norm" in clip:
        return float(mopt.clip_grad_norm(params, clip["max_norm"], ord=clip.get("norm_type", 2.0)))
    mopt.clip_grad_value(params, lower=-clip["value"], upper=clip["value"])
    return None


def _class(name: str) -> Callable[..., mopt.Optimizer]:
    """MegEngine's class, or optbridge's torch-exact one (``exact.<Name>``: needs optbridge installed)."""
    where, _, cls = name.rpartition(".")
    if where == "exact":
        try:
            mod = importlib.import_module("optbridge_adapters.megengine.optimizers")
        except ImportError as e:
            raise ImportError(f"this port uses optbridge's torch-exact MegEngine {cls} (MegEngine's own differs from "
                              f"torch's update): install optbridge in this environment ({e})") from e
        out: Callable[..., mopt.Optimizer] = getattr(mod, cls)
        return out
    return getattr(mopt, cls)  # MegEngine ships no types: Any


def build_on(params: dict[str, list[Any]], *, check: bool = True) -> tuple[dict[str, mopt.Optimizer],
                                                                         dict[str, TableScheduler]]:
    """The optimizers and schedulers over ``{group: [Parameters]}`` (every built group must be present).

    A group whose momentum is scheduled is built with momentum 1.0 (MegEngine's SGD
    creates a momentum buffer only for groups with a non-zero momentum at construction);
    the scheduler writes the real value before the first update.
    """
    if check:
        verify()
    optimizers: dict[str, mopt.Optimizer] = {}
    schedulers: dict[str, TableScheduler] = {}
    driven = {(s["group"], s["key"]) for s in SLOTS}
    for oi, o in enumerate(OPTIMIZERS):
        groups = []  # (the update it joins at, group dict), in param_groups order
        for gi, g in sorted(enumerate(GROUPS), key=lambda ig: ig[1]["index"]):
            if g["optimizer"] != oi:
                continue
            opts = {k: tuple(v) if isinstance(v, list) else v for k, v in g["options"].items()}
            if (gi, "momentum") in driven:
                opts["momentum"] = 1.0
            groups.append((g["start"], {"params": params[g["name"]], "name": g["name"], **opts}))
        first = [d for start, d in groups if start == 0]
        # the constructor's defaults from the first group (MegEngine checks them, e.g. nesterov needs momentum)
        ctor = {k: v for k, v in first[0].items() if k not in ("params", "name")}
        ctor.update({k: tuple(v) if isinstance(v, list) else v for k, v in o["options"].items()})
        opt = _class(o["class"])(first, **ctor)
        slots = [j for j, s in enumerate(SLOTS) if GROUPS[s["group"]]["optimizer"] == oi]
        sched = TableScheduler(opt, slots, [(start, d) for start, d in groups if start > 0])
        guard(opt, sched, o["name"])
        optimizers[o["name"]], schedulers[o["name"]] = opt, sched
    return optimizers, schedulers


def build(model: megengine.module.Module, *, check: bool = True) -> Setup:
    """The port over ``model``: groups resolved from the plan's selectors, optimizers, the scheduler.

    Raises:
        GroupError: the model's parameters do not fit the groups.
    """
    tensors = dict(model.named_parameters())
    groups, excluded = resolve(records(model))
    params = {g: [tensors[n] for n in names] for g, names in groups.items()}
    optimizers, schedulers = build_on(params, check=check)
    return Setup(optimizers, schedulers, params, groups, excluded)


# ----------------------------------------------------------------------------- a training step


def train(model: megengine.module.Module, batches: Iterable[tuple[Any, Any]], loss_fn: Callable[[Any, Any], Any],
          setup: Setup | None = None) -> Setup:
    """A minimal training loop: the order every update needs (clip, step, then the scheduler)."""
    setup = setup or build(model)
    gm = GradManager().attach(setup.params)
    for x, y in batches:
        for p in setup.params:  # every group's, also those that join later (gradients accumulate)
            p.grad = None
        with gm:
            gm.backward(loss_fn(model(x), y))
        setup.clip_gradients()
        for opt in setup.optimizers.values():
            opt.step()
        setup.scheduler.step()
    return setup


def selfcheck(steps: int | None = None) -> int:
    """Drive one probe parameter per group through ``steps`` updates and compare every value the optimizer
    reads with the tables (what the reference evaluator computed). Returns the updates checked."""
    n = min(TOTAL if HORIZON is None else HORIZON, steps or 200)
    params = {g["name"]: [megengine.Parameter([0.0])] for g in GROUPS}
    optimizers, schedulers = build_on(params)
    gm = GradManager().attach([p for ps in params.values() for p in ps])
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
        with gm:
            gm.backward(sum(p[0].sum() for p in params.values()))
        for opt in optimizers.values():
            opt.step()
            opt.clear_grad()
        for sched in schedulers.values():
            sched.step()
    return n


# </body>
# <main>
if __name__ == "__main__":
    print(__doc__)
    print(f"selfcheck: {selfcheck()} updates, every value equals the table")
# </main>
