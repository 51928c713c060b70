"""Rebuilt real training setups shared by the tests, and the native runners of the libraries they come from.

Hand-driven loops moved here from ``tests/test_torch_record.py`` (unchanged) so that the conformance family
``real-setups`` (``tests/test_real_setups_cases.py``) records them too, plus the setups only that family uses.
Each cites its source: repository, path and commit. Models are small, with the original parameter names
(:mod:`_torch_setups`). Nothing here trains: the runners record what every param group holds before each
optimizer update.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from _torch_setups import HYPERS, ResNet, Transfer, read
from torch import nn
from torch.optim import lr_scheduler as S
from torch.optim.swa_utils import SWALR

# --------------------------------------------------------------------------- hand-driven loops (record)


def convnext_cosine_scheduler(base_value: float, final_value: float, epochs: int, niter_per_ep: int,
                              warmup_epochs: int = 0, start_warmup_value: float = 0) -> np.ndarray:
    """facebookresearch/ConvNeXt utils.py @ 6157687b8df6270924e8ce473b29a14ca6082950: ``cosine_scheduler``."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = np.array([final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / (len(iters))))
                         for i in iters])
    return np.concatenate((warmup_schedule, schedule))


def convnext() -> tuple[Callable[[], Any], Callable[[int, Any], None]]:
    """``(make, before_step)``; ``make() -> (model, optimizer)``.

    facebookresearch/ConvNeXt @ 6157687b8df6270924e8ce473b29a14ca6082950: utils.cosine_scheduler arrays for lr
    (warmup from 0) and weight decay (0.05 rising to weight_decay_end 0.5); engine.py writes, per iteration,
    lr_schedule_values[it] * lr_scale and wd_schedule_values[it] into the groups with weight decay.
    """
    lr_values = convnext_cosine_scheduler(4e-3, 1e-6, 10, 20, warmup_epochs=2)
    wd_values = convnext_cosine_scheduler(0.05, 0.5, 10, 20)

    def make() -> Any:
        model = ResNet()
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        return model, torch.optim.AdamW([{"params": decay, "weight_decay": 0.05, "lr_scale": 1.0},
                                         {"params": no_decay, "weight_decay": 0.0, "lr_scale": 0.8}], lr=4e-3)

    def before_step(it: int, optimizer: Any) -> None:
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr_values[it] * param_group["lr_scale"]
            if param_group["weight_decay"] > 0:
                param_group["weight_decay"] = wd_values[it]
    return make, before_step


def fairseq() -> tuple[Callable[[], Any], Callable[[int, Any], None]]:
    """``(make, before_step)``; ``make() -> (model, optimizer)``.

    facebookresearch/fairseq fairseq/optim/lr_scheduler/inverse_square_root_schedule.py: warmup_init_lr
    linearly to lr over warmup_updates, then decay_factor * num_updates ** -0.5 (decay_factor = lr *
    warmup_updates ** 0.5); step_update(num_updates) after every update sets the lr.
    """
    lr, warmup_updates, warmup_init_lr = 5e-4, 40, 1e-7
    lr_step = (lr - warmup_init_lr) / warmup_updates
    decay_factor = lr * warmup_updates ** 0.5

    def step_update(num_updates: int) -> float:
        if num_updates < warmup_updates:
            return warmup_init_lr + num_updates * lr_step
        return decay_factor * num_updates ** -0.5

    def before_step(it: int, optimizer: Any) -> None:
        for g in optimizer.param_groups:
            g["lr"] = step_update(it)

    def make() -> Any:
        model = nn.Transformer(8, 2, 1, 1, 16)
        return model, torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
    return make, before_step


