"""Groups that join mid-run (``start_step``, e.g. Lightning's BackboneFinetuning) on MegEngine.

to_megengine builds the optimizer over the groups trained from update 0 and the
PlanScheduler calls ``add_param_group`` before the joining update (optbridge's
optimizers create state lazily, as torch does). Checked by hand: SGD with gradient 1
moves a parameter by exactly ``-float32(lr)`` per update, and not at all before its
group joins; Adam's first update after joining is a first update (bias correction of
step 1: ``lr * g / (|g| + eps)``), not the continuation of a state built while waiting.
"""

from __future__ import annotations

import copy

import megengine as mge
import numpy as np
import pytest

import optbridge
from optbridge.errors import UnsupportedError


def _plan(opt: dict, start: int = 3, both_late: bool = False) -> optbridge.Plan:
    return optbridge.load({"optbridge": 1, "optimizer": opt, "total_steps": 10, "groups": [
        {"name": "head", "params": ["head"], **({"start_step": start} if both_late else {})},
        {"name": "body", "params": ["body"], "lr": 0.05, "start_step": start}],
        "schedule": {"lr": {"kind": "cosine", "steps": 10}}})


def _run(plan, steps=10):
    ps = {"head": mge.Parameter(np.zeros(2, np.float32)), "body": mge.Parameter(np.zeros(2, np.float32))}
    setup = optbridge.to_megengine(plan, ps)
    out = []
    for k in range(steps):
        for p in ps.values():
            p._reset(mge.tensor(np.zeros(2, np.float32)))  # from 0, the change is exactly the update
            p.grad = mge.tensor(np.ones(2, np.float32))
        setup.optimizer.step()
        out.append({n: 0.0 - float(p.numpy()[0]) for n, p in ps.items()})
        if k + 1 < steps:
            setup.scheduler.step()
    return setup, out


def test_sgd_group_joins_at_its_update():
    plan = _plan({"type": "SGD", "lr": 0.1})
    setup, moved = _run(plan)
    ref = optbridge.trace(plan, 10)["lr"]
    assert all(m["body"] == 0.0 for m in moved[:3])                    # not trained before update 3
    np.testing.assert_array_equal([m["body"] for m in moved[3:]], np.float32(ref[1, 3:]).astype(np.float64))
    np.testing.assert_array_equal([m["head"] for m in moved], np.float32(ref[0]).astype(np.float64))
    assert len(setup.optimizer.param_groups) == 2
    notes = [f.detail for f in setup.fidelity if f.hyper == "optimizer"]
    assert any("joins mid-run" in d for d in notes)                    # MegEngine's own SGD could not take it


def test_adam_state_starts_at_the_join():
    setup, moved = _run(_plan({"type": "Adam", "lr": 0.1}))
    lr3 = optbridge.trace(_plan({"type": "Adam", "lr": 0.1}), 10)["lr"][1, 3]
    assert moved[3]["body"] == pytest.approx(lr3 / (1 + 1e-8), rel=1e-6)  # a first Adam step: lr * g / (|g| + eps)


def test_trace_is_nan_before_the_join():
    plan = _plan({"type": "AdamW", "lr": 0.01})
    tr = optbridge.trace(plan, 10, backend="megengine")
    ref = optbridge.trace(plan, 10)
    assert np.isnan(tr.applied["lr"][1, :3]).all() and np.isnan(tr["lr"][1, :3]).all()
    np.testing.assert_array_equal(tr.applied["lr"][1, 3:], np.float32(ref["lr"][1, 3:]))


def test_what_cannot_join_is_refused_with_its_path():
    with pytest.raises(UnsupportedError) as info:
        optbridge.to_megengine(_plan({"type": "SGD", "lr": 0.1}, both_late=True),
                               {"head": mge.Parameter(np.zeros(2, np.float32)),
                                "body": mge.Parameter(np.zeros(2, np.float32))})
    assert info.value.node == "groups.head.start_step"
    with pytest.raises(UnsupportedError) as info:
        optbridge.to_megengine(_plan({"type": "SGD", "lr": 0.1}), {"head": mge.Parameter(np.zeros(2, np.float32)),
                                                                  "body": mge.Parameter(np.zeros(2, np.float32))},
                               optimizer="native")
    assert info.value.node == "optimizer.groups.body.start_step"


@pytest.mark.parametrize("optimizer_first", [False, True])
def test_resume_past_the_join_continues_bit_for_bit(optimizer_first):
    """Either order: the scheduler's state (the groups whose update has come join) or the optimizer's (its
    wrapped load_state_dict adds the groups the saved state holds) first."""
    plan = _plan({"type": "Adam", "lr": 0.1})
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(2).astype(np.float32) for _ in range(10)]

    def fresh():
        ps = {"head": mge.Parameter(np.ones(2, np.float32)), "body": mge.Parameter(np.ones(2, np.float32))}
        return ps, optbridge.to_megengine(plan, ps)

    def run(ps, setup, ks):
        for k in ks:
            for p in ps.values():
                p.grad = mge.tensor(grads[k])
            setup.optimizer.step()
            if k + 1 < 10:
                setup.scheduler.step()

    ps, setup = fresh()
    run(ps, setup, range(10))
    straight = {n: p.numpy().copy() for n, p in ps.items()}
    ps, setup = fresh()
    run(ps, setup, range(6))
    saved = setup.scheduler.state_dict(), setup.optimizer.state_dict(), {n: p.numpy().copy() for n, p in ps.items()}
    ps, setup = fresh()
    for n, p in ps.items():
        p._reset(mge.tensor(saved[2][n]))
    if optimizer_first:
        setup.optimizer.load_state_dict(copy.deepcopy(saved[1]))
        assert len(setup.optimizer.param_groups) == 2                  # body joined: the saved state holds it
        setup.scheduler.load_state_dict(saved[0])
    else:
        setup.scheduler.load_state_dict(saved[0])
        assert len(setup.optimizer.param_groups) == 2                  # body joined (update 6 >= 3)
        setup.optimizer.load_state_dict(copy.deepcopy(saved[1]))
    run(ps, setup, range(6, 10))
    for n, p in ps.items():
        np.testing.assert_array_equal(p.numpy(), straight[n])
