"""The driver on the core (optbridge.slots + optbridge.source) and its one horizon policy, on real MegEngine.

* stepping the driver to the horizon (the step a training loop makes after its
  last update) writes nothing and does not raise;
* the MegEngine ``optimizer.step()`` that would use a value at or after the
  horizon raises ``PastHorizon`` (naming the update, the horizon and its cause)
  before any parameter changes: total_steps, one_cycle's end, a table's end, a
  missing plateau metric;
* an ``optimizer.step()`` made while the driver still stands at the previous update
  raises ``NotStepped``, naming the update;
* MegEngine has no step pre-hook: the guard is the instance attribute ``optimizer.step``.
"""

from __future__ import annotations

import megengine as mge
import megengine.optimizer as mopt
import numpy as np
import pytest

import optbridge
from optbridge import ir
from optbridge.errors import EvaluationError, OptbridgeError
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge.slots import fingerprint, slots
from optbridge.source import PastHorizon
from optbridge_adapters.megengine.backend import to_megengine
from optbridge.source import NotStepped
from optbridge_adapters.megengine.driver import PlanScheduler, StepGuard


def P(*values: float) -> mge.Parameter:
    return mge.Parameter(np.asarray(values or (0.0,), np.float32))


def sgd(schedule: dict, *, total_steps: int | None = None, **options) -> Plan:
    return Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, **options}),), schedule=schedule,
                total_steps=total_steps)


def one_update(setup, p) -> None:
    p.grad = mge.tensor(np.ones(p.shape, np.float32))
    setup.optimizer.step()


@pytest.mark.parametrize("schedule, total, n, cause", [
    ({"lr": ir.Table(values=(1.0, 0.5, 0.25))}, None, 3, "a table of 3 values without hold"),
    ({"lr": ir.Cosine(steps=10)}, 10, 10, "total_steps"),
    ({"lr": ir.OneCycle(total_steps=5)}, None, 6, "one_cycle ends after total_steps=5"),
])
def test_the_step_to_the_horizon_writes_nothing_and_the_update_there_raises(schedule, total, n, cause) -> None:
    plan = sgd(schedule, total_steps=total)
    p = P(0.0)
    setup = to_megengine(plan, {"w": p})
    ref = optbridge.trace(plan, n)["lr"][0]
    seen = []
    for _ in range(n):  # a training loop over every update the plan defines
        seen.append(setup.optimizer.param_groups[0]["lr"])
        one_update(setup, p)
        setup.scheduler.step()  # the last one reaches the horizon: nothing written, nothing raised
    assert seen == list(ref)
    assert setup.scheduler.current_epoch == n and setup.optimizer.param_groups[0]["lr"] == ref[-1]
    setup.scheduler.step()  # stepping further writes nothing either
    before = p.numpy().copy()
    setup.scheduler.step(epoch=n)
    with pytest.raises(PastHorizon, match=f"update {n} is past the end of the schedule") as e:
        one_update(setup, p)
    assert e.value.step == n and e.value.horizon == n and cause in str(e.value)
    assert isinstance(e.value, EvaluationError) and isinstance(e.value, OptbridgeError)
    np.testing.assert_array_equal(p.numpy(), before)  # refused before any tensor changed


def test_a_missing_plateau_metric_is_the_horizon_until_it_comes() -> None:
    plan = sgd({"lr": ir.Plateau(patience=0, factor=0.5)})
    p = P(0.0)
    setup = to_megengine(plan, {"w": p})
    one_update(setup, p)
    setup.scheduler.step()  # no metric: update 1 has no value yet; nothing written, nothing raised
    with pytest.raises(PastHorizon, match=r"plateau value of update 1 needs 1 metric\(s\), got 0"):
        one_update(setup, p)
    setup.scheduler.add_metric(3.0)  # now update 1 is known: written at once
    assert setup.optimizer.param_groups[0]["lr"] == 0.1
    one_update(setup, p)
    setup.scheduler.step(metric=4.0)  # worse than 3.0 with patience 0: halved
    assert setup.optimizer.param_groups[0]["lr"] == 0.05
    one_update(setup, p)


def test_an_update_without_a_driver_step_raises_and_names_it() -> None:
    plan = sgd({"lr": ir.Cosine(steps=100)})
    p = P(0.0)
    setup = to_megengine(plan, {"w": p})
    for _ in range(3):
        one_update(setup, p)
        setup.scheduler.step()
    one_update(setup, p)  # update 3
    before = p.numpy().copy()
    with pytest.raises(NotStepped, match=r"update 4: the schedule driver \(PlanScheduler\) still stands at update 3") \
            as e:
        one_update(setup, p)  # the loop forgot scheduler.step()
    assert e.value.update == 4 and e.value.stepped == 3 and isinstance(e.value, EvaluationError)
    np.testing.assert_array_equal(p.numpy(), before)
    setup.scheduler.step()
    one_update(setup, p)


