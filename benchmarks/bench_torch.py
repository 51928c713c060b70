"""Per-step cost of the torch backend's PlanScheduler against the equivalent native torch scheduler.

Run: ``.venv/bin/python benchmarks/bench_torch.py [--steps N] [--repeat R]``

For (a) CosineAnnealingLR(T_max=N) and (b) SequentialLR[LinearLR(0.1, 1, 1000),
CosineAnnealingLR(N - 1000)], on an SGD optimizer with three param groups of
different lrs, it times in one run, interleaved ``R`` times (best of R):

* ``scheduler.step()`` of the native torch scheduler, N times;
* ``scheduler.step()`` of the PlanScheduler that ``to_torch(plan, form="table")``
  builds for the same plan (it writes the reference evaluator's values, computed
  4096 steps at a time; the chunk evaluations are inside the timing);
* for context, ``optimizer.step()`` of the same SGD optimizer (one 1-element
  parameter per group, gradient 1), N / 10 times, and the same for a ``to_torch``
  setup's optimizer, whose update guard (a step pre-hook: scheduler stepped?
  past the horizon?) runs before each update, with its ``scheduler.step()``.

It prints microseconds per step and the ratio PlanScheduler / native (goal: at
most 1.2), and checks that both wrote the same lrs (the difference relative to the base lr).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch.optim import lr_scheduler as S

from optbridge import ir
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge_adapters.torch.build import to_torch

LRS = (0.1, 0.05, 0.02)
WARM = 1000


def plan_for(schedule: ir.Node) -> Plan:
    groups = tuple(Group(name=f"g{i}", select=(Selector(names=(f"p{i}",)),), options={"lr": lr})
                   for i, lr in enumerate(LRS))
    return Plan(optimizers=(OptimizerSpec(type="SGD", groups=groups),), schedule={"lr": schedule})


def model() -> dict[str, torch.Tensor]:
    return {f"p{i}": torch.zeros(1, requires_grad=True) for i in range(len(LRS))}


def native_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(model().values(), LRS, strict=False)])


def steps(sched: object, n: int) -> tuple[float, list[float]]:
    step = sched.step  # type: ignore[attr-defined]
    t = time.perf_counter()
    for _ in range(n):
        step()
    dt = time.perf_counter() - t
    return dt / n * 1e6, [g["lr"] for g in sched.optimizer.param_groups]  # type: ignore[attr-defined]


def planscheduler(schedule: ir.Node) -> object:
    return to_torch(plan_for(schedule), model(), form="table").scheduler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.steps
    warnings.simplefilter("ignore")
    cases = [
        ("CosineAnnealingLR", lambda o: S.CosineAnnealingLR(o, n), ir.Cosine(steps=n)),
        ("SequentialLR[LinearLR, CosineAnnealingLR]",
         lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, 1.0, WARM), S.CosineAnnealingLR(o, n - WARM)], [WARM]),
         ir.Sequence(parts=(ir.Linear(start_factor=0.1, steps=WARM), ir.Cosine(steps=n - WARM)), boundaries=(WARM,))),
    ]
    print(f"torch {torch.__version__}, 3 param groups, {n} scheduler steps, best of {args.repeat} (interleaved)")
    for name, make, node in cases:
        nat, gen = [], []
        for _ in range(args.repeat):
            t_nat, lr_nat = steps(make(native_optimizer()), n)
            t_gen, lr_gen = steps(planscheduler(node), n)
            nat.append(t_nat)
            gen.append(t_gen)
        diff = max(abs(a - b) / base for a, b, base in zip(lr_nat, lr_gen, LRS, strict=False))
        print(f"  {name}")
        print(f"    native torch scheduler : {min(nat):6.2f} us/step")
        print(f"    optbridge PlanScheduler: {min(gen):6.2f} us/step   ratio {min(gen) / min(nat):.2f} "
              f"(goal <= 1.2); final lrs differ by {diff:.1e} of the base lr")
    m = max(n // 10, 1)
    plain, guarded = [], []
    for _ in range(args.repeat):  # optimizer.step() alone, and with the setup's update guard (a step pre-hook)
        plain.append(optimizer_steps(native_optimizer(), m, None))
        setup = to_torch(plan_for(ir.Cosine(steps=n)), model(), form="table")
        guarded.append(optimizer_steps(setup.optimizer, m, setup.scheduler))
    print(f"  for context: SGD optimizer.step() on the same 3 groups: {min(plain):.2f} us/step; with the update "
          f"guard of a to_torch setup (and its scheduler.step()): {min(guarded):.2f} us/step")


def optimizer_steps(opt: torch.optim.Optimizer, m: int, sched: object) -> float:
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    step = sched.step if sched is not None else (lambda: None)  # type: ignore[attr-defined]
    t = time.perf_counter()
    for _ in range(m):
        opt.step()
        step()
    return (time.perf_counter() - t) / m * 1e6

if __name__ == "__main__":
    main()
