"""100-step parameter trajectories: MegEngine built by optbridge vs real torch 2.13.

torch is not in the MegEngine env, so its trajectories are precomputed in the main
env by ``tests_megengine/make_fixtures.py`` into ``fixtures/torch_trajectories.npz``
(``tests/test_megengine_worker.py`` checks the committed file still matches torch).
Same float32 initial values and gradients on both sides; torch's side uses its own
optimizers and schedulers (OneCycleLR with momentum/beta1 cycling, SequentialLR,
per-group nesterov, weight decay written into the groups by hand).

Tolerance: ``max |p_mge - p_torch| <= ULPS * ulp(max |p_torch|)`` over all steps and
elements. Both run float32 arithmetic in a different operation order (MegEngine
rounds lr, momentum and betas to float32 once per step; Adam's step counter and
beta powers are float32, torch's float64), so rounding differences accumulate over
100 steps. ULPS = 16 (measured worst: 3 ulps); AdamW 64 (measured 27: MegEngine
decays as ``p - lr*(delta + wd*p)``, torch as ``p*(1 - lr*wd) - lr*delta``). For
scale: nesterov vs plain momentum differs by 0.56 here, one step of lr schedule
offset by > 1e-3.
The hyperparameters MegEngine holds before each update equal torch's within 1e-12
relative (torch's schedulers recurse; the reference is closed form).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import megengine as mge

import optbridge
from optbridge_adapters.megengine.backend import to_megengine

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "torch_trajectories.npz"
DATA = dict(np.load(FIXTURE))
CONFIGS = sorted({k.split("/")[0] for k in DATA if "/" in k})
ULPS = {"adamw": 64, "adamw_default_wd": 64, "adamw_warmup_cosine_2groups": 64}


def replay(name: str, plan: optbridge.Plan | None = None) -> tuple[np.ndarray, np.ndarray]:
    plan = plan or optbridge.from_dict(json.loads(str(DATA[f"{name}/plan"])))
    p0, grads = DATA[f"{name}/p0"], DATA[f"{name}/grads"]
    hypers = json.loads(str(DATA[f"{name}/hypers"]))
    params = {f"p{i}": mge.Parameter(p0[i].copy()) for i in range(p0.shape[0])}
    setup = to_megengine(plan, params)
    steps = grads.shape[0]
    traj = np.empty((steps,) + p0.shape, np.float32)
    held = np.empty((len(hypers), p0.shape[0], steps))
    for k in range(steps):
        for i in range(p0.shape[0]):
            gd = setup.param_group(f"g{i}")
            for j, h in enumerate(hypers):
                held[j, i, k] = gd["betas"][0] if h == "beta1" else gd[h]
            params[f"p{i}"].grad = mge.tensor(grads[k, i])
        setup.optimizer.step()
        setup.scheduler.step()
        for i in range(p0.shape[0]):
            traj[k, i] = params[f"p{i}"].numpy()
    return traj, held


def test_fixture_is_from_torch_2_13() -> None:
    assert str(DATA["torch_version"]).startswith("2.13")
    assert len(CONFIGS) >= 15


@pytest.mark.parametrize("name", CONFIGS)
def test_trajectory_matches_torch(name: str) -> None:
    traj, held = replay(name)
    torch_traj = DATA[f"{name}/traj"]
    ulp = float(np.spacing(np.float32(np.abs(torch_traj).max())))
    diff = float(np.abs(traj.astype(np.float64) - torch_traj).max())
    assert diff <= ULPS.get(name, 16) * ulp, f"{name}: max |mge - torch| = {diff:.3g} ({diff / ulp:.1f} ulps)"
    np.testing.assert_allclose(held, DATA[f"{name}/held"], rtol=1e-12, atol=0)


def test_tolerance_catches_a_real_difference() -> None:
    """The same comparison fails for a plan that is slightly wrong (nesterov dropped, lr off by 0.1%)."""
    base = json.loads(str(DATA["sgd_nesterov/plan"]))
    base["optimizer"]["nesterov"] = False
    traj, _ = replay("sgd_nesterov", optbridge.from_dict(base))
    assert np.abs(traj - DATA["sgd_nesterov/traj"]).max() > 0.1
    adam = json.loads(str(DATA["adam/plan"]))
    adam["optimizer"]["lr"] *= 1.001
    traj, _ = replay("adam", optbridge.from_dict(adam))
    torch_traj = DATA["adam/traj"]
    ulp = float(np.spacing(np.float32(np.abs(torch_traj).max())))
    assert np.abs(traj - torch_traj).max() > 16 * ulp


def test_adam_step_counter_is_float32() -> None:
    """Documented in the tolerances: MegEngine keeps Adam's step in float32 (torch: float64 math on a float32 tensor)."""
    p = mge.Parameter(np.zeros(3, np.float32))
    plan = optbridge.from_dict({"optbridge": 1, "optimizer": {"type": "Adam", "lr": 0.01}})
    setup = to_megengine(plan, {"w": p})
    p.grad = mge.tensor(np.ones(3, np.float32))
    setup.optimizer.step()
    step = setup.optimizer._state[p]["step"]
    assert step.dtype == np.float32 and float(step.numpy()) == 1.0
