"""The torch runner of the lr range test (:func:`optbridge.lrfind.lr_find` with a torch model).

:func:`open_session` returns the :class:`optbridge.lrfind.Session` the core loop
drives:

* **a live optimizer** is used as it is: its plan (``optbridge.from_torch``) gives
  the groups' lrs, :func:`optbridge.lrfind.ramp_plan` the ramp, and the reference
  evaluator's values are written into ``group["lr"]`` before every update (float64,
  as torch holds them; a tensor lr is filled in place). Its state is saved before
  and restored after (state tensors cloned, group dicts updated in place);
* **a plan** is built with ``optbridge.to_torch`` over the model (torch's own
  LambdaLR for the exponential ramp), stepped as a training loop steps it, and
  dropped afterwards.

Either way the model's parameters, buffers (BatchNorm running stats), gradients,
train/eval flags and torch's CPU random state are restored bit for bit.
:func:`example` is the small deterministic setup of ``optbridge lr-find``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

import optbridge
from optbridge import lrfind
from optbridge.errors import ConfigError
from optbridge.plan import Plan
from optbridge.report import Fidelity

__all__ = ["open_session", "TorchSession", "ModelState", "OptimizerState", "example"]

BACKEND = "torch"


class ModelState:
    """A bit-exact copy of a module's parameters, buffers, gradients and train flags (restored in place)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._tensors = [(t, t.detach().clone()) for t in _unique(list(model.parameters()) + list(model.buffers()))]
        self._grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in _unique(model.parameters())]
        self._modes = [(m, m.training) for m in model.modules()]
        self._rng = torch.random.get_rng_state()

    def restore(self) -> None:
        with torch.no_grad():
            for t, saved in self._tensors:
                t.copy_(saved)
        for p, g in self._grads:
            p.grad = g
        for m, mode in self._modes:
            m.training = mode
        torch.random.set_rng_state(self._rng)


class OptimizerState:
    """A bit-exact copy of an optimizer's state and group options, restored without replacing its group dicts."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self._opt = optimizer
        self._state = {p: {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in s.items()}
                       for p, s in optimizer.state.items()}
        self._groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        self._lr_values = [float(g["lr"]) if torch.is_tensor(g["lr"]) else None for g in optimizer.param_groups]

    def restore(self) -> None:
        self._opt.state.clear()
        self._opt.state.update(self._state)
        for g, saved, lr in zip(self._opt.param_groups, self._groups, self._lr_values):
            for k in [k for k in g if k != "params" and k not in saved]:
                del g[k]
            g.update(saved)
            if lr is not None:
                g["lr"].fill_(lr)  # the group's own lr tensor (schedulers may hold it too)


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return list({id(t): t for t in tensors}.values())  # each tensor once, in first-seen order


def _loss_value(loss: Any) -> float:
    if not torch.is_tensor(loss) or loss.numel() != 1:
        raise ConfigError("loss_fn", "must return a scalar loss tensor",
                          type(loss).__name__ if not torch.is_tensor(loss) else tuple(loss.shape))
    return float(loss.detach().reshape(()).item())


class TorchSession:
    """One range test on torch (see the module docstring)."""

    backend = BACKEND

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[Any, Any], Any], ramp: lrfind.Ramp,
                 groups: list[dict[str, Any]], optimizers: Sequence[torch.optim.Optimizer],
                 advance: Callable[[], None], fidelity: tuple[Fidelity, ...],
                 saved: Sequence[ModelState | OptimizerState], clip: Callable[[], Any] | None = None) -> None:
        self.model, self.loss_fn, self.ramp, self.fidelity = model, loss_fn, ramp, fidelity
        self.groups = tuple(g.name for g in ramp.plan.groups if g.frozen != "exclude")
        self._tgroups, self._optimizers, self._advance, self._saved, self._clip = \
            groups, optimizers, advance, saved, clip
        model.train()

    def lrs(self) -> list[float]:
        return [float(g["lr"]) for g in self._tgroups]

    def zero_grad(self) -> None:
        for o in self._optimizers:
            o.zero_grad()

    def backward(self, batch: Any, divisor: int) -> float:
        loss = self.loss_fn(self.model, batch)
        value = _loss_value(loss)
        (loss / divisor).backward() if divisor != 1 else loss.backward()
        return value

    def step(self) -> None:
        if self._clip is not None:
            self._clip()
        for o in self._optimizers:
            o.step()
        self._advance()

    def restore(self) -> None:
        for s in self._saved:
            s.restore()


class _Writer:
    """Writes the reference's ramp values into live param groups, one update ahead."""

    def __init__(self, groups: list[dict[str, Any]], values: Iterator[np.ndarray]) -> None:
        self._groups, self._values = groups, values
        self()

    def __call__(self) -> None:
        col = next(self._values, None)
        if col is None:
            return  # after the last update: nothing uses a value
        for g, v in zip(self._groups, col.tolist()):
            if torch.is_tensor(g["lr"]):
                g["lr"].fill_(v)
            else:
                g["lr"] = v


