"""The MMEngine dialect against the real MMEngine 0.10.7 (and mmdet 3.3 / mmpretrain 1.2 constructors).

Schedulers: each case builds the config's optimizer with MMEngine's own
``DefaultOptimWrapperConstructor`` on a small real model (three parameters with
different lrs through ``custom_keys``), builds MMEngine's schedulers the way
``Runner._build_param_scheduler`` does (default ``end`` from ``train_cfg``,
``epoch_length`` for ``convert_to_iter_based``), and steps them the way
``ParamSchedulerHook`` does: iteration-based schedulers after every iteration,
epoch-based ones after the last iteration of each epoch (after the
iteration-based ones), ``ReduceOnPlateau`` on the epoch's validation metric. Every
group's value is recorded before each optimizer step and compared with
``optbridge.trace(plan, n)`` of the parsed config.

Tolerance: MMEngine keeps the values in float64 but computes them *recursively*
(``value *= ratio`` each step) while the reference is closed form, so they differ by
accumulated rounding: we require ``|ref - mmengine| <= 1e-12 * |mmengine|`` at
every step (exact zeros stay exact). The measured worst case is printed by
``python tests/test_dialect_mmengine.py``.

Param groups: MMEngine's constructor runs on a real model (conv, depthwise conv,
BN, LN, Linear, biases, a custom key); the plan is resolved over the same model by
the torch adapter (``optbridge.to_torch``) and each parameter must get exactly
MMEngine's lr and weight_decay (bit equality: both are the same float products).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import sys
import types
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
mmengine = pytest.importorskip("mmengine")
from mmengine.optim import DefaultOptimWrapperConstructor  # noqa: E402
from mmengine.registry import PARAM_SCHEDULERS  # noqa: E402

import optbridge  # noqa: E402
from optbridge.dialects import mmengine as mmd  # noqa: E402

RTOL = 1e-12
WORST: dict[str, float] = {}


# --------------------------------------------------------------------------- MMEngine side

class Three(torch.nn.Module):
    """Three parameters; custom_keys give them lrs base, base/2, base/4."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(1, 1, bias=False)
        self.b = torch.nn.Linear(1, 1, bias=False)
        self.c = torch.nn.Linear(1, 1, bias=False)


KEYS = {"b": dict(lr_mult=0.5), "c": dict(lr_mult=0.25)}


def build_mmengine(cfg: dict[str, Any], model: torch.nn.Module, spe: int):
    """MMEngine's optimizer and schedulers, as the Runner builds them."""
    ow_cfg = copy.deepcopy(cfg["optim_wrapper"])
    paramwise = ow_cfg.pop("paramwise_cfg", None)
    ow_cfg.pop("constructor", None)
    wrapper = DefaultOptimWrapperConstructor(ow_cfg, paramwise)(model)
    train = cfg.get("train_cfg", {})
    raw = cfg.get("param_scheduler") or []
    raw = raw if isinstance(raw, list) else [raw]
    scheds = []
    for s in raw:
        s = copy.deepcopy(s)
        if train:  # Runner._build_param_scheduler: the train loop's length is the default end
            s.setdefault("end", train.get("max_epochs") if s.get("by_epoch", True) else train.get("max_iters"))
        scheds.append(PARAM_SCHEDULERS.build(s, default_args=dict(optimizer=wrapper, epoch_length=spe)))
    return wrapper, scheds


def _read(group: dict, hyper: str) -> float:
    return float(group["betas"][0]) if hyper == "beta1" else float(group[hyper])


