"""MindSpore's optimizers that torch lacks, written with torch ops: :class:`AdamWeightDecay`.

A plan ported from MindSpore may name ``nn.AdamWeightDecay`` (plan type
``AdamWeightDecay``): Adam without bias correction, its weight decay added to the
update. torch.optim.AdamW is a different update (it bias-corrects: 0.88 parameter
difference over 100 steps, ``../shared/reference/semantics.md`` §5), so
:func:`~optbridge_adapters.torch.build.to_torch` builds this class instead.

MindSpore's CPU kernel (``P.AdamWeightDecay``, every quantity float32), per element::

    m = m + (g - m) * (1 - beta1)
    v = v + (g * g - v) * (1 - beta2)
    p = p - lr * (m / (sqrt(v) + eps) + weight_decay * p)

:class:`AdamWeightDecay` computes the same: on float32 parameters in float32, with the
hyperparameters rounded to float32 as MindSpore holds them (other dtypes: the same formula in
the parameter's dtype); ``tests/test_torch_optimizers.py`` runs it against the real
``mindspore.nn.AdamWeightDecay`` (measured difference: a few ulps of the parameters, the
kernel's vectorised rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

import numpy as np
import torch

from optbridge import ir
from optbridge.errors import ConfigError

__all__ = ["AdamWeightDecay", "OPTIMIZERS"]


def _f32(x: float) -> float:
    return float(np.float32(x))


class AdamWeightDecay(torch.optim.Optimizer):
    """MindSpore's ``nn.AdamWeightDecay`` as a torch optimizer (every hyperparameter per group, schedulable).

    Args:
        params: Parameters or param-group dicts, as every torch optimizer takes them.
        lr: Learning rate (MindSpore's ``learning_rate``).
        betas: ``(beta1, beta2)``, each in [0, 1).
        eps: Added to ``sqrt(v)`` (MindSpore's default 1e-6).
        weight_decay: Added to the update as ``weight_decay * p`` (not bias-corrected, not scaled by Adam).

    State per parameter: ``exp_avg`` (MindSpore's ``adam_m``) and ``exp_avg_sq`` (``adam_v``); no step
    count (MindSpore keeps none).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        _check(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), "")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter with a gradient (``closure`` re-evaluates the loss, as in torch)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, group in enumerate(self.param_groups):
            _check(group, f"param_groups[{i}].")
            beta1, beta2 = (float(b) for b in group["betas"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                r = _f32 if p.dtype == torch.float32 else float  # float32: the values MindSpore's kernel holds
                lr, eps, wd = r(float(group["lr"])), r(float(group["eps"])), r(float(group["weight_decay"]))
                one_b1, one_b2 = r(1.0 - r(beta1)), r(1.0 - r(beta2))
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                g, m, v = p.grad, state["exp_avg"], state["exp_avg_sq"]
                m.add_((g - m).mul_(one_b1))
                v.add_((g * g).sub_(v).mul_(one_b2))
                update = m / v.sqrt().add_(eps)
                if wd != 0.0:
                    update.add_(p * wd)
                p.sub_(update.mul_(lr))
        return loss


def _check(h: Any, prefix: str) -> None:
    """The ranges MindSpore's ``_check_param_value`` enforces (betas in (0, 1), eps > 0) and lr, wd >= 0."""
    betas = h["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ConfigError(f"{prefix}betas", "must be a pair (beta1, beta2)", betas)
    for j, b in enumerate(betas):
        ir.check_hyper(f"{prefix}betas[{j}]", b, "beta")
    ir.check_hyper(f"{prefix}lr", h["lr"], "nonneg")
    ir.check_hyper(f"{prefix}weight_decay", h["weight_decay"], "nonneg")
    if ir.check_hyper(f"{prefix}eps", h["eps"], "nonneg") == 0.0:
        raise ConfigError(f"{prefix}eps", "must be > 0 (MindSpore's check)", h["eps"])


#: Plan optimizer type -> the class :func:`to_torch` builds for it where torch.optim has none.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {"AdamWeightDecay": AdamWeightDecay}
