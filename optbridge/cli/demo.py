"""``optbridge demo``: a guided tour on a bundled example."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from ..errors import OptbridgeError
from ._common import (
    DEFAULT_MAX_ROWS,
    PROG,
    CLIError,
    _clock,
    _description,
    _display_path,
    _Formatter,
    _load,
    _positive_int,
    _subtitle,
    _trace_function,
    example_path,
)
from .trace import _csv_text, _nice_step, format_table, phase_marks, table_rows
from .validate import describe_plan

_DEMO_EPILOG = """\
The demo plan is optbridge/examples/demo.yaml: fine-tuning with SGD, a backbone
at 0.1x the lr, a no-weight-decay group, 500 updates of linear warmup and a
cosine decay, 30 epochs of 100 updates. It prints a description and the trace,
and writes DIR/demo_trace.csv and DIR/demo.png.

examples:
  optbridge demo
  optbridge demo --out /tmp/optbridge-demo --steps 1000
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="a guided tour on a bundled example", formatter_class=_Formatter,
                       description="Describe, trace and plot the bundled fine-tuning example.",
                       epilog=_DEMO_EPILOG)
    p.add_argument("--out", "-o", metavar="DIR", default="out",
                   help="directory for demo_trace.csv and demo.png (default: out/)")
    p.add_argument("--steps", "-n", type=_positive_int, metavar="N",
                   help="number of optimizer updates (default: the example's 3000)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    with example_path("demo.yaml") as path:
        plan = _load(path)
        description = plan.description or _description(path)
        others = sorted(p.name for p in path.parent.glob("*.yaml") if p.name != "demo.yaml")
        shown_path = _display_path(path)
    steps = args.steps or plan.total_steps or 3000
    try:
        tr = _trace_function()(plan, steps)
    except OptbridgeError as e:
        raise CLIError(f"{shown_path}: {e}") from None
    hypers = list(tr)
    spe = plan.steps_per_epoch

    rule = "-" * 78
    print(f"optbridge demo: {shown_path}")
    print(rule)
    if description:
        print(textwrap.fill(description, 78))
        print()
    print(describe_plan(plan, steps))
    print(rule)
    marks = phase_marks(plan, steps, hypers)
    rows = table_rows(steps, None, marks, DEFAULT_MAX_ROWS)
    shown = "every step" if steps <= DEFAULT_MAX_ROWS else \
        f"every {_nice_step(steps / 10)} steps plus the phase boundaries"
    print(f"trace (reference backend, exact float64): {_clock(plan, steps)}; showing {shown}")
    print(format_table(tr, hypers, rows, spe))
    print(rule)

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out: {args.out} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "demo_trace.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        n = _csv_text(tr, hypers, spe, f)
    print(f"wrote {csv_path}  ({n} rows: step,epoch,group,hyper,value)")
    png_path = out_dir / "demo.png"
    from ..plot import plot_trace
    try:
        plot_trace(tr, png_path, hypers=hypers, title="optbridge demo: fine-tuning with warmup + cosine",
                   subtitle=_subtitle(description, plan, steps, tr.backend), steps_per_epoch=spe, marks=marks)
    except OptbridgeError as e:  # no matplotlib: the demo's text and CSV still stand
        print(f"{PROG}: note: skipped {png_path}: {e}", file=sys.stderr)
    else:
        print(f"wrote {png_path}")
    print()
    print("next:")
    print(f"  optbridge trace {shown_path} --every 100 --hyper lr")
    print(f"  optbridge plot {shown_path} --log --out demo_log.png")
    if others:
        print(f"  more examples in {_display_path(path.parent)}/: {', '.join(others)}")
    return 0
