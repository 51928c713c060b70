"""Shared pieces of the real-setup tests: small models with the original parameter names, a native runner.

The native runner steps a real torch optimizer the way a training loop does and
records every group's lr, momentum, betas and weight decay before each
``optimizer.step()``: iteration schedulers after every update, epoch schedulers
after an epoch's last update, in list order, a ReduceLROnPlateau with the next
metric.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import lr_scheduler as S

HYPERS = ("lr", "momentum", "beta1", "beta2", "weight_decay")
#: Relative tolerance at every update (float64 both sides; torch's recursive schedulers and the
#: reference's closed forms differ by accumulated rounding, measured below 1e-13); exact zeros stay exact.
RTOL = 1e-12


def read(group: dict[str, Any], h: str) -> float:
    if h in ("beta1", "beta2"):
        return float(group["betas"][h == "beta2"]) if "betas" in group else np.nan
    return float(group[h]) if h in group else np.nan


def native(opt: torch.optim.Optimizer, entries: Sequence[tuple[Any, str]], n: int, *, spe: int = 1, start: int = 0,
           metrics: Sequence[float] | None = None, snap: int | None = None,
           extra: Any = None) -> tuple[dict[str, np.ndarray], Any]:
    """Every group's values before each of ``n`` updates; a deep copy of ``(extra, opt, entries)`` at update ``snap``.

    ``start`` is the update the run stands at (for the epoch clock); metrics are consumed in order.
    """
    params = [p for g in opt.param_groups for p in g["params"]]
    rows: list[list[list[float]]] = []
    used, copied = 0, None
    for k in range(n):
        if k == snap:
            copied = copy.deepcopy((extra, opt, entries, used))
        rows.append([[read(g, h) for g in opt.param_groups] for h in HYPERS])
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        end_of_epoch = (start + k + 1) % spe == 0
        for s, unit in entries:
            if unit == "epoch" and not end_of_epoch:
                continue
            if isinstance(s, S.ReduceLROnPlateau):
                s.step(metrics[used])  # type: ignore[index]
            else:
                s.step()
        if any(isinstance(s, S.ReduceLROnPlateau) and (u == "iter" or end_of_epoch) for s, u in entries):
            used += 1
    width = max(len(r[0]) for r in rows)
    out = {}
    for i, h in enumerate(HYPERS):
        a = np.full((width, n), np.nan)
        for k, r in enumerate(rows):
            a[:len(r[i]), k] = r[i]
        out[h] = a
    return out, copied


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """``|got - want| <= RTOL * |want|`` at every step; NaN exactly where ``want`` is NaN (no such value)."""
    assert got.shape == want.shape, (what, got.shape, want.shape)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN pattern differs"
    bad = np.argwhere(~nan & ~(np.abs(got - want) <= RTOL * np.abs(want)))
    assert bad.size == 0, (f"{what}: first divergence at group {bad[0][0]}, update {bad[0][1]}: torch "
                           f"{want[tuple(bad[0])]!r}, plan {got[tuple(bad[0])]!r} ({len(bad)} bad)")


def same_state(a: Any, b: Any) -> bool:
    """Deep equality of state dicts (tensors by value)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
            torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return bool(a == b) if not callable(a) else a is b


def states(opt: torch.optim.Optimizer, entries: Sequence[tuple[Any, str]]) -> Any:
    return copy.deepcopy((opt.state_dict(), [s.state_dict() for s, _ in entries]))


# --------------------------------------------------------------------------- models (original parameter names)

class BasicBlock(nn.Module):
    """torchvision ResNet BasicBlock names: conv1, bn1, conv2, bn2."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)


class ResNet(nn.Module):
    """torchvision resnet names: conv1, bn1, layer1..2, fc."""

    def __init__(self, c: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 7, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.layer1 = nn.Sequential(BasicBlock(c))
        self.layer2 = nn.Sequential(BasicBlock(c))
        self.fc = nn.Linear(c, classes)


class ViT(nn.Module):
    """torchvision vit_b names (shortened): conv_proj, class_token, encoder.layers.encoder_layer_i, heads.head."""

    def __init__(self, d: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.conv_proj = nn.Conv2d(3, d, 4, 4)
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.zeros(1, 5, d))
        self.encoder.layers = nn.Sequential()
        for i in range(depth):
            layer = nn.Module()
            layer.ln_1 = nn.LayerNorm(d)
            layer.self_attention = nn.MultiheadAttention(d, 2)
            layer.ln_2 = nn.LayerNorm(d)
            layer.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
            self.encoder.layers.add_module(f"encoder_layer_{i}", layer)
        self.encoder.ln = nn.LayerNorm(d)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(d, 3))


class FasterRCNN(nn.Module):
    """torchvision fasterrcnn names: backbone.body (a ResNet), backbone.fpn, rpn.head, roi_heads.box_predictor."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = ResNet()
        self.backbone.fpn = nn.Module()
        self.backbone.fpn.inner_blocks = nn.ModuleList([nn.Conv2d(4, 4, 1)])
        self.rpn = nn.Module()
        self.rpn.head = nn.Module()
        self.rpn.head.conv = nn.Sequential(nn.Conv2d(4, 4, 3))
        self.rpn.head.cls_logits = nn.Conv2d(4, 3, 1)
        self.roi_heads = nn.Module()
        self.roi_heads.box_predictor = nn.Module()
        self.roi_heads.box_predictor.cls_score = nn.Linear(4, 3)
        self.roi_heads.box_predictor.bbox_pred = nn.Linear(4, 12)


