"""Round trips through dump/load in every format, and bad input raising only ConfigError."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import optbridge
from optbridge import ir
from optbridge.plan import Clip, Group, OptimizerSpec, Plan, Selector

FORMATS = ("json", "yaml", "toml")

# --------------------------------------------------------------------------- strategies

pos = st.integers(1, 10_000)
nonneg = st.integers(0, 10_000)
real = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
factor = st.floats(0.0, 2.0, allow_nan=False)
small = st.floats(1e-12, 1.0, allow_nan=False)
unit = st.sampled_from([None, "iter", "epoch"])
EXPRS = ["0.95 ** epoch", "epoch // 30", "min(1.0, (step + 1) / 100)", "1 / (1 + 0.1 * k)",
         "cos(pi * t / 100) if t < 100 else 0.5", "max(0.1, exp(-0.01 * epoch))", "sqrt(x + 1) / (x + 1)",
         "floor(epoch / 10) * 0.1 + 1", "ceil(log(epoch + 1))"]


def increasing(n: int, lo: int = 0) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(lo, 100_000), min_size=n, max_size=n, unique=True).map(lambda xs: tuple(sorted(xs)))


leaves = st.one_of(
    st.builds(ir.Constant, factor=factor, steps=st.none() | nonneg, unit=unit),
    st.builds(ir.Linear, start_factor=factor, end_factor=factor, steps=pos, unit=unit),
    st.builds(ir.Exponential, gamma=small, every=pos, stair=st.booleans(), unit=unit),
    st.builds(ir.MultiStep, milestones=st.lists(nonneg, max_size=5).map(lambda x: tuple(sorted(x))), gamma=small, unit=unit),
    st.builds(ir.NaturalExp, rate=small, every=pos, stair=st.booleans()),
    st.builds(ir.InverseTime, rate=small, every=pos, stair=st.booleans()),
    st.builds(ir.Polynomial, steps=pos, power=st.floats(0.1, 5), end=small, cycle=st.booleans()),
    st.builds(ir.Cosine, steps=pos, end=small, clamp=st.booleans(), unit=unit),
    st.builds(ir.CosineRestarts, period=pos, mult=st.integers(1, 4), end=small),
    st.builds(ir.Cyclic, low=st.none() | small, high=small, step_size_up=pos, step_size_down=st.none() | pos,
              mode=st.sampled_from(ir.CYCLIC_MODES), gamma=small),
    st.builds(ir.OneCycle, total_steps=pos, pct_start=st.floats(0.0, 1.0), anneal=st.sampled_from(["cos", "linear"]),
              three_phase=st.booleans(), peak=st.none() | small, initial=st.none() | small, final=st.none() | small),
    st.builds(ir.Lambda, expr=st.sampled_from(EXPRS)),
    st.builds(ir.Multiplicative, expr=st.sampled_from(EXPRS)),
    st.builds(ir.Table, values=st.lists(real, min_size=1, max_size=6).map(tuple), relative=st.booleans(), hold=st.booleans()),
    st.integers(0, 4).flatmap(lambda n: st.builds(ir.Piecewise, boundaries=increasing(n, 1),
                                                  values=st.lists(real, min_size=n + 1, max_size=n + 1).map(tuple))),
)


def _combine(children: st.SearchStrategy[ir.Node]) -> st.SearchStrategy[ir.Node]:
    seq = st.lists(children, min_size=1, max_size=4).flatmap(
        lambda parts: st.builds(ir.Sequence, parts=st.just(tuple(parts)), boundaries=increasing(len(parts) - 1), unit=unit))
    chain = st.lists(children, min_size=1, max_size=3).map(lambda parts: ir.Chain(parts=tuple(parts)))
    return seq | chain


nodes = st.recursive(leaves, _combine, max_leaves=8)
plateaus = st.builds(ir.Plateau, mode=st.sampled_from(["min", "max"]), factor=st.floats(0.0, 0.99), patience=nonneg,
                     threshold=small, threshold_mode=st.sampled_from(["rel", "abs"]), cooldown=nonneg, min_value=small, eps=small)
schedules = st.dictionaries(st.sampled_from(["lr", "momentum", "beta1", "weight_decay"]), nodes | plateaus, max_size=3)
selectors = st.one_of(
    st.builds(Selector, names=st.lists(st.sampled_from(["a.*", "b.*", "*.bias", "c?"]), min_size=1, max_size=2).map(tuple)),
    st.builds(Selector, regex=st.just((r"a\..*",)), ndim=st.lists(st.integers(0, 4), min_size=1, max_size=2).map(tuple)),
    st.builds(Selector, modules=st.just(("*Norm*",)), leaf=st.just(("weight",))),
)
options = st.fixed_dictionaries({}, optional={"lr": small, "weight_decay": small, "momentum": factor, "nesterov": st.booleans()})


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    n_opt = draw(st.integers(1, 2))
    opts, used, taken = [], 0, set()
    for i in range(n_opt):
        groups = []
        for j in range(draw(st.integers(1, 3))):
            used += 1
            clip = draw(st.none() | st.builds(Clip, max_norm=small) | st.builds(Clip, value=small))
            select = tuple(dict.fromkeys(x for x in draw(st.lists(selectors, max_size=2)) if x not in taken))
            taken.update(select)  # groups are disjoint: no selector twice
            groups.append(Group(name=f"g{used}", select=select, options=draw(options),
                                schedule=draw(schedules), frozen=draw(st.sampled_from([None, "exclude", "zero_lr"])), clip=clip))
        opts.append(OptimizerSpec(type="SGD", name=f"opt{i}" if n_opt > 1 else "optimizer", options=draw(options), groups=tuple(groups)))
    return Plan(optimizers=tuple(opts), schedule=draw(schedules), step_unit=draw(st.sampled_from(["iter", "epoch"])),
                steps_per_epoch=draw(st.none() | pos), total_steps=draw(st.none() | pos),
                description=draw(st.none() | st.text(max_size=30)))


# --------------------------------------------------------------------------- round trips

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), fmt=st.sampled_from(FORMATS))
def test_random_plans_round_trip(plan: Plan, fmt: str) -> None:
    text = optbridge.dumps(plan, fmt)
    assert optbridge.loads(text, fmt) == plan


@pytest.mark.parametrize("kind", sorted(ir.NODE_TYPES))
def test_every_node_kind_round_trips_through_files(kind: str, tmp_path) -> None:
    examples = {
        "constant": ir.Constant(factor=0.5, steps=3), "linear": ir.Linear(start_factor=0.0, steps=10),
        "exponential": ir.Exponential(gamma=0.9, every=3, stair=True, unit="epoch"), "multistep": ir.MultiStep(milestones=(3, 3, 9)),
        "natural_exp": ir.NaturalExp(rate=0.1, every=2, stair=True), "inverse_time": ir.InverseTime(rate=0.5),
        "polynomial": ir.Polynomial(steps=10, power=2.0, end=1e-5, cycle=True), "cosine": ir.Cosine(steps=7, end=1e-6, clamp=True),
        "cosine_restarts": ir.CosineRestarts(period=10, mult=2, end=1e-4), "cyclic": ir.Cyclic(low=0.01, high=0.1, mode="exp_range", gamma=0.99),
        "one_cycle": ir.OneCycle(total_steps=100, three_phase=True, anneal="linear"), "lambda": ir.Lambda(expr="0.95 ** epoch"),
        "multiplicative": ir.Multiplicative(expr="0.99"), "table": ir.Table(values=(0.1, 0.2), hold=True),
        "piecewise": ir.Piecewise(boundaries=(5,), values=(0.1, 0.01)),
        "sequence": ir.Sequence(parts=(ir.Linear(start_factor=0.0), ir.Cosine(steps=5)), boundaries=(5,)),
        "chain": ir.Chain(parts=(ir.Constant(factor=0.1, steps=2), ir.Exponential(gamma=0.9))), "plateau": ir.Plateau(mode="max", cooldown=2),
    }
    plan = Plan(optimizers=(OptimizerSpec(type="SGD"),), schedule={"lr": examples[kind]})
    for fmt in FORMATS:
        path = tmp_path / f"plan.{fmt}"
        optbridge.dump(plan, path)
        assert optbridge.load(path) == plan
        assert optbridge.load(str(path)) == plan


def test_load_accepts_dict_string_and_shorthand() -> None:
    d = {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1}, "schedule": {"kind": "cosine", "steps": 10}}
    p = optbridge.load(d)
    assert p.schedule["lr"] == ir.Cosine(steps=10)
    assert optbridge.load(json.dumps(d)) == p
    assert optbridge.load("optbridge: 1\noptimizer: {type: SGD, lr: 0.1}\nschedule: {kind: cosine, steps: 10}\n") == p


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("doc,message", [
    ({"optbridge": 1, "schedule": {"kind": "cosine", "steps": 0}}, "schedule.steps: must be a positive integer, got 0"),
    ({"optbridge": 1, "schedule": {"lr": {"kind": "sequence", "parts": [{"kind": "linear"}, {"kind": "cosine", "steps": 2.5}], "boundaries": [3]}}},
     "schedule.lr.parts[1].steps: must be a positive integer, got 2.5"),
    ({"optbridge": 1, "schedule": {"kind": "sequence", "parts": [{"kind": "linear"}], "boundaries": [3]}},
     "schedule.boundaries: must have len(parts) - 1 = 0 entries, got [3]"),
    ({"optbridge": 1, "schedule": {"kind": "cosinus"}}, "schedule.kind: must be one of constant, linear"),
    ({"optbridge": 1, "schedule": {"kind": "cosine", "T_max": 3}}, "schedule.T_max: is not a field of cosine"),
    ({"optbridge": 1, "schedule": {"kind": "lambda", "expr": "__import__('os')"}}, "schedule.expr:"),
    ({"optbridge": 1, "optimizer": {"type": "SDG"}}, "optimizer.type: must be one of SGD, Adam"),
    ({"optbridge": 1, "optimizer": {"type": "SGD", "lr": -1}}, "optimizer.lr: must be >= 0, got -1"),
    ({"optbridge": 1, "groups": [{"name": "a", "params": [{"regex": ["("]}]}]}, "groups[0].params[0].regex[0]: must be a valid regular expression"),
    ({"optbridge": 1, "groups": [{"name": "a", "frozen": "yes"}]}, "groups[0].frozen: must be one of 'exclude', 'zero_lr', got 'yes'"),
    ({"optbridge": 1, "groups": [{"name": "a", "clip": {"max_norm": 1, "value": 2}}]}, "groups[0].clip: clip needs exactly one of max_norm or value"),
    ({"optbridge": 1, "groups": [{"name": "a"}, {"name": "a"}]}, "groups[1].name: must be unique within the optimizer, got 'a'"),
    ({"optbridge": 1, "step_unit": "batch"}, "step_unit: must be one of 'iter', 'epoch', got 'batch'"),
    ({"optbridge": 2}, "optbridge: must be IR version 1, got 2"),
    ({"optbridge": 1, "schedul": {}}, "schedul: is not a plan field"),
])
def test_errors_name_path_rule_and_value(doc, message) -> None:
    doc = {"optimizer": {"type": "SGD"}, **doc}  # a plan needs an optimizer (tested on its own below)
    with pytest.raises(optbridge.ConfigError) as info:
        optbridge.load(doc)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files_and_syntax(tmp_path) -> None:
    with pytest.raises(optbridge.ConfigError, match="does not exist"):
        optbridge.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optbridge: 1\nschedule: [unclosed\n")
    with pytest.raises(optbridge.ConfigError, match="is not valid YAML"):
        optbridge.load(bad)
    bad.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(optbridge.ConfigError, match="is not valid YAML"):  # safe_load refuses to build objects
        optbridge.load(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=12)

VALID = {"optbridge": 1, "step_unit": "epoch", "steps_per_epoch": 10,
         "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9},
         "groups": [{"name": "a", "params": ["a.*"], "lr_mult": 0.1, "clip": {"max_norm": 1.0}}, {"name": "b", "params": "rest"}],
         "schedule": {"lr": {"kind": "sequence", "parts": [{"kind": "linear", "start_factor": 0.0, "steps": 2},
                                                           {"kind": "cosine", "steps": 8}], "boundaries": [2]},
                      "momentum": {"kind": "cyclic", "low": 0.9, "high": 0.8, "step_size_up": 5}}}


def _paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(ALL_PATHS), junk=json_values, delete=st.booleans())
def test_mutated_configs_raise_only_config_error(path, junk, delete) -> None:
    doc = copy.deepcopy(VALID)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    try:
        plan = optbridge.load(doc)
        optbridge.trace(plan, 5)
    except optbridge.OptbridgeError:
        pass


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(sorted(VALID) + ["kind", "x"]), json_values, max_size=5))
def test_random_documents_raise_only_config_error(doc) -> None:
    try:
        optbridge.load(doc)
    except optbridge.ConfigError:
        pass


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), fmt=st.sampled_from(FORMATS))
def test_random_text_raises_only_config_error(text, fmt) -> None:
    try:
        optbridge.loads(text, fmt)
    except optbridge.ConfigError:
        pass


def test_nan_and_inf_are_rejected() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(optbridge.ConfigError, match="must be a finite number"):
            optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD"}, "schedule": {"kind": "exponential", "gamma": bad}})
