"""The trace backends' two paths give the same verdicts: compiled calls (``fast=True``: one update per call on a
``Stepper`` up to ``STEPPER_STEPS`` updates, many per call on a ``Runner`` beyond, both checked here) and a
training loop one update at a time (``fast=False``); the default (``fast=None``) picks the cheaper.

Both run the same setup (plain SGD of the plan's optimizer family over one float32
probe per group, gradient 1, probe reset to 0 before each update) and must agree
exactly: ``data`` (what each group holds before an update) and ``applied["lr"]`` (the
probe's change, exactly ``float32(lr)``). Experimental lr_schedulers step in the graph
only for the classes in ``runner.COMPILED_SCHEDULERS``, each checked here to step
there exactly as from Python.
"""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from mindspore import Parameter, Tensor, nn  # noqa: E402
from mindspore.experimental import optim as mopt  # noqa: E402

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan  # noqa: E402
from optbridge_adapters.mindspore import tracing  # noqa: E402
from optbridge_adapters.mindspore.runner import COMPILED_SCHEDULERS  # noqa: E402
from optbridge_adapters.mindspore.schedulers import native_scheduler  # noqa: E402

N = 24
MIXED = Plan(optimizers=(
    OptimizerSpec(type="SGD", name="sgd", options={"lr": 0.1, "momentum": 0.9}, groups=(
        Group(name="s0"), Group(name="s1", options={"lr": 0.05}, schedule={"lr": ir.OneCycle(total_steps=N)}))),
    OptimizerSpec(type="AdamW", name="adamw", options={"lr": 1e-3}, groups=(Group(name="w0"),)),
    OptimizerSpec(type="Adam", name="adam", options={"lr": 2e-3}, groups=(Group(name="a0"),),
                  clip=None)),
    schedule={"lr": ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=5), ir.Cosine(steps=N - 5)),
                                boundaries=(5,)),
              "beta1": ir.Cyclic(low=0.85, high=0.95, step_size_up=6)}, total_steps=N)


