"""The MindSpore runner of the lr range test (:func:`optbridge.lrfind.lr_find` with an ``nn.Cell``).

PyNative mode (MindSpore's default). Gradients come from
``mindspore.value_and_grad`` over the optimizer's parameters, with
``loss_fn(model, batch) / accumulate`` as the differentiated output; accumulated
passes add their gradients before the update.

* **A live optimizer** is used as it is, its lr Parameters written with
  ``ops.assign`` before every update (``set_data`` is ignored by the compiled
  optimizer in PyNative, semantics.md §2.3): ``mindspore.experimental.optim``
  optimizers (each group's ``lr`` Parameter) and ``mindspore.nn`` optimizers with
  fixed lrs (the ``learning_rate`` Parameter, or one per group). An nn optimizer
  whose lr is a list or a ``LearningRateSchedule`` has no lr to overwrite: pass
  ``optbridge.from_mindspore(optimizer)`` (a plan) instead. The values are the
  reference evaluator's ramp, stored as float32 as MindSpore stores every lr.
* **A plan** is built with ``optbridge.to_mindspore(plan, model, total_steps=steps)``
  (form ``auto``), called and stepped as a training loop does.

The model's Parameters (BatchNorm moving statistics included), the optimizer's
Parameters (moments, ``global_step``, lrs) and the cells' train flags are saved as
arrays and written back in place with ``ops.assign``, bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

import optbridge
from optbridge import lrfind
from optbridge.errors import ConfigError, UnsupportedError
from optbridge.plan import Plan
from optbridge.report import Fidelity

__all__ = ["open_session", "MindSporeSession", "CellState", "example"]

BACKEND = "mindspore"


class CellState:
    """Bit-exact copies of Parameters (written back in place) and of the cells' train flags."""

    def __init__(self, params: Sequence[Any], cells: Sequence[Any] = ()) -> None:
        unique = {id(p): p for p in params}.values()  # each Parameter once, in first-seen order
        self._saved = [(p, p.asnumpy().copy()) for p in unique]
        self._modes = [(c, c.training) for c in cells]

    def restore(self) -> None:
        for p, arr in self._saved:
            ops.assign(p, Tensor(arr))
        for c, mode in self._modes:
            c.set_train(mode)  # per cell: set_train recurses, so parents first, then each child's own flag


def _cells(model: Any) -> list[Any]:
    return [c for _, c in model.cells_and_names()]


def _is_experimental(opt: Any) -> bool:
    return type(opt).__module__.startswith("mindspore.experimental")


def _loss_value(loss: Any) -> float:
    if not isinstance(loss, Tensor) or loss.size != 1:
        raise ConfigError("loss_fn", "must return a scalar loss Tensor",
                          type(loss).__name__ if not isinstance(loss, Tensor) else tuple(loss.shape))
    return float(loss.asnumpy().reshape(()))


class MindSporeSession:
    """One range test on MindSpore (see the module docstring)."""

    backend = BACKEND

    def __init__(self, model: Any, loss_fn: Callable[[Any, Any], Any], ramp: lrfind.Ramp,
                 optimizers: Sequence[Any], read: Callable[[], list[float]], advance: Callable[[], None],
                 fidelity: tuple[Fidelity, ...], saved: Sequence[CellState]) -> None:
        self.model, self.loss_fn, self.ramp, self.fidelity = model, loss_fn, ramp, fidelity
        self.groups = tuple(g.name for g in ramp.plan.groups if g.frozen != "exclude")
        self._optimizers, self._read, self._advance, self._saved = list(optimizers), read, advance, saved
        self._weights = [tuple(o.parameters) for o in self._optimizers]
        flat = tuple(p for w in self._weights for p in w)
        self._divisor = 1
        self._grad = ms.value_and_grad(self._forward, None, flat, has_aux=True)
        self._batch: Any = None
        self._acc: list[Any] | None = None
        model.set_train(True)

    def _forward(self) -> tuple[Any, Any]:
        loss = self.loss_fn(self.model, self._batch)
        return loss / self._divisor, loss

    def lrs(self) -> list[float]:
        return self._read()

    def zero_grad(self) -> None:
        self._acc = None

    def backward(self, batch: Any, divisor: int) -> float:
        self._batch, self._divisor = batch, divisor
        (_, loss), grads = self._grad()
        self._batch = None
        value = _loss_value(loss)
        self._acc = list(grads) if self._acc is None else [a + g for a, g in zip(self._acc, grads)]
        return value

    def step(self) -> None:
        assert self._acc is not None
        i = 0
        for o, w in zip(self._optimizers, self._weights):
            o(tuple(self._acc[i:i + len(w)]))
            i += len(w)
        self._acc = None
        self._advance()

    def restore(self) -> None:
        for s in self._saved:
            s.restore()


# --------------------------------------------------------------------------- live optimizers

