"""The port's tables: each column streamed to its own ``.npy`` file, window by window.

A column holds a schedule's float64 values over updates ``0 .. total - 1``,
evaluated by the reference evaluator through :class:`optbridge.source.ValueSource`
(``window``) and written with ``numpy.lib.format.open_memmap``, so memory stays
O(window x columns) whatever ``total`` is. A slot reads ``scale * column[k]``:

* **shared columns** (``relative``): groups whose schedule is the same node and
  whose values the evaluator computes as ``base * g(k)`` (factor forms without an
  offset, and sequences of them: :func:`optbridge.evaluate.scales_base`) share one column holding
  the values at base 1, which are exactly ``g(k)``; each group multiplies by its own
  base, the same one float64 multiplication the evaluator does, so the product is
  bit for bit the reference value;
* **own columns**: any other schedule (an absolute ``end``, cyclic, one-cycle, chain,
  plateau, ...) gets the slot's own values (``scale`` 1; groups with the same node and
  base still share).

Nothing here is schedule math: values come from the evaluator, and which nodes
scale their base is read off the evaluator's own factor forms.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from .. import evaluate
from ..slots import Slot
from ..source import ValueSource
from .spec import PortSpec

__all__ = ["write_columns", "sha256", "WINDOW_VALUES"]

#: Values evaluated per window (columns x updates): about 8 MB of float64.
WINDOW_VALUES = 1 << 20


def sha256(path: Path, block: int = 1 << 22) -> str:
    """The SHA-256 of a file's bytes (what ``sha256sum`` prints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def write_columns(spec: PortSpec, directory: Path) -> list[tuple[Path, str]]:
    """Write every column of ``spec`` to ``directory/<name>.npy``: ``(path, sha256 of the file)`` in column order.

    Each file is created by ``numpy.lib.format.open_memmap`` (the ``.npy`` header and
    its size) and filled window by window through a plain file handle, so neither the
    values nor mapped pages of a large port stay in memory; the SHA-256 is computed
    from the bytes as they are written (the file is not read back).
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{c.name}.npy" for c in spec.columns]
    n = spec.total
    hashes = []
    offsets = []
    for p in paths:
        m = open_memmap(p, mode="w+", dtype=np.float64, shape=(n,))
        offsets.append(m.offset)
        del m
        with open(p, "rb") as f:
            hashes.append(hashlib.sha256(f.read(offsets[-1])))  # the .npy header
    files = [open(p, "r+b") for p in paths]  # noqa: SIM115  # closed below
    try:
        for f, off in zip(files, offsets):
            f.seek(off)
        for sequential in (False, True):
            # a pseudo-slot per column: the value source evaluates it (row = its file)
            batch = [Slot("", "", 0, j, "", "", None, c.node, c.base, c.path)
                     for j, c in enumerate(spec.columns) if evaluate.history_dependent(c.node) == sequential]
            if not batch:
                continue
            src = ValueSource(batch, unit=spec.unit, steps_per_epoch=spec.steps_per_epoch,
                              total_steps=n if spec.horizon is not None else None, metrics=spec.metrics)
            step = n if sequential else max(1, WINDOW_VALUES // len(batch))
            for lo in range(0, n, step):
                win = src.window(lo, min(step, n - lo))
                for i, s in enumerate(batch):
                    data = np.ascontiguousarray(win[i], dtype="<f8").tobytes()
                    files[s.row].write(data)
                    hashes[s.row].update(data)
    finally:
        for f in files:
            f.close()
    return [(p, h.hexdigest()) for p, h in zip(paths, hashes)]
