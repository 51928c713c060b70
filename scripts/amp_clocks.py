"""Measure the two clocks of mixed-precision training: schedule steps vs applied updates (docs/amp.md).

Runs the same plan (warmup then cosine, SGD) through real dynamic loss scaling, forcing
gradient overflows on chosen iterations (an ``inf`` input makes every gradient ``inf``),
and records, for every iteration, whether its update was applied, the lr that update
applied (the parameter change of plain SGD with gradient 1, the parameter reset to 0
before each step) and the schedule position:

* torch 2.13: ``torch.amp.GradScaler("cpu")``, optimizer and scheduler from
  ``optbridge.to_torch``, ``scheduler.step()`` every iteration (torch's recipe), float64
  parameter;
* MindSpore 2.10: ``nn.TrainOneStepWithLossScaleCell`` with ``nn.DynamicLossScaleUpdateCell``
  over ``nn.SGD(learning_rate=optbridge.to_mindspore_lists(plan)[...])``, float32 parameter.
  MindSpore 2.10 has no CPU kernel for the overflow check this cell picks on CPU
  (``NPUGetFloatStatusV2``; the GPU one, ``FloatStatus``, has none either), so the cell is
  switched to its own Ascend "INFNAN" check (``ops.IsFinite`` over the gradients), which
  runs on CPU; the skip logic and the loss-scale update are the cell's own.

Then the two ways to align them, with :class:`optbridge.clock.Clock`:

* torch on the **updates** clock: ``scheduler.step()`` only after an applied update;
* MindSpore on the **schedule** clock: ``global_step`` set to ``clock.position`` before
  each iteration (it then counts skipped iterations too).

Run from the repository root: ``.venv/bin/python scripts/amp_clocks.py``.
``tests/test_amp_clocks.py`` asserts what this prints.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

import optbridge
from optbridge.clock import Clock

#: The plan: 10 updates of linear warmup from 0.1 x, then a cosine to 0 over 90.
PLAN = optbridge.loads("""
optbridge: 1
total_steps: 100
optimizer: {type: SGD, lr: 0.1}
schedule:
  lr:
    kind: sequence
    boundaries: [10]
    parts: [{kind: linear, start_factor: 0.1, steps: 10}, {kind: cosine, steps: 90}]
