"""``optbridge convert``: the MindSpore list port (an alias of ``optbridge port --to mindspore --form list``)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import _Formatter, _positive_int
from .port import run_port

_CONVERT_EPILOG = """\
`optbridge convert CONFIG --to mindspore --out DIR` is `optbridge port CONFIG --to mindspore --form list
--out DIR`: DIR/optim_mindspore.py builds the optimizer with a float32 lr list per group (the reference's
values rounded once, as MindSpore stores a list), from the float64 tables in DIR/tables/; DIR/port.json
describes them. See `optbridge port --help` for everything the module holds and the other forms.

examples:
  optbridge convert torch_config.yaml --to mindspore --total-steps 10000 --out ms_lr/
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="MindSpore lr lists and optimizer module (alias of port --form list)",
                       formatter_class=_Formatter, epilog=_CONVERT_EPILOG,
                       description="Port a config to MindSpore with per-group lr lists (optbridge port --form list).")
    p.add_argument("config", metavar="CONFIG", help="config file (any dialect)")
    p.add_argument("--to", required=True, choices=("mindspore",), help="target framework")
    p.add_argument("--total-steps", "-n", type=_positive_int, metavar="N",
                   help="list length (default: the plan's total_steps, or where its schedules end)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    print(run_port(args, form="list"))
    return 0
