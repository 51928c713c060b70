"""The MegEngine 1.13 traps (../shared/reference/semantics.md §3, §5, plus three found here), and how optbridge avoids
them.

Each trap is first shown to be real in plain MegEngine, then shown not to reach a
user of ``to_megengine``. Where MegEngine's own optimizer differs from torch's
(dampening, maximize, amsgrad, Adagrad's eps, no RMSprop ...), ``to_megengine``
runs optbridge's torch-exact class instead (``optimizer="auto"``) and
``optimizer="native"`` refuses with the measured difference.
"""

from __future__ import annotations

import megengine as mge
import megengine.optimizer as mopt
import numpy as np
import pytest
from megengine.core.tensor.utils import set_convert_inputs

from optbridge import ir
from optbridge.errors import UnsupportedError
from optbridge.plan import Clip, Group, OptimizerSpec, Plan, Selector
from optbridge_adapters.megengine import build as mb
from optbridge_adapters.megengine import optimizers as ex
from optbridge_adapters.megengine import patches
from optbridge_adapters.megengine.backend import to_megengine


def P(*values: float) -> mge.Parameter:
    return mge.Parameter(np.asarray(values or (0.0,), np.float32))


def plan_of(type_: str, groups: tuple[Group, ...] = (), schedule: dict | None = None, **options) -> Plan:
    return Plan(optimizers=(OptimizerSpec(type=type_, options=options, groups=groups),), schedule=schedule or {})


def G(name: str, pattern: str, **options) -> Group:
    return Group(name=name, select=(Selector(names=(pattern,)),), options=options)


# --------------------------------------------------------------------------- state is created only in __init__

def test_trap_group_added_later_breaks_step_and_the_process() -> None:
    a, b = P(), P()
    o = mopt.Adam([a], lr=0.1)
    o.add_param_group({"params": [b]})
    a.grad = b.grad = mge.tensor(np.ones(1, np.float32))
    try:
        with pytest.raises(KeyError):
            o.step()
        with pytest.raises(TypeError, match="py_apply expects tensor"):
            mge.tensor(np.ones(2, np.float32)) * 2.0  # every later python-scalar op fails
    finally:
        set_convert_inputs(True)


def test_optbridge_gives_every_group_to_the_constructor(monkeypatch) -> None:
    late = []
    real = mopt.Optimizer.add_param_group

    def spy(self, group):
        late.append(bool(self._state))  # state exists only once __init__ has run _create_state
        return real(self, group)

    monkeypatch.setattr(mopt.Optimizer, "add_param_group", spy)
    params = {f"w{i}": P(1.0, 2.0) for i in range(3)}
    plan = plan_of("SGD", (G("g0", "w0", lr=0.1), G("g1", "w1"), G("g2", "w2", momentum=0.5)), lr=0.01, momentum=0.9)
    setup = to_megengine(plan, params)  # MegEngine's own SGD: its momentum buffers exist only after __init__
    assert type(setup.optimizer) is patches.SGD
    assert late == [False, False, False]
    assert set(setup.optimizer._state) == set(params.values())
    for p in params.values():
        p.grad = mge.tensor(np.ones(2, np.float32))
    setup.optimizer.step()


def test_trap_momentum_buffer_only_for_nonzero_momentum_at_construction() -> None:
    p = P()
    o = mopt.SGD([p], lr=0.1, momentum=0.0)
    o.param_groups[0]["momentum"] = 0.9  # a momentum schedule written by hand
    p.grad = mge.tensor(np.ones(1, np.float32))
    try:
        with pytest.raises(KeyError):
            o.step()
    finally:
        set_convert_inputs(True)


def test_momentum_scheduled_up_from_zero_works() -> None:
    p = P()
    plan = plan_of("SGD", schedule={"momentum": ir.Piecewise(boundaries=(2,), values=(0.0, 0.9))}, lr=0.1, momentum=0.0)
    setup = to_megengine(plan, {"w": p})
    seen = []
    for _ in range(4):
        seen.append(setup.optimizer.param_groups[0]["momentum"])
        p.grad = mge.tensor(np.ones(1, np.float32))
        setup.optimizer.step()
        setup.scheduler.step()
    assert seen == [0.0, 0.0, 0.9, 0.9]
    # torch: momentum 0 leaves no buffer; the first step with momentum starts it at the gradient
    # p: -0.1, -0.2, then buf = 1 -> -0.3, then buf = 1.9 -> -0.49
    np.testing.assert_allclose(p.numpy(), [-0.49], rtol=1e-6)


# --------------------------------------------------------------------------- LAMB's constructor

