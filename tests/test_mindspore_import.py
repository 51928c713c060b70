"""from_mindspore: list-function specs, LearningRateSchedule cells, nn optimizers, experimental schedulers.

Rules: list functions are float64 Python in MindSpore: the imported plan's reference
trace equals them within 1e-12 relative. Cells compute in float32: the plan's
reference, rounded to float32, equals ``cell(k)`` within 4 ulps of ``max_lr``
(CosineDecayLR's cancellation near min_lr; the others are within 2 ulps of the
value). Experimental schedulers recurse in float32: ``(k + 4) * 2**-21`` relative
to the peak lr.
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from mindspore import Parameter, Tensor, nn  # noqa: E402
from mindspore.experimental import optim as mopt  # noqa: E402
from mindspore.experimental.optim import lr_scheduler as MLS  # noqa: E402

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan, Selector  # noqa: E402
from optbridge_adapters.mindspore.read import read_spec  # noqa: E402

N = 200


def _ref(plan: Plan, n: int = N) -> np.ndarray:
    return optbridge.trace(plan, n)["lr"]


def test_list_function_specs() -> None:
    spec = {"type": "cosine_decay_lr", "min_lr": 1e-4, "max_lr": 0.1, "total_step": N, "step_per_epoch": 10,
            "decay_epoch": 15}
    plan = read_spec(spec)
    np.testing.assert_allclose(_ref(plan)[0], nn.cosine_decay_lr(1e-4, 0.1, N, 10, 15), rtol=1e-12, atol=0)
    specs = [{"type": "warmup_lr", "learning_rate": 0.1, "total_step": 40, "step_per_epoch": 10, "warmup_epoch": 4},
             {"type": "polynomial_decay_lr", "learning_rate": 0.1, "end_learning_rate": 1e-3, "total_step": 160,
              "step_per_epoch": 10, "decay_epoch": 16, "power": 2.0}]
    plan = read_spec(specs, optimizer="Adam")
    expected = nn.warmup_lr(0.1, 40, 10, 4) + nn.polynomial_decay_lr(0.1, 1e-3, 160, 10, 16, 2.0)
    assert plan.optimizers[0].type == "Adam" and plan.total_steps == N
    np.testing.assert_allclose(_ref(plan)[0], expected, rtol=1e-12, atol=0)


CELLS = [nn.ExponentialDecayLR(0.1, 0.9, 7, True), nn.NaturalExpDecayLR(0.1, 0.01, 5, False),
         nn.InverseDecayLR(0.1, 0.2, 3, False), nn.CosineDecayLR(1e-3, 0.1, 150),
         nn.PolynomialDecayLR(0.1, 1e-3, 60, 2.0, True), nn.WarmUpLR(0.1, 50)]


@pytest.mark.parametrize("cell", CELLS, ids=[type(c).__name__ for c in CELLS])
def test_native_cells(cell) -> None:
    plan = optbridge.from_mindspore(cell)
    got = cell(Tensor(np.arange(N, dtype=np.int32))).asnumpy().astype(np.float64)
    ref = _ref(plan)[0].astype(np.float32).astype(np.float64)
    ulp = np.spacing(np.float32(0.1))
    assert np.abs(got - ref).max() <= 4 * ulp


def test_nn_optimizer_groups_and_optbridge_cells_round_trip() -> None:
    a = Parameter(Tensor(np.zeros(2, np.float32)), name="a.weight")
    b = Parameter(Tensor(np.zeros(2, np.float32)), name="b.weight")
    c = Parameter(Tensor(np.zeros(2, np.float32)), name="c.bias")
    opt = nn.SGD([{"params": [a], "lr": [0.1, 0.05, 0.02], "weight_decay": 0.01},
                  {"params": [b, c], "lr": nn.WarmUpLR(0.2, 3)}], learning_rate=0.3, momentum=0.9)
    plan = optbridge.from_mindspore(opt)
    assert plan.optimizers[0].type == "SGD" and plan.optimizers[0].options["momentum"] == pytest.approx(0.9)
    g0, g1 = plan.groups
    assert g0.options["weight_decay"] == pytest.approx(0.01) and isinstance(g0.schedule["lr"], ir.Table)
    assert g1.schedule["lr"] == ir.Linear(start_factor=0.0, end_factor=1.0, steps=3)
    assert plan.total_steps == 3
    np.testing.assert_allclose(_ref(plan, 3), [[0.1, 0.05, 0.02], [0.0, 0.2 / 3, 0.4 / 3]], rtol=1e-7)
    # an optbridge setup reads back to the same schedules
    src = Plan(optimizers=(OptimizerSpec(type="Adam", options={"lr": 1e-3}, groups=(
        Group(name="x", select=(Selector(names=("a.*",)),), schedule={"lr": ir.OneCycle(total_steps=50)}),
        Group(name="y", select=(Selector(rest=True),), options={"lr": 1e-2, "weight_decay": 0.1}))),))

    class Net(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Dense(2, 2)
            self.b = nn.Dense(2, 2)

    setup = optbridge.to_mindspore(src, Net(), form="cell")
    back = optbridge.from_mindspore(setup.optimizer)
    assert back.optimizers[0].type == "Adam"
    assert [g.schedule.get("lr") for g in back.groups] == [ir.OneCycle(total_steps=50), None]
    assert [g.options["lr"] for g in back.groups] == [1e-3, pytest.approx(1e-2)]


def test_ungrouped_weight_decay_name_filter_becomes_explicit() -> None:
    w = Parameter(Tensor(np.ones(2, np.float32)), name="fc.weight")
    gm = Parameter(Tensor(np.ones(2, np.float32)), name="bn.gamma")
    plan = optbridge.from_mindspore(nn.Momentum([w, gm], learning_rate=0.1, momentum=0.9, weight_decay=0.5))
    wds = {g.select[0].regex[0].replace("\\", ""): g.options["weight_decay"] for g in plan.groups}
    assert wds == {"fc.weight": 0.5, "bn.gamma": 0.0}


def _ms_trace(opt, sched, n: int) -> np.ndarray:
    out = []
    for _ in range(n):
        out.append([float(g["lr"].asnumpy()) for g in opt.param_groups])
        sched.step()
    return np.array(out).T


def _p(name: str) -> Parameter:
    return Parameter(Tensor(np.zeros(1, np.float32)), name=name)


@pytest.mark.parametrize("make", [
    lambda o: MLS.StepLR(o, 30, 0.5),
    lambda o: MLS.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=20, step_size_down=30, mode="triangular2"),
    lambda o: MLS.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-4),
    lambda o: MLS.SequentialLR(o, [MLS.LinearLR(o, 0.1, 1.0, 20), MLS.CosineAnnealingLR(o, 100)], [20]),
    lambda o: MLS.MultiStepLR(o, [30, 60, 60], 0.5),
], ids=["StepLR", "CyclicLR", "WarmRestarts", "SequentialLR", "MultiStepLR"])
def test_experimental_schedulers(make) -> None:
    opt = mopt.SGD([{"params": [_p("e1")]}, {"params": [_p("e2")], "lr": 0.02, "momentum": 0.5}], lr=0.1,
                   momentum=0.9)
    sched = make(opt)
    plan = optbridge.from_mindspore(opt, scheduler=sched)
    assert [g.options["momentum"] for g in plan.groups] == [0.9, 0.5]
    n = 120
    ref = _ref(plan, n)
    got = _ms_trace(opt, sched, n)
    allowed = (np.arange(n) + 4) * 2.0**-21 * np.abs(ref).max(axis=1, keepdims=True)
    assert (np.abs(got - ref) <= allowed).all()


def test_experimental_round_trip_and_refusals() -> None:
    src = Plan(optimizers=(OptimizerSpec(type="AdamW", options={"lr": 1e-3, "weight_decay": 0.05}),),
               schedule={"lr": ir.Lambda(expr="min(1, (step + 1) / 10)")})

    class One(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.w = Parameter(Tensor(np.zeros(2, np.float32)), name="w")

    setup = optbridge.to_mindspore(src, One(), form="experimental", total_steps=100)
    back = optbridge.from_mindspore(setup.optimizer, scheduler=setup.steppers[0].scheduler)
    assert back.schedule["lr"] == src.schedule["lr"] and back.optimizers[0].type == "AdamW"
    opt = mopt.SGD([_p("r1")], lr=0.1)
    with pytest.raises(optbridge.ConfigError, match="Python function"):
        optbridge.from_mindspore(opt, scheduler=MLS.LambdaLR(opt, lambda e: 0.9))
    opt = mopt.SGD([_p("r2")], lr=0.1)
    s = MLS.StepLR(opt, 3, 0.5)
    s.step()
    with pytest.raises(optbridge.ConfigError, match="last_epoch: must be 0"):
        optbridge.from_mindspore(opt, scheduler=s)
