"""Parameter-name maps (optbridge.names) and readable selectors (optbridge.describe_groups) on real twin models.

Twins with the same structure in torch and MindSpore (below) and MegEngine
(tests_megengine/test_names_mge.py): a ResNet-style net (Conv2d + BatchNorm2d, a
downsample branch, a Linear head), a transformer-style net (Embedding, a positional
Parameter, LayerNorm, Linear attention and MLP) and a zoo with one of each layer
the rules cover. MegEngine's real names, shapes and module types are captured in
``tests/fixtures/names_megengine.json`` (checked against real MegEngine by
tests_megengine/test_names_mge.py); torch's records, weights, inputs and outputs for
the MegEngine env are captured here::

    .venv/bin/python tests/test_names.py --write    # writes tests_megengine/fixtures/names_torch.npz

Function equality proves the map: torch's weights (deterministic per name) copied
through the map, with the known reshapes, make the MindSpore twin compute torch's
float32 outputs within ``rtol=1e-4, atol=1e-5`` (two frameworks' float32 kernels;
measured worst 1.2e-7 (ResNet) and 2.4e-7 (transformer) absolute on outputs up to
1.16). Swapping a single pair of same-shaped parameters moves them by 0.037 (two
attention biases) to 0.13 (two BatchNorm scales), measured.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ms = pytest.importorskip("mindspore")

import yaml  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402
from mindspore import Parameter, Tensor, nn as mnn, ops  # noqa: E402
from torch import nn as tnn  # noqa: E402

import optbridge  # noqa: E402
from optbridge.describe_groups import readable_selectors, selector_text  # noqa: E402
from optbridge.errors import ConfigError  # noqa: E402
from optbridge.names import (NameMap, NameMapError, NameRules, load_name_rules, map_names, map_plan,  # noqa: E402
                             name_rules_from_config)
from optbridge.params import ParamRecord  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MGE_FIXTURE = ROOT / "tests" / "fixtures" / "names_megengine.json"
TORCH_FIXTURE = ROOT / "tests_megengine" / "fixtures" / "names_torch.npz"
FW = ("torch", "mindspore")
BLOCKS = ((8, 8, 1), (8, 16, 2))


# --------------------------------------------------------------------------- torch twins

class TBlock(tnn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.down = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else None

    def forward(self, x: Any) -> Any:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (self.down(x) if self.down is not None else x))


class TResNet(tnn.Module):
    def __init__(self, blocks: tuple[tuple[int, int, int], ...] = BLOCKS, head: str = "head", classes: int = 10) -> None:
        super().__init__()
        self.backbone = tnn.Sequential(tnn.Conv2d(3, 8, 3, 1, 1, bias=False), tnn.BatchNorm2d(8), tnn.ReLU(),
                                       *(TBlock(*b) for b in blocks))
        self.head_name = head
        setattr(self, head, tnn.Linear(blocks[-1][1], classes))

    def forward(self, x: Any) -> Any:
        return getattr(self, self.head_name)(self.backbone(x).mean((2, 3)))


class TAttn(tnn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = tnn.Linear(d, 3 * d)
        self.proj = tnn.Linear(d, d)

    def forward(self, x: Any) -> Any:
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.proj(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1) @ v)


class TTBlock(tnn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1 = tnn.LayerNorm(d)
        self.attn = TAttn(d)
        self.ln2 = tnn.LayerNorm(d)
        self.mlp = tnn.Sequential(tnn.Linear(d, 4 * d), tnn.ReLU(), tnn.Linear(4 * d, d))

    def forward(self, x: Any) -> Any:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TTransformer(tnn.Module):
    def __init__(self, vocab: int = 50, d: int = 16, depth: int = 4, seq: int = 8, tied: bool = False) -> None:
        super().__init__()
        self.embed = tnn.Embedding(vocab, d)
        self.pos = tnn.Parameter(torch.zeros(1, seq, d))
        self.blocks = tnn.ModuleList([TTBlock(d) for _ in range(depth)])
        self.norm = tnn.LayerNorm(d)
        self.head = tnn.Linear(d, vocab)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids: Any) -> Any:
        x = self.embed(ids) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


class TZoo(tnn.Module):
    """One of each layer the rules cover; ``extra``: also the ones MegEngine names differently or lacks."""

    def __init__(self, extra: bool = True) -> None:
        super().__init__()
        self.conv1d = tnn.Conv1d(3, 8, 3)
        self.conv_g = tnn.Conv2d(4, 8, 3, groups=2)
        self.convt_g = tnn.ConvTranspose2d(4, 8, 3, groups=2)
        self.bn1d = tnn.BatchNorm1d(6)
        self.bn2d = tnn.BatchNorm2d(6)
        self.gn = tnn.GroupNorm(2, 6)
        self.inorm = tnn.InstanceNorm2d(6, affine=True)
        self.ln = tnn.LayerNorm(6)
        self.prelu = tnn.PReLU(6)
        self.emb = tnn.Embedding(10, 6)
        self.lin = tnn.Linear(4, 5)
        if extra:
            self.bn3d = tnn.BatchNorm3d(6)
            self.mha = tnn.MultiheadAttention(8, 2)
            self.lstm = tnn.LSTM(4, 5, num_layers=2, bidirectional=True)
            self.tel = tnn.TransformerEncoderLayer(8, 2, 16)


def torch_records(model: Any, buffers: bool = False) -> list[ParamRecord]:
    """Records as the torch adapter reads them (owner = the module holding the tensor); buffers as not trained."""
    out = []
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod._parameters.items():
            if p is not None:
                out.append(ParamRecord(f"{mname}.{pname}" if mname else pname, tuple(p.shape), type(mod).__name__,
                                       id(p), p.requires_grad))
        if buffers:
            for bname, b in mod._buffers.items():
                if b is not None:
                    out.append(ParamRecord(f"{mname}.{bname}" if mname else bname, tuple(b.shape), type(mod).__name__,
                                           id(b), False))
    return out


# --------------------------------------------------------------------------- MindSpore twins

class MBlock(mnn.Cell):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = mnn.Conv2d(cin, cout, 3, stride, pad_mode="pad", padding=1)
        self.bn1 = mnn.BatchNorm2d(cout)
        self.conv2 = mnn.Conv2d(cout, cout, 3, 1, pad_mode="pad", padding=1)
        self.bn2 = mnn.BatchNorm2d(cout)
        self.down = mnn.SequentialCell([mnn.Conv2d(cin, cout, 1, stride), mnn.BatchNorm2d(cout)]) \
            if stride != 1 or cin != cout else None

    def construct(self, x: Any) -> Any:
        y = ops.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return ops.relu(y + (self.down(x) if self.down is not None else x))


class MResNet(mnn.Cell):
    def __init__(self, blocks: tuple[tuple[int, int, int], ...] = BLOCKS, head: str = "head", classes: int = 10,
                 relu_cell: bool = True) -> None:
        super().__init__()
        stem = [mnn.Conv2d(3, 8, 3, 1, pad_mode="pad", padding=1), mnn.BatchNorm2d(8)]
        self.relu_cell = relu_cell
        self.backbone = mnn.SequentialCell(stem + ([mnn.ReLU()] if relu_cell else []) + [MBlock(*b) for b in blocks])
        self.head_name = head
        setattr(self, head, mnn.Dense(blocks[-1][1], classes))

    def construct(self, x: Any) -> Any:
        if self.relu_cell:
            x = self.backbone(x)
        else:  # the stem's ReLU as a function: the blocks sit one index lower than in torch's Sequential
            x = ops.relu(self.backbone[1](self.backbone[0](x)))
            for i in range(2, len(self.backbone)):
                x = self.backbone[i](x)
        return getattr(self, self.head_name)(x.mean(axis=(2, 3)))


class MAttn(mnn.Cell):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv = mnn.Dense(d, 3 * d)
        self.proj = mnn.Dense(d, d)

    def construct(self, x: Any) -> Any:
        q, k, v = ops.split(self.qkv(x), x.shape[-1], axis=-1)
        a = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))) / math.sqrt(x.shape[-1]), axis=-1)
        return self.proj(ops.matmul(a, v))


class MTBlock(mnn.Cell):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln1 = mnn.LayerNorm((d,), epsilon=1e-5)
        self.attn = MAttn(d)
        self.ln2 = mnn.LayerNorm((d,), epsilon=1e-5)
        self.mlp = mnn.SequentialCell([mnn.Dense(d, 4 * d), mnn.ReLU(), mnn.Dense(4 * d, d)])

    def construct(self, x: Any) -> Any:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class MTransformer(mnn.Cell):
    def __init__(self, vocab: int = 50, d: int = 16, depth: int = 4, seq: int = 8) -> None:
        super().__init__()
        self.embed = mnn.Embedding(vocab, d)
        self.pos = Parameter(Tensor(np.zeros((1, seq, d), np.float32)), name="pos")
        self.blocks = mnn.CellList([MTBlock(d) for _ in range(depth)])
        self.norm = mnn.LayerNorm((d,), epsilon=1e-5)
        self.head = mnn.Dense(d, vocab)

    def construct(self, ids: Any) -> Any:
        x = self.embed(ids) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


class MZoo(mnn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.conv1d = mnn.Conv1d(3, 8, 3, has_bias=True)
        self.conv_g = mnn.Conv2d(4, 8, 3, group=2, has_bias=True)
        self.convt_g = mnn.Conv2dTranspose(4, 8, 3, group=2, has_bias=True)
        self.bn1d = mnn.BatchNorm1d(6)
        self.bn2d = mnn.BatchNorm2d(6)
        self.gn = mnn.GroupNorm(2, 6)
        self.inorm = mnn.InstanceNorm2d(6, affine=True)
        self.ln = mnn.LayerNorm((6,))
        self.prelu = mnn.PReLU(6)
        self.emb = mnn.Embedding(10, 6)
        self.lin = mnn.Dense(4, 5)
        self.bn3d = mnn.BatchNorm3d(6)
        self.mha = mnn.MultiheadAttention(8, 2)
        self.lstm = mnn.LSTM(4, 5, num_layers=2, bidirectional=True)
        self.tel = mnn.TransformerEncoderLayer(8, 2, 16)


def ms_records(net: Any) -> list[ParamRecord]:
    """Every parameter of ``net`` (``net.parameters_and_names()``), owner = the Cell holding it, requires_grad kept."""
    owner: dict[int, str] = {}
    for _, cell in net.cells_and_names():
        for _, p in cell.parameters_and_names(expand=False):
            owner.setdefault(id(p), type(cell).__name__)
    return [ParamRecord(n, tuple(p.shape), owner.get(id(p), ""), id(p), bool(p.requires_grad))
            for n, p in net.parameters_and_names()]


# --------------------------------------------------------------------------- weights, inputs, the torch fixture

def weight(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic float32 values for a torch parameter or buffer (variances positive)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    w = (rng.standard_normal(shape) * 0.3).astype(np.float32)
    return np.abs(w) + np.float32(0.5) if name.endswith("running_var") else w


def set_torch_weights(model: Any) -> dict[str, np.ndarray]:
    out = {}
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.dtype == torch.float32:
                out[name] = weight(name, tuple(t.shape))
                t.copy_(torch.from_numpy(out[name]))
    return out


def inputs(model: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if model == "resnet":
        return rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    return rng.integers(0, 50, (2, 8)).astype(np.int32)


def torch_outputs(model: str, net: Any) -> np.ndarray:
    net.eval()
    x = torch.from_numpy(inputs(model)).long() if model == "transformer" else torch.from_numpy(inputs(model))
    with torch.no_grad():
        return net(x).numpy()


def capture_torch() -> dict[str, np.ndarray]:
    """What the MegEngine env needs from torch: records, weights, inputs, outputs."""
    out: dict[str, np.ndarray] = {}
    models = {"resnet": TResNet(), "transformer": TTransformer(), "zoo": TZoo(extra=False),
              "mha": tnn.MultiheadAttention(8, 2)}
    for key, net in models.items():
        recs = torch_records(net, buffers=True)
        out[f"{key}/records"] = np.array(json.dumps([[r.name, list(r.shape), r.module_type, r.requires_grad]
                                                     for r in recs]))
        weights = set_torch_weights(net)
        for n, w in weights.items():
            out[f"{key}/w/{n}"] = w
        if key in ("resnet", "transformer"):
            out[f"{key}/x"] = inputs(key)
            out[f"{key}/y"] = torch_outputs(key, net)
    return out


def mge_fixture(model: str, buffers: bool = False) -> list[ParamRecord]:
    """MegEngine's records of ``model`` (parameters, as the adapter reads them; ``buffers``: also running stats)."""
    rows = json.loads(MGE_FIXTURE.read_text())["models"][model]
    return [ParamRecord(n, tuple(s), t, None, g) for n, s, t, g in rows if g or buffers]


