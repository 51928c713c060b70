"""Template of the MindSpore module ``optbridge port --to mindspore`` writes (never imported by optbridge).

:mod:`optbridge.port.render` writes the generated module from the ``<imports>``,
``<body>`` and ``<main>`` blocks here and in :mod:`.common`, with the port's
constants in between; the ``<template>`` block only makes this file valid Python.
"""

# <imports>
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.experimental import optim as mopt
from mindspore.train import Callback, Model

from optbridge.port.templates.common import (
    SLOTS,
    TOTAL,
    WHY,
    Record,
    Values,
    column,
    resolve,
    slot_values,
    verify,
)

# </imports>
# <template>
FORM = "cell"
HORIZON: int | None = None
OPTIMIZERS: list[dict[str, Any]] = []
GROUPS: list[dict[str, Any]] = []
HELD: list[dict[str, Any]] = []
# </template>
# <body>
# ----------------------------------------------------------------------------- the net's parameters


def records(net: nn.Cell) -> list[Record]:
    """``(name, shape, owning Cell type, identity)`` of every trainable parameter of ``net``."""
    owner: dict[int, str] = {}
    for _, cell in net.cells_and_names():
        for _, p in cell.parameters_and_names(expand=False):
            owner.setdefault(id(p), type(cell).__name__)
    return [(n, tuple(p.shape), owner.get(id(p), type(net).__name__), id(p))
            for n, p in net.parameters_and_names() if p.requires_grad]


# ----------------------------------------------------------------------------- where each group's lr comes from
# list: a float32 list per group (the reference's value rounded once, as MindSpore stores a list);
# cell: a LearningRateSchedule over the float64 table: float32(scale * column[k]), the same values;
# experimental: a float32 value the driver writes (Setup.step) before each update.

_I32 = ms.int32


def lr_slot(g: int) -> int | None:
    """The slot driving the lr of group ``g``, or None (held)."""
    return next((j for j, s in enumerate(SLOTS) if s["group"] == g and s["hyper"] == "lr"), None)


def held_lr(g: int) -> float:
    return float(next(h["value"] for h in HELD if h["group"] == g))


def lr_list(g: int) -> np.ndarray:
    """Group ``g``'s lr over updates ``0 .. TOTAL - 1`` as MindSpore holds a list: float32."""
    j = lr_slot(g)
    return np.full(TOTAL, held_lr(g), np.float32) if j is None else slot_values(j).astype(np.float32)


class TableLR(nn.learning_rate_schedule.LearningRateSchedule):
    """``float32(scale * column[k])`` at ``k = global_step`` (clamped to the table with a hold): the
    reference's value, one float64 product and one rounding, as the list form stores it."""

    def __init__(self, table: Parameter, scale: float) -> None:
        super().__init__()
        self.table = table
        self.scale = Tensor(scale, ms.float64)

    def construct(self, global_step: Any) -> Any:
        k = ops.reshape(ops.cast(global_step, _I32), (-1,))
        if HORIZON is None:
            k = ops.minimum(k, TOTAL - 1)
        return ops.cast(ops.gather(self.table, k, 0)[0] * self.scale, ms.float32)


class ConstantLR(nn.learning_rate_schedule.LearningRateSchedule):
    """A held lr as a dynamic one (never MindSpore's static ``lr + 1.0 - 1.0`` next to a dynamic lr)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = Tensor(np.float32(value), ms.float32)

    def construct(self, global_step: Any) -> Any:
        return ops.zeros_like(ops.cast(global_step, ms.float32)).reshape(()) + self.value


_TABLES: dict[int, Parameter] = {}


def lr_cell(g: int) -> nn.Cell:
    """Group ``g``'s lr as a LearningRateSchedule (groups that share a column share its Parameter)."""
    j = lr_slot(g)
    if j is None:
        return ConstantLR(held_lr(g))
    c = SLOTS[j]["column"]
    if c not in _TABLES:
        _TABLES[c] = Parameter(Tensor(np.ascontiguousarray(column(c))), name=f"port_table_{c}",
                               requires_grad=False)
    return TableLR(_TABLES[c], SLOTS[j]["scale"])


