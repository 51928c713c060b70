"""Groups that join mid-run (``start_step``) on MindSpore: optbridge's exact optimizers leave them untouched.

torch adds such a group with ``add_param_group`` at its update (Lightning's BackboneFinetuning);
MindSpore's nn and experimental optimizers take every group at construction, so to_mindspore
runs the plan's optimizer on optbridge's exact class, whose ``start_step`` group key gates the
group's update (parameters and state untouched until the optimizer's ``k``-th call). Checked
against hand-computed values: a fresh Adam's first step from the same state, in PyNative and
GRAPH mode. The trajectory against torch, per update, is the conformance case
``trajectory-adam-group-joins`` (every backend).
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from mindspore import Parameter, Tensor, nn  # noqa: E402

import optbridge  # noqa: E402
from optbridge.errors import ConfigError, UnsupportedError  # noqa: E402
from optbridge_adapters.mindspore import optimizers as X  # noqa: E402


@pytest.fixture(params=["pynative", "graph"])
def mode(request):
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE)
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)


def _params(tag: str) -> list[Parameter]:
    return [Parameter(Tensor(np.full(3, 0.5, np.float32)), name=f"{tag}{i}") for i in range(2)]


def test_a_late_group_is_untouched_then_starts_fresh(mode):
    ps = _params(f"late_{mode}_")
    opt = X.Adam([{"params": [ps[0]]}, {"params": [ps[1]], "start_step": 3, "lr": 0.05}], lr=0.1)
    fresh_p = _params(f"fresh_{mode}_")[1]
    fresh = X.Adam([fresh_p], lr=0.05)
    rng = np.random.default_rng(0)
    for k in range(6):
        g = rng.standard_normal(3).astype(np.float32)
        opt((Tensor(g), Tensor(g)))
        if k < 3:
            np.testing.assert_array_equal(ps[1].asnumpy(), np.full(3, 0.5, np.float32))
            assert float(opt._state[(ps[1].name, "step")].asnumpy()) == 0.0
        else:                                   # from its update on: exactly a fresh Adam fed the same gradients
            fresh((Tensor(g),))
            np.testing.assert_array_equal(ps[1].asnumpy(), fresh_p.asnumpy())
    assert int(opt.update_count.asnumpy()) == 6
    assert opt.param_groups[1]["start_step"] == 3
    assert "adam.update" in {p.name for _, p in opt.parameters_and_names()}           # checkpointed with the state
    assert not hasattr(X.Adam([_params(f"plain_{mode}_")[0]]), "update_count")       # only where a group joins late


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
def test_to_mindspore_runs_the_plan_on_the_exact_class(form):
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9},
                           "total_steps": 10, "groups": [{"name": "head", "params": ["head.*"]},
                                                         {"name": "body", "params": ["body.*"], "start_step": 4}],
                           "schedule": {"lr": {"kind": "cosine", "steps": 10}}})

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.head = nn.Dense(2, 2)
            self.body = nn.Dense(2, 2)

    setup = optbridge.to_mindspore(plan, Net(), form=form)
    assert isinstance(setup.optimizer, X.SGD)
    assert "joins at update 4" in setup.choices["optimizer"].note
    with pytest.raises(UnsupportedError) as info:
        optbridge.to_mindspore(plan, Net(), form=form, optimizer="native")
    assert info.value.node == "optimizers.optimizer.groups.body.start_step"
    tr = optbridge.trace(plan, 10, backend=f"mindspore-{form}")
    ref = optbridge.trace(plan, 10)
    assert np.isnan(tr.applied["lr"][1, :4]).all()
    np.testing.assert_array_equal(tr.applied["lr"][1, 4:], np.float32(ref["lr"][1, 4:]))


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_bad_start_step_is_a_config_error(bad):
    with pytest.raises(ConfigError) as info:
        X.SGD([{"params": _params("bad")[:1], "start_step": bad}], lr=0.1)
    assert info.value.path == "params[0].start_step"


def test_resume_from_torch_past_the_join():
    """torch adds the group at update 3 (add_param_group); after 5 updates its state and position convert into
    the exact MindSpore Adam whose group has start_step 3; both continue on the same gradients and agree."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0 = [rng.standard_normal(3).astype(np.float32) for _ in range(2)]
    grads = [[rng.standard_normal(3).astype(np.float32) for _ in range(2)] for _ in range(8)]
    tp = [torch.nn.Parameter(torch.tensor(p)) for p in p0]
    topt = torch.optim.Adam([("resume0", tp[0])], lr=0.1)          # named: the state names its parameters
    for k in range(8):
        if k == 3:
            topt.add_param_group({"params": [("resume1", tp[1])], "lr": 0.05})
        if k == 5:
            state = optbridge.read_state(topt, scheduler=5)
            mp = [Parameter(Tensor(t.detach().numpy().copy()), name=f"resume{i}") for i, t in enumerate(tp)]
            mopt = X.Adam([{"params": [mp[0]]}, {"params": [mp[1]], "start_step": 3, "lr": 0.05}], lr=0.1)
            optbridge.convert_state(state, mopt)
            assert int(mopt.update_count.asnumpy()) == 5                     # the join clock travels too
        for p, g in zip(tp, grads[k]):
            p.grad = torch.tensor(g)
        topt.step()
        if k >= 5:
            mopt(tuple(Tensor(g) for g in grads[k]))
    for m, t in zip(mp, tp):
        np.testing.assert_allclose(m.asnumpy(), t.detach().numpy(), rtol=0, atol=4e-7)


