"""The conformance runner: every case on every backend, compared with the reference.

Command line: ``optbridge conform [CASES...] [--backends ...] [--out DIR] [--jobs N] ...``
(see ``optbridge conform --help``; its body is :mod:`optbridge_conformance.command`);
from Python::

    from optbridge_conformance.runner import run
    r = run(backends=["reference", "torch"])
    r.exit_code          # 0: no unexpected result

The statuses and the result model are in :mod:`optbridge_conformance.results`; one
case on one backend in :mod:`optbridge_conformance.execute`.

Scheduling: the work is cut into batches of one framework's tasks (a case's
MindSpore forms together: they reuse each other's compiled optimizers), costed by
``budget.yaml``, the most expensive first; with ``--jobs N`` they go to N spawned
processes, an idle process taking a batch of a framework it already runs (imported
once, its worker interpreter started once) before one that another process runs
(:func:`pick`), and only its share of the work left (:func:`guided`: the last
batches shrink, so the processes finish together).

Exit status: 0, or 1 on any fail / xpass / error (and unavailable with ``--require-all``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from optbridge.errors import ConfigError

from .cases import Budget, Case, Deviation, load_cases, load_deviations, select_cases
from .execute import SHARED_DIR, Task, clear_cache, run_batch, run_one
from .probe import probe_backend
from .results import ALL_BACKENDS, FAILING, STATUSES, BackendInfo, Result, Run

__all__ = ["ALL_BACKENDS", "Result", "Run", "BackendInfo", "run", "run_one", "FAILING", "STATUSES", "plan_tasks",
           "batches", "pick", "guided", "framework"]

#: Batches per worker process (more: better balance at the end of a run; fewer: less overhead). With 6, the
#: suite's batches were ~30 s each and a misestimated last one left the other process idle for 45 s (measured
#: 2026-12-06); a batch costs ~0.1 s of overhead (its tasks and results cross the process boundary).
BATCHES_PER_JOB = 16


def _select(cases: Sequence[str] | Sequence[Case], random: int, seed: int, random_steps: int,
            steps: int | None, metrics: Sequence[float] | None) -> list[Case]:
    selected = [c for c in cases if isinstance(c, Case)]
    named = [c for c in cases if not isinstance(c, Case)]
    only_random = bool(named) and all(n == "family:random" for n in named)
    if only_random and not random:
        raise ConfigError("CASES", "family:random selects the random plans: give --random N", None, show_value=False)
    if not only_random and (named or not selected):
        selected += select_cases([n for n in named if n != "family:random"], steps=steps, metrics=metrics)
    if random:
        from .randplans import random_cases
        selected += random_cases(random, seed=seed, max_steps=random_steps)
    return selected


def _deviations(xfail_files: Sequence[str] | None) -> dict[str, list[Deviation]]:
    devs = load_deviations()
    if xfail_files:
        for b, ds in load_deviations(xfail_files).items():
            devs.setdefault(b, []).extend(ds)
    return devs


def plan_tasks(selected: Sequence[Case], infos: Sequence[BackendInfo], devs: dict[str, list[Deviation]], *,
               max_steps: int | None, budget: bool, plot: bool) -> tuple[list[Task], dict[tuple[str, str], Result]]:
    """The tasks to run, and the results decided without running (skip, unavailable)."""
    results: dict[tuple[str, str], Result] = {}
    tasks: list[Task] = []
    for case in selected:
        for info in infos:
            n, why = case.steps_for(info.name, budget=budget)
            capped = max_steps is not None and n > max_steps
            if capped:
                assert max_steps is not None
                n, why = max_steps, Budget(max_steps, case.steps, "--max-steps", "a quick run")
            restriction = case.restriction(info.name)
            if case.trajectory is not None and info.name == "reference":
                restriction = "the reference evaluates schedules; trajectories are compared with torch's parameters"
            if not info.available:
                results[(case.id, info.name)] = Result(case.id, info.name, "unavailable", message=info.message,
                                                       case_steps=case.steps)
            elif restriction:
                results[(case.id, info.name)] = Result(case.id, info.name, "skip", message=restriction,
                                                       case_steps=case.steps)
            else:
                tasks.append(Task(len(tasks), case, info.name, n, devs.get(info.name, []), capped, why, plot))
    return tasks, results


def framework(backend: str) -> str:
    """The unit a batch holds: a framework (the three MindSpore forms are one), or the backend itself."""
    from optbridge.versions import framework_of_backend
    return framework_of_backend(backend) or backend


def _by_case(tasks: Sequence[Task]) -> list[list[Task]]:
    """``tasks`` (of one framework) as runs of one case each, the most expensive case first."""
    runs: dict[str, list[Task]] = {}
    for t in tasks:
        runs.setdefault(t.case.id, []).append(t)
    return sorted(runs.values(), key=lambda r: -sum(t.cost for t in r))


def batches(tasks: Sequence[Task], jobs: int) -> list[list[Task]]:
    """Tasks cut into batches of one framework each, most expensive batch first.

    A batch holds tasks of one framework (:func:`framework`) adding up to about
    ``total / (jobs * BATCHES_PER_JOB)`` estimated seconds (``budget.yaml`` costs), so a
    process imports a framework once and the last batches are small enough to even out
    the processes. A case's tasks on the backends of one framework stay together: the
    MindSpore forms of a case often build optimizers of one structure, which the process
    that compiled them reuses (``reuse.Setups``; the 28-group `real-mae-finetune-layer-decay`
    traces in 4.4 s cold and 1.2-1.4 s after its other form, measured on one core).
    """
    total = sum(t.cost for t in tasks)
    target = total / max(1, jobs * BATCHES_PER_JOB)
    out: list[list[Task]] = []
    by_framework: dict[str, list[Task]] = {}
    for t in tasks:
        by_framework.setdefault(framework(t.backend), []).append(t)
    for group in by_framework.values():
        cur: list[Task] = []
        acc = 0.0
        for run in _by_case(group):
            cost = sum(t.cost for t in run)
            if cur and acc + cost > target:
                out.append(cur)
                cur, acc = [], 0.0
            cur.extend(run)
            acc += cost
        if cur:
            out.append(cur)
    out.sort(key=lambda b: -sum(t.cost for t in b))
    return out


def pick(pending: Sequence[list[Task]], mine: set[str], elsewhere: set[str]) -> int:
    """Which pending batch an idle process takes (the list is most expensive first).

    A batch of a framework this process already runs (:func:`framework`: it is imported,
    its worker interpreter started, its compiled optimizers and expected values cached);
    else one of a framework no other process runs yet; else the most expensive.
    ``mine`` and ``elsewhere`` hold frameworks.
    """
    for i, b in enumerate(pending):
        if framework(b[0].backend) in mine:
            return i
    for i, b in enumerate(pending):
        if framework(b[0].backend) not in elsewhere:
            return i
    return 0


def guided(batch: list[Task], remaining: float, jobs: int) -> tuple[list[Task], list[Task]]:
    """Guided self-scheduling: the part of ``batch`` a process takes now, and the part it leaves pending.

    ``remaining`` is the estimated cost of every task not yet started (``batch`` included). A process takes at
    most ``remaining / (2 * jobs)`` of it (at least one task), so the batches shrink as the run nears its end
    and the processes finish together, even where the estimates are off (the last batch of 45 cases left the
    other process idle for 6.3 s of a 115 s run, measured 2026-12-07). A case's tasks stay together
    (:func:`batches`).
    """
    share = remaining / (2 * max(1, jobs))
    acc, cut = 0.0, len(batch)
    for i, t in enumerate(batch):
        acc += t.cost
        if acc > share:
            cut = max(1, i)
            break
    while 0 < cut < len(batch) and batch[cut].case.id == batch[cut - 1].case.id:
        cut += 1
    return batch[:cut], batch[cut:]


def cpu_shares(jobs: int) -> list[set[int] | None]:
    """Per worker process, the CPUs it runs on: this process's CPUs dealt out evenly (None: no pinning, when
    there are fewer CPUs than jobs or the platform cannot pin).

    MindSpore's runtime keeps threads busy around every compiled call; two unpinned workers on two cores
    slow each other down (measured: 40 cell-form traces side by side 32-34 s each unpinned, 27-30 s pinned).
    """
    import os
    if not hasattr(os, "sched_getaffinity"):
        return [None] * jobs
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < jobs or jobs < 2:
        return [None] * jobs
    return [set(cpus[j::jobs]) for j in range(jobs)]


#: Environment of the worker processes, set before they import a framework. Both variables change when
#: MindSpore's kernels run, not what they compute (tests/test_mindspore_trace.py compares traces with and without
#: them bit for bit):
#:
#: * ``MS_DEV_LAUNCH_BLOCKING=1``: MindSpore launches each op in the calling thread instead of handing it to its
#:   runtime threads. On a worker pinned to one core every handoff waits for a context switch: an eager
#:   ``ops.assign`` then ``asnumpy()`` took 1.5 ms pinned and 0.06 ms with it (measured 2026-12-06).
#: * ``MS_DEV_HOST_BLOCKING_RUN=1``: a compiled graph (an optimizer's jit ``construct``) runs in the calling thread
#:   too. Without it every optimizer call hands the graph to the runtime's pipeline threads: pinned to one core, a
#:   training-loop update of a 2-group nn.SGD (two probe resets, the call, two reads) took 1.65 ms, with it
#:   0.57 ms; the list-form conformance traces on one core 210 -> 125 s (measured 2026-12-07).
PROCESS_ENV = {"MS_DEV_LAUNCH_BLOCKING": "1", "MS_DEV_HOST_BLOCKING_RUN": "1"}


def _worker_init(cpus: set[int] | None, shared: str) -> None:
    """Worker initializer: :data:`PROCESS_ENV`, the run's shared directory (:data:`.execute.SHARED_DIR`), and run
    on ``cpus`` (see :func:`cpu_shares`)."""
    import os
    for k, v in PROCESS_ENV.items():
        os.environ.setdefault(k, v)
    os.environ[SHARED_DIR] = shared
    if cpus:
        try:
            os.sched_setaffinity(0, cpus)
        except OSError:  # the CPU set changed since: run unpinned rather than fail every batch
            pass


#: What a worker traces while the parent probes the backends (:func:`_warm`).
_WARM_PLAN = {"optbridge": 1, "optimizer": {"type": "SGD", "lr": 0.1}, "schedule": {"lr": {"kind": "cosine",
                                                                                          "steps": 4}}}


def _probe_all(backends: Sequence[str]) -> list[BackendInfo]:
    """A worker's probe of every backend of the run, for the parent (:meth:`_Workers.probe`)."""
    return [probe_backend(b) for b in backends]


