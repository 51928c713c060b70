"""Every node kind through real MegEngine 1.13: the values it holds and the lr it applies.

Tolerances (docs/adapters.md rule 5), all measured exact:

* ``data`` (the hyperparameter in the MegEngine group before ``step()``) equals the
  reference **bit for bit**: PlanScheduler writes the reference evaluator's float64
  values, and MegEngine's MultiStepLR computes ``base * gamma ** n`` in Python,
  which equals the reference's ``base * np.power(gamma, n)`` bit for bit (measured
  on 20 000 random cases).
* ``applied["lr"]`` equals ``float32(reference)`` exactly, **0 float32 ulps**: the
  only rounding is MegEngine's ``tensor(lr, dtype="float32")`` inside ``step()``;
  ``0 - lr32 * 1`` is exact.
* momentum, weight decay and betas proven through an update are exact float32
  expressions of the reference values (MegEngine rounds them to float32 once).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import megengine as mge
import megengine.optimizer as mopt

import optbridge
from optbridge import ir
from optbridge.errors import EvaluationError
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge_adapters.megengine import build as mb
from optbridge_adapters.megengine.backend import to_megengine

from _mge_cases import METRICS, N, cases, kinds_used

CASES = cases()
F32 = np.float32


def f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float32).astype(np.float64)


def params_for(plan: Plan) -> dict[str, mge.Parameter]:
    """One (1,)-shaped float32 parameter per group, named so the case plans' selectors take it."""
    names = {"a": "a0", "b": "b0", "c": "c0", "frozen": "f0", "skipped": "s0"}
    return {names[g.name]: mge.Parameter(np.zeros(1, np.float32)) for g in plan.groups}


def test_cases_cover_every_node_kind() -> None:
    assert kinds_used() == set(ir.NODE_TYPES), set(ir.NODE_TYPES) - kinds_used()


@pytest.mark.parametrize("name", list(CASES))
def test_trace_equals_reference(name: str) -> None:
    plan, metrics = CASES[name]
    tr = optbridge.trace(plan, N, backend="megengine", metrics=metrics)  # in-process here: megengine is importable
    ref = optbridge.trace(plan, N, metrics=metrics)
    assert tr.backend == "megengine" and tr.groups == ref.groups and set(tr) == set(ref)
    for h in ref:
        assert tr[h].dtype == np.float64 and tr[h].shape == ref[h].shape
        np.testing.assert_array_equal(tr[h], ref[h], err_msg=f"{name}: {h} held by MegEngine")
    np.testing.assert_array_equal(tr.applied["lr"], f32(ref["lr"]), err_msg=f"{name}: lr applied by MegEngine")
    noted = {(f.group, f.hyper) for f in tr.fidelity}
    for g in ref.groups:
        for h in ref:
            if h == "lr" or plan.schedule_for(plan.groups[[x.name for x in plan.groups].index(g)], h) is not None:
                assert (g, h) in noted, f"{name}: no fidelity note for {g}/{h}"
    forms = {f.form for f in tr.fidelity if f.hyper == "lr"}
    if name in ("multistep", "multistep_epoch", "exponential_stair"):
        assert forms == {"native"} and all("MultiStepLR" in f.detail for f in tr.fidelity)
    elif name != "per_group_schedules":
        assert forms == {"table"}


def test_exponential_stair_is_native_only_over_a_known_horizon() -> None:
    plan, _ = CASES["exponential_stair"]
    params = params_for(plan)
    unbounded = to_megengine(plan, params)  # no horizon: MultiStepLR would stop decaying somewhere
    assert isinstance(unbounded.scheduler, mb.PlanScheduler)
    bounded = to_megengine(plan, params_for(plan), total_steps=N)
    assert type(bounded.scheduler) is mopt.MultiStepLR
    assert bounded.scheduler.milestones == [40, 80, 120, 160]
    forced = to_megengine(plan, params_for(plan), total_steps=N, form="table")
    assert isinstance(forced.scheduler, mb.PlanScheduler)
    for s in (unbounded, bounded, forced):
        seen = []
        for _ in range(N):
            seen.append([g["lr"] for g in s.optimizer.param_groups])
            s.scheduler.step()
        np.testing.assert_array_equal(np.array(seen).T, optbridge.trace(plan, N)["lr"])


def _probe_run(plan: Plan, metrics=None, *, prepare, read) -> None:
    setup = to_megengine(plan, params_for(plan), metrics=metrics)
    ref = optbridge.trace(plan, N, metrics=metrics)
    rows = {g: i for i, g in enumerate(ref.groups)}
    for k in range(N):
        for name in ref.groups:
            gd = setup.param_group(name)
            (p,) = gd["params"]
            opt = setup.optimizers[setup.groups[name][0]]
            prepare(opt, p)
        setup.optimizer.step()
        for name in ref.groups:
            gd = setup.param_group(name)
            (p,) = gd["params"]
            opt = setup.optimizers[setup.groups[name][0]]
            read(opt, p, {h: ref[h][rows[name], k] for h in ref}, f"{name} k={k}")
        setup.scheduler.step()


@pytest.mark.parametrize("name", ["cyclic_lr_and_momentum", "one_cycle_lr_and_momentum",
                                  "weight_decay_and_momentum_schedules", "per_group_schedules"])
