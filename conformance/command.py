"""The body of ``optbridge conform`` (its arguments are defined in :mod:`optbridge.cli.conform`).

``optbridge conform CONFIG --steps N [--metrics FILE]`` runs a plain config file
(canonical or any dialect) on every backend, as the suite runs its cases;
``--plot`` draws every case (passes too), ``--no-budget`` runs every case in full
on every backend.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from optbridge.errors import ConfigError

__all__ = ["conform", "Progress"]


class Progress:
    """A plain-text progress bar on a terminal; sparse lines otherwise (CI logs)."""

    def __init__(self, stream: Any = None, enabled: bool = True, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.last_pct = -1
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled or total == 0:
            return
        frac = done / total
        elapsed = time.perf_counter() - self.t0
        if self.tty:
            n = int(frac * self.width)
            bar = "#" * n + "-" * (self.width - n)
            text = f"\r[{bar}] {done}/{total} {elapsed:5.0f}s  {label}"
            cols = _columns()
            self.stream.write(text[:cols - 1].ljust(cols - 1) if cols > 20 else text)
            if done == total:
                self.stream.write("\n")
            self.stream.flush()
        else:
            pct = int(frac * 10) * 10
            if pct != self.last_pct:
                self.last_pct = pct
                self.stream.write(f"conform: {pct:3d}% ({done}/{total}, {elapsed:.0f}s)\n")
                self.stream.flush()


def _columns() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _metrics(path: str | None) -> Any:
    if not path:
        return None
    from optbridge.cli._common import _load_metrics  # the same reader as `optbridge trace --metrics`
    return _load_metrics(path)


def conform(args: argparse.Namespace) -> int:
    """``optbridge conform``: run, print the table, write the reports / plots / docs asked for."""
    from . import report
    from .cases import select_cases
    from .runner import run
    os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only (its warnings would bury the table)
    steps, metrics = getattr(args, "steps", None), _metrics(getattr(args, "metrics", None))
    if args.list:
        for c in select_cases(args.cases, steps=steps, metrics=metrics):
            print(f"{c.id:44s} {c.family:18s} {c.steps:>9d}  {c.description[:70]}")
        return 0
    backends = None
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        if not backends:
            raise ConfigError("--backends", "name at least one backend", args.backends)
    plot = bool(getattr(args, "plot", False))
    out_dir = args.out or ("conform-out" if plot else None)
    if plot and args.no_plots:
        raise ConfigError("--plot", "contradicts --no-plots", None, show_value=False)
    prog = Progress(enabled=not args.quiet)
    r = run(args.cases, backends=backends, jobs=args.jobs, max_steps=args.max_steps, require_all=args.require_all,
            strict_unsupported=args.strict_unsupported, xfail_files=args.xfail, random=args.random,
            seed=args.seed, random_steps=args.random_steps, progress=prog,
            budget=not getattr(args, "no_budget", False), plot=plot, steps=steps, metrics=metrics)
    out = sys.stdout
    out.write(report.terminal(r, full=not args.quiet))
    if out_dir:
        written = report.write_reports(r, Path(out_dir), plots=not args.no_plots, every_case=plot)
        pngs = [p for p in written if p.suffix == ".png"]
        out.write(f"wrote {', '.join(str(p) for p in written[:2])}"
                  + (f" and {len(pngs)} PNG{'s' if len(pngs) != 1 else ''} in {Path(out_dir) / 'plots'}"
                     if pngs else "") + "\n")
    if args.write_docs:
        path = Path(args.write_docs)
        path.parent.mkdir(parents=True, exist_ok=True)
        from .docs import docs
        path.write_text(docs(r), encoding="utf-8")
        out.write(f"wrote {path}\n")
    return r.exit_code
