"""The ``optbridge`` command line: ``validate``, ``trace``, ``plot`` and ``demo``.

Entry point :func:`main` (``optbridge`` console script, ``python -m optbridge``).
Every bad input ends with exactly one line ``optbridge: error: <message>`` on
stderr and exit status 2, never a traceback. Importing this module is cheap:
numpy, yaml and matplotlib load inside the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import __version__
from .errors import OptbridgeError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from .ir import Node
    from .plan import Plan
    from .tracing import Trace

__all__ = ["main", "build_parser"]

PROG = "optbridge"
#: Tables longer than this show their first and last rows around a "..." row.
DEFAULT_MAX_ROWS = 40


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _UsageError(CLIError):
    """A command-line usage error (from argparse)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``optbridge: error: ... (see 'optbridge trace --help')``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see '{self.prog} --help')")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, max(60, _terminal_width())))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 80


# --------------------------------------------------------------------------- argument types

def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return v


# --------------------------------------------------------------------------- parser

_MAIN_EPILOG = """\
examples:
  optbridge demo                                   # a guided tour: table, CSV and PNG into out/
  optbridge validate configs/*.yaml                # check configs in any dialect
  optbridge trace plan.yaml --steps 1000           # per-step values as a table
  optbridge trace plan.yaml --format csv --out lr.csv
  optbridge plot plan.yaml --out plan.png --log

Configs may be written in the canonical IR (optbridge: 1), the torch dialect
(dialect: torch) or the MindSpore dialect (dialect: mindspore); JSON, YAML or TOML.
Every error is one line "optbridge: error: ..." on stderr with exit status 2.
"""

_VALIDATE_EPILOG = """\
examples:
  optbridge validate plan.yaml
  optbridge validate configs/*.yaml configs/*.json
  optbridge validate -v plan.yaml                  # also describe groups and schedules

Prints "OK <path>: <n> optimizer(s), <g> group(s), schedules: lr, momentum" per
valid file and one error line per invalid one; exits 0 if all are valid, else 2.
"""

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

_PLOT_EPILOG = """\
One subplot per scheduled hyperparameter, one line per group, x = optimizer
update (with an epoch axis on top when the plan sets steps_per_epoch); dotted
vertical lines mark phase boundaries. Needs matplotlib (pip install matplotlib).

examples:
  optbridge plot plan.yaml                         # writes plan.png (steps = total_steps)
  optbridge plot plan.yaml --steps 3000 --out lr.png --log
  optbridge plot plan.yaml --steps 3000 --hyper lr --backend reference
"""

_DEMO_EPILOG = """\
The demo plan is optbridge/examples/demo.yaml: fine-tuning with SGD, a backbone
at 0.1x the lr, a no-weight-decay group, 500 updates of linear warmup and a
cosine decay, 30 epochs of 100 updates. It prints a description and the trace,
and writes DIR/demo_trace.csv and DIR/demo.png.

examples:
  optbridge demo
  optbridge demo --out /tmp/optbridge-demo --steps 1000
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools and tests)."""
    parser = _Parser(
        prog=PROG, formatter_class=_Formatter, epilog=_MAIN_EPILOG,
        description="Translate and inspect optimizer / LR-schedule setups for PyTorch, MindSpore and MegEngine.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True,
                                parser_class=_Parser)

    p = sub.add_parser("validate", help="check configs and summarise them", formatter_class=_Formatter,
                       description="Load each config (any dialect) and report whether it is valid.",
                       epilog=_VALIDATE_EPILOG)
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="config files (.yaml, .yml, .json, .toml)")
    p.add_argument("-v", "--verbose", action="store_true", help="also describe the groups and schedules")
    p.set_defaults(func=cmd_validate)

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

    p = sub.add_parser("demo", help="a guided tour on a bundled example", formatter_class=_Formatter,
                       description="Describe, trace and plot the bundled fine-tuning example.",
                       epilog=_DEMO_EPILOG)
    p.add_argument("--out", "-o", metavar="DIR", default="out",
                   help="directory for demo_trace.csv and demo.png (default: out/)")
    p.add_argument("--steps", "-n", type=_positive_int, metavar="N",
                   help="number of optimizer updates (default: the example's 3000)")
    p.set_defaults(func=cmd_demo)
    _add_conform_parser(sub)
    _add_convert_parser(sub)
    from . import lrfind_cli  # `optbridge lr-find` (imports no framework)

    lrfind_cli.add_parser(sub)
    return parser