def load_ms(net: Any, nm: NameMap, weights: dict[str, np.ndarray]) -> None:
    params = dict(net.parameters_and_names())
    for tname, w in weights.items():
        if tname in nm:
            p = params[nm[tname]]
            p.set_data(Tensor(w.reshape(p.shape)))


def same_function(tnet: Any, mnet: Any, model: str, nm: NameMap) -> float:
    """Max |torch - MindSpore| of the outputs after moving torch's weights through ``nm``."""
    weights = set_torch_weights(tnet)
    y = torch_outputs(model, tnet)
    load_ms(mnet, nm, weights)
    mnet.set_train(False)
    out = mnet(Tensor(inputs(model))).asnumpy()
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-5)
    return float(np.max(np.abs(out - y)))


# --------------------------------------------------------------------------- the map: torch <-> MindSpore

def test_resnet_twins_pair_every_parameter_and_compute_the_same() -> None:
    tnet, mnet = TResNet(), MResNet()
    nm = map_names(torch_records(tnet, buffers=True), ms_records(mnet), frameworks=FW)
    assert {t for t in (r.name for r in ms_records(mnet)) if t not in nm.values()} == set()  # every MS parameter
    assert nm.unpaired_source == tuple(f"{m}.num_batches_tracked" for m in (
        "backbone.1", "backbone.3.bn1", "backbone.3.bn2", "backbone.4.bn1", "backbone.4.bn2", "backbone.4.down.1"))
    assert nm["backbone.1.weight"] == "backbone.1.gamma" and nm["backbone.1.bias"] == "backbone.1.beta"
    assert nm["backbone.4.down.1.running_mean"] == "backbone.4.down.1.moving_mean"
    assert nm["backbone.4.down.1.running_var"] == "backbone.4.down.1.moving_variance"
    assert nm["backbone.4.down.0.weight"] == "backbone.4.down.0.weight"
    assert nm["head.weight"] == "head.weight"
    assert nm.by_rule() == {"same name": 8, "BatchNorm: weight -> gamma": 6, "BatchNorm: bias -> beta": 6,
                            "BatchNorm: running_mean -> moving_mean": 6,
                            "BatchNorm: running_var -> moving_variance": 6}
    assert same_function(tnet, mnet, "resnet", nm) < 1e-5


