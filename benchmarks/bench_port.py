"""``optbridge port`` at scale, and the generated driver's per-step cost against a native scheduler.

Run: ``.venv/bin/python benchmarks/bench_port.py [--groups G] [--steps N] [--driver-steps M] [--repeat R]``

1. **The port.** 150 groups x 1e6 updates (defaults) to MindSpore lists, each in a fresh
   process (its peak RSS is that process's ``VmHWM``: ``ru_maxrss`` would carry the parent's
   peak across the fork; the time is the wall time of ``optbridge.port(...)``), for two plans
   with the same warmup + cosine lr schedule:
   * *shared*: the groups differ only in their base (layer-wise lr decay, ``lr_mult: 0.97**i``)
     and the cosine ends at 0, so one table serves every group (times its base);
   * *own*: the cosine ends at an absolute ``eta_min = 1e-6``, whose value is not a multiple of
     the base, so every group gets its own table (150 x 8 MB = 1.2 GB written): the worst case.
   Goal: at most 2 GB peak and 30 s each.
2. **The driver.** ``scheduler.step()`` of the generated torch module's ``TableScheduler``
   against torch's own ``SequentialLR[LinearLR, CosineAnnealingLR]`` on the same SGD optimizer
   (3 and 150 groups, M steps, interleaved, best of R), and, for context, a whole update
   ``optimizer.step(); scheduler.step()`` (one 1-element parameter per group, gradient 1; the
   port's optimizer goes through the generated step pre-hook). Both must leave the same lrs
   (checked, relative to the base lr).

``--trajectories`` (docs/porting.md, "Parameter trajectories") runs instead: a torch training
script (a CIFAR-style ResNet, SGD with nesterov momentum and weight decay, four groups,
LinearLR warmup then CosineAnnealingLR in a SequentialLR) for ``--traj-steps`` updates;
``optbridge.from_torch`` of its live optimizer and scheduler; the plan ported to torch,
MindSpore (each form) and MegEngine (in ``.venv-mge``, from the recorded plan) onto twin
models with the same initial weights (moved through the name map) and the same batches; it
prints, per port, the largest parameter difference from the torch script over every update,
relative to the largest parameter, and whether every update's lr equals the torch script's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

WARM = 1000
_CHILD = r"""
import json, resource, sys, time
from optbridge import ir
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge.port import port
groups, steps, end, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
node = ir.Sequence(parts=(ir.Linear(start_factor=0.01, steps=@WARM@), ir.Cosine(steps=steps - @WARM@, end=end)),
                   boundaries=(@WARM@,))
gs = tuple(Group(name=f"layer{i}", select=(Selector(names=(f"layer{i}.*",)),), options={"lr_mult": 0.97 ** i})
           for i in range(groups))
plan = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9}, groups=gs),),
            schedule={"lr": node}, total_steps=steps)
t = time.perf_counter()
res = port(plan, "mindspore", out=out, form="list")
dt = time.perf_counter() - t
# this process's peak: VmHWM (ru_maxrss would keep the parent's peak across fork and exec)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
peak = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": dt, "peak_mb": peak,
                  "tables": len(res.tables), "bytes": sum(p.stat().st_size for p in res.tables)}))
