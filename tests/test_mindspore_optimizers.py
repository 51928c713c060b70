"""to_mindspore on real nets: groups, the measured traps, the optimizer choice, and trajectories against torch.

Trajectory tolerances (same float32 initial values and gradients, 100 steps; the
displacement reaches ~20 for SGD and ~0.2 for Adam/AdamW): SGD family
``max |p_ms - p_torch| <= 2e-5`` (float32 noise; semantics.md 5.2 measured up to
2.9e-6); Adam-family ``<= 2e-6`` (measured 3.6e-7). MindSpore's Adam places eps
outside the bias correction: with gradients ~1e-7 it is 6.8e-2 away from torch,
and matches the float64 eps-hat rule stated in the report within 1e-5; with
``optimizer="auto"`` optbridge runs its torch-exact Adam instead.

Scheduled momentum and betas (OneCycleLR / CyclicLR on SGD and Adam) and scheduled
weight decay run on the torch-exact optimizers in every form; torch gets the same
values written into its groups every step. Gradient clipping (per group, over the
optimizer, by value) runs inside the guarded update and is compared with torch's
``clip_grad_norm_`` / ``clip_grad_value_``: the group norm is computed in float64 and
rounded (torch accumulates in float32 lanes), so the trajectories agree to the same
float32 noise bound.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
torch = pytest.importorskip("torch")

from mindspore import Parameter, Tensor, nn  # noqa: E402
from mindspore.experimental import optim as mopt  # noqa: E402

import optbridge  # noqa: E402
import optbridge.evaluate  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan, Selector  # noqa: E402
from optbridge_adapters.mindspore import cells as mindspore_cells  # noqa: E402
from optbridge_adapters.mindspore import driver as mindspore_driver  # noqa: E402
from optbridge_adapters.mindspore import optim as mindspore_optim  # noqa: E402
from optbridge_adapters.mindspore import optimizers as exact  # noqa: E402

EXAMPLES = Path(optbridge.__file__).parent / "examples"


class Net(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Dense(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.head = nn.Dense(3, 2)

    def construct(self, x):
        return self.head(self.bn(self.fc(x)))


class One(nn.Cell):
    """A single float32 parameter vector (named without 'beta'/'gamma')."""

    def __init__(self, p0: np.ndarray) -> None:
        super().__init__()
        self.w = Parameter(Tensor(p0.copy()), name="w")

    def construct(self):
        return self.w.sum()


def _grouped_plan(**opt_options) -> Plan:
    groups = (Group(name="no_decay", select=(Selector(modules=("BatchNorm*",)), Selector(leaf=("bias",))),
                    options={"weight_decay": 0.0}),
              Group(name="rest", select=(Selector(rest=True),)))
    return Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "weight_decay": 0.5, **opt_options},
                                          groups=groups),),
                schedule={"lr": ir.Cosine(steps=10, clamp=True)}, total_steps=10)


# --------------------------------------------------------------------------- groups on a real net


@pytest.mark.parametrize("form", ["list", "cell", "experimental", "auto"])
def test_groups_resolve_on_a_real_net_and_weight_decay_reaches_gamma(form: str) -> None:
    net = Net()
    setup = optbridge.to_mindspore(_grouped_plan(), net, form=form)
    assert setup.groups == ("no_decay", "rest")
    names = {g: sorted(p.name for p in ps) for g, ps in setup.params.items()}
    assert names["no_decay"] == ["bn.beta", "bn.gamma", "fc.bias", "head.bias"]
    assert names["rest"] == ["fc.weight", "head.weight"]
    assert setup.form == ("cell" if form == "auto" else form)  # CosineDecayLR is native
    opt = setup.optimizer
    assert [p.name for p in opt.parameters] and len(opt.parameters) == 6
    # weight decay is explicit per group: a 'gamma' parameter in a decayed group is decayed (no name filter)
    plan2 = _grouped_plan()
    plan2 = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "weight_decay": 0.5},
                                           groups=(Group(name="all", select=(Selector(rest=True),)),)),),
                 schedule={"lr": ir.Cosine(steps=10, clamp=True)}, total_steps=10)
    net2 = Net()
    setup2 = optbridge.to_mindspore(plan2, net2, form=form)
    gamma = net2.bn.gamma
    before = gamma.asnumpy().copy()
    o = setup2.optimizer
    o(ms.mutable(tuple(Tensor(np.zeros(p.shape, np.float32)) for p in o.parameters)))
    np.testing.assert_allclose(gamma.asnumpy(), before * (1 - 0.1 * 0.5), rtol=1e-6)  # decayed by lr * wd
    assert "name filter" in setup2.report


def test_order_params_follow_the_net() -> None:
    net = Net()
    setup = optbridge.to_mindspore(_grouped_plan(), net, form="list")
    assert [p.name for p in setup.optimizer.parameters] == [p.name for p in net.trainable_params()]


# --------------------------------------------------------------------------- traps


def test_static_group_lrs_next_to_a_dynamic_one_are_exact() -> None:
    """MindSpore computes a static group lr beside a dynamic one as lr + 1.0 - 1.0 in float32 (1e-6 -> 9.54e-7,
    1e-8 -> 0); optbridge makes every group's lr dynamic, so 1e-6 and 1e-8 are applied exactly (to float32)."""
    groups = (Group(name="tiny", options={"lr": 1e-6}, schedule={"lr": ir.Constant()}),
              Group(name="tinier", options={"lr": 1e-8}, schedule={"lr": ir.Constant()}),
              Group(name="sched", options={"lr": 0.1}, schedule={"lr": ir.Exponential(gamma=0.9)}))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", groups=groups),), total_steps=5)
    for backend in ("mindspore-list", "mindspore-cell"):
        tr = optbridge.trace(plan, 5, backend=backend)
        assert tr.applied["lr"][0].tolist() == [float(np.float32(1e-6))] * 5
        assert tr.applied["lr"][1].tolist() == [float(np.float32(1e-8))] * 5
    # control: the trap is real in MindSpore 2.10
    a, b = Parameter(Tensor(np.zeros(1, np.float32)), name="ta"), Parameter(Tensor(np.zeros(1, np.float32)), name="tb")
    o = nn.SGD([{"params": [a], "lr": [0.1, 0.1]}, {"params": [b], "lr": 1e-8}], learning_rate=0.1)
    o((Tensor(np.ones(1, np.float32)), Tensor(np.ones(1, np.float32))))
    assert float(b.asnumpy()[0]) == 0.0


