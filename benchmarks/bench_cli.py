"""``optbridge trace --format csv|json|npy`` at real scale: time and peak memory per format.

Run: ``.venv/bin/python benchmarks/bench_cli.py [--steps N] [--groups G] [--formats csv,json,npy] [--dir DIR]``

The plan is the real-scale row of ``bench_reference.py``: G = 150 groups with
layer-decay bases (``1e-3 * 0.75 ** depth``) sharing one linear warmup (10 000
updates) + cosine schedule, N = 1e6 updates: 1.5e8 values. Each format runs as
``python -m optbridge trace plan.json --format F --out FILE`` in a fresh
interpreter; the child's wall time and peak RSS (``wait4``) are printed with the
bytes written, next to two floors measured here:

* ``write floor``: writing the same number of bytes from one buffer (``write``
  calls of 4 MiB, the page cache absorbing them as it does for the trace);
* ``numpy floor`` for npy: ``optbridge.trace(plan, N)`` whole, then ``np.save``
  (the memory the streamed writer avoids).

The machine is shared, so wall times vary with the load; CPU times (user +
system of the child) are printed too. The output files are deleted after each
run (``--keep`` keeps them). Before the
streaming writers, ``trace --format csv`` of this plan took 3 min 31 s and 7.1 GB
of memory (issue 12).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_plan(path: Path, groups: int, steps: int) -> None:
    import numpy as np

    import optbridge
    from optbridge import recipes
    from optbridge.plan import Group, OptimizerSpec, Plan
    bases = 1e-3 * 0.75 ** np.arange(groups)[::-1]
    warm = min(10_000, steps // 10)
    plan = Plan(optimizers=(OptimizerSpec(type="AdamW", groups=tuple(
        Group(name=f"layer{i}", options={"lr": float(b)}) for i, b in enumerate(bases))),),
        schedule={"lr": recipes.warmup_cosine(warm, steps)}, total_steps=steps)
    optbridge.dump(plan, path)


def run(argv: list[str]) -> tuple[float, float, int]:
    """Wall time, CPU time (user + system) and peak RSS (bytes) of a child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({status}): {err}")
    return dt, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def write_floor(path: Path, nbytes: int) -> float:
    block = b"0.000123456789012345\n" * ((4 << 20) // 21)
    t = time.perf_counter()
    with open(path, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    dt = time.perf_counter() - t
    path.unlink()
    return dt


_NUMPY_FLOOR = r"""
import sys, numpy as np, optbridge
plan = optbridge.load(sys.argv[1])
np.save(sys.argv[2], optbridge.trace(plan)["lr"])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, default=150)
    ap.add_argument("--formats", default="csv,json,npy")
    ap.add_argument("--dir", help="where to write (default: a temporary directory under the system's temp dir)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="optbridge-bench-cli-", dir=args.dir) as tmp:
        d = Path(tmp)
        cfg = d / "plan.json"
        make_plan(cfg, args.groups, args.steps)
        values = args.groups * args.steps
        print(f"plan: {args.groups} groups x {args.steps} updates = {values:.3g} values "
              f"({values * 8 / 1e9:.2f} GB as float64)")
        for fmt in args.formats.split(","):
            out = d / f"trace.{fmt}"
            dt, cpu, rss = run([sys.executable, "-m", "optbridge", "trace", str(cfg), "--format", fmt,
                                "--out", str(out)])
            size = out.stat().st_size
            floor = write_floor(d / "floor.bin", size)
            print(f"{fmt:5s} {dt:7.1f} s (cpu {cpu:6.1f} s, {cpu * 1e9 / values:4.0f} ns/value)  peak RSS "
                  f"{rss / 1e6:7.1f} MB  wrote {size / 1e9:6.2f} GB ({size / dt / 1e6:5.0f} MB/s)  "
                  f"write floor {floor:5.1f} s")
            if not args.keep:
                out.unlink()
        if "npy" in args.formats.split(","):
            out = d / "floor.npy"
            dt, cpu, rss = run([sys.executable, "-c", _NUMPY_FLOOR, str(cfg), str(out)])
            print(f"npy floor (whole trace + np.save): {dt:.1f} s (cpu {cpu:.1f} s), peak RSS {rss / 1e6:.1f} MB")
            out.unlink()


if __name__ == "__main__":
    main()