""".replace("@WARM@", str(WARM))


def bench_port(groups: int, steps: int) -> None:
    print(f"optbridge port: {groups} groups x {steps:.0e} updates to MindSpore lists (fresh process each)")
    for name, end in (("shared", 0.0), ("own", 1e-6)):
        out = Path(tempfile.mkdtemp(prefix="bench_port_"))
        try:
            run = subprocess.run([sys.executable, "-c", _CHILD, str(groups), str(steps), repr(end), str(out)],
                                 check=True, capture_output=True, text=True)
            r = json.loads(run.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(out, ignore_errors=True)
        ok = r["seconds"] <= 30 and r["peak_mb"] <= 2048
        print(f"  {name:6s}: {r['seconds']:6.2f} s, peak RSS {r['peak_mb']:6.0f} MB, {r['tables']:3d} table(s), "
              f"{r['bytes'] / 1e6:7.1f} MB on disk  (goal <= 30 s, <= 2048 MB: {'ok' if ok else 'MISSED'})")


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("bench_port_torch", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_port_torch"] = mod
    spec.loader.exec_module(mod)
    return mod


def bench_driver(groups: int, steps: int, repeat: int) -> None:
    import torch
    from torch.optim import lr_scheduler as S

    from optbridge import ir
    from optbridge.plan import Group, OptimizerSpec, Plan, Selector
    from optbridge.port import port

    lrs = [0.1 * 0.97 ** i for i in range(groups)]
    gs = tuple(Group(name=f"g{i}", select=(Selector(names=(f"p{i}",)),), options={"lr": lr})
               for i, lr in enumerate(lrs))
    node = ir.Sequence(parts=(ir.Linear(start_factor=0.1, steps=WARM), ir.Cosine(steps=steps - WARM)),
                       boundaries=(WARM,))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", groups=gs),), schedule={"lr": node}, total_steps=steps + 1)
    out = Path(tempfile.mkdtemp(prefix="bench_port_driver_"))
    try:
        mod = _load(port(plan, "torch", out=out).module)
        best: dict[str, float] = {}
        final: dict[str, list[float]] = {}
        def build() -> tuple[Any, Any, Any, Any, list[Any]]:
            params = [torch.zeros(1, requires_grad=True) for _ in lrs]
            native_opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])
            native = S.SequentialLR(native_opt, [S.LinearLR(native_opt, 0.1, 1.0, WARM),
                                                 S.CosineAnnealingLR(native_opt, steps - WARM)], [WARM])
            opts, scheds = mod.build_on({f"g{i}": [p] for i, p in enumerate(params)}, check=False)
            for p in params:
                p.grad = torch.ones_like(p)
            return native_opt, native, opts["optimizer"], scheds["optimizer"], params

        for _ in range(repeat):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # schedulers stepped without optimizer steps: torch warns
                native_opt, native, port_opt, port_sched, _ = build()
                for name, sched in (("native", native), ("port", port_sched)):
                    step = sched.step
                    t = time.perf_counter()
                    for _ in range(steps):
                        step()
                    best[name] = min(best.get(name, 1e9), (time.perf_counter() - t) / steps * 1e6)
                    final[name] = [g["lr"] for g in sched.optimizer.param_groups]
                native_opt, native, port_opt, port_sched, _ = build()
                n = max(1, steps // 100)
                for name, opt, sched in (("update (native)", native_opt, native),
                                         ("update (port, guarded)", port_opt, port_sched)):
                    t = time.perf_counter()
                    for _ in range(n):
                        opt.step()
                        sched.step()
                    best[name] = min(best.get(name, 1e9), (time.perf_counter() - t) / n * 1e6)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    diff = max(abs(a - b) / lr for a, b, lr in zip(final["native"], final["port"], lrs))
    print(f"  {groups} groups, {steps} scheduler steps, best of {repeat} (interleaved)")
    print(f"    torch SequentialLR[LinearLR, CosineAnnealingLR]: {best['native']:8.2f} us/step")
    print(f"    generated TableScheduler                        : {best['port']:8.2f} us/step   ratio "
          f"{best['port'] / best['native']:.2f}; final lrs differ by {diff:.1e} of the base lr")
    for name in ("update (native)", "update (port, guarded)"):
        print(f"    for context, optimizer.step() + scheduler.step(), {name:22s}: {best[name]:8.2f} us")


# --------------------------------------------------------------------------- trajectories (docs/porting.md)

TRAJ_STEPS = 100
WARMUP = 10


def _torch_script(steps: int, nesterov: bool = True) -> tuple[Any, Any, Any]:
    """The torch training script's model, optimizer and scheduler (as a user writes them)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x: Any) -> Any:
            return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                          Block(16), Block(16))
            self.head = nn.Linear(16, 10)

        def forward(self, x: Any) -> Any:
            return self.head(self.backbone(x).mean((2, 3)))

    torch.manual_seed(0)
    model = ResNet()
    groups: dict[str, list[Any]] = {"backbone": [], "backbone_no_decay": [], "head": [], "head_no_decay": []}
    for name, p in model.named_parameters():
        part = "backbone" if name.startswith("backbone.") else "head"
        groups[part + ("_no_decay" if p.ndim == 1 else "")].append(p)
    optimizer = torch.optim.SGD([
        {"params": groups["backbone"], "lr": 0.01, "name": "backbone"},
        {"params": groups["backbone_no_decay"], "lr": 0.01, "weight_decay": 0.0, "name": "backbone_no_decay"},
        {"params": groups["head"], "name": "head"},
        {"params": groups["head_no_decay"], "weight_decay": 0.0, "name": "head_no_decay"},
    ], lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=5e-4)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=WARMUP)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - WARMUP)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[WARMUP])
    return model, optimizer, scheduler


