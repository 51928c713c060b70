"""Long traces, streamed: computed window by window and written as CSV, JSON or ``.npy`` in bulk.

A trace of 150 groups over 1e6 updates is 1.2 GB of float64 and 6.8 GB of CSV;
nothing here ever holds it whole. :class:`Windows` yields the trace a window of
updates at a time (the reference evaluator computes exactly those updates,
``optbridge.trace(plan, n, start=k)``; a framework backend's trace is computed
once, whole, and sliced), and the writers format each window with
:mod:`._numtext` (numpy, no Python object per value) straight to the output.
Memory is O(window x groups) whatever the horizon.

Before anything is written, the last update asked for is checked against the
schedule's horizon (:meth:`optbridge.source.ValueSource.check`, the one
end-of-schedule policy), and files are written under a temporary name and
renamed at the end, so a failing trace leaves no partial file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from . import _numtext as nt

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Plan
    from ..tracing import Trace

__all__ = ["Windows", "WINDOW_VALUES", "write_csv", "write_json", "write_npy", "atomic_binary", "csv_header"]

#: Values (steps x groups x hyperparameters) per window of the reference backend: 32 MiB of float64
#: (each window is one `optbridge.trace(plan, n, start=k)` call, whose per-call cost grows with the groups).
WINDOW_VALUES = 1 << 22


class Windows:
    """A trace of updates ``start .. start + steps - 1``, window by window.

    Args:
        plan: The plan.
        steps: Number of updates.
        start: The first update.
        backend: Trace backend name.
        metrics: Plateau metrics (counted from the plan's start).
        hypers: Hyperparameters to keep (default: all the trace has).
        window: Updates per window (default: :data:`WINDOW_VALUES` over the values per update).

    Raises:
        OptbridgeError: from tracing (bad plan, unavailable backend, a schedule that ends
            before the last update asked for, ...), before anything is yielded.
    """

    def __init__(self, plan: Plan, steps: int, *, start: int = 0, backend: str = "reference",
                 metrics: Sequence[float] | np.ndarray | None = None, hypers: Sequence[str] | None = None,
                 window: int | None = None) -> None:
        from ..tracing import trace
        self.plan, self.steps, self.start, self.backend = plan, int(steps), int(start), backend
        self._metrics: list[float] | None = None if metrics is None else [float(m) for m in metrics]
        metrics = self._metrics
        self._trace = trace
        self._whole: Trace | None = None
        if backend == "reference":
            _check_horizon(plan, self.start + self.steps - 1, metrics)
            first = trace(plan, 1, backend=backend, metrics=metrics, start=self.start)
        else:  # a framework trace is computed whole (its sizes are small), then sliced
            first = self._whole = trace(plan, self.steps, backend=backend, metrics=metrics, start=self.start)
        self.groups: tuple[str, ...] = tuple(first.groups)
        self.hypers: tuple[str, ...] = tuple(first) if hypers is None else tuple(hypers)
        self.fidelity = tuple(first.fidelity)
        per_update = max(1, len(self.groups) * len(self.hypers))
        self.window = int(window) if window else max(1, WINDOW_VALUES // per_update)
        if backend == "reference" and _sequential(plan):
            self.window = self.steps  # plateau / running products: one pass from update 0, not one per window

    def __iter__(self) -> Iterator[Trace]:
        """Consecutive windows covering every update (each a Trace with its ``start``)."""
        for lo in range(0, self.steps, self.window):
            yield self.span(self.start + lo, min(self.window, self.steps - lo))

    def span(self, first: int, n: int) -> Trace:
        """Updates ``first .. first + n - 1`` (inside this trace's range)."""
        from ..tracing import Trace
        if self._whole is not None:
            w = self._whole
            s = slice(first - self.start, first - self.start + n)
            return Trace(w.groups, {h: w[h][:, s] for h in self.hypers}, w.backend, w.fidelity,
                         {h: a[:, s] for h, a in w.applied.items()}, first)
        return self._trace(self.plan, n, backend=self.backend, metrics=self._metrics, start=first)

    def at(self, updates: Sequence[int]) -> dict[str, np.ndarray]:
        """Values at some updates (sorted, inside the range): ``hyper -> (groups, len(updates))``."""
        out = {h: np.empty((len(self.groups), len(updates))) for h in self.hypers}
        i = 0
        while i < len(updates):  # runs of nearby updates share one evaluation
            j = i + 1
            while j < len(updates) and updates[j] - updates[i] < self.window:
                j += 1
            tr = self.span(updates[i], updates[j - 1] - updates[i] + 1)
            cols = [u - updates[i] for u in updates[i:j]]
            for h in self.hypers:
                out[h][:, i:j] = tr[h][:, cols]
            i = j
        return out


def _check_horizon(plan: Plan, last: int, metrics: Sequence[float] | None) -> None:
    """Raise the value source's PastHorizon error unless update ``last`` has a value."""
    from ..slots import slots
    from ..source import ValueSource
    ValueSource(slots(plan), unit=plan.step_unit, steps_per_epoch=plan.steps_per_epoch,
                total_steps=plan.total_steps, metrics=metrics).check(last)


def _sequential(plan: Plan) -> bool:
    from ..evaluate import history_dependent
    from ..slots import slots
    return any(s.node is not None and history_dependent(s.node) for s in slots(plan))


# --------------------------------------------------------------------------- output files

@contextlib.contextmanager
def atomic_binary(path: str | os.PathLike[str] | None) -> Iterator[IO[bytes]]:
    """A binary stream: stdout's buffer, or a temporary file renamed to ``path`` when the block succeeds."""
    if path is None:
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    p = Path(path)
    fd, tmp = _temporary(p)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _temporary(p: Path) -> tuple[int, str]:
    """A temporary file next to ``p`` (same file system, for the rename), with a plain file's permissions."""
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; the renamed file should be like any other
    return fd, tmp


# --------------------------------------------------------------------------- CSV

def csv_header(steps_per_epoch: int | None) -> str:
    return "step," + ("epoch," if steps_per_epoch else "") + "group,hyper,value\n"


def _csv_labels(groups: Sequence[str], hypers: Sequence[str]) -> np.ndarray:
    """``group,hyper,`` per (hyper, group), in row order, CSV-quoted where needed."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    labels = []
    for h in hypers:
        for g in groups:
            buf.seek(0)
            buf.truncate()
            w.writerow([g, h, ""])
            labels.append(buf.getvalue()[:-1])  # "group,hyper,"
    return _field(labels)


def _field(texts: Sequence[str]) -> np.ndarray:
    raw = [t.encode("utf-8") for t in texts]
    if any(b"\0" in b for b in raw):
        from ..errors import ConfigError
        raise ConfigError("groups", "names must not contain NUL characters to be written as text",
                          next(t for t in texts if "\0" in t))
    return np.array(raw, dtype=f"S{max(1, max(len(b) for b in raw))}")


def write_csv(windows: Windows | Sequence[Trace], out: IO[bytes], steps_per_epoch: int | None,
              hypers: Sequence[str] | None = None, *, header: bool = True) -> int:
    """The tidy CSV ``step[,epoch],group,hyper,value``, one row per value; returns the number of rows.

    Rows go update by update, then hyperparameter, then group; ``step`` is the real
    update number (``trace.start`` + column), values have full float64 precision.
    """
    if header:
        out.write(csv_header(steps_per_epoch).encode("ascii"))
    n_rows = 0
    labels = None
    comma, newline = np.array([b","], dtype="S1"), np.array([b"\n"], dtype="S1")
    for tr in windows:
        names = tuple(hypers) if hypers is not None else tuple(tr)
        if labels is None:
            labels = _csv_labels(tr.groups, names)
        per = labels.size
        n = tr.steps
        ks = np.arange(tr.start, tr.start + n, dtype=np.int64)
        for lo in range(0, n, max(1, nt.BLOCK_VALUES // per)):  # bounded text blocks
            hi = min(n, lo + max(1, nt.BLOCK_VALUES // per))
            values = np.stack([tr[h][:, lo:hi] for h in names])  # (hypers, groups, steps)
            cols = [np.repeat(nt.as_field(nt.int_chars(ks[lo:hi])), per), comma]
            if steps_per_epoch:
                cols += [np.repeat(nt.as_field(nt.int_chars(ks[lo:hi] // steps_per_epoch)), per), comma]
            cols += [np.tile(labels, hi - lo), nt.as_field(nt.float_chars(values.transpose(2, 0, 1))), newline]
            out.write(nt.compact(nt.records(cols)))
            n_rows += (hi - lo) * per
    return n_rows


# --------------------------------------------------------------------------- JSON

def write_json(windows: Windows, out: IO[bytes], head: dict[str, Any], tail: dict[str, Any]) -> None:
    """``{**head, "values": {hyper: [[value per update] per group]}, **tail}``, streamed.

    The values are group-major while windows come update by update, so a trace of
    more than one window is first written to temporary ``.npy`` files (next to
    ``out`` when it is a file) and read back a row at a time.
    """
    out.write(_json_open(head))
    hypers, n_groups = windows.hypers, len(windows.groups)
    if windows.window >= windows.steps:
        tr = next(iter(windows))
        _json_values(out, hypers, n_groups, lambda h, g: iter([tr[h][g]]))
    else:
        where = Path(out.name).parent if isinstance(getattr(out, "name", None), str) else None
        with tempfile.TemporaryDirectory(prefix=".optbridge-json-", dir=where) as tmp:
            paths = [Path(tmp) / f"{i}.npy" for i in range(len(hypers))]
            write_npy(windows, paths)
            _json_values(out, hypers, n_groups, lambda h, g: _read_row(paths[hypers.index(h)], g))
    out.write(_json_close(tail))


def _json_open(head: dict[str, Any]) -> bytes:
    text = json.dumps(head)
    return (text[:-1] + (", " if head else "") + '"values": {').encode("utf-8")


def _json_close(tail: dict[str, Any]) -> bytes:
    text = json.dumps(tail)
    return ("}" + (", " + text[1:] if tail else "}") + "\n").encode("utf-8")


def _json_values(out: IO[bytes], hypers: Sequence[str], n_groups: int,
                 row_chunks: Callable[[str, int], Iterator[np.ndarray]]) -> None:
    """``"lr": [[...], ...], ...``: each group's row from ``row_chunks(hyper, group)``, in bulk-formatted blocks."""
    sep = np.array([b", "], dtype="S2")
    for i, h in enumerate(hypers):
        out.write((b", " if i else b"") + json.dumps(h).encode("utf-8") + b": [")
        for g in range(n_groups):
            out.write(b", [" if g else b"[")
            pending = b""
            for chunk in row_chunks(h, g):
                for lo in range(0, chunk.size, nt.BLOCK_VALUES):
                    values = nt.float_chars(chunk[lo:lo + nt.BLOCK_VALUES], nt.JSON_SPECIALS)
                    text = nt.compact(nt.records([nt.as_field(values), sep]))
                    out.write(pending + text[:-2])  # no ", " after the last value
                    pending = b", "
            out.write(b"]")
        out.write(b"]")


def _read_row(path: Path, g: int, chunk: int = 1 << 20) -> Iterator[np.ndarray]:
    """Row ``g`` of a (groups, steps) float64 .npy file, in chunks, read without mapping the file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, _dtype = read(f)
        offset = f.tell()
        steps = shape[1]
        for lo in range(0, steps, chunk):
            n = min(chunk, steps - lo)
            f.seek(offset + (g * steps + lo) * 8)
            yield np.fromfile(f, dtype=np.float64, count=n)


# --------------------------------------------------------------------------- npy

def write_npy(windows: Windows, paths: Sequence[str | os.PathLike[str]]) -> None:
    """One ``(groups, steps)`` float64 ``.npy`` per hyperparameter, filled window by window.

    The files are created with :func:`numpy.lib.format.open_memmap`; each window is
    written through a fresh mapping that is flushed and closed right after, so the
    process never keeps more than a window's pages.
    """
    shape = (len(windows.groups), windows.steps)
    tmps = []
    try:
        for p in paths:
            fd, tmp = _temporary(Path(p))
            os.close(fd)
            tmps.append(tmp)
            created = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=shape)
            del created  # header written, data zero-filled (sparse)
        for tr in windows:
            lo = tr.start - windows.start
            for h, tmp in zip(windows.hypers, tmps):
                mm = np.lib.format.open_memmap(tmp, mode="r+")
                mm[:, lo:lo + tr.steps] = tr[h]
                mm.flush()
                del mm
        for tmp, p in zip(tmps, paths):
            os.replace(tmp, p)
        tmps = []
    finally:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
