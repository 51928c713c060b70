"""torch trajectories through ``optbridge.to_torch``: the oracle (torch's own schedulers) and the ``torch`` row.

The contract is in :mod:`optbridge_conformance.trajectory`. One ``nn.Parameter``
per group (``<group>.w``, float32); each update sets every gradient, clips as the
plan says, steps every optimizer, then steps the schedule (not after the last
update: no update uses that value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .drive import MetricFeed

__all__ = ["trajectory", "oracle"]


def _run(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray,
         metrics: Sequence[float] | None, form: str) -> np.ndarray:
    import torch

    import optbridge
    from optbridge.errors import ConfigError
    params = [(n, torch.nn.Parameter(torch.from_numpy(np.array(v, dtype=np.float32)))) for n, v in init.items()]
    feed = MetricFeed(plan, metrics)
    try:
        setup = optbridge.to_torch(plan, params, total_steps=steps, form=form, metrics=feed.upfront)
    except ConfigError as e:  # to_torch without metrics= yet: the metric goes to scheduler.step(metric)
        if feed.upfront is None or e.path != "metrics":
            raise
        feed.upfront = None
        setup = optbridge.to_torch(plan, params, total_steps=steps, form=form)
    g = torch.from_numpy(np.ascontiguousarray(grads, dtype=np.float32))
    sizes = np.cumsum([0] + [int(np.asarray(v).size) for v in init.values()])
    out = np.empty((steps, int(sizes[-1])), dtype=np.float32)
    clip = any(gr.clip is not None for gr in plan.groups)
    for k in range(steps):
        for i, (_, p) in enumerate(params):
            p.grad = g[k, sizes[i]:sizes[i + 1]].clone()
        if clip:
            setup.clip_gradients()
        for o in setup.optimizers.values():
            o.step()
        with torch.no_grad():
            out[k] = torch.cat([p.detach().reshape(-1) for _, p in params]).numpy()
        if k + 1 < steps:
            m = feed.after(k)
            setup.scheduler.step() if m is None else setup.scheduler.step(m)
    return out


def oracle(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray, *,
           metrics: Sequence[float] | None = None) -> np.ndarray:
    """The oracle: ``optbridge.to_torch(plan, params)``, torch's own scheduler classes wherever exact."""
    return _run(plan, steps, init, grads, metrics, "auto")


def trajectory(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray, *,
               metrics: Sequence[float] | None = None) -> np.ndarray:
    """The ``torch`` row: ``to_torch(plan, params, form="table")`` (the reference's values written per update)."""
    return _run(plan, steps, init, grads, metrics, "table")