def run_mmengine(cfg: dict[str, Any], model: torch.nn.Module, n: int, spe: int, hypers: tuple[str, ...],
                 metrics: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Step MMEngine as ParamSchedulerHook does; values per parameter (model order) before each update."""
    wrapper, scheds = build_mmengine(cfg, model, spe)
    opt = wrapper.optimizer
    order = {id(p): i for i, p in enumerate(model.parameters())}
    out = {h: np.zeros((len(order), n)) for h in hypers}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for t in range(n):
        for g in opt.param_groups:
            for p in g["params"]:
                for h in hypers:
                    out[h][order[id(p)], t] = _read(g, h)
        wrapper.step()
        for s in scheds:  # after_train_iter
            if not s.by_epoch:
                s.step()
        if (t + 1) % spe == 0:  # after_train_epoch, then validation
            for s in scheds:
                if s.by_epoch:
                    s.step()
            if metrics is not None:
                for s in scheds:
                    if s.by_epoch and getattr(s, "need_val_args", False):
                        s.step({"loss": float(metrics[(t + 1) // spe - 1])})
    return out


def reference(plan: optbridge.Plan, model: torch.nn.Module, n: int, hypers: tuple[str, ...],
              metrics: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """optbridge's trace, spread to parameters through the torch adapter's group resolution."""
    tr = optbridge.trace(plan, n, metrics=metrics)
    row = {}
    for g in resolve(plan, model).groups:
        for name in g.params:
            row[name] = tr.groups.index(g.name)
    names = [name for name, _ in model.named_parameters()]
    return {h: np.stack([tr[h][row[nm]] for nm in names]) for h in hypers}


def resolve(plan: optbridge.Plan, model: torch.nn.Module):
    """optbridge's group resolution over the model's parameters (names, shapes, owning module types)."""
    records = [optbridge.ParamRecord(f"{m}.{n}" if m else n, tuple(p.shape), type(mod).__name__, id(p),
                                     p.requires_grad)
               for m, mod in model.named_modules() for n, p in mod.named_parameters(recurse=False)]
    return optbridge.resolve(plan, records)


def check(case: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    zero = want == 0
    assert np.array_equal(got[zero], want[zero]), f"{case}: MMEngine's exact zeros differ"
    rel = np.abs(got - want) / np.where(zero, 1.0, np.abs(want))
    WORST[case] = float(rel.max())
    assert rel.max() <= RTOL, f"{case}: worst relative error {rel.max():.3g} at {np.unravel_index(rel.argmax(), rel.shape)}"


def compare(case: str, cfg: dict[str, Any], n: int, spe: int, optimizer: dict | None = None,
            hypers: tuple[str, ...] = ("lr",), metrics: np.ndarray | None = None, **kw: Any) -> optbridge.Plan:
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("optim_wrapper", dict(optimizer=optimizer or dict(type="SGD", lr=0.1, momentum=0.9),
                                         paramwise_cfg=dict(custom_keys=KEYS)))
    plan = mmd.parse(cfg, steps_per_epoch=spe, **kw)
    n = min(n, plan.total_steps or n)
    torch.manual_seed(0)
    model = Three().double()
    want = run_mmengine(cfg, model, n, spe, hypers, metrics)
    got = reference(plan, model, n, hypers, metrics)
    for h in hypers:
        check(f"{case}:{h}", got[h], want[h])
    return plan


# --------------------------------------------------------------------------- every scheduler type

SPE = 7  # iterations per epoch
SINGLE = {
    # each LR scheduler alone, by iteration and by epoch, with begin/end windows
    "ConstantLR": dict(type="ConstantLR", factor=0.4, begin=3, end=40, by_epoch=False),
    "ConstantLR_one_step": dict(type="ConstantLR", factor=0.4, begin=3, end=4, by_epoch=False),
    "LinearLR": dict(type="LinearLR", start_factor=0.05, end_factor=0.9, begin=5, end=60, by_epoch=False),
    "LinearLR_epoch": dict(type="LinearLR", start_factor=0.25, begin=1, end=6),
    "StepLR": dict(type="StepLR", step_size=9, gamma=0.7, begin=4, end=100, by_epoch=False),
    "StepLR_epoch_inf": dict(type="StepLR", step_size=2, gamma=0.5),
    "MultiStepLR": dict(type="MultiStepLR", milestones=[0, 10, 10, 30, 500], gamma=0.5, begin=2, end=80,
                        by_epoch=False),
    "ExponentialLR": dict(type="ExponentialLR", gamma=0.97, begin=10, end=120, by_epoch=False),
    "CosineAnnealingLR": dict(type="CosineAnnealingLR", T_max=50, eta_min=1e-3, begin=20, end=70, by_epoch=False),
    "CosineAnnealingLR_default_T": dict(type="CosineAnnealingLR", eta_min=0.0, begin=5, end=90, by_epoch=False),
    "CosineAnnealingLR_periodic": dict(type="CosineAnnealingLR", T_max=15, eta_min=2e-3, by_epoch=False),
    "CosineAnnealingLR_ratio": dict(type="CosineAnnealingLR", T_max=8, eta_min_ratio=0.1, begin=1, end=12),
    "PolyLR": dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=150, by_epoch=False),
    "PolyLR_zero": dict(type="PolyLR", power=2.0, begin=10, end=100, by_epoch=False),
    "OneCycleLR": dict(type="OneCycleLR", eta_max=0.5, total_steps=150, pct_start=0.25, end=150, by_epoch=False),
    "OneCycleLR_window": dict(type="OneCycleLR", eta_max=0.3, begin=20, end=120, three_phase=True,
                              anneal_strategy="linear", by_epoch=False),
    "CosineRestartLR": dict(type="CosineRestartLR", periods=[30, 50, 40], restart_weights=[1, 0.5, 0.25],
                            eta_min=1e-3, begin=10, by_epoch=False),
    "CosineRestartLR_ratio_epoch": dict(type="CosineRestartLR", periods=[4, 8], restart_weights=[1, 0.7],
                                        eta_min_ratio=0.05),
}


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_lr_scheduler_alone(name: str) -> None:
    compare(name, {"param_scheduler": [SINGLE[name]]}, 210, SPE)


MOMENTUM = {
    "ConstantMomentum": dict(type="ConstantMomentum", factor=0.5, begin=2, end=30, by_epoch=False),
    "LinearMomentum": dict(type="LinearMomentum", start_factor=0.8, end=40, by_epoch=False),
    "StepMomentum": dict(type="StepMomentum", step_size=3, gamma=0.9, end=20),
    "MultiStepMomentum": dict(type="MultiStepMomentum", milestones=[5, 9], gamma=0.8, by_epoch=False),
    "ExponentialMomentum": dict(type="ExponentialMomentum", gamma=0.99, by_epoch=False),
    "CosineAnnealingMomentum": dict(type="CosineAnnealingMomentum", T_max=60, eta_min=0.8, by_epoch=False,
                                    end=100),
    "PolyMomentum": dict(type="PolyMomentum", eta_min=0.5, power=1.5, end=90, by_epoch=False),
    "CosineRestartMomentum": dict(type="CosineRestartMomentum", periods=[40, 40], eta_min=0.85,
                                  restart_weights=[1, 1], by_epoch=False),
}


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
@pytest.mark.parametrize("name", sorted(MOMENTUM))
def test_momentum_scheduler(name: str, optimizer: str) -> None:
    opt = dict(type="SGD", lr=0.1, momentum=0.9) if optimizer == "SGD" else dict(type="AdamW", lr=1e-3,
                                                                                    betas=(0.95, 0.999))
    hyper = "momentum" if optimizer == "SGD" else "beta1"
    compare(f"{name}/{optimizer}", {"param_scheduler": [MOMENTUM[name],
                                                        dict(type="LinearLR", start_factor=0.1, end=10,
                                                             by_epoch=False)]},
            120, SPE, optimizer=opt, hypers=("lr", hyper))


GENERIC = {
    "ConstantParamScheduler": dict(factor=0.5, end=20),
    "LinearParamScheduler": dict(start_factor=0.2, end=40),
    "StepParamScheduler": dict(step_size=10, gamma=0.5),
    "MultiStepParamScheduler": dict(milestones=[7, 30], gamma=0.1),
    "ExponentialParamScheduler": dict(gamma=0.98),
    "CosineAnnealingParamScheduler": dict(T_max=80, eta_min=1e-5),
    "PolyParamScheduler": dict(power=0.5, end=70),
    "CosineRestartParamScheduler": dict(periods=[25, 50], restart_weights=[1, 0.3], eta_min=0.0),
}


@pytest.mark.parametrize("name", sorted(GENERIC))
def test_generic_param_scheduler_on_weight_decay(name: str) -> None:
    sched = dict(type=name, param_name="weight_decay", by_epoch=False, **GENERIC[name])
    compare(name, {"param_scheduler": [sched]}, 100, SPE,
            optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=5e-4), hypers=("lr", "weight_decay"))


def test_one_cycle_param_scheduler_on_lr() -> None:
    compare("OneCycleParamScheduler", {"param_scheduler": dict(type="OneCycleParamScheduler", param_name="lr",
                                                               eta_max=0.2, total_steps=100, by_epoch=False)},
            100, SPE)


def test_reduce_on_plateau() -> None:
    metrics = np.array([5.0, 4.0, 4.0, 4.5, 3.9, 3.9, 3.9, 3.9, 4.2, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0])
    cfg = {"param_scheduler": dict(type="ReduceOnPlateauLR", patience=1, factor=0.5, cooldown=1, min_value=1e-3),
           "train_cfg": dict(max_epochs=16)}
    compare("ReduceOnPlateauLR", cfg, 16 * SPE, SPE, metrics=metrics)


def test_reduce_on_plateau_momentum_greater_abs() -> None:
    metrics = np.array([0.5, 0.6, 0.6, 0.6, 0.61, 0.62, 0.62, 0.62, 0.62, 0.7, 0.7])
    cfg = {"param_scheduler": dict(type="ReduceOnPlateauMomentum", rule="greater", threshold_rule="abs",
                                   threshold=0.05, patience=0, factor=0.9, monitor="loss"),
           "train_cfg": dict(max_epochs=11)}
    compare("ReduceOnPlateauMomentum", cfg, 11 * SPE, SPE, hypers=("lr", "momentum"), metrics=metrics)


# --------------------------------------------------------------------------- compositions

COMPOSED = {
    # warmup by iteration over an epoch-based MultiStep (mmdet's schedule_1x): overlapping windows multiply
    "warmup_iter+multistep_epoch": dict(param_scheduler=[
        dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=30),
        dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)],
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=12)),
    # mmpretrain: epoch warmup converted to iterations, then an epoch cosine with eta_min
    "convert_warmup+cosine_epoch": dict(param_scheduler=[
        dict(type="LinearLR", start_factor=1e-3, by_epoch=True, end=3, convert_to_iter_based=True),
        dict(type="CosineAnnealingLR", eta_min=1e-5, by_epoch=True, begin=3)],
        train_cfg=dict(max_epochs=20)),
    # RTMDet-like: iteration warmup, then a converted cosine over the second half
    "convert_cosine_second_half": dict(param_scheduler=[
        dict(type="LinearLR", start_factor=1e-5, by_epoch=False, begin=0, end=40),
        dict(type="CosineAnnealingLR", eta_min=0.005, begin=10, end=20, T_max=10, by_epoch=True,
             convert_to_iter_based=True)],
        train_cfg=dict(max_epochs=20)),
    # YOLOX-like: converted cosine ending before training does, then ConstantLR(factor=1): the value holds
    "cosine_then_hold": dict(param_scheduler=[
        dict(type="LinearLR", start_factor=0.01, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
        dict(type="CosineAnnealingLR", eta_min=0.002, begin=2, T_max=13, end=15, by_epoch=True,
             convert_to_iter_based=True),
        dict(type="ConstantLR", by_epoch=True, factor=1, begin=15, end=20)],
        train_cfg=dict(max_epochs=20)),
    # overlapping multiplicative windows on different clocks, plus a zero-eta cosine inside its T_max
    "overlap_products": dict(param_scheduler=[
        dict(type="ConstantLR", factor=0.5, begin=5, end=50, by_epoch=False),
        dict(type="ExponentialLR", gamma=0.99, begin=20, end=90, by_epoch=False),
        dict(type="StepLR", step_size=3, gamma=0.8, begin=1, end=12),
        dict(type="CosineAnnealingLR", T_max=100, begin=30, end=120, by_epoch=False),
        dict(type="PolyLR", power=1.0, begin=100, end=140, by_epoch=False)]),
    # a warmup ending below 1, then an eta_min cosine: the cosine starts from the warmup's value
    "warmup_end_factor+cosine": dict(param_scheduler=[
        dict(type="LinearLR", start_factor=0.1, end_factor=0.6, by_epoch=False, end=25),
        dict(type="CosineAnnealingLR", eta_min=1e-3, begin=25, end=100, by_epoch=False),
        dict(type="ExponentialLR", gamma=0.95, begin=100, by_epoch=False)]),
    # mmseg segformer: warmup by iteration, then Poly with eta_min to the end
    "warmup+poly": dict(param_scheduler=[
        dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=15),
        dict(type="PolyLR", eta_min=1e-4, power=1.0, begin=15, end=160, by_epoch=False)],
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=160)),
    # OneCycle after a finished warmup (it overwrites), then a decay after its window
    "warmup+onecycle+step": dict(param_scheduler=[
        dict(type="ConstantLR", factor=0.1, begin=0, end=10, by_epoch=False),
        dict(type="OneCycleLR", eta_max=0.4, begin=10, end=110, by_epoch=False),
        dict(type="StepLR", step_size=10, gamma=0.5, begin=110, by_epoch=False)]),
    # momentum and lr schedules together (OneCycle-like hand-made momentum)
    "lr+momentum": dict(param_scheduler=[
        dict(type="CosineAnnealingLR", T_max=140, by_epoch=False),
        dict(type="LinearMomentum", start_factor=0.85 / 0.95, end=40, by_epoch=False),
        dict(type="CosineAnnealingMomentum", eta_min=0.85, begin=40, end=140, by_epoch=False)]),
}


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_composed(name: str) -> None:
    hypers = ("lr", "momentum") if name == "lr+momentum" else ("lr",)
    compare(name, COMPOSED[name], 140, SPE, hypers=hypers)


def test_epoch_only_config_without_epoch_length_steps_epochs() -> None:
    cfg = {"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1)),
           "param_scheduler": [dict(type="LinearLR", start_factor=0.1, end=3),
                               dict(type="MultiStepLR", milestones=[5, 8], end=10)]}
    plan = mmd.parse(cfg)
    assert plan.step_unit == "epoch" and plan.steps_per_epoch is None
    tr = optbridge.trace(plan, 10)
    model = Three().double()
    want = run_mmengine(cfg, model, 10, 1, ("lr",))  # one iteration per epoch
    check("epoch-only", tr["lr"], want["lr"][:1])


# --------------------------------------------------------------------------- real public configs

# open-mmlab/mmdetection, configs/_base_/schedules/schedule_1x.py @ cfb308e ("v3.3.0"):
SCHEDULE_1X = dict(
    train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=12, val_interval=1),
    param_scheduler=[
        dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)],
    optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=0.0001)))

# open-mmlab/mmpretrain, configs/_base_/schedules/imagenet_bs1024_adamw_swin.py @ 17a886c ("v1.2.0"):
SWIN_ADAMW = dict(
    optim_wrapper=dict(
        optimizer=dict(type="AdamW", lr=5e-4 * 1024 / 512, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
        paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
                           custom_keys={".absolute_pos_embed": dict(decay_mult=0.0),
                                        ".relative_position_bias_table": dict(decay_mult=0.0)})),
    param_scheduler=[
        dict(type="LinearLR", start_factor=1e-3, by_epoch=True, end=20, convert_to_iter_based=True),
        dict(type="CosineAnnealingLR", eta_min=1e-5, by_epoch=True, begin=20)],
    train_cfg=dict(by_epoch=True, max_epochs=300, val_interval=1))

# open-mmlab/mmsegmentation, configs/_base_/schedules/schedule_160k.py @ c685fe6 ("v1.2.2"):
SCHEDULE_160K = dict(
    optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005),
    optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005),
                       clip_grad=None),
    param_scheduler=[dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)],
    train_cfg=dict(type="IterBasedTrainLoop", max_iters=160000, val_interval=16000))

# open-mmlab/mmpose, configs/body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py
# @ 5a3be94 ("v1.3.2"):
MMPOSE_HRNET = dict(
    train_cfg=dict(max_epochs=210, val_interval=10),
    optim_wrapper=dict(optimizer=dict(type="Adam", lr=5e-4)),
    param_scheduler=[
        dict(type="LinearLR", begin=0, end=500, start_factor=0.001, by_epoch=False),
        dict(type="MultiStepLR", begin=0, end=210, milestones=[170, 200], gamma=0.1, by_epoch=True)])

# open-mmlab/mmpretrain, configs/_base_/schedules/imagenet_bs4096_AdamW.py + configs/vit/... layer decay as in
# configs/mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py @ 17a886c ("v1.2.0"):
VIT_LAYER_DECAY = dict(
    optim_wrapper=dict(
        optimizer=dict(type="AdamW", lr=2e-3 * 1024 / 256, betas=(0.9, 0.999), weight_decay=0.05),
        constructor="LearningRateDecayOptimWrapperConstructor",
        paramwise_cfg=dict(layer_decay_rate=0.65,
                           custom_keys={".ln": dict(decay_mult=0.0), ".bias": dict(decay_mult=0.0),
                                        ".cls_token": dict(decay_mult=0.0), ".pos_embed": dict(decay_mult=0.0)})),
    param_scheduler=[
        dict(type="LinearLR", start_factor=1e-4, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
        dict(type="CosineAnnealingLR", T_max=95, by_epoch=True, begin=5, end=100, eta_min=1e-6,
             convert_to_iter_based=True)],
    train_cfg=dict(by_epoch=True, max_epochs=100))


def _epochs_only(cfg: dict, epochs: int) -> dict:
    """The same config with a shorter training (the schedulers' explicit windows kept)."""
    cfg = copy.deepcopy(cfg)
    cfg["train_cfg"]["max_epochs"] = epochs
    return cfg


def test_mmdet_schedule_1x() -> None:
    spe = 60  # a short epoch keeps the 500-iteration warmup across epoch boundaries
    plan = compare("mmdet schedule_1x", SCHEDULE_1X, 12 * spe, spe, optimizer=None)
    assert plan.total_steps == 12 * spe


def test_mmpose_hrnet_schedule() -> None:
    spe = 4
    cfg = copy.deepcopy(MMPOSE_HRNET)
    plan = compare("mmpose hrnet 210e", cfg, 210 * spe, spe)
    assert plan.optimizers[0].type == "Adam"


def test_mmseg_schedule_160k_poly() -> None:
    cfg = copy.deepcopy(SCHEDULE_160K)
    cfg.pop("optimizer")  # the legacy mmcv key next to optim_wrapper; MMEngine's runner reads optim_wrapper
    plan = mmd.parse(cfg)
    assert plan.total_steps == 160000
    n = 3000
    model = Three().double()
    want = run_mmengine(cfg, model, n, 1, ("lr",))
    check("mmseg 160k head", optbridge.trace(plan, n)["lr"], want["lr"][:1])
    # the end of the 160k schedule, where the poly decays to eta_min, streamed in a window
    tail = optbridge.trace(plan, 160000)["lr"][0, -n:]
    want_tail = _mmengine_tail(cfg, 160000, n)
    check("mmseg 160k tail", tail[None], want_tail[None])


def _mmengine_tail(cfg: dict, total: int, n: int) -> np.ndarray:
    model = Three().double()
    wrapper, scheds = build_mmengine(cfg, model, 1)
    g = wrapper.optimizer.param_groups[0]
    out = np.zeros(n)
    warnings.filterwarnings("ignore", "Detected call of `scheduler.step", UserWarning)  # no optimizer here
    for t in range(total):
        if t >= total - n:
            out[t - total + n] = g["lr"]
        for s in scheds:
            s.step()
    return out


def test_mmpretrain_swin_adamw_short_run() -> None:
    spe = 3
    cfg = _epochs_only(SWIN_ADAMW, 40)
    cfg["optim_wrapper"]["paramwise_cfg"] = dict(custom_keys=KEYS)  # groups are tested on a real model below
    compare("mmpretrain swin adamw", cfg, 40 * spe, spe)


# --------------------------------------------------------------------------- paramwise_cfg on a real model

class Net(torch.nn.Module):
    """conv, depthwise conv, BN, LN, Linear, biases, a parameter of the root, a frozen part, a shared module."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 8, 3, groups=8)
        self.gn = torch.nn.GroupNorm(2, 8)
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(8, 4, 1, bias=False), torch.nn.BatchNorm2d(4))
        self.ln = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 3)
        self.head_aux = torch.nn.Linear(4, 3)
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 4))
        self.scale = torch.nn.Parameter(torch.ones(4))
        self.frozen = torch.nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad = False


PARAMWISE = {
    "swin-like": dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
                      custom_keys={".pos_embed": dict(decay_mult=0.0), "head": dict(lr_mult=10.0)}),
    "bias_lr+dwconv": dict(bias_lr_mult=2.0, bias_decay_mult=0.5, dwconv_decay_mult=0.25),
    "norm_only_bias_falls_through": dict(bias_decay_mult=0.3, flat_decay_mult=0.7),
    "keys_precedence": dict(custom_keys={"head": dict(lr_mult=0.1), "head_aux": dict(lr_mult=0.2, decay_mult=3.0),
                                         "bn": dict(decay_mult=0.0, momentum=0.5), "backbone.1": dict(lr=0.5)},
                            norm_decay_mult=0.1),
}


def _check_groups(case: str, ow_cfg: dict, model: torch.nn.Module, plan: optbridge.Plan) -> None:
    """Each trainable parameter gets MMEngine's lr, weight_decay (and momentum) from the plan's groups.

    Frozen parameters: MMEngine leaves them out; a plan made with the model excludes them too
    (checked), one made from names only keeps them in a group, where torch never updates them.
    """
    opts = tuple(dataclasses.replace(o, groups=tuple(dataclasses.replace(g, schedule={}) for g in o.groups))
                 for o in plan.optimizers)
    plan = optbridge.Plan(optimizers=opts, step_unit=plan.step_unit)  # base values: no schedule
    cfg = copy.deepcopy(ow_cfg)
    paramwise = cfg.pop("paramwise_cfg", None)
    ctor = cfg.pop("constructor", None)
    cls = {None: DefaultOptimWrapperConstructor, "LearningRateDecayOptimWrapperConstructor": _lib_ctor("mmpretrain"),
           "LearningRateDecayOptimizerConstructor": _lib_ctor("mmdet")}[ctor]
    wrapper = cls(cfg, paramwise)(model)
    want = {}
    for g in wrapper.optimizer.param_groups:
        for p in g["params"]:
            want[id(p)] = (g["lr"], g["weight_decay"], g.get("momentum"))
    setup = optbridge.to_torch(plan, model)
    got = {}
    for g in setup.optimizer.param_groups:
        for p in g["params"]:
            got[id(p)] = (g["lr"], g["weight_decay"], g.get("momentum"))
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(want) == trainable
    if any(g.frozen for g in plan.groups):
        assert set(got) == set(want), f"{case}: different parameters in the optimizer"
    for k in want:
        assert got[k] == want[k], f"{case}: {names[k]} gets {got[k]}, MMEngine {want[k]}"


@pytest.mark.parametrize("name", sorted(PARAMWISE))
def test_paramwise_with_model(name: str) -> None:
    ow = dict(optimizer=dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=1e-4), paramwise_cfg=PARAMWISE[name])
    model = Net()
    plan = mmd.parse({"optim_wrapper": ow}, model=model)
    _check_groups(name, ow, model, plan)


@pytest.mark.parametrize("rules", [
    dict(custom_keys={"head": dict(lr_mult=0.1), "head_aux": dict(lr_mult=0.2), ".scale": dict(decay_mult=0.0),
                      "stem": dict(lr=0.3, weight_decay=0.0)}),
    dict(bias_decay_mult=0.0, custom_keys={"backbone": dict(lr_mult=0.5)}),
    dict(flat_decay_mult=0.0, custom_keys={"head": dict(decay_mult=2.0)}),
    dict(bias_decay_mult=0.2, flat_decay_mult=0.0),
])
def test_paramwise_without_model_by_names(rules: dict) -> None:
    ow = dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05), paramwise_cfg=rules)
    plan = mmd.parse({"optim_wrapper": ow})  # selectors only: no model
    model = Net()
    _check_groups(str(rules), ow, model, plan)


def test_paramwise_duplicates_need_bypass() -> None:
    model = Net()
    model.head_aux.weight = model.head.weight  # one tensor in two modules
    ow = dict(optimizer=dict(type="SGD", lr=0.1, weight_decay=1e-4), paramwise_cfg=dict(bias_decay_mult=0.0))
    with pytest.raises(optbridge.ConfigError, match="bypass_duplicate"):
        mmd.parse({"optim_wrapper": ow}, model=model)
    ow["paramwise_cfg"]["bypass_duplicate"] = True
    plan = mmd.parse({"optim_wrapper": ow}, model=model)
    _check_groups("bypass_duplicate", ow, model, plan)


def _lib_ctor(lib: str):
    """The real mmdet / mmpretrain constructor module (loaded without the package's heavy __init__)."""
    root = os.path.dirname(os.path.dirname(mmengine.__file__))
    rel = {"mmdet": "mmdet/engine/optimizers/layer_decay_optimizer_constructor.py",
           "mmpretrain": "mmpretrain/engine/optimizers/layer_decay_optim_wrapper_constructor.py"}[lib]
    if not os.path.exists(os.path.join(root, rel)):
        pytest.skip(f"{lib} is not installed (pip install --no-deps {lib})")
    if lib not in sys.modules:
        pkg = types.ModuleType(lib)
        pkg.__path__ = [os.path.join(root, lib)]
        sys.modules[lib] = pkg
    name = f"_optbridge_test_{lib}_ldc"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(root, rel))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    mod = sys.modules[name]
    return getattr(mod, "LearningRateDecayOptimizerConstructor" if lib == "mmdet"
                   else "LearningRateDecayOptimWrapperConstructor")


class TinyViT(torch.nn.Module):
    """A ViT-shaped classifier whose get_layer_depth follows mmpretrain's VisionTransformer rule."""

    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.cls_token = torch.nn.Parameter(torch.zeros(1, 1, 4))
        self.backbone.pos_embed = torch.nn.Parameter(torch.zeros(1, 2, 4))
        self.backbone.patch_embed = torch.nn.Conv2d(3, 4, 2)
        self.backbone.layers = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Linear(4, 4)) for _ in range(depth))
        self.backbone.ln1 = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)
        self.num_layers = depth

    def get_layer_depth(self, param_name: str) -> tuple[int, int]:
        # mmpretrain.models.backbones.VisionTransformer.get_layer_depth(param_name, 'backbone.')
        num_layers = self.num_layers + 2
        prefix = "backbone."
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        param_name = param_name[len(prefix):]
        if param_name in ("cls_token", "pos_embed") or param_name.startswith("patch_embed"):
            return 0, num_layers
        if param_name.startswith("layers"):
            return int(param_name.split(".")[1]) + 1, num_layers
        return num_layers - 1, num_layers


