"""The torch and MindSpore config dialects (optbridge.dialects).

No framework is imported here: built plans are compared with hand-built IR
nodes, and traces with values computed by hand from the formulas in
``semantics.md`` (§1.2 for torch, §2.1/2.2 for MindSpore's code).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import optbridge
from optbridge import ir
from optbridge.dialects import detect, from_dialect
from optbridge.errors import ConfigError


def torch_doc(scheduler=None, optimizer=None, **extra):
    d = {"dialect": "torch", "optimizer": optimizer or {"type": "SGD", "lr": 0.1, "momentum": 0.9}}
    if scheduler is not None:
        d["scheduler"] = scheduler
    d.update(extra)
    return d


def ms_doc(learning_rate=None, optimizer=None, **extra):
    d = {"dialect": "mindspore", "optimizer": optimizer or {"type": "Momentum", "momentum": 0.9}}
    if learning_rate is not None:
        d["learning_rate"] = learning_rate
    d.update(extra)
    return d


TWO_GROUPS = [{"name": "a", "params": "a.*", "lr": 0.1}, {"name": "b", "params": "rest", "lr": 0.01}]


def lr_of(plan: optbridge.Plan) -> ir.Node:
    return plan.schedule["lr"]


def trace(plan, n, **kw):
    return optbridge.trace(plan, n, **kw)


# =========================================================================== detection

@pytest.mark.parametrize("doc, expected", [
    ({"dialect": "torch", "optimizer": {"type": "SGD"}}, "torch"),
    ({"dialect": "mindspore", "optimizer": {"type": "SGD"}}, "mindspore"),
    ({"dialect": "optbridge", "optimizer": {"type": "SGD"}}, "optbridge"),
    ({"dialect": "torch", "optbridge": 1}, "torch"),                        # explicit dialect wins
    ({"optbridge": 1, "scheduler": {"type": "StepLR"}}, "optbridge"),       # then the optbridge key
    ({"optimizer": {"type": "SGD"}, "scheduler": {"type": "StepLR", "step_size": 2}}, "torch"),
    ({"optimizer": {"type": "SGD"}, "schedulers": []}, "torch"),
    ({"optimizer": {"type": "SGD"}, "lr_scheduler": {}}, "torch"),
    ({"optimizer": {"type": "SGD"}, "param_groups": []}, "torch"),
    ({"optimizer": {"type": "SGD"}, "learning_rate": 0.1}, "mindspore"),
    ({"optimizer": {"type": "SGD", "learning_rate": 0.1}}, "mindspore"),
    ({"optimizer": {"type": "SGD"}, "group_params": []}, "mindspore"),
    ({"optimizer": {"type": "Momentum", "momentum": 0.9}}, "mindspore"),  # a MindSpore-only optimizer name
    ({"optimizer": {"type": "AdamW", "lr": 0.1}}, "torch"),               # a torch optimizer class name
    ({"optimizer": {"type": "SGD"}, "schedule": {"kind": "cosine", "steps": 5}}, "optbridge"),
    ({"optimizer": {"type": "SGD"}, "groups": []}, "optbridge"),
    ({"step_unit": "iter"}, "optbridge"),
])
def test_detect(doc, expected):
    assert detect(doc) == expected


def test_detect_errors():
    with pytest.raises(ConfigError, match=r"^dialect: must be one of optbridge, torch, mindspore, mmengine, timm, hf \(did you mean 'torch'\?\), got 'troch'"):
        detect({"dialect": "troch"})
    with pytest.raises(ConfigError, match=r"^dialect: cannot tell the dialect.*scheduler.*learning_rate"):
        detect({"scheduler": {}, "learning_rate": 0.1})
    with pytest.raises(ConfigError, match=r"^dialect: must be one of"):
        optbridge.load({"dialect": "pytorch", "optimizer": {"type": "SGD"}})
    with pytest.raises(ConfigError, match=r"^dialect: must be one of"):
        from_dialect("megengine", {})


def test_canonical_documents_still_load():
    plan = optbridge.load({"optimizer": {"type": "SGD", "lr": 0.1}, "schedule": {"kind": "cosine", "steps": 10}})
    assert lr_of(plan) == ir.Cosine(steps=10)
    plan2 = from_dialect("optbridge", {"dialect": "optbridge", "optimizer": {"type": "SGD"}})
    assert plan2.optimizers[0].type == "SGD"


# =========================================================================== torch: class by class

TORCH_CASES = [
    # (scheduler spec, expected lr node) -- defaults are torch 2.13's
    ({"type": "StepLR", "step_size": 30}, ir.Exponential(gamma=0.1, every=30, stair=True)),
    ({"type": "StepLR", "step_size": 7, "gamma": 0.5}, ir.Exponential(gamma=0.5, every=7, stair=True)),
    ({"type": "MultiStepLR", "milestones": [80, 30, 30]}, ir.MultiStep(milestones=(30, 30, 80), gamma=0.1)),
    ({"type": "ConstantLR"}, ir.Constant(factor=1.0 / 3, steps=5)),
    ({"type": "ConstantLR", "factor": 0.5, "total_iters": 0}, ir.Constant(factor=0.5, steps=None)),  # torch: total_iters 0 holds the factor forever
    ({"type": "LinearLR"}, ir.Linear(start_factor=1.0 / 3, end_factor=1.0, steps=5)),
    ({"type": "LinearLR", "start_factor": 1.0, "end_factor": 0.0, "total_iters": 100},
     ir.Linear(start_factor=1.0, end_factor=0.0, steps=100)),
    ({"type": "ExponentialLR", "gamma": 0.95}, ir.Exponential(gamma=0.95)),
    ({"type": "PolynomialLR"}, ir.Polynomial(steps=5, power=1.0)),
    ({"type": "PolynomialLR", "total_iters": 50, "power": 2.0}, ir.Polynomial(steps=50, power=2.0)),
    ({"type": "CosineAnnealingLR", "T_max": 95}, ir.Cosine(steps=95, end=0.0)),
    ({"type": "CosineAnnealingLR", "T_max": 10, "eta_min": 1e-5}, ir.Cosine(steps=10, end=1e-5)),
    ({"type": "CosineAnnealingWarmRestarts", "T_0": 10}, ir.CosineRestarts(period=10, mult=1, end=0.0)),
    ({"type": "CosineAnnealingWarmRestarts", "T_0": 10, "T_mult": 2, "eta_min": 1e-6},
     ir.CosineRestarts(period=10, mult=2, end=1e-6)),
    ({"type": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1, "cycle_momentum": False},
     ir.Cyclic(low=0.01, high=0.1, step_size_up=2000, step_size_down=None, mode="triangular", gamma=1.0)),
    ({"type": "CyclicLR", "base_lr": 0.001, "max_lr": 0.01, "step_size_up": 5, "step_size_down": 7,
      "mode": "exp_range", "gamma": 0.99, "cycle_momentum": False},
     ir.Cyclic(low=0.001, high=0.01, step_size_up=5, step_size_down=7, mode="exp_range", gamma=0.99)),
    ({"type": "OneCycleLR", "max_lr": 0.5, "total_steps": 100, "cycle_momentum": False},
     ir.OneCycle(total_steps=100, pct_start=0.3, anneal="cos", three_phase=False, peak=0.5, div_factor=25.0,
                 final_div_factor=1e4)),
    ({"type": "OneCycleLR", "max_lr": 0.5, "epochs": 4, "steps_per_epoch": 25, "pct_start": 0.25,
      "anneal_strategy": "linear", "three_phase": True, "div_factor": 10.0, "final_div_factor": 100.0,
      "cycle_momentum": False},
     ir.OneCycle(total_steps=100, pct_start=0.25, anneal="linear", three_phase=True, peak=0.5, div_factor=10.0,
                 final_div_factor=100.0)),
    ({"type": "ReduceLROnPlateau"}, ir.Plateau()),
    ({"type": "ReduceLROnPlateau", "mode": "max", "factor": 0.5, "patience": 2, "threshold": 0.01,
      "threshold_mode": "abs", "cooldown": 3, "min_lr": 1e-4, "eps": 1e-6},
     ir.Plateau(mode="max", factor=0.5, patience=2, threshold=0.01, threshold_mode="abs", cooldown=3,
                min_value=1e-4, eps=1e-6)),
    ({"type": "SequentialLR", "schedulers": [{"type": "LinearLR", "start_factor": 0.1, "total_iters": 5},
                                             {"type": "CosineAnnealingLR", "T_max": 95}], "milestones": [5]},
     ir.Sequence(parts=(ir.Linear(start_factor=0.1, steps=5), ir.Cosine(steps=95)), boundaries=(5,))),
    ({"type": "ChainedScheduler", "schedulers": [{"type": "ConstantLR", "factor": 0.1, "total_iters": 2},
                                                 {"type": "ExponentialLR", "gamma": 0.9}]},
     ir.Chain(parts=(ir.Constant(factor=0.1, steps=2), ir.Exponential(gamma=0.9)))),
    ({"type": "ChainedScheduler", "schedulers": [
        {"type": "LinearLR", "start_factor": 0.5, "total_iters": 3},
        {"type": "ChainedScheduler", "schedulers": [{"type": "StepLR", "step_size": 2},
                                                    {"type": "CosineAnnealingLR", "T_max": 10}]}]},
     ir.Chain(parts=(ir.Linear(start_factor=0.5, steps=3),
                     ir.Chain(parts=(ir.Exponential(every=2, stair=True), ir.Cosine(steps=10)))))),
    ({"type": "SequentialLR", "schedulers": [{"type": "ConstantLR", "factor": 0.1, "total_iters": 10},
                                             {"type": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1,
                                              "step_size_up": 4, "cycle_momentum": False}], "milestones": [0]},
     ir.Sequence(parts=(ir.Constant(factor=0.1, steps=10), ir.Cyclic(low=0.01, high=0.1, step_size_up=4)),
                 boundaries=(0,))),
]


@pytest.mark.parametrize("spec, expected", TORCH_CASES, ids=lambda x: x["type"] if isinstance(x, dict) else "")
def test_torch_scheduler_maps_to_node(spec, expected):
    plan = optbridge.load(torch_doc(spec))
    assert plan.schedule == {"lr": expected}
    assert plan.step_unit == "iter"
    (g,) = plan.groups
    assert g.name == "all" and g.is_rest


@pytest.mark.parametrize("key", ["scheduler", "schedulers", "lr_scheduler"])
def test_torch_scheduler_key_aliases(key):
    d = {"dialect": "torch", "optimizer": {"type": "SGD", "lr": 0.1}, key: {"type": "ExponentialLR", "gamma": 0.9}}
    assert lr_of(optbridge.load(d)) == ir.Exponential(gamma=0.9)


def test_torch_lambda_nodes():
    pytest.importorskip("optbridge.expr")
    plan = optbridge.load(torch_doc({"type": "LambdaLR", "lr_lambda": "0.95 ** epoch"}))
    assert lr_of(plan) == ir.Lambda(expr="0.95 ** epoch")
    plan = optbridge.load(torch_doc({"type": "MultiplicativeLR", "lr_lambda": "0.9"}))
    assert lr_of(plan) == ir.Multiplicative(expr="0.9")
    np.testing.assert_allclose(trace(plan, 4)["lr"][0], [0.1, 0.09, 0.081, 0.0729])


def test_torch_optimizer_and_param_groups():
    plan = optbridge.load({
        "dialect": "torch",
        "optimizer": {"type": "AdamW", "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.05},
        "param_groups": [{"name": "no_decay", "params": {"ndim": [1]}, "weight_decay": 0.0},
                         {"params": ["backbone.*", {"modules": ["Linear"]}], "lr": 1e-4},
                         {"name": "rest", "params": "rest"}],
    })
    opt = plan.optimizers[0]
    assert opt.type == "AdamW" and opt.options == {"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.05}
    assert [g.name for g in opt.groups] == ["no_decay", "group1", "rest"]
    assert opt.groups[0].select == (optbridge.Selector(ndim=(1,)),)
    assert opt.groups[1].select == (optbridge.Selector(names=("backbone.*",)), optbridge.Selector(modules=("Linear",)))
    assert opt.groups[1].options == {"lr": 1e-4}
    assert opt.groups[2].is_rest
    assert plan.schedule == {}
    tr = trace(plan, 3)
    np.testing.assert_allclose(tr["lr"], [[1e-3] * 3, [1e-4] * 3, [1e-3] * 3])


def test_torch_clock_keys():
    plan = optbridge.load(torch_doc({"type": "StepLR", "step_size": 2}, step_unit="epoch", steps_per_epoch=3,
                                    total_steps=30, description="x"))
    assert (plan.step_unit, plan.steps_per_epoch, plan.total_steps) == ("epoch", 3, 30)
    assert getattr(plan, "description", "x") == "x"   # kept when Plan has a description field
    np.testing.assert_allclose(trace(plan, 8)["lr"][0], [0.1] * 6 + [0.01] * 2)


# ---- per-group lists

def test_torch_per_group_lambda_list():
    pytest.importorskip("optbridge.expr")
    plan = optbridge.load(torch_doc({"type": "LambdaLR", "lr_lambda": ["0.5 ** epoch", "1.0"]},
                                    param_groups=TWO_GROUPS))
    assert plan.schedule == {}
    a, b = plan.groups
    assert a.schedule == {"lr": ir.Lambda(expr="0.5 ** epoch")}
    assert b.schedule == {"lr": ir.Lambda(expr="1.0")}
    np.testing.assert_allclose(trace(plan, 3)["lr"], [[0.1, 0.05, 0.025], [0.01, 0.01, 0.01]])


def test_torch_per_group_lambda_list_equal_goes_to_plan():
    pytest.importorskip("optbridge.expr")
    plan = optbridge.load(torch_doc({"type": "LambdaLR", "lr_lambda": ["0.5 ** epoch", "0.5 ** epoch"]},
                                    param_groups=TWO_GROUPS))
    assert plan.schedule == {"lr": ir.Lambda(expr="0.5 ** epoch")}
    assert all(not g.schedule for g in plan.groups)


def test_torch_per_group_lambda_in_sequential():
    pytest.importorskip("optbridge.expr")
    plan = optbridge.load(torch_doc({
        "type": "SequentialLR",
        "schedulers": [{"type": "LinearLR", "start_factor": 0.5, "total_iters": 2},
                       {"type": "MultiplicativeLR", "lr_lambda": ["0.5", "0.9"]}],
        "milestones": [2]}, param_groups=TWO_GROUPS))
    assert plan.schedule == {}
    lin = ir.Linear(start_factor=0.5, steps=2)
    assert plan.groups[0].schedule["lr"] == ir.Sequence(parts=(lin, ir.Multiplicative(expr="0.5")), boundaries=(2,))
    assert plan.groups[1].schedule["lr"] == ir.Sequence(parts=(lin, ir.Multiplicative(expr="0.9")), boundaries=(2,))
    # torch: the multiplicative part continues from the lr before the milestone, times lambda(0)
    np.testing.assert_allclose(trace(plan, 4)["lr"],
                               [[0.05, 0.075, 0.075 * 0.5, 0.075 * 0.25], [0.005, 0.0075, 0.0075 * 0.9, 0.0075 * 0.81]])


# ---- momentum / beta1 cycling

def test_torch_cyclic_momentum_on_sgd():
    plan = optbridge.load(torch_doc({"type": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2,
                                     "step_size_down": 3}))
    assert plan.schedule["lr"] == ir.Cyclic(low=0.01, high=0.1, step_size_up=2, step_size_down=3)
    assert plan.schedule["momentum"] == ir.Cyclic(low=0.9, high=0.8, step_size_up=2, step_size_down=3)
    # the constructor writes group['lr'] = base_lr, which becomes initial_lr
    assert plan.optimizers[0].options["lr"] == 0.01
    tr = trace(plan, 7)
    np.testing.assert_allclose(tr["lr"][0], [0.01, 0.055, 0.1, 0.07, 0.04, 0.01, 0.055], atol=1e-15)
    np.testing.assert_allclose(tr["momentum"][0], [0.9, 0.85, 0.8, 0.8 + 0.1 / 3, 0.9 - 0.1 / 3, 0.9, 0.85])


@pytest.mark.parametrize("otype", ["Adam", "AdamW", "NAdam", "Adamax", "RAdam"])
def test_torch_cyclic_beta1_on_adam_family(otype):
    plan = optbridge.load(torch_doc({"type": "CyclicLR", "base_lr": 0.001, "max_lr": 0.01, "step_size_up": 3,
                                     "base_momentum": 0.85, "max_momentum": 0.95},
                                    optimizer={"type": otype, "lr": 0.001}))
    assert set(plan.schedule) == {"lr", "beta1"}
    assert plan.schedule["beta1"] == ir.Cyclic(low=0.95, high=0.85, step_size_up=3)
    tr = trace(plan, 4)
    np.testing.assert_allclose(tr["beta1"][0], [0.95, 0.95 - 0.1 / 3, 0.95 - 0.2 / 3, 0.85])


def test_torch_onecycle_momentum_and_beta1():
    sgd = optbridge.load(torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10}))
    kw = dict(total_steps=10, pct_start=0.3, anneal="cos", three_phase=False)
    assert sgd.schedule == {"lr": ir.OneCycle(peak=1.0, **kw),
                            "momentum": ir.OneCycle(initial=0.95, peak=0.85, final=0.95, **kw)}
    assert sgd.optimizers[0].options["lr"] == 1.0 / 25  # initial_lr = max_lr / div_factor
    adam = optbridge.load(torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "base_momentum": 0.8},
                                    optimizer={"type": "Adam"}))
    assert set(adam.schedule) == {"lr", "beta1"}
    assert adam.schedule["beta1"] == ir.OneCycle(initial=0.95, peak=0.8, final=0.95, **kw)
    # betas[1] is untouched
    assert optbridge.plan.hyper_base(adam, adam.groups[0], "beta2") == 0.999


def test_torch_onecycle_trace_semantics_values():
    plan = optbridge.load(torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10}))
    tr = trace(plan, 10)
    np.testing.assert_allclose(np.round(tr["lr"][0], 4), [.04, .52, 1, .9505, .8117, .6113, .3887, .1883, .0495, 0.0])
    assert tr["lr"][0, 9] == pytest.approx(4e-6)  # min_lr = initial_lr / final_div_factor
    np.testing.assert_allclose(np.round(tr["momentum"][0], 3), [.95, .90, .85, .855, .869, .889, .911, .931, .945, .95])


def test_torch_cycle_momentum_false_has_no_momentum_schedule():
    plan = optbridge.load(torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10,
                                     "cycle_momentum": False}, optimizer={"type": "Adagrad"}))
    assert set(plan.schedule) == {"lr"}


def test_torch_cyclic_per_group_lists():
    plan = optbridge.load(torch_doc({"type": "CyclicLR", "base_lr": [0.01, 0.001], "max_lr": [0.1, 0.01],
                                     "step_size_up": 2, "base_momentum": 0.8, "max_momentum": [0.9, 0.95]},
                                    param_groups=TWO_GROUPS))
    a, b = plan.groups
    assert plan.schedule == {}
    assert a.schedule == {"lr": ir.Cyclic(low=0.01, high=0.1, step_size_up=2),
                          "momentum": ir.Cyclic(low=0.9, high=0.8, step_size_up=2)}
    assert b.schedule == {"lr": ir.Cyclic(low=0.001, high=0.01, step_size_up=2),
                          "momentum": ir.Cyclic(low=0.95, high=0.8, step_size_up=2)}
    assert a.options["lr"] == 0.01 and b.options["lr"] == 0.001
    tr = trace(plan, 3)
    np.testing.assert_allclose(tr["lr"], [[0.01, 0.055, 0.1], [0.001, 0.0055, 0.01]])


def test_torch_onecycle_per_group_max_lr():
    plan = optbridge.load(torch_doc({"type": "OneCycleLR", "max_lr": [1.0, 0.5], "total_steps": 10,
                                     "cycle_momentum": False}, param_groups=TWO_GROUPS))
    assert plan.groups[0].schedule["lr"].peak == 1.0 and plan.groups[1].schedule["lr"].peak == 0.5
    assert [g.options["lr"] for g in plan.groups] == [0.04, 0.02]
    tr = trace(plan, 2)
    np.testing.assert_allclose(tr["lr"], [[0.04, 0.52], [0.02, 0.26]])


def test_torch_onecycle_first_in_sequential_sets_the_base():
    plan = optbridge.load(torch_doc({"type": "SequentialLR", "milestones": [10], "schedulers": [
        {"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "cycle_momentum": False},
        {"type": "ConstantLR", "factor": 0.5, "total_iters": 2}]}))
    # torch: OneCycleLR overwrote initial_lr to 1/25, the ConstantLR after the milestone scales that
    np.testing.assert_allclose(trace(plan, 13)["lr"][0, 10:], [0.02, 0.02, 0.04])


def test_torch_plateau_trace():
    """Metric m_j arrives after update j; trace[k] is the lr of update k, so trace = [base] + lr-after-each-step."""
    plan = optbridge.load(torch_doc({"type": "ReduceLROnPlateau", "factor": 0.5, "patience": 1, "cooldown": 1,
                                     "min_lr": 0.02}))
    metrics = [1, 1, 1, 1, 1, 1, .5, .6, .6, .6]
    after_step = [.1, .1, .05, .05, .05, .025, .025, .025, .02, .02]  # semantics.md §1.2, measured in torch
    tr = trace(plan, 11, metrics=metrics)
    np.testing.assert_allclose(tr["lr"][0], [0.1] + after_step)


def test_torch_plateau_per_group_min_lr():
    plan = optbridge.load(torch_doc({"type": "ReduceLROnPlateau", "min_lr": [0.05, 0.0]}, param_groups=TWO_GROUPS))
    assert plan.groups[0].schedule["lr"] == ir.Plateau(min_value=0.05)
    assert plan.groups[1].schedule["lr"] == ir.Plateau(min_value=0.0)


# ---- stacking and units

def test_torch_stacked_list_is_chain():
    plan = optbridge.load(torch_doc([{"type": "ExponentialLR", "gamma": 0.5},
                                     {"type": "StepLR", "step_size": 2, "gamma": 0.1}]))
    assert lr_of(plan) == ir.Chain(parts=(ir.Exponential(gamma=0.5), ir.Exponential(gamma=0.1, every=2, stair=True)))
    # semantics.md §1.2: ExponentialLR(.5) + StepLR(2, .1) on one optimizer
    np.testing.assert_allclose(trace(plan, 5)["lr"][0], [.1, .05, .0025, .00125, 6.25e-5])


def test_torch_chained_cosine_within_t_max_is_fine():
    doc = torch_doc([{"type": "ConstantLR", "factor": 0.5, "total_iters": 2},
                     {"type": "CosineAnnealingLR", "T_max": 3, "step_unit": "epoch"}], total_steps=8, steps_per_epoch=2)
    plan = optbridge.load(doc)   # reaches epoch 3 = T_max: still a product
    cos = [1, 1, 0.75, 0.75, 0.25, 0.25, 0, 0]
    np.testing.assert_allclose(trace(plan, 8)["lr"][0], [0.1 * (0.5 if k < 2 else 1) * c for k, c in enumerate(cos)],
                               atol=1e-17)
    # a lone CosineAnnealingLR is periodic past T_max, no limit
    optbridge.load(torch_doc({"type": "CosineAnnealingLR", "T_max": 3}, total_steps=100))


def test_torch_single_entry_list_is_that_scheduler():
    plan = optbridge.load(torch_doc([{"type": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1}]))
    assert set(plan.schedule) == {"lr", "momentum"}


def test_torch_per_entry_step_unit():
    plan = optbridge.load(torch_doc([{"type": "LinearLR", "start_factor": 0.5, "total_iters": 4, "step_unit": "iter"},
                                     {"type": "CosineAnnealingLR", "T_max": 3, "step_unit": "epoch"}],
                                    steps_per_epoch=2))
    assert lr_of(plan) == ir.Chain(parts=(ir.Linear(start_factor=0.5, steps=4, unit="iter"),
                                          ir.Cosine(steps=3, unit="epoch")))
    lin = [0.5, 0.625, 0.75, 0.875, 1, 1]
    cos = [1, 1, 0.75, 0.75, 0.25, 0.25]
    np.testing.assert_allclose(trace(plan, 6)["lr"][0], [0.1 * a * b for a, b in zip(lin, cos)])


def test_torch_single_scheduler_step_unit():
    plan = optbridge.load(torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "step_unit": "epoch"},
                                    steps_per_epoch=5))
    assert plan.schedule["lr"].unit == "epoch" and plan.schedule["momentum"].unit == "epoch"


def test_torch_yaml_document():
    text = """