def test_nesterov_uses_nn_sgd_not_momentum() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9, "nesterov": True}),),
                schedule={"lr": ir.Constant()}, total_steps=5)
    for form in ("list", "cell"):
        setup = optbridge.to_mindspore(plan, One(np.zeros(3, np.float32)), form=form)
        assert type(setup.optimizer).__mro__[1] is nn.SGD and setup.optimizer.nesterov is True
        assert setup.choices["optimizer"].label == "nn.SGD"
    src = inspect.getsource(mindspore_optim)
    assert "use_nesterov=False" in src and "use_nesterov=True" not in src


def test_adamw_uses_experimental_adamw_where_measured_exact_else_the_exact_one() -> None:
    """nn.AdamWeightDecay is not torch's AdamW; experimental AdamW is, for the options it was measured with."""
    plan = Plan(optimizers=(OptimizerSpec(type="AdamW", options={"lr": 1e-2}),), schedule={"lr": ir.Cosine(steps=5)},
                total_steps=5)
    for form in ("auto", "list", "cell", "experimental"):
        setup = optbridge.to_mindspore(plan, One(np.zeros(3, np.float32)), form=form)
        assert type(setup.optimizer).__mro__[1] is mopt.AdamW
        assert not isinstance(setup.optimizer, nn.AdamWeightDecay)
        assert "experimental.AdamW computes torch's AdamW update" in setup.report
    wd = Plan(optimizers=(OptimizerSpec(type="AdamW", options={"lr": 1e-2, "weight_decay": 0.05}),), total_steps=5)
    setup = optbridge.to_mindspore(wd, One(np.zeros(3, np.float32)))
    assert isinstance(setup.optimizer, exact.AdamW)  # weight_decay 0.05 was not measured on experimental.AdamW
    assert setup.choices["optimizer"].label == "exact AdamW"
    forced = optbridge.to_mindspore(wd, One(np.zeros(3, np.float32)), optimizer="native")
    assert type(forced.optimizer).__mro__[1] is mopt.AdamW


def test_adam_runs_torch_exact_by_default_and_native_on_request() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="Adam", options={"lr": 1e-3}),), total_steps=5)
    setup = optbridge.to_mindspore(plan, One(np.zeros(3, np.float32)))
    assert isinstance(setup.optimizer, exact.Adam)
    assert "eps outside the bias correction (eps-hat)" in setup.report and "0.069" in setup.report
    for form, cls in (("list", nn.Adam), ("experimental", mopt.Adam)):
        native = optbridge.to_mindspore(plan, One(np.zeros(3, np.float32)), form=form, optimizer="native")
        assert type(native.optimizer).__mro__[1] is cls
        assert "NOT torch" in native.report and not native.choices["optimizer"].exact


