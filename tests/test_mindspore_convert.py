"""MindSpore float32 lr lists (``optbridge_adapters.mindspore.convert``), numpy only.

Rule: a list equals the reference rounded once to float32, however long (evaluated in
windows). The lists with a runnable MindSpore script are ``optbridge port --to mindspore
--form list`` (tests/test_port.py runs them on real nets).
"""

from __future__ import annotations

import numpy as np

import optbridge


def test_long_lists_are_evaluated_in_chunks_bit_identically() -> None:
    from optbridge import ir
    from optbridge.plan import Group, OptimizerSpec, Plan
    from optbridge_adapters.mindspore.convert import CHUNK, lists
    n = 2 * CHUNK + 3
    node = ir.Sequence(parts=(ir.Linear(start_factor=0.0, end_factor=1.0, steps=1000, unit="epoch"),
                              ir.Multiplicative(expr="0.999999"), ir.Cosine(steps=CHUNK)),
                       boundaries=(CHUNK // 2, CHUNK + 7))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a"), Group(name="b", options={"lr": 0.01}), Group(name="z", frozen="zero_lr"),
        Group(name="c", schedule={"lr": ir.Constant()}))),), schedule={"lr": node}, steps_per_epoch=7)
    out = lists(plan, n)
    ref = optbridge.trace(plan, n)["lr"].astype(np.float32)
    for i, g in enumerate("abzc"):
        np.testing.assert_array_equal(out[g], ref[i])
