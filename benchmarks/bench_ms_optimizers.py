"""Per-step cost of the torch-exact MindSpore optimizers against MindSpore's native ones.

Run from the repo root:

    .venv/bin/python benchmarks/bench_ms_optimizers.py                 # GRAPH mode, both models
    .venv/bin/python benchmarks/bench_ms_optimizers.py --mode pynative # PyNative (the exact update is one ms.jit graph)
    .venv/bin/python benchmarks/bench_ms_optimizers.py --quick         # fewer repeats, a few cases
    .venv/bin/python benchmarks/bench_ms_optimizers.py --model mlp --only SGD   # the SGD cases on the MLP

Two models (the same shapes as benchmarks/bench_mge_optimizers.py):

* ``cnn``: a LeNet-5-sized CNN (conv 1->6->16, fc 256->120->84->10) on 28x28 inputs: 10
  tensors, 44k parameters, where per-op dispatch dominates;
* ``mlp``: an MLP 784->2048->2048->2048->10 (4 weights + 4 biases, 10.0M parameters),
  where memory bandwidth dominates.

Two figures per case, each the best of ``repeat`` runs of ``steps`` steps (runs of native
and exact interleaved, so machine load hits both alike):

* ``opt``: the optimizer call alone, ``optimizer(grads)`` with fixed gradients;
* ``train``: a whole training step, ``nn.TrainOneStepCell(WithLossCell(net, loss), optimizer)``
  at batch 32 (forward, backward, update).

Each exact optimizer is timed twice: ``all``, every hyperparameter a Parameter (the
default), and ``lr``, ``scheduled=("lr",)`` (the others constants, so torch's zero
branches are skipped statically). The native class is the MindSpore optimizer that
computes the nearest update (``nn`` where it has one, else ``mindspore.experimental.optim``).
The ratio exact/native is the figure of merit (target <= 1.5).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")

import mindspore as ms  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402
from mindspore.experimental import optim as mopt  # noqa: E402

from optbridge_adapters.mindspore import optimizers as X  # noqa: E402

BATCH = 32


class CNN(nn.Cell):
    """LeNet-5-sized: conv 1->6->16 (5x5, valid), max-pool 2, fc 256->120->84->10."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.SequentialCell(
            nn.Conv2d(1, 6, 5, pad_mode="valid", has_bias=True), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5, pad_mode="valid", has_bias=True), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(), nn.Dense(256, 120), nn.ReLU(), nn.Dense(120, 84), nn.ReLU(), nn.Dense(84, 10))

    def construct(self, x: Any) -> Any:
        return self.body(x)


