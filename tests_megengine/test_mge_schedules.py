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

The trace runs the real optimizers without gradients on their probes by default
(``updates=False``, the fast path); ``test_trace_is_the_same_with_real_updates``
shows that running their tensor updates too changes nothing in any case.
"""

from __future__ import annotations

import math

import megengine as mge
import megengine.optimizer as mopt
import numpy as np
import pytest
from _mge_cases import N, cases, kinds_used

import optbridge
from optbridge import ir
from optbridge.plan import Plan
from optbridge_adapters.megengine import tracing
from optbridge_adapters.megengine.backend import to_megengine
from optbridge_adapters.megengine.driver import PlanScheduler

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
        assert forms == {"native"} and all("MultiStepLR" in f.detail for f in tr.fidelity if f.hyper == "lr")
    elif name != "per_group_schedules":
        assert forms == {"table"}


def test_exponential_stair_is_native_only_over_a_known_horizon() -> None:
    plan, _ = CASES["exponential_stair"]
    params = params_for(plan)
    unbounded = to_megengine(plan, params)  # no horizon: MultiStepLR would stop decaying somewhere
    assert isinstance(unbounded.scheduler, PlanScheduler)
    bounded = to_megengine(plan, params_for(plan), total_steps=N)
    assert type(bounded.scheduler) is mopt.MultiStepLR
    assert bounded.scheduler.milestones == [40, 80, 120, 160]
    forced = to_megengine(plan, params_for(plan), total_steps=N, form="table")
    assert isinstance(forced.scheduler, PlanScheduler)
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
    """AdamW runs on optbridge's exact class (auto): its state restarted before each update, gradient 1,
    gives exp_avg = float32(1 - beta1) (torch's lerp) and exp_avg_sq = float32(1 - beta2), for the reference's betas."""
    plan, _ = CASES["adam_betas_eps_wd"]

    def prepare(opt, p):
        p[...] = mge.tensor(np.zeros(1, np.float32))
        opt._state.pop(p, None)  # torch's (and the exact class's) state starts at the first update
        p.grad = mge.tensor(np.ones(1, np.float32))

    def read(opt, p, ref, where):
        assert opt._state[p]["step"] == 1.0, where
        assert opt._state[p]["exp_avg"].numpy()[0] == F32(1 - ref["beta1"]), where
        assert opt._state[p]["exp_avg_sq"].numpy()[0] == F32(1 - ref["beta2"]), where

    _probe_run(plan, prepare=prepare, read=read)


@pytest.mark.parametrize("name", ["sequence_with_multiplicative", "cosine_restarts", "plateau", "table_relative_hold",
                                  "sequence_iter_warmup_epoch_cosine"])
def test_chunked_evaluation_is_exact(name: str) -> None:
    plan, metrics = CASES[name]
    n = 70
    whole = optbridge.trace(plan, n, metrics=metrics)
    for chunk in (1, 7):
        tr = tracing.trace(plan, n, metrics=metrics, chunk=chunk)
        for h in whole:
            np.testing.assert_array_equal(tr[h], whole[h])


def test_plateau_metrics_given_one_at_a_time() -> None:
    plan, metrics = CASES["plateau"]
    setup = to_megengine(plan, params_for(plan))  # no metrics up front
    ref = optbridge.trace(plan, N, metrics=metrics)
    seen = []
    for k in range(N):
        seen.append([g["lr"] for g in setup.optimizer.param_groups])
        setup.optimizer.step()  # no gradients: the step guard checks position and horizon only
        setup.scheduler.step(metric=metrics[k])
    np.testing.assert_array_equal(np.array(seen).T, ref["lr"])


def test_trace_is_the_same_with_real_updates() -> None:
    """The fast trace (probes without gradients) and one that runs every tensor update agree bit for bit."""
    for name, (plan, metrics) in CASES.items():
        fast = tracing.trace(plan, 40, metrics=metrics)
        full = tracing.trace(plan, 40, metrics=metrics, updates=True)
        for h in fast:
            np.testing.assert_array_equal(fast[h], full[h], err_msg=f"{name}: {h}")
        np.testing.assert_array_equal(fast.applied["lr"], full.applied["lr"], err_msg=name)
        assert fast.fidelity == full.fidelity


def test_trace_reads_the_mirror_probes_once_per_window() -> None:
    """Windows of the one-hot mirror (WINDOW updates per read) end anywhere: a trace of WINDOW + 3 updates is exact."""
    plan, _ = CASES["cosine_restarts"]
    n = tracing.WINDOW + 3
    tr = tracing.trace(plan, n)
    np.testing.assert_array_equal(tr.applied["lr"], f32(optbridge.trace(plan, n)["lr"]))


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


def test_the_probe_sgd_is_megengines_sgd_without_momentum() -> None:
    """The trace's mirror for MegEngine's own classes: bit for bit megengine.optimizer.SGD(momentum=0)."""
    rs = np.random.RandomState(5)
    a, b = (mge.Parameter(rs.randn(64).astype(np.float32)) for _ in range(2))
    b[...] = a
    probe, sgd = tracing.ProbeSGD([a], lr=0.1), mopt.SGD([b], lr=0.1)
    for lr in list(rs.uniform(1e-6, 1.0, 50)) + [0.0, 1e-30, 3.0]:
        g = mge.tensor(rs.randn(64).astype(np.float32))
        a.grad = b.grad = g
        probe.param_groups[0]["lr"] = sgd.param_groups[0]["lr"] = float(lr)
        probe.step()
        sgd.step()
        np.testing.assert_array_equal(a.numpy(), b.numpy())