def test_trap_megengine_lamb_constructor_is_broken() -> None:
    with pytest.raises(TypeError, match="dtype"):
        mopt.LAMB([P()], lr=0.1)


def test_lamb_from_a_plan_builds_and_steps() -> None:
    p = P(1.0, -2.0, 3.0)
    setup = to_megengine(plan_of("LAMB", lr=0.1, weight_decay=0.01), {"w": p})
    assert isinstance(setup.optimizer, mopt.LAMB) and isinstance(setup.optimizer, patches.LAMB)
    before = p.numpy().copy()
    for _ in range(3):
        p.grad = mge.tensor(np.ones(3, np.float32))
        setup.optimizer.step()
    assert float(setup.optimizer._state[p]["step"].numpy()) == 3.0
    assert np.all(p.numpy() != before)


# --------------------------------------------------------------------------- nesterov is per optimizer

def test_groups_that_differ_in_nesterov_are_split() -> None:
    params = {"a": P(1.0), "b": P(1.0), "c": P(1.0)}
    plan = plan_of("SGD", (G("a", "a", nesterov=True), G("b", "b"), G("c", "c", nesterov=True)), lr=0.1, momentum=0.9)
    setup = to_megengine(plan, params)
    assert len(setup.optimizers) == 2 and isinstance(setup.optimizer, mb.MultipleOptimizer)
    assert [o.nesterov for o in setup.optimizers] == [True, False]
    assert setup.groups == {"a": (0, 0), "c": (0, 1), "b": (1, 0)}
    notes = [f for f in setup.fidelity if f.hyper == "nesterov"]
    assert len(notes) == 3 and all("split" in f.detail for f in notes)
    # nesterov is optimizer-wide in MegEngine: a group key would be ignored
    assert all("nesterov" not in g for g in setup.optimizer.param_groups)
    with pytest.raises(UnsupportedError, match="nesterov per optimizer") as e:
        to_megengine(plan, params, split_nesterov=False, optimizer="native")
    assert e.value.node == "groups.b.nesterov"
    # without the split, optbridge's exact SGD keeps nesterov per group, in one optimizer
    one = to_megengine(plan, {n: P(1.0) for n in params}, split_nesterov=False)
    assert type(one.optimizer) is ex.SGD and [g["nesterov"] for g in one.optimizer.param_groups] == [True, False, True]


# --------------------------------------------------------------------------- what MegEngine lacks

@pytest.mark.parametrize("type_, options, exact_cls, match", [
    ("SGD", {"momentum": 0.9, "dampening": 0.1}, ex.SGD, "no dampening"),
    ("SGD", {"maximize": True}, ex.SGD, "maximize"),
    ("Adam", {"amsgrad": True}, ex.Adam, "amsgrad"),
    ("Adam", {}, ex.Adam, "float32 bias corrections"),
    ("AdamW", {"maximize": True}, ex.AdamW, "maximize"),
    ("Adagrad", {}, ex.Adagrad, "eps inside the square root"),
    ("RMSprop", {}, ex.RMSprop, "no RMSprop"),
    ("NAdam", {}, ex.NAdam, "no NAdam"),
])
def test_what_megengine_lacks_runs_on_the_exact_class(type_, options, exact_cls, match) -> None:
    setup = to_megengine(plan_of(type_, **options), {"w": P()})
    assert type(setup.optimizer) is exact_cls
    (note,) = [f for f in setup.fidelity if f.hyper == "optimizer"]
    assert note.form == "generated" and "optbridge_adapters.megengine.optimizers" in note.detail
    assert match in note.detail  # the reason MegEngine's own class is not used
    with pytest.raises(UnsupportedError, match=match) as e:
        to_megengine(plan_of(type_, **options), {"w": P()}, optimizer="native")
    assert e.value.backend == "megengine"
    exact_setup = to_megengine(plan_of(type_, **options), {"w": P()}, optimizer="exact")
    assert type(exact_setup.optimizer) is exact_cls


@pytest.mark.parametrize("type_, mode", [("Lion", "auto"), ("Lion", "native"), ("Lion", "exact"),
                                          ("AdamWeightDecay", "native")])
def test_optimizers_nobody_has_are_clear_errors(type_, mode) -> None:
    with pytest.raises(UnsupportedError, match=f"no {type_} optimizer") as e:
        to_megengine(plan_of(type_), {"w": P()}, optimizer=mode)
    assert e.value.node == "optimizer.type" and e.value.backend == "megengine"


@pytest.mark.parametrize("mode", ["auto", "exact"])
def test_mindspores_adamweightdecay_runs_on_optbridges_class(mode) -> None:
    setup = to_megengine(plan_of("AdamWeightDecay"), {"w": P()}, optimizer=mode)
    assert type(setup.optimizer) is mb.exact.AdamWeightDecay


