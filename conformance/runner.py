"""The conformance runner: every case on every backend, compared with the reference.

Command line: ``optbridge conform [CASES...] [--backends ...] [--out DIR] [--jobs N] ...``
(see ``optbridge conform --help``); from Python::

    from optbridge_conformance.runner import run
    r = run(backends=["reference", "torch"])
    r.exit_code          # 0: no unexpected result

Statuses of one case on one backend:

* ``pass``: every step of every group and hyperparameter is within the backend's tolerance;
* ``fail``: a value is out of tolerance (the first divergent step, group, hyperparameter,
  expected and got are reported), or the trace does not line up (groups, shape);
* ``xfail``: a mismatch (or error) listed in ``xfail/<backend>.yaml``, with its reason;
* ``xpass``: listed there but it passed: the ledger is stale, and that **fails the run**;
* ``unsupported``: the backend raised ``UnsupportedError`` (its reason is shown). Its own status,
  not a failure: a backend may refuse what it cannot express exactly, never approximate. An
  ``expect: unsupported`` entry documents it; ``--strict-unsupported`` fails unlisted ones;
* ``error``: the backend raised anything else (a bug), unless listed with ``expect: error``;
* ``skip``: the case does not run on this backend (its ``backends:`` field says why);
* ``unavailable``: the backend cannot be imported (framework missing, or not registered yet);
  a failure only with ``--require-all`` (CI).

Exit status: 0, or 1 on any fail / xpass / error (and unavailable with ``--require-all``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbridge.errors import BackendUnavailable, ConfigError, UnsupportedError

from .cases import Case, Deviation, load_deviations, select_cases

__all__ = ["ALL_BACKENDS", "Result", "Run", "BackendInfo", "run", "run_one", "main", "cmd_conform",
           "FAILING", "STATUSES"]

#: The backends of the contract (docs/adapters.md), in report order.
ALL_BACKENDS = ("reference", "torch", "mindspore-list", "mindspore-cell", "mindspore-experimental", "megengine")
STATUSES = ("pass", "fail", "xfail", "xpass", "unsupported", "error", "skip", "unavailable")
FAILING = frozenset({"fail", "xpass", "error"})

#: Points of the overview kept per series for plots, and steps kept on each side of a divergence.
PLOT_POINTS = 600
PLOT_WINDOW = 40


# --------------------------------------------------------------------------- results

@dataclass
class Result:
    """One case on one backend."""

    case: str
    backend: str
    status: str
    steps: int = 0
    seconds: float = 0.0                    # the backend's trace
    overhead: float = 0.0                   # reference trace and comparison, for this result
    message: str = ""                       # reason (skip, unsupported, unavailable), error text, verdict notes
    series: list[Any] = field(default_factory=list)        # compare.SeriesResult
    problems: list[str] = field(default_factory=list)
    fidelity: list[dict[str, str]] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)    # reasons of the xfail entries that apply
    expected: bool = False                  # the status is the one xfail/ asked for
    bug: bool = False                       # an xfail entry of kind backend-bug applies
    capped: bool = False                    # steps were capped by --max-steps
    case_steps: int = 0                     # the case's own steps (more than `steps` under a budget cap)
    plot: dict[str, Any] | None = None      # sampled traces for plots

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(sorted({f["form"] for f in self.fidelity}))

    def first_divergence(self) -> Any | None:
        bad = [s for s in self.series if not s.ok]
        return min(bad, key=lambda s: (s.first_step, s.hyper, s.group)) if bad else None

    def to_json(self) -> dict[str, Any]:
        fd = self.first_divergence()
        return {
            "case": self.case, "backend": self.backend, "status": self.status, "expected": self.expected,
            "backend_bug": self.bug,
            "steps": self.steps, "capped": self.capped, "seconds": round(self.seconds, 4),
            "overhead_seconds": round(self.overhead, 4), "message": self.message,
            "forms": list(self.forms), "fidelity": self.fidelity, "deviations": self.deviations,
            "problems": self.problems,
            "first_divergence": None if fd is None else {
                "step": fd.first_step, "group": fd.group, "hyper": fd.hyper, "expected": fd.expected,
                "got": fd.got, "bound": fd.bound, "bad_steps": fd.n_bad, "source": fd.source,
                "tolerance": fd.tolerance.describe()},
            "series": [s.to_json() for s in self.series],
        }


@dataclass
class BackendInfo:
    name: str
    available: bool
    message: str = ""
    precision: str = "float64"
    import_seconds: float = 0.0


@dataclass
class Run:
    """Everything one conformance run produced."""

    cases: list[Case]
    backends: list[BackendInfo]
    results: dict[tuple[str, str], Result]
    options: dict[str, Any]
    seconds: float = 0.0
    started: str = ""
    stale: list[str] = field(default_factory=list)    # xfail entries naming no known case

    @property
    def backend_names(self) -> list[str]:
        return [b.name for b in self.backends]

    def result(self, case: str, backend: str) -> Result:
        return self.results[(case, backend)]

    def failures(self) -> list[Result]:
        out = [r for r in self.results.values() if r.failing]
        if self.options.get("require_all"):
            out += [r for r in self.results.values() if r.status == "unavailable"]
        if self.options.get("strict_unsupported"):  # random plans have no ledger: their refusals stay informative
            rnd = {c.id for c in self.cases if c.family == "random"}
            out += [r for r in self.results.values() if r.status == "unsupported" and not r.expected
                    and r.case not in rnd]
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.failures() or self.stale else 0

    def counts(self, backend: str) -> dict[str, int]:
        c = {s: 0 for s in STATUSES}
        for (case, b), r in self.results.items():
            if b == backend:
                c[r.status] += 1
        return c


# --------------------------------------------------------------------------- one case on one backend

_REF_CACHE: list[Any] = []   # [case, steps, trace]: the last reference trace (long horizons are large)


def _reference(case: Case, steps: int) -> Any:
    import optbridge
    same = bool(_REF_CACHE) and (_REF_CACHE[0] is case or _REF_CACHE[0].doc == case.doc) and _REF_CACHE[1] == steps
    if not same:
        _REF_CACHE[:] = [case, steps, optbridge.trace(case.plan, steps, metrics=case.metrics)]
    return _REF_CACHE[2]


def _fidelity_dicts(tr: Any) -> list[dict[str, str]]:
    out = []
    for f in getattr(tr, "fidelity", ()) or ():
        out.append({"group": str(f.group), "hyper": str(f.hyper), "form": str(f.form), "detail": str(f.detail)})
    return out


def run_one(case: Case, backend: str, *, steps: int, ref_steps: int, deviations: Sequence[Deviation] = (),
            capped: bool = False, keep_plot: bool = True) -> Result:
    """Run ``case`` on ``backend`` for ``steps`` updates and judge it against the reference."""
    import optbridge

    from .compare import compare_traces
    res = Result(case.id, backend, "pass", steps=steps, capped=capped, case_steps=case.steps)
    t_ref = time.perf_counter()
    try:
        ref = _reference(case, ref_steps)
    except Exception as e:  # the case itself is broken
        res.status, res.message = "error", f"reference: {type(e).__name__}: {e}"
        return res
    t0 = time.perf_counter()
    res.overhead = t0 - t_ref
    raw = "ok"
    got = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = optbridge.trace(case.plan, steps, backend=backend, metrics=case.metrics)
    except UnsupportedError as e:
        raw, res.message = "unsupported", f"{e.node}: {e.reason}"
    except BackendUnavailable as e:
        res.status, res.message = "unavailable", str(e)
        res.seconds = time.perf_counter() - t0
        return res
    except Exception as e:
        raw = "error"
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        res.message = f"{type(e).__name__}: {' '.join(str(e).split())}{where}"
    res.seconds = time.perf_counter() - t0
    if got is not None:
        res.fidelity = _fidelity_dicts(got)
        res.series, res.problems = compare_traces(ref, got, backend, steps=steps,
                                                  override=case.tolerance_override(backend), case_id=case.id)
        if backend == "reference":
            res.problems += _check_pins(case, got)
        if res.problems or any(not s.ok for s in res.series):
            raw = "mismatch"
        if keep_plot:
            res.plot = _plot_payload(ref, got, res, steps)
        if any(f["form"] == "unsupported" for f in res.fidelity) and raw == "ok":
            res.message = "; ".join(f"{f['group']}/{f['hyper']}: {f['detail']}" for f in res.fidelity
                                    if f["form"] == "unsupported")
    _judge(res, raw, [d for d in deviations if d.case == case.id and d.backend == backend])
    res.overhead += time.perf_counter() - t0 - res.seconds
    return res


def _check_pins(case: Case, tr: Any) -> list[str]:
    """Hand-computed values (the case's ``pins``) that anchor the reference itself."""
    out = []
    for pin in case.pins:
        h = pin.get("hyper", "lr")
        k = int(pin["step"])
        if h not in tr.data or pin["group"] not in tr.groups or k >= tr.steps:
            out.append(f"pin {pin}: not in the trace")
            continue
        v = float(tr.data[h][tr.groups.index(pin["group"]), k])
        want = float(pin["value"])
        if not abs(v - want) <= float(pin.get("rel", 1e-12)) * abs(want):
            out.append(f"pin: step {k}, group {pin['group']}, {h}: hand-computed {want!r}, reference {v!r}")
    return out


def _judge(res: Result, raw: str, devs: Sequence[Deviation]) -> None:
    """Turn the raw outcome (ok / mismatch / unsupported / error) into a status, applying xfail entries."""
    if not devs:
        res.status = {"ok": "pass", "mismatch": "fail", "unsupported": "unsupported", "error": "error"}[raw]
        return
    res.deviations = [f"{d.label()}: expected {d.expect}" + (" (backend bug)" if d.kind == "backend-bug" else "")
                      + f": {d.reason}" for d in devs]
    res.bug = any(d.kind == "backend-bug" for d in devs)
    expects = {d.expect for d in devs}
    if raw == "ok":
        if res.capped:  # the deviation lies beyond the capped horizon
            res.status = "pass"
            res.message = "capped by --max-steps before the expected deviation"
            return
        res.status = "xpass"
        res.message = "listed as expected " + "/".join(sorted(expects)) + " but passed: update xfail/" + \
            f"{res.backend}.yaml ({'; '.join(d.reason for d in devs)})"
        return
    want = {"mismatch": "mismatch", "unsupported": "unsupported", "error": "error"}[raw]
    match = [d for d in devs if d.expect == want]
    if not match:
        res.status = {"mismatch": "fail", "unsupported": "unsupported", "error": "error"}[raw]
        res.message = (res.message + "; " if res.message else "") + \
            f"expected {'/'.join(sorted(expects))} per xfail/{res.backend}.yaml, got {raw}"
        if raw == "unsupported":  # listed as a mismatch, now refused: the ledger is stale
            res.status = "fail"
        return
    if raw != "mismatch":
        res.status = "unsupported" if raw == "unsupported" else "xfail"
        res.expected = True
        return
    bad = [s for s in res.series if not s.ok]
    uncovered = [s for s in bad if not any(d.covers(s.group, s.hyper) for d in match)]
    if res.problems and not any(d.group is None and d.hyper is None for d in match):
        uncovered.append(None)
    stale = [d for d in match if not any(d.covers(s.group, s.hyper) for s in bad)
             and not (res.problems and d.group is None and d.hyper is None)]
    if uncovered:
        res.status = "fail"
        names = ", ".join(f"{s.group}/{s.hyper}" for s in uncovered if s is not None) or "trace structure"
        res.message = f"mismatch not covered by xfail/{res.backend}.yaml: {names}"
    elif stale and not res.capped:
        res.status = "xpass"
        res.message = "expected mismatch passes: " + "; ".join(d.label() for d in stale)
    else:
        res.status, res.expected = "xfail", True


def _plot_payload(ref: Any, got: Any, res: Result, steps: int) -> dict[str, Any]:
    import numpy as np

    from .compare import series_values
    out: dict[str, Any] = {"groups": list(ref.groups)}
    stride = max(1, math.ceil(steps / PLOT_POINTS))
    base = np.arange(0, steps, stride, dtype=np.int64)
    for hyper in ref.data:
        gv, source = series_values(got, hyper)
        if gv is None or gv.ndim != 2 or gv.shape[1] < steps or tuple(got.groups) != tuple(ref.groups):
            continue
        bad = [s.first_step for s in res.series if s.hyper == hyper and not s.ok]
        idx = base
        if bad:
            k = min(bad)
            idx = np.union1d(base, np.arange(max(0, k - PLOT_WINDOW), min(steps, k + PLOT_WINDOW + 1)))
        idx = np.union1d(idx, [steps - 1])
        out[hyper] = {"idx": idx, "ref": np.asarray(ref.data[hyper])[:, idx], "got": gv[:, idx],
                      "source": source, "first": min(bad) if bad else None}
    return out


# --------------------------------------------------------------------------- a whole run

def _probe_backend(name: str) -> BackendInfo:
    from optbridge.backends import get_backend

    from .compare import backend_tolerances
    prec = backend_tolerances(name)["default"].precision
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            get_backend(name)
    except ConfigError:
        if name in ALL_BACKENDS:
            return BackendInfo(name, False, "not registered in optbridge.backends yet", prec)
        raise ConfigError("--backends", "must name registered backends (" + ", ".join(ALL_BACKENDS) + ")",
                          name) from None
    except ImportError as e:  # BackendUnavailable is an ImportError
        return BackendInfo(name, False, " ".join(str(e).split()), prec)
    return BackendInfo(name, True, "", prec, time.perf_counter() - t0)


@dataclass
class _Task:
    index: int
    case: Case
    backend: str
    steps: int
    ref_steps: int
    deviations: list[Deviation]
    capped: bool


def _worker(task: _Task) -> Result:
    return run_one(task.case, task.backend, steps=task.steps, ref_steps=task.ref_steps,
                   deviations=task.deviations, capped=task.capped)


def run(cases: Sequence[str] | Sequence[Case] = (), *, backends: Sequence[str] | None = None,
        jobs: int = 1, max_steps: int | None = None, require_all: bool = False,
        strict_unsupported: bool = False, xfail_files: Sequence[str] | None = None, random: int = 0,
        seed: int = 0, random_steps: int = 120, progress: Any = None) -> Run:
    """Run cases (ids, globs, ``family:NAME``, files, or Case objects; none: all) on backends.

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
    """
    t_start = time.perf_counter()
    selected = [c for c in cases if isinstance(c, Case)]
    named = [c for c in cases if not isinstance(c, Case)]
    only_random = bool(named) and all(n == "family:random" for n in named)
    if only_random and not random:
        raise ConfigError("CASES", "family:random selects the random plans: give --random N", None, show_value=False)
    if not only_random and (named or not selected):
        selected += select_cases([n for n in named if n != "family:random"])
    if random:
        from .randplans import random_cases
        selected += random_cases(random, seed=seed, max_steps=random_steps)
    devs = load_deviations()
    if xfail_files:
        for b, ds in load_deviations(xfail_files).items():
            devs.setdefault(b, []).extend(ds)
    from .cases import load_cases
    known = {c.id for c in load_cases()} | {c.id for c in selected}
    stale = [f"{d.source}: {d.label()} names no case" for ds in devs.values() for d in ds if d.case not in known]
    names = list(backends) if backends else list(ALL_BACKENDS)
    infos = [_probe_backend(b) for b in names]
    results: dict[tuple[str, str], Result] = {}
    tasks: list[_Task] = []
    for case in selected:
        mine: list[_Task] = []
        for info in infos:
            n = case.steps_for(info.name)
            capped = max_steps is not None and n > max_steps
            if capped:
                n = max_steps  # type: ignore[assignment]
            why = case.restriction(info.name)
            if not info.available:
                results[(case.id, info.name)] = Result(case.id, info.name, "unavailable", message=info.message)
            elif why:
                results[(case.id, info.name)] = Result(case.id, info.name, "skip", message=why)
            else:
                mine.append(_Task(len(tasks) + len(mine), case, info.name, n, 0, devs.get(info.name, []), capped))
        for t in mine:  # one reference trace per case, as long as its longest backend run
            t.ref_steps = max(x.steps for x in mine)
        tasks += mine
    total = len(tasks)
    done = 0

    def tick(r: Result) -> None:
        nonlocal done
        done += 1
        results[(r.case, r.backend)] = r
        if progress:
            progress(done, total, f"{r.case} @ {r.backend}: {r.status}")

    if jobs <= 1 or total <= 1:
        for t in tasks:
            tick(_worker(t))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from .cases import estimated_seconds
        order = sorted(tasks, key=lambda t: -estimated_seconds(t.backend, t.steps))  # longest first
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, t) for t in order]
            for f in as_completed(futures):
                tick(f.result())
    _REF_CACHE.clear()
    order = {c.id: i for i, c in enumerate(selected)}
    results = dict(sorted(results.items(), key=lambda kv: (order[kv[0][0]], names.index(kv[0][1]))))
    return Run(cases=selected, backends=infos, results=results, seconds=time.perf_counter() - t_start,
               started=time.strftime("%Y-%m-%d %H:%M:%S"), stale=stale,
               options={"backends": names, "jobs": jobs, "max_steps": max_steps, "require_all": require_all,
                        "strict_unsupported": strict_unsupported, "random": random, "seed": seed,
                        "random_steps": random_steps, "xfail_files": list(xfail_files or [])})


