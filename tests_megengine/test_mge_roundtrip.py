"""from_megengine: live MegEngine objects back to a plan that traces the same (plan -> MegEngine -> plan)."""

from __future__ import annotations

import numpy as np
import pytest

import megengine as mge
import megengine.optimizer as mopt

import optbridge
from optbridge import ir
from optbridge.errors import UnsupportedError
from optbridge_adapters.megengine.backend import from_megengine, to_megengine

from _mge_cases import N, cases
from test_mge_resume import PLAN as THREE_OPTIMIZERS, NAMES as THREE_NAMES

CASES = cases()
ROUND_TRIP = ["multistep", "exponential_stair", "one_cycle_lr_and_momentum", "sequence_iter_warmup_epoch_cosine",
              "plateau", "per_group_schedules", "adam_betas_eps_wd", "adadelta_rho", "lamb", "chain"]


def params_for(plan) -> dict[str, mge.Parameter]:
    names = {"a": "a0", "b": "b0", "c": "c0", "frozen": "f0", "skipped": "s0"}
    return {names[g.name]: mge.Parameter(np.zeros(1, np.float32)) for g in plan.groups}


def records(params):
    return [optbridge.ParamRecord(n, tuple(p.shape), "", id(p)) for n, p in params.items()]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_plan_to_megengine_and_back_traces_the_same(name: str) -> None:
    plan, metrics = CASES[name]
    params = params_for(plan)
    setup = to_megengine(plan, params, total_steps=N)
    back = from_megengine(setup.optimizer, setup.scheduler, model=params)
    a, b = optbridge.trace(plan, N, metrics=metrics), optbridge.trace(back, N, metrics=metrics)
    assert a.groups == b.groups
    for h in a:
        np.testing.assert_array_equal(a[h], b[h], err_msg=h)
    ra, rb = optbridge.resolve(plan, records(params)), optbridge.resolve(back, records(params))
    assert [(g.name, g.params) for g in ra.groups] == [(g.name, g.params) for g in rb.groups]
    assert ra.excluded == rb.excluded
    # the plan survives JSON too
    again = optbridge.from_dict(optbridge.to_dict(back))
    np.testing.assert_array_equal(optbridge.trace(again, N, metrics=metrics)["lr"], a["lr"])


def test_split_nesterov_optimizers_read_back_as_one() -> None:
    plan = optbridge.loads("""
optbridge: 1
optimizer: {type: SGD, lr: 0.1, momentum: 0.9}
groups: [{name: a, params: a, nesterov: true}, {name: b, params: b}]
schedule: {lr: {kind: cosine, steps: 50}}
""")
    params = {"a": mge.Parameter(np.zeros(2, np.float32)), "b": mge.Parameter(np.zeros(2, np.float32))}
    setup = to_megengine(plan, params)
    assert len(setup.optimizers) == 2
    back = from_megengine(setup.optimizer, setup.scheduler, model=params)
    assert len(back.optimizers) == 1 and back.optimizers[0].name == "optimizer"
    assert [g.options.get("nesterov", False) for g in back.optimizers[0].groups] == [True, False]
    np.testing.assert_array_equal(optbridge.trace(back, 60)["lr"], optbridge.trace(plan, 60)["lr"])


def test_three_optimizers_round_trip() -> None:
    params = {n: mge.Parameter(np.zeros(2, np.float32)) for n in THREE_NAMES}
    setup = to_megengine(THREE_OPTIMIZERS, params)
    back = from_megengine(setup.optimizer, setup.scheduler, model=params)
    assert [(o.name, o.type) for o in back.optimizers] == [("sgd", "SGD"), ("adam", "AdamW"), ("steps", "SGD")]
    assert back.optimizers[2].groups[0].schedule["lr"] == ir.MultiStep(milestones=(20, 50), gamma=0.5)
    rebuilt = to_megengine(back, {n: mge.Parameter(np.zeros(2, np.float32)) for n in THREE_NAMES})
    assert [type(s).__name__ for s in rebuilt.schedulers] == [type(s).__name__ for s in setup.schedulers]
    metrics = list(np.linspace(2.0, 1.0, 40))
    for _ in range(40):
        m = metrics.pop()
        assert [g["lr"] for g in rebuilt.optimizer.param_groups] == [g["lr"] for g in setup.optimizer.param_groups]
        for s in (setup, rebuilt):
            s.scheduler.step(metric=m)


def test_without_a_module_groups_have_no_selectors_but_trace() -> None:
    plan, _ = CASES["cyclic_lr_and_momentum"]
    setup = to_megengine(plan, params_for(plan))
    back = from_megengine(setup.optimizers[0], setup.schedulers[0])
    assert all(not g.select for g in back.groups)
    np.testing.assert_array_equal(optbridge.trace(back, N)["momentum"], optbridge.trace(plan, N)["momentum"])


def test_unreadable_schedulers_and_optimizers_are_refused() -> None:
    p = mge.Parameter(np.zeros(1, np.float32))
    opt = mopt.SGD([p], lr=0.1)

    class Cosine(mopt.LRScheduler):
        def get_lr(self):
            return [0.1 for _ in self.base_lrs]

    with pytest.raises(UnsupportedError, match="arbitrary Python code"):
        from_megengine(opt, Cosine(opt))
    with pytest.raises(UnsupportedError, match="LAMBFp16"):
        from_megengine(mopt.LAMBFp16.__new__(mopt.LAMBFp16))
