"""``record``: hand-driven training loops of real repositories, recorded without training, as plans.

Each loop (source repository, path and commit in its comment) is run twice: natively,
with real ``optimizer.step()`` calls (the oracle: every group's lr, momentum, betas and
weight decay before each update), and through ``record`` (nothing trains). Then:

* the recorded plan's trace equals the native values at every update, on the
  ``"reference"`` and ``"torch"`` backends (1e-12 relative, exact zeros; NaN before a
  group joins);
* the recovered schedules are closed forms where the loop computes one (checked on
  the nodes), and the caller's optimizer, schedulers and model are left exactly as
  they were (state dicts, ``requires_grad``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from _torch_setups import HYPERS, ResNet, Transfer, ViT, Yolo, assert_close, read, same_state, states  # noqa: E402
from real_setups import (  # noqa: E402
    backbone_finetuning,
    convnext,
    fairseq,
    swa_switch,
)
from torch import nn  # noqa: E402
from torch.optim import lr_scheduler as S  # noqa: E402

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge_adapters import torch as tb  # noqa: E402

record = tb.record


def loop(opt: torch.optim.Optimizer, steps: int, *, entries: Sequence[tuple[Any, str]] = (), spe: int = 1,
         before_step: Callable[[int, Any], Any] | None = None,
         on_epoch_start: Callable[[int, Any], Any] | None = None,
         metrics: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """The hand-driven loop, run for real: values before each ``optimizer.step()`` (NaN before a group joins)."""
    rows: list[list[list[float]]] = []
    used = 0
    for k in range(steps):
        if on_epoch_start is not None and k % spe == 0:
            on_epoch_start(k // spe, opt)
        if before_step is not None:
            before_step(k, opt)
        rows.append([[read(g, h) for g in opt.param_groups] for h in HYPERS])
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad = torch.ones_like(p)
        opt.step()
        end = (k + 1) % spe == 0
        for s, unit in entries:
            if unit == "iter" or end:
                if isinstance(s, S.ReduceLROnPlateau):
                    s.step(metrics[used])  # type: ignore[index]
                else:
                    s.step()
        if any(isinstance(s, S.ReduceLROnPlateau) and (u == "iter" or end) for s, u in entries):
            used += 1
    width = max(len(r[0]) for r in rows)
    out = {}
    for i, h in enumerate(HYPERS):
        a = np.full((width, steps), np.nan)
        for k, r in enumerate(rows):
            a[:len(r[i]), k] = r[i]
        out[h] = a
    return out


def check(plan: optbridge.Plan, want: dict[str, np.ndarray], what: str, metrics: Any = None) -> None:
    n = want["lr"].shape[1]
    for backend in ("reference", "torch"):
        tr = optbridge.trace(plan, n, backend=backend, metrics=metrics)
        for h in HYPERS:
            if h in tr:
                assert_close(tr[h], want[h], f"{what}/{backend}/{h}")
            else:
                assert np.all(np.isnan(want[h]) | (want[h] == want[h][:, :1]) | np.isnan(want[h][:, :1])), (what, h)


def nodes(plan: optbridge.Plan, hyper: str = "lr") -> list[ir.Node]:
    out = [plan.schedule[hyper]] if hyper in plan.schedule else []
    return out + [g.schedule[hyper] for g in plan.groups if hyper in g.schedule]


def kinds(node: ir.Node) -> set[str]:
    return {x.kind for x in ir.walk(node)}


# --------------------------------------------------------------------------- nanoGPT

class GPT(nn.Module):
    """karpathy/nanoGPT model.py names: transformer.wte/wpe/h.i.{ln_1,attn.c_attn,ln_2,mlp.c_fc}/ln_f, lm_head."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(dict(wte=nn.Embedding(16, d), wpe=nn.Embedding(8, d), h=nn.ModuleList(),
                                              ln_f=nn.LayerNorm(d)))
        for _ in range(2):
            block = nn.Module()
            block.ln_1 = nn.LayerNorm(d)
            block.attn = nn.Module()
            block.attn.c_attn = nn.Linear(d, 3 * d)
            block.ln_2 = nn.LayerNorm(d)
            block.mlp = nn.Module()
            block.mlp.c_fc = nn.Linear(d, 4 * d)
            self.transformer.h.append(block)
        self.lm_head = nn.Linear(d, 16, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT

    def configure_optimizers(self, weight_decay: float, learning_rate: float, betas: tuple[float, float]) -> Any:
        # karpathy/nanoGPT model.py @ e2221318e607eb5ee0669d6b7641af25a2111545: 2-D params decay, the rest not
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
        nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
        optim_groups = [{"params": decay_params, "weight_decay": weight_decay},
                        {"params": nodecay_params, "weight_decay": 0.0}]
        return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas)