def _batches(steps: int) -> list[tuple[Any, Any]]:
    import numpy as np
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(8, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, 8).astype(np.int32))
            for _ in range(steps)]


def _mindspore_twin() -> Any:
    from mindspore import nn, ops

    class Block(nn.Cell):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, pad_mode="pad", padding=1, has_bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, pad_mode="pad", padding=1, has_bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def construct(self, x: Any) -> Any:
            return ops.relu(self.bn2(self.conv2(ops.relu(self.bn1(self.conv1(x))))) + x)

    class ResNet(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.SequentialCell([nn.Conv2d(3, 16, 3, pad_mode="pad", padding=1, has_bias=False),
                                               nn.BatchNorm2d(16), nn.ReLU(), Block(16), Block(16)])
            self.head = nn.Dense(16, 10)

        def construct(self, x: Any) -> Any:
            return self.head(self.backbone(x).mean((2, 3)))

    return ResNet()


def _megengine_twin() -> Any:
    import megengine.functional as F
    import megengine.module as M

    class Block(M.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = M.Conv2d(c, c, 3, 1, 1, bias=False), M.BatchNorm2d(c)
            self.conv2, self.bn2 = M.Conv2d(c, c, 3, 1, 1, bias=False), M.BatchNorm2d(c)

        def forward(self, x: Any) -> Any:
            return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + x)

    class ResNet(M.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = M.Sequential(M.Conv2d(3, 16, 3, 1, 1, bias=False), M.BatchNorm2d(16), M.ReLU(),
                                         Block(16), Block(16))
            self.head = M.Linear(16, 10)

        def forward(self, x: Any) -> Any:
            return self.head(F.mean(self.backbone(x), axis=(2, 3)))

    return ResNet()


def _compare(name: str, ref: Any, got: Any, ref_lr: Any, got_lr: Any) -> None:
    import numpy as np
    scale = float(np.abs(ref).max())
    worst = float(np.abs(got - ref).max())
    at = {k: float(np.abs(got[k] - ref[k]).max()) for k in (0, 9, 49, len(ref) - 1) if k < len(ref)}
    same = "every update's lr equal" if np.array_equal(got_lr, ref_lr) else "lrs DIFFER"
    print(f"  {name:30s}: max |p - p_torch| {worst:.1e} ({worst / scale:.1e} of max |p| = {scale:.2f}); after "
          "updates " + ", ".join(f"{k + 1}: {v:.1e}" for k, v in at.items()) + f"; {same}")


def trajectories(steps: int, mge_python: str | None, nesterov: bool = True) -> None:
    """See the module docstring (``--trajectories``)."""
    import numpy as np
    import torch

    import optbridge
    from optbridge.names import map_names
    from optbridge.port import model_records, port

    model, optimizer, scheduler = _torch_script(steps, nesterov)
    plan = optbridge.from_torch(optimizer, scheduler, model=model, total_steps=steps)
    init = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    names = list(init)
    data = _batches(steps)
    src = model_records(model)
    grads: list[dict[str, Any]] = []
    weights: list[dict[str, Any]] = []  # the torch script's parameters before each update

    def run_torch(opt: Any, sched: Any, net: Any, record: bool = False) -> tuple[Any, Any]:
        traj, lrs = [], []
        for x, y in data:
            lrs.append([g["lr"] for g in opt.param_groups])
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y).long()).backward()
            if record:
                grads.append({n: p.grad.numpy().copy() for n, p in net.named_parameters()})
                weights.append({n: p.detach().numpy().copy() for n, p in net.named_parameters()})
            opt.step()
            sched.step()
            traj.append(np.concatenate([p.detach().numpy().ravel() for p in net.parameters()]))
        return np.stack(traj), np.float32(lrs)

    ref, ref_lr = run_torch(optimizer, scheduler, model, record=True)
    out = Path(tempfile.mkdtemp(prefix="port_traj_"))
    try:
        print(f"trajectories: {steps} updates of the torch script, then of each port from the same weights.\n"
              "  free: each framework computes its own gradients on the same batches; fed: the port's optimizer "
              "is fed the torch script's gradients (the port alone)")
        net, _, _ = _torch_script(steps, nesterov)
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(torch.from_numpy(init[n]))
        mod = _load(port(plan, "torch", out=out / "torch").module)
        setup = mod.build(net)
        got, got_lr = run_torch(setup.optimizer, setup.scheduler, net)
        _compare("torch, free", ref, got, ref_lr, got_lr)
        import mindspore as ms
        ms.set_context(mode=ms.PYNATIVE_MODE)
        for form in ("list", "cell", "experimental"):
            res = None
            for fed in (False, True):
                net_ms = _mindspore_twin()
                net_ms.set_train(True)
                tgt = model_records(net_ms)
                nm = map_names(src, tgt, frameworks=("torch", "mindspore"))
                params = dict(net_ms.parameters_and_names())
                for n in names:
                    params[nm[n]].set_data(ms.Tensor(init[n].reshape(params[nm[n]].shape)))
                if res is None:
                    res = port(plan, "mindspore", out=out / form, form=form, source_names=src, model_names=tgt)
                spec = importlib.util.spec_from_file_location(f"port_traj_ms_{form}_{fed}", res.module)
                assert spec is not None and spec.loader is not None
                msmod = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = msmod
                spec.loader.exec_module(msmod)
                setup = msmod.build(net_ms)
                loss = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
                step = msmod.train_step(net_ms, loss, setup)
                back = {id(params[nm[n]]): n for n in names}
                traj = []
                for k, (x, y) in enumerate(data):
                    if fed:
                        setup.optimizer(ms.mutable(tuple(
                            ms.Tensor(grads[k][back[id(p)]].reshape(p.shape)) for p in setup.optimizer.parameters)))
                        setup.step()
                    else:
                        step(ms.Tensor(x), ms.Tensor(y))
                    traj.append(np.concatenate([params[nm[n]].asnumpy().ravel() for n in names]))
                # the lrs: tests/test_port.py proves every form applies float32(reference) at every update
                _compare(f"MindSpore {form}, {'fed' if fed else 'free'}", ref, np.stack(traj), ref_lr, ref_lr)
        # MindSpore's gradients at the torch script's weights (teacher-forced): the frameworks' kernels alone
        net_ms = _mindspore_twin()
        net_ms.set_train(True)
        nm = map_names(src, model_records(net_ms), frameworks=("torch", "mindspore"))
        params = dict(net_ms.parameters_and_names())
        order = [params[nm[n]] for n in names]
        loss_fn = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        grad_fn = ms.value_and_grad(lambda x, y: loss_fn(net_ms(x), y), None, order)
        worst = (0.0, "", 0)
        for k, (x, y) in enumerate(data):
            for n, q in zip(names, order):
                q.set_data(ms.Tensor(weights[k][n].reshape(q.shape)))
            _, g = grad_fn(ms.Tensor(x), ms.Tensor(y))
            for n, gk in zip(names, g):
                t = grads[k][n]
                rel = float(np.abs(gk.asnumpy().ravel() - t.ravel()).max() / max(np.abs(t).max(), 1e-30))
                worst = max(worst, (rel, n, k))
        print(f"  MindSpore's gradients at the torch script's weights (every update): at most {worst[0]:.1e} of "
              f"the parameter's largest gradient ({worst[1]}, update {worst[2]})")
        if mge_python:
            optbridge.dump(plan, str(out / "plan.json"))
            np.savez(out / "traj.npz", **{f"init/{n}": v for n, v in init.items()},
                     **{f"x{i}": x for i, (x, _) in enumerate(data)}, **{f"y{i}": y for i, (_, y) in enumerate(data)},
                     **{f"g{i}/{n}": v for i, g in enumerate(grads) for n, v in g.items()})
            (out / "torch_records.json").write_text(json.dumps([[r.name, list(r.shape), r.module_type,
                                                                 r.requires_grad] for r in src]))
            subprocess.run([mge_python, __file__, "--mge-trajectory", str(out)], check=True, capture_output=True)
            for fed in ("free", "fed"):
                _compare(f"MegEngine, {fed}", ref, np.load(out / f"mge_traj_{fed}.npy"), ref_lr,
                         np.load(out / f"mge_lr_{fed}.npy"))
    finally:
        shutil.rmtree(out, ignore_errors=True)


