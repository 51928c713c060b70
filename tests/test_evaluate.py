"""The evaluator on hand-computed values: semantics torch cannot show (nesting, clocks, horizons, errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import optbridge
from optbridge import ir, recipes
from optbridge.evaluate import values


def v(node, n, base=1.0, **kw):
    return values(node, n, base=base, **kw).tolist()


def test_nested_sequence_uses_local_time() -> None:
    inner = ir.Sequence(parts=(ir.Constant(factor=0.5, steps=10), ir.Exponential(gamma=0.5)), boundaries=(2,))
    node = ir.Sequence(parts=(ir.Linear(start_factor=0.5, steps=2), inner), boundaries=(2,))
    assert v(node, 7) == [0.5, 0.75, 0.5, 0.5, 1.0, 0.5, 0.25]


def test_multiplicative_continues_inside_sequence_and_starts_fresh_at_0() -> None:
    node = ir.Sequence(parts=(ir.Constant(factor=0.1, steps=100), ir.Multiplicative(expr="0.5")), boundaries=(3,))
    assert v(node, 6) == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.025, 0.0125], rel=1e-15)
    node0 = ir.Sequence(parts=(ir.Constant(factor=0.1), ir.Multiplicative(expr="0.5")), boundaries=(0,))
    assert v(node0, 3) == [1.0, 0.5, 0.25]  # milestone at 0: torch's initial step, no f(0)


def test_epoch_unit_holds_values_within_an_epoch() -> None:
    node = ir.MultiStep(milestones=(1, 2), gamma=0.1, unit="epoch")
    assert v(node, 7, steps_per_epoch=3) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01], rel=1e-15)


def test_mixed_clock_iteration_warmup_then_epoch_decay() -> None:
    node = ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=4), ir.Exponential(gamma=0.5, unit="epoch")), boundaries=(4,))
    assert v(node, 12, steps_per_epoch=3) == [0, .25, .5, .75, 1, 1, 1, .5, .5, .5, .25, .25]


def test_epoch_sequence_boundaries_count_epochs() -> None:
    node = ir.Sequence(parts=(ir.Constant(factor=0.1), ir.Constant()), boundaries=(2,), unit="epoch")
    assert v(node, 8, steps_per_epoch=3) == [.1] * 6 + [1, 1]


def test_cosine_horizons() -> None:
    periodic = v(ir.Cosine(steps=4), 9)
    clamped = v(ir.Cosine(steps=4, clamp=True), 9)
    assert periodic[4] == 0.0 and periodic[8] == 1.0  # period 2T, as torch
    assert clamped[4:] == [0.0] * 5
    assert periodic[1] == pytest.approx((1 + math.cos(math.pi / 4)) / 2, rel=1e-15)


def test_cosine_restarts_integer_cycles() -> None:
    out = values(ir.CosineRestarts(period=2, mult=3), 9, base=1.0)
    restarts = [k for k in range(9) if out[k] == 1.0]
    assert restarts == [0, 2, 8]  # cycles of 2, 6, 18


def test_polynomial_cycle_regrows_horizon() -> None:
    out = v(ir.Polynomial(steps=2, power=1.0, end=0.0, cycle=True), 6)
    assert out == pytest.approx([1, .5, 0, 0.25, 0, 1 / 6], rel=1e-15)


def test_warmup_from_zero_recipes() -> None:
    assert v(recipes.linear_warmup(4), 6, base=0.1) == pytest.approx([0, .025, .05, .075, .1, .1], rel=1e-15)
    ew = values(recipes.exponential_warmup(4, 0.01), 6, base=1.0)
    assert ew[0] == pytest.approx(0.01) and ew[4] == 1.0 and np.all(np.diff(ew[:5]) > 0)
    with pytest.raises(optbridge.ConfigError, match="start_factor: must be > 0"):
        recipes.exponential_warmup(4, 0.0)


def test_noam_matches_seed_formula() -> None:
    W = 10
    out = values(recipes.noam(W), 50, base=2.0)
    expected = [2.0 * min(s ** -0.5, s * W ** -1.5) for s in range(1, 51)]
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    assert int(np.argmax(out)) == W - 1


def test_warmup_stable_decay() -> None:
    out = v(recipes.warmup_stable_decay(2, 3, 2, end_factor=0.0), 8)
    assert out == pytest.approx([0, .5, 1, 1, 1, 1, .5, 0], abs=1e-15)


def test_table_past_end_errors_unless_hold() -> None:
    with pytest.raises(optbridge.EvaluationError, match="table has 3 values, step 3 is past its end"):
        values(ir.Table(values=(1, 2, 3)), 4, base=1.0)
    assert v(ir.Table(values=(1, 2, 3), hold=True), 5) == [1, 2, 3, 3, 3]
    assert v(ir.Table(values=(1, 0.5), relative=True), 2, base=0.2) == [0.2, 0.1]


def test_plateau_needs_metrics() -> None:
    with pytest.raises(optbridge.EvaluationError, match="plateau needs a metric after each of its first 4 steps"):
        values(ir.Plateau(), 5, base=1.0, metrics=[1.0])


def test_plateau_torch_documented_example() -> None:
    # semantics.md §1.2: lr *after* each step [.1,.1,.05,.05,.05,.025,.025,.025,.02,.02]; trace[k] is the lr of update k.
    out = v(ir.Plateau(factor=0.5, patience=1, cooldown=1, min_value=0.02), 11, base=0.1, metrics=[1, 1, 1, 1, 1, 1, .5, .6, .6, .6])
    assert out == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.02, 0.02], rel=1e-15)


def test_one_cycle_zero_length_phase_is_a_clear_error() -> None:
    with pytest.raises(optbridge.EvaluationError, match="phase 0 has zero length"):
        values(ir.OneCycle(total_steps=10, pct_start=0.1), 3, base=1.0)


def test_chain_of_zero_base_is_an_error() -> None:
    with pytest.raises(optbridge.EvaluationError, match="base is 0"):
        values(ir.Chain(parts=(ir.Constant(),)), 2, base=0.0)


def test_other_hyperparameters_and_per_group_schedules() -> None:
    plan = optbridge.load({
        "optbridge": 1, "optimizer": {"type": "AdamW", "lr": 1e-3, "weight_decay": 0.05},
        "groups": [{"name": "a"}, {"name": "b", "lr": 1e-2, "schedule": {"lr": {"kind": "constant"}}}],
        "schedule": {"lr": {"kind": "linear", "start_factor": 0.0, "steps": 2},
                     "weight_decay": {"kind": "linear", "start_factor": 1.0, "end_factor": 0.1, "steps": 2},
                     "beta1": {"kind": "constant", "factor": 0.5}}})
    tr = optbridge.trace(plan, 3)
    assert tuple(tr) == ("lr", "weight_decay", "beta1")
    assert tr["lr"].tolist() == [[0.0, 5e-4, 1e-3], [1e-2, 1e-2, 1e-2]]
    assert tr["weight_decay"][0].tolist() == pytest.approx([0.05, 0.0275, 0.005], rel=1e-14)
    assert tr["beta1"].tolist() == [[0.45] * 3, [0.45] * 3]
    assert tr.group("b")["lr"].tolist() == [1e-2] * 3


def test_unknown_hyperparameter_for_optimizer() -> None:
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "Adagrad"}, "schedule": {"momentum": {"kind": "constant"}}})
    with pytest.raises(optbridge.ConfigError, match="schedule.momentum: Adagrad has no hyperparameter 'momentum' to schedule"):
        optbridge.trace(plan, 2)


def test_vectorised_long_horizon() -> None:
    node = recipes.warmup_cosine(1000, 10_000_000)
    out = values(node, 10_000_000, base=0.1)
    assert out.shape == (10_000_000,) and out[1000] == 0.1 and out[-1] == pytest.approx(0.1 * (1 + math.cos(math.pi * (9_998_999 / 9_999_000))) / 2, rel=1e-12)


def test_trace_stays_the_function_after_submodule_import() -> None:
    import optbridge.tracing  # noqa: F401  (binding a submodule must not shadow optbridge.trace)
    assert callable(optbridge.trace) and optbridge.trace.__name__ == "trace"


def test_plan_wide_hyper_missing_in_some_optimizers_is_nan_there() -> None:
    plan = optbridge.load({"optbridge": 1, "optimizers": [
        {"name": "sgd", "type": "SGD", "lr": 0.1, "groups": [{"name": "a"}]},
        {"name": "adam", "type": "Adam", "lr": 1e-3, "groups": [{"name": "b"}]}],
        "schedule": {"beta1": {"kind": "linear", "start_factor": 1.0, "end_factor": 0.5, "steps": 2}}})
    tr = optbridge.trace(plan, 3)
    assert np.isnan(tr["beta1"][0]).all()
    assert tr["beta1"][1].tolist() == pytest.approx([0.9, 0.675, 0.45], rel=1e-15)
    sgd_only = optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD"}, "schedule": {"beta1": {"kind": "constant"}}})
    with pytest.raises(optbridge.ConfigError, match="schedule.beta1: SGD has no hyperparameter 'betas' to schedule"):
        optbridge.trace(sgd_only, 2)
