"""Whole-suite wall time of the conformance suite, and where the time goes.

Run: ``.venv/bin/python benchmarks/bench_conformance.py [--jobs N] [--random N] [--backends ...] [--json FILE]``

It runs ``optbridge conform`` in-process on every case and every backend (the
MegEngine worker included) exactly as the CLI does, then prints:

* the wall time of the whole run (goal on this 2-core machine: at most 5 minutes);
* per backend: the time inside the backend's ``trace`` (framework import included
  in its first case), the suite's own overhead (reference traces and comparisons),
  the number of updates it stepped, the cost per update, and its slowest cases;
* the split between long-horizon cases and the rest.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optbridge_conformance.runner import ALL_BACKENDS, Progress, run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--random", type=int, default=20, help="random plans (default 20, as in CI docs)")
    ap.add_argument("--backends", default=",".join(ALL_BACKENDS))
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    r = run(a.cases, backends=a.backends.split(","), jobs=a.jobs, random=a.random, max_steps=a.max_steps,
            progress=Progress(enabled=sys.stderr.isatty()))
    wall = time.perf_counter() - t0
    by_backend: dict[str, list] = defaultdict(list)
    for (case, b), res in r.results.items():
        by_backend[b].append(res)
    long_ids = {c.id for c in r.cases if c.family == "long-horizon"}
    print(f"conformance suite: {len(r.cases)} cases ({a.random} random) x {len(r.backend_names)} backends, "
          f"jobs {a.jobs}: wall {wall:.1f} s (goal <= 300 s), exit code {r.exit_code}")
    print(f"{'backend':24s} {'trace s':>8s} {'suite s':>8s} {'updates':>10s} {'ms/update':>10s} "
          f"{'long s':>7s} {'import s':>8s}  slowest cases")
    out = {"wall_seconds": wall, "jobs": a.jobs, "cases": len(r.cases), "backends": {}}
    for b in r.backends:
        rs = [x for x in by_backend[b.name] if x.status not in ("skip", "unavailable")]
        if not b.available:
            print(f"{b.name:24s} unavailable: {b.message}")
            continue
        trace_s = sum(x.seconds for x in rs)
        suite_s = sum(x.overhead for x in rs)
        steps = sum(x.steps for x in rs)
        long_s = sum(x.seconds for x in rs if x.case in long_ids)
        slow = sorted(rs, key=lambda x: -x.seconds)[:3]
        slow_txt = ", ".join(f"{x.case} {x.seconds:.1f}s/{x.steps}" for x in slow)
        per = 1e3 * trace_s / steps if steps else 0.0
        print(f"{b.name:24s} {trace_s:8.1f} {suite_s:8.1f} {steps:10d} {per:10.3f} {long_s:7.1f} "
              f"{b.import_seconds:8.2f}  {slow_txt}")
        out["backends"][b.name] = {"trace_seconds": trace_s, "suite_seconds": suite_s, "updates": steps,
                                   "ms_per_update": per, "long_horizon_seconds": long_s,
                                   "import_seconds": b.import_seconds, "counts": r.counts(b.name),
                                   "slowest": [(x.case, x.seconds, x.steps) for x in slow]}
    accounted = sum(v["trace_seconds"] + v["suite_seconds"] for v in out["backends"].values())
    print(f"accounted: {accounted:.1f} s in traces and comparisons; the rest ({max(0.0, wall - accounted) if a.jobs == 1 else 0:.1f} s"
          " with jobs 1) is case loading, random-plan generation and process start-up")
    from optbridge_conformance.report import terminal
    print()
    print(terminal(r, full=False), end="")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent.parent)  # MegEngine must not run with its site-packages as cwd
    sys.exit(main())