def test_mmpretrain_layer_decay_vit_config() -> None:
    model = TinyViT()
    cfg = copy.deepcopy(VIT_LAYER_DECAY)
    plan = mmd.parse(cfg, model=model, steps_per_epoch=2)
    _check_groups("mmpretrain layer decay", cfg["optim_wrapper"], model, plan)
    assert {g.name for g in plan.groups} >= {"layer_0_custom:.pos_embed", "layer_4_decay"}
    # and its schedule, over the whole 100 epochs of 2 iterations
    want = run_mmengine_ctor(cfg, model, 200, 2)
    got = optbridge.trace(plan, 200)
    for g in resolve(plan, model).groups:
        p = dict(model.named_parameters())[g.params[0]]
        check(f"vit layer decay {g.name}", got["lr"][got.groups.index(g.name)][None], want[id(p)][None])


def run_mmengine_ctor(cfg: dict, model: torch.nn.Module, n: int, spe: int) -> dict[int, np.ndarray]:
    """lr per parameter id, with mmpretrain's constructor and MMEngine's schedulers."""
    ow = copy.deepcopy(cfg["optim_wrapper"])
    paramwise = ow.pop("paramwise_cfg")
    ow.pop("constructor")
    wrapper = _lib_ctor("mmpretrain")(ow, paramwise)(model)
    scheds = []
    for s in copy.deepcopy(cfg["param_scheduler"]):
        s.setdefault("end", cfg["train_cfg"]["max_epochs"])
        scheds.append(PARAM_SCHEDULERS.build(s, default_args=dict(optimizer=wrapper, epoch_length=spe)))
    out = {id(p): np.zeros(n) for p in model.parameters()}
    for t in range(n):
        for g in wrapper.optimizer.param_groups:
            for p in g["params"]:
                out[id(p)][t] = g["lr"]
        wrapper.step()
        for s in scheds:
            if not s.by_epoch:
                s.step()
        if (t + 1) % spe == 0:
            for s in scheds:
                if s.by_epoch:
                    s.step()
    return out


