"""MegEngine backend costs: the schedule driver per step, and the worker's start-up.

Run from the repo root (never from MegEngine's site-packages):

    .venv/bin/python benchmarks/bench_megengine.py            # both parts (the driver part runs under .venv-mge)
    .venv-mge/bin/python benchmarks/bench_megengine.py driver # only the driver part
    .venv/bin/python benchmarks/bench_megengine.py worker     # only the worker part

driver (MegEngine interpreter): ``scheduler.step()`` per update, best of 5 runs of
20 000 steps, for 1, 3 and 10 param groups:

* MegEngine's own ``MultiStepLR`` (what optbridge uses for a lone multistep schedule);
* optbridge's ``PlanScheduler`` on the same multistep schedule (``native=False``);
* ``PlanScheduler`` writing warmup+cosine lr, a momentum cycle and a weight-decay
  decay (3 hyperparameters) into every group;

and, for scale, one ``SGD.step()`` with momentum on the same groups (a 1000-element
parameter each). Chunk refills (reference evaluator, 1024 updates at a time) are
included in the per-step average.

worker (main interpreter): wall time of ``optbridge.trace(plan, n, backend="megengine")``
through the worker for n = 1 and 1000, of a bare ``python -c "import megengine"`` in
the MegEngine env, and of the worker with the ``reference`` backend under the main
interpreter (the protocol's own cost).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def plan_for(groups: int, schedule: dict):
    from optbridge.plan import Group, OptimizerSpec, Plan, Selector
    gs = tuple(Group(name=f"g{i}", select=(Selector(names=(f"p{i}",)),), options={"lr": 0.1 / (i + 1)})
               for i in range(groups))
    return Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
                                          groups=gs),), schedule=schedule)


def driver(steps: int = 20_000) -> None:
    import megengine as mge
    import numpy as np

    from optbridge import ir
    from optbridge_adapters.megengine.backend import to_megengine

    multistep = {"lr": ir.MultiStep(milestones=(5000, 10000, 15000), gamma=0.1)}
    three = {"lr": ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=1000), ir.Cosine(steps=steps)), boundaries=(1000,)),
             "momentum": ir.Cyclic(low=0.95, high=0.85, step_size_up=2000),
             "weight_decay": ir.Exponential(gamma=0.9999)}
    print(f"driver: scheduler.step() per update, best of 5 x {steps} steps (MegEngine {mge.__version__}, "
          f"Python {sys.version.split()[0]})")
    print(f"{'groups':>6} | {'MultiStepLR':>12} | {'PlanScheduler, same multistep':>30} | "
          f"{'PlanScheduler, 3 hypers':>24} | {'SGD.step() (for scale)':>22}")
    for groups in (1, 3, 10):
        def make(schedule, native):
            params = {f"p{i}": mge.Parameter(np.zeros(1000, np.float32)) for i in range(groups)}
            return to_megengine(plan_for(groups, schedule), params, form="auto" if native else "table"), params

        def sched_cost(schedule, native):
            def run():
                setup, _ = make(schedule, native)
                s = setup.scheduler
                t = time.perf_counter()
                for _ in range(steps):
                    s.step()
                run.t = time.perf_counter() - t
            ts = []
            for _ in range(5):
                run()
                ts.append(run.t)
            return min(ts) / steps * 1e6

        native_us = sched_cost(multistep, True)
        setup, _ = make(multistep, True)
        assert type(setup.scheduler).__name__ == "MultiStepLR"
        driver_us = sched_cost(multistep, False)
        three_us = sched_cost(three, True)
        setup, params = make(three, True)
        g = mge.tensor(np.ones(1000, np.float32))
        for p in params.values():
            p.grad = g
        opt = setup.optimizer
        n_opt = 500
        opt_us = best(lambda: [opt.step() for _ in range(n_opt)], 3) / n_opt * 1e6
        print(f"{groups:>6} | {native_us:>9.2f} us | {driver_us:>27.2f} us | {three_us:>21.2f} us | {opt_us:>19.1f} us")


def worker_part() -> None:
    import optbridge
    from optbridge import ir
    from optbridge_adapters import worker
    from optbridge_adapters.megengine import backend as megengine_backend

    py = megengine_backend.megengine_python()
    plan = plan_for(3, {"lr": ir.Cosine(steps=1000)})

    def wall(fn, repeat=3):
        return best(fn, repeat)

    bare = wall(lambda: subprocess.run([py, "-c", "import megengine"], capture_output=True, cwd="/tmp", check=True))
    empty = wall(lambda: subprocess.run([py, "-c", "pass"], capture_output=True, cwd="/tmp", check=True))
    one = wall(lambda: optbridge.trace(plan, 1, backend="megengine"))
    thousand = wall(lambda: optbridge.trace(plan, 1000, backend="megengine"))
    ref_worker = wall(lambda: worker.run_in_worker(sys.executable, "reference", plan, 1000))
    ref_local = wall(lambda: optbridge.trace(plan, 1000), 5)
    print(f"worker: from the main env ({sys.executable}), MegEngine interpreter {py}; best of 3 wall times")
    print(f"  python -c pass (MegEngine env)                       {empty * 1e3:8.0f} ms")
    print(f"  python -c 'import megengine'                         {bare * 1e3:8.0f} ms")
    print(f"  trace(plan, 1, backend='megengine')    via worker    {one * 1e3:8.0f} ms   <- start-up cost")
    print(f"  trace(plan, 1000, backend='megengine') via worker    {thousand * 1e3:8.0f} ms   "
          f"({(thousand - one) / 999 * 1e3:.2f} ms per traced update, 3 groups)")
    print(f"  worker with backend='reference' (main interpreter)   {ref_worker * 1e3:8.0f} ms   "
          f"(in-process: {ref_local * 1e3:.1f} ms)")


def main(argv: list[str]) -> int:
    part = argv[0] if argv else "all"
    if part == "driver":
        driver()
    elif part == "worker":
        worker_part()
    elif part == "all":
        worker_part()
        print()
        from optbridge_adapters.megengine.backend import megengine_importable, megengine_python
        if megengine_importable():
            driver()
        else:
            sys.stdout.flush()
            subprocess.run([megengine_python(), str(Path(__file__).resolve()), "driver"], cwd=ROOT, check=True,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
