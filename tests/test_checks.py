"""Hyperparameter values that cannot work are config errors (optbridge.checks).

Every expected step and value is computed by hand in the comments (the schedules are
chosen so that the values are exact in binary). The torch tests show the failure the
check prevents, with real torch: Adam with a beta1 of 1 divides by zero.
"""

from __future__ import annotations

import importlib.util

import math
import tracemalloc

import numpy as np
import pytest

import optbridge
from optbridge import checks, ir
from optbridge.backends import get_backend
from optbridge.checks import DomainError, check_nodes, check_options, check_plan, check_trace, check_values, domain
from optbridge.errors import ConfigError, EvaluationError
from optbridge.plan import Group, OptimizerSpec, Plan, Selector


def _plan(kind: str = "SGD", schedule: dict | None = None, total: int | None = 100, groups: tuple = (),
          **options: object) -> Plan:
    return Plan(optimizers=(OptimizerSpec(type=kind, options=options, groups=groups),), schedule=schedule or {},
                total_steps=total)


def _error(fn, *args, **kw) -> DomainError:
    with pytest.raises(DomainError) as info:
        fn(*args, **kw)
    return info.value


# --------------------------------------------------------------------------- domains

def test_domains_follow_what_the_optimizers_can_use() -> None:
    beta = domain("beta1", "Adam")
    assert beta.contains(0.0) and beta.contains(0.999) and not beta.contains(1.0) and not beta.contains(-1e-300)
    assert domain("beta2", "Lion").contains(1.0)  # Lion has no bias correction
    assert not domain("momentum").contains(1.0) and domain("momentum").contains(0.0)
    eps = domain("eps")
    assert not eps.contains(0.0) and eps.contains(5e-324)
    lr = domain("lr")
    assert lr.contains(0.0) and not lr.contains(-0.0 - 1e-300) and not lr.contains(math.inf)
    assert not lr.contains(math.nan)
    assert domain("rho").rule == "must be in [0, 1]" and beta.rule == "must be in [0, 1)"
    assert lr.rule == "must be finite and >= 0" and eps.rule == "must be finite and > 0"
    a = np.array([0.5, 1.0, np.nan, -np.inf, 0.0])
    assert beta.outside(a).tolist() == [False, True, True, True, False]


# --------------------------------------------------------------------------- streamed values

def test_a_beta_reaching_one_is_a_config_error_naming_path_step_and_value() -> None:
    # beta1 = 0.5 * (1 + (2 - 1) * min(k, 4) / 4): 0.5, 0.625, 0.75, 0.875, then 1.0 exactly at update 4
    plan = _plan("Adam", {"beta1": ir.Linear(start_factor=1.0, end_factor=2.0, steps=4)}, total=10,
                 lr=0.1, betas=(0.5, 0.999))
    e = _error(check_plan, plan)
    assert isinstance(e, ConfigError) and isinstance(e, ValueError)
    assert (e.path, e.hyper, e.group, e.step, e.value) == ("schedule.beta1", "beta1", "all", 4, 1.0)
    assert str(e).startswith("schedule.beta1: beta1 must be in [0, 1) (the bias correction 1 - beta**t is 0 at "
                             "beta = 1, a division by zero): group 'all' reaches it at update 4, got 1.0")
    # three updates are fine; the fourth (k = 3) is 0.875
    check_plan(plan, steps=4)
    # optbridge.trace refuses it, for the reference and for a framework backend alike
    for backend in ("reference", "torch") if importlib.util.find_spec("torch") else ("reference",):
        with pytest.raises(DomainError, match="update 4"):
            optbridge.trace(plan, 10, backend=backend)


def test_without_the_check_torch_adam_divides_by_zero() -> None:
    """What the check prevents: real torch Adam at beta1 = 1 (bias correction 1 - 1**t = 0)."""
    pytest.importorskip("torch")
    plan = _plan("Adam", {"beta1": ir.Linear(start_factor=1.0, end_factor=2.0, steps=4)}, total=10,
                 lr=0.1, betas=(0.5, 0.999))
    with pytest.raises(ZeroDivisionError):
        get_backend("torch")(plan, 10)


def test_momentum_one_cycle_anchor_at_one_is_refused_statically() -> None:
    node = ir.OneCycle(total_steps=100, initial=1.0, peak=0.85, final=0.95)
    plan = _plan("SGD", {"momentum": node}, total=None, lr=0.1, momentum=0.9)  # unbounded: no streamed check
    e = _error(check_nodes, plan)
    assert (e.path, e.step, e.value) == ("schedule.momentum.initial", 0, 1.0)
    e = _error(check_plan, plan)  # what trace and to_<framework> run
    assert e.path == "schedule.momentum.initial"
    # a peak of 1 is reached at the end of the first phase (pct_start 0.3 of 100: update 29), step not exact
    node = ir.OneCycle(total_steps=100, initial=0.95, peak=1.0, final=0.95)
    e = _error(check_nodes, _plan("SGD", {"momentum": node}, total=None, lr=0.1, momentum=0.9))
    assert (e.path, e.step, e.value) == ("schedule.momentum.peak", None, 1.0)
    assert "about update 29" in str(e)


