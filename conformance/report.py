"""Reports of a conformance run: the terminal table, report.md, report.json, and docs/conformance.md.

``docs/conformance.md`` is :func:`docs` of a full run, written by
``optbridge conform --write-docs docs/conformance.md``: it holds no timings or
dates, so it only changes when a result does.
"""

from __future__ import annotations

import json
import platform
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .runner import FAILING, Result, Run

__all__ = ["terminal", "markdown", "docs", "to_json", "write_reports", "cell", "framework_versions"]

_SHORT = {"pass": "pass", "fail": "FAIL", "xfail": "xfail", "xpass": "XPASS", "unsupported": "unsup",
          "error": "ERROR", "skip": "skip", "unavailable": "--"}
_FORM_LETTER = {"native": "N", "generated": "G", "table": "T", "unsupported": "U"}
_FORM_NAMES = ("native", "generated", "table")


def cell(r: Result) -> str:
    """``pass N`` (native), ``pass T+N``, ``xfail``, ``FAIL``, ... for one result."""
    text = "xfail(bug)" if r.status == "xfail" and r.bug else _SHORT[r.status]
    if r.status in ("pass", "fail", "xfail", "xpass") and r.forms and r.backend != "reference":
        text += " " + "+".join(_FORM_LETTER.get(f, "?") for f in r.forms)
    if r.status in ("pass", "fail", "xfail", "xpass") and 0 < r.steps < r.case_steps:
        text += f" ({_count(r.steps)})"
    return text


