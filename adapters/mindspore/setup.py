"""What :func:`~optbridge_adapters.mindspore.build.to_mindspore` returns: :class:`MindSporeSetup`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optbridge.errors import ConfigError
from optbridge.report import Fidelity

from .choose import Choice
from .driver import Driver, as_metric

__all__ = ["MindSporeSetup", "Holder"]


@dataclass(frozen=True)
class Holder:
    """Where MindSpore holds one (group, hyperparameter) value.

    Attributes:
        kind: ``"list"`` (a float32 array gathered at global_step), ``"cell"`` (a
            LearningRateSchedule called at global_step), ``"param"`` (a Parameter
            written by the driver or an experimental lr_scheduler) or ``"const"``.
        obj: The array, cell, Parameter or float.
    """

    kind: str
    obj: Any


@dataclass(frozen=True, eq=False)
class MindSporeSetup:
    """MindSpore optimizers built for a plan, and what moves their schedules.

    Attributes:
        optimizers: The MindSpore optimizers (one per plan optimizer, or more when an
            nn optimizer cannot hold its groups' options together). Each is guarded:
            an update past the schedule's end, or one ``setup.step()`` was not called
            for, raises (docs/mindspore.md).
        form: ``list``, ``cell`` or ``experimental`` (what was used).
        fidelity: One :class:`~optbridge.report.Fidelity` per group and hyperparameter.
        report: Text explaining each choice.
        groups: Group names, in the optimizers' order.
        params: ``group -> list of Parameters``.
        lr: ``group -> the lr object`` (float32 list, LearningRateSchedule cell, or the
            Parameter a driver or lr_scheduler writes).
        hypers: ``group -> {hyper: object}`` for the other scheduled hyperparameters.
        driver: The driver (values written per update, the clock), or None when every
            schedule advances with MindSpore's own ``global_step``.
        choices: ``plan optimizer name -> Choice`` (family, class, why).
        excluded: Parameters left out (``frozen: exclude``).
        holders: ``(group, hyper) -> Holder``: how each value is held (tracing reads it).
        owners: ``group -> index into optimizers``.
    """

    optimizers: tuple[Any, ...]
    form: str
    fidelity: tuple[Fidelity, ...]
    report: str
    groups: tuple[str, ...]
    params: Mapping[str, list[Any]] = field(default_factory=dict)
    lr: Mapping[str, Any] = field(default_factory=dict)
    hypers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    driver: Driver | None = None
    choices: Mapping[str, Choice] = field(default_factory=dict)
    excluded: tuple[str, ...] = ()
    holders: Mapping[tuple[str, str], Holder] = field(default_factory=dict)
    owners: Mapping[str, int] = field(default_factory=dict)

    @property
    def optimizer(self) -> Any:
        """The optimizer, when there is exactly one."""
        if len(self.optimizers) != 1:
            raise ConfigError("optimizer", f"this setup has {len(self.optimizers)} optimizers: use .optimizers "
                              "(the report says why)", len(self.optimizers))
        return self.optimizers[0]

    @property
    def needs_step(self) -> bool:
        """Whether :meth:`step` must follow every update (a driver or an experimental lr_scheduler runs)."""
        return self.driver is not None

    def step(self, metric: float | None = None) -> None:
        """Call after every optimizer update (all optimizers of the setup): the next update's values go in place.

        Needed whenever :attr:`needs_step` (the experimental form, torch-exact and
        experimental optimizers, plateaus); harmless otherwise (lists and cells advance
        with MindSpore's own ``global_step``). ``metric`` is the metric observed after
        this update, for a plateau schedule (used at the end of each plateau step).
        """
        metric = as_metric(metric)
        if self.driver is not None:
            self.driver.step(metric)

    def state_dict(self) -> dict[str, Any]:
        """The driver's state (``{}`` without a driver); the optimizers' own state is in their checkpoint."""
        return {} if self.driver is None else self.driver.state_dict()

    def load_state_dict(self, state: Any) -> None:
        """Continue from :meth:`state_dict` (after loading the optimizers' checkpoint).

        Raises:
            ConfigError: a state of another plan or setup.
        """
        if self.driver is None:
            if state:
                raise ConfigError("state", "this setup has no driver (every schedule advances with MindSpore's "
                                  "global_step): its state is the optimizers' checkpoint", sorted(state))
            return
        self.driver.load_state_dict(state)

    def __repr__(self) -> str:
        return (f"MindSporeSetup(form={self.form!r}, optimizers={[type(o).__name__ for o in self.optimizers]}, "
                f"groups={self.groups})")
