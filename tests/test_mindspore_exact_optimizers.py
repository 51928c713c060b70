"""Torch-exact MindSpore optimizers against real torch 2.13, step by step.

Every trajectory test feeds the same float32 initial parameters and the same fixed
gradient sequence to ``torch.optim.<Kind>(foreach=False)`` (torch's CPU path) and to the
MindSpore optimizer, 100 steps, and compares the parameters after every step.
Gradients: N(0, 1) ("normal") and N(0, 1) * 1e-7 ("tiny", where eps placement shows);
each option set of a kind is one param group of one optimizer, per scale.

Unit: float32 ulps of the group's scale, ``|p_ms - p_torch| / (2**-23 * S)`` with ``S``
the largest ``|p_torch|`` seen so far in the group (worst over steps and elements).
Tolerance per group: ``FLOOR + 2 * own`` ulps, where ``own`` is torch's own float32
rounding error on that group (torch float32 vs the same torch run in float64, same
unit): the MindSpore optimizer must be as close to torch as torch is to exact
arithmetic. What remains is rounding: torch's AVX kernels fuse multiply-adds (``lerp``,
``add(alpha=)``, ``addcmul``) and compute ``addcdiv`` as ``(v*t1)/t2 + p`` where
MindSpore rounds each product and computes ``p - v*(t1/t2)``. Measured: at most 1.65
ulps on every well-conditioned case (torch's own error there: 1-21 ulps); 36 ulps on
the ill-conditioned centered RMSprop with tiny gradients and a weight-decay schedule
(torch's own error there: 38 ulps). ``-s`` prints every figure.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
torch = pytest.importorskip("torch")

from mindspore import Parameter, Tensor, nn, ops  # noqa: E402
from mindspore.experimental import optim as mopt  # noqa: E402

from optbridge.errors import ConfigError  # noqa: E402
from optbridge_adapters.mindspore import kernels  # noqa: E402
from optbridge_adapters.mindspore import optimizers as X  # noqa: E402

warnings.filterwarnings("ignore")

STEPS = 100
SHAPES = ((5, 3), (4,))
EPS32 = 2.0 ** -23
#: float32 ulps of the group's parameter scale allowed on top of twice torch's own float32 error.
FLOOR = 4
SCALES = {"normal": 1.0, "tiny": 1e-7}

#: torch option sets per kind (one group each), with the kind's lr.
CASES: dict[str, tuple[float, list[dict[str, Any]]]] = {
    "SGD": (0.1, [{}, {"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.5, "weight_decay": 0.05},
                  {"momentum": 0.9, "nesterov": True}, {"momentum": 0.9, "nesterov": True, "maximize": True,
                                                        "weight_decay": 0.01},
                  {"weight_decay": 0.05, "maximize": True}]),
    "Adam": (0.01, [{}, {"amsgrad": True}, {"weight_decay": 0.05}, {"amsgrad": True, "maximize": True,
                                                                    "weight_decay": 0.05},
                    {"decoupled_weight_decay": True, "weight_decay": 0.05}, {"betas": (0.8, 0.99), "eps": 1e-6}]),
    "AdamW": (0.01, [{}, {"amsgrad": True}, {"maximize": True}, {"weight_decay": 0.1}]),
    "RMSprop": (0.01, [{}, {"centered": True}, {"momentum": 0.9},
                       {"centered": True, "momentum": 0.9, "weight_decay": 0.05, "maximize": True},
                       {"alpha": 0.9, "eps": 1e-6}]),
    "Adagrad": (0.1, [{}, {"lr_decay": 0.01, "initial_accumulator_value": 0.1}, {"weight_decay": 0.05,
                                                                                "maximize": True},
                      {"eps": 1e-6}]),
    "Adadelta": (1.0, [{}, {"rho": 0.5, "weight_decay": 0.05}, {"maximize": True, "eps": 1e-3}]),
    "Adamax": (0.01, [{}, {"weight_decay": 0.05}, {"maximize": True, "betas": (0.8, 0.99)}]),
    "NAdam": (0.01, [{}, {"weight_decay": 0.05}, {"weight_decay": 0.05, "decoupled_weight_decay": True},
                     {"momentum_decay": 0.01, "maximize": True}]),
    "RAdam": (0.01, [{}, {"weight_decay": 0.05}, {"weight_decay": 0.05, "decoupled_weight_decay": True},
                     {"maximize": True}]),
}

_names = iter(range(10**9))


def _inputs(n_groups: int, seed: int = 0) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial parameters (two tensors per group) and STEPS gradient tuples; group g's
    gradients have scale SCALES[...] by g's position (normal groups first, then tiny)."""
    rs = np.random.RandomState(seed)
    p0 = [rs.randn(*s).astype(np.float32) for _ in range(n_groups) for s in SHAPES]
    half = n_groups // 2
    scale = [1.0 if g < half else 1e-7 for g in range(n_groups) for _ in SHAPES]
    grads = [[(rs.randn(*p.shape) * c).astype(np.float32) for p, c in zip(p0, scale)] for _ in range(STEPS)]
    return p0, grads


