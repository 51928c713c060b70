"""The error contract of the MindSpore backend: every public call, given bad input or bad state, raises an
OptbridgeError naming the path (never a raw KeyError / TypeError / IndexError / MindSpore RuntimeError)."""

from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from mindspore import Parameter, Tensor, nn  # noqa: E402
from mindspore.experimental import optim as mopt  # noqa: E402
from mindspore.experimental.optim import lr_scheduler as MLS  # noqa: E402

import optbridge  # noqa: E402
from optbridge import ir  # noqa: E402
from optbridge.errors import ConfigError, EvaluationError, OptbridgeError, UnsupportedError  # noqa: E402
from optbridge.plan import Group, OptimizerSpec, Plan, Selector  # noqa: E402
from optbridge.slots import slots  # noqa: E402
from optbridge_adapters.mindspore import tracing  # noqa: E402
from optbridge_adapters.mindspore.cells import build_cell  # noqa: E402
from optbridge_adapters.mindspore.driver import Driver  # noqa: E402
from optbridge_adapters.mindspore.read import read_spec  # noqa: E402


class One(nn.Cell):
    def __init__(self) -> None:
        super().__init__()
        self.w = Parameter(Tensor(np.zeros(2, np.float32)), name="w")


PLAN = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}),), schedule={"lr": ir.Cosine(steps=10)},
            total_steps=10)


def _path(exc: pytest.ExceptionInfo, path: str) -> None:
    assert isinstance(exc.value, OptbridgeError)
    got = getattr(exc.value, "path", None) or getattr(exc.value, "node", None)
    assert got == path, (got, str(exc.value))


@pytest.mark.parametrize("kwargs,path", [
    ({"form": "lists"}, "form"), ({"scheduler": "torch"}, "scheduler"), ({"optimizer": "fast"}, "optimizer"),
    ({"total_steps": 0}, "total_steps"), ({"total_steps": "10"}, "total_steps"), ({"total_steps": True}, "total_steps"),
    ({"metrics": "1,2"}, "metrics"), ({"metrics": [1.0, None]}, "metrics[1]"), ({"metrics": 3}, "metrics")])
def test_to_mindspore_arguments(kwargs: dict, path: str) -> None:
    with pytest.raises(ConfigError) as e:
        optbridge.to_mindspore(PLAN, One(), **kwargs)
    _path(e, path)


def test_to_mindspore_inputs_and_impossibilities() -> None:
    with pytest.raises(ConfigError) as e:
        optbridge.to_mindspore({"optimizer": "SGD"}, One())
    _path(e, "plan")
    with pytest.raises(ConfigError) as e:
        optbridge.to_mindspore(PLAN, {"w": np.zeros(2)})
    _path(e, "model")
    with pytest.raises(EvaluationError, match="defined for 10 steps"):
        optbridge.to_mindspore(PLAN, One(), total_steps=11)
    with pytest.raises(UnsupportedError) as e:
        optbridge.to_mindspore(Plan(optimizers=PLAN.optimizers), One(), total_steps=2**31)
    _path(e, "total_steps")
    with pytest.raises(ConfigError) as e:
        optbridge.to_mindspore(Plan(optimizers=PLAN.optimizers, schedule=PLAN.schedule), One(), form="list")
    _path(e, "total_steps")
    lamb = Plan(optimizers=(OptimizerSpec(type="LAMB", options={"lr": 0.1}),), total_steps=3)
    with pytest.raises(UnsupportedError) as e:
        optbridge.to_mindspore(lamb, One())
    _path(e, "optimizers.optimizer")
    joins = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a", select=(Selector(rest=True),), options={"start_step": 3}),)),), total_steps=10)
    assert "joins at update 3" in optbridge.to_mindspore(joins, One()).choices["optimizer"].note  # the exact class
    with pytest.raises(UnsupportedError) as e:
        optbridge.to_mindspore(joins, One(), optimizer="native")
    _path(e, "optimizers.optimizer.groups.a.start_step")
    nomatch = Plan(optimizers=(OptimizerSpec(type="SGD", options={"lr": 0.1}, groups=(
        Group(name="a", select=(Selector(names=("nothing.*",)),)), Group(name="b", select=(Selector(rest=True),)))),))
    with pytest.raises(ConfigError, match="nothing"):
        optbridge.to_mindspore(nomatch, One())
    beta = Plan(optimizers=(OptimizerSpec(type="AdamWeightDecay", options={"lr": 0.1}),),
                schedule={"beta1": ir.Cosine(steps=5)}, total_steps=5)
    with pytest.raises(UnsupportedError, match="beta1 is scheduled") as e:
        optbridge.to_mindspore(beta, One())
    _path(e, "optimizers.optimizer")


def test_to_mindspore_lists_errors() -> None:
    with pytest.raises(ConfigError) as e:
        optbridge.to_mindspore_lists("plan.yaml", 10)
    _path(e, "plan")
    for bad in (0, -1, 2.5, "10"):
        with pytest.raises(ConfigError) as e:
            optbridge.to_mindspore_lists(PLAN, bad)
        _path(e, "total_steps")
    with pytest.raises(ConfigError) as e:
        optbridge.to_mindspore_lists(PLAN, 10, hyper="momentum")
    _path(e, "hyper")
    with pytest.raises(ConfigError) as e:
        optbridge.to_mindspore_lists(PLAN, 10, hyper=3)
    _path(e, "hyper")
    plateau = Plan(optimizers=PLAN.optimizers, schedule={"lr": ir.Plateau()}, total_steps=10)
    with pytest.raises(UnsupportedError) as e:
        optbridge.to_mindspore_lists(plateau)
    _path(e, "schedule.lr")


