"""Mixed precision: which schedule position each applied update uses, in real torch and real MindSpore.

The runs are ``scripts/amp_clocks.py`` (real ``torch.amp.GradScaler`` and a real MindSpore
``nn.TrainOneStepWithLossScaleCell``; the script's docstring says why the cell's overflow
check is switched to its own IsFinite variant on CPU). Gradients overflow on chosen
iterations; the lr an update applied is the parameter change of plain SGD with gradient 1.

Tolerances: torch runs a float64 parameter through its own schedulers (recursive forms),
1e-12 relative to the reference; MindSpore stores its lr list in float32, so an applied lr
is the reference rounded to float32, exactly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import optbridge
from optbridge.clock import CLOCKS, Clock, applied_values, positions
from optbridge.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _script() -> Any:
    spec = importlib.util.spec_from_file_location("amp_clocks", ROOT / "scripts" / "amp_clocks.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


AMP = _script()
REF = optbridge.trace(AMP.PLAN)["lr"][0]
MASK = np.array([k not in AMP.OVERFLOWS for k in range(AMP.ITERATIONS)])


# --------------------------------------------------------------------------- the clock, by hand

def test_clock_counts_iterations_and_updates() -> None:
    s, u = Clock("schedule"), Clock("updates")
    used = [(s.tick(a), u.tick(a)) for a in (False, True, True, False, False, True)]
    assert used == [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 2)]
    assert (s.position, u.position, s.skipped, u.iterations, u.updates) == (6, 3, 3, 6, 3)
    restored = Clock("updates")
    restored.load_state_dict(u.state_dict())
    assert restored == u
    with pytest.raises(ConfigError, match="kind: must be one of"):
        Clock("epochs")
    with pytest.raises(ConfigError, match="state.kind"):
        Clock("schedule").load_state_dict(u.state_dict())
    with pytest.raises(ConfigError, match="updates: must be at most iterations"):
        Clock("updates", iterations=2, updates=3)
    assert CLOCKS == ("schedule", "updates")


def test_positions_and_applied_values_by_hand() -> None:
    applied = [False, True, True, False, True]
    assert positions(applied, "schedule").tolist() == [1, 2, 4]
    assert positions(applied, "updates").tolist() == [0, 1, 2]
    assert positions(applied, "updates", start=10).tolist() == [10, 11, 12]
    v = np.array([[10.0, 11.0, 12.0, 13.0, 14.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    assert applied_values(v, applied, "schedule").tolist() == [[11.0, 12.0, 14.0], [1.0, 2.0, 4.0]]
    assert applied_values(v, applied, "updates").tolist() == [[10.0, 11.0, 12.0], [0.0, 1.0, 2.0]]
    with pytest.raises(ConfigError, match="applied"):
        positions([0, 1], "schedule")  # not booleans
    with pytest.raises(ConfigError, match="values: must hold at least 5 positions"):
        applied_values(v[:, :3], applied, "schedule")


# --------------------------------------------------------------------------- torch GradScaler

@pytest.mark.parametrize("form", ["auto", "table"])  # torch's SequentialLR; optbridge's PlanScheduler and guard
def test_torch_gradscaler_skips_updates_while_the_schedule_steps(form: str) -> None:
    pytest.importorskip("torch")
    r = AMP.torch_run(clock="schedule", form=form)
    assert r["applied"].tolist() == MASK.tolist()  # GradScaler skipped exactly the overflowing iterations
    assert np.all(r["lr"][~MASK] == 0.0)
    got = r["lr"][MASK]
    np.testing.assert_allclose(got, applied_values(REF, MASK, "schedule"), rtol=1e-12, atol=0)
    # the j-th applied update uses the value of its iteration, not the j-th value
    assert np.max(np.abs(got - applied_values(REF, MASK, "updates"))) > 1e-3


@pytest.mark.parametrize("form", ["auto", "table"])
def test_torch_follows_the_updates_clock_when_the_scheduler_steps_only_after_applied_updates(form: str) -> None:
    pytest.importorskip("torch")
    r = AMP.torch_run(clock="updates", form=form)
    assert r["applied"].tolist() == MASK.tolist()
    np.testing.assert_allclose(r["lr"][MASK], applied_values(REF, MASK, "updates"), rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- MindSpore loss scaling

def test_mindspore_loss_scale_cell_skips_the_optimizer_and_its_global_step() -> None:
    pytest.importorskip("mindspore")
    r = AMP.mindspore_run(clock="updates")
    assert r["applied"].tolist() == MASK.tolist()
    assert np.all(r["lr"][~MASK] == 0.0)
    # global_step before each iteration = updates applied so far: the list falls behind one step per overflow
    assert r["global_step"].tolist() == np.concatenate(([0], np.cumsum(MASK)[:-1])).tolist()
    want = applied_values(REF, MASK, "updates").astype(np.float32).astype(np.float64)
    assert r["lr"][MASK].tolist() == want.tolist()  # the float32 list value, exactly


def test_mindspore_functional_loss_scaling_counts_applied_updates_too() -> None:
    pytest.importorskip("mindspore")
    r = AMP.mindspore_amp_run()
    assert r["applied"].tolist() == MASK.tolist()
    want = applied_values(REF, MASK, "updates").astype(np.float32).astype(np.float64)
    assert r["lr"][MASK].tolist() == want.tolist()


def test_mindspore_on_the_schedule_clock_matches_torch() -> None:
    pytest.importorskip("mindspore")
    pytest.importorskip("torch")
    ms = AMP.mindspore_run(clock="schedule")  # global_step set to Clock("schedule").position each iteration
    want = applied_values(REF, MASK, "schedule").astype(np.float32).astype(np.float64)
    assert ms["lr"][MASK].tolist() == want.tolist()
    t = AMP.torch_run(clock="schedule")
    np.testing.assert_allclose(ms["lr"][MASK], t["lr"][MASK], rtol=2**-23, atol=0)  # float32 storage only
    # without it, MindSpore lags torch by the number of skipped updates so far
    lag = t["position"][MASK] - AMP.mindspore_run(clock="updates")["position"][MASK]
    assert lag.tolist() == np.cumsum(~MASK)[MASK].tolist()
