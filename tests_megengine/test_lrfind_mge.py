"""The lr range test on real MegEngine 1.13 (run with .venv-mge/bin/python from the repo root).

The applied lr is measured: ``loss_fn`` records two bias parameters (starting at 0)
and returns ``sum(parameters)`` (gradient 1), so plain SGD moves each bias by the
applied lr; the recorded float32 trajectory must equal, bit for bit, the float32
recursion ``p - float32(lr_k)`` with the reference ramp (MegEngine converts
``group["lr"]`` to float32 at each ``step()``). (Resetting the parameters inside
``loss_fn``, as the MindSpore test does, would happen inside the GradManager's
recording and cut the gradient.)
Tolerances: applied lr = the reference ramp rounded once to float32, exactly;
lrs read from the groups within 2 float64 ulps of the torch curve (numpy's power
in two interpreters); losses against the committed torch curve
(fixtures/lrfind_torch_example.npz, ``make_lrfind_fixture.py``) within 2e-6
relative over the window the suggestions read (measured 5.0e-7) and 1e-3 over
the whole curve, divergence included (measured 1.3e-5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

mge = pytest.importorskip("megengine")

import megengine.functional as F  # noqa: E402
import megengine.module as M  # noqa: E402
import megengine.optimizer as optim  # noqa: E402
from megengine.autodiff import GradManager  # noqa: E402

import optbridge  # noqa: E402
from optbridge import lrfind  # noqa: E402
from optbridge.lrcurve import window  # noqa: E402
from optbridge_adapters.megengine.lrfind import example  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lrfind_torch_example.npz"


class Two(M.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = M.Linear(3, 2)
        self.head = M.Linear(2, 1)

    def forward(self, x):
        return self.head(self.body(x))


def probe_loss(seen):
    """Record the two biases and return sum(parameters) (gradient 1 everywhere)."""
    def loss_fn(m, batch):
        seen.append([m.body.bias.numpy()[0], m.head.bias.numpy()[0]])
        return sum(F.sum(p) for p in m.parameters())
    return loss_fn


def replay(lrs32):
    """Plain SGD with gradient 1 from 0 in float32: p_{k+1} = p_k - lr_k (what MegEngine must compute)."""
    p = np.zeros(lrs32.shape[0], np.float32)
    out = [p]
    for k in range(lrs32.shape[1]):
        p = p - lrs32[:, k]
        out.append(p)
    return np.array(out)


@pytest.mark.parametrize("kind", ["live", "plan"])
def test_applied_lr_is_the_float32_ramp_and_groups_keep_their_ratio(kind):
    net = Two()
    if kind == "live":
        opt = optim.SGD([{"params": net.body.parameters(), "lr": 0.01}, {"params": net.head.parameters()}], lr=0.1)
    else:
        opt = optbridge.loads("""
