"""The data of ``optbridge lr-find``'s bundled example, shared by the three frameworks.

A tiny regression problem made by numpy from a seed: float32 inputs ``x``, targets
``y = 2 tanh(x @ a) + 0.05 * noise``, and the initial weights of a ``8 -> 32 -> 1`` tanh MLP
(torch's ``nn.Linear`` initialisation bounds). Each framework's runner builds the same
model from these arrays (``optbridge_adapters.<framework>.lrfind.example``), so the
three start bit-identical and their curves can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ExampleArrays", "arrays"]


@dataclass(frozen=True)
class ExampleArrays:
    """Weights (``w1 (32, 8)``, ``b1 (32,)``, ``w2 (1, 32)``, ``b2 (1,)``), batches, and the optimizer's lr."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    x: tuple[np.ndarray, ...]
    y: tuple[np.ndarray, ...]
    lr: float = 0.1


def arrays(seed: int = 0, *, batches: int = 16, batch_size: int = 64, d_in: int = 8, hidden: int = 32) -> ExampleArrays:
    """The example's float32 arrays for ``seed`` (deterministic across platforms: numpy's PCG64)."""
    rng = np.random.default_rng(seed)

    def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    w1, b1 = uniform((hidden, d_in), d_in), uniform((hidden,), d_in)
    w2, b2 = uniform((1, hidden), hidden), uniform((1,), hidden)
    a = rng.normal(size=(d_in, 1)) * (2.0 / np.sqrt(d_in))
    xs, ys = [], []
    for _ in range(batches):
        x = rng.normal(size=(batch_size, d_in))
        y = 2.0 * np.tanh(x @ a) + 0.05 * rng.normal(size=(batch_size, 1))
        xs.append(x.astype(np.float32))
        ys.append(y.astype(np.float32))
    return ExampleArrays(w1, b1, w2, b2, tuple(xs), tuple(ys))