dialect: torch
optimizer: {type: SGD, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}
param_groups:
  - {name: backbone, params: "backbone.*", lr: 0.01}
  - {name: head, params: rest}
scheduler:
  type: SequentialLR
  schedulers:
    - {type: LinearLR, start_factor: 0.1, total_iters: 5}
    - {type: CosineAnnealingLR, T_max: 95, eta_min: 0.0}
  milestones: [5]
step_unit: iter
steps_per_epoch: 100
total_steps: 10000
"""
    plan = optbridge.loads(text)
    assert lr_of(plan) == ir.Sequence(parts=(ir.Linear(start_factor=0.1, steps=5), ir.Cosine(steps=95)),
                                      boundaries=(5,))
    assert [g.name for g in plan.groups] == ["backbone", "head"]
    assert plan.groups[0].options["lr"] == 0.01
    assert (plan.steps_per_epoch, plan.total_steps) == (100, 10000)
    tr = trace(plan, 6)
    np.testing.assert_allclose(tr["lr"][1], [0.01, 0.028, 0.046, 0.064, 0.082, 0.1])


def test_torch_json_document_and_example_file():
    doc = torch_doc({"type": "MultiStepLR", "milestones": [2, 4], "gamma": 0.5})
    plan = optbridge.loads(json.dumps(doc), "json")
    np.testing.assert_allclose(trace(plan, 5)["lr"][0], [0.1, 0.1, 0.05, 0.05, 0.025])
    ex = optbridge.load("optbridge/examples/torch_sequential.yaml")
    assert ex.step_unit == "epoch" and ex.steps_per_epoch == 10


def test_torch_round_trip_through_canonical():
    plan = optbridge.load(torch_doc({"type": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2}))
    again = optbridge.loads(optbridge.dumps(plan))
    assert again == plan


# =========================================================================== MindSpore

MS_LIST_CASES = [
    # (spec, node, base lr, total_steps, steps_per_epoch)
    ({"type": "exponential_decay_lr", "learning_rate": 0.1, "decay_rate": 0.5, "total_step": 10,
      "step_per_epoch": 2, "decay_epoch": 2},
     ir.Exponential(gamma=0.5, every=2, stair=False, unit="epoch"), 0.1, 10, 2),
    ({"type": "exponential_decay_lr", "learning_rate": 0.1, "decay_rate": 0.5, "total_step": 10,
      "step_per_epoch": 2, "decay_epoch": 2, "is_stair": True},
     ir.Exponential(gamma=0.5, every=2, stair=True, unit="epoch"), 0.1, 10, 2),
    ({"type": "natural_exp_decay_lr", "learning_rate": 0.1, "decay_rate": 0.5, "total_step": 10,
      "step_per_epoch": 2, "decay_epoch": 3, "is_stair": True},
     ir.NaturalExp(rate=0.5, every=3, stair=True, unit="epoch"), 0.1, 10, 2),
    ({"type": "inverse_decay_lr", "learning_rate": 0.2, "decay_rate": 0.5, "total_step": 6,
      "step_per_epoch": 1, "decay_epoch": 2},
     ir.InverseTime(rate=0.5, every=2, stair=False, unit="epoch"), 0.2, 6, 1),
    ({"type": "cosine_decay_lr", "min_lr": 0.0, "max_lr": 0.1, "total_step": 12, "step_per_epoch": 2,
      "decay_epoch": 4},
     ir.Cosine(steps=4, end=0.0, clamp=True, unit="epoch"), 0.1, 12, 2),
    ({"type": "polynomial_decay_lr", "learning_rate": 0.1, "end_learning_rate": 0.01, "total_step": 20,
      "step_per_epoch": 2, "decay_epoch": 4, "power": 2.0, "update_decay_epoch": True},
     ir.Polynomial(steps=4, power=2.0, end=0.01, cycle=True, unit="epoch"), 0.1, 20, 2),
    ({"type": "warmup_lr", "learning_rate": 0.1, "total_step": 10, "step_per_epoch": 2, "warmup_epoch": 3},
     ir.Linear(start_factor=0.0, end_factor=1.0, steps=3, unit="epoch"), 0.1, 10, 2),
    ({"type": "piecewise_constant_lr", "milestone": [2, 5, 10], "learning_rates": [0.1, 0.05, 0.01]},
     ir.Piecewise(boundaries=(2, 5), values=(0.1, 0.05, 0.01)), 0.1, 10, None),
    # equal milestones are an empty interval in MindSpore: dropped
    ({"type": "piecewise_constant_lr", "milestone": [2, 2, 4], "learning_rates": [0.1, 0.07, 0.01]},
     ir.Piecewise(boundaries=(2,), values=(0.1, 0.01)), 0.1, 4, None),
]


@pytest.mark.parametrize("spec, node, base, total, spe", MS_LIST_CASES, ids=lambda x: x["type"] if isinstance(x, dict) else None)
def test_mindspore_list_function_maps_to_node(spec, node, base, total, spe):
    plan = optbridge.load(ms_doc(spec))
    assert plan.schedule == {"lr": node}
    assert plan.optimizers[0].options["lr"] == base
    assert (plan.step_unit, plan.total_steps, plan.steps_per_epoch) == ("iter", total, spe)


MS_CELL_CASES = [
    ({"type": "ExponentialDecayLR", "learning_rate": 0.1, "decay_rate": 0.9, "decay_steps": 4},
     ir.Exponential(gamma=0.9, every=4, stair=False), 0.1),
    ({"type": "ExponentialDecayLR", "learning_rate": 0.1, "decay_rate": 0.9, "decay_steps": 4, "is_stair": True},
     ir.Exponential(gamma=0.9, every=4, stair=True), 0.1),
    ({"type": "NaturalExpDecayLR", "learning_rate": 0.1, "decay_rate": 0.9, "decay_steps": 4},
     ir.NaturalExp(rate=0.9, every=4, stair=False), 0.1),
    ({"type": "InverseDecayLR", "learning_rate": 0.1, "decay_rate": 0.9, "decay_steps": 4, "is_stair": True},
     ir.InverseTime(rate=0.9, every=4, stair=True), 0.1),
    ({"type": "CosineDecayLR", "min_lr": 0.01, "max_lr": 0.1, "decay_steps": 100},
     ir.Cosine(steps=100, end=0.01, clamp=True), 0.1),
    ({"type": "PolynomialDecayLR", "learning_rate": 0.1, "end_learning_rate": 0.01, "decay_steps": 10,
      "power": 0.5},
     ir.Polynomial(steps=10, power=0.5, end=0.01, cycle=False), 0.1),
    ({"type": "PolynomialDecayLR", "learning_rate": 0.1, "end_learning_rate": 0.0, "decay_steps": 10,
      "power": 1.0, "update_decay_steps": True},
     ir.Polynomial(steps=10, power=1.0, end=0.0, cycle=True), 0.1),
    ({"type": "WarmUpLR", "learning_rate": 0.3, "warmup_steps": 4}, ir.Linear(start_factor=0.0, steps=4), 0.3),
]


@pytest.mark.parametrize("spec, node, base", MS_CELL_CASES, ids=lambda x: x["type"] if isinstance(x, dict) else None)
def test_mindspore_cell_maps_to_node(spec, node, base):
    plan = optbridge.load(ms_doc(spec))
    assert plan.schedule == {"lr": node}
    assert plan.optimizers[0].options["lr"] == base
    assert (plan.total_steps, plan.steps_per_epoch) == (None, None)  # cells have no horizon


# ---- traces against MindSpore's formulas (semantics.md §2.1, computed by hand)

def test_mindspore_list_traces():
    def tr(spec, n):
        return trace(optbridge.load(ms_doc(spec)), n)["lr"][0]
    w = tr({"type": "warmup_lr", "learning_rate": 0.1, "total_step": 10, "step_per_epoch": 2, "warmup_epoch": 3}, 10)
    np.testing.assert_allclose(np.round(w, 4), [0, 0, .0333, .0333, .0667, .0667, .1, .1, .1, .1])
    c = tr({"type": "cosine_decay_lr", "min_lr": 0.0, "max_lr": 0.1, "total_step": 12, "step_per_epoch": 2,
            "decay_epoch": 4}, 12)
    np.testing.assert_allclose(np.round(c, 4), [.1, .1, .0854, .0854, .05, .05, .0146, .0146, 0, 0, 0, 0])
    base = {"type": "exponential_decay_lr", "learning_rate": 0.1, "decay_rate": 0.5, "total_step": 10,
            "step_per_epoch": 2, "decay_epoch": 2}
    np.testing.assert_allclose(np.round(tr(base, 10), 4)[:6], [.1, .1, .0707, .0707, .05, .05])
    np.testing.assert_allclose(tr({**base, "is_stair": True}, 10), [.1] * 4 + [.05] * 4 + [.025] * 2)
    # natural_exp_decay_lr ignores decay_epoch unless is_stair (its code, not its docstring)
    ne = tr({"type": "natural_exp_decay_lr", "learning_rate": 0.1, "decay_rate": 0.5, "total_step": 6,
             "step_per_epoch": 1, "decay_epoch": 7}, 6)
    np.testing.assert_allclose(ne, [0.1 * math.exp(-0.5 * e) for e in range(6)])
    # polynomial with update_decay_epoch re-grows the horizon
    pd = tr({"type": "polynomial_decay_lr", "learning_rate": 0.1, "end_learning_rate": 0.01, "total_step": 6,
             "step_per_epoch": 1, "decay_epoch": 2, "power": 1.0, "update_decay_epoch": True}, 6)
    want = []
    for e in range(6):
        D = 2 * max(math.ceil(e / 2), 1)
        want.append(0.09 * (1 - e / D) + 0.01)
    np.testing.assert_allclose(pd, want)
    pw = tr({"type": "piecewise_constant_lr", "milestone": [2, 5, 7], "learning_rates": [0.1, 0.05, 0.01]}, 7)
    np.testing.assert_allclose(pw, [.1, .1, .05, .05, .05, .01, .01])


def test_mindspore_cell_traces():
    def tr(spec, n):
        return trace(optbridge.load(ms_doc(spec)), n)["lr"][0]
    np.testing.assert_allclose(tr({"type": "WarmUpLR", "learning_rate": 0.1, "warmup_steps": 4}, 6),
                               [0, .025, .05, .075, .1, .1])
    ne = tr({"type": "NaturalExpDecayLR", "learning_rate": 0.1, "decay_rate": 0.5, "decay_steps": 3,
             "is_stair": True}, 7)
    np.testing.assert_allclose(ne, [0.1 * math.exp(-0.5 * (s // 3) * 3) for s in range(7)])
    cd = tr({"type": "CosineDecayLR", "min_lr": 0.0, "max_lr": 0.1, "decay_steps": 2}, 4)
    np.testing.assert_allclose(cd, [0.1, 0.05, 0.0, 0.0], atol=1e-17)   # clamped


def test_mindspore_concatenation():
    plan = optbridge.load("optbridge/examples/mindspore_lists.yaml")
    assert lr_of(plan) == ir.Sequence(
        parts=(ir.Linear(start_factor=0.0, end_factor=1.0, steps=2, unit="epoch"),
               ir.Cosine(steps=8, end=0.0, clamp=True, unit="epoch")),
        boundaries=(200,), unit="iter")
    assert (plan.total_steps, plan.steps_per_epoch, plan.step_unit) == (1000, 100, "iter")
    assert plan.optimizers[0].type == "SGD" and plan.optimizers[0].options["lr"] == 0.1
    tr = trace(plan, 1000)["lr"][0]
    want = [0.1 * min(i // 100, 2) / 2 for i in range(200)]
    want += [0.05 * (1 + math.cos(math.pi * min(i // 100, 8) / 8)) for i in range(800)]
    np.testing.assert_allclose(tr, want, rtol=1e-14, atol=1e-17)
    with pytest.raises(optbridge.EvaluationError, match="1000 steps"):
        trace(plan, 1001)  # MindSpore fails past the end of an lr list


def _ms_lists(*pieces):
    """The concatenated list MindSpore builds (dynamic_lr.py formulas, written out by hand)."""
    out = []
    for kind, a in pieces:
        for i in range(a.get("total_step") or a["milestone"][-1]):
            e = i // a.get("step_per_epoch", 1)
            if kind == "warmup_lr":
                out.append(a["learning_rate"] * min(e, a["warmup_epoch"]) / a["warmup_epoch"])
            elif kind == "cosine_decay_lr":
                de = a["decay_epoch"]
                out.append(a["min_lr"] + 0.5 * (a["max_lr"] - a["min_lr"]) * (1 + math.cos(math.pi * min(e, de) / de)))
            elif kind == "exponential_decay_lr":
                out.append(a["learning_rate"] * a["decay_rate"] ** (e / a["decay_epoch"]))
            elif kind == "polynomial_decay_lr":
                de = a["decay_epoch"]
                out.append((a["learning_rate"] - a["end_learning_rate"]) * (1 - min(e, de) / de) ** a["power"]
                           + a["end_learning_rate"])
            elif kind == "piecewise_constant_lr":
                out.append(next(v for m, v in zip(a["milestone"], a["learning_rates"]) if i < m))
    return out


def test_mindspore_concatenation_with_different_bases():
    pieces = [
        ("warmup_lr", dict(learning_rate=0.2, total_step=6, step_per_epoch=2, warmup_epoch=2)),
        ("cosine_decay_lr", dict(min_lr=0.01, max_lr=0.1, total_step=8, step_per_epoch=2, decay_epoch=3)),
        ("exponential_decay_lr", dict(learning_rate=0.05, decay_rate=0.5, total_step=6, step_per_epoch=2,
                                      decay_epoch=1)),
        ("piecewise_constant_lr", dict(milestone=[2, 4], learning_rates=[0.003, 0.001])),
        ("polynomial_decay_lr", dict(learning_rate=0.3, end_learning_rate=0.02, total_step=6, step_per_epoch=2,
                                     decay_epoch=2, power=2.0)),
    ]
    plan = optbridge.load(ms_doc([{"type": k, **a} for k, a in pieces]))
    node = lr_of(plan)
    assert isinstance(node, ir.Sequence) and node.boundaries == (6, 14, 20, 24)
    assert plan.optimizers[0].options["lr"] == 0.2 and plan.total_steps == 30
    want = _ms_lists(*pieces)
    np.testing.assert_allclose(trace(plan, 30)["lr"][0], want, rtol=1e-13)


def test_mindspore_plain_list_lr():
    plan = optbridge.load(ms_doc([0.1, 0.2, 0.3]))
    assert lr_of(plan) == ir.Table(values=(0.1, 0.2, 0.3))
    assert plan.total_steps == 3
    np.testing.assert_allclose(trace(plan, 3)["lr"][0], [0.1, 0.2, 0.3])


def test_mindspore_float_lr_and_optimizers():
    plan = optbridge.load({"dialect": "mindspore", "optimizer": {"type": "SGD"}})
    assert plan.optimizers[0].options == {"lr": 0.1, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
                                          "nesterov": False}  # MindSpore's SGD default lr is 0.1 (torch: 1e-3)
    assert plan.schedule == {}
    plan = optbridge.load(ms_doc(optimizer={"type": "Momentum", "momentum": 0.9, "learning_rate": 0.05,
                                            "use_nesterov": True, "weight_decay": 1e-4}))
    assert plan.optimizers[0].type == "SGD"
    assert plan.optimizers[0].options == {"lr": 0.05, "momentum": 0.9, "dampening": 0.0, "weight_decay": 1e-4,
                                          "nesterov": True}
    plan = optbridge.load(ms_doc(1, optimizer={"type": "Adam", "beta1": 0.8, "eps": 1e-6}))
    assert plan.optimizers[0].type == "Adam"
    assert plan.optimizers[0].options == {"lr": 1.0, "betas": (0.8, 0.999), "eps": 1e-6, "weight_decay": 0.0}
    plan = optbridge.load(ms_doc(0.001, optimizer={"type": "AdamWeightDecay", "weight_decay": 0.01}))
    assert plan.optimizers[0].type == "AdamWeightDecay"
    assert plan.optimizers[0].options == {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.01}


def test_mindspore_group_params_with_dynamic_lr():
    cos = {"type": "cosine_decay_lr", "min_lr": 0.0, "max_lr": 0.1, "total_step": 8, "step_per_epoch": 2,
           "decay_epoch": 4}
    plan = optbridge.load(ms_doc(cos, group_params=[
        {"name": "backbone", "params": "backbone.*", "lr": {**cos, "max_lr": 0.01}},
        {"name": "bias", "params": {"leaf": ["bias"]}, "lr": 0.5, "weight_decay": 0.0},
        {"name": "rest", "params": "rest"},
    ]))
    node = ir.Cosine(steps=4, end=0.0, clamp=True, unit="epoch")
    assert plan.schedule == {"lr": node}
    bb, bias, rest = plan.groups
    assert bb.schedule == {"lr": node} and bb.options == {"lr": 0.01}
    assert bias.schedule == {"lr": ir.Constant()} and bias.options == {"lr": 0.5, "weight_decay": 0.0}
    assert rest.schedule == {} and rest.options == {}
    tr = trace(plan, 8)["lr"]
    c = [0.5 * (1 + math.cos(math.pi * min(i // 2, 4) / 4)) for i in range(8)]
    np.testing.assert_allclose(tr, [[0.01 * x for x in c], [0.5] * 8, [0.1 * x for x in c]], atol=1e-17)


def test_mindspore_group_cell_lr_and_static_optimizer_lr():
    plan = optbridge.load(ms_doc(0.1, group_params=[
        {"params": "a.*", "lr": {"type": "WarmUpLR", "learning_rate": 0.2, "warmup_steps": 2}},
        {"params": "rest"}]))
    assert plan.schedule == {}
    a, b = plan.groups
    assert (a.name, b.name) == ("group0", "group1")
    assert a.schedule == {"lr": ir.Linear(start_factor=0.0, steps=2)} and a.options == {"lr": 0.2}
    np.testing.assert_allclose(trace(plan, 3)["lr"], [[0, 0.1, 0.2], [0.1, 0.1, 0.1]])


def test_mindspore_yaml_and_json():
    text = """
