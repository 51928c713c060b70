"""``optbridge port --to megengine``: the generated module runs in real MegEngine 1.13 and applies the reference.

Run from the repo root with the MegEngine interpreter::

    .venv-mge/bin/python -m pytest -q tests_megengine/test_port_mge.py

What is proved (the torch and MindSpore forms: ``tests/test_port.py``):

* **the applied lr**: a CIFAR-style ResNet with BatchNorm, four groups (backbone at 0.1x,
  no-decay biases and norms), every parameter 0 and every gradient 1 before each update of
  plain SGD: MegEngine converts ``group['lr']`` to float32 at every step, so the change is
  ``-float32(reference)``, exactly (0 ulp); the group's lr read before each step equals the
  reference's float64 value bit for bit;
* **names**: the torch plan's groups (``ndim: [1]`` for the no-decay group) do not fit
  MegEngine's model, whose BatchNorm parameters are ``(1, C, 1, 1)``; mapped with the torch
  twin's records (``fixtures/names_torch.npz``, captured from real torch) they do;
* **the end**: the update at the horizon raises with the core's message, the scheduler step
  after the last update does not; ``hold`` holds; an update without ``scheduler.step()`` raises;
* **groups**: the generated resolver is ``optbridge.params.resolve`` on the MegEngine model;
* **optimizers**: SGD is MegEngine's own (the measured table says it computes torch's SGD);
  AdamW is optbridge's torch-exact class (MegEngine's own computes its bias corrections in
  float32), and the generated module says it needs optbridge.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import megengine as mge
import megengine.functional as F
import megengine.module as M
import numpy as np
import pytest

import optbridge
from optbridge.errors import ConfigError, UnsupportedError
from optbridge.params import ParamRecord, resolve
from optbridge.port import model_records, port
from optbridge.slots import slots
from optbridge.source import PastHorizon, ValueSource

HERE = Path(__file__).resolve().parent
TORCH_FIXTURE = HERE / "fixtures" / "names_torch.npz"

SGD = """\
dialect: torch
optimizer: {type: SGD, lr: 0.1}
param_groups:
  - {name: backbone, params: {names: ["backbone.*"], ndim: [4]}, lr: 0.01}
  - {name: backbone_no_decay, params: {names: ["backbone.*"], ndim: [1]}, lr: 0.01, weight_decay: 0.0}
  - {name: head, params: {names: ["head.*"], ndim: [2]}}
  - {name: head_no_decay, params: rest, weight_decay: 0.0}
scheduler:
  type: SequentialLR
  schedulers:
    - {type: LinearLR, start_factor: 0.01, total_iters: 10}
    - {type: CosineAnnealingLR, T_max: 20, eta_min: 1.0e-4}
  milestones: [10]
total_steps: 30
"""
STEPS = 30
_ids = itertools.count()


class Block(M.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = M.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = M.BatchNorm2d(cout)
        self.conv2 = M.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = M.BatchNorm2d(cout)
        self.down = M.Sequential(M.Conv2d(cin, cout, 1, stride, bias=False), M.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else None

    def forward(self, x: Any) -> Any:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.down(x) if self.down is not None else x))


class ResNet(M.Module):
    """The MegEngine twin of tests/test_names.py's TResNet (whose records are in fixtures/names_torch.npz)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = M.Sequential(M.Conv2d(3, 8, 3, 1, 1, bias=False), M.BatchNorm2d(8), M.ReLU(),
                                     Block(8, 8, 1), Block(8, 16, 2))
        self.head = M.Linear(16, 10)

    def forward(self, x: Any) -> Any:
        return self.head(F.mean(self.backbone(x), axis=(2, 3)))


def torch_records() -> list[ParamRecord]:
    """The torch twin's trained parameters, as captured from real torch."""
    rows = json.loads(str(np.load(TORCH_FIXTURE)["resnet/records"]))
    return [ParamRecord(n, tuple(s), t, None, g) for n, s, t, g in rows if g]


def load_module(path: Path) -> Any:
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


