"""The torch backend on real modules: groups, tied and frozen parameters, clipping, optimizers, fidelity, errors.

Everything runs real torch 2.13 (CPU, float64 where values are compared exactly). Trajectories built by
``to_torch`` must equal the same setup written by hand bit for bit (same torch code, same order);
traces are compared with the reference at 1e-12 relative (see test_torch_backend.py).
"""

from __future__ import annotations

import dataclasses
import math
import inspect
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.optim import lr_scheduler as S  # noqa: E402

import optbridge  # noqa: E402
from optbridge import ir, recipes  # noqa: E402
from optbridge.params import resolve  # noqa: E402
from optbridge.plan import Clip, Group, OptimizerSpec, Plan, Selector  # noqa: E402
from optbridge_adapters import torch as tb  # noqa: E402
from optbridge_adapters.torch.build import build  # noqa: E402
from test_torch_backend import _resume, assert_close  # noqa: E402



@pytest.fixture(autouse=True, scope="module")
def _float64() -> Any:
    """float64 parameters in this module (exact trajectories), put back for the modules that run after it."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


class Net(nn.Module):
    """A small classifier: a backbone (Linear, BatchNorm, Linear) and a head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8))
        self.classifier = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.backbone(x)))


def _data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def _train(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, steps: int, clip: Any = None) -> list[float]:
    x, y = _data()
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if clip is not None:
            clip()
        opt.step()
        sched.step()
    return lrs


def _sel(*names: str) -> tuple[Selector, ...]:
    return (Selector(names=names),)


WARMUP_COSINE = ir.Sequence(parts=(ir.Linear(start_factor=0.1, steps=10), ir.Cosine(steps=40, end=1e-4)),
                            boundaries=(10,))


def _base_classifier_plan(**opt: Any) -> Plan:
    groups = (Group(name="base", select=_sel("backbone.*"), options={"lr_mult": 0.1}),
              Group(name="classifier", select=(Selector(rest=True),)))
    return Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, **opt},
                                          groups=groups),), schedule={"lr": WARMUP_COSINE})


# --------------------------------------------------------------------------- groups on a real model

