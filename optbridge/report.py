"""Fidelity notes: which form a backend used for each schedule, and why.

Every adapter reports, per group and hyperparameter, how it expressed the
schedule. The CLI and the conformance suite print these, so nothing is ever
approximated silently.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Fidelity", "FORMS"]

#: ``native``: the framework's own object computes it (torch CosineAnnealingLR, MindSpore CosineDecayLR);
#: ``generated``: code optbridge generated (a scheduler class, a LearningRateSchedule cell) evaluates the closed form;
#: ``table``: values precomputed by the reference evaluator and written/looked up per step;
#: ``unsupported``: the backend cannot express it exactly (``detail`` says why).
FORMS = ("native", "generated", "table", "unsupported")


@dataclass(frozen=True)
class Fidelity:
    """How one schedule reached one backend.

    Attributes:
        backend: Backend name (``"torch"``, ``"mindspore-cell"``, ...).
        group: Group name (``"*"`` for all groups).
        hyper: Hyperparameter (``"lr"``, ``"momentum"``, ...).
        form: One of :data:`FORMS`.
        detail: What was used (``"torch.optim.lr_scheduler.SequentialLR[LinearLR, CosineAnnealingLR]"``)
            or why it is unsupported.
    """

    backend: str
    group: str
    hyper: str
    form: str
    detail: str

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")

    def __str__(self) -> str:
        return f"{self.backend}: {self.group}/{self.hyper}: {self.form} ({self.detail})"