# ----------------------------------------------------------------------------- the end of the schedule, in the graph


def _check_horizon(k: Any) -> None:
    """Raise the core's PastHorizon message (as ValueError: the graph raises builtins only) at update ``k``."""
    if HORIZON is not None:
        if k >= HORIZON:
            raise ValueError(f"update {k[0]} is past the end of the schedule: {WHY}")


def nn_class(base: type) -> type:
    """``base`` (a MindSpore nn optimizer, the lr a list or a cell per group) with the end of the schedule
    checked before each update, in PyNative and in the graph (no raw Gather error past a list's end); with a
    hold, ``global_step`` stays on the last row."""

    class Ported(base):  # a class made at run time
        def construct(self, gradients: Any) -> Any:
            _check_horizon(self.global_step)
            if HORIZON is None:
                if self.global_step >= TOTAL:
                    ops.assign(self.global_step, Tensor([TOTAL - 1], _I32))
            return super().construct(gradients)

    Ported.__name__ = Ported.__qualname__ = f"Ported{base.__name__}"
    return Ported


def torchlike_class(base: type) -> type:
    """``base`` (a torch-like optimizer: MindSpore's experimental classes, optbridge's exact ones) counting its
    updates in ``port_step``; before each update it checks the end of the schedule and writes every group's lr:
    from its list or cell (list and cell forms), or it checks that the driver wrote this update's values
    (experimental form: ``port_driven`` must equal ``port_step``, else ``setup.step()`` was not called)."""

    class Ported(base):  # a class made at run time
        def port_init(self, lrs: list[Parameter]) -> None:
            self.port_lrs = lrs
            self.port_step = Parameter(Tensor([0], _I32), name="port_step", requires_grad=False)
            self.port_driven = Parameter(Tensor([0], _I32), name="port_driven", requires_grad=False)
            if FORM == "list":
                self.port_lists = ms.ParameterTuple([Parameter(Tensor(lr_list(g)), name=f"port_lr_list_{g}",
                                                               requires_grad=False) for g in self.port_groups])
            elif FORM == "cell":
                self.port_cells = nn.CellList([lr_cell(g) for g in self.port_groups])

        def construct(self, gradients: Any) -> Any:
            k = self.port_step
            _check_horizon(k)
            if FORM == "experimental":
                if self.port_driven < k:
                    raise ValueError(f"setup.step() was not called after update {k[0] - 1}: the optimizer is about "
                                     f"to make update {k[0]}, and the schedule still stands at update "
                                     f"{self.port_driven[0]} (call setup.step() once after every update, or train "
                                     "with setup.callback())")
                if self.port_driven > k:
                    raise ValueError(f"setup.step() was called more often than the optimizer updated: the optimizer "
                                     f"is about to make update {k[0]}, and the schedule stands at update "
                                     f"{self.port_driven[0]} (step once per applied update; with loss scaling, "
                                     "not after a skipped one: docs/amp.md)")
            elif FORM == "list":
                i = ops.minimum(k, TOTAL - 1) if HORIZON is None else k
                for lr, values in zip(self.port_lrs, self.port_lists):
                    ops.assign(lr, ops.cast(ops.gather(values, i, 0)[0], lr.dtype))
            else:
                for lr, cell in zip(self.port_lrs, self.port_cells):
                    ops.assign(lr, ops.cast(cell(k), lr.dtype))
            out = super().construct(gradients)
            ops.assign_add(self.port_step, Tensor([1], _I32))
            return out

    Ported.__name__ = Ported.__qualname__ = f"Ported{base.__name__}"
    return Ported


