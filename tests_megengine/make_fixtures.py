"""Real torch 2.13 trajectories for the MegEngine optimizer tests (torch is not in the MegEngine env).

Run with the MAIN interpreter from the repo root:

    .venv/bin/python tests_megengine/make_fixtures.py          # (re)writes fixtures/torch_trajectories.npz
    .venv/bin/python tests_megengine/make_fixtures.py --check  # exit 1 if the committed file is stale

Each config is a torch setup (optimizer, scheduler, or hyperparameters written
into the groups by hand) and the optbridge plan that describes it. The script
steps torch 100 times with fixed float32 initial values and gradients and stores,
per config: the plan (canonical JSON), the initial values and gradients, torch's
parameter trajectory (float32) and the hyperparameters torch held before each
update. ``tests_megengine/test_mge_vs_torch.py`` replays the plan in MegEngine and
compares. ``tests/test_megengine_worker.py`` regenerates the data in memory and
checks the committed file still matches it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

STEPS, DIM = 100, 6
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "torch_trajectories.npz"


def _plan(opt: dict[str, Any], groups: list[dict[str, Any]], schedule: dict[str, Any] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"optbridge": 1, "optimizer": opt, "groups": groups}
    if schedule:
        d["schedule"] = schedule
    return d


def _g(i: int, **kw: Any) -> dict[str, Any]:
    return {"name": f"g{i}", "params": f"p{i}", **kw}


def _onecycle_momentum(o: Any, total: int, hyper: str) -> Any:
    from torch.optim import lr_scheduler as S
    return S.OneCycleLR(o, max_lr=[g["lr"] for g in o.param_groups], total_steps=total,
                        base_momentum=0.85, max_momentum=0.95, cycle_momentum=True)


def _wd_cosine(k: int) -> float:  # the torch loop of seed 004: weight decay written into the group by hand
    return 0.0 + (0.05 - 0.0) * ((1.0 + math.cos(math.pi * k / STEPS)) / 2)


# name -> (plan, groups (torch param group options), torch optimizer factory, scheduler factory, hand writes, grad scale)
def configs() -> dict[str, dict[str, Any]]:
    import torch
    from torch.optim import lr_scheduler as S
    one = [_g(0)]
    two = [_g(0), _g(1, lr=0.02)]
    cyc = {"kind": "one_cycle", "total_steps": STEPS}
    mom_cyc = {"kind": "one_cycle", "total_steps": STEPS, "initial": 0.95, "peak": 0.85, "final": 0.95}
    return {
        "sgd_plain": dict(plan=_plan({"type": "SGD", "lr": 0.1}, one),
                          torch=lambda ps: torch.optim.SGD([{"params": [ps[0]]}], lr=0.1)),
        "sgd_momentum": dict(plan=_plan({"type": "SGD", "lr": 0.1, "momentum": 0.9}, one),
                             torch=lambda ps: torch.optim.SGD([{"params": [ps[0]]}], lr=0.1, momentum=0.9)),
        "sgd_nesterov": dict(plan=_plan({"type": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True}, one),
                             torch=lambda ps: torch.optim.SGD([{"params": [ps[0]]}], lr=0.1, momentum=0.9, nesterov=True)),
        "sgd_wd_momentum": dict(plan=_plan({"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}, one),
                                torch=lambda ps: torch.optim.SGD([{"params": [ps[0]]}], lr=0.1, momentum=0.9,
                                                                 weight_decay=0.05)),
        "sgd_nesterov_split": dict(
            plan=_plan({"type": "SGD", "lr": 0.1, "momentum": 0.9}, [_g(0, nesterov=True), _g(1, lr=0.05)]),
            torch=lambda ps: torch.optim.SGD([{"params": [ps[0]], "nesterov": True}, {"params": [ps[1]], "lr": 0.05}],
                                             lr=0.1, momentum=0.9)),
        "adam": dict(plan=_plan({"type": "Adam", "lr": 0.01}, one),
                     torch=lambda ps: torch.optim.Adam([ps[0]], lr=0.01)),
        "adam_l2": dict(plan=_plan({"type": "Adam", "lr": 0.01, "weight_decay": 0.05}, one),
                        torch=lambda ps: torch.optim.Adam([ps[0]], lr=0.01, weight_decay=0.05)),
        "adamw": dict(plan=_plan({"type": "AdamW", "lr": 0.01, "weight_decay": 0.05}, one),
                      torch=lambda ps: torch.optim.AdamW([ps[0]], lr=0.01, weight_decay=0.05)),
        "adamw_default_wd": dict(plan=_plan({"type": "AdamW", "lr": 0.01}, one),
                                 torch=lambda ps: torch.optim.AdamW([ps[0]], lr=0.01)),
        "adadelta": dict(plan=_plan({"type": "Adadelta"}, one),
                         torch=lambda ps: torch.optim.Adadelta([ps[0]])),
        "adagrad": dict(plan=_plan({"type": "Adagrad", "lr": 0.1, "lr_decay": 0.01}, one),
                        torch=lambda ps: torch.optim.Adagrad([ps[0]], lr=0.1, lr_decay=0.01)),
        "sgd_onecycle_2groups": dict(
            plan=_plan({"type": "SGD", "lr": 0.1, "momentum": 0.9}, two, {"lr": cyc, "momentum": mom_cyc}),
            torch=lambda ps: torch.optim.SGD([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.02}], lr=0.1, momentum=0.9),
            sched=lambda o: _onecycle_momentum(o, STEPS, "momentum"), hypers=("lr", "momentum")),
        "adam_onecycle_beta1": dict(
            plan=_plan({"type": "Adam", "lr": 0.01}, two, {"lr": cyc, "beta1": mom_cyc}),
            torch=lambda ps: torch.optim.Adam([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.02}], lr=0.01),
            sched=lambda o: _onecycle_momentum(o, STEPS, "beta1"), hypers=("lr", "beta1")),
        "adamw_warmup_cosine_2groups": dict(
            plan=_plan({"type": "AdamW", "lr": 0.01, "weight_decay": 0.05}, [_g(0), _g(1, lr=0.001)],
                       {"lr": {"kind": "sequence", "boundaries": [10],
                               "parts": [{"kind": "linear", "start_factor": 0.1, "steps": 10},
                                         {"kind": "cosine", "steps": STEPS - 10}]}}),
            torch=lambda ps: torch.optim.AdamW([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.001}], lr=0.01,
                                               weight_decay=0.05),
            sched=lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=10),
                                               S.CosineAnnealingLR(o, T_max=STEPS - 10)], milestones=[10]),
            hypers=("lr",)),
        "sgd_weight_decay_schedule": dict(
            plan=_plan({"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}, one,
                       {"weight_decay": {"kind": "cosine", "steps": STEPS}}),
            torch=lambda ps: torch.optim.SGD([ps[0]], lr=0.1, momentum=0.9, weight_decay=0.05),
            write={"weight_decay": _wd_cosine}, hypers=("weight_decay",)),
        "sgd_momentum_from_zero": dict(  # momentum scheduled up from 0: MegEngine's buffer trap
            plan=_plan({"type": "SGD", "lr": 0.1, "momentum": 0.0}, one,
                       {"momentum": {"kind": "piecewise", "boundaries": [20], "values": [0.0, 0.9]}}),
            torch=lambda ps: torch.optim.SGD([ps[0]], lr=0.1, momentum=0.0),
            write={"momentum": lambda k: 0.0 if k < 20 else 0.9}, hypers=("momentum",)),
    }


def inputs(name: str, groups: int) -> tuple[np.ndarray, np.ndarray]:
    seed = sum(map(ord, name))
    rs = np.random.RandomState(seed)
    p0 = rs.randn(groups, DIM).astype(np.float32)
    grads = rs.randn(STEPS, groups, DIM).astype(np.float32)
    return p0, grads


def _hyper(group: dict[str, Any], h: str) -> float:
    return float(group["betas"][0] if h == "beta1" else group["betas"][1] if h == "beta2" else group[h])


def run(name: str, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    import torch
    groups = len(cfg["plan"]["groups"])
    p0, grads = inputs(name, groups)
    ps = [torch.nn.Parameter(torch.tensor(p0[i])) for i in range(groups)]
    opt = cfg["torch"](ps)
    sched = cfg["sched"](opt) if "sched" in cfg else None
    hypers = cfg.get("hypers", ("lr",))
    traj = np.empty((STEPS, groups, DIM), np.float32)
    held = np.empty((len(hypers), groups, STEPS))
    for k in range(STEPS):
        for h, fn in cfg.get("write", {}).items():
            for gr in opt.param_groups:
                gr[h] = fn(k)
        for j, h in enumerate(hypers):
            for i, gr in enumerate(opt.param_groups):
                held[j, i, k] = _hyper(gr, h)
        for i, p in enumerate(ps):
            p.grad = torch.tensor(grads[k, i])
        opt.step()
        if sched is not None:
            sched.step()
        for i, p in enumerate(ps):
            traj[k, i] = p.detach().numpy()
    return {"plan": np.array(json.dumps(cfg["plan"])), "p0": p0, "grads": grads, "traj": traj,
            "hypers": np.array(json.dumps(list(hypers))), "held": held}


def build() -> dict[str, np.ndarray]:
    import torch
    torch.manual_seed(0)
    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for name, cfg in configs().items():
        for key, v in run(name, cfg).items():
            out[f"{name}/{key}"] = v
    return out


#: Trajectories (``*/traj``, float32 ``(steps, ...)``) are torch's arithmetic, which rounds differently on
#: different CPUs (two AVX512 machines: up to 0.5 ulp of an update's largest parameter here, measured); a
#: fresh run matches the committed one within this many float32 ulps of each update's largest |parameter|.
TRAJ_ULPS = 2


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Whether ``b`` is ``a`` regenerated: exact, except trajectories within :data:`TRAJ_ULPS`."""
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if k.endswith("/traj") and x.dtype == np.float32 and x.ndim >= 1:
            axes = tuple(range(1, x.ndim))
            scale = np.spacing(np.abs(x).max(axis=axes, keepdims=True)).astype(np.float64)
            if not (np.abs(x.astype(np.float64) - y) <= TRAJ_ULPS * scale).all():
                return False
        elif not (np.array_equal(x, y) if x.dtype.kind in "fiu" else str(x) == str(y)):
            return False
    return True


def main(argv: list[str]) -> int:
    data = build()
    if "--check" in argv:
        old = dict(np.load(FIXTURE))
        ok = same(old, data)
        print("fixture up to date" if ok else f"fixture {FIXTURE} is stale: rerun {Path(__file__).name}")
        return 0 if ok else 1
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **data)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes, {len(configs())} configs)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
