"""The update guard and the driver: one horizon policy, a driver that was not stepped, resume, plateau metrics.

Every optimizer ``to_mindspore`` builds is guarded. Called from Python (PyNative, or a
GRAPH-mode optimizer called directly) an update past the schedule's end raises
:class:`optbridge.source.PastHorizon` naming the update, the horizon and its cause,
and an update ``setup.step()`` was not called for raises
:class:`optbridge_adapters.mindspore.guard.NotStepped`; nothing changes before the
error (the parameters are checked bit for bit). Inside a compiled training cell
(GRAPH mode) the same checks run as ``ops.Assert`` (MindSpore's ``RuntimeError``).
Values are compared exactly: what the driver writes is ``float32`` (or float64 for
the torch-exact optimizers) of the reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from mindspore import Parameter, Tensor, nn  # noqa: E402

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan, Selector  # noqa: E402
from optbridge.source import PastHorizon  # noqa: E402
from optbridge_adapters.mindspore.guard import NotStepped  # noqa: E402


class One(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.w = Parameter(Tensor(np.zeros(2, np.float32)), name="w")

    def construct(self):
        return self.w.sum()


def _plan(kind: str, node: ir.Node | None = None, total: int | None = 4, **options: float) -> Plan:
    return Plan(optimizers=(OptimizerSpec(type=kind, options={"lr": 0.1, **options}),),
                schedule={"lr": node or ir.Cosine(steps=4)}, total_steps=total)


def _grads(opt) -> tuple:
    return ms.mutable(tuple(Tensor(np.ones(p.shape, np.float32)) for p in opt.parameters))


def _run(setup, n: int, step: bool = True) -> None:
    for _ in range(n):
        setup.optimizer(_grads(setup.optimizer))
        if step:
            setup.step()


@pytest.mark.parametrize("kind,form", [("SGD", "list"), ("SGD", "cell"), ("AdamW", "list"), ("AdamW", "cell"),
                                       ("SGD", "experimental"), ("Adam", "list")])
def test_past_the_end_raises_the_optbridge_error_before_anything_changes(kind: str, form: str) -> None:
    """The issue: SGD lists died with MindSpore's raw Gather error, AdamW lists held the last lr silently."""
    net = One()
    setup = optbridge.to_mindspore(_plan(kind), net, form=form)
    _run(setup, 4)  # the last step() moves to the horizon and writes nothing
    before = net.w.asnumpy().copy()
    with pytest.raises(PastHorizon, match=r"update 4 is past the end of the schedule: the plan is defined for 4 "
                                          r"updates \(total_steps\)") as info:
        setup.optimizer(_grads(setup.optimizer))
    assert (info.value.step, info.value.horizon) == (4, 4)
    np.testing.assert_array_equal(net.w.asnumpy(), before)
    assert "Gather" not in str(info.value)


def test_the_schedule_end_is_the_horizon_without_total_steps() -> None:
    """A one_cycle ends after its total_steps (torch raises there): the cell form's optimizer refuses update 5."""
    plan = _plan("SGD", ir.OneCycle(total_steps=5), total=None)
    setup = optbridge.to_mindspore(plan, One(), form="cell")
    _run(setup, 6)  # update 5 extrapolates (torch's convention), update 6 has no value
    with pytest.raises(PastHorizon, match="one_cycle ends after total_steps=5"):
        setup.optimizer(_grads(setup.optimizer))


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
def test_a_forgotten_step_raises_instead_of_freezing_the_lr(form: str) -> None:
    """The issue: AdamW in list or cell form froze its lr at the step-0 value when setup.step() was forgotten."""
    net = One()
    setup = optbridge.to_mindspore(_plan("AdamW", total=10), net, form=form)
    assert setup.needs_step
    _run(setup, 1, step=False)
    with pytest.raises(NotStepped, match=r"update 1 was not stepped for: setup.step\(\) was called 0 time\(s\)"):
        setup.optimizer(_grads(setup.optimizer))
    setup.step()
    setup.step()  # one too many
    with pytest.raises(NotStepped, match="more than the 1 update"):
        setup.optimizer(_grads(setup.optimizer))


def test_nn_lists_and_cells_need_no_step() -> None:
    setup = optbridge.to_mindspore(_plan("SGD"), One(), form="list")
    assert not setup.needs_step and setup.driver is None
    _run(setup, 4, step=False)


def test_graph_mode_training_cell_checks_in_the_graph() -> None:
    """Inside nn.TrainOneStepCell (GRAPH mode) Python does not run per update: the graph's Assert stops the update."""
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = One()
        setup = optbridge.to_mindspore(_plan("AdamW", total=10), net, form="list")
        train = nn.TrainOneStepCell(net, setup.optimizer)
        train()
        setup.step()
        train()
        before = net.w.asnumpy().copy()
        with pytest.raises(RuntimeError, match="assert failed"):  # setup.step() was forgotten
            train()
        np.testing.assert_array_equal(net.w.asnumpy(), before)
    finally:
        ms.set_context(mode=prev)


def test_values_match_the_reference_and_resume_from_state() -> None:
    plan = _plan("AdamW", ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=3), ir.Cosine(steps=7)),
                                      boundaries=(3,)), total=10)
    ref = optbridge.trace(plan, 10)["lr"][0]
    setup = optbridge.to_mindspore(plan, One(), form="experimental", scheduler="driver")
    lr = setup.optimizer.param_groups[0]["lr"]
    got = []
    for _ in range(6):
        got.append(float(lr.asnumpy()))
        _run(setup, 1)
    assert got == ref[:6].astype(np.float32).tolist()
    state = setup.state_dict()
    assert state["k"] == 6 and len(state["fingerprint"]) == 16
    net2 = One()
    again = optbridge.to_mindspore(plan, net2, form="experimental", scheduler="driver")
    again.load_state_dict(state)
    ms.ops.assign(again.optimizer.optbridge_updates, Tensor(6, ms.int32))  # the optimizer checkpoint holds it
    assert float(again.optimizer.param_groups[0]["lr"].asnumpy()) == float(np.float32(ref[6]))
    _run(again, 1)
    other = optbridge.to_mindspore(_plan("AdamW", total=10), One(), form="experimental", scheduler="driver")
    with pytest.raises(optbridge.ConfigError, match="state.fingerprint: was saved by a setup of other schedules"):
        other.load_state_dict(state)


