"""Optimizer state across frameworks, the MegEngine side (real MegEngine 1.13; see tests/state_cases.py).

* torch's and MindSpore's states after k updates (committed interchange files written
  by ``python tests/test_state.py --write``) continue in MegEngine's exact optimizers
  (and in MegEngine's own SGD and Adadelta, which compute torch's update): the
  trajectory stays within ``4 + 2 * own`` float32 ulps of the run that stayed;
* the torch -> MindSpore state goes through MegEngine and back bit for bit;
* MegEngine's own trajectories and states, written for the main env by
  ``.venv-mge/bin/python tests_megengine/test_state_mge.py --write``
  (tests/fixtures/state_megengine), are reproduced here bit for bit;
* the schedule position lands in MegEngine's PlanScheduler.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import megengine as mge
import megengine.module as M
import megengine.optimizer as mopt
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import state_cases as C  # noqa: E402

import optbridge.state as S  # noqa: E402
from optbridge.errors import ConfigError  # noqa: E402
from optbridge_adapters.megengine import optimizers as X  # noqa: E402

ORDER = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias")  # torch's order


class Net(M.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = M.Conv2d(2, 3, 3)
        self.bn = M.BatchNorm2d(3)
        self.fc = M.Linear(3, 2)

    def forward(self, x: Any) -> Any:
        return self.fc(self.bn(self.conv(x)))


def _params(net: Net) -> list[Any]:
    named = dict(net.named_parameters())
    return [named[n] for n in ORDER]


def _setup(case: str, native: bool = False) -> tuple[Net, Any]:
    net = Net()
    ps = _params(net)
    kind = C.CASES[case][0]
    groups = [{"params": ps[:4], **C.options(case, 0)}, {"params": ps[4:], **C.options(case, 1)}]
    if native:
        nesterov = any(g.pop("nesterov", False) for g in groups)
        for g in groups:
            g.pop("dampening", None)
        opt = getattr(mopt, kind)(groups, lr=C.options(case, 0)["lr"],
                                  **({"nesterov": True, "momentum": 0.9} if nesterov else {}))
    else:
        opt = X.OPTIMIZERS[kind](groups)
    return net, opt


def _set(net: Net, flat: np.ndarray) -> None:
    for p, a in zip(_params(net), C.split(flat)):
        p._reset(mge.tensor(a.reshape(p.shape)))


def _flat(net: Net) -> np.ndarray:
    return np.concatenate([p.numpy().reshape(-1) for p in _params(net)])


def run(case: str, start: int, p: np.ndarray, grads: np.ndarray, *, state: Any = None,
        native: bool = False) -> tuple[np.ndarray, dict[int, S.OptimizerState]]:
    """Updates ``start..N-1`` in MegEngine from ``p`` (and a converted state): trajectory and states at KS."""
    net, opt = _setup(case, native)
    _set(net, p)
    if state is not None:
        S.convert_state(state, opt, model=net)
    hy = C.hypers(case)
    rows, states = [_flat(net)], {}
    for k in range(start, C.N):
        for g, group in enumerate(opt.param_groups):
            for h, v in hy.items():
                if h in ("beta1", "beta2"):
                    b = list(group["betas"])
                    b[h == "beta2"] = float(v[g, k])
                    group["betas"] = tuple(b)
                else:
                    group[h] = float(v[g, k])
        for q, gr in zip(_params(net), C.split(grads[k])):
            q.grad = mge.tensor(gr.reshape(q.shape))
        opt.step()
        rows.append(_flat(net))
        if k + 1 in C.KS:
            states[k + 1] = S.read_state(opt, model=net, scheduler=k + 1)
    return np.array(rows), states


def _main() -> Any:
    path = C.MAIN_FIXTURE / "trajectories.npz"
    if not path.exists():
        pytest.skip("main-env fixture missing: run .venv/bin/python tests/test_state.py --write")
    return np.load(path, allow_pickle=False)


@pytest.mark.parametrize("case", list(C.CASES))
def test_resume_from_torch_and_mindspore(case):
    """torch's / MindSpore's state after k updates continues in MegEngine within 4 + 2*own ulps of the stayed run."""
    fx = _main()
    p0, grads = C.inputs()
    assert np.array_equal(fx["grads"], grads) and np.array_equal(fx["p0"], p0)
    lim = C.bound(fx[f"own/{case}"])
    worst = 0.0
    for src in ("torch", "ms"):
        ref = fx[f"{src}/{case}"]
        for k in C.KS:
            st = S.load_state(C.MAIN_FIXTURE / f"{src}_{case}_k{k}.npz")
            got = run(case, k, ref[k], grads, state=st)[0]
            err = C.ulps(got, ref[k:], start=1)
            worst = max(worst, err.max())
            assert np.all(err <= lim), (case, src, k, err, lim)
    print(f"{case}: worst {worst:.2f} ulps (bound {lim.round(2)})")


@pytest.mark.parametrize("case", ["sgd_momentum_scheduled", "adadelta"])
def test_native_megengine_resumes_torch(case):
    """MegEngine's own SGD (dampening 0) and Adadelta compute torch's update: they resume torch's state too."""
    fx = _main()
    _, grads = C.inputs()
    ref = fx[f"torch/{case}"]
    k = C.ROUND_TRIP_K
    st = S.load_state(C.MAIN_FIXTURE / f"torch_{case}_k{k}.npz")
    got = run(case, k, ref[k], grads, state=st, native=True)[0]
    err = C.ulps(got, ref[k:], start=1)
    print(f"native {case}: {err.round(2)} ulps")
    assert np.all(err <= C.bound(fx[f"own/{case}"])), (case, err)


