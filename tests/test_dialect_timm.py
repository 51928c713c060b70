"""The timm dialect against real timm 1.0.31: schedulers stepped as timm's train.py steps them.

timm's package ``__init__`` imports ``timm.layers``/``timm.models``, which import torchvision (not
installable next to torch 2.13 here). The scheduler and param-group modules themselves need neither, so
:func:`timm_modules` loads them under stub parent packages (no timm ``__init__`` runs); every function
called below is timm's own code.

Tolerance: 1e-12 relative (float64 both sides; timm's values and ours are the same formulas, rounded in a
different order, and numpy's cos/exp may differ from libm's by an ulp on this AVX-512 machine). Exact
zeros must stay exact.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("timm") is None:  # pragma: no cover
    pytest.skip("timm is not installed", allow_module_level=True)

import optbridge  # noqa: E402
from optbridge.errors import ConfigError  # noqa: E402
from optbridge.params import ParamRecord, resolve  # noqa: E402

RTOL = 1e-12


def timm_modules():
    """(timm.scheduler, timm.optim._param_groups), imported without timm's package ``__init__``."""
    root = os.path.dirname(importlib.util.find_spec("timm").origin)
    for name in ("timm", "timm.layers", "timm.models", "timm.optim"):
        if name not in sys.modules or not hasattr(sys.modules[name], "__path__"):
            mod = types.ModuleType(name)
            mod.__path__ = [os.path.join(root, *name.split(".")[1:])]
            sys.modules[name] = mod
    layers, models = sys.modules["timm.layers"], sys.modules["timm.models"]
    if not hasattr(layers, "use_reentrant_ckpt"):
        layers.use_reentrant_ckpt = importlib.import_module("timm.layers.config").use_reentrant_ckpt
    if not hasattr(models, "group_parameters"):
        models.group_parameters = importlib.import_module("timm.models._manipulate").group_parameters
    try:
        return importlib.import_module("timm.scheduler"), importlib.import_module("timm.optim._param_groups")
    finally:  # the stubs have no __spec__: leave no timm module behind for libraries that probe for timm
        for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
            del sys.modules[name]


SCHED, GROUPS = timm_modules()


def run_timm(param_groups, sched_kwargs, epochs, upe, *, lr=0.1, metrics=None):
    """Per-group lr before every optimizer update, stepping as timm/train.py does.

    ``step_update(num_updates)`` after every update, ``step(epoch + 1, metric)`` after every epoch.
    """
    opt = torch.optim.SGD(param_groups, lr=lr, momentum=0.9)
    sched, _ = SCHED.create_scheduler_v2(opt, **sched_kwargs, updates_per_epoch=upe)
    out = np.empty((len(opt.param_groups), epochs * upe))
    n = 0
    for epoch in range(epochs):
        for _ in range(upe):
            out[:, n] = [g["lr"] for g in opt.param_groups]
            n += 1
            if sched is not None:
                sched.step_update(num_updates=n)
        if sched is not None:
            sched.step(epoch + 1, None if metrics is None else metrics[epoch])
    return out


def one_group():
    return [{"params": [torch.nn.Parameter(torch.zeros(2))]}]


def check(doc_sched, epochs=24, upe=3, metrics=None, lr=0.1):
    native = run_timm(one_group(), doc_sched, epochs, upe, lr=lr, metrics=metrics)
    plan = optbridge.load({"dialect": "timm", "optimizer": {"opt": "momentum", "lr": lr, "weight_decay": 0.0},
                           "scheduler": {**doc_sched, "updates_per_epoch": upe}})
    tr = optbridge.trace(plan, epochs * upe, metrics=metrics)
    np.testing.assert_allclose(tr["lr"], native, rtol=RTOL, atol=0)
    assert ((tr["lr"] == 0) == (native == 0)).all()
    return plan


