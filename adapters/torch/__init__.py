"""The PyTorch backend: plans to real torch optimizers and schedulers, and live torch setups to plans.

Modules (the same skeleton as every adapter package), one line each:

* :mod:`.build` -- :func:`to_torch`: torch optimizers with the plan's groups, one scheduler object, fidelity notes.
* :mod:`.forms` -- which torch scheduler class expresses a node exactly, and building it.
* :mod:`.drivers` -- the PlanScheduler, the SetupScheduler and the update guard (optimizer step pre-hooks).
* :mod:`.read` -- :func:`from_torch`: live torch objects to a plan (modelled or replayed).
* :mod:`.schedulers` -- live torch schedulers read: their torch-dialect documents, step counts and kind.
* :mod:`.groups` -- a live optimizer's param groups read as plan groups (for :func:`from_torch` and :func:`record`).
* :mod:`.checks` -- what :func:`from_torch` checks and warns about once a plan is built.
* :mod:`.recorder` -- :func:`record`: a hand-driven loop run without training, as a plan.
* :mod:`.lightning` -- ``from_lightning``: what a LightningModule's ``configure_optimizers()`` returned.
* :mod:`.state` -- torch optimizer state to and from optbridge's neutral form (:mod:`optbridge.state`).
* :mod:`.lrfind` -- the torch runner of the lr range test (:func:`optbridge.lrfind.lr_find`).
* :mod:`.tracing` -- the ``"torch"`` trace backend (``optbridge.trace(plan, n, backend="torch")``).
* :mod:`.lambdas` -- :class:`Lambda`, a portable ``lr_lambda`` for LambdaLR / MultiplicativeLR.
* :mod:`.optimizers` -- :class:`~.optimizers.AdamWeightDecay`: MindSpore's ``nn.AdamWeightDecay`` in torch ops.

Importing this package imports no framework: torch loads on first use of a name.
See ``docs/torch.md`` for the mapping table, the import rules, resume and clipping.
"""

from __future__ import annotations

from optbridge._lazy import lazy_attributes

__all__ = ["to_torch", "from_torch", "record", "trace", "Lambda", "TorchSetup", "PlanScheduler", "SetupScheduler",
           "UpdateGuard", "SchedulerNotStepped", "MissingMetric", "FromTorchWarning", "SampledLambdaWarning",
           "ReplayedWarning", "HorizonWarning", "RecordError", "model_records"]

__getattr__ = lazy_attributes(__name__, {
    "to_torch": (".build", "to_torch"),
    "model_records": (".build", "model_records"),
    "TorchSetup": (".build", "TorchSetup"),
    "PlanScheduler": (".drivers", "PlanScheduler"),
    "SetupScheduler": (".drivers", "SetupScheduler"),
    "UpdateGuard": (".drivers", "UpdateGuard"),
    "SchedulerNotStepped": (".drivers", "SchedulerNotStepped"),
    "MissingMetric": (".drivers", "MissingMetric"),
    "from_torch": (".read", "from_torch"),
    "FromTorchWarning": (".read", "FromTorchWarning"),
    "SampledLambdaWarning": (".read", "SampledLambdaWarning"),
    "ReplayedWarning": (".read", "ReplayedWarning"),
    "HorizonWarning": (".read", "HorizonWarning"),
    "record": (".recorder", "record"),
    "RecordError": (".recorder", "RecordError"),
    "trace": (".tracing", "trace"),
    "Lambda": (".lambdas", "Lambda"),
}, {"torch": "install torch: pip install 'optbridge[torch]'"})
