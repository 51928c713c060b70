"""MindSpore trajectories through ``optbridge.to_mindspore`` in each form (list, cell, experimental).

The contract is in :mod:`optbridge_conformance.trajectory`. The net holds one
float32 ``Parameter`` per group (``<group>.w``, in a sub-cell named after the
group); each update calls every optimizer with the gradients of its parameters
(PyNative), then ``setup.step()`` (not after the last update).

A setup whose optimizers have the structure of an earlier trajectory's runs on the
kept ones (:class:`~optbridge_adapters.mindspore.reuse.Setups`, as the training-loop
traces do: their Parameter values and Python state copied in, the setup pointed at
them), so their graphs are not compiled again (~0.45 s per trajectory, most of its
cost); ``OPTBRIDGE_MS_REUSE=0`` turns it off. tests/test_conformance.py compares
trajectories with and without it bit for bit.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .drive import MetricFeed

__all__ = ["trajectory_list", "trajectory_cell", "trajectory_experimental"]

_RUNS = itertools.count()
#: The optimizers kept across trajectories (per process; apart from the traces' own, so neither evicts the other).
_KEPT: Any = None


def _reused(setup: Any, names: list[str], params: list[Any]) -> tuple[Any, list[Any]]:
    """``setup`` on kept optimizers of an earlier trajectory of the same structure, with the Parameters to read
    (the kept ones, holding the new ones' values); or both as they are."""
    global _KEPT
    from optbridge_adapters.mindspore.reuse import Setups, reuse_enabled
    if not reuse_enabled():
        return setup, params
    if _KEPT is None:
        _KEPT = Setups()
    out, kept = _KEPT.adopt(setup, {n: [p] for n, p in zip(names, params)})
    return out, [kept[n][0] for n in names]


def _net(init: Mapping[str, np.ndarray]) -> Any:
    from mindspore import Parameter, Tensor, nn

    class Holder(nn.Cell):
        def __init__(self, value: np.ndarray) -> None:
            super().__init__()
            self.w = Parameter(Tensor(np.array(value, dtype=np.float32)), name="w")

    class Net(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            for name, value in init.items():
                setattr(self, name.rsplit(".", 1)[0], Holder(value))

    return Net()


def _run(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray,
         metrics: Sequence[float] | None, form: str) -> np.ndarray:
    import mindspore as ms
    from mindspore import Tensor

    import optbridge
    from optbridge.errors import ConfigError
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        net = _net(init)
        feed = MetricFeed(plan, metrics)
        try:
            setup = optbridge.to_mindspore(plan, net, total_steps=steps, form=form, metrics=feed.upfront)
        except ConfigError as e:  # to_mindspore without metrics= yet: the metric goes to setup.step(metric)
            if feed.upfront is None or e.path != "metrics":
                raise
            feed.upfront = None
            setup = optbridge.to_mindspore(plan, net, total_steps=steps, form=form)
        names = list(init)
        sizes = np.cumsum([0] + [int(np.asarray(v).size) for v in init.values()])
        col = {n: slice(int(sizes[i]), int(sizes[i + 1])) for i, n in enumerate(names)}
        by_name = {p.name: p for p in net.trainable_params()}
        setup, params = _reused(setup, names, [by_name[n] for n in names])
        cols = {id(p): col[n] for n, p in zip(names, params)}  # kept Parameters may have other names
        g32 = np.ascontiguousarray(grads, dtype=np.float32)
        out = np.empty((steps, int(sizes[-1])), dtype=np.float32)
        for k in range(steps):
            for o in setup.optimizers:
                o(ms.mutable(tuple(Tensor(g32[k, cols[id(p)]]) for p in o.parameters)))
            out[k] = np.concatenate([p.asnumpy().reshape(-1) for p in params])
            if k + 1 < steps:
                setup.step(feed.after(k))
        return out
    finally:
        ms.set_context(mode=prev)


def trajectory_list(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray, *,
                    metrics: Sequence[float] | None = None) -> np.ndarray:
    """``to_mindspore(plan, net, form="list")``."""
    return _run(plan, steps, init, grads, metrics, "list")


def trajectory_cell(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray, *,
                    metrics: Sequence[float] | None = None) -> np.ndarray:
    """``to_mindspore(plan, net, form="cell")``."""
    return _run(plan, steps, init, grads, metrics, "cell")


def trajectory_experimental(plan: Any, steps: int, init: Mapping[str, np.ndarray], grads: np.ndarray, *,
                            metrics: Sequence[float] | None = None) -> np.ndarray:
    """``to_mindspore(plan, net, form="experimental")``."""
    return _run(plan, steps, init, grads, metrics, "experimental")
