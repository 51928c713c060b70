"""``optbridge port``: the generated modules run in real torch and MindSpore and apply the reference's values.

What is proved, per target and form (MegEngine: ``tests_megengine/test_port_mge.py``):

* **the applied lr**: a real model (a CIFAR-style ResNet with BatchNorm, four groups:
  backbone at 0.1x, no-decay biases and norms), every parameter set to 0 and every
  gradient 1 before each update of plain SGD: the change is ``-lr`` as the framework
  applied it. torch: float32 parameters, ``p.add_(grad, alpha=-lr)`` rounds once, so the
  change is ``-float32(lr)`` of the reference's float64 value, exactly. MindSpore: every
  form holds the lr as float32, the change is ``-float32(reference)``, exactly (0 ulp).
  Where the framework exposes the value an update uses (torch's ``group['lr']`` before
  ``step()``, the torch-like MindSpore optimizers' lr Parameters after it), it is
  compared too: torch float64 bit for bit, MindSpore float32 bit for bit.
* **the end of the schedule**: the update at the horizon raises with the core's message
  (``optbridge.source.ValueSource.check`` word for word), the scheduler step after the last
  update does not; a plan whose schedules hold (``table`` with ``hold``) keeps the last value;
* **a driver that was not stepped** raises at the next update, naming it;
* **groups**: the generated resolver assigns exactly what ``optbridge.params.resolve`` does on
  real models (tied weights, excluded groups, every selector kind, the errors);
* **names**: a torch plan whose groups name BatchNorm ``weight``/``bias`` ports onto the
  MindSpore twin's ``gamma``/``beta`` through ``optbridge.names.map_plan`` (``names.txt``);
* **tables**: streamed windows give the same bytes, shared columns times each base are the
  reference's values bit for bit, ``port.json`` holds no values, SHA-256 checked;
* **dialects**: torch, mindspore, mmengine, timm and hf configs port.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import optbridge
from optbridge import ir
from optbridge.cli import main
from optbridge.errors import ConfigError, EvaluationError, UnsupportedError
from optbridge.params import ParamRecord, resolve
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge.port import PortResult, load_records, port, save_records
from optbridge.slots import slots
from optbridge.source import PastHorizon, ValueSource

torch = pytest.importorskip("torch")
tnn = torch.nn

# The setup: AdamW, four groups (backbone at 0.1x, no-decay biases and norms), LinearLR warmup then
# CosineAnnealingLR in a SequentialLR, per iteration.
ADAMW = """\
dialect: torch
optimizer: {type: AdamW, lr: 0.001, weight_decay: 0.05}
param_groups:
  - {name: backbone, params: {names: ["backbone.*"], ndim: [4]}, lr: 0.0001}
  - {name: backbone_no_decay, params: {names: ["backbone.*"], ndim: [1]}, lr: 0.0001, weight_decay: 0.0}
  - {name: head, params: {names: ["head.*"], ndim: [2]}}
  - {name: head_no_decay, params: rest, weight_decay: 0.0}
scheduler:
  type: SequentialLR
  schedulers:
    - {type: LinearLR, start_factor: 0.01, total_iters: 10}
    - {type: CosineAnnealingLR, T_max: 30, eta_min: 1.0e-6}
  milestones: [10]