def ported(tmp_path: Path, text: str = SGD, **kw: Any) -> tuple[Any, Any]:
    """(module, result) of the config ported onto the MegEngine ResNet's names."""
    cfg = write(tmp_path, text)
    res = port(cfg, "megengine", out=tmp_path / "out", source_names=torch_records(),
               model_names=model_records(ResNet()), source_framework="torch", **kw)
    return load_module(res.module), res


def test_the_torch_plan_does_not_fit_megengine_without_its_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="matches no parameter"):
        resolve(optbridge.load(write(tmp_path, SGD)), model_records(ResNet()))  # BatchNorm is (1, C, 1, 1) here
    with pytest.raises(ConfigError, match="matches no parameter"):
        port(write(tmp_path, SGD), "megengine", out=tmp_path / "o", model_names=model_records(ResNet()))


def test_megengine_applies_the_reference_lr(tmp_path: Path) -> None:
    mod, res = ported(tmp_path)
    assert (tmp_path / "out" / "names.txt").read_text().count("BatchNorm") > 0
    assert res.spec.needs_optbridge is False and "standalone" in res.module.read_text()
    model = ResNet()
    setup = mod.build(model)
    assert type(setup.optimizer) is mge.optimizer.SGD
    plan = res.spec.plan
    want = resolve(plan, model_records(model))
    assert setup.groups == {g.name: list(g.params) for g in want.groups}
    norms = [r.name for r in model_records(model) if r.module_type == "BatchNorm2d"]
    assert sorted(setup.groups["backbone_no_decay"]) == sorted(norms) and len(norms) == 12
    ref = optbridge.trace(optbridge.load(write(tmp_path, SGD)), STEPS)["lr"]
    params = dict(model.named_parameters())
    for k in range(STEPS):
        assert [g["lr"] for g in setup.optimizer.param_groups] == ref[:, k].tolist()  # float64, bit for bit
        for p in params.values():
            p._reset(mge.tensor(np.zeros(p.shape, np.float32)))
            p.grad = mge.tensor(np.ones(p.shape, np.float32))
        setup.optimizer.step()
        setup.scheduler.step()
        for i, names in enumerate(setup.groups.values()):
            for n in names:  # MegEngine applies float32(lr): the change is -float32(reference), exactly
                assert np.all(params[n].numpy() == -np.float32(ref[i, k])), (k, n)


def test_megengine_trains_with_the_generated_loop(tmp_path: Path) -> None:
    mod, _ = ported(tmp_path, SGD.replace("type: SGD, lr: 0.1", "type: SGD, lr: 0.1, momentum: 0.9, "
                                                                "weight_decay: 5.0e-4, nesterov: true"))
    model = ResNet()
    rng = np.random.default_rng(0)
    batches = [(mge.tensor(rng.normal(size=(2, 3, 8, 8)).astype(np.float32)),
                mge.tensor(rng.integers(0, 10, 2).astype(np.int32))) for _ in range(5)]
    setup = mod.train(model, batches, F.nn.cross_entropy)
    assert setup.scheduler.last_epoch == 5
    assert setup.optimizer.param_groups[1]["weight_decay"] == 0.0


def core_message(plan: Any, k: int) -> str:
    src = ValueSource(slots(plan), unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                      total_steps=plan.total_steps)
    with pytest.raises(PastHorizon) as e:
        src.check(k)
    return str(e.value)


def test_megengine_past_the_end_and_the_scheduler_that_was_not_stepped(tmp_path: Path) -> None:
    mod, res = ported(tmp_path)
    setup = mod.build(ResNet())
    params = list(setup.params)
    for _ in range(STEPS):
        for p in params:
            p.grad = mge.tensor(np.ones(p.shape, np.float32))
        setup.optimizer.step()
        setup.scheduler.step()  # the step after the last update writes nothing and does not raise
    before = params[0].numpy().copy()
    with pytest.raises(mod.PastHorizon) as e:
        setup.optimizer.step()
    assert str(e.value) == core_message(res.spec.plan, STEPS)
    assert np.array_equal(params[0].numpy(), before)  # raised before any tensor changed
    fresh = mod.build(ResNet())
    fresh.optimizer.step()
    with pytest.raises(mod.NotStepped, match=r"scheduler.step\(\) was not called after update 0: optimizer "
                                             r"'optimizer' is about to make another update"):
        fresh.optimizer.step()