def _ms_params(p0: list[np.ndarray]) -> list[Parameter]:
    tag = next(_names)
    return [Parameter(Tensor(x.copy()), name=f"t{tag}_p{i}") for i, x in enumerate(p0)]


def _torch_run(kind: str, lr: float, opts: list[dict[str, Any]], p0: list[np.ndarray], grads: list,
               drive: Callable[[Any, int], None] | None = None, dtype: Any = None,
               **ctor: Any) -> list[list[np.ndarray]]:
    dtype = dtype or torch.float32
    ps = [torch.nn.Parameter(torch.tensor(x.copy(), dtype=dtype)) for x in p0]
    groups = [{"params": ps[2 * g: 2 * g + 2], **o} for g, o in enumerate(opts)]
    opt = getattr(torch.optim, kind)(groups, lr=lr, foreach=False, **ctor)
    out = []
    for k, g in enumerate(grads):
        if drive is not None:
            drive(opt, k)
        for p, x in zip(ps, g):
            p.grad = torch.tensor(x, dtype=dtype)
        opt.step()
        out.append([p.detach().numpy().copy() for p in ps])
    return out


def _torch_reference(kind: str, lr: float, opts: list[dict[str, Any]], p0: list[np.ndarray], grads: list,
                     drive_factory: Callable[[], Any] | None = None) -> tuple[list, list[float]]:
    """torch's float32 trajectory and, per group, torch's own float32 rounding error: its distance (in
    ulps, as _ulps) from the same torch run in float64."""
    t32 = _torch_run(kind, lr, opts, p0, grads, drive_factory() if drive_factory else None)
    t64 = _torch_run(kind, lr, opts, p0, grads, drive_factory() if drive_factory else None, dtype=torch.float64)
    return t32, _ulps(t64, t32)


def _assert_close(kind: str, worst: list[float], own: list[float]) -> None:
    """Every group within FLOOR ulps plus twice torch's own float32 error on that group."""
    print(f"{kind}: ulps per group {[round(w, 2) for w in worst]}; torch f32 vs f64 {[round(w, 2) for w in own]}")
    for g, (w, e) in enumerate(zip(worst, own)):
        assert w <= FLOOR + 2 * e, (kind, g, w, e)


def _ms_run(opt: Any, params: list[Parameter], grads: list,
            drive: Callable[[Any, int], None] | None = None) -> list[list[np.ndarray]]:
    out = []
    for k, g in enumerate(grads):
        if drive is not None:
            drive(opt, k)
        opt(tuple(Tensor(x) for x in g))
        out.append([p.asnumpy().copy() for p in params])
    return out


def _ulps(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> list[float]:
    """Worst difference per group (two tensors each) in float32 ulps of the group's running scale."""
    n = len(a[0]) // 2
    worst = [0.0] * n
    scale = [0.0] * n
    for sa, sb in zip(a, b):
        for g in range(n):
            pa, pb = sa[2 * g: 2 * g + 2], sb[2 * g: 2 * g + 2]
            scale[g] = max(scale[g], *(float(np.max(np.abs(x))) for x in pb))
            d = max(float(np.max(np.abs(x - y))) for x, y in zip(pa, pb))
            worst[g] = max(worst[g], math.inf if math.isnan(d) else d / (EPS32 * scale[g]))
    return worst


def _groups(opts: list[dict[str, Any]], params: list[Parameter]) -> list[dict[str, Any]]:
    return [{"params": params[2 * g: 2 * g + 2], **o} for g, o in enumerate(opts)]


@pytest.fixture
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _check_kind(kind: str, scheduled: Any) -> list[float]:
    lr, opts = CASES[kind]
    opts = opts + opts                                            # normal groups, then the same options tiny
    p0, grads = _inputs(len(opts))
    params = _ms_params(p0)
    opt = X.OPTIMIZERS[kind](_groups(opts, params), lr=lr, scheduled=scheduled)
    expected, own = _torch_reference(kind, lr, opts, p0, grads)
    worst = _ulps(_ms_run(opt, params, grads), expected)
    _assert_close(f"{kind} scheduled={scheduled}", worst, own)
    return worst


@pytest.mark.parametrize("kind", list(CASES))
def test_trajectories_pynative_every_hyper_a_parameter(kind):
    """Default (every hyperparameter a Parameter: torch's zero branches taken per step), PyNative."""
    _check_kind(kind, None)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "RMSprop", "NAdam", "RAdam"])