total_steps: 40
"""
# The same groups on plain SGD (the applied lr is the parameter change), a warmup + cosine to 0 (shared tables).
SGD = ADAMW.replace("type: AdamW, lr: 0.001, weight_decay: 0.05", "type: SGD, lr: 0.1") \
    .replace("lr: 0.0001", "lr: 0.01").replace("eta_min: 1.0e-6", "eta_min: 0.0")
STEPS = 40
_ids = itertools.count()


def load_module(path: Path) -> Any:
    """Import a generated module from its file (registered in sys.modules: MindSpore's graph parser imports it)."""
    name = f"ported_{path.stem}_{next(_ids)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def write(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- a small CIFAR-style ResNet (torch)

class TBlock(tnn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c)
        self.conv2 = tnn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c)

    def forward(self, x: Any) -> Any:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class TNet(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = tnn.Sequential(tnn.Conv2d(3, 8, 3, 1, 1, bias=False), tnn.BatchNorm2d(8), tnn.ReLU(),
                                       TBlock(8))
        self.head = tnn.Linear(8, 10)

    def forward(self, x: Any) -> Any:
        return self.head(self.backbone(x).mean((2, 3)))


class Tied(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = tnn.Embedding(20, 8)
        self.norm = tnn.LayerNorm(8)
        self.body = tnn.Sequential(tnn.Linear(8, 8), tnn.ReLU(), tnn.Linear(8, 8))
        self.frozen = tnn.Linear(8, 2)
        self.head = tnn.Linear(8, 20, bias=False)
        self.head.weight = self.embed.weight


def torch_records(model: Any) -> list[ParamRecord]:
    from optbridge_adapters.torch.build import model_records
    return model_records(model)[0]


def reference(cfg: Path | str, n: int = STEPS, hyper: str = "lr") -> np.ndarray:
    return optbridge.trace(optbridge.load(cfg), n)[hyper]


# --------------------------------------------------------------------------- torch


def test_torch_port_trains_a_real_model_with_the_reference_values(tmp_path: Path) -> None:
    cfg = write(tmp_path, ADAMW)
    res = port(cfg, "torch", out=tmp_path / "out")
    assert isinstance(res, PortResult) and res.module.name == "optim_torch.py"
    mod = load_module(res.module)
    torch.manual_seed(0)
    model = TNet()
    setup = mod.build(model)
    plan = optbridge.load(cfg)
    want = resolve(plan, torch_records(model))
    assert setup.groups == {g.name: list(g.params) for g in want.groups}
    assert type(setup.optimizer) is torch.optim.AdamW
    ref = reference(cfg)
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 10, (4,))
    for k in range(STEPS):
        got = [g["lr"] for g in setup.optimizer.param_groups]
        assert got == ref[:, k].tolist(), k  # float64, bit for bit
        mod.train(model, [(x, y)], tnn.functional.cross_entropy, setup)
    wd = {g["name"]: g["weight_decay"] for g in setup.optimizer.param_groups}
    assert wd == {"backbone": 0.05, "backbone_no_decay": 0.0, "head": 0.05, "head_no_decay": 0.0}


def test_torch_applied_lr_is_the_parameter_change_of_plain_sgd(tmp_path: Path) -> None:
    cfg = write(tmp_path, SGD)
    mod = load_module(port(cfg, "torch", out=tmp_path / "out").module)
    model = TNet()
    setup = mod.build(model)
    params = dict(model.named_parameters())
    ref = reference(cfg)
    for k in range(STEPS):
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        setup.optimizer.step()
        setup.scheduler.step()
        for i, names in enumerate(setup.groups.values()):
            for n in names:  # float32 parameters: the change is -float32(lr), exactly
                assert np.all(params[n].detach().numpy() == -np.float32(ref[i, k])), (k, n)


def test_mindspores_adamweightdecay_ports_to_torch_as_optbridges_class(tmp_path: Path) -> None:
    """torch has no AdamWeightDecay: the port builds optbridge's class of its update, driven by the tables."""
    from optbridge_adapters.torch.optimizers import AdamWeightDecay
    cfg = write(tmp_path, "optbridge: 1\noptimizer: {type: AdamWeightDecay, lr: 0.001, weight_decay: 0.01}\n"
                          f"groups: [{{name: all, params: ['*']}}]\ntotal_steps: {STEPS}\n"
                          f"schedule: {{lr: {{kind: cosine, steps: {STEPS}}}}}\n")
    res = port(cfg, "torch", out=tmp_path / "out")
    mod = load_module(res.module)
    model = TNet()
    setup = mod.build(model)
    assert type(setup.optimizer) is AdamWeightDecay
    ref = reference(cfg)
    x, y = torch.randn(4, 3, 6, 6), torch.randint(0, 10, (4,))
    for k in range(STEPS):
        assert setup.optimizer.param_groups[0]["lr"] == ref[0, k], k
        mod.train(model, [(x, y)], tnn.functional.cross_entropy, setup)
    with pytest.raises(UnsupportedError, match="AdamWeightDecay"):
        port(cfg, "torch", out=tmp_path / "native", optimizer="native")




def joins(tmp_path: Path, optimizer: dict[str, Any] | None = None, clips: dict[str, Any] | None = None) -> Path:
    """The plan of conformance case ``trajectory-adam-group-joins`` (Adam; group ``b`` joins at update 12, Lightning's
    BackboneFinetuning), ending at update 40, with another ``optimizer`` or group ``clips``, as a config file."""
    from optbridge_conformance.cases import write_plan
    return write_plan("trajectory-adam-group-joins", tmp_path / "joins.yaml", clips=clips, optimizer=optimizer,
                      total_steps=40)


class TwoLinear(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = tnn.Linear(3, 3), tnn.Linear(3, 3)

    def forward(self, x: Any) -> Any:
        return self.a(x) + self.b(x)


def torch_updates(model: Any, optimizer: Any, scheduler: Any, start: int, stop: int, clip: Any = None) -> list[Any]:
    """Updates ``start .. stop - 1`` with fixed pseudo-random gradients: the parameters after each."""
    out = []
    for k in range(start, stop):
        g = torch.Generator().manual_seed(k)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        if clip is not None:
            clip()
        optimizer.step()
        scheduler.step()
        out.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return out


def test_torch_group_joining_mid_run_matches_to_torch_and_resumes(tmp_path: Path) -> None:
    """start_step: the scheduler adds the group before update 12 (add_param_group); the parameters equal the
    to_torch adapter's bit for bit, group b is untouched until then; a resume past the join continues bit for bit,
    whichever state is loaded first."""
    cfg = joins(tmp_path)
    mod = load_module(port(cfg, "torch", out=tmp_path / "out").module)
    assert [g["start"] for g in mod.GROUPS] == [0, 12] and mod.selfcheck() == 40
    model = TwoLinear()
    setup = mod.build(model)
    assert len(setup.optimizer.param_groups) == 1
    got = torch_updates(model, setup.optimizer, setup.scheduler, 0, 40)
    assert len(setup.optimizer.param_groups) == 2
    ref_model = TwoLinear()
    ref = optbridge.to_torch(optbridge.load(cfg), ref_model)
    want = torch_updates(ref_model, ref.optimizer, ref.scheduler, 0, 40)
    assert all(torch.equal(x, y) for x, y in zip(got, want))
    b0 = torch.cat([p.detach().flatten() for p in TwoLinear().b.parameters()])
    assert torch.equal(got[10][12:], b0) and torch.equal(got[11][12:], b0) and not torch.equal(got[12][12:], b0)
    # resume at update 20: the fresh scheduler adds group b before the optimizer's state (two groups) is loaded
    model = TwoLinear()
    setup = mod.build(model)
    torch_updates(model, setup.optimizer, setup.scheduler, 0, 20)
    saved = (setup.scheduler.state_dict(), setup.optimizer.state_dict(), model.state_dict())
    for optimizer_first in (False, True):  # the optimizer's load pre-hook adds the group the saved state holds
        fresh_model = TwoLinear()
        fresh = mod.build(fresh_model)
        fresh_model.load_state_dict(saved[2])
        state = copy.deepcopy(saved[1])  # torch keeps the loaded tensors and updates them in place
        if optimizer_first:
            fresh.optimizer.load_state_dict(state)
        fresh.scheduler.load_state_dict(saved[0])
        if not optimizer_first:
            fresh.optimizer.load_state_dict(state)
        assert len(fresh.optimizer.param_groups) == 2
        assert all(torch.equal(x, y) for x, y in
                   zip(torch_updates(fresh_model, fresh.optimizer, fresh.scheduler, 20, 40), want[20:]))


@pytest.mark.parametrize("level", ["optimizer", "groups"])
def test_torch_clip_covers_the_groups_in_the_optimizer_at_that_update(tmp_path: Path, level: str) -> None:
    """An optimizer-level clip covers the groups in the optimizer at that update (torch's clip_grad_norm_ over
    optimizer.param_groups), a joining group's own clip starts with its first update, in the port and in the
    to_torch adapter alike; the generated train() clears every group's gradients (a group that joins later
    does not carry gradients accumulated before it)."""
    if level == "groups":
        cfg = joins(tmp_path, {"type": "SGD", "lr": 0.01}, {"a": {"max_norm": 0.5}, "b": {"max_norm": 0.1}})
    else:
        cfg = joins(tmp_path, {"type": "SGD", "lr": 0.1, "clip": {"max_norm": 0.5}})
    mod = load_module(port(cfg, "torch", out=tmp_path / "out").module)
    model = TwoLinear()
    setup = mod.build(model)
    adapter = optbridge.to_torch(optbridge.load(cfg), TwoLinear())
    k = iter(range(14))

    def clip_like_torch() -> None:
        joined = next(k) >= 12
        params = [p for g in setup.optimizer.param_groups for p in g["params"]]
        norm = float(torch.nn.utils.get_total_norm([p.grad for p in (params if level == "optimizer" else
                                                                      setup.optimizer.param_groups[0]["params"])]))
        got = setup.clip_gradients()
        assert len(setup.optimizer.param_groups) == 1 + joined
        assert got == ({"optimizer": norm} if level == "optimizer" else {"a": norm, **({"b": got["b"]} if joined
                                                                                       else {})})
        assert set(adapter.clip_gradients()) == set(got)
        adapter.optimizer.step()
        adapter.scheduler.step()

    torch_updates(model, setup.optimizer, setup.scheduler, 0, 14, clip=clip_like_torch)
    assert len(setup.optimizer.param_groups) == 2
    # the generated loop: group b's first update (12) uses update 12's gradient only
    batches = [(torch.randn(4, 3, generator=torch.Generator().manual_seed(k)), torch.zeros(4, 3))
               for k in range(13)]
    model, ref_model = TwoLinear(), TwoLinear()
    mod.train(model, batches, lambda out, t: ((out - t) ** 2).sum(), mod.build(model))
    ref = optbridge.to_torch(optbridge.load(cfg), ref_model)
    for x, t in batches:
        ref_model.zero_grad()
        ((ref_model(x) - t) ** 2).sum().backward()
        ref.clip_gradients()
        ref.optimizer.step()
        ref.scheduler.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref_model.parameters()))