dialect: mindspore
optimizer: {type: Momentum, momentum: 0.9, weight_decay: 1.0e-4}
learning_rate: {type: cosine_decay_lr, min_lr: 0.0, max_lr: 0.1, total_step: 1000, step_per_epoch: 100, decay_epoch: 10}
"""
    plan = optbridge.loads(text)
    assert lr_of(plan) == ir.Cosine(steps=10, end=0.0, clamp=True, unit="epoch")
    assert (plan.total_steps, plan.steps_per_epoch) == (1000, 100)
    plan2 = optbridge.loads(json.dumps({"optimizer": {"type": "SGD", "learning_rate": [0.3, 0.2]}}), "json")
    assert lr_of(plan2) == ir.Table(values=(0.3, 0.2))   # detected as MindSpore (learning_rate in the optimizer)


# =========================================================================== errors

TORCH_ERRORS = [
    # (document, expected message substring; each starts with the exact dialect path)
    (torch_doc({"type": "SequentialLR", "milestones": [5], "schedulers": [
        {"type": "LinearLR"}, {"type": "CosineAnnealingLR", "T_max": 0}]}),
     "scheduler.schedulers[1].T_max: must be a positive integer, got 0"),
    (torch_doc({"type": "StepLR", "step_size": 0}), "scheduler.step_size: must be a positive integer, got 0"),
    (torch_doc({"type": "StepLR"}), "scheduler.step_size: is required (StepLR(step_size, gamma=0.1, last_epoch=-1))"),
    (torch_doc({"type": "StepLR", "step_size": 3, "gama": 0.5}),
     "scheduler.gama: is not an argument of StepLR (did you mean 'gamma'?) (accepted: step_size, gamma, last_epoch)"),
    (torch_doc({"type": "CosineAnealingLR", "T_max": 3}),
     "scheduler.type: is not a torch lr scheduler (did you mean 'CosineAnnealingLR'?) (known: LambdaLR,"),
    (torch_doc({"T_max": 3}), "scheduler.type: is required"),
    (torch_doc({"type": "ConstantLR", "factor": 1.5}), "scheduler.factor: must be between 0 and 1"),
    (torch_doc({"type": "ConstantLR", "factor": 0.5, "total_iters": -1}),
     "scheduler.total_iters: must be an integer >= 0, got -1"),
    (torch_doc({"type": "LinearLR", "start_factor": 0.0}), "scheduler.start_factor: must be greater than 0 and at most 1"),
    (torch_doc({"type": "LinearLR", "end_factor": 1.5}), "scheduler.end_factor: must be between 0 and 1"),
    (torch_doc({"type": "LinearLR", "total_iters": 0}), "scheduler.total_iters: must be a positive integer, got 0"),
    (torch_doc({"type": "PolynomialLR", "total_iters": 0}), "scheduler.total_iters: must be a positive integer"),
    (torch_doc({"type": "MultiStepLR", "milestones": 30}), "scheduler.milestones: must be a list of integers, got 30"),
    (torch_doc({"type": "MultiStepLR", "milestones": [10, "x"]}), "scheduler.milestones[1]: must be an integer >= 0"),
    (torch_doc({"type": "ExponentialLR", "gamma": "0.9"}), "scheduler.gamma: must be a number, got '0.9'"),
    (torch_doc({"type": "CosineAnnealingLR", "T_max": 10, "eta_min": None}), "scheduler.eta_min: must be a number"),
    (torch_doc({"type": "CosineAnnealingWarmRestarts", "T_0": 0}), "scheduler.T_0: must be a positive integer, got 0"),
    (torch_doc({"type": "CosineAnnealingWarmRestarts", "T_0": 10.0}), "scheduler.T_0: must be a positive integer, got 10.0"),
    (torch_doc({"type": "CosineAnnealingWarmRestarts", "T_0": 10, "T_mult": 0}),
     "scheduler.T_mult: must be an integer >= 1, got 0"),
    (torch_doc({"type": "CyclicLR", "base_lr": 0.1, "max_lr": 1.0, "mode": "tri"}), "scheduler.mode: must be one of"),
    (torch_doc({"type": "CyclicLR", "base_lr": 0.1, "max_lr": 1.0, "step_size_up": 0}),
     "scheduler.step_size_up: must be a positive integer, got 0"),
    (torch_doc({"type": "CyclicLR", "base_lr": 0.1, "max_lr": 1.0, "scale_fn": "lambda x: 1"}),
     "scheduler.scale_fn: is not supported"),
    (torch_doc({"type": "CyclicLR", "base_lr": [0.1, 0.2], "max_lr": 1.0}),
     "scheduler.base_lr: must be one value, or a list with one value per param group (1 group)"),
    (torch_doc({"type": "CyclicLR", "base_lr": 0.1, "max_lr": [1.0, "x"]}, param_groups=TWO_GROUPS),
     "scheduler.max_lr[1]: must be a number, got 'x'"),
    (torch_doc({"type": "CyclicLR", "base_lr": 0.1, "max_lr": 1.0}, optimizer={"type": "Adagrad"}),
     "scheduler.cycle_momentum: needs an optimizer with momentum or betas, and Adagrad has neither"),
    (torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10}, optimizer={"type": "Adadelta"}),
     "scheduler.cycle_momentum: needs an optimizer with momentum or betas"),
    (torch_doc({"type": "OneCycleLR", "max_lr": 1.0}), "scheduler.total_steps: is required unless both epochs and steps_per_epoch"),
    (torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 0}), "scheduler.total_steps: must be a positive integer, got 0"),
    (torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "epochs": 0, "steps_per_epoch": 5}),
     "scheduler.epochs: must be a positive integer, got 0"),
    (torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "pct_start": 1.5}),
     "scheduler.pct_start: must be a float between 0 and 1"),
    (torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "pct_start": 0}),
     "scheduler.pct_start: must be a float between 0 and 1 (torch rejects ints"),
    (torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "anneal_strategy": "cosine"}),
     "scheduler.anneal_strategy: must be one of 'cos', 'linear', got 'cosine'"),
    (torch_doc({"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 10, "div_factor": 0.0}),
     "scheduler.div_factor: must be non-zero, got 0.0"),
    (torch_doc({"type": "ReduceLROnPlateau", "factor": 1.0}), "scheduler.factor: must be < 1.0, got 1.0"),
    (torch_doc({"type": "ReduceLROnPlateau", "mode": "maximum"}), "scheduler.mode: must be one of 'min', 'max'"),
    (torch_doc({"type": "ReduceLROnPlateau", "min_lr": [0.1, 0.2, 0.3]}, param_groups=TWO_GROUPS),
     "scheduler.min_lr: must be one value, or a list with one value per param group (2 groups)"),
    (torch_doc({"type": "ReduceLROnPlateau", "patience": -1}), "scheduler.patience: must be an integer >= 0"),
    (torch_doc({"type": "StepLR", "step_size": 2, "last_epoch": 5}), "scheduler.last_epoch: must be -1"),
    (torch_doc({"type": "LambdaLR", "lr_lambda": ["0.9", "0.8", "0.7"]}, param_groups=TWO_GROUPS),
     "scheduler.lr_lambda: must be one expression, or a list with one expression per param group (expected 2 lr_lambdas"),
    (torch_doc({"type": "LambdaLR", "lr_lambda": ["0.9", "foo"]}, param_groups=TWO_GROUPS),
     "scheduler.lr_lambda[1]: unknown name 'foo'"),
    (torch_doc({"type": "LambdaLR", "lr_lambda": "__import__('os')"}), "scheduler.lr_lambda:"),
    # composition
    (torch_doc({"type": "SequentialLR", "schedulers": [{"type": "LinearLR"}, {"type": "StepLR", "step_size": 2}],
                "milestones": [5, 10]}),
     "scheduler.milestones: must have one milestone fewer than schedulers (2 schedulers, so 1 milestones)"),
    (torch_doc({"type": "SequentialLR", "schedulers": [], "milestones": []}),
     "scheduler.schedulers: must be a non-empty list of schedulers"),
    (torch_doc({"type": "SequentialLR", "schedulers": [{"type": "LinearLR"}, {"type": "LinearLR"},
                                                       {"type": "LinearLR"}], "milestones": [10, 5]}),
     "scheduler.milestones: must be strictly increasing, got [10, 5]"),
    (torch_doc({"type": "SequentialLR", "milestones": [5], "schedulers": [
        {"type": "LinearLR"}, {"type": "SequentialLR", "schedulers": [{"type": "LinearLR"}], "milestones": []}]}),
     "scheduler.schedulers[1]: SequentialLR cannot be nested in a SequentialLR"),
    (torch_doc({"type": "SequentialLR", "milestones": [5], "schedulers": [
        {"type": "LinearLR"}, {"type": "ChainedScheduler", "schedulers": [{"type": "LinearLR"}]}]}),
     "scheduler.schedulers[1]: ChainedScheduler cannot be nested in a SequentialLR"),
    (torch_doc({"type": "SequentialLR", "milestones": [5], "schedulers": [
        {"type": "LinearLR"}, {"type": "ReduceLROnPlateau"}]}),
     "scheduler.schedulers[1]: ReduceLROnPlateau must be the only scheduler"),
    (torch_doc({"type": "SequentialLR", "milestones": [5], "schedulers": [
        {"type": "LinearLR"}, {"type": "CyclicLR", "base_lr": 0.01, "max_lr": 0.1}]}),
     "scheduler.schedulers[1].cycle_momentum: momentum cycling is only supported when CyclicLR is the only scheduler"
     " (inside SequentialLR the momentum schedule would not follow the composition): set cycle_momentum: false or "
     "use it as the only scheduler"),
    (torch_doc({"type": "SequentialLR", "milestones": [5], "schedulers": [
        {"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 5}, {"type": "LinearLR"}]}),
     "scheduler.schedulers[0].cycle_momentum: momentum cycling is only supported"),
    (torch_doc({"type": "SequentialLR", "milestones": [5], "schedulers": [
        {"type": "LinearLR"}, {"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 5, "cycle_momentum": False}]}),
     "scheduler.schedulers[1]: OneCycleLR can only be the first scheduler of a SequentialLR"),
    (torch_doc({"type": "SequentialLR", "milestones": [5], "schedulers": [
        {"type": "LinearLR"}, {"type": "StepLR", "step_size": 2, "step_unit": "epoch"}]}),
     "scheduler.schedulers[1].step_unit: can only be set on a top-level scheduler"),
    (torch_doc({"type": "ChainedScheduler", "schedulers": [
        {"type": "ConstantLR"}, {"type": "LambdaLR", "lr_lambda": "1.0"}]}),
     "scheduler.schedulers[1]: cannot be combined by ChainedScheduler: torch's LambdaLR sets lr = initial_lr * "
     "lr_lambda(k)"),
    (torch_doc({"type": "ChainedScheduler", "schedulers": [
        {"type": "ConstantLR"}, {"type": "CosineAnnealingLR", "T_max": 10, "eta_min": 0.001}]}),
     "scheduler.schedulers[1]: cannot be combined by ChainedScheduler: torch's CosineAnnealingLR with eta_min != 0"),
    (torch_doc({"type": "ChainedScheduler", "schedulers": [
        {"type": "ConstantLR"}, {"type": "CosineAnnealingLR", "T_max": 10}]}, total_steps=12),
     "scheduler.schedulers[1].T_max: must cover the whole run when CosineAnnealingLR is chained (the plan reaches "
     "step 11 in iters)"),
    (torch_doc([{"type": "ConstantLR"}, {"type": "CosineAnnealingLR", "T_max": 3, "step_unit": "epoch"}],
               total_steps=9, steps_per_epoch=2),
     "scheduler[1].T_max: must cover the whole run when CosineAnnealingLR is chained (the plan reaches step 4 in "
     "epochs)"),
    (torch_doc({"type": "ChainedScheduler", "schedulers": [{"type": "CosineAnnealingWarmRestarts", "T_0": 5}]}),
     "scheduler.schedulers[0]: cannot be combined by ChainedScheduler"),
    (torch_doc({"type": "ChainedScheduler", "schedulers": [{"type": "ReduceLROnPlateau"}]}),
     "scheduler.schedulers[0]: ReduceLROnPlateau must be the only scheduler"),
    (torch_doc({"type": "ChainedScheduler", "schedulers": [
        {"type": "ConstantLR"}, {"type": "OneCycleLR", "max_lr": 1.0, "total_steps": 5, "cycle_momentum": False}]}),
     "scheduler.schedulers[1]: cannot be combined by ChainedScheduler: torch's OneCycleLR"),
    (torch_doc([{"type": "ExponentialLR", "gamma": 0.9}, {"type": "CyclicLR", "base_lr": 0.1, "max_lr": 1.0}]),
     "scheduler[1]: cannot be combined by several schedulers stacked on one optimizer: torch's CyclicLR"),
    (torch_doc([{"type": "ExponentialLR", "gamma": 0.9}, {"type": "ReduceLROnPlateau"}]),
     "scheduler[1]: ReduceLROnPlateau must be the only scheduler"),
    (torch_doc([{"type": "ExponentialLR", "gamma": 0.9},
                {"type": "SequentialLR", "schedulers": [{"type": "LinearLR"}], "milestones": []}]),
     "scheduler[1]: cannot be combined by several schedulers stacked on one optimizer: torch's SequentialLR"),
    (torch_doc([{"type": "ExponentialLR", "gamma": 0.9, "step_unit": "epoch"}, {"type": "LinearLR"}]),
     "scheduler[0].step_unit: differs from the document's step_unit (iter), so steps_per_epoch is needed"),
    (torch_doc([{"type": "ExponentialLR", "gamma": 0.9, "step_unit": "week"}]),
     "scheduler[0].step_unit: must be one of 'iter', 'epoch', got 'week'"),
    (torch_doc([]), "scheduler: must be a scheduler or a non-empty list of schedulers"),
    # optimizer / groups / document
    (torch_doc(optimizer={"type": "Adamw"}), "optimizer.type: must be one of SGD, Adam, AdamW"),
    (torch_doc(optimizer={"lr": 0.1}), "optimizer.type: is required"),
    (torch_doc(optimizer={"type": "SGD", "betas": [0.9, 0.99]}), "optimizer.betas: is not an argument of torch.optim.SGD"),
    (torch_doc(optimizer={"type": "SGD", "lr": -1.0}), "optimizer.lr: must be >= 0, got -1.0"),
    (torch_doc(param_groups=[{"name": "a", "params": "a.*", "mommentum": 0.5}]),
     "param_groups[0].mommentum: is not an option of torch.optim.SGD (did you mean 'momentum'?)"),
    (torch_doc(param_groups=[{"name": "a"}]), "param_groups[0].params: is required"),
    (torch_doc(param_groups=[{"name": "a", "params": "a.*", "lr": "x"}]), "param_groups[0].lr: must be a number"),
    (torch_doc(param_groups=[{"name": "a", "params": "a.*"}, {"name": "a", "params": "rest"}]),
     "param_groups[1].name: must be unique within the optimizer, got 'a'"),
    (torch_doc(param_groups=[{"name": "a", "params": "rest"}, {"name": "b", "params": "rest"}]),
     "param_groups: at most one group may be the rest group"),
    (torch_doc(param_groups=[{"name": "a", "params": {"regex": ["("]}}]), "param_groups[0].params[0].regex[0]:"),
    (torch_doc(param_groups=[]), "param_groups: must be a non-empty list"),
    (torch_doc(schedule={"kind": "cosine"}), "schedule: is not a key of the torch dialect (did you mean 'scheduler'?)"),
    (torch_doc({"type": "StepLR", "step_size": 2}, schedulers={"type": "StepLR", "step_size": 2}),
     "schedulers: cannot be given together with scheduler"),
    (torch_doc(step_unit="epochs"), "step_unit: must be one of 'iter', 'epoch', got 'epochs'"),
    (torch_doc(steps_per_epoch=0), "steps_per_epoch: must be a positive integer, got 0"),
    ({"dialect": "torch"}, "optimizer: is required"),
]


@pytest.mark.parametrize("doc, message", TORCH_ERRORS, ids=[m[:60] for _, m in TORCH_ERRORS])
def test_torch_errors(doc, message):
    with pytest.raises(ConfigError) as info:
        optbridge.load(doc)
    assert str(info.value).startswith(message) or message in str(info.value), str(info.value)
    assert str(info.value).split(":")[0] == message.split(":")[0]  # the exact path


MS_ERRORS = [
    (ms_doc({"type": "cosine_decay_lr", "min_lr": 0.0, "max_lr": 0.1, "total_step": 10, "step_per_epoch": 2,
             "decay_epoch": 0}),
     "learning_rate.decay_epoch: must be a positive integer, got 0"),
    (ms_doc({"type": "cosine_decay_lr", "min_lr": 0, "max_lr": 0.1, "total_step": 10, "step_per_epoch": 2,
             "decay_epoch": 2}),
     "learning_rate.min_lr: must be a non-negative float (MindSpore requires the float type"),
    (ms_doc({"type": "cosine_decay_lr", "min_lr": 0.2, "max_lr": 0.1, "total_step": 10, "step_per_epoch": 2,
             "decay_epoch": 2}),
     "learning_rate.max_lr: must be greater than min_lr (0.2), got 0.1"),
    (ms_doc({"type": "cosine_decay_lr", "min_lr": 0.0, "max_lr": 0.1, "total_step": 10.0, "step_per_epoch": 2,
             "decay_epoch": 2}),
     "learning_rate.total_step: must be a positive integer, got 10.0"),
    (ms_doc({"type": "cosine_decay_lr", "min_lr": 0.0, "max_lr": 0.1, "total_step": 10, "decay_epoch": 2}),
     "learning_rate.step_per_epoch: is required (nn.cosine_decay_lr(min_lr, max_lr, total_step, step_per_epoch, "
     "decay_epoch))"),
    (ms_doc({"type": "exponential_decay_lr", "learning_rate": 0.1, "decay_rate": 0.9, "total_step": 10,
             "step_per_epoch": 2, "decay_epoch": 2, "stair": True}),
     "learning_rate.stair: is not an argument of nn.exponential_decay_lr (did you mean 'is_stair'?)"),
    (ms_doc({"type": "exponential_decay_lr", "learning_rate": 1, "decay_rate": 0.9, "total_step": 10,
             "step_per_epoch": 2, "decay_epoch": 2}),
     "learning_rate.learning_rate: must be a positive float (MindSpore requires the float type"),
    (ms_doc({"type": "exponential_decay_lr", "learning_rate": 0.1, "decay_rate": -0.9, "total_step": 10,
             "step_per_epoch": 2, "decay_epoch": 2}),
     "learning_rate.decay_rate: must be a positive float, got -0.9"),
    (ms_doc({"type": "inverse_decay_lr", "learning_rate": 0.1, "decay_rate": 0.9, "total_step": 10,
             "step_per_epoch": 2, "decay_epoch": 2, "is_stair": 1}),
     "learning_rate.is_stair: must be true or false, got 1"),
    (ms_doc({"type": "polynomial_decay_lr", "learning_rate": 0.1, "end_learning_rate": 0.0, "total_step": 10,
             "step_per_epoch": 2, "decay_epoch": 2, "power": 0.0}),
     "learning_rate.power: must be a positive float, got 0.0"),
    (ms_doc({"type": "warmup_lr", "learning_rate": -0.1, "total_step": 10, "step_per_epoch": 2, "warmup_epoch": 2}),
     "learning_rate.learning_rate: must be a non-negative float, got -0.1"),
    (ms_doc({"type": "piecewise_constant_lr", "milestone": [2, 5], "learning_rates": [0.1]}),
     "learning_rate.learning_rates: must have as many entries as milestone (2)"),
    (ms_doc({"type": "piecewise_constant_lr", "milestone": [5, 2], "learning_rates": [0.1, 0.01]}),
     "learning_rate.milestone[1]: must be >= milestone[0] (5), got 2"),
    (ms_doc({"type": "piecewise_constant_lr", "milestone": [0, 2], "learning_rates": [0.1, 0.01]}),
     "learning_rate.milestone[0]: must be a positive integer, got 0"),
    (ms_doc({"type": "piecewise_constant_lr", "milestone": [1, 2], "learning_rates": [0.1, 1]}),
     "learning_rate.learning_rates[1]: must be a float"),
    (ms_doc({"type": "CosineDecayLR", "min_lr": 0.0, "max_lr": 0.1, "decay_steps": 0}),
     "learning_rate.decay_steps: must be a positive integer, got 0"),
    (ms_doc({"type": "WarmUpLR", "learning_rate": 0.1}), "learning_rate.warmup_steps: is required"),
    (ms_doc({"type": "PolynomialDecayLR", "learning_rate": 0.1, "end_learning_rate": 0, "decay_steps": 3,
             "power": 1.0}), "learning_rate.end_learning_rate: must be a non-negative float"),
    (ms_doc({"type": "cosine_decay"}), "learning_rate.type: is not a MindSpore dynamic-lr function or cell (did you "
     "mean 'cosine_decay_lr'?)"),
    (ms_doc({"min_lr": 0.0}), "learning_rate.type: is required"),
    (ms_doc([{"type": "warmup_lr", "learning_rate": 0.1, "total_step": 10, "step_per_epoch": 2, "warmup_epoch": 2},
             {"type": "CosineDecayLR", "min_lr": 0.0, "max_lr": 0.1, "decay_steps": 10}]),
     "learning_rate[1].type: a LearningRateSchedule cell cannot be concatenated"),
    (ms_doc([{"type": "warmup_lr", "learning_rate": 0.1, "total_step": 10, "step_per_epoch": 2, "warmup_epoch": 2},
             {"type": "cosine_decay_lr", "min_lr": 0.0, "max_lr": 0.1, "total_step": 10, "step_per_epoch": 5,
              "decay_epoch": 2}]),
     "learning_rate[1].step_per_epoch: must equal the step_per_epoch of the other list functions (2)"),
    (ms_doc([{"type": "warmup_lr", "learning_rate": 0.1, "total_step": 10, "step_per_epoch": 2, "warmup_epoch": 2},
             0.1]),
     "learning_rate[1]: must be a list-function spec"),
    (ms_doc([]), "learning_rate: must not be an empty list"),
    (ms_doc("0.1"), "learning_rate: must be a number, a list of numbers"),
    (ms_doc(-0.1), "learning_rate: must be >= 0, got -0.1"),
    # optimizer
    (ms_doc(0.1, optimizer={"type": "Momentum"}), "optimizer.momentum: is required"),
    (ms_doc(optimizer={"type": "Momentum", "momentum": 0.9}), "learning_rate: is required (nn.Momentum has no default"),
    (ms_doc(0.1, optimizer={"type": "Momentum", "momentum": 1}), "optimizer.momentum: must be a float"),
    (ms_doc(0.1, optimizer={"type": "SGD", "lr": 0.1}), "optimizer.lr: is spelled learning_rate in MindSpore"),
    (ms_doc(0.1, optimizer={"type": "SGD", "nesterov": True}), "optimizer.nesterov: needs momentum > 0.0"),
    (ms_doc(0.1, optimizer={"type": "SGD", "momentum": -0.1}), "optimizer.momentum: must be at least 0.0"),
    (ms_doc(0.1, optimizer={"type": "Adam", "beta1": 1.0}), "optimizer.beta1: must be in the open interval (0, 1)"),
    (ms_doc(0.1, optimizer={"type": "Adam", "eps": 0.0}), "optimizer.eps: must be a positive float"),
    (ms_doc(0.1, optimizer={"type": "Adam", "use_amsgrad": True}), "optimizer.use_amsgrad: is not supported"),
    (ms_doc(0.1, optimizer={"type": "Adam", "betas": [0.9, 0.99]}), "optimizer.betas: is not an argument of nn.Adam"),
    (ms_doc(0.1, optimizer={"type": "SGD", "loss_scale": 128.0}), "optimizer.loss_scale: must be 1.0"),
    (ms_doc(0.1, optimizer={"type": "RMSProp"}), "optimizer.type: must be one of SGD, Momentum, Adam, AdamWeightDecay "
     "(its update rule is not verified"),
    (ms_doc(0.1, optimizer={"type": "SGD", "learning_rate": 0.1}), "learning_rate: is also given inside optimizer"),
    # groups / document
    (ms_doc(0.1, group_params=[{"params": "a.*", "momentum": 0.5}]),
     "group_params[0].momentum: is not a MindSpore group key"),
    (ms_doc(0.1, group_params=[{"params": "a.*", "grad_centralization": True}]),
     "group_params[0].grad_centralization: is not supported by optbridge (MindSpore group dicts accept params, lr, "
     "weight_decay, grad_centralization, order_params"),
    (ms_doc(0.1, group_params=[{"lr": 0.1}]), "group_params[0].params: is required"),
    (ms_doc(0.1, group_params=[{"params": "a.*", "weight_decay": -1}]), "group_params[0].weight_decay: must be >= 0"),
    (ms_doc(0.1, group_params=[{"name": "x", "params": "a.*"}, {"name": "x", "params": "rest"}]),
     "group_params[1].name: must be unique within the optimizer"),
    (ms_doc([0.1, 0.2, 0.3], group_params=[{"params": "a.*", "lr": [0.1, 0.2]}, {"params": "rest"}]),
     "group_params[0].lr: must be as long as the other lr lists (3 steps"),
    (ms_doc({"type": "warmup_lr", "learning_rate": 0.1, "total_step": 10, "step_per_epoch": 2, "warmup_epoch": 2},
            group_params=[{"params": "a.*", "lr": {"type": "warmup_lr", "learning_rate": 0.1, "total_step": 10,
                                                   "step_per_epoch": 5, "warmup_epoch": 2}}]),
     "group_params[0].lr.step_per_epoch: must equal the step_per_epoch of the other list functions (2)"),
    (ms_doc([0.1, 0.2], total_steps=3), "total_steps: must be at most the length of the lr lists (2)"),
    (ms_doc(0.1, step_unit="epoch"), "step_unit: must be iter"),
    (ms_doc(0.1, scheduler={}), "scheduler: is not a key of the mindspore dialect"),
]


@pytest.mark.parametrize("doc, message", MS_ERRORS, ids=[m[:60] for _, m in MS_ERRORS])
def test_mindspore_errors(doc, message):
    with pytest.raises(ConfigError) as info:
        optbridge.load(doc)
    assert str(info.value).startswith(message) or message in str(info.value), str(info.value)
    assert str(info.value).split(":")[0] == message.split(":")[0]  # the exact path


def test_errors_through_yaml_text():
    text = """
