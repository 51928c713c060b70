"""Resume: stop at update k, save, rebuild from the plan in a fresh setup, load, continue: identical, bit for bit.

Three optimizers: SGD driven by PlanScheduler (lr, momentum, weight decay), AdamW
driven by PlanScheduler (lr, beta1), and SGD driven by MegEngine's MultiStepLR;
a plateau schedule fed one metric per update; a ``zero_lr`` group.
"""

from __future__ import annotations

import functools
import pickle

import megengine as mge
import numpy as np
import pytest

from optbridge import ir
from optbridge.errors import ConfigError
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge_adapters.megengine import build as mb
from optbridge_adapters.megengine.backend import to_megengine

N = 90
RS = np.random.RandomState(7)
NAMES = ("sgd_a", "sgd_b", "adam_a", "adam_b", "step_a", "frozen")
INIT = {n: RS.randn(4).astype(np.float32) for n in NAMES}
GRADS = RS.randn(N, len(NAMES), 4).astype(np.float32)
METRICS = list(np.cumsum(RS.normal(0.0, 0.1, N)) + 2.0)


def G(name: str, **kw) -> Group:
    return Group(name=name, select=(Selector(names=(name,)),), **kw)


WARM_COSINE = ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=10), ir.Cosine(steps=80, end=1e-4)), boundaries=(10,))
SGD_SCHEDULES = {"momentum": ir.Cyclic(low=0.95, high=0.85, step_size_up=15), "weight_decay": ir.Exponential(gamma=0.97)}
PLAN = Plan(
    optimizers=(
        OptimizerSpec(type="SGD", name="sgd", options={"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}, groups=(
            G("sgd_a", schedule={"lr": ir.Plateau(patience=2, factor=0.5), **SGD_SCHEDULES}),
            G("sgd_b", options={"lr": 0.05}, schedule=SGD_SCHEDULES),
            G("frozen", frozen="zero_lr"))),
        OptimizerSpec(type="AdamW", name="adam", options={"lr": 0.01}, groups=tuple(
            G(n, options=o, schedule={"beta1": ir.OneCycle(total_steps=N, initial=0.95, peak=0.85, final=0.95)})
            for n, o in (("adam_a", {}), ("adam_b", {"lr": 0.003})))),
        # alone on its own multistep schedule: MegEngine's MultiStepLR drives this optimizer
        OptimizerSpec(type="SGD", name="steps", options={"lr": 0.2}, groups=(
            G("step_a", schedule={"lr": ir.MultiStep(milestones=(20, 50), gamma=0.5)}),)),
    ),
    schedule={"lr": WARM_COSINE},
)


def fresh(values: dict[str, np.ndarray]) -> tuple[mb.MegEngineSetup, dict[str, mge.Parameter]]:
    params = {n: mge.Parameter(values[n].copy()) for n in NAMES}
    return to_megengine(PLAN, params), params


def run(setup, params, start: int, stop: int, log: list) -> None:
    for k in range(start, stop):
        log.append([tuple(g[h] for h in ("lr", "weight_decay")) + tuple(g.get("betas", ())) + (g.get("momentum"),)
                    for g in setup.optimizer.param_groups])
        for i, n in enumerate(NAMES):
            params[n].grad = mge.tensor(GRADS[k, i])
        setup.optimizer.step()
        setup.scheduler.step(metric=METRICS[k])
        log.append({n: params[n].numpy().copy() for n in NAMES})


def test_the_plan_uses_both_scheduler_kinds() -> None:
    setup, _ = fresh(INIT)
    kinds = [type(s).__name__ for s in setup.schedulers]
    assert kinds == ["PlanScheduler", "PlanScheduler", "MultiStepLR"]


@functools.lru_cache(maxsize=1)
def straight_run() -> tuple:
    setup, params = fresh(INIT)
    log: list = []
    run(setup, params, 0, N, log)
    return tuple(log)


@pytest.mark.parametrize("k", [1, 9, 10, 47, 89])
def test_resume_at_k_is_identical(k: int) -> None:
    straight = straight_run()

    setup, params = fresh(INIT)
    resumed: list = []
    run(setup, params, 0, k, resumed)
    blob = pickle.dumps({"optimizer": setup.optimizer.state_dict(), "scheduler": setup.scheduler.state_dict(),
                         "params": {n: params[n].numpy() for n in NAMES}})
    del setup, params
    saved = pickle.loads(blob)
    setup, params = fresh(saved["params"])
    setup.optimizer.load_state_dict(saved["optimizer"])
    setup.scheduler.load_state_dict(saved["scheduler"])
    run(setup, params, k, N, resumed)

    assert len(straight) == len(resumed) == 2 * N
    for a, b in zip(straight, resumed):
        if isinstance(a, dict):
            for n in NAMES:
                np.testing.assert_array_equal(a[n], b[n])
        else:
            assert a == b


def test_scheduler_state_from_another_plan_is_refused() -> None:
    setup, _ = fresh(INIT)
    state = setup.scheduler.state_dict()
    other = Plan(optimizers=PLAN.optimizers, schedule={"lr": ir.Cosine(steps=N)})
    params = {n: mge.Parameter(INIT[n].copy()) for n in NAMES}
    with pytest.raises(ConfigError, match="different plan"):
        to_megengine(other, params).scheduler.load_state_dict(state)