@pytest.fixture(params=["stepper", "runner"])
def compiled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The compiled path under test: one update per call (Stepper), or a graph loop (Runner)."""
    monkeypatch.setattr(tracing, "STEPPER_STEPS", 10 ** 9 if request.param == "stepper" else 0)
    return str(request.param)


@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("backend", ["mindspore-list", "mindspore-cell", "mindspore-experimental"])
def test_fast_and_loop_paths_agree(backend: str, mode: str, compiled: str) -> None:
    fast = optbridge.trace(MIXED, N, backend=backend, mode=mode, fast=True)
    loop = optbridge.trace(MIXED, N, backend=backend, mode=mode, fast=False)
    assert fast.groups == loop.groups == ("s0", "s1", "w0", "a0")
    assert fast.fidelity == loop.fidelity
    for h in fast.data:
        np.testing.assert_array_equal(fast[h], loop[h], err_msg=h)
    np.testing.assert_array_equal(fast.applied["lr"], loop.applied["lr"])
    ref = optbridge.trace(MIXED, N)
    np.testing.assert_array_equal(np.isnan(fast["beta1"]), np.isnan(ref["beta1"]))  # SGD groups: not applicable


def test_experimental_native_schedulers_both_paths(compiled: str) -> None:
    nodes = {"cos": ir.Cosine(steps=10), "step_epoch": ir.Exponential(gamma=0.5, every=2, stair=True, unit="epoch"),
             "restarts": ir.CosineRestarts(period=4, mult=2), "seq": ir.Sequence(
                 parts=(ir.Linear(start_factor=0.1, steps=4), ir.Cosine(steps=10)), boundaries=(4,))}
    plan = Plan(optimizers=tuple(OptimizerSpec(type="SGD", name=k, options={"lr": 0.1}, groups=(
        Group(name=k, schedule={"lr": v}),)) for k, v in nodes.items()), steps_per_epoch=3, total_steps=N)
    fast = optbridge.trace(plan, N, backend="mindspore-experimental", fast=True)
    loop = optbridge.trace(plan, N, backend="mindspore-experimental", fast=False)
    assert {f.form for f in fast.fidelity} == {"native"}
    np.testing.assert_array_equal(fast["lr"], loop["lr"])
    np.testing.assert_array_equal(fast.applied["lr"], loop.applied["lr"])


def test_chunks_join_exactly(monkeypatch: pytest.MonkeyPatch, compiled: str) -> None:
    """Several compiled calls (chunks of 7 updates) give what one trace from 0 gives: the reference, float32."""
    monkeypatch.setattr(tracing, "CHUNK", 7)
    plan = Plan(optimizers=(OptimizerSpec(type="AdamW", options={"lr": 1e-3}),),
                schedule={"lr": ir.CosineRestarts(period=5, mult=2)}, total_steps=40)
    tr = optbridge.trace(plan, 30, backend="mindspore-list")
    ref = optbridge.trace(plan, 30)["lr"].astype(np.float32)
    np.testing.assert_array_equal(tr.applied["lr"], ref)
    np.testing.assert_array_equal(tr["lr"], ref)


def test_many_groups_exact(compiled: str) -> None:
    """28 groups (the size of the issue's setup): every row exactly float32(ref) in the list form."""
    groups = tuple(Group(name=f"g{i}", options={"lr": 1e-3 * 0.9 ** i}) for i in range(28))
    plan = Plan(optimizers=(OptimizerSpec(type="AdamW", options={"lr": 1e-3}, groups=groups),),
                schedule={"lr": ir.Cosine(steps=5000, end=1e-6)}, total_steps=5000)
    tr = optbridge.trace(plan, 50, backend="mindspore-list")
    np.testing.assert_array_equal(tr.applied["lr"], optbridge.trace(plan, 50)["lr"].astype(np.float32))


SCHEDULERS = {
    "ConstantLR": ir.Constant(factor=0.5, steps=3), "LinearLR": ir.Linear(start_factor=0.1, steps=5),
    "StepLR": ir.Exponential(gamma=0.5, every=2, stair=True), "ExponentialLR": ir.Exponential(gamma=0.9),
    "MultiStepLR": ir.MultiStep(milestones=(2, 4)), "PolynomialLR": ir.Polynomial(steps=8, power=2.0),
    "CosineAnnealingLR": ir.Cosine(steps=5), "CyclicLR": ir.Cyclic(high=0.5, step_size_up=3)}


@pytest.mark.parametrize("name", COMPILED_SCHEDULERS)
def test_compiled_scheduler_steps_as_in_python(name: str) -> None:
    """Each class the fast path steps inside the graph gives, step by step, what stepping it from Python gives."""
    make, desc = native_scheduler(SCHEDULERS[name], unit="iter", bases=[0.1], horizon=10)
    assert desc.startswith(name)

    def lrs(compiled: bool) -> list[float]:
        p = Parameter(Tensor(np.zeros(1, np.float32)), name=f"p_{name}_{compiled}")
        opt = mopt.SGD([p], lr=0.1)
        sched = make(opt)
        lr = opt.param_groups[0]["lr"]

        class Step(nn.Cell):
            def __init__(self) -> None:
                super().__init__()
                self.s = sched

            @ms.jit
            def construct(self):
                self.s.step()
                return 0

        step = Step() if compiled else sched.step
        out = []
        for _ in range(8):
            step()
            out.append(float(lr.asnumpy()))
        return out

    assert lrs(True) == lrs(False)


def _with_values(end: float, gamma: float, high: float) -> Plan:
    """MIXED's structure (optimizers, groups, bases, steps) with other schedule values."""
    return Plan(optimizers=(
        OptimizerSpec(type="SGD", name="sgd", options={"lr": 0.1, "momentum": 0.9}, groups=(
            Group(name="s0"), Group(name="s1", options={"lr": 0.05}, schedule={"lr": ir.Exponential(gamma=gamma)}))),
        OptimizerSpec(type="AdamW", name="adamw", options={"lr": 1e-3}, groups=(Group(name="w0"),)),
        OptimizerSpec(type="Adam", name="adam", options={"lr": 2e-3}, groups=(Group(name="a0"),))),
        schedule={"lr": ir.Cosine(steps=N, end=end), "beta1": ir.Cyclic(low=0.8, high=high, step_size_up=5)},
        total_steps=N)


def _reused_and_new(monkeypatch: pytest.MonkeyPatch, pool: object, a: Plan, b: Plan, backend: str, fast: bool,
                    options: dict) -> tuple:
    """Trace ``a`` (kept in ``pool``), then ``b`` (one hit), then ``b`` without reuse (no pool change): the three
    traces; ``a``'s and ``b``'s applied lrs differ, so stale values or a stale graph would show."""
    first = optbridge.trace(a, N, backend=backend, fast=fast, **options)
    second = optbridge.trace(b, N, backend=backend, fast=fast, **options)
    assert (pool.hits, pool.misses) == (1, 1)  # type: ignore[attr-defined]
    monkeypatch.setenv("OPTBRIDGE_MS_REUSE", "0")
    new = optbridge.trace(b, N, backend=backend, fast=fast, **options)
    assert (pool.hits, pool.misses) == (1, 1)  # type: ignore[attr-defined]
    assert not np.array_equal(first.applied["lr"], new.applied["lr"])
    return first, second, new


@pytest.mark.parametrize("backend,options", [("mindspore-list", {}),
                                             ("mindspore-experimental", {"scheduler": "driver"})])
def test_reused_runner_gives_the_trace_a_new_one_gives(monkeypatch: pytest.MonkeyPatch, compiled: str, backend: str,
                                                        options: dict) -> None:
    """Two plans of one structure share a compiled runner (reuse.Pool): the second trace runs on the first's graph
    with its own Parameter values copied in, and equals, bit for bit, its trace on a new runner."""
    from optbridge_adapters.mindspore import reuse
    pool = reuse.Pool()
    monkeypatch.setattr(tracing, "POOL", pool)
    a, b = _with_values(0.0, 0.9, 0.95), _with_values(1e-4, 0.5, 0.99)
    first, second, new = _reused_and_new(monkeypatch, pool, a, b, backend, True, options)
    np.testing.assert_array_equal(second.applied["lr"], new.applied["lr"])
    np.testing.assert_array_equal(second.applied["lr"], optbridge.trace(b, N)["lr"].astype(np.float32))
    for h in new.data:
        np.testing.assert_array_equal(second[h], new[h], err_msg=h)


def _native(scale: float, gamma: float) -> Plan:
    """Plain SGD groups whose lr schedules MindSpore's experimental lr_schedulers run (native), other values per
    argument: a cosine, an epoch-clock stair, a sequence (SequentialLR holds schedulers in a list)."""
    nodes = {"cos": ir.Cosine(steps=10, end=0.1 * scale),
             "step_epoch": ir.Exponential(gamma=gamma, every=2, stair=True, unit="epoch"),
             "seq": ir.Sequence(parts=(ir.Linear(start_factor=scale, steps=4), ir.Cosine(steps=10)), boundaries=(4,))}
    return Plan(optimizers=tuple(OptimizerSpec(type="SGD", name=k, options={"lr": 0.1}, groups=(
        Group(name=k, schedule={"lr": v}),)) for k, v in nodes.items()), steps_per_epoch=3, total_steps=N)


@pytest.mark.parametrize("backend,options", [("mindspore-list", {}), ("mindspore-experimental", {}),
                                             ("mindspore-experimental", {"scheduler": "driver"}),
                                             ("native-schedulers", {})])
def test_reused_optimizers_give_the_trace_new_ones_give(monkeypatch: pytest.MonkeyPatch, backend: str,
                                                         options: dict) -> None:
    """The training loop (fast=False) of a plan whose optimizers have the structure of an earlier trace's runs on
    those optimizers (reuse.Setups: their compiled graphs), with its own state copied in and its probes, holders,
    driver and lr_schedulers pointed at them; it equals, bit for bit, the trace on its own optimizers. The
    experimental form's horizon (total_steps) differs too: a trace holds it in a Parameter."""
    import dataclasses

    from optbridge_adapters.mindspore import reuse
    setups = reuse.Setups()
    monkeypatch.setattr(tracing, "SETUPS", setups)
    a, b = _with_values(0.0, 0.9, 0.95), _with_values(1e-4, 0.5, 0.99)
    if backend == "native-schedulers":
        backend, (a, b) = "mindspore-experimental", (_native(0.1, 0.5), _native(0.3, 0.7))
    if backend == "mindspore-experimental":
        b = dataclasses.replace(b, total_steps=N + 7)
    first, second, new = _reused_and_new(monkeypatch, setups, a, b, backend, False, options)
    np.testing.assert_array_equal(second.applied["lr"], new.applied["lr"])
    for h in new.data:
        np.testing.assert_array_equal(second[h], new[h], err_msg=h)
    assert second.fidelity == new.fidelity
    if options == {} and a.optimizers[0].name == "cos":
        assert {f.form for f in new.fidelity} == {"native"}


def test_reuse_refuses_optimizers_whose_python_state_it_cannot_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adoption re-walks the kept optimizers after restoring their state: Python state it does not know how to
    restore (here an attribute added after their trace) changes the key, and the new optimizers are used (and
    kept) instead."""
    from optbridge_adapters.mindspore import reuse
    setups = reuse.Setups()
    monkeypatch.setattr(tracing, "SETUPS", setups)
    a, b = _with_values(0.0, 0.9, 0.95), _with_values(1e-4, 0.5, 0.99)
    optbridge.trace(a, N, backend="mindspore-list", fast=False)
    (kept, _), = setups._kept.values()
    kept[0].optbridge_stale = 1.0
    second = optbridge.trace(b, N, backend="mindspore-list", fast=False)
    assert (setups.hits, setups.misses) == (0, 2)
    (now, _), = setups._kept.values()
    assert now[0] is not kept[0]
    monkeypatch.setenv("OPTBRIDGE_MS_REUSE", "0")
    np.testing.assert_array_equal(second.applied["lr"],
                                  optbridge.trace(b, N, backend="mindspore-list", fast=False).applied["lr"])


def test_structure_leaves_out_what_only_python_reads() -> None:
    """Only Python reads an exact optimizer's param_groups and parsed groups (construction values of scheduled
    hyperparameters), an experimental optimizer's defaults and an lr_scheduler's initial_lr: optimizers differing
    there share a key. A constant the update bakes in (an unscheduled momentum) still counts, and so does a
    guard's horizon unless it is movable (a trace's)."""
    from optbridge.source import ValueSource
    from optbridge_adapters.mindspore.guard import Guard, install
    from optbridge_adapters.mindspore.optimizers import SGD
    from optbridge_adapters.mindspore.reuse import python_side, structure

    def exact(lr: float, momentum: float) -> object:
        p = Parameter(Tensor(np.zeros(1, np.float32)), name="w")
        return SGD([p], lr=lr, momentum=momentum, scheduled=["lr"])

    assert python_side(exact(0.1, 0.9)) == {"param_groups", "_groups"}
    assert structure(exact(0.1, 0.9))[0] == structure(exact(0.3, 0.9))[0]  # type: ignore[index]
    assert structure(exact(0.1, 0.9))[0] != structure(exact(0.1, 0.8))[0]  # type: ignore[index]

    def experimental(lr: float, epochs: int) -> object:
        p = Parameter(Tensor(np.zeros(1, np.float32)), name="w")
        opt = mopt.SGD([p], lr=lr)
        mopt.lr_scheduler.StepLR(opt, step_size=epochs)
        return opt

    assert "defaults" in python_side(experimental(0.1, 2))
    assert structure(experimental(0.1, 2))[0] == structure(experimental(0.2, 3))[0]  # type: ignore[index]

    def guarded(horizon: int, movable: bool) -> object:
        guard = Guard("optimizer", ValueSource([], total_steps=horizon), None)
        return install(exact(0.1, 0.9), guard, movable_horizon=movable)

    assert structure(guarded(10, True))[0] == structure(guarded(20, True))[0]  # type: ignore[index]
    assert structure(guarded(10, False))[0] != structure(guarded(20, False))[0]  # type: ignore[index]
    # the compiled runners' pool keeps the strict key: Python-side values and a trace's horizon count there
    assert structure(exact(0.1, 0.9), strict=True)[0] != structure(exact(0.3, 0.9), strict=True)[0]  # type: ignore[index]
    assert structure(guarded(10, True), strict=True)[0] != structure(guarded(20, True), strict=True)[0]  # type: ignore[index]


def test_structure_counts_constants_and_refuses_unknown_objects() -> None:
    """The key differs when a constant the graph bakes in differs (a Tensor, a scalar); it is the same when only a
    Parameter's value differs; an attribute the walk does not know (a function) makes the runner not reusable."""
    from optbridge_adapters.mindspore.reuse import structure

    class Cell(nn.Cell):
        def __init__(self, value: float, limit: int, scale: float) -> None:
            super().__init__()
            self.p = Parameter(Tensor(np.float32(value)), name="p")
            self.limit = Tensor(limit, ms.int32)
            self.scale = scale

        def construct(self):
            return self.p * self.scale

    key = structure(Cell(1.0, 5, 2.0))
    assert key is not None and len(key[1]) == 1
    assert structure(Cell(3.0, 5, 2.0))[0] == key[0]  # type: ignore[index]
    assert structure(Cell(1.0, 6, 2.0))[0] != key[0]  # type: ignore[index]
    assert structure(Cell(1.0, 5, 2.5))[0] != key[0]  # type: ignore[index]
    odd = Cell(1.0, 5, 2.0)
    odd.f = lambda x: x  # type: ignore[attr-defined]
    assert structure(odd) is None


