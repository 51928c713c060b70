"""Loading errors: files that are not configs, strings that name no file, a plan without optimizer,
and random documents through every dialect raising only ConfigError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

import optbridge
from optbridge.dialects import DIALECTS
from optbridge.errors import ConfigError


def test_binary_file_is_not_utf8_text(tmp_path):
    p = tmp_path / "plan.yaml"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ConfigError, match=r"plan.yaml' is not UTF-8 text \(byte 0 is 0x89\)"):
        optbridge.load(p)


def test_directory_says_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"is a directory, not a config file"):
        optbridge.load(tmp_path)
    d = tmp_path / "conf.yaml"
    d.mkdir()
    with pytest.raises(ConfigError, match=r"is a directory"):
        optbridge.load(str(d))


@pytest.mark.parametrize("src", ["configs/plan", "plan", "missing.yaml", "a/b/c.json"])
def test_path_like_string_naming_no_file(src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"does not exist \(no such file\)"):
        optbridge.load(src)


def test_document_strings_still_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = optbridge.load({"optimizer": {"type": "SGD", "lr": 0.1}})
    assert optbridge.load('{"optimizer": {"type": "SGD", "lr": 0.1}}') == want
    assert optbridge.load("optimizer: {type: SGD, lr: 0.1}") == want
    (tmp_path / "plan").write_text("optimizer: {type: SGD}\n")  # an existing file without suffix: a path
    with pytest.raises(ConfigError, match=r"must end in .json, .yaml, .yml or .toml"):
        optbridge.load("plan")


def test_plan_without_optimizer_is_an_error():
    with pytest.raises(ConfigError, match=r"^optimizer: is required \(e.g. \{type: SGD, lr: 0.1\}\)"):
        optbridge.load({"optbridge": 1, "schedule": {"kind": "cosine", "steps": 5}})
    with pytest.raises(ConfigError, match=r"^optimizer: is required"):
        optbridge.load({"dialect": "torch", "scheduler": {"type": "StepLR", "step_size": 2}})


def test_loads_takes_text():
    with pytest.raises(ConfigError, match=r"loads\(\) takes the text"):
        optbridge.loads(b"optimizer: {type: SGD}")  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=10)

KEYS = ["optimizer", "scheduler", "sched", "opt", "lr", "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs",
        "warmup_ratio", "warmup_steps", "max_steps", "num_train_epochs", "steps_per_epoch", "optim", "layer_map",
        "param_groups", "group_params", "schedule", "groups", "step_unit", "eval_steps", "weight_decay"]
SEEDS = {
    "timm": {"optimizer": {"opt": "adamw", "lr": 1e-3}, "scheduler": {"sched": "cosine", "num_epochs": 5,
                                                                     "warmup_epochs": 1, "cycle_mul": 2.0}},
    "hf": {"learning_rate": 1e-3, "lr_scheduler_type": "warmup_stable_decay", "max_steps": 20, "warmup_steps": 2,
           "lr_scheduler_kwargs": {"num_decay_steps": 5}},
    "torch": {"optimizer": {"type": "SGD", "lr": 0.1}, "scheduler": {"type": "StepLR", "step_size": 2}},
    "mindspore": {"optimizer": {"type": "Momentum", "momentum": 0.9}, "learning_rate": 0.1},
    "optbridge": {"optimizer": {"type": "SGD"}, "schedule": {"kind": "cosine", "steps": 4}},
}


@settings(max_examples=300, deadline=None)
@given(dialect=st.sampled_from([d for d in DIALECTS if d != "mmengine"] + [None]),
       doc=st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5))
def test_random_documents_in_every_dialect_raise_only_config_error(dialect, doc):
    if dialect is not None:
        doc = {**doc, "dialect": dialect}
    try:
        optbridge.load(doc)
    except ConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(dialect=st.sampled_from(sorted(SEEDS)), key=st.text(max_size=1) | st.sampled_from(KEYS), junk=json_values,
       inner=st.booleans())
def test_mutated_dialect_documents_raise_only_config_error(dialect, key, junk, inner):
    doc = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SEEDS[dialect].items()}
    doc["dialect"] = dialect
    target = next((v for v in doc.values() if isinstance(v, dict)), doc) if inner else doc
    if key in target and isinstance(junk, bool):
        del target[key]
    else:
        target[key] = junk
    try:
        plan = optbridge.load(doc)
        optbridge.trace(plan, 6, metrics=[1.0] * 6)
    except optbridge.OptbridgeError:
        pass
