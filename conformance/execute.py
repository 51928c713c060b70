"""One case on one backend: run it, compare it, judge it (and batches of them, for one worker process).

Schedule cases compare the backend's per-step values with the reference
evaluator's; trajectory cases (``trajectory:``) compare the parameters after every
update with torch's (:mod:`optbridge_conformance.trajectory`). Expected values are
computed once per process and case: the reference trace only as long as the
backend's run needs (a long-horizon case is not evaluated to its end for a
backend that runs its first 20000 updates), and the reference backend's own trace
is that trace (no second evaluation). The torch oracle of a trajectory case is
computed once per run: the worker processes share it through the directory
:data:`SHARED_DIR` names (``.npy`` files, read without pickle).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optbridge.errors import BackendUnavailable, UnsupportedError

from .cases import Budget, Case, Deviation
from .judge import check_pins, judge
from .results import Result

__all__ = ["Task", "run_one", "run_batch", "PLOT_POINTS", "PLOT_WINDOW", "clear_cache", "SHARED_DIR"]

#: Points of the overview kept per series for plots, and steps kept on each side of a divergence.
PLOT_POINTS = 600
PLOT_WINDOW = 40

#: What a worker process keeps: expected values by (case key, steps), least recently used out first.
_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_SIZE = 8


def clear_cache() -> None:
    """Forget the expected values kept by this process."""
    _CACHE.clear()


def _key(case: Case) -> tuple[Any, ...]:
    """A case's cache key: its file, or for a case made in memory (random plans, hypothesis) its document's
    content. Not ``id(doc)``: a freed document's id is reused by the next one, which then got the earlier plan's
    expected values (a hypothesis plan failed on mindspore-cell with the previous plan's reference, flaky)."""
    if case.path is not None:
        return (case.id, case.path, "")
    return (case.id, None, json.dumps(case.doc, sort_keys=True, default=repr))


#: Values above which an expected result is not kept (a long horizon's reference is needed once).
_CACHE_VALUES = 1 << 21


def _size(value: Any) -> int:
    data = getattr(value, "data", None)
    arrays = list(data.values()) if isinstance(data, Mapping) else [value]
    return sum(int(getattr(a, "size", 0)) for a in arrays)


def _cached(key: tuple[Any, ...], make: Any) -> Any:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = make()
    if _size(value) <= _CACHE_VALUES:
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


#: Environment variable: a directory the worker processes of one run share the torch oracle's trajectories through
#: (the runner sets it for ``--jobs N``). Without it each backend's process computed every oracle again: 37
#: trajectory cases x 5 backends.
SHARED_DIR = "OPTBRIDGE_CONFORMANCE_SHARED"


def _shared(key: tuple[Any, ...], make: Any) -> Any:
    """``make()`` (a float32 array), computed once per run: read from :data:`SHARED_DIR` if a process of this run
    wrote it, else made and written there (to a temporary name, then renamed: a reader sees a whole file or none)."""
    import numpy as np
    folder = os.environ.get(SHARED_DIR)
    if not folder:
        return make()
    path = Path(folder) / (hashlib.sha256(repr(key).encode()).hexdigest() + ".npy")
    if path.exists():
        return np.load(path, allow_pickle=False)
    value = make()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(value), allow_pickle=False)
        os.replace(tmp, path)
    except OSError:  # sharing only saves time: a directory that cannot take the file costs a recomputation
        pass
    return value


def _reference(case: Case, steps: int) -> Any:
    """The reference trace of ``case`` over its first ``steps`` updates (a longer cached one is sliced)."""
    import optbridge
    from optbridge.tracing import Trace
    for (cid, path, ident, kind, n), tr in reversed(_CACHE.items()):
        if (cid, path, ident, kind) == (*_key(case), "ref") and n >= steps:
            return tr if n == steps else Trace(tr.groups, {h: a[:, :steps] for h, a in tr.data.items()}, tr.backend)
    return _cached((*_key(case), "ref", steps), lambda: optbridge.trace(case.plan, steps, metrics=case.metrics))