def nanogpt_before_step(learning_rate: float = 6e-4, warmup_iters: int = 100, lr_decay_iters: int = 2500,
                        min_lr: float = 6e-5) -> Callable[[int, Any], None]:
    # karpathy/nanoGPT train.py @ e2221318e607eb5ee0669d6b7641af25a2111545: get_lr(it), written into every group
    def get_lr(it):
        if it < warmup_iters:
            return learning_rate * (it + 1) / (warmup_iters + 1)
        if it > lr_decay_iters:
            return min_lr
        decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
        return min_lr + coeff * (learning_rate - min_lr)

    def before_step(iter_num: int, optimizer: Any) -> None:
        lr = get_lr(iter_num)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
    return before_step


def test_nanogpt_get_lr() -> None:
    model = GPT()
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95))
    before = states(opt, [])
    plan = record(opt, 3000, model=model, before_step=nanogpt_before_step())
    assert same_state(states(opt, []), before)
    warm, cos = plan.schedule["lr"].parts  # type: ignore[attr-defined]
    assert warm.kind == "linear" and warm.steps == 100 and cos == ir.Cosine(steps=2400, end=6e-5, clamp=True)
    assert plan.total_steps == 3000 and plan.optimizers[0].options["betas"] == (0.9, 0.95)
    assert [g.select for g in plan.groups][0] == (optbridge.Selector(ndim=(2,)),)  # "2-D params decay"
    check(plan, loop(model.configure_optimizers(0.1, 6e-4, (0.9, 0.95)), 3000,
                     before_step=nanogpt_before_step()), "nanoGPT")


# --------------------------------------------------------------------------- YOLOv5

