"""``optbridge trace``: per-step values of every scheduled hyperparameter, as a table, CSV, JSON or npy."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import OptbridgeError
from ._common import (
    DEFAULT_MAX_ROWS,
    CLIError,
    _backend_names,
    _Formatter,
    _hypers,
    _load,
    _load_metrics,
    _non_negative_int,
    _output,
    _positive_int,
    _prepare,
    _steps,
    _trace_options,
    _window_clock,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..ir import Node
    from ..plan import Plan
    from ..tracing import Trace
    from ._export import Windows

_TRACE_EPILOG = """\
output formats (--format):
  table  readable columns step[, epoch], lr[group], ... (%.6g); long traces show
         every K-th step (--every K; default about a tenth, plus phase boundaries)
         and, past --max-rows rows, the first and last rows around a "..." row
  csv    tidy long format, one row per value:
         step,epoch,group,hyper,value   (epoch = step // steps_per_epoch; the
         column is left out when the plan has no steps_per_epoch); values are
         written with full float64 precision (they read back bit for bit)
  json   {"config", "backend", "start", "steps", "step_unit", "steps_per_epoch",
          "groups", "hypers", "values": {hyper: [[value per step] per group]},
          "fidelity"}
  npy    numpy arrays of shape (groups, steps), float64, needs --out:
         one hyperparameter -> exactly PATH; several -> one file per
         hyperparameter, PATH without ".npy" + ".<hyper>.npy"
         (out.npy -> out.lr.npy, out.momentum.npy); the group order is printed

--start K traces updates K, K+1, ... (what a run resumed at update K uses); the
table, CSV and JSON label the real update numbers. csv, json and npy are
streamed: the reference backend is evaluated a window at a time, so memory stays
bounded whatever the number of steps.