def backbone_finetuning() -> Any:
    """``(model, optimizer, [(scheduler, unit)], on_epoch_start)``.

    Lightning 2.6.6 (installed) BackboneFinetuning: the backbone is frozen before training; at
    unfreeze_backbone_at_epoch its finetune_function unfreezes it and add_param_group's it with lr
    current_lr * backbone_initial_ratio_lr, then multiplies it by lambda_func(epoch + 1) every epoch (aligned to
    the head's lr); the head's Adam has a per-epoch StepLR (the callback's own code runs here).
    """
    from lightning.pytorch.callbacks import BackboneFinetuning

    model = Transfer()
    cb = BackboneFinetuning(unfreeze_backbone_at_epoch=3, lambda_func=lambda epoch: 1.5)
    cb.freeze_before_training(model)
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-3)
    sched = S.StepLR(opt, step_size=4, gamma=0.5)
    return model, opt, [(sched, "epoch")], lambda epoch, optimizer: cb.finetune_function(model, epoch, optimizer)


def swa_switch(t_max: int = 100, swa_start: int = 10, anneal_epochs: int = 5) -> Any:
    """``(model, optimizer, on_epoch_start)``.

    pytorch/pytorch docs/source/optim.md (Stochastic Weight Averaging): CosineAnnealingLR(T_max) stepped per
    epoch until swa_start, then SWALR(swa_lr=0.05) -- the loop picks which scheduler steps.
    """
    model = ResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = S.CosineAnnealingLR(opt, T_max=t_max)
    swa_scheduler = SWALR(opt, swa_lr=0.05, anneal_epochs=anneal_epochs)

    def on_epoch_start(epoch: int, optimizer: Any) -> None:
        if epoch == 0:
            return
        if epoch - 1 > swa_start:  # the step after epoch - 1 ended
            swa_scheduler.step()
        else:
            scheduler.step()
    return model, opt, on_epoch_start


# --------------------------------------------------------------------------- live objects (from_torch, from_lightning)

def tv_mobilenet_v3() -> Any:
    """``(model, optimizer, [(scheduler, "epoch")])``.

    pytorch/vision references/classification/train.py @ 017e9b99b5daddec3d82d5b05fe26f6834c48fa9 with the
    MobileNetV3 recipe of references/classification/README.md (``--opt rmsprop --lr 0.064 --wd 0.00001
    --lr-step-size 2 --lr-gamma 0.973``, momentum 0.9 by default, no norm weight decay group, no warmup):
    RMSprop(eps=0.0316, alpha=0.9) and StepLR stepped once per epoch.
    """
    model = ResNet()  # the optimizer takes model.parameters(): one group, whatever the architecture
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.064, momentum=0.9, weight_decay=1e-5, eps=0.0316,
                                    alpha=0.9)
    return model, optimizer, [(S.StepLR(optimizer, step_size=2, gamma=0.973), "epoch")]


