"""The PyTorch backend: plans to real torch optimizers and schedulers, and live torch setups to plans.

Modules (the same skeleton as every adapter package):

* :mod:`.build` -- :func:`to_torch`: torch optimizers with the plan's param groups
  (each keeps its ``name``) and one scheduler object that drives every scheduled
  hyperparameter, with torch's own scheduler classes wherever one is exact
  (:mod:`.forms` decides) and a ``PlanScheduler`` (the reference evaluator's values,
  written per step) elsewhere; every choice is reported as a
  :class:`optbridge.report.Fidelity`.
* :mod:`.drivers` -- the PlanScheduler (values from :class:`optbridge.source.ValueSource`),
  the SetupScheduler and the update guard (optimizer step pre-hooks).
* :mod:`.read` -- :func:`from_torch`: the plan of a live optimizer and its schedulers
  (:mod:`.schedulers` reads schedulers, :mod:`.groups` param groups).
* :mod:`.recorder` -- :func:`record`: a hand-driven loop run without training, as a plan.
* :mod:`.tracing` -- the ``"torch"`` trace backend (``optbridge.trace(plan, n, backend="torch")``).
* :mod:`.forms` -- which torch scheduler class expresses a node exactly.
* :mod:`.lambdas` -- :class:`Lambda`, a portable ``lr_lambda`` for LambdaLR / MultiplicativeLR.

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
