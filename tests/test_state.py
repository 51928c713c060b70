"""Optimizer state across frameworks (optbridge.state): torch <-> MindSpore live, MegEngine through committed files.

Resume: train k updates in one framework, convert the optimizer state (and the
schedule position), continue in another; the parameter trajectory must stay within
``4 + 2 * own`` float32 ulps of the run that stayed (tests/state_cases.py says
why). Every optimizer of torch's (SGD with momentum / nesterov / dampening, Adam,
AdamW, amsgrad, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam), a warmup + cosine
lr, momentum / beta1 scheduled in two cases, k in (1, 6, 11) of 16 updates.

MegEngine runs in its own env: ``python tests/test_state.py --write`` writes this
env's trajectories and states for it (tests_megengine/fixtures/state_main), and
tests_megengine/test_state_mge.py writes MegEngine's for this env
(tests/fixtures/state_megengine), including the torch -> MindSpore -> MegEngine
state whose way back to torch must give torch's state bit for bit.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ms = pytest.importorskip("mindspore")

from mindspore import Tensor, ops  # noqa: E402
from mindspore import nn as mnn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import state_cases as C  # noqa: E402

import optbridge.state as S  # noqa: E402
from optbridge.errors import ConfigError  # noqa: E402
from optbridge.names import NameMapError  # noqa: E402
from optbridge_adapters.mindspore import optimizers as X  # noqa: E402

ms.set_context(mode=ms.PYNATIVE_MODE)


# ----------------------------------------------------------------------------- twin models

class TNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(3, 2)


class MNet(mnn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.conv = mnn.Conv2d(2, 3, 3, pad_mode="valid", has_bias=True)
        self.bn = mnn.BatchNorm2d(3)
        self.fc = mnn.Dense(3, 2)


def _torch_setup(case: str, dtype: Any = torch.float32) -> tuple[TNet, Any]:
    net = TNet().to(dtype)
    ps = [p for _, p in net.named_parameters()]
    kind = C.CASES[case][0]
    opt = getattr(torch.optim, kind)([{"params": ps[:4], **C.options(case, 0)}, {"params": ps[4:],
                                      **C.options(case, 1)}], foreach=False)
    return net, opt


def _set_torch(net: TNet, flat: np.ndarray) -> None:
    with torch.no_grad():
        for p, a in zip(net.parameters(), C.split(flat)):
            p.copy_(torch.from_numpy(a.copy()).to(p.dtype))


def _flat_torch(net: TNet) -> np.ndarray:
    return np.concatenate([p.detach().numpy().reshape(-1) for p in net.parameters()])


def _write_torch(opt: Any, hy: dict[str, np.ndarray], k: int) -> None:
    for g, group in enumerate(opt.param_groups):
        for h, v in hy.items():
            if h in ("beta1", "beta2"):
                b = list(group["betas"])
                b[h == "beta2"] = float(v[g, k])
                group["betas"] = tuple(b)
            else:
                group[h] = float(v[g, k])


def torch_run(case: str, start: int, p: np.ndarray, grads: np.ndarray, *, state: Any = None,
              dtype: Any = torch.float32) -> tuple[np.ndarray, dict[int, S.OptimizerState]]:
    """Updates ``start..N-1`` from parameters ``p`` (and a converted state): the trajectory and states at KS."""
    net, opt = _torch_setup(case, dtype)
    _set_torch(net, p)
    if state is not None:
        S.convert_state(state, opt, model=net)
    hy = C.hypers(case)
    rows, states = [_flat_torch(net)], {}
    for k in range(start, C.N):
        _write_torch(opt, hy, k)
        for q, gr in zip(net.parameters(), C.split(grads[k])):
            q.grad = torch.from_numpy(gr.copy()).to(dtype)
        opt.step()
        rows.append(_flat_torch(net))
        if k + 1 in C.KS and dtype == torch.float32:
            states[k + 1] = S.read_state(opt, model=net, scheduler=k + 1)
    return np.array(rows), states


class MSRun:
    """One exact MindSpore optimizer per case (it compiles once), reused for every resume."""

    def __init__(self, case: str) -> None:
        self.case = case
        self.net = MNet()
        ps = self.net.trainable_params()
        kind = C.CASES[case][0]
        self.opt = X.exact_optimizer(kind, [{"params": ps[:4], **C.options(case, 0)},
                                            {"params": ps[4:], **C.options(case, 1)}])
        self.hy = C.hypers(case)

    def flat(self) -> np.ndarray:
        return np.concatenate([p.asnumpy().reshape(-1) for p in self.opt.parameters])

    def run(self, start: int, p: np.ndarray, grads: np.ndarray,
            state: Any = None) -> tuple[np.ndarray, dict[int, S.OptimizerState]]:
        """Updates ``start..N-1`` from ``p`` and ``state`` (None: the state it has: the first run's is fresh)."""
        for q, a in zip(self.opt.parameters, C.split(p)):
            ops.assign(q, Tensor(a))
        if state is not None:
            S.convert_state(state, self.opt, model=self.net)
        rows, states = [self.flat()], {}
        for k in range(start, C.N):
            for g in (0, 1):
                for h, v in self.hy.items():
                    ops.assign(self.opt.hyper(g, h), Tensor(float(v[g, k]), ms.float64))
            self.opt(tuple(Tensor(gr) for gr in C.split(grads[k])))
            rows.append(self.flat())
            if k + 1 in C.KS:
                states[k + 1] = S.read_state(self.opt, model=self.net, scheduler=k + 1)
        return np.array(rows), states


_CACHE: dict[str, dict[str, Any]] = {}


def case_data(case: str) -> dict[str, Any]:
    """Every run of a case in this env (computed once)."""
    if case in _CACHE:
        return _CACHE[case]
    p0, grads = C.inputs()
    t32, t_states = torch_run(case, 0, p0, grads)
    t64, _ = torch_run(case, 0, p0, grads, dtype=torch.float64)
    own = C.ulps(t32, t64)
    msr = MSRun(case)
    m32, m_states = msr.run(0, p0, grads)
    d: dict[str, Any] = {"torch": t32, "torch64": t64, "own": own, "ms": m32, "torch_states": t_states,
                         "ms_states": m_states, "msrun": msr}
    # torch -> MindSpore: continue from torch's state after k updates
    d["torch_to_ms"] = {k: msr.run(k, t32[k], grads, t_states[k])[0] for k in C.KS}
    # MindSpore -> torch
    d["ms_to_torch"] = {k: torch_run(case, k, m32[k], grads, state=m_states[k])[0] for k in C.KS}
    # the round trip's first leg: torch's state read back from MindSpore
    msr.run(C.N, t32[C.ROUND_TRIP_K], grads, t_states[C.ROUND_TRIP_K])
    d["via_ms"] = S.read_state(msr.opt, model=msr.net, scheduler=C.ROUND_TRIP_K)
    _CACHE[case] = d
    return d


# ----------------------------------------------------------------------------- resume torch <-> MindSpore

@pytest.mark.parametrize("case", list(C.CASES))
def test_resume_torch_mindspore_both_ways(case):
    """k updates in one framework, the rest in the other: within 4 + 2*own ulps of the run that stayed."""
    d = case_data(case)
    lim = C.bound(d["own"])
    worst = []
    for k in C.KS:
        a = C.ulps(d["torch_to_ms"][k], d["torch"][k:], start=1)
        b = C.ulps(d["ms_to_torch"][k], d["ms"][k:], start=1)
        worst.append(max(a.max(), b.max()))
        assert np.all(a <= lim), (case, k, "torch -> mindspore", a, lim)
        assert np.all(b <= lim), (case, k, "mindspore -> torch", b, lim)
    print(f"{case}: worst {max(worst):.2f} ulps (bound {lim.round(2)}; torch's own error {d['own'].round(2)})")


def test_resume_really_uses_the_state():
    """The bound discriminates: continuing Adam in MindSpore from a fresh state leaves it."""
    d = case_data("adam")
    p0, grads = C.inputs()
    k = 6
    fresh = d["msrun"].run(k, d["torch"][k], grads, S.OptimizerState("Adam", tuple(
        S.ParamState(p.name, p.shape, p.group, p.module_type) for p in d["torch_states"][k].params)))[0]
    assert np.any(C.ulps(fresh, d["torch"][k:], start=1) > 100 * C.bound(d["own"]))


def test_round_trip_torch_mindspore_torch_is_bit_exact():
    """torch -> MindSpore -> torch gives torch's state tensors bit for bit (float32 copies, integral steps)."""
    for case in ("adam", "nadam", "sgd", "adagrad", "rmsprop"):
        d = case_data(case)
        net, opt = _setup(case)
        S.convert_state(d["via_ms"], opt, model=net)
        _check_same_torch_state(opt, d["torch_states"][C.ROUND_TRIP_K], case)


def _check_same_torch_state(opt: Any, ref: S.OptimizerState, what: str) -> None:
    got = S.read_state(opt, model=_model_of(opt))
    for a, b in zip(ref.params, got.params):
        assert a.name == b.name and set(a.values) == set(b.values), (what, a.name, set(a.values), set(b.values))
        for k in a.values:
            assert np.asarray(a.values[k]).tobytes() == np.asarray(b.values[k]).tobytes(), (what, a.name, k)


_MODELS: dict[int, Any] = {}


def _model_of(opt: Any) -> Any:
    return _MODELS[id(opt)]


def _setup(case: str) -> tuple[TNet, Any]:
    net, opt = _torch_setup(case)
    _MODELS[id(opt)] = net
    return net, opt


# ----------------------------------------------------------------------------- MegEngine, through the committed files

def _mge_fixture() -> Path:
    path = C.MGE_FIXTURE / "trajectories.npz"
    if not path.exists():
        pytest.skip("MegEngine fixture missing: run .venv-mge/bin/python tests_megengine/test_state_mge.py --write")
    return path


@pytest.mark.parametrize("case", list(C.CASES))
def test_resume_from_megengine(case):
    """MegEngine's state after k updates (a committed interchange file) continues in torch and in MindSpore."""
    traj = np.load(_mge_fixture(), allow_pickle=False)
    mge = traj[f"mge/{case}"]
    d = case_data(case)
    p0, grads = C.inputs()
    assert np.array_equal(traj["grads"], grads) and np.array_equal(traj["p0"], p0)
    lim = C.bound(d["own"])
    for k in C.KS:
        state = S.load_state(C.MGE_FIXTURE / f"mge_{case}_k{k}.npz")
        assert state.origin == "megengine:exact" and state.position is not None and state.position.update == k
        t = torch_run(case, k, mge[k], grads, state=state)[0]
        m = d["msrun"].run(k, mge[k], grads, state)[0]
        a, b = C.ulps(t, mge[k:], start=1), C.ulps(m, mge[k:], start=1)
        assert np.all(a <= lim) and np.all(b <= lim), (case, k, a, b, lim)


@pytest.mark.parametrize("case", ["adam", "nadam", "sgd", "adagrad", "rmsprop", "adamax"])
def test_round_trip_torch_mindspore_megengine_torch_is_bit_exact(case):
    """torch -> MindSpore -> MegEngine -> torch equals torch's state bit for bit (no float32 rounding anywhere).

    The chain starts from the committed torch state (tests_megengine/fixtures/state_main): torch's own
    arithmetic rounds differently on other CPUs, the conversions do not.
    """
    _mge_fixture()
    back = S.load_state(C.MGE_FIXTURE / f"roundtrip_{case}.npz")
    assert back.origin == "megengine:exact"
    net, opt = _setup(case)
    conv = S.convert_state(back, opt, model=net)
    assert conv.notes == ()
    _check_same_torch_state(opt, S.load_state(C.MAIN_FIXTURE / f"torch_{case}_k{C.ROUND_TRIP_K}.npz"), case)


# ----------------------------------------------------------------------------- natives

def test_native_mindspore_optimizers_resume_torch():
    """Native MindSpore optimizers that compute torch's update (NATIVE table) resume torch's run too.

    nn.SGD (momentum and dampening: accum/stat), nn.Momentum (moments), experimental.AdamW
    (exp_avg/exp_avg_sq, int32 state_step), experimental.NAdam (mu_product list, step_t):
    one group, the lr held at its base (natives hold it as a float32 Parameter).
    """
    from mindspore.experimental import optim as xo
    p0, grads = C.inputs()
    makers = {  # name: (torch class, torch options, the native class)
        "nn.SGD": ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3},
                   lambda ps: mnn.SGD(ps, 0.05, momentum=0.9, dampening=0.3)),
        "nn.Momentum": ("SGD", {"lr": 0.05, "momentum": 0.9}, lambda ps: mnn.Momentum(ps, 0.05, 0.9)),
        "experimental.AdamW": ("AdamW", {"lr": 0.01, "weight_decay": 0.05},
                               lambda ps: xo.AdamW(ps, lr=0.01, weight_decay=0.05)),
        "experimental.NAdam": ("NAdam", {"lr": 0.01}, lambda ps: xo.NAdam(ps, lr=0.01)),
    }
    for case, (kind, single, make) in makers.items():
        tnet = TNet()
        topt = getattr(torch.optim, kind)(tnet.parameters(), foreach=False, **single)
        _set_torch(tnet, p0)
        rows = [_flat_torch(tnet)]
        state = None
        for k in range(C.N):
            for q, gr in zip(tnet.parameters(), C.split(grads[k])):
                q.grad = torch.from_numpy(gr.copy())
            topt.step()
            rows.append(_flat_torch(tnet))
            if k + 1 == C.ROUND_TRIP_K:
                state = S.read_state(topt, model=tnet, scheduler=k + 1)
        ref = np.array(rows)
        net = MNet()
        for q, a in zip(net.trainable_params(), C.split(ref[C.ROUND_TRIP_K])):
            ops.assign(q, Tensor(a))
        opt = make(net.trainable_params())
        conv = S.convert_state(state, opt, model=net)
        got = [np.concatenate([q.asnumpy().reshape(-1) for q in net.trainable_params()])]
        for k in range(C.ROUND_TRIP_K, C.N):
            opt(tuple(Tensor(gr) for gr in C.split(grads[k])))
            got.append(np.concatenate([q.asnumpy().reshape(-1) for q in net.trainable_params()]))
        err = C.ulps(np.array(got), ref[C.ROUND_TRIP_K:], start=1)
        print(f"native {type(opt).__name__}: {err.round(2)} ulps; notes {conv.notes}")
        assert err.max() <= 8.0, (case, err)                      # float32 kernels (NATIVE table: exact rows)
        back = S.read_state(opt, model=net)                       # and the state reads back as torch's
        again = state.params[0].values
        assert back.optimizer == kind and set(back.params[0].values) == set(again), (case, back.params[0].values)


