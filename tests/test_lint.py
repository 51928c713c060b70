"""Porting traps (optbridge.lint): each lint fires on a case and stays quiet on the fixed case.

Where a lint states a size, the test measures the same effect in the real framework
(torch 2.13 or MindSpore 2.10) and compares: the parameter change of plain SGD with
gradient 1 (the parameter reset to 0 first), a scheduler's lr, a cell's value.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import optbridge
from optbridge import ir
from optbridge.cli import main
from optbridge.lint import CODES, Lint, LintWarning, lint, native_lints
from optbridge.plan import Group, OptimizerSpec, Plan, Selector

torch = pytest.importorskip("torch")


def _plan(kind: str = "SGD", schedule: dict | None = None, total: int | None = 100, groups: tuple = (),
          **options: object) -> Plan:
    return Plan(optimizers=(OptimizerSpec(type=kind, options=options, groups=groups),), schedule=schedule or {},
                total_steps=total)


def _codes(plan: Plan, **kw: object) -> dict[str, Lint]:
    found = lint(plan, **kw)  # type: ignore[arg-type]
    assert all(x.code in CODES for x in found)
    return {x.code: x for x in found}


def _group(name: str, **options: object) -> Group:
    return Group(name=name, select=(Selector(names=(f"{name}.*",)),), options=options)


def _torch_applied(lr: float, dtype: torch.dtype = torch.float32) -> float:
    """The lr real torch SGD applies: -(change of a parameter reset to 0 with gradient 1)."""
    p = torch.nn.Parameter(torch.zeros(2, dtype=dtype))
    o = torch.optim.SGD([p], lr=lr)
    p.grad = torch.ones(2, dtype=dtype)
    o.step()
    return -float(p.detach()[0])


# --------------------------------------------------------------------------- schedule traps

def test_floor_at_or_above_a_groups_base() -> None:
    groups = (_group("head"), _group("frozenish", lr=1e-6))
    fires = _plan("SGD", {"lr": ir.Cosine(steps=100, end=1e-5)}, groups=groups, lr=0.1)
    x = _codes(fires)["floor-above-base"]
    assert x.path == "schedule.lr.end" and "'frozenish'" in x.message and "'head'" not in x.message
    assert x.size == pytest.approx(1e-5 / 1e-6, rel=1e-15)
    # torch's CosineAnnealingLR(eta_min=1e-5) really takes that group's lr from 1e-6 up to the floor
    tr = optbridge.trace(fires, 100, backend="torch")
    assert tr["lr"][1, 0] == 1e-6 and tr["lr"][1, 99] > 9.9e-6
    quiet = _plan("SGD", {"lr": ir.Cosine(steps=100, end=1e-7)}, groups=groups, lr=0.1)
    assert "floor-above-base" not in _codes(quiet)
    # plateau min_value at the base: never decays
    assert "floor-above-base" in _codes(_plan("SGD", {"lr": ir.Plateau(min_value=0.1)}, lr=0.1))
    assert "floor-above-base" not in _codes(_plan("SGD", {"lr": ir.Plateau(min_value=0.01)}, lr=0.1))


def test_float32_underflow_of_the_lr() -> None:
    # 1e-30 * 0.5**k falls below float32's smallest normal 2**-126 at k = 27 (7.45e-39) and reaches 0 in float32
    x = _codes(_plan("SGD", {"lr": ir.Exponential(gamma=0.5)}, lr=1e-30))["float32-underflow"]
    assert "from update 27" in x.message and x.size == 1.0
    # 1e-3 * 0.5**99 = 1.6e-33 stays normal
    assert "float32-underflow" not in _codes(_plan("SGD", {"lr": ir.Exponential(gamma=0.5)}, lr=1e-3))
    # the size of a subnormal lr is the precision real torch loses on a float32 parameter
    x = _codes(_plan("SGD", {"lr": ir.Table(values=(1e-3, 1e-40), hold=True)}, total=4, lr=1.0))["float32-underflow"]
    applied = _torch_applied(1e-40)
    assert x.size == abs(applied - 1e-40) / 1e-40
    assert 5e-6 < x.size < 6e-6  # semantics.md section 6: 1e-40 stores with 5.4e-6 relative error
    assert _torch_applied(1e-46) == 0.0  # below half the smallest subnormal: no update at all


def test_mindspore_static_group_lr_beside_a_dynamic_one() -> None:
    ms = pytest.importorskip("mindspore")
    from mindspore import Parameter, Tensor, nn
    groups = (Group(name="sched", select=(Selector(names=("a",)),), schedule={"lr": ir.Exponential(gamma=0.9)}),
              Group(name="static", select=(Selector(names=("b",)),), options={"lr": 1e-6}))
    x = _codes(_plan("SGD", groups=groups, lr=0.1), frameworks=("mindspore",))["mindspore-static-lr"]
    assert x.path == "groups[1].lr" and x.frameworks == ("mindspore",)
    # real MindSpore 2.10 nn.SGD: a list lr for one group, a float for the other
    ms.set_context(mode=ms.PYNATIVE_MODE)
    a, b = Parameter(Tensor(np.zeros(1, np.float32)), name="a"), Parameter(Tensor(np.zeros(1, np.float32)), name="b")
    o = nn.SGD([{"params": [a], "lr": [0.1, 0.09]}, {"params": [b], "lr": 1e-6}], learning_rate=0.1)
    o((Tensor(np.ones(1, np.float32)), Tensor(np.ones(1, np.float32))))
    applied = -float(b.asnumpy()[0])
    assert x.size == abs(applied - 1e-6) / 1e-6  # 9.5367e-7: 4.6 %, as semantics.md section 6 measured
    assert f"is applied as {applied!r}" in x.message
    # every group dynamic (what to_mindspore builds), or every group static: nothing to say
    dyn = (groups[0], Group(name="static", select=(Selector(names=("b",)),), options={"lr": 1e-6},
                            schedule={"lr": ir.Constant()}))
    assert "mindspore-static-lr" not in _codes(_plan("SGD", groups=dyn, lr=0.1))
    assert "mindspore-static-lr" not in _codes(_plan("SGD", groups=(groups[1], _group("c")), lr=0.1))


def test_float32_step_counters_past_2_pow_24() -> None:
    ms = pytest.importorskip("mindspore")
    n = 2**25
    x = _codes(_plan("SGD", {"lr": ir.Linear(start_factor=0.0, steps=n)}, total=n, lr=0.1), values=False)[
        "float32-step"]
    # float32 counts every integer up to 2**24, every second one up to 2**25: errors up to 1 update
    k = np.arange(n - 8, n, dtype=np.int64)
    assert x.size == float(np.max(np.abs(k.astype(np.float32).astype(np.float64) - k))) == 1.0
    # MindSpore's WarmUpLR cell casts global_step to float32: two consecutive updates past 2**24 share a value
    cell = ms.nn.WarmUpLR(1.0, n)
    v = [float(cell(ms.Tensor(np.array([s], np.int32))).asnumpy().reshape(-1)[0])
         for s in (2**24, 2**24 + 1, 2**24 + 2)]
    assert v[0] == v[1] < v[2]
    assert "float32-step" not in _codes(_plan("SGD", {"lr": ir.Linear(start_factor=0.0, steps=2**24)}, total=2**24,
                                              lr=0.1), values=False)


def test_cosine_traced_past_its_steps() -> None:
    fires = _plan("SGD", {"lr": ir.Cosine(steps=100)}, total=150, lr=0.1)
    x = _codes(fires)["cosine-past-tmax"]
    tr = optbridge.trace(fires, 150, backend="torch")  # torch's CosineAnnealingLR climbs back
    assert x.size == pytest.approx(tr["lr"][0, 149] - tr["lr"][0, 100], rel=1e-12, abs=1e-17)
    assert x.size > 0.04
    assert "cosine-past-tmax" not in _codes(_plan("SGD", {"lr": ir.Cosine(steps=100, clamp=True)}, total=150, lr=0.1))
    assert "cosine-past-tmax" not in _codes(_plan("SGD", {"lr": ir.Cosine(steps=100)}, total=100, lr=0.1))
    # inside a sequence the part's own span counts: cosine over 90 updates after a warmup of 10, 100 in all
    seq = ir.Sequence(parts=(ir.Linear(start_factor=0.1, steps=10), ir.Cosine(steps=90)), boundaries=(10,))
    assert "cosine-past-tmax" not in _codes(_plan("SGD", {"lr": seq}, total=100, lr=0.1))
    assert _codes(_plan("SGD", {"lr": seq}, total=120, lr=0.1))["cosine-past-tmax"].path == "schedule.lr.parts[1]"


def test_one_cycle_run_to_total_steps() -> None:
    fires = _plan("SGD", {"lr": ir.OneCycle(total_steps=100)}, total=101, lr=0.1)
    x = _codes(fires)["one-cycle-extrapolates"]
    # real torch OneCycleLR(max_lr=0.1, total_steps=100): the 101st update's lr
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100, cycle_momentum=False)
    for _ in range(100):
        opt.step()
        sched.step()
    final = 0.1 / 25 / 1e4
    assert x.size == pytest.approx(abs(opt.param_groups[0]["lr"] - final), rel=1e-12)
    assert "one-cycle-extrapolates" not in _codes(_plan("SGD", {"lr": ir.OneCycle(total_steps=100)}, total=100,
                                                        lr=0.1))


def test_natural_exp_every_ignored_without_stair() -> None:
    ms = pytest.importorskip("mindspore")
    fires = _plan("SGD", {"lr": ir.NaturalExp(rate=0.5, every=10)}, total=10, lr=0.1)
    x = _codes(fires)["natural-exp-every"]
    # at the last update, k = 9: code exp(-0.5 * 9) vs docstring exp(-0.5 * 9 / 10): 1 - exp(-4.05)
    assert x.size == pytest.approx(1 - math.exp(-4.05), rel=1e-12)
    # MindSpore's own list computes the code's formula: every (decay_epoch) is ignored
    got = ms.nn.natural_exp_decay_lr(0.1, 0.5, 10, 1, 10)
    np.testing.assert_allclose(got, optbridge.trace(fires)["lr"][0], rtol=1e-12)
    assert "natural-exp-every" not in _codes(_plan("SGD", {"lr": ir.NaturalExp(rate=0.5, every=10, stair=True)},
                                                   total=10, lr=0.1))
    assert "natural-exp-every" not in _codes(_plan("SGD", {"lr": ir.NaturalExp(rate=0.05)}, total=10, lr=0.1))


def test_plateau_whose_reduction_is_below_eps() -> None:
    x = _codes(_plan("SGD", {"lr": ir.Plateau(factor=0.5, patience=0)}, total=None, lr=1e-9))["plateau-eps"]
    assert x.size == 0.5 and x.path == "schedule.lr.eps"
    # real torch: lr 1e-9 never moves, whatever the metric says
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-9)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    for _ in range(10):
        sched.step(1.0)
    assert opt.param_groups[0]["lr"] == 1e-9
    assert "plateau-eps" not in _codes(_plan("SGD", {"lr": ir.Plateau(factor=0.5, patience=0)}, total=None,
                                             lr=1e-3))


# --------------------------------------------------------------------------- optimizer traps

def test_native_optimizer_traps_per_framework() -> None:
    nesterov = _plan("SGD", lr=0.1, momentum=0.9, nesterov=True)
    found = [x for x in lint(nesterov) if x.code == "native-update"]
    assert [(x.frameworks, x.size) for x in found] == [(("mindspore",), 0.719)]
    assert "nn.Momentum" in found[0].message
    assert not [x for x in lint(_plan("SGD", lr=0.1, momentum=0.9)) if x.code == "native-update"]
    # MegEngine's SGD has no dampening
    damp = [x for x in lint(_plan("SGD", lr=0.1, momentum=0.9, dampening=0.5), frameworks=("megengine",))
            if x.code == "native-update"]
    assert len(damp) == 1 and damp[0].size == 5.5e6 and "no dampening" in damp[0].message
    # the frameworks filter
    assert not [x for x in lint(nesterov, frameworks=("torch",)) if x.code == "native-update"]


def test_adamweightdecay_is_not_torch_adamw() -> None:
    x = _codes(_plan("AdamWeightDecay", lr=1e-3))["not-torch-adamw"]
    assert x.size == 0.876 and x.frameworks == ("torch", "megengine")
    assert "not-torch-adamw" not in _codes(_plan("AdamW", lr=1e-3))


def test_native_lints_for_imported_optimizers_use_the_measured_tables() -> None:
    plan = _plan("SGD", lr=0.1, momentum=0.9, nesterov=True)
    (x,) = native_lints("mindspore", "nn.Momentum", plan)
    assert x.size == 0.719 and "use_nesterov ignored" in x.message
    assert native_lints("mindspore", "nn.SGD", plan) == ()
    assert native_lints("mindspore", None, plan) == ()
    (y,) = native_lints("megengine", "megengine.optimizer.Adagrad", _plan("Adagrad", lr=0.1))
    assert "eps inside the square root" in y.message
    assert native_lints("megengine", "megengine.optimizer.SGD", _plan("SGD", lr=0.1, momentum=0.9)) == ()


def test_from_mindspore_warns_about_native_optimizers_that_differ() -> None:
    ms = pytest.importorskip("mindspore")
    from mindspore import Parameter, Tensor, nn
    from mindspore.experimental import optim as mopt
    ms.set_context(mode=ms.PYNATIVE_MODE)

    def params() -> list:
        return [Parameter(Tensor(np.zeros(2, np.float32)), name="w")]

    def warned(opt: object) -> list[Lint]:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            optbridge.from_mindspore(opt)
        return [w.message.lint for w in got if isinstance(w.message, LintWarning)]

    (x,) = warned(nn.Momentum(params(), learning_rate=0.1, momentum=0.9, use_nesterov=True))
    assert (x.code, x.size, x.path) == ("native-update", 0.719, "optimizer")
    assert warned(nn.Momentum(params(), learning_rate=0.1, momentum=0.9)) == []
    assert warned(nn.SGD(params(), learning_rate=0.1, momentum=0.9, nesterov=True)) == []
    (a,) = warned(nn.Adam(params(), learning_rate=1e-3))
    assert a.size == 6.92e-2 and "eps-hat" in a.message
    (w,) = warned(nn.AdamWeightDecay(params(), learning_rate=1e-3))
    assert w.size == 0.876 and "no bias correction" in w.message
    eps_hat, amsgrad = warned(mopt.Adam(params(), lr=1e-3, amsgrad=True))  # the same ops.Adam kernel, plus:
    assert eps_hat.size == 6.92e-2 and amsgrad.size == 1.58e-5 and "amsgrad ignored" in amsgrad.message
    assert warned(mopt.AdamW(params(), lr=1e-3)) == []
    # an imported static group lr beside a dynamic one
    a_, b_ = Parameter(Tensor(np.zeros(1, np.float32)), name="a"), Parameter(Tensor(np.zeros(1, np.float32)), name="b")
    (s,) = warned(nn.SGD([{"params": [a_], "lr": [0.1, 0.09]}, {"params": [b_], "lr": 1e-6}], learning_rate=0.1))
    assert s.code == "mindspore-static-lr"


# --------------------------------------------------------------------------- the CLI

def test_validate_prints_lints_and_strict_fails(tmp_path, capsys) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("optbridge: 1\ntotal_steps: 150\noptimizer: {type: SGD, lr: 0.1, momentum: 0.9, nesterov: true}\n"
                    "schedule: {lr: {kind: cosine, steps: 100}}\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("OK ")
    assert out[1].startswith("  lint: schedule.lr: the cosine reaches its end at update 100")
    assert out[1].endswith("[cosine-past-tmax]") and len(out) == 2  # no framework asked: no native-optimizer lints
    assert main(["validate", "--framework", "mindspore", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[native-update (mindspore)]" in out and "nn.Momentum" in out
    assert main(["validate", "--strict", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == f"optbridge: error: {path}: 1 lint (--strict)"
    # --steps shortens the run: no lint then
    assert main(["validate", "--strict", "--steps", "100", str(path)]) == 0


def test_validate_reports_values_that_cannot_work(tmp_path, capsys) -> None:
    path = tmp_path / "beta.yaml"
    path.write_text("optbridge: 1\ntotal_steps: 10\noptimizer: {type: Adam, lr: 0.1, betas: [0.5, 0.999]}\n"
                    "schedule: {beta1: {kind: linear, start_factor: 1.0, end_factor: 2.0, steps: 4}}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"optbridge: error: {path}: schedule.beta1: beta1 must be in [0, 1)")
    assert "update 4, got 1.0" in err
    assert main(["validate", "--steps", "4", str(path)]) == 0
