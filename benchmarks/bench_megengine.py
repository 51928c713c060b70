"""MegEngine backend costs: the trace per update against torch's, the persistent worker, the driver per step.

Run from the repo root (never from MegEngine's site-packages):

    .venv/bin/python benchmarks/bench_megengine.py            # all three parts (the driver part runs under .venv-mge)
    .venv/bin/python benchmarks/bench_megengine.py trace      # MegEngine's trace vs torch's, per update
    .venv/bin/python benchmarks/bench_megengine.py worker     # start-up and reuse of the worker
    .venv-mge/bin/python benchmarks/bench_megengine.py driver # PlanScheduler.step() vs MultiStepLR.step()

trace (main interpreter): ``optbridge.trace(plan, n, backend=...)`` for a plan of G
param groups (G = 3 and 28; lr 1e-3 * (i + 1)) with a cosine lr, on AdamW and on SGD
with momentum; torch in this interpreter, MegEngine through the persistent worker
(started before timing). The cost per update is ``(t(n) - t(1)) / (n - 1)`` (best of 3
each), so the worker's protocol and start-up cancel; both traces measure the same
thing (group values before each update, the applied lr from a plain-SGD probe).
Goal: MegEngine at most 5x torch's per-update cost at 28 groups.

worker (main interpreter): the first MegEngine trace of a process (starts the worker:
interpreter + ``import megengine``), the next ones (reused worker), the same trace in
a fresh one-shot interpreter (what every trace cost before the worker persisted), a
bare ``python -c "import megengine"``, and the protocol with the ``reference``
backend under this interpreter.

driver (MegEngine interpreter): ``scheduler.step()`` per update, best of 5 runs of
20 000 steps, for 1, 3 and 10 param groups: MegEngine's own MultiStepLR, optbridge's
PlanScheduler on the same multistep schedule (``form="table"``), PlanScheduler
writing warmup+cosine lr, a momentum cycle and a weight-decay decay, and one
``SGD.step()`` for scale. The reference evaluator's chunk refills are included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def best(fn: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def plan_for(groups: int, schedule: dict[str, Any], typ: str = "SGD", **options: Any) -> Any:
    from optbridge.plan import Group, OptimizerSpec, Plan, Selector
    gs = tuple(Group(name=f"g{i}", select=(Selector(names=(f"p{i}",)),), options={"lr": 1e-3 * (i + 1)})
               for i in range(groups))
    return Plan(optimizers=(OptimizerSpec(type=typ, options=options, groups=gs),), schedule=schedule)


# --------------------------------------------------------------------------- trace: MegEngine vs torch

def trace_part(steps: int = 2000) -> None:
    import optbridge
    from optbridge import ir
    from optbridge_adapters.megengine.backend import megengine_importable

    if megengine_importable():
        print("trace: run this part from the main env (torch in-process, MegEngine through the worker)")
        return
    print(f"trace: per-update cost of optbridge.trace(plan, n, backend=...), (t({steps}) - t(1)) / {steps - 1}, "
          "best of 3; torch in-process, MegEngine through the persistent worker")
    print(f"{'optimizer':>14} {'groups':>6} | {'torch':>10} | {'megengine':>10} | {'ratio':>6}")
    for typ, options in (("AdamW", {"lr": 1e-3}), ("SGD", {"lr": 0.1, "momentum": 0.9})):
        for groups in (3, 28):
            plan = plan_for(groups, {"lr": ir.Cosine(steps=5000)}, typ, **options)
            cost = {}
            for backend in ("torch", "megengine"):
                optbridge.trace(plan, 2, backend=backend)  # imports, worker start-up
                t1 = best(lambda b=backend, p=plan: optbridge.trace(p, 1, backend=b))
                tn = best(lambda b=backend, p=plan: optbridge.trace(p, steps, backend=b))
                cost[backend] = (tn - t1) / (steps - 1)
            print(f"{typ:>14} {groups:>6} | {cost['torch'] * 1e3:7.3f} ms | {cost['megengine'] * 1e3:7.3f} ms | "
                  f"{cost['megengine'] / cost['torch']:5.2f}x")


# --------------------------------------------------------------------------- the worker

def worker_part() -> None:
    import optbridge
    from optbridge import ir
    from optbridge_adapters import worker
    from optbridge_adapters.megengine import backend as megengine_backend

    py = megengine_backend.megengine_python()
    plan = plan_for(3, {"lr": ir.Cosine(steps=1000)})
    worker.shutdown_workers()
    t = time.perf_counter()
    optbridge.trace(plan, 1, backend="megengine", worker=True)
    first = time.perf_counter() - t
    reused = best(lambda: optbridge.trace(plan, 1, backend="megengine", worker=True), 5)
    thousand = best(lambda: optbridge.trace(plan, 1000, backend="megengine", worker=True))
    request = json.dumps({"protocol": 1, "backend": "megengine", "plan": optbridge.to_dict(plan), "steps": 1,
                          "metrics": None, "options": {}})
    oneshot = best(lambda: subprocess.run([py, "-m", "optbridge_adapters.worker"], input=request, capture_output=True,
                                          text=True, cwd="/tmp", check=True))
    bare = best(lambda: subprocess.run([py, "-c", "import megengine"], capture_output=True, cwd="/tmp", check=True))
    empty = best(lambda: subprocess.run([py, "-c", "pass"], capture_output=True, cwd="/tmp", check=True))
    ref_worker = best(lambda: worker.run_in_worker(sys.executable, "reference", plan, 1000), 5)
    ref_local = best(lambda: optbridge.trace(plan, 1000), 5)
    print(f"worker: from {sys.executable}, MegEngine interpreter {py}; best of 3-5 wall times")
    print(f"  first trace(plan, 1, backend='megengine') of the process  {first * 1e3:8.0f} ms   <- starts the worker")
    print(f"  the next ones (the same worker)                           {reused * 1e3:8.1f} ms")
    print(f"  trace(plan, 1000) (3 groups, the same worker)             {thousand * 1e3:8.1f} ms")
    print(f"  the same trace(plan, 1) in a fresh one-shot interpreter   {oneshot * 1e3:8.0f} ms   "
          "<- every trace, before")
    print(f"  python -c 'import megengine'                              {bare * 1e3:8.0f} ms")
    print(f"  python -c pass (MegEngine env)                            {empty * 1e3:8.0f} ms")
    print(f"  trace(plan, 1000) with backend='reference', worker        {ref_worker * 1e3:8.1f} ms   "
          f"(in-process: {ref_local * 1e3:.1f} ms)")
    worker.shutdown_workers()


# --------------------------------------------------------------------------- the driver

def driver_part(steps: int = 20_000) -> None:
    import megengine as mge
    import numpy as np

    from optbridge import ir
    from optbridge_adapters.megengine.build import to_megengine

    multistep = {"lr": ir.MultiStep(milestones=(5000, 10000, 15000), gamma=0.1)}
    three = {"lr": ir.Sequence(parts=(ir.Linear(start_factor=0.0, steps=1000), ir.Cosine(steps=steps)),
                               boundaries=(1000,)),
             "momentum": ir.Cyclic(low=0.95, high=0.85, step_size_up=2000),
             "weight_decay": ir.Exponential(gamma=0.9999)}
    print(f"driver: scheduler.step() per update, best of 5 x {steps} steps (MegEngine {mge.__version__}, "
          f"Python {sys.version.split()[0]})")
    print(f"{'groups':>6} | {'MultiStepLR':>12} | {'PlanScheduler, same multistep':>30} | "
          f"{'PlanScheduler, 3 hypers':>24} | {'SGD.step() (for scale)':>22}")
    for groups in (1, 3, 10):
        def make(schedule: dict[str, Any], native: bool, groups: int = groups) -> tuple[Any, dict[str, Any]]:
            params = {f"p{i}": mge.Parameter(np.zeros(1000, np.float32)) for i in range(groups)}
            plan = plan_for(groups, schedule, momentum=0.9, weight_decay=1e-4)
            return to_megengine(plan, params, form="auto" if native else "table"), params

        def sched_cost(schedule: dict[str, Any], native: bool) -> float:
            ts = []
            for _ in range(5):
                setup, _ = make(schedule, native)
                step = setup.scheduler.step
                t = time.perf_counter()
                for _ in range(steps):
                    step()
                ts.append(time.perf_counter() - t)
            return min(ts) / steps * 1e6

        native_us = sched_cost(multistep, True)
        assert type(make(multistep, True)[0].scheduler).__name__ == "MultiStepLR"
        driver_us = sched_cost(multistep, False)
        three_us = sched_cost(three, True)
        setup, params = make(three, True)
        g = mge.tensor(np.ones(1000, np.float32))
        for p in params.values():
            p.grad = g
        opt = setup.optimizer
        n_opt = 200

        def updates(opt: Any = opt, setup: Any = setup, n_opt: int = n_opt) -> None:
            for _ in range(n_opt):
                opt.step()
                setup.scheduler.step()

        opt_us = best(updates) / n_opt * 1e6 - three_us
        print(f"{groups:>6} | {native_us:>9.2f} us | {driver_us:>27.2f} us | {three_us:>21.2f} us | "
              f"{opt_us:>19.1f} us")


def main(argv: list[str]) -> int:
    part = argv[0] if argv else "all"
    if part in ("trace", "all"):
        trace_part()
        print()
    if part in ("worker", "all"):
        worker_part()
        print()
    if part == "driver":
        driver_part()
    elif part == "all":
        from optbridge_adapters.megengine.backend import megengine_importable, megengine_python
        if megengine_importable():
            driver_part()
        else:
            sys.stdout.flush()
            subprocess.run([megengine_python(), str(Path(__file__).resolve()), "driver"], cwd=ROOT, check=True,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
    elif part not in ("trace", "worker"):
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