def test_nn_adam_beta_powers_are_running_products():
    """nn.Adam keeps beta powers as float32 running products: written bit for bit from the step, read back."""
    d = case_data("adam_beta1_scheduled")
    st = d["torch_states"][11]
    net = MNet()
    opt = mnn.Adam(net.trainable_params(), 0.01)
    conv = S.convert_state(st, opt, model=net)
    b1 = np.float32(1.0)
    for _ in range(11):
        b1 = np.float32(b1 * np.float32(0.9))
    assert opt.beta1_power.asnumpy() == b1 and int(opt.global_step.asnumpy()[0]) == 11
    assert any("running products" in n for n in conv.notes)
    back = S.read_state(opt, model=net)
    assert back.notes == () and back.steps() == {11.0}


def test_saved_state_dicts_and_checkpoints_read_like_live_optimizers(tmp_path):
    """A torch state_dict saved to disk and a MindSpore checkpoint (ms.save_checkpoint / load_checkpoint) read
    exactly as the live optimizers they came from; a checkpoint without the state is refused."""
    d = case_data("nadam")
    msr = d["msrun"]
    live = S.read_state(msr.opt, model=msr.net)
    path = str(tmp_path / "opt.ckpt")
    ms.save_checkpoint(msr.opt, path)
    from_ckpt = S.read_state(MSRun("nadam").opt, state_dict=ms.load_checkpoint(path))
    for a, b in zip(live.params, from_ckpt.params):
        assert a.name == b.name and set(a.values) == set(b.values)
        assert all(np.asarray(a.values[k]).tobytes() == np.asarray(b.values[k]).tobytes() for k in a.values)
    with pytest.raises(ConfigError, match="is missing"):
        S.read_state(msr.opt, state_dict={})
    net, opt = _setup("sgd")
    for q, gr in zip(net.parameters(), C.split(C.inputs()[1][0])):
        q.grad = torch.from_numpy(gr.copy())
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "sd.pt")
    net2, opt2 = _setup("sgd")
    saved = S.read_state(opt2, model=net2, state_dict=torch.load(tmp_path / "sd.pt"))
    _check_same_torch_state(opt, saved, "torch.save")
    with pytest.raises(ConfigError, match="must be a torch optimizer state_dict"):
        S.read_state(opt2, model=net2, state_dict={"state": 1})


