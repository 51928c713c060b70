"""Pieces every report of a run shares: result cells, the first divergence in words, the step budget, Markdown tables.

The terminal table, report.md, report.json, docs/conformance.md and the PNGs
describe a result's first divergence with :func:`divergence` (built on
:meth:`Result.first_divergence`) and a shortened run with :func:`budget_lines`, so
they always name the same step, group, hyperparameter, expected and got.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from .cases import family_order
from .results import RAN, Result, Run

__all__ = ["cell", "divergence", "budget_lines", "md_escape", "family_matrix", "case_matrix", "details",
           "tolerance_rows", "budget_rows", "forms_section", "coverage", "backend_rows", "random_section", "g"]

SHORT = {"pass": "pass", "fail": "FAIL", "xfail": "xfail", "xpass": "XPASS", "unsupported": "unsup",
         "error": "ERROR", "skip": "skip", "unavailable": "--"}
_FORM_LETTER = {"native": "N", "generated": "G", "table": "T", "unsupported": "U"}
FORM_NAMES = ("native", "generated", "table")


def cell(r: Result) -> str:
    """``pass N`` (native), ``pass T+N``, ``xfail``, ``FAIL``, ``pass N (60)`` (ran 60 updates) for one result."""
    text = "xfail(bug)" if r.status == "xfail" and r.bug else SHORT[r.status]
    if r.status in RAN and r.forms and r.backend != "reference":
        text += " " + "+".join(_FORM_LETTER.get(f, "?") for f in r.forms)
    if r.status in RAN and 0 < r.steps < r.case_steps:
        text += f" ({count(r.steps)})"
    return text


def count(n: int) -> str:
    """1000 -> 1k, 20000 -> 20k, 600 -> 600."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.9g}"


def divergence(r: Result) -> str:
    """The first divergence of a result in words (or its problems / message when it has none)."""
    fd = r.first_divergence()
    if fd is None:
        return "; ".join(r.problems) or r.message
    note = f", {fd.note}" if fd.note else ""
    where = f"step {fd.first_step}, group {fd.group}, {fd.hyper} ({fd.source}{note})"
    diff = abs((fd.got or 0) - (fd.expected or 0))
    return (f"{where}: expected {fmt(fd.expected)}, got {fmt(fd.got)} (|diff| {diff:.3g}"
            f" > bound {fd.bound or 0:.3g}; {fd.tolerance.describe()}); {fd.n_bad} of {r.steps} steps out"
            + ("; " + "; ".join(r.problems) if r.problems else ""))


def budget_lines(run: Run) -> list[str]:
    """One line per (backend, budget) of the results that ran fewer updates than their case has."""
    groups: dict[tuple[str, str, str, int], list[Result]] = defaultdict(list)
    for r in run.shortened():
        assert r.budget is not None
        groups[(r.backend, r.budget.source, r.budget.reason, r.budget.ran)].append(r)
    out = []
    for (backend, source, reason, ran), rs in groups.items():
        most = max(r.budget.of for r in rs if r.budget is not None)
        what = f"`{rs[0].case}` ({most:,} updates)" if len(rs) == 1 else f"{len(rs)} cases (of up to {most:,} updates)"
        out.append(f"{backend}: ran the first {ran:,} updates of {what}; {source}: {reason}")
    return out


def md_escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def g(x: float) -> str:
    if x == 0:
        return "0"
    if x >= 10:
        return f"{x:.0f}"
    return f"{x:.2g}"


# --------------------------------------------------------------------------- Markdown tables