def _base(name: str) -> type:
    where, _, cls = name.rpartition(".")
    if where == "exact":
        try:
            mod = importlib.import_module("optbridge_adapters.mindspore.optimizers")
        except ImportError as e:
            raise ImportError(f"this port uses optbridge's torch-exact MindSpore {cls} (MindSpore's own differs from "
                              f"torch's update): install optbridge in this environment ({e})") from e
        out: type = getattr(mod, cls)
        return out
    return getattr(nn if where == "nn" else mopt, cls)  # MindSpore ships no types: Any


class _Assign(nn.Cell):
    """One compiled call that writes every lr Parameter and the driver's counter (``ops.assign``:
    ``Parameter.set_data`` is ignored by compiled optimizers in PyNative)."""

    def __init__(self, targets: list[Parameter], counter: Parameter) -> None:
        super().__init__()
        self.targets = targets
        self.counter = counter

    @ms.jit
    def construct(self, values: Any, k: Any) -> Any:
        for i, p in enumerate(self.targets):
            ops.assign(p, ops.cast(values[i], p.dtype))
        ops.assign(self.counter, k)
        return k


class Driver:
    """The experimental form's schedule driver: ``step()`` after every update writes the next update's lrs.

    The constructor writes update 0. Stepping to the end of the schedule writes nothing:
    the optimizer update that would use a value there raises. An update made without
    ``step()`` since the last one raises (the optimizer compares ``port_driven`` with
    its own ``port_step``).
    """

    def __init__(self, optimizer: Any, groups: list[int]) -> None:
        self.optimizer = optimizer
        self.values = Values([j for j, s in enumerate(SLOTS) if s["group"] in groups])
        index = {g: i for i, g in enumerate(groups)}
        self._targets = [optimizer.port_lrs[index[SLOTS[j]["group"]]] for j in self.values.slots]
        self._assign = _Assign(self._targets, optimizer.port_driven)
        self.position = 0
        self._write(0)

    def _write(self, t: int) -> None:
        if HORIZON is not None and t >= HORIZON:
            return  # no update uses it: the update that would raises
        row = self.values.row(t) if self._targets else [0.0]
        self._assign(Tensor(np.asarray(row, np.float64)), Tensor([t], _I32))

    def step(self) -> None:
        self.position += 1
        self._write(self.position)


# ----------------------------------------------------------------------------- the setup