def test_megengine_holds_the_last_value_when_the_plan_says_hold(tmp_path: Path) -> None:
    cfg = write(tmp_path, "optbridge: 1\noptimizer: {type: SGD, lr: 0.5, groups: [{name: all, params: rest}]}\n"
                          "schedule: {lr: {kind: table, values: [1.0, 0.5, 0.25], relative: true, hold: true}}\n")
    mod = load_module(port(cfg, "megengine", out=tmp_path / "out").module)
    w = mge.Parameter(np.zeros(1, np.float32))
    opts, scheds = mod.build_on({"all": [w]})
    lrs = []
    for _ in range(6):
        lrs.append(opts["optimizer"].param_groups[0]["lr"])
        w.grad = mge.tensor(np.ones(1, np.float32))
        opts["optimizer"].step()
        scheds["optimizer"].step()
    assert lrs == [0.5, 0.25, 0.125, 0.125, 0.125, 0.125]


def test_megengine_adamw_uses_optbridges_exact_class_and_schedules_beta1(tmp_path: Path) -> None:
    cfg = write(tmp_path, "dialect: torch\noptimizer: {type: AdamW, lr: 0.01}\n"
                          "scheduler: {type: OneCycleLR, max_lr: 0.1, total_steps: 20}\n")
    res = port(cfg, "megengine", out=tmp_path / "out")
    assert res.spec.needs_optbridge and "Needs: MegEngine, numpy and optbridge" in res.module.read_text()
    from optbridge_adapters.megengine.native import native_equivalent
    assert native_equivalent("AdamW", {}).verdict != "float32"  # why the exact class
    mod = load_module(res.module)
    w = mge.Parameter(np.zeros(3, np.float32))
    opts, scheds = mod.build_on({"all": [w]})
    from optbridge_adapters.megengine.optimizers import AdamW
    assert isinstance(opts["optimizer"], AdamW)
    ref = optbridge.trace(optbridge.load(cfg), 21)
    for k in range(21):
        g = opts["optimizer"].param_groups[0]
        assert (g["lr"], g["betas"][0], g["betas"][1]) == (ref["lr"][0, k], ref["beta1"][0, k], 0.999)
        w.grad = mge.tensor(np.ones(3, np.float32))
        opts["optimizer"].step()
        scheds["optimizer"].step()
    with pytest.raises(mod.PastHorizon, match="one_cycle ends after total_steps=20"):
        opts["optimizer"].step()


@pytest.mark.parametrize("options, native", [({}, True), ({"momentum": 0.9, "nesterov": True}, True),
                                             ({"momentum": 0.9, "dampening": 0.5}, False)])
def test_megengine_sgd_choice_follows_the_measured_table(tmp_path: Path, options: dict[str, Any],
                                                         native: bool) -> None:
    opts = ", ".join(f"{k}: {str(v).lower()}" for k, v in options.items())
    cfg = write(tmp_path, f"dialect: torch\noptimizer: {{type: SGD, lr: 0.1{', ' + opts if opts else ''}}}\n"
                          "scheduler: {type: StepLR, step_size: 3}\ntotal_steps: 9\n")
    res = port(cfg, "megengine", out=tmp_path / "out")
    assert (res.spec.optimizers[0].choice.cls == "megengine.optimizer.SGD") is native
    from optbridge_adapters.megengine.native import native_equivalent
    assert (native_equivalent("SGD", options).verdict == "float32") is native
    mod = load_module(res.module)
    assert mod.selfcheck() == 9


def test_megengine_resolver_is_optbridge_resolve(tmp_path: Path) -> None:
    mod, res = ported(tmp_path)
    model = ResNet()
    got, excluded = mod.resolve(mod.records(model))
    want = resolve(res.spec.plan, model_records(model))
    assert got == {g.name: list(g.params) for g in want.groups} and excluded == []



