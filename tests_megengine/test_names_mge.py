"""Parameter-name maps torch <-> MegEngine on real MegEngine twins (optbridge.names).

torch is not in the MegEngine env: the torch twins' records, weights (deterministic
per name), inputs and outputs are captured in the main env by
``.venv/bin/python tests/test_names.py --write`` into ``fixtures/names_torch.npz``
(``tests/test_names.py`` checks that file against real torch). This file's
``--write`` captures the MegEngine twins' names, shapes and module types into
``tests/fixtures/names_megengine.json`` for the main env; the first test here
checks that file against real MegEngine::

    .venv-mge/bin/python tests_megengine/test_names_mge.py --write   # from the repo root

Function-equality tolerance: torch's weights moved through the name map (with
MegEngine's reshapes) make the MegEngine twin compute torch's float32 outputs
within ``rtol=1e-4, atol=1e-5`` (two frameworks' float32 conv/matmul kernels;
measured worst 2.4e-7 absolute on outputs up to 1.16); swapping a single pair of
same-shaped parameters moves them by 0.037 or more (measured in tests/test_names.py).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

import megengine as mge
import megengine.functional as F
import megengine.module as M

import optbridge
from optbridge.describe_groups import readable_selectors, selector_text
from optbridge.names import NameMapError, map_names, map_plan
from optbridge.params import ParamRecord

HERE = Path(__file__).resolve().parent
TORCH_FIXTURE = HERE / "fixtures" / "names_torch.npz"
MGE_FIXTURE = HERE.parent / "tests" / "fixtures" / "names_megengine.json"
FW = ("torch", "megengine")


# --------------------------------------------------------------------------- twins (same structure as tests/test_names.py)

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
    def __init__(self) -> None:
        super().__init__()
        self.backbone = M.Sequential(M.Conv2d(3, 8, 3, 1, 1, bias=False), M.BatchNorm2d(8), M.ReLU(),
                                     Block(8, 8, 1), Block(8, 16, 2))
        self.head = M.Linear(16, 10)

    def forward(self, x: Any) -> Any:
        return self.head(F.mean(self.backbone(x), axis=(2, 3)))


class Attn(M.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = M.Linear(d, 3 * d)
        self.proj = M.Linear(d, d)

    def forward(self, x: Any) -> Any:
        q, k, v = F.split(self.qkv(x), 3, axis=-1)
        a = F.softmax(F.matmul(q, k.transpose(0, 2, 1)) / math.sqrt(q.shape[-1]), axis=-1)
        return self.proj(F.matmul(a, v))


class TBlock(M.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1 = M.LayerNorm(d)
        self.attn = Attn(d)
        self.ln2 = M.LayerNorm(d)
        self.mlp = M.Sequential(M.Linear(d, 4 * d), M.ReLU(), M.Linear(4 * d, d))

    def forward(self, x: Any) -> Any:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(M.Module):
    def __init__(self, vocab: int = 50, d: int = 16, depth: int = 4, seq: int = 8) -> None:
        super().__init__()
        self.embed = M.Embedding(vocab, d)
        self.pos = mge.Parameter(np.zeros((1, seq, d), np.float32))
        self.blocks = [TBlock(d) for _ in range(depth)]
        self.norm = M.LayerNorm(d)
        self.head = M.Linear(d, vocab)

    def forward(self, ids: Any) -> Any:
        x = self.embed(ids) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


class Zoo(M.Module):
    """One of each layer the rules cover that MegEngine has (tests/test_names.py builds torch's twin)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = M.Conv1d(3, 8, 3)
        self.conv_g = M.Conv2d(4, 8, 3, groups=2)
        self.convt_g = M.ConvTranspose2d(4, 8, 3, groups=2)
        self.bn1d = M.BatchNorm1d(6)
        self.bn2d = M.BatchNorm2d(6)
        self.gn = M.GroupNorm(2, 6)
        self.inorm = M.InstanceNorm(6)
        self.ln = M.LayerNorm(6)
        self.prelu = M.PReLU(6)
        self.emb = M.Embedding(10, 6)
        self.lin = M.Linear(4, 5)

    def forward(self, x: Any) -> Any:
        return x


def mge_records(module: M.Module, buffers: bool = False) -> list[ParamRecord]:
    """Records as the MegEngine adapter reads them (owner = module at the parent path), optionally buffers."""
    mods = {n: type(m).__name__ for n, m in module.named_modules()}
    items = [(n, p, True) for n, p in module.named_parameters()]
    if buffers:
        items += [(n, b, False) for n, b in module.named_buffers()]
    return [ParamRecord(n, tuple(p.shape), mods.get(n.rpartition(".")[0], ""), id(p), grad) for n, p, grad in items]


MODELS = {"resnet": ResNet, "transformer": Transformer, "zoo": Zoo, "mha": lambda: M.MultiHeadAttention(8, 2)}


def capture() -> dict[str, Any]:
    out: dict[str, Any] = {"megengine": mge.__version__, "models": {}}
    for key, cls in MODELS.items():
        out["models"][key] = [[r.name, list(r.shape), r.module_type, r.requires_grad]
                              for r in mge_records(cls(), buffers=True)]
    return out


# --------------------------------------------------------------------------- the torch side (captured)

def _torch(model: str) -> tuple[list[ParamRecord], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    data = np.load(TORCH_FIXTURE)
    recs = [ParamRecord(n, tuple(s), t, None, g) for n, s, t, g in json.loads(str(data[f"{model}/records"]))]
    weights = {k.split("/", 2)[2]: data[k] for k in data.files if k.startswith(f"{model}/w/")}
    x = data[f"{model}/x"] if f"{model}/x" in data.files else np.zeros(0)
    y = data[f"{model}/y"] if f"{model}/y" in data.files else np.zeros(0)
    return recs, weights, x, y


def test_megengine_fixture_is_current() -> None:
    """tests/fixtures/names_megengine.json holds what real MegEngine names (the main env maps torch against it)."""
    assert json.loads(MGE_FIXTURE.read_text()) == json.loads(json.dumps(capture()))


def _load(module: M.Module, nm: Any, weights: dict[str, np.ndarray]) -> None:
    """Copy torch's weights into ``module`` through the name map (reshaped to MegEngine's shapes)."""
    params = dict(module.named_parameters())
    params.update(dict(module.named_buffers()))
    for tname, arr in weights.items():
        if tname in nm:
            p = params[nm[tname]]
            p._reset(mge.tensor(arr.reshape(p.shape)))


def test_resnet_and_transformer_twins_pair_and_compute_torchs_outputs() -> None:
    for model, cls in (("resnet", ResNet), ("transformer", Transformer)):
        recs, weights, x, y = _torch(model)
        net = cls()
        net.eval()
        nm = map_names(recs, mge_records(net, buffers=True), frameworks=FW)
        trained = [r.name for r in recs if r.requires_grad]
        assert sorted(nm) == sorted(r.name for r in recs if r.name in nm)
        assert set(trained) <= set(nm), "every trained torch parameter has a MegEngine twin"
        _load(net, nm, weights)
        out = net(mge.tensor(x)).numpy()
        np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-5)
    # the BatchNorm parameters and running statistics are (1, C, 1, 1) in MegEngine
    recs, _, _, _ = _torch("resnet")
    nm = map_names(recs, mge_records(ResNet(), buffers=True), frameworks=FW)
    pairs = {p.source: p for p in nm.pairs}
    assert pairs["backbone.1.weight"].target == "backbone.1.weight"
    assert pairs["backbone.1.weight"].target_shape == (1, 8, 1, 1)
    assert pairs["backbone.1.weight"].reshape == "MegEngine (1, C, 1, 1)"
    assert pairs["backbone.4.bn1.running_var"].target_shape == (1, 16, 1, 1)
    assert pairs["head.bias"].reshape == ""  # Linear biases stay 1-D
    assert nm.unpaired_source == tuple(r.name for r in recs if r.name.endswith("num_batches_tracked"))


def test_zoo_reshapes() -> None:
    recs, _, _, _ = _torch("zoo")
    nm = map_names(recs, mge_records(Zoo(), buffers=True), frameworks=FW)
    got = {p.source: (p.target, p.source_shape, p.target_shape, p.reshape) for p in nm.renames()}
    assert got == {
        "conv1d.bias": ("conv1d.bias", (8,), (1, 8, 1), "MegEngine (1, C, 1)"),
        "conv_g.weight": ("conv_g.weight", (8, 2, 3, 3), (2, 4, 2, 3, 3), "MegEngine group axis (G, O/G, I/G, k...)"),
        "conv_g.bias": ("conv_g.bias", (8,), (1, 8, 1, 1), "MegEngine (1, C, 1, 1)"),
        "convt_g.weight": ("convt_g.weight", (4, 4, 3, 3), (2, 2, 4, 3, 3), "MegEngine group axis (G, O/G, I/G, k...)"),
        "convt_g.bias": ("convt_g.bias", (8,), (1, 8, 1, 1), "MegEngine (1, C, 1, 1)"),
        "bn1d.weight": ("bn1d.weight", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
        "bn1d.bias": ("bn1d.bias", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
        "bn1d.running_mean": ("bn1d.running_mean", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
        "bn1d.running_var": ("bn1d.running_var", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
        "bn2d.weight": ("bn2d.weight", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
        "bn2d.bias": ("bn2d.bias", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
        "bn2d.running_mean": ("bn2d.running_mean", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
        "bn2d.running_var": ("bn2d.running_var", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
        "prelu.weight": ("prelu.weight", (6,), (1, 6, 1, 1), "MegEngine (1, C, 1, 1)"),
    }
    assert len(nm) == len([r for r in recs if r.requires_grad or not r.name.endswith("num_batches_tracked")])


def test_packed_attention_is_a_clear_error_listing_both_sides() -> None:
    recs, _, _, _ = _torch("mha")
    try:
        map_names(recs, mge_records(M.MultiHeadAttention(8, 2)), frameworks=FW)
    except NameMapError as e:
        assert e.only_source == ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
        assert e.only_target == ("io_weight_bias",)
        assert "only in megengine (1): io_weight_bias (1, 288) MultiHeadAttention" in str(e)
    else:  # pragma: no cover
        raise AssertionError("MegEngine's packed attention weights have no torch twin")


def test_mapped_plan_builds_real_megengine_groups_with_no_decay_on_4d_batchnorm() -> None:
    """A torch plan (exhaustive BN names, ``ndim: [1]`` no-decay) moved onto MegEngine, where BN is 4-D.

    One SGD step with zero gradients and weight decay 0.5 changes a parameter by
    ``-lr * 0.5 * p``: the decayed groups shrink by ``1 - lr*0.5`` (float32, rtol 1e-6),
    the no-decay group (BN scale/shift, biases) does not move at all.
    """
    recs, _, _, _ = _torch("resnet")
    bn = [r.name for r in recs if r.module_type == "BatchNorm2d" and r.requires_grad]
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1, "weight_decay": 0.5}, "groups": [
        {"name": "backbone", "params": [{"names": ["backbone.*"], "ndim": [4]}], "lr_mult": 0.1},
        {"name": "no_decay", "params": [{"names": bn}, {"names": ["head.bias"]}], "weight_decay": 0.0},
        {"name": "head", "params": "rest"}]})
    net = ResNet()
    mapped, report = map_plan(plan, recs, mge_records(net), frameworks=FW)
    how = {g.group: g.how for g in report.groups}
    assert how == {"backbone": "synthesized", "no_decay": "kept", "head": "kept"}
    # on MegEngine ndim 4 also takes the BN parameters: the backbone group is written without them
    assert [selector_text(s) for s in mapped.groups[0].select] == ["{modules: [Conv2d]}"]
    setup = optbridge.to_megengine(mapped, net)
    params = dict(net.named_parameters())
    before = {n: p.numpy().copy() for n, p in params.items()}
    for p in params.values():
        p.grad = mge.tensor(np.zeros(p.shape, np.float32))
    setup.optimizer.step()
    lr = {"backbone": 0.01, "no_decay": 0.1, "head": 0.1}
    wd = {"backbone": 0.5, "no_decay": 0.0, "head": 0.5}
    groups = {n: g.name for g in optbridge.resolve(mapped, mge_records(net)).groups for n in g.params}
    assert groups["backbone.1.weight"] == "no_decay" and groups["backbone.0.weight"] == "backbone"
    for n, p in params.items():
        g = groups[n]
        np.testing.assert_allclose(p.numpy(), before[n] * np.float32(1 - lr[g] * wd[g]), rtol=1e-6, err_msg=n)


def test_readable_selectors_on_megengine_records() -> None:
    """MegEngine lists parameters sorted by name and keeps BN 4-D: selectors still come out short and exact."""
    recs = mge_records(ResNet())
    assignment = {r.name: ("no_decay" if r.module_type == "BatchNorm2d" or r.leaf == "bias"
                           else "backbone" if r.name.startswith("backbone.") else "head") for r in recs}
    for rest, texts in ((True, {"backbone": ["{modules: [Conv2d]}"], "no_decay": ["rest"],
                                "head": ["{names: [head.weight]}"]}),
                        (False, {"backbone": ["{modules: [Conv2d]}"],
                                 "no_decay": ["{modules: [BatchNorm2d]}", "{names: [head.bias]}"],
                                 "head": ["{names: [head.weight]}"]})):
        out = readable_selectors(recs, assignment, rest=rest)
        assert {g: [selector_text(s) for s in sels] for g, sels in out.items()} == texts
        plan = optbridge.Plan(optimizers=(optbridge.OptimizerSpec(type="SGD", groups=tuple(
            optbridge.Group(name=g, select=s) for g, s in out.items())),))
        assert {n: g.name for g in optbridge.resolve(plan, recs).groups for n in g.params} == assignment


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: .venv-mge/bin/python tests_megengine/test_names_mge.py --write")
    MGE_FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    data = capture()
    models = ",\n".join(f'  "{k}": [\n' + ",\n".join("   " + json.dumps(r) for r in rows) + "\n  ]"
                        for k, rows in data["models"].items())
    MGE_FIXTURE.write_text(f'{{\n "megengine": "{data["megengine"]}",\n "models": {{\n{models}\n }}\n}}\n')
    print(f"wrote {MGE_FIXTURE}")