def test_base_classifier_groups_train_exactly_like_hand_written_torch() -> None:
    m1, m2 = Net(), Net()
    setup = tb.to_torch(_base_classifier_plan(), m1)
    groups = setup.optimizer.param_groups
    assert [g["name"] for g in groups] == ["base", "classifier"]
    assert [g["lr"] for g in groups] == [pytest.approx(0.01 * 0.1), pytest.approx(0.1 * 0.1)]  # LinearLR at 0.1
    assert setup.resolution.groups[0].params == tuple(n for n, _ in m1.named_parameters() if n.startswith("backbone"))
    assert setup.fidelity[0].detail == "torch.optim.lr_scheduler.SequentialLR[LinearLR, CosineAnnealingLR]"
    assert isinstance(setup.scheduler, S.SequentialLR)  # one native scheduler: the setup's scheduler is it

    opt = torch.optim.SGD([{"params": m2.backbone.parameters(), "lr": 0.1 * 0.1},
                           {"params": m2.classifier.parameters()}], lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = S.SequentialLR(opt, [S.LinearLR(opt, 0.1, 1.0, 10), S.CosineAnnealingLR(opt, 40, 1e-4)], [10])
    assert _train(m1, setup.optimizer, setup.scheduler, 50) == _train(m2, opt, sched, 50)
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(a, b), n


def test_from_torch_names_groups_by_their_parameters_and_round_trips() -> None:
    model = Net()
    opt = torch.optim.SGD([{"params": model.backbone.parameters(), "lr": 0.01},
                           {"params": model.classifier.parameters()}], lr=0.1, momentum=0.9, nesterov=True)
    sched = S.StepLR(opt, 5, 0.5)
    plan = tb.from_torch(opt, sched, model=model)
    g0, g1 = plan.groups
    assert g0.select == (Selector(names=("backbone.*",)),) and g1.select == (Selector(rest=True),)  # readable
    assert g0.options["lr"] == 0.01 and g1.options["lr"] == 0.1
    assert plan.optimizers[0].options["nesterov"] is True and plan.optimizers[0].options["dampening"] == 0
    back = tb.to_torch(plan, Net())
    for a, b in zip(back.optimizer.param_groups, opt.param_groups):
        assert [p.shape for p in a["params"]] == [p.shape for p in b["params"]]
        assert {k: a[k] for k in opt.defaults} == {k: b[k] for k in opt.defaults}
    assert back.fidelity[0].detail == "torch.optim.lr_scheduler.StepLR"


def test_from_torch_escapes_glob_characters_and_excludes_parameters_outside_the_optimizer() -> None:
    params = {"w[0]": torch.zeros(2, requires_grad=True), "b*": torch.zeros(1, requires_grad=True),
              "frozen": torch.zeros(3, requires_grad=True)}
    opt = torch.optim.Adam([params["w[0]"], params["b*"]])
    plan = tb.from_torch(opt, model=params)
    res = resolve(plan, tb.model_records(params)[0])
    assert res.groups[0].params == ("w[0]", "b*") and res.excluded == ("frozen",)
    assert plan.groups[-1].frozen == "exclude"


def test_tied_weights_are_optimized_once() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

    model = Tied()
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="emb", select=_sel("emb.*"), options={"lr": 0.01}), Group(name="rest", select=(Selector(rest=True),)))),))
    setup = tb.to_torch(plan, model)
    assert setup.resolution.aliases == {"out.weight": "emb.weight"}
    ids = [id(p) for g in setup.optimizer.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == 3 and id(model.emb.weight) in ids  # emb, head.weight, head.bias
    assert setup.optimizer.param_groups[0]["params"] == [model.emb.weight]
    imported = tb.from_torch(setup.optimizer, model=model)
    assert imported.groups[0].select == _sel("emb.weight")  # the first name torch gives the tied tensor


def test_frozen_groups_exclude_and_zero_lr() -> None:
    model = Net()
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9}, groups=(
        Group(name="bn", select=(Selector(modules=("BatchNorm*",)),), frozen="exclude"),
        Group(name="backbone", select=_sel("backbone.0.*", "backbone.3.*"), frozen="zero_lr"),
        Group(name="head", select=(Selector(rest=True),)))),), schedule={"lr": ir.Cosine(steps=20)})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    setup = tb.to_torch(plan, model)
    assert setup.excluded == ("backbone.1.weight", "backbone.1.bias")
    assert not model.backbone[1].weight.requires_grad and model.classifier.weight.requires_grad
    assert [g["name"] for g in setup.optimizer.param_groups] == ["backbone", "head"]
    fid = {(f.group, f.hyper): f for f in setup.fidelity}
    assert fid["backbone", "lr"].form == "native" and "zero_lr" in fid["backbone", "lr"].detail
    lrs = []
    x, y = _data()
    for _ in range(10):
        lrs.append([g["lr"] for g in setup.optimizer.param_groups])
        setup.optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        setup.optimizer.step()
        setup.scheduler.step()
    assert all(lr[0] == 0.0 for lr in lrs) and lrs[1][1] < lrs[0][1]
    after = dict(model.named_parameters())
    for n in ("backbone.0.weight", "backbone.3.bias", "backbone.1.weight"):
        assert torch.equal(after[n], before[n]), n
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])
    m = Net()
    tb.to_torch(plan, m, freeze_excluded=False)
    assert m.backbone[1].weight.requires_grad


def test_zero_lr_group_under_absolute_schedule_stays_zero() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a", frozen="zero_lr"), Group(name="b"))),), schedule={"lr": ir.Cosine(steps=20, end=1e-3)})
    tr = optbridge.trace(plan, 50, backend="torch")
    assert (tr["lr"][0] == 0).all() and tr.fidelity[1].form == "table"
    assert "would move it" in tr.fidelity[1].detail
    assert_close(tr["lr"], optbridge.trace(plan, 50)["lr"], "zero_lr")


def test_per_group_clipping_clips_only_that_groups_gradients() -> None:
    model = Net()
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="b0", select=_sel("backbone.0.*"), clip=Clip(max_norm=0.5)),
        Group(name="b3", select=_sel("backbone.3.*"), clip=Clip(value=0.01)),
        Group(name="rest", select=(Selector(rest=True),)))),))
    setup = tb.to_torch(plan, model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    norms = setup.clip_gradients()
    g = dict(model.named_parameters())
    b0 = [g["backbone.0.weight"], g["backbone.0.bias"]]
    want = math.sqrt(sum(float((before[n] ** 2).sum()) for n in ("backbone.0.weight", "backbone.0.bias")))
    assert norms["b0"] == pytest.approx(want) and norms["b3"] is None and "rest" not in norms
    assert float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in b0]))) == pytest.approx(0.5)
    assert (g["backbone.3.weight"].grad == 0.01).all() and (g["backbone.3.bias"].grad == 0.01).all()
    for n in ("backbone.1.weight", "classifier.weight", "classifier.bias"):
        assert torch.equal(g[n].grad, before[n]), n
    # the same as torch's own clipping over that group's parameters
    ref = [p.detach().clone().requires_grad_() for p in b0]
    for r, n in zip(ref, ("backbone.0.weight", "backbone.0.bias")):
        r.grad = before[n].clone()
    torch.nn.utils.clip_grad_norm_(ref, 0.5)
    assert all(torch.equal(r.grad, p.grad) for r, p in zip(ref, b0))


