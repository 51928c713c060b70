"""MindSpore backend benchmarks (run: .venv/bin/python benchmarks/bench_mindspore.py).

1. List export: ``optbridge.to_mindspore_lists`` for 1e7 steps x 3 groups (warmup 1e5 steps from 0, then
   cosine to 1e-5; goal <= 1 s), against MindSpore's own list functions building the same lists
   (``nn.warmup_lr(...) + nn.cosine_decay_lr(...)`` per group, spe = 1) in the same run.
2. Per-step cost of the lr mechanism: an nn.SGD step over one probe with MindSpore's own
   ``CosineDecayLR`` / ``WarmUpLR`` cells, with optbridge's generated float64 cells for the same nodes,
   a float32 list, and the bare cell call, in PyNative and GRAPH mode (median of repeats).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import mindspore as ms  # noqa: E402
from mindspore import Parameter, Tensor, nn, ops  # noqa: E402

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan  # noqa: E402
from optbridge_adapters.mindspore.cells import build_cell  # noqa: E402

N, W = 10_000_000, 100_000
LRS = (0.1, 0.01, 0.001)


def bench_lists(n: int = N) -> None:
    node = ir.Sequence(parts=(ir.Linear(start_factor=0.0, end_factor=1.0, steps=W), ir.Cosine(steps=n - W, end=1e-5,
                                                                                             clamp=True)),
                       boundaries=(W,))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": LRS[0]}, groups=tuple(
        Group(name=f"g{i}", options={"lr": lr}) for i, lr in enumerate(LRS))),), schedule={"lr": node}, total_steps=n)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        out = optbridge.to_mindspore_lists(plan, n)
        times.append(time.perf_counter() - t)
    print(f"to_mindspore_lists: {n:.0e} steps x {len(LRS)} groups: best {min(times):.3f} s, "
          f"median {statistics.median(times):.3f} s (goal <= 1 s)")
    t = time.perf_counter()
    ms_lists = [np.array(nn.warmup_lr(lr, W, 1, W) + nn.cosine_decay_lr(1e-5, lr, n - W, 1, n - W)).astype(np.float32)
                for lr in LRS]
    dt = time.perf_counter() - t
    print(f"MindSpore nn.warmup_lr + nn.cosine_decay_lr (+ float32 cast): {n:.0e} steps x {len(LRS)} groups: "
          f"{dt:.3f} s ({dt / min(times):.0f}x slower)")
    diff = max(int(np.count_nonzero(a != out[f"g{i}"])) for i, a in enumerate(ms_lists))
    print(f"  lists differing from MindSpore's (float32 entries): {diff} of {n} per group")


def _step_cost(lr: object, mode: int, repeats: int = 5, steps: int = 200) -> float:
    ms.set_context(mode=mode)
    p = Parameter(Tensor(np.zeros(1, np.float32)), name=f"bench_{time.perf_counter_ns()}")
    opt = nn.SGD([{"params": [p], "lr": lr}], learning_rate=lr)
    g = ms.mutable((Tensor(np.ones(1, np.float32)),))
    opt(g)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            opt(g)
        samples.append((time.perf_counter() - t) / steps)
    return statistics.median(samples)


def _call_cost(cell: object, repeats: int = 5, calls: int = 200) -> float:
    s = Tensor(np.array([123], np.int32))
    cell(s)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            cell(s)
        samples.append((time.perf_counter() - t) / calls)
    return statistics.median(samples)


def bench_cells() -> None:
    cos, warm = ir.Cosine(steps=100_000, end=1e-5, clamp=True), ir.Linear(start_factor=0.0, end_factor=1.0,
                                                                         steps=1000)
    seq = ir.Sequence(parts=(warm, cos), boundaries=(1000,))
    rows = [
        ("CosineDecayLR (MindSpore)", lambda: nn.CosineDecayLR(1e-5, 0.1, 100_000)),
        ("cosine, generated cell", lambda: build_cell(cos, 0.1, allow_native=False).cell),
        ("WarmUpLR (MindSpore)", lambda: nn.WarmUpLR(0.1, 1000)),
        ("linear warmup, generated cell", lambda: build_cell(warm, 0.1, allow_native=False).cell),
        ("warmup+cosine sequence, generated (native parts)", lambda: build_cell(seq, 0.1).cell),
        ("warmup+cosine sequence, generated", lambda: build_cell(seq, 0.1, allow_native=False).cell),
        ("float32 list (Gather)", lambda: Tensor(np.linspace(0.1, 0.0, 200_000).astype(np.float32))),
    ]
    print(f"{'lr mechanism':52s} {'call (PyNative)':>16s} {'SGD step PyNative':>18s} {'SGD step GRAPH':>15s}")
    for name, make in rows:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        obj = make()
        call = _call_cost(obj) if not isinstance(obj, Tensor) else float("nan")
        py = _step_cost(make(), ms.PYNATIVE_MODE)
        gr = _step_cost(make(), ms.GRAPH_MODE)
        ms.set_context(mode=ms.PYNATIVE_MODE)
        print(f"{name:52s} {call * 1e6:13.0f} us {py * 1e6:15.0f} us {gr * 1e6:12.0f} us")


if __name__ == "__main__":
    print(f"mindspore {ms.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    bench_lists(int(float(sys.argv[1])) if len(sys.argv) > 1 else N)
    bench_cells()