dialect: torch
optimizer: {type: SGD, lr: 0.1}
scheduler:
  type: SequentialLR
  schedulers:
    - {type: LinearLR, start_factor: 0.1, total_iters: 5}
    - {type: CosineAnnealingLR, T_max: 0}
  milestones: [5]
"""
    with pytest.raises(ConfigError, match=r"^scheduler\.schedulers\[1\]\.T_max: must be a positive integer, got 0$"):
        optbridge.loads(text)
    ms = "dialect: mindspore\noptimizer: {type: SGD}\nlearning_rate: {type: cosine_decay_lr, min_lr: 0.0, " \
         "max_lr: 0.1, total_step: 10, step_per_epoch: 2, decay_epoch: 0}\n"
    with pytest.raises(ConfigError, match=r"^learning_rate\.decay_epoch: must be a positive integer, got 0$"):
        optbridge.loads(ms)
    with pytest.raises(ConfigError, match=r"^learning_rate\.decay_epoch"):
        optbridge.loads(json.dumps(optbridge.serialize._parse(ms, "yaml", "x")), "json")


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        optbridge.load(torch_doc({"type": "StepLR", "step_size": -3}))


@pytest.mark.parametrize("scheduler,expected", [
    ({"type": "ConstantLR", "factor": 0.5, "total_iters": 0}, [0.5] * 6),  # torch: factor forever
    ({"type": "SequentialLR", "schedulers": [{"type": "ExponentialLR", "gamma": 0.9},
                                             {"type": "ConstantLR", "factor": 0.5, "total_iters": 0}], "milestones": [2]},
     [1.0, 0.9, 1.0, 1.0, 1.0, 1.0]),  # later SequentialLR part: closed form at the milestone, never applies
    ({"type": "SequentialLR", "schedulers": [{"type": "ConstantLR", "factor": 0.5, "total_iters": 0},
                                             {"type": "ExponentialLR", "gamma": 0.9}], "milestones": [3]},
     [0.5, 0.5, 0.5, 1.0, 0.9, 0.81]),  # first part: factor until the milestone
])
def test_constantlr_zero_iters_as_torch_runs_it(scheduler, expected) -> None:
    """Values measured with torch 2.13 (SGD lr 1.0, scheduler.step() after each update)."""
    plan = optbridge.load({"dialect": "torch", "optimizer": {"type": "SGD", "lr": 1.0}, "scheduler": scheduler})
    np.testing.assert_allclose(optbridge.trace(plan, 6)["lr"][0], expected, rtol=1e-15)