def test_momentum_used_in_the_update(name: str) -> None:
    """Buffer set to 1, gradient 0, parameter 0: MegEngine's buffer becomes float32(momentum)
    and the parameter -float32(float32(lr) * float32(momentum)), for the reference's values."""
    plan, metrics = CASES[name]

    def prepare(opt, p):
        p[...] = mge.tensor(np.zeros(1, np.float32))
        opt._state[p]["momentum_buffer"][...] = mge.tensor(np.ones(1, np.float32))
        p.grad = mge.tensor(np.zeros(1, np.float32))

    def read(opt, p, ref, where):
        mom, lr = F32(ref["momentum"]), F32(ref["lr"])
        assert opt._state[p]["momentum_buffer"].numpy()[0] == mom, where
        assert -p.numpy()[0] == lr * mom, where

    _probe_run(plan, metrics, prepare=prepare, read=read)


def test_weight_decay_used_in_the_update() -> None:
    """Parameter 1, gradient 0, buffer 0: the step is float32(lr) * float32(weight_decay) (L2 in the gradient)."""
    plan, _ = CASES["weight_decay_and_momentum_schedules"]

    def prepare(opt, p):
        p[...] = mge.tensor(np.ones(1, np.float32))
        opt._state[p]["momentum_buffer"][...] = mge.tensor(np.zeros(1, np.float32))
        p.grad = mge.tensor(np.zeros(1, np.float32))

    def read(opt, p, ref, where):
        wd, lr = F32(ref["weight_decay"]), F32(ref["lr"])
        assert p.numpy()[0] == F32(1) - lr * wd, where

    _probe_run(plan, prepare=prepare, read=read)


def test_betas_used_in_the_update() -> None:
    """Moments reset to 0, gradient 1: exp_avg = 1 - float32(beta1), exp_avg_sq = 1 - float32(beta2)."""
    plan, _ = CASES["adam_betas_eps_wd"]

    def prepare(opt, p):
        p[...] = mge.tensor(np.zeros(1, np.float32))
        for key in ("exp_avg", "exp_avg_sq"):
            opt._state[p][key][...] = mge.tensor(np.zeros(1, np.float32))
        p.grad = mge.tensor(np.ones(1, np.float32))

    def read(opt, p, ref, where):
        assert opt._state[p]["exp_avg"].numpy()[0] == F32(1) - F32(ref["beta1"]), where
        assert opt._state[p]["exp_avg_sq"].numpy()[0] == F32(1) - F32(ref["beta2"]), where

    _probe_run(plan, prepare=prepare, read=read)


@pytest.mark.parametrize("name", ["sequence_with_multiplicative", "cosine_restarts", "plateau", "table_relative_hold",
                                  "sequence_iter_warmup_epoch_cosine"])
def test_chunked_evaluation_is_exact(name: str) -> None:
    plan, metrics = CASES[name]
    n = 70
    whole = optbridge.trace(plan, n, metrics=metrics)
    for chunk in (1, 7):
        tr = mb.trace(plan, n, metrics=metrics, chunk=chunk)
        for h in whole:
            np.testing.assert_array_equal(tr[h], whole[h])


def test_plateau_metrics_given_one_at_a_time() -> None:
    plan, metrics = CASES["plateau"]
    setup = to_megengine(plan, params_for(plan))  # no metrics up front
    ref = optbridge.trace(plan, N, metrics=metrics)
    seen = []
    for k in range(N):
        seen.append([g["lr"] for g in setup.optimizer.param_groups])
        setup.scheduler.step(metric=metrics[k])
    np.testing.assert_array_equal(np.array(seen).T, ref["lr"])
    # without the metric the next value is unknown: the post-final step waits, the one after raises
    setup = to_megengine(plan, params_for(plan))
    setup.scheduler.step()
    with pytest.raises(EvaluationError, match="needs 1 metric"):
        setup.scheduler.step()


def test_step_after_the_last_update_does_not_raise_but_the_next_does() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(Group(name="a", select=(Selector(rest=True),)),)),),
                schedule={"lr": ir.Table(values=(1.0, 0.5, 0.25))})
    setup = to_megengine(plan, {"w": mge.Parameter(np.zeros(2, np.float32))})
    gd = setup.optimizer.param_groups[0]
    values = []
    for _ in range(3):  # a training loop of the table's 3 updates
        values.append(gd["lr"])
        setup.scheduler.step()  # the last one goes past the table: it must not break the loop
    assert values == [1.0, 0.5, 0.25] and gd["lr"] == 0.25
    with pytest.raises(EvaluationError, match="table has 3 values"):
        setup.scheduler.step()


def test_total_steps_bounds_the_scheduler() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": ir.Cosine(steps=10)},
                total_steps=10)
    setup = to_megengine(plan, {"w": mge.Parameter(np.zeros(2, np.float32))})
    for _ in range(10):
        setup.scheduler.step()
    assert setup.scheduler.current_epoch == 10
    with pytest.raises(EvaluationError, match="total_steps"):
        setup.scheduler.step()
        setup.scheduler.step()


def test_scheduler_step_with_explicit_epoch() -> None:
    plan, _ = CASES["cosine_restarts"]
    setup = to_megengine(plan, params_for(plan))
    ref = optbridge.trace(plan, N)["lr"]
    for k in (100, 3, 150, 0):
        setup.scheduler.step(k)
        assert [g["lr"] for g in setup.optimizer.param_groups] == list(ref[:, k])


def test_driver_writes_python_floats() -> None:
    """Each update costs dict writes of plain floats (MegEngine converts them to float32 in step())."""
    plan, _ = CASES["adam_betas_eps_wd"]
    setup = to_megengine(plan, params_for(plan))
    for g in setup.optimizer.param_groups:
        assert type(g["lr"]) is float and type(g["eps"]) is float and type(g["weight_decay"]) is float
        assert isinstance(g["betas"], tuple) and all(type(b) is float for b in g["betas"])
    assert math.isclose(setup.optimizer.param_groups[0]["betas"][0], 0.95)
