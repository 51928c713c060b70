"""MindSpore's AdamWeightDecay on torch (optbridge_adapters.torch.optimizers) against the real nn.AdamWeightDecay.

Same float32 initial parameters and gradients on both sides, two groups with their own
lr and weight decay, 100 steps. Tolerance: ``max |p_torch - p_ms| <= 8 ulps`` of the
tensor's peak magnitude (MindSpore's CPU kernel is vectorised, so its float32 rounding order
need not be torch's; measured: 0.5 ulp of peak, 1.2e-7, with N(0, 1) gradients; printed by
the test). torch's AdamW is the control: it bias-corrects, so it is far away on the same run.
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
torch = pytest.importorskip("torch")

from mindspore import Parameter, Tensor, nn  # noqa: E402

import optbridge  # noqa: E402
from optbridge.errors import ConfigError  # noqa: E402
from optbridge_adapters.torch.optimizers import AdamWeightDecay  # noqa: E402

STEPS = 100
ULPS = 8


def _inputs(seed: int = 0, tiny: bool = False) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(s).astype(np.float32) for s in [(5, 3), (4,)]]
    scale = 1e-7 if tiny else 1.0
    grads = [[(rng.standard_normal(p.shape) * scale).astype(np.float32) for p in p0] for _ in range(STEPS)]
    return p0, grads


GROUPS = [dict(lr=0.01, weight_decay=0.05), dict(lr=0.003, weight_decay=0.0)]


def _torch_run(cls, p0, grads, **kw):
    ps = [torch.nn.Parameter(torch.tensor(p)) for p in p0]
    opt = cls([{"params": [p], **g} for p, g in zip(ps, GROUPS)], betas=(0.9, 0.99), eps=1e-6, **kw)
    out = []
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = torch.tensor(g)
        opt.step()
        out.append([p.detach().numpy().copy() for p in ps])
    return out


def _ms_run(p0, grads):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ps = [Parameter(Tensor(p.copy()), name=f"awd_{i}") for i, p in enumerate(p0)]
    opt = nn.AdamWeightDecay([{"params": [p], **g} for p, g in zip(ps, GROUPS)], learning_rate=0.01, beta1=0.9,
                             beta2=0.99, eps=1e-6)
    out = []
    for gs in grads:
        opt(tuple(Tensor(g) for g in gs))
        out.append([p.asnumpy().copy() for p in ps])
    return out


def _kernel(p0, grads):
    """MindSpore's CPU kernel formula replayed in numpy float32 (correctly rounded ops: exact on every CPU)."""
    f = np.float32
    b1, b2 = f(1) - f(0.9), f(1) - f(0.99)
    ps, ms_, vs, out = [p.copy() for p in p0], [np.zeros_like(p) for p in p0], [np.zeros_like(p) for p in p0], []
    for gs in grads:
        for i, (g, h) in enumerate(zip(gs, GROUPS)):
            ms_[i] = ms_[i] + (g - ms_[i]) * b1
            vs[i] = vs[i] + (g * g - vs[i]) * b2
            u = ms_[i] / (np.sqrt(vs[i]) + f(1e-6)) + ps[i] * f(h["weight_decay"])
            ps[i] = ps[i] - u * f(h["lr"])
        out.append([p.copy() for p in ps])
    return out


def test_torch_class_is_the_kernel_formula():
    """The replay tests_megengine/test_adamweightdecay.py holds the MegEngine class to bit for bit; torch's
    vectorised CPU kernels may round one element differently (measured: 1 element of 15, 1 ulp)."""
    p0, grads = _inputs()
    assert _worst_ulps(_torch_run(AdamWeightDecay, p0, grads), _kernel(p0, grads)) <= 1.0


def _worst_ulps(a, b) -> float:
    """Max |a - b| in ulps of the tensor's peak magnitude (a parameter crossing 0 has no ulp of its own)."""
    return max(float(np.max(np.abs(x - y)) / np.spacing(np.float32(max(np.max(np.abs(x)), np.max(np.abs(y))))))
               for sa, sb in zip(a, b) for x, y in zip(sa, sb))


