"""Every node kind, in every MindSpore form that supports it: the lr MindSpore applies equals the reference.

``applied`` is measured in a real MindSpore training step: plain SGD, gradient 1
(PyNative: the optimizer called with the gradients; GRAPH: ``nn.TrainOneStepCell``
over ``loss = sum(probes)``), the float32 probe reset to 0 with ``ops.assign``
before each step, so ``applied = -p`` is exactly the float32 lr the kernel used.

Tolerance rules (``ulp`` = float32 spacing; ``r`` = the reference rounded to
float32, ``M`` = the largest ``|reference|`` of the group):

* list form: ``applied == r`` exactly (float32 storage of the reference's value);
* cell form, generated cells (float64 ops throughout, sequences and chains included):
  ``|applied - r| <= 1 ulp(r)`` (one float32 rounding of a float64 value that may differ
  from the reference's by a few float64 ulps: a double rounding may land one ulp off);
* cell form, table cells: exact;
* cell form, native MindSpore cells: float32 arithmetic,
  ``|applied - r| <= rel * ulp(r) + abs * ulp(M)`` with ``(rel, abs)`` from
  ``mindspore_cells.NATIVE_BOUNDS`` (measured maxima: WarmUpLR 1, CosineDecayLR 3.25,
  PolynomialDecayLR 2, InverseDecayLR 1, ExponentialDecayLR 0); native cells are used
  only for a whole schedule, never inside a generated composition;
* experimental form, driver: exact; native lr_scheduler classes: float32
  recursion, ``|applied_k - r_k| <= (k + 4) * 2**-21 * M`` (the drift grows at most
  linearly with the number of float32 multiplications).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mindspore")

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan  # noqa: E402
from optbridge_adapters.mindspore.cells import NATIVE_BOUNDS  # noqa: E402

N = 120
SPE = 10

NODES: dict[str, ir.Node] = {
    "constant": ir.Constant(factor=0.5, steps=10),
    "linear": ir.Linear(start_factor=0.1, end_factor=1.0, steps=50),
    "warmup0": ir.Linear(start_factor=0.0, end_factor=1.0, steps=50),
    "exponential": ir.Exponential(gamma=0.97),
    "step": ir.Exponential(gamma=0.5, every=30, stair=True),
    "exp_every": ir.Exponential(gamma=0.9, every=7),
    "multistep": ir.MultiStep(milestones=(30, 80, 80), gamma=0.5),
    "natural_exp": ir.NaturalExp(rate=0.02, every=5, stair=True),
    "inverse_time": ir.InverseTime(rate=0.1, every=3),
    "polynomial": ir.Polynomial(steps=100, power=2.0, end=0.0),
    "poly_cycle": ir.Polynomial(steps=50, power=0.5, end=1e-4, cycle=True),
    "cosine": ir.Cosine(steps=50, end=1e-3),
    "cosine_clamp": ir.Cosine(steps=60, end=1e-3, clamp=True),
    "restarts": ir.CosineRestarts(period=10, mult=2, end=1e-4),
    "cyclic": ir.Cyclic(high=0.5, step_size_up=15, step_size_down=25, mode="triangular2"),
    "one_cycle": ir.OneCycle(total_steps=N, three_phase=True),
    "lambda": ir.Lambda(expr="0.95 ** (epoch // 3) if epoch > 10 else min(1, (epoch + 1) / 10)"),
    "multiplicative": ir.Multiplicative(expr="0.98"),
    "table": ir.Table(values=tuple(float(x) for x in np.linspace(1.0, 0.01, N)), relative=True),
    "piecewise": ir.Piecewise(boundaries=(40, 90), values=(0.1, 0.01, 0.001)),
    "sequence": ir.Sequence(parts=(ir.Linear(start_factor=0.1, steps=20), ir.Cosine(steps=100)), boundaries=(20,)),
    "chain": ir.Chain(parts=(ir.Exponential(gamma=0.99), ir.Linear(start_factor=0.5, steps=20))),
    "epoch_cosine": ir.Cosine(steps=8, clamp=True, unit="epoch"),
    "epoch_step": ir.Exponential(gamma=0.5, every=3, stair=True, unit="epoch"),
    "epoch_warmup_seq": ir.Sequence(parts=(ir.Linear(start_factor=0.0, end_factor=1.0, steps=2, unit="epoch"),
                                           ir.Cosine(steps=10, clamp=True, unit="epoch")), boundaries=(20,)),
}


def _plan(nodes: dict[str, ir.Node], total: int = N) -> Plan:
    """One SGD optimizer per node, each with two groups (lr 0.1 and 0.013) sharing the node."""
    opts = tuple(OptimizerSpec(type="SGD", name=k, options={"lr": 0.1},
                               groups=(Group(name=f"{k}/a", schedule={"lr": v}),
                                       Group(name=f"{k}/b", options={"lr": 0.013}, schedule={"lr": v})))
                 for k, v in nodes.items())
    return Plan(optimizers=opts, steps_per_epoch=SPE, total_steps=total)


PLAN = _plan(NODES)
REF = optbridge.trace(PLAN, N)["lr"]
R32 = REF.astype(np.float32).astype(np.float64)


def _ulp(x: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(x).astype(np.float32)).astype(np.float64)


def _allowed(form: str, detail: str, ref: np.ndarray) -> np.ndarray:
    """The tolerance of the module docstring for one group's trace, per step."""
    r32 = ref.astype(np.float32).astype(np.float64)
    M = np.abs(ref).max()
    if form == "table":
        return np.zeros(ref.size)
    if "lr_scheduler" in detail:  # experimental native schedulers: float32 state and recursion
        return (np.arange(ref.size) + 4) * 2.0**-21 * M
    if form == "generated":
        assert "nn." not in detail, detail  # no MindSpore cell inside a generated one
        return _ulp(r32)
    natives = [c for c in NATIVE_BOUNDS if f"nn.{c}(" in detail]
    assert form == "native" and len(natives) == 1, (form, detail)
    rel = max(1, *(NATIVE_BOUNDS[c][0] for c in natives))
    ab = max(NATIVE_BOUNDS[c][1] for c in natives)
    return rel * _ulp(r32) + ab * _ulp(np.float32(M))