def test_transformer_twins_pair_every_parameter_and_compute_the_same() -> None:
    tnet, mnet = TTransformer(), MTransformer()
    nm = map_names(torch_records(tnet), ms_records(mnet), frameworks=FW)
    assert len(nm) == len(ms_records(mnet)) == 54 and not nm.unpaired_source and not nm.unpaired_target
    assert nm["embed.weight"] == "embed.embedding_table"
    assert nm["blocks.2.ln1.weight"] == "blocks.2.ln1.gamma" and nm["norm.bias"] == "norm.beta"
    assert nm["blocks.3.mlp.2.weight"] == "blocks.3.mlp.2.weight" and nm["pos"] == "pos"
    assert nm.by_rule() == {"same name": 35, "Embedding: weight -> embedding_table": 1,
                            "LayerNorm: weight -> gamma": 9, "LayerNorm: bias -> beta": 9}
    assert same_function(tnet, mnet, "transformer", nm) < 1e-5
    back = map_names(ms_records(mnet), torch_records(tnet), frameworks=FW[::-1])
    assert dict(back) == dict(nm.inverse()) and back.frameworks == ("mindspore", "torch")


def test_report_prints_a_table_of_renames() -> None:
    nm = map_names(torch_records(TTransformer(depth=1)), ms_records(MTransformer(depth=1)), frameworks=FW)
    text = str(nm)
    assert text.splitlines()[0] == ("18 parameters paired torch -> mindspore, 7 renamed or reshaped: 11 by same name, "
                                    "1 by Embedding: weight -> embedding_table, 3 by LayerNorm: weight -> gamma, "
                                    "3 by LayerNorm: bias -> beta")
    assert text.splitlines()[1].split() == ["torch", "name", "mindspore", "name", "rule", "shape"]
    assert "embed.weight         embed.embedding_table  Embedding: weight -> embedding_table  (50, 16)" in text
    assert len(nm.table(renames_only=False).splitlines()) == 2 + 18


