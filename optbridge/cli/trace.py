"""``optbridge trace``: per-step values of every scheduled hyperparameter, as a table, CSV, JSON or npy."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._common import (
    DEFAULT_MAX_ROWS,
    CLIError,
    _clock,
    _compute,
    _Formatter,
    _load,
    _non_negative_int,
    _output,
    _positive_int,
    _prepare,
    _trace_options,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..ir import Node
    from ..plan import Plan
    from ..tracing import Trace

_TRACE_EPILOG = """\
output formats (--format):
  table  readable columns step[, epoch], lr[group], ... (%.6g); long traces show
         every K-th step (--every K; default about a tenth, plus phase boundaries)
         and, past --max-rows rows, the first and last rows around a "..." row
  csv    tidy long format, one row per value:
         step,epoch,group,hyper,value   (epoch = step // steps_per_epoch; the
         column is left out when the plan has no steps_per_epoch); values are
         written with full float64 precision
  json   {"config", "backend", "steps", "step_unit", "steps_per_epoch", "groups",
          "hypers", "values": {hyper: [[value per step] per group]}, "notes"}
  npy    numpy arrays of shape (groups, steps), float64, needs --out:
         one hyperparameter -> exactly PATH; several -> one file per
         hyperparameter, PATH without ".npy" + ".<hyper>.npy"
         (out.npy -> out.lr.npy, out.momentum.npy); the group order is printed