def core_message(plan: Plan, k: int, **kw: Any) -> str:
    """The core's PastHorizon message for update k (what every generated form must say)."""
    src = ValueSource(slots(plan), unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                      total_steps=plan.total_steps, **kw)
    with pytest.raises(PastHorizon) as e:
        src.check(k)
    return str(e.value)


def test_torch_past_the_end_raises_the_cores_error_at_the_update(tmp_path: Path) -> None:
    cfg = write(tmp_path, SGD)
    mod = load_module(port(cfg, "torch", out=tmp_path / "out").module)
    setup = mod.build(TNet())
    for _ in range(STEPS):
        setup.optimizer.step()
        setup.scheduler.step()  # the step after the last update writes nothing and does not raise
    with pytest.raises(mod.PastHorizon) as e:
        setup.optimizer.step()
    assert str(e.value) == core_message(optbridge.load(cfg), STEPS) == (
        f"update {STEPS} is past the end of the schedule: the plan is defined for {STEPS} updates (total_steps)")
    assert isinstance(e.value, ValueError) and e.value.step == STEPS and e.value.horizon == STEPS


def test_one_cycle_ends_where_the_core_says(tmp_path: Path) -> None:
    cfg = write(tmp_path, "dialect: torch\noptimizer: {type: SGD, lr: 0.1, momentum: 0.9}\n"
                          "scheduler: {type: OneCycleLR, max_lr: 1.0, total_steps: 20}\n")
    res = port(cfg, "torch", out=tmp_path / "out")
    assert res.spec.horizon == 21 and res.spec.total == 21  # torch computes k = total_steps too
    mod = load_module(res.module)
    w = torch.zeros(1, requires_grad=True)
    opts, scheds = mod.build_on({"all": [w]})
    ref = optbridge.trace(optbridge.load(cfg), 21)
    for k in range(21):
        g = opts["optimizer"].param_groups[0]
        assert (g["lr"], g["momentum"]) == (ref["lr"][0, k], ref["momentum"][0, k])
        w.grad = torch.ones_like(w)
        opts["optimizer"].step()
        scheds["optimizer"].step()
    with pytest.raises(mod.PastHorizon) as e:
        opts["optimizer"].step()
    assert str(e.value) == core_message(optbridge.load(cfg), 21)
    assert "one_cycle ends after total_steps=20" in str(e.value)


def test_torch_update_without_scheduler_step_raises(tmp_path: Path) -> None:
    mod = load_module(port(write(tmp_path, SGD), "torch", out=tmp_path / "out").module)
    setup = mod.build(TNet())
    setup.optimizer.step()
    setup.scheduler.step()
    setup.optimizer.step()
    with pytest.raises(mod.NotStepped, match=r"scheduler.step\(\) was not called after update 1: optimizer "
                                             r"'optimizer' is about to make another update, and the schedule still "
                                             r"stands at update 1"):
        setup.optimizer.step()


HOLD = """\
optbridge: 1
optimizer: {type: SGD, lr: 0.5, groups: [{name: all, params: rest}]}
schedule: {lr: {kind: table, values: [1.0, 0.5, 0.25], relative: true, hold: true}}
"""


def test_torch_holds_the_last_value_when_the_plan_says_hold(tmp_path: Path) -> None:
    res = port(write(tmp_path, HOLD), "torch", out=tmp_path / "out")
    assert res.spec.horizon is None and res.spec.total == 3
    mod = load_module(res.module)
    w = torch.zeros(1, requires_grad=True)
    opts, scheds = mod.build_on({"all": [w]})
    lrs = []
    for _ in range(6):
        lrs.append(opts["optimizer"].param_groups[0]["lr"])
        w.grad = torch.ones_like(w)
        opts["optimizer"].step()
        scheds["optimizer"].step()
    assert lrs == optbridge.trace(optbridge.load(write(tmp_path, HOLD)), 6)["lr"][0].tolist() == \
        [0.5, 0.25, 0.125, 0.125, 0.125, 0.125]


def test_torch_schedules_momentum_and_beta1(tmp_path: Path) -> None:
    cfg = write(tmp_path, "dialect: torch\noptimizer: {type: AdamW, lr: 0.01}\n"
                          "scheduler: {type: OneCycleLR, max_lr: 0.1, total_steps: 30}\ntotal_steps: 30\n")
    mod = load_module(port(cfg, "torch", out=tmp_path / "out").module)
    w = torch.zeros(3, requires_grad=True)
    opts, scheds = mod.build_on({"all": [w]})
    ref = optbridge.trace(optbridge.load(cfg), 30)
    for k in range(30):
        g = opts["optimizer"].param_groups[0]
        assert (g["lr"], g["betas"][0], g["betas"][1]) == (ref["lr"][0, k], ref["beta1"][0, k], 0.999)
        w.grad = torch.ones_like(w)
        opts["optimizer"].step()
        scheds["optimizer"].step()