def test_zoo_every_layer_rule_torch_to_mindspore() -> None:
    tz, mz = TZoo(), MZoo()
    nm = map_names(torch_records(tz, buffers=True), ms_records(mz), frameworks=FW)
    got = {p.source: (p.target, p.rule, p.reshape) for p in nm.renames()}
    assert got == {
        "conv1d.weight": ("conv1d.weight", "same name", "MindSpore 1-D conv (O, I, 1, k)"),
        "bn1d.weight": ("bn1d.gamma", "BatchNorm: weight -> gamma", ""),
        "bn1d.bias": ("bn1d.beta", "BatchNorm: bias -> beta", ""),
        "bn1d.running_mean": ("bn1d.moving_mean", "BatchNorm: running_mean -> moving_mean", ""),
        "bn1d.running_var": ("bn1d.moving_variance", "BatchNorm: running_var -> moving_variance", ""),
        "bn2d.weight": ("bn2d.gamma", "BatchNorm: weight -> gamma", ""),
        "bn2d.bias": ("bn2d.beta", "BatchNorm: bias -> beta", ""),
        "bn2d.running_mean": ("bn2d.moving_mean", "BatchNorm: running_mean -> moving_mean", ""),
        "bn2d.running_var": ("bn2d.moving_variance", "BatchNorm: running_var -> moving_variance", ""),
        "gn.weight": ("gn.gamma", "GroupNorm: weight -> gamma", ""),
        "gn.bias": ("gn.beta", "GroupNorm: bias -> beta", ""),
        "inorm.weight": ("inorm.gamma", "InstanceNorm: weight -> gamma", ""),
        "inorm.bias": ("inorm.beta", "InstanceNorm: bias -> beta", ""),
        "ln.weight": ("ln.gamma", "LayerNorm: weight -> gamma", ""),
        "ln.bias": ("ln.beta", "LayerNorm: bias -> beta", ""),
        "prelu.weight": ("prelu.w", "PReLU: weight -> w", ""),
        "emb.weight": ("emb.embedding_table", "Embedding: weight -> embedding_table", ""),
        "bn3d.weight": ("bn3d.bn2d.gamma", "BatchNorm wrapper 'bn2d'; BatchNorm: weight -> gamma", ""),
        "bn3d.bias": ("bn3d.bn2d.beta", "BatchNorm wrapper 'bn2d'; BatchNorm: bias -> beta", ""),
        "bn3d.running_mean": ("bn3d.bn2d.moving_mean", "BatchNorm wrapper 'bn2d'; BatchNorm: running_mean -> moving_mean", ""),
        "bn3d.running_var": ("bn3d.bn2d.moving_variance",
                             "BatchNorm wrapper 'bn2d'; BatchNorm: running_var -> moving_variance", ""),
        "tel.linear1.weight": ("tel.dense1.weight", "Linear 'dense1' = 'linear1'", ""),
        "tel.linear1.bias": ("tel.dense1.bias", "Linear 'dense1' = 'linear1'", ""),
        "tel.linear2.weight": ("tel.dense2.weight", "Linear 'dense2' = 'linear2'", ""),
        "tel.linear2.bias": ("tel.dense2.bias", "Linear 'dense2' = 'linear2'", ""),
        "tel.norm1.weight": ("tel.norm1.gamma", "LayerNorm: weight -> gamma", ""),
        "tel.norm1.bias": ("tel.norm1.beta", "LayerNorm: bias -> beta", ""),
        "tel.norm2.weight": ("tel.norm2.gamma", "LayerNorm: weight -> gamma", ""),
        "tel.norm2.bias": ("tel.norm2.beta", "LayerNorm: bias -> beta", ""),
    }
    assert nm["mha.in_proj_weight"] == "mha.in_proj_weight" and nm["lstm.weight_hh_l1_reverse"] == "lstm.weight_hh_l1_reverse"
    assert nm.unpaired_target == ("inorm.moving_mean", "inorm.moving_variance")  # MindSpore tracks them, torch does not
    assert len(nm) == len([r for r in torch_records(tz, buffers=True) if not r.name.endswith("num_batches_tracked")])


# --------------------------------------------------------------------------- torch <-> MegEngine (captured names)

@pytest.mark.parametrize("model", ["resnet", "transformer", "zoo"])
def test_torch_to_megengine_pairs_every_parameter(model: str) -> None:
    tnet = {"resnet": TResNet, "transformer": TTransformer, "zoo": lambda: TZoo(extra=False)}[model]()
    recs = torch_records(tnet, buffers=True)
    nm = map_names(recs, mge_fixture(model, buffers=True), frameworks=("torch", "megengine"))
    assert set(nm) == {r.name for r in recs if not r.name.endswith("num_batches_tracked")}
    assert not nm.unpaired_target
    for p in nm.pairs:
        assert p.source == p.target  # MegEngine keeps torch's names ...
        assert math.prod(p.source_shape) == math.prod(p.target_shape)  # ... and reshapes only
    reshaped = {p.source for p in nm.pairs if p.source_shape != p.target_shape}
    if model == "resnet":
        assert reshaped == {r.name for r in recs if r.module_type == "BatchNorm2d" and r.shape}
    if model == "transformer":
        assert reshaped == set()


def test_torch_fixture_for_megengine_is_current() -> None:
    """tests_megengine/fixtures/names_torch.npz is what torch gives here (records, weights, outputs)."""
    committed = np.load(TORCH_FIXTURE)
    fresh = capture_torch()
    assert sorted(committed.files) == sorted(fresh)
    for k, v in fresh.items():
        if k.endswith("/y"):  # torch's float32 outputs: CPU kernels may differ in the last bits elsewhere
            np.testing.assert_allclose(committed[k], v, rtol=1e-5, atol=1e-6)
        else:
            assert np.array_equal(committed[k], v), k


# --------------------------------------------------------------------------- overrides

def test_renamed_module_is_an_error_listing_both_sides_with_a_suggested_rule() -> None:
    recs_t, recs_m = torch_records(TResNet(head="fc")), ms_records(MResNet(head="classifier"))
    with pytest.raises(NameMapError) as exc:
        map_names(recs_t, recs_m, frameworks=FW)
    e = exc.value
    assert e.only_source == ("fc.weight", "fc.bias") and e.only_target == ("classifier.weight", "classifier.bias")
    text = str(e)
    assert text.startswith("names: cannot pair every parameter of torch with mindspore (4 problems;")
    assert "only in torch (2): fc.weight (10, 16) Linear; fc.bias (10,) Linear" in text
    assert "only in mindspore (2): classifier.weight (10, 16) Dense; classifier.bias (10,) Dense" in text
    assert e.suggestions == (r"{match: 'fc\.(.*)', to: 'classifier.\1'} (the only leftover modules with these "
                             "parameters and shapes)",)
    # the suggestion, pasted into a names: section, fixes it
    rules = name_rules_from_config(yaml.safe_load("rules:\n  - " + e.suggestions[0].split(" (")[0]))
    assert map_names(recs_t, recs_m, rules, frameworks=FW)["fc.bias"] == "classifier.bias"


def test_overrides_dict_function_and_config_rules_are_applied_and_reported() -> None:
    tnet, mnet = TResNet(head="fc"), MResNet(head="classifier")
    recs_t, recs_m = torch_records(tnet, buffers=True), ms_records(mnet)
    by_dict = map_names(recs_t, recs_m, {"fc.weight": "classifier.weight", "fc.bias": "classifier.bias"}, frameworks=FW)
    by_fn = map_names(recs_t, recs_m, lambda n: "classifier." + n[3:] if n.startswith("fc.") else None, frameworks=FW)
    rules = name_rules_from_config({"rules": [{"match": r"fc\.(weight|bias)", "to": r"classifier.\1"}]})
    by_rules = map_names(recs_t, recs_m, rules, frameworks=FW)
    assert dict(by_dict) == dict(by_fn) == dict(by_rules)
    assert {p.source: p.rule for p in by_dict.pairs if p.source.startswith("fc.")} == {
        "fc.weight": "names.map['fc.weight']", "fc.bias": "names.map['fc.bias']"}
    assert {p.rule for p in by_fn.pairs if p.source.startswith("fc.")} == {"function"}
    assert {p.rule for p in by_rules.pairs if p.source.startswith("fc.")} == {"names.rules[0]"}
    line = next(x for x in by_rules.table().splitlines() if x.startswith("fc.weight "))
    assert line.split() == ["fc.weight", "classifier.weight", "names.rules[0]", "(10,", "16)"]
    same_function(tnet, mnet, "resnet", by_rules)


