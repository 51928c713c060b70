"""optbridge's MegEngine AdamWeightDecay (MindSpore's nn.AdamWeightDecay update) against its kernel formula.

MindSpore's CPU kernel, every quantity float32: ``m = m + (g - m)*(1 - beta1)``,
``v = v + (g*g - v)*(1 - beta2)``, ``p = p - lr*(m/(sqrt(v) + eps) + wd*p)``. numpy's
float32 ``+ - * / sqrt`` are correctly rounded IEEE operations on every CPU, so the numpy
replay below is exact by construction, and MegEngine (which rounds every product, and
whose FUSE_MUL_ADD3 rounds the product first) must match it bit for bit. The same replay
is what tests/test_torch_optimizers.py holds optbridge's torch class to, and that class is
measured there against the real ``mindspore.nn.AdamWeightDecay`` (0.5 ulp of peak).
"""

from __future__ import annotations

import megengine as mge
import numpy as np
import pytest

import optbridge
from optbridge.errors import ConfigError
from optbridge_adapters.megengine import optimizers as ex

STEPS = 60
GROUPS = [dict(lr=0.01, weight_decay=0.05), dict(lr=0.003, weight_decay=0.0)]
BETAS, EPS = (0.9, 0.99), 1e-6


def _inputs(tiny: bool) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(1)
    p0 = [rng.standard_normal(s).astype(np.float32) for s in [(5, 7), (3,)]]
    scale = 1e-7 if tiny else 1.0
    return p0, [[(rng.standard_normal(p.shape) * scale).astype(np.float32) for p in p0] for _ in range(STEPS)]


def _kernel(p0, grads):
    f = np.float32
    b1, b2 = f(1) - f(BETAS[0]), f(1) - f(BETAS[1])
    ps, ms, vs, out = [p.copy() for p in p0], [np.zeros_like(p) for p in p0], [np.zeros_like(p) for p in p0], []
    for gs in grads:
        for i, (g, h) in enumerate(zip(gs, GROUPS)):
            ms[i] = ms[i] + (g - ms[i]) * b1
            vs[i] = vs[i] + (g * g - vs[i]) * b2
            u = ms[i] / (np.sqrt(vs[i]) + f(EPS))
            if h["weight_decay"]:
                u = ps[i] * f(h["weight_decay"]) + u
            ps[i] = u * -f(h["lr"]) + ps[i]
        out.append([p.copy() for p in ps])
    return out


@pytest.mark.parametrize("tiny", [False, True], ids=["normal", "tiny"])
def test_bit_identical_to_the_kernel_formula(tiny):
    p0, grads = _inputs(tiny)
    ps = [mge.Parameter(p.copy()) for p in p0]
    opt = ex.AdamWeightDecay([{"params": [p], **h} for p, h in zip(ps, GROUPS)], betas=BETAS, eps=EPS)
    want = _kernel(p0, grads)
    for k, gs in enumerate(grads):
        for p, g in zip(ps, gs):
            p.grad = mge.tensor(g)
        opt.step()
        for p, w in zip(ps, want[k]):
            np.testing.assert_array_equal(p.numpy(), w)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(want[-1], p0)) > (1e-4 if tiny else 1e-2)


def test_to_megengine_runs_a_mindspore_plan():
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "AdamWeightDecay", "lr": 0.01, "weight_decay": 0.01},
                           "groups": [{"name": "all", "params": ["*"]}],
                           "schedule": {"lr": {"kind": "cosine", "steps": 10}}})
    w = mge.Parameter(np.ones(3, np.float32))
    setup = optbridge.to_megengine(plan, {"w": w})
    assert isinstance(setup.optimizer, ex.AdamWeightDecay)
    expected = optbridge.trace(plan, 10).data["lr"][0]
    seen = []
    for _ in range(10):
        seen.append(setup.optimizer.param_groups[0]["lr"])
        w.grad = mge.tensor(np.ones(3, np.float32))
        setup.optimizer.step()
        setup.scheduler.step()
    np.testing.assert_allclose(seen, expected, rtol=1e-12, atol=0)
    assert any("AdamWeightDecay" in f.detail for f in setup.fidelity if f.hyper == "optimizer")


def test_bad_hyperparameters_are_config_errors():
    with pytest.raises(ConfigError) as info:
        ex.AdamWeightDecay([mge.Parameter(np.zeros(2, np.float32))], betas=(0.9, 1.0))
    assert info.value.path.endswith("betas[1]")


def test_port_builds_it(tmp_path):
    import importlib.util

    from optbridge.port import port
    cfg = tmp_path / "awd.yaml"
    cfg.write_text("optbridge: 1\noptimizer: {type: AdamWeightDecay, lr: 0.001, weight_decay: 0.01}\n"
                   "groups: [{name: all, params: ['*']}]\ntotal_steps: 10\nschedule: {lr: {kind: cosine, steps: 10}}\n")
    res = port(cfg, "megengine", out=tmp_path / "out")
    spec = importlib.util.spec_from_file_location("optim_awd_mge", res.module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import megengine.module as M
    setup = mod.build(M.Linear(3, 2))
    assert type(setup.optimizer) is ex.AdamWeightDecay