@dataclass
class Task:
    """One case on one backend, as a worker process receives it."""

    index: int
    case: Case
    backend: str
    steps: int
    deviations: list[Deviation]
    capped: bool = False
    budget: Budget | None = None
    keep_plot: bool = False

    @property
    def cost(self) -> float:
        from .cases import estimated_seconds
        return estimated_seconds(self.backend, self.steps)


def run_batch(tasks: Sequence[Task], release: bool = False) -> list[Result]:
    """Run ``tasks`` in order in this process (a worker's unit of work: one backend, several cases).

    ``release`` (the worker processes of ``--jobs N``): first stop the MegEngine interpreters an earlier batch
    started, if this batch is of another backend. An idle MegEngine interpreter keeps ~25% of a core busy (its
    ``CompNodeSync`` thread polls every 10 us, measured: 1.2 s of CPU per 5 s idle), taken from the next batch on
    the same pinned core; consecutive MegEngine batches keep theirs (a restart costs ~1.5 s: stopping them after
    every batch cost the MegEngine CI run 46 s against 14 s).
    """
    if release and tasks and tasks[0].backend != "megengine":
        from optbridge_adapters.worker import shutdown_workers

        from .traj_megengine import shutdown_servers
        shutdown_workers()
        shutdown_servers()
    return [run_one(t.case, t.backend, steps=t.steps, deviations=t.deviations, capped=t.capped, budget=t.budget,
                    keep_plot=t.keep_plot) for t in tasks]


def _fidelity_dicts(tr: Any) -> list[dict[str, str]]:
    return [{"group": str(f.group), "hyper": str(f.hyper), "form": str(f.form), "detail": str(f.detail)}
            for f in getattr(tr, "fidelity", ()) or ()]


def _error_text(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(e).__name__}: {' '.join(str(e).split())}{where}"


def run_one(case: Case, backend: str, *, steps: int, ref_steps: int | None = None,
            deviations: Sequence[Deviation] = (), capped: bool = False, budget: Budget | None = None,
            keep_plot: bool = False) -> Result:
    """Run ``case`` on ``backend`` for ``steps`` updates and judge it.

    ``ref_steps`` is accepted for compatibility and unused: the expected values are
    computed for exactly the updates compared. ``keep_plot`` keeps sampled values for
    a PNG of a passing result too (failing ones always keep them).
    """
    res = Result(case.id, backend, "pass", steps=steps, capped=capped, case_steps=case.steps, budget=budget)
    run = _trajectory if case.trajectory is not None else _schedule
    raw = run(case, backend, res, keep_plot)
    if raw is not None:
        judge(res, raw, [d for d in deviations if d.case == case.id and d.backend == backend])
    return res


def _attempt(res: Result, call: Any) -> tuple[Any, str]:
    """Run the backend: (its value, raw outcome); sets the message and the seconds."""
    t0 = time.perf_counter()
    value, raw = None, "ok"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = call()
    except UnsupportedError as e:
        raw, res.message = "unsupported", f"{e.node}: {e.reason}"
    except BackendUnavailable as e:  # the probe found it available: failing to run now is an error, not absence
        raw, res.message = "error", "the backend failed to run: " + " ".join(str(e).split())
    except Exception as e:
        raw, res.message = "error", _error_text(e)
    res.seconds = time.perf_counter() - t0
    return value, raw


