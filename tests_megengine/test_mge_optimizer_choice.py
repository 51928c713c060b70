"""``to_megengine`` computes torch's update for every optimizer and option: the 104 torch configs, as plans.

Each config of ``fixtures/torch_exact_optimizers.npz`` (real torch 2.13 runs, see
``make_exact_fixtures.py``) becomes a plan: its optimizer and options, one group or
two with different options, and its written hyperparameters as ``table`` schedules
(PlanScheduler writes them). ``to_megengine`` builds it over the same two float32
parameters and a training loop replays the same gradients. The bound is the one the
exact classes meet (``test_exact_optimizers.py``): after every update,
``max |p_mge - p_torch| <= 4 * max(ulp(max |p_torch|), torch's own float32 error)``.

* ``optimizer="auto"`` (the default) passes for every config: MegEngine's own SGD
  where dampening is 0 and maximize off, MegEngine's own Adadelta without maximize,
  optbridge's exact class everywhere else (the ``float32`` rows of ``NATIVE``);
* ``optimizer="exact"`` passes for every config;
* ``optimizer="native"`` builds exactly the configs ``auto`` runs natively and
  refuses the others with the reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import megengine as mge
import numpy as np
import pytest

from optbridge import ir
from optbridge.errors import UnsupportedError
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge_adapters.megengine import optimizers as ex
from optbridge_adapters.megengine.backend import to_megengine
from optbridge_adapters.megengine.build import NATIVE_CLASSES

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_exact_fixtures as mf  # noqa: E402

DATA = mf.load()
CONFIGS = sorted(k[: -len("/config")] for k in DATA if k.endswith("/config"))
BOUND = 4.0


def config(name: str) -> dict[str, Any]:
    return json.loads(str(DATA[f"{name}/config"]))


def plan_of(name: str) -> Plan:
    cfg = config(name)
    sched = {h: DATA[f"{name}/sched/{h}"] for h in mf.schedule(cfg)}

    def tables(i: int) -> dict[str, ir.Node]:
        return {h: ir.Table(values=tuple(float(x) for x in v[i])) for h, v in sched.items()}

    if cfg["groups"] is None:
        groups: tuple[Group, ...] = (Group(name="all", select=(Selector(names=("w", "b")),), schedule=tables(0)),)
    else:
        groups = tuple(Group(name=n, select=(Selector(names=(n,)),), options=cfg["groups"][i], schedule=tables(i))
                       for i, n in enumerate(("w", "b")))
    return Plan(optimizers=(OptimizerSpec(type=cfg["type"], options=cfg["defaults"], groups=groups),))


def run(name: str, optimizer: str) -> tuple[np.ndarray, Any]:
    cfg = config(name)
    p0, grads = DATA[f"inputs/p0/{cfg['regime']}"], DATA[f"inputs/grads/{cfg['regime']}"]
    w, b = mge.Parameter(p0[:35].reshape(mf.W_SHAPE)), mge.Parameter(p0[35:])
    setup = to_megengine(plan_of(name), {"w": w, "b": b}, optimizer=optimizer)
    traj = np.empty((mf.STEPS, mf.N), np.float32)
    for k in range(mf.STEPS):
        w.grad = mge.tensor(grads[k, :35].reshape(mf.W_SHAPE))
        b.grad = mge.tensor(grads[k, 35:]) if mf.has_grad(cfg, k) else None
        setup.optimizer.step()
        setup.scheduler.step()
        traj[k, :35], traj[k, 35:] = w.numpy().ravel(), b.numpy()
    return traj, setup


def check(name: str, traj: np.ndarray) -> None:
    ref = DATA[f"{name}/traj"].astype(np.float64)
    ulp = np.spacing(np.abs(ref).max(axis=1).astype(np.float32)).astype(np.float64)
    err = np.abs(traj.astype(np.float64) - ref).max(axis=1)
    limit = BOUND * np.maximum(ulp, DATA[f"{name}/noise"])
    bad = np.flatnonzero(err > limit)
    assert bad.size == 0, f"{name}: update {bad[0]}: |mge - torch| = {err[bad[0]]:.3g} > {limit[bad[0]]:.3g}"


def native_expected(name: str) -> bool:
    """The measured table: MegEngine's own class is torch's update (verdict float32) for every group."""
    cfg = config(name)
    groups = cfg["groups"] or [{}]
    return all(ex.native_equivalent(cfg["type"], {**cfg["defaults"], **g}).verdict == "float32" for g in groups)


@pytest.mark.parametrize("name", CONFIGS)
def test_auto_computes_torchs_update(name: str) -> None:
    traj, setup = run(name, "auto")
    check(name, traj)
    typ = config(name)["type"]
    want = NATIVE_CLASSES[typ][0] if native_expected(name) else ex.OPTIMIZERS[typ]
    assert all(type(o) is want for o in setup.optimizers), (name, [type(o) for o in setup.optimizers])
    forms = {f.form for f in setup.fidelity if f.hyper == "optimizer"}
    assert forms == ({"native"} if native_expected(name) else {"generated"})


@pytest.mark.parametrize("name", CONFIGS[::4])
def test_exact_computes_torchs_update(name: str) -> None:
    traj, setup = run(name, "exact")
    check(name, traj)
    assert all(type(o) is ex.OPTIMIZERS[config(name)["type"]] for o in setup.optimizers)


@pytest.mark.parametrize("name", CONFIGS)
def test_native_builds_what_computes_torchs_update_and_refuses_the_rest(name: str) -> None:
    if native_expected(name):
        traj, _ = run(name, "native")
        check(name, traj)
    else:
        with pytest.raises(UnsupportedError, match="torch") as e:
            run(name, "native")
        assert e.value.backend == "megengine"


def test_the_choice_covers_every_optimizer_and_both_kinds() -> None:
    assert {config(n)["type"] for n in CONFIGS} == set(ex.OPTIMIZERS)
    natives = [n for n in CONFIGS if native_expected(n)]
    assert {config(n)["type"] for n in natives} == {"SGD", "Adadelta"} and 20 <= len(natives) <= 40