def test_float32_running_power():
    """nn.Adam's beta powers: a float32 running product, the same in chunks as in one pass."""
    p = np.float32(1.0)
    for _ in range(1000):
        p = np.float32(p * np.float32(0.999))
    assert S.float32_power(0.999, 1000) == float(p) == S.float32_power(0.999, 1000, chunk=7)
    assert S.float32_power(0.9, 0) == 1.0
    with pytest.raises(ConfigError):
        S.float32_power(0.9, -1)


# ----------------------------------------------------------------------------- refusals

def test_refusals_are_config_errors():
    d = case_data("adam")
    st = d["torch_states"][6]
    net, opt = _setup("adamax")
    with pytest.raises(ConfigError, match="the state is Adam's and the target optimizer is Adamax"):
        S.convert_state(st, opt, model=net)
    plain = case_data("adam_beta1_scheduled")
    net, opt = _setup("adam")                                     # amsgrad (group 0) needs max_exp_avg_sq
    with pytest.raises(ConfigError, match=r"max_exp_avg_sq: is missing"):
        S.convert_state(plain["torch_states"][6], opt, model=net)
    conv = S.convert_state(plain["torch_states"][6], opt, model=net, lossy=True)
    assert any("max_exp_avg_sq started from exp_avg_sq" in n for n in conv.notes)
    with pytest.raises(ConfigError, match="max_exp_avg_sq: cannot be held"):  # exact MindSpore Adam, no amsgrad
        S.convert_state(st, plain["msrun"].opt, model=plain["msrun"].net)
    net = MNet()                                                   # nn.AdamWeightDecay keeps no step
    awd = mnn.AdamWeightDecay(net.trainable_params())
    with pytest.raises(ConfigError, match=r"step: cannot be held by the target nn.AdamWeightDecay.*step count \(6"):
        S.convert_state(case_data("adamw")["torch_states"][6], awd, model=net)
    conv = S.convert_state(case_data("adamw")["torch_states"][6], awd, model=net, lossy=True)
    assert any("step dropped" in n for n in conv.notes)
    skewed = S.OptimizerState("Adam", tuple(p if i else S.ParamState(p.name, p.shape, p.group, p.module_type,
                                                                       {**p.values, "step": np.float32(5)})
                                            for i, p in enumerate(plain["torch_states"][6].params)))
    with pytest.raises(ConfigError, match="keeps one step count"):  # nn.Adam: one global_step
        S.convert_state(skewed, mnn.Adam(MNet().trainable_params(), 0.01), model=MNet())