def family_matrix(run: Run) -> list[str]:
    names = run.backend_names
    fams: dict[str, list[str]] = {f: [] for f in family_order(c.family for c in run.cases)}
    for c in run.cases:
        fams[c.family].append(c.id)
    rows = ["| family (cases) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for fam, ids in fams.items():
        cells = [_family_cell([run.results[(i, n)] for i in ids]) for n in names]
        rows.append(f"| {fam} ({len(ids)}) | " + " | ".join(cells) + " |")
    return rows


def _family_cell(rs: list[Result]) -> str:
    st = Counter(r.status for r in rs)
    if st.get("unavailable") == len(rs):
        return "unavailable"
    ran = [r for r in rs if r.status not in ("skip", "unavailable")]
    passed = [r for r in ran if r.status == "pass"]
    text = f"{len(passed)}/{len(ran)} pass" if ran else "not run"
    forms = Counter(f for r in passed for f in r.forms if f in FORM_NAMES)
    if forms and rs and rs[0].backend != "reference":
        text += " (" + ", ".join(f"{f} {forms[f]}" for f in FORM_NAMES if forms[f]) + ")"
    bugs = sum(r.bug and r.status == "xfail" for r in rs)
    if bugs:
        st["xfail"] -= bugs
        text += f"; {bugs} known backend bug{'s' if bugs > 1 else ''}"
    for s in ("xfail", "unsupported", "skip", "fail", "xpass", "error"):
        if st.get(s):
            text += f"; {st[s]} {s}"
    short = sum(1 for r in ran if r.budget is not None and r.status in RAN)
    if short:
        text += f"; {short} shortened"
    return text


def case_matrix(run: Run, cases: Iterable[Any] | None = None) -> list[str]:
    names = run.backend_names
    rows = ["| case | family | steps | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for c in run.cases if cases is None else cases:
        cells = [cell(run.results[(c.id, n)]) for n in names]
        rows.append(f"| `{c.id}` | {c.family} | {c.steps:,} | " + " | ".join(cells) + " |")
    return rows


def details(run: Run, *, with_plots: bool = False) -> list[str]:
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
        if status == "skip":  # one line per reason and set of backends
            by_case: dict[str, list[Result]] = defaultdict(list)
            for r in rs:
                by_case[r.case].append(r)
            by_reason: dict[tuple[str, str], list[str]] = defaultdict(list)
            for cid, lst in by_case.items():
                by_reason[(", ".join(r.backend for r in lst), lst[0].message)].append(cid)
            for (backends, why), ids in by_reason.items():
                names = ", ".join(f"`{i}`" for i in ids) if len(ids) <= 3 else f"{len(ids)} cases ({_span(ids)})"
                out.append(f"* {names} on {backends}: {md_escape(why)}")
            continue
        for r in rs:
            if status in ("fail", "xfail", "xpass", "bug") and r.series:
                text = divergence(r)
                if r.message:
                    text = f"{r.message}; {text}"
            else:
                text = r.message
            line = f"* `{r.case}` on **{r.backend}**: {md_escape(text)}"
            if status == "unsupported":
                line += " (listed in `xfail/`)" if r.expected else " (not listed in `xfail/`)"
                if r.advice:
                    line += f"; {md_escape(r.advice)}"
            elif r.deviations:
                line += " — " + md_escape("; ".join(r.deviations))
            if with_plots and r.plot:
                line += f" ([plot](plots/{r.case}.png))"
            out.append(line)
    return out


def _span(ids: list[str]) -> str:
    """``trajectory-*`` for ids that share a prefix, else the first and last id."""
    import os.path
    prefix = os.path.commonprefix(ids)
    return f"`{prefix}*`" if len(prefix) >= 4 else f"`{ids[0]}` ... `{ids[-1]}`"


def _measured(run: Run) -> dict[tuple[str, str], tuple[float, float, int]]:
    """``(backend, form) -> (worst error in value units, worst in peak units, series)`` over passing results.

    Units: float32 backends, ulps (of the value, of the series' peak); float64, relative (to the value, to the
    peak). Trajectory series are keyed ``(backend, "trajectory")``.
    """
    from .trajectory import HYPER
    out: dict[tuple[str, str], list[float]] = {}
    for (_case, b), r in run.results.items():
        if r.status not in ("pass", "xpass"):
            continue
        for srs in r.series:
            if srs.hyper == HYPER and srs.source == "parameters":
                key = (b, "trajectory")
            else:
                forms = [f for f in srs.forms if f != "unsupported"] or ["default"]
                key = (b, max(forms, key=lambda f: ("table", "native", "generated", "default").index(f)))
            v = srs.max_ulps if srs.tolerance.precision == "float32" else srs.max_rel
            w = out.setdefault(key, [0.0, 0.0, 0])
            w[0] = max(w[0], v or 0.0)
            w[1] = max(w[1], srs.max_peak)
            w[2] += 1
    return {k: (v[0], v[1], int(v[2])) for k, v in out.items()}


def tolerance_rows(run: Run) -> list[str]:
    from .compare import backend_tolerances
    measured = _measured(run)
    rows = ["| backend | form | tolerance | measured worst over passing series (value; peak) | why |",
            "|---|---|---|---|---|"]
    for b in run.backends:
        for form, t in backend_tolerances(b.name).items():
            m = measured.get((b.name, form))
            if form == "default":  # series in a form without its own entry use the default
                ms = [v for (bb, f), v in measured.items() if bb == b.name and f not in backend_tolerances(b.name)
                      and f != "trajectory"]
                m = (max(x[0] for x in ms), max(x[1] for x in ms), sum(x[2] for x in ms)) if ms else None
            rows.append(f"| {b.name} | {form} | {t.describe()} | {_measured_text(t.precision, m)} | "
                        f"{md_escape(t.reason)} |")
    overrides = [(c.id, b, o) for c in run.cases for b, o in (c.doc.get("tolerance") or {}).items()]
    for cid, b, o in overrides:
        rule = ", ".join(f"{k} {v}" for k, v in o.items() if k != "reason")
        rows.append(f"| {b} | case `{cid}` | {rule} | | {md_escape(o.get('reason', ''))} |")
    return rows


def trajectory_rows(run: Run) -> list[str]:
    """Trajectory bounds (``tolerances.yaml``: ``trajectory``): stated, measured when stated, and in this run."""
    from .trajectory import measured_worst, trajectory_tolerance
    if not any(c.trajectory is not None for c in run.cases):
        return []
    measured = _measured(run)
    rows = ["| backend | bound (float32 ulps of each parameter's peak) | measured worst when stated | this run "
            "(passing series) | why |", "|---|---|---|---|---|"]
    for b in run.backends:
        if b.name == "reference":
            continue
        t = trajectory_tolerance(b.name)
        stated = measured_worst(b.name)
        m = measured.get((b.name, "trajectory"))
        now = "-" if m is None else f"{g(m[1])} ulp of peak ({m[2]} series)"
        rows.append(f"| {b.name} | {g(t.peak_ulps)} ulp of peak + {g(t.ulps)} ulp | "
                    f"{'-' if stated is None else g(stated) + ' ulp of peak'} | {now} | {md_escape(t.reason)} |")
    return rows


def _measured_text(precision: str, m: tuple[float, float, int] | None) -> str:
    if m is None:
        return "-"
    if precision == "float32":
        return f"{g(m[0])} ulp; {g(m[1])} ulp of peak ({m[2]} series)"
    return f"{g(m[0])} rel; {g(m[1])} of peak ({m[2]} series)"


def budget_rows(run: Run) -> list[str]:
    from .cases import budget_caps
    caps = budget_caps()
    rows = ["| backend | at most | why |", "|---|---|---|"]
    for b in run.backends:
        if b.name in caps:
            n, why = caps[b.name]
            rows.append(f"| {b.name} | {n:,} updates per case | {md_escape(why)} |")
    own = [(c.id, c.doc["steps_by_backend"], c.doc.get("steps_reason", ""))
           for c in run.cases if c.doc.get("steps_by_backend")]
    for cid, sb, why in own:
        rows.append(f"| {', '.join(sb)} | `{cid}`: {', '.join(f'{v:,}' for v in sb.values())} | {md_escape(why)} |")
    return rows


def backend_rows(run: Run, *, timings: bool) -> list[str]:
    head = "| backend | precision | pass | xfail | unsupported | skip | fail | xpass | error |"
    rows = [head + (" time (s) | slowest case |" if timings else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if timings else "")]
    for b in run.backends:
        if not b.available:
            rows.append(f"| {b.name} | {b.precision} | unavailable: {md_escape(b.message)} |" + " |" * 6
                        + (" | |" if timings else ""))
            continue
        c = run.counts(b.name)
        statuses = ("pass", "xfail", "unsupported", "skip", "fail", "xpass", "error")
        row = f"| {b.name} | {b.precision} | " + " | ".join(str(c[s]) for s in statuses) + " |"
        if timings:
            rs = [r for (_case, n), r in run.results.items() if n == b.name]
            secs = sum(r.seconds for r in rs)
            slow = max(rs, key=lambda r: r.seconds, default=None)
            row += f" {secs:.1f} | " + (f"`{slow.case}` {slow.seconds:.1f} s" if slow else "") + " |"
        rows.append(row)
    return rows


def forms_section(run: Run, limit: int = 8) -> list[str]:
    """Per backend: which forms expressed the schedules of the cases that ran, most frequent first."""
    out = ["| backend | form | what (number of case series) |", "|---|---|---|"]
    for b in run.backends:
        if not b.available or b.name == "reference":
            continue
        per_form: dict[str, Counter[str]] = defaultdict(Counter)
        for (_case, n), r in run.results.items():
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
            text = "; ".join(f"{md_escape(d)} ({k})" for d, k in top) + (f"; and {more} more" if more > 0 else "")
            out.append(f"| {b.name} | {form} | {text} |")
    return out


def coverage(run: Run) -> list[str]:
    from optbridge import ir

    from .cases import FEATURES, features
    feats: dict[str, list[str]] = defaultdict(list)
    for c in run.cases:
        if c.family in ("random", "user"):
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


def random_section(run: Run) -> list[str]:
    rnd = [c for c in run.cases if c.family == "random"]
    if not rnd:
        return []
    out = ["", "## Random plans", "",
           f"{len(rnd)} plans drawn by hypothesis (`optbridge_conformance.randplans`, seed {run.options.get('seed')}, "
           f"at most {run.options.get('random_steps')} steps each), run on every available backend.", ""]
    out.append("| backend | " + " | ".join(("pass", "unsupported", "fail", "error")) + " |")
    out.append("|---|---|---|---|---|")
    for n in run.backend_names:
        st = Counter(run.results[(c.id, n)].status for c in rnd)
        out.append(f"| {n} | {st['pass']} | {st['unsupported']} | {st['fail'] + st['xpass']} | {st['error']} |")
    return out
