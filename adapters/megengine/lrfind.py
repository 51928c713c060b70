"""The MegEngine runner of the lr range test (:func:`optbridge.lrfind.lr_find` with a MegEngine ``Module``).

Runs in-process, so call it from MegEngine's own interpreter (``.venv-mge``, Python
3.10), where a MegEngine model lives. Gradients come from a ``GradManager``
attached to the optimizer's parameters for the test; accumulated passes add up in
``param.grad`` (MegEngine accumulates until ``clear_grad``).

* **A live optimizer** is used as it is: ``optbridge.from_megengine`` reads its
  groups, and the reference evaluator's ramp is written into ``group["lr"]`` before
  every update (MegEngine converts it to float32 at each ``step()``). Its state
  tensors are saved as arrays and put back afterwards, its group dicts updated in place.
* **A plan** is built with ``optbridge.to_megengine(plan, model)`` (its
  ``PlanScheduler`` writes the same reference values) and stepped as a training loop does.

The model's parameters, buffers (BatchNorm running statistics), gradients and
train flags are restored bit for bit (``Tensor._reset`` keeps each tensor object).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import megengine as mge
import megengine.module as M
import numpy as np
from megengine.autodiff import GradManager
from megengine.optimizer import Optimizer

import optbridge
from optbridge import lrfind
from optbridge.errors import ConfigError
from optbridge.plan import Plan
from optbridge.report import Fidelity

__all__ = ["open_session", "MegEngineSession", "ModuleState", "OptimizerState", "example"]

BACKEND = "megengine"


def _copy(t: Any) -> Any:
    return None if t is None else t.numpy().copy()


class ModuleState:
    """Bit-exact copies of a module's parameters, buffers, gradients and train flags (restored in place)."""

    def __init__(self, model: Any) -> None:
        # each tensor once (a shared one is listed under every name), in first-seen order
        tensors = list({id(t): t for _, t in list(model.named_parameters()) + list(model.named_buffers())}.values())
        self._tensors = [(t, t.numpy().copy()) for t in tensors]
        self._grads = [(p, _copy(p.grad)) for p in model.parameters()]
        self._modes = [(m, m.training) for m in model.modules()]

    def restore(self) -> None:
        for t, arr in self._tensors:
            t._reset(mge.Tensor(arr))  # noqa: SLF001 - in place: the optimizer keeps the same tensor
        for p, g in self._grads:
            p.grad = None if g is None else mge.Tensor(g)
        for m, mode in self._modes:
            m.training = mode


class OptimizerState:
    """Bit-exact copies of an optimizer's state and group options.

    State values are tensors (MegEngine's optimizers) or Python numbers (the step
    counters of optbridge's torch-exact classes); states the range test creates
    (the torch-exact classes create theirs at the first update) are removed again.
    """

    def __init__(self, optimizer: Any) -> None:
        self._opt = optimizer
        self._state = {p: {k: (v.numpy().copy() if isinstance(v, mge.Tensor) else copy.deepcopy(v))
                           for k, v in s.items()} for p, s in optimizer._state.items()}  # noqa: SLF001
        self._groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]

    def restore(self) -> None:
        live = self._opt._state  # noqa: SLF001
        for p in [p for p in live if p not in self._state]:
            del live[p]
        for p, s in self._state.items():
            cur = live.setdefault(p, {})
            for k in [k for k in cur if k not in s]:
                del cur[k]
            for k, v in s.items():
                if isinstance(v, np.ndarray) and isinstance(cur.get(k), mge.Tensor):
                    cur[k]._reset(mge.Tensor(v))  # noqa: SLF001
                elif isinstance(v, np.ndarray):
                    cur[k] = mge.Tensor(v)
                else:
                    cur[k] = copy.deepcopy(v)
        for g, saved in zip(self._opt.param_groups, self._groups):
            for k in [k for k in g if k != "params" and k not in saved]:
                del g[k]
            g.update(saved)


def _loss_value(loss: Any) -> float:
    if not isinstance(loss, mge.Tensor) or loss.size != 1:
        raise ConfigError("loss_fn", "must return a scalar loss Tensor",
                          type(loss).__name__ if not isinstance(loss, mge.Tensor) else tuple(loss.shape))
    return float(loss.numpy().reshape(()))