def test_native_sgd_dampening_is_refused_by_the_bound():
    """The bound discriminates: MegEngine's SGD has no dampening (group 1 of case sgd): it leaves the torch run."""
    fx = _main()
    _, grads = C.inputs()
    ref = fx["torch/sgd"]
    k = C.ROUND_TRIP_K
    st = S.load_state(C.MAIN_FIXTURE / f"torch_sgd_k{k}.npz")
    got = run("sgd", k, ref[k], grads, state=st, native=True)[0]
    assert C.ulps(got, ref[k:], start=1)[1] > 100 * C.bound(fx["own/sgd"])[1]


@pytest.mark.parametrize("case", ["adam", "nadam", "sgd", "adagrad", "rmsprop", "adamax"])
def test_round_trip_leg_through_megengine_is_bit_exact(case):
    """torch -> MindSpore (file) -> MegEngine -> read back: every array and step bit for bit."""
    _main()
    via = S.load_state(C.MAIN_FIXTURE / f"via_ms_{case}.npz")
    net, opt = _setup(case)
    conv = S.convert_state(via, opt, model=net)
    assert conv.notes == ()
    back = S.read_state(opt, model=net, scheduler=via.position)
    names = conv.names
    for a in via.params:
        b = back[names[a.name]]
        assert set(a.values) == set(b.values), (case, a.name)
        for k, v in a.values.items():
            assert np.asarray(v).tobytes() == np.asarray(b.values[k]).reshape(np.shape(v)).tobytes(), (case, a.name, k)
    committed = C.MGE_FIXTURE / f"roundtrip_{case}.npz"
    if committed.exists():
        old = S.load_state(committed)
        for a, b in zip(old.params, back.params):
            for k in a.values:
                assert np.asarray(a.values[k]).tobytes() == np.asarray(b.values[k]).tobytes()


def test_megengine_fixture_is_reproduced():
    """The committed MegEngine trajectories and states (read by the main env) are what MegEngine computes."""
    path = C.MGE_FIXTURE / "trajectories.npz"
    if not path.exists():
        pytest.skip("run .venv-mge/bin/python tests_megengine/test_state_mge.py --write")
    fx = np.load(path, allow_pickle=False)
    p0, grads = C.inputs()
    for case in ("adam_beta1_scheduled", "nadam", "sgd"):
        traj, states = run(case, 0, p0, grads)
        assert np.array_equal(traj, fx[f"mge/{case}"]), case
        old = S.load_state(C.MGE_FIXTURE / f"mge_{case}_k{C.KS[1]}.npz")
        for a, b in zip(old.params, states[C.KS[1]].params):
            assert a.name == b.name and all(np.array_equal(a.values[k], b.values[k]) for k in a.values)