def test_megengine_multisteplr_is_guarded_too() -> None:
    plan = sgd({"lr": ir.MultiStep(milestones=(2,), gamma=0.5)}, total_steps=4)
    p = P(0.0)
    setup = to_megengine(plan, {"w": p})
    assert type(setup.scheduler) is mopt.MultiStepLR and isinstance(setup.optimizer.step, StepGuard)
    one_update(setup, p)
    with pytest.raises(NotStepped, match="MultiStepLR"):
        one_update(setup, p)
    for _ in range(4):
        setup.scheduler.step()
    with pytest.raises(PastHorizon, match="total_steps"):
        one_update(setup, p)


def test_several_optimizers_each_have_their_guard() -> None:
    g = {n: Group(name=n, select=(Selector(names=(n,)),)) for n in "ab"}
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", name="s", options={"lr": 0.1}, groups=(g["a"],)),
                            OptimizerSpec(type="Adam", name="t", options={"lr": 0.1}, groups=(g["b"],))),
                schedule={"lr": ir.Table(values=(1.0, 0.5))})
    a, b = P(0.0), P(0.0)
    setup = to_megengine(plan, {"a": a, "b": b})
    a.grad = b.grad = mge.tensor(np.ones(1, np.float32))
    setup.optimizer.step()
    setup.scheduler.step()
    setup.optimizer.step()
    setup.scheduler.step()
    with pytest.raises(PastHorizon):
        setup.optimizer.step()  # the MultipleOptimizer's first optimizer refuses first
    with pytest.raises(PastHorizon):
        setup.optimizers[1].step()


def test_a_loaded_state_continues_without_a_false_alarm() -> None:
    plan = sgd({"lr": ir.Cosine(steps=20), "momentum": ir.Linear(start_factor=0.5, steps=10)}, momentum=0.9)
    p = P(0.0)
    setup = to_megengine(plan, {"w": p})
    for _ in range(7):
        one_update(setup, p)
        setup.scheduler.step()
    state = setup.scheduler.state_dict()
    assert state == {"current_epoch": 7, "metrics": [], "fingerprint": fingerprint(
        setup.scheduler.slots, unit="iter", steps_per_epoch=None, total_steps=None)}
    q = P(0.0)
    again = to_megengine(plan, {"w": q})
    one_update(again, q)  # update 0 ...
    again.scheduler.load_state_dict(state)  # ... then the state of update 7: the guard starts afresh
    assert again.optimizer.param_groups[0]["lr"] == setup.optimizer.param_groups[0]["lr"]
    one_update(again, q)
    again.scheduler.step()
    one_update(again, q)


def test_an_explicit_epoch_moves_the_driver_and_the_guard_follows() -> None:
    plan = sgd({"lr": ir.Cosine(steps=20)})
    p = P(0.0)
    setup = to_megengine(plan, {"w": p})
    ref = optbridge.trace(plan, 20)["lr"][0]
    one_update(setup, p)
    setup.scheduler.step(epoch=12)
    assert setup.optimizer.param_groups[0]["lr"] == ref[12]
    one_update(setup, p)


def test_the_newest_driver_owns_the_guard() -> None:
    plan = sgd({"lr": ir.Cosine(steps=20)})
    p = P(0.0)
    setup = to_megengine(plan, {"w": p})
    opt = setup.optimizer
    mine = [s for s in slots(plan)]
    second = PlanScheduler(opt, mine)
    assert opt.step.scheduler is second
    opt.step()
    second.step()
    opt.step()  # the first driver was never stepped again: only the newest one counts


def test_a_plan_without_schedules_or_horizon_needs_no_driver_steps() -> None:
    p = P(0.0)
    setup = to_megengine(sgd({}), {"w": p})
    for _ in range(3):
        one_update(setup, p)  # nothing to drive: no guard, no NotStepped
    assert not isinstance(setup.optimizer.step, StepGuard)
    np.testing.assert_allclose(p.numpy(), [-0.3], rtol=1e-6)


def test_the_trace_raises_where_the_reference_does() -> None:
    plan = sgd({"lr": ir.OneCycle(total_steps=5)})
    with pytest.raises(EvaluationError):
        optbridge.trace(plan, 8)
    with pytest.raises(PastHorizon, match="one_cycle ends after total_steps=5"):
        optbridge.trace(plan, 8, backend="megengine")
    tr = optbridge.trace(plan, 6, backend="megengine")  # torch extrapolates at k = total_steps: so do both
    np.testing.assert_array_equal(tr["lr"], optbridge.trace(plan, 6)["lr"])


def test_metrics_given_up_front_drive_the_plateau_until_they_run_out() -> None:
    plan = sgd({"lr": ir.Plateau(patience=1, factor=0.5)})
    metrics = [3.0, 2.0, 2.5, 2.6, 2.7, 1.0]
    p = P(0.0)
    setup = to_megengine(plan, {"w": p}, metrics=metrics)
    ref = optbridge.trace(plan, len(metrics) + 1, metrics=metrics)["lr"][0]
    assert setup.scheduler.horizon == len(metrics) + 1
    seen = []
    for _ in range(len(metrics) + 1):
        seen.append(setup.optimizer.param_groups[0]["lr"])
        one_update(setup, p)
        setup.scheduler.step()  # no metric: they were all given up front
    assert seen == list(ref) and seen[-1] == 0.05  # reduced once (2.5, 2.6: two bad steps > patience 1)
    with pytest.raises(PastHorizon, match=r"needs 7 metric\(s\), got 6"):
        one_update(setup, p)