def test_torch_resume_continues_and_refuses_another_ports_state(tmp_path: Path) -> None:
    cfg = write(tmp_path, SGD)
    mod = load_module(port(cfg, "torch", out=tmp_path / "a").module)
    setup = mod.build(TNet())
    for _ in range(13):
        setup.optimizer.step()
        setup.scheduler.step()
    state = setup.scheduler.state_dict()
    fresh = mod.build(TNet())
    fresh.scheduler.load_state_dict(state)
    assert [g["lr"] for g in fresh.optimizer.param_groups] == reference(cfg)[:, 13].tolist()
    other = load_module(port(write(tmp_path, ADAMW, "b.yaml"), "torch", out=tmp_path / "b").module)
    with pytest.raises(ValueError, match="saved for another plan or port"):
        other.build(TNet()).scheduler.load_state_dict(state)


def test_torch_clips_as_the_plan_says(tmp_path: Path) -> None:
    cfg = write(tmp_path, "dialect: hf\nlearning_rate: 0.001\nmax_steps: 10\nmax_grad_norm: 0.5\n"
                          "lr_scheduler_type: cosine\nwarmup_steps: 2\n")
    mod = load_module(port(cfg, "torch", out=tmp_path / "out", total_steps=10).module)
    model = Tied()  # the Trainer's no-decay groups need a LayerNorm
    setup = mod.build(model)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.full_like(p, 2.0)
    expect = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
    norms = setup.clip_gradients()
    assert list(norms) == ["optimizer"] and norms["optimizer"] == pytest.approx(expect, rel=1e-6)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert float(total) == pytest.approx(0.5, rel=1e-5)  # torch's clip_grad_norm_: max_norm / (norm + 1e-6)


# --------------------------------------------------------------------------- the generated resolver


RESOLVER_PLANS = [
    [Group(name="decay", select=(Selector(ndim=(2,)),)), Group(name="rest", select=(Selector(rest=True),))],
    [Group(name="norms", select=(Selector(modules=("*Norm*",)),)),
     Group(name="biases", select=(Selector(leaf=("bias",)),)),
     Group(name="frozen", select=(Selector(names=("frozen.*",)),), frozen="exclude"),
     Group(name="rest", select=(Selector(rest=True),))],
    [Group(name="body", select=(Selector(regex=(r"body\.\d+\.weight",)),)),
     Group(name="emb", select=(Selector(names=("embed.weight",)), Selector(names=("frozen.weight",)))),
     Group(name="others", select=(Selector(rest=True),))],
]


@pytest.mark.parametrize("groups", RESOLVER_PLANS, ids=["ndim", "modules-leaf-exclude", "regex-union"])
@pytest.mark.parametrize("model", [Tied, TNet], ids=["tied", "resnet"])
def test_generated_resolver_is_optbridge_resolve(tmp_path: Path, groups: list[Group], model: Any) -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=tuple(groups)),),
                schedule={"lr": ir.Cosine(steps=10)}, total_steps=10)
    net = model()
    recs = torch_records(net)
    try:
        want = resolve(plan, recs)
    except ConfigError as e:
        res = port(plan, "torch", out=tmp_path / "out")
        mod = load_module(res.module)
        with pytest.raises(mod.GroupError):
            mod.resolve(mod.records(net))
        assert "matches no parameter" in str(e) or "matched by" in str(e)
        return
    mod = load_module(port(plan, "torch", out=tmp_path / "out").module)
    got, excluded = mod.resolve(mod.records(net))
    assert got == {g.name: list(g.params) for g in want.groups}
    assert excluded == list(want.excluded)


def test_generated_resolver_errors_like_optbridge(tmp_path: Path) -> None:
    overlap = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a", select=(Selector(ndim=(1,)),)), Group(name="b", select=(Selector(leaf=("bias",)),)),
        Group(name="c", select=(Selector(rest=True),)))),), total_steps=5)
    mod = load_module(port(overlap, "torch", out=tmp_path / "o").module)
    with pytest.raises(mod.GroupError, match="'backbone.1.bias' is matched by groups 'a' and 'b'"):
        mod.build(TNet())
    with pytest.raises(ConfigError, match="'backbone.1.bias' is matched by group 'a'"):
        resolve(overlap, torch_records(TNet()))
    nothing = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a", select=(Selector(names=("nope.*",)),)), Group(name="c", select=(Selector(rest=True),)))),),
        total_steps=5)
    mod = load_module(port(nothing, "torch", out=tmp_path / "n").module)
    with pytest.raises(mod.GroupError, match="group 'a': pattern names='nope.\\*' matches no parameter"):
        mod.build(TNet())


# --------------------------------------------------------------------------- tables and metadata


def layer_plan(groups: int, steps: int, end: float = 0.0) -> Plan:
    node = ir.Sequence(parts=(ir.Linear(start_factor=0.01, steps=7), ir.Cosine(steps=steps - 7, end=end)),
                       boundaries=(7,))
    gs = tuple(Group(name=f"layer{i}", select=(Selector(names=(f"l{i}.*",)),), options={"lr_mult": 0.8 ** i})
               for i in range(groups))
    return Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9}, groups=gs),),
                schedule={"lr": node}, total_steps=steps)


@pytest.mark.parametrize("end", [0.0, 1e-5], ids=["shared", "own"])
def test_tables_are_the_reference_bit_for_bit_shared_or_not(tmp_path: Path, end: float) -> None:
    plan = layer_plan(12, 500, end)
    res = port(plan, "torch", out=tmp_path / "out")
    assert len(res.tables) == (1 if end == 0.0 else 12)
    mod = load_module(res.module)
    ref = optbridge.trace(plan, 500)["lr"]
    got = np.stack([mod.slot_values(j) for j in range(len(mod.SLOTS))])
    np.testing.assert_array_equal(got, ref)  # base * column is the evaluator's own product
    doc = json.loads(res.metadata.read_text())
    for c, p in zip(doc["tables"]["columns"], res.tables):
        assert c["sha256"] == __import__("hashlib").sha256(p.read_bytes()).hexdigest()
        assert np.load(p).shape == (500,) and c["dtype"] == "float64" and c["shape"] == [500]
    assert doc["tables"]["columns"][0]["relative"] is (end == 0.0)
    mod.verify()
    res.tables[0].write_bytes(res.tables[0].read_bytes()[:-8] + np.float64(1.0).tobytes())
    with pytest.raises(ValueError, match="sha256"):
        mod.verify()