def test_a_rule_may_rename_the_module_and_leave_the_leaf_to_the_layer_rules() -> None:
    """``stem_bn`` in torch is MindSpore's ``backbone.1``: the rule gives the path, BatchNorm gives gamma/beta."""
    recs_t = [ParamRecord("stem_bn.weight", (8,), "BatchNorm2d"), ParamRecord("stem_bn.bias", (8,), "BatchNorm2d")]
    recs_m = [ParamRecord("backbone.1.gamma", (8,), "BatchNorm2d"), ParamRecord("backbone.1.beta", (8,), "BatchNorm2d")]
    nm = map_names(recs_t, recs_m, NameRules(rules=(name_rules_from_config(
        [{"match": r"stem_bn\.(.*)", "to": r"backbone.1.\1"}]).rules)), frameworks=FW)
    assert dict(nm) == {"stem_bn.weight": "backbone.1.gamma", "stem_bn.bias": "backbone.1.beta"}
    assert nm.pairs[0].rule == "names.rules[0] + BatchNorm: weight -> gamma"


def test_names_section_errors_name_the_path() -> None:
    cases = [
        ({"rules": [{"match": "((", "to": "x"}]}, "names.rules[0].match: must be a valid regular expression"),
        ({"rules": [{"match": r"a\.(.*)", "to": r"b.\2"}]}, r"names.rules[0].to: must be a valid replacement for match"),
        ({"rules": [{"match": "a", "to": "b"}, {"match": "c", "from": "d"}]}, "names.rules[1].from: is not a rule field"),
        ({"rules": [{"match": "a"}]}, "names.rules[0].to: is required"),
        ({"rules": {"match": "a", "to": "b"}}, "names.rules: must be a list of {match, to} rules"),
        ({"rules": [{"match": "", "to": "b"}]}, "names.rules[0].match: must be a non-empty string, got ''"),
        ({"map": {"fc.weight": 3}}, "names.map['fc.weight']: must be a target parameter name"),
        ({"map": ["fc.weight"]}, "names.map: must be a mapping"),
        ({"colour": 1}, "names.colour: is not a names field (fields: map, rules)"),
        ("fc.*", "names: must be a mapping, got 'fc.*'"),
    ]
    for doc, message in cases:
        with pytest.raises(ConfigError) as exc:
            name_rules_from_config(doc)
        assert str(exc.value).startswith(message), (doc, str(exc.value))
    with pytest.raises(ConfigError, match=r"^names: the rename function must return a parameter name or None"):
        map_names(torch_records(TResNet()), ms_records(MResNet()), lambda n: 3)


def test_names_section_from_files_and_strings(tmp_path: Path) -> None:
    doc = "names:\n  rules:\n    - {match: 'fc\\.(.*)', to: 'classifier.\\1'}\n  map: {a.weight: b.weight}\n"
    (tmp_path / "plan.yaml").write_text(doc)
    (tmp_path / "names.json").write_text(json.dumps({"rules": [{"match": r"fc\.(.*)", "to": r"classifier.\1"}],
                                                      "map": {"a.weight": "b.weight"}}))
    expected = NameRules(map={"a.weight": "b.weight"},
                         rules=name_rules_from_config([{"match": r"fc\.(.*)", "to": r"classifier.\1"}]).rules)
    assert load_name_rules(tmp_path / "plan.yaml") == load_name_rules(str(tmp_path / "names.json")) == expected
    assert load_name_rules(doc) == expected
    assert name_rules_from_config(expected.to_config()) == expected
    with pytest.raises(ConfigError, match="does not exist"):
        load_name_rules(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- errors

def test_shape_conflicts_ambiguities_and_dead_overrides_are_listed_together() -> None:
    recs_t = torch_records(TResNet())
    recs_m = ms_records(MResNet(classes=12))
    with pytest.raises(NameMapError) as exc:
        map_names(recs_t, recs_m, {"backbone.4.conv1.weight": "backbone.3.conv1.weight",
                                   "backbone.3.conv1.weight": "backbone.3.conv1.weight",
                                   "backbone.4.conv2.weight": "backbone.3.conv2.weight",
                                   "head.bias": "head.offset"}, frameworks=FW)
    e = exc.value
    text = str(e)
    assert "shapes differ: torch head.weight (10, 16) Linear vs mindspore head.weight (12, 16) Dense" in text
    assert ("shapes differ: torch backbone.4.conv2.weight (16, 16, 3, 3) Conv2d vs mindspore backbone.3.conv2.weight "
            "(8, 8, 3, 3) Conv2d: paired by names.map['backbone.4.conv2.weight']; no known reshape relates them") in text
    assert [c[2] for c in e.shape_conflicts] == [
        "paired by names.map['backbone.4.conv2.weight']; no known reshape relates them",
        "paired by same name; no known reshape relates them"]
    assert e.ambiguous == (("mindspore backbone.3.conv1.weight", (
        "backbone.3.conv1.weight (by override)", "backbone.4.conv1.weight (names.map['backbone.4.conv1.weight'])")),)
    assert "names.map['head.bias'] renames 'head.bias' to 'head.offset', which names no mindspore parameter" in text
    assert e.only_source == ("backbone.3.conv2.weight",)
    assert e.only_target == ("backbone.4.conv1.weight", "backbone.4.conv2.weight", "head.bias")
    assert "only in mindspore (3): backbone.4.conv1.weight (16, 8, 3, 3) Conv2d; " in text


def test_renumbered_containers_pair_in_index_order_never_by_equal_paths() -> None:
    """torch numbers the stem's ReLU in its Sequential, the MindSpore twin applies it as a function.

    With three identical blocks, ``backbone.3`` exists on both sides but is the
    first block in torch and the second in MindSpore: pairing equal paths would be
    silently wrong. The container pass pairs 3, 4, 5 with 2, 3, 4 (function
    equality proves it).
    """
    blocks = ((8, 8, 1), (8, 8, 1), (8, 16, 2))
    tnet, mnet = TResNet(blocks), MResNet(blocks, relu_cell=False)
    nm = map_names(torch_records(tnet, buffers=True), ms_records(mnet), frameworks=FW)
    assert nm["backbone.3.conv1.weight"] == "backbone.2.conv1.weight"
    assert nm["backbone.5.down.1.weight"] == "backbone.4.down.1.gamma"
    rule = {p.source: p.rule for p in nm.pairs}
    assert rule["backbone.3.bn1.weight"] == "container order (backbone.3.bn1 -> backbone.2.bn1)"
    assert rule["backbone.1.weight"] == "BatchNorm: weight -> gamma"  # the stem keeps its indices
    same_function(tnet, mnet, "resnet", nm)
    # a container whose modules do not line up is an error, not a guess
    with pytest.raises(NameMapError) as exc:
        map_names(torch_records(TResNet(((8, 8, 1), (8, 16, 2)))), ms_records(MResNet(blocks, relu_cell=False)))
    assert "backbone.4.conv1.weight" in exc.value.only_target


# --------------------------------------------------------------------------- map_plan: the fix

def _exhaustive_bn_plan(recs: list[ParamRecord], wd: float = 1e-4) -> Plan:
    """What from_torch writes for a BN no-decay group: every name listed."""
    bn = [r.name for r in recs if r.module_type.startswith("BatchNorm") and r.requires_grad]
    return optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1, "weight_decay": wd}, "groups": [
        {"name": "backbone", "params": [{"names": ["backbone.*"], "ndim": [4]}], "lr_mult": 0.1},
        {"name": "group1", "params": [{"names": bn}], "weight_decay": 0.0},
        {"name": "head", "params": [{"modules": ["Linear"]}]}]})


