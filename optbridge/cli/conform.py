"""``optbridge conform``: the conformance suite (the runner lives in ``optbridge_conformance``)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import _Formatter, _non_negative_int, _positive_int

_CONFORM_EPILOG = """\
CASES are case ids, globs over ids ('cosine-*'), 'family:NAME', case files
(.yaml), or plain config files (canonical or any dialect, run for --steps N
updates); none runs every case in conformance/cases/ ('family:random' with
--random N runs only the random plans). Each case runs on each backend and is
compared with the reference per step, group and hyperparameter. A backend that
steps the real optimizer runs at most its budget of updates per case (budget.yaml;
every shortened run is listed with the reason); --no-budget runs them in full.

statuses: pass, fail, xfail (a known deviation in conformance/xfail/), xpass (a
known deviation that passes: the ledger is stale), unsupported (the backend
refuses with a reason), error, skip (the case excludes the backend, with a
reason), unavailable (the backend cannot run here: its framework or worker
interpreter is missing; the reason says how to set it up).

exit status: 0; 1 on any fail, xpass or error (and unavailable with
--require-all); 2 on bad input.

examples:
  optbridge conform                                   # every case, every backend
  optbridge conform --backends reference,torch 'cosine-*'
  optbridge conform --out out/conformance --jobs 2    # + report.md, report.json, PNGs
  optbridge conform --require-all --random 50         # CI: all backends, 50 random plans
  optbridge conform --write-docs docs/conformance.md  # regenerate the matrix in the docs
  optbridge conform my_config.yaml --steps 3000 --plot   # your config, PNGs of every case
  optbridge conform --list
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("conform", help="run the conformance suite on every backend", formatter_class=_Formatter,
                       description="Run conformance cases on every backend and compare each with the reference.",
                       epilog=_CONFORM_EPILOG)
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help="case ids, globs, family:NAME, case files or config files (default: all cases)")
    p.add_argument("--steps", "-n", type=_positive_int, metavar="N",
                   help="updates to run for config files (default: the plan's total_steps)")
    p.add_argument("--metrics", metavar="FILE", help="plateau metric series for config files (.txt, .json, .npy)")
    p.add_argument("--backends", "-b", metavar="B[,B...]",
                   help="backends to run (default: reference, torch, mindspore-list, mindspore-cell, "
                        "mindspore-experimental, megengine)")
    p.add_argument("--out", "-o", metavar="DIR", help="write report.md, report.json and PNGs of failing and "
                                                       "expected-failing cases to DIR")
    p.add_argument("--jobs", "-j", type=_positive_int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--require-all", action="store_true", help="an unavailable backend fails the run (CI)")
    p.add_argument("--strict-unsupported", action="store_true",
                   help="an unsupported result not listed in conformance/xfail/ fails the run")
    p.add_argument("--max-steps", type=_positive_int, metavar="N", help="cap every case at N steps (a quick run)")
    p.add_argument("--random", type=_non_negative_int, default=0, metavar="N",
                   help="also run N hypothesis-generated plans (default 0)")
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                   help="seed of the random plans (default 0)")
    p.add_argument("--random-steps", type=_positive_int, default=120, metavar="N",
                   help="at most N steps per random plan (default 120)")
    p.add_argument("--xfail", action="append", metavar="FILE", help="extra expected-deviation file (repeatable)")
    p.add_argument("--write-docs", metavar="PATH", help="write the conformance matrix (docs/conformance.md)")
    p.add_argument("--no-plots", action="store_true", help="with --out: skip the PNGs")
    p.add_argument("--plot", action="store_true",
                   help="a PNG of every case, passes too (into --out DIR/plots, default conform-out/plots)")
    p.add_argument("--no-budget", action="store_true",
                   help="run every case in full on every backend (no per-backend step budget)")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar; only problems and the summary")
    p.set_defaults(func=cmd_conform)


def cmd_conform(args: argparse.Namespace) -> int:
    from optbridge_conformance.command import conform  # numpy, yaml: only here
    return conform(args)
