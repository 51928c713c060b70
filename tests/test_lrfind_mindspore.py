"""The lr range test on real MindSpore 2.10 (PyNative), and against torch on the same model and data.

The applied lr is measured, not read: ``loss_fn`` records each parameter and resets
it to 0 (``ops.assign``) before returning ``sum(parameters)`` (gradient 1), so after
plain SGD's update ``k`` the parameter is exactly ``-float32(lr_k)``.
Tolerances: MindSpore stores every lr as float32, so the applied lr must equal the
reference ramp rounded once to float32, exactly (0 ulp). Torch vs MindSpore on the
bundled example (same float32 weights and batches): lrs equal as float32; losses
within 2e-6 relative over the window the suggestions read (measured 3.0e-7; the two
frameworks' float32 kernels differ in the last bits), 1e-3 over the whole curve
(the last points are the divergence, where float32 differences grow fast).
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
torch = pytest.importorskip("torch")

from mindspore import nn, ops  # noqa: E402

import optbridge  # noqa: E402
from optbridge import lrfind  # noqa: E402
from optbridge.errors import UnsupportedError  # noqa: E402
from optbridge.lrcurve import window  # noqa: E402
from optbridge_adapters.mindspore.lrfind import example  # noqa: E402
from optbridge_adapters.torch.lrfind import example as torch_example  # noqa: E402

ms.set_context(mode=ms.PYNATIVE_MODE)


class Two(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Dense(3, 2)
        self.head = nn.Dense(2, 1)

    def construct(self, x):
        return self.head(self.body(x))


def probe_loss(seen):
    """Record every parameter, reset it to 0, return sum(parameters): the next record is -applied lr."""
    def loss_fn(m, batch):
        seen.append([float(p.asnumpy().reshape(-1)[0]) for p in (m.body.bias, m.head.bias)])
        for p in m.trainable_params():
            ops.assign(p, ops.zeros_like(p))
        return sum(ops.sum(p) for p in m.trainable_params())
    return loss_fn


def applied(seen):
    return -np.array(seen[1:], dtype=np.float64).T  # (groups, n - 1): updates 0 .. n - 2


def params(model):
    return {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("kind", ["nn", "experimental", "plan"])
def test_applied_lr_is_the_float32_ramp_and_groups_keep_their_ratio(kind):
    net = Two()
    if kind == "nn":
        opt = nn.SGD([{"params": net.body.trainable_params(), "lr": 0.01},
                      {"params": net.head.trainable_params(), "lr": 0.1}], learning_rate=0.1)
    elif kind == "experimental":
        from mindspore.experimental import optim
        opt = optim.SGD([{"params": net.body.trainable_params(), "lr": 0.01},
                         {"params": net.head.trainable_params(), "lr": 0.1}], lr=0.1)
    else:
        opt = optbridge.loads("""