metrics (--metrics, for plateau schedules): a text file with one number per line
(blank lines and # comments ignored), a .json list of numbers, or a .npy array.

examples:
  optbridge trace plan.yaml --steps 3000
  optbridge trace plan.yaml --steps 3000 --every 100 --hyper lr
  optbridge trace plan.yaml --steps 3000 --format csv --out trace.csv
  optbridge trace plan.yaml --format json --out trace.json      # steps = the plan's total_steps
  optbridge trace plan.yaml --steps 500 --format npy --out trace.npy
  optbridge trace plateau.yaml --steps 100 --metrics val_loss.txt
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("trace", help="per-step values of every scheduled hyperparameter",
                       formatter_class=_Formatter, epilog=_TRACE_EPILOG,
                       description="Evaluate the plan's schedules for every optimizer update and print "
                                   "or write the values per group.")
    p.add_argument("config", metavar="CONFIG", help="config file")
    _trace_options(p)
    p.add_argument("--every", type=_positive_int, metavar="K",
                   help="table: show every K-th step (default: about a tenth of the steps plus phase "
                        "boundaries; all steps for short traces)")
    p.add_argument("--max-rows", type=_non_negative_int, default=DEFAULT_MAX_ROWS, metavar="R",
                   help=f"table: at most R rows, the first and last around '...' (default {DEFAULT_MAX_ROWS}; "
                        "0: no limit)")
    p.add_argument("--format", "-f", choices=("table", "csv", "json", "npy"), default="table",
                   help="output format (default: table)")
    p.add_argument("--out", "-o", metavar="PATH", help="write to PATH instead of stdout (required for npy)")
    p.set_defaults(func=cmd_trace)


def cmd_trace(args: argparse.Namespace) -> int:
    plan = _load(args.config)
    if args.format == "npy" and not args.out:
        raise CLIError("--format npy needs --out PATH (binary arrays are not written to stdout)")
    tr, hypers, steps = _compute(args, plan)
    spe = plan.steps_per_epoch
    if args.format == "table":
        marks = phase_marks(plan, steps, hypers) if args.every is None else []
        rows = table_rows(steps, args.every, marks, args.max_rows)
        shown = sum(r is not None for r in rows)
        head = [f"# {args.config}: {len(tr.groups)} group(s), {_clock(plan, steps)}, backend {tr.backend}"]
        if shown < steps:
            if args.every is None:
                how = "a round stride plus the phase boundaries"
            else:
                how = "every step" if args.every == 1 else f"every {args.every} steps"
            if None in rows:
                how += f", the first {args.max_rows // 2} and last {args.max_rows - args.max_rows // 2} of them"
            head.append(f"# showing {shown} of {steps} steps ({how}; --every 1 --max-rows 0 for all)")
        head += [f"# fidelity: {f}" for f in tr.fidelity]
        text = "\n".join(head) + "\n" + format_table(tr, hypers, rows, spe) + "\n"
        with _output(args.out) as f:
            f.write(text)
    elif args.format == "csv":
        with _output(args.out) as f:
            n = _csv_text(tr, hypers, spe, f)
        if args.out:
            print(f"wrote {args.out}: {n} rows (step,{'epoch,' if spe else ''}group,hyper,value)")
    elif args.format == "json":
        import json
        with _output(args.out) as f:
            json.dump(_json_doc(tr, hypers, plan, str(args.config)), f)
            f.write("\n")
        if args.out:
            print(f"wrote {args.out}")
    else:  # npy
        import numpy as np
        for h, p in zip(hypers, _npy_paths(args.out, hypers)):
            with open(_prepare(p), "wb") as fb:
                np.save(fb, np.ascontiguousarray(tr[h], dtype=np.float64))
            print(f"wrote {p}: {h}, shape {tr[h].shape} = (groups, steps)")
        print(f"groups (rows, in order): {', '.join(tr.groups)}")
    return 0

def phase_marks(plan: Plan, steps: int, hypers: Sequence[str] | None = None) -> list[int]:
    """Updates where some schedule enters a new phase (warmup end, milestones, restarts, ...).

    For display: each node says where its phases start (:meth:`optbridge.ir.Node.marks`).
    """
    spe = plan.steps_per_epoch or 1
    nodes: list[Node] = [n for h, n in plan.schedule.items() if hypers is None or h in hypers]
    nodes += [n for g in plan.groups for h, n in g.schedule.items() if hypers is None or h in hypers]
    out: set[int] = set()
    for node in nodes:
        out.update(node.marks(steps, plan.step_unit, spe)[:10_000])
    return sorted(m for m in out if 0 < m < steps)

def _nice_step(x: float) -> int:
    """The largest of 1, 2, 2.5, 5 x 10^n that is <= x (at least 1)."""
    if x < 1:
        return 1
    exp = 10 ** int(math.floor(math.log10(x)))
    best = 1
    for m in (1, 2, 2.5, 5, 10):
        v = m * exp
        if v <= x and float(v).is_integer():
            best = int(v)
    return max(best, 1)

def table_rows(steps: int, every: int | None = None, marks: Sequence[int] = (),
               max_rows: int = DEFAULT_MAX_ROWS) -> list[int | None]:
    """The steps a table shows, with ``None`` for the "..." row.

    ``every=None`` picks a round stride of about a tenth of the steps (all steps
    when there are at most ``max_rows``) and adds the phase boundaries ``marks``.
    The first and last step are always shown.
    """
    if every is None:
        auto = steps <= (max_rows or DEFAULT_MAX_ROWS)
        every = 1 if auto else _nice_step(steps / 10)
        extra = set() if every == 1 else {m for m in marks if 0 < m < steps}
    else:
        extra = set()
    rows = sorted(set(range(0, steps, every)) | {steps - 1} | extra)
    if max_rows and len(rows) > max_rows:
        head = max_rows // 2
        tail = max_rows - head
        return [*rows[:head], None, *rows[len(rows) - tail:]]
    return list(rows)

def format_table(tr: Trace, hypers: Sequence[str], rows: Sequence[int | None],
                 steps_per_epoch: int | None = None) -> str:
    """Right-aligned columns: step[, epoch], then ``hyper[group]`` per hyper per group (%.6g)."""
    header = ["step"] + (["epoch"] if steps_per_epoch else [])
    columns = []
    for h in hypers:
        arr = tr[h]
        for g, name in enumerate(tr.groups):
            header.append(f"{h}[{name}]")
            columns.append(arr[g])
    body: list[list[str]] = []
    for r in rows:
        if r is None:
            body.append(["..."] * len(header))
            continue
        cells = [str(r)] + ([str(r // steps_per_epoch)] if steps_per_epoch else [])
        cells += ["%.6g" % float(c[r]) for c in columns]
        body.append(cells)
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) if body else len(header[i])
              for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)

def _csv_text(tr: Trace, hypers: Sequence[str], steps_per_epoch: int | None, out: IO[str]) -> int:
    """Write the tidy CSV; returns the number of data rows."""
    import csv
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["step"] + (["epoch"] if steps_per_epoch else []) + ["group", "hyper", "value"])
    arrays = [(h, tr[h].tolist()) for h in hypers]
    n = 0
    for k in range(tr.steps):
        lead = [k, k // steps_per_epoch] if steps_per_epoch else [k]
        for h, arr in arrays:
            for g, name in enumerate(tr.groups):
                w.writerow([*lead, name, h, repr(float(arr[g][k]))])
                n += 1
    return n

def _json_doc(tr: Trace, hypers: Sequence[str], plan: Plan, config: str) -> dict[str, Any]:
    return {
        "config": config,
        "backend": tr.backend,
        "steps": tr.steps,
        "step_unit": plan.step_unit,
        "steps_per_epoch": plan.steps_per_epoch,
        "groups": list(tr.groups),
        "hypers": list(hypers),
        "values": {h: tr[h].tolist() for h in hypers},
        "fidelity": [str(f) for f in tr.fidelity],
    }

def _npy_paths(out: str, hypers: Sequence[str]) -> list[Path]:
    p = Path(out)
    if len(hypers) == 1:
        return [p]
    stem = p.name[:-4] if p.name.lower().endswith(".npy") else p.name
    return [p.with_name(f"{stem}.{h}.npy") for h in hypers]