def _check(tr: optbridge.Trace, *, expect: dict[str, str] | None = None) -> dict[str, str]:
    assert tr.groups == tuple(g.name for g in PLAN.groups)
    forms = {}
    for i, g in enumerate(tr.groups):
        (f,) = [f for f in tr.fidelity if f.group == g and f.hyper == "lr"]
        forms[g] = f.form
        allowed = _allowed(f.form, f.detail, REF[i])
        for what, got in (("applied", tr.applied["lr"][i]), ("data", tr["lr"][i])):
            err = np.abs(got - R32[i])
            bad = np.nonzero(err > allowed)[0]
            assert bad.size == 0, (f"{tr.backend} {g} {what} ({f.form}: {f.detail}): step {bad[0]}: got "
                                   f"{got[bad[0]]!r}, float32(ref) {R32[i][bad[0]]!r}, allowed {allowed[bad[0]]:.3g}")
    if expect:
        for g, form in expect.items():
            assert forms[g] == form, (g, forms[g], form)
    return forms


def test_list_form_is_exact() -> None:
    tr = optbridge.trace(PLAN, N, backend="mindspore-list")
    np.testing.assert_array_equal(tr.applied["lr"], R32)
    np.testing.assert_array_equal(tr["lr"], R32)
    assert {f.form for f in tr.fidelity} == {"table"}


GRAPH_NODES = ("warmup0", "cosine_clamp", "one_cycle", "lambda", "multiplicative", "sequence", "epoch_warmup_seq")


@pytest.mark.parametrize("form", ["list", "cell"])
def test_graph_mode(form: str) -> None:
    """GRAPH mode: nn.TrainOneStepCell(sum of probes, optimizer), native, generated and table cells."""
    plan = _plan({k: NODES[k] for k in GRAPH_NODES})
    rows = [i for i, g in enumerate(PLAN.groups) if g.name.split("/")[0] in GRAPH_NODES]
    tr = optbridge.trace(plan, N, backend=f"mindspore-{form}", mode="graph")
    if form == "list":
        np.testing.assert_array_equal(tr.applied["lr"], R32[rows])
    else:
        forms = _check_against(tr, REF[rows], plan)
        assert forms == {"warmup0": "native", "cosine_clamp": "native", "one_cycle": "generated",
                         "lambda": "generated", "multiplicative": "table", "sequence": "generated",
                         "epoch_warmup_seq": "generated"}


def test_cell_form() -> None:
    tr = optbridge.trace(PLAN, N, backend="mindspore-cell")
    forms = _check(tr, expect={"warmup0/a": "native", "cosine_clamp/a": "native", "polynomial/a": "native",
                               "inverse_time/a": "native", "step/a": "native", "multiplicative/a": "table",
                               "one_cycle/a": "generated", "lambda/a": "generated", "sequence/a": "generated",
                               "epoch_cosine/a": "native", "exponential/a": "generated"})
    assert set(forms.values()) == {"native", "generated", "table"}