# --------------------------------------------------------------------------- command line

class Progress:
    """A plain-text progress bar on a terminal; sparse lines otherwise (CI logs)."""

    def __init__(self, stream: Any = None, enabled: bool = True, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.last_pct = -1
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled or total == 0:
            return
        frac = done / total
        elapsed = time.perf_counter() - self.t0
        if self.tty:
            n = int(frac * self.width)
            bar = "#" * n + "-" * (self.width - n)
            text = f"\r[{bar}] {done}/{total} {elapsed:5.0f}s  {label}"
            cols = _columns()
            self.stream.write(text[:cols - 1].ljust(cols - 1) if cols > 20 else text)
            if done == total:
                self.stream.write("\n")
            self.stream.flush()
        else:
            pct = int(frac * 10) * 10
            if pct != self.last_pct:
                self.last_pct = pct
                self.stream.write(f"conform: {pct:3d}% ({done}/{total}, {elapsed:.0f}s)\n")
                self.stream.flush()


def _columns() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def cmd_conform(args: argparse.Namespace) -> int:
    """``optbridge conform``: the arguments are defined in :mod:`optbridge.cli`."""
    from . import report
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only (its warnings would bury the table)
    if args.list:
        for c in select_cases(args.cases):
            print(f"{c.id:44s} {c.family:18s} {c.steps:>9d}  {c.description[:70]}")
        return 0
    backends = None
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        if not backends:
            raise ConfigError("--backends", "name at least one backend", args.backends)
    prog = Progress(enabled=not args.quiet)
    r = run(args.cases, backends=backends, jobs=args.jobs, max_steps=args.max_steps, require_all=args.require_all,
            strict_unsupported=args.strict_unsupported, xfail_files=args.xfail, random=args.random,
            seed=args.seed, random_steps=args.random_steps, progress=prog)
    out = sys.stdout
    out.write(report.terminal(r, full=not args.quiet))
    if args.out:
        written = report.write_reports(r, Path(args.out), plots=not args.no_plots)
        out.write(f"wrote {', '.join(str(p) for p in written[:3])}"
                  + (f" and {len(written) - 3} more" if len(written) > 3 else "") + "\n")
    if args.write_docs:
        path = Path(args.write_docs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.docs(r), encoding="utf-8")
        out.write(f"wrote {path}\n")
    return r.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m optbridge_conformance.runner ...`` is ``optbridge conform ...``."""
    from optbridge.cli import main as cli_main
    return cli_main(["conform", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