def test_tables_are_written_in_windows_with_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optbridge.port.tables as tables
    plan = layer_plan(5, 3001, 1e-4)
    whole = port(plan, "torch", out=tmp_path / "whole")
    monkeypatch.setattr(tables, "WINDOW_VALUES", 37)  # windows of 7 updates
    windows = port(plan, "torch", out=tmp_path / "windows")
    for a, b in zip(whole.tables, windows.tables):
        assert a.read_bytes() == b.read_bytes()


def test_metadata_describes_and_repeats_no_value(tmp_path: Path) -> None:
    plan = layer_plan(3, 20_000)
    res = port(plan, "mindspore", out=tmp_path / "out", form="list")
    doc = json.loads(res.metadata.read_text())
    assert res.metadata.stat().st_size < 12_000  # 60 000 values would be ~1 MB of JSON
    assert doc["framework"] == "mindspore" and doc["form"] == "list" and doc["total"] == 20_000
    assert doc["horizon"] == 20_000 and doc["runtime"] == {"needs": ["mindspore", "numpy"], "standalone": True}
    assert doc["tables"]["columns"][0]["slots"] == ["layer0.lr", "layer1.lr", "layer2.lr"]
    assert [s["scale"] for s in doc["slots"]] == [0.1, 0.1 * 0.8, 0.1 * 0.8 ** 2]
    assert optbridge.from_dict(doc["plan"]) == plan


# --------------------------------------------------------------------------- dialects, CLI, errors

DIALECTS = {
    "torch": SGD,
    "mindspore": """\
dialect: mindspore
optimizer: {type: Momentum, momentum: 0.9}
learning_rate:
  - {type: warmup_lr, learning_rate: 0.1, total_step: 20, step_per_epoch: 5, warmup_epoch: 2}
  - {type: cosine_decay_lr, min_lr: 0.0, max_lr: 0.1, total_step: 30, step_per_epoch: 5, decay_epoch: 6}
""",
    "mmengine": """\
optim_wrapper: {optimizer: {type: SGD, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}}
param_scheduler:
  - {type: LinearLR, start_factor: 0.1, by_epoch: false, begin: 0, end: 10}
  - {type: CosineAnnealingLR, T_max: 40, by_epoch: false, begin: 10, end: 50}
train_cfg: {type: IterBasedTrainLoop, max_iters: 50}
""",
    "timm": """\
dialect: timm
optimizer: {opt: sgd, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}
scheduler: {sched: cosine, num_epochs: 5, warmup_epochs: 1, warmup_lr: 1.0e-4, min_lr: 1.0e-5,
            step_on_epochs: false, updates_per_epoch: 10}
""",
    "hf": """\
learning_rate: 5.0e-5
weight_decay: 0.01
lr_scheduler_type: cosine_with_restarts
lr_scheduler_kwargs: {num_cycles: 2}
warmup_ratio: 0.1
max_steps: 50
""",
}


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_plan_from_each_dialect_ports(tmp_path: Path, dialect: str) -> None:
    cfg = write(tmp_path, DIALECTS[dialect])
    plan = optbridge.load(cfg)
    n = plan.total_steps or 50  # timm and hf schedules are lambdas without an end of their own
    res = port(cfg, "torch", out=tmp_path / "out", total_steps=n)
    assert res.spec.total == n
    mod = load_module(res.module)
    assert mod.selfcheck() == min(res.spec.total, 200)
    tr = optbridge.trace(plan, res.spec.total)
    for j, s in enumerate(res.spec.slots):
        np.testing.assert_array_equal(mod.slot_values(j), tr[s.hyper][s.group])
    for to in ("mindspore", "megengine"):
        other = port(plan, to, out=tmp_path / to, total_steps=n)
        assert other.module.exists() and other.spec.total == res.spec.total


def test_a_live_torch_import_ports(tmp_path: Path) -> None:
    model = TNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5, 0.5)
    plan = optbridge.from_torch(opt, sched, model=model, total_steps=20)
    mod = load_module(port(plan, "torch", out=tmp_path / "out").module)
    setup = mod.build(TNet())
    lrs = []
    for _ in range(20):
        lrs.append(setup.optimizer.param_groups[0]["lr"])
        opt.step()
        setup.optimizer.step()
        setup.scheduler.step()
    assert lrs == [0.1 * 0.5 ** (k // 5) for k in range(20)]


def test_cli_port_and_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, SGD)
    assert main(["port", str(cfg), "--to", "megengine", "--out", str(tmp_path / "mge")]) == 0
    assert "optim_megengine.py" in capsys.readouterr().out
    assert (tmp_path / "mge" / "tables" / "c0.npy").exists()
    assert main(["convert", str(cfg), "--to", "mindspore", "-n", "20", "--out", str(tmp_path / "ms")]) == 0
    doc = json.loads((tmp_path / "ms" / "port.json").read_text())
    assert (doc["form"], doc["total"]) == ("list", 20)
    no_end = write(tmp_path, "dialect: torch\noptimizer: {type: SGD, lr: 0.1}\n"
                             "scheduler: {type: ExponentialLR, gamma: 0.9}\n", "e.yaml")
    assert main(["port", str(no_end), "--to", "torch", "--out", str(tmp_path / "x")]) == 2
    assert "--total-steps N is required" in capsys.readouterr().err
    assert main(["port", str(cfg), "--to", "torch", "--form", "list", "--out", str(tmp_path / "x")]) == 2
    assert "is a MindSpore form" in capsys.readouterr().err
    plateau = write(tmp_path, "dialect: torch\noptimizer: {type: SGD, lr: 0.1}\nscheduler: {type: ReduceLROnPlateau}"
                              "\n", "p.yaml")
    assert main(["convert", str(plateau), "--to", "mindspore", "-n", "5", "--out", str(tmp_path / "x")]) == 2
    assert "plateau needs the metric" in capsys.readouterr().err


def test_errors_are_optbridge_errors(tmp_path: Path) -> None:
    cfg = write(tmp_path, SGD)
    assert callable(optbridge.port) and optbridge.port(cfg, "torch", out=tmp_path / "ok").module.exists()
    with pytest.raises(ConfigError, match="to: must be one of"):
        port(cfg, "jax", out=tmp_path / "o")
    with pytest.raises(ConfigError, match="form: must be one of"):
        port(cfg, "torch", out=tmp_path / "o", form="cell")
    with pytest.raises(EvaluationError, match="update 40 is past the end"):
        port(cfg, "torch", out=tmp_path / "o", total_steps=41)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="out: exists and is not a directory"):
        port(cfg, "torch", out=tmp_path / "file")
    beta = write(tmp_path, "dialect: torch\noptimizer: {type: Adam, lr: 0.01}\n"
                           "scheduler: {type: OneCycleLR, max_lr: 0.1, total_steps: 10}\n", "b.yaml")
    with pytest.raises(UnsupportedError, match="the MindSpore port drives lr only"):
        port(beta, "mindspore", out=tmp_path / "o")
    with pytest.raises(UnsupportedError, match="MegEngine's SGD has no dampening|dampening"):
        port(write(tmp_path, SGD.replace("type: SGD, lr: 0.1", "type: SGD, lr: 0.1, momentum: 0.9, dampening: 0.5"),
                   "d.yaml"), "megengine", out=tmp_path / "o", optimizer="native")
    with pytest.raises(ConfigError, match="model_names: is required with source_names"):
        port(cfg, "torch", out=tmp_path / "o", source_names=[])
    with pytest.raises(ConfigError, match="names\\[0\\]"):
        load_records([["x", "not a shape"]])