def test_train_one_step_cell_in_graph_mode_joins_too():
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        class Net(nn.Cell):
            def __init__(self):
                super().__init__()
                self.a = Parameter(Tensor(np.ones(3, np.float32)), name="tosc_a")
                self.b = Parameter(Tensor(np.ones(3, np.float32)), name="tosc_b")

            def construct(self, x):
                return (self.a * x).sum() + (self.b * x).sum()

        net = Net()
        opt = X.Adam([{"params": [net.a]}, {"params": [net.b], "start_step": 2}], lr=0.1)
        train = nn.TrainOneStepCell(net, opt)
        moved = []
        for _ in range(4):
            before = float(net.b.asnumpy()[0])
            train(Tensor(np.ones(3, np.float32)))
            moved.append(before - float(net.b.asnumpy()[0]))
        assert moved[:2] == [0.0, 0.0]                         # not trained before update 2
        assert moved[2] == pytest.approx(0.1, rel=1e-6)         # then Adam's first step: lr * g / (|g| + eps)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_optimizer_clip_counts_a_group_from_its_join(mode, norm_type):
    """An optimizer-level clip covers the groups in the optimizer at that update, as torch's: the not-yet-joined
    group's gradients do not enter the norm (they did before: group a clipped by the norm of both). Against the
    to_torch adapter (float32; the norms agree to a few ulps, docs/optimizers.md)."""
    torch = pytest.importorskip("torch")
    cfg = {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1, "clip": {"max_norm": 0.5, "norm_type": norm_type}},
           "groups": [{"name": "a", "params": "a*"}, {"name": "b", "params": "b*", "start_step": 5}],
           "total_steps": 10}
    init = np.random.RandomState(0).randn(2, 4).astype(np.float32)
    grads = np.random.RandomState(1).randn(10, 2, 4).astype(np.float32)

    class Holder(nn.Cell):
        def __init__(self, v):
            super().__init__()
            self.w = Parameter(Tensor(v), name="w")

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.a, self.b = Holder(init[0]), Holder(init[1])

    net = Net()
    setup = optbridge.to_mindspore(optbridge.load(cfg), net)
    tm = torch.nn.ParameterDict({"a": torch.nn.Parameter(torch.tensor(init[0])),
                                 "b": torch.nn.Parameter(torch.tensor(init[1]))})
    tsetup = optbridge.to_torch(optbridge.load(cfg), tm)
    for k in range(10):
        setup.optimizer(ms.mutable(tuple(Tensor(grads[k, 0 if p.name.startswith("a") else 1])
                                         for p in setup.optimizer.parameters)))
        setup.step()
        tm["a"].grad, tm["b"].grad = torch.tensor(grads[k, 0]), torch.tensor(grads[k, 1])
        tsetup.clip_gradients()
        tsetup.optimizer.step()
        tsetup.scheduler.step()
        got = np.concatenate([net.a.w.asnumpy(), net.b.w.asnumpy()])
        want = torch.cat([tm["a"].detach(), tm["b"].detach()]).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=4 * np.spacing(np.float32(4.0)), err_msg=str(k))
