"""``optbridge demo``: the job optbridge exists for, on a bundled PyTorch fine-tuning setup.

The bundled torch config (``optbridge/examples/finetune_torch.yaml``: AdamW, a
backbone at 0.1x, a no-decay group, linear warmup + cosine per iteration) is
loaded, briefly described and traced by the reference evaluator, then carried
to every framework backend this machine has (torch; MindSpore as per-step
lists, cells and ``mindspore.experimental``; MegEngine through its worker).
Each backend's trace is compared with the reference update by update, from
what the framework really applied where it measured it, and a table prints
the worst difference (relative for float64 backends, float32 ulps for float32
ones) and the forms used. An unavailable backend is listed with the reason and
the set-up command; a backend that refuses the plan, with its reason. The
overlay PNG and a CSV of every backend's values go to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable, OptbridgeError, UnsupportedError
from ._common import (
    PROG,
    CLIError,
    _description,
    _display_path,
    _Formatter,
    _load,
    _positive_int,
    _subtitle,
    _trace_function,
    _window_clock,
    example_path,
)
from .trace import format_table, phase_marks, table_rows
from .validate import describe_plan

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Plan
    from ..plot import Difference
    from ..tracing import Trace

EXAMPLE = "finetune_torch.yaml"
EXAMPLE_PATH = f"optbridge/examples/{EXAMPLE}"
#: Every framework backend, in the order the demo tries them.
BACKENDS = ("torch", "mindspore-list", "mindspore-cell", "mindspore-experimental", "megengine")

_DEMO_EPILOG = f"""\
The demo plan is optbridge/examples/{EXAMPLE}: a PyTorch fine-tuning setup
(AdamW, the backbone at 0.1x the lr, a no-weight-decay group, 30 updates of
linear warmup from 1% then a cosine to 1e-6, stepped per iteration, 300 updates).
The demo traces it on the reference evaluator and on each framework backend
available here, prints each backend's worst difference to the reference and the
forms it used, and writes DIR/demo.png (the backends overlaid, with their
differences per update) and DIR/demo_trace.csv (step, epoch, group, hyper, then
one column per backend: the value it holds, and the value it applied where it
measured it).

examples:
  optbridge demo
  optbridge demo --backends torch,megengine --out /tmp/optbridge-demo
  optbridge demo --steps 100
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="carry a bundled PyTorch setup to every framework and compare",
                       formatter_class=_Formatter,
                       description="Trace the bundled PyTorch fine-tuning setup on every available backend and "
                                   "compare each with the exact reference.",
                       epilog=_DEMO_EPILOG)
    p.add_argument("--out", "-o", metavar="DIR", default="out",
                   help="directory for demo.png and demo_trace.csv (default: out/)")
    p.add_argument("--steps", "-n", type=_positive_int, metavar="N",
                   help="number of optimizer updates (default: the example's 300)")
    p.add_argument("--backends", metavar="B[,B...]", default=",".join(BACKENDS),
                   help=f"framework backends to try, comma-separated (default: all: {', '.join(BACKENDS)})")
    p.set_defaults(func=cmd_demo)


@dataclass
class Outcome:
    """One backend's result: a trace and its differences, or why there is none."""

    backend: str
    status: str                       # "ok", "unavailable", "refused", "error"
    seconds: float = 0.0
    trace: Trace | None = None
    diffs: list[Difference] = field(default_factory=list)
    reason: str = ""