class MegEngineSession:
    """One range test on MegEngine (see the module docstring)."""

    backend = BACKEND

    def __init__(self, model: Any, loss_fn: Callable[[Any, Any], Any], ramp: lrfind.Ramp, groups: list[dict],
                 optimizer: Any, params: Sequence[Any], advance: Callable[[], None], fidelity: tuple[Fidelity, ...],
                 saved: Sequence[Any], clip: Callable[[], Any] | None = None) -> None:
        self.model, self.loss_fn, self.ramp, self.fidelity = model, loss_fn, ramp, fidelity
        self.groups = tuple(g.name for g in ramp.plan.groups if g.frozen != "exclude")
        self._mgroups, self._opt, self._advance, self._saved, self._clip = groups, optimizer, advance, saved, clip
        self._gm = GradManager().attach(list(params))
        model.train()

    def lrs(self) -> list[float]:
        return [float(g["lr"]) for g in self._mgroups]

    def zero_grad(self) -> None:
        self._opt.clear_grad()

    def backward(self, batch: Any, divisor: int) -> float:
        with self._gm:
            loss = self.loss_fn(self.model, batch)
            value = _loss_value(loss)
            self._gm.backward(loss / divisor if divisor != 1 else loss)
        return value

    def step(self) -> None:
        if self._clip is not None:
            self._clip()
        self._opt.step()
        self._advance()

    def restore(self) -> None:
        self._gm.release()
        for s in self._saved:
            s.restore()


class _Writer:
    """Writes the reference's ramp values into live param groups, one update ahead."""

    def __init__(self, groups: list[dict], values: Iterator[np.ndarray]) -> None:
        self._groups, self._values = groups, values
        self()

    def __call__(self) -> None:
        col = next(self._values, None)
        if col is not None:
            for g, v in zip(self._groups, col.tolist()):
                g["lr"] = v


def open_session(model: Any, optimizer_or_plan: Any, loss_fn: Callable[[Any, Any], Any],
                 test: lrfind.RangeTest) -> MegEngineSession:
    """The MegEngine session of a range test over ``model`` (see the module docstring)."""
    if not isinstance(model, M.Module):
        raise ConfigError("model", "must be a megengine.module.Module for the megengine backend",
                          type(model).__name__)
    saved_model = ModuleState(model)
    if isinstance(optimizer_or_plan, Plan):
        ramp = lrfind.ramp_plan(optimizer_or_plan, test)
        setup = optbridge.to_megengine(ramp.plan, model)
        trained = [g.name for g in ramp.plan.groups if g.frozen != "exclude"]
        clip = setup.clip_gradients if any(g.clip is not None for g in ramp.plan.groups) else None
        fid = tuple(f for f in setup.fidelity if f.hyper == "lr")
        return MegEngineSession(model, loss_fn, ramp, [setup.param_group(n) for n in trained], setup.optimizer,
                                setup.gradmanager_params, setup.scheduler.step, fid, [saved_model], clip)
    if isinstance(optimizer_or_plan, Optimizer):
        opt = optimizer_or_plan
        saved_opt = OptimizerState(opt)
        ramp = lrfind.ramp_plan(optbridge.from_megengine(opt), test)
        writer = _Writer(opt.param_groups, lrfind.ramp_values(ramp.plan, test.steps))
        fid = tuple(Fidelity(BACKEND, g.name, "lr", "table", f"the reference evaluator's ramp written into "
                             f"megengine.optimizer.{type(opt).__name__} group['lr'] before each update")
                    for g in ramp.plan.groups)
        params = [p for g in opt.param_groups for p in g["params"]]
        return MegEngineSession(model, loss_fn, ramp, list(opt.param_groups), opt, params, writer, fid,
                                [saved_model, saved_opt])
    raise ConfigError("optimizer_or_plan", "must be a megengine.optimizer.Optimizer or an optbridge Plan",
                      type(optimizer_or_plan).__name__)


def example(seed: int = 0) -> tuple[Any, Any, Callable[[Any, Any], Any], list[Any]]:
    """The bundled example (:func:`optbridge.lrfind_example.arrays`): the torch example's MLP, SGD and MSE."""
    import megengine.functional as F
    import megengine.optimizer as optim

    from optbridge.lrfind_example import arrays

    class MLP(M.Module):  # MegEngine 1.13 has no Tanh module
        def __init__(self, d_in: int, hidden: int) -> None:
            super().__init__()
            self.l1, self.l2 = M.Linear(d_in, hidden), M.Linear(hidden, 1)

        def forward(self, x: Any) -> Any:
            return self.l2(F.tanh(self.l1(x)))

    a = arrays(seed)
    model = MLP(a.w1.shape[1], a.w1.shape[0])
    for lin, w, b in ((model.l1, a.w1, a.b1), (model.l2, a.w2, a.b2)):
        lin.weight._reset(mge.Tensor(w))  # noqa: SLF001
        lin.bias._reset(mge.Tensor(b))  # noqa: SLF001
    opt = optim.SGD(model.parameters(), lr=a.lr)
    batches = [(mge.Tensor(x), mge.Tensor(y)) for x, y in zip(a.x, a.y)]

    def loss_fn(m: Any, batch: Any) -> Any:
        x, y = batch
        return F.mean((m(x) - y) ** 2)

    return model, opt, loss_fn, batches