def _schedule(case: Case, backend: str, res: Result, keep_plot: bool) -> str | None:
    """Compare the backend's per-step values with the reference's; the raw outcome (None: status set)."""
    import optbridge

    from .compare import compare_traces
    t_ref = time.perf_counter()
    try:
        ref = _reference(case, res.steps)
    except Exception as e:  # the case itself is broken
        res.status, res.message = "error", f"reference: {type(e).__name__}: {e}"
        return None
    res.overhead = time.perf_counter() - t_ref
    if backend == "reference":  # its trace is the reference trace: evaluated once
        got, raw = ref, "ok"
        res.seconds, res.overhead = res.overhead, 0.0
    else:
        got, raw = _attempt(res, lambda: optbridge.trace(case.plan, res.steps, backend=backend,
                                                          metrics=case.metrics))
    t0 = time.perf_counter()
    if got is not None:
        res.fidelity = _fidelity_dicts(got)
        res.series, res.problems = compare_traces(ref, got, backend, steps=res.steps,
                                                  override=case.tolerance_override(backend), case_id=case.id)
        if backend == "reference":
            res.problems += check_pins(case, got)
        if res.problems or any(not s.ok for s in res.series):
            raw = "mismatch"
        if keep_plot or raw == "mismatch":
            res.plot = _plot_payload(ref, got, res, res.steps)
        if any(f["form"] == "unsupported" for f in res.fidelity) and raw == "ok":
            res.message = "; ".join(f"{f['group']}/{f['hyper']}: {f['detail']}" for f in res.fidelity
                                    if f["form"] == "unsupported")
    res.overhead += time.perf_counter() - t0
    return raw


def _trajectory(case: Case, backend: str, res: Result, keep_plot: bool) -> str | None:
    """Compare the backend's parameters after every update with torch's; the raw outcome (None: status set)."""
    from . import trajectory as T
    try:
        fn = T.get_trajectory(backend)
    except BackendUnavailable as e:  # its trace backend is available (probed): a runner that cannot load is a bug
        res.status, res.message = "error", " ".join(str(e).split())
        return None
    if fn is None:
        res.status, res.message = "skip", f"no trajectory runner is registered for {backend}"
        return None
    t_ref = time.perf_counter()
    try:
        ins = T.inputs(case, case.steps)
        key = (*_key(case), "oracle", res.steps)
        want = _cached(key, lambda: _shared(key, lambda: T.run_backend(T.oracle(), case.plan, res.steps, ins,
                                                                       case.metrics)))
    except Exception as e:
        res.status, res.message = "error", f"torch oracle: {_error_text(e)}"
        return None
    res.overhead = time.perf_counter() - t_ref
    got, raw = _attempt(res, lambda: T.run_backend(fn, case.plan, res.steps, ins, case.metrics))
    t0 = time.perf_counter()
    if got is not None:
        tol = T.trajectory_tolerance(backend, case.tolerance_override(backend), case.id)
        res.series, res.problems = T.compare_trajectories(want, got, ins, tol)
        if res.problems or any(not s.ok for s in res.series):
            raw = "mismatch"
        if keep_plot or raw == "mismatch":
            res.plot = T.plot_series(want, got, ins, res.steps, res.series)
    res.overhead += time.perf_counter() - t0
    return raw


def _plot_payload(ref: Any, got: Any, res: Result, steps: int) -> dict[str, Any]:
    import numpy as np

    from .compare import series_values
    out: dict[str, Any] = {"groups": list(ref.groups)}
    stride = max(1, math.ceil(steps / PLOT_POINTS))
    base = np.arange(0, steps, stride, dtype=np.int64)
    fd = res.first_divergence()
    for hyper in ref.data:
        gv, source = series_values(got, hyper)
        if gv is None or gv.ndim != 2 or gv.shape[1] < steps or tuple(got.groups) != tuple(ref.groups):
            continue
        bad = [s.first_step for s in res.series if s.hyper == hyper and not s.ok and s.first_step is not None]
        idx = base
        marks = ([fd.first_step] if fd is not None and fd.first_step is not None else []) + ([min(bad)] if bad else [])
        for k in marks:
            idx = np.union1d(idx, np.arange(max(0, k - PLOT_WINDOW), min(steps, k + PLOT_WINDOW + 1)))
        idx = np.union1d(idx, [steps - 1])
        out[hyper] = {"idx": idx, "ref": np.asarray(ref.data[hyper])[:, idx], "got": gv[:, idx],
                      "source": source, "first": min(bad) if bad else None}
    return out