def _count(n: int) -> str:
    """1000 -> 1k, 20000 -> 20k, 600 -> 600."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.9g}"


def _divergence(r: Result) -> str:
    fd = r.first_divergence()
    if fd is None:
        return "; ".join(r.problems) or r.message
    where = f"step {fd.first_step}, group {fd.group}, {fd.hyper} ({fd.source})"
    diff = abs((fd.got or 0) - (fd.expected or 0))
    return (f"{where}: expected {_fmt(fd.expected)}, got {_fmt(fd.got)} (|diff| {diff:.3g}"
            f" > bound {fd.bound:.3g}; {fd.tolerance.describe()}); {fd.n_bad} of {r.steps} steps out"
            + ("; " + "; ".join(r.problems) if r.problems else ""))


def _problem_lines(run: Run, statuses: Iterable[str]) -> list[str]:
    want = set(statuses)
    out = []
    for r in run.results.values():
        if r.status not in want:
            continue
        tag = _SHORT[r.status].ljust(5)
        if r.status in ("fail", "xpass") or (r.status == "error" and not r.expected):
            detail = r.message if r.status != "fail" or not r.series else _divergence(r)
            if r.status == "fail" and r.message and r.series:
                detail = f"{r.message}; {_divergence(r)}"
        elif r.status == "xfail":
            detail = _divergence(r) + " | expected: " + "; ".join(r.deviations)
        else:
            detail = r.message
        out.append(f"{tag} {r.case} @ {r.backend}: {detail}")
    return out


def terminal(run: Run, *, full: bool = True) -> str:
    """The table people read after a run: matrix, problems, per-backend summary, verdict."""
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
            cells = [cell(run.results[(c.id, n)]).ljust(w) for n, w in zip(names, cols)]
            lines.append(c.id.ljust(width) + "  " + "  ".join(cells).rstrip())
        lines.append("(N native, G generated, T table: the form the backend reported; (n): ran the first n updates "
                     "of the case, its budget on that backend)")
    probs = _problem_lines(run, ("fail", "xpass", "error"))
    if run.options.get("require_all"):
        probs += [f"--    {r.case} @ {r.backend}: unavailable: {r.message}" for r in run.results.values()
                  if r.status == "unavailable"][:len(run.backends)]
    if full:
        known = _problem_lines(run, ("xfail",)) + _problem_lines(run, ("unsupported",))
        if known:
            lines += ["", "known deviations and refusals:"] + ["  " + p for p in known]
    if probs or run.stale:
        lines += ["", "problems:"] + ["  " + p for p in probs] + [f"  STALE {s}" for s in run.stale]
    lines += ["", "backend summary:"]
    for b in run.backends:
        if not b.available:
            lines.append(f"  {b.name:24s} unavailable: {b.message}")
            continue
        c = run.counts(b.name)
        secs = sum(r.seconds for (case, n), r in run.results.items() if n == b.name)
        parts = [f"{c[s]} {s}" for s in ("pass", "xfail", "unsupported", "skip", "fail", "xpass", "error") if c[s]]
        slow = sorted((r for (case, n), r in run.results.items() if n == b.name), key=lambda r: -r.seconds)[:1]
        slow_txt = f" (slowest {slow[0].case} {slow[0].seconds:.1f} s)" if slow and slow[0].seconds > 0.5 else ""
        lines.append(f"  {b.name:24s} {', '.join(parts):48s} {secs:7.1f} s{slow_txt}")
    bad = run.failures()
    verdict = "OK" if not bad and not run.stale else \
        f"FAILED: {len(bad) + len(run.stale)} unexpected result(s)"
    lines += ["", verdict]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- shared Markdown pieces

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
    import os
    import subprocess
    repo = Path(__file__).resolve().parent.parent
    python = os.environ.get("OPTBRIDGE_MGE_PYTHON") or str(repo / ".venv-mge" / "bin" / "python")
    try:
        p = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "not found"
    return p.stdout.strip() + " (worker interpreter)" if p.returncode == 0 and p.stdout.strip() else "not found"


def _md_escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _measured(run: Run) -> dict[tuple[str, str], tuple[float, float, int]]:
    """``(backend, form) -> (worst error in value units, worst in peak units, series)`` over passing results.

    Units: float32 backends, ulps (of the value, of the series' peak); float64, relative (to the value, to the peak).
    """
    out: dict[tuple[str, str], list[float]] = {}
    for (case, b), r in run.results.items():
        if r.status not in ("pass", "xpass"):
            continue
        for srs in r.series:
            forms = [f for f in srs.forms if f != "unsupported"] or ["default"]
            key = (b, max(forms, key=lambda f: ("table", "native", "generated", "default").index(f)))
            v = srs.max_ulps if srs.tolerance.precision == "float32" else srs.max_rel
            w = out.setdefault(key, [0.0, 0.0, 0])
            w[0] = max(w[0], v or 0.0)
            w[1] = max(w[1], srs.max_peak)
            w[2] += 1
    return {k: (v[0], v[1], int(v[2])) for k, v in out.items()}


def _tolerance_rows(run: Run) -> list[str]:
    from .compare import backend_tolerances
    measured = _measured(run)
    rows = ["| backend | form | tolerance | measured worst over passing series (value; peak) | why |",
            "|---|---|---|---|---|"]
    for b in run.backends:
        for form, t in backend_tolerances(b.name).items():
            m = measured.get((b.name, form))
            if form == "default":  # series in a form without its own entry use the default
                ms = [v for (bb, f), v in measured.items() if bb == b.name and f not in backend_tolerances(b.name)]
                m = (max(x[0] for x in ms), max(x[1] for x in ms), sum(x[2] for x in ms)) if ms else None
            if m is None:
                got = "-"
            elif t.precision == "float32":
                got = f"{_g(m[0])} ulp; {_g(m[1])} ulp of peak ({m[2]} series)"
            else:
                got = f"{_g(m[0])} rel; {_g(m[1])} of peak ({m[2]} series)"
            rows.append(f"| {b.name} | {form} | {t.describe()} | {got} | {_md_escape(t.reason)} |")
    overrides = [(c.id, b, o) for c in run.cases for b, o in (c.doc.get("tolerance") or {}).items()]
    for cid, b, o in overrides:
        rule = ", ".join(f"{k} {v}" for k, v in o.items() if k != "reason")
        rows.append(f"| {b} | case `{cid}` | {rule} | | {_md_escape(o.get('reason', ''))} |")
    return rows


def _g(x: float) -> str:
    if x == 0:
        return "0"
    if x >= 10:
        return f"{x:.0f}"
    return f"{x:.2g}"


def _budget_rows(run: Run) -> list[str]:
    from .cases import budget_caps
    caps = budget_caps()
    rows = ["| backend | at most | why |", "|---|---|---|"]
    for b in run.backends:
        if b.name in caps:
            n, why = caps[b.name]
            rows.append(f"| {b.name} | {n:,} updates per case | {_md_escape(why)} |")
    own = [(c.id, c.doc["steps_by_backend"], c.doc.get("steps_reason", ""))
           for c in run.cases if c.doc.get("steps_by_backend")]
    for cid, sb, why in own:
        rows.append(f"| {', '.join(sb)} | `{cid}`: {', '.join(f'{v:,}' for v in sb.values())} | {_md_escape(why)} |")
    return rows


def _family_matrix(run: Run) -> list[str]:
    names = run.backend_names
    from .schema import load_schema
    order = load_schema()["properties"]["family"]["enum"]
    fams: dict[str, list[str]] = {f: [] for f in order}
    for c in run.cases:
        fams.setdefault(c.family, []).append(c.id)
    fams = {f: ids for f, ids in fams.items() if ids}
    rows = ["| family (cases) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for fam, ids in fams.items():
        cells = []
        for n in names:
            rs = [run.results[(i, n)] for i in ids]
            cells.append(_family_cell(rs))
        rows.append(f"| {fam} ({len(ids)}) | " + " | ".join(cells) + " |")
    return rows


def _family_cell(rs: list[Result]) -> str:
    st = Counter(r.status for r in rs)
    if st.get("unavailable") == len(rs):
        return "unavailable"
    ran = [r for r in rs if r.status not in ("skip", "unavailable")]
    passed = [r for r in ran if r.status == "pass"]
    text = f"{len(passed)}/{len(ran)} pass" if ran else "not run"
    forms = Counter(f for r in passed for f in r.forms if f in _FORM_NAMES)
    if forms and rs and rs[0].backend != "reference":
        text += " (" + ", ".join(f"{f} {forms[f]}" for f in _FORM_NAMES if forms[f]) + ")"
    bugs = sum(r.bug and r.status == "xfail" for r in rs)
    if bugs:
        st["xfail"] -= bugs
        text += f"; {bugs} known backend bug{'s' if bugs > 1 else ''}"
    for s in ("xfail", "unsupported", "skip", "fail", "xpass", "error"):
        if st.get(s):
            text += f"; {st[s]} {s}"
    return text


def _case_matrix(run: Run) -> list[str]:
    names = run.backend_names
    rows = ["| case | family | steps | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for c in run.cases:
        steps = c.steps
        cells = [cell(run.results[(c.id, n)]) for n in names]
        rows.append(f"| `{c.id}` | {c.family} | {steps:,} | " + " | ".join(cells) + " |")
    return rows


def _details(run: Run, *, with_plots: bool = False) -> list[str]:
    out: list[str] = []
    order = ("fail", "xpass", "error", "bug", "xfail", "unsupported", "skip")
    titles = {"fail": "Failures", "xpass": "Expected deviations that pass (stale ledger)", "error": "Errors",
              "bug": "Known backend bugs (reported; listed in conformance/xfail/ until fixed)",
              "xfail": "Known framework deviations (conformance/xfail/)", "unsupported": "Refused as unsupported",
              "skip": "Not run (case restrictions)"}
    for status in order:
        if status == "bug":
            rs = [r for r in run.results.values() if r.bug and r.status == "xfail"]
        elif status == "xfail":
            rs = [r for r in run.results.values() if r.status == "xfail" and not r.bug]
        else:
            rs = [r for r in run.results.values() if r.status == status]
        if not rs:
            continue
        out += ["", f"### {titles[status]} ({len(rs)})", ""]
        if status == "skip":  # one line per case
            by_case: dict[str, list[Result]] = defaultdict(list)
            for r in rs:
                by_case[r.case].append(r)
            for cid, lst in by_case.items():
                out.append(f"* `{cid}` on {', '.join(r.backend for r in lst)}: {_md_escape(lst[0].message)}")
            continue
        for r in rs:
            if status in ("fail", "xfail", "xpass", "bug") and r.series:
                text = _divergence(r)
                if r.message:
                    text = f"{r.message}; {text}"
            else:
                text = r.message
            line = f"* `{r.case}` on **{r.backend}**: {_md_escape(text)}"
            if status == "unsupported":
                line += " (listed in `xfail/`)" if r.expected else " (not listed in `xfail/`)"
            elif r.deviations:
                line += " — " + _md_escape("; ".join(r.deviations))
            if with_plots and r.status in ("fail", "xfail", "xpass") and r.plot:
                line += f" ([plot](plots/{r.case}.png))"
            out.append(line)
    return out


def _coverage(run: Run) -> list[str]:
    from optbridge import ir

    from .cases import FEATURES, features
    feats: dict[str, list[str]] = defaultdict(list)
    for c in run.cases:
        if c.family == "random":
            continue
        for f in features(c):
            feats[f].append(c.id)
    rows = ["| feature | cases | e.g. |", "|---|---|---|"]
    for kind in ir.NODE_TYPES:
        ids = feats.get(f"kind:{kind}", [])
        rows.append(f"| node `{kind}` | {len(ids)} | {', '.join(f'`{i}`' for i in ids[:3])} |")
    for f, what in FEATURES.items():
        ids = feats.get(f, [])
        rows.append(f"| {what} | {len(ids)} | {', '.join(f'`{i}`' for i in ids[:3])} |")
    return rows


def _backend_rows(run: Run, *, timings: bool) -> list[str]:
    head = "| backend | precision | pass | xfail | unsupported | skip | fail | xpass | error |"
    rows = [head + (" time (s) | slowest case |" if timings else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if timings else "")]
    for b in run.backends:
        if not b.available:
            rows.append(f"| {b.name} | {b.precision} | unavailable: {_md_escape(b.message)} |" + " |" * 6
                        + (" | |" if timings else ""))
            continue
        c = run.counts(b.name)
        statuses = ("pass", "xfail", "unsupported", "skip", "fail", "xpass", "error")
        row = f"| {b.name} | {b.precision} | " + " | ".join(str(c[s]) for s in statuses) + " |"
        if timings:
            rs = [r for (case, n), r in run.results.items() if n == b.name]
            secs = sum(r.seconds for r in rs)
            slow = max(rs, key=lambda r: r.seconds, default=None)
            row += f" {secs:.1f} | " + (f"`{slow.case}` {slow.seconds:.1f} s" if slow else "") + " |"
        rows.append(row)
    return rows


def _forms_section(run: Run, limit: int = 8) -> list[str]:
    """Per backend: which forms expressed the schedules of the cases that ran, most frequent first."""
    out = ["| backend | form | what (number of case series) |", "|---|---|---|"]
    for b in run.backends:
        if not b.available or b.name == "reference":
            continue
        per_form: dict[str, Counter] = defaultdict(Counter)
        for (case, n), r in run.results.items():
            if n != b.name or r.status in ("skip", "unavailable", "unsupported", "error"):
                continue
            for f in r.fidelity:
                detail = " ".join(f["detail"].split())
                per_form[f["form"]][detail if len(detail) <= 90 else detail[:87] + "..."] += 1
        for form in ("native", "generated", "table", "unsupported"):
            if not per_form.get(form):
                continue
            top = per_form[form].most_common(limit)
            more = len(per_form[form]) - len(top)
            text = "; ".join(f"{_md_escape(d)} ({k})" for d, k in top) + (f"; and {more} more" if more > 0 else "")
            out.append(f"| {b.name} | {form} | {text} |")
    return out


def _random_section(run: Run) -> list[str]:
    rnd = [c for c in run.cases if c.family == "random"]
    if not rnd:
        return []
    out = ["", "## Random plans", "",
           f"{len(rnd)} plans drawn by hypothesis (`optbridge_conformance.randplans`, seed {run.options.get('seed')}, "
           f"at most {run.options.get('random_steps')} steps each), run on every available backend.", ""]
    names = run.backend_names
    out.append("| backend | " + " | ".join(("pass", "unsupported", "fail", "error")) + " |")
    out.append("|---|---|---|---|---|")
    for n in names:
        st = Counter(run.results[(c.id, n)].status for c in rnd)
        out.append(f"| {n} | {st['pass']} | {st['unsupported']} | {st['fail'] + st['xpass']} | {st['error']} |")
    return out


# --------------------------------------------------------------------------- report.md / docs / json

def markdown(run: Run, *, plots: bool = False) -> str:
    """report.md: everything, with timings."""
    v = framework_versions()
    lines = [f"# Conformance report ({run.started})", "",
             f"`optbridge conform` on {len(run.cases)} cases x {len(run.backend_names)} backends "
             f"in {run.seconds:.1f} s "
             f"(jobs {run.options.get('jobs')}"
             + (f", max steps {run.options['max_steps']}" if run.options.get("max_steps") else "") + "). "
             + ", ".join(f"{k} {val}" for k, val in v.items()) + f"; {platform.platform()}.", "",
             "**Verdict: "
             + ("OK" if run.exit_code == 0 else f"FAILED ({len(run.failures()) + len(run.stale)} unexpected)")
             + "**", "", "## Backends", ""]
    lines += _backend_rows(run, timings=True)
    lines += ["", "## Matrix by family", ""] + _family_matrix(run)
    lines += ["", "## Details"] + _details(run, with_plots=plots)
    if run.stale:
        lines += ["", "### Stale expected deviations", ""] + [f"* {s}" for s in run.stale]
    lines += _random_section(run)
    lines += ["", "## Every case", ""] + _case_matrix(run)
    lines += ["", "## Tolerances", ""] + _tolerance_rows(run)
    lines += ["", "## Fidelity details", ""] + _forms_section(run, limit=20)
    return "\n".join(lines) + "\n"


def docs(run: Run) -> str:
    """docs/conformance.md: the current matrix, generated (no dates, no timings)."""
    v = framework_versions()
    hand = [c for c in run.cases if c.family != "random"]
    lines = [
        "<!-- GENERATED by `optbridge conform --write-docs docs/conformance.md`: do not edit by hand. -->",
        "",
        "# Conformance matrix",
        "",
        f"Every case in `conformance/cases/` ({len(hand)} files) runs on every backend; each backend's per-step, "
        "per-group values are compared with the reference evaluator (`optbridge.trace(plan, n)`). Where a backend "
        "measures the lr it really applied (the parameter delta of plain SGD with gradient 1), that is what is "
        "compared; otherwise the value the framework holds. Known, explained deviations are data in "
        "`conformance/xfail/<backend>.yaml`, and strict: one that starts passing fails the run. Tolerances are "
        "data in `conformance/tolerances.yaml` (table below).",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "optbridge") + ".",
        "Regenerate: `optbridge conform --require-all --jobs 2 --random " + str(run.options.get("random") or 0)
        + " --write-docs docs/conformance.md` (about 5 minutes).",
        "",
        "Cell legend: `k/n pass` over the family's cases that ran on the backend, then the fidelity forms the "
        "passing cases used (native: the framework's own class; generated: optbridge-generated code evaluating "
        "the closed form; table: values precomputed by the reference), then the other statuses "
        "(xfail: known deviation; unsupported: the backend refuses, with its reason; skip: the case excludes the "
        "backend, with its reason).",
        "",
        "## Summary by backend",
        "",
    ]
    lines += _backend_rows(run, timings=False)
    lines += ["", "## Matrix: case family x backend", ""] + _family_matrix(run)
    lines += ["", "## Deviations, refusals and restrictions, with their reasons"] + _details(run)
    if run.stale:
        lines += ["", "### Stale expected deviations", ""] + [f"* {s}" for s in run.stale]
    lines += _random_section(run)
    lines += ["", "## Tolerances", ""] + _tolerance_rows(run)
    lines += ["", "## Step budget", "",
              "The reference evaluates every case over its whole horizon; backends that step the real optimizer "
              "once per update run the first updates of a long case, within a budget (`conformance/budget.yaml`); "
              "the case tables show `(n)` where a backend ran fewer updates than the case has.", ""] + _budget_rows(run)
    lines += ["", "## How each backend expressed the schedules (fidelity details)", ""] + _forms_section(run)
    lines += ["", "## Coverage (computed from the case files)", ""] + _coverage(run)
    lines += ["", "## Every case", "", "N native, G generated, T table (the form the backend reported).", ""]
    lines += _case_matrix(run)
    lines += ["", "## What each case exercises", "", "| case | description |", "|---|---|"]
    lines += [f"| `{c.id}` | {_md_escape(c.description)} |" for c in hand]
    return "\n".join(lines) + "\n"


def to_json(run: Run) -> dict[str, Any]:
    from .compare import backend_tolerances
    return {
        "started": run.started, "seconds": round(run.seconds, 3), "exit_code": run.exit_code,
        "options": run.options, "versions": framework_versions(), "platform": platform.platform(),
        "backends": [{"name": b.name, "available": b.available, "message": b.message, "precision": b.precision,
                      "tolerances": {f: {"rule": t.describe(), "reason": t.reason}
                                     for f, t in backend_tolerances(b.name).items()},
                      "counts": run.counts(b.name),
                      "seconds": round(sum(r.seconds for (c, n), r in run.results.items() if n == b.name), 3)}
                     for b in run.backends],
        "stale": run.stale,
        "cases": [{"id": c.id, "family": c.family, "description": c.description, "steps": c.steps,
                   "path": c.path, "plan": c.doc["plan"] if c.family == "random" else None}
                  for c in run.cases],
        "results": [r.to_json() for r in run.results.values()],
    }


def write_reports(run: Run, out: Path, *, plots: bool = True) -> list[Path]:
    """report.md, report.json, plots/<case>.png (failing and expected-failing cases), random/<id>.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    pngs: list[Path] = []
    note = ""
    if plots:
        from .plots import plot_failures
        try:
            pngs = plot_failures(run, out / "plots")
        except ImportError as e:  # no matplotlib (e.g. the MegEngine interpreter)
            note = f"plots skipped: {e}"
    md = out / "report.md"
    md.write_text(markdown(run, plots=bool(pngs)) + (f"\n{note}\n" if note else ""), encoding="utf-8")
    js = out / "report.json"
    js.write_text(json.dumps(to_json(run), indent=1, default=_json_default) + "\n", encoding="utf-8")
    written += [md, js] + pngs
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