PLATEAU = ir.Plateau(factor=0.5, patience=1)
METRICS = [1.0, 0.9, 0.95, 0.97, 0.99, 0.5, 0.6, 0.7]


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
def test_plateau_runs_in_every_form_from_step_metrics(form: str) -> None:
    """A plateau needs the metric at run time: in the list and cell forms a driven Parameter holds the lr (nn
    optimizers read it through a ParameterCell); the experimental form uses the driver with scheduler='driver'."""
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": PLATEAU})
    ref = optbridge.trace(plan, 8, metrics=METRICS)["lr"][0]
    net = One()
    setup = optbridge.to_mindspore(plan, net, form=form, scheduler="driver", total_steps=20 if form == "list" else None)
    assert [f.form for f in setup.fidelity] == ["table"]
    applied = []
    for m in METRICS[:7]:
        ms.ops.assign(net.w, Tensor(np.zeros(2, np.float32)))  # from 0, plain SGD with gradient 1 gives -lr exactly
        setup.optimizer(_grads(setup.optimizer))
        applied.append(-float(net.w.asnumpy()[0]))
        setup.step(m)
    assert len(set(ref[:7].tolist())) >= 2
    assert applied == ref[:7].astype(np.float32).tolist()
    setup.optimizer(_grads(setup.optimizer))
    setup.step()  # no metric for plateau step 7: the next update has no lr
    with pytest.raises(PastHorizon, match=r"needs 8 metric\(s\), got 7"):
        setup.optimizer(_grads(setup.optimizer))


def test_plateau_metrics_given_up_front() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": PLATEAU})
    setup = optbridge.to_mindspore(plan, One(), form="list", metrics=METRICS[:3], total_steps=8)
    _run(setup, 2)
    _run(setup, 1, step=False)
    with pytest.raises(optbridge.ConfigError, match="plateau step 2 already has its metric"):
        setup.step(0.5)
    with pytest.raises(optbridge.ConfigError, match="metrics\\[1\\]: must be a finite number"):
        optbridge.to_mindspore(plan, One(), form="list", metrics=[1.0, float("nan")], total_steps=8)


def test_native_plateau_waits_for_its_metric() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": PLATEAU})
    setup = optbridge.to_mindspore(plan, One(), form="experimental", total_steps=8)
    assert [f.form for f in setup.fidelity] == ["native"] and "ReduceLROnPlateau" in setup.fidelity[0].detail
    _run(setup, 1, step=False)
    setup.step()  # no metric
    with pytest.raises(PastHorizon, match="ReduceLROnPlateau needs the metric of plateau step 0"):
        setup.optimizer(_grads(setup.optimizer))


def test_two_optimizers_one_driver() -> None:
    groups = (Group(name="a", select=(Selector(names=("w",)),)),)
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", name="s", options={"lr": 0.1}, groups=groups),
                            OptimizerSpec(type="AdamW", name="t", options={"lr": 0.01},
                                          groups=(Group(name="b", select=(Selector(rest=True),)),))),
                schedule={"lr": ir.Exponential(gamma=0.5)}, total_steps=3)

    class Two(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.w = Parameter(Tensor(np.zeros(1, np.float32)), name="w")
            self.v = Parameter(Tensor(np.zeros(1, np.float32)), name="v")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = optbridge.to_mindspore(plan, Two(), form="list")
    assert len(setup.optimizers) == 2
    for _ in range(3):
        for o in setup.optimizers:
            o(_grads(o))
        setup.step()
    for o in setup.optimizers:
        with pytest.raises(PastHorizon):
            o(_grads(o))


def test_driver_writes_the_same_values_eagerly_then_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver writes eagerly (one ops.assign per target) for its first EAGER_WRITES writes, then through its
    compiled Assigner: every update holds the reference rounded to the target's dtype either way (here the switch
    comes after update 3)."""
    from optbridge_adapters.mindspore import driver as drv
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9}),),
                schedule={"lr": ir.Cosine(steps=10), "momentum": ir.Linear(start_factor=0.5, steps=10)},
                total_steps=10)
    ref = optbridge.trace(plan, 10)
    setup = optbridge.to_mindspore(plan, One(), form="experimental", scheduler="driver")
    d = setup.driver
    assert d is not None and len(d.targets) == 2
    monkeypatch.setattr(drv, "EAGER_WRITES", 3 * (len(d.targets) + 1))
    got: dict[str, list[float]] = {s.hyper: [] for s in d.slots}
    assert set(got) == {"lr", "momentum"}
    for k in range(10):
        for s, t in zip(d.slots, d.targets):
            got[s.hyper].append(float(t.asnumpy()))
        assert (d._eager >= drv.EAGER_WRITES) == (k >= 3), k  # updates 1-3 written eagerly, 4-9 compiled
        _run(setup, 1)
    for s, t in zip(d.slots, d.targets):
        dtype = np.float32 if t.dtype == ms.float32 else np.float64
        assert got[s.hyper] == ref[s.hyper][0].astype(dtype).tolist(), s.hyper