def test_model_names_alone_check_the_plan_fits(tmp_path: Path) -> None:
    cfg = write(tmp_path, SGD)
    save_records(torch_records(TNet()), tmp_path / "names.json")
    assert [r.name for r in load_records(tmp_path / "names.json")] == [r.name for r in torch_records(TNet())]
    port(cfg, "torch", out=tmp_path / "o", model_names=tmp_path / "names.json")
    with pytest.raises(ConfigError, match="matches no parameter"):
        port(cfg, "torch", out=tmp_path / "o", model_names=[["other.weight", [3, 3]]])


@pytest.mark.parametrize("kind, options, native", [
    ("SGD", {}, "nn.SGD"), ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}, "nn.SGD"),
    ("SGD", {"momentum": 0.9, "maximize": True}, "experimental.SGD"), ("AdamW", {}, "experimental.AdamW"),
    ("AdamW", {"weight_decay": 0.05}, None), ("Adam", {}, None), ("RMSprop", {}, "experimental.RMSprop"),
    ("Adadelta", {}, "nn.Adadelta"),
])
def test_mindspore_optimizer_choice_follows_the_measured_table(kind: str, options: dict[str, Any],
                                                               native: str | None) -> None:
    from optbridge.params import effective_options
    from optbridge.port.optimizers import choose
    from optbridge_adapters.mindspore.native import native_equivalent
    plan = Plan(optimizers=(OptimizerSpec(type=kind, options={"lr": 0.1, **options}),))
    eff = [effective_options(plan, plan.groups[0])]
    c = choose("mindspore", kind, eff, form="list", mode="auto", path="optimizer", backend="b")
    assert (None if c.api == "exact" else c.cls) == native
    row = native_equivalent(kind, eff[0])
    assert (row is None) == (native is None)  # the table's own first choice agrees on native-or-exact
    if native is not None and native.startswith("nn."):
        assert row is not None and row.native == native


# --------------------------------------------------------------------------- MindSpore

ms = pytest.importorskip("mindspore")
from mindspore import Parameter, Tensor, ops  # noqa: E402
from mindspore import nn as mnn  # noqa: E402


class MBlock(mnn.Cell):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = mnn.Conv2d(c, c, 3, pad_mode="pad", padding=1, has_bias=False)
        self.bn1 = mnn.BatchNorm2d(c)
        self.conv2 = mnn.Conv2d(c, c, 3, pad_mode="pad", padding=1, has_bias=False)
        self.bn2 = mnn.BatchNorm2d(c)

    def construct(self, x: Any) -> Any:
        y = ops.relu(self.bn1(self.conv1(x)))
        return ops.relu(self.bn2(self.conv2(y)) + x)


class MNet(mnn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = mnn.SequentialCell([mnn.Conv2d(3, 8, 3, pad_mode="pad", padding=1, has_bias=False),
                                            mnn.BatchNorm2d(8), mnn.ReLU(), MBlock(8)])
        self.head = mnn.Dense(8, 10)

    def construct(self, x: Any) -> Any:
        return self.head(self.backbone(x).mean((2, 3)))


class ProbeLoss(mnn.Cell):
    """``sum(p)`` over the optimizer's parameters: every gradient is 1."""

    def __init__(self, params: Any) -> None:
        super().__init__()
        self.ps = ms.ParameterTuple(params)

    def construct(self) -> Any:
        s = 0.0
        for p in self.ps:
            s = s + p.sum()
        return s


@pytest.fixture
def mode(request: pytest.FixtureRequest) -> Any:
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE)
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)


def ms_records(net: Any) -> list[ParamRecord]:
    from optbridge.port import model_records
    return model_records(net)


def sgd_run(mod: Any, net: Any, setup: Any, steps: int, graph: bool) -> np.ndarray:
    """Plain SGD with gradient 1 from 0: the applied lr of each group per update (float32)."""
    opt = setup.optimizer
    named = dict(net.parameters_and_names())
    step = mnn.TrainOneStepCell(ProbeLoss(list(opt.parameters)), opt) if graph else None
    out = np.zeros((len(setup.groups), steps), np.float32)
    for k in range(steps):
        for p in opt.parameters:
            ops.assign(p, ops.zeros_like(p))
        if step is not None:
            step()
        else:
            opt(ms.mutable(tuple(ops.ones_like(p) for p in opt.parameters)))
        setup.step()
        for i, names in enumerate(setup.groups.values()):
            vals = np.concatenate([named[n].asnumpy().ravel() for n in names])
            assert np.all(vals == vals[0]), (k, names)
            out[i, k] = -vals[0]
    return out


@pytest.mark.parametrize("form, mode", [("list", "pynative"), ("cell", "pynative"), ("experimental", "pynative"),
                                        ("list", "graph"), ("cell", "graph"), ("experimental", "graph")],
                         indirect=["mode"])
