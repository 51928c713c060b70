"""The PyTorch backend: plans to real torch optimizers and schedulers, and live torch setups to plans.

Modules (the same skeleton as every adapter package):

* :mod:`.build` -- :func:`to_torch`: torch optimizers with the plan's param groups
  (each keeps its ``name``) and one scheduler object that drives every scheduled
  hyperparameter, with torch's own scheduler classes wherever one is exact
  (:mod:`.forms` decides) and a ``PlanScheduler`` (the reference evaluator's values,
  written per step) elsewhere; every choice is reported as a
  :class:`optbridge.report.Fidelity`.
* :mod:`.read` -- :func:`from_torch`: the plan of a live optimizer and its schedulers.
* :mod:`.tracing` -- the ``"torch"`` trace backend (``optbridge.trace(plan, n, backend="torch")``).
* :mod:`.forms` -- which torch scheduler class expresses a node exactly.
* :mod:`.lambdas` -- :class:`Lambda`, a portable ``lr_lambda`` for LambdaLR / MultiplicativeLR.

Importing this package imports no framework: torch loads on first use of a name.
See ``docs/torch.md`` for the mapping table, the import rules, resume and clipping.
"""

from __future__ import annotations

from optbridge._lazy import lazy_attributes

__all__ = ["to_torch", "from_torch", "trace", "Lambda", "TorchSetup", "PlanScheduler", "SetupScheduler",
           "SampledLambdaWarning", "model_records"]

__getattr__ = lazy_attributes(__name__, {
    "to_torch": (".build", "to_torch"),
    "model_records": (".build", "model_records"),
    "TorchSetup": (".build", "TorchSetup"),
    "PlanScheduler": (".build", "PlanScheduler"),
    "SetupScheduler": (".build", "SetupScheduler"),
    "from_torch": (".read", "from_torch"),
    "SampledLambdaWarning": (".read", "SampledLambdaWarning"),
    "trace": (".tracing", "trace"),
    "Lambda": (".lambdas", "Lambda"),
}, {"torch": "install torch: pip install 'optbridge[torch]'"})
