"""The Hugging Face dialect against real transformers 4.57.6 (offline: HF_HUB_OFFLINE=1, models from configs).

Every schedule: ``transformers.get_scheduler`` on a real torch optimizer, stepped as the Trainer steps it
(``scheduler.step()`` after every optimizer update), against ``optbridge.trace`` at 1e-12 relative (HF's
lambdas and ours are the same Python-float formulas; numpy's cos may differ from libm's by an ulp here).
The Trainer itself builds the optimizer, groups and scheduler in the TrainingArguments test.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import optbridge  # noqa: E402
from optbridge.errors import ConfigError  # noqa: E402
from optbridge.params import ParamRecord, resolve  # noqa: E402

RTOL = 1e-12
N, W = 40, 7


def run(sched, opt, n, metrics=None):
    out = np.empty((len(opt.param_groups), n))
    for k in range(n):
        out[:, k] = [g["lr"] for g in opt.param_groups]
        opt.step()
        if metrics is None:
            sched.step()
        elif (k + 1) % 4 == 0:  # evaluation every eval_steps=4 updates
            sched.step(metrics[(k + 1) // 4 - 1])
    return out


CASES = [
    ("linear", {}), ("cosine", {}), ("cosine", {"num_cycles": 1.5}), ("cosine_with_restarts", {"num_cycles": 3}),
    ("polynomial", {"lr_end": 1e-5, "power": 2.0}), ("polynomial", {}), ("constant", {}), ("constant_with_warmup", {}),
    ("inverse_sqrt", {}), ("cosine_with_min_lr", {"min_lr": 1e-5}), ("cosine_with_min_lr", {"min_lr_rate": 0.1}),
    ("cosine_warmup_with_min_lr", {"min_lr_rate": 0.05}),
    ("cosine_warmup_with_min_lr", {"min_lr": 1e-5, "warmup_lr_rate": 0.2}),
    ("warmup_stable_decay", {"num_decay_steps": 10}),
    ("warmup_stable_decay", {"num_decay_steps": 12, "num_stable_steps": 15, "warmup_type": "cosine",
                             "decay_type": "1-sqrt", "min_lr_ratio": 0.1}),
    ("warmup_stable_decay", {"num_decay_steps": 9, "warmup_type": "1-sqrt", "decay_type": "linear"}),
]


@pytest.mark.parametrize("name, kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_get_scheduler_equals_transformers(name, kw):
    lr = 1e-3
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    sched = transformers.get_scheduler(name, opt, num_warmup_steps=W, num_training_steps=N,
                                       scheduler_specific_kwargs=dict(kw))
    n = N + 5  # past the end too
    native = run(sched, opt, n)
    doc = {"dialect": "hf", "learning_rate": lr, "lr_scheduler_type": name, "lr_scheduler_kwargs": kw,
           "warmup_steps": W, "max_steps": N}
    if name in ("constant", "inverse_sqrt"):
        del doc["lr_scheduler_kwargs"]
    tr = optbridge.trace(optbridge.load(doc), n)
    np.testing.assert_allclose(tr["lr"][:1], native, rtol=RTOL, atol=0)
    assert ((tr["lr"][:1] == 0) == (native == 0)).all()


def test_reduce_lr_on_plateau_equals_transformers():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    kw = {"factor": 0.5, "patience": 1, "min_lr": 1e-4}
    sched = transformers.get_scheduler("reduce_lr_on_plateau", opt, scheduler_specific_kwargs=dict(kw))
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 0.85, 0.9, 0.91, 0.92, 0.93]
    native = run(sched, opt, 40, metrics)
    plan = optbridge.load({"lr_scheduler_type": "reduce_lr_on_plateau", "lr_scheduler_kwargs": kw, "eval_steps": 4,
                           "learning_rate": 1e-3})
    np.testing.assert_allclose(optbridge.trace(plan, 40, metrics=metrics)["lr"][:1], native, rtol=RTOL, atol=0)


def _bert():
    cfg = transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=8, max_position_embeddings=16)
    return transformers.BertModel(cfg)


def _records(model):
    owner = {id(p): type(m).__name__ for m in model.modules() for p in m.parameters(recurse=False)}
    return [ParamRecord(n, tuple(p.shape), owner[id(p)], id(p)) for n, p in model.named_parameters()]


@pytest.mark.parametrize("with_model", [False, True])
def test_trainer_arguments_groups_and_schedule(tmp_path, with_model):
    model = _bert()
    fields = dict(learning_rate=1e-3, weight_decay=0.01, warmup_ratio=0.15, max_steps=37,
                  lr_scheduler_type="cosine_with_restarts", lr_scheduler_kwargs={"num_cycles": 2},
                  adam_beta1=0.8, adam_beta2=0.99, adam_epsilon=1e-7, optim="adamw_torch")
    args = transformers.TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **fields)
    trainer = transformers.Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=37)
    opt, sched = trainer.optimizer, trainer.lr_scheduler
    native = run(sched, opt, 40)

    plan = optbridge.dialects.hf.parse({"dialect": "hf", **fields}, model=model if with_model else None)
    decay = set(trainer.get_decay_parameter_names(model))
    res = resolve(plan, _records(model))
    by_name = {g.name: set(g.params) for g in res.groups}
    assert by_name["decay"] == decay and by_name["no_decay"] == {n for n, _ in model.named_parameters()} - decay
    assert [g["weight_decay"] for g in opt.param_groups] == [g.options["weight_decay"] for g in res.groups]
    for g in res.groups:
        assert g.options["betas"] == (0.8, 0.99) and g.options["eps"] == 1e-7
    assert type(opt).__name__ == plan.optimizers[0].type == "AdamW"
    np.testing.assert_allclose(optbridge.trace(plan, 40)["lr"], native, rtol=RTOL, atol=0)
    assert args.get_warmup_steps(37) == 6  # ceil(37 * 0.15), the rounding the plan used


def test_warmup_ratio_with_epochs_rounds_up():
    plan = optbridge.load({"learning_rate": 0.1, "num_train_epochs": 2.5, "steps_per_epoch": 7, "warmup_ratio": 0.1})
    # num_training_steps = ceil(2.5 * 7) = 18, warmup = ceil(1.8) = 2: linear warmup 0, 0.5, then decay over 16
    np.testing.assert_allclose(optbridge.trace(plan, 4)["lr"][0], [0.0, 0.05, 0.1, 0.1 * 15 / 16], rtol=RTOL)


@pytest.mark.parametrize("doc, message", [
    ({"lr_scheduler_type": "cosin"}, r"^lr_scheduler_type: must be one of linear, cosine"),
    ({"lr_scheduler_type": "cosine", "lr_scheduler_kwargs": {"num_cycle": 2}},
     r"^lr_scheduler_kwargs.num_cycle: is not an argument of the cosine schedule \(did you mean 'num_cycles'\?\)"),
    ({"lr_scheduler_type": "inverse_sqrt", "lr_scheduler_kwargs": {"timescale": 5}},
     r"^lr_scheduler_kwargs: is ignored by transformers.get_scheduler for inverse_sqrt"),
    ({"optim": "adafactor"}, r"^optim: must be one of adamw_torch"),
    ({"lr_scheduler_type": "cosine", "max_steps": -1}, r"^max_steps: or num_train_epochs with steps_per_epoch is required"),
    ({"lr_scheduler_type": "cosine_with_min_lr"}, r"^lr_scheduler_kwargs.min_lr: or min_lr_rate is required"),
    ({"lr_scheduler_type": "reduce_lr_on_plateau"}, r"^eval_steps: is required by reduce_lr_on_plateau"),
    ({"learning_rate": "fast"}, r"^learning_rate: must be a finite number, got 'fast'"),
    ({"per_device_train_batch_size": 8}, r"^per_device_train_batch_size: is not a key of the hf dialect"),
])
def test_bad_configs_get_one_line_errors(doc, message):
    doc = {"dialect": "hf", "max_steps": 10, **doc}
    with pytest.raises(ConfigError, match=message) as info:
        optbridge.load(doc)
    assert "\n" not in str(info.value)


def test_detection():
    from optbridge.dialects import detect
    assert detect({"learning_rate": 1e-3, "lr_scheduler_type": "linear"}) == "hf"   # not MindSpore's learning_rate
    assert detect({"learning_rate": 1e-3}) == "mindspore"
    assert detect({"optimizer": {"opt": "adamw"}, "scheduler": {"sched": "cosine"}}) == "timm"  # not torch's scheduler


def test_max_grad_norm_is_the_optimizer_level_clip() -> None:
    from optbridge.dialects import hf
    plan = hf.parse({"dialect": "hf", "learning_rate": 1e-4, "max_steps": 10})
    assert plan.optimizers[0].clip == optbridge.Clip(max_norm=1.0)  # the Trainer's default
    assert hf.parse({"dialect": "hf", "max_steps": 10, "max_grad_norm": 0}).optimizers[0].clip is None
    assert hf.parse({"dialect": "hf", "max_steps": 10, "max_grad_norm": 0.5}).optimizers[0].clip.max_norm == 0.5
    with pytest.raises(optbridge.ConfigError, match="max_grad_norm"):
        hf.parse({"dialect": "hf", "max_steps": 10, "max_grad_norm": "x"})