# --------------------------------------------------------------------------- optimizers

OPTIMIZERS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 1e-3}),
    ("Adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("AdamW", {"lr": 1e-2}),
    ("RMSprop", {"lr": 1e-2, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"lr": 1e-1, "lr_decay": 1e-3, "initial_accumulator_value": 0.1}),
    ("Adadelta", {}), ("Adamax", {}), ("NAdam", {"weight_decay": 1e-2, "decoupled_weight_decay": True}), ("RAdam", {}),
]


@pytest.mark.parametrize("otype,options", OPTIMIZERS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(OPTIMIZERS)])
def test_optimizer_trajectories_equal_hand_built_torch(otype: str, options: dict[str, Any]) -> None:
    m1, m2 = Net(), Net()
    plan = Plan(optimizers=(OptimizerSpec(type=otype, options=options, groups=(
        Group(name="base", select=_sel("backbone.*"), options={"lr_mult": 0.5}),
        Group(name="head", select=(Selector(rest=True),)))),), schedule={"lr": ir.Exponential(gamma=0.9)})
    setup = tb.to_torch(plan, m1)
    cls = getattr(torch.optim, otype)
    lr = options.get("lr", cls([torch.zeros(1, requires_grad=True)]).defaults["lr"])
    opt = cls([{"params": m2.backbone.parameters(), "lr": lr * 0.5}, {"params": m2.classifier.parameters()}], **options)
    sched = S.ExponentialLR(opt, 0.9)
    _train(m1, setup.optimizer, setup.scheduler, 20)
    _train(m2, opt, sched, 20)
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(a, b), n
    for a, b in zip(setup.optimizer.param_groups, opt.param_groups):
        assert {k: v for k, v in a.items() if k not in ("params", "name")} == {
            k: v for k, v in b.items() if k != "params"}


def test_from_torch_reads_tensor_lrs_as_numbers() -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=torch.tensor(0.05))
    sched = S.ExponentialLR(opt, 0.9)
    opt.step()
    sched.step()
    plan = tb.from_torch(opt, sched)
    assert plan.optimizers[0].options["lr"] == pytest.approx(0.05) and plan.groups[0].options["lr"] == pytest.approx(0.05)
    assert optbridge.trace(plan, 1)["lr"][0, 0] == pytest.approx(0.05 * 0.9, rel=1e-7)  # float32 tensor lr


def test_from_torch_writes_torch_defaults_explicitly() -> None:
    model = Net()
    plan = tb.from_torch(torch.optim.AdamW(model.parameters()), model=model)
    o = plan.optimizers[0]
    assert o.type == "AdamW" and o.options["weight_decay"] == 1e-2 and o.options["betas"] == (0.9, 0.999)
    assert o.options["eps"] == 1e-8 and o.options["amsgrad"] is False and o.options["lr"] == 1e-3
    adam = tb.from_torch(torch.optim.Adam([{"params": model.backbone.parameters(), "weight_decay": 0.1},
                                           {"params": model.classifier.parameters()}], lr=0.01), model=model)
    assert adam.optimizers[0].options["weight_decay"] == 0 and dict(adam.groups[0].options) == {
        "lr": 0.01, "weight_decay": 0.1}


@pytest.mark.parametrize("otype", ["LAMB", "Lion"])
def test_optimizers_torch_lacks_are_unsupported_with_the_reason(otype: str) -> None:
    plan = Plan(optimizers=(OptimizerSpec(type=otype),))
    with pytest.raises(optbridge.UnsupportedError, match=r"optimizer.type: cannot run on backend 'torch': .*"
                       + {"LAMB": "no LAMB", "Lion": "no Lion"}[otype]):
        tb.to_torch(plan, Net())


