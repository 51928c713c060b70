"""The error contract of the MegEngine backend: bad input or bad state -> an OptbridgeError naming the path.

Every public call (``to_megengine``, ``from_megengine``, the trace backend,
``MegEngineSetup`` and ``MultipleOptimizer`` / ``MultipleScheduler`` methods,
``PlanScheduler`` construction / ``step`` / ``state_dict`` / ``load_state_dict``, the
exact optimizers) is driven with bad input, and must raise a ``ConfigError`` whose
``path`` names the offending argument or field (message ``path: rule, got value``),
an ``UnsupportedError`` naming the node, or an ``EvaluationError`` naming the update:
never a raw KeyError / TypeError / IndexError / AttributeError from inside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import megengine as mge
import megengine.optimizer as mopt
import numpy as np
import pytest

import optbridge
from optbridge import ir
from optbridge.errors import ConfigError, EvaluationError, OptbridgeError, UnsupportedError
from optbridge.plan import Group, OptimizerSpec, Plan, Selector
from optbridge.slots import Slot, slots
from optbridge_adapters.megengine import optimizers as ex
from optbridge_adapters.megengine import tracing
from optbridge_adapters.megengine.backend import from_megengine, to_megengine
from optbridge_adapters.megengine.build import MultipleOptimizer, MultipleScheduler
from optbridge_adapters.megengine.driver import NotStepped, PlanScheduler


def P(*values: float) -> mge.Parameter:
    return mge.Parameter(np.asarray(values or (0.0,), np.float32))


PLAN = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1, "momentum": 0.9}),),
            schedule={"lr": ir.Cosine(steps=20)})
PLATEAU = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": ir.Plateau(patience=1)})


def config_error(path: str, fn: Callable[[], Any]) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        fn()
    assert isinstance(e.value, OptbridgeError)
    assert e.value.path == path, (e.value.path, str(e.value))
    assert str(e.value).startswith(f"{path}: " if path else ""), str(e.value)
    return e.value


def unsupported(node: str, fn: Callable[[], Any]) -> UnsupportedError:
    with pytest.raises(UnsupportedError) as e:
        fn()
    assert e.value.node == node and e.value.backend == "megengine", str(e.value)
    return e.value


# --------------------------------------------------------------------------- to_megengine

@pytest.mark.parametrize("kwargs, path", [
    ({"plan": "plan.yaml"}, "plan"),
    ({"model": 42}, "model"),
    ({"model": {"w": np.zeros(1, np.float32)}}, "model.w"),
    ({"model": [("w",)]}, "model[0]"),
    ({"total_steps": 0}, "total_steps"),
    ({"total_steps": "10"}, "total_steps"),
    ({"form": "list"}, "form"),
    ({"optimizer": "fast"}, "optimizer"),
    ({"split_nesterov": "yes"}, "split_nesterov"),
    ({"metrics": ["high"]}, "metrics[0]"),
    ({"metrics": 3.0}, "metrics"),
    ({"metrics": [float("nan")]}, "metrics[0]"),
])
def test_to_megengine_bad_arguments(kwargs: dict[str, Any], path: str) -> None:
    args = {"plan": PLAN, "model": {"w": P()}, **kwargs}
    plan, model = args.pop("plan"), args.pop("model")
    config_error(path, lambda: to_megengine(plan, model, **args))
    with pytest.raises(ConfigError) as e:  # the light entry point too (the core checks metrics first: "metrics")
        optbridge.to_megengine(plan, model, **args)
    assert e.value.path.partition("[")[0] == path.partition("[")[0], str(e.value)


def test_to_megengine_groups_that_do_not_resolve_and_what_nobody_has() -> None:
    head = Group(name="head", select=(Selector(names=("head*",)),))
    plan = Plan(optimizers=(OptimizerSpec(type="SGD", groups=(head,)),))
    with pytest.raises(ConfigError, match="head"):
        to_megengine(plan, {"w": P()})
    unsupported("optimizer.type", lambda: to_megengine(Plan(optimizers=(OptimizerSpec(type="Lion"),)), {"w": P()}))
    unsupported("optimizer.type", lambda: to_megengine(Plan(optimizers=(OptimizerSpec(type="Adam"),)), {"w": P()},
                                                      optimizer="native"))
    damp = Plan(optimizers=(OptimizerSpec(type="SGD", options={"momentum": 0.9}),),
                schedule={"dampening": ir.Constant(factor=0.5)})
    unsupported("schedule.dampening", lambda: to_megengine(damp, {"w": P()}, optimizer="native"))


# --------------------------------------------------------------------------- from_megengine

def test_from_megengine_bad_arguments() -> None:
    p = P()
    opt = mopt.SGD([p], lr=0.1)
    other = mopt.SGD([P()], lr=0.1)
    config_error("optimizer", lambda: from_megengine(None))
    config_error("optimizer", lambda: from_megengine("sgd"))
    config_error("scheduler", lambda: from_megengine(opt, "cosine"))
    config_error("scheduler", lambda: from_megengine(opt, mopt.MultiStepLR(other, [3])))
    config_error("model", lambda: from_megengine(opt, model=42))
    config_error("optimizer.param_groups[0].params", lambda: from_megengine(opt, model={"x": P()}))
    config_error("step_unit", lambda: from_megengine(opt, step_unit="day"))
    config_error("steps_per_epoch", lambda: from_megengine(opt, steps_per_epoch=0))
    config_error("total_steps", lambda: from_megengine(opt, total_steps=-1))

    class Custom(mopt.LRScheduler):
        def get_lr(self):
            return [0.1 for _ in self.base_lrs]

    unsupported("scheduler", lambda: from_megengine(opt, Custom(opt)))
    unsupported("optimizer", lambda: from_megengine(mopt.LAMBFp16.__new__(mopt.LAMBFp16)))


def test_from_megengine_bad_state() -> None:
    setup = to_megengine(Plan(optimizers=PLAN.optimizers, schedule=PLAN.schedule, total_steps=3), {"w": P()})
    for _ in range(3):
        setup.optimizer.step()
        setup.scheduler.step()
    config_error("scheduler", lambda: from_megengine(setup.optimizer, setup.scheduler))  # nothing left to read
    plateau = to_megengine(PLATEAU, {"w": P()}, metrics=[1.0, 2.0])
    plateau.optimizer.step()
    plateau.scheduler.step()
    unsupported("scheduler.schedule.lr", lambda: from_megengine(plateau.optimizer, plateau.scheduler))
    fresh = to_megengine(PLAN, {"w": P()})
    fresh.optimizer.param_groups[0]["lr"] = 0.5  # edited by hand: the plan would not match the optimizer
    config_error("groups.all.lr", lambda: from_megengine(fresh.optimizer, fresh.scheduler))
    long = to_megengine(Plan(optimizers=PLAN.optimizers, schedule=PLAN.schedule, total_steps=10), {"w": P()})
    config_error("total_steps", lambda: from_megengine(long.optimizer, long.scheduler, total_steps=11))


# --------------------------------------------------------------------------- the trace backend

@pytest.mark.parametrize("kwargs, path", [
    ({"fast": True}, "options"),
    ({"native": "yes"}, "options.native"),
    ({"updates": 1}, "options.updates"),
    ({"optimizer": "fast"}, "optimizer"),
    ({"chunk": 0}, "chunk"),
    ({"metrics": ["x"]}, "metrics[0]"),
])
def test_trace_bad_options(kwargs: dict[str, Any], path: str) -> None:
    config_error(path, lambda: tracing.trace(PLAN, 5, **kwargs))
    with pytest.raises(ConfigError) as e:  # through optbridge.trace (the core checks metrics first: "metrics")
        optbridge.trace(PLAN, 5, backend="megengine", **kwargs)
    assert e.value.path.partition("[")[0] == path.partition("[")[0], str(e.value)


def test_trace_bad_arguments() -> None:
    config_error("steps", lambda: optbridge.trace(PLAN, 0, backend="megengine"))
    config_error("steps", lambda: tracing.trace(PLAN, 0))
    config_error("plan", lambda: tracing.trace({"optimizer": "SGD"}, 5))
    with pytest.raises(EvaluationError, match="total_steps"):
        tracing.trace(Plan(optimizers=PLAN.optimizers, total_steps=3), 5)
    with pytest.raises(EvaluationError, match="metric"):
        tracing.trace(PLATEAU, 5, metrics=[1.0])


# --------------------------------------------------------------------------- the setup

def test_setup_methods() -> None:
    g = {n: Group(name=n, select=(Selector(names=(n,)),)) for n in "ab"}
    two = Plan(optimizers=(OptimizerSpec(type="SGD", name="a", groups=(g["a"],)),
                           OptimizerSpec(type="Adam", name="b", groups=(g["b"],))),
               schedule={"lr": ir.Cosine(steps=10)})
    setup = to_megengine(two, {"a": P(), "b": P()})
    config_error("group", lambda: setup.param_group("c"))
    assert setup.clip_gradients() == {}  # no clipping, no gradients: nothing to do
    assert isinstance(setup.optimizer, MultipleOptimizer) and isinstance(setup.scheduler, MultipleScheduler)
    config_error("state_dict", lambda: setup.optimizer.load_state_dict({}))
    config_error("state_dict.optimizers", lambda: setup.optimizer.load_state_dict({"optimizers": [{}]}))
    config_error("state_dict", lambda: setup.scheduler.load_state_dict([]))
    config_error("state_dict.schedulers", lambda: setup.scheduler.load_state_dict({"schedulers": [{}, {}, {}]}))
    config_error("epoch", lambda: setup.scheduler.step(epoch=-1))
    config_error("metric", lambda: setup.scheduler.step(metric="low"))
    config_error("state_dict.current_epoch", lambda: setup.scheduler.load_state_dict({"schedulers": [{}, {}]}))


# --------------------------------------------------------------------------- PlanScheduler

def test_plan_scheduler_construction() -> None:
    opt = mopt.SGD([P()], lr=0.1)
    mine = list(slots(PLAN))
    config_error("optimizer", lambda: PlanScheduler("sgd", mine))
    config_error("slots", lambda: PlanScheduler(opt, "lr"))
    config_error("slots[0]", lambda: PlanScheduler(opt, [("lr", 0.1)]))  # type: ignore[list-item]
    far = Slot("all", "optimizer", 3, 0, "lr", "lr", None, ir.Cosine(steps=5), 0.1, "schedule.lr")
    config_error("schedule.lr", lambda: PlanScheduler(opt, [far]))
    beta = Slot("all", "optimizer", 0, 0, "beta1", "betas", 0, ir.Cosine(steps=5), 0.9, "schedule.beta1")
    config_error("schedule.beta1", lambda: PlanScheduler(opt, [beta]))  # an SGD group holds no betas
    config_error("unit", lambda: PlanScheduler(opt, mine, unit="day"))
    config_error("steps_per_epoch", lambda: PlanScheduler(opt, mine, steps_per_epoch=0))
    config_error("total_steps", lambda: PlanScheduler(opt, mine, total_steps=-5))
    config_error("chunk", lambda: PlanScheduler(opt, mine, chunk=0))
    config_error("metrics[1]", lambda: PlanScheduler(opt, mine, metrics=[1.0, "x"]))


def test_plan_scheduler_step_and_state() -> None:
    setup = to_megengine(PLAN, {"w": P()})
    s = setup.scheduler
    config_error("epoch", lambda: s.step(epoch=-1))
    config_error("epoch", lambda: s.step(epoch="3"))
    config_error("metric", lambda: s.step(metric="low"))
    config_error("metric", lambda: s.add_metric(float("inf")))
    state = s.state_dict()
    config_error("state_dict", lambda: s.load_state_dict("state"))
    config_error("state_dict.current_epoch", lambda: s.load_state_dict({}))
    config_error("state_dict.fingerprint", lambda: s.load_state_dict({**state, "fingerprint": "0" * 16}))
    config_error("state_dict.current_epoch", lambda: s.load_state_dict({**state, "current_epoch": -3}))
    config_error("state_dict.metrics[0]", lambda: s.load_state_dict({**state, "metrics": ["a"]}))
    other = to_megengine(PLATEAU, {"w": P()}).scheduler.state_dict()
    err = config_error("state_dict.fingerprint", lambda: s.load_state_dict(other))
    assert "different plan" in err.rule
    s.load_state_dict(state)  # nothing changed by the refused loads


def test_plan_scheduler_bad_state() -> None:
    p = P()
    setup = to_megengine(PLAN, {"w": p})
    p.grad = mge.tensor(np.ones(1, np.float32))
    setup.optimizer.step()
    with pytest.raises(NotStepped, match="update 1"):
        setup.optimizer.step()


# --------------------------------------------------------------------------- the exact optimizers

def test_exact_optimizers_bad_input() -> None:
    p = P()
    config_error("lr", lambda: ex.SGD([p], lr=-1.0))
    config_error("betas[0]", lambda: ex.Adam([P()], betas=(1.5, 0.9)))
    config_error("nesterov", lambda: ex.SGD([P()], lr=0.1, nesterov=True))
    config_error("param_groups[0].params[0]", lambda: ex.RMSprop([np.zeros(1)]))
    opt = ex.NAdam([p], lr=0.01)
    opt.param_groups[0]["lr"] = "fast"
    p.grad = mge.tensor(np.ones(1, np.float32))
    config_error("param_groups[0].lr", opt.step)
    opt.param_groups[0]["lr"] = 0.01
    config_error("state_dict", lambda: opt.load_state_dict({}))
    config_error("state_dict.param_groups", lambda: opt.load_state_dict({"param_groups": [], "state": {}}))
    config_error("param_groups[1].params", lambda: opt.add_param_group({"params": [p]}))