def mge_trajectory(out: Path) -> None:
    """The MegEngine side of ``--trajectories`` (run by the MegEngine interpreter)."""
    import megengine as mge
    import megengine.functional as F
    import numpy as np
    from megengine.autodiff import GradManager

    import optbridge
    from optbridge.names import map_names
    from optbridge.port import load_records, model_records, port

    z = np.load(out / "traj.npz")
    names = [k[5:] for k in z.files if k.startswith("init/")]
    src = load_records(out / "torch_records.json")
    res = None
    steps = len([k for k in z.files if k.startswith("x")])
    for fed in ("free", "fed"):
        net = _megengine_twin()
        net.train()
        tgt = model_records(net)
        nm = map_names(src, tgt, frameworks=("torch", "megengine"))
        params = dict(net.named_parameters())
        for n in names:
            params[nm[n]]._reset(mge.tensor(z[f"init/{n}"].reshape(params[nm[n]].shape)))
        if res is None:
            res = port(optbridge.load(str(out / "plan.json")), "megengine", out=out / "mge", source_names=src,
                       model_names=tgt)
        mod = _load(res.module)
        setup = mod.build(net)
        gm = GradManager().attach(setup.params)
        traj, lrs = [], []
        for k in range(steps):
            lrs.append([np.float32(g["lr"]) for g in setup.optimizer.param_groups])
            setup.optimizer.clear_grad()
            if fed == "fed":
                for n in names:
                    params[nm[n]].grad = mge.tensor(z[f"g{k}/{n}"].reshape(params[nm[n]].shape))
            else:
                with gm:
                    gm.backward(F.nn.cross_entropy(net(mge.tensor(z[f"x{k}"])), mge.tensor(z[f"y{k}"])))
            setup.optimizer.step()
            setup.scheduler.step()
            traj.append(np.concatenate([params[nm[n]].numpy().ravel() for n in names]))
        np.save(out / f"mge_traj_{fed}.npy", np.stack(traj))
        np.save(out / f"mge_lr_{fed}.npy", np.float32(lrs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=150)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--driver-steps", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--trajectories", action="store_true", help="the trajectories of docs/porting.md instead")
    ap.add_argument("--traj-steps", type=int, default=TRAJ_STEPS)
    ap.add_argument("--no-nesterov", action="store_true", help="trajectories of the script without nesterov")
    ap.add_argument("--mge-python", default=str(Path(__file__).resolve().parent.parent / ".venv-mge/bin/python"),
                    help="the MegEngine interpreter ('' to skip MegEngine)")
    ap.add_argument("--mge-trajectory", metavar="DIR", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mge_trajectory:
        mge_trajectory(Path(a.mge_trajectory))
        return
    if a.trajectories:
        trajectories(a.traj_steps, a.mge_python if a.mge_python and Path(a.mge_python).exists() else None,
                     nesterov=not a.no_nesterov)
        return
    import numpy
    import torch

    import optbridge
    print(f"optbridge {optbridge.__version__}, torch {torch.__version__}, numpy {numpy.__version__}, "
          f"python {sys.version.split()[0]}")
    bench_port(a.groups, a.steps)
    print("generated driver vs native scheduler (torch):")
    for g in (3, a.groups):
        bench_driver(g, a.driver_steps, a.repeat)
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