class Segmentation(nn.Module):
    """torchvision fcn names: backbone, classifier, aux_classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet()
        self.classifier = nn.Sequential(nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1))
        self.aux_classifier = nn.Sequential(nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1))


class DETR(nn.Module):
    """facebookresearch/detr names: backbone.0.body, transformer, class_embed, bbox_embed, query_embed, input_proj."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Module())
        self.backbone[0].body = ResNet()
        self.transformer = nn.Transformer(8, 2, 1, 1, 16)
        self.class_embed = nn.Linear(8, 4)
        self.bbox_embed = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
        self.query_embed = nn.Embedding(5, 8)
        self.input_proj = nn.Conv2d(4, 8, 1)


class Bert(nn.Module):
    """Hugging Face BERT names: bert.embeddings (LayerNorm), bert.encoder.layer.i, classifier."""

    def __init__(self, d: int = 8, depth: int = 2) -> None:
        super().__init__()
        self.bert = nn.Module()
        self.bert.embeddings = nn.Module()
        self.bert.embeddings.word_embeddings = nn.Embedding(30, d)
        self.bert.embeddings.LayerNorm = nn.LayerNorm(d)
        self.bert.encoder = nn.Module()
        self.bert.encoder.layer = nn.ModuleList()
        for _ in range(depth):
            layer = nn.Module()
            layer.attention = nn.Module()
            layer.attention.self = nn.Module()
            layer.attention.self.query = nn.Linear(d, d)
            layer.attention.self.key = nn.Linear(d, d)
            layer.output = nn.Module()
            layer.output.dense = nn.Linear(d, d)
            layer.output.LayerNorm = nn.LayerNorm(d)
            self.bert.encoder.layer.append(layer)
        self.classifier = nn.Linear(d, 2)


class Llava(nn.Module):
    """LLaVA names: model.embed_tokens, model.layers.i, model.mm_projector (Linear, GELU, Linear), lm_head."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(20, d)
        self.model.layers = nn.ModuleList([nn.Module()])
        self.model.layers[0].self_attn = nn.Module()
        self.model.layers[0].self_attn.q_proj = nn.Linear(d, d, bias=False)
        self.model.layers[0].input_layernorm = nn.LayerNorm(d)
        self.model.norm = nn.LayerNorm(d)
        self.model.mm_projector = nn.Sequential(nn.Linear(6, d), nn.GELU(), nn.Linear(d, d))
        self.lm_head = nn.Linear(d, 20, bias=False)


class LoraLinear(nn.Module):
    """peft's LoRA Linear names: base_layer, lora_A.default, lora_B.default."""

    def __init__(self, d: int, r: int = 2) -> None:
        super().__init__()
        self.base_layer = nn.Linear(d, d)
        self.lora_A = nn.ModuleDict({"default": nn.Linear(d, r, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(r, d, bias=False)})


class QLoraModel(nn.Module):
    """A peft-wrapped causal LM: base_model.model.model.layers.i.self_attn.{q,v}_proj with LoRA."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.base_model = nn.Module()
        self.base_model.model = nn.Module()
        inner = nn.Module()
        inner.embed_tokens = nn.Embedding(20, d)
        inner.layers = nn.ModuleList()
        for _ in range(2):
            layer = nn.Module()
            layer.self_attn = nn.Module()
            layer.self_attn.q_proj = LoraLinear(d)
            layer.self_attn.v_proj = LoraLinear(d)
            layer.input_layernorm = nn.LayerNorm(d)
            inner.layers.append(layer)
        self.base_model.model.model = inner
        self.base_model.model.lm_head = nn.Linear(d, 20, bias=False)


class Yolo(nn.Module):
    """YOLOv5 names: model.i.conv / model.i.bn (Conv blocks), model.24.m.j (Detect convs with bias)."""

    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for c_in, c_out in ((3, 4), (4, 4)):
            b = nn.Module()
            b.conv = nn.Conv2d(c_in, c_out, 3, bias=False)
            b.bn = nn.BatchNorm2d(c_out)
            blocks.append(b)
        detect = nn.Module()
        detect.m = nn.ModuleList([nn.Conv2d(4, 8, 1), nn.Conv2d(4, 8, 1)])
        self.model = nn.Sequential(*blocks, detect)


class SRNet(nn.Module):
    """BasicSR MSRResNet names: conv_first, body.i.conv1/conv2, upconv1, conv_hr, conv_last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(3, 4, 3)
        self.body = nn.Sequential(*[nn.Module() for _ in range(2)])
        for b in self.body:
            b.conv1 = nn.Conv2d(4, 4, 3)
            b.conv2 = nn.Conv2d(4, 4, 3)
        self.upconv1 = nn.Conv2d(4, 16, 3)
        self.conv_hr = nn.Conv2d(4, 4, 3)
        self.conv_last = nn.Conv2d(4, 3, 3)


class Transfer(nn.Module):
    """The Lightning BackboneFinetuning example: backbone (a ResNet without its head) and head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def split_normalization_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """pytorch/vision torchvision/ops/_utils.py @ 017e9b99b5daddec3d82d5b05fe26f6834c48fa9 (torchvision is not
    installed next to torch 2.13 here): parameters of normalization layers, and the rest."""
    norm_classes = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
                    nn.LocalResponseNorm)
    norm_params: list[nn.Parameter] = []
    other_params: list[nn.Parameter] = []
    for module in model.modules():
        if next(module.children(), None):
            other_params.extend(p for p in module.parameters(recurse=False) if p.requires_grad)
        elif isinstance(module, norm_classes):
            norm_params.extend(p for p in module.parameters() if p.requires_grad)
        else:
            other_params.extend(p for p in module.parameters() if p.requires_grad)
    return norm_params, other_params
