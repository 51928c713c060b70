"""Per-step cost of the torch-exact MegEngine optimizers against MegEngine's native ones.

Run from the repo root with the MegEngine interpreter (never from MegEngine's site-packages):

    .venv-mge/bin/python benchmarks/bench_mge_optimizers.py            # both models
    .venv-mge/bin/python benchmarks/bench_mge_optimizers.py --quick    # fewer repeats

Two models, their parameters as a real training loop has them (gradients set once;
``optimizer.step()`` is what is timed, followed by a full sync so MegEngine's
asynchronous CPU kernels are counted):

* ``cnn``: a LeNet-5-sized CNN (conv 1->6->16, fc 256->120->84->10): 10 tensors, 44k
  parameters, where per-op dispatch dominates;
* ``mlp``: an MLP 784->2048->2048->2048->10 (4 weights + 4 biases, 10.0M
  parameters), where memory bandwidth dominates.

For each optimizer the exact class is timed against the native MegEngine class that
computes the nearest update (SGD, Adam, AdamW, Adagrad, Adadelta); RMSprop, Adamax,
NAdam and RAdam have no native MegEngine class and are timed against native Adam.
Each figure is the best of ``repeat`` runs of ``steps`` steps (per-step mean within a
run), runs interleaved native/exact so machine load hits both alike. The ratio
exact/native is the figure of merit (target <= 1.5).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def models() -> dict[str, list[tuple[int, ...]]]:
    """Parameter shapes of the two models."""
    cnn = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 256), (120,), (84, 120), (84,), (10, 84), (10,)]
    mlp = [(2048, 784), (2048,), (2048, 2048), (2048,), (2048, 2048), (2048,), (10, 2048), (10,)]
    return {"cnn": cnn, "mlp": mlp}


def cases() -> list[tuple[str, Callable[[list[Any]], Any], Callable[[list[Any]], Any]]]:
    """(name, native factory, exact factory)."""
    import megengine.optimizer as mopt

    from optbridge_adapters.megengine import optimizers as ex
    return [
        ("SGD momentum", lambda ps: mopt.SGD(ps, lr=0.01, momentum=0.9),
         lambda ps: ex.SGD(ps, lr=0.01, momentum=0.9)),
        ("SGD nesterov+wd", lambda ps: mopt.SGD(ps, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
         lambda ps: ex.SGD(ps, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)),
        ("Adam", lambda ps: mopt.Adam(ps, lr=1e-3), lambda ps: ex.Adam(ps, lr=1e-3)),
        ("AdamW", lambda ps: mopt.AdamW(ps, lr=1e-3), lambda ps: ex.AdamW(ps, lr=1e-3)),
        ("Adagrad", lambda ps: mopt.Adagrad(ps, lr=1e-2), lambda ps: ex.Adagrad(ps, lr=1e-2)),
        ("Adadelta", lambda ps: mopt.Adadelta(ps), lambda ps: ex.Adadelta(ps)),
        ("RMSprop (vs Adam)", lambda ps: mopt.Adam(ps, lr=1e-3), lambda ps: ex.RMSprop(ps, lr=1e-3)),
        ("RMSprop centered+mom (vs Adam)", lambda ps: mopt.Adam(ps, lr=1e-3),
         lambda ps: ex.RMSprop(ps, lr=1e-3, centered=True, momentum=0.9)),
        ("Adamax (vs Adam)", lambda ps: mopt.Adam(ps, lr=1e-3), lambda ps: ex.Adamax(ps, lr=1e-3)),
        ("NAdam (vs Adam)", lambda ps: mopt.Adam(ps, lr=1e-3), lambda ps: ex.NAdam(ps, lr=1e-3)),
        ("RAdam (vs Adam)", lambda ps: mopt.Adam(ps, lr=1e-3), lambda ps: ex.RAdam(ps, lr=1e-3)),
    ]


def arrays(shapes: list[tuple[int, ...]]) -> list[tuple[Any, Any]]:
    """(initial value, gradient) per parameter, float32."""
    import numpy as np
    rs = np.random.RandomState(0)
    return [((rs.randn(*s) * 0.1).astype(np.float32), rs.randn(*s).astype(np.float32)) for s in shapes]


def per_step(make: Callable[[list[Any]], Any], data: list[tuple[Any, Any]], steps: int) -> float:
    """Mean seconds of one ``step()`` over ``steps`` steps (after 3 warm-up steps)."""
    import megengine as mge
    params = [mge.Parameter(p0) for p0, _ in data]
    opt = make(params)
    for p, (_, g) in zip(params, data):
        p.grad = mge.Tensor(g)
    for _ in range(3):
        opt.step()
    mge._full_sync()
    t = time.perf_counter()
    for _ in range(steps):
        opt.step()
    mge._full_sync()
    return (time.perf_counter() - t) / steps


def main(argv: list[str]) -> int:
    import megengine as mge
    quick = "--quick" in argv
    repeat = 2 if quick else 3
    steps = {"cnn": 50 if quick else 200, "mlp": 2 if quick else 5}
    print(f"MegEngine {mge.__version__}, Python {sys.version.split()[0]}; optimizer.step() per update, "
          f"best of {repeat} interleaved runs")
    for model, shapes in models().items():
        data = arrays(shapes)
        n = sum(p0.size for p0, _ in data)
        print(f"\n{model}: {len(shapes)} tensors, {n:,} parameters, {steps[model]} steps per run")
        print(f"{'optimizer':34s} {'native':>11s} {'exact':>11s} {'exact/native':>13s}")
        for name, native, exact in cases():
            t_native, t_exact = float("inf"), float("inf")
            for _ in range(repeat):
                t_native = min(t_native, per_step(native, data, steps[model]))
                t_exact = min(t_exact, per_step(exact, data, steps[model]))
            unit, k = ("us", 1e6) if model == "cnn" else ("ms", 1e3)
            print(f"{name:34s} {t_native * k:8.1f} {unit} {t_exact * k:8.1f} {unit} {t_exact / t_native:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
