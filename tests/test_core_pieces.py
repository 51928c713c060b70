"""The core pieces every backend builds on: the resolver, the value source, node geometry, windowed traces.

Values are compared with the reference trace (the one evaluator) bit for bit: the
resolver and the value source only route values, they compute none.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import optbridge
from optbridge import evaluate, ir
from optbridge.errors import ConfigError, EvaluationError, NotTraced, OptbridgeError
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge.slots import applies, fingerprint, hyper_key, schedule_path, slots
from optbridge.source import CHUNK, PastHorizon, ValueSource

WARM_COS = ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=50), ir.Cosine(steps=950, end=1e-5)), boundaries=(50,))


def _plan(**kw: object) -> Plan:
    groups = (
        Group(name="backbone", options={"lr_mult": 0.1}),
        Group(name="head", schedule={"momentum": ir.Linear(start_factor=0.5, steps=10)}),
        Group(name="frozen", frozen="exclude"),
        Group(name="zero", frozen="zero_lr"),
    )
    sgd = OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9}, groups=groups)
    adam = OptimizerSpec(type="Adam", name="adam", options={"lr": 1e-3}, groups=(Group(name="adam_g"),))
    return Plan(optimizers=(sgd, adam), schedule={"lr": WARM_COS, "beta1": ir.Constant(factor=0.9, steps=5)},
                **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the resolver

def test_slots_resolve_node_base_path_key_and_applicability() -> None:
    plan = _plan()
    got = {(s.group, s.hyper): s for s in slots(plan, held=True)}
    # excluded groups are not built; beta1 does not apply to SGD groups; momentum not to Adam
    assert {g for g, _ in got} == {"backbone", "head", "zero", "adam_g"}
    assert ("backbone", "beta1") not in got and ("adam_g", "momentum") not in got
    bb = got["backbone", "lr"]
    assert (bb.node, bb.base, bb.path, bb.index, bb.row, bb.optimizer) == (WARM_COS, 0.1 * 0.1, "schedule.lr", 0, 0,
                                                                           "optimizer")
    head_m = got["head", "momentum"]
    assert head_m.path == "groups.head.schedule.momentum" and head_m.base == 0.9 and head_m.index == 1
    assert got["zero", "lr"].node is None and got["zero", "lr"].base == 0.0  # zero_lr: held at 0
    a = got["adam_g", "beta1"]
    assert (a.key, a.position, a.base, a.index, a.row) == ("betas", 0, 0.9, 0, 3)
    assert hyper_key("beta2") == ("betas", 1) and hyper_key("lr") == ("lr", None)
    assert schedule_path(plan.groups[1], "momentum") == "groups.head.schedule.momentum"
    assert not applies(plan, plan.groups[0], "beta1") and applies(plan, plan.groups[0], "momentum")
    # without held=True only driven slots come back
    assert all(s.node is not None for s in slots(plan))


def test_slots_refuse_a_plan_wide_schedule_no_group_has() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"beta1": ir.Constant()})
    with pytest.raises(ConfigError, match="schedule.beta1: SGD has no hyperparameter 'betas'"):
        slots(plan)


def test_fingerprint_changes_with_what_is_driven() -> None:
    plan = _plan()
    s = slots(plan)
    fp = fingerprint(s, unit="iter", steps_per_epoch=None, total_steps=None)
    assert fp == fingerprint(slots(_plan()), unit="iter", steps_per_epoch=None, total_steps=None)
    assert fp != fingerprint(s, unit="epoch", steps_per_epoch=10, total_steps=None)
    assert fp != fingerprint(s[:-1], unit="iter", steps_per_epoch=None, total_steps=None)


# --------------------------------------------------------------------------- the value source

def test_value_source_rows_equal_the_reference_across_chunks() -> None:
    plan = _plan()
    n = 1000
    ref = optbridge.trace(plan, n)
    s = slots(plan, held=True)
    src = ValueSource(s, unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch, chunk=64)
    for k in (0, 1, 63, 64, 65, 500, 999, 3, 900):  # jumps back and forth across chunk borders
        row = src.row(k)
        for j, slot in enumerate(s):
            assert row[j] == ref[slot.hyper][slot.row, k]
    np.testing.assert_array_equal(src.window(10, 20)[0], ref["lr"][0, 10:30])
    assert CHUNK >= 1024


@pytest.mark.parametrize(("node", "total", "horizon", "why"), [
    (ir.Cosine(steps=100), 30, 30, "total_steps"),
    (ir.OneCycle(total_steps=40), None, 41, "one_cycle ends after total_steps=40"),
    (ir.Table(values=(1.0, 0.5, 0.25)), None, 3, "table of 3 values without hold"),
    (ir.Sequence(parts=(ir.Constant(), ir.OneCycle(total_steps=9)), boundaries=(5,)), None, 15, "one_cycle"),
    (ir.Cosine(steps=100), None, None, ""),
])
def test_value_source_horizon_policy(node: ir.Node, total: int | None, horizon: int | None, why: str) -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": node}, total_steps=total)
    src = ValueSource(slots(plan), total_steps=total)
    assert src.horizon == horizon
    if horizon is None:
        src.row(10**6)
        return
    src.row(horizon - 1)  # the last update has a value
    with pytest.raises(PastHorizon, match=f"update {horizon} is past the end of the schedule: .*{why}") as e:
        src.row(horizon)
    assert isinstance(e.value, EvaluationError) and e.value.step == horizon and e.value.horizon == horizon


def test_value_source_plateau_is_defined_as_far_as_the_metrics_go() -> None:
    node = ir.Plateau(patience=0, factor=0.5, unit="epoch")
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 1.0}),), schedule={"lr": node},
                steps_per_epoch=4)
    src = ValueSource(slots(plan), unit="iter", steps_per_epoch=4)
    assert src.horizon == 4 and src.row(3) == [1.0]
    with pytest.raises(PastHorizon, match="needs 1 metric"):
        src.row(4)
    src.add_metric(1.0)
    src.add_metric(2.0)  # worse: the lr halves for epoch 2
    assert src.horizon == 12
    assert src.row(4) == [1.0] and src.row(8) == [0.5]
    assert src.metrics == (1.0, 2.0)


def test_value_source_refuses_a_bad_chunk() -> None:
    with pytest.raises(ConfigError, match="chunk"):
        ValueSource((), chunk=0)


# --------------------------------------------------------------------------- geometry on the nodes

@pytest.mark.parametrize(("period", "mult"), [(1, 1), (3, 1), (1, 2), (5, 3), (7, 2)])
def test_restart_cycles_are_the_brute_force_walk(period: int, mult: int) -> None:
    node = ir.CosineRestarts(period=period, mult=mult)
    start, length, walk = 0, period, {}
    for k in range(400):
        if k >= start + length:
            start, length = start + length, length * mult
        walk[k] = (start, length)
    for k, want in walk.items():
        assert node.cycle_at(k) == want
    starts, lengths = node.cycles(399)
    assert set(starts) == {s for s, _ in walk.values()} and lengths[0] == period


def test_one_cycle_phases_and_anchors() -> None:
    two = ir.OneCycle(total_steps=100, pct_start=0.3)
    assert two.phases() == ((0.0, 29.0, "initial", "peak"), (29.0, 99.0, "peak", "final"))
    three = ir.OneCycle(total_steps=100, pct_start=0.25, three_phase=True)
    assert [p[1] for p in three.phases()] == [24.0, 48.0, 99.0]
    a = two.anchors(1.0)
    assert (a["peak"], a["initial"], a["final"]) == (1.0, 1.0 / 25.0, 1.0 / 25.0 / 1e4)
    assert two.horizon() == 101 and two.horizon("epoch", 10) == 1010
    assert two.phase_starts(1000) == (30,)


def test_marks_and_horizons_of_combinators() -> None:
    seq = ir.Sequence(parts=(ir.Linear(steps=5), ir.MultiStep(milestones=(10, 20)), ir.OneCycle(total_steps=9)),
                      boundaries=(5, 30), unit="epoch")
    assert seq.marks(10_000, "iter", 4) == (20, 60, 100, 120, 128)  # one_cycle peaks after epoch 1.7
    assert seq.horizon("iter", 4) == (30 + 10) * 4
    chain = ir.Chain(parts=(ir.Table(values=(1.0,) * 7), ir.Linear(steps=3)))
    assert chain.horizon() == 7 and chain.marks(100) == (3,)
    assert ir.Cyclic(high=1.0, step_size_up=3, step_size_down=5).cycle_steps == 8


# --------------------------------------------------------------------------- the evaluator's factor forms

@pytest.mark.parametrize("node", [
    WARM_COS, ir.Cosine(steps=37, end=0.01), ir.Polynomial(steps=50, power=2.0, end=1e-4),
    ir.MultiStep(milestones=(3, 9), gamma=0.3), ir.Exponential(gamma=0.97, every=3, stair=True),
    ir.CosineRestarts(period=7, mult=2, end=1e-3), ir.Table(values=(1.0, 0.5, 0.25), relative=True, hold=True),
    ir.Sequence(parts=(ir.Constant(factor=0.1, steps=3), ir.Multiplicative(expr="0.9")), boundaries=(4,)),
    ir.OneCycle(total_steps=60),
])
def test_shared_schedules_are_bit_for_bit_each_group_alone(node: ir.Node) -> None:
    bases = [0.1, 0.05, 3e-4, 0.1 * 0.65**7]
    items = [(node, b, "schedule.lr") for b in bases]
    together = evaluate.table(items, 0, 60, unit="epoch", steps_per_epoch=2)
    for i, b in enumerate(bases):
        alone = evaluate.values(node, np.arange(60), base=b, unit="epoch", steps_per_epoch=2)
        np.testing.assert_array_equal(together[i], alone)


def test_multistep_powers_are_pythons_on_every_cpu() -> None:
    node = ir.MultiStep(milestones=(2, 4, 6, 8), gamma=0.1)
    got = evaluate.values(node, np.arange(10), base=0.05)
    want = [0.05 * 0.1 ** sum(m <= k for m in node.milestones) for k in range(10)]  # torch's closed form
    assert got.tolist() == want


# --------------------------------------------------------------------------- windowed traces and misuse

def test_trace_from_step_k_is_that_window_of_the_whole_trace() -> None:
    plan = _plan(total_steps=1000)
    whole = optbridge.trace(plan, 1000)
    part = optbridge.trace(plan, 100, start=640)
    assert part.start == 640 and part.steps == 100
    for h in whole:
        np.testing.assert_array_equal(part[h], whole[h][:, 640:740])
    rest = optbridge.trace(plan, start=900)  # steps default to what is left of total_steps
    assert rest.steps == 100
    with pytest.raises(EvaluationError, match="updates 950..1049"):
        optbridge.trace(plan, 100, start=950)


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda p: optbridge.trace({"optimizer": {"type": "SGD"}}, 10), "plan: must be an optbridge Plan"),
    (lambda p: optbridge.trace("plan.yaml", 10), "plan: must be an optbridge Plan"),
    (lambda p: optbridge.trace(p), "steps: is required"),
    (lambda p: optbridge.trace(p, 0), "steps: must be a positive integer"),
    (lambda p: optbridge.trace(p, 10, start=-1), "start: must be an integer >= 0"),
    (lambda p: optbridge.trace(p, 10, backend="nope"), "backend: must be one of"),
    (lambda p: optbridge.trace(p, 10)["weight_decay"], "'weight_decay' is not scheduled in this trace"),
    (lambda p: optbridge.trace(p, 10).group("nope"), "group 'nope' is not in this trace"),
])
def test_api_misuse_gets_one_clear_optbridge_error(call: object, pattern: str) -> None:
    plan = _plan()
    with pytest.raises(OptbridgeError, match=pattern):
        call(plan)  # type: ignore[operator]


def test_not_traced_is_also_a_key_error() -> None:
    with pytest.raises(KeyError):
        optbridge.trace(_plan(), 3)["nope"]
    assert isinstance(NotTraced("x"), OptbridgeError)


def test_numbers_of_numpy_and_frameworks_are_numbers() -> None:
    assert ir.Exponential(gamma=np.float32(0.5)).gamma == 0.5
    assert ir.Linear(start_factor=np.array(0.25)).start_factor == 0.25
    assert OptimizerSpec(type="SGD", options={"lr": np.float64(0.1)}).options["lr"] == 0.1
    for bad in (np.array([0.1]), np.bool_(True), "0.1", 1 + 2j, float("nan")):
        with pytest.raises(ConfigError):
            ir.Exponential(gamma=bad)  # type: ignore[arg-type]


def test_values_that_cannot_be_right_are_refused_at_the_node() -> None:
    with pytest.raises(ConfigError, match="gamma: must be >= 0"):
        ir.MultiStep(milestones=(3,), gamma=-0.5)
    with pytest.raises(ConfigError, match=r"scheduler.gamma: must be >= 0"):
        optbridge.load({"dialect": "torch", "optimizer": {"type": "SGD", "lr": 0.1},
                        "scheduler": {"type": "StepLR", "step_size": 2, "gamma": -0.5}})


def test_two_groups_with_the_same_selector_are_refused() -> None:
    doc = {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1},
           "groups": [{"name": "a", "params": "x.*"}, {"name": "b", "params": "x.*"}]}
    with pytest.raises(ConfigError, match="selects the same parameters as group 'a'"):
        optbridge.load(doc)


# --------------------------------------------------------------------------- import hygiene

def test_import_optbridge_loads_no_framework_numpy_or_yaml() -> None:
    code = ("import sys, optbridge\n"
            "from optbridge import *\n"
            "heavy = [m for m in ('torch', 'mindspore', 'megengine') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "import importlib; importlib.reload(optbridge)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import sys, optbridge\n"
            "light = [m for m in ('numpy', 'yaml', 'torch', 'mindspore', 'megengine') if m in sys.modules]\n"
            "print(','.join(light))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_math_is_still_cheap() -> None:  # the evaluator evaluates a 1e5 cosine in well under a second
    t = evaluate.values(ir.Cosine(steps=100_000), 100_000, base=1.0)
    assert t[0] == 1.0 and math.isclose(t[50_000], 0.5, rel_tol=1e-12)
