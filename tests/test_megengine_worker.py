"""The MegEngine backend from the main environment (no megengine here): the persistent worker.

* ``optbridge.trace(plan, n, backend="megengine")`` runs the worker under the
  MegEngine interpreter (``$OPTBRIDGE_MGE_PYTHON``, else ``.venv-mge``) and gets the
  trace back bit-exact; compared with the reference: ``data`` equal bit for bit,
  ``applied["lr"]`` equal to ``float32(reference)`` (0 ulps; see
  tests_megengine/test_mge_schedules.py for why both are exact).
* One worker process serves every trace of a (interpreter, backend) pair: the pid
  stays the same; a worker killed or crashing mid-request gives a clean
  ``WorkerError`` (exit status, stderr tail) and the next call gets a fresh worker; a
  worker that does not answer in time is stopped. These run with test backends
  (``sleepy``, ``crashy``, ``noisy``) registered in a worker started by a wrapper
  interpreter, so they need no MegEngine.
* The protocol is backend-neutral: the same worker run by this interpreter with the
  ``reference`` backend returns exactly ``optbridge.trace(plan, n)``.
* Errors come back as the same optbridge class; a missing interpreter is a
  BackendUnavailable that says how to create it, and the backend registry and the
  conformance probe count MegEngine unavailable then.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import optbridge
from optbridge import ir
from optbridge.errors import BackendUnavailable, ConfigError, EvaluationError, OptbridgeError, UnsupportedError
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge.report import Fidelity
from optbridge_adapters import worker
from optbridge_adapters.megengine import backend as megengine_backend

ROOT = Path(__file__).resolve().parent.parent


def _mge_python() -> str | None:
    try:
        return megengine_backend.megengine_python()
    except BackendUnavailable:
        return None


MGE_PYTHON = _mge_python()
needs_mge = pytest.mark.skipif(MGE_PYTHON is None, reason="no MegEngine interpreter (run ./dev setup)")
#: ./dev test also runs tests/ under the MegEngine interpreter (the core on Python 3.10)
HERE_HAS_MGE = importlib.util.find_spec("megengine") is not None


def G(name: str, **kw) -> Group:
    return Group(name=name, select=(Selector(names=(name,)),), **kw)


WD = ir.Exponential(gamma=0.9, every=2, stair=True)
#: two SGD groups that differ in nesterov (split), a zero_lr and an excluded group, a plateau with
#: metrics, an epoch clock with an iteration warmup, a weight-decay schedule, AdamW, and an SGD on
#: MegEngine's own MultiStepLR
RICH = Plan(
    optimizers=(
        OptimizerSpec(type="SGD", name="sgd", options={"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}, groups=(
            G("a", options={"nesterov": True}, schedule={"weight_decay": WD}),
            G("b", options={"lr": 0.05}, schedule={"lr": ir.Plateau(patience=1, factor=0.5, unit="iter")}),
            G("frozen", frozen="zero_lr"), G("skipped", frozen="exclude"))),
        OptimizerSpec(type="AdamW", name="adam", options={"lr": 0.003}, groups=(G("c", schedule={"weight_decay": WD}),)),
        OptimizerSpec(type="SGD", name="steps", options={"lr": 0.2}, groups=(
            G("d", schedule={"lr": ir.MultiStep(milestones=(3, 7), gamma=0.5)}),)),
    ),
    schedule={"lr": ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=24, unit="iter"), ir.Cosine(steps=8)),
                                boundaries=(3,))},
    step_unit="epoch", steps_per_epoch=8,
)
METRICS = [float(x) for x in np.round(np.cumsum(np.random.RandomState(1).normal(0, 0.1, 100)) + 2, 4)]


def test_megengine_is_a_registered_backend() -> None:
    from optbridge.backends import available_backends
    assert "megengine" in available_backends()


@needs_mge
def test_trace_from_the_main_env_runs_the_worker(monkeypatch) -> None:
    # even from MegEngine's own package folder (where `random` is shadowed) the worker starts cleanly
    site = Path(MGE_PYTHON).resolve().parent.parent / "lib"
    pkg = next(site.glob("python3*/site-packages/megengine"), None)
    if pkg is not None:
        monkeypatch.chdir(pkg)
    n = 90
    # worker=True: under the MegEngine interpreter too (./dev test runs tests/ there as well)
    tr = optbridge.trace(RICH, n, backend="megengine", metrics=METRICS, worker=True)
    ref = optbridge.trace(RICH, n, metrics=METRICS)
    assert tr.backend == "megengine" and tr.groups == ref.groups == ("a", "b", "frozen", "c", "d")
    assert set(tr) == set(ref) == {"lr", "weight_decay"}
    for h in ref:
        assert tr[h].dtype == np.float64 and tr[h].flags.writeable
        np.testing.assert_array_equal(tr[h], ref[h], err_msg=h)
    np.testing.assert_array_equal(tr.applied["lr"], ref["lr"].astype(np.float32).astype(np.float64))
    assert all(isinstance(f, Fidelity) for f in tr.fidelity)
    notes = {(f.group, f.hyper): f for f in tr.fidelity}
    assert notes[("d", "lr")].form == "native" and "MultiStepLR" in notes[("d", "lr")].detail
    assert notes[("a", "lr")].form == "table" and notes[("frozen", "lr")].form == "native"
    assert "split" in notes[("a", "nesterov")].detail


@needs_mge
def test_megengine_errors_come_back_as_the_same_class() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),))
    with pytest.raises(UnsupportedError) as e:  # MegEngine's own SGD has no dampening: refused when asked for
        optbridge.trace(plan, 5, backend="megengine", worker=True, optimizer="native")
    assert e.value.backend == "megengine" and e.value.node == "groups.all.dampening"
    assert "no dampening" in e.value.reason and "no dampening" in str(e.value)
    assert "Traceback" in e.value.remote_traceback
    tr = optbridge.trace(plan, 5, backend="megengine", worker=True)  # auto: optbridge's exact SGD
    assert [f.form for f in tr.fidelity if f.hyper == "optimizer"] == ["generated"]


@needs_mge
def test_one_megengine_worker_serves_every_trace() -> None:
    plan = Plan(optimizers=(OptimizerSpec(type="AdamW", options={"lr": 0.01}),), schedule={"lr": ir.Cosine(steps=50)})
    optbridge.trace(plan, 5, backend="megengine", worker=True)
    pid = worker.worker_pid(MGE_PYTHON, "megengine")
    assert pid is not None
    for n in (7, 50):
        tr = optbridge.trace(plan, n, backend="megengine", worker=True)
        np.testing.assert_array_equal(tr["lr"], optbridge.trace(plan, n)["lr"])
    assert worker.worker_pid(MGE_PYTHON, "megengine") == pid


def test_protocol_is_backend_neutral_with_the_reference_backend() -> None:
    plan = RICH
    tr = worker.run_in_worker(sys.executable, "reference", plan, 90, metrics=METRICS)
    ref = optbridge.trace(plan, 90, metrics=METRICS)
    assert tr.backend == "reference" and tr.groups == ref.groups and tr.fidelity == () and dict(tr.applied) == {}
    for h in ref:
        np.testing.assert_array_equal(tr[h], ref[h])
        assert tr[h].tobytes() == ref[h].tobytes()


@pytest.mark.parametrize("backend, steps, cls, path", [
    ("reference", 200, EvaluationError, None),      # the plateau needs more metrics than given
    ("no-such-backend", 5, ConfigError, "backend"),
    ("reference", 0, ConfigError, "steps"),
])
def test_worker_errors_keep_class_and_message(backend, steps, cls, path) -> None:
    with pytest.raises(cls) as remote:
        worker.run_in_worker(sys.executable, backend, RICH, steps, metrics=METRICS[:10])
    with pytest.raises(cls) as local:
        optbridge.trace(RICH, steps, backend=backend, metrics=METRICS[:10])
    assert str(remote.value) == str(local.value)
    if path is not None:
        assert remote.value.path == local.value.path == path and remote.value.rule == local.value.rule


def test_missing_interpreter_says_how_to_create_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OPTBRIDGE_MGE_PYTHON", str(tmp_path / "no-python"))
    with pytest.raises(BackendUnavailable, match=r"\./dev setup") as e:
        optbridge.trace(RICH, 5, backend="megengine", worker=True)
    assert "OPTBRIDGE_MGE_PYTHON" in str(e.value)
    monkeypatch.delenv("OPTBRIDGE_MGE_PYTHON")
    monkeypatch.setattr(megengine_backend, "repo_root", lambda: tmp_path)
    with pytest.raises(BackendUnavailable, match=r"\.venv-mge/bin/python does not exist.*\./dev setup"):
        optbridge.trace(RICH, 5, backend="megengine", worker=True)
    monkeypatch.setattr(megengine_backend, "repo_root", lambda: None)  # installed outside a checkout
    with pytest.raises(BackendUnavailable, match="OPTBRIDGE_MGE_PYTHON is not set"):
        optbridge.trace(RICH, 5, backend="megengine", worker=True)


@pytest.mark.skipif(HERE_HAS_MGE, reason="megengine is importable here")
def test_live_objects_need_megengine_in_this_interpreter() -> None:
    assert importlib.util.find_spec("megengine") is None
    with pytest.raises(BackendUnavailable, match=r"\./dev setup"):
        optbridge.to_megengine(RICH, {})
    with pytest.raises(BackendUnavailable, match="backend='megengine'"):
        optbridge.from_megengine(None)


def test_an_interpreter_without_optbridge_is_unavailable(tmp_path) -> None:
    bare = getattr(sys, "_base_executable", None)
    if not bare or bare == sys.executable:
        pytest.skip("no base interpreter without optbridge")
    probe = subprocess.run([bare, "-c", "import optbridge"], capture_output=True, cwd=tmp_path)
    if probe.returncode == 0:
        pytest.skip("the base interpreter has optbridge")
    with pytest.raises(BackendUnavailable, match="optbridge is not installed"):
        worker.run_in_worker(bare, "reference", RICH, 5, hint="create it with ./dev setup")


def test_arrays_travel_bit_exact() -> None:
    a = np.array([[0.1, -0.0, 5e-324, np.inf, -np.inf, np.nan, 1 / 3, 2.0**-1074 * 3]])
    b = worker.decode_array(json.loads(json.dumps(worker.encode_array(a))))
    assert b.tobytes() == a.tobytes() and b.shape == a.shape and b.flags.writeable


def test_worker_response_survives_a_backend_that_prints_to_stdout(tmp_path) -> None:
    (tmp_path / "noisy_backend.py").write_text(textwrap.dedent("""
        import os, sys
        from optbridge.tracing import reference_trace
        def trace(plan, steps, *, metrics=None, **options):
            print("python-level chatter")
            os.write(1, b"C-level chatter on fd 1\\n")
            return reference_trace(plan, steps, metrics=metrics)
    """))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from optbridge.backends import register_backend; "
            "register_backend('noisy', 'noisy_backend:trace'); from optbridge_adapters.worker import main; sys.exit(main())")
    request = {"protocol": 1, "backend": "noisy", "plan": optbridge.to_dict(RICH), "steps": 12, "metrics": METRICS}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], input=json.dumps(request), capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "chatter" in proc.stderr and "chatter" not in proc.stdout
    tr = worker.decode_trace(json.loads(proc.stdout)["trace"])
    np.testing.assert_array_equal(tr["lr"], optbridge.trace(RICH, 12, metrics=METRICS)["lr"])


def test_torch_fixture_of_tests_megengine_is_current() -> None:
    """tests_megengine/fixtures/torch_trajectories.npz must be what tests_megengine/make_fixtures.py makes with torch here."""
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("mge_make_fixtures", ROOT / "tests_megengine" / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    fresh = mod.build()
    committed = dict(np.load(mod.FIXTURE))
    assert mod.same(committed, fresh), "stale fixture: run .venv/bin/python tests_megengine/make_fixtures.py"


# --------------------------------------------------------------------------- the persistent worker, with test backends

#: Backends registered in the worker by the wrapper interpreter (they only exist there).
_TEST_BACKENDS = textwrap.dedent("""
    import os, sys, time
    from optbridge.tracing import reference_trace

    def sleepy(plan, steps, *, metrics=None, seconds=0.0, **options):
        time.sleep(seconds)
        return reference_trace(plan, steps, metrics=metrics)

    def crashy(plan, steps, *, metrics=None, **options):
        sys.stderr.write("crashy: giving up mid-request\\n")
        sys.stderr.flush()
        os._exit(3)

    def noisy(plan, steps, *, metrics=None, **options):
        print("python-level chatter")
        os.write(1, b"C-level chatter on fd 1\\n")
        return reference_trace(plan, steps, metrics=metrics)