def test_worker_environment_changes_no_value(tmp_path) -> None:
    """The conformance workers run MindSpore with runner.PROCESS_ENV (MS_DEV_LAUNCH_BLOCKING=1 and
    MS_DEV_HOST_BLOCKING_RUN=1: ops and compiled graphs run in the calling thread, 3-25x cheaper on a worker pinned
    to one core). A trace in a process with the other setting of each variable than this one equals, bit for bit,
    the trace here: the compiled path and the training loop (list form: the nn optimizer's jit graph called per
    update) and the experimental loop."""
    import os
    import subprocess
    import sys

    from optbridge_conformance.runner import PROCESS_ENV
    out = tmp_path / "other.npz"
    code = ("import sys, numpy as np, optbridge; sys.path.insert(0, {tests!r}); "
            "from test_mindspore_trace import MIXED, N; "
            "a = optbridge.trace(MIXED, N, backend='mindspore-list', fast=True); "
            "c = optbridge.trace(MIXED, N, backend='mindspore-list', fast=False); "
            "b = optbridge.trace(MIXED, N, backend='mindspore-experimental', fast=False); "
            "np.savez({out!r}, list=a.applied['lr'], list_lr=a['lr'], loop=c.applied['lr'], exp=b.applied['lr'], "
            "exp_lr=b['lr'])").format(tests=os.path.dirname(__file__), out=str(out))
    env = {k: v for k, v in os.environ.items() if k not in PROCESS_ENV}
    env["GLOG_v"] = "3"
    for k, v in PROCESS_ENV.items():
        if os.environ.get(k) != v:
            env[k] = v
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=300)
    got = np.load(out)
    a = optbridge.trace(MIXED, N, backend="mindspore-list", fast=True)
    c = optbridge.trace(MIXED, N, backend="mindspore-list", fast=False)
    b = optbridge.trace(MIXED, N, backend="mindspore-experimental", fast=False)
    for name, want in (("list", a.applied["lr"]), ("list_lr", a["lr"]), ("loop", c.applied["lr"]),
                       ("exp", b.applied["lr"]), ("exp_lr", b["lr"])):
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_fast_none_takes_the_cheaper_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """fast=None: in PyNative the loop for short experimental traces, and for every form up to ONE_CPU_LOOP_STEPS in
    a process on one CPU with MS_DEV_LAUNCH_BLOCKING=1 (a conformance worker); the compiled calls otherwise."""
    import os
    assert not tracing.use_fast("experimental", "pynative", tracing.LOOP_STEPS, False)
    assert tracing.use_fast("experimental", "pynative", tracing.LOOP_STEPS + 1, False)
    assert tracing.use_fast("list", "pynative", 60, False) and tracing.use_fast("cell", "pynative", 60, False)
    assert not tracing.use_fast("cell", "pynative", tracing.ONE_CPU_LOOP_STEPS, True)
    assert tracing.use_fast("list", "pynative", tracing.ONE_CPU_LOOP_STEPS + 1, True)
    assert tracing.use_fast("list", "graph", 10, True) and tracing.use_fast("experimental", "graph", 10, False)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setenv("MS_DEV_LAUNCH_BLOCKING", "1")
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert tracing.one_cpu_blocking()
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
        assert not tracing.one_cpu_blocking()
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        monkeypatch.delenv("MS_DEV_LAUNCH_BLOCKING")
        assert not tracing.one_cpu_blocking()


@pytest.mark.parametrize("mode", ["pynative", "graph"])
def test_the_loop_resets_its_probes_through_their_shared_storage(mode: str) -> None:
    """On the CPU the training loop resets a probe with a numpy store into the array sharing its storage
    (``Tensor.asnumpy``'s documented contract), not an op: the optimizer's next update starts from that 0, in
    PyNative and in a GRAPH-mode training cell."""
    prev = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        p = Parameter(Tensor(np.full(1, 5.0, np.float32)), name=f"optbridge_test_reset_{mode}")
        (reset,) = tracing._resets([p])
        assert isinstance(reset.func.__self__, np.ndarray)  # the store, not the copy_ fallback
        assert p.item() == 0.0
        step = nn.TrainOneStepCell(tracing._ProbeSum([p]), nn.SGD([p], learning_rate=0.25))
        for _ in range(3):
            step()
            assert p.item() == -0.25  # from 0 again: without the reset it would be -0.5, -0.75
            reset()
            assert p.item() == 0.0
    finally:
        ms.set_context(mode=prev)