def test_trajectories_graph_mode_constant_hypers(kind, graph_mode):
    """GRAPH mode with scheduled=() (hyperparameters are constants: zero branches skipped statically). A
    representative subset (every static branch: weight decay off/L2/decoupled, momentum off/constant,
    amsgrad, centered, nesterov) to keep the file near a minute; AdamW runs in GRAPH mode below."""
    _check_kind(kind, ())


# ----------------------------------------------------------------------------- scheduled hyperparameters


def _one_cycle_drive(torch_kind: str, key: str):
    """Drive torch with its real OneCycleLR (lr and momentum/beta1 cycling) and a weight-decay ramp, and
    return (a factory of torch drives, the MindSpore drive) that write the same per-step values."""
    values: list[dict[str, float]] = []

    def torch_drive_factory():
        state = {}

        def torch_drive(opt, k):
            if k == 0:
                state["sched"] = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS + 1)
            else:
                state["sched"].step()
            for g in opt.param_groups:
                g["weight_decay"] = 0.01 * (k % 7)                # 0 on some steps: torch skips weight decay then
            group = opt.param_groups[0]
            if len(values) <= k:
                values.append({"lr": group["lr"], key: group["momentum"] if key == "momentum" else group["betas"][0],
                               "weight_decay": group["weight_decay"]})
        return torch_drive

    def ms_drive(opt, k):
        for g in range(len(opt.param_groups)):
            for name, value in values[k].items():
                ops.assign(opt.hyper(g, name), Tensor(value, ms.float64))

    return torch_drive_factory, ms_drive


