"""The conformance family ``real-setups``: real public training setups, and the data kept honest.

Each entry of :data:`SETUPS` rebuilds a public training setup (repository, path and commit in its
``source``) and runs it through the importer a user would call: ``optbridge.from_torch`` or
``from_lightning`` on the live objects, ``optbridge.record`` on the hand-driven loop, or the library's own
config through ``optbridge.load`` (MMEngine, timm, Hugging Face dialects). Its case,
``conformance/cases/<id>.yaml``, stores what the import gave: the canonical plan for live objects and loops,
the library's config itself for configs (the canonical plan the dialect made when a model is needed). Then:

* the stored plan equals a fresh import of the rebuilt setup (float fields within 1e-12 relative: recovered
  closed forms are fitted in float64) and the case's metadata (source, steps, metrics) equals the entry;
* the stored plan's reference trace equals the native run of the original setup at every update, per group
  and hyperparameter (lr, momentum, betas, weight decay): torch's schedulers stepped the way the original
  loop steps them, the loop's own lr code, or the library's own schedulers (MMEngine's, timm's, the
  Trainer's); 1e-12 relative (float64 both sides; recursive schedulers and closed forms differ by
  accumulated rounding, the measured worst is far below), exact zeros exact, NaN exactly where a group does
  not have the hyperparameter or has not joined yet. Config cases compare per parameter, through the plan's
  group resolution over the rebuilt model.

``python tests/test_real_setups_cases.py`` (re)writes the case files from the entries.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("mmengine")
pytest.importorskip("lightning")
from _torch_setups import HYPERS, assert_close, native  # noqa: E402
from real_setups import (  # noqa: E402
    DeiTLike,
    SwinLike,
    convnext,
    drive,
    fairseq,
    lightning_imagenet,
    mmengine_native,
    swa_switch,
    tv_mobilenet_v3,
)
from test_torch_real_setups import (  # noqa: E402
    basicsr,
    d2_warmup_multistep,
    detr,
    hf,
    llava_pretrain,
    qlora,
    tv_detection,
    tv_resnet_steplr,
    tv_vit_warmup_cosine,
)
from test_torch_real_setups import yolov5 as yolov5_lambdalr  # noqa: E402
from test_torch_record import GPT, loop, mae, nanogpt_before_step  # noqa: E402
from test_torch_record import yolov5 as yolov5_warmup  # noqa: E402

import optbridge  # noqa: E402
from optbridge.plan import has_hyper, hyper_base  # noqa: E402
from optbridge.serialize import to_dict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "conformance" / "cases"
FAMILY = "real-setups"
#: Float fields of a stored plan and of a fresh import agree to this (relative; recovered closed forms are fits).
DOC_RTOL = 1e-12


@dataclass(frozen=True)
class Source:
    """Where a setup comes from (the case's ``source``)."""

    repository: str
    path: str
    commit: str
    importer: str
    rebuilt: str
    dialect: str | None = None

    def doc(self) -> dict[str, Any]:
        d = {"repository": self.repository, "path": self.path, "commit": self.commit, "importer": self.importer,
             "rebuilt": " ".join(self.rebuilt.split())}
        return d | ({"dialect": self.dialect} if self.dialect else {})


@dataclass
class Imported:
    """A fresh import and the native run it must equal.

    ``plan`` is the case's plan document; ``native[h]`` holds a row per plan group (trace order) or, with
    ``rows``, per parameter (``rows[i]`` names the plan group of row ``i``).
    """

    plan: dict[str, Any]
    native: dict[str, np.ndarray]
    rows: list[str] | None = None
    metrics: list[float] | None = None


@dataclass(frozen=True)
class Setup:
    """One real setup of the family: its case id, description, source, horizon, and how to import and run it."""

    id: str
    description: str
    source: Source
    steps: int
    run: Callable[[], Imported] = field(repr=False)
    tags: tuple[str, ...] = ()
    steps_by_backend: tuple[tuple[str, int], ...] = ()   # the case's steps_by_backend, with steps_reason
    steps_reason: str = ""

    def case_doc(self, imported: Imported) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "family": FAMILY, "description": " ".join(self.description.split()),
                               "source": self.source.doc(), "tags": [self.source.importer.replace("_", "-"),
                                                                      *self.tags],
                               "plan": imported.plan, "steps": self.steps}
        if self.steps_by_backend:
            doc["steps_by_backend"] = dict(self.steps_by_backend)
            doc["steps_reason"] = " ".join(self.steps_reason.split())
        if imported.metrics is not None:
            doc["metrics"] = imported.metrics
        return doc


