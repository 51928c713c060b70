"""``optbridge lr-find``: the lr range test on a bundled example, in any of the three frameworks.

:func:`add_parser` registers the command on the CLI's subparsers; :func:`run`
executes it. The example is each runner's ``example()``: the same tiny MLP, plain
SGD and synthetic regression batches built from :mod:`optbridge.lrfind_example`,
so the three frameworks print the same curve (to float32 rounding). Importing this
module imports no framework and no numpy.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from .errors import BackendUnavailable, ConfigError

__all__ = ["add_parser", "run"]

_EPILOG = """\
The example: an 8 -> 32 -> 1 tanh MLP, plain SGD, MSE on 16 synthetic batches of 64
(deterministic from --seed). The lr grows from --start-lr to --end-lr over --steps
updates; the test stops when the smoothed loss exceeds --diverge x its best. With
--out DIR it writes DIR/lr_find.json, DIR/lr_find.csv and DIR/lr_find.png.
MegEngine runs in its own Python 3.10 env: .venv-mge/bin/python -m optbridge lr-find --framework megengine

examples:
  optbridge lr-find
  optbridge lr-find --framework mindspore --out out/
  optbridge lr-find --start-lr 1e-5 --end-lr 1 --steps 200 --mode linear
"""


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``lr-find`` on ``subparsers`` (the CLI's ``add_subparsers()`` object)."""
    p = subparsers.add_parser("lr-find", help="lr range test on a bundled example (torch, mindspore, megengine)",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
                              description="Run an lr range test on a tiny deterministic model and suggest an lr.")
    p.add_argument("--framework", choices=("torch", "mindspore", "megengine"), default="torch",
                   help="framework to run the example in (default: torch)")
    p.add_argument("--start-lr", type=_float, default=1e-4, help="lr of the first update (default 1e-4)")
    p.add_argument("--end-lr", type=_float, default=10.0, help="lr of the last update (default 10)")
    p.add_argument("--steps", "-n", type=_int, default=100, help="optimizer updates (default 100)")
    p.add_argument("--mode", choices=("exp", "linear"), default="exp", help="ramp shape (default exp)")
    p.add_argument("--smooth", type=_float, default=0.98, help="weight of the past in the smoothed loss (0.98)")
    p.add_argument("--diverge", type=_float, default=4.0, help="stop above this x the best smoothed loss (4)")
    p.add_argument("--accumulate", type=_int, default=1, help="forward/backward passes per update (1)")
    p.add_argument("--seed", type=_int, default=0, help="seed of the example's weights and data (0)")
    p.add_argument("--out", "-o", metavar="DIR", help="write lr_find.json, lr_find.csv and lr_find.png here")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the range test on the bundled example; print the summary; write the files with ``--out``."""
    from . import lrfind

    module = lrfind.FRAMEWORKS[args.framework][0]
    try:
        runner = importlib.import_module(module)
    except ImportError as e:
        hint = (" (MegEngine lives in its own Python 3.10 env: .venv-mge/bin/python -m optbridge lr-find "
                "--framework megengine)" if args.framework == "megengine" else "")
        raise BackendUnavailable(f"lr-find --framework {args.framework} needs {args.framework}: {e}{hint}") from None
    if args.framework == "mindspore":
        import mindspore as ms

        ms.set_context(mode=ms.PYNATIVE_MODE)
    model, optimizer, loss_fn, batches = runner.example(args.seed)
    result = lrfind.lr_find(model, optimizer, loss_fn, batches, backend=args.framework, start_lr=args.start_lr,
                            end_lr=args.end_lr, steps=args.steps, mode=args.mode, smooth=args.smooth,
                            diverge=args.diverge, accumulate=args.accumulate)
    print(result)
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ConfigError("--out", "must be a directory", str(out))
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "lr_find.json", out / "lr_find.csv"]
        result.to_json(written[0])
        result.to_csv(written[1])
        try:
            written.append(result.plot(out / "lr_find.png",
                                       title=f"lr range test: bundled example on {args.framework}"))
        except BackendUnavailable as e:
            print(f"no plot: {e}")
        print("wrote " + ", ".join(map(str, written)))
    return 0