def test_reshape_and_refusals():
    """MegEngine's (1, C, 1, 1) BatchNorm and conv-bias state maps to torch's (C,); bad targets are refused."""
    _main()
    st = S.load_state(C.MAIN_FIXTURE / f"torch_adam_k{C.KS[1]}.npz")
    net, opt = _setup("adam")
    conv = S.convert_state(st, opt, model=net)
    assert conv.state["bn.weight"].values["exp_avg"].shape == (1, 3, 1, 1)
    assert np.array_equal(conv.state["bn.weight"].values["exp_avg"].reshape(3), st["bn.weight"].values["exp_avg"])
    pair = [p for p in conv.names.pairs if p.source == "bn.weight"][0]
    assert pair.reshape and pair.target == "bn.weight"
    net, opt = _setup("adamax")
    with pytest.raises(ConfigError, match="the state is Adam's"):
        S.convert_state(st, opt, model=net)
    net, opt = _setup("adagrad", native=True)                     # MegEngine's Adagrad: no initial value, other eps
    ada = S.load_state(C.MAIN_FIXTURE / f"torch_adagrad_k{C.KS[1]}.npz")
    conv = S.convert_state(ada, opt, model=net)
    assert np.array_equal(opt.state_dict()["state"][0]["square_avg"], ada["conv.weight"].values["sum"])
    plain = S.load_state(C.MAIN_FIXTURE / f"torch_adam_beta1_scheduled_k{C.KS[1]}.npz")
    net, opt = _setup("adam")                                     # amsgrad in group 0
    with pytest.raises(ConfigError, match="max_exp_avg_sq: is missing"):
        S.convert_state(plain, opt, model=net)
    with pytest.raises(ConfigError, match="model: is needed"):
        S.read_state(opt)


def test_position_lands_in_the_megengine_plan_scheduler():
    """The position read from torch's PlanScheduler (same plan: same fingerprint) moves MegEngine's PlanScheduler."""
    from optbridge.slots import fingerprint, slots
    from optbridge_adapters.megengine.driver import PlanScheduler
    plan = C.plan_of("adam_beta1_scheduled")
    sl = slots(plan)
    net, opt = _setup("adam_beta1_scheduled")
    sched = PlanScheduler(opt, sl, unit="iter")
    fp = fingerprint(sl, unit="iter", steps_per_epoch=None, total_steps=None)
    assert sched.fingerprint == fp                                  # the same plan: the same fingerprint everywhere
    st = S.load_state(C.MAIN_FIXTURE / f"torch_adam_beta1_scheduled_k{C.KS[1]}.npz")
    moved = S.OptimizerState(st.optimizer, st.params, st.groups, S.SchedulePosition(C.KS[1], (), fp), st.origin)
    conv = S.convert_state(moved, opt, model=net, scheduler=sched)
    hy = C.hypers("adam_beta1_scheduled")
    assert sched.current_epoch == C.KS[1] and any("update 6" in n for n in conv.notes)
    assert opt.param_groups[1]["lr"] == hy["lr"][1, C.KS[1]] and opt.param_groups[0]["betas"][0] == hy["beta1"][0, 6]
    with pytest.raises(ConfigError, match="position.fingerprint"):
        S.apply_position(S.SchedulePosition(3, (), "f" * 16), sched)


def _write() -> None:
    out = C.MGE_FIXTURE
    out.mkdir(parents=True, exist_ok=True)
    p0, grads = C.inputs()
    arrays: dict[str, np.ndarray] = {"p0": p0, "grads": grads}
    for case in C.CASES:
        traj, states = run(case, 0, p0, grads)
        arrays[f"mge/{case}"] = traj
        for k, st in states.items():
            S.save_state(st, out / f"mge_{case}_k{k}.npz")
        via = C.MAIN_FIXTURE / f"via_ms_{case}.npz"
        if via.exists():
            net, opt = _setup(case)
            vs = S.load_state(via)
            S.convert_state(vs, opt, model=net)
            S.save_state(S.read_state(opt, model=net, scheduler=vs.position), out / f"roundtrip_{case}.npz")
    np.savez(out / "trajectories.npz", **arrays)
    print(f"wrote {out}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        _write()
