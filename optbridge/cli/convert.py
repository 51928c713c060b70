"""``optbridge convert``: a plan's per-group lists and an optimizer builder for a framework."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import CLIError, _Formatter, _load, _positive_int

_CONVERT_EPILOG = """\
Writes, for a MindSpore target (--to mindspore):
  DIR/<group>.npy       float32 lr list per group (the exact reference values rounded once to float32)
  DIR/lr.json           {"total_steps", "optimizer", "options", "groups": {name: {"file", "lr", "values"}}}
  DIR/build_optimizer.py  build_optimizer(net) -> (optimizer, after_step): the nn optimizer over the net's
                        parameters with those lists per group (AdamW: the experimental AdamW, lr assigned
                        by after_step()); needs mindspore and numpy only
CONFIG may be in any dialect (canonical, torch, mindspore).

examples:
  optbridge convert torch_config.yaml --to mindspore --total-steps 10000 --out ms_lr/
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="write a plan's lr lists and an optimizer builder for a framework",
                       formatter_class=_Formatter, epilog=_CONVERT_EPILOG,
                       description="Convert a config into per-group lr lists and a runnable optimizer builder.")
    p.add_argument("config", metavar="CONFIG", help="config file")
    p.add_argument("--to", required=True, choices=("mindspore",), help="target framework")
    p.add_argument("--total-steps", "-n", type=_positive_int, metavar="N",
                   help="list length (default: the plan's total_steps)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=cmd_convert)

def cmd_convert(args: argparse.Namespace) -> int:
    plan = _load(args.config)
    steps = args.total_steps or plan.total_steps
    if steps is None:
        raise CLIError("--total-steps N is required (the plan sets no total_steps)")
    from optbridge_adapters.mindspore.convert import (
        write,  # numpy and optbridge only: no MindSpore needed here
    )
    written = write(plan, steps, args.out, source=Path(args.config).name)
    for path in written:
        print(f"wrote {path}")
    return 0