def _warm(backends: Sequence[str]) -> None:
    """A worker's first task, while the parent probes the backends: import each backend and trace two updates
    of :data:`_WARM_PLAN` (the imports a first trace makes: torch's dynamo, MindSpore's compile pipeline; ~4 and
    ~3 s, measured). Not MegEngine's: its worker interpreter would idle until its batch, burning CPU."""
    import optbridge
    for name in backends:
        try:
            if probe_backend(name).available and name not in ("reference", "megengine"):
                optbridge.trace(optbridge.load(_WARM_PLAN), 2, backend=name)
        except Exception:  # noqa: BLE001 - the parent's probe and the batches report what fails
            pass


class _Workers:
    """The ``jobs`` spawned worker processes of a run.

    Started when the run has loaded its cases, each first imports the run's backends and traces a tiny plan
    on each (:func:`_warm`: ~7 s of imports). The first also probes the backends for the parent
    (:meth:`probe`), so the parent imports no framework: it would take CPU from the workers' imports (the
    parent's own probes took 7.3 s of a 139 s run, measured 2026-12-07). Each is pinned to its share of the
    CPUs (:func:`cpu_shares`), runs with :data:`PROCESS_ENV` set, and shares the torch oracle's trajectories
    with the others through a temporary directory (:data:`.execute.SHARED_DIR`).
    """

    def __init__(self, jobs: int, backends: Sequence[str]) -> None:
        import multiprocessing as mp
        self.jobs = jobs
        self._ctx = mp.get_context("spawn")
        self._shares = cpu_shares(jobs)
        self._shared = tempfile.TemporaryDirectory(prefix="optbridge-conform-")
        self._pools = [self._start(j) for j in range(jobs)]
        # a worker knows only the built-in backends (a spawned process does not see register_backend calls here)
        self._probes = (self._pools[0].submit(_probe_all, tuple(backends))
                        if all(b in ALL_BACKENDS for b in backends) else None)
        for pool in self._pools:
            pool.submit(_warm, tuple(backends))

    def probe(self, backends: Sequence[str]) -> list[BackendInfo]:
        """The backends' :class:`BackendInfo`, as the first worker probed them (this process probes them when the
        run names a backend a worker does not know, or the worker failed)."""
        if self._probes is not None:
            try:
                infos: list[BackendInfo] = self._probes.result()
                return infos
            except Exception:  # noqa: BLE001 - the process died while importing: probe here, as without workers
                pass
        return [probe_backend(b) for b in backends]

    def _start(self, j: int) -> Any:
        from concurrent.futures import ProcessPoolExecutor
        return ProcessPoolExecutor(max_workers=1, mp_context=self._ctx, initializer=_worker_init,
                                   initargs=(self._shares[j], self._shared.name))

    def _submit(self, j: int, batch: list[Task]) -> Any:
        from concurrent.futures import BrokenExecutor
        try:
            return self._pools[j].submit(run_batch, batch, True)
        except BrokenExecutor:  # the process died before this batch (while importing): a new one takes it
            self._pools[j] = self._start(j)
            return self._pools[j].submit(run_batch, batch, True)

    def run(self, work: list[list[Task]]) -> Iterator[Result]:
        """Run the batches, each process kept to few backends (:func:`pick`)."""
        from concurrent.futures import FIRST_COMPLETED, Future, wait
        jobs = self.jobs
        seen: list[set[str]] = [set() for _ in range(jobs)]
        pending = list(work)
        running: dict[Future[list[Result]], tuple[int, list[Task]]] = {}
        while pending or running:
            busy = {j for j, _ in running.values()}
            for j in range(jobs):
                if pending and j not in busy:
                    others = set().union(*(seen[i] for i in busy))
                    chosen = pending.pop(pick(pending, seen[j], others))
                    remaining = sum(t.cost for b in pending for t in b) + sum(t.cost for t in chosen)
                    batch, rest = guided(chosen, remaining, jobs)
                    if rest:  # first in line: this process takes it next (pick: its own backend first)
                        pending.insert(0, rest)
                    seen[j].add(framework(batch[0].backend))
                    running[self._submit(j, batch)] = (j, batch)
                    busy.add(j)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                j, batch = running.pop(f)
                try:
                    results = f.result()
                except Exception as e:  # the process died (a framework crash): these results are errors
                    why = f"the worker process failed: {type(e).__name__}: {' '.join(str(e).split())}"
                    results = [Result(t.case.id, t.backend, "error", steps=t.steps, message=why,
                                      case_steps=t.case.steps, budget=t.budget) for t in batch]
                    self._pools[j].shutdown(wait=False, cancel_futures=True)
                    self._pools[j] = self._start(j)
                    seen[j] = set()
                yield from results

    def close(self) -> None:
        """Stop the processes (each after its current task), side by side, and remove the shared directory.

        A process's exit takes ~1.4 s (its MegEngine interpreters stop, MindSpore and torch tear down): waiting for
        one after the other added ~2.9 s to a run (measured 2026-12-07)."""
        import threading
        stops = [threading.Thread(target=p.shutdown, kwargs={"wait": True, "cancel_futures": True})
                 for p in self._pools]
        for t in stops:
            t.start()
        for t in stops:
            t.join()
        self._shared.cleanup()