""")


@pytest.fixture()
def test_python(tmp_path: Path) -> str:
    """An 'interpreter' that starts the worker with the test backends registered (this Python underneath)."""
    (tmp_path / "worker_test_backends.py").write_text(_TEST_BACKENDS)
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from optbridge.backends import register_backend; "
            "[register_backend(n, 'worker_test_backends:' + n) for n in ('sleepy', 'crashy', 'noisy')]; "
            "from optbridge_adapters.worker import main; sys.exit(main(sys.argv[1:]))")
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -c {shlex.quote(code)} \"$@\"\n")
    wrapper.chmod(0o755)
    yield str(wrapper)
    worker.shutdown_workers(str(wrapper))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_one_process_serves_many_traces(test_python: str) -> None:
    ref = optbridge.trace(RICH, 30, metrics=METRICS)
    pids = set()
    for n in (5, 30, 30):
        tr = worker.run_in_worker(test_python, "sleepy", RICH, n, metrics=METRICS)
        assert tr["lr"].tobytes() == ref["lr"][:, :n].tobytes()
        pids.add(worker.worker_pid(test_python, "sleepy"))
    assert len(pids) == 1 and None not in pids
    # a backend never shares a process with another one (MegEngine switches the CPU to flush-to-zero)
    worker.run_in_worker(test_python, "reference", RICH, 5, metrics=METRICS)
    assert worker.worker_pid(test_python, "reference") not in pids


def test_a_worker_killed_mid_request_gives_a_clean_error_then_a_fresh_worker(test_python: str) -> None:
    worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS)
    pid = worker.worker_pid(test_python, "sleepy")
    killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
    killer.start()
    t = time.monotonic()
    with pytest.raises(worker.WorkerError, match=r"killed by signal 9 while serving a request") as e:
        worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS, seconds=60.0)
    killer.join()
    assert time.monotonic() - t < 30  # never a hang
    assert e.value.returncode == -signal.SIGKILL
    assert f"optbridge worker {pid}: serving framed requests" in str(e.value)  # the tail of its stderr
    assert worker.worker_pid(test_python, "sleepy") is None
    tr = worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS)  # a fresh worker
    assert worker.worker_pid(test_python, "sleepy") not in (None, pid)
    np.testing.assert_array_equal(tr["lr"], optbridge.trace(RICH, 5, metrics=METRICS)["lr"])


def test_a_worker_that_crashes_reports_its_status_and_stderr(test_python: str) -> None:
    with pytest.raises(worker.WorkerError, match="exited with status 3") as e:
        worker.run_in_worker(test_python, "crashy", RICH, 5)
    assert e.value.returncode == 3 and "crashy: giving up mid-request" in str(e.value)
    assert isinstance(e.value, OptbridgeError)


def test_a_worker_that_does_not_answer_in_time_is_stopped(test_python: str) -> None:
    worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS)
    pid = worker.worker_pid(test_python, "sleepy")
    t = time.monotonic()
    with pytest.raises(worker.WorkerError, match=r"did not answer within 0.5 s"):
        worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS, seconds=60.0, timeout=0.5)
    assert time.monotonic() - t < 30
    assert not _alive(pid) and worker.worker_pid(test_python, "sleepy") is None
    worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS)  # and the next call gets a fresh one
    assert worker.worker_pid(test_python, "sleepy") not in (None, pid)


def test_chatter_on_stdout_does_not_corrupt_the_frames(test_python: str) -> None:
    for _ in range(3):
        tr = worker.run_in_worker(test_python, "noisy", RICH, 12, metrics=METRICS)
        np.testing.assert_array_equal(tr["lr"], optbridge.trace(RICH, 12, metrics=METRICS)["lr"])


def test_shutdown_stops_every_worker(test_python: str) -> None:
    worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS)
    pid = worker.worker_pid(test_python, "sleepy")
    worker.shutdown_workers(test_python)
    assert not _alive(pid) and worker.worker_pid(test_python, "sleepy") is None


def test_an_idle_worker_is_stopped_and_the_next_call_starts_a_fresh_one(test_python: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker idle for IDLE_SECONDS is stopped (an idle MegEngine interpreter keeps ~25% of a core busy); one
    serving a request longer than that is not; the next call starts a fresh worker and gets the same values."""
    monkeypatch.setattr(worker, "IDLE_SECONDS", 0.5)
    ref = optbridge.trace(RICH, 5, metrics=METRICS)["lr"]
    worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS)
    pid = worker.worker_pid(test_python, "sleepy")
    tr = worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS, seconds=1.5)  # busy for 3 idle spans
    assert worker.worker_pid(test_python, "sleepy") == pid
    np.testing.assert_array_equal(tr["lr"], ref)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid) and worker.worker_pid(test_python, "sleepy") is None
    tr = worker.run_in_worker(test_python, "sleepy", RICH, 5, metrics=METRICS)
    assert worker.worker_pid(test_python, "sleepy") not in (None, pid)
    np.testing.assert_array_equal(tr["lr"], ref)