def test_negative_lr_from_a_cosine_end() -> None:
    # lr = -0.1 + 0.2 * (1 + cos(pi k / 100)) / 2: 0 at k = 50 (cos(pi/2) = 6e-17 is lost in 1 + ...), negative from 51
    node = ir.Cosine(steps=100, end=-0.1)
    e = _error(check_plan, _plan("SGD", {"lr": node}, total=100, lr=0.1))
    assert (e.path, e.step) == ("schedule.lr", 51) and e.value < 0
    # the static check names the end itself when the run reaches it (update 100)
    e = _error(check_plan, _plan("SGD", {"lr": node}, total=200, lr=0.1))
    assert (e.path, e.step, e.value) == ("schedule.lr.end", 100, -0.1)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_eps_zero_negative_weight_decay_and_non_finite_values() -> None:
    e = _error(check_plan, _plan("Adam", lr=0.1, eps=0.0))
    assert (e.path, e.value, e.step) == ("optimizer.eps", 0.0, 0)
    # eps * 0**k: 1e-8 at update 0, 0 from update 1
    e = _error(check_plan, _plan("Adam", {"eps": ir.Exponential(gamma=0.0)}, lr=0.1))
    assert (e.path, e.step, e.value) == ("schedule.eps", 1, 0.0)
    groups = (Group(name="a", select=(Selector(names=("a.*",)),)),
              Group(name="b", select=(Selector(rest=True),), options={"weight_decay": -1e-4}))
    e = _error(check_plan, _plan("SGD", groups=groups, lr=0.1))
    assert (e.path, e.group, e.value) == ("groups[1].weight_decay", "b", -1e-4)
    # a static momentum of 1 never forgets a gradient
    assert _error(check_plan, _plan("SGD", lr=0.1, momentum=1.0)).path == "optimizer.momentum"
    # 0.1 * (1e200)**k: 1e199 at update 1, inf at update 2
    e = _error(check_plan, _plan("SGD", {"lr": ir.Exponential(gamma=1e200)}, lr=0.1))
    assert (e.step, e.value) == (2, math.inf)
    # a weight-decay schedule that turns negative: 0.1 * (1 - 2 min(k, 4) / 4) is -0.05 at update 3
    e = _error(check_plan, _plan("SGD", {"weight_decay": ir.Linear(start_factor=1.0, end_factor=-1.0, steps=4)},
                                 lr=0.1, weight_decay=0.1))
    assert (e.path, e.step, e.value) == ("schedule.weight_decay", 3, pytest.approx(-0.05, rel=1e-15))


def test_multi_optimizer_paths_and_table_values() -> None:
    o1 = OptimizerSpec(type="SGD", name="a", options={"lr": 0.1}, groups=(Group(name="ga"),))
    o2 = OptimizerSpec(type="Adam", name="b", options={"lr": 0.1, "betas": (0.9, 1.0)}, groups=(Group(name="gb"),))
    e = _error(check_options, Plan(optimizers=(o1, o2)))
    assert (e.path, e.hyper, e.value) == ("optimizers[1].betas[1]", "beta2", 1.0)
    # an absolute table: values[2] = -1 is used by update 2 (static: the table itself fixes it)
    plan = _plan("SGD", {"lr": ir.Table(values=(0.1, 0.05, -1.0), hold=True)}, total=None, lr=0.1)
    e = _error(check_plan, plan)
    assert (e.path, e.step, e.value) == ("schedule.lr.values[2]", 2, -1.0)


def test_sequence_parts_and_epoch_clock_name_the_update() -> None:
    # epoch clock, 10 updates per epoch: part 1 starts at epoch 3 = update 30, its table's values[1] at update 40
    seq = ir.Sequence(parts=(ir.Constant(), ir.Table(values=(0.1, -0.5), hold=True)), boundaries=(3,))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": seq}, step_unit="epoch",
                steps_per_epoch=10, total_steps=100)
    e = _error(check_nodes, plan)
    assert (e.path, e.step, e.value) == ("schedule.lr.parts[1].values[1]", 40, -0.5)
    e = _error(check_values, plan)  # the streamed check finds the same update
    assert (e.path, e.step, e.value) == ("schedule.lr", 40, -0.5)
    # a part the run never reaches is not checked
    check_nodes(plan, until=40)