def lightning_imagenet() -> tuple[nn.Module, Any]:
    """``(model, configure_optimizers())``.

    Lightning-AI/pytorch-lightning examples/pytorch/domain_templates/imagenet.py @
    600329364b9b16514f4a6f69eda685c337b40c91: ImageNetLightningModel.configure_optimizers with its defaults
    (resnet18, lr 0.1, momentum 0.9, weight_decay 1e-4): ``[SGD], [LambdaLR(lambda epoch: 0.1 ** (epoch //
    30))]``, a plain Python lambda Lightning steps once per epoch.
    """
    model = ResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = S.LambdaLR(optimizer, lambda epoch: 0.1 ** (epoch // 30))
    return model, ([optimizer], [scheduler])


# --------------------------------------------------------------------------- native runners

def drive(opt: torch.optim.Optimizer, n: int, after_update: Callable[[int], None]) -> dict[str, np.ndarray]:
    """Every group's lr, momentum, betas and weight decay before each of ``n`` updates; ``after_update(k)`` after
    update ``k`` (a library's scheduler stepping as its loop does). Values only: no parameter changes."""
    out = {h: np.full((len(opt.param_groups), n), np.nan) for h in HYPERS}
    for k in range(n):
        for i, g in enumerate(opt.param_groups):
            for h in HYPERS:
                out[h][i, k] = read(g, h)
        after_update(k)
    return out


def timm_native(opt: torch.optim.Optimizer, sched_kwargs: dict[str, Any], epochs: int,
                updates_per_epoch: int) -> dict[str, np.ndarray]:
    """timm's ``create_scheduler_v2`` scheduler on ``opt``, stepped as timm's train.py does (DeiT's main.py
    does the same with ``step_on_epochs``): ``step_update(num_updates)`` after every update,
    ``step(epoch + 1)`` after every epoch."""
    from test_dialect_timm import SCHED

    sched, _ = SCHED.create_scheduler_v2(opt, **sched_kwargs, updates_per_epoch=updates_per_epoch)

    def after(k: int) -> None:
        sched.step_update(num_updates=k + 1)
        if (k + 1) % updates_per_epoch == 0:
            sched.step((k + 1) // updates_per_epoch)
    return drive(opt, epochs * updates_per_epoch, after)


def mmengine_native(cfg: dict[str, Any], model: nn.Module, n: int, spe: int) -> dict[str, np.ndarray]:
    """MMEngine's own optimizer wrapper and schedulers for ``cfg``, built as the Runner builds them
    (``test_dialect_mmengine.build_mmengine``) and stepped as ``ParamSchedulerHook`` does: iteration-based
    ones after every iteration, epoch-based ones after each epoch's last iteration. Values per trainable
    parameter of ``model`` (``named_parameters`` order), from the group MMEngine put it in."""
    from test_dialect_mmengine import build_mmengine

    wrapper, scheds = build_mmengine(copy.deepcopy(cfg), model, spe)
    opt = wrapper.optimizer
    where = {id(p): i for i, g in enumerate(opt.param_groups) for p in g["params"]}
    rows = [where[id(p)] for p in model.parameters() if p.requires_grad]

    def after(k: int) -> None:
        for s in scheds:
            if not s.by_epoch:
                s.step()
        if (k + 1) % spe == 0:
            for s in scheds:
                if s.by_epoch:
                    s.step()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected call of `scheduler.step", UserWarning)  # no optimizer step here
        per_group = drive(opt, n, after)
    return {h: v[rows] for h, v in per_group.items()}


def per_parameter(values: dict[str, np.ndarray], groups: Sequence[str], group_of: Sequence[str]) -> dict[str, Any]:
    """Trace rows (one per plan group, in ``groups`` order) spread to parameters (``group_of[i]`` names the plan
    group of parameter ``i``)."""
    idx = [list(groups).index(g) for g in group_of]
    return {h: v[idx] for h, v in values.items()}


# --------------------------------------------------------------------------- models for library configs

class SwinLike(nn.Module):
    """mmpretrain SwinTransformer names (shortened): backbone.patch_embed.projection / .norm,
    backbone.absolute_pos_embed, backbone.stages.0.blocks.0.{norm1, attn.w_msa.relative_position_bias_table,
    attn.w_msa.qkv, ffn.layers}, backbone.norm3, head.fc (the keys its paramwise_cfg names)."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.patch_embed = nn.Module()
        self.backbone.patch_embed.projection = nn.Conv2d(3, d, 4, 4)
        self.backbone.patch_embed.norm = nn.LayerNorm(d)
        self.backbone.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, d))
        block = nn.Module()
        block.norm1 = nn.LayerNorm(d)
        block.attn = nn.Module()
        block.attn.w_msa = nn.Module()
        block.attn.w_msa.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
        block.attn.w_msa.qkv = nn.Linear(d, 3 * d)
        block.ffn = nn.Module()
        block.ffn.layers = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        stage = nn.Module()
        stage.blocks = nn.ModuleList([block])
        self.backbone.stages = nn.ModuleList([stage])
        self.backbone.norm3 = nn.LayerNorm(d)
        self.head = nn.Module()
        self.head.fc = nn.Linear(d, 3)


class DeiTLike(nn.Module):
    """timm VisionTransformerDistilled names (shortened): cls_token, dist_token, pos_embed, patch_embed.proj,
    blocks.i.{norm1, attn.qkv}, norm, head, head_dist; ``no_weight_decay()`` as DeiT's model returns it."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 6, d))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, 4, 4)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.norm1 = nn.LayerNorm(d)
            block.attn = nn.Module()
            block.attn.qkv = nn.Linear(d, 3 * d)
            self.blocks.append(block)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)
        self.head_dist = nn.Linear(d, 3)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "dist_token"}