def test_mindspores_adamweightdecay_builds_optbridges_torch_class() -> None:
    from optbridge_adapters.torch.optimizers import AdamWeightDecay
    setup = tb.to_torch(Plan(optimizers=(OptimizerSpec(type="AdamWeightDecay", options={"weight_decay": 0.01}),)),
                        Net())
    (opt,) = setup.optimizers.values()
    assert type(opt) is AdamWeightDecay and opt.defaults["eps"] == 1e-6 and opt.param_groups[0]["weight_decay"] == 0.01


# --------------------------------------------------------------------------- fidelity and forms

def _plan(schedule: dict[str, ir.Node], otype: str = "SGD", total: int | None = None, spe: int | None = None,
          per_group: list[dict[str, ir.Node]] | None = None, **options: Any) -> Plan:
    groups = tuple(Group(name=f"g{i}", options={"lr": lr}, schedule=(per_group[i] if per_group else {}))
                   for i, lr in enumerate((0.1, 0.05, 0.02)))
    return Plan(optimizers=(OptimizerSpec(type=otype, options=options, groups=groups),), schedule=schedule,
                total_steps=total, steps_per_epoch=spe)


def _forms(plan: Plan, steps: int = 300, metrics: Any = None) -> dict[str, tuple[str, str]]:
    tr = optbridge.trace(plan, steps, backend="torch", metrics=metrics)
    ref = optbridge.trace(plan, steps, metrics=metrics)
    for h in ref:
        assert_close(tr[h], ref[h], h)
    np.testing.assert_array_equal(tr.applied["lr"], tr["lr"])
    return {f.hyper: (f.form, f.detail) for f in tr.fidelity if f.group == "g0"}


def test_fidelity_cosine_native_and_clamped_cosine_by_horizon() -> None:
    assert _forms(_plan({"lr": ir.Cosine(steps=100, end=1e-4)}))["lr"] == (
        "native", "torch.optim.lr_scheduler.CosineAnnealingLR")
    clamped = {"lr": ir.Cosine(steps=100, end=1e-4, clamp=True)}
    form, detail = _forms(_plan(clamped))["lr"]
    assert form == "table" and "periodic past T_max" in detail
    assert _forms(_plan(clamped, total=101), 101)["lr"][0] == "native"  # never past steps: the same function


def test_fidelity_warmup_from_zero_is_generated_and_the_demo_plan_runs() -> None:
    form, detail = _forms(_plan({"lr": recipes.warmup_then(ir.Cosine(steps=200), 100)}))["lr"]
    assert form == "table" and "cannot warm up from 0" in detail and "PlanScheduler" in detail
    demo = optbridge.load("optbridge/examples/demo.yaml")
    tr = optbridge.trace(demo, 3000, backend="torch")
    ref = optbridge.trace(demo, 3000)
    for h in ("lr", "momentum"):
        assert_close(tr[h], ref[h], h)
    assert {(f.hyper, f.form) for f in tr.fidelity} == {("lr", "table"), ("momentum", "table")}


def test_demo_plan_on_a_real_model() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
            self.head = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 3))

    demo = optbridge.load("optbridge/examples/demo.yaml")
    setup = tb.to_torch(demo, Model())
    names = {g["name"]: len(g["params"]) for g in setup.optimizer.param_groups}
    assert names == {"backbone": 4, "no_decay": 3, "head": 1}
    ref = optbridge.trace(demo, 600)
    for k in range(600):
        for i, g in enumerate(setup.optimizer.param_groups):
            assert g["lr"] == ref["lr"][i, k] and g["momentum"] == ref["momentum"][i, k]
        setup.optimizer.step()
        setup.scheduler.step()


def test_fidelity_chains_and_stacks() -> None:
    chain = {"lr": ir.Chain(parts=(ir.Linear(start_factor=0.2, steps=100), ir.Cosine(steps=400)))}
    assert _forms(_plan(chain), 400)["lr"][0] == "table"  # unbounded plan: may run past T_max
    assert _forms(_plan(chain, total=401), 401)["lr"] == (
        "native", "torch.optim.lr_scheduler.ChainedScheduler[LinearLR, CosineAnnealingLR]")
    mixed = {"lr": ir.Chain(parts=(ir.Linear(start_factor=0.01, steps=150, unit="iter"),
                                   ir.Cosine(steps=30, unit="epoch")))}
    form, detail = _forms(_plan(mixed, total=30 * 20, spe=20), 600)["lr"]
    assert (form, detail) == ("native", "torch.optim.lr_scheduler.LinearLR + CosineAnnealingLR")  # stacked, two clocks