def test_shape_and_name_refusals():
    st = case_data("adam")["torch_states"][6]

    class Wider(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3)
            self.bn = torch.nn.BatchNorm2d(3)
            self.fc = torch.nn.Linear(3, 4)

    net = Wider()
    opt = torch.optim.Adam(net.parameters())
    with pytest.raises(NameMapError):
        S.convert_state(st, opt, model=net)
    net2, opt2 = _setup("adam")
    flipped = S.OptimizerState("Adam", tuple(                    # fc.weight saved as (3, 2): no known reshape
        S.ParamState(p.name, (3, 2), p.group, p.module_type,
                     {k: (np.asarray(v).reshape(3, 2) if np.ndim(v) else v) for k, v in p.values.items()})
        if p.name == "fc.weight" else p for p in st.params))
    with pytest.raises(NameMapError, match="shapes differ"):
        S.convert_state(flipped, opt2, model=net2)
    with pytest.raises(ConfigError, match="must have the parameter's shape"):
        S.OptimizerState("Adam", (S.ParamState("w", (2,), 0, "", {"exp_avg": np.zeros(3, np.float32)}),))
    with pytest.raises(ConfigError, match="model: is needed"):
        S.read_state(opt2)
    with pytest.raises(ConfigError, match="must be a torch, MindSpore or MegEngine optimizer"):
        S.read_state(object())


