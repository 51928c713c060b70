"""Recipes: schedules people write by hand, built from the IR's nodes.

Recipes add no node kinds: each returns an ordinary IR tree, so every backend
and the serializer handle it without special cases.

Examples:
    >>> from optbridge import recipes
    >>> recipes.warmup_cosine(warmup=5, total=100).kind
    'sequence'
"""

from __future__ import annotations

from . import ir
from .errors import ConfigError

__all__ = ["linear_warmup", "exponential_warmup", "warmup_then", "warmup_cosine", "noam",
           "inverse_sqrt", "warmup_stable_decay", "sgdr", "linear_decay"]


def linear_warmup(steps: int, start_factor: float = 0.0) -> ir.Linear:
    r"""``base * (s + (1 - s) * min(k, W) / W)``: from ``s * base`` (0 allowed) to ``base`` in ``W`` steps."""
    return ir.Linear(start_factor=start_factor, end_factor=1.0, steps=steps)


def exponential_warmup(steps: int, start_factor: float) -> ir.Lambda:
    r"""Geometric warmup ``base * s^{1 - min(k, W)/W}``: from ``s * base`` to ``base`` in ``W`` steps.

    A geometric ramp cannot start at 0; use :func:`linear_warmup` for that.
    """
    if not 0.0 < start_factor:
        raise ConfigError("start_factor", "must be > 0 for a geometric warmup (use linear_warmup to start at 0)",
                          start_factor)
    ir.check_int("steps", steps, minimum=1)
    return ir.Lambda(expr=f"{start_factor!r} ** (1 - min(step, {steps}) / {steps})")


def warmup_then(schedule: ir.Node, warmup: int, start_factor: float = 0.0) -> ir.Sequence:
    """Linear warmup for ``warmup`` steps, then ``schedule`` on its own clock."""
    return ir.Sequence(parts=(linear_warmup(warmup, start_factor), schedule), boundaries=(warmup,))


def warmup_cosine(warmup: int, total: int, end: float = 0.0, start_factor: float = 0.0) -> ir.Sequence:
    r"""Linear warmup, then cosine from ``base`` to the absolute ``end`` at step ``total``."""
    if total <= warmup:
        raise ConfigError("total", f"must exceed warmup ({warmup})", total)
    return warmup_then(ir.Cosine(steps=total - warmup, end=end, clamp=True), warmup, start_factor)


def noam(warmup: int, offset: int = 1) -> ir.Lambda:
    r"""Noam / inverse-square-root warmup (seed 002): ``base * min(n^{-1/2}, n W^{-3/2})``, ``n = k + offset``.

    ``offset=1`` is the usual torch ``LambdaLR`` form; the seed's hand-written
    scheduler, stepped before each update, is also ``offset=1``.
    """
    ir.check_int("warmup", warmup, minimum=1)
    ir.check_int("offset", offset, minimum=1)
    n = f"(step + {offset})"
    return ir.Lambda(expr=f"min({n} ** -0.5, {n} * {warmup} ** -1.5)")


def inverse_sqrt(warmup: int) -> ir.Lambda:
    r"""Linear warmup to ``base`` at ``W``, then ``base * sqrt(W / k)`` (fairseq's inverse_sqrt)."""
    ir.check_int("warmup", warmup, minimum=1)
    return ir.Lambda(expr=f"step / {warmup} if step < {warmup} else ({warmup} / step) ** 0.5")


def warmup_stable_decay(warmup: int, stable: int, decay: int, end_factor: float = 0.0,
                        start_factor: float = 0.0, shape: str = "linear") -> ir.Sequence:
    r"""Warmup-stable-decay: linear warmup, a plateau at ``base``, then linear or cosine decay to ``end_factor * "
    r"base``."""
    ir.check_choice("shape", shape, ("linear", "cosine"))
    if shape == "linear":
        tail: ir.Node = ir.Linear(start_factor=1.0, end_factor=end_factor, steps=decay)
    else:
        tail = ir.Lambda(expr=f"{end_factor!r} + (1 - {end_factor!r}) * (1 + cos(pi * min(step, {decay}) / {decay})) "
                              f"/ 2")
    return ir.Sequence(parts=(linear_warmup(warmup, start_factor), ir.Constant(), tail),
                       boundaries=(warmup, warmup + stable))


def sgdr(period: int, mult: int = 1, end: float = 0.0) -> ir.CosineRestarts:
    """SGDR cosine annealing with warm restarts (seed 001), ``T_i = period * mult^i``."""
    return ir.CosineRestarts(period=period, mult=mult, end=end)


def linear_decay(steps: int, end_factor: float = 0.0) -> ir.Linear:
    """Linear decay from ``base`` to ``end_factor * base`` (seed 003 writes it into param groups)."""
    return ir.Linear(start_factor=1.0, end_factor=end_factor, steps=steps)
