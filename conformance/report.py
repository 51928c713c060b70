"""Reports of a conformance run: the terminal table, report.md, report.json (and the PNGs, via :mod:`.plots`).

The docs page (docs/conformance.md) is :mod:`optbridge_conformance.docs`. Every
report names a result's first divergence and a shortened run through
:mod:`optbridge_conformance.sections`, so they agree.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import sections as S
from .results import Run

__all__ = ["terminal", "markdown", "to_json", "write_reports", "framework_versions"]


def _problem_lines(run: Run, statuses: Iterable[str]) -> list[str]:
    want = set(statuses)
    out = []
    for r in run.results.values():
        if r.status not in want:
            continue
        tag = S.SHORT[r.status].ljust(5)
        if r.status in ("fail", "xpass") or (r.status == "error" and not r.expected):
            detail = r.message if r.status != "fail" or not r.series else S.divergence(r)
            if r.status == "fail" and r.message and r.series:
                detail = f"{r.message}; {S.divergence(r)}"
        elif r.status == "xfail":
            detail = S.divergence(r) + " | expected: " + "; ".join(r.deviations)
        else:
            detail = r.message + (f" [{r.advice}]" if r.advice else "")
        out.append(f"{tag} {r.case} @ {r.backend}: {detail}")
    return out


def terminal(run: Run, *, full: bool = True) -> str:
    """The table people read after a run: matrix, problems, shortened runs, per-backend summary, verdict."""
    names = run.backend_names
    lines: list[str] = []
    n_unavail = sum(not b.available for b in run.backends)
    lines.append(f"optbridge conform: {len(run.cases)} cases x {len(names)} backends"
                 + (f" ({n_unavail} unavailable)" if n_unavail else "") + f", {run.seconds:.1f} s")
    if full:
        width = max([len(c.id) for c in run.cases] + [4])
        cols = [max(len(n), 14) for n in names]
        lines.append("")
        lines.append("case".ljust(width) + "  " + "  ".join(n.ljust(w) for n, w in zip(names, cols)))
        lines.append("-" * width + "  " + "  ".join("-" * w for w in cols))
        for c in run.cases:
            cells = [S.cell(run.results[(c.id, n)]).ljust(w) for n, w in zip(names, cols)]
            lines.append(c.id.ljust(width) + "  " + "  ".join(cells).rstrip())
        lines.append("(N native, G generated, T table: the form the backend reported; (n): ran the first n updates "
                     "of the case: see 'shortened runs')")
    probs = _problem_lines(run, ("fail", "xpass", "error"))
    if run.options.get("require_all"):
        probs += [f"--    {r.case} @ {r.backend}: unavailable: {r.message}" for r in run.results.values()
                  if r.status == "unavailable"][:len(run.backends)]
    if full:
        known = _problem_lines(run, ("xfail",)) + _problem_lines(run, ("unsupported",))
        if known:
            lines += ["", "known deviations and refusals:"] + ["  " + p for p in known]
    short = S.budget_lines(run)
    if short:
        lines += ["", "shortened runs (--no-budget runs every case in full):"] + ["  " + s for s in short]
    if probs or run.stale:
        lines += ["", "problems:"] + ["  " + p for p in probs] + [f"  STALE {s}" for s in run.stale]
    lines += ["", "backend summary:"]
    for b in run.backends:
        if not b.available:
            lines.append(f"  {b.name:24s} unavailable: {b.message}")
            continue
        counts = run.counts(b.name)
        secs = sum(r.seconds for (_case, n), r in run.results.items() if n == b.name)
        parts = [f"{counts[s]} {s}" for s in ("pass", "xfail", "unsupported", "skip", "fail", "xpass", "error")
                 if counts[s]]
        slow = sorted((r for (_case, n), r in run.results.items() if n == b.name), key=lambda r: -r.seconds)[:1]
        slow_txt = f" (slowest {slow[0].case} {slow[0].seconds:.1f} s)" if slow and slow[0].seconds > 0.5 else ""
        lines.append(f"  {b.name:24s} {', '.join(parts):48s} {secs:7.1f} s{slow_txt}")
    bad = run.failures()
    verdict = "OK" if not bad and not run.stale else \
        f"FAILED: {len(bad) + len(run.stale)} unexpected result(s)"
    lines += ["", verdict]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- versions

def framework_versions() -> dict[str, str]:
    from importlib import metadata
    out = {"python": platform.python_version()}
    for dist in ("optbridge", "numpy", "torch", "mindspore", "MegEngine"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed here"
    if out["MegEngine"] == "not installed here":
        out["MegEngine"] = _worker_version("MegEngine")
    return out


def _worker_version(dist: str) -> str:
    """The version installed in the MegEngine worker's interpreter (metadata only: nothing is imported)."""
    import subprocess

    from optbridge.errors import BackendUnavailable
    try:
        from optbridge_adapters.megengine.backend import megengine_python
        python = megengine_python()
    except (ImportError, BackendUnavailable):
        return "not found"
    try:
        p = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "not found"
    return p.stdout.strip() + " (worker interpreter)" if p.returncode == 0 and p.stdout.strip() else "not found"