def test_fidelity_traps_torch_cannot_express_exactly() -> None:
    nested = ir.Sequence(parts=(ir.Linear(start_factor=0.5, steps=10),
                                ir.Sequence(parts=(ir.Constant(factor=0.5, steps=5), ir.Exponential(gamma=0.9)),
                                            boundaries=(20,))), boundaries=(10,))
    form, detail = _forms(_plan({"lr": nested}), 60)["lr"]
    assert form == "table" and "cannot nest" in detail  # torch raises NotImplementedError at the milestone
    form, detail = _forms(_plan({"lr": ir.Constant(factor=0.0, steps=10)}), 30)["lr"]
    assert form == "table" and "divides by factor" in detail  # ConstantLR would divide by 0 at total_iters
    form, detail = _forms(_plan({"lr": ir.Chain(parts=(ir.Linear(start_factor=0.5, steps=10),
                                                       ir.Lambda(expr="0.99 ** epoch")))}), 30)["lr"]
    assert form == "table" and "not chainable" in detail  # LambdaLR overwrites the product
    form, _ = _forms(_plan({"lr": ir.Exponential(gamma=0.5, every=10)}), 30)["lr"]
    assert form == "table"  # gamma ** (k / 10): no torch class


def test_fidelity_per_group_schedules() -> None:
    lambdas = [{"lr": ir.Lambda(expr="0.95 ** epoch")}, {"lr": ir.Lambda(expr="1 / (1 + epoch)")}, {}]
    assert _forms(_plan({}, per_group=lambdas))["lr"] == ("native", "torch.optim.lr_scheduler.LambdaLR")
    cosines = [{"lr": ir.Cosine(steps=100)}, {"lr": ir.Cosine(steps=200)}, {"lr": ir.Cosine(steps=100)}]
    form, detail = _forms(_plan({}, per_group=cosines))["lr"]
    assert form == "table" and "different cosine schedules" in detail
    cyc = [{"lr": ir.Cyclic(low=0.01 * (i + 1), high=0.1 * (i + 1), step_size_up=20)} for i in range(3)]
    assert _forms(_plan({}, per_group=cyc))["lr"] == ("native", "torch.optim.lr_scheduler.CyclicLR")


def test_momentum_cycling_native_only_when_it_is_the_paired_schedule() -> None:
    lr = ir.OneCycle(total_steps=300)
    paired = {"lr": lr, "momentum": ir.OneCycle(total_steps=300, initial=0.95, peak=0.85, final=0.95)}
    f = _forms(_plan(paired, momentum=0.9), 301)
    assert f["momentum"] == ("native", "torch.optim.lr_scheduler.OneCycleLR (cycle_momentum)")
    other = {"lr": lr, "momentum": ir.OneCycle(total_steps=300, initial=0.95, peak=0.8, final=0.9)}
    f = _forms(_plan(other, momentum=0.9), 301)
    assert f["lr"][0] == "native" and f["momentum"][0] == "table"
    beta = {"lr": ir.Cyclic(low=1e-3, high=1e-2, step_size_up=50),
            "beta1": ir.Cyclic(low=0.95, high=0.85, step_size_up=50)}
    assert _forms(_plan(beta, "Adam"))["beta1"] == ("native", "torch.optim.lr_scheduler.CyclicLR (cycle_momentum)")


def test_any_hyperparameter_is_driven() -> None:
    sched = {"lr": ir.Cosine(steps=300), "weight_decay": ir.Linear(start_factor=1.0, end_factor=0.0, steps=200),
             "beta2": ir.Linear(start_factor=0.99, end_factor=1.0, steps=100), "eps": ir.Exponential(gamma=0.99)}
    f = _forms(_plan(sched, "AdamW"))
    assert f["lr"][0] == "native" and {f[h][0] for h in ("weight_decay", "beta2", "eps")} == {"table"}
    sched["beta1"] = ir.Cyclic(low=0.95, high=0.85, step_size_up=25)  # both betas written, independently
    f = _forms(_plan(sched, "AdamW"))
    assert f["beta1"][0] == "table" and f["beta2"][0] == "table"