class ConvNeXtDet(torch.nn.Module):
    """A detector whose backbone class is named ConvNeXt (mmdet's constructor tests the class name)."""

    def __init__(self) -> None:
        super().__init__()

        class ConvNeXt(torch.nn.Module):
            pass

        bb = ConvNeXt()
        bb.downsample_layers = torch.nn.ModuleList(torch.nn.Conv2d(2, 2, 1) for _ in range(4))
        bb.stages = torch.nn.ModuleList(torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(n))
                                        for n in (1, 1, 7, 1))
        bb.norm = torch.nn.LayerNorm(2)
        self.backbone = bb
        self.neck = torch.nn.Conv2d(2, 2, 1)


@pytest.mark.parametrize("decay_type", ["layer_wise", "stage_wise"])
def test_mmdet_convnext_layer_decay(decay_type: str) -> None:
    # open-mmlab/mmdetection, configs/convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py @ cfb308e
    ow = dict(constructor="LearningRateDecayOptimizerConstructor",
              paramwise_cfg={"decay_rate": 0.95, "decay_type": decay_type, "num_layers": 6},
              optimizer=dict(type="AdamW", lr=0.0002, betas=(0.9, 0.999), weight_decay=0.05))
    model = ConvNeXtDet()
    plan = mmd.parse({"optim_wrapper": ow}, model=model)
    _check_groups(f"mmdet convnext {decay_type}", ow, model, plan)