def yolov5(epochs: int = 12, nb: int = 30) -> tuple[Any, Any, list[tuple[Any, str]], Callable[[int, Any], None]]:
    # ultralytics/yolov5 train.py @ 0015b188fe15f2764271ba449a2f2cab0051117e: g0 BN weights (no decay), g1 weights
    # (decay), g2 biases (add_param_group), LambdaLR(lf) per epoch, and the warmup of every iteration ni <= nw:
    # np.interp of lr (bias group 2 from warmup_bias_lr down, the others from 0 up to initial_lr * lf(epoch)) and
    # of momentum (warmup_momentum up to momentum); hyp.scratch.yaml values
    hyp = {"lr0": 0.01, "lrf": 0.1, "momentum": 0.937, "weight_decay": 0.0005, "warmup_epochs": 3.0,
           "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}
    model = Yolo()
    g0, g1, g2 = [], [], []
    for v in model.modules():
        if hasattr(v, "bias") and isinstance(v.bias, nn.Parameter):
            g2.append(v.bias)
        if isinstance(v, nn.BatchNorm2d):
            g0.append(v.weight)
        elif hasattr(v, "weight") and isinstance(v.weight, nn.Parameter):
            g1.append(v.weight)
    optimizer = torch.optim.SGD(g0, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    optimizer.add_param_group({"params": g1, "weight_decay": hyp["weight_decay"]})
    optimizer.add_param_group({"params": g2})
    lf = lambda x: (1 - x / epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"]  # noqa: E731 - the original's lambda
    scheduler = S.LambdaLR(optimizer, lr_lambda=lf)
    nw = max(round(hyp["warmup_epochs"] * nb), 100)

    def before_step(ni: int, optimizer: Any) -> None:
        epoch = ni // nb
        if ni <= nw:
            xi = [0, nw]
            for j, x in enumerate(optimizer.param_groups):
                x["lr"] = np.interp(ni, xi, [hyp["warmup_bias_lr"] if j == 2 else 0.0, x["initial_lr"] * lf(epoch)])
                if "momentum" in x:
                    x["momentum"] = np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
    return model, optimizer, [(scheduler, "epoch")], before_step


def test_yolov5_warmup_over_a_per_epoch_lambda() -> None:
    model, opt, entries, before_step = yolov5()
    before = states(opt, entries)
    plan = record(opt, 360, model=model, schedulers=entries, before_step=before_step, steps_per_epoch=30)
    assert same_state(states(opt, entries), before)
    assert plan.steps_per_epoch == 30
    for node in nodes(plan) + nodes(plan, "momentum"):
        assert "table" not in kinds(node), node  # np.interp ramps and the held LambdaLR: closed forms
    _, opt2, entries2, before_step2 = yolov5()
    check(plan, loop(opt2, 360, entries=entries2, spe=30, before_step=before_step2), "YOLOv5")


# --------------------------------------------------------------------------- MAE / ConvNeXt layer decay

def mae(depth: int = 12, steps: int = 20, epochs: int = 10, warmup_epochs: int = 2):
    # facebookresearch/mae @ be47fef7a727943547afb0c670cf1b26034c3c89: util/lr_decay.py param_groups_lrd
    # (layer_decay 0.75, no weight decay for 1-D params and the tokens) and util/lr_sched.py adjust_learning_rate,
    # called per iteration with data_iter_step / len(data_loader) + epoch (engine_finetune.py)
    model = ViT(depth=depth)
    num_layers = depth + 1
    layer_scales = [0.75 ** (num_layers - i) for i in range(num_layers + 1)]

    def layer_id(name: str) -> int:
        if name in ("class_token", "encoder.pos_embedding") or name.startswith("conv_proj"):
            return 0
        if name.startswith("encoder.layers."):
            return int(name.split(".")[2].rsplit("_", 1)[1]) + 1
        return num_layers

    groups: dict[str, dict[str, Any]] = {}
    for n, p in model.named_parameters():
        if p.ndim == 1 or n in ("class_token", "encoder.pos_embedding"):
            g_decay, this_decay = "no_decay", 0.0
        else:
            g_decay, this_decay = "decay", 0.05
        lid = layer_id(n)
        key = f"layer_{lid}_{g_decay}"
        groups.setdefault(key, {"lr_scale": layer_scales[lid], "weight_decay": this_decay, "params": []})
        groups[key]["params"].append(p)
    opt = torch.optim.AdamW(list(groups.values()), lr=1e-3, betas=(0.9, 0.999))
    lr, min_lr = 1e-3, 1e-6

    def before_step(it: int, optimizer: Any) -> None:
        epoch = (it % steps) / steps + it // steps
        if epoch < warmup_epochs:
            value = lr * epoch / warmup_epochs
        else:
            value = min_lr + (lr - min_lr) * 0.5 * (1. + math.cos(math.pi * (epoch - warmup_epochs)
                                                                 / (epochs - warmup_epochs)))
        for param_group in optimizer.param_groups:
            param_group["lr"] = value * param_group["lr_scale"] if "lr_scale" in param_group else value
    return model, opt, before_step, steps * epochs


def test_mae_layer_decay() -> None:
    model, opt, before_step, n = mae()
    plan = record(opt, n, model=model, before_step=before_step, steps_per_epoch=20)
    assert len(plan.groups) == 28
    for g, node in zip(plan.groups, nodes(plan), strict=False):  # relative to each group's peak: 1e-3 * its lr_scale
        warm, cos = node.parts  # type: ignore[attr-defined]
        assert warm == ir.Linear(start_factor=0.0, end_factor=1.0, steps=40)
        assert (cos.kind, cos.steps, cos.clamp) == ("cosine", 160, True)
        assert cos.end == pytest.approx(1e-6 * g.options["lr"] / 1e-3, rel=1e-12)  # min_lr scaled too
    _, opt2, before_step2, _ = mae()
    check(plan, loop(opt2, n, before_step=before_step2), "MAE")


def test_convnext_lr_and_weight_decay_arrays() -> None:
    make, before_step = convnext()  # facebookresearch/ConvNeXt's arrays (real_setups.convnext)
    model, opt = make()
    plan = record(opt, 200, model=model, before_step=before_step)
    wd = nodes(plan, "weight_decay")
    assert wd == [ir.Cosine(steps=200, end=0.5, clamp=True, unit="iter")]
    assert "weight_decay" not in plan.groups[1].schedule and plan.groups[1].options["weight_decay"] == 0.0
    check(plan, loop(make()[1], 200, before_step=before_step), "ConvNeXt")


# --------------------------------------------------------------------------- DeiT with timm's scheduler

def test_deit_timm_cosine_with_warmup() -> None:
    # facebookresearch/deit main.py: create_optimizer(args, model) / create_scheduler(args, optimizer) from timm,
    # lr_scheduler.step(epoch) after every epoch; timm's own code (scheduler and param groups), loaded as
    # tests/test_dialect_timm.py does (timm's package __init__ needs torchvision)
    from test_dialect_timm import GROUPS, SCHED

    def make() -> Any:
        model = ViT()
        opt = torch.optim.AdamW(GROUPS.param_groups_weight_decay(model, 0.05), lr=5e-4)
        sched = SCHED.CosineLRScheduler(opt, t_initial=30, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6)
        return model, opt, sched

    def on_epoch_start(sched: Any) -> Callable[[int, Any], None]:
        def f(epoch: int, optimizer: Any) -> None:
            if epoch > 0:
                sched.step(epoch)  # the step after epoch - 1 ends: timm's lr for `epoch`
        return f

    model, opt, sched = make()
    plan = record(opt, 120, model=model, on_epoch_start=on_epoch_start(sched), steps_per_epoch=4)
    node = nodes(plan)[0]
    assert node.unit == "epoch" or any(x.unit == "epoch" for x in ir.walk(node))  # held per epoch
    _, opt2, sched2 = make()
    check(plan, loop(opt2, 120, spe=4, on_epoch_start=on_epoch_start(sched2)), "DeiT")


# --------------------------------------------------------------------------- fairseq inverse_sqrt

def test_fairseq_inverse_sqrt() -> None:
    make, before_step = fairseq()  # fairseq's inverse_sqrt step_update (real_setups.fairseq)
    model, opt = make()
    plan = record(opt, 400, model=model, before_step=before_step)
    assert all("table" not in kinds(n) for n in nodes(plan))
    check(plan, loop(make()[1], 400, before_step=before_step), "fairseq")


# --------------------------------------------------------------------------- groups that join mid-run

def test_lightning_backbone_finetuning_adds_the_backbone_at_an_epoch() -> None:
    make = backbone_finetuning  # Lightning's BackboneFinetuning callback (real_setups.backbone_finetuning)

    model, opt, entries, on_epoch_start = make()
    flags = [p.requires_grad for p in model.parameters()]
    before = states(opt, entries)
    plan = record(opt, 60, model=model, schedulers=entries, on_epoch_start=on_epoch_start, steps_per_epoch=5)
    assert [p.requires_grad for p in model.parameters()] == flags and same_state(states(opt, entries), before)
    assert len(opt.param_groups) == 1  # the group added during the recording is gone again
    late = plan.groups[1]
    assert late.options["start_step"] == 15 and late.select == (optbridge.Selector(names=("backbone.*",)),)
    _, opt2, entries2, on_epoch_start2 = make()
    want = loop(opt2, 60, entries=entries2, spe=5, on_epoch_start=on_epoch_start2)
    assert np.all(np.isnan(want["lr"][1, :15])) and not np.any(np.isnan(want["lr"][1, 15:]))
    check(plan, want, "BackboneFinetuning")
    # the torch backend adds the group at its start_step (the update guard's join)
    setup = optbridge.to_torch(plan, Transfer())
    assert len(setup.optimizer.param_groups) == 1
    for _ in range(16):
        setup.optimizer.step()
        setup.scheduler.step()
    assert len(setup.optimizer.param_groups) == 2 and setup.optimizer.param_groups[1]["lr"] == want["lr"][1, 16]


def test_start_step_plans_refuse_elsewhere_until_supported() -> None:
    plan = optbridge.Plan(optimizers=(optbridge.OptimizerSpec(type="SGD", groups=(
        optbridge.Group(name="a", select=(optbridge.Selector(rest=True),)),
        optbridge.Group(name="late", options={"start_step": 3, "lr": 0.5}, schedule={"lr": ir.Exponential(gamma=0.5)}),
    )),))
    tr = optbridge.trace(plan, 6)
    assert np.all(np.isnan(tr["lr"][1, :3])) and tr["lr"][1, 3] == 0.5 * 0.5 ** 3  # the plan's clock
    np.testing.assert_array_equal(optbridge.trace(plan, 6, backend="torch")["lr"], tr["lr"])
    with pytest.raises(optbridge.ConfigError, match=r"groups\[1\].start_step: must be >= the start_step of the "
                       "group before it"):
        optbridge.OptimizerSpec(type="SGD", groups=(optbridge.Group(name="x", options={"start_step": 5}),
                                                    optbridge.Group(name="y")))
    from optbridge.plan import check_group_features
    with pytest.raises(optbridge.UnsupportedError, match="groups.late.start_step: cannot run on backend 'megengine'"):
        check_group_features(plan, "megengine")


# --------------------------------------------------------------------------- what from_torch cannot take

def test_plateau_stacked_with_a_warmup_records_with_its_metrics() -> None:
    # the Lightning warmup + plateau stack from_torch refuses (the IR has no plateau over a product): with the
    # metrics known, the recording is exact (the plateau's drops come back as steps in hindsight)
    metrics = [3.0, 2.0, 2.5, 2.4, 2.3, 1.0, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0]

    def make() -> Any:
        model = ResNet()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        return model, opt, [(S.LinearLR(opt, 0.01, total_iters=15), "iter"),
                            (S.ReduceLROnPlateau(opt, factor=0.2, patience=0), "epoch")]

    model, opt, entries = make()
    plan = record(opt, 60, model=model, schedulers=entries, steps_per_epoch=5, metrics=metrics)
    _, opt2, entries2 = make()
    check(plan, loop(opt2, 60, entries=entries2, spe=5, metrics=metrics), "warmup + plateau")


def test_swa_switch_from_cosine_to_swalr() -> None:
    make = swa_switch  # the SWA example of torch's docs (real_setups.swa_switch)

    model, opt, f = make()
    plan = record(opt, 60, model=model, on_epoch_start=f, steps_per_epoch=3)
    _, opt2, f2 = make()
    check(plan, loop(opt2, 60, spe=3, on_epoch_start=f2), "SWA switch")


# --------------------------------------------------------------------------- errors and state

def test_record_errors_name_what_went_wrong() -> None:
    model = ResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(optbridge.ConfigError, match="steps: must be a positive integer"):
        record(opt, 0)
    with pytest.raises(optbridge.ConfigError, match="optimizer: must be a torch.optim optimizer"):
        record(object(), 5)
    with pytest.raises(optbridge.ConfigError, match="before_step: must be a function"):
        record(opt, 5, before_step=3)
    with pytest.raises(optbridge.ConfigError, match=r"schedulers\[0\]: must be a scheduler"):
        record(opt, 5, schedulers=[(object(), "iter")])
    with pytest.raises(optbridge.ConfigError, match="metrics: needs a value for the ReduceLROnPlateau step after "
                       "update 2"):
        record(opt, 5, schedulers=S.ReduceLROnPlateau(opt), metrics=[1.0, 2.0])

    def bad(step: int, optimizer: Any) -> None:
        if step == 3:
            raise KeyError("boom")
    before = states(opt, [])
    with pytest.raises(tb.RecordError, match=r"update 3: before_step\(3, optimizer\) raised KeyError"):
        record(opt, 5, before_step=bad)
    assert same_state(states(opt, []), before)  # put back even when the loop's code fails


def test_tensor_lr_is_recorded_as_float32_and_put_back() -> None:
    p = nn.Parameter(torch.zeros(2, dtype=torch.float32))
    lr = torch.tensor(0.5, dtype=torch.float32)
    opt = torch.optim.SGD([{"params": [p], "lr": lr}], momentum=0.9)
    sched = S.ExponentialLR(opt, 0.9)
    plan = record(opt, 20, schedulers=sched)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 0.5  # the same tensor, its value restored
    assert plan.groups[0].options["lr_dtype"] == "float32"
    p2 = nn.Parameter(torch.zeros(2, dtype=torch.float32))
    opt2 = torch.optim.SGD([{"params": [p2], "lr": torch.tensor(0.5, dtype=torch.float32)}], momentum=0.9)
    check(plan, loop(opt2, 20, entries=[(S.ExponentialLR(opt2, 0.9), "iter")]), "tensor lr")


def test_record_deep_copies_are_not_needed() -> None:
    # the caller's scheduler continues afterwards exactly as if record had never run
    model = ResNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=0.3, total_steps=50)
    twin = copy.deepcopy((opt, sched))
    record(opt, 30, schedulers=sched)
    a = loop(opt, 40, entries=[(sched, "iter")])
    b = loop(twin[0], 40, entries=[(twin[1], "iter")])
    for h in HYPERS:
        np.testing.assert_array_equal(a[h], b[h])