@pytest.mark.parametrize("tiny", [False, True], ids=["normal", "tiny"])
def test_adamweightdecay_matches_mindspore(tiny):
    p0, grads = _inputs(tiny=tiny)
    mine, real = _torch_run(AdamWeightDecay, p0, grads), _ms_run(p0, grads)
    worst = _worst_ulps(mine, real)
    print(f"AdamWeightDecay torch vs mindspore ({'tiny' if tiny else 'normal'} grads): {worst:.3g} ulps")
    assert worst <= ULPS
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(real[-1], p0))
    assert moved > 1e-3                                        # the parameters moved: the comparison means something
    adamw = _torch_run(torch.optim.AdamW, p0, grads)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(adamw[-1], real[-1])) > 100 * ULPS * 1e-7


def test_to_torch_builds_it_and_the_schedule_drives_it():
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "AdamWeightDecay", "lr": 0.01, "weight_decay": 0.01},
                           "groups": [{"name": "all", "params": ["*"]}],
                           "schedule": {"lr": {"kind": "cosine", "steps": 10}}})
    model = torch.nn.Linear(3, 2)
    setup = optbridge.to_torch(plan, model)
    (opt,) = setup.optimizers.values()
    assert isinstance(opt, AdamWeightDecay)
    expected = optbridge.trace(plan, 10).data["lr"][0]
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        setup.scheduler.step()
    np.testing.assert_allclose(seen, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kw,path", [
    (dict(lr=-0.1), "lr"), (dict(betas=(0.9, 1.0)), "betas[1]"), (dict(betas=0.9), "betas"),
    (dict(eps=0.0), "eps"), (dict(weight_decay=float("nan")), "weight_decay"),
])
def test_bad_hyperparameters_are_config_errors(kw, path):
    with pytest.raises(ConfigError) as info:
        AdamWeightDecay([torch.nn.Parameter(torch.zeros(2))], **kw)
    assert info.value.path == path


def test_a_scheduled_beta_reaching_one_is_named_at_the_step():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = AdamWeightDecay([p])
    opt.param_groups[0]["betas"] = (1.0, 0.999)
    p.grad = torch.ones(2)
    with pytest.raises(ConfigError) as info:
        opt.step()
    assert info.value.path == "param_groups[0].betas[0]"


def test_from_torch_reads_it_back():
    """A live torch setup on optbridge's class (what ``optbridge port --to torch`` builds for AdamWeightDecay) imports
    as a plan of type AdamWeightDecay with its options and groups; the plan's trace is the lr torch applied (1e-12
    relative: the reference's cosine against torch's recursive form), and to_torch builds the class again."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    opt = AdamWeightDecay([{"params": model[0].parameters(), "weight_decay": 0.0},
                           {"params": model[1].parameters(), "lr": 1e-2}], lr=1e-3, weight_decay=0.01, eps=1e-7)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 50)
    plan = optbridge.from_torch(opt, sched, model=model)
    assert plan.optimizers[0].type == "AdamWeightDecay"
    assert dict(plan.optimizers[0].options) == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.01}
    assert [dict(g.options) for g in plan.groups] == [{"weight_decay": 0.0, "lr": 1e-3}, {"lr": 1e-2}]
    want = []
    for _ in range(50):
        want.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    np.testing.assert_allclose(optbridge.trace(plan, 50)["lr"], np.array(want).T, rtol=1e-12, atol=0)
    assert type(optbridge.to_torch(plan, model).optimizer) is AdamWeightDecay
    with pytest.raises(ConfigError, match="optbridge_adapters.torch.optimizers.AdamWeightDecay"):
        optbridge.from_torch(type("AdamWeightDecay", (torch.optim.SGD,), {})(model.parameters(), lr=0.1))