@pytest.mark.parametrize("kind,key,opts", [
    ("SGD", "momentum", [{"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}]),
    ("Adam", "beta1", [{}, {"amsgrad": True}]),
    ("AdamW", "beta1", [{}]),
    ("NAdam", "beta1", [{"decoupled_weight_decay": True}]),
    ("RMSprop", "momentum", [{"momentum": 0.9, "centered": True}]),
])
def test_one_cycle_schedule_in_graph_mode(kind, key, opts, graph_mode):
    """lr, momentum / beta1 (OneCycleLR, torch's own scheduler) and weight decay (0 on some steps) assigned
    with ops.assign before every update, GRAPH mode; torch driven by the same values."""
    opts = opts + opts
    p0, grads = _inputs(len(opts), seed=1)
    torch_drive_factory, ms_drive = _one_cycle_drive(kind, key)
    expected, own = _torch_reference(kind, 0.01, opts, p0, grads, torch_drive_factory)
    params = _ms_params(p0)
    opt = X.OPTIMIZERS[kind](_groups(opts, params), lr=0.01)
    _assert_close(f"{kind} OneCycleLR", _ulps(_ms_run(opt, params, grads, ms_drive), expected), own)
    # the schedule really moved the hyperparameters (the update would differ with constants)
    assert opt.hyper(0, key).asnumpy() != pytest.approx(0.9 if key == "momentum" else 0.9, abs=1e-3)


def test_sgd_momentum_switched_on_and_off_like_torch():
    """momentum 0 -> 0.9 -> 0 -> 0.5 per step: torch creates the buffer at the first non-zero step
    (buf = grad, no dampening), keeps it untouched while momentum is 0; the same here."""
    opts = [{"dampening": 0.3}, {}]
    p0, grads = _inputs(2, seed=2)
    pattern = [0.0] * 5 + [0.9] * 10 + [0.0] * 5 + [0.5] * (STEPS - 20)

    def torch_drive(opt, k):
        for g in opt.param_groups:
            g["momentum"] = pattern[k]

    def torch_drive_factory():
        return torch_drive

    def ms_drive(opt, k):
        for g in range(2):
            ops.assign(opt.hyper(g, "momentum"), Tensor(pattern[k], ms.float64))

    expected, own = _torch_reference("SGD", 0.1, opts, p0, grads, torch_drive_factory)
    params = _ms_params(p0)
    opt = X.SGD(_groups(opts, params), lr=0.1)
    _assert_close("SGD momentum on/off", _ulps(_ms_run(opt, params, grads, ms_drive), expected), own)
    assert opt.state(params[0], "has_momentum_buffer").asnumpy() == 1.0


def test_static_and_dynamic_paths_agree_with_each_other():
    """scheduled=("lr",) (constants) and the default (Parameters) compute the same float32 values."""
    opts = [{"momentum": 0.9, "weight_decay": 0.0}, {"weight_decay": 0.05}]
    p0, grads = _inputs(2, seed=3)
    runs = []
    for scheduled in (None, ("lr",)):
        params = _ms_params(p0)
        runs.append(_ms_run(X.SGD(_groups(opts, params), lr=0.1, scheduled=scheduled), params, grads[:20]))
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            np.testing.assert_array_max_ulp(x, y, maxulp=0)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_kernel_path_is_the_composed_path_bit_for_bit(nesterov, mode):
    """Without optbridge's kernels (kernels=False): with dampening a constant 0 the update runs MindSpore's
    one-pass SGD kernel; with dampening a Parameter (value 0) the composed ops. With them (kernels=True),
    optbridge's one-pass kernel. All three give the same float32 values, bit for bit, with momentum and weight
    decay constant or driven per step (momentum switched on and off, as torch's branches; not with nesterov,
    which needs momentum > 0), in PyNative and GRAPH mode."""
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        opts = [{"momentum": 0.9, "weight_decay": 0.0, "nesterov": nesterov},
                {"momentum": 0.5, "weight_decay": 0.05, "nesterov": nesterov}]
        p0, grads = _inputs(2, seed=5)
        moms = [0.0, 0.9, 0.9, 0.0, 0.5] if not nesterov else [0.9, 0.7]

        def drive(opt, k):
            for g in range(2):
                if "momentum" in opt.scheduled:
                    ops.assign(opt.hyper(g, "momentum"), Tensor(moms[k % len(moms)], ms.float64))
                if "weight_decay" in opt.scheduled:
                    ops.assign(opt.hyper(g, "weight_decay"), Tensor([0.0, 0.01][k % 2], ms.float64))

        paths = [(("lr", "dampening"), False), (("lr",), False)] + [(("lr",), True)] * kernels.status()[0]
        for driven in [(), ("momentum",), ("momentum", "weight_decay")]:
            runs = []
            for scheduled, own in paths:
                params = _ms_params(p0)
                opt = X.SGD(_groups(opts, params), lr=0.1, scheduled=(*scheduled, *driven), kernels=own)
                assert opt.kernels == own
                assert (opt._cfg[0][5] is None) == ("dampening" in scheduled)  # the composed ops / MindSpore's SGD
                runs.append(_ms_run(opt, params, grads[:16], drive))
            for other in runs[1:]:
                for a, b in zip(runs[0], other):
                    for x, y in zip(a, b):
                        np.testing.assert_array_max_ulp(x, y, maxulp=0)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def _needs_kernels() -> None:
    ok, why = kernels.status()
    if not ok:
        pytest.skip(f"optbridge's MindSpore kernels are unavailable here: {why}")


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("kind", list(CASES))
def test_one_pass_kernel_is_the_composed_update_bit_for_bit(kind, mode):
    """Each optimizer's one-pass C++ kernel (kernels.cc) computes the composed ops' float32 values bit for bit,
    on every option set of CASES, normal and tiny gradients: in PyNative with every hyperparameter a Parameter
    (torch's branches taken per step), in GRAPH mode with constants (the branches taken statically)."""
    _needs_kernels()
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        lr, opts = CASES[kind]
        opts = opts + opts
        p0, grads = _inputs(len(opts), seed=11)
        runs, states = [], []
        for own in (False, True):
            params = _ms_params(p0)
            opt = X.OPTIMIZERS[kind](_groups(opts, params), lr=lr, kernels=own,
                                     scheduled=None if mode == "pynative" else ("lr",))
            assert opt.kernels == own
            runs.append(_ms_run(opt, params, grads[:12]))
            states.append([(name, s.asnumpy()) for _, name, s in opt.states()])  # in parameter order
        for a, b in zip(*runs):
            for x, y in zip(a, b):
                np.testing.assert_array_max_ulp(x, y, maxulp=0)
        assert [n for n, _ in states[0]] == [n for n, _ in states[1]] and states[0]
        for i, ((name, x), (_, y)) in enumerate(zip(*states)):  # moments, buffers, steps (Adam and Adagrad's
            assert x.tobytes() == y.tobytes(), (kind, i, name)   # kernels count them)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


# ----------------------------------------------------------------------------- drop-in use


class _Net(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Dense(6, 8)
        self.fc2 = nn.Dense(8, 3)

    def construct(self, x):
        return self.fc2(ops.relu(self.fc1(x)))


class _TorchNet(torch.nn.Module):
    def __init__(self, net: _Net) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.fc2 = torch.nn.Linear(8, 3)
        with torch.no_grad():
            for name in ("fc1", "fc2"):
                getattr(self, name).weight.copy_(torch.tensor(getattr(net, name).weight.asnumpy()))
                getattr(self, name).bias.copy_(torch.tensor(getattr(net, name).bias.asnumpy()))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _train_against_torch(train: Callable[[Any, _Net], None], mode: int) -> float:
    """AdamW with groups (fc1: decay, fc2: no decay) trained 20 steps by ``train`` in MindSpore and by a plain
    loop in torch on the same data; worst |dp| / max|p| in float32 ulps."""
    ms.set_context(mode=mode)
    try:
        ms.set_seed(0)
        net = _Net()
        tnet = _TorchNet(net)
        rs = np.random.RandomState(4)
        data = [(rs.randn(16, 6).astype(np.float32), rs.randint(0, 3, 16).astype(np.int32)) for _ in range(20)]
        opt = X.AdamW([{"params": [net.fc1.weight, net.fc1.bias], "weight_decay": 0.1},
                       {"params": [net.fc2.weight, net.fc2.bias], "weight_decay": 0.0}], lr=0.01)
        train(opt, net, data)
        topt = torch.optim.AdamW([{"params": list(tnet.fc1.parameters()), "weight_decay": 0.1},
                                  {"params": list(tnet.fc2.parameters()), "weight_decay": 0.0}], lr=0.01,
                                 foreach=False)
        for x, y in data:
            topt.zero_grad()
            torch.nn.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y, dtype=torch.long)).backward()
            topt.step()
        worst = 0.0
        for name in ("fc1", "fc2"):
            for attr in ("weight", "bias"):
                a = getattr(getattr(net, name), attr).asnumpy()
                b = getattr(getattr(tnet, name), attr).detach().numpy()
                worst = max(worst, float(np.max(np.abs(a - b))) / (EPS32 * float(np.max(np.abs(b)))))
        return worst
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def _train_one_step_cell(opt, net, data):
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True,
                                                                                     reduction="mean")), opt)
    for x, y in data:
        step(Tensor(x), Tensor(y))


