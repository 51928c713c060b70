"""``optbridge plot``: the schedules of every group as a PNG, for one backend or several overlaid."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OptbridgeError
from ._common import (
    CLIError,
    _backend_names,
    _description,
    _Formatter,
    _hypers,
    _load,
    _load_metrics,
    _prepare,
    _steps,
    _subtitle,
    _trace_function,
    _trace_options,
)
from .trace import phase_marks

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Plan
    from ..tracing import Trace

_PLOT_EPILOG = """\
One panel per scheduled hyperparameter, one line per group, x = optimizer
update (with an epoch axis on top when the plan sets steps_per_epoch); dotted
vertical lines mark phase boundaries. More than 8 groups are coloured by their
peak value (colour bar) and folded in the legend by schedule shape (groups
equal up to their base value). Needs matplotlib (pip install matplotlib).

--backend a,b,c overlays backends: the reference first (added when not named),
the others dashed over it (the lr they really applied, where measured), and
under each panel their difference to the reference per update: relative for
float64 backends (torch), in float32 ulps from float32(reference) for float32
backends (MindSpore, MegEngine).

examples:
  optbridge plot plan.yaml                         # writes plan.png (steps = total_steps)
  optbridge plot plan.yaml --steps 3000 --out lr.png --log
  optbridge plot plan.yaml --steps 300 --backend reference,torch,megengine
  optbridge plot plan.yaml --start 2000 --steps 500    # a run resumed at update 2000
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="plot the schedules to a PNG (several backends: overlaid)",
                       formatter_class=_Formatter,
                       description="Plot every scheduled hyperparameter of every group.", epilog=_PLOT_EPILOG)
    p.add_argument("config", metavar="CONFIG", help="config file")
    _trace_options(p)
    p.add_argument("--out", "-o", metavar="FILE.png", help="image to write (default: CONFIG's name with .png, "
                                                            "in the current directory)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--log", action="store_const", const=True, dest="log",
                       help="log-scale y axes (those whose values span less than a factor of 10 stay linear)")
    scale.add_argument("--linear", action="store_const", const=False, dest="log",
                       help="linear y axes (default: linear, except many groups spanning three decades)")
    p.add_argument("--title", help="figure title (default: the config's file name)")
    p.set_defaults(func=cmd_plot, log=None)


def cmd_plot(args: argparse.Namespace) -> int:
    plan = _load(args.config)
    backends = _backend_names(args)
    if len(backends) > 1 and "reference" not in backends:
        backends.insert(0, "reference")
    elif "reference" in backends:
        backends.remove("reference")
        backends.insert(0, "reference")
    steps = _steps(args, plan)
    hypers = _hypers(args, plan)
    metrics = _load_metrics(args.metrics) if args.metrics else None
    traces = [_trace(args, plan, b, steps, metrics) for b in backends]
    out = args.out or (Path(args.config).stem + ".png")
    title = args.title or Path(args.config).name
    shown = hypers if hypers is not None else list(traces[0])
    description = plan.description or _description(args.config)
    backend_note = traces[0].backend if len(traces) == 1 else " vs ".join(backends)
    from ..plot import plot_trace
    try:
        plot_trace(traces[0], _prepare(out), hypers=shown, title=title,
                   subtitle=_subtitle(description, plan, steps, backend_note, args.start),
                   log=args.log, steps_per_epoch=plan.steps_per_epoch,
                   marks=phase_marks(plan, steps, shown, start=args.start), overlay=traces[1:])
    except OptbridgeError as e:
        raise CLIError(f"{args.config}: {e}") from None
    print(f"wrote {out}")
    if len(traces) > 1:
        from ..plot import differences
        for tr in traces[1:]:
            for d in differences(traces[0], tr, shown):
                print(f"  {tr.backend} {d.hyper} ({d.source}): {d.describe()}")
    return 0


def _trace(args: argparse.Namespace, plan: Plan, backend: str, steps: int, metrics: Any) -> Trace:
    try:
        result: Trace = _trace_function()(plan, steps, backend=backend, metrics=metrics, start=args.start)
    except OptbridgeError as e:
        raise CLIError(f"{args.config}: {e}") from None
    return result