def _trace_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", "-n", type=_positive_int, metavar="N",
                   help="number of optimizer updates (default: the plan's total_steps)")
    p.add_argument("--metrics", metavar="FILE", help="metric series for plateau schedules (.txt, .json, .npy)")
    p.add_argument("--backend", default="reference",
                   help="trace backend: reference (exact float64, default) or a framework backend "
                        "(torch, mindspore-list, mindspore-cell, megengine, ...) when installed")
    p.add_argument("--hyper", metavar="H[,H...]",
                   help="only these hyperparameters, comma-separated (default: all scheduled)")


# --------------------------------------------------------------------------- main

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


def _fail(message: str, status: int = 2) -> int:
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return status


def _os_message(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def _silence_stdout() -> None:
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


# --------------------------------------------------------------------------- shared helpers

def _load(path: str | os.PathLike[str]) -> Plan:
    """Load a config, with every failure as a CLIError prefixed by the path."""
    from . import load
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{path}: no such file")
    if p.is_dir():
        raise CLIError(f"{path}: is a directory, not a config file")
    try:
        return load(p)
    except OptbridgeError as e:
        msg = str(e)
        raise CLIError(msg if str(path) in msg else f"{path}: {msg}") from None
    except OSError as e:
        raise CLIError(f"{path}: cannot read ({e.strerror or e})") from None


def _description(path: str | os.PathLike[str]) -> str | None:
    """The document's ``description`` field, if it has one (best effort, for display)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            doc = tomllib.loads(text)
        else:
            import yaml
            doc = yaml.safe_load(text)
    except Exception:
        return None
    d = doc.get("description") if isinstance(doc, dict) else None
    return " ".join(str(d).split()) if d else None


def _steps(args: argparse.Namespace, plan: Plan) -> int:
    if args.steps is not None:
        return int(args.steps)
    if plan.total_steps is not None:
        return int(plan.total_steps)
    raise CLIError("--steps N is required (the plan sets no total_steps)")


def _hypers(args: argparse.Namespace, plan: Plan) -> list[str] | None:
    """The hyperparameters asked for with --hyper (None: all), checked against the plan."""
    if not getattr(args, "hyper", None):
        return None
    from .plan import scheduled_hypers
    known = scheduled_hypers(plan)
    out: list[str] = []
    for h in (x.strip() for x in args.hyper.split(",")):
        if not h:
            continue
        if h not in known:
            raise CLIError(f"--hyper: {h!r} is not traced for this plan (it traces {', '.join(known)})")
        if h not in out:
            out.append(h)
    if not out:
        raise CLIError(f"--hyper: name at least one hyperparameter ({', '.join(known)})")
    return out


def _load_metrics(path: str) -> np.ndarray:
    """A metric series from a text file (one float per line), a .json list or a .npy array."""
    import json

    import numpy as np
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--metrics: {path}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise CLIError(f"--metrics: {path}: not a readable .npy file ({e})") from None
        if arr.dtype.kind not in "biuf":
            raise CLIError(f"--metrics: {path}: must hold numbers, got dtype {arr.dtype}")
        values = arr.astype(np.float64).ravel()
    elif suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:
            raise CLIError(f"--metrics: {path}: not valid JSON ({e})") from None
        if not isinstance(data, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in data):
            raise CLIError(f"--metrics: {path}: must hold a JSON list of numbers")
        values = np.asarray(data, dtype=np.float64)
    else:
        numbers = []
        for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                numbers.append(float(text))
            except ValueError:
                raise CLIError(f"--metrics: {path}:{lineno}: not a number: {text!r}") from None
        values = np.asarray(numbers, dtype=np.float64)
    if values.size == 0:
        raise CLIError(f"--metrics: {path}: holds no values")
    return values


def _trace_function() -> Any:
    """``optbridge.trace`` (the function), loaded lazily."""
    from .tracing import trace
    return trace


def _compute(args: argparse.Namespace, plan: Plan) -> tuple[Trace, list[str], int]:
    """Trace the plan as the options ask: (trace, hypers to show, steps)."""
    steps = _steps(args, plan)
    hypers = _hypers(args, plan)
    metrics = _load_metrics(args.metrics) if getattr(args, "metrics", None) else None
    try:
        tr = _trace_function()(plan, steps, backend=args.backend, metrics=metrics)
    except OptbridgeError as e:
        raise CLIError(f"{args.config}: {e}") from None
    return tr, (hypers if hypers is not None else list(tr)), steps


# --------------------------------------------------------------------------- phase boundaries

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


# --------------------------------------------------------------------------- table

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


# --------------------------------------------------------------------------- writers

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


def _prepare(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{path}: is a directory (give a file name)")
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    with open(_prepare(path), "w", encoding="utf-8", newline="") as f:
        yield f


def _clock(plan: Plan, steps: int) -> str:
    spe = plan.steps_per_epoch
    if not spe:
        return f"{steps} steps"
    epochs = steps / spe
    e = f"{epochs:g}" if epochs == int(epochs) else f"{epochs:.2f}"
    return f"{steps} steps = {e} epochs x {spe}"


# --------------------------------------------------------------------------- commands

def cmd_validate(args: argparse.Namespace) -> int:
    from .plan import scheduled_hypers
    bad = 0
    for path in args.configs:
        try:
            plan = _load(path)
        except CLIError as e:
            _fail(str(e))
            bad += 1
            continue
        scheduled = [h for h in scheduled_hypers(plan)
                     if h in plan.schedule or any(h in g.schedule for g in plan.groups)]
        n_opt, n_grp = len(plan.optimizers), len(plan.groups)
        print(f"OK {path}: {n_opt} optimizer{'s' if n_opt != 1 else ''}, "
              f"{n_grp} group{'s' if n_grp != 1 else ''}, "
              f"schedules: {', '.join(scheduled) if scheduled else 'none (constant hyperparameters)'}")
        if args.verbose:
            print(textwrap.indent(describe_plan(plan), "    "))
    return 2 if bad else 0


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


def cmd_plot(args: argparse.Namespace) -> int:
    plan = _load(args.config)
    tr, hypers, steps = _compute(args, plan)
    out = args.out or (Path(args.config).stem + ".png")
    title = args.title or Path(args.config).name
    from .plot import plot_trace
    plot_trace(tr, _prepare(out), hypers=hypers, title=title,
               subtitle=_subtitle(plan.description or _description(args.config), plan, steps, tr.backend),
               log=args.log, steps_per_epoch=plan.steps_per_epoch, marks=phase_marks(plan, steps, hypers))
    print(f"wrote {out}")
    return 0


def _subtitle(description: str | None, plan: Plan, steps: int, backend: str) -> str:
    clock = _clock(plan, steps) + (f", backend {backend}" if backend != "reference" else "")
    return f"{description} ({clock})" if description else clock


@contextlib.contextmanager
def example_path(name: str) -> Iterator[Path]:
    """A filesystem path of a bundled example (``optbridge/examples/<name>``)."""
    here = Path(__file__).resolve().parent / "examples" / name
    if here.is_file():
        yield here
        return
    from importlib import resources
    ref = resources.files("optbridge").joinpath("examples").joinpath(name)
    if not ref.is_file():
        raise CLIError(f"the bundled example {name} is missing from this installation "
                       "(reinstall optbridge with its package data)")
    with resources.as_file(ref) as p:
        yield Path(p)


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
    from .plot import plot_trace
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


def _display_path(p: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    return str(p)


# --------------------------------------------------------------------------- conform

_CONFORM_EPILOG = """\
CASES are case ids, globs over ids ('cosine-*'), 'family:NAME' or case files
(.yaml); none runs every case in conformance/cases/ ('family:random' with
--random N runs only the random plans). Each case runs on each
backend and is compared with the reference per step, group and hyperparameter.

statuses: pass, fail, xfail (a known deviation in conformance/xfail/), xpass (a
known deviation that passes: the ledger is stale), unsupported (the backend
refuses with a reason), error, skip (the case excludes the backend, with a
reason), unavailable (the framework is not importable).

exit status: 0; 1 on any fail, xpass or error (and unavailable with
--require-all); 2 on bad input.

examples:
  optbridge conform                                   # every case, every backend
  optbridge conform --backends reference,torch 'cosine-*'
  optbridge conform --out out/conformance --jobs 2    # + report.md, report.json, PNGs
  optbridge conform --require-all --random 50         # CI: all backends, 50 random plans
  optbridge conform --write-docs docs/conformance.md  # regenerate the matrix in the docs
  optbridge conform --list
"""


def _add_conform_parser(sub: Any) -> None:
    p = sub.add_parser("conform", help="run the conformance suite on every backend", formatter_class=_Formatter,
                       description="Run conformance cases on every backend and compare each with the reference.",
                       epilog=_CONFORM_EPILOG)
    p.add_argument("cases", nargs="*", metavar="CASE", help="case ids, globs, family:NAME or case files (default: all)")
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
    p.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="seed of the random plans (default 0)")
    p.add_argument("--random-steps", type=_positive_int, default=120, metavar="N",
                   help="at most N steps per random plan (default 120)")
    p.add_argument("--xfail", action="append", metavar="FILE", help="extra expected-deviation file (repeatable)")
    p.add_argument("--write-docs", metavar="PATH", help="write the conformance matrix (docs/conformance.md)")
    p.add_argument("--no-plots", action="store_true", help="with --out: skip the PNGs")
    p.add_argument("--list", action="store_true", help="list the selected cases and exit")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar; only problems and the summary")
    p.set_defaults(func=cmd_conform)


def cmd_conform(args: argparse.Namespace) -> int:
    from optbridge_conformance.runner import cmd_conform as run_conform  # numpy, yaml: only here
    return run_conform(args)


# --------------------------------------------------------------------------- descriptions

def describe_plan(plan: Plan, steps: int | None = None) -> str:
    """A short human-readable summary: optimizers, groups with base values, schedules, clock."""
    from .errors import ConfigError
    from .plan import hyper_base, scheduled_hypers
    lines: list[str] = []
    hypers = list(scheduled_hypers(plan))
    cols = hypers + [h for h in ("weight_decay",) if h not in hypers]
    for opt in plan.optimizers:
        opts = " ".join(f"{k}={_fmt(v)}" for k, v in opt.options.items())
        label = "optimizer" if len(plan.optimizers) == 1 else f"optimizer {opt.name}"
        lines.append(f"{label}: {opt.type}" + (f"  {opts}" if opts else ""))
    header = ["group", "params"] + cols
    rows = []
    for g in plan.groups:
        params = "; ".join(s.describe() for s in g.select) or "(unbound)"
        if g.frozen:
            params += f"  [frozen: {g.frozen}]"
        cells = [g.name, params]
        for h in cols:
            try:
                cells.append("%.6g" % hyper_base(plan, g, h))
            except (ConfigError, TypeError, ValueError):
                cells.append("-")
        rows.append(cells)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines.append("groups (base values):")
    lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    lines.append("schedules:")
    entries = [(h, n, None) for h, n in plan.schedule.items()]
    entries += [(h, n, g.name) for g in plan.groups for h, n in g.schedule.items()]
    if not entries:
        lines.append("  (none: every hyperparameter keeps its base value)")
    width = max((len(h) + (len(g) + 2 if g else 0) for h, _, g in entries), default=0)
    for h, node, gname in entries:
        label = f"{h}[{gname}]" if gname else h
        lines.append(f"  {label.ljust(width)}  {describe_node(node, plan.step_unit)}")
    clock = f"clock: one scheduler step per {'epoch' if plan.step_unit == 'epoch' else 'update'}"
    if plan.steps_per_epoch:
        clock += f", {plan.steps_per_epoch} updates per epoch"
    if plan.total_steps:
        clock += f", total_steps {plan.total_steps}"
    if steps is not None:
        clock += f"; traced: {_clock(plan, steps)}"
    lines.append(clock)
    return "\n".join(lines)


def describe_node(node: Node, unit: str = "iter") -> str:
    """``linear(start_factor=0, steps=500); from step 500: cosine(steps=2500, end=1e-05)``."""
    from . import ir
    from .serialize import node_to_dict
    u = node.unit or unit
    if isinstance(node, ir.Sequence):
        word = "epoch" if u == "epoch" else "step"
        text = describe_node(node.parts[0], u)
        for b, part in zip(node.boundaries, node.parts[1:]):
            text += f"; from {word} {b}: {describe_node(part, u)}"
        return f"[{text}]" if node.unit else text
    if isinstance(node, ir.Chain):
        return "product of (" + ", ".join(describe_node(p, u) for p in node.parts) + ")"
    d = node_to_dict(node)
    kind = d.pop("kind")
    return f"{kind}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in d.items()) + ")"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "null"
    if isinstance(v, float):
        return "%.6g" % v
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


# --------------------------------------------------------------------------- convert

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


def _add_convert_parser(sub: Any) -> None:
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
    from optbridge_adapters.mindspore.convert import write  # numpy and optbridge only: no MindSpore needed here
    written = write(plan, steps, args.out, source=Path(args.config).name)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
