"""The result model of a conformance run: statuses, one result per (case, backend), the run.

Everything that reads results (the runner, the terminal table, report.md /
report.json, the docs, the PNGs) imports it from here, so the first divergence
and the verdict are computed in one place and every output names the same ones.
It sits above :mod:`optbridge_conformance.cases` (a run holds its cases; a result
holds the :class:`~optbridge_conformance.cases.Budget` its case's ``steps_for`` gave).

Statuses of one case on one backend:

* ``pass``: every step of every group and hyperparameter is within the backend's tolerance;
* ``fail``: a value is out of tolerance (the first divergent step, group, hyperparameter,
  expected and got are reported), or the trace does not line up (groups, shape);
* ``xfail``: a mismatch (or error) listed in ``xfail/<backend>.yaml``, with its reason;
* ``xpass``: listed there but it passed: the ledger is stale, and that **fails the run**;
* ``unsupported``: the backend raised ``UnsupportedError`` (its reason is shown). Its own status,
  not a failure: a backend may refuse what it cannot express exactly, never approximate. An
  ``expect: unsupported`` entry documents it; ``--strict-unsupported`` fails unlisted ones;
* ``error``: the backend raised anything else (a bug), unless listed with ``expect: error``;
* ``skip``: the case does not run on this backend (its ``backends:`` field says why);
* ``unavailable``: the backend cannot run here (framework or worker interpreter missing, with
  the set-up command); a failure only with ``--require-all`` (CI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .cases import Budget, Case
    from .compare import SeriesResult

__all__ = ["ALL_BACKENDS", "STATUSES", "FAILING", "RAN", "Result", "Run", "BackendInfo"]

#: The backends of the contract (docs/adapters.md), in report order.
ALL_BACKENDS = ("reference", "torch", "mindspore-list", "mindspore-cell", "mindspore-experimental", "megengine")
STATUSES = ("pass", "fail", "xfail", "xpass", "unsupported", "error", "skip", "unavailable")
FAILING = frozenset({"fail", "xpass", "error"})
#: Statuses of a result whose backend produced a trace that was compared.
RAN = frozenset({"pass", "fail", "xfail", "xpass"})


@dataclass
class Result:
    """One case on one backend."""

    case: str
    backend: str
    status: str
    steps: int = 0
    seconds: float = 0.0                    # the backend's trace
    overhead: float = 0.0                   # reference trace and comparison, for this result
    message: str = ""                       # reason (skip, unsupported, unavailable), error text, verdict notes
    series: list[SeriesResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fidelity: list[dict[str, str]] = field(default_factory=list)
    deviations: list[str] = field(default_factory=list)    # reasons of the xfail entries that apply
    expected: bool = False                  # the status is the one xfail/ asked for
    bug: bool = False                       # an xfail entry of kind backend-bug applies
    capped: bool = False                    # steps were capped by --max-steps
    case_steps: int = 0                     # the case's own steps (more than `steps` under a budget)
    budget: Budget | None = None            # set when steps < case_steps, with the reason
    advice: str = ""                        # a note on the refusal's advice (checked against the advised form)
    plot: dict[str, Any] | None = None      # sampled traces for plots

    @property
    def failing(self) -> bool:
        return self.status in FAILING

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(sorted({f["form"] for f in self.fidelity}))

    def first_divergence(self) -> SeriesResult | None:
        """THE first divergence: the earliest divergent step; ties go to the first series in trace order.

        Trace order is the reference trace's hyperparameter order, then its group order
        (``compare.compare_traces`` emits the series in that order). The terminal table,
        report.md, report.json and the PNG all name this one.
        """
        bad = [s for s in self.series if not s.ok]
        return min(bad, key=lambda s: s.first_step if s.first_step is not None else 0) if bad else None

    def to_json(self) -> dict[str, Any]:
        fd = self.first_divergence()
        return {
            "case": self.case, "backend": self.backend, "status": self.status, "expected": self.expected,
            "backend_bug": self.bug,
            "steps": self.steps, "case_steps": self.case_steps, "capped": self.capped,
            "budget": None if self.budget is None else self.budget.to_json(),
            "seconds": round(self.seconds, 4),
            "overhead_seconds": round(self.overhead, 4), "message": self.message, "advice": self.advice,
            "forms": list(self.forms), "fidelity": self.fidelity, "deviations": self.deviations,
            "problems": self.problems,
            "first_divergence": None if fd is None else {
                "step": fd.first_step, "group": fd.group, "hyper": fd.hyper, "expected": fd.expected,
                "got": fd.got, "bound": fd.bound, "bad_steps": fd.n_bad, "source": fd.source, "where": fd.note,
                "tolerance": fd.tolerance.describe()},
            "series": [s.to_json() for s in self.series],
        }


@dataclass
class BackendInfo:
    """Whether a backend can run here, and why not (with the set-up command)."""

    name: str
    available: bool
    message: str = ""
    precision: str = "float64"
    import_seconds: float = 0.0


@dataclass
class Run:
    """Everything one conformance run produced."""

    cases: list[Case]
    backends: list[BackendInfo]
    results: dict[tuple[str, str], Result]
    options: dict[str, Any]
    seconds: float = 0.0
    started: str = ""
    stale: list[str] = field(default_factory=list)    # xfail entries naming no known case
    timings: dict[str, float] = field(default_factory=dict)   # where the run's wall time went

    @property
    def backend_names(self) -> list[str]:
        return [b.name for b in self.backends]

    def result(self, case: str, backend: str) -> Result:
        return self.results[(case, backend)]

    def failures(self) -> list[Result]:
        out = [r for r in self.results.values() if r.failing]
        if self.options.get("require_all"):
            out += [r for r in self.results.values() if r.status == "unavailable"]
        if self.options.get("strict_unsupported"):  # random plans have no ledger: their refusals stay informative
            rnd = {c.id for c in self.cases if c.family == "random"}
            out += [r for r in self.results.values() if r.status == "unsupported" and not r.expected
                    and r.case not in rnd]
        return out

    @property
    def exit_code(self) -> int:
        return 1 if self.failures() or self.stale else 0

    def counts(self, backend: str) -> dict[str, int]:
        c = {s: 0 for s in STATUSES}
        for (_case, b), r in self.results.items():
            if b == backend:
                c[r.status] += 1
        return c

    def shortened(self) -> list[Result]:
        """Results that ran fewer updates than their case has (each with its :class:`.cases.Budget`)."""
        return [r for r in self.results.values() if r.budget is not None and r.status in RAN]