def test_several_optimizers_one_scheduler_object() -> None:
    plan = Plan(optimizers=(
        OptimizerSpec(name="body", type="SGD", options={"lr": 0.1, "momentum": 0.9},
                      groups=(Group(name="backbone", select=_sel("backbone.*"), schedule={"lr": ir.Cosine(steps=50)}),)),
        OptimizerSpec(name="head", type="AdamW", options={"lr": 1e-3},
                      groups=(Group(name="classifier", select=(Selector(rest=True),),
                                    schedule={"weight_decay": ir.Linear(start_factor=1.0, end_factor=0.1, steps=30)}),))),
        schedule={"lr": recipes.warmup_then(ir.Exponential(gamma=0.99), 20)})
    setup = tb.to_torch(plan, Net())
    assert set(setup.optimizers) == {"body", "head"} and isinstance(setup.scheduler, tb.SetupScheduler)
    with pytest.raises(AttributeError, match="2 optimizers"):
        setup.optimizer  # noqa: B018
    tr = optbridge.trace(plan, 120, backend="torch")
    ref = optbridge.trace(plan, 120)
    for h in ("lr", "weight_decay"):
        assert_close(tr[h], ref[h], h)
    assert [f.form for f in tr.fidelity if f.hyper == "lr"] == ["native", "table"]
    assert len(setup.scheduler.get_last_lr()) == 2
    _resume(plan, 60, (1, 33), None, native=True)


def test_plan_wide_hyper_some_optimizers_lack_is_nan_there() -> None:
    plan = optbridge.load({"optbridge": 1, "optimizers": [
        {"name": "sgd", "type": "SGD", "lr": 0.1, "groups": [{"name": "a"}]},
        {"name": "adam", "type": "Adam", "lr": 1e-3, "groups": [{"name": "b"}]}],
        "schedule": {"beta1": {"kind": "linear", "start_factor": 1.0, "end_factor": 0.5, "steps": 20}}})
    tr = optbridge.trace(plan, 30, backend="torch")
    ref = optbridge.trace(plan, 30)
    assert np.isnan(tr["beta1"][0]).all() and np.isnan(ref["beta1"][0]).all()
    assert_close(tr["beta1"][1:], ref["beta1"][1:], "beta1")
    assert {(f.group, f.form) for f in tr.fidelity if f.hyper == "beta1"} == {("a", "native"), ("b", "table")}
    assert "not applicable" in next(f.detail for f in tr.fidelity if f.hyper == "beta1" and f.group == "a")
    sgd_only = optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD"}, "schedule": {"beta1": {"kind": "constant"}}})
    with pytest.raises(optbridge.ConfigError, match="schedule.beta1: SGD has no hyperparameter 'betas' to schedule"):
        optbridge.trace(sgd_only, 2, backend="torch")


# --------------------------------------------------------------------------- plateau state

def test_plateau_state_mid_cooldown_is_imported_and_exported() -> None:
    metrics = [1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 0.2] + [0.3] * 30
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = S.ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=3, min_lr=1e-3)
    k = 5
    for m in metrics[:k]:
        sched.step(m)
    assert sched.cooldown_counter > 0 and opt.param_groups[0]["lr"] < 0.1
    plan = tb.from_torch(opt, sched)
    node = plan.schedule["lr"]
    assert (node.best, node.bad_steps, node.cooldown_left) == (sched.best, sched.num_bad_epochs, sched.cooldown_counter)
    want = []
    for m in metrics[k:]:
        want.append(opt.param_groups[0]["lr"])
        sched.step(m)
    n = len(want)
    np.testing.assert_array_equal(optbridge.trace(plan, n, metrics=metrics[k:])["lr"][0], want)
    tr = optbridge.trace(plan, n, backend="torch", metrics=metrics[k:])
    np.testing.assert_array_equal(tr["lr"][0], want)
    assert optbridge.loads(optbridge.dumps(plan)).schedule["lr"] == node


# --------------------------------------------------------------------------- errors

def test_sequences_with_cyclic_and_one_cycle_parts_are_native_and_exact() -> None:
    # CyclicLR's constructor sets the group lr to its base_lr, and OneCycleLR's overwrites initial_lr (the base every
    # later scheduler and SequentialLR's reset take): to_torch keeps the group's lr as their base anyway
    for node in (ir.Sequence(parts=(ir.Cyclic(low=0.01, high=0.2, step_size_up=10), ir.Cosine(steps=50)), boundaries=(40,)),
                 ir.Sequence(parts=(ir.Linear(start_factor=0.5, steps=10), ir.Cyclic(low=0.01, high=0.2, step_size_up=10),
                                    ir.Exponential(gamma=0.9)), boundaries=(20, 60)),
                 ir.Sequence(parts=(ir.OneCycle(total_steps=50), ir.Multiplicative(expr="0.9")), boundaries=(45,)),
                 ir.Sequence(parts=(ir.OneCycle(total_steps=50, peak=0.3), ir.Cosine(steps=50),
                                    ir.MultiStep(milestones=(3, 5))), boundaries=(40, 80))):
        assert _forms(_plan({"lr": node}), 150)["lr"][0] == "native"
    one_cycle_later = ir.Sequence(parts=(ir.Linear(steps=10), ir.OneCycle(total_steps=50)), boundaries=(10,))
    form, detail = _forms(_plan({"lr": one_cycle_later}), 55)["lr"]
    assert form == "table" and "only as the first scheduler" in detail