class MLP(nn.Cell):
    """784 -> 2048 -> 2048 -> 2048 -> 10 with ReLU: 10.0M parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.SequentialCell(nn.Dense(784, 2048), nn.ReLU(), nn.Dense(2048, 2048), nn.ReLU(),
                                      nn.Dense(2048, 2048), nn.ReLU(), nn.Dense(2048, 10))

    def construct(self, x: Any) -> Any:
        return self.body(x)


MODELS: dict[str, tuple[Callable[[], nn.Cell], tuple[int, ...]]] = {
    "cnn": (CNN, (BATCH, 1, 28, 28)),
    "mlp": (MLP, (BATCH, 784)),
}

Factory = Callable[..., Any]


def cases() -> list[tuple[str, str, Factory, Factory]]:
    """(case, native name, native factory, exact factory taking scheduled=)."""
    return [
        ("SGD", "nn.SGD", lambda ps: nn.SGD(ps, learning_rate=0.01),
         lambda ps, s=None: X.SGD(ps, lr=0.01, scheduled=s)),
        ("SGD momentum .9, wd 5e-4", "nn.SGD", lambda ps: nn.SGD(ps, learning_rate=0.01, momentum=0.9,
                                                                 weight_decay=5e-4),
         lambda ps, s=None: X.SGD(ps, lr=0.01, momentum=0.9, weight_decay=5e-4, scheduled=s)),
        ("SGD nesterov", "nn.SGD", lambda ps: nn.SGD(ps, learning_rate=0.01, momentum=0.9, nesterov=True),
         lambda ps, s=None: X.SGD(ps, lr=0.01, momentum=0.9, nesterov=True, scheduled=s)),
        ("Adam", "nn.Adam", lambda ps: nn.Adam(ps, learning_rate=1e-3),
         lambda ps, s=None: X.Adam(ps, lr=1e-3, scheduled=s)),
        ("Adam amsgrad", "nn.Adam(use_amsgrad)", lambda ps: nn.Adam(ps, learning_rate=1e-3, use_amsgrad=True),
         lambda ps, s=None: X.Adam(ps, lr=1e-3, amsgrad=True, scheduled=s)),
        ("AdamW", "experimental.AdamW", lambda ps: mopt.AdamW(ps, lr=1e-3),
         lambda ps, s=None: X.AdamW(ps, lr=1e-3, scheduled=s)),
        ("AdamW (vs fused nn.AdamWeightDecay)", "nn.AdamWeightDecay",
         lambda ps: nn.AdamWeightDecay(ps, learning_rate=1e-3, weight_decay=1e-2),
         lambda ps, s=None: X.AdamW(ps, lr=1e-3, scheduled=s)),
        ("RMSprop", "nn.RMSProp", lambda ps: nn.RMSProp(ps, learning_rate=1e-2, decay=0.99, epsilon=1e-8),
         lambda ps, s=None: X.RMSprop(ps, lr=1e-2, scheduled=s)),
        ("Adagrad", "nn.Adagrad", lambda ps: nn.Adagrad(ps, learning_rate=1e-2),
         lambda ps, s=None: X.Adagrad(ps, lr=1e-2, scheduled=s)),
        ("Adadelta", "nn.Adadelta", lambda ps: nn.Adadelta(ps, learning_rate=1.0),
         lambda ps, s=None: X.Adadelta(ps, lr=1.0, scheduled=s)),
        ("Adamax", "nn.AdaMax", lambda ps: nn.AdaMax(ps, learning_rate=2e-3),
         lambda ps, s=None: X.Adamax(ps, lr=2e-3, scheduled=s)),
        ("NAdam", "experimental.NAdam", lambda ps: mopt.NAdam(ps, lr=2e-3),
         lambda ps, s=None: X.NAdam(ps, lr=2e-3, scheduled=s)),
        ("RAdam", "experimental.RAdam", lambda ps: mopt.RAdam(ps, lr=1e-3),
         lambda ps, s=None: X.RAdam(ps, lr=1e-3, scheduled=s)),
    ]


class Runner:
    """One optimizer on a fresh model: its optimizer-only and train-step callables."""

    def __init__(self, model: str, make: Factory) -> None:
        ms.set_seed(0)
        build, shape = MODELS[model]
        net = build()
        self.opt = make(net.trainable_params())
        loss = nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"))
        self.train = nn.TrainOneStepCell(loss, self.opt)
        rs = np.random.RandomState(0)
        self.x = Tensor(rs.randn(*shape).astype(np.float32))
        self.y = Tensor(rs.randint(0, 10, BATCH).astype(np.int32))
        self.grads = tuple(Tensor(rs.randn(*p.shape).astype(np.float32) * 1e-3) for p in self.opt.parameters)
        self.run_opt()
        self.run_train()

    def run_opt(self) -> None:
        self.opt(self.grads)

    def run_train(self) -> None:
        self.train(self.x, self.y).asnumpy()


def per_step(runner: Runner, what: str, steps: int) -> float:
    """Mean seconds per call of ``runner.run_<what>`` over ``steps`` calls (synced at the end)."""
    fn = getattr(runner, f"run_{what}")
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    runner.opt.parameters[0].asnumpy()
    return (time.perf_counter() - t) / steps


def bench(model: str, quick: bool, only: str | None = None) -> None:
    steps = {"cnn": 40, "mlp": 10}[model] // (2 if quick else 1)
    repeat = 2 if quick else 4
    chosen = cases()[:4] if quick else cases()
    if only:
        chosen = [c for c in chosen if c[0].startswith(only)]
    mode = "GRAPH" if ms.get_context("mode") == ms.GRAPH_MODE else "PyNative"
    size = sum(int(np.prod(p.shape)) for p in MODELS[model][0]().trainable_params()) / 1e6
    print(f"\n== {model} ({size:.2f}M parameters), {mode}; ms per step, best of {repeat}x{steps}")
    print(f"{'case':36s} {'native':22s} | {'opt: native':>11s} {'all':>7s} {'lr':>7s} {'ratio':>11s} | "
          f"{'train: native':>13s} {'all':>7s} {'lr':>7s} {'ratio':>11s}")
    for name, native_name, native, exact in chosen:
        runners = [Runner(model, native), Runner(model, exact), Runner(model, lambda ps: exact(ps, ("lr",)))]
        opt = [float("inf")] * len(runners)
        train = [float("inf")] * len(runners)
        for _ in range(repeat):
            for i, r in enumerate(runners):
                opt[i] = min(opt[i], per_step(r, "opt", steps))
                train[i] = min(train[i], per_step(r, "train", steps))
        print(f"{name:36s} {native_name:22s} | {opt[0]*1e3:11.3f} {opt[1]*1e3:7.3f} {opt[2]*1e3:7.3f} "
              f"{opt[1]/opt[0]:5.2f}/{opt[2]/opt[0]:5.2f} | {train[0]*1e3:13.3f} {train[1]*1e3:7.3f} "
              f"{train[2]*1e3:7.3f} {train[1]/train[0]:5.2f}/{train[2]/train[0]:5.2f}", flush=True)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    ap.add_argument("--model", choices=("cnn", "mlp", "both"), default="both")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", metavar="PREFIX", help="only the cases whose name starts with PREFIX (e.g. SGD)")
    args = ap.parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE)
    for model in (("cnn", "mlp") if args.model == "both" else (args.model,)):
        bench(model, args.quick, args.only)


if __name__ == "__main__":
    main(sys.argv[1:])