SCHEDULES = [
    {"sched": "cosine", "num_epochs": 10},
    {"sched": "cosine", "num_epochs": 10, "min_lr": 1e-3, "warmup_epochs": 3, "warmup_lr": 1e-4},
    {"sched": "cosine", "num_epochs": 8, "min_lr": 1e-3, "warmup_epochs": 3, "warmup_lr": 1e-4, "warmup_prefix": True},
    {"sched": "cosine", "num_epochs": 5, "cycle_limit": 4, "cycle_decay": 0.5, "min_lr": 1e-4},
    {"sched": "cosine", "num_epochs": 3, "cycle_mul": 2.0, "cycle_limit": 3, "cycle_decay": 0.5},
    {"sched": "cosine", "num_epochs": 4, "cycle_mul": 1.5, "cycle_limit": 4, "warmup_epochs": 2, "warmup_prefix": True},
    {"sched": "cosine", "num_epochs": 12, "k_decay": 2.0, "min_lr": 1e-5},
    {"sched": "tanh", "num_epochs": 10},
    {"sched": "tanh", "num_epochs": 10, "warmup_epochs": 3, "warmup_lr": 1e-3, "min_lr": 1e-4},
    {"sched": "tanh", "num_epochs": 6, "warmup_epochs": 2, "warmup_prefix": True, "cycle_limit": 3, "cycle_decay": 0.3},
    {"sched": "tanh", "num_epochs": 3, "cycle_mul": 2.0, "cycle_limit": 3},
    {"sched": "step", "decay_epochs": 3, "decay_rate": 0.5},
    {"sched": "step", "decay_epochs": 2.5, "decay_rate": 0.5, "warmup_epochs": 2, "warmup_lr": 1e-3},
    {"sched": "step", "decay_epochs": 4, "decay_rate": 0.3, "warmup_epochs": 2, "warmup_prefix": True},
    {"sched": "multistep", "decay_milestones": [1, 5, 9], "decay_rate": 0.5},
    {"sched": "multistep", "decay_milestones": [4, 8, 8], "decay_rate": 0.5, "warmup_epochs": 2, "warmup_lr": 0.0},
    {"sched": "multistep", "decay_milestones": [4, 8], "decay_rate": 0.5, "warmup_epochs": 2, "warmup_prefix": True},
    {"sched": "poly", "num_epochs": 12, "decay_rate": 2.0, "min_lr": 1e-4},
    {"sched": "poly", "num_epochs": 5, "decay_rate": 0.5, "k_decay": 1.5, "cycle_limit": 3, "cycle_decay": 0.5,
     "warmup_epochs": 2},
    {"sched": "poly", "num_epochs": 3, "decay_rate": 1.0, "cycle_mul": 3.0, "cycle_limit": 2},
    {"sched": "constant", "warmup_epochs": 3, "warmup_lr": 1e-3},
    {"sched": "none"},
]


@pytest.mark.parametrize("on_epochs", [True, False], ids=["per-epoch", "per-update"])
@pytest.mark.parametrize("kw", SCHEDULES, ids=[f"{i}-{s['sched']}" for i, s in enumerate(SCHEDULES)])
def test_scheduler_equals_timm(kw, on_epochs):
    check({**kw, "step_on_epochs": on_epochs})


def test_plateau_equals_timm():
    rng = np.random.default_rng(0)
    metrics = list(np.round(rng.uniform(0, 1, 30), 2))
    plan = check({"sched": "plateau", "decay_rate": 0.5, "patience_epochs": 2, "plateau_mode": "max", "min_lr": 1e-3},
                 epochs=30, upe=2, metrics=metrics)
    assert plan.schedule["lr"].kind == "plateau"


def test_cycle_boundary_as_timm_rounds_it():
    # math.log(1000, 10) == 2.9999999999999996: timm's third cycle (cycle_mul 10) starts one step late.
    plan = check({"sched": "cosine", "num_epochs": 1, "cycle_mul": 10.0, "cycle_limit": 4, "step_on_epochs": True},
                 epochs=1200, upe=1)
    assert 112 in plan.schedule["lr"].boundaries


def _model():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = torch.nn.Parameter(torch.zeros(1, 4, 8))
            self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
                                              for _ in range(6))
            self.head = torch.nn.Linear(8, 3)
            self.pretrained_cfg = {"classifier": "head"}
    return Net()


def _records(model):
    return [ParamRecord(n, tuple(p.shape), "", id(p)) for n, p in model.named_parameters()]


def _names_of(model, param_groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in g["params"]] for g in param_groups]