""")
#: Iterations whose gradients overflow (the first one included: torch then warns about the call order).
OVERFLOWS = (0, 3, 4, 7, 20, 21, 22, 50)
ITERATIONS = 60


def torch_run(plan: Any = PLAN, overflows: Iterable[int] = OVERFLOWS, n: int = ITERATIONS, *,
              clock: str = "schedule", form: str = "auto") -> dict[str, np.ndarray]:
    """torch GradScaler: per iteration, applied (bool), applied lr (0 when skipped), schedule position used.

    ``form`` goes to ``optbridge.to_torch``: ``"auto"`` (torch's SequentialLR here) or ``"table"``
    (optbridge's PlanScheduler writing the reference's values, with its step guard).
    """
    import torch

    class One(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    model = One()
    setup = optbridge.to_torch(plan, model, form=form)
    opt, sched = setup.optimizer, setup.scheduler
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4, growth_interval=1000)
    bad = set(overflows)
    ck = Clock(clock)
    out: dict[str, list[Any]] = {"applied": [], "lr": [], "position": []}
    for k in range(n):
        with torch.no_grad():
            model.w.zero_()
        opt.zero_grad()
        x = torch.full((1,), float("inf") if k in bad else 1.0, dtype=torch.float64)
        scaler.scale((model.w * x).sum()).backward()
        before = scaler.get_scale()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()" after a skipped update
            scaler.step(opt)
        scaler.update()
        applied = not scaler.get_scale() < before  # GradScaler lowers its scale exactly when it skipped the step
        out["position"].append(ck.tick(applied))
        out["applied"].append(applied)
        out["lr"].append(-float(model.w.detach()[0]))
        if clock == "schedule" or applied:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sched.step()
    return {k: np.asarray(v) for k, v in out.items()}


def mindspore_run(plan: Any = PLAN, overflows: Iterable[int] = OVERFLOWS, n: int = ITERATIONS, *,
                  clock: str = "updates") -> dict[str, np.ndarray]:
    """MindSpore loss-scale cell: per iteration, applied, applied lr, and the global_step the update read."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")

    class One(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.w = Parameter(Tensor(np.zeros(1, np.float32)), name="w")

        def construct(self, x: Any) -> Any:
            return (self.w * x).sum()

    net = One()
    lrs = optbridge.to_mindspore_lists(plan)["all"]
    opt = nn.SGD(net.trainable_params(), learning_rate=lrs.tolist())
    cell = nn.TrainOneStepWithLossScaleCell(
        net, opt, scale_sense=nn.DynamicLossScaleUpdateCell(loss_scale_value=2.0**4, scale_factor=2, scale_window=1000))
    cell.ascend_910b_target, cell.enable_allfinite = True, False  # its IsFinite overflow check: runs on CPU
    bad = set(overflows)
    ck = Clock(clock)
    out: dict[str, list[Any]] = {"applied": [], "lr": [], "position": [], "global_step": []}
    for k in range(n):
        ops.assign(net.w, Tensor(np.zeros(1, np.float32)))
        if clock == "schedule":  # the driver's job on the schedule clock: stand where the schedule stands
            ops.assign(opt.global_step, Tensor(np.array([ck.position], np.int32)))
        out["global_step"].append(int(opt.global_step.asnumpy()[0]))
        x = Tensor(np.array([np.inf if k in bad else 1.0], np.float32))
        _, overflow, _ = cell(x)
        applied = not bool(overflow.asnumpy())
        out["position"].append(ck.tick(applied))
        out["applied"].append(applied)
        out["lr"].append(-float(net.w.asnumpy()[0]))
    return {k: np.asarray(v) for k, v in out.items()}


def mindspore_amp_run(plan: Any = PLAN, overflows: Iterable[int] = OVERFLOWS, n: int = ITERATIONS
                      ) -> dict[str, np.ndarray]:
    """MindSpore's functional loss scaling: ``amp.DynamicLossScaler`` + ``amp.all_finite``, the optimizer called
    only when the gradients are finite (the loop the MindSpore docs show)."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops
    from mindspore.amp import DynamicLossScaler, all_finite

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    w = Parameter(Tensor(np.zeros(1, np.float32)), name="w")
    opt = nn.SGD([w], learning_rate=optbridge.to_mindspore_lists(plan)["all"].tolist())
    scaler = DynamicLossScaler(2.0**4, 2, 1000)

    def forward(x: Any) -> Any:
        return scaler.scale((w * x).sum())

    grad = ms.value_and_grad(forward, None, opt.parameters)
    bad = set(overflows)
    ck = Clock("updates")
    out: dict[str, list[Any]] = {"applied": [], "lr": [], "position": [], "global_step": []}
    for k in range(n):
        ops.assign(w, Tensor(np.zeros(1, np.float32)))
        out["global_step"].append(int(opt.global_step.asnumpy()[0]))
        _, grads = grad(Tensor(np.array([np.inf if k in bad else 1.0], np.float32)))
        grads = scaler.unscale(grads)
        finite = all_finite(grads)
        scaler.adjust(finite)
        applied = bool(finite)
        if applied:
            opt(grads)
        out["position"].append(ck.tick(applied))
        out["applied"].append(applied)
        out["lr"].append(-float(w.asnumpy()[0]))
    return {k: np.asarray(v) for k, v in out.items()}


def main() -> None:
    ref = optbridge.trace(PLAN)["lr"][0]
    runs = {
        "torch, scheduler.step() every iteration": torch_run(clock="schedule"),
        "torch, optbridge's PlanScheduler (form='table'), stepped every iteration": torch_run(form="table"),
        "torch, scheduler.step() after applied updates only": torch_run(clock="updates"),
        "MindSpore loss-scale cell (global_step)": mindspore_run(clock="updates"),
        "MindSpore amp.DynamicLossScaler + all_finite loop": mindspore_amp_run(),
        "MindSpore, global_step set to Clock('schedule').position": mindspore_run(clock="schedule"),
    }
    print(f"plan: {PLAN.schedule['lr'].kind} warmup+cosine, {PLAN.total_steps} updates; overflows at {OVERFLOWS}; "
          f"{ITERATIONS} iterations\n")
    for name, r in runs.items():
        a = r["applied"]
        lr = r["lr"][a]
        pos = r["position"][a]
        print(f"{name}: {int(a.sum())} updates applied, {int((~a).sum())} skipped")
        print("   first applied updates use positions", pos[:8].tolist(), "...", pos[-1])
        for clock in ("schedule", "updates"):
            want = optbridge.clock.applied_values(ref, a, clock)
            err = np.abs(lr - want) / np.abs(want)
            print(f"   vs the reference on the {clock!r} clock: max relative difference {err.max():.3g}")
        print()
    t, m = runs["torch, scheduler.step() every iteration"], runs["MindSpore loss-scale cell (global_step)"]
    a = t["applied"]
    lag = t["position"][a] - m["position"][a]
    print("torch vs MindSpore, same overflows: the MindSpore schedule lags by", lag.tolist()[:8], "...", int(lag[-1]),
          "positions (one per skipped update so far);",
          f"largest lr difference {np.max(np.abs(t['lr'][a] - m['lr'][a])):.3g}")


if __name__ == "__main__":
    main()