def _model_train(opt, net, data):
    import mindspore.dataset as ds
    dataset = ds.GeneratorDataset(lambda: iter(data), ["x", "y"], shuffle=False)
    model = ms.Model(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"), opt)
    model.train(1, dataset, dataset_sink_mode=False)


def _jit_value_and_grad(opt, net, data):
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def forward(x, y):
        return loss_fn(net(x), y)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    @ms.jit
    def step(x, y):
        loss, grads = grad_fn(x, y)
        opt(grads)
        return loss

    for x, y in data:
        step(Tensor(x), Tensor(y))


@pytest.mark.parametrize("train,mode", [(_train_one_step_cell, 0), (_model_train, 0), (_jit_value_and_grad, 1)],
                         ids=["TrainOneStepCell-GRAPH", "Model.train-GRAPH", "ms.jit-PyNative"])
def test_drop_in_training_matches_torch(train, mode):
    """The optimizer inside nn.TrainOneStepCell, ms.Model(...).train and a user ms.jit step trains a real
    net like torch's AdamW (gradients computed by each framework: float32 noise of the backward pass too)."""
    worst = _train_against_torch(train, ms.GRAPH_MODE if mode == 0 else ms.PYNATIVE_MODE)
    print(f"{train.__name__}: worst {worst:.1f} ulps of max|p|")
    assert worst <= 64                                            # 20 steps; backward sums differ by order


def test_state_parameters_are_named_and_checkpointed(tmp_path):
    """State Parameters <state>.<param name> with torch's names; ms.save_checkpoint holds them; writable."""
    p0, grads = _inputs(2)
    params = _ms_params(p0)
    opt = X.Adam(_groups([{"amsgrad": True}, {}], params), lr=0.01, scheduled=("lr", "betas"))
    _ms_run(opt, params, grads[:3])
    path = str(tmp_path / "opt.ckpt")
    ms.save_checkpoint(opt, path)
    saved = ms.load_checkpoint(path)
    for p in params:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert f"{name}.{p.name}" in saved
        assert opt.state(p, "step").asnumpy() == 3.0
    assert f"max_exp_avg_sq.{params[0].name}" in saved and f"max_exp_avg_sq.{params[2].name}" not in saved
    assert {n for _, n, _ in opt.hypers()} == {"lr", "beta1", "beta2"}
    assert "adam.group1.beta1" in saved
    assert X.STATE_NAMES["NAdam"] == ("exp_avg", "exp_avg_sq", "mu_product", "step")
    # state written from outside (e.g. converted from torch) is what the next update uses
    ops.assign(opt.state(params[1], "exp_avg"), Tensor(np.full(4, 0.5, np.float32)))
    assert np.all(opt.state(params[1].name, "exp_avg").asnumpy() == 0.5)


def test_resume_from_torch_state_continues_torch_trajectory():
    """torch state after 30 steps written into the state Parameters: the next 30 updates match torch."""
    opts = [{"momentum_decay": 0.004}, {"weight_decay": 0.05}]
    p0, grads = _inputs(2, seed=5)
    full = _torch_run("NAdam", 0.01, opts, p0, grads[:60])
    ps = [torch.nn.Parameter(torch.tensor(x.copy())) for x in p0]
    topt = torch.optim.NAdam([{"params": ps[2 * g: 2 * g + 2], **o} for g, o in enumerate(opts)], lr=0.01,
                             foreach=False)
    for g in grads[:30]:
        for p, x in zip(ps, g):
            p.grad = torch.tensor(x)
        topt.step()
    params = _ms_params([p.detach().numpy() for p in ps])
    opt = X.NAdam(_groups(opts, params), lr=0.01)
    for p, tp in zip(params, ps):
        for name in X.STATE_NAMES["NAdam"]:
            value = topt.state[tp][name]
            ops.assign(opt.state(p, name), Tensor(value.numpy()))
    worst = _ulps(_ms_run(opt, params, grads[30:60]), full[30:60])
    print(f"NAdam resumed from torch state: ulps per group {[round(w, 2) for w in worst]}")
    assert max(worst) <= FLOOR                                    # well conditioned: torch's own error ~1 ulp


# ----------------------------------------------------------------------------- the native table


def _native_factories() -> dict[str, Callable[[list[Parameter], dict[str, Any]], Any]]:
    """MindSpore class name -> factory from torch options (the mapping the table was measured with)."""
    def betas(o):
        return o.get("betas", (0.9, 0.999))
    return {
        "nn.SGD": lambda ps, o: nn.SGD(ps, o["lr"], momentum=o.get("momentum", 0.0),
                                       dampening=o.get("dampening", 0.0), weight_decay=o.get("weight_decay", 0.0),
                                       nesterov=o.get("nesterov", False)),
        "nn.Momentum": lambda ps, o: nn.Momentum(ps, o["lr"], o["momentum"], weight_decay=o.get("weight_decay", 0.0),
                                                 use_nesterov=o.get("nesterov", False)),
        "experimental.SGD": lambda ps, o: mopt.SGD(ps, **o),
        "nn.Adam": lambda ps, o: nn.Adam(ps, o["lr"], beta1=betas(o)[0], beta2=betas(o)[1], eps=o.get("eps", 1e-8),
                                         weight_decay=o.get("weight_decay", 0.0),
                                         use_amsgrad=o.get("amsgrad", False)),
        "experimental.Adam": lambda ps, o: mopt.Adam(ps, **o),
        "experimental.AdamW": lambda ps, o: mopt.AdamW(ps, **o),
        "nn.AdamWeightDecay": lambda ps, o: nn.AdamWeightDecay(ps, o["lr"], beta1=betas(o)[0], beta2=betas(o)[1],
                                                               eps=o.get("eps", 1e-8),
                                                               weight_decay=o.get("weight_decay", 1e-2)),
        "nn.RMSProp": lambda ps, o: nn.RMSProp(ps, o["lr"], decay=o.get("alpha", 0.99),
                                               momentum=o.get("momentum", 0.0), epsilon=o.get("eps", 1e-8),
                                               centered=o.get("centered", False)),
        "experimental.RMSprop": lambda ps, o: mopt.RMSprop(ps, **o),
        "nn.Adagrad": lambda ps, o: nn.Adagrad(ps, accum=o.get("initial_accumulator_value", 0.0),
                                               learning_rate=o["lr"]),
        "experimental.Adagrad": lambda ps, o: mopt.Adagrad(ps, **o),
        "nn.Adadelta": lambda ps, o: nn.Adadelta(ps, o["lr"], rho=o.get("rho", 0.9), epsilon=o.get("eps", 1e-6)),
        "experimental.Adadelta": lambda ps, o: mopt.Adadelta(ps, **o),
        "nn.AdaMax": lambda ps, o: nn.AdaMax(ps, o["lr"], beta1=betas(o)[0], beta2=betas(o)[1],
                                             eps=o.get("eps", 1e-8)),
        "experimental.Adamax": lambda ps, o: mopt.Adamax(ps, **o),
        "experimental.NAdam": lambda ps, o: mopt.NAdam(ps, **o),
        "experimental.RAdam": lambda ps, o: mopt.RAdam(ps, **o),
    }


def _case_inputs(row: X.NativeEquivalence) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rs = np.random.RandomState(0)
    p0 = [rs.randn(*s).astype(np.float32) for s in SHAPES]
    grads = [[(rs.randn(*s) * SCALES[row.grads]).astype(np.float32) for s in SHAPES] for _ in range(STEPS)]
    return p0, grads


def _native_case(row: X.NativeEquivalence) -> dict[str, Any]:
    """The row's case (one group of two tensors, STEPS steps): the native's worst |dp| vs torch and in ulps
    (as _ulps), torch's own float32 error in ulps (vs torch in float64), and for a non-exact row the exact
    optimizer's ulps on the same case."""
    p0, grads = _case_inputs(row)
    options = dict(row.options)
    ctor = {k: v for k, v in options.items() if k != "lr"}
    t32 = _torch_run(row.kind, options["lr"], [{}], p0, grads, **ctor)
    t64 = _torch_run(row.kind, options["lr"], [{}], p0, grads, dtype=torch.float64, **ctor)
    params = _ms_params(p0)
    run = _ms_run(_native_factories()[row.native](params, dict(options)), params, grads)
    out = {"abs": max(float(np.max(np.abs(x - y))) for a, b in zip(run, t32) for x, y in zip(a, b)),
           "ulps": _ulps(run, t32)[0], "own": _ulps(t64, t32)[0], "exact": None}
    if not row.exact:
        params = _ms_params(p0)
        out["exact"] = _ulps(_ms_run(X.OPTIMIZERS[row.kind](params, **options), params, grads), t32)[0]
    return out


@pytest.mark.parametrize("row", X.NATIVE, ids=lambda r: f"{r.kind}-{r.native}-{r.case}")
def test_native_table_is_measured(row, graph_mode):
    """Each row of NATIVE reproduces. An exact native agrees with torch as the exact optimizers must (FLOOR
    ulps plus twice torch's own float32 error); a non-exact one is outside that bound, while the exact
    optimizer on the same case is inside it. The recorded ``worst`` (max |dp|) reproduces within a factor 2."""
    m = _native_case(row)
    print(f"{row.kind} {row.native} {row.case}: native {m['abs']:.3g} = {m['ulps']:.3g} ulps "
          f"(recorded {row.worst:.3g}; torch's own error {m['own']:.3g} ulps), exact {m['exact']}")
    bound = FLOOR + 2 * m["own"]
    assert row.worst / 2 <= m["abs"] <= row.worst * 2 or (row.exact and m["abs"] <= 2.4e-7)
    if row.exact:
        assert m["ulps"] <= bound
    else:
        assert m["ulps"] > bound
        assert m["exact"] <= bound


def test_native_equivalent_choices():
    assert X.native_equivalent("SGD", {"momentum": 0.9, "nesterov": True}).native == "nn.SGD"
    assert X.native_equivalent("SGD", {"momentum": 0.9, "maximize": True}).native == "experimental.SGD"
    assert X.native_equivalent("SGD", {"momentum": 0.9}, scheduled=("lr", "momentum")) is None
    assert X.native_equivalent("Adam", {}) is None                # eps-hat
    assert X.native_equivalent("AdamW", {"amsgrad": True}).native == "experimental.AdamW"
    assert X.native_equivalent("NAdam", {"decoupled_weight_decay": True}) is None
    assert X.native_equivalent("Adagrad", {}).native == "experimental.Adagrad"
    assert X.native_equivalent("Adam", {"betas": (0.8, 0.9)}, scheduled=("lr", "betas")) is None


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make,path", [
    (lambda p: X.SGD([p], lr=-1.0), "lr"),
    (lambda p: X.Adam([p], betas=(0.9, 1.0)), "betas[1]"),
    (lambda p: X.Adam([p], betas=0.9), "betas"),
    (lambda p: X.SGD([p], momentum=0.0, nesterov=True), "nesterov"),
    (lambda p: X.SGD([{"params": [p], "lr": "fast"}]), "params[0].lr"),
    (lambda p: X.SGD([{"params": [p], "betas": (0.9, 0.9)}]), "params[0].betas"),
    (lambda p: X.Adam([{"params": [p], "fused": True}]), "params[0].fused"),
    (lambda p: X.SGD([{"params": [p]}, {"params": [p]}]), "params[1].params[0]"),
    (lambda p: X.SGD([]), "params"),
    (lambda p: X.SGD(p), "params"),
    (lambda p: X.SGD([{"params": {p}}]), "params[0].params"),
    (lambda p: X.SGD([Parameter(Tensor(np.zeros(2, np.float16)), name="h")]), "params[0]"),
    (lambda p: X.RMSprop([p], centered=1), "centered"),
    (lambda p: X.SGD([p], scheduled=("betas",)), "scheduled"),
    (lambda p: X.exact_optimizer("LBFGS", [p]), "optimizer.type"),
    (lambda p: X.exact_optimizer("SGD", [p], nesterov_momentum=0.9), "optimizer"),
    (lambda p: X.Adam([p], kernels="fast"), "kernels"),
])
def test_bad_input_raises_config_error(make, path):
    p = Parameter(Tensor(np.zeros(2, np.float32)), name="bad")
    with pytest.raises(ConfigError) as info:
        make(p)
    assert info.value.path == path


