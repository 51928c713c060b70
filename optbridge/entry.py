"""The framework entry points: ``to_<framework>`` and ``from_<framework>``.

One shape and one signature per direction, for every framework::

    to_torch(plan, model, *, total_steps=None, form=None, metrics=None, ...)      -> TorchSetup
    to_mindspore(plan, model, *, total_steps=None, form=None, metrics=None, ...)  -> MindSporeSetup
    to_megengine(plan, model, *, total_steps=None, form=None, metrics=None, ...)  -> MegEngineSetup

    from_torch(optimizer, scheduler=None, *, model=None, step_unit="iter", steps_per_epoch=None, total_steps=None)
    from_mindspore(...)  /  from_megengine(...)    # the same parameters

These functions import nothing heavy: each loads its adapter package
(``optbridge_adapters.<framework>``) on call, and a framework that is not
installed raises :class:`~optbridge.errors.BackendUnavailable` with the install
hint. ``from optbridge import *`` therefore imports no framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import BackendUnavailable

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Plan

__all__ = ["to_torch", "from_torch", "record", "to_mindspore", "to_mindspore_lists", "from_mindspore", "to_megengine",
           "from_megengine", "FRAMEWORK_HINTS"]

#: How to install each framework (part of every BackendUnavailable message).
FRAMEWORK_HINTS = {
    "torch": "install torch: pip install 'optbridge[torch]'",
    "mindspore": "pip install 'optbridge[mindspore]' (mindspore 2.10)",
    "megengine": "MegEngine 1.13 needs Python <= 3.10: run `./dev setup` (it builds .venv-mge), or see "
                 "docs/megengine.md",
}


def _adapter(framework: str, module: str, name: str) -> Any:
    """``optbridge_adapters.<framework>.<module>.<name>``, or BackendUnavailable.

    Says once (a :class:`~optbridge.versions.VersionWarning`) when the installed
    framework is not a version optbridge verified.
    """
    from .versions import check_version
    check_version(framework)
    try:
        mod = importlib.import_module(f"optbridge_adapters.{framework}.{module}")
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] in (framework, "optbridge_adapters"):
            raise BackendUnavailable(f"optbridge.{name} needs {framework}, which is not importable here ({e}); "
                                     f"{FRAMEWORK_HINTS[framework]}") from e
        raise
    return getattr(mod, name)


def _check(plan: Any, total_steps: Any, metrics: Any, *, limit: int | None = None) -> None:
    """Refuse hyperparameter values no optimizer can use (:mod:`optbridge.checks`) before a framework builds anything.

    Checked over ``total_steps`` updates (default: the plan's; an unbounded plan gets the
    static checks). Arguments the adapter refuses on its own (not a plan, a bad count, a
    horizon past the framework's ``limit`` of updates) are left to it: over such a horizon
    only the static checks run, so the refusal comes at once (scanning the values of
    2**31 updates first took 52 s, measured).
    """
    from .checks import check_plan
    from .plan import Plan
    if not isinstance(plan, Plan):
        return
    steps = total_steps if isinstance(total_steps, int) and not isinstance(total_steps, bool) and total_steps > 0 \
        else None
    horizon = steps if steps is not None else plan.total_steps
    check_plan(plan, steps=steps, metrics=metrics, values=limit is None or horizon is None or horizon <= limit)


def _int32_steps() -> int:
    """MindSpore's limit of updates (its int32 ``global_step``; the adapter refuses a longer horizon)."""
    from .source import INT32_STEPS
    return INT32_STEPS


# --------------------------------------------------------------------------- plan -> framework

def to_torch(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
             metrics: Sequence[float] | None = None, freeze_excluded: bool = True) -> Any:
    """Real torch optimizers and one scheduler object for ``plan`` over ``model``'s parameters.

    Args:
        plan: The plan (:func:`optbridge.load`).
        model: An ``nn.Module`` (or ``(name, tensor)`` pairs); groups resolve over
            its named parameters, tied weights count once.
        total_steps: Updates the setup must be exact for (default: the plan's).
        form: ``"auto"`` (default: torch's own scheduler classes wherever one is
            exact, the reference's values written per step elsewhere) or ``"table"``
            (the reference's values everywhere).
        metrics: Plateau metric series known in advance (else ``scheduler.step(metric)``).
        freeze_excluded: Set ``requires_grad=False`` on ``frozen: exclude`` parameters.

    Returns:
        A ``TorchSetup`` (``.optimizer(s)``, ``.scheduler``, ``.clip_gradients()``,
        ``.fidelity``, ``.resolution``); see docs/torch.md.
    """
    _check(plan, total_steps, metrics)
    return _adapter("torch", "build", "to_torch")(plan, model, total_steps=total_steps, form=form, metrics=metrics,
                                                   freeze_excluded=freeze_excluded)


def to_mindspore(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
                 metrics: Sequence[float] | None = None, scheduler: str = "native", optimizer: str = "auto") -> Any:
    """Real MindSpore optimizers (and the driver that moves their schedules) for ``plan`` over ``model``.

    Args:
        plan: The plan.
        model: A ``mindspore.nn.Cell``; groups resolve over its trainable parameters.
        total_steps: Updates the setup must be exact for (default: the plan's;
            required by the ``list`` form). An update past it raises.
        form: ``"auto"`` (default), ``"list"``, ``"cell"`` or ``"experimental"``
            (docs/mindspore.md: which form holds what, exactly or not at all).
        metrics: Plateau metric series known in advance (later metrics go to
            ``setup.step(metric)``).
        scheduler: Experimental form: ``"native"`` MindSpore lr_scheduler classes
            where they compute the node, or ``"driver"`` (the reference's values).
        optimizer: ``"auto"`` (MindSpore's own optimizer where it computes torch's
            update, else optbridge's torch-exact one), ``"native"`` or ``"exact"``.

    Returns:
        A ``MindSporeSetup`` (``.optimizer(s)``, ``.step()``, ``.fidelity``, ``.report``).
    """
    _check(plan, total_steps, metrics, limit=_int32_steps())
    return _adapter("mindspore", "build", "to_mindspore")(plan, model, total_steps=total_steps, form=form,
                                                           metrics=metrics, scheduler=scheduler, optimizer=optimizer)


def to_mindspore_lists(plan: Plan, total_steps: int | None = None, *, hyper: str = "lr") -> Any:
    """Per-group float32 lists of ``hyper`` for MindSpore's ``learning_rate=[...]`` (numpy only)."""
    _check(plan, total_steps, None, limit=_int32_steps())
    return _adapter("mindspore", "convert", "lists")(plan, total_steps, hyper=hyper)


def to_megengine(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
                 metrics: Sequence[float] | None = None, split_nesterov: bool = True, optimizer: str = "auto") -> Any:
    """Real MegEngine optimizers and schedule drivers for ``plan`` over ``model``'s parameters.

    Args:
        plan: The plan.
        model: A ``megengine.module.Module`` (or ``name -> Parameter`` pairs).
        total_steps: Updates the setup must be exact for (default: the plan's).
        form: ``"auto"`` (default: MegEngine's MultiStepLR where exact, the
            reference's values written per step elsewhere) or ``"table"``.
        metrics: Plateau metric series known in advance.
        split_nesterov: Split a native SGD whose groups differ in nesterov into separate optimizers.
        optimizer: Which optimizer classes run the plan: ``"auto"`` (default:
            MegEngine's own where it computes torch's update for the plan's options,
            optbridge's torch-exact MegEngine class elsewhere), ``"native"``
            (MegEngine's own; refused where it differs from torch) or ``"exact"``
            (optbridge's torch-exact classes everywhere).

    Returns:
        A ``MegEngineSetup``; see docs/megengine.md.
    """
    _check(plan, total_steps, metrics)
    return _adapter("megengine", "backend", "to_megengine")(plan, model, total_steps=total_steps, form=form,
                                                             metrics=metrics, split_nesterov=split_nesterov,
                                                             optimizer=optimizer)


# --------------------------------------------------------------------------- framework -> plan

def from_torch(optimizer: Any, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
               steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """The plan of a live torch optimizer and its scheduler(s).

    Args:
        optimizer: A ``torch.optim`` optimizer.
        scheduler: None, a scheduler, a list of schedulers stacked on the optimizer,
            or ``(scheduler, "iter" | "epoch")`` pairs. Schedulers already stepped
            start where they stand: update 0 of the plan is the optimizer's next update.
        model: The module whose parameter names the groups select.
        step_unit: What ``scheduler.step()`` counts when not given per pair.
        steps_per_epoch: Updates per epoch.
        total_steps: Updates the plan is defined for, counted from the optimizer's
            next update (the remaining run); needed to sample plain Python lambdas.
    """
    return _adapter("torch", "read", "from_torch")(optimizer, scheduler, model=model, step_unit=step_unit,
                                                    steps_per_epoch=steps_per_epoch, total_steps=total_steps)


def from_mindspore(optimizer: Any, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
                   steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """The plan of a live MindSpore optimizer (nn or experimental) and its scheduler.

    Args:
        optimizer: An ``nn`` optimizer (its ``learning_rate`` list or cell is read) or
            a ``mindspore.experimental.optim`` optimizer. (A ``LearningRateSchedule``
            cell alone is accepted too and gives an SGD plan.)
        scheduler: With an experimental optimizer: its lr_scheduler.
        model: The net whose parameter names the groups select (default: the names
            the optimizer's parameters carry).
        step_unit, steps_per_epoch, total_steps: As :func:`from_torch`.
    """
    plan = _adapter("mindspore", "read", "from_mindspore")(optimizer, scheduler, model=model, step_unit=step_unit,
                                                            steps_per_epoch=steps_per_epoch, total_steps=total_steps)
    target = getattr(optimizer, "optimizer", optimizer)
    if getattr(target, "optbridge_guard", None) is None:  # to_mindspore's own optimizers follow the plan exactly
        _warn_native("mindspore", [target], plan)
    return plan


def from_megengine(optimizer: Any, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
                   steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """The plan of live MegEngine optimizer(s) and scheduler(s) (the inverse of :func:`to_megengine`).

    Args:
        optimizer: A MegEngine optimizer, a list of them, or a ``MultipleOptimizer``.
        scheduler: None, ``MultiStepLR``, optbridge's ``PlanScheduler``, or a list of them.
        model: The module whose parameter names the groups select.
        step_unit, steps_per_epoch, total_steps: As :func:`from_torch`.
    """
    plan = _adapter("megengine", "backend", "from_megengine")(optimizer, scheduler, model=model, step_unit=step_unit,
                                                             steps_per_epoch=steps_per_epoch,
                                                             total_steps=total_steps)
    _warn_native("megengine", _optimizers(optimizer), plan)
    return plan


def record(optimizer: Any, steps: int, *, model: Any = None, schedulers: Any = None,
           before_step: Callable[[int, Any], Any] | None = None,
           on_epoch_start: Callable[[int, Any], Any] | None = None, step_unit: str = "iter",
           steps_per_epoch: int | None = None, metrics: Sequence[float] | None = None) -> Plan:
    """The plan of a hand-driven torch training loop, recorded from the real objects.

    Runs ``steps`` updates of the loop's schedule code without changing any
    parameter: before each update ``before_step(step, optimizer)`` (the loop's own
    lr code) runs, every group's lr, momentum, betas and weight decay are recorded,
    then the ``schedulers`` step (iteration ones after every update, epoch ones after
    an epoch's last update, in list order; a ReduceLROnPlateau gets
    ``metrics[epoch]``); ``on_epoch_start(epoch, optimizer)`` may add param groups
    (they join the plan at that update). The optimizer, schedulers and model are left
    as they were. Closed forms are recovered where they are exact
    (:func:`optbridge.recover.recover`), tables elsewhere.

    Args:
        optimizer: A ``torch.optim`` optimizer.
        steps: Updates to record.
        model: The module whose parameter names the groups select.
        schedulers: A scheduler, or ``(scheduler, "iter" | "epoch")`` pairs.
        before_step: The loop's own per-update hyperparameter code.
        on_epoch_start: Called at the start of each epoch (may add param groups).
        step_unit: What a bare scheduler's ``step()`` counts.
        steps_per_epoch: Updates per epoch (needed for epoch schedulers and callbacks).
        metrics: One metric per plateau step.

    Returns:
        A plan whose reference trace equals the recording (1e-12 relative).
    """
    return _adapter("torch", "recorder", "record")(optimizer, steps, model=model, schedulers=schedulers,
                                                    before_step=before_step, on_epoch_start=on_epoch_start,
                                                    step_unit=step_unit, steps_per_epoch=steps_per_epoch,
                                                    metrics=metrics)


def _optimizers(obj: Any) -> list[Any]:
    """The optimizer objects in ``obj``: itself, a list of them, or a container with ``.opts`` / ``.optimizers``."""
    for attr in ("opts", "optimizers"):
        inner = getattr(obj, attr, None)
        if isinstance(inner, (list, tuple)):
            return [o for x in inner for o in _optimizers(x)]
    if isinstance(obj, (list, tuple)):
        return [o for x in obj for o in _optimizers(x)]
    return [obj]


def _warn_native(framework: str, optimizers: Sequence[Any], plan: Any) -> None:
    """Warn (:class:`optbridge.lint.LintWarning`) where a user's native optimizer computed another update than the
    torch optimizer the imported plan describes (the measured tables of ``optbridge_adapters.<framework>.native``).

    Optimizers are matched to the plan's by type; optbridge's own exact optimizers have nothing to say. A plan read
    from a MindSpore ``nn`` optimizer also gets the ``mindspore-static-lr`` lint (a static group lr beside a dynamic
    one was applied as ``lr + 1.0 - 1.0``).
    """
    from . import lint
    from .plan import Plan
    if not isinstance(plan, Plan):
        return
    table = importlib.import_module(f"optbridge_adapters.{framework}.native")
    natives: dict[str, set[str | None]] = {}
    for o in optimizers:
        cls = type(o)
        name = table.native_name(cls.__module__, cls.__name__)
        natives.setdefault(cls.__name__, set()).add(name)
    found: list[lint.Lint] = []
    for i, spec in enumerate(plan.optimizers):
        if len(plan.optimizers) == 1 and len(natives) == 1:
            names = next(iter(natives.values()))  # one optimizer read into one spec (MindSpore: Momentum -> SGD)
        else:
            names = natives.get(spec.type, set())
        if len(names) == 1:  # a native and an exact optimizer of one type cannot be told apart: say nothing
            found += lint.native_lints(framework, next(iter(names)), plan, i)
    if framework == "mindspore" and any(n and n.startswith("nn.") for ns in natives.values() for n in ns):
        found += [x for x in lint.lint(plan, values=False) if x.code == "mindspore-static-lr"]
    lint.warn(found, stacklevel=3)