# ----------------------------------------------------------------------------- the interchange file

def test_file_round_trip_and_no_pickle(tmp_path):
    st = case_data("nadam")["torch_states"][11]
    path = tmp_path / "s.npz"
    S.save_state(st, path)
    back = S.load_state(path)
    assert back.optimizer == st.optimizer and back.position == st.position and back.origin == "torch"
    for a, b in zip(st.params, back.params):
        assert (a.name, a.shape, a.group, a.module_type) == (b.name, b.shape, b.group, b.module_type)
        for k in a.values:
            assert np.asarray(a.values[k]).tobytes() == np.asarray(b.values[k]).tobytes()
            assert np.shape(a.values[k]) == np.shape(b.values[k]) and a.values[k].dtype == b.values[k].dtype
    S.save_state(back, tmp_path / "again.npz")                     # the same state, the same bytes
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert manifest["format"] == "optbridge-state" and manifest["params"][0]["state"]
    evil = tmp_path / "evil.npz"                                   # an object array is refused, never unpickled
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(evil, "w") as w:
        for n in z.namelist():
            if n != "p0.exp_avg.npy":
                w.writestr(n, z.read(n))
        import io
        buf = io.BytesIO()
        np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        w.writestr("p0.exp_avg.npy", buf.getvalue())
    with pytest.raises(ConfigError, match="must be a plain numpy array"):
        S.load_state(evil)
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as w:
        w.writestr("manifest.json", json.dumps({"format": "optbridge-state", "version": 1, "optimizer": "Adam",
                                                "params": [{"name": "w", "shape": [2], "group": -1, "state": {}}]}))
    with pytest.raises(ConfigError, match=r"manifest.params\[0\].group"):
        S.load_state(bad)
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match="not an optbridge state file"):
        S.load_state(tmp_path / "x.npz")