class Setup:
    """The port built over a net.

    Attributes:
        optimizers: ``{name: optimizer}`` (``optimizer`` when there is one).
        groups: ``{group: [parameter names]}``; ``excluded``: ``frozen: exclude`` parameters.
        form: ``list``, ``cell`` or ``experimental``.

    ``step()`` after every update (it drives the lrs in the experimental form and does
    nothing in the list and cell forms, whose lrs follow the optimizer's own counter);
    ``callback()`` does it for ``Model.train``; ``clip_gradients(grads)`` clips as the plan says.
    """

    def __init__(self, optimizers: dict[str, Any], drivers: list[Driver], params: dict[str, list[Parameter]],
                 groups: dict[str, list[str]], excluded: list[str]) -> None:
        self.optimizers, self.drivers, self.groups, self.excluded = optimizers, drivers, groups, excluded
        self.form = FORM
        self._params = params

    @property
    def optimizer(self) -> Any:
        if len(self.optimizers) != 1:
            raise AttributeError(f"this port has {len(self.optimizers)} optimizers: use .optimizers[name]")
        return next(iter(self.optimizers.values()))

    def step(self) -> None:
        """Call once after every update (experimental form: writes the next update's lrs)."""
        for d in self.drivers:
            d.step()

    def model(self, net: nn.Cell, loss_fn: nn.Cell) -> Model:
        """A ``mindspore.train.Model`` training ``net`` with this port's optimizer (one optimizer): over a
        ``TrainOneStepCell``, which takes the torch-like optimizers too (``Model(net, loss, optimizer)`` accepts
        only nn optimizers). Train with ``callbacks=[setup.callback()]`` and ``dataset_sink_mode=False``."""
        return Model(nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), self.optimizer))

    def callback(self) -> Callback:
        """A ``mindspore.train.Callback`` that calls :meth:`step` after every training step (``Model.train`` with
        ``dataset_sink_mode=False``: with sinking, callbacks run once per sink and the optimizer raises)."""
        return PortCallback(self)

    def clip_gradients(self, gradients: Any) -> tuple[Any, ...]:
        """``gradients`` (in ``optimizer.parameters`` order) clipped as the plan says (torch's formulas:
        ``ops.clip_by_norm`` scales by ``max_norm / (norm + 1e-6)`` when below 1, ``ops.clip_by_value``)."""
        grads = list(gradients)
        for oi, o in enumerate(OPTIMIZERS):
            opt = self.optimizers[o["name"]]
            where = {id(p): i for i, p in enumerate(opt.parameters)}
            late = any(g["start"] for g in GROUPS if g["optimizer"] == oi)
            k = int(opt.port_step.asnumpy()[0]) if late else 0  # a device read only where a group joins late
            mine = [g for g in GROUPS if g["optimizer"] == oi and g["start"] <= k]  # joined groups (torch's view)
            spans = [(o["clip"], mine)] if o["clip"] else []
            spans += [(g["clip"], [g]) for g in mine if g["clip"]]
            for clip, gs in spans:
                idx = [where[id(p)] for g in gs for p in self._params[g["name"]]]
                part = [grads[i] for i in idx]
                if "max_norm" in clip:
                    part = list(ops.clip_by_norm(part, clip["max_norm"], clip.get("norm_type", 2.0)))
                else:
                    part = [ops.clip_by_value(x, -clip["value"], clip["value"]) for x in part]
                for i, x in zip(idx, part):
                    grads[i] = x
        return tuple(grads)


class PortCallback(Callback):
    """Steps the port after every training step of ``Model.train`` (``dataset_sink_mode=False``)."""

    def __init__(self, setup: Setup) -> None:
        super().__init__()
        self.setup = setup

    def on_train_step_end(self, run_context: Any) -> None:
        self.setup.step()


#: nn optimizers spell some of torch's options differently.
_NN_KEYWORDS = {"nn.Adadelta": {"eps": "epsilon"}}


def _group_dict(g: int, params: list[Parameter], choice_api: str) -> dict[str, Any]:
    opts = {k: tuple(v) if isinstance(v, list) else v for k, v in GROUPS[g]["options"].items()}
    if choice_api == "nn":
        lr: Any = Tensor(lr_list(g)) if FORM == "list" else lr_cell(g)
        return {"params": params, "lr": lr, "weight_decay": float(GROUPS[g]["options"].get("weight_decay", 0.0))}
    if GROUPS[g]["start"]:  # optbridge's class: the group is left untouched until its update
        opts["start_step"] = GROUPS[g]["start"]
    return {"params": params, **opts}