def test_mindspore_forms_apply_the_reference_and_stop_at_the_end(tmp_path: Path, form: str, mode: str) -> None:
    cfg = write(tmp_path, SGD.replace("total_steps: 40", "total_steps: 12"))
    res = port(cfg, "mindspore", out=tmp_path / "out", form=form)
    mod = load_module(res.module)
    net = MNet()
    setup = mod.build(net)
    assert setup.groups == {g.name: list(g.params) for g in resolve(optbridge.load(cfg), ms_records(net)).groups}
    kind = {"list": "SGD", "cell": "SGD", "experimental": "SGD"}[form]
    assert type(setup.optimizer).__name__ == f"Ported{kind}"
    assert type(setup.optimizer).__mro__[1].__module__.startswith(
        "mindspore.experimental" if form == "experimental" else "mindspore.nn")
    applied = sgd_run(mod, net, setup, 12, mode == "graph")
    np.testing.assert_array_equal(applied, reference(cfg, 12).astype(np.float32))  # 0 ulp
    with pytest.raises(ValueError) as e:
        sgd_run(mod, net, setup, 1, mode == "graph")
    assert str(e.value).splitlines()[0] == core_message(optbridge.load(cfg), 12)


def test_mindspore_adamw_lrs_and_the_driver_that_was_not_stepped(tmp_path: Path) -> None:
    cfg = write(tmp_path, ADAMW.replace("lr: 0.001, weight_decay: 0.05", "lr: 0.001")
                .replace("total_steps: 40", "total_steps: 12"))
    ref = reference(cfg, 12).astype(np.float32)
    for form in ("list", "cell", "experimental"):
        mod = load_module(port(cfg, "mindspore", out=tmp_path / form, form=form).module)
        net = MNet()
        setup = mod.build(net)
        opt = setup.optimizer
        assert type(opt).__mro__[1].__name__ == "AdamW"  # experimental AdamW: torch's AdamW (default options)
        for k in range(12):
            opt(ms.mutable(tuple(ops.ones_like(p) for p in opt.parameters)))
            got = np.asarray([float(p.asnumpy()) for p in opt.port_lrs], np.float32)
            np.testing.assert_array_equal(got, ref[:, k], err_msg=f"{form} update {k}")
            setup.step()
        if form == "experimental":
            fresh = mod.build(MNet())
            grads = ms.mutable(tuple(ops.ones_like(p) for p in fresh.optimizer.parameters))
            fresh.optimizer(grads)
            with pytest.raises(ValueError, match=r"setup.step\(\) was not called after update 0: the optimizer is "
                                                 r"about to make update 1, and the schedule still stands at update 0"):
                fresh.optimizer(grads)
            fresh.step()
            fresh.step()  # a step without an update (a skipped update under loss scaling): the driver is ahead
            with pytest.raises(ValueError, match=r"setup.step\(\) was called more often than the optimizer updated: "
                                                 r"the optimizer is about to make update 1, and the schedule stands "
                                                 r"at update 2"):
                fresh.optimizer(grads)


def test_mindspore_adam_uses_optbridges_exact_adam(tmp_path: Path) -> None:
    cfg = write(tmp_path, ADAMW.replace("AdamW", "Adam").replace("total_steps: 40", "total_steps: 6"))
    res = port(cfg, "mindspore", out=tmp_path / "out", form="cell")
    assert res.spec.needs_optbridge and "optbridge" in json.loads(res.metadata.read_text())["runtime"]["needs"]
    assert "Needs: MindSpore, numpy and optbridge" in res.module.read_text()
    with pytest.raises(UnsupportedError, match="eps outside the bias correction"):
        port(cfg, "mindspore", out=tmp_path / "native", optimizer="native")
    mod = load_module(res.module)
    setup = mod.build(MNet())
    opt = setup.optimizer
    from optbridge_adapters.mindspore.optimizers import Adam
    assert isinstance(opt, Adam)
    ref = reference(cfg, 6)
    for k in range(6):
        opt(ms.mutable(tuple(ops.ones_like(p) for p in opt.parameters)))
        got = np.asarray([float(p.asnumpy()) for p in opt.port_lrs])
        np.testing.assert_array_equal(got, ref[:, k].astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
def test_mindspore_holds_the_last_value_when_the_plan_says_hold(tmp_path: Path, form: str) -> None:
    mod = load_module(port(write(tmp_path, HOLD), "mindspore", out=tmp_path / "out", form=form).module)
    p = Parameter(Tensor(np.zeros(1, np.float32)), name="w")
    opts, drivers = mod.build_on({"all": [p]})
    opt = opts["optimizer"]
    applied = []
    for _ in range(6):
        ops.assign(p, ops.zeros_like(p))
        opt(ms.mutable((ops.ones_like(p),)))
        for d in drivers:
            d.step()
        applied.append(-float(p.asnumpy()[0]))
    assert applied == np.float32([0.5, 0.25, 0.125, 0.125, 0.125, 0.125]).tolist()


@pytest.mark.parametrize("mode", ["graph"], indirect=True)
def test_mindspore_model_train_with_the_callback(tmp_path: Path, mode: str) -> None:
    import mindspore.dataset as ds
    from mindspore.train import Callback
    cfg = write(tmp_path, SGD.replace("type: SGD, lr: 0.1", "type: SGD, lr: 0.1, momentum: 0.9")
                .replace("total_steps: 40", "total_steps: 6"))
    mod = load_module(port(cfg, "mindspore", out=tmp_path / "out", form="experimental").module)
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(3, 6, 6)).astype(np.float32), np.int32(rng.integers(0, 10))) for _ in range(6)]

    class Record(Callback):
        def __init__(self, opt: Any) -> None:
            self.opt, self.lrs = opt, []

        def on_train_step_end(self, run_context: Any) -> None:
            self.lrs.append([float(p.asnumpy()) for p in self.opt.port_lrs])

    net = MNet()
    setup = mod.build(net)
    loss = mnn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    record = Record(setup.optimizer)
    setup.model(net, loss).train(1, ds.GeneratorDataset(data, ["x", "y"]).batch(1),
                                 callbacks=[record, setup.callback()], dataset_sink_mode=False)
    np.testing.assert_array_equal(np.float32(record.lrs).T, reference(cfg, 6).astype(np.float32))
    net = MNet()
    setup = mod.build(net)
    with pytest.raises(ValueError, match=r"setup.step\(\) was not called after update 0"):
        setup.model(net, loss).train(1, ds.GeneratorDataset(data, ["x", "y"]).batch(1), dataset_sink_mode=False)


_NO_DECAY_GLOB = ('  - {name: backbone_no_decay, params: {names: ["backbone.*"], ndim: [1]}, lr: 0.01, '
                  'weight_decay: 0.0}')
_NO_DECAY_NAMES = """  - name: backbone_no_decay
    params: [backbone.1.weight, backbone.1.bias, backbone.3.bn1.weight, backbone.3.bn1.bias, backbone.3.bn2.weight,
             backbone.3.bn2.bias]
    lr: 0.01
    weight_decay: 0.0"""