def cmd_demo(args: argparse.Namespace) -> int:
    wanted = [b.strip() for b in str(args.backends).split(",") if b.strip()]
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown:
        raise CLIError(f"--backends: {', '.join(unknown)} is not a framework backend (choose from "
                       f"{', '.join(BACKENDS)})")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out: {args.out} exists and is not a directory")
    with example_path(EXAMPLE) as path:
        plan = _load(path)
        description = plan.description or _description(path)
        shown_path = _display_path(path)
    steps = args.steps or plan.total_steps or 300
    if plan.total_steps is not None and steps > plan.total_steps:
        raise CLIError(f"--steps {steps}: the example is defined for {plan.total_steps} updates (total_steps)")

    rule = "-" * 78
    print(f"optbridge demo: {shown_path}")
    print(rule)
    if description:
        print(textwrap.fill(description, 78))
        print()
    print(describe_plan(plan, steps))
    print(rule)
    ref = _reference(plan, steps, shown_path)
    hypers = list(ref)
    marks = phase_marks(plan, steps, hypers)
    rows = [r for r in table_rows(steps, None, marks, 12) if r is not None]
    print(f"reference (exact float64), {_window_clock(plan, 0, steps)}; a few updates:")
    print(format_table(ref, hypers, rows, plan.steps_per_epoch))
    print(rule)

    outcomes = [_run(plan, steps, ref, b) for b in wanted]
    print(f"the same setup on each framework ({steps} updates, compared update by update):")
    print(_outcome_table(outcomes))
    _notes(outcomes)
    print(rule)

    out_dir.mkdir(parents=True, exist_ok=True)
    ran = [o.trace for o in outcomes if o.trace is not None]
    csv_path = out_dir / "demo_trace.csv"
    n = _comparison_csv(csv_path, ref, ran, hypers, plan.steps_per_epoch)
    print(f"wrote {csv_path}  ({n} rows: step,epoch,group,hyper,reference, then each backend's held"
          " and applied values)")
    png_path = out_dir / "demo.png"
    from ..plot import plot_trace
    try:
        plot_trace(ref, png_path, hypers=hypers, title="optbridge demo: a PyTorch fine-tuning setup on every backend",
                   subtitle=_subtitle(description, plan, steps, "reference"),
                   steps_per_epoch=plan.steps_per_epoch, marks=marks, overlay=ran)
    except BackendUnavailable as e:  # no matplotlib: the demo's text and CSV still stand
        print(f"{PROG}: note: skipped {png_path}: {e}", file=sys.stderr)
    else:
        print(f"wrote {png_path}")
    print()
    print("next:")
    print(f"  optbridge plot {shown_path} --backend torch,megengine --out lr.png")
    print(f"  optbridge trace {shown_path} --backend torch --every 30")
    print(f"  optbridge trace {shown_path} --start 150 --steps 10     # a run resumed at update 150")
    return 0


def _reference(plan: Plan, steps: int, shown_path: str) -> Trace:
    try:
        result: Trace = _trace_function()(plan, steps)
    except OptbridgeError as e:
        raise CLIError(f"{shown_path}: {e}") from None
    return result


def _run(plan: Plan, steps: int, ref: Trace, backend: str) -> Outcome:
    """Trace on one backend and compare; failures become outcomes, never a crash."""
    from ..plot import differences
    t = time.perf_counter()
    try:
        tr = _trace_function()(plan, steps, backend=backend)
    except BackendUnavailable as e:
        return Outcome(backend, "unavailable", reason=str(e))
    except UnsupportedError as e:
        return Outcome(backend, "refused", time.perf_counter() - t, reason=str(e))
    except OptbridgeError as e:
        return Outcome(backend, "error", time.perf_counter() - t, reason=f"{type(e).__name__}: {e}")
    return Outcome(backend, "ok", time.perf_counter() - t, tr, differences(ref, tr))


def forms(tr: Trace) -> str:
    """``lr: native; optimizer: generated``: the forms a backend reported, per hyperparameter."""
    seen: dict[str, list[str]] = {}
    for f in tr.fidelity:
        if f.form not in seen.setdefault(f.hyper, []):
            seen[f.hyper].append(f.form)
    return "; ".join(f"{h}: {'/'.join(fs)}" for h, fs in seen.items()) or "-"


