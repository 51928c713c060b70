"""Import what a LightningModule's ``configure_optimizers()`` returned (Lightning 2.6).

Lightning's own normalisation (``lightning.pytorch.core.optimizer._configure_optimizers`` and
``_configure_schedulers_automatic_opt``) turns every accepted format into optimizers and
``LRSchedulerConfig`` s (scheduler, interval, frequency, monitor, ...); this module calls those
functions, then hands the optimizer and its ``(scheduler, "iter" | "epoch")`` pairs to
``optbridge.from_torch``. Formats: a single optimizer; a list/tuple of optimizers; ``[opts], [scheds]``;
a dict with ``optimizer`` and ``lr_scheduler`` (a scheduler or a dict with ``scheduler``, ``interval``,
``frequency``, ``monitor``, ``strict``, ``name``); a list/tuple of such dicts.

Training-loop convention (Lightning's automatic optimization): a scheduler with ``interval: "step"`` is
stepped after every optimizer step, one with ``interval: "epoch"`` (the default) after every epoch.

Refused: several optimizers (Lightning 2's automatic optimization refuses them too; import each
optimizer with ``optbridge.from_torch``), and ``frequency > 1`` (the scheduler is stepped every
``frequency`` intervals: the IR would need a node field that holds its counter for ``frequency``
steps of its unit, e.g. ``every: int`` on every node, evaluated as ``k // every``).
"""

from __future__ import annotations

from typing import Any

from optbridge.errors import ConfigError

__all__ = ["from_lightning"]


def from_lightning(returned: Any, *, model: Any = None, steps_per_epoch: int | None = None,
                   total_steps: int | None = None) -> Any:
    """The plan of what ``configure_optimizers()`` returned.

    Args:
        returned: The return value of ``configure_optimizers()``, in any format Lightning accepts.
        model: The module whose ``named_parameters()`` name the groups (see ``optbridge.from_torch``).
        steps_per_epoch: Optimizer steps per epoch (needed when epoch- and step-interval schedulers mix).
        total_steps: Passed to ``optbridge.from_torch``.

    Returns:
        An :class:`optbridge.Plan`.

    Raises:
        ConfigError: a format Lightning rejects (its message), several optimizers, or ``frequency > 1``.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.core.optimizer import _configure_optimizers, _configure_schedulers_automatic_opt

    import optbridge

    try:
        optimizers, schedulers, monitor = _configure_optimizers(returned)
        configs = _configure_schedulers_automatic_opt(schedulers, monitor)
    except (MisconfigurationException, TypeError, ValueError) as e:
        raise ConfigError("configure_optimizers", " ".join(str(e).split()), type(returned).__name__) from None
    if len(optimizers) != 1:
        raise ConfigError("configure_optimizers", "must return exactly one optimizer (Lightning's automatic "
                          "optimization takes one; import several with optbridge.from_torch each)", len(optimizers))
    pairs = []
    for i, c in enumerate(configs):
        if c.frequency != 1:
            raise ConfigError(f"lr_scheduler[{i}].frequency", "is not supported yet: the IR cannot hold a "
                              "schedule's counter for several intervals", c.frequency)
        if getattr(c.scheduler, "optimizer", optimizers[0]) is not optimizers[0]:
            raise ConfigError(f"lr_scheduler[{i}]", "must schedule the returned optimizer", type(c.scheduler).__name__)
        pairs.append((c.scheduler, "iter" if c.interval == "step" else "epoch"))
    return optbridge.from_torch(optimizers[0], pairs or None, model=model, steps_per_epoch=steps_per_epoch,
                                total_steps=total_steps)