metrics (--metrics, for plateau schedules): a text file with one number per line
(blank lines and # comments ignored), a .json list of numbers, or a .npy array.

examples:
  optbridge trace plan.yaml --steps 3000
  optbridge trace plan.yaml --steps 3000 --every 100 --hyper lr
  optbridge trace plan.yaml --start 2000 --steps 100      # a run resumed at update 2000
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
    backends = _backend_names(args)
    if len(backends) > 1:
        raise CLIError(f"--backend: trace takes one backend, got {', '.join(backends)} "
                       "(optbridge plot --backend a,b,c overlays several)")
    steps = _steps(args, plan)
    start = int(args.start)
    hypers = _hypers(args, plan)
    metrics = _load_metrics(args.metrics) if args.metrics else None
    from ._export import Windows
    try:
        win = Windows(plan, steps, start=start, backend=backends[0], metrics=metrics, hypers=hypers)
    except OptbridgeError as e:
        raise CLIError(f"{args.config}: {e}") from None
    if args.out:
        _prepare(args.out)
    try:
        _write(args, plan, win, steps, start)
    except OptbridgeError as e:  # a schedule failing mid-way (the files are not left behind)
        raise CLIError(f"{args.config}: {e}") from None
    return 0


def _write(args: argparse.Namespace, plan: Plan, win: Windows, steps: int, start: int) -> None:
    from . import _export
    spe = plan.steps_per_epoch
    hypers = list(win.hypers)
    if args.format == "table":
        text = _table_text(args, plan, win, steps, start)
        with _output(args.out) as f:
            f.write(text)
    elif args.format == "csv":
        with _export.atomic_binary(args.out) as fb:
            n = _export.write_csv(win, fb, spe, hypers)
        if args.out:
            print(f"wrote {args.out}: {n} rows (step,{'epoch,' if spe else ''}group,hyper,value)")
    elif args.format == "json":
        head = {"config": str(args.config), "backend": win.backend, "start": start, "steps": steps,
                "step_unit": plan.step_unit, "steps_per_epoch": spe, "groups": list(win.groups),
                "hypers": hypers}
        with _export.atomic_binary(args.out) as fb:
            _export.write_json(win, fb, head, {"fidelity": [str(f) for f in win.fidelity]})
        if args.out:
            print(f"wrote {args.out}")
    else:  # npy
        paths = _npy_paths(args.out, hypers)
        _export.write_npy(win, paths)
        for h, p in zip(hypers, paths):
            print(f"wrote {p}: {h}, shape ({len(win.groups)}, {steps}) = (groups, steps)"
                  + (f", updates {start}..{start + steps - 1}" if start else ""))
        print(f"groups (rows, in order): {', '.join(win.groups)}")


def _table_text(args: argparse.Namespace, plan: Plan, win: Windows, steps: int, start: int) -> str:
    spe = plan.steps_per_epoch
    hypers = list(win.hypers)
    marks = phase_marks(plan, steps, hypers, start=start) if args.every is None else []
    rows = table_rows(steps, args.every, marks, args.max_rows, start=start)
    shown = [r for r in rows if r is not None]
    head = [f"# {args.config}: {len(win.groups)} group(s), {_window_clock(plan, start, steps)}, "
            f"backend {win.backend}"]
    if len(shown) < steps:
        if args.every is None:
            how = "a round stride plus the phase boundaries"
        else:
            how = "every step" if args.every == 1 else f"every {args.every} steps"
        if None in rows:
            how += f", the first {args.max_rows // 2} and last {args.max_rows - args.max_rows // 2} of them"
        head.append(f"# showing {len(shown)} of {steps} steps ({how}; --every 1 --max-rows 0 for all)")
    head += [f"# fidelity: {f}" for f in win.fidelity]
    if len(shown) > _BUFFERED_ROWS:  # a long table: stream it, fixed column widths
        return "\n".join(head) + "\n" + "\n".join(_streamed_table(win, hypers, shown, spe)) + "\n"
    values = win.at(shown)
    header, body = _table_cells(win.groups, hypers, rows, lambda i, h, g: values[h][g, i], spe)
    return "\n".join(head) + "\n" + _aligned(header, body) + "\n"


#: Tables with more rows than this are streamed window by window with fixed column widths.
_BUFFERED_ROWS = 5000


def _table_cells(groups: Sequence[str], hypers: Sequence[str], rows: Sequence[int | None],
                 value: Any, steps_per_epoch: int | None) -> tuple[list[str], list[list[str]]]:
    """Header and cells; ``value(i, hyper, group_index)`` is the value of the i-th shown row."""
    header = ["step"] + (["epoch"] if steps_per_epoch else [])
    header += [f"{h}[{name}]" for h in hypers for name in groups]
    body: list[list[str]] = []
    i = 0
    for r in rows:
        if r is None:
            body.append(["..."] * len(header))
            continue
        cells = [str(r)] + ([str(r // steps_per_epoch)] if steps_per_epoch else [])
        cells += [f"{float(value(i, h, g)):.6g}" for h in hypers for g in range(len(groups))]
        body.append(cells)
        i += 1
    return header, body


def _aligned(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) if body else len(header[i])
              for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def _streamed_table(win: Windows, hypers: Sequence[str], shown: Sequence[int],
                    steps_per_epoch: int | None) -> Iterator[str]:
    header, _ = _table_cells(win.groups, hypers, [], None, steps_per_epoch)
    widths = [max(len(h), 12) for h in header]
    yield "  ".join(h.rjust(w) for h, w in zip(header, widths))
    wanted = set(shown)
    for tr in win:
        cols = [c for c in range(tr.steps) if tr.start + c in wanted]
        if not cols:
            continue
        _, body = _table_cells(win.groups, hypers, [tr.start + c for c in cols],
                               lambda i, h, g, tr=tr, cols=cols: tr[h][g, cols[i]], steps_per_epoch)
        for b in body:
            yield "  ".join(c.rjust(w) for c, w in zip(b, widths))


def phase_marks(plan: Plan, steps: int, hypers: Sequence[str] | None = None, *, start: int = 0) -> list[int]:
    """Updates in ``(start, start + steps)`` where some schedule enters a new phase (warmup end, milestones, ...).

    For display: each node says where its phases start (:meth:`optbridge.ir.Node.marks`).
    """
    spe = plan.steps_per_epoch or 1
    end = start + steps
    nodes: list[Node] = [n for h, n in plan.schedule.items() if hypers is None or h in hypers]
    nodes += [n for g in plan.groups for h, n in g.schedule.items() if hypers is None or h in hypers]
    out: set[int] = set()
    for node in nodes:
        out.update(m for m in node.marks(end, plan.step_unit, spe) if m > start)
    return sorted(m for m in out if start < m < end)[:10_000]

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
               max_rows: int = DEFAULT_MAX_ROWS, *, start: int = 0) -> list[int | None]:
    """The updates a table shows (``start .. start + steps - 1``), with ``None`` for the "..." row.

    ``every=None`` picks a round stride of about a tenth of the steps (all steps
    when there are at most ``max_rows``) and adds the phase boundaries ``marks``
    (update numbers). The first and last update are always shown; with a stride,
    the rows are the multiples of it (and the first one), as a run's log would show.
    """
    end = start + steps
    if every is None:
        auto = steps <= (max_rows or DEFAULT_MAX_ROWS)
        every = 1 if auto else _nice_step(steps / 10)
        extra = set() if every == 1 else {m for m in marks if start < m < end}
    else:
        extra = set()
    first = -(-start // every) * every
    rows = sorted(set(range(first, end, every)) | {start, end - 1} | extra)
    if max_rows and len(rows) > max_rows:
        head = max_rows // 2
        tail = max_rows - head
        return [*rows[:head], None, *rows[len(rows) - tail:]]
    return list(rows)

def format_table(tr: Trace, hypers: Sequence[str], rows: Sequence[int | None],
                 steps_per_epoch: int | None = None) -> str:
    """Right-aligned columns: step[, epoch], then ``hyper[group]`` per hyper per group (%.6g).

    ``rows`` are update numbers (``tr.start`` and on) or None for a "..." row.
    """
    cols = [r - tr.start for r in rows if r is not None]
    header, body = _table_cells(tr.groups, hypers, rows, lambda i, h, g: tr[h][g, cols[i]], steps_per_epoch)
    return _aligned(header, body)


def _csv_text(tr: Trace, hypers: Sequence[str], steps_per_epoch: int | None, out: IO[str]) -> int:
    """Write the tidy CSV of a whole trace to a text stream; returns the number of data rows."""
    import io

    from ._export import write_csv
    buf = io.BytesIO()
    n = write_csv([tr], buf, steps_per_epoch, hypers)
    out.write(buf.getvalue().decode("utf-8"))
    return n


def _npy_paths(out: str, hypers: Sequence[str]) -> list[Path]:
    p = Path(out)
    if len(hypers) == 1:
        return [p]
    stem = p.name[:-4] if p.name.lower().endswith(".npy") else p.name
    return [p.with_name(f"{stem}.{h}.npy") for h in hypers]