def open_session(model: Any, optimizer_or_plan: Any, loss_fn: Callable[[Any, Any], Any],
                 test: lrfind.RangeTest) -> TorchSession:
    """The torch session of a range test over ``model`` (see the module docstring)."""
    if not isinstance(model, torch.nn.Module):
        raise ConfigError("model", "must be a torch.nn.Module for the torch backend", type(model).__name__)
    saved_model = ModelState(model)
    if isinstance(optimizer_or_plan, Plan):
        ramp = lrfind.ramp_plan(optimizer_or_plan, test)
        setup = optbridge.to_torch(ramp.plan, model, freeze_excluded=False)
        trained = [g.name for g in ramp.plan.groups if g.frozen != "exclude"]
        clip = setup.clip_gradients if any(g.clip is not None for g in ramp.plan.groups) else None
        fid = tuple(f for f in setup.fidelity if f.hyper == "lr")
        return TorchSession(model, loss_fn, ramp, [setup.param_group(n) for n in trained],
                            list(setup.optimizers.values()), setup.scheduler.step, fid, [saved_model], clip)
    if isinstance(optimizer_or_plan, torch.optim.Optimizer):
        opt = optimizer_or_plan
        saved_opt = OptimizerState(opt)
        ramp = lrfind.ramp_plan(optbridge.from_torch(opt), test)
        if len(ramp.plan.groups) != len(opt.param_groups):  # pragma: no cover - from_torch maps groups 1:1
            raise ConfigError("optimizer", "groups do not map one to one onto the plan", len(opt.param_groups))
        writer = _Writer(opt.param_groups, lrfind.ramp_values(ramp.plan, test.steps))
        fid = tuple(Fidelity(BACKEND, g.name, "lr", "table", f"the reference evaluator's ramp written into "
                             f"torch.optim.{type(opt).__name__} group['lr'] before each update")
                    for g in ramp.plan.groups)
        return TorchSession(model, loss_fn, ramp, list(opt.param_groups), [opt], writer, fid,
                            [saved_model, saved_opt])
    raise ConfigError("optimizer_or_plan", "must be a torch.optim.Optimizer or an optbridge Plan",
                      type(optimizer_or_plan).__name__)


def example(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, Callable[[Any, Any], Any], list[Any]]:
    """The bundled example: a tiny MLP, plain SGD, MSE and synthetic batches (deterministic).

    The weights and data come from :func:`optbridge.lrfind_example.arrays`, shared with
    the MindSpore and MegEngine examples, so the three frameworks start identical.
    """
    from optbridge.lrfind_example import arrays

    a = arrays(seed)
    model = torch.nn.Sequential(torch.nn.Linear(a.w1.shape[1], a.w1.shape[0]), torch.nn.Tanh(),
                                torch.nn.Linear(a.w2.shape[1], a.w2.shape[0]))
    with torch.no_grad():
        for p, v in zip(model.parameters(), (a.w1, a.b1, a.w2, a.b2)):
            p.copy_(torch.from_numpy(v))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in zip(a.x, a.y)]

    def loss_fn(m: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(m(x), y)

    return model, opt, loss_fn, batches