@pytest.mark.parametrize("with_model", [False, True])
def test_weight_decay_groups_equal_timm(with_model):
    model = _model()
    groups = GROUPS.param_groups_weight_decay(model, weight_decay=0.05, no_weight_decay_list=["pos_embed"])
    doc = {"dialect": "timm", "optimizer": {"opt": "adamw", "lr": 1e-3, "weight_decay": 0.05,
                                            "no_weight_decay_list": ["pos_embed"]},
           "scheduler": {"sched": "cosine", "num_epochs": 6, "warmup_epochs": 1, "updates_per_epoch": 2}}
    plan = optbridge.dialects.timm.parse(doc, model=model if with_model else None)
    res = resolve(plan, _records(model))
    assert [list(g.params) for g in res.groups] == _names_of(model, groups)
    assert [g.options["weight_decay"] for g in res.groups] == [g["weight_decay"] for g in groups]
    native = run_timm(groups, {"sched": "cosine", "num_epochs": 6, "warmup_epochs": 1}, 8, 2, lr=1e-3)
    np.testing.assert_allclose(optbridge.trace(plan, 16)["lr"], native, rtol=RTOL, atol=0)


def test_layer_decay_groups_and_lr_scale_equal_timm():
    model = _model()
    groups = GROUPS.param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75,
                                             no_weight_decay_list=["pos_embed"])
    sched = {"sched": "cosine", "num_epochs": 6, "warmup_epochs": 2, "warmup_lr": 1e-5, "min_lr": 1e-5,
             "step_on_epochs": False}
    doc = {"dialect": "timm", "optimizer": {"opt": "adamw", "lr": 1e-3, "weight_decay": 0.05, "layer_decay": 0.75,
                                            "no_weight_decay_list": ["pos_embed"]},
           "scheduler": {**sched, "updates_per_epoch": 3}}
    plan = optbridge.dialects.timm.parse(doc, model=model)
    res = resolve(plan, _records(model))
    assert len(groups) > 2 and [list(g.params) for g in res.groups] == _names_of(model, groups)
    assert [g.options["weight_decay"] for g in res.groups] == [g["weight_decay"] for g in groups]
    native = run_timm(groups, sched, 8, 3, lr=1e-3)
    np.testing.assert_allclose(optbridge.trace(plan, 24)["lr"], native, rtol=RTOL, atol=0)
    with pytest.raises(ConfigError, match=r"^optimizer.layer_decay: needs the model"):
        optbridge.load(doc)


def test_optimizer_options_follow_timm():
    plan = optbridge.load({"dialect": "timm", "optimizer": {"opt": "sgd", "lr": 0.1, "momentum": 0.8, "eps": 1e-3}})
    opt = plan.optimizers[0]
    assert opt.type == "SGD" and opt.options["nesterov"] is True and opt.options["momentum"] == 0.8
    assert "eps" not in opt.options  # timm drops eps for SGD
    assert optbridge.load({"optimizer": {"opt": "rmsprop", "lr": 0.01}}).optimizers[0].options["alpha"] == 0.9


@pytest.mark.parametrize("doc, message", [
    ({"scheduler": {"sched": "cosine", "noise": [0.4, 0.9]}}, r"^scheduler.noise: is not supported: timm draws lr noise"),
    ({"scheduler": {"sched": "cosin"}}, r"^scheduler.sched: must be one of cosine, tanh"),
    ({"scheduler": {"sched": "wsd"}}, r"^scheduler.sched: is not supported yet"),
    ({"scheduler": {"sched": "cosine", "num_epoch": 3}}, r"^scheduler.num_epoch: is not an argument of create_scheduler_v2 \(did you mean 'num_epochs'\?\)"),
    ({"scheduler": {"sched": "cosine", "step_on_epochs": False}}, r"^scheduler.updates_per_epoch: must be > 0"),
    ({"scheduler": {"sched": "cosine", "cycle_mul": 0.5}}, r"^scheduler.cycle_mul: must be >= 1"),
    ({"scheduler": {"sched": "plateau", "warmup_epochs": 2}}, r"^scheduler.warmup_epochs: is not supported with plateau"),
    ({"scheduler": {"sched": "multistep", "decay_milestones": [5, 2]}}, r"^scheduler.decay_milestones: must be in increasing order"),
    ({"scheduler": {"sched": "cosine", "num_epochs": 0}}, r"^scheduler.num_epochs: must be an integer >= 1, got 0"),
    ({"optimizer": {"opt": "lamb"}}, r"^optimizer.opt: must be one of sgd"),
    ({"optimizer": {"opt": "lookahead_adamw"}}, r"^optimizer.opt: is not supported: Lookahead"),
])
def test_bad_configs_get_one_line_errors(doc, message):
    doc = {"dialect": "timm", "optimizer": {"opt": "sgd", "lr": 0.1}, **doc}
    with pytest.raises(ConfigError, match=message) as info:
        optbridge.load(doc)
    assert "\n" not in str(info.value)