def test_native_where_megengine_computes_torchs_update() -> None:
    for type_, options in (("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}), ("Adadelta", {})):
        setup = to_megengine(plan_of(type_, **options), {"w": P()})
        assert type(setup.optimizer) is mb.NATIVE_CLASSES[type_][0]
        (note,) = [f for f in setup.fidelity if f.hyper == "optimizer"]
        assert note.form == "native" and "x torch's own float32 error" in note.detail  # the measured size
        assert type(to_megengine(plan_of(type_, **options), {"w": P()}, optimizer="exact").optimizer) is \
            ex.OPTIMIZERS[type_]


def test_dampening_error_names_the_group() -> None:
    plan = plan_of("SGD", (G("head", "w", dampening=0.5),), lr=0.1, momentum=0.9)
    with pytest.raises(UnsupportedError) as e:
        to_megengine(plan, {"w": P()}, optimizer="native")
    assert e.value.node == "groups.head.dampening"


def test_scheduling_a_key_megengine_does_not_keep() -> None:
    plan = plan_of("SGD", schedule={"dampening": ir.Piecewise(boundaries=(2,), values=(0.0, 0.5))}, lr=0.1,
                   momentum=0.9)
    with pytest.raises(UnsupportedError, match="keeps no per-group 'dampening'"):
        to_megengine(plan, {"w": P()}, optimizer="native")
    p = P(0.0)
    setup = to_megengine(plan, {"w": p})  # the exact SGD holds dampening per group
    assert type(setup.optimizer) is ex.SGD
    for k in range(4):
        assert setup.optimizer.param_groups[0]["dampening"] == (0.0 if k < 2 else 0.5)
        p.grad = mge.tensor(np.ones(1, np.float32))
        setup.optimizer.step()
        setup.scheduler.step()
    # torch: buf = 1, 1.9, 0.9*1.9 + 0.5 = 2.21, 0.9*2.21 + 0.5 = 2.489; p = -0.1 * (1 + 1.9 + 2.21 + 2.489)
    np.testing.assert_allclose(p.numpy(), [-0.7599], rtol=1e-6)


def test_adagrad_eps_trap_and_the_exact_class() -> None:
    """MegEngine's Adagrad divides by sqrt(sum + eps): with a 1e-7 gradient it barely moves where torch's rule
    moves by lr. to_megengine runs the exact class, which follows torch."""
    p = P(0.0)
    native = mopt.Adagrad([p], lr=0.1)
    p.grad = mge.tensor(np.full(1, 1e-7, np.float32))
    native.step()
    torch_rule = -0.1 * 1e-7 / (np.sqrt(1e-14) + 1e-10)  # torch: lr * g / (sqrt(sum) + eps) = -0.0999
    assert abs(p.numpy()[0] - torch_rule) > 0.09
    q = P(0.0)
    setup = to_megengine(plan_of("Adagrad", lr=0.1), {"w": q})
    q.grad = mge.tensor(np.full(1, 1e-7, np.float32))
    setup.optimizer.step()
    np.testing.assert_allclose(q.numpy()[0], torch_rule, rtol=1e-6)


def test_adagrad_initial_accumulator_value() -> None:
    p = P(0.0)
    setup = to_megengine(plan_of("Adagrad", lr=0.1, initial_accumulator_value=3.0), {"w": p})
    assert setup.optimizer._state[p]["sum"].numpy()[0] == 3.0
    p.grad = mge.tensor(np.ones(1, np.float32))
    setup.optimizer.step()
    np.testing.assert_allclose(p.numpy()[0], -0.1 * 1 / (np.sqrt(4.0) + 1e-10), rtol=1e-6)


# --------------------------------------------------------------------------- clipping, frozen parameters

def test_per_group_clipping_matches_torch_formulas() -> None:
    a1, a2, b, c, x = P(0, 0, 0), P(0, 0), P(0, 0, 0, 0), P(0, 0), P(0)
    params = {"a1": a1, "a2": a2, "b": b, "c": c, "x": x}
    plan = plan_of("SGD", (
        Group(name="a", select=(Selector(names=("a*",)),), clip=Clip(max_norm=6.5)),
        Group(name="b", select=(Selector(names=("b",)),), clip=Clip(value=1.5)),
        Group(name="c", select=(Selector(names=("c",)),), clip=Clip(max_norm=1.0, norm_type=float("inf"))),
        Group(name="x", select=(Selector(names=("x",)),), frozen="exclude"),
    ), lr=0.1)
    setup = to_megengine(plan, params)
    grads = {"a1": [3.0, 4.0, 0.0], "a2": [0.0, 12.0], "b": [-3.0, -1.0, 0.5, 2.0], "c": [-4.0, 2.0]}
    for n, g in grads.items():
        params[n].grad = mge.tensor(np.asarray(g, np.float32))
    norms = setup.clip_gradients()
    # torch.nn.utils.clip_grad_norm_: total = norm of per-tensor norms; scale = min(max_norm / (total + 1e-6), 1)
    assert norms["a"] == pytest.approx(13.0) and norms["c"] == pytest.approx(4.0) and "b" not in norms
    s = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(a1.grad.numpy(), np.float32([3 * s, 4 * s, 0]), rtol=1e-6)
    np.testing.assert_allclose(a2.grad.numpy(), np.float32([0, 12 * s]), rtol=1e-6)
    np.testing.assert_allclose(c.grad.numpy(), np.float32([-4, 2]) / (4 + 1e-6), rtol=1e-6)
    # torch.nn.utils.clip_grad_value_ is symmetric: [-1.5, 1.5] (MegEngine's lower/upper filled in)
    np.testing.assert_array_equal(b.grad.numpy(), np.float32([-1.5, -1.0, 0.5, 1.5]))
    # the excluded parameter is in neither the optimizer nor the GradManager list
    assert setup.excluded == ("x",)
    assert all(p is not x for p in setup.gradmanager_params)
    assert all(p is not x for g in setup.optimizer.param_groups for p in g["params"])
    assert {id(p) for p in setup.gradmanager_params} == {id(p) for p in (a1, a2, b, c)}


def test_optimizer_level_clip_takes_every_parameter_together() -> None:
    # HF's max_grad_norm / MMEngine's clip_grad: torch.nn.utils.clip_grad_norm_(all parameters, max_norm)
    a, b = P(0, 0), P(0, 0)
    params = {"a": a, "b": b}
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, clip=Clip(max_norm=2.0), groups=(
        Group(name="a", select=(Selector(names=("a",)),), options={"lr": 0.01}),
        Group(name="b", select=(Selector(names=("b",)),)))),))
    setup = to_megengine(plan, params)
    a.grad = mge.tensor(np.float32([3.0, 0.0]))
    b.grad = mge.tensor(np.float32([0.0, 4.0]))
    norms = setup.clip_gradients()
    assert list(norms) == ["optimizer"] and norms["optimizer"] == pytest.approx(5.0)
    s = 2.0 / (5.0 + 1e-6)  # one scale for both groups (per group it would be 2/3 and 2/4)
    np.testing.assert_allclose(a.grad.numpy(), np.float32([3 * s, 0.0]), rtol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), np.float32([0.0, 4 * s]), rtol=1e-6)