# ----------------------------------------------------------------------------- the schedule position

def test_position_travels_between_plan_drivers():
    """A PlanScheduler's position (update count, plateau metrics, fingerprint) moves to another PlanScheduler."""
    from optbridge.slots import fingerprint, slots
    from optbridge_adapters.torch.drivers import PlanScheduler
    plan = C.plan_of("adam_beta1_scheduled")
    sl = slots(plan)
    fp = fingerprint(sl, unit="iter", steps_per_epoch=None, total_steps=None)
    net, opt = _setup("adam_beta1_scheduled")
    sched = PlanScheduler(opt, sl, unit="iter", steps_per_epoch=None, total_steps=None, fingerprint=fp)
    for _ in range(7):
        opt.step()
        sched.step()
    st = S.read_state(opt, model=net, scheduler=sched)
    assert st.position == S.SchedulePosition(7, (), fp)
    net2, opt2 = _setup("adam_beta1_scheduled")
    sched2 = PlanScheduler(opt2, sl, unit="iter", steps_per_epoch=None, total_steps=None, fingerprint=fp)
    conv = S.convert_state(st, opt2, model=net2, scheduler=sched2)
    assert sched2.last_epoch == 7 and any("update 7" in n for n in conv.notes)
    hy = C.hypers("adam_beta1_scheduled")
    assert opt2.param_groups[1]["lr"] == hy["lr"][1, 7] and opt2.param_groups[0]["betas"][0] == hy["beta1"][0, 7]
    other = S.SchedulePosition(7, (), "0" * 16)
    with pytest.raises(ConfigError, match="position.fingerprint"):
        S.apply_position(other, sched2)
    assert S.SchedulePosition(7).epoch(3) == 2
    with pytest.raises(ConfigError):
        S.SchedulePosition(-1)