def test_bn_no_decay_plan_fails_on_mindspore_and_resolves_after_map_plan() -> None:
    tnet, mnet = TResNet(), MResNet()
    recs_t, recs_m = torch_records(tnet), ms_records(mnet)
    plan = _exhaustive_bn_plan(recs_t, wd=0.5)
    trained_m = [r for r in recs_m if r.requires_grad]
    with pytest.raises(ConfigError, match=r"^groups\[1\]\.params\[0\]\.names: pattern of group 'group1' matches no "
                                          r"parameter, got 'backbone\.1\.weight'$"):
        optbridge.resolve(plan, trained_m)
    mapped, report = map_plan(plan, recs_t, recs_m, frameworks=FW)
    assert [(g.group, g.how) for g in report.groups] == [("backbone", "kept"), ("group1", "translated"),
                                                          ("head", "translated")]
    assert [selector_text(s) for s in mapped.groups[2].select] == ["{modules: [Dense]}"]
    assert mapped.groups[1].select[0].names[:2] == ("backbone.1.gamma", "backbone.1.beta")
    got = {g.name: set(g.params) for g in optbridge.resolve(mapped, trained_m).groups}
    want = {g.name: {report.names[n] for n in g.params} for g in optbridge.resolve(plan, recs_t).groups}
    assert got == want
    assert mapped.optimizers[0].options == plan.optimizers[0].options and mapped.schedule == plan.schedule
    # the real MindSpore optimizer built from the mapped plan: one SGD step with zero gradients and weight decay 0.5
    # moves a parameter by -lr * 0.5 * p; the BN group (weight decay 0) stays put (float32, rtol 1e-6)
    setup = optbridge.to_mindspore(mapped, mnet, form="list", total_steps=1)
    params = dict(mnet.parameters_and_names())
    before = {n: p.asnumpy().copy() for n, p in params.items()}
    opt = setup.optimizer
    opt(ms.mutable(tuple(Tensor(np.zeros(p.shape, np.float32)) for p in opt.parameters)))
    lr = {"backbone": 0.01, "group1": 0.1, "head": 0.1}
    wd = {"backbone": 0.5, "group1": 0.0, "head": 0.5}
    for g, names in got.items():
        for n in names:
            np.testing.assert_allclose(params[n].asnumpy(), before[n] * np.float32(1 - lr[g] * wd[g]), rtol=1e-6,
                                       err_msg=n)
    assert np.array_equal(params["backbone.1.gamma"].asnumpy(), before["backbone.1.gamma"])


def test_map_plan_keeps_translates_or_synthesizes_and_says_which() -> None:
    recs_t, recs_m = torch_records(TTransformer()), ms_records(MTransformer())
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "AdamW", "lr": 1e-3}, "groups": [
        {"name": "no_decay", "params": [{"ndim": [1]}], "weight_decay": 0.0},
        {"name": "embed", "params": [{"leaf": ["weight"], "modules": ["Embedding"]}, "pos"], "lr_mult": 0.5},
        {"name": "early", "params": [{"regex": [r"blocks\.[01]\.(attn|mlp)\..*weight"]}], "lr_mult": 0.7},
        {"name": "frozen_head", "params": [{"names": ["head.weight"]}], "frozen": "exclude"},
        {"name": "rest", "params": "rest"}]})
    mapped, report = map_plan(plan, recs_t, recs_m, frameworks=FW)
    assert {g.group: g.how for g in report.groups} == {"no_decay": "kept", "embed": "translated", "early": "kept",
                                                       "frozen_head": "kept", "rest": "kept"}
    assert [selector_text(s) for s in mapped.groups[1].select] == ["{modules: [Embedding], leaf: [embedding_table]}",
                                                                   "{names: [pos]}"]
    got = {g.name: set(g.params) for g in optbridge.resolve(mapped, recs_m).groups}
    want = {g.name: {report.names[n] for n in g.params} for g in optbridge.resolve(plan, recs_t).groups}
    assert got == want and optbridge.resolve(mapped, recs_m).excluded == ("head.weight",)
    lines = report.table().splitlines()
    assert lines[0].split() == ["group", "how", "torch", "selectors", "mindspore", "selectors"]
    assert lines[3].split()[:2] == ["embed", "translated"]