# --------------------------------------------------------------------------- state_dict round trip of SGD without momentum

def test_trap_sgd_without_momentum_cannot_load_its_own_state_dict() -> None:
    p = P(1.0)
    o = mopt.SGD([p], lr=0.1)
    with pytest.raises(KeyError):
        mopt.SGD([P(1.0)], lr=0.1).load_state_dict(o.state_dict())


def test_sgd_from_a_plan_loads_its_own_state_dict() -> None:
    plan = plan_of("SGD", (G("plain", "a"), G("heavy", "b", momentum=0.9)), lr=0.1)
    a, b = P(1.0), P(1.0)
    setup = to_megengine(plan, {"a": a, "b": b})
    a.grad = b.grad = mge.tensor(np.ones(1, np.float32))
    setup.optimizer.step()
    state = setup.optimizer.state_dict()
    a2, b2 = P(1.0), P(1.0)
    again = to_megengine(plan, {"a": a2, "b": b2})
    again.optimizer.load_state_dict(state)
    assert set(again.optimizer._state) == {b2}
    np.testing.assert_array_equal(again.optimizer._state[b2]["momentum_buffer"].numpy(), np.ones(1, np.float32))


def test_trap_import_flushes_subnormals_to_zero() -> None:
    """``import megengine`` leaves the process in flush-to-zero mode: float64 subnormals compute as 0.

    Checked in a fresh interpreter, so the state before the import is known.
    """
    import subprocess
    import sys
    # print the "before" result before the import: afterwards even comparing or printing a subnormal reads 0 (DAZ)
    code = ("import numpy as np; a = np.array([1e-310]); print(a[0] * 1.0 != 0.0); import megengine; "
            "print(a[0] * 1.0 == 0.0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout
    assert out.split()[-2:] == ["True", "True"]