def test_end_to_end_setups_torch_to_mindspore_and_back():
    """to_torch -> 6 updates -> to_mindspore continues (state + position), and MindSpore -> to_torch likewise.

    The plan's fingerprint is the same in both frameworks, so each target driver takes
    the other's position (torch's own SequentialLR in the torch setup is stepped to it);
    the trajectories stay within the bound of the run that stayed.
    """
    import optbridge
    case = "adam_beta1_scheduled"
    plan = C.plan_of(case)
    p0, grads = C.inputs()
    lim = C.bound(case_data(case)["own"])
    k = C.ROUND_TRIP_K

    def torch_setup(p: np.ndarray) -> tuple[TNet, Any]:
        net = TNet()
        _set_torch(net, p)
        return net, optbridge.to_torch(plan, net)  # torch's SequentialLR for lr, a PlanScheduler for beta1

    def ms_setup(p: np.ndarray) -> tuple[MNet, Any]:
        net = MNet()
        for q, a in zip(net.trainable_params(), C.split(p)):
            ops.assign(q, Tensor(a))
        return net, optbridge.to_mindspore(plan, net, form="experimental", scheduler="driver")

    def ms_flat(net: MNet) -> np.ndarray:
        return np.concatenate([q.asnumpy().reshape(-1) for q in net.trainable_params()])

    def go(step: Any, flat: Any, start: int, at_k: Any = None) -> np.ndarray:
        rows = [flat()]
        for t in range(start, C.N):
            step(t)
            rows.append(flat())
            if t + 1 == k and at_k is not None:
                at_k()
        return np.array(rows)

    # torch stays; MindSpore continues from update k (the state read after k updates of the run that stays)
    tnet, ts = torch_setup(p0)

    def tstep(t: int) -> None:
        for q, gr in zip(tnet.parameters(), C.split(grads[t])):
            q.grad = torch.from_numpy(gr.copy())
        ts.optimizer.step()
        ts.scheduler.step()

    saved: list[S.OptimizerState] = []
    tref = go(tstep, lambda: _flat_torch(tnet), 0,
              lambda: saved.append(S.read_state(ts.optimizer, model=tnet, scheduler=ts.scheduler)))
    st = saved.pop()
    assert st.position is not None and st.position.update == k and st.position.fingerprint
    mnet, mset = ms_setup(tref[k])
    conv = S.convert_state(st, mset.optimizer, model=mnet, scheduler=mset)
    assert mset.state_dict()["k"] == k and any(f"update {k}" in n for n in conv.notes)

    def mstep(t: int) -> None:
        mset.optimizer(tuple(Tensor(g) for g in C.split(grads[t])))
        mset.step()

    got = go(mstep, lambda: ms_flat(mnet), k)
    assert np.all(C.ulps(got, tref[k:], start=1) <= lim)
    # MindSpore stays; torch continues from update k
    mnet, mset = ms_setup(p0)
    mref = go(mstep, lambda: ms_flat(mnet), 0,
              lambda: saved.append(S.read_state(mset.optimizer, model=mnet, scheduler=mset)))
    st = saved.pop()
    assert st.position is not None and st.position.update == k
    tnet, ts = torch_setup(mref[k])
    S.convert_state(st, ts.optimizer, model=tnet, scheduler=ts.scheduler)
    assert ts.scheduler.last_epoch == k and ts.scheduler.entries[0].sched.last_epoch == k  # SequentialLR stepped
    got = go(tstep, lambda: _flat_torch(tnet), k)
    assert np.all(C.ulps(got, mref[k:], start=1) <= lim)


def test_native_plateau_counters_travel_between_reduce_lr_on_plateau():
    """Without a metric history, torch's ReduceLROnPlateau's own counters (best, bad epochs, cooldown) travel."""
    net, opt = _setup("sgd")
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2, cooldown=1)
    for m in (1.0, 0.5, 0.6, 0.7, 0.8, 0.9):
        sched.step(m)
    pos = S.read_state(opt, model=net, scheduler=sched).position
    assert pos is not None and pos.plateau is not None and pos.plateau["best"] == 0.5
    net2, opt2 = _setup("sgd")
    sched2 = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, patience=2, cooldown=1)
    S.apply_position(pos, sched2)
    for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"):
        assert getattr(sched2, key) == getattr(sched, key), key
    from optbridge.slots import fingerprint, slots
    from optbridge_adapters.torch.drivers import PlanScheduler
    sl = slots(C.plan_of("sgd"))
    driver = PlanScheduler(opt2, sl, unit="iter", steps_per_epoch=None, total_steps=None,
                           fingerprint=fingerprint(sl, unit="iter", steps_per_epoch=None, total_steps=None))
    with pytest.raises(ConfigError, match="position.plateau"):  # an optbridge driver needs the metric history
        S.apply_position(pos, driver)
    with pytest.raises(ConfigError, match="scheduler"):
        S.read_state(opt2, model=net2, scheduler=object())


