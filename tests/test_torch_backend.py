"""The torch backend against real torch 2.13, for every case of ``test_reference_vs_torch.py``.

Each case (three param groups with different base lrs, 2000 updates) is run natively
in torch once, the way a training loop does (record the group values, ``optimizer.step()``,
``scheduler.step()``), keeping deep copies of the optimizer and schedulers at a few steps.
Then, per case:

* ``from_torch`` of the native objects, traced by the reference evaluator, equals the
  native values (plain Python ``lr_lambda`` functions sampled into tables with a warning;
  ``Lambda`` expressions kept as expressions);
* ``trace(plan, backend="torch")`` (``to_torch``'s objects, stepped natively) equals them,
  and the lr torch applies (plain SGD, gradient 1, float64 parameter reset to 0) equals
  the traced lr exactly;
* ``from_torch`` of the copies taken after ``k`` steps continues exactly where torch does;
* the scheduler's and optimizer's state dicts at step ``k``, loaded into a fresh
  ``to_torch`` setup, continue identically (native forms and the PlanScheduler).

Tolerance: 1e-12 relative at every step, as in test_reference_vs_torch.py (torch's
schedulers are recursive, the reference is closed form; a value torch makes exactly 0
must be exactly 0). Resumed runs must be bit-identical.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.optim import lr_scheduler as S  # noqa: E402

import optbridge  # noqa: E402
import test_reference_vs_torch as tref  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import scheduled_hypers  # noqa: E402
from optbridge_adapters import torch as tb  # noqa: E402
from optbridge_adapters.torch.build import build  # noqa: E402
from optbridge_adapters.torch.drivers import read_hyper  # noqa: E402
from test_reference_vs_torch import CASES, LRS, RTOL, Case  # noqa: E402

IDS = [c.id for c in CASES]


# --------------------------------------------------------------------------- native torch runs

def _objects(case: Case, expr: bool = False) -> tuple[list[Any], Any, Any, bool]:
    """Params, optimizer and scheduler(s) of ``case``; ``expr``: Lambda callables instead of Python lambdas."""
    used = []
    real = tref.lam

    def lam(src: str) -> Any:
        used.append(src)
        return tb.Lambda(src) if expr else real(src)

    params = [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64)) for _ in LRS]
    opt = getattr(torch.optim, case.optimizer)([{"params": [p], "lr": lr} for p, lr in zip(params, LRS)], **case.options)
    tref.lam = lam
    try:
        made = case.make(opt)
    finally:
        tref.lam = real
    return params, opt, made, bool(used)


def _snaps(case: Case) -> tuple[int, ...]:
    spe = case.spe or 1
    return (1, 137, 1000, 1999) if case.unit == "iter" else (spe, 5 * spe)


@functools.lru_cache(maxsize=None)
def native(case_id: str) -> tuple[dict[str, np.ndarray], dict[int, Any]]:
    """The case stepped in torch exactly as ``tref.torch_trace`` does, with deep copies at ``_snaps``.

    Returns ``(values per hyper, {k: ((optimizer, scheduler(s)), metrics used so far)})``.
    """
    case = next(c for c in CASES if c.id == case_id)
    params, opt, made, _ = _objects(case)
    scheds = made if isinstance(made, list) else [(made, case.unit)]
    spe = case.spe or 1
    out = {h: np.zeros((len(LRS), case.steps)) for h in case.hypers}
    snaps, saved, used = set(_snaps(case)), {}, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(case.steps):
            if k in snaps:
                saved[k] = (copy.deepcopy((opt, made)), used)
            for g, group in enumerate(opt.param_groups):
                for h in case.hypers:
                    out[h][g, k] = tref._read(group, h)
            for p in params:
                p.data.zero_()
                p.grad = torch.ones_like(p)
            opt.step()
            for sched, unit in scheds:
                if unit == "iter" or (k + 1) % spe == 0:
                    if isinstance(sched, S.ReduceLROnPlateau):
                        sched.step(float(case.metrics[used]))
                    else:
                        sched.step()
            if case.unit == "iter" or (k + 1) % spe == 0:
                used += 1
    return out, saved


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape and got.dtype == np.float64, what
    bad = np.argwhere(np.abs(got - want) > RTOL * np.abs(want))
    assert bad.size == 0, (f"{what}: first divergence at group {bad[0][0]}, step {bad[0][1]}: torch "
                           f"{want[tuple(bad[0])]!r}, got {got[tuple(bad[0])]!r} ({len(bad)} bad)")


def _import(opt: Any, made: Any, case: Case, total: int | None, *, expect_sampled: bool) -> optbridge.Plan:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        plan = tb.from_torch(opt, made, step_unit=case.unit, steps_per_epoch=case.spe, total_steps=total)
    sampled = [x for x in w if issubclass(x.category, tb.SampledLambdaWarning)]
    assert bool(sampled) == expect_sampled
    if sampled:
        assert "replayed over total_steps" in str(sampled[0].message)
    return plan


def _kinds(plan: optbridge.Plan) -> set[str]:
    nodes = list(plan.schedule.values()) + [n for g in plan.groups for n in g.schedule.values()]
    return {x.kind for n in nodes for x in ir.walk(n)}


def test_runner_is_the_reference_tests_loop() -> None:
    for cid in ("CosineAnnealingLR-periodic", "ReduceLROnPlateau-min-rel", "mixed-iter-warmup-times-epoch-cosine"):
        case = next(c for c in CASES if c.id == cid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected, _ = tref.torch_trace(case)
        for h in case.hypers:
            np.testing.assert_array_equal(native(cid)[0][h], expected[h])


# --------------------------------------------------------------------------- torch -> plan

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_from_torch_then_reference_equals_torch(case: Case) -> None:
    expected, _ = native(case.id)
    _, opt, made, uses_functions = _objects(case)
    # Python functions need a horizon to be sampled; total_steps would also (rightly) refuse the mixed case's
    # chained cosine past T_max, which torch computes as a product here only because the warmup factor is 1 then
    plan = _import(opt, made, case, case.steps if uses_functions else None, expect_sampled=uses_functions)
    assert (plan.total_steps == case.steps) == uses_functions  # a replayed plan is defined for total_steps only
    tr = optbridge.trace(plan, case.steps, metrics=case.metrics)
    assert tr.groups == ("group0", "group1", "group2")
    for h in case.hypers:
        assert_close(tr[h], expected[h], f"{case.id}/{h}")


LAMBDA_CASES = [c for c in CASES if _objects(c)[3]]


@pytest.mark.parametrize("case", LAMBDA_CASES, ids=[c.id for c in LAMBDA_CASES])
def test_from_torch_keeps_lambda_expressions(case: Case) -> None:
    expected, _ = native(case.id)
    _, opt, made, _ = _objects(case, expr=True)
    plan = _import(opt, made, case, None, expect_sampled=False)  # no horizon needed
    kinds = _kinds(plan)
    assert "table" not in kinds and kinds & {"lambda", "multiplicative"}
    optbridge.loads(optbridge.dumps(plan, "json"), "json")  # portable: the expressions serialize
    tr = optbridge.trace(plan, case.steps, metrics=case.metrics)
    for h in case.hypers:
        assert_close(tr[h], expected[h], f"{case.id}/{h}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_from_torch_of_stepped_schedulers_continues_like_torch(case: Case) -> None:
    expected, saved = native(case.id)
    for k, ((opt, made), used) in saved.items():
        n = case.steps - k
        uses_functions = any(isinstance(f, type(lambda: 0)) for s in _flat(made) for f in getattr(s, "lr_lambdas", []))
        plan = _import(opt, made, case, n if uses_functions else None, expect_sampled=uses_functions)
        metrics = None if case.metrics is None else case.metrics[used:]
        tr = optbridge.trace(plan, n, metrics=metrics)
        for h in case.hypers:
            assert_close(tr[h], expected[h][:, k:], f"{case.id}/{h} imported after {k} steps")


def _flat(made: Any) -> list[Any]:
    items = [s for s, _ in made] if isinstance(made, list) else [made]
    out = []
    while items:
        s = items.pop()
        out.append(s)
        items.extend(getattr(s, "_schedulers", []))
    return out


# --------------------------------------------------------------------------- plan -> torch

#: How to_torch expresses each case's plan (no total_steps in these plans; see test_fidelity_* for bounded ones).
TABLE = {"SequentialLR-lambda-warmup-from-0-cosine",    # warmup from 0 (LinearLR cannot) + clamped cosine
         "ChainedScheduler-linear-multistep-cosine",    # chained cosine: a product only within T_max, unbounded plan
         "mixed-iter-warmup-times-epoch-cosine"}        # same, on the epoch clock


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_to_torch_stepped_natively_equals_torch(case: Case) -> None:
    expected, _ = native(case.id)
    tr = optbridge.trace(tref._plan(case), case.steps, backend="torch", metrics=case.metrics)
    assert tr.backend == "torch" and tr.groups == ("g0", "g1", "g2")
    for h in case.hypers:
        assert_close(tr[h], expected[h], f"{case.id}/{h}")
    np.testing.assert_array_equal(tr.applied["lr"], tr["lr"])  # SGD(grad 1) from 0 moves by exactly -lr
    lr_forms = {f.form for f in tr.fidelity if f.hyper == "lr"}
    assert lr_forms == ({"table"} if case.id in TABLE else {"native"})
    for f in tr.fidelity:
        if f.hyper != "lr":  # momentum / beta1 cycled by the same CyclicLR / OneCycleLR
            assert f.form == "native" and "(cycle_momentum)" in f.detail


def _resume(plan: optbridge.Plan, n: int, ks: tuple[int, ...], metrics: Any, *, native: bool) -> None:
    """Run a setup n steps; at each k save state dicts; a fresh setup loading them continues bit-identically."""
    groups = [g for g in plan.groups if g.frozen != "exclude"]
    hypers = scheduled_hypers(plan)

    def setup() -> tuple[Any, list[Any]]:
        ps = {g.name: [torch.zeros(1, dtype=torch.float64, requires_grad=True)] for g in groups}
        st = build(plan, ps, native=native, chunk=32, metrics=metrics)  # small chunks: resumes inside and across
        for p in [p for v in ps.values() for p in v]:
            p.grad = torch.ones_like(p)
        return st, groups

    def read(st: Any) -> list[float]:
        return [read_hyper(st.param_group(g.name), h) for g in groups for h in hypers]

    a, _ = setup()
    values, saved = [], {}
    for k in range(n):
        if k in ks:
            saved[k] = (copy.deepcopy(a.scheduler.state_dict()),
                        {name: copy.deepcopy(o.state_dict()) for name, o in a.optimizers.items()})
        values.append(read(a))
        for o in a.optimizers.values():
            o.step()
        a.scheduler.step()  # metrics given up front: a due plateau takes the next one
    for k, (sched_state, opt_states) in saved.items():
        b, _ = setup()
        for name, o in b.optimizers.items():
            o.load_state_dict(opt_states[name])
        b.scheduler.load_state_dict(sched_state)
        for j in range(k, n):
            assert read(b) == values[j], f"resumed at {k}: differs at step {j}"
            for o in b.optimizers.values():
                o.step()
            b.scheduler.step()


@pytest.mark.parametrize("native_forms", [True, False], ids=["native", "planscheduler"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_resume_from_state_dicts_continues_identically(case: Case, native_forms: bool) -> None:
    ks = (1, 31, 32, 75) if case.unit == "iter" else (case.spe or 1,)
    _resume(tref._plan(case), 120 if case.unit == "iter" else 3 * (case.spe or 1), ks, case.metrics,
            native=native_forms)


def test_planscheduler_state_is_plain_data_and_checks_the_plan(tmp_path: Any) -> None:
    plan = tref._plan(next(c for c in CASES if c.id == "SequentialLR-lambda-warmup-from-0-cosine"))
    ps = {g.name: [torch.zeros(1, requires_grad=True)] for g in plan.groups}
    st = build(plan, ps)
    assert isinstance(st.scheduler, tb.PlanScheduler)
    for _ in range(5):
        st.optimizer.step()
        st.scheduler.step()
    torch.save(st.scheduler.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)  # no code, no custom classes
    assert state["last_epoch"] == 5 and state["fingerprint"] == st.scheduler.fingerprint
    other = tref._plan(next(c for c in CASES if c.id == "ExponentialLR"))
    st2 = build(other, {g.name: [torch.zeros(1, requires_grad=True)] for g in other.groups}, native=False)
    with pytest.raises(optbridge.ConfigError, match="was saved for another plan or setup"):
        st2.scheduler.load_state_dict(state)


def test_lambda_callable_pickles_and_torch_saves_it_as_data(tmp_path: Any) -> None:
    import pickle
    f = tb.Lambda("min(1, (epoch + 1) / 500)")
    assert pickle.loads(pickle.dumps(f)) == f and f(0) == 1 / 500 and f(10_000) == 1
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = S.LambdaLR(opt, f)
    assert sched.state_dict()["lr_lambdas"] == [{"expr": "min(1, (epoch + 1) / 500)"}]
    torch.save(sched.state_dict(), tmp_path / "l.pt")
    assert torch.load(tmp_path / "l.pt", weights_only=True)["lr_lambdas"] == [{"expr": f.expr}]
    with pytest.raises(optbridge.ConfigError):
        tb.Lambda("__import__('os')")
    with pytest.raises(optbridge.EvaluationError, match="division by zero at epoch=0"):
        tb.Lambda("1 / epoch")(0)
    assert math.isclose(tb.Lambda("1 / epoch")(4), 0.25)


def test_resume_past_joins_in_either_order() -> None:
    """Two groups join late (updates 6 and 12); a state saved at update 15 loads into a fresh setup in either
    order, with nothing else to call (the optimizer's load pre-hook adds the groups the saved state holds), and
    the run continues bit for bit."""
    plan = optbridge.load({"optbridge": 1, "optimizer": {"type": "Adam", "lr": 0.01},
                           "groups": [{"name": "a", "params": "a.*"},
                                      {"name": "b", "params": "b.*", "start_step": 6, "lr_mult": 0.1},
                                      {"name": "c", "params": "c.*", "start_step": 12, "lr_mult": 0.5}],
                           "schedule": {"lr": {"kind": "cosine", "steps": 30}}, "total_steps": 30})

    def model() -> Any:
        torch.manual_seed(0)
        return torch.nn.ModuleDict({k: torch.nn.Linear(2, 2) for k in "abc"})

    def updates(m: Any, setup: Any, start: int, stop: int) -> list[Any]:
        out = []
        for k in range(start, stop):
            g = torch.Generator().manual_seed(k)
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            setup.optimizer.step()
            setup.scheduler.step()
            out.append(torch.cat([p.detach().flatten().clone() for p in m.parameters()]))
        return out

    m = model()
    setup = optbridge.to_torch(plan, m)
    want = updates(m, setup, 0, 30)
    assert [g["name"] for g in setup.optimizer.param_groups] == ["a", "b", "c"]
    m = model()
    setup = optbridge.to_torch(plan, m)
    updates(m, setup, 0, 15)
    saved = (copy.deepcopy(m.state_dict()), copy.deepcopy(setup.optimizer.state_dict()),
             copy.deepcopy(setup.scheduler.state_dict()))
    bad = copy.deepcopy(saved[1])
    bad["param_groups"][1]["params"] = bad["param_groups"][1]["params"][:1]  # not the group that joins next
    fresh = optbridge.to_torch(plan, model())
    with pytest.raises(ValueError):
        fresh.optimizer.load_state_dict(bad)
    assert [g["name"] for g in fresh.optimizer.param_groups] == ["a"]  # nothing joined early
    for optimizer_first in (True, False):
        fresh_model = model()
        fresh = optbridge.to_torch(plan, fresh_model)
        fresh_model.load_state_dict(saved[0])
        state = copy.deepcopy(saved[1])  # torch keeps the loaded tensors and updates them in place
        if optimizer_first:
            fresh.optimizer.load_state_dict(state)
            fresh.scheduler.load_state_dict(saved[2])
        else:
            fresh.scheduler.load_state_dict(saved[2])
            fresh.optimizer.load_state_dict(state)
        assert [g["name"] for g in fresh.optimizer.param_groups] == ["a", "b", "c"]
        got = updates(fresh_model, fresh, 15, 30)
        assert all(torch.equal(x, y) for x, y in zip(got, want[15:])), optimizer_first