def test_hyper_access_errors():
    p = Parameter(Tensor(np.zeros(2, np.float32)), name="h0")
    opt = X.SGD([p], lr=0.1, momentum=0.9, scheduled=("lr",))
    assert opt.hyper(0, "lr").dtype == ms.float64
    with pytest.raises(ConfigError, match="scheduled="):
        opt.hyper(0, "momentum")                                  # a constant: assigning it would do nothing
    with pytest.raises(ConfigError):
        opt.hyper(1, "lr")
    with pytest.raises(ConfigError):
        opt.hyper(0, "betas")
    with pytest.raises(ConfigError):
        opt.state(p, "exp_avg")


def test_without_the_kernels_the_composed_update_runs_and_kernels_true_says_why(tmp_path):
    """OPTBRIDGE_MS_KERNELS=0 (or no compiler): the default is the composed ops, and kernels=True is a
    ConfigError naming the reason; the kernels build into OPTBRIDGE_CACHE_DIR."""
    script = (
        "import numpy as np\n"
        "from mindspore import Parameter, Tensor\n"
        "from optbridge.errors import ConfigError\n"
        "from optbridge_adapters.mindspore import kernels, optimizers as X\n"
        "p = Parameter(Tensor(np.ones(3, np.float32)), name='w')\n"
        "ok, why = kernels.status()\n"
        "print('status', ok, why)\n"
        "print('default', X.Adam([p]).kernels)\n"
        "try:\n"
        "    X.Adam([p], kernels=True)\n"
        "    print('forced ok')\n"
        "except ConfigError as exc:\n"
        "    print('forced', exc.path, '|', exc)\n"
    )
    env = {**os.environ, "OPTBRIDGE_MS_KERNELS": "0", "OPTBRIDGE_CACHE_DIR": str(tmp_path)}
    off = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "status False disabled by OPTBRIDGE_MS_KERNELS" in off.stdout, off.stderr[-2000:]
    assert "default False" in off.stdout
    assert "forced kernels |" in off.stdout and "OPTBRIDGE_MS_KERNELS" in off.stdout
    assert not list(tmp_path.iterdir())
    _needs_kernels()
    env["OPTBRIDGE_MS_KERNELS"] = "1"
    on = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert "status True" in on.stdout and "default True" in on.stdout and "forced ok" in on.stdout, on.stderr[-2000:]
    assert [f.suffix for f in tmp_path.iterdir()] == [".so"]     # built there, once, atomically renamed