def joins(tmp_path: Path, optimizer: dict[str, Any] | None = None, clips: dict[str, Any] | None = None) -> Path:
    """The plan of conformance case ``trajectory-adam-group-joins`` (Adam; group ``b`` joins at update 12, Lightning's
    BackboneFinetuning), ending at update 40, with another ``optimizer`` or group ``clips``, as a config file."""
    from optbridge_conformance.cases import write_plan
    return write_plan("trajectory-adam-group-joins", tmp_path / "joins.yaml", clips=clips, optimizer=optimizer,
                      total_steps=40)


class Holder(M.Module):
    def __init__(self, value: np.ndarray) -> None:
        super().__init__()
        self.w = mge.Parameter(value)

    def forward(self, x: Any) -> Any:
        return x * self.w


class Two(M.Module):
    def __init__(self) -> None:
        super().__init__()
        init = np.random.RandomState(0).randn(2, 4).astype(np.float32)
        self.a, self.b = Holder(init[0]), Holder(init[1])

    def forward(self, x: Any) -> Any:
        return self.a(x) + self.b(x)


def two_updates(model: Two, optimizer: Any, scheduler: Any, start: int, stop: int) -> list[np.ndarray]:
    out = []
    for k in range(start, stop):
        g = np.random.RandomState(k).randn(2, 4).astype(np.float32)
        model.a.w.grad, model.b.w.grad = mge.tensor(g[0]), mge.tensor(g[1])
        optimizer.step()
        scheduler.step()
        out.append(np.concatenate([model.a.w.numpy(), model.b.w.numpy()]))
    return out


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_megengine_group_joining_mid_run_matches_to_megengine_and_resumes(tmp_path: Path, kind: str) -> None:
    """start_step: MegEngine's own classes create state in their constructor only, so the port builds optbridge's
    class (optimizer='native' refuses, saying why) and its scheduler adds the group before update 12; the
    parameters equal to_megengine's bit for bit, group b is untouched until then, and a resume past the join
    continues bit for bit, whichever state is loaded first."""
    cfg = joins(tmp_path, {"type": "SGD", "lr": 0.1, "momentum": 0.9} if kind == "SGD" else None)
    res = port(cfg, "megengine", out=tmp_path / "out")
    assert res.spec.optimizers[0].choice.cls == f"exact.{kind}"
    if kind == "SGD":
        assert "joins mid-run" in res.spec.optimizers[0].choice.why
        with pytest.raises(UnsupportedError, match="MegEngine's own optimizers create their state in the "
                                                   "constructor only"):
            port(cfg, "megengine", out=tmp_path / "native", optimizer="native")
    mod = load_module(res.module)
    assert mod.selfcheck() == 40
    model = Two()
    setup = mod.build(model)
    got = two_updates(model, setup.optimizer, setup.scheduler, 0, 40)
    ref_model = Two()
    ref = optbridge.to_megengine(optbridge.load(cfg), ref_model)
    want = two_updates(ref_model, ref.optimizer, ref.scheduler, 0, 40)
    np.testing.assert_array_equal(np.array(got), np.array(want))
    b0 = Two().b.w.numpy()
    assert all((x[4:] == b0).all() for x in got[:12]) and not (got[12][4:] == b0).all()
    model = Two()
    setup = mod.build(model)
    two_updates(model, setup.optimizer, setup.scheduler, 0, 20)
    saved = (setup.scheduler.state_dict(), setup.optimizer.state_dict(), model.state_dict())
    for optimizer_first in (False, True):  # the wrapped optimizer.load_state_dict adds the saved state's groups
        fresh_model = Two()
        fresh = mod.build(fresh_model)
        fresh_model.load_state_dict(saved[2])
        if optimizer_first:
            fresh.optimizer.load_state_dict(copy.deepcopy(saved[1]))
        fresh.scheduler.load_state_dict(saved[0])
        if not optimizer_first:
            fresh.optimizer.load_state_dict(copy.deepcopy(saved[1]))
        assert len(fresh.optimizer.param_groups) == 2
        np.testing.assert_array_equal(np.array(two_updates(fresh_model, fresh.optimizer, fresh.scheduler, 20, 40)),
                                      np.array(want[20:]))