def _quiet(f: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ReplayedWarning / SampledLambdaWarning / library chatter: not checked here
        return f()


# --------------------------------------------------------------------------- importers on live objects and loops

def torch_setup(make: Callable[[], Any], steps: int, *, spe: int = 1, skip: int = 0, total: bool = False,
                metrics: Sequence[float] | None = None) -> Callable[[], Imported]:
    """from_torch on ``make()``'s objects after ``skip`` native updates; native values over ``steps``."""
    def run() -> Imported:
        model, opt, entries = make()
        want, copied = native(opt, entries, steps, spe=spe, metrics=metrics, snap=skip, extra=model)
        model, opt, entries, used = copied
        n = steps - skip
        plan = _quiet(lambda: optbridge.from_torch(opt, entries, model=model, steps_per_epoch=spe,
                                                   total_steps=n if total else None))
        return Imported(to_dict(plan), {h: v[:, skip:] for h, v in want.items()},
                        metrics=None if metrics is None else list(metrics[used:]))
    return run


def lightning_setup(make: Callable[[], Any], steps: int, *, spe: int, total: bool) -> Callable[[], Imported]:
    """from_lightning on what ``configure_optimizers()`` returns; natively, Lightning's default interval
    (``epoch``: each scheduler steps after an epoch's last update)."""
    def run() -> Imported:
        model, returned = make()
        plan = _quiet(lambda: optbridge.from_lightning(returned, model=model, steps_per_epoch=spe,
                                                       total_steps=steps if total else None))
        _, (optimizers, schedulers) = make()
        want, _ = native(optimizers[0], [(s, "epoch") for s in schedulers], steps, spe=spe)
        return Imported(to_dict(plan), want)
    return run


def record_setup(make: Callable[[], Any], steps: int, *, spe: int | None = None) -> Callable[[], Imported]:
    """``optbridge.record`` of the loop ``make()`` returns (``model, optimizer, loop keywords``: ``entries``,
    ``before_step``, ``on_epoch_start``); natively, the same loop run for real (``test_torch_record.loop``)."""
    def run() -> Imported:
        model, opt, kw = make()
        plan = optbridge.record(opt, steps, model=model, schedulers=kw.get("entries"),
                                before_step=kw.get("before_step"), on_epoch_start=kw.get("on_epoch_start"),
                                steps_per_epoch=spe)
        _, opt2, kw2 = make()
        return Imported(to_dict(plan), loop(opt2, steps, spe=spe or 1, **kw2))
    return run


def _nanogpt() -> Any:
    model = GPT()
    return model, model.configure_optimizers(0.1, 6e-4, (0.9, 0.95)), {"before_step": nanogpt_before_step()}


def _yolov5() -> Any:
    model, opt, entries, before_step = yolov5_warmup()
    return model, opt, {"entries": entries, "before_step": before_step}


def _mae() -> Any:
    model, opt, before_step, _ = mae()
    return model, opt, {"before_step": before_step}


def _convnext() -> Any:
    make, before_step = convnext()
    model, opt = make()
    return model, opt, {"before_step": before_step}


def _fairseq() -> Any:
    make, before_step = fairseq()
    model, opt = make()
    return model, opt, {"before_step": before_step}


def _swa_docs() -> Any:
    model, opt, on_epoch_start = swa_switch(t_max=300, swa_start=160, anneal_epochs=10)  # SWALR's default anneal
    return model, opt, {"on_epoch_start": on_epoch_start}


# --------------------------------------------------------------------------- library configs

def _group_names(plan: optbridge.Plan) -> list[str]:
    return [g.name for g in plan.groups if g.frozen != "exclude"]


def _param_rows(plan: optbridge.Plan, model: torch.nn.Module) -> list[str]:
    """The plan group of each trainable parameter of ``model`` (``named_parameters`` order)."""
    from test_dialect_mmengine import resolve
    group_of = {name: g.name for g in resolve(plan, model).groups for name in g.params}
    return [group_of[n] for n, p in model.named_parameters() if p.requires_grad]


def _spread(opt: torch.optim.Optimizer, model: torch.nn.Module, values: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-group native values to one row per trainable parameter of ``model``."""
    where = {id(p): i for i, g in enumerate(opt.param_groups) for p in g["params"]}
    rows = [where[id(p)] for p in model.parameters() if p.requires_grad]
    return {h: v[rows] for h, v in values.items()}


def mmengine_setup(cfg: dict[str, Any], model: Callable[[], torch.nn.Module], steps: int, spe: int, *,
                   with_model: bool = False) -> Callable[[], Imported]:
    """The MMEngine config as the case's plan (or the dialect's canonical plan, when its paramwise_cfg needs the
    model); natively, MMEngine's own constructor and schedulers over ``model()``."""
    def run() -> Imported:
        from optbridge.dialects import mmengine as mmd
        doc = {**cfg, "steps_per_epoch": spe} if spe > 1 else dict(cfg)
        m = model()
        plan = mmd.parse(doc, model=m if with_model else None)
        want = mmengine_native(cfg, m, steps, spe)
        return Imported(to_dict(plan) if with_model else doc, want, rows=_param_rows(plan, m))
    return run


def timm_setup(doc: dict[str, Any], epochs: int) -> Callable[[], Imported]:
    """The timm config as the case's plan; natively, timm's ``param_groups_weight_decay`` on a DeiT-shaped model
    under AdamW (as ``create_optimizer_v2`` builds it: the groups carry the weight decay, the optimizer 0) and
    timm's ``create_scheduler_v2`` scheduler stepped as DeiT's main.py / timm's train.py step it."""
    def run() -> Imported:
        from real_setups import timm_native
        from test_dialect_timm import GROUPS
        plan = optbridge.load(doc)
        o, s = doc["optimizer"], dict(doc["scheduler"])
        upe = s.pop("updates_per_epoch")
        model = DeiTLike()
        groups = GROUPS.param_groups_weight_decay(model, o["weight_decay"], no_weight_decay_list=list(
            model.no_weight_decay()))
        opt = torch.optim.AdamW(groups, lr=o["lr"], eps=o["eps"], weight_decay=0.0)
        want = timm_native(opt, s, epochs, upe)
        return Imported(doc, _spread(opt, model, want), rows=_param_rows(plan, model))
    return run


def hf_setup(doc: dict[str, Any], model: Callable[[], torch.nn.Module], steps: int) -> Callable[[], Imported]:
    """The TrainingArguments fields as the case's plan; natively, a real ``transformers.Trainer`` with those
    arguments builds the optimizer, its groups and the scheduler (``create_optimizer_and_scheduler``), which
    steps after every update."""
    def run() -> Imported:
        import transformers
        plan = optbridge.load(doc)
        fields = {k: v for k, v in doc.items() if k not in ("dialect", "steps_per_epoch")}
        m = model()
        with tempfile.TemporaryDirectory() as out:
            args = transformers.TrainingArguments(output_dir=out, report_to=[], use_cpu=True, **fields)
            trainer = transformers.Trainer(model=m, args=args)
            trainer.create_optimizer_and_scheduler(num_training_steps=steps)
        opt, sched = trainer.optimizer, trainer.lr_scheduler
        want = _quiet(lambda: drive(opt, steps, lambda k: sched.step()))
        return Imported(doc, _spread(opt, m, want), rows=_param_rows(plan, m))
    return run


def _three() -> torch.nn.Module:
    from test_dialect_mmengine import Three
    return Three().double()


def _opt() -> torch.nn.Module:
    import transformers
    cfg = transformers.OPTConfig(vocab_size=32, hidden_size=8, ffn_dim=16, num_hidden_layers=2, num_attention_heads=2,
                                 max_position_embeddings=16, word_embed_proj_dim=8)
    return transformers.OPTForCausalLM(cfg)


# open-mmlab/mmdetection configs/_base_/schedules/schedule_1x.py @ 19bceba56284d440278e80cfde1d95460330ccbb
SCHEDULE_1X = {
    "train_cfg": {"type": "EpochBasedTrainLoop", "max_epochs": 12, "val_interval": 1},
    "param_scheduler": [
        {"type": "LinearLR", "start_factor": 0.001, "by_epoch": False, "begin": 0, "end": 500},
        {"type": "MultiStepLR", "begin": 0, "end": 12, "by_epoch": True, "milestones": [8, 11], "gamma": 0.1}],
    "optim_wrapper": {"type": "OptimWrapper",
                      "optimizer": {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0001}}}

# open-mmlab/mmsegmentation configs/_base_/schedules/schedule_160k.py @ 229a6c8d554a9ac145e8941769bf13bd45c9123e
SCHEDULE_160K = {
    "optim_wrapper": {"type": "OptimWrapper",
                      "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005},
                      "clip_grad": None},
    "param_scheduler": [{"type": "PolyLR", "eta_min": 1.0e-4, "power": 0.9, "begin": 0, "end": 160000,
                         "by_epoch": False}],
    "train_cfg": {"type": "IterBasedTrainLoop", "max_iters": 160000, "val_interval": 500}}

# open-mmlab/mmpose configs/body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py
# @ b205741ede89d48e5bce29c230be3c0a6c672de7
HRNET_210E = {
    "train_cfg": {"max_epochs": 210, "val_interval": 10},
    "optim_wrapper": {"optimizer": {"type": "Adam", "lr": 5.0e-4}},
    "param_scheduler": [
        {"type": "LinearLR", "begin": 0, "end": 500, "start_factor": 0.001, "by_epoch": False},
        {"type": "MultiStepLR", "begin": 0, "end": 210, "milestones": [170, 200], "gamma": 0.1, "by_epoch": True}]}

# open-mmlab/mmpretrain configs/_base_/schedules/imagenet_bs1024_adamw_swin.py
# @ 14ced91f8cd62d995c39432e7a50ac7e3d86bddc
SWIN_ADAMW = {
    "optim_wrapper": {
        "optimizer": {"type": "AdamW", "lr": 5.0e-4 * 1024 / 512, "weight_decay": 0.05, "eps": 1.0e-8,
                      "betas": [0.9, 0.999]},
        "paramwise_cfg": {"norm_decay_mult": 0.0, "bias_decay_mult": 0.0,
                          "custom_keys": {".absolute_pos_embed": {"decay_mult": 0.0},
                                          ".relative_position_bias_table": {"decay_mult": 0.0}}}},
    "param_scheduler": [
        {"type": "LinearLR", "start_factor": 1.0e-3, "by_epoch": True, "end": 20, "convert_to_iter_based": True},
        {"type": "CosineAnnealingLR", "eta_min": 1.0e-5, "by_epoch": True, "begin": 20}],
    "train_cfg": {"by_epoch": True, "max_epochs": 300, "val_interval": 1}}

# facebookresearch/deit main.py @ 100e3cd2a95d4375166952451b7d8ea59f6b9432: its argparse defaults
DEIT_BASE = {
    "dialect": "timm",
    "optimizer": {"opt": "adamw", "lr": 5.0e-4 * 1024 / 512.0, "eps": 1.0e-8, "weight_decay": 0.05,
                  "no_weight_decay_list": ["cls_token", "dist_token", "pos_embed"]},
    "scheduler": {"sched": "cosine", "num_epochs": 300, "warmup_epochs": 5, "warmup_lr": 1.0e-6, "min_lr": 1.0e-5,
                  "decay_epochs": 30, "decay_rate": 0.1, "cooldown_epochs": 10, "patience_epochs": 10,
                  "step_on_epochs": True, "updates_per_epoch": 1251}}

# tatsu-lab/stanford_alpaca README.md @ 7f0853214d2d4cd732d6f33622566a10e317a903: the fine-tuning command
ALPACA = {"dialect": "hf", "learning_rate": 2.0e-5, "weight_decay": 0.0, "warmup_ratio": 0.03,
          "lr_scheduler_type": "cosine", "num_train_epochs": 3, "steps_per_epoch": 406}

TV = ("pytorch/vision", "references/classification/train.py", "017e9b99b5daddec3d82d5b05fe26f6834c48fa9")

SETUPS: list[Setup] = [
    # ----------------------------------------------------------------------- from_torch
    Setup("real-torchvision-resnet-steplr",
          "torchvision's classification reference with its defaults (ResNet, SGD lr 0.1 momentum 0.9 wd 1e-4, "
          "StepLR(30, 0.1) stepped after every epoch, 90 epochs): an epoch-clock staircase.",
          Source(*TV, "from_torch", "ResNet-18 parameter names on a 4-channel model; 90 epochs of 2 updates "
                 "(ImageNet's are 5005 at batch 256)."),
          180, torch_setup(tv_resnet_steplr, 180, spe=2), ("epoch-clock",)),
    Setup("real-torchvision-resnet-steplr-resumed",
          "The same torchvision run imported at epoch 45 of 90 from the live, stepped optimizer and StepLR: the plan "
          "starts where the scheduler stands (one decay done, the next at epoch 60).",
          Source(*TV, "from_torch", "As real-torchvision-resnet-steplr; 90 updates (45 epochs) run natively before "
                 "the import, the plan covers the remaining 90."),
          90, torch_setup(tv_resnet_steplr, 180, spe=2, skip=90), ("epoch-clock", "resume")),
    Setup("real-torchvision-vit-b-16-warmup-cosine",
          "torchvision's vit_b_16 recipe: AdamW lr 0.003 wd 0.3 with the normalization layers' weight decay at 0, "
          "SequentialLR[LinearLR(0.033) warmup, CosineAnnealingLR] per epoch.",
          Source(*TV, "from_torch", "torchvision ViT parameter names (2 layers of width 8); the recipe's flags "
                 "(README.md: --opt adamw --lr 0.003 --wd 0.3 --lr-scheduler cosineannealinglr --lr-warmup-method "
                 "linear --lr-warmup-decay 0.033) plus --norm-weight-decay 0.0 (split_normalization_params, as the "
                 "vit_l_16/Swin recipes pass); 60 epochs with 6 warmup epochs (the recipe: 300 and 30), 2 updates "
                 "per epoch."),
          120, torch_setup(tv_vit_warmup_cosine, 120, spe=2, total=True), ("epoch-clock", "no-decay-group")),
    Setup("real-torchvision-mobilenet-v3-rmsprop",
          "torchvision's MobileNetV3 recipe: RMSprop(lr 0.064, momentum 0.9, wd 1e-5, eps 0.0316, alpha 0.9) with "
          "StepLR(step_size=2, gamma=0.973) after every epoch for 600 epochs: 299 small decays.",
          Source(*TV, "from_torch", "The README.md recipe flags (--opt rmsprop --lr 0.064 --wd 0.00001 "
                 "--lr-step-size 2 --lr-gamma 0.973 --epochs 600) on ResNet parameter names; epochs of 2 updates."),
          1200, torch_setup(tv_mobilenet_v3, 1200, spe=2), ("epoch-clock",)),
    Setup("real-torchvision-fasterrcnn-warmup-multistep",
          "torchvision's detection reference: a per-iteration LinearLR warmup in epoch 0 stacked with "
          "MultiStepLR([16, 22]) per epoch (a chain on two clocks), SGD lr 0.02, the frozen stem excluded.",
          Source("pytorch/vision", "references/detection/train.py", "3ceb056d4c4a2d79ccdc65cbd2342b0e89a7ae47",
                 "from_torch", "FasterRCNN parameter names with the stem frozen (trainable_backbone_layers); the "
                 "warmup of engine.py @ 738bb42169380ef4d56afdf0bb5eb3e83b66815e (start_factor 1/1000 over "
                 "min(1000, len(data_loader) - 1) iterations); 26 epochs (the fasterrcnn recipe: --epochs 26 "
                 "--lr-steps 16 22) of 10 updates, so the warmup lasts 9."),
          260, torch_setup(tv_detection, 260, spe=10), ("epoch-clock", "frozen")),
    Setup("real-detr-steplr",
          "DETR's main.py defaults: AdamW lr 1e-4 for the transformer, 1e-5 for the backbone, weight decay 1e-4, "
          "StepLR(lr_drop=200) stepped per epoch over 300 epochs.",
          Source("facebookresearch/detr", "main.py", "fb60557ee378f74b918fcca715b8b2546c73f077", "from_torch",
                 "DETR parameter names (ResNet backbone, a 1-layer nn.Transformer); epochs of 1 update."),
          300, torch_setup(detr, 300), ("epoch-clock",)),
    Setup("real-detectron2-warmup-multistep",
          "detectron2's WarmupMultiStepLR (a torch LRScheduler subclass: linear warmup from 0.001, then x0.1 at each "
          "step) with its default param groups (no weight decay on norms), replayed and recovered as closed forms.",
          Source("facebookresearch/detectron2", "detectron2/solver/lr_scheduler.py",
                 "606437e6008b3e91acfff572061dbd1d71110087", "from_torch",
                 "The class as in the file (logging dropped) on FasterRCNN parameter names; groups as "
                 "solver/build.py get_default_optimizer_params with WEIGHT_DECAY_NORM 0; STEPS (120, 160), "
                 "WARMUP_ITERS 50 over 200 updates (the COCO configs: (210000, 250000), 1000, 270000)."),
          200, torch_setup(d2_warmup_multistep, 200, total=True), ("replayed",)),
    Setup("real-hf-trainer-bert-linear-warmup",
          "The Hugging Face Trainer's optimizer (AdamW, decay / no-decay groups by get_decay_parameter_names) with "
          "get_scheduler('linear') -- a LambdaLR over a Python function -- replayed and recovered as two linear "
          "pieces.",
          Source("huggingface/transformers", "src/transformers/optimization.py",
                 "ad1fc9639f2e7b6808a2ca982c0a9b3134d76ee8", "from_torch",
                 "The installed transformers 4.57.6 runs (get_scheduler, Trainer.get_decay_parameter_names) on "
                 "BERT parameter names; lr 5e-5, weight decay 0.01, 20 warmup steps of 200."),
          200, torch_setup(hf("linear"), 200, total=True), ("replayed", "no-decay-group")),
    Setup("real-llava-pretrain-projector",
          "LLaVA's pretraining stage: only mm_projector trains (lr 2e-5 through mm_projector_lr), so two of "
          "LLaVATrainer's four groups are empty; the rest of the model is frozen; cosine with warmup ratio 0.03.",
          Source("haotian-liu/LLaVA", "llava/train/llava_trainer.py", "7f5287c2b089abe2e26355769ffa17719d0a020d",
                 "from_torch", "LLaVATrainer.create_optimizer's groups on LLaVA parameter names; scripts/pretrain.sh "
                 "(lr 1e-3, cosine, warmup_ratio 0.03, weight_decay 0) with mm_projector_lr 2e-5; 200 updates "
                 "with 6 warmup steps."),
          200, torch_setup(llava_pretrain, 200, total=True), ("replayed", "empty-groups", "frozen")),
    Setup("real-qlora-lora-constant",
          "QLoRA: only the LoRA adapters train (the 4-bit base is frozen), AdamW lr 2e-4 constant; the Trainer's "
          "no-decay group holds no trainable parameter and is empty.",
          Source("artidoro/qlora", "qlora.py", "7f4e95a68dc076bea9b3a413d2b512eca6d004e5", "from_torch",
                 "A peft-wrapped causal LM's parameter names (2 layers with LoRA on q_proj/v_proj); the Trainer's "
                 "groups and get_constant_schedule (learning_rate 2e-4, weight_decay 0.0); 100 updates."),
          100, torch_setup(qlora, 100, total=True), ("empty-groups", "frozen")),
    Setup("real-yolov5-lambdalr-one-cycle",
          "YOLOv5's three groups (BN weights without decay, weights with decay 5e-4, biases) under SGD nesterov "
          "with LambdaLR(one_cycle(1, lrf=0.1, epochs)) stepped per epoch: a plain Python lambda, replayed.",
          Source("ultralytics/yolov5", "train.py", "0015b188fe15f2764271ba449a2f2cab0051117e", "from_torch",
                 "YOLOv5 parameter names (two Conv blocks and Detect); hyp.scratch.yaml (lr0 0.01, lrf 0.1, "
                 "momentum 0.937, weight_decay 0.0005) with --cos-lr; 12 epochs of 5 updates (the default: 300)."),
          60, torch_setup(yolov5_lambdalr(True), 60, spe=5, total=True), ("replayed", "epoch-clock")),
    Setup("real-basicsr-msrresnet-multistep-restart",
          "BasicSR's MultiStepRestartLR (a torch LRScheduler subclass): x0.5 at each milestone, restarting at "
          "weight 0.5, under Adam(2e-4, betas 0.9/0.99); replayed and recovered as a staircase and a piecewise part.",
          Source("XPixelGroup/BasicSR", "basicsr/models/lr_scheduler.py", "35ac620b51de437a529d73228276d8a50e1046d2",
                 "from_torch", "The class as in the file on MSRResNet parameter names; the optimizer of "
                 "options/train/SRResNet_SRGAN/train_MSRResNet_x4.yml; milestones [40, 80, 140], restarts [0, 100] "
                 "with weights [1, 0.5] over 200 updates (iterations shortened)."),
          200, torch_setup(basicsr(True), 200, total=True), ("replayed",)),
    Setup("real-basicsr-msrresnet-cosine-restart",
          "BasicSR's CosineAnnealingRestartLR (a torch LRScheduler subclass): four cosine periods with restart "
          "weights [1, 0.5, 0.5, 0.5] down to eta_min 1e-7, as train_MSRResNet_x4.yml sets it, replayed.",
          Source("XPixelGroup/BasicSR", "basicsr/models/lr_scheduler.py", "35ac620b51de437a529d73228276d8a50e1046d2",
                 "from_torch", "The class as in the file on MSRResNet parameter names; periods [50] * 4 (the "
                 "options file: [250000] * 4), eta_min 1e-7, over 200 updates."),
          200, torch_setup(basicsr(False), 200, total=True), ("replayed",)),
    # ----------------------------------------------------------------------- from_lightning
    Setup("real-lightning-imagenet-lambdalr",
          "Lightning's ImageNet example: configure_optimizers returns [SGD(lr 0.1, momentum 0.9, wd 1e-4)], "
          "[LambdaLR(lambda epoch: 0.1 ** (epoch // 30))], stepped per epoch over 90 epochs; the Python lambda is "
          "replayed and recovered as a staircase.",
          Source("Lightning-AI/pytorch-lightning", "examples/pytorch/domain_templates/imagenet.py",
                 "600329364b9b16514f4a6f69eda685c337b40c91", "from_lightning",
                 "ImageNetLightningModel.configure_optimizers with its defaults on ResNet parameter names; the "
                 "LightningCLI default max_epochs 90 with epochs of 2 updates (ImageNet's are 5005 at batch 256)."),
          180, lightning_setup(lightning_imagenet, 180, spe=2, total=True), ("replayed", "epoch-clock")),
    # ----------------------------------------------------------------------- record
    Setup("real-nanogpt-warmup-cosine",
          "nanoGPT's train.py get_lr(it) written into every group before each update: linear warmup "
          "lr * (it + 1) / (warmup_iters + 1), cosine to min_lr, then min_lr; AdamW betas (0.9, 0.95), 2-D "
          "parameters decay.",
          Source("karpathy/nanoGPT", "train.py", "e2221318e607eb5ee0669d6b7641af25a2111545", "record",
                 "model.py's configure_optimizers on GPT parameter names (weight tying kept); learning_rate 6e-4, "
                 "min_lr 6e-5, weight_decay 0.1 as train.py; warmup_iters 100, lr_decay_iters 2500, 3000 updates "
                 "(train.py: 2000, 600000, 600000)."),
          3000, record_setup(_nanogpt, 3000), ("hand-written-loop",)),
    Setup("real-yolov5-warmup-momentum",
          "YOLOv5's training loop: per-iteration np.interp warmup of every group's lr (the bias group from "
          "warmup_bias_lr 0.1 down) and of momentum (0.8 up to 0.937) over the per-epoch LambdaLR.",
          Source("ultralytics/yolov5", "train.py", "0015b188fe15f2764271ba449a2f2cab0051117e", "record",
                 "YOLOv5 parameter names; hyp.scratch.yaml (warmup_epochs 3, warmup_momentum 0.8, "
                 "warmup_bias_lr 0.1); 12 epochs of 30 updates, so nw = max(round(3 * 30), 100) = 100."),
          360, record_setup(_yolov5, 360, spe=30), ("hand-written-loop", "momentum-schedule")),
    Setup("real-mae-finetune-layer-decay",
          "MAE fine-tuning: param_groups_lrd (layer decay 0.75 over 12 blocks, no weight decay for 1-D parameters "
          "and the tokens: 28 groups) and adjust_learning_rate per iteration (warmup, then half-cycle cosine).",
          Source("facebookresearch/mae", "util/lr_sched.py", "be47fef7a727943547afb0c670cf1b26034c3c89", "record",
                 "util/lr_decay.py's groups on torchvision ViT names (12 layers of width 8); lr 1e-3, min_lr 1e-6, "
                 "10 epochs with 2 warmup epochs of 20 iterations (engine_finetune.py's per-iteration call)."),
          200, record_setup(_mae, 200, spe=20), ("hand-written-loop", "many-groups")),
    Setup("real-convnext-lr-and-weight-decay",
          "ConvNeXt's per-iteration arrays: utils.cosine_scheduler for lr (warmup from 0) and for weight decay "
          "(0.05 rising to 0.5), written into the groups with lr_scale; a weight-decay schedule.",
          Source("facebookresearch/ConvNeXt", "utils.py", "6157687b8df6270924e8ce473b29a14ca6082950", "record",
                 "engine.py's writes on ResNet parameter names (decay / no-decay with lr_scale 0.8); lr 4e-3, "
                 "min_lr 1e-6, weight_decay_end 0.5, 10 epochs with 2 warmup epochs of 20 iterations."),
          200, record_setup(_convnext, 200), ("hand-written-loop", "weight-decay-schedule")),
    Setup("real-fairseq-inverse-sqrt",
          "fairseq's inverse_sqrt schedule set by step_update before every update: warmup from 1e-7 to 5e-4 over "
          "40 updates, then lr * sqrt(warmup_updates / num_updates); Adam betas (0.9, 0.98), eps 1e-9.",
          Source("facebookresearch/fairseq", "fairseq/optim/lr_scheduler/inverse_square_root_schedule.py",
                 "2519cd40514b73d3e6c1b7a8c65d7689f648dab2", "record",
                 "The schedule's formulas on an nn.Transformer; warmup_updates 40 (translation examples: 4000), "
                 "400 updates."),
          400, record_setup(_fairseq, 400), ("hand-written-loop",)),
    Setup("real-lightning-backbone-finetuning",
          "Lightning's BackboneFinetuning callback: the backbone joins the optimizer at epoch 3 (add_param_group, "
          "lr = current lr * 0.1) and grows by lambda_func each epoch, next to the head's per-epoch StepLR.",
          Source("Lightning-AI/pytorch-lightning", "src/lightning/pytorch/callbacks/finetuning.py",
                 "d10e0054f01f5fa92e5d102d55b53f29e6600853", "record",
                 "The installed Lightning 2.6.6 callback runs (unfreeze_backbone_at_epoch 3, lambda_func 1.5); "
                 "Adam lr 1e-3 on the head with StepLR(4, 0.5); 12 epochs of 5 updates."),
          60, record_setup(lambda: _backbone(), 60, spe=5), ("hand-written-loop", "group-joins-mid-run")),
    Setup("real-torch-docs-swa",
          "The SWA example of torch's docs: CosineAnnealingLR(T_max=300) stepped per epoch until swa_start 160, then "
          "SWALR(swa_lr=0.05) anneals (cos, 10 epochs) and holds -- the loop picks which scheduler steps.",
          Source("pytorch/pytorch", "docs/source/optim.md", "38b56d956a2f17140aa724bcf798903f91f049a1", "record",
                 "The example as written (300 epochs, swa_start 160) with SGD(lr 0.1, momentum 0.9) on ResNet names; "
                 "epochs of 1 update."),
          300, record_setup(_swa_docs, 300, spe=1), ("hand-written-loop", "epoch-clock")),
    # ----------------------------------------------------------------------- library configs
    Setup("real-mmdet-schedule-1x",
          "mmdetection's schedule_1x as MMEngine runs it: LinearLR warmup over 500 iterations times MultiStepLR "
          "(epochs 8 and 11) over 12 epochs of 7330 iterations, SGD lr 0.02: a long horizon.",
          Source("open-mmlab/mmdetection", "configs/_base_/schedules/schedule_1x.py",
                 "19bceba56284d440278e80cfde1d95460330ccbb", "mmengine",
                 "The config as written plus steps_per_epoch 7330 (COCO train2017 at 2 images x 8 GPUs, "
                 "len(train_dataloader) in mmdet's logs); MMEngine 0.10.7's schedulers as ParamSchedulerHook steps "
                 "them.", "mmengine"),
          87960, mmengine_setup(SCHEDULE_1X, _three, 87960, 7330), ("long-horizon",),
          (("torch", 80650),), "torch runs both milestones (epochs 8 and 11: updates 58640 and 80630): 6 s alone, "
          "12 s with --jobs 2 (measured); the other framework backends keep their budget (the warmup and the "
          "plateau after it), the reference runs all 87960"),
    Setup("real-mmseg-schedule-160k",
          "mmsegmentation's schedule_160k: PolyLR(power 0.9, eta_min 1e-4) per iteration over 160000 iterations, "
          "SGD lr 0.01 momentum 0.9 wd 5e-4: a long horizon.",
          Source("open-mmlab/mmsegmentation", "configs/_base_/schedules/schedule_160k.py",
                 "229a6c8d554a9ac145e8941769bf13bd45c9123e", "mmengine",
                 "The config as written (iteration-based: no epoch length needed); MMEngine 0.10.7's PolyLR.",
                 "mmengine"),
          160000, mmengine_setup(SCHEDULE_160K, _three, 160000, 1), ("long-horizon",)),
    Setup("real-mmpose-hrnet-w32-210e",
          "mmpose's HRNet-W32 COCO top-down config: Adam lr 5e-4, LinearLR warmup over 500 iterations, "
          "MultiStepLR at epochs 170 and 200 of 210 (293 iterations each): a long horizon.",
          Source("open-mmlab/mmpose",
                 "configs/body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py",
                 "b205741ede89d48e5bce29c230be3c0a6c672de7", "mmengine",
                 "The config's train_cfg, optim_wrapper and param_scheduler as written plus steps_per_epoch 293 "
                 "(149813 COCO person instances at 64 x 8, rounded up as DefaultSampler does).", "mmengine"),
          61530, mmengine_setup(HRNET_210E, _three, 61530, 293), ("long-horizon",),
          (("torch", 58610),), "torch runs both milestones (epochs 170 and 200: updates 49810 and 58600): 5 s alone, "
          "10 s with --jobs 2 (measured); the other framework backends keep their budget (the warmup), the "
          "reference runs all 61530"),
    Setup("real-mmpretrain-swin-adamw",
          "mmpretrain's Swin schedule: AdamW 1e-3 with paramwise_cfg (no decay on norms, biases, "
          "absolute_pos_embed, relative_position_bias_table), a LinearLR warmup converted to iterations, "
          "then cosine to 1e-5 over 300 epochs.",
          Source("open-mmlab/mmpretrain", "configs/_base_/schedules/imagenet_bs1024_adamw_swin.py",
                 "14ced91f8cd62d995c39432e7a50ac7e3d86bddc", "mmengine",
                 "The config as written, parsed with a Swin-shaped model (mmpretrain's parameter names) because "
                 "paramwise_cfg needs one: stored as the canonical plan the dialect made; epochs of 10 iterations "
                 "(ImageNet-1k's are 1251 at batch 1024)."),
          3000, mmengine_setup(SWIN_ADAMW, SwinLike, 3000, 10, with_model=True), ("no-decay-group",)),
    Setup("real-timm-deit-base",
          "DeiT-B's training arguments through timm: AdamW lr 1e-3 (5e-4 x 1024 / 512) wd 0.05 without decay on "
          "1-D parameters and tokens, cosine over 300 epochs with 5 warmup epochs from 1e-6 to min_lr 1e-5, "
          "stepped per epoch: a long horizon.",
          Source("facebookresearch/deit", "main.py", "100e3cd2a95d4375166952451b7d8ea59f6b9432", "timm",
                 "main.py's argparse defaults at batch 64 x 16 GPUs as create_optimizer / create_scheduler arguments "
                 "(timm 1.0.31 runs them), on a DeiT-shaped model; updates_per_epoch 1251 (ImageNet-1k, "
                 "drop_last, batch 1024).", "timm"),
          375300, timm_setup(DEIT_BASE, 300), ("long-horizon", "epoch-clock", "no-decay-group")),
    Setup("real-hf-alpaca",
          "Stanford Alpaca's fine-tuning command as TrainingArguments: lr 2e-5, weight decay 0, warmup_ratio 0.03, "
          "cosine, 3 epochs; the Trainer's AdamW with decay / no-decay groups and max_grad_norm 1.",
          Source("tatsu-lab/stanford_alpaca", "README.md", "7f0853214d2d4cd732d6f33622566a10e317a903", "hf",
                 "The command's fields; steps_per_epoch 406 = floor(ceil(52002 / (4 GPUs x 4)) / 8 accumulation "
                 "steps), as the Trainer of that time counted updates (1218 in all, 37 warmup); the installed "
                 "transformers 4.57.6 Trainer on a tiny OPT (the README runs the same command for OPT-6.7B).", "hf"),
          1218, hf_setup(ALPACA, _opt, 1218), ("no-decay-group",)),
]


def _backbone() -> Any:
    from real_setups import backbone_finetuning
    model, opt, entries, on_epoch_start = backbone_finetuning()
    return model, opt, {"entries": entries, "on_epoch_start": on_epoch_start}


BY_ID = {s.id: s for s in SETUPS}


# --------------------------------------------------------------------------- checks

def _load(setup: Setup) -> Any:
    """The case file, loaded and validated against conformance/case.schema.json."""
    from optbridge_conformance.cases import load_case
    path = CASES / f"{setup.id}.yaml"
    assert path.exists(), f"{path} is missing: python tests/test_real_setups_cases.py writes it"
    return load_case(path)


def same_doc(a: Any, b: Any, where: str = "plan") -> None:
    """``a == b`` as plain data, floats within :data:`DOC_RTOL` relative (exact zeros exact)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            same_doc(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_doc(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= DOC_RTOL * abs(b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


def expected(plan: optbridge.Plan, n: int, metrics: Any) -> dict[str, np.ndarray]:
    """The reference trace of every hyperparameter in HYPERS (held ones at their base; NaN where a group does not
    have it, or before it joins)."""
    tr = optbridge.trace(plan, n, metrics=metrics)
    groups = [g for g in plan.groups if g.frozen != "exclude"]
    joined = ~np.isnan(tr["lr"]) if "lr" in tr else np.ones((len(groups), n), dtype=bool)
    out = {}
    for h in HYPERS:
        if h in tr:
            out[h] = tr[h]
        else:
            held = np.array([[hyper_base(plan, g, h) if has_hyper(plan, g, h) else np.nan] for g in groups])
            out[h] = np.where(joined, held, np.nan)
    return out


@pytest.fixture(scope="module", params=SETUPS, ids=[s.id for s in SETUPS])
def imported(request: pytest.FixtureRequest) -> tuple[Setup, Imported, Any]:
    setup = request.param
    return setup, setup.run(), _load(setup)


def test_every_real_case_file_has_a_setup() -> None:
    files = {p.stem for p in CASES.glob("real-*.yaml")}
    assert files == set(BY_ID), (sorted(files - set(BY_ID)), sorted(set(BY_ID) - files))
    assert len(SETUPS) >= 25


def test_the_stored_case_is_the_fresh_import(imported: tuple[Setup, Imported, Any]) -> None:
    setup, fresh, case = imported
    doc, want = dict(case.doc), setup.case_doc(fresh)
    same_doc(doc.pop("plan"), want.pop("plan"))
    same_doc(doc, want, "case")


def test_the_stored_plan_traces_like_the_original(imported: tuple[Setup, Imported, Any]) -> None:
    setup, fresh, case = imported
    plan = case.plan
    n = fresh.native["lr"].shape[1]
    assert n == setup.steps  # the native run covers the case's whole horizon
    got = expected(plan, n, fresh.metrics)
    names = _group_names(plan)
    assert fresh.rows is not None or len(names) == fresh.native["lr"].shape[0]
    for h in HYPERS:
        g = got[h] if fresh.rows is None else got[h][[names.index(r) for r in fresh.rows]]
        assert_close(g, fresh.native[h], f"{setup.id}/{h}")


# --------------------------------------------------------------------------- writing the cases

def case_text(doc: dict[str, Any]) -> str:
    """A case document as YAML: metadata in block style, the description folded, the plan as optbridge.dump
    writes it (small mappings inline)."""
    import textwrap

    import yaml
    head = {k: doc[k] for k in ("id", "family")}
    desc = textwrap.fill(doc["description"], 106, initial_indent="  ", subsequent_indent="  ")
    rest = {k: v for k, v in doc.items() if k not in ("id", "family", "description", "source", "tags")}
    return (yaml.safe_dump(head, sort_keys=False) + "description: >-\n" + desc + "\n"
            + yaml.safe_dump({"source": doc["source"]}, sort_keys=False, default_flow_style=False, width=110)
            + yaml.safe_dump({"tags": doc["tags"]}, default_flow_style=None)
            + yaml.safe_dump(rest, sort_keys=False, default_flow_style=None, width=110))


def write_cases(ids: Sequence[str] = ()) -> list[Path]:
    """(Re)write ``conformance/cases/<id>.yaml`` for the given setups (all by default) from fresh imports."""
    out = []
    for s in SETUPS:
        if ids and s.id not in ids:
            continue
        path = CASES / f"{s.id}.yaml"
        path.write_text(case_text(s.case_doc(s.run())), encoding="utf-8")
        out.append(path)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for p in write_cases(sys.argv[1:]):
        print(p.relative_to(ROOT))