def test_from_torch_refuses_schedulers_restarting_from_another_base() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a", select=(Selector(rest=True),)),)),),
        schedule={"lr": ir.Sequence(parts=(ir.OneCycle(total_steps=50), ir.Exponential(gamma=0.95)), boundaries=(45,))})
    setup = tb.to_torch(plan, {"w": torch.zeros(1, requires_grad=True)})  # Exponential built with base 0.1
    with pytest.raises(optbridge.ConfigError, match=r"schedulers\[1\]: restarts from base lrs \[0.1\]"):
        tb.from_torch(setup.optimizer, setup.scheduler)
    same = dataclasses.replace(plan, optimizers=(dataclasses.replace(plan.optimizers[0], options={"lr": 0.1 / 25}),),
                               schedule={"lr": ir.Sequence(parts=(ir.OneCycle(total_steps=50, peak=0.1),
                                                                  ir.Exponential(gamma=0.95)), boundaries=(45,))})
    setup = tb.to_torch(same, {"w": torch.zeros(1, requires_grad=True)})
    assert tb.from_torch(setup.optimizer, setup.scheduler).schedule == same.schedule


def test_plateau_on_momentum_runs_in_the_planscheduler() -> None:
    plan = _plan({"momentum": ir.Plateau(patience=0, factor=0.5)}, momentum=0.9)
    metrics = [1.0, 2.0, 0.5, 0.6, 0.7, 0.1, 0.2, 0.3]
    tr = optbridge.trace(plan, 9, backend="torch", metrics=metrics)
    assert_close(tr["momentum"], optbridge.trace(plan, 9, metrics=metrics)["momentum"], "plateau on momentum")
    assert {f.form for f in tr.fidelity if f.hyper == "momentum"} == {"table"}
    # without metrics up front the SetupScheduler feeds the PlanScheduler each metric given to step(metric)
    st = build(plan, {f"g{i}": [torch.zeros(1, requires_grad=True)] for i in range(3)})
    got = []
    for k in range(9):
        got.append(st.optimizer.param_groups[0]["momentum"])
        st.optimizer.step()
        if k < 8:
            st.scheduler.step(metrics[k])
    np.testing.assert_array_equal(got, tr["momentum"][0])