def test_windowed_trace_and_plateau_horizon() -> None:
    plan = _plan("SGD", {"lr": ir.Linear(start_factor=1.0, end_factor=-1.0, steps=10)}, total=100, lr=0.1)
    # lr = 0.1 (1 - 2 min(k, 10) / 10) < 0 from update 6; a window from update 8 names update 8
    e = _error(optbridge.trace, plan, 5, start=8)
    assert e.step == 8
    # a plateau without metrics is checked as far as it is known (its first step), no metric error
    check_plan(_plan("SGD", {"lr": ir.Plateau(patience=0)}, total=100, lr=0.1))
    with pytest.raises(ConfigError, match="metrics: must be a sequence of numbers"):
        check_values(_plan("SGD", {"lr": ir.Plateau(patience=0)}, total=100, lr=0.1), metrics=["x"])  # type: ignore[list-item]


def test_check_trace_skips_nothing_it_should_check() -> None:
    plan = _plan("SGD", {"lr": ir.Linear(start_factor=1.0, end_factor=-1.0, steps=10)}, total=100, lr=0.1)
    tr = optbridge.trace(_plan("SGD", {"lr": ir.Linear(start_factor=1.0, end_factor=0.0, steps=10)}, total=100,
                               lr=0.1), 20)
    check_trace(plan, tr)  # the plan's own slots over a clean trace: nothing to say
    bad = optbridge.tracing.reference_trace(plan, 20)
    assert _error(check_trace, plan, bad).step == 6


def test_check_trace_over_many_rows_names_the_earliest_step_and_its_group() -> None:
    """Every row scanned at once (min/max first): the earliest bad update wins, then the first group at it; a
    NaN anywhere is out of domain too."""
    groups = tuple(Group(name=f"g{i}", select=(Selector(names=(f"p{i}",)),), options={"lr": 0.1 * (i + 1)},
                         schedule={"lr": ir.Linear(start_factor=1.0, end_factor=-1.0, steps=10 + 2 * (2 - i))})
                   for i in range(3))
    plan = _plan("SGD", {}, total=100, groups=groups, lr=0.1)
    bad = optbridge.tracing.reference_trace(plan, 20)
    err = _error(check_trace, plan, bad)
    assert (err.step, err.group) == (6, "g2")          # g2 (10 steps) goes below 0 first: 0.3 * (1 - 2*6/10)
    ok = optbridge.tracing.reference_trace(_plan("SGD", {}, total=100, groups=tuple(
        Group(name=g.name, select=g.select, options=g.options) for g in groups), lr=0.1), 20)
    check_trace(plan, ok)
    ok.data["lr"][1, 13] = np.nan
    assert (_error(check_trace, plan, ok).step, _error(check_trace, plan, ok).group) == (13, "g1")


def test_to_framework_entry_points_check_before_building() -> None:
    torch = pytest.importorskip("torch")
    plan = _plan("Adam", {"beta1": ir.Linear(start_factor=1.0, end_factor=2.0, steps=4)}, total=10,
                 lr=0.1, betas=(0.5, 0.999))
    model = torch.nn.Linear(2, 1)
    with pytest.raises(DomainError, match="update 4"):
        optbridge.to_torch(plan, model)
    optbridge.to_torch(plan, model, total_steps=4)  # four updates are fine
    with pytest.raises(DomainError, match="update 4"):
        optbridge.to_mindspore_lists(plan, 10, hyper="beta1")


def test_streamed_check_memory_stays_at_the_window_for_150_groups_and_a_million_updates() -> None:
    """150 groups x 1e6 updates (1.2 GB as a trace): the first bad value is the last update's, found in O(window)."""
    groups = tuple(Group(name=f"g{i}", select=(Selector(names=(f"l{i}.*",)),), options={"lr_mult": 0.97 ** i})
                   for i in range(150))
    n = 1_000_000
    # lr = base * (1 - (k >= n - 1) * 2): negative at the last update only
    node = ir.Piecewise(boundaries=(n - 1,), values=(1.0, -1.0), relative=True)
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=groups),), schedule={"lr": node},
                total_steps=n)
    check_nodes(plan, until=n - 1)
    tracemalloc.start()
    try:
        e = _error(check_values, plan)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (e.step, e.group) == (n - 1, "g0")
    assert peak < 4 * checks.WINDOW * 8  # a few windows of float64, not 150 x 1e6 x 8 bytes


def test_conformance_cases_and_examples_pass_the_checks() -> None:
    """No false alarm on the 119 conformance cases and the bundled examples."""
    from pathlib import Path

    from optbridge_conformance.cases import load_cases
    for case in load_cases():
        check_plan(case.plan, steps=case.steps, metrics=getattr(case, "metrics", None))
    for path in sorted((Path(optbridge.__file__).parent / "examples").glob("*.yaml")):
        check_plan(optbridge.load(path))


def test_lambda_errors_stay_evaluation_errors() -> None:
    with pytest.raises(EvaluationError):
        check_plan(_plan("SGD", {"lr": ir.Lambda(expr="1 / (5 - k)")}, total=10, lr=0.1))
