"""Shared, framework-free pieces of the cross-framework resume tests (test_state.py, test_state_mge.py).

One twin model in three frameworks: ``conv`` (Conv2d 2->3, 3x3, bias), ``bn``
(BatchNorm2d 3), ``fc`` (Linear/Dense 3->2), in two param groups (``features``:
conv and bn; ``head``: fc at half the lr). Every case runs :data:`N` updates with the
same gradients (N(0, 1), float32, generated here from a seed and stored in the
fixture), with the plan's schedule written into the groups before each update
(lr: linear warmup 4 updates from 0.1x, then cosine; in two cases also momentum /
beta1 rising linearly from 0.81 to 0.9). Variants share a case through per-group
options: ``sgd`` is nesterov with weight decay in one group and dampening in the
other, ``adam`` amsgrad in one group and weight decay in the other. A resume reads the state after ``k``
updates in one framework, converts it into another and runs the remaining
updates there; the result is compared with the run that stayed.

The bound (float32 ulps of the group's scale, ``S`` = the largest ``|p|`` of the
group so far in the run that stayed): ``4 + 2 * own`` ulps, where ``own`` is torch's
own float32 error on that group (torch float32 against the same torch run in
float64) -- the bound the exact optimizers are held to (docs/optimizers.md).

Fixtures: ``python tests/test_state.py --write`` writes the main env's
(torch, MindSpore) trajectories and states into ``tests_megengine/fixtures/state_main``;
``.venv-mge/bin/python tests_megengine/test_state_mge.py --write`` writes MegEngine's
into ``tests/fixtures/state_megengine``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import optbridge

N = 16
KS = (1, 6, 11)
ROUND_TRIP_K = 6
SEED = 20261205

ROOT = Path(__file__).resolve().parent.parent
MAIN_FIXTURE = ROOT / "tests_megengine" / "fixtures" / "state_main"
MGE_FIXTURE = ROOT / "tests" / "fixtures" / "state_megengine"

#: torch names and shapes, in the optimizer's order (group features, then head).
TORCH_PARAMS = (("conv.weight", (3, 2, 3, 3)), ("conv.bias", (3,)), ("bn.weight", (3,)), ("bn.bias", (3,)),
                ("fc.weight", (2, 3)), ("fc.bias", (2,)))
GROUP_OF = (0, 0, 0, 0, 1, 1)
SIZES = tuple(int(np.prod(s)) for _, s in TORCH_PARAMS)

_LR = {"SGD": 0.05, "Adam": 0.01, "AdamW": 0.01, "RMSprop": 0.01, "Adagrad": 0.05, "Adadelta": 1.0,
       "Adamax": 0.01, "NAdam": 0.01, "RAdam": 0.01}

#: case -> (torch optimizer, options, scheduled hyperparameter besides lr or None, per-group options)
CASES: dict[str, tuple[str, dict[str, Any], str | None, dict[int, dict[str, Any]]]] = {
    "sgd": ("SGD", {"momentum": 0.9}, None, {0: {"nesterov": True, "weight_decay": 1e-3}, 1: {"dampening": 0.3}}),
    "sgd_momentum_scheduled": ("SGD", {"momentum": 0.9, "weight_decay": 1e-3}, "momentum", {}),
    "adam": ("Adam", {}, None, {0: {"amsgrad": True}, 1: {"weight_decay": 1e-3}}),
    "adam_beta1_scheduled": ("Adam", {}, "beta1", {}),
    "adamw": ("AdamW", {"weight_decay": 0.05}, None, {}),
    "rmsprop": ("RMSprop", {"momentum": 0.5, "centered": True}, None, {}),
    "adagrad": ("Adagrad", {"lr_decay": 0.01, "initial_accumulator_value": 0.1}, None, {}),
    "adadelta": ("Adadelta", {"weight_decay": 1e-3}, None, {}),
    "adamax": ("Adamax", {}, None, {}),
    "nadam": ("NAdam", {}, None, {}),
    "radam": ("RAdam", {}, None, {}),
}


def plan_of(case: str) -> optbridge.Plan:
    """The case's plan (its schedule is what every framework's run writes into the groups)."""
    kind, opts, extra, per_group = CASES[case]
    sched: dict[str, Any] = {"lr": {"kind": "sequence", "boundaries": [4],
                                    "parts": [{"kind": "linear", "start_factor": 0.1, "steps": 4},
                                              {"kind": "cosine", "steps": N - 4}]}}
    if extra is not None:
        sched[extra] = {"kind": "linear", "start_factor": 0.9, "end_factor": 1.0, "steps": N}
    optimizer = {"type": kind, "lr": _LR[kind], **{k: v for k, v in opts.items()}}
    if extra == "beta1":
        optimizer["betas"] = [0.9, 0.999]
    return optbridge.from_dict({"optbridge": 1, "step_unit": "iter", "optimizer": optimizer,
                                "groups": [{"name": "features", "params": ["conv.*", "bn.*"], **per_group.get(0, {})},
                                           {"name": "head", "params": "rest", "lr_mult": 0.5,
                                            **per_group.get(1, {})}],
                                "schedule": sched})


def hypers(case: str) -> dict[str, np.ndarray]:
    """``hyper -> float64 (2 groups, N)``: the values update k uses (the reference trace)."""
    tr = optbridge.trace(plan_of(case), N)
    return {h: np.asarray(v) for h, v in tr.data.items()}


def options(case: str, group: int) -> dict[str, Any]:
    """torch keyword options of a group (lr and the scheduled values are written per update)."""
    kind, opts, _, per_group = CASES[case]
    out = {**opts, **per_group.get(group, {})}
    out["lr"] = _LR[kind] * (0.5 if group else 1.0)
    return out


def inputs() -> tuple[np.ndarray, np.ndarray]:
    """Initial parameters (P,) and gradients (N, P), float32, flat in torch's order."""
    rng = np.random.default_rng(SEED)
    p0 = rng.standard_normal(sum(SIZES)).astype(np.float32)
    grads = rng.standard_normal((N, sum(SIZES))).astype(np.float32)
    return p0, grads


def split(flat: np.ndarray) -> list[np.ndarray]:
    """A flat vector as the torch-shaped arrays of :data:`TORCH_PARAMS`."""
    out, i = [], 0
    for (_, shape), n in zip(TORCH_PARAMS, SIZES):
        out.append(np.asarray(flat[i:i + n]).reshape(shape))
        i += n
    return out


def ulps(got: np.ndarray, ref: np.ndarray, *, start: int = 0) -> np.ndarray:
    """Per group, the worst ``|got - ref|`` over updates ``start..`` in float32 ulps of the group's scale.

    ``got``/``ref``: (steps + 1, P) trajectories (row t = parameters after t updates).
    """
    worst = np.zeros(2)
    edges = np.cumsum((0,) + SIZES)
    for g in (0, 1):
        cols = np.concatenate([np.arange(edges[i], edges[i + 1]) for i in range(6) if GROUP_OF[i] == g])
        r, x = ref[:, cols].astype(np.float64), got[:, cols].astype(np.float64)
        scale = np.maximum.accumulate(np.abs(r).max(axis=1))
        err = np.abs(x - r).max(axis=1) / (2.0 ** -23 * scale)
        worst[g] = err[start:].max()
    return worst


def bound(own: np.ndarray) -> np.ndarray:
    """The per-group bound in ulps: ``4 + 2 * own``."""
    return 4.0 + 2.0 * own