def test_layer_decay_without_model_is_refused() -> None:
    with pytest.raises(optbridge.ConfigError, match=r"optim_wrapper\.constructor: .*needs the model"):
        mmd.parse(VIT_LAYER_DECAY)


# --------------------------------------------------------------------------- clip_grad

def test_clip_grad() -> None:
    # MMEngine's OptimWrapper clips all of the optimizer's parameters together: the optimizer-level clip
    one = mmd.parse({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1), clip_grad=dict(max_norm=35,
                                                                                              norm_type=2))})
    assert one.optimizers[0].clip == optbridge.Clip(max_norm=35.0, norm_type=2.0)
    value = mmd.parse({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1, weight_decay=1e-4),
                                             paramwise_cfg=dict(bias_decay_mult=0.0),
                                             clip_grad=dict(type="value", clip_value=0.5))})
    assert value.optimizers[0].clip == optbridge.Clip(value=0.5) and all(g.clip is None for g in value.groups)
    several = mmd.parse({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1, weight_decay=1e-4),
                                               paramwise_cfg=dict(bias_decay_mult=0.0), clip_grad=dict(max_norm=1.0))})
    assert len(several.groups) > 1 and several.optimizers[0].clip == optbridge.Clip(max_norm=1.0)
    with pytest.raises(optbridge.ConfigError, match=r"^optim_wrapper\.clip_grad\.max_norm: is required"):
        mmd.parse({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1), clip_grad=dict(norm_type=2))})