# The experimental optimizers cost a few ms per group and step in PyNative: a shorter run, with every
# lr_scheduler class optbridge maps (one optimizer per node, two groups sharing it) and a few driver cases.
N_EXP = 60
EXP_NODES: dict[str, ir.Node] = {
    "constant": ir.Constant(factor=0.5, steps=10),
    "linear": ir.Linear(start_factor=0.1, end_factor=1.0, steps=25),
    "exponential": ir.Exponential(gamma=0.97),
    "step": ir.Exponential(gamma=0.5, every=15, stair=True),
    "multistep": ir.MultiStep(milestones=(15, 40, 40), gamma=0.5),
    "polynomial": ir.Polynomial(steps=50, power=2.0, end=0.0),
    "cosine": ir.Cosine(steps=25, end=1e-3),
    "restarts": ir.CosineRestarts(period=5, mult=2, end=1e-4),
    "cyclic": ir.Cyclic(high=0.5, step_size_up=8, step_size_down=12, mode="exp_range", gamma=0.99),
    "lambda": ir.Lambda(expr="0.95 ** (epoch // 3) if epoch > 10 else min(1, (epoch + 1) / 10)"),
    "multiplicative": ir.Multiplicative(expr="0.98"),
    "sequence": ir.Sequence(parts=(ir.Linear(start_factor=0.1, steps=10), ir.Cosine(steps=50)), boundaries=(10,)),
    "epoch_step": ir.Exponential(gamma=0.5, every=3, stair=True, unit="epoch"),
    # no lr_scheduler computes these as the plan does: the driver assigns the reference's values
    "warmup0": ir.Linear(start_factor=0.0, end_factor=1.0, steps=25),
    "one_cycle": ir.OneCycle(total_steps=N_EXP),
    "seq_multistep": ir.Sequence(parts=(ir.Constant(factor=0.1, steps=5), ir.MultiStep(milestones=(5,))),
                                 boundaries=(10,)),
}


def _plan_one_group(nodes: dict[str, ir.Node], total: int) -> Plan:
    """One SGD optimizer per node with one group (MindSpore compiles the experimental SGD once per group)."""
    opts = tuple(OptimizerSpec(type="SGD", name=k, options={"lr": 0.1 if i % 2 else 0.013},
                               groups=(Group(name=f"{k}/a", schedule={"lr": v}),))
                 for i, (k, v) in enumerate(nodes.items()))
    return Plan(optimizers=opts, steps_per_epoch=SPE, total_steps=total)


def _check_against(tr: optbridge.Trace, ref: np.ndarray, plan: Plan) -> dict[str, str]:
    r32 = ref.astype(np.float32).astype(np.float64)
    forms = {}
    for i, g in enumerate(tr.groups):
        (f,) = [f for f in tr.fidelity if f.group == g and f.hyper == "lr"]
        forms[g.split("/")[0]] = f.form
        allowed = _allowed(f.form, f.detail, ref[i])
        for what, got in (("applied", tr.applied["lr"][i]), ("data", tr["lr"][i])):
            bad = np.nonzero(np.abs(got - r32[i]) > allowed)[0]
            assert bad.size == 0, (f"{tr.backend} {g} {what} ({f.form}: {f.detail}): step {bad[0]}: got "
                                   f"{got[bad[0]]!r}, float32(ref) {r32[i][bad[0]]!r}, allowed {allowed[bad[0]]:.3g}")
    return forms


def test_experimental_form_native_schedulers() -> None:
    plan = _plan_one_group(EXP_NODES, total=N_EXP)
    ref = optbridge.trace(plan, N_EXP)["lr"]
    tr = optbridge.trace(plan, N_EXP, backend="mindspore-experimental")
    forms = _check_against(tr, ref, plan)
    driven = {"warmup0", "one_cycle", "seq_multistep", "lambda"}  # LambdaLR would only add a float32 rounding
    assert {k for k, f in forms.items() if f == "table"} == driven
    assert all(forms[k] == "native" for k in EXP_NODES if k not in driven)


def test_experimental_form_graph_mode() -> None:
    """GRAPH mode: nn.TrainOneStepCell over the experimental optimizer, native schedulers and a driver."""
    plan = _plan({k: EXP_NODES[k] for k in ("sequence", "cyclic", "one_cycle")}, total=N_EXP)
    ref = optbridge.trace(plan, N_EXP)["lr"]
    forms = _check_against(optbridge.trace(plan, N_EXP, backend="mindspore-experimental", mode="graph"), ref, plan)
    assert forms == {"sequence": "native", "cyclic": "native", "one_cycle": "table"}


def test_experimental_form_driver_is_exact() -> None:
    """scheduler="driver": every node kind the driver serves, one optimizer with a group per node."""
    kinds = ("exponential", "one_cycle", "epoch_cosine", "natural_exp", "inverse_time", "piecewise", "chain",
             "multiplicative")
    groups = tuple(Group(name=k, options={"lr": 0.1 / (i + 1)}, schedule={"lr": NODES[k]}) for i, k in enumerate(kinds))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=groups),), steps_per_epoch=SPE,
                total_steps=N_EXP)
    tr = optbridge.trace(plan, N_EXP, backend="mindspore-experimental", scheduler="driver")
    assert {f.form for f in tr.fidelity} == {"table"}
    ref = optbridge.trace(plan, N_EXP)["lr"].astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(tr.applied["lr"], ref)
    np.testing.assert_array_equal(tr["lr"], ref)