optbridge: 1
optimizer: {type: SGD, lr: 0.1}
groups: [{name: body, params: "body.*", lr_mult: 0.1}, {name: head, params: rest}]
""")
    for lin in (net.body, net.head):
        lin.bias._reset(mge.Tensor(np.zeros(lin.bias.shape, np.float32)))
    seen = []
    res = lrfind.lr_find(net, opt, probe_loss(seen), [None], start_lr=1e-6, end_lr=1.0, steps=25, diverge=None)
    assert res.backend == "megengine" and res.n == 25
    ref = optbridge.trace(res.plan, 25)["lr"]
    np.testing.assert_array_equal(res.lrs, ref)  # written by optbridge, read back as float64
    trajectory = np.array(seen, dtype=np.float32)  # before updates 0 .. 24
    np.testing.assert_array_equal(trajectory, replay(ref[:, :-1].astype(np.float32)))
    np.testing.assert_allclose(res.lrs[0] / res.lrs[1], 0.1, rtol=1e-15)
    assert res.reference == res.groups[1]


@pytest.mark.parametrize("exact", [False, True], ids=["native-adam", "torch-exact-adam"])
def test_state_restored_bit_for_bit_adam_with_batchnorm(exact):
    from optbridge_adapters.megengine import optimizers as exact_optimizers
    net = M.Sequential(M.Linear(8, 16), M.BatchNorm1d(16), M.ReLU(), M.Linear(16, 1))
    # optbridge's torch-exact Adam keeps Python-number step counters and creates state at the first update
    opt = (exact_optimizers.Adam if exact else optim.Adam)(net.parameters(), lr=1e-3)
    _, _, loss_fn, batches = example()
    gm = GradManager().attach(net.parameters())
    net.train()
    for b in batches[:3]:  # a partly trained model: Adam moments and step, BN statistics, gradients left
        opt.clear_grad()
        with gm:
            gm.backward(loss_fn(net, b))
        opt.step()
    net.eval()
    groups = list(opt.param_groups)

    def snap():
        out = {n: t.numpy().copy() for n, t in list(net.named_parameters()) + list(net.named_buffers())}
        out.update({f"grad.{n}": p.grad.numpy().copy() for n, p in net.named_parameters()})
        out.update({f"state.{i}.{k}": v.numpy().copy() if isinstance(v, mge.Tensor) else v
                    for i, p in enumerate(net.parameters()) for k, v in opt._state.get(p, {}).items()})
        out.update({f"group.{i}.{k}": v for i, g in enumerate(opt.param_groups) for k, v in g.items() if k != "params"})
        return out

    before = snap()
    res = lrfind.lr_find(net, opt, loss_fn, batches, start_lr=1e-5, end_lr=1.0, steps=20)
    assert res.n >= 10
    after = snap()
    assert before.keys() == after.keys()
    for k in before:
        if isinstance(before[k], np.ndarray):
            assert before[k].dtype == after[k].dtype and np.array_equal(before[k], after[k]), k
        else:
            assert before[k] == after[k], k
    assert all(a is b for a, b in zip(groups, opt.param_groups))
    assert not any(m.training for m in net.modules())


def test_accumulate_and_dict_batches():
    net, opt, loss_fn, batches = example()
    halves = [{"x": x[i:i + 32], "y": y[i:i + 32]} for x, y in batches for i in (0, 32)]
    res2 = lrfind.lr_find(net, opt, lambda m, b: F.mean((m(b["x"]) - b["y"]) ** 2), halves, start_lr=1e-4,
                          end_lr=0.3, steps=12, accumulate=2, diverge=None)
    net, opt, loss_fn, batches = example()
    res1 = lrfind.lr_find(net, opt, loss_fn, batches, start_lr=1e-4, end_lr=0.3, steps=12, diverge=None)
    np.testing.assert_allclose(res2.losses, res1.losses, rtol=1e-5, atol=0)  # float32 rounding apart
    np.testing.assert_array_equal(res2.lrs, res1.lrs)


def test_same_curve_as_torch():
    t = np.load(FIXTURE)
    net, opt, loss_fn, batches = example()
    res = lrfind.lr_find(net, opt, loss_fn, batches, start_lr=1e-4, end_lr=10.0, steps=100)
    assert res.stop == "diverged" and res.stop_step == int(t["stop_step"])
    np.testing.assert_array_max_ulp(res.lrs, t["lrs"], maxulp=2)
    lo, hi = window(res.n, 100, res.smoothed)
    rel = np.abs(res.losses - t["losses"]) / np.abs(t["losses"])
    assert rel[lo:hi].max() <= 2e-6 and rel.max() <= 1e-3, (rel[lo:hi].max(), rel.max())
    assert [s.step for s in res.suggestions] == t["suggestion_steps"].tolist()


def test_plot_and_json(tmp_path):
    net, opt, loss_fn, batches = example()
    res = lrfind.lr_find(net, opt, loss_fn, batches, start_lr=1e-4, end_lr=10.0, steps=100)
    pytest.importorskip("matplotlib")
    assert res.plot(tmp_path / "mge.png").stat().st_size > 10_000
    assert '"backend": "megengine"' in res.to_json()