# --------------------------------------------------------------------------- detection and errors

def test_looks_like() -> None:
    assert mmd.looks_like({"optim_wrapper": {}}) and mmd.looks_like({"param_scheduler": []})
    assert not mmd.looks_like({"optimizer": {"type": "SGD"}, "scheduler": {}})


OW = dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9))
BAD = [
    ({"param_scheduler": [dict(type="LinearLR"), dict(type="CosineAnnealingLR", T_max=-1)]},
     r"^param_scheduler\[1\]\.T_max: must be an integer >= 0, got -1$"),
    ({"param_scheduler": [dict(type="CosineAnealingLR", T_max=5)]},
     r"^param_scheduler\[0\]\.type: is not an MMEngine 0\.10 scheduler \(did you mean 'CosineAnnealingLR'\?\)"),
    ({"param_scheduler": dict(type="StepLR")}, r"^param_scheduler\.step_size: is required \(StepLR\("),
    ({"param_scheduler": [dict(type="StepLR", step_size=2, gama=0.5)]},
     r"^param_scheduler\[0\]\.gama: is not an argument of StepLR \(did you mean 'gamma'\?\)"),
    ({"param_scheduler": [dict(type="LinearLR", begin=5, end=5)]}, r"^param_scheduler\[0\]\.end: must be larger"),
    ({"param_scheduler": [dict(type="LinearLR", convert_to_iter_based=True)]},
     r"^param_scheduler\[0\]\.convert_to_iter_based: needs the epoch length"),
    ({"param_scheduler": [dict(type="LinearLR", by_epoch=False, end=5), dict(type="StepLR", step_size=1)]},
     r"^param_scheduler\[1\]\.by_epoch: an epoch-based scheduler next to iteration-based ones needs"),
    ({"param_scheduler": [dict(type="LinearLR", start_factor=0.0, by_epoch=False, end=5)]},
     r"^param_scheduler\[0\]\.start_factor: must not be 0"),
    ({"param_scheduler": [dict(type="CosineAnnealingLR", T_max=50, eta_min=1e-3, by_epoch=False),
                          dict(type="StepLR", step_size=5, by_epoch=False)]},
     r"^param_scheduler\[0\]: CosineAnnealingLR computes each value from the current one .* "
     r"param_scheduler\[1\] \(StepLR\) changes 'lr' between its steps \(at update 5\)"),
    ({"param_scheduler": [dict(type="ReduceOnPlateauLR"), dict(type="LinearLR")]},
     r"^param_scheduler\[0\]: ReduceOnPlateau must be the only scheduler of 'lr'"),
    ({"param_scheduler": [dict(type="OneCycleLR", eta_max=0.1, pct_start=1)]},
     r"^param_scheduler\[0\]\.pct_start: must be a float"),
    ({"param_scheduler": [dict(type="LinearParamScheduler", param_name="weight_decy")]},
     r"^param_scheduler\[0\]\.param_name: must name a hyperparameter .*\(did you mean 'weight_decay'\?\)"),
    ({"param_scheduler": [dict(type="mmdet.QuadraticWarmupLR")]},
     r"^param_scheduler\[0\]\.type: is not an MMEngine 0\.10 scheduler.*only MMEngine's own"),
    ({"optim_wrapper": dict(optimizer=dict(type="SDG", lr=0.1))},
     r"^optim_wrapper\.optimizer\.type: must be one of .*\(did you mean 'SGD'\?\)"),
    ({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1, momentun=0.9))},
     r"^optim_wrapper\.optimizer\.momentun: is not an argument of torch\.optim\.SGD \(did you mean 'momentum'\?\)"),
    ({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1), paramwise_cfg=dict(norm_decay_mult=0.0))},
     r"^optim_wrapper\.paramwise_cfg\.norm_decay_mult: needs optimizer\.weight_decay"),
    ({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1, weight_decay=1e-4),
                            paramwise_cfg=dict(norm_decay_mult=0.0))},
     r"^optim_wrapper\.paramwise_cfg\.norm_decay_mult: needs the model \(pass model=\)"),
    ({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1), paramwise_cfg=dict(custom_keys={"a": dict(lr_mul=2)}))},
     r"^optim_wrapper\.paramwise_cfg\.custom_keys\['a'\]\.lr_mul: is not lr_mult.*\(did you mean 'lr_mult'\?\)"),
    ({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1), accumulative_counts=4)},
     r"^optim_wrapper\.accumulative_counts: must be 1"),
    ({"optim_wrapper": dict(optimizer=dict(type="SGD", lr=0.1), constructor="MyConstructor")},
     r"^optim_wrapper\.constructor: is not a supported optimizer wrapper constructor"),
    ({"optim_wrapper": dict(generator=dict(optimizer=dict(type="Adam")), discriminator=dict(optimizer=dict()))},
     r"^optim_wrapper: holds several optimizer wrappers \(generator, discriminator\)"),
    ({"param_scheduler": [dict(type="LinearLR")], "train_cfg": dict(type="EpochBasedTrainLop", max_epochs=3)},
     r"^train_cfg\.type: must be one of .*\(did you mean 'EpochBasedTrainLoop'\?\)"),
    ({"param_scheduler": [dict(type="LinearMomentum")], "optim_wrapper": dict(optimizer=dict(type="Adagrad"))},
     r"^param_scheduler\[0\]\.type: needs an optimizer with momentum or betas"),
    ({"param_scheduler": "LinearLR"}, r"^param_scheduler: must be a mapping"),
]