def test_map_plan_onto_megengine_rewrites_what_4d_batchnorm_breaks() -> None:
    """On MegEngine BN parameters are (1, C, 1, 1): ``ndim: [1]`` and ``ndim: [4]`` select other things there."""
    recs_t, recs_g = torch_records(TResNet()), mge_fixture("resnet")
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1}, "groups": [
        {"name": "no_decay", "params": [{"ndim": [1]}], "weight_decay": 0.0},
        {"name": "convs", "params": [{"ndim": [4]}], "lr_mult": 0.1},
        {"name": "head", "params": "rest"}]})
    mapped, report = map_plan(plan, recs_t, recs_g, frameworks=("torch", "megengine"))
    assert [(g.group, g.how, [selector_text(s) for s in g.after]) for g in report.groups] == [
        ("no_decay", "synthesized", ["{modules: [BatchNorm2d]}", "{names: [head.bias]}"]),
        ("convs", "synthesized", ["{modules: [Conv2d]}"]),
        ("head", "kept", ["rest"])]
    got = {g.name: set(g.params) for g in optbridge.resolve(mapped, recs_g).groups}
    want = {g.name: {report.names[n] for n in g.params} for g in optbridge.resolve(plan, recs_t).groups}
    assert got == want


def test_map_plan_errors() -> None:
    recs_t, recs_m = torch_records(TResNet()), ms_records(MResNet())
    bad = optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD"}, "groups": [{"name": "a", "params": "nope.*"},
                                                                                  {"name": "b", "params": "rest"}]})
    with pytest.raises(ConfigError, match=r"^groups\[0\]\.params\[0\]\.names: pattern of group 'a' matches no"):
        map_plan(bad, recs_t, recs_m)
    nm = map_names(recs_t, recs_m, frameworks=FW)
    with pytest.raises(ConfigError, match=r"^names: the name map was made for other models: mindspore head.bias2 \(not "
                                          r"in the map\)$"):
        map_plan(optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD"}}), recs_t,
                 recs_m + [ParamRecord("head.bias2", (10,), "Dense")], nm)
    recs_frozen = [ParamRecord(r.name, r.shape, r.module_type, r.ident, not r.name.startswith("head."))
                   for r in recs_t]
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD"}, "groups": [
        {"name": "head", "params": "head.*", "frozen": "exclude"}, {"name": "b", "params": "rest"}]})
    with pytest.raises(ConfigError, match=r"^groups\[0\]\.params: group 'head' has no parameter with a twin in "
                                          r"mindspore"):
        map_plan(plan, recs_frozen, [r for r in recs_m if not r.name.startswith("head.")], frameworks=FW)


# --------------------------------------------------------------------------- readable selectors

def _texts(sels: dict[str, tuple[Any, ...]]) -> dict[str, list[str]]:
    return {g: [selector_text(s) for s in ss] for g, ss in sels.items()}


def _round_trip(records: list[ParamRecord], sels: dict[str, tuple[Any, ...]]) -> dict[str, str]:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", groups=tuple(Group(name=g, select=s) for g, s in sels.items())),))
    res = optbridge.resolve(plan, records)
    return {n: g.name for g in res.groups for n in g.params}


def test_readable_selectors_backbone_no_decay_head() -> None:
    recs = torch_records(TResNet())
    assignment = {r.name: "no_decay" if len(r.shape) == 1 else "backbone" if r.name.startswith("backbone.") else "head"
                  for r in recs}
    sels = readable_selectors(recs, assignment)
    assert _texts(sels) == {"backbone": ["{modules: [Conv2d]}"], "no_decay": ["{ndim: [1]}"], "head": ["rest"]}
    assert _round_trip(recs, sels) == assignment
    # BN-only no-decay (head bias decays): the norm layers by type, the stem convs and head by name
    assignment = {r.name: "no_decay" if r.module_type == "BatchNorm2d" else "backbone" if r.name.startswith("backbone.")
                  else "head" for r in recs}
    sels = readable_selectors(recs, assignment)
    assert _texts(sels) == {"backbone": ["{modules: [Conv2d]}"], "no_decay": ["{modules: [BatchNorm2d]}"],
                            "head": ["rest"]}
    assert _round_trip(recs, sels) == assignment


def test_readable_selectors_layer_decay_by_block_index() -> None:
    recs = torch_records(TTransformer())
    def group(r: ParamRecord) -> str:
        if r.name.startswith("blocks."):
            return f"layer{r.name.split('.')[1]}" + ("_no_decay" if len(r.shape) == 1 else "")
        return "embed" if r.name in ("embed.weight", "pos") else "head"
    assignment = {r.name: group(r) for r in recs}
    sels = readable_selectors(recs, assignment)
    texts = _texts(sels)
    assert texts["embed"] == ["{names: [pos, embed.weight]}"]
    for i in range(4):
        assert texts[f"layer{i}"] == [f"{{names: [blocks.{i}.*], ndim: [2]}}"]
        assert texts[f"layer{i}_no_decay"] == [f"{{names: [blocks.{i}.*], ndim: [1]}}"]
    assert texts["head"] == ["rest"]
    assert _round_trip(recs, sels) == assignment
    whole_blocks = {r.name: (f"layer{r.name.split('.')[1]}" if r.name.startswith("blocks.") else "other") for r in recs}
    assert _texts(readable_selectors(recs, whole_blocks)) == {**{f"layer{i}": [f"{{names: [blocks.{i}.*]}}"]
                                                                 for i in range(4)}, "other": ["rest"]}


def test_readable_selectors_frozen_backbone_and_no_rest() -> None:
    recs = torch_records(TResNet())
    assignment = {r.name: "frozen" if r.name.startswith("backbone.") else "head" for r in recs}
    assert _texts(readable_selectors(recs, assignment)) == {"frozen": ["{names: [backbone.*]}"], "head": ["rest"]}
    assert _texts(readable_selectors(recs, assignment, rest=False)) == {"frozen": ["{names: [backbone.*]}"],
                                                                        "head": ["{names: [head.*]}"]}
    assert _texts(readable_selectors(recs, assignment, rest="frozen")) == {"frozen": ["rest"],
                                                                           "head": ["{names: [head.*]}"]}