def build_on(params: dict[str, list[Parameter]], *, order: list[Parameter] | None = None, check: bool = True
             ) -> tuple[dict[str, Any], list[Driver]]:
    """The optimizers (and drivers) over ``{group: [Parameters]}``.

    Args:
        params: The parameters of each group.
        order: The order of ``optimizer.parameters`` for nn optimizers (the net's).
        check: Verify the tables' SHA-256 first.
    """
    if check:
        verify()
    optimizers: dict[str, Any] = {}
    drivers: list[Driver] = []
    for oi, o in enumerate(OPTIMIZERS):
        mine = [gi for gi, g in enumerate(GROUPS) if g["optimizer"] == oi]
        api = o["api"]
        groups = [_group_dict(gi, params[GROUPS[gi]["name"]], api) for gi in mine]
        ctor = {k: tuple(v) if isinstance(v, list) else v for k, v in o["options"].items()}
        base = _base(o["class"])
        if api == "nn":
            if TOTAL == 0:  # nothing scheduled: static lrs only (no static lr next to a dynamic one)
                for d, gi in zip(groups, mine):
                    d["lr"] = held_lr(gi)
            mine_params = {id(p) for d in groups for p in d["params"]}
            groups.append({"order_params": [p for p in (order or []) if id(p) in mine_params]
                           or [p for d in groups for p in d["params"]]})
            for old, new in _NN_KEYWORDS.get(o["class"], {}).items():
                if old in ctor:
                    ctor[new] = ctor.pop(old)
            if "betas" in ctor:
                ctor["beta1"], ctor["beta2"] = ctor.pop("betas")
            opt = nn_class(base)(groups, learning_rate=groups[0]["lr"], **ctor)
        else:
            kwargs: dict[str, Any] = {"scheduled": ("lr",)} if api == "exact" else {}
            opt = torchlike_class(base)(groups, lr=groups[0]["lr"], **kwargs)
            opt.port_groups = mine
            lrs = ([opt.hyper(i, "lr") for i in range(len(mine))] if api == "exact" else list(opt.lrs))
            opt.port_init(lrs)
            if FORM == "experimental":
                drivers.append(Driver(opt, mine))
        optimizers[o["name"]] = opt
    return optimizers, drivers


def build(net: nn.Cell, *, check: bool = True) -> Setup:
    """The port over ``net``: groups resolved from the plan's selectors (trainable parameters), optimizers.

    Raises:
        GroupError: the net's parameters do not fit the groups.
    """
    named = {n: p for n, p in net.parameters_and_names() if p.requires_grad}
    groups, excluded = resolve(records(net))
    params = {g: [named[n] for n in names] for g, names in groups.items()}
    order = [p for n, p in named.items() if n not in excluded]
    optimizers, drivers = build_on(params, order=order, check=check)
    return Setup(optimizers, drivers, params, groups, excluded)


# ----------------------------------------------------------------------------- a training step


def train_step(net: nn.Cell, loss_fn: Callable[[Any, Any], Any], setup: Setup) -> Callable[[Any, Any], Any]:
    """A minimal training step (one optimizer): ``step = train_step(net, loss_fn, setup); loss = step(x, y)``."""
    opt = setup.optimizer

    def forward(x: Any, y: Any) -> Any:
        return loss_fn(net(x), y)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    def step(x: Any, y: Any) -> Any:
        loss, grads = grad_fn(x, y)
        opt(setup.clip_gradients(grads))
        setup.step()
        return loss

    return step


def selfcheck(steps: int | None = None) -> int:
    """Build the optimizers over one probe parameter per group, make ``steps`` updates, and compare each
    group's lr source with the tables rounded to float32. Returns the updates checked."""
    n = min(TOTAL if HORIZON is None else HORIZON, steps or 20)
    params = {g["name"]: [Parameter(Tensor(np.zeros(1, np.float32)), name=f"probe_{i}")]
              for i, g in enumerate(GROUPS)}
    optimizers, drivers = build_on(params)
    for k in range(n):
        for gi, g in enumerate(GROUPS):
            j = lr_slot(gi)
            want = np.float32(held_lr(gi)) if j is None else np.float32(slot_values(j)[k])
            got = np.float32(lr_cell(gi)(Tensor([k], _I32)).asnumpy()) if FORM == "cell" else lr_list(gi)[k]
            if got != want:
                raise AssertionError(f"update {k}: the lr of group {g['name']!r} is {got!r}, the table says {want!r}")
        for opt in optimizers.values():
            opt(tuple(ops.ones_like(p) for p in opt.parameters))
        for d in drivers:
            d.step()
    return n


# </body>
# <main>
if __name__ == "__main__":
    print(__doc__)
    print(f"selfcheck: {selfcheck()} updates, every lr equals the table")
# </main>