def _lr_parameters(opt: Any, plan: Plan) -> list[Any]:
    """The lr Parameter of each plan group of a live optimizer (``from_mindspore``'s groups, in order)."""
    if _is_experimental(opt):
        return [g["lr"] for g in opt.param_groups]
    if getattr(opt, "dynamic_lr", False):
        raise UnsupportedError("optimizer.learning_rate", BACKEND,
                               "an nn optimizer whose learning_rate is a list or a LearningRateSchedule has no lr to "
                               "overwrite per update; pass optbridge.from_mindspore(optimizer) (a plan) instead")
    params = list(opt._parameters)  # noqa: SLF001 - the order nn optimizers keep their lrs in
    lrs = list(opt.learning_rate) if opt.is_group_lr else [opt.learning_rate] * len(params)
    by_name = dict(zip((p.name for p in params), lrs))
    out = []
    for g in plan.groups:
        pats = [re.compile(r) for s in g.select for r in s.regex]
        name = next(n for n in by_name if any(p.fullmatch(n) for p in pats))
        out.append(by_name[name])
    return out


class _Assigner:
    """Writes the reference's ramp values (float32) into lr Parameters, one update ahead."""

    def __init__(self, params: list[Any], values: Iterator[np.ndarray]) -> None:
        self._params, self._values = params, values
        self()

    def __call__(self) -> None:
        col = next(self._values, None)
        if col is None:
            return
        for p, v in zip(self._params, col.tolist()):
            ops.assign(p, Tensor(np.float32(v)))


def _live(model: Any, opt: Any, loss_fn: Callable[[Any, Any], Any], test: lrfind.RangeTest,
          saved_model: CellState) -> MindSporeSession:
    plan = optbridge.from_mindspore(opt)
    ramp = lrfind.ramp_plan(plan, test)
    lr_params = _lr_parameters(opt, ramp.plan)
    extra = [p for _, p in opt.parameters_and_names()] + lr_params
    saved_opt = CellState(extra)
    writer = _Assigner(lr_params, lrfind.ramp_values(ramp.plan, test.steps))
    kind = ("mindspore.experimental.optim." if _is_experimental(opt) else "mindspore.nn.") + type(opt).__name__
    fid = tuple(Fidelity(BACKEND, g.name, "lr", "table", f"the reference evaluator's ramp assigned (float32, "
                         f"ops.assign) to the {kind} lr Parameter before each update") for g in ramp.plan.groups)
    return MindSporeSession(model, loss_fn, ramp, [opt], lambda: [float(p.asnumpy()) for p in lr_params], writer,
                            fid, [saved_model, saved_opt])


# --------------------------------------------------------------------------- plans

def _plan(model: Any, plan: Plan, loss_fn: Callable[[Any, Any], Any], test: lrfind.RangeTest,
          saved_model: CellState) -> MindSporeSession:
    ramp = lrfind.ramp_plan(plan, test)
    setup = optbridge.to_mindspore(ramp.plan, model, total_steps=test.steps)
    trained = [g.name for g in ramp.plan.groups if g.frozen != "exclude"]
    k = [0]

    def read() -> list[float]:
        out = []
        for name in trained:
            lr = setup.lr[name]
            if isinstance(lr, np.ndarray):  # a float32 list, gathered at global_step
                out.append(float(lr[k[0]]))
            elif isinstance(lr, nn.Cell):  # a LearningRateSchedule, called at global_step
                out.append(float(lr(Tensor(np.array([k[0]], np.int32))).asnumpy().reshape(())))
            else:  # the group's lr Parameter (experimental form)
                out.append(float(np.asarray(lr.asnumpy()).reshape(())))
        return out

    def advance() -> None:
        setup.step()
        k[0] += 1

    fid = tuple(f for f in setup.fidelity if f.hyper == "lr")
    return MindSporeSession(model, loss_fn, ramp, setup.optimizers, read, advance, fid, [saved_model])


def open_session(model: Any, optimizer_or_plan: Any, loss_fn: Callable[[Any, Any], Any],
                 test: lrfind.RangeTest) -> MindSporeSession:
    """The MindSpore session of a range test over ``model`` (see the module docstring)."""
    if not isinstance(model, nn.Cell):
        raise ConfigError("model", "must be a mindspore.nn.Cell for the mindspore backend", type(model).__name__)
    saved_model = CellState([p for _, p in model.parameters_and_names()], _cells(model))
    if isinstance(optimizer_or_plan, Plan):
        return _plan(model, optimizer_or_plan, loss_fn, test, saved_model)
    if isinstance(optimizer_or_plan, nn.Optimizer) or _is_experimental(optimizer_or_plan):
        return _live(model, optimizer_or_plan, loss_fn, test, saved_model)
    raise ConfigError("optimizer_or_plan", "must be a mindspore.nn / mindspore.experimental.optim optimizer or an "
                      "optbridge Plan", type(optimizer_or_plan).__name__)


def example(seed: int = 0) -> tuple[Any, Any, Callable[[Any, Any], Any], list[Any]]:
    """The bundled example (:func:`optbridge.lrfind_example.arrays`): the torch example's MLP, SGD and MSE."""
    from optbridge.lrfind_example import arrays

    a = arrays(seed)
    model = nn.SequentialCell(nn.Dense(a.w1.shape[1], a.w1.shape[0]), nn.Tanh(), nn.Dense(a.w2.shape[1], 1))
    for p, v in zip(model.trainable_params(), (a.w1, a.b1, a.w2, a.b2)):
        ops.assign(p, Tensor(v))
    opt = nn.SGD(model.trainable_params(), learning_rate=a.lr)
    batches = [(Tensor(x), Tensor(y)) for x, y in zip(a.x, a.y)]

    def loss_fn(m: Any, batch: Any) -> Any:
        x, y = batch
        return ops.mean((m(x) - y) ** 2)

    return model, opt, loss_fn, batches