def test_frames_round_trip_and_refuse_garbage() -> None:
    buf = io.BytesIO()
    doc = {"protocol": 1, "x": [1.5, None, "é"], "nan": float("nan")}
    worker.write_frame(buf, doc)
    worker.write_frame(buf, {"op": "shutdown"})
    buf.seek(0)
    got = worker.read_frame(buf)
    assert got["x"] == doc["x"] and np.isnan(got["nan"])
    assert worker.read_frame(buf) == {"op": "shutdown"}
    with pytest.raises(EOFError):
        worker.read_frame(buf)
    with pytest.raises(worker.WorkerError, match="must start with its length"):
        worker.read_frame(io.BytesIO(b"{}\n"))
    with pytest.raises(EOFError, match="inside a frame"):
        worker.read_frame(io.BytesIO(b"10\n{}"))


# --------------------------------------------------------------------------- availability

def test_megengine_is_unavailable_without_megengine_or_its_interpreter(monkeypatch, tmp_path) -> None:
    from optbridge import backends
    from optbridge_conformance.probe import probe_backend as _probe_backend
    if HERE_HAS_MGE:
        assert megengine_backend.availability() is None
        return
    monkeypatch.setenv("OPTBRIDGE_MGE_PYTHON", str(tmp_path / "no-python"))
    monkeypatch.delitem(backends._CACHE, "megengine", raising=False)
    why = megengine_backend.availability()
    assert why is not None and "./dev setup" in why and "OPTBRIDGE_MGE_PYTHON" in why
    with pytest.raises(BackendUnavailable, match=r"\./dev setup"):
        backends.get_backend("megengine")
    info = _probe_backend("megengine")
    assert not info.available and "./dev setup" in info.message
    if MGE_PYTHON is not None:
        monkeypatch.setenv("OPTBRIDGE_MGE_PYTHON", MGE_PYTHON)
        assert megengine_backend.availability() is None
        assert _probe_backend("megengine").available
