"""from_megengine: live MegEngine objects back to a plan that traces the same (plan -> MegEngine -> plan)."""

from __future__ import annotations

import megengine as mge
import megengine.optimizer as mopt
import numpy as np
import pytest
from _mge_cases import N, cases
from test_mge_resume import NAMES as THREE_NAMES
from test_mge_resume import PLAN as THREE_OPTIMIZERS

import optbridge
from optbridge import ir
from optbridge.errors import UnsupportedError
from optbridge.params import effective_options
from optbridge_adapters.megengine.backend import from_megengine, to_megengine

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


# --------------------------------------------------------------------------- optbridge's exact optimizers read back

EXACT_PLANS = {
    "sgd_dampening_maximize": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "maximize": True,
                                       "nesterov": False, "weight_decay": 1e-3}),
    "rmsprop_centered": ("RMSprop", {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True, "eps": 1e-6}),
    "adagrad_accumulator": ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    "nadam_decoupled": ("NAdam", {"lr": 0.01, "weight_decay": 0.05, "decoupled_weight_decay": True,
                                  "momentum_decay": 0.01}),
    "radam": ("RAdam", {"lr": 0.01, "betas": (0.8, 0.99)}),
    "adamax": ("Adamax", {"lr": 0.01, "eps": 1e-6}),
    "adam_amsgrad": ("Adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
}


@pytest.mark.parametrize("name", list(EXACT_PLANS))
def test_exact_optimizers_read_back_with_every_option(name: str) -> None:
    typ, options = EXACT_PLANS[name]
    plan = optbridge.Plan(optimizers=(optbridge.OptimizerSpec(type=typ, options=options, groups=(
        optbridge.Group(name="a", select=(optbridge.Selector(names=("a0",)),), options={"lr_mult": 0.5}),
        optbridge.Group(name="c", select=(optbridge.Selector(rest=True),)))),),
        schedule={"lr": ir.Cosine(steps=N)})
    params = {"a0": mge.Parameter(np.zeros(2, np.float32)), "c0": mge.Parameter(np.zeros(2, np.float32))}
    setup = to_megengine(plan, params)
    back = from_megengine(setup.optimizer, setup.scheduler, model=params)
    assert back.optimizers[0].type == typ
    for g, h in zip(plan.groups, back.groups):
        want, got = effective_options(plan, g), effective_options(back, h)
        for k, v in want.items():
            if k in ("foreach", "fused", "differentiable", "capturable"):
                continue
            assert got[k] == (tuple(v) if isinstance(v, list) else v), (name, g.name, k)
    np.testing.assert_array_equal(optbridge.trace(back, N)["lr"], optbridge.trace(plan, N)["lr"])
    rebuilt = to_megengine(back, {n: mge.Parameter(np.zeros(2, np.float32)) for n in params})
    assert type(rebuilt.optimizer) is type(setup.optimizer)


# --------------------------------------------------------------------------- a setup that already stepped

@pytest.mark.parametrize("name, k", [("cosine_restarts", 37), ("one_cycle_lr_and_momentum", 50),
                                     ("cosine_clamped_epoch", 13), ("multistep", 45), ("multistep_epoch", 20),
                                     ("per_group_schedules", 33), ("adam_betas_eps_wd", 60)])
def test_a_stepped_setup_reads_back_from_where_it_stands(name: str, k: int) -> None:
    """Update 0 of the read plan is the setup's next update: its trace is the original's from update k.

    ``optbridge.shift`` restarts a schedule as the same node, a lambda of its closed form or a table of the
    reference's values: the same values up to the last bit of the operation order (1e-12 relative here).
    """
    plan, metrics = CASES[name]
    params = params_for(plan)
    setup = to_megengine(plan, params, total_steps=N)
    for _ in range(k):
        setup.optimizer.step()
        setup.scheduler.step()
    back = from_megengine(setup.optimizer, setup.scheduler, model=params)
    assert back.total_steps == N - k
    a, b = optbridge.trace(plan, N, metrics=metrics), optbridge.trace(back, N - k)
    for h in a:
        np.testing.assert_allclose(b[h], a[h][:, k:], rtol=1e-12, atol=0, err_msg=h)


def test_a_stepped_schedule_on_mixed_clocks_is_refused_clearly() -> None:
    plan, _ = CASES["sequence_iter_warmup_epoch_cosine"]
    setup = to_megengine(plan, params_for(plan))
    assert from_megengine(setup.optimizer, setup.scheduler).schedule  # at update 0 it reads fine
    setup.optimizer.step()
    setup.scheduler.step()
    with pytest.raises(UnsupportedError, match="mixes iteration and epoch clocks"):
        from_megengine(setup.optimizer, setup.scheduler)


def test_multisteplr_stepped_per_epoch() -> None:
    """step_unit and steps_per_epoch say what MegEngine's MultiStepLR counts; a stepped one starts where it stands."""
    p = mge.Parameter(np.zeros(1, np.float32))
    opt = mopt.SGD([p], lr=0.1)
    sched = mopt.MultiStepLR(opt, milestones=[2, 5], gamma=0.1)
    plan = from_megengine(opt, sched, step_unit="epoch", steps_per_epoch=4, total_steps=40)
    assert plan.step_unit == "epoch" and plan.steps_per_epoch == 4 and plan.total_steps == 40
    tr = optbridge.trace(plan, 40)["lr"][0]
    want = [0.1 * 0.1 ** ((k // 4 >= 2) + (k // 4 >= 5)) for k in range(40)]
    np.testing.assert_allclose(tr, want, rtol=1e-15)
    for _ in range(3):  # three epochs done
        sched.step()
    later = optbridge.trace(from_megengine(opt, sched, step_unit="epoch", steps_per_epoch=4), 28)["lr"][0]
    np.testing.assert_allclose(later, tr[12:], rtol=1e-12, atol=0)  # a lambda of the closed form (see above)


def test_total_steps_is_counted_from_the_next_update() -> None:
    plan, _ = CASES["cosine_periodic"]
    setup = to_megengine(plan, params_for(plan), total_steps=100)
    for _ in range(30):
        setup.scheduler.step()
    assert from_megengine(setup.optimizer, setup.scheduler).total_steps == 70
    assert from_megengine(setup.optimizer, setup.scheduler, total_steps=20).total_steps == 20