def _outcome_table(outcomes: Sequence[Outcome]) -> str:
    header = ["backend", "time", "worst difference to the reference", "forms"]
    rows = []
    for o in outcomes:
        if o.status == "ok":
            assert o.trace is not None
            worst = "; ".join(f"{d.hyper} ({d.source}): {_short(d)}" for d in o.diffs) or "-"
            rows.append([o.backend, f"{o.seconds:.1f} s", worst, forms(o.trace)])
        else:
            rows.append([o.backend, f"{o.seconds:.1f} s" if o.seconds else "-", o.status, "-"])
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(4)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _short(d: Difference) -> str:
    if d.unit == "relative":
        return "0 (bit-identical)" if d.worst == 0 else f"{d.worst:.2g} relative"
    return f"{d.worst:.4g} float32 ulps"


def _notes(outcomes: Sequence[Outcome]) -> None:
    """Where the worst differences are, the forms' details, and why some backends did not run."""
    notes = []
    for o in outcomes:
        if o.status == "ok" and o.trace is not None:
            for d in o.diffs:
                if d.worst:
                    notes.append(f"{o.backend}: worst {d.hyper} at update {d.step}, group {d.group}")
            details: dict[tuple[str, str], str] = {}
            for f in o.trace.fidelity:
                details.setdefault((f.hyper, f.form), f.detail)
            for (h, form), detail in details.items():
                notes.append(f"{o.backend} {h}: {form}: {_first_clause(detail, o.backend)}")
        elif o.status == "unavailable":
            notes.append(f"{o.backend}: unavailable: {o.reason}")
        else:
            notes.append(f"{o.backend}: {o.status}: {o.reason}")
    if notes:
        print("notes (ulps: float32 units in the last place of float32(reference); 0 = the nearest float32):")
        for n in notes:
            print(textwrap.fill(n, 78, initial_indent="  ", subsequent_indent="      "))


def _first_clause(detail: str, backend: str, limit: int = 150) -> str:
    """A fidelity detail shortened for the notes (the full text: ``optbridge trace --backend``)."""
    text = " ".join(detail.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return f"{text[: cut if cut > 0 else limit]} ... (in full: optbridge trace {EXAMPLE_PATH} --backend {backend})"


def _comparison_csv(path: Path, ref: Trace, others: Sequence[Trace], hypers: Sequence[str],
                    steps_per_epoch: int | None) -> int:
    """``step,epoch,group,hyper,reference,<b>,<b>.applied,...``: every value at full float64 precision."""
    import numpy as np

    from . import _numtext as nt
    from ._export import _csv_labels, atomic_binary
    columns: list[tuple[str, dict[str, Any]]] = [("reference", dict(ref.data))]
    for tr in others:
        columns.append((tr.backend, dict(tr.data)))
        if tr.applied:
            columns.append((f"{tr.backend}.applied", dict(tr.applied)))
    header = "step," + ("epoch," if steps_per_epoch else "") + "group,hyper," + ",".join(n for n, _ in columns)
    labels = _csv_labels(ref.groups, hypers)  # "group,hyper," per (hyper, group)
    per = labels.size
    ks = np.arange(ref.start, ref.start + ref.steps, dtype=np.int64)
    comma, newline = np.array([b","], dtype="S1"), np.array([b"\n"], dtype="S1")

    cols: list[np.ndarray] = [np.repeat(nt.as_field(nt.int_chars(ks)), per), comma]
    if steps_per_epoch:
        cols += [np.repeat(nt.as_field(nt.int_chars(ks // steps_per_epoch)), per), comma]
    cols.append(np.tile(labels, ref.steps))
    for i, (_, data) in enumerate(columns):
        block = np.stack([np.asarray(data[h], dtype=np.float64) if h in data else
                          np.full((len(ref.groups), ref.steps), np.nan) for h in hypers])  # (hypers, groups, steps)
        cols += ([comma] if i else []) + [nt.as_field(nt.float_chars(block.transpose(2, 0, 1)))]
    cols.append(newline)
    with atomic_binary(path) as f:
        f.write((header + "\n").encode("utf-8"))
        f.write(nt.compact(nt.records(cols)))
    return ref.steps * per

