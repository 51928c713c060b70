"""Whole-suite wall time of the conformance suite, and where the time goes, per backend.

Run: ``.venv/bin/python benchmarks/bench_conformance.py [--jobs N] [--random N] [--backends ...] [--json FILE]``

It runs ``optbridge conform`` in-process on every case and every backend (the
MegEngine worker included) exactly as the CLI does, then prints:

* the wall time of the whole run (goal on this 2-core machine: at most 120 s with
  ``--jobs 2 --random 20``) and the runner's own phases (case loading, backend
  probes, the batches, the advice check);
* per backend: the time inside the backend (its trace or trajectory; framework import
  included in its first case), the suite's own overhead (expected values and
  comparisons), the updates it stepped, the cost per update, and its slowest cases;
* the split between families (long horizons, trajectories, random plans, the rest);
* how busy the worker processes were (work / (wall x jobs));
* per backend, ``budget.yaml``'s cost estimate fitted to this run (least squares of each result's seconds
  over its updates: seconds per trace plus milliseconds per update), to refit the estimates the runner cuts
  its batches by when a backend's speed changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optbridge_conformance.command import Progress  # noqa: E402
from optbridge_conformance.runner import ALL_BACKENDS, run  # noqa: E402

GOAL_SECONDS = 120.0


def fit_cost(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares ``seconds = trace_s + updates * update_ms / 1000`` over ``(updates, seconds)`` points, the slope
    kept non-negative (when most traces run the cap, per-trace costs that differ, a reused optimizer against a
    compiled one, can tilt it below 0: then ``update_ms`` is 0 and ``trace_s`` the mean)."""
    n = len(points)
    if n == 0:
        return 0.0, 0.0
    sx = sum(x for x, _ in points)
    sy = sum(y for _, y in points)
    sxx = sum(x * x for x, _ in points)
    sxy = sum(x * y for x, y in points)
    den = n * sxx - sx * sx
    if den == 0:
        return sy / n, 0.0
    slope = (n * sxy - sx * sy) / den
    if slope < 0:
        return sy / n, 0.0
    return (sy - slope * sx) / n, 1e3 * slope


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--random", type=int, default=20, help="random plans (default 20, as the docs run)")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS))
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    os.environ.setdefault("GLOG_v", "3")
    t0 = time.perf_counter()
    r = run(a.cases, backends=a.backends.split(","), jobs=a.jobs, random=a.random, max_steps=a.max_steps,
            require_all=True, progress=Progress(enabled=sys.stderr.isatty()))
    wall = time.perf_counter() - t0
    by_backend: dict[str, list[Any]] = defaultdict(list)
    for (_case, b), res in r.results.items():
        by_backend[b].append(res)
    family = {c.id: c.family for c in r.cases}
    print(f"conformance suite: {len(r.cases)} cases ({a.random} random) x {len(r.backend_names)} backends, "
          f"jobs {a.jobs}: wall {wall:.1f} s (goal <= {GOAL_SECONDS:.0f} s), exit code {r.exit_code}")
    print("runner phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.timings.items()))
    print(f"{'backend':24s} {'backend s':>9s} {'suite s':>8s} {'updates':>10s} {'ms/update':>10s} "
          f"{'long s':>7s} {'traj s':>7s} {'random s':>8s} {'import s':>8s}  slowest cases")
    out: dict[str, Any] = {"wall_seconds": wall, "jobs": a.jobs, "cases": len(r.cases), "exit_code": r.exit_code,
                           "timings": r.timings, "backends": {}}
    work = 0.0
    for b in r.backends:
        rs = [x for x in by_backend[b.name] if x.status not in ("skip", "unavailable")]
        if not b.available:
            print(f"{b.name:24s} unavailable: {b.message}")
            continue
        trace_s = sum(x.seconds for x in rs)
        suite_s = sum(x.overhead for x in rs)
        work += trace_s + suite_s
        steps = sum(x.steps for x in rs)

        def share(fam: str, rs: list[Any] = rs) -> float:
            return sum(x.seconds for x in rs if family[x.case] == fam)

        slow = sorted(rs, key=lambda x: -x.seconds)[:3]
        slow_txt = ", ".join(f"{x.case} {x.seconds:.1f}s/{x.steps}" for x in slow)
        per = 1e3 * trace_s / steps if steps else 0.0
        print(f"{b.name:24s} {trace_s:9.1f} {suite_s:8.1f} {steps:10d} {per:10.3f} {share('long-horizon'):7.1f} "
              f"{share('trajectory'):7.1f} {share('random'):8.1f} {b.import_seconds:8.2f}  {slow_txt}")
        out["backends"][b.name] = {"backend_seconds": trace_s, "suite_seconds": suite_s, "updates": steps,
                                   "ms_per_update": per, "long_horizon_seconds": share("long-horizon"),
                                   "trajectory_seconds": share("trajectory"), "random_seconds": share("random"),
                                   "import_seconds": b.import_seconds, "counts": r.counts(b.name),
                                   "slowest": [(x.case, x.seconds, x.steps) for x in slow]}
        trace_cost, update_ms = fit_cost([(x.steps, x.seconds + x.overhead) for x in rs])
        out["backends"][b.name]["cost_fit"] = {"trace_s": trace_cost, "update_ms": update_ms}
    print("budget.yaml cost fitted to this run (seconds per trace + ms per update): " + ", ".join(
        f"{n} {v['cost_fit']['trace_s']:.3f} s + {v['cost_fit']['update_ms']:.4f} ms"
        for n, v in out["backends"].items()))
    busy = work / (wall * max(1, a.jobs)) if wall else 0.0
    out["busy"] = busy
    print(f"work in backends and comparisons: {work:.1f} s; the {a.jobs} process(es) were busy {100 * busy:.0f}% "
          "of the wall time (the rest: start-up, imports, waiting for the last batch)")
    from optbridge_conformance.report import terminal
    print()
    print(terminal(r, full=False), end="")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)  # MegEngine must not run with its site-packages as cwd
    sys.exit(main())
