"""Pieces every ``optbridge`` command shares: the parser class, argument types, loading, tracing, output."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from ..errors import OptbridgeError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ..plan import Plan
    from ..tracing import Trace

PROG = "optbridge"
#: Tables longer than this show their first and last rows around a "..." row.
DEFAULT_MAX_ROWS = 40


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""

class _UsageError(CLIError):
    """A command-line usage error (from argparse)."""

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``optbridge: error: ... (see 'optbridge trace --help')``."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")

class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(100, max(60, _terminal_width())))

def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 80

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

def _trace_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", "-n", type=_positive_int, metavar="N",
                   help="number of optimizer updates (default: the plan's total_steps)")
    p.add_argument("--metrics", metavar="FILE", help="metric series for plateau schedules (.txt, .json, .npy)")
    p.add_argument("--backend", default="reference",
                   help="trace backend: reference (exact float64, default) or a framework backend "
                        "(torch, mindspore-list, mindspore-cell, megengine, ...) when installed; "
                        "plot overlays several, comma-separated")
    p.add_argument("--hyper", metavar="H[,H...]",
                   help="only these hyperparameters, comma-separated (default: all scheduled)")
    p.add_argument("--start", type=_non_negative_int, default=0, metavar="K",
                   help="first update to trace: updates K .. K+N-1, as a run resumed at update K uses them "
                        "(default 0; with no --steps, up to the plan's total_steps)")

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

def _load(path: str | os.PathLike[str]) -> Plan:
    """Load a config, with every failure as a CLIError prefixed by the path."""
    from .. import load
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
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            doc = tomllib.loads(text)
        else:
            import yaml
            doc = yaml.safe_load(text)
    except Exception:
        return None
    d = doc.get("description") if isinstance(doc, dict) else None
    return " ".join(str(d).split()) if d else None

def _steps(args: argparse.Namespace, plan: Plan) -> int:
    """Updates to trace: --steps, else what is left of the plan's total_steps after --start."""
    if args.steps is not None:
        return int(args.steps)
    start = int(getattr(args, "start", 0) or 0)
    if plan.total_steps is not None:
        if start >= plan.total_steps:
            raise CLIError(f"--start {start}: the plan is defined for {plan.total_steps} updates (total_steps), "
                           f"so the last update is {plan.total_steps - 1}")
        return int(plan.total_steps) - start
    raise CLIError("--steps N is required (the plan sets no total_steps)")

def _backend_names(args: argparse.Namespace) -> list[str]:
    """The backends of --backend a,b,c in order, without repeats (at least one)."""
    names: list[str] = []
    for b in (x.strip() for x in str(args.backend).split(",")):
        if b and b not in names:
            names.append(b)
    if not names:
        raise CLIError("--backend: name at least one backend (reference, torch, megengine, ...)")
    return names

def _hypers(args: argparse.Namespace, plan: Plan) -> list[str] | None:
    """The hyperparameters asked for with --hyper (None: all), checked against the plan."""
    if not getattr(args, "hyper", None):
        return None
    from ..plan import scheduled_hypers
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
    from ..tracing import trace
    return trace

def _compute(args: argparse.Namespace, plan: Plan) -> tuple[Trace, list[str], int]:
    """Trace the plan as the options ask: (trace, hypers to show, steps)."""
    steps = _steps(args, plan)
    hypers = _hypers(args, plan)
    metrics = _load_metrics(args.metrics) if getattr(args, "metrics", None) else None
    try:
        tr = _trace_function()(plan, steps, backend=args.backend, metrics=metrics,
                               start=int(getattr(args, "start", 0) or 0))
    except OptbridgeError as e:
        raise CLIError(f"{args.config}: {e}") from None
    return tr, (hypers if hypers is not None else list(tr)), steps

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

def _subtitle(description: str | None, plan: Plan, steps: int, backend: str, start: int = 0) -> str:
    clock = _window_clock(plan, start, steps) + (f", backend {backend}" if backend != "reference" else "")
    return f"{description} ({clock})" if description else clock

def _window_clock(plan: Plan, start: int, steps: int) -> str:
    """``_clock`` of the traced window; from update K on: ``updates K..K+N-1 (N steps ...)``."""
    if not start:
        return _clock(plan, steps)
    return f"updates {start}..{start + steps - 1} ({_clock(plan, steps)}, resumed at update {start})"

@contextlib.contextmanager
def example_path(name: str) -> Iterator[Path]:
    """A filesystem path of a bundled example (``optbridge/examples/<name>``)."""
    here = Path(__file__).resolve().parent.parent / "examples" / name
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

def _display_path(p: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    return str(p)
