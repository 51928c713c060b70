"""from_mindspore: list-function specs, LearningRateSchedule cells, nn optimizers, experimental schedulers.

Rules: list functions are float64 Python in MindSpore: the imported plan's reference
trace equals them within 1e-12 relative. Cells compute in float32: the plan's
reference, rounded to float32, equals ``cell(k)`` within 4 ulps of ``max_lr``
(CosineDecayLR's cancellation near min_lr; the others are within 2 ulps of the
value). Experimental schedulers recurse in float32: ``(k + 4) * 2**-21`` relative
to the peak lr.
"""

from __future__ import annotations

import dataclasses

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

    native = optbridge.to_mindspore(src, Net(), form="cell", optimizer="native", total_steps=50)  # nn.Adam, cells
    assert optbridge.from_mindspore(native.optimizer) == dataclasses.replace(src, total_steps=50)
    cells = [native.lr["x"], native.lr["y"]]  # the LearningRateSchedule cells themselves read back too
    back = [optbridge.from_mindspore(c) for c in cells]
    assert back[0].schedule["lr"] == ir.OneCycle(total_steps=50) and not back[1].schedule
    assert [b.optimizers[0].options["lr"] for b in back] == [1e-3, pytest.approx(1e-2)]
    # an optimizer to_mindspore built (here optbridge's exact Adam, driven) reads back as its part of the plan,
    # started where it stands
    setup = optbridge.to_mindspore(src, Net(), form="cell", total_steps=50)
    assert optbridge.from_mindspore(setup.optimizer) == dataclasses.replace(src, total_steps=50)
    for _ in range(10):
        setup.optimizer(ms.mutable(tuple(Tensor(np.ones(p.shape, np.float32)) for p in setup.optimizer.parameters)))
        setup.step()
    later = optbridge.from_mindspore(setup.optimizer)
    assert later.total_steps == 40
    np.testing.assert_allclose(optbridge.trace(later, 40)["lr"], optbridge.trace(src, 40, start=10)["lr"],
                               rtol=1e-12, atol=0)


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
    from optbridge_adapters.mindspore.schedulers import lambda_function
    opt = mopt.AdamW([{"params": [_p("rt")], "lr": 1e-3, "weight_decay": 0.05}], lr=1e-3)
    back = optbridge.from_mindspore(opt, scheduler=MLS.LambdaLR(opt, lambda_function(src.schedule["lr"].expr)))
    assert back.schedule["lr"] == src.schedule["lr"] and back.optimizers[0].type == "AdamW"
    opt = mopt.SGD([_p("r1")], lr=0.1)
    with pytest.raises(optbridge.ConfigError, match="Python function"):
        optbridge.from_mindspore(opt, scheduler=MLS.LambdaLR(opt, lambda e: 0.9))


@pytest.mark.parametrize("make", [
    lambda o: MLS.StepLR(o, 3, 0.5), lambda o: MLS.CosineAnnealingLR(o, 20, 1e-3),
    lambda o: MLS.SequentialLR(o, [MLS.LinearLR(o, 0.1, 1.0, 5), MLS.CosineAnnealingLR(o, 30)], [5])],
    ids=["StepLR", "CosineAnnealingLR", "SequentialLR"])
def test_stepped_scheduler_starts_where_it_stands(make) -> None:
    """A scheduler stepped k times: update 0 of the plan is the optimizer's next update (as from_torch)."""
    opt = mopt.SGD([{"params": [_p("s1")]}, {"params": [_p("s2")], "lr": 0.02}], lr=0.1)
    sched = make(opt)
    for _ in range(7):
        sched.step()
    plan = optbridge.from_mindspore(opt, scheduler=sched, total_steps=30)
    assert plan.total_steps == 30
    got = _ms_trace(opt, sched, 30)
    ref = _ref(plan, 30)
    allowed = (np.arange(30) + 11) * 2.0**-21 * np.abs(ref).max(axis=1, keepdims=True)
    assert (np.abs(got - ref) <= allowed).all()


def test_stepped_plateau_and_nn_global_step() -> None:
    opt = mopt.SGD([_p("q1")], lr=0.1)
    sched = MLS.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    for m in (1.0, 2.0, 2.0):
        sched.step(Tensor(m, ms.float32))
    plan = optbridge.from_mindspore(opt, scheduler=sched)
    node = plan.schedule["lr"]
    assert (node.best, node.bad_steps, node.cooldown_left) == (1.0, 0, 0)  # reduced at the third metric
    assert plan.groups[0].options["lr"] == float(np.float32(0.05))
    lrs = [float(opt.param_groups[0]["lr"].asnumpy())]
    for m in (2.0, 2.0):
        sched.step(Tensor(m, ms.float32))
        lrs.append(float(opt.param_groups[0]["lr"].asnumpy()))
    np.testing.assert_allclose(optbridge.trace(plan, 3, metrics=[2.0, 2.0])["lr"][0], lrs, rtol=1e-7)
    w = _p("q2")
    nn_opt = nn.SGD([{"params": [w], "lr": [0.1, 0.2, 0.3, 0.4, 0.5]}], learning_rate=[0.1, 0.2, 0.3, 0.4, 0.5])
    for _ in range(2):
        nn_opt((Tensor(np.ones(1, np.float32)),))
    plan = optbridge.from_mindspore(nn_opt, step_unit="iter", steps_per_epoch=1)
    assert plan.total_steps == 3 and plan.steps_per_epoch == 1
    np.testing.assert_allclose(_ref(plan, 3)[0], [0.3, 0.4, 0.5], rtol=1e-7)
    with pytest.raises(optbridge.ConfigError, match="total_steps: must be at most the 3 updates"):
        optbridge.from_mindspore(nn_opt, total_steps=4)


def test_exact_optimizer_reads_its_current_hyperparameters() -> None:
    from optbridge_adapters.mindspore import optimizers as exact
    opt = exact.Adam([{"params": [_p("x1")], "lr": 1e-3, "betas": (0.9, 0.99)}], weight_decay=0.1)
    ms.ops.assign(opt.hyper(0, "beta1"), Tensor(0.85, ms.float64))

    class Named(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.layer = opt.parameters[0]

    plan = optbridge.from_mindspore(opt, model=Named())
    g = plan.groups[0]
    assert plan.optimizers[0].type == "Adam" and g.options["betas"] == (0.85, 0.99)
    assert g.options["weight_decay"] == pytest.approx(0.1) and g.select[0].regex == ("layer",)