optbridge: 1
optimizer: {type: SGD, lr: 0.1}
groups: [{name: body, params: "body.*", lr_mult: 0.1}, {name: head, params: rest}]
""")
    seen = []
    res = lrfind.lr_find(net, opt, probe_loss(seen), [None], start_lr=1e-6, end_lr=1.0, steps=25, diverge=None)
    assert res.backend == "mindspore" and res.n == 25 and res.lrs.shape == (2, 25)
    ref = optbridge.trace(res.plan, 25)["lr"].astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(res.lrs, ref)  # read back from MindSpore: float32(reference)
    np.testing.assert_array_equal(applied(seen), ref[:, :-1])  # measured from the parameter change
    np.testing.assert_allclose(res.lrs[0] / res.lrs[1], 0.1, rtol=2 * 2.0 ** -23)  # two float32 roundings
    assert res.reference == res.groups[1]


def test_state_restored_bit_for_bit_nn_adam_with_batchnorm():
    ms.set_seed(0)
    net = nn.SequentialCell(nn.Dense(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dense(16, 1))
    opt = nn.Adam(net.trainable_params(), learning_rate=1e-3)
    _, _, loss_fn, batches = example()
    grad = ms.value_and_grad(lambda x, y: ops.mean((net(x) - y) ** 2), None, opt.parameters)
    net.set_train(True)
    for x, y in batches[:3]:  # a partly trained model: moments, beta powers, global_step, BN statistics
        opt(grad(x, y)[1])
    net.set_train(False)
    before = params(net) | {f"opt.{n}": p.asnumpy().copy() for n, p in opt.parameters_and_names()}
    res = lrfind.lr_find(net, opt, loss_fn, batches, start_lr=1e-5, end_lr=1.0, steps=20)
    assert res.n >= 10
    after = params(net) | {f"opt.{n}": p.asnumpy().copy() for n, p in opt.parameters_and_names()}
    same(before, after)
    assert not net.training and not net[1].training


def test_state_restored_experimental_adamw():
    from mindspore.experimental import optim
    net, _, loss_fn, batches = example()
    opt = optim.AdamW(net.trainable_params(), lr=1e-3)
    before = params(net) | {f"opt.{n}": p.asnumpy().copy() for n, p in opt.parameters_and_names()}
    lr_before = [float(g["lr"].asnumpy()) for g in opt.param_groups]
    lrfind.lr_find(net, opt, loss_fn, batches, start_lr=1e-5, end_lr=1.0, steps=15)
    same(before, params(net) | {f"opt.{n}": p.asnumpy().copy() for n, p in opt.parameters_and_names()})
    assert [float(g["lr"].asnumpy()) for g in opt.param_groups] == lr_before


def test_a_dynamic_nn_lr_is_refused_with_the_remedy():
    net, _, loss_fn, batches = example()
    opt = nn.SGD(net.trainable_params(), learning_rate=[0.1] * 50)
    with pytest.raises(UnsupportedError, match="from_mindspore"):
        lrfind.lr_find(net, opt, loss_fn, batches, steps=10)


def test_accumulate_and_dict_batches():
    net, opt, loss_fn, batches = example()
    halves = [{"x": x[i:i + 32], "y": y[i:i + 32]} for x, y in batches for i in (0, 32)]
    res2 = lrfind.lr_find(net, opt, lambda m, b: ops.mean((m(b["x"]) - b["y"]) ** 2), halves, start_lr=1e-4,
                          end_lr=0.3, steps=12, accumulate=2, diverge=None)
    net, opt, loss_fn, batches = example()
    res1 = lrfind.lr_find(net, opt, loss_fn, batches, start_lr=1e-4, end_lr=0.3, steps=12, diverge=None)
    # two halves of 32 averaged = the batch of 64 (equal sizes): float32 rounding apart
    np.testing.assert_allclose(res2.losses, res1.losses, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(res2.lrs, res1.lrs)


def test_same_curve_as_torch_on_the_same_model_and_data():
    net, opt, loss_fn, batches = example()
    r_ms = lrfind.lr_find(net, opt, loss_fn, batches, start_lr=1e-4, end_lr=10, steps=100)
    tm, topt, tloss, tb = torch_example()
    r_t = lrfind.lr_find(tm, topt, tloss, tb, start_lr=1e-4, end_lr=10, steps=100)
    assert (r_ms.stop, r_ms.stop_step) == (r_t.stop, r_t.stop_step) == ("diverged", 81)
    np.testing.assert_array_equal(r_ms.lrs, r_t.lrs.astype(np.float32).astype(np.float64))
    lo, hi = window(r_t.n, 100, r_t.smoothed)
    rel = np.abs(r_ms.losses - r_t.losses) / np.abs(r_t.losses)
    assert rel[lo:hi].max() <= 2e-6 and rel.max() <= 1e-3, (rel[lo:hi].max(), rel.max())
    assert [s.step for s in r_ms.suggestions] == [s.step for s in r_t.suggestions]
