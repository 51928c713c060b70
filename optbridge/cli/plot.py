"""``optbridge plot``: the schedules of every group as a PNG."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import (
    _compute,
    _description,
    _Formatter,
    _load,
    _prepare,
    _subtitle,
    _trace_options,
)
from .trace import phase_marks

_PLOT_EPILOG = """\
One subplot per scheduled hyperparameter, one line per group, x = optimizer
update (with an epoch axis on top when the plan sets steps_per_epoch); dotted
vertical lines mark phase boundaries. Needs matplotlib (pip install matplotlib).

examples:
  optbridge plot plan.yaml                         # writes plan.png (steps = total_steps)
  optbridge plot plan.yaml --steps 3000 --out lr.png --log
  optbridge plot plan.yaml --steps 3000 --hyper lr --backend reference
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="plot the schedules to a PNG", formatter_class=_Formatter,
                       description="Plot every scheduled hyperparameter of every group.", epilog=_PLOT_EPILOG)
    p.add_argument("config", metavar="CONFIG", help="config file")
    _trace_options(p)
    p.add_argument("--out", "-o", metavar="FILE.png", help="image to write (default: CONFIG's name with .png, "
                                                            "in the current directory)")
    p.add_argument("--log", action="store_true",
                   help="log-scale y axes (those whose values span less than a factor of 10 stay linear)")
    p.add_argument("--title", help="figure title (default: the config's file name)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    plan = _load(args.config)
    tr, hypers, steps = _compute(args, plan)
    out = args.out or (Path(args.config).stem + ".png")
    title = args.title or Path(args.config).name
    from ..plot import plot_trace
    plot_trace(tr, _prepare(out), hypers=hypers, title=title,
               subtitle=_subtitle(plan.description or _description(args.config), plan, steps, tr.backend),
               log=args.log, steps_per_epoch=plan.steps_per_epoch, marks=phase_marks(plan, steps, hypers))
    print(f"wrote {out}")
    return 0
