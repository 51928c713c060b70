"""100-step parameter trajectories: MegEngine built by optbridge vs real torch 2.13.

torch is not in the MegEngine env, so its trajectories are precomputed in the main
env by ``tests_megengine/make_fixtures.py`` into ``fixtures/torch_trajectories.npz``
(``tests/test_megengine_worker.py`` checks the committed file still matches torch).
Same float32 initial values and gradients on both sides; torch's side uses its own
optimizers and schedulers (OneCycleLR with momentum/beta1 cycling, SequentialLR,
per-group nesterov, weight decay written into the groups by hand).

Tolerance: ``max |p_mge - p_torch| <= ULPS * ulp(max |p_torch|)`` over all steps and
elements, ULPS = 8. Both run float32 arithmetic, in a slightly different operation
order where MegEngine's own class runs (SGD, Adadelta: MegEngine rounds lr, momentum
and the product lr*g separately) and in torch's order where optbridge's exact class
runs (Adam, AdamW, Adagrad: ``to_megengine`` picks it because MegEngine's own differs);
measured worst 3.0 ulps (sgd_nesterov_split, sgd_weight_decay_schedule), AdamW 0.1
(MegEngine's own AdamW: 27). For scale: nesterov vs plain momentum differs by 0.56
here, an lr off by 0.1 % by more than 16 ulps.
The hyperparameters MegEngine holds before each update equal torch's within 1e-12
relative (torch's schedulers recurse; the reference is closed form).
"""

from __future__ import annotations

import json
from pathlib import Path

import megengine as mge
import megengine.optimizer as mopt
import numpy as np
import pytest

import optbridge
from optbridge_adapters.megengine import optimizers as ex
from optbridge_adapters.megengine.backend import to_megengine

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "torch_trajectories.npz"
DATA = dict(np.load(FIXTURE))
CONFIGS = sorted({k.split("/")[0] for k in DATA if "/" in k})
ULPS = 8


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
    assert diff <= ULPS * ulp, f"{name}: max |mge - torch| = {diff:.3g} ({diff / ulp:.1f} ulps)"
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


def test_adam_runs_torchs_update_with_torchs_step_counter() -> None:
    """MegEngine's own Adam keeps its step and betas in float32 tensors and bias-corrects in float32; to_megengine
    runs optbridge's exact Adam instead, whose state_dict holds torch's 0-d float32 ``step``."""
    p = mge.Parameter(np.zeros(3, np.float32))
    plan = optbridge.from_dict({"optbridge": 1, "optimizer": {"type": "Adam", "lr": 0.01}})
    setup = to_megengine(plan, {"w": p})
    assert type(setup.optimizer) is ex.Adam
    p.grad = mge.tensor(np.ones(3, np.float32))
    setup.optimizer.step()
    step = setup.optimizer.state_dict()["state"][0]["step"]
    assert step.dtype == np.float32 and step.shape == () and float(step) == 1.0
    native = mopt.Adam([q := mge.Parameter(np.zeros(3, np.float32))], lr=0.01)
    q.grad = mge.tensor(np.ones(3, np.float32))
    native.step()
    assert native._state[q]["step"].dtype == np.float32