def test_from_mindspore_errors() -> None:
    p = Parameter(Tensor(np.zeros(1, np.float32)), name="p")
    exp = mopt.SGD([p], lr=0.1)
    nn_opt = nn.SGD([p], learning_rate=0.1)
    cases = [
        (lambda: optbridge.from_mindspore({"type": "SGD"}), "optimizer"),
        (lambda: optbridge.from_mindspore(object()), "optimizer"),
        (lambda: optbridge.from_mindspore(nn_opt, MLS.StepLR(exp, 2)), "scheduler"),
        (lambda: optbridge.from_mindspore(exp, MLS.StepLR(mopt.SGD([Parameter(Tensor(np.zeros(1, np.float32)),
                                                                              name="q")], lr=0.1), 2)), "scheduler"),
        (lambda: optbridge.from_mindspore(exp, model={"p": p}), "model"),
        (lambda: optbridge.from_mindspore(exp, step_unit="batch"), "step_unit"),
        (lambda: optbridge.from_mindspore(exp, total_steps=0), "total_steps"),
        (lambda: optbridge.from_mindspore(exp, steps_per_epoch=-2), "steps_per_epoch"),
        (lambda: optbridge.from_mindspore(exp, MLS.LambdaLR(exp, lambda k: 0.9 ** k)), "scheduler.lr_lambda"),
        (lambda: optbridge.from_mindspore(nn.SGD([p], learning_rate=[0.1, 0.2]), total_steps=5), "total_steps"),
    ]
    for call, path in cases:
        with pytest.raises(ConfigError) as e:
            call()
        _path(e, path)


def test_read_spec_errors() -> None:
    with pytest.raises(ConfigError) as e:
        read_spec(3)
    _path(e, "spec")
    with pytest.raises(ConfigError) as e:
        read_spec({"type": "cosine_decay_lr", "min_lr": 0.0, "max_lr": 0.1, "total_step": 10, "step_per_epoch": 1})
    assert "decay_epoch" in str(e.value)


@pytest.mark.parametrize("backend", ["mindspore-list", "mindspore-cell", "mindspore-experimental"])
def test_trace_backend_errors(backend: str) -> None:
    fn = {"mindspore-list": tracing.trace_list, "mindspore-cell": tracing.trace_cell,
          "mindspore-experimental": tracing.trace_experimental}[backend]
    for call, path in [(lambda: fn(PLAN, 0), "steps"), (lambda: fn(PLAN, 5, mode="eager"), "mode"),
                       (lambda: fn(PLAN, 5, speed=2), "speed"), (lambda: fn(PLAN, 5, fast="yes"), "fast"),
                       (lambda: fn("plan", 5), "plan"), (lambda: fn(PLAN, 5, optimizer="x"), "optimizer")]:
        with pytest.raises(ConfigError) as e:
            call()
        _path(e, path)
    one_cycle = Plan(optimizers=PLAN.optimizers, schedule={"lr": ir.OneCycle(total_steps=5)})
    with pytest.raises(EvaluationError, match="one_cycle"):
        fn(one_cycle, 8)


def test_setup_methods_and_driver_errors() -> None:
    two = Plan(optimizers=(OptimizerSpec(type="SGD", name="a", options={"lr": 0.1}, groups=(
        Group(name="x", select=(Selector(names=("w",)),)),)), OptimizerSpec(type="AdamW", name="b", groups=(
            Group(name="y", select=(Selector(rest=True),)),))), schedule={"lr": ir.Cosine(steps=5)}, total_steps=5)

    class Two(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.w = Parameter(Tensor(np.zeros(1, np.float32)), name="w")
            self.v = Parameter(Tensor(np.zeros(1, np.float32)), name="v")

    setup = optbridge.to_mindspore(two, Two(), form="experimental")
    with pytest.raises(ConfigError) as e:
        setup.optimizer  # noqa: B018 - the property raises
    _path(e, "optimizer")
    with pytest.raises(ConfigError) as e:
        setup.step(metric="low")
    _path(e, "metric")
    for bad, path in (([], "state"), ({}, "state.fingerprint"), ({"fingerprint": "x", "k": 0, "metrics": [],
                                                                    "steppers": []}, "state.fingerprint")):
        with pytest.raises(ConfigError) as e:
            setup.load_state_dict(bad)
        _path(e, path)
    state = setup.state_dict()
    with pytest.raises(ConfigError) as e:
        setup.load_state_dict({**state, "k": -1})
    _path(e, "state.k")
    lists = optbridge.to_mindspore(PLAN, One(), form="list")
    assert lists.state_dict() == {}
    with pytest.raises(ConfigError) as e:
        lists.load_state_dict({"k": 3})
    _path(e, "state")
    items = slots(PLAN)
    with pytest.raises(ConfigError) as e:
        Driver(items, [], total_steps=10)
    _path(e, "targets")


def test_cells_errors() -> None:
    with pytest.raises(UnsupportedError) as e:
        build_cell(ir.Plateau(), 0.1, path="groups.a.schedule.lr")
    _path(e, "groups.a.schedule.lr")
    with pytest.raises(UnsupportedError, match="needs total_steps"):
        build_cell(ir.Multiplicative(expr="0.9"), 0.1)
    with pytest.raises(EvaluationError):
        build_cell(ir.OneCycle(total_steps=5), 0.1, total_steps=10)
