"""The torch adapter's error contract: bad input or bad state gives an OptbridgeError naming path, rule and value.

Every public call of ``optbridge_adapters.torch`` (to_torch, from_torch, record, the trace
backend, TorchSetup, PlanScheduler, SetupScheduler, the update guard, Lambda) is driven
with bad input; each must raise an :class:`optbridge.OptbridgeError` subclass (never a
raw KeyError / TypeError / AttributeError from deep inside) whose message starts with
the offending path (``metrics[1]: must be a number, got 'x'``).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.optim import lr_scheduler as S  # noqa: E402

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan, Selector  # noqa: E402
from optbridge.source import PastHorizon  # noqa: E402
from optbridge_adapters import torch as tb  # noqa: E402


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))


def plan(schedule: dict[str, ir.Node] | None = None, **kw: Any) -> Plan:
    return Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9}),),
                schedule=schedule or {"lr": ir.Cosine(steps=10)}, **kw)


def raises(path: str, call: Any, *args: Any, kind: type = optbridge.OptbridgeError, match: str = "",
           **kwargs: Any) -> Exception:
    """``call`` raises ``kind`` (an OptbridgeError) whose message starts with ``path: ``."""
    with pytest.raises(kind) as e:
        call(*args, **kwargs)
    assert isinstance(e.value, optbridge.OptbridgeError)
    text = str(e.value)
    assert text.startswith(f"{path}: "), text
    assert re.search(match, text), text
    return e.value


# --------------------------------------------------------------------------- to_torch

def test_to_torch() -> None:
    raises("plan", tb.to_torch, {"lr": 0.1}, net(), match="must be an optbridge Plan")
    raises("form", tb.to_torch, plan(), net(), form="native", match="must be one of 'auto', 'table'")
    raises("total_steps", tb.to_torch, plan(), net(), total_steps=0, match="positive integer")
    raises("metrics[1]", tb.to_torch, plan(), net(), metrics=[1.0, "x"], match="must be a number")
    raises("metrics", tb.to_torch, plan(), net(), metrics="1,2", match="sequence of numbers")
    raises("model", tb.to_torch, plan(), 42, match="must be a torch.nn.Module")
    raises("model['w']", tb.to_torch, plan(), {"w": [1.0]}, match="must be a tensor")
    raises("model[0]", tb.to_torch, plan(), [torch.zeros(1)], match=r"\(name, tensor\) pair")
    bad = Plan(optimizers=(OptimizerSpec(type="SGD", groups=(Group(name="x", select=(Selector(names=("nope.*",)),)),
                                                             Group(name="r", select=(Selector(rest=True),)))),))
    raises("groups[0].params[0].names", tb.to_torch, bad, net(), match="matches no parameter")
    raises("optimizer.type", tb.to_torch, Plan(optimizers=(OptimizerSpec(type="Lion"),)), net(),
           kind=optbridge.UnsupportedError, match="no Lion")
    raises("optimizer", tb.to_torch, Plan(optimizers=(OptimizerSpec(type="SGD", options={"nesterov": True}),)),
           net(), match="rejects the options")
    two = Plan(optimizers=(OptimizerSpec(type="SGD", groups=(
        Group(name="a", select=(Selector(names=("0.*",)),), schedule={"lr": ir.Plateau(factor=0.5)}),
        Group(name="b", select=(Selector(rest=True),), schedule={"lr": ir.Plateau(factor=0.2)}))),))
    raises("groups.a.schedule.lr", tb.to_torch, two, net(), kind=optbridge.UnsupportedError,
           match="reacts to metrics.*different plateau schedules")


def test_setup_methods() -> None:
    two = Plan(optimizers=(OptimizerSpec(type="SGD", name="a", groups=(Group(name="ga", select=(Selector(
        names=("0.*",)),)),)), OptimizerSpec(type="Adam", name="b", groups=(Group(name="gb", select=(Selector(
            rest=True),)),))))
    setup = tb.to_torch(two, net())
    e = raises("optimizer", getattr, setup, "optimizer", match="ambiguous: this setup has 2 optimizers")
    assert isinstance(e, AttributeError)  # hasattr(setup, "optimizer") stays False
    raises("optimizer", getattr, setup.scheduler, "optimizer", match="ambiguous")
    raises("name", setup.param_group, "nope", match="is not a trained group of this setup")


# --------------------------------------------------------------------------- schedulers and the guard

def test_planscheduler() -> None:
    setup = tb.to_torch(plan(), net(), form="table")
    sched = setup.scheduler
    assert isinstance(sched, tb.PlanScheduler)
    raises("metrics", sched.step, 3, match="only taken by a PlanScheduler that drives a plateau")
    raises("state_dict", sched.load_state_dict, None, match="must be the mapping")
    raises("state_dict.fingerprint", sched.load_state_dict, {"last_epoch": 3}, match="another plan or setup")
    state = sched.state_dict()
    raises("state_dict.last_epoch", sched.load_state_dict, {**state, "last_epoch": "3"}, match="integer >= 0")
    raises("state_dict.metrics", sched.load_state_dict, {**state, "metrics": 3}, match="list of numbers")
    fed = tb.to_torch(plan({"lr": ir.Plateau(patience=0)}), net(), form="table", metrics=[1.0, 2.0])
    assert isinstance(fed.scheduler, tb.PlanScheduler)
    other = tb.to_torch(plan({"momentum": ir.Plateau(patience=0)}), net())
    raises("metrics", other.scheduler.step, "high", match="must be a number")


def test_setupscheduler() -> None:
    setup = tb.to_torch(plan({"lr": ir.Plateau(patience=0, unit="epoch")}, steps_per_epoch=2), net())
    sched = setup.scheduler
    sched.step()
    e = raises("update 1", sched.step, kind=tb.MissingMetric, match=r"call scheduler.step\(metric\)")
    assert isinstance(e, TypeError)
    raises("state_dict.schedulers", sched.load_state_dict, {**sched.state_dict(), "schedulers": []},
           match="must hold 1 scheduler states")
    given = tb.to_torch(plan({"lr": ir.Plateau(patience=0, unit="epoch")}, steps_per_epoch=2), net(), metrics=[1.0])
    given.scheduler.step()
    raises("metrics", given.scheduler.step, 0.5, match="were given to to_torch")
    given.scheduler.step()
    given.scheduler.step()
    raises("update 3", given.scheduler.step, kind=tb.MissingMetric, match="to_torch got 1 metrics")


def test_update_guard() -> None:
    setup = tb.to_torch(plan(total_steps=3), net())
    opt = setup.optimizer
    opt.step()
    raises("scheduler.step() was not called after update 0", opt.step, kind=tb.SchedulerNotStepped,
           match="set setup.guard.strict = False")
    for _ in range(3):
        setup.scheduler.step()
        if setup.scheduler.last_epoch < 3:
            opt.step()
    raises("optimizer 'optimizer'", opt.step, kind=PastHorizon, match="update 3 is past the end of the schedule: "
           "the plan is defined for 3 updates")
    loose = tb.to_torch(plan(), net())
    assert loose.guard is not None
    loose.guard.strict = False
    loose.optimizer.step()
    loose.optimizer.step()  # opted out: no check
    loose.guard.remove()


# --------------------------------------------------------------------------- from_torch

def test_from_torch() -> None:
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    raises("optimizer", tb.from_torch, "sgd", match="must be a torch.optim optimizer")

    class MySGD(torch.optim.SGD):
        pass
    raises("optimizer", tb.from_torch, MySGD(model.parameters(), lr=0.1), match="classes optbridge knows")
    raises("step_unit", tb.from_torch, opt, step_unit="batch", match="must be one of 'iter', 'epoch'")
    raises("total_steps", tb.from_torch, opt, total_steps=-1, match="positive integer")
    raises("steps_per_epoch", tb.from_torch, opt, steps_per_epoch=0, match="positive integer")
    sched = S.StepLR(opt, 3)
    raises("scheduler", tb.from_torch, opt, [sched, sched], match="lists the same scheduler twice")
    raises("scheduler[0][1]", tb.from_torch, opt, [(sched, "week")], match="must be one of")
    raises("scheduler", tb.from_torch, opt, object(), match="must be a torch scheduler")
    other = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    raises("scheduler", tb.from_torch, opt, S.StepLR(other, 3), match="drives another optimizer")
    raises("param_groups[0].params[0]", tb.from_torch, opt, model=net(), match="is not a parameter of the model")
    raises("model", tb.from_torch, opt, model=3.0, match="must be a torch.nn.Module")
    raises("total_steps", tb.from_torch, opt, S.LambdaLR(opt, lambda e: 0.9 ** e), match="is needed")
    cyc = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    raises("scheduler.scale_fn", tb.from_torch, cyc, S.CyclicLR(cyc, 0.01, 0.1, scale_fn=lambda x: 1.0),
           match="custom Python function")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    warm = S.CosineAnnealingWarmRestarts(opt, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm.step(2.5)
    raises("scheduler", tb.from_torch, opt, warm, match="explicit .fractional. epochs")


def test_record_and_trace() -> None:
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    raises("steps", tb.record, opt, "10", match="positive integer")
    raises("step_unit", tb.record, opt, 3, step_unit="day", match="must be one of")
    raises("on_epoch_start", tb.record, opt, 3, on_epoch_start="x", match="must be a function")
    raises("metrics[0]", tb.record, opt, 3, metrics=["a"], match="must be a number")
    raises("options", optbridge.trace, plan(), 3, backend="torch", device="cuda",
           match="are not options of the torch backend")


def test_lambda() -> None:
    raises("lr_lambda", tb.Lambda, "__import__('os')")
    raises("lr_lambda", tb.Lambda, 3)
    raises("lr_lambda", tb.Lambda("1 / epoch"), 0, kind=optbridge.EvaluationError, match="division by zero")
