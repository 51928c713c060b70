"""The reference evaluator against MindSpore 2.10's own ``nn.*_lr`` list functions.

MindSpore computes these lists in float64 Python; we require ``|ref - ms| <=
1e-12 * |ms|`` at every step (exact zeros must stay exact), for three groups
with different base lrs over 2000+ steps with an epoch staircase
(``step_per_epoch`` 20). Each group gets the list MindSpore builds from its own
base lr; the plan holds one schedule and three base lrs.
"""

from __future__ import annotations

import numpy as np
import pytest

nn = pytest.importorskip("mindspore.nn")

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan  # noqa: E402

LRS = (0.1, 0.05, 0.02)
TOTAL, SPE = 2400, 20
RTOL = 1e-12


def _plan(node: ir.Node | list[ir.Node], *, spe: int = SPE, total: int = TOTAL) -> Plan:
    nodes = node if isinstance(node, list) else [node] * len(LRS)
    groups = tuple(Group(name=f"g{i}", options={"lr": lr}, schedule={"lr": n}) for i, (lr, n) in enumerate(zip(LRS, nodes)))
    return Plan(optimizers=(OptimizerSpec(type="SGD", groups=groups),), steps_per_epoch=spe, total_steps=total)


def E(node_cls, **kw):
    return node_cls(unit="epoch", **kw)


CASES = [
    ("exponential_decay_lr", lambda lr: nn.exponential_decay_lr(lr, 0.9, TOTAL, SPE, 3), E(ir.Exponential, gamma=0.9, every=3)),
    ("exponential_decay_lr-stair", lambda lr: nn.exponential_decay_lr(lr, 0.9, TOTAL, SPE, 3, True), E(ir.Exponential, gamma=0.9, every=3, stair=True)),
    ("exponential_decay_lr-growth", lambda lr: nn.exponential_decay_lr(lr, 1.01, TOTAL, SPE, 2), E(ir.Exponential, gamma=1.01, every=2)),
    ("natural_exp_decay_lr", lambda lr: nn.natural_exp_decay_lr(lr, 0.05, TOTAL, SPE, 7), E(ir.NaturalExp, rate=0.05, every=7)),
    ("natural_exp_decay_lr-stair", lambda lr: nn.natural_exp_decay_lr(lr, 0.05, TOTAL, SPE, 7, True), E(ir.NaturalExp, rate=0.05, every=7, stair=True)),
    ("inverse_decay_lr", lambda lr: nn.inverse_decay_lr(lr, 0.3, TOTAL, SPE, 4), E(ir.InverseTime, rate=0.3, every=4)),
    ("inverse_decay_lr-stair", lambda lr: nn.inverse_decay_lr(lr, 0.3, TOTAL, SPE, 4, True), E(ir.InverseTime, rate=0.3, every=4, stair=True)),
    ("cosine_decay_lr-clamped", lambda lr: nn.cosine_decay_lr(1e-4, lr, TOTAL, SPE, 60), E(ir.Cosine, steps=60, end=1e-4, clamp=True)),
    ("cosine_decay_lr-to-0", lambda lr: nn.cosine_decay_lr(0.0, lr, TOTAL, SPE, 120), E(ir.Cosine, steps=120, end=0.0, clamp=True)),
    ("polynomial_decay_lr", lambda lr: nn.polynomial_decay_lr(lr, 1e-4, TOTAL, SPE, 60, 2.0), E(ir.Polynomial, steps=60, power=2.0, end=1e-4)),
    ("polynomial_decay_lr-update", lambda lr: nn.polynomial_decay_lr(lr, 1e-4, TOTAL, SPE, 25, 0.5, True),
     E(ir.Polynomial, steps=25, power=0.5, end=1e-4, cycle=True)),
    ("warmup_lr", lambda lr: nn.warmup_lr(lr, TOTAL, SPE, 10), E(ir.Linear, start_factor=0.0, end_factor=1.0, steps=10)),
]


def _check(expected: np.ndarray, got: np.ndarray, name: str) -> None:
    bad = np.argwhere(np.abs(got - expected) > RTOL * np.abs(expected))
    assert bad.size == 0, f"{name}: first divergence at group {bad[0][0]}, step {bad[0][1]}: ms {expected[tuple(bad[0])]!r}, ref {got[tuple(bad[0])]!r}"


@pytest.mark.parametrize("name,ms,node", CASES, ids=[c[0] for c in CASES])
def test_reference_equals_mindspore_list(name, ms, node) -> None:
    expected = np.array([ms(lr) for lr in LRS], dtype=np.float64)
    assert expected.shape == (3, TOTAL)
    got = optbridge.trace(_plan(node), TOTAL)["lr"]
    _check(expected, got, name)


def test_piecewise_constant_lr() -> None:
    milestones = [300, 800, 1500, TOTAL]
    expected = np.array([nn.piecewise_constant_lr(milestones, [lr, lr / 10, lr / 100, lr / 1000]) for lr in LRS])
    nodes = [ir.Piecewise(boundaries=(300, 800, 1500), values=(lr, lr / 10, lr / 100, lr / 1000)) for lr in LRS]
    _check(expected, optbridge.trace(_plan(nodes), TOTAL)["lr"], "piecewise_constant_lr")


def test_concatenated_warmup_then_cosine_lists() -> None:
    """The usual MindSpore idiom: warmup_lr + cosine_decay_lr lists concatenated."""
    W = 200
    expected = np.array([nn.warmup_lr(lr, W, SPE, W // SPE) + nn.cosine_decay_lr(0.0, lr, TOTAL - W, SPE, (TOTAL - W) // SPE) for lr in LRS])
    node = ir.Sequence(parts=(E(ir.Linear, start_factor=0.0, end_factor=1.0, steps=W // SPE),
                              E(ir.Cosine, steps=(TOTAL - W) // SPE, clamp=True)), boundaries=(W,), unit="iter")
    _check(expected, optbridge.trace(_plan(node), TOTAL)["lr"], "warmup+cosine")


def test_total_steps_is_enforced_like_mindspore_lists() -> None:
    with pytest.raises(optbridge.EvaluationError, match="defined for 2400 steps"):
        optbridge.trace(_plan(E(ir.Cosine, steps=60)), TOTAL + 1)