NAMED = SGD.replace(_NO_DECAY_GLOB, _NO_DECAY_NAMES)


def test_a_torch_plan_ports_onto_mindspore_names(tmp_path: Path) -> None:
    cfg = write(tmp_path, NAMED.replace("total_steps: 40", "total_steps: 8"))
    plan = optbridge.load(cfg)
    with pytest.raises(ConfigError, match="matches no parameter"):
        resolve(plan, ms_records(MNet()))  # BatchNorm's weight/bias are gamma/beta in MindSpore
    save_records(torch_records(TNet()), tmp_path / "torch.json")
    save_records(ms_records(MNet()), tmp_path / "ms.json")
    assert main(["port", str(cfg), "--to", "mindspore", "--form", "list", "--source-names",
                 str(tmp_path / "torch.json"), "--model-names", str(tmp_path / "ms.json"),
                 "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "names.txt").read_text()
    assert "backbone.1.weight" in report and "backbone.1.gamma" in report and "translated" in report
    mod = load_module(tmp_path / "out" / "optim_mindspore.py")
    net = MNet()
    setup = mod.build(net)
    assert sorted(setup.groups["backbone_no_decay"]) == sorted(
        f"{m}.{leaf}" for m in ("backbone.1", "backbone.3.bn1", "backbone.3.bn2") for leaf in ("gamma", "beta"))
    applied = sgd_run(mod, net, setup, 8, False)
    np.testing.assert_array_equal(applied, reference(cfg, 8).astype(np.float32))
    doc = json.loads((tmp_path / "out" / "port.json").read_text())
    assert doc["names"]["frameworks"] == ["torch", "mindspore"] and doc["names"]["report"] == "names.txt"


def test_mindspore_resolver_is_optbridge_resolve(tmp_path: Path) -> None:
    for groups in RESOLVER_PLANS[:2]:
        plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=tuple(
            g for g in groups if g.name != "frozen")),), schedule={"lr": ir.Cosine(steps=10)}, total_steps=10)
        net = MNet()
        mod = load_module(port(plan, "mindspore", out=tmp_path / f"o{len(groups)}").module)
        got, excluded = mod.resolve(mod.records(net))
        want = resolve(plan, ms_records(net))
        assert got == {g.name: list(g.params) for g in want.groups} and excluded == list(want.excluded)


class MHolder(mnn.Cell):
    def __init__(self, value: np.ndarray) -> None:
        super().__init__()
        self.w = Parameter(Tensor(value), name="w")


class MTwo(mnn.Cell):
    """Two float32 vectors, ``a.w`` and ``b.w`` (the groups of :func:`joins`)."""

    def __init__(self) -> None:
        super().__init__()
        init = np.random.RandomState(0).randn(2, 4).astype(np.float32)
        self.a, self.b = MHolder(init[0]), MHolder(init[1])


def ms_updates(setup: Any, net: Any, steps: int) -> np.ndarray:
    grads = np.random.RandomState(1).randn(steps, 2, 4).astype(np.float32)
    opt, out = setup.optimizer, []
    for k in range(steps):
        opt(ms.mutable(tuple(Tensor(grads[k, 0 if p.name.startswith("a") else 1]) for p in opt.parameters)))
        setup.step()
        out.append(np.concatenate([net.a.w.asnumpy(), net.b.w.asnumpy()]))
    return np.array(out)


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
@pytest.mark.parametrize("kind", ["Adam", "SGD"])
def test_mindspore_group_joining_mid_run_runs_on_the_exact_class(tmp_path: Path, form: str, kind: str) -> None:
    """start_step on MindSpore: the port builds optbridge's exact class with the group's start_step (MindSpore's
    own optimizers update every group from the first update: optimizer='native' refuses, saying so); the
    parameters equal to_mindspore's bit for bit, and group b stays untouched until update 12."""
    cfg = joins(tmp_path, None if kind == "Adam" else {"type": "SGD", "lr": 0.1, "momentum": 0.9})
    res = port(cfg, "mindspore", out=tmp_path / "out", form=form)
    assert res.spec.optimizers[0].choice.cls == f"exact.{kind}"
    if kind == "SGD":
        assert "joins mid-run" in res.spec.optimizers[0].choice.why
        with pytest.raises(UnsupportedError, match="cannot take a group mid-run .MindSpore's optimizers take every "
                                                   "group at construction"):
            port(cfg, "mindspore", out=tmp_path / "native", form=form, optimizer="native")
    mod = load_module(res.module)
    net = MTwo()
    got = ms_updates(mod.build(net), net, 20)
    ref_net = MTwo()
    want = ms_updates(optbridge.to_mindspore(optbridge.load(cfg), ref_net, form=form), ref_net, 20)
    np.testing.assert_array_equal(got, want)
    b0 = MTwo().b.w.asnumpy()
    assert (got[:12, 4:] == b0).all() and not (got[12, 4:] == b0).all()


def test_mindspore_port_clip_leaves_out_a_group_that_has_not_joined(tmp_path: Path) -> None:
    cfg = joins(tmp_path, {"type": "SGD", "lr": 0.1, "clip": {"max_norm": 0.5}})
    mod = load_module(port(cfg, "mindspore", out=tmp_path / "out", form="list").module)
    setup = mod.build(MTwo())
    g = np.random.RandomState(2).randn(2, 4).astype(np.float32)
    for k in range(13):
        a, b = (x.asnumpy() for x in setup.clip_gradients((Tensor(g[0]), Tensor(g[1]))))
        norm = np.linalg.norm(g if k >= 12 else g[0])
        np.testing.assert_allclose(a, g[0] * (0.5 / (norm + 1e-6)), rtol=1e-6)
        np.testing.assert_allclose(b, g[1] * (0.5 / (norm + 1e-6)) if k >= 12 else g[1], rtol=1e-6)
        setup.optimizer(ms.mutable((Tensor(g[0]), Tensor(g[1]))))
        setup.step()


def test_adamweightdecay_joining_mid_run_is_refused_on_mindspore(tmp_path: Path) -> None:
    cfg = joins(tmp_path, {"type": "AdamWeightDecay", "lr": 0.01})
    with pytest.raises(UnsupportedError, match="optbridge has no mindspore class of AdamWeightDecay"):
        port(cfg, "mindspore", out=tmp_path / "out", form="cell")