# --------------------------------------------------------------------------- report.md / json

def markdown(run: Run, *, plots: bool = False) -> str:
    """report.md: everything, with timings."""
    v = framework_versions()
    lines = [f"# Conformance report ({run.started})", "",
             f"`optbridge conform` on {len(run.cases)} cases x {len(run.backend_names)} backends "
             f"in {run.seconds:.1f} s "
             f"(jobs {run.options.get('jobs')}"
             + (f", max steps {run.options['max_steps']}" if run.options.get("max_steps") else "")
             + ("" if run.options.get("budget", True) else ", no step budget") + "). "
             + ", ".join(f"{k} {val}" for k, val in v.items()) + f"; {platform.platform()}.", "",
             "**Verdict: "
             + ("OK" if run.exit_code == 0 else f"FAILED ({len(run.failures()) + len(run.stale)} unexpected)")
             + "**", "", "## Backends", ""]
    lines += S.backend_rows(run, timings=True)
    lines += ["", "## Matrix by family", ""] + S.family_matrix(run)
    short = S.budget_lines(run)
    if short:
        lines += ["", "## Shortened runs", "", "Fewer updates than the case has, and why (`--no-budget` runs "
                  "every case in full):", ""] + [f"* {S.md_escape(s)}" for s in short]
    lines += ["", "## Details"] + S.details(run, with_plots=plots)
    if run.stale:
        lines += ["", "### Stale expected deviations", ""] + [f"* {s}" for s in run.stale]
    lines += S.random_section(run)
    lines += ["", "## Every case", ""] + S.case_matrix(run)
    lines += ["", "## Tolerances", ""] + S.tolerance_rows(run)
    traj = S.trajectory_rows(run)
    if traj:
        lines += ["", "### Trajectories", ""] + traj
    lines += ["", "## Fidelity details", ""] + S.forms_section(run, limit=20)
    if run.timings:
        lines += ["", "## Where the time went", "", "| phase | seconds |", "|---|---|"]
        lines += [f"| {k} | {val:.2f} |" for k, val in run.timings.items()]
    return "\n".join(lines) + "\n"


def to_json(run: Run) -> dict[str, Any]:
    from .compare import backend_tolerances
    return {
        "started": run.started, "seconds": round(run.seconds, 3), "exit_code": run.exit_code,
        "options": run.options, "timings": {k: round(v, 3) for k, v in run.timings.items()},
        "versions": framework_versions(), "platform": platform.platform(),
        "backends": [{"name": b.name, "available": b.available, "message": b.message, "precision": b.precision,
                      "tolerances": {f: {"rule": t.describe(), "reason": t.reason}
                                     for f, t in backend_tolerances(b.name).items()},
                      "counts": run.counts(b.name),
                      "seconds": round(sum(r.seconds for (_c, n), r in run.results.items() if n == b.name), 3)}
                     for b in run.backends],
        "stale": run.stale,
        "shortened": S.budget_lines(run),
        "cases": [{"id": c.id, "family": c.family, "description": c.description, "steps": c.steps,
                   "path": c.path, "plan": c.doc["plan"] if c.family in ("random", "user") else None}
                  for c in run.cases],
        "results": [r.to_json() for r in run.results.values()],
    }


def write_reports(run: Run, out: Path, *, plots: bool = True, every_case: bool = False) -> list[Path]:
    """report.md, report.json, plots/<case>.png, random/<id>.yaml.

    PNGs: the cases with a failing or expected-failing backend; ``every_case`` (``--plot``): every case.
    """
    out.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    note = ""
    if plots:
        from .plots import plot_cases
        try:
            pngs = plot_cases(run, out / "plots", every_case=every_case)
        except ImportError as e:  # no matplotlib (e.g. the MegEngine interpreter)
            note = f"plots skipped: {e}"
    md = out / "report.md"
    md.write_text(markdown(run, plots=bool(pngs)) + (f"\n{note}\n" if note else ""), encoding="utf-8")
    js = out / "report.json"
    js.write_text(json.dumps(to_json(run), indent=1, default=_json_default) + "\n", encoding="utf-8")
    written = [md, js, *pngs]
    rnd = [c for c in run.cases if c.family == "random"]
    if rnd:
        import yaml
        (out / "random").mkdir(exist_ok=True)
        for c in rnd:
            p = out / "random" / f"{c.id}.yaml"
            p.write_text(yaml.safe_dump(_plain(c.doc), sort_keys=False, width=110), encoding="utf-8")
            written.append(p)
    if note:
        print(f"optbridge conform: note: {note}", file=sys.stderr)
    return written


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist"):
        return x.tolist()
    return x


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)