def test_plateau_runs_in_every_form() -> None:
    """experimental form: MindSpore's ReduceLROnPlateau (float32 best: metrics exact in float32 here); list and cell
    forms (and scheduler='driver'): the reference's plateau written into a Parameter, exactly float32(ref)."""
    node = ir.Plateau(factor=0.5, patience=3, threshold=0.01, cooldown=2, min_value=1e-3)
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a"), Group(name="b", options={"lr": 0.02}))),), schedule={"lr": node})
    rs = np.random.RandomState(0)
    metrics = np.concatenate([np.linspace(1, 0.5, 20), 0.5 + rs.rand(60) * 0.1])
    metrics = metrics.astype(np.float32).astype(np.float64)
    ref = optbridge.trace(plan, 80, metrics=metrics)["lr"]
    assert len(np.unique(ref[0])) >= 4  # the plateau did reduce
    tr = optbridge.trace(plan, 80, backend="mindspore-experimental", metrics=metrics)
    assert [f.form for f in tr.fidelity] == ["native", "native"]
    np.testing.assert_allclose(tr.applied["lr"], ref, rtol=3e-7, atol=0)
    for backend, opts in (("mindspore-list", {}), ("mindspore-cell", {}), ("mindspore-experimental",
                                                                         {"scheduler": "driver"})):
        tr = optbridge.trace(plan, 80, backend=backend, metrics=metrics, **opts)
        assert [f.form for f in tr.fidelity] == ["table", "table"]
        np.testing.assert_array_equal(tr.applied["lr"], ref.astype(np.float32))


def test_plateau_imported_mid_run_continues_exactly_on_the_driver() -> None:
    """A plateau with state (from torch mid-run): MindSpore's ReduceLROnPlateau starts fresh, so the driver runs
    the reference's plateau from that state."""
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),),
                schedule={"lr": ir.Plateau(patience=2, best=0.5, bad_steps=1)})
    metrics = [1.0, 1.0, 0.4, 0.6, 0.6, 0.6]
    ref = optbridge.trace(plan, 6, metrics=metrics)["lr"]
    tr = optbridge.trace(plan, 6, backend="mindspore-experimental", metrics=metrics)
    assert [f.form for f in tr.fidelity] == ["table"]
    np.testing.assert_array_equal(tr.applied["lr"], ref.astype(np.float32))
    fresh = optbridge.trace(Plan(optimizers=plan.optimizers, schedule={"lr": ir.Plateau(patience=2)}), 6,
                            metrics=metrics)["lr"]
    assert not np.array_equal(ref, fresh)  # the imported state mattered


EMPTY_GROUP_PLAN = """
optbridge: 1
step_unit: iter
total_steps: 5
optimizer: {type: SGD, lr: 0.1}
groups:
  - {name: lora, empty: true, lr: 0.5}     # torch keeps a group without parameters (an empty LoRA group)
  - {name: rest, params: rest}
schedule:
  lr: {kind: linear, start_factor: 1.0, end_factor: 0.5, steps: 5}
"""


@pytest.mark.parametrize("form", ["list", "cell", "experimental"])
def test_a_group_without_parameters_is_left_out_and_said(form: str) -> None:
    """MindSpore refuses an empty group ("group `params` must not be empty"); to_mindspore leaves it out, says so,
    and the other group applies the reference lr (plain SGD, gradient 1: the change is -float32(lr))."""
    import mindspore as ms
    from mindspore import nn
    plan = optbridge.loads(EMPTY_GROUP_PLAN)
    net = nn.Dense(3, 2)
    setup = optbridge.to_mindspore(plan, net, form=form)
    assert setup.groups == ("rest",) and "groups without parameters left out ('lora')" in setup.report
    want = optbridge.trace(plan, 5)["lr"][1]
    for k in range(5):
        w0 = net.weight.asnumpy().copy()
        setup.optimizer(tuple(ms.Tensor(np.ones(p.shape, np.float32)) for p in setup.optimizer.parameters))
        setup.step()
        if form != "experimental":  # float32 p - lr * 1 with the reference lr rounded once
            assert np.array_equal(net.weight.asnumpy(), w0 - np.float32(want[k])), (form, k)
        else:  # MindSpore's LinearLR: a float32 recursion (docs/mindspore.md), within 4 ulps of |w| <= 1
            np.testing.assert_allclose(w0 - net.weight.asnumpy(), want[k], rtol=0, atol=4 * np.spacing(np.float32(1)))