@pytest.mark.parametrize("doc, pattern", BAD, ids=[p[:40] for _, p in BAD])
def test_bad_configs_give_one_line_errors(doc: dict, pattern: str) -> None:
    doc = copy.deepcopy(doc)
    doc.setdefault("optim_wrapper", copy.deepcopy(OW))
    with pytest.raises(optbridge.ConfigError, match=pattern) as err:
        mmd.parse(doc)
    assert "\n" not in str(err.value)


def test_parse_never_leaks_raw_errors_on_mutated_configs() -> None:
    rng = np.random.default_rng(0)
    junk = [None, -1, 0, 0.5, "x", [], {}, [1, "a"], True, 1e400]
    base = copy.deepcopy(COMPOSED["cosine_then_hold"])
    base["optim_wrapper"] = dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9),
                                 paramwise_cfg=dict(custom_keys=KEYS))
    for _ in range(300):
        doc = copy.deepcopy(base)
        target = doc["param_scheduler"][int(rng.integers(3))] if rng.random() < 0.7 else doc["optim_wrapper"]
        key = list(target)[int(rng.integers(len(target)))]
        target[key] = junk[int(rng.integers(len(junk)))]
        try:
            mmd.parse(doc, steps_per_epoch=5)
        except optbridge.ConfigError:
            pass


if __name__ == "__main__":  # print the measured worst relative errors
    pytest.main([__file__, "-q", "-p", "no:cacheprovider"])
    worst = sys.modules["test_dialect_mmengine"].WORST
    print("\n".join(f"{k}: {v:.3g}" for k, v in sorted(worst.items(), key=lambda kv: -kv[1])[:10]))