def test_readable_selectors_fall_back_to_names_only_where_nothing_shorter_is_exact() -> None:
    recs = torch_records(TTransformer())
    odd = {"blocks.0.attn.qkv.weight", "blocks.2.mlp.0.bias"}
    assignment = {r.name: "odd" if r.name in odd else "no_decay" if len(r.shape) == 1 else "decay" for r in recs}
    sels = readable_selectors(recs, assignment)
    assert _texts(sels) == {
        "decay": ["{names: [blocks.1.*, blocks.2.*, blocks.3.*], ndim: [2]}",
                  "{names: [pos, embed.weight, blocks.0.attn.proj.weight, blocks.0.mlp.0.weight, blocks.0.mlp.2.weight, "
                  "head.weight]}"],
        "no_decay": ["rest"],
        "odd": ["{names: [blocks.0.attn.qkv.weight, blocks.2.mlp.0.bias]}"]}
    assert _round_trip(recs, sels) == assignment
    sels = readable_selectors(recs, assignment, rest=False)
    assert _texts(sels)["no_decay"] == ["{modules: [LayerNorm]}", "{names: [blocks.0.*, blocks.1.*, blocks.3.*], ndim: [1]}",
                                        "{names: [blocks.2.attn.qkv.bias, blocks.2.attn.proj.bias, blocks.2.mlp.2.bias, "
                                        "head.bias]}"]
    assert _round_trip(recs, sels) == assignment


def test_readable_selectors_tied_weights_and_glob_characters() -> None:
    recs = torch_records(TTransformer(tied=True))
    assert [r.name for r in recs if r.name in ("embed.weight", "head.weight")] == ["embed.weight", "head.weight"]
    assignment = {r.name: "embed" if r.name in ("embed.weight", "head.weight", "pos") else "rest" for r in recs}
    sels = readable_selectors(recs, assignment)
    assert _texts(sels)["embed"] == ["{names: [pos, embed.weight]}"]
    odd = [ParamRecord("a[0].weight", (2, 2), "Linear"), ParamRecord("a[0].bias", (2,), "Linear"),
           ParamRecord("a*.weight", (2, 2), "Linear"), ParamRecord("b?.weight", (3,), "Custom")]
    assignment = {"a[0].weight": "x", "a[0].bias": "y", "a*.weight": "y", "b?.weight": "x"}
    sels = readable_selectors(odd, assignment, rest=False)
    assert _round_trip(odd, sels) == assignment


def test_readable_selectors_errors() -> None:
    recs = torch_records(TTransformer(tied=True))
    full = {r.name: "a" for r in recs}
    with pytest.raises(ConfigError, match=r"^assignment\['nope'\]: is not a parameter of the model"):
        readable_selectors(recs, {**full, "nope": "a"})
    with pytest.raises(ConfigError, match=r"^assignment: every parameter needs a group; 1 have none"):
        readable_selectors(recs, {n: g for n, g in full.items() if n != "pos"})
    with pytest.raises(ConfigError, match=r"^assignment\['head.weight'\]: is tied to 'embed.weight', which is "
                                          r"assigned to group 'a'"):
        readable_selectors(recs, {**full, "head.weight": "b"})
    with pytest.raises(ConfigError, match=r"^rest: must name a group of the assignment"):
        readable_selectors(recs, full, rest="b")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_readable_selectors_round_trip_random_assignments(data: st.DataObject) -> None:
    """Any assignment comes back exactly, never longer than listing every name."""
    recs = RANDOM_RECORDS
    n_groups = data.draw(st.integers(1, 6))
    style = data.draw(st.sampled_from(["random", "by_block", "by_ndim_and_block"]))
    def pick(r: ParamRecord) -> int:
        if style == "by_block" and r.name.startswith("blocks."):
            return int(r.name.split(".")[1]) % n_groups
        if style == "by_ndim_and_block" and r.name.startswith("blocks."):
            return (int(r.name.split(".")[1]) + 10 * len(r.shape)) % n_groups
        return data.draw(st.integers(0, n_groups - 1))
    assignment = {r.name: f"g{pick(r)}" for r in recs}
    rest = data.draw(st.sampled_from([True, False]))
    sels = readable_selectors(recs, assignment, rest=rest)
    assert _round_trip(recs, sels) == assignment
    patterns = sum(len(s.names) + len(s.regex) + len(s.modules) + len(s.ndim) + len(s.leaf) + s.rest
                   for ss in sels.values() for s in ss)
    assert patterns <= len(recs)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_record_index_select_agrees_with_resolve(data: st.DataObject) -> None:
    """map_plan checks candidate selectors with RecordIndex.select; resolve decides. They must agree."""
    from optbridge.describe_groups import RecordIndex
    from optbridge.plan import Selector
    recs = RANDOM_RECORDS + [ParamRecord("odd[1].w", (3,), ""), ParamRecord("tied", (50, 16), "Linear",
                                                                                ident=RANDOM_RECORDS[1].ident)]
    names = [r.name for r in recs]
    pats = {"names": st.sampled_from(names + ["blocks.1.*", "*.bias", "blocks.?.ln*", "odd[[]1].*", "tied", "x*"]),
            "regex": st.sampled_from([r"blocks\.[01]\..*", r".*weight", r"head\..*", "nope"]),
            "modules": st.sampled_from(["Linear", "*Norm*", "*", "Embed*", "Conv2d"]),
            "ndim": st.sampled_from([1, 2, 3, 4]), "leaf": st.sampled_from(["weight", "bias", "w", "pos", "*s"])}
    crits = data.draw(st.lists(st.sampled_from(sorted(pats)), min_size=1, max_size=3, unique=True))
    sel = Selector(**{c: tuple(data.draw(st.lists(pats[c], min_size=1, max_size=2, unique=True))) for c in crits})
    index = RecordIndex(recs)
    mask = index.select(sel)
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", groups=(Group(name="g", select=(sel,)),
                                                              Group(name="r", select=(Selector(rest=True),)))),))
    if mask is None:
        with pytest.raises(ConfigError, match="matches no parameter"):
            optbridge.resolve(plan, recs)
    elif mask in (0, index.full):
        with pytest.raises(ConfigError, match="matches no parameter"):
            optbridge.resolve(plan, recs)
    else:
        got = {g.name: g.params for g in optbridge.resolve(plan, recs).groups}
        assert list(got["g"]) == index.names_of(mask)


RANDOM_RECORDS = torch_records(TTransformer(depth=3)) if "torch" in sys.modules else []


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: .venv/bin/python tests/test_names.py --write")
    TORCH_FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(TORCH_FIXTURE, **capture_torch())
    print(f"wrote {TORCH_FIXTURE}")
