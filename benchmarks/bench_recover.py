"""Speed and memory of closed-form recovery (optbridge.recover) on recorded-size inputs.

    .venv/bin/python benchmarks/bench_recover.py            # 28 groups x 1e5 steps and 150 groups x 1e6 steps
    .venv/bin/python benchmarks/bench_recover.py --small    # only 28 x 1e5
    .venv/bin/python benchmarks/bench_recover.py --min-lr 0 # layer-decay groups share one node

The series are what a recorder sees from a hand-written loop, computed in numpy:

* layer-decay groups (MAE/BEiT ``lr_scale``): a linear warmup then a half cosine to an
  absolute ``min_lr``, times the group's scale; a decay and a no-decay group per layer,
  so rows repeat and are proportional (one recovery, the others verify);
* a few distinct groups: a YOLOv5-style bias group (per-iteration warmup from 0.1, then a
  per-epoch linear decay held within each epoch), a step-decay group (StepLR every 30
  epochs, held per epoch), and a weight-decay cosine rising from 0.05 to 0.5 (ConvNeXt).

Time is wall clock of ``recover_groups`` (input already in memory); peak memory is
the largest extra allocation during recovery (tracemalloc, which numpy reports to),
not counting the input array.
"""

from __future__ import annotations

import argparse
import math
import time
import tracemalloc

import numpy as np

from optbridge.recover import recover_groups


def rows(groups: int, steps: int, spe: int, min_lr: float = 1e-6) -> tuple[np.ndarray, list[float]]:
    """``(groups, steps)`` float64 series and their bases."""
    k = np.arange(steps, dtype=np.float64)
    lr, warm = 4e-3, steps // 20
    decay_len = steps - warm
    sched = np.where(k < warm, lr * k / warm,
                     min_lr + (lr - min_lr) * 0.5 * (1.0 + np.cos(math.pi * (k - warm) / decay_len)))
    epochs = steps // spe
    epoch = np.arange(steps) // spe
    nw = 3 * spe
    held = lr * ((1 - epoch / epochs) * (1.0 - 0.01) + 0.01)
    bias = np.where(k < nw, 0.1 + k * (lr * ((1 - epoch / epochs) * 0.99 + 0.01) - 0.1) / nw, held)
    step = lr * 0.1 ** (epoch // 30)
    wd = 0.5 + 0.5 * (0.05 - 0.5) * (1 + np.cos(math.pi * k / steps))
    distinct = [(bias, lr), (step, lr), (wd, 0.05)]
    layers = (groups - len(distinct)) // 2
    out = np.empty((groups, steps))
    bases = []
    g = 0
    for i in range(layers):
        scale = 0.75 ** (layers - i)
        for _ in range(2):
            np.multiply(sched, scale, out=out[g])
            bases.append(lr * scale)
            g += 1
    for series, b in distinct:
        out[g] = series
        bases.append(b)
        g += 1
    while g < groups:  # odd counts: one more copy of the last layer
        out[g] = sched
        bases.append(lr)
        g += 1
    return out, bases


def run(groups: int, steps: int, spe: int, min_lr: float) -> None:
    Y, bases = rows(groups, steps, spe, min_lr)
    tracemalloc.start()
    t0 = time.perf_counter()
    res = recover_groups(Y, bases=bases, steps_per_epoch=spe)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    closed = sum(r.closed_form for r in res)
    print(f"{groups} groups x {steps:.0e} steps, min_lr {min_lr:g} ({Y.nbytes / 2**20:.0f} MiB input): {dt:.2f} s, "
          f"peak extra memory {peak / 2**20:.0f} MiB; {len(res.recovered)} recovered from their own values, "
          f"{len(res.shared)} distinct nodes, {closed}/{groups} closed form")
    for nodes in res.shared[:1] + res.shared[-4:]:
        label = ", ".join(map(str, nodes[:3])) + (", ..." if len(nodes) > 3 else "")
        print(f"  {len(nodes)} group(s) [{label}]: {res[nodes[0]].description}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="only 28 groups x 1e5 steps")
    ap.add_argument("--min-lr", type=float, default=1e-6,
                    help="the layer-decay cosine's end (absolute: one node per layer scale; 0: one shared node)")
    args = ap.parse_args()
    run(28, 100_000, 1000, args.min_lr)
    if not args.small:
        run(150, 1_000_000, 5000, args.min_lr)


if __name__ == "__main__":
    main()
