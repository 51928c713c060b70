"""`optbridge convert CONFIG --to mindspore`: lists, lr.json and a build_optimizer.py that runs on a real net.

Rule: the written lists equal the reference rounded to float32 exactly, and the
generated optimizer applies exactly those values (plain-SGD probe check: the
applied lr of each group equals its list entry).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

import optbridge
from optbridge.cli import main

ms = pytest.importorskip("mindspore")
from mindspore import Parameter, Tensor, nn  # noqa: E402

TORCH_CONFIG = """\
dialect: torch
optimizer: {type: AdamW, lr: 0.001, weight_decay: 0.05}
param_groups:
  - {name: body, params: "body.*"}
  - {name: "head/bias", params: {names: ["head.*"], leaf: [bias]}, weight_decay: 0.0, lr: 0.01}
  - {name: head, params: rest}
scheduler:
  type: SequentialLR
  schedulers:
    - {type: LinearLR, start_factor: 0.1, total_iters: 5}
    - {type: CosineAnnealingLR, T_max: 35}
  milestones: [5]
"""


class Net(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Dense(3, 4)
        self.head = nn.Dense(4, 2)

    def construct(self, x):
        return self.head(self.body(x))


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"build_optimizer_{time.time_ns()}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _probe_run(out: Path, steps: int, zero_grads: bool = False) -> tuple[object, dict, np.ndarray]:
    net = Net()
    mod = _load(out / "build_optimizer.py")
    opt, after_step = mod.build_optimizer(net)
    groups = mod.resolve(net)
    probes = {g: ps[0] for g, ps in groups.items()}
    applied = np.zeros((len(probes), steps))
    for k in range(steps):
        for p in opt.parameters:
            ms.ops.assign(p, ms.ops.zeros_like(p))
        opt(ms.mutable(tuple(Tensor(np.ones(p.shape, np.float32)) for p in opt.parameters)))
        after_step()
        for i, p in enumerate(probes.values()):
            applied[i, k] = -float(p.asnumpy().reshape(-1)[0])
    return opt, groups, applied


def test_convert_torch_config_to_sgd_lists(tmp_path: Path) -> None:
    cfg = tmp_path / "sgd.yaml"
    cfg.write_text(TORCH_CONFIG.replace("type: AdamW, lr: 0.001, weight_decay: 0.05",
                                        "type: SGD, lr: 0.1, momentum: 0.0"), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["convert", str(cfg), "--to", "mindspore", "--total-steps", "40", "--out", str(out)]) == 0
    plan = optbridge.load(cfg)
    ref = optbridge.trace(plan, 40)
    doc = json.loads((out / "lr.json").read_text())
    assert doc["optimizer"] == "SGD" and doc["total_steps"] == 40
    assert [doc["groups"][g]["file"] for g in ref.groups] == ["body.npy", "head_bias.npy", "head.npy"]
    for i, g in enumerate(ref.groups):
        arr = np.load(out / doc["groups"][g]["file"])
        assert arr.dtype == np.float32
        np.testing.assert_array_equal(arr, ref["lr"][i].astype(np.float32))
        assert doc["groups"][g]["values"] == arr.astype(np.float64).tolist()
    opt, groups, applied = _probe_run(out, 12)
    assert type(opt) is nn.SGD
    assert sorted(p.name for p in groups["head/bias"]) == ["head.bias"]
    assert sorted(p.name for p in groups["body"]) == ["body.bias", "body.weight"]
    np.testing.assert_array_equal(applied, ref["lr"][:, :12].astype(np.float32))


def test_convert_adamw_uses_experimental_adamw(tmp_path: Path) -> None:
    cfg = tmp_path / "adamw.yaml"
    cfg.write_text(TORCH_CONFIG, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["convert", str(cfg), "--to", "mindspore", "-n", "40", "--out", str(out)]) == 0
    opt, _, _ = _probe_run(out, 3)
    from mindspore.experimental import optim
    assert type(opt) is optim.AdamW
    ref = optbridge.trace(optbridge.load(cfg), 40)["lr"].astype(np.float32)
    assert [float(g["lr"].asnumpy()) for g in opt.param_groups] == ref[:, 3].tolist()


def test_convert_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TORCH_CONFIG, encoding="utf-8")
    assert main(["convert", str(cfg), "--to", "mindspore", "--out", str(tmp_path / "o")]) == 2
    assert "--total-steps N is required" in capsys.readouterr().err
    assert main(["convert", str(cfg), "--to", "torch", "-n", "5", "--out", str(tmp_path / "o")]) == 2
    assert "invalid choice" in capsys.readouterr().err
    plateau = tmp_path / "p.yaml"
    plateau.write_text("dialect: torch\noptimizer: {type: SGD, lr: 0.1}\nscheduler: {type: ReduceLROnPlateau}\n",
                       encoding="utf-8")
    assert main(["convert", str(plateau), "--to", "mindspore", "-n", "5", "--out", str(tmp_path / "o")]) == 2
    assert "plateau needs the metric" in capsys.readouterr().err


def test_long_lists_are_evaluated_in_chunks_bit_identically() -> None:
    from optbridge import ir
    from optbridge.plan import Group, OptimizerSpec, Plan
    from optbridge_adapters.mindspore.convert import CHUNK, lists
    n = 2 * CHUNK + 3
    node = ir.Sequence(parts=(ir.Linear(start_factor=0.0, end_factor=1.0, steps=1000, unit="epoch"),
                              ir.Multiplicative(expr="0.999999"), ir.Cosine(steps=CHUNK)),
                       boundaries=(CHUNK // 2, CHUNK + 7))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a"), Group(name="b", options={"lr": 0.01}), Group(name="z", frozen="zero_lr"),
        Group(name="c", schedule={"lr": ir.Constant()}))),), schedule={"lr": node}, steps_per_epoch=7)
    out = lists(plan, n)
    ref = optbridge.trace(plan, n)["lr"].astype(np.float32)
    for i, g in enumerate("abzc"):
        np.testing.assert_array_equal(out[g], ref[i])
