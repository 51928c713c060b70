"""Reference-trace speed against native torch and a hand-written numpy closed form.

Run: ``.venv/bin/python benchmarks/bench_reference.py [--full]``

For (a) cosine and (b) linear warmup + cosine, three groups, at 1e5 and 1e7
steps, it times in one run:

* ``optbridge.trace(plan, N)`` (the reference backend);
* stepping the equivalent torch scheduler N times and reading ``param_groups``
  (at 1e7 steps torch is timed over 1e6 steps and scaled linearly unless
  ``--full``; the printout says which);
* a hand-written numpy closed form of the same schedule;

and prints the ratios, plus the cost of ``import optbridge``: the wall time of
the ``import optbridge`` statement alone, timed with ``time.perf_counter`` inside
each of 5 fresh interpreters (best of 5; interpreter start-up is not included and
nothing is subtracted), and which of torch, mindspore, megengine, numpy and yaml
were in ``sys.modules`` after it (first run).

Real scale: 150 groups with layer-decay bases (``0.75 ** depth``) sharing one
linear warmup + cosine schedule, 1e6 steps, a 1.2 GB result. Each side runs in
a fresh interpreter (best of 3), which reports its time and its peak memory
above what it held before computing:

* ``optbridge.trace(plan, 1e6)``;
* the numpy floor: the schedule once (1-D), then one outer product with the
  bases into a preallocated result.

Goals: at most 2x the floor's time, peak memory at most 1.3x the result. The
same row with an absolute cosine end (``eta_min = 1e-6``, which takes a second
pass: ``(base - end) * g + end``) is printed for comparison.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import optbridge
from optbridge import ir, recipes
from optbridge.plan import Group, OptimizerSpec, Plan

LRS = np.array([0.1, 0.05, 0.02])
WARM = 1000


def plan_for(schedule: ir.Node) -> Plan:
    groups = tuple(Group(name=f"g{i}", options={"lr": float(lr)}) for i, lr in enumerate(LRS))
    return Plan(optimizers=(OptimizerSpec(type="SGD", groups=groups),), schedule={"lr": schedule})


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def numpy_cosine(n: int) -> np.ndarray:
    k = np.arange(n)
    return LRS[:, None] * (1 + np.cos(math.pi * k / n)) / 2


def numpy_warmup_cosine(n: int) -> np.ndarray:
    k = np.arange(n)
    warm = k / WARM
    cos = (1 + np.cos(math.pi * (k - WARM) / (n - WARM))) / 2
    return LRS[:, None] * np.where(k < WARM, warm, cos)


def torch_steps(kind: str, n: int) -> float:
    import torch
    from torch.optim import lr_scheduler as S
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in LRS]
    opt = torch.optim.SGD([{"params": [p], "lr": float(lr)} for p, lr in zip(params, LRS)])
    if kind == "cosine":
        sched = S.CosineAnnealingLR(opt, n)
    else:
        sched = S.SequentialLR(opt, [S.LambdaLR(opt, lambda e: e / WARM), S.CosineAnnealingLR(opt, n - WARM)], [WARM])
    out = np.empty((len(LRS), n))
    groups = opt.param_groups
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(n):
            for g, group in enumerate(groups):
                out[g, k] = group["lr"]
            sched.step()
    return time.perf_counter() - t


_SCALE_CHILD = r"""
import math, resource, sys, time
import numpy as np
import optbridge
from optbridge import ir, recipes
from optbridge.plan import Group, OptimizerSpec, Plan
G, N, W = 150, 1_000_000, 10_000
end = float(sys.argv[2])
bases = 1e-3 * 0.75 ** np.arange(G)[::-1]
node = recipes.warmup_cosine(W, N) if end == 0.0 else ir.Sequence(
    parts=(ir.Linear(start_factor=0.0, steps=W), ir.Cosine(steps=N - W, end=end)), boundaries=(W,))
plan = Plan(optimizers=(OptimizerSpec(type="AdamW", groups=tuple(
    Group(name=f"layer{i}", options={"lr": float(b)}) for i, b in enumerate(bases))),), schedule={"lr": node})
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
before = rss()
t = time.perf_counter()
if sys.argv[1] == "trace":
    out = optbridge.trace(plan, N)["lr"]
