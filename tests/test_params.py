"""Param-group resolution over framework-neutral parameter records."""

from __future__ import annotations

import pytest

import optbridge
from optbridge.params import ParamRecord, resolve

# A small model: backbone convs with BN, a tied embedding, a head.
RECORDS = [
    ParamRecord("embed.weight", (100, 16), "Embedding", ident="E"),
    ParamRecord("backbone.0.weight", (16, 3, 3, 3), "Conv2d"),
    ParamRecord("backbone.0.bias", (16,), "Conv2d"),
    ParamRecord("backbone.1.weight", (16,), "BatchNorm2d"),
    ParamRecord("backbone.1.bias", (16,), "BatchNorm2d"),
    ParamRecord("backbone.2.weight", (32, 16, 3, 3), "Conv2d"),
    ParamRecord("head.weight", (10, 32), "Linear"),
    ParamRecord("head.bias", (10,), "Linear"),
    ParamRecord("decoder.weight", (100, 16), "Linear", ident="E"),  # tied to embed.weight
]


def plan(groups, **opt):
    return optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1, **opt}, "groups": groups})


def test_globs_module_types_and_rest() -> None:
    p = plan([
        {"name": "no_decay", "params": [{"ndim": [1]}], "weight_decay": 0.0},
        {"name": "backbone", "params": [{"names": ["backbone.*"], "ndim": [2, 4]}], "lr_mult": 0.1},
        {"name": "rest", "params": "rest"},
    ], weight_decay=5e-4)
    r = resolve(p, RECORDS)
    by = {g.name: g for g in r.groups}
    assert by["no_decay"].params == ("backbone.0.bias", "backbone.1.weight", "backbone.1.bias", "head.bias")
    assert by["backbone"].params == ("backbone.0.weight", "backbone.2.weight")
    assert by["rest"].params == ("embed.weight", "head.weight")
    assert by["backbone"].options["lr"] == pytest.approx(0.01, rel=1e-15)
    assert by["no_decay"].options["weight_decay"] == 0.0 and by["rest"].options["weight_decay"] == 5e-4
    assert by["rest"].options["momentum"] == 0.0 and by["rest"].options["nesterov"] is False  # torch defaults filled
    assert r.aliases == {"decoder.weight": "embed.weight"}  # tied weights counted once


def test_selectors_and_within_or_across() -> None:
    p = plan([
        {"name": "norm", "params": [{"modules": ["*Norm*"]}]},
        {"name": "biases", "params": [{"leaf": ["bias"], "modules": ["Conv2d", "Linear"]}]},
        {"name": "head", "params": [{"regex": [r"head\.w.*"]}, "embed.*"]},  # a list of selectors is a union
        {"name": "rest", "params": "rest"},
    ])
    by = {g.name: g.params for g in resolve(p, RECORDS).groups}
    assert by["norm"] == ("backbone.1.weight", "backbone.1.bias")
    assert by["biases"] == ("backbone.0.bias", "head.bias")
    assert by["head"] == ("embed.weight", "head.weight")
    assert by["rest"] == ("backbone.0.weight", "backbone.2.weight")


def test_overlap_is_an_error_naming_both_groups() -> None:
    p = plan([{"name": "bn", "params": [{"modules": ["BatchNorm2d"]}]}, {"name": "bias", "params": [{"leaf": ["bias"]}]},
              {"name": "rest", "params": "rest"}])
    with pytest.raises(optbridge.ConfigError, match=r"groups\[1\]\.params: parameter 'backbone.1.bias' is matched by group 'bn' .* and by group 'bias'"):
        resolve(p, RECORDS)


def test_pattern_matching_nothing_names_group_and_pattern() -> None:
    p = plan([{"name": "enc", "params": ["encoder.*", "backbone.*"]}, {"name": "rest", "params": "rest"}])
    with pytest.raises(optbridge.ConfigError, match=r"groups\[0\]\.params\[0\]\.names: pattern of group 'enc' matches no parameter, got 'encoder\.\*'"):
        resolve(p, RECORDS)


def test_empty_group_and_unmatched_parameter() -> None:
    p = plan([{"name": "all", "params": "*"}, {"name": "rest", "params": "rest"}])
    with pytest.raises(optbridge.ConfigError, match="group 'rest' matches no parameter"):
        resolve(p, RECORDS)
    p = plan([{"name": "backbone", "params": "backbone.*"}])
    with pytest.raises(optbridge.ConfigError, match="parameter 'embed.weight' is matched by no group"):
        resolve(p, RECORDS)


def test_unknown_option_names_group_path() -> None:
    with pytest.raises(optbridge.ConfigError, match=r"groups\[1\]\.momentun: is not a known optimizer option \(did you mean 'momentum'\?\)"):
        plan([{"name": "a", "params": "head.*"}, {"name": "b", "params": "rest", "momentun": 0.9}])


def test_frozen_exclude_and_zero_lr() -> None:
    p = plan([{"name": "backbone", "params": "backbone.*", "frozen": "exclude"},
              {"name": "head", "params": "head.*", "frozen": "zero_lr"},
              {"name": "rest", "params": "rest"}])
    r = resolve(p, RECORDS)
    assert [g.name for g in r.groups] == ["head", "rest"]
    assert r.excluded == ("backbone.0.weight", "backbone.0.bias", "backbone.1.weight", "backbone.1.bias", "backbone.2.weight")
    assert r.groups[0].options["lr"] == 0.0
    tr = optbridge.trace(p, 3)
    assert tr.groups == ("head", "rest") and tr["lr"][0].tolist() == [0.0, 0.0, 0.0]


def test_several_optimizers_over_disjoint_groups() -> None:
    p = optbridge.load({"optbridge": 1, "optimizers": [
        {"name": "conv", "type": "SGD", "lr": 0.1, "momentum": 0.9, "groups": [{"name": "convs", "params": "backbone.*"}]},
        {"name": "fc", "type": "Adam", "lr": 1e-3, "groups": [{"name": "fc", "params": "rest", "clip": {"max_norm": 1.0}}]},
    ]})
    r = resolve(p, RECORDS)
    assert list(r.by_optimizer()) == ["conv", "fc"]
    assert r.groups[1].options["betas"] == (0.9, 0.999) and r.groups[1].clip.max_norm == 1.0
    assert optbridge.trace(p, 2)["lr"].tolist() == [[0.1, 0.1], [1e-3, 1e-3]]


def test_two_rest_groups_across_optimizers_is_an_error() -> None:
    p = optbridge.load({"optbridge": 1, "optimizers": [
        {"name": "a", "type": "SGD", "groups": [{"name": "x", "params": "rest"}]},
        {"name": "b", "type": "SGD", "groups": [{"name": "y", "params": "rest"}]}]})
    with pytest.raises(optbridge.ConfigError, match="at most one rest group"):
        resolve(p, RECORDS)