def test_float32_step_limits() -> None:
    node = ir.Cosine(steps=100, clamp=True)
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": node})
    net = One(np.zeros(3, np.float32))
    setup = optbridge.to_mindspore(plan, net, form="cell", total_steps=2**24 + 10)
    assert [f.form for f in setup.fidelity] == ["generated"]  # native cells cast the step to float32
    with pytest.warns(UserWarning, match=r"2\*\*24 = 16777216"):
        setup = optbridge.to_mindspore(plan, net, form="cell")
    assert [f.form for f in setup.fidelity] == ["native"]
    setup = optbridge.to_mindspore(Plan(optimizers=plan.optimizers, schedule={"lr": ir.Cosine(steps=100)}), net,
                                   form="experimental", total_steps=2**24 + 10)
    assert [f.form for f in setup.fidelity] == ["table"] and "16777226 scheduler steps exceed 2**24" in setup.report
    with pytest.raises(optbridge.UnsupportedError, match="2147483648 steps exceed"):
        optbridge.to_mindspore(plan, net, form="cell", total_steps=2**31)
    with pytest.raises(optbridge.UnsupportedError, match="2147483648 steps exceed"):
        optbridge.to_mindspore_lists(plan, 2**31)
    # the generated cell really is exact past 2**24, where the native one's float32 step repeats values
    ks = np.arange(2**24 - 2, 2**24 + 6)
    node = ir.InverseTime(rate=1.0)
    ref = optbridge.evaluate.values(node, ks, base=0.1).astype(np.float32)
    gen = mindspore_cells.build_cell(node, 0.1, allow_native=False).cell(Tensor(ks.astype(np.int32))).asnumpy()
    nat = nn.InverseDecayLR(0.1, 1.0, 1)(Tensor(ks.astype(np.int32))).asnumpy()
    np.testing.assert_array_equal(gen, ref)
    assert len(set(nat.tolist())) < len(set(ref.tolist()))


def test_lr_changes_use_ops_assign() -> None:
    """Parameter.set_data on an lr is ignored by PyNative's jitted construct; the driver uses ops.assign."""
    src = inspect.getsource(mindspore_driver)
    assert ".set_data(" not in src and "ops.assign(self.targets[i], ops.cast(values[i], self.targets[i].dtype))" in src
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),),
                schedule={"lr": ir.Piecewise(boundaries=(2,), values=(0.1, 0.01))}, total_steps=4)
    net = One(np.zeros(1, np.float32))
    setup = optbridge.to_mindspore(plan, net, form="experimental", scheduler="driver")
    lrs = []
    for _ in range(4):
        lrs.append(float(setup.optimizer.param_groups[0]["lr"].asnumpy()))
        setup.optimizer(ms.mutable((Tensor(np.ones(1, np.float32)),)))
        setup.step()
    assert lrs == [float(np.float32(v)) for v in (0.1, 0.1, 0.01, 0.01)]


def test_per_group_momentum_forces_experimental_or_separate_optimizers() -> None:
    groups = (Group(name="a", select=(Selector(names=("fc.*",)),), options={"momentum": 0.9}),
              Group(name="b", select=(Selector(rest=True),), options={"momentum": 0.5}))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=groups),), total_steps=4)
    setup = optbridge.to_mindspore(plan, Net())
    assert setup.form == "experimental" and "different momentum/dampening/nesterov" in setup.report
    assert [g["momentum"] for g in setup.optimizer.param_groups] == [0.9, 0.5]
    setup = optbridge.to_mindspore(plan, Net(), form="list")
    assert len(setup.optimizers) == 2 and "2 nn optimizers" in setup.report
    assert sorted(float(o.momentum.asnumpy()) for o in setup.optimizers) == [0.5, 0.8999999761581421]


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
def test_scheduled_momentum_runs_on_the_exact_optimizer_in_every_form(form: str) -> None:
    """nn optimizers hold momentum as a constant: the torch-exact SGD reads it from a driven float64 Parameter."""
    plan = optbridge.load(EXAMPLES / "one_cycle.yaml")
    setup = optbridge.to_mindspore(plan, Net(), form=form)
    assert isinstance(setup.optimizer, exact.SGD) and "momentum is scheduled" in setup.report
    ref = optbridge.trace(plan, 300)
    tr = optbridge.trace(plan, 300, backend=f"mindspore-{form}")
    np.testing.assert_array_equal(tr["momentum"], ref["momentum"])  # float64 Parameters: the reference's values
    np.testing.assert_array_equal(tr.applied["lr"], ref["lr"].astype(np.float32))
    native = optbridge.to_mindspore(plan, Net(), form=form, optimizer="native")  # reads group["momentum"] per step
    assert type(native.optimizer).__mro__[1] is mopt.SGD
    beta1 = Plan(optimizers=(OptimizerSpec(type="Adam", options={"lr": 1e-3}),),
                 schedule={"beta1": ir.Cosine(steps=10)}, total_steps=10)
    with pytest.raises(optbridge.UnsupportedError, match="beta1 is scheduled: ops.Adam takes beta1 as a constant"):
        optbridge.to_mindspore(beta1, Net(), form=form, optimizer="native")