else:  # the floor: the schedule once, then one outer product (two passes for an absolute end)
    k = np.arange(N, dtype=np.float64)
    f = np.where(k < W, k / W, (1 + np.cos(math.pi * (k - W) / (N - W))) / 2)
    out = np.empty((G, N))
    if end == 0.0:
        np.multiply(bases[:, None], f, out=out)
    else:
        np.multiply(bases[:, None] - end, f, out=out)
        out += end
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(dt, peak, out.nbytes)
"""


def scale_row(end: float) -> None:
    def run(which: str) -> tuple[float, float, int]:
        res = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", _SCALE_CHILD, which, repr(end)], capture_output=True,
                                 text=True, check=True).stdout.split()
            res.append((float(out[0]), float(out[1]), int(out[2])))
        return min(res)
    t_ref, m_ref, nbytes = run("trace")
    t_floor, m_floor, _ = run("floor")
    label = "warmup+cosine" + ("" if end == 0.0 else f", end {end:g}")
    print(f"{label:26s} 150 x 1e6: trace {t_ref:.3f}s, numpy floor {t_floor:.3f}s, ratio {t_ref / t_floor:.2f}x "
          f"(goal <= 2x); peak {m_ref / 1e9:.2f} GB = {m_ref / nbytes:.2f}x the {nbytes / 1e9:.2f} GB result "
          f"(floor {m_floor / nbytes:.2f}x; goal <= 1.3x)")


def import_time(cached: bool) -> tuple[float, list[str]]:
    """Best of 5 fresh interpreters: ``import optbridge``'s wall time and which heavy modules it loaded.

    ``cached``: from the bytecode files a first run wrote (what an installed package has); else
    optbridge's modules compiled from source on every start (``PYTHONDONTWRITEBYTECODE=1`` and no
    cache, as in some sandboxes), the standard library's still cached. A temporary
    ``PYTHONPYCACHEPREFIX`` holds the cache, so the tree stays clean.
    """
    code = "import time,sys; t=time.perf_counter(); import optbridge; print(time.perf_counter()-t); " \
           "print(','.join(m for m in ('torch','mindspore','megengine','numpy','yaml') if m in sys.modules))"
    with tempfile.TemporaryDirectory() as prefix:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = prefix

        def once() -> list[str]:
            return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  env=env).stdout.split("\n")

        once()  # writes the cache, the standard library's included
        if not cached:  # drop the tree's own bytecode (the prefix mirrors absolute paths) and write none
            shutil.rmtree(prefix + str(Path(__file__).resolve().parent.parent), ignore_errors=True)
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        runs = [once() for _ in range(5)]
    return min(float(r[0]) for r in runs), [m for m in runs[0][1].split(",") if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="time torch over all 1e7 steps (about 2-3 minutes)")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(f"{'schedule':16s} {'steps':>9s} {'reference':>11s} {'numpy':>10s} {'torch':>11s} {'torch/ref':>10s} {'ref/numpy':>10s}")
    for kind in ("cosine", "warmup+cosine"):
        for n in (100_000, 10_000_000):
            node = ir.Cosine(steps=n) if kind == "cosine" else recipes.warmup_cosine(WARM, n)
            plan = plan_for(node)
            ref = best(lambda: optbridge.trace(plan, n))
            hand = best(lambda: (numpy_cosine if kind == "cosine" else numpy_warmup_cosine)(n))
            check = optbridge.trace(plan, n)["lr"]
            expect = (numpy_cosine if kind == "cosine" else numpy_warmup_cosine)(n)
            assert np.allclose(check, expect, rtol=1e-12, atol=0), "reference and hand-written form disagree"
            measured = n if (n <= 100_000 or args.full) else 1_000_000
            t_torch = torch_steps("cosine" if kind == "cosine" else "warm", measured) * (n / measured)
            note = "" if measured == n else f"  (torch timed over {measured:.0e} steps, scaled)"
            print(f"{kind:16s} {n:9.0e} {ref * 1e3:9.1f}ms {hand * 1e3:8.1f}ms {t_torch:10.2f}s {t_torch / ref:9.0f}x {ref / hand:9.2f}x{note}")
    print("real scale (fresh interpreters, best of 3):")
    for end in (0.0, 1e-6):
        scale_row(end)
    for cached in (True, False):
        t, mods = import_time(cached)
        how = "from cached bytecode" if cached else "compiled from source (PYTHONDONTWRITEBYTECODE=1, no cache)"
        print(f"import optbridge {how}: {t * 1e3:.1f} ms (best of 5), modules loaded among "
              f"torch/mindspore/megengine/numpy/yaml: {mods or 'none'}")


if __name__ == "__main__":
    main()