def test_errors() -> None:
    with pytest.raises(optbridge.ConfigError, match="are not options of the torch backend"):
        optbridge.trace(_plan({}), 5, backend="torch", device="cuda")
    with pytest.raises(optbridge.ConfigError, match="matches no parameter"):
        tb.to_torch(Plan(optimizers=(OptimizerSpec(type="SGD", groups=(Group(name="x", select=_sel("nope.*")),
                                                                        Group(name="r", select=(Selector(rest=True),)))),)), Net())
    with pytest.raises(optbridge.ConfigError, match="rejects the options"):
        tb.to_torch(Plan(optimizers=(OptimizerSpec(type="SGD", options={"nesterov": True}),)), Net())

    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(optbridge.ConfigError, match=r"total_steps: is needed.*Lambda"):
        tb.from_torch(opt, S.LambdaLR(opt, lambda e: 0.9 ** e))
    with pytest.raises(optbridge.ConfigError, match="update 4: LambdaLR.step.. after it raised ZeroDivisionError"):
        tb.from_torch(opt, S.LambdaLR(opt, lambda e: 1 / (5 - e) if e else 1.0), total_steps=10)

    class MyStep(S.StepLR):
        pass

    opt = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(optbridge.ConfigError, match="total_steps: is needed: scheduler holds a MyStep, which is not "
                       "one of the torch classes optbridge models"):
        tb.from_torch(opt, MyStep(opt, 3))
    other = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(optbridge.ConfigError, match="drives another optimizer"):
        tb.from_torch(opt, S.StepLR(other, 3))
    with pytest.raises(optbridge.ConfigError, match="is not a parameter of the model"):
        tb.from_torch(opt, model=Net())
    opt = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(optbridge.ConfigError, match="scale_fn: is a custom Python function"):
        tb.from_torch(opt, S.CyclicLR(opt, 0.01, 0.1, scale_fn=lambda x: 1.0, cycle_momentum=False))

    opt = torch.optim.SGD([p], lr=0.1)
    sched = S.StepLR(opt, 3)
    for _ in range(4):
        opt.step()
        sched.step()
    opt.param_groups[0]["lr"] = 0.5  # edited by hand: the schedule no longer says where it stands
    with pytest.raises(optbridge.ConfigError, match="does not follow its schedule"):
        tb.from_torch(opt, sched)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = S.CosineAnnealingWarmRestarts(opt, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched.step(3.5)
    with pytest.raises(optbridge.ConfigError, match="explicit"):
        tb.from_torch(opt, sched)


def test_plan_horizon_is_enforced_by_the_update_that_would_pass_it() -> None:
    from optbridge.source import PastHorizon
    plan = _plan({"lr": ir.OneCycle(total_steps=20)})
    st = build(plan, {f"g{i}": [torch.zeros(1, requires_grad=True)] for i in range(3)}, native=False)
    for _ in range(21):  # k = total_steps still extrapolates, as torch's OneCycleLR
        st.optimizer.step()
        st.scheduler.step()  # stepping to the horizon after the last update writes nothing
    with pytest.raises(PastHorizon, match="update 21 is past the end of the schedule.*one_cycle ends after "
                       "total_steps=20"):
        st.optimizer.step()
    bounded = dataclasses.replace(_plan({"lr": ir.Cosine(steps=10, clamp=True)}), total_steps=10)
    st = build(bounded, {f"g{i}": [torch.zeros(1, requires_grad=True)] for i in range(3)}, native=False)
    for _ in range(10):
        st.optimizer.step()
        st.scheduler.step()
    with pytest.raises(PastHorizon, match="defined for 10 updates"):
        st.optimizer.step()


def test_setup_scheduler_needs_the_metric_when_the_plateau_is_due() -> None:
    plan = _plan({"lr": ir.Plateau(patience=0, unit="epoch"), "momentum": ir.Linear(start_factor=0.5, steps=10)},
                 spe=4, momentum=0.9)
    st = build(plan, {f"g{i}": [torch.zeros(1, requires_grad=True)] for i in range(3)})
    assert st.plateau_every == 4
    for _ in range(3):
        st.scheduler.step()
    with pytest.raises(TypeError, match=r"call scheduler.step\(metric\)") as e:
        st.scheduler.step()
    assert isinstance(e.value, optbridge.OptbridgeError)
    st.scheduler.step(1.0)


# --------------------------------------------------------------------------- wiring

def test_entry_points_and_lazy_import() -> None:
    # optbridge.to_torch / from_torch are light entry points with the adapter's exact signatures
    def shape(f):  # names, kinds and defaults (annotations differ: the entry points import no torch)
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert shape(optbridge.to_torch) == shape(tb.to_torch) and shape(optbridge.from_torch) == shape(tb.from_torch)
    from optbridge.backends import get_backend
    assert get_backend("torch") is tb.trace
    code = "import sys, optbridge; optbridge.load('optbridge/examples/demo.yaml'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_metrics_known_in_advance_drive_every_plateau_form_and_empty_groups_build() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9}, groups=(
        Group(name="all", select=(Selector(rest=True),)),
        Group(name="projector", options={"empty": True, "lr": 0.5}))),),
        schedule={"lr": ir.Plateau(patience=0, factor=0.5, unit="epoch")}, steps_per_epoch=3)
    metrics = [1.0, 0.5, 0.7, 0.8, 0.2, 0.3]
    want = optbridge.trace(plan, 18, metrics=metrics)["lr"]
    for form, kind in (("auto", "native"), ("table", "table")):
        setup = tb.to_torch(plan, Net(), form=form, metrics=metrics)
        assert {f.form for f in setup.fidelity if f.hyper == "lr"} == {kind}
        assert setup.param_group("projector")["params"] == []
        got = []
        for _ in range(18):
            got.append([g["lr"] for g in setup.optimizer.param_groups])
            setup.optimizer.step()
            setup.scheduler.step()  # no metric: the next one given up front is taken when a plateau is due
        np.testing.assert_array_equal(np.asarray(got).T, want)