# --------------------------------------------------------------------------- trajectories vs torch

STEPS = 100
RS = np.random.RandomState(0)
P0 = RS.randn(6).astype(np.float32)
GRADS = RS.randn(STEPS, 6).astype(np.float32)

CONFIGS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "momentum": ("SGD", dict(lr=0.1, momentum=0.9)),
    "nesterov": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    "dampening": ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)),
    "weight_decay": ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.05)),
    "adam": ("Adam", dict(lr=1e-2)),
    "adam_l2": ("Adam", dict(lr=1e-2, weight_decay=0.05)),
    "adamw": ("AdamW", dict(lr=1e-2, weight_decay=0.05)),
}


def _torch(kind: str, options: dict, grads: np.ndarray, sched: bool) -> np.ndarray:
    p = torch.nn.Parameter(torch.tensor(P0))
    o = getattr(torch.optim, kind)([p], foreach=False, **options)
    s = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50) if sched else None
    out = []
    for g in grads:
        p.grad = torch.tensor(g)
        o.step()
        if s is not None:
            s.step()
        out.append(p.detach().numpy().copy())
    return np.array(out)


def _mindspore(kind: str, options: dict, grads: np.ndarray, sched: bool, form: str,
               optimizer: str = "auto") -> tuple[np.ndarray, str]:
    plan = Plan(optimizers=(OptimizerSpec(type=kind, options=options),),
                schedule={"lr": ir.Cosine(steps=50)} if sched else {}, total_steps=STEPS)
    net = One(P0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        setup = optbridge.to_mindspore(plan, net, form=form, optimizer=optimizer)
    out = []
    for g in grads:
        setup.optimizer(ms.mutable((Tensor(g),)))
        setup.step()
        out.append(net.w.asnumpy().copy())
    cls = type(setup.optimizer).__mro__[1]  # the guarded subclass's base: the MindSpore class
    return np.array(out), cls.__module__ + "." + cls.__name__


@pytest.mark.parametrize("name", list(CONFIGS))
def test_trajectories_match_torch(name: str) -> None:
    kind, options = CONFIGS[name]
    sched = name in ("momentum", "adamw")
    ref = _torch(kind, options, GRADS, sched)
    forms = ["list", "experimental"] if name in ("sgd", "momentum", "adam") else ["auto"]
    for form in forms:
        got, cls = _mindspore(kind, options, GRADS, sched, form)
        tol = 2e-5 if kind == "SGD" else 2e-6
        err = np.abs(got - ref).max()
        assert err <= tol, f"{name} {form} ({cls}): max |dp| {err:.3g} > {tol}"
        if name == "nesterov":
            assert cls == "mindspore.nn.optim.sgd.SGD"
        if name in ("adam", "adam_l2", "adamw"):
            assert cls == "optbridge_adapters.mindspore.optimizers." + kind


def test_adam_eps_hat_effect_with_tiny_gradients() -> None:
    """The documented formula difference: with gradients ~1e-7 MindSpore's Adam is far from torch and on the
    float64 eps-hat rule (lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps))."""
    grads = GRADS * 1e-7
    options = dict(lr=1e-2)
    ref = _torch("Adam", options, grads, False)
    got, cls = _mindspore("Adam", options, grads, False, "list", optimizer="native")
    assert cls == "mindspore.nn.optim.adam.Adam"
    exact_run, _ = _mindspore("Adam", options, grads, False, "auto")
    assert np.abs(exact_run - ref).max() <= 2e-6  # the default: optbridge's torch-exact Adam
    p = P0.astype(np.float64)
    m = np.zeros(6)
    v = np.zeros(6)
    hat = []
    for t, g in enumerate(grads.astype(np.float64), 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        p = p - 1e-2 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)
        hat.append(p.copy())
    assert np.abs(got - ref).max() > 1e-2
    assert np.abs(got - np.array(hat)).max() < 1e-5


def _run(setup, net) -> np.ndarray:
    """The one-parameter net's weight after each update of GRADS (setup.step() after each)."""
    got = []
    for g in GRADS:
        setup.optimizer(ms.mutable((Tensor(g),)))
        setup.step()
        got.append(net.w.asnumpy().copy())
    return np.array(got)

@pytest.mark.parametrize("kind,options,form,optimizer", [
    ("SGD", dict(lr=0.1, momentum=0.9), "list", "native"), ("SGD", dict(lr=0.1, momentum=0.9), "cell", "native"),
    ("SGD", dict(lr=0.1, momentum=0.9), "experimental", "auto"), ("SGD", dict(lr=0.1, momentum=0.9), "list", "auto"),
    ("Adam", dict(lr=1e-2), "cell", "native"), ("Adam", dict(lr=1e-2), "experimental", "native"),
    ("AdamW", dict(lr=1e-2), "auto", "auto"), ("RMSprop", dict(lr=1e-2, momentum=0.5), "cell", "auto")])
def test_weight_decay_schedules_match_torch(kind: str, options: dict, form: str, optimizer: str) -> None:
    """A weight-decay schedule (seed 004): nn.Momentum / nn.Adam take a weight-decay cell (list or cell form),
    experimental Adam a driven float32 Parameter, the torch-exact optimizers (the default: the measured table has
    no native row with a scheduled weight decay) a driven float64 Parameter; torch gets group['weight_decay'] set
    every step."""
    node = ir.Sequence(parts=(ir.Linear(start_factor=1.0, end_factor=0.1, steps=40), ir.Cosine(steps=60)),
                       boundaries=(40,))
    plan = Plan(optimizers=(OptimizerSpec(type=kind, options={**options, "weight_decay": 0.05}),),
                schedule={"weight_decay": node}, total_steps=STEPS)
    wd = optbridge.trace(plan, STEPS)["weight_decay"][0]
    p = torch.nn.Parameter(torch.tensor(P0))
    o = getattr(torch.optim, kind)([p], foreach=False, weight_decay=0.05, **options)
    ref = []
    for k, g in enumerate(GRADS):
        o.param_groups[0]["weight_decay"] = float(wd[k])
        p.grad = torch.tensor(g)
        o.step()
        ref.append(p.detach().numpy().copy())
    net = One(P0)
    setup = optbridge.to_mindspore(plan, net, form=form, optimizer=optimizer)
    assert {f.hyper: f.form for f in setup.fidelity}["weight_decay"] in ("table", "generated", "native")
    if optimizer == "auto" and kind != "AdamW":
        assert setup.choices["optimizer"].family == "exact"
    got = _run(setup, net)
    tol = 2e-5 if kind in ("SGD", "RMSprop") else 2e-6
    assert np.abs(np.array(got) - np.array(ref)).max() <= tol


def _torch_driven(kind: str, options: dict, values: dict[str, np.ndarray], grads: np.ndarray,
                  clip: tuple[str, float] | None = None, p0: np.ndarray = P0) -> np.ndarray:
    """torch with every hyperparameter of ``values`` written into its group before each step (betas as a pair)."""
    p = torch.nn.Parameter(torch.tensor(p0))
    o = getattr(torch.optim, kind)([p], foreach=False, **options)
    out = []
    for k, g in enumerate(grads):
        grp = o.param_groups[0]
        for h, v in values.items():
            if h in ("beta1", "beta2"):
                b = list(grp["betas"])
                b[0 if h == "beta1" else 1] = float(v[k])
                grp["betas"] = tuple(b)
            else:
                grp[h] = float(v[k])
        p.grad = torch.tensor(g)
        if clip is not None:
            if clip[0] == "norm":
                torch.nn.utils.clip_grad_norm_([p], clip[1])
            else:
                torch.nn.utils.clip_grad_value_([p], clip[1])
        o.step()
        out.append(p.detach().numpy().copy())
    return np.array(out)


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
@pytest.mark.parametrize("kind,hyper,node", [
    ("Adam", "beta1", ir.OneCycle(total_steps=STEPS, peak=0.95, initial=0.85, final=0.85)),
    ("AdamW", "beta2", ir.Linear(start_factor=0.99, end_factor=1.0, steps=50)),
    ("SGD", "momentum", ir.Cyclic(low=0.8, high=0.95, step_size_up=20))])
def test_scheduled_momentum_and_betas_match_torch(form: str, kind: str, hyper: str, node: ir.Node) -> None:
    """OneCycleLR/CyclicLR cycle beta1 or momentum; ops.Adam and the nn optimizers take them as constants, so the
    torch-exact optimizer reads a driven float64 Parameter (in every form); torch gets the same values."""
    options = {"lr": 1e-2} if kind != "SGD" else {"lr": 0.1, "momentum": 0.9}
    plan = Plan(optimizers=(OptimizerSpec(type=kind, options=options),),
                schedule={"lr": ir.Cosine(steps=STEPS), hyper: node}, total_steps=STEPS)
    ref = optbridge.trace(plan, STEPS)
    assert len(np.unique(ref[hyper][0])) > 10
    want = _torch_driven(kind, options, {"lr": ref["lr"][0], hyper: ref[hyper][0]}, GRADS)
    net = One(P0)
    setup = optbridge.to_mindspore(plan, net, form=form)
    assert setup.choices["optimizer"].family == "exact"
    got = _run(setup, net)
    tol = 2e-5 if kind == "SGD" else 2e-6
    assert np.abs(np.array(got) - want).max() <= tol


@pytest.mark.parametrize("clip", [("norm", 0.5), ("value", 0.3)])
@pytest.mark.parametrize("form,kind", [("list", "SGD"), ("experimental", "AdamW"), ("cell", "Adam")])
def test_gradient_clipping_matches_torch(form: str, kind: str, clip: tuple[str, float]) -> None:
    """Per-group clipping runs inside the guarded update, before it (torch's clip_grad_norm_ / clip_grad_value_)."""
    from optbridge.plan import Clip
    c = Clip(max_norm=clip[1]) if clip[0] == "norm" else Clip(value=clip[1])
    options = {"lr": 0.1, "momentum": 0.9} if kind == "SGD" else {"lr": 1e-2}
    plan = Plan(optimizers=(OptimizerSpec(type=kind, options=options, groups=(
        Group(name="all", select=(Selector(rest=True),), clip=c),)),),
                schedule={"lr": ir.Cosine(steps=STEPS)}, total_steps=STEPS)
    lr = optbridge.trace(plan, STEPS)["lr"][0]
    want = _torch_driven(kind, options, {"lr": lr}, GRADS, clip=clip)
    net = One(P0)
    setup = optbridge.to_mindspore(plan, net, form=form)
    assert "clip" in setup.report
    got = _run(setup, net)
    tol = 2e-5 if kind == "SGD" else 2e-6
    assert np.abs(np.array(got) - want).max() <= tol
    unclipped = _torch_driven(kind, options, {"lr": lr}, GRADS)
    assert np.abs(unclipped - want).max() > 100 * tol  # the clip mattered


def test_optimizer_level_clip_spans_every_group() -> None:
    """OptimizerSpec.clip: one norm over all of the optimizer's parameters (torch: clip_grad_norm_ over them all)."""
    from optbridge.plan import Clip
    groups = (Group(name="a", select=(Selector(names=("fc.*",)),)), Group(name="b", select=(Selector(rest=True),),
                                                                           options={"lr": 0.05}))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=groups, clip=Clip(max_norm=0.1)),),
                total_steps=3)
    net = Net()
    setup = optbridge.to_mindspore(plan, net, form="list")
    opt = setup.optimizer
    before = [p.asnumpy().copy() for p in opt.parameters]
    grads = [np.full(p.shape, 1.0, np.float32) for p in opt.parameters]
    opt(ms.mutable(tuple(Tensor(g) for g in grads)))
    total = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    coef = np.float32(0.1) / (np.float32(total) + np.float32(1e-6))
    names = {p.name: g for g, ps in setup.params.items() for p in ps}
    for p, b, g in zip(opt.parameters, before, grads):
        lr = np.float32(0.1 if names[p.name] == "a" else 0.05)
        np.testing.assert_allclose(p.asnumpy(), b - lr * (g * coef), rtol=0, atol=4e-8)
