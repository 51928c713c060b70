"""Cost of ``optbridge.record``: recording a hand-driven loop, and turning the recording into a plan.

Run: ``.venv/bin/python benchmarks/bench_record.py [--steps N] [--depth D] [--repeat R]``

The loop is MAE fine-tuning's (facebookresearch/mae util/lr_sched.py adjust_learning_rate,
per iteration, with util/lr_decay.py's layer-decay groups: depth 12 -> 28 groups) plus
ConvNeXt's per-iteration weight-decay cosine on the groups with weight decay, on a real
torch AdamW. For N updates (1e5 by default) it times, best of R:

* **recording** -- ``optbridge_adapters.torch.recorder.replay``: the loop's code, the reads of
  every group's lr, betas and weight decay before each update, and putting the optimizer
  back afterwards;
* **recording + recovery** -- ``record(...)``: the same, then
  :func:`optbridge.recover.recover_groups` per hyperparameter and the verification of the
  plan's reference trace against the recording (1e-12 relative at every update).

and reports the peak memory each allocates (``tracemalloc``: numpy's buffers included),
the ratio (goal: recording + recovery at most 2x recording), and what the plan holds
(closed forms per group, distinct nodes, table values).
"""

from __future__ import annotations

import argparse
import math
import time
import tracemalloc
import warnings
from typing import Any

import torch

from optbridge import ir
from optbridge_adapters.torch.recorder import record, replay


def setup(depth: int) -> tuple[torch.optim.Optimizer, int]:
    """MAE's layer-decay groups over a ViT of ``depth`` blocks (two groups per layer: decay / no decay)."""
    num_layers = depth + 1
    scales = [0.75 ** (num_layers - i) for i in range(num_layers + 1)]
    groups = []
    for _lid, scale in enumerate(scales):
        for wd in (0.05, 0.0):
            groups.append({"params": [torch.zeros(4, 4 if wd else 1, requires_grad=True)], "lr_scale": scale,
                           "weight_decay": wd})
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999)), len(groups)


def loop_code(steps: int, per_epoch: int) -> Any:
    lr, min_lr, warmup_epochs, epochs = 1e-3, 1e-6, 5, steps / per_epoch

    def before_step(it: int, optimizer: Any) -> None:
        epoch = (it % per_epoch) / per_epoch + it // per_epoch
        if epoch < warmup_epochs:
            value = lr * epoch / warmup_epochs
        else:
            value = min_lr + (lr - min_lr) * 0.5 * (1. + math.cos(math.pi * (epoch - warmup_epochs)
                                                                 / (epochs - warmup_epochs)))
        wd = 0.5 + 0.5 * (0.05 - 0.5) * (1 + math.cos(math.pi * it / steps))
        for g in optimizer.param_groups:
            g["lr"] = value * g["lr_scale"]
            if g["weight_decay"] > 0:
                g["weight_decay"] = wd
    return before_step


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def peak_mib(fn: Any) -> float:
    """Peak memory allocated while ``fn`` runs (a separate run: tracemalloc slows Python down)."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--per-epoch", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    n = args.steps
    rec_t, full_t = [], []
    plan = None
    opt, groups = setup(args.depth)
    f = loop_code(n, args.per_epoch)
    for _ in range(args.repeat):  # interleaved
        dt, _ = timed(lambda: replay(opt, n, [], before_step=f, steps_per_epoch=args.per_epoch))
        rec_t.append(dt)
        dt, plan = timed(lambda: record(opt, n, before_step=f, steps_per_epoch=args.per_epoch))
        full_t.append(dt)
    assert plan is not None
    rec_m = peak_mib(lambda: replay(opt, n, [], before_step=f, steps_per_epoch=args.per_epoch))
    full_m = peak_mib(lambda: record(opt, n, before_step=f, steps_per_epoch=args.per_epoch))
    nodes = [g.schedule[h] for g in plan.groups for h in g.schedule] + list(plan.schedule.values())
    tables = sum(len(x.values) for node in nodes for x in ir.walk(node) if isinstance(x, ir.Table))
    closed = sum(1 for node in nodes if not any(isinstance(x, ir.Table) for x in ir.walk(node)))
    print(f"torch {torch.__version__}: record {n} updates x {groups} groups (MAE layer decay + ConvNeXt weight "
          f"decay), best of {args.repeat}")
    print(f"  recording              : {min(rec_t):6.2f} s  ({min(rec_t) / n * 1e6:.1f} us/update), "
          f"peak {rec_m:6.1f} MiB")
    print(f"  recording + recovery   : {min(full_t):6.2f} s  ({min(full_t) / min(rec_t):.2f}x recording, goal <= 2), "
          f"peak {full_m:6.1f} MiB")
    print(f"  plan: {len(nodes)} schedules, {closed} closed form, {len(set(nodes))} distinct nodes, "
          f"{tables} table values")


if __name__ == "__main__":
    main()