def run(cases: Sequence[str] | Sequence[Case] = (), *, backends: Sequence[str] | None = None,
        jobs: int = 1, max_steps: int | None = None, require_all: bool = False,
        strict_unsupported: bool = False, xfail_files: Sequence[str] | None = None, random: int = 0,
        seed: int = 0, random_steps: int = 120, progress: Callable[[int, int, str], None] | None = None,
        budget: bool = True, plot: bool = False, steps: int | None = None,
        metrics: Sequence[float] | None = None) -> Run:
    """Run cases (ids, globs, ``family:NAME``, case files, config files, or Case objects; none: all) on backends.

    Args:
        backends: Names (default: :data:`ALL_BACKENDS`); unavailable ones are reported, not run.
        jobs: Worker processes (1: in this process).
        max_steps: Cap every case's steps (a quick smoke run); expected deviations beyond the cap
            are not required to show.
        require_all: An unavailable backend fails the run (CI).
        strict_unsupported: An ``unsupported`` not listed in ``xfail/`` fails the run.
        xfail_files: Extra expected-deviation files (added to ``xfail/*.yaml``).
        random: Also run this many hypothesis-generated plans (``seed``, up to ``random_steps`` steps).
        progress: A callable ``(done, total, label)``.
        budget: Cap each backend's updates per case as ``budget.yaml`` says (every shortened result
            says so, with the reason); False runs every case in full.
        plot: Keep sampled values of every result for PNGs (failing ones always keep them).
        steps, metrics: Updates and plateau metrics of plain config files among ``cases``.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    names = list(backends) if backends else list(ALL_BACKENDS)
    selected = _select(cases, random, seed, random_steps, steps, metrics)
    devs = _deviations(xfail_files)
    known = {c.id for c in load_cases()} | {c.id for c in selected}
    stale = [f"{d.source}: {d.label()} names no case" for ds in devs.values() for d in ds if d.case not in known]
    timings["load"] = time.perf_counter() - t_start
    # the worker processes start importing the frameworks now, while this process probes the backends
    workers = _Workers(jobs, names) if jobs > 1 and len(selected) * len(names) > 1 else None
    try:
        t0 = time.perf_counter()
        infos = workers.probe(names) if workers is not None else [probe_backend(b) for b in names]
        timings["probe"] = time.perf_counter() - t0
        tasks, results = plan_tasks(selected, infos, devs, max_steps=max_steps, budget=budget, plot=plot)
        total, done = len(tasks), 0

        def tick(r: Result) -> None:
            nonlocal done
            done += 1
            results[(r.case, r.backend)] = r
            if progress:
                progress(done, total, f"{r.case} @ {r.backend}: {r.status}")

        t0 = time.perf_counter()
        work = batches(tasks, jobs)
        if workers is None or len(work) <= 1:
            for b in work:
                for t in b:
                    tick(run_batch([t])[0])
            clear_cache()
        else:
            for r in workers.run(work):
                tick(r)
        timings["run"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        from .advice import check_advice
        check_advice(selected, results)
        timings["advice"] = time.perf_counter() - t0
        order = {c.id: i for i, c in enumerate(selected)}
        results = dict(sorted(results.items(), key=lambda kv: (order[kv[0][0]], names.index(kv[0][1]))))
        return Run(cases=selected, backends=infos, results=results, seconds=time.perf_counter() - t_start,
                   started=time.strftime("%Y-%m-%d %H:%M:%S"), stale=stale, timings=timings,
                   options={"backends": names, "jobs": jobs, "max_steps": max_steps,
                            "require_all": require_all, "strict_unsupported": strict_unsupported, "random": random,
                            "seed": seed, "random_steps": random_steps, "xfail_files": list(xfail_files or []),
                            "budget": budget, "plot": plot, "steps": steps})
    finally:
        if workers is not None:
            workers.close()