def test_plateau_setup_position_steps_torch_reduce_lr_on_plateau():
    """A to_torch setup with torch's ReduceLROnPlateau: its counters travel into a fresh setup of the same plan."""
    import optbridge
    doc = optbridge.to_dict(C.plan_of("sgd_momentum_scheduled"))
    doc["schedule"] = {"lr": {"kind": "plateau", "factor": 0.5, "patience": 1, "cooldown": 1}}
    plan = optbridge.from_dict(doc)
    net, setup = TNet(), None
    setup = optbridge.to_torch(plan, net)
    for m in (1.0, 0.9, 0.95, 0.97, 0.99, 0.98):
        setup.optimizer.step()
        setup.scheduler.step(m)
    st = S.read_state(setup.optimizer, model=net, scheduler=setup.scheduler)
    assert st.position is not None and st.position.update == 6 and st.position.plateau is not None
    net2 = TNet()
    setup2 = optbridge.to_torch(plan, net2)
    S.convert_state(st, setup2.optimizer, model=net2, scheduler=setup2.scheduler)
    def counters(sched: Any) -> dict[str, Any]:
        sd = sched.state_dict()
        return next((x for x in sd.get("schedulers", [sd]) if "num_bad_epochs" in x), {})

    a, b = counters(setup.scheduler), counters(setup2.scheduler)
    for key in ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr"):
        assert a[key] == b[key], key
    assert a["last_epoch"] == 6 and a["_last_lr"][0] < 0.05      # it reduced the lr ...
    assert [g["lr"] for g in setup2.optimizer.param_groups] == a["_last_lr"]  # ... and the target's groups have it


@pytest.mark.parametrize("field, value", [
    ("optimizer", "Lion"), ("optimizer", 3), ("version", 2), ("format", "npz"), ("groups", {}), ("notes", "x"),
    ("position", {"update": -1}), ("position", {"update": 1, "metrics": "x"}), ("position", {"update": 1, "x": 1}),
    ("params", [{"name": "", "shape": [2], "group": 0, "state": {}}]),
    ("params", [{"name": "w", "shape": "2", "group": 0, "state": {}}]),
    ("params", [{"name": "w", "shape": [2], "group": 0, "state": {"exp_avg": "nope"}}]),
    ("params", [{"name": "w", "shape": [3], "group": 0, "state": {"exp_avg": "p0.exp_avg"}}]),
    ("params", [1]), ("origin", 5)])
def test_bad_manifests_raise_config_errors(tmp_path, field, value):
    """Every malformed manifest field is a ConfigError naming it (nothing else escapes)."""
    st = S.OptimizerState("Adam", (S.ParamState("w", (2,), 0, "", {"exp_avg": np.zeros(2, np.float32),
                                                                     "exp_avg_sq": np.zeros(2, np.float32),
                                                                     "step": np.float32(1)}),))
    good = tmp_path / "good.npz"
    S.save_state(st, good)
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(bad, "w") as w:
        manifest = json.loads(z.read("manifest.json"))
        manifest[field] = value
        for n in z.namelist():
            w.writestr(n, json.dumps(manifest) if n == "manifest.json" else z.read(n))
    with pytest.raises(ConfigError):
        S.load_state(bad)


def _write_fixture() -> None:
    """Write this env's trajectories and states for the MegEngine env (tests_megengine/fixtures/state_main)."""
    out = C.MAIN_FIXTURE
    out.mkdir(parents=True, exist_ok=True)
    p0, grads = C.inputs()
    arrays: dict[str, np.ndarray] = {"p0": p0, "grads": grads}
    for case in C.CASES:
        d = case_data(case)
        arrays[f"torch/{case}"] = d["torch"]
        arrays[f"torch64/{case}"] = d["torch64"]
        arrays[f"ms/{case}"] = d["ms"]
        arrays[f"own/{case}"] = d["own"]
        for k in C.KS:
            S.save_state(d["torch_states"][k], out / f"torch_{case}_k{k}.npz")
            S.save_state(d["ms_states"][k], out / f"ms_{case}_k{k}.npz")
        S.save_state(d["via_ms"], out / f"via_ms_{case}.npz")
    np.savez(out / "trajectories.npz", **arrays)
    print(f"wrote {out}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        _write_fixture()
