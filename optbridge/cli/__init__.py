"""The ``optbridge`` command line.

Entry point :func:`main` (``optbridge`` console script, ``python -m optbridge``).
One module per command, each with ``add_parser(subparsers)`` and its ``cmd_*``
function:

* ``validate`` (:mod:`.validate`): check configs in any dialect and describe them;
* ``trace`` (:mod:`.trace`): per-step values of every scheduled hyperparameter;
* ``plot`` (:mod:`.plot`): the schedules as a PNG, several backends overlaid;
* ``demo`` (:mod:`.demo`): a bundled PyTorch setup carried to every framework;
* ``conform`` (:mod:`.conform`): the conformance suite on every backend;
* ``convert`` (:mod:`.convert`): MindSpore lr lists (alias of ``port --to mindspore --form list``);
* ``port`` (:mod:`.port`): a config as a runnable module for torch, MindSpore or MegEngine;
* ``lr-find`` (:mod:`optbridge.lrfind_cli`): the lr range test on a bundled example.

Shared pieces in :mod:`._common`; long traces streamed to CSV, JSON or ``.npy``
by :mod:`._export`, with :mod:`._numtext` formatting numbers in bulk. Every bad input ends with
exactly one line ``optbridge: error: <message>`` on stderr and exit status 2,
never a traceback. Importing this package is cheap: numpy, yaml and matplotlib
load inside the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..dialects import DIALECTS
from ..errors import OptbridgeError
from . import conform, convert, demo, plot, port, trace, validate
from ._common import (
    PROG,
    CLIError,
    _fail,
    _Formatter,
    _os_message,
    _Parser,
    _silence_stdout,
)
from .trace import format_table, phase_marks, table_rows
from .validate import describe_node, describe_plan

__all__ = ["main", "build_parser", "CLIError", "table_rows", "format_table", "phase_marks", "describe_plan",
           "describe_node"]


def _main_epilog() -> str:
    """The top-level help's epilog; the dialects come from the loader's table (:data:`optbridge.dialects.DIALECTS`)."""
    others = [name for name in DIALECTS if name != "optbridge"]
    named = ", ".join(others[:-1]) + " or " + others[-1] if len(others) > 1 else "".join(others)
    return f"""\
examples:
  optbridge demo                                   # a PyTorch setup on every backend: table, CSV, overlay PNG
  optbridge validate configs/*.yaml                # check configs in any dialect
  optbridge trace plan.yaml --steps 1000           # per-step values as a table
  optbridge trace plan.yaml --format csv --out lr.csv
  optbridge plot plan.yaml --out plan.png --log

Configs may be written in the canonical IR (optbridge: 1) or in a framework's or
library's dialect (dialect: {named}); without a dialect: key,
the dialect is told from the document's keys. JSON, YAML or TOML.
Every error is one line "optbridge: error: ..." on stderr with exit status 2.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools and tests)."""
    parser = _Parser(
        prog=PROG, formatter_class=_Formatter, epilog=_main_epilog(),
        description="Translate and inspect optimizer / LR-schedule setups for PyTorch, MindSpore and MegEngine.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True,
                                parser_class=_Parser)
    for command in (validate, trace, plot, demo, conform, convert, port):
        command.add_parser(sub)
    from .. import lrfind_cli  # `optbridge lr-find` (imports no framework)

    lrfind_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(args_list)
        except SystemExit as e:  # --help / --version
            return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 2
        return int(args.func(args) or 0)
    except CLIError as e:
        return _fail(str(e))
    except OptbridgeError as e:
        return _fail(str(e))
    except BrokenPipeError:  # `optbridge trace ... | head`
        _silence_stdout()
        return 0
    except OSError as e:
        return _fail(_os_message(e))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("OPTBRIDGE_TRACEBACK"):
            raise
        return _fail(f"internal error: {type(e).__name__}: {e} (set OPTBRIDGE_TRACEBACK=1 for the traceback)",
                     status=1)
