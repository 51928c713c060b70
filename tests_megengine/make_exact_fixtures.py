"""Real torch 2.13 trajectories for the torch-exact MegEngine optimizers (torch is not in the MegEngine env).

Run with the MAIN interpreter from the repo root:

    .venv/bin/python tests_megengine/make_exact_fixtures.py          # (re)writes fixtures/torch_exact_optimizers.npz
    .venv/bin/python tests_megengine/make_exact_fixtures.py --check  # exit 1 if the committed file is stale

Every config runs one torch optimizer (every optimizer of
``optbridge_adapters.megengine.optimizers`` and its flags, one group or two groups
with different options) for ``STEPS`` updates on two float32 parameters, ``w``
(5x7: torch's vectorised kernels and their scalar tail) and ``b`` (3: tail only),
with a fixed gradient sequence, either N(0, 1) (with some exact zeros) or of size
about 1e-7 on parameters of size 1e-6 (where eps placement matters). Some configs
write lr, momentum, betas or weight_decay into the groups before each update (the
values are stored), some leave ``b`` without a gradient for a few updates (torch
skips it: per-parameter step counters then differ). torch runs its single-tensor
path (``foreach=False``), which is what it uses on CPU by default.

Stored per config ``name``: ``name/config`` (JSON), ``name/traj`` (float32
``(STEPS, 38)``: ``w`` then ``b`` after every update), ``name/noise`` (per update,
``max |traj - traj64|`` where ``traj64`` is the same torch optimizer run in float64:
torch's own float32 rounding error, which measures how much the config amplifies
rounding), ``name/sched/<hyper>`` (float64 ``(groups, STEPS)``, the value written
before update k), ``name/state/<param index>/<state name>`` (torch's final
``state_dict()`` state, float32) and ``name/state_noise/...`` (its float64 distance).
Shared: ``inputs/p0/<regime>`` and ``inputs/grads/<regime>``.
``tests_megengine/test_exact_optimizers.py`` replays every config in MegEngine;
``tests/test_exact_optimizers_fixture.py`` checks this file is still what torch computes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

STEPS = 60
W_SHAPE, B_SHAPE = (5, 7), (3,)
N = 38  # 35 + 3 elements
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "torch_exact_optimizers.npz"
REGIMES = ("normal", "tiny")
SKIP = (10, 20)  # updates [10, 20) of "skip" configs: b has no gradient


def _cosine(lo: float, hi: float) -> list[float]:
    return [lo + (hi - lo) * (1 + math.cos(math.pi * k / STEPS)) / 2 for k in range(STEPS)]


def _ramp(a: float, b: float, n: int) -> list[float]:
    return [a + (b - a) * min(k, n) / n for k in range(STEPS)]


def _schedules() -> dict[str, dict[str, list[float]]]:
    """Per-step values written into every group (hyper -> STEPS values)."""
    return {
        "sgd_sched": {"lr": _cosine(0.001, 0.1), "momentum": [0.0] * 10 + [0.9] * (STEPS - 10),
                      "weight_decay": _cosine(0.0, 0.05)},
        "sgd_from_zero": {"momentum": [0.0] * 10 + [0.9] * (STEPS - 10)},  # piecewise: a plan's PlanScheduler too
        "adam_piecewise": {"beta1": [0.95] * 20 + [0.8] * (STEPS - 20), "weight_decay": [0.0] * 30 + [0.05] * (STEPS - 30)},
        "sgd_nesterov_sched": {"momentum": _cosine(0.85, 0.95), "lr": _ramp(0.01, 0.1, 20)},
        "adam_sched": {"lr": _ramp(0.001, 0.01, 10), "beta1": _cosine(0.85, 0.95), "weight_decay": _cosine(0.0, 0.05)},
        "adamw_sched": {"beta1": _cosine(0.8, 0.95), "beta2": _ramp(0.9, 0.999, 30), "lr": _cosine(0.0, 0.01)},
        "rmsprop_sched": {"momentum": _cosine(0.5, 0.9), "lr": _cosine(0.001, 0.01)},
        "adagrad_sched": {"lr": _cosine(0.01, 0.1), "weight_decay": _ramp(0.0, 0.05, 30)},
        "adadelta_sched": {"lr": _cosine(0.1, 1.0)},
        "adamax_sched": {"beta1": _cosine(0.85, 0.95)},
        "nadam_sched": {"beta1": _cosine(0.85, 0.95), "lr": _ramp(0.001, 0.01, 10)},
        "radam_sched": {"beta1": _cosine(0.85, 0.95), "beta2": _ramp(0.99, 0.999, 30)},
    }


def configs() -> dict[str, dict[str, Any]]:
    """name -> {type, defaults, groups (None: one group [w, b]; else overrides for [w] and [b]), regime, skip}."""
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, typ: str, groups: list[dict[str, Any]] | None = None, skip: bool = False,
            **defaults: Any) -> None:
        for regime in REGIMES:
            out[f"{name}_{regime}"] = {"type": typ, "defaults": defaults, "groups": groups, "regime": regime,
                                       "skip": skip, "schedule": name if name in _schedules() else None}

    add("sgd", "SGD", lr=0.1)
    add("sgd_momentum", "SGD", lr=0.1, momentum=0.9)
    add("sgd_dampening", "SGD", lr=0.1, momentum=0.9, dampening=0.5)
    add("sgd_nesterov", "SGD", lr=0.1, momentum=0.9, nesterov=True)
    add("sgd_wd", "SGD", lr=0.1, weight_decay=0.05)
    add("sgd_wd_momentum", "SGD", lr=0.1, momentum=0.9, weight_decay=0.05)
    add("sgd_maximize", "SGD", lr=0.1, momentum=0.9, weight_decay=0.05, nesterov=True, maximize=True)
    add("sgd_groups", "SGD", lr=0.1, momentum=0.9,
        groups=[{"nesterov": True}, {"dampening": 0.3, "lr": 0.05, "maximize": True, "weight_decay": 0.01}])
    add("sgd_skip", "SGD", lr=0.1, momentum=0.9, skip=True)
    add("sgd_sched", "SGD", lr=0.1, momentum=0.0, weight_decay=0.05)
    add("sgd_from_zero", "SGD", lr=0.1, momentum=0.0)
    add("sgd_nesterov_sched", "SGD", lr=0.1, momentum=0.9, nesterov=True)
    add("adam", "Adam", lr=0.01)
    add("adam_amsgrad", "Adam", lr=0.01, amsgrad=True)
    add("adam_l2", "Adam", lr=0.01, weight_decay=0.05)
    add("adam_decoupled", "Adam", lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)
    add("adam_all", "Adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True, maximize=True)
    add("adam_groups", "Adam", lr=0.01, groups=[{"betas": (0.5, 0.9)}, {"amsgrad": True, "lr": 0.02, "eps": 1e-3}])
    add("adam_skip", "Adam", lr=0.01, skip=True)
    add("adam_piecewise", "Adam", lr=0.01, betas=(0.95, 0.999))
    add("adam_sched", "Adam", lr=0.01, weight_decay=0.05)
    add("adamw", "AdamW", lr=0.01)
    add("adamw_wd", "AdamW", lr=0.01, weight_decay=0.05)
    add("adamw_amsgrad", "AdamW", lr=0.01, weight_decay=0.05, amsgrad=True, maximize=True)
    add("adamw_sched", "AdamW", lr=0.01, weight_decay=0.05)
    add("rmsprop", "RMSprop", lr=0.01)
    add("rmsprop_centered", "RMSprop", lr=0.01, centered=True)
    add("rmsprop_momentum", "RMSprop", lr=0.01, momentum=0.9)
    add("rmsprop_all", "RMSprop", lr=0.01, alpha=0.9, eps=1e-6, centered=True, momentum=0.5, weight_decay=0.05,
        maximize=True)
    add("rmsprop_sched", "RMSprop", lr=0.01, momentum=0.5)
    add("adagrad", "Adagrad", lr=0.1)
    add("adagrad_decay", "Adagrad", lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)
    add("adagrad_all", "Adagrad", lr=0.1, lr_decay=0.05, weight_decay=0.05, eps=1e-6, maximize=True)
    add("adagrad_sched", "Adagrad", lr=0.1)
    add("adadelta", "Adadelta")
    add("adadelta_wd", "Adadelta", weight_decay=0.05)
    add("adadelta_all", "Adadelta", lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.05, maximize=True)
    add("adadelta_sched", "Adadelta")
    add("adamax", "Adamax", lr=0.01)
    add("adamax_all", "Adamax", lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, maximize=True)
    add("adamax_sched", "Adamax", lr=0.01)
    add("nadam", "NAdam", lr=0.01)
    add("nadam_l2", "NAdam", lr=0.01, weight_decay=0.05, momentum_decay=0.01)
    add("nadam_decoupled", "NAdam", lr=0.01, weight_decay=0.05, decoupled_weight_decay=True, maximize=True)
    add("nadam_skip", "NAdam", lr=0.01, skip=True)
    add("nadam_sched", "NAdam", lr=0.01)
    add("radam", "RAdam", lr=0.01)
    add("radam_beta2", "RAdam", lr=0.01, betas=(0.9, 0.9))
    add("radam_l2", "RAdam", lr=0.01, weight_decay=0.05)
    add("radam_decoupled", "RAdam", lr=0.01, weight_decay=0.05, decoupled_weight_decay=True, maximize=True)
    add("radam_skip", "RAdam", lr=0.01, betas=(0.9, 0.9), skip=True)
    add("radam_sched", "RAdam", lr=0.01)
    return out


def inputs() -> dict[str, np.ndarray]:
    """Initial values and gradients per regime (float32; N(0,1) with 5 % exact zeros, or ~1e-7 on ~1e-6)."""
    rs = np.random.RandomState(20240611)
    out = {}
    p0 = rs.randn(N).astype(np.float32)
    grads = rs.randn(STEPS, N).astype(np.float32)
    grads[rs.rand(STEPS, N) < 0.05] = 0.0
    out["inputs/p0/normal"], out["inputs/grads/normal"] = p0, grads
    out["inputs/p0/tiny"] = (rs.randn(N) * 1e-6).astype(np.float32)
    out["inputs/grads/tiny"] = (rs.randn(STEPS, N) * 1e-7).astype(np.float32)
    return out


def schedule(cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """hyper -> float64 (groups, STEPS): the value written into each group before update k."""
    if cfg["schedule"] is None:
        return {}
    groups = 1 if cfg["groups"] is None else len(cfg["groups"])
    return {h: np.tile(np.asarray(v, np.float64), (groups, 1)) for h, v in _schedules()[cfg["schedule"]].items()}


def write(group: dict[str, Any], hyper: str, value: float) -> None:
    """Write a scheduled value into a (torch or MegEngine) group: beta1/beta2 into ``betas``."""
    if hyper in ("beta1", "beta2"):
        b = list(group["betas"])
        b[hyper == "beta2"] = value
        group["betas"] = tuple(b)
    else:
        group[hyper] = value


def param_groups(cfg: dict[str, Any], w: Any, b: Any) -> list[dict[str, Any]]:
    if cfg["groups"] is None:
        return [{"params": [w, b]}]
    return [{"params": [w], **cfg["groups"][0]}, {"params": [b], **cfg["groups"][1]}]


def has_grad(cfg: dict[str, Any], k: int) -> bool:
    """Whether ``b`` has a gradient at update k."""
    return not (cfg["skip"] and SKIP[0] <= k < SKIP[1])


def run(cfg: dict[str, Any], data: dict[str, np.ndarray], *, dtype: Any = np.float32,
        foreach: bool | None = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """torch's trajectory ``(STEPS, N)`` and final state (``"index/name"`` -> array) for one config.

    ``dtype=np.float64`` runs the same optimizer on float64 copies of the float32
    inputs: its distance to the float32 run is torch's own float32 rounding error.
    """
    import torch
    p0, grads = data[f"inputs/p0/{cfg['regime']}"].astype(dtype), data[f"inputs/grads/{cfg['regime']}"].astype(dtype)
    w = torch.nn.Parameter(torch.tensor(p0[:35].reshape(W_SHAPE)))
    b = torch.nn.Parameter(torch.tensor(p0[35:]))
    opt = getattr(torch.optim, cfg["type"])(param_groups(cfg, w, b), foreach=foreach, **cfg["defaults"])
    sched = schedule(cfg)
    traj = np.empty((STEPS, N), dtype)
    for k in range(STEPS):
        for h, values in sched.items():
            for i, g in enumerate(opt.param_groups):
                write(g, h, float(values[i, k]))
        w.grad = torch.tensor(grads[k, :35].reshape(W_SHAPE))
        b.grad = torch.tensor(grads[k, 35:]) if has_grad(cfg, k) else None
        opt.step()
        traj[k, :35] = w.detach().numpy().ravel()
        traj[k, 35:] = b.detach().numpy()
    state = {f"{index}/{key}": value.detach().numpy()
             for index, st in opt.state_dict()["state"].items() for key, value in st.items()}
    return traj, state


def record(cfg: dict[str, Any], data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fixture entries of one config (keys without the ``name/`` prefix)."""
    traj, state = run(cfg, data)
    traj64, state64 = run(cfg, data, dtype=np.float64)
    out = {"traj": traj, "noise": np.abs(traj - traj64).max(axis=1),
           **{f"sched/{h}": v for h, v in schedule(cfg).items()}}
    for key, value in state.items():
        out[f"state/{key}"] = value.astype(np.float32)
        out[f"state_noise/{key}"] = np.array(np.abs(value.astype(np.float64) - state64[key]).max())
    return out


def build() -> dict[str, np.ndarray]:
    import torch
    torch.set_num_threads(1)
    data = inputs()
    out: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__),
                                  "torch_cpu_capability": np.array(torch.backends.cpu.get_cpu_capability()), **data}
    for name, cfg in configs().items():
        out[f"{name}/config"] = np.array(json.dumps(cfg, sort_keys=True))
        for key, v in record(cfg, data).items():
            out[f"{name}/{key}"] = v
    return out


def load() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return dict(f)


def main(argv: list[str]) -> int:
    data = build()
    if "--check" in argv:
        old = load()
        stale = sorted(k for k in set(old) | set(data) if k not in old or k not in data or
                       old[k].dtype != data[k].dtype or not np.array_equal(old[k], data[k]))
        print("fixture up to date" if not stale else f"fixture {FIXTURE} differs in {stale[:5]}...: rerun {Path(__file__).name}")
        return 0 if not stale else 1
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **data)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes, {len(configs())} configs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
