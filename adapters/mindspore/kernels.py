"""One-pass C++ kernels for the torch-exact MindSpore optimizers (imports mindspore).

MindSpore's CPU backend runs a composed update op by op: torch's Adam is about a dozen
passes over every parameter where MindSpore's fused ``nn.Adam`` kernel makes one (10.9x on
a 10M-parameter MLP). ``kernels.cc`` (next to this file) holds the float32 tensor work of
each exact optimizer (:mod:`.optimizers`: SGD, Adam/AdamW, RMSprop, Adagrad, Adadelta, Adamax,
NAdam, RAdam) as one op per parameter: the scalars (the step, bias corrections, step sizes,
torch's per-step branches) computed from the group's float64 hyperparameters as the graph
computes them (torch's expressions, the C library's ``pow``), then one loop over the
elements, in the composed update's order and roundings.
MindSpore runs them through its own custom-op mechanism, ``ops.Custom(func_type="aot")``,
marked ``side_effect_mem`` (it passes the Parameters' memory, orders the op among the
graph's side effects and never prunes it).

The library is compiled once per source and flags with the system's C++ compiler
(``$CXX``, else ``g++``) into ``$OPTBRIDGE_CACHE_DIR`` (default
``$XDG_CACHE_HOME/optbridge``, else ``~/.cache/optbridge``), about 6 s here (``-O3``, three
ISA clones of every instantiation), and reused by every later process. Without a compiler
(or with ``OPTBRIDGE_MS_KERNELS=0``) the optimizers use the composed ops: the same values,
bit for bit (tests/test_mindspore_exact_optimizers.py), only slower. :func:`status` says which, and why.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("kernels.cc")
#: No fused multiply-add, no fast-math: the kernels round as the composed ops do, on every CPU.
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off", "-fno-fast-math",
         "-fno-math-errno")
#: the kernels, one per torch optimizer (AdamW is Adam's), by the name after ``optbridge_`` in kernels.cc.
KERNELS = ("sgd", "adam", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "radam")


def cache_dir() -> Path:
    """Where compiled kernels live: ``$OPTBRIDGE_CACHE_DIR``, ``$XDG_CACHE_HOME/optbridge``, ``~/.cache/optbridge``."""
    if os.environ.get("OPTBRIDGE_CACHE_DIR"):
        return Path(os.environ["OPTBRIDGE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "optbridge"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


@cache
def _library() -> tuple[Path | None, str]:
    """(the compiled library, or None; what happened), once per process."""
    if os.environ.get("OPTBRIDGE_MS_KERNELS", "1").strip().lower() in ("0", "false", "off", "no"):
        return None, "disabled by OPTBRIDGE_MS_KERNELS"
    if platform.system() != "Linux":
        return None, f"MindSpore's aot custom ops run on Linux only (this is {platform.system()})"
    cxx = _compiler()
    if cxx is None:
        return None, f"no C++ compiler ({os.environ.get('CXX', 'g++')} not on PATH)"
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((cxx, *FLAGS, platform.machine())).encode()).hexdigest()[:16]
    target = cache_dir() / f"optbridge_ms_kernels-{key}.so"
    if target.is_file():
        return target, f"compiled kernels {target}"
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        done = subprocess.run([cxx, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return None, f"{cxx} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}"
        os.replace(tmp, target)                                    # atomic: concurrent builders agree
        tmp = None
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot build the kernels in {target.parent}: {exc}"
    finally:
        if tmp is not None and os.path.exists(tmp):               # a failed or timed-out build leaves nothing
            os.unlink(tmp)
    return target, f"compiled kernels {target}"


def status() -> tuple[bool, str]:
    """(whether the one-pass kernels are available, why or why not)."""
    path, why = _library()
    return path is not None, why


@cache
def op(name: str) -> Any:
    """The ``ops.Custom`` primitive of kernel ``name`` (one of :data:`KERNELS`); needs :func:`status`."""
    import mindspore as ms
    from mindspore import ops

    path, why = _library()
    if path is None:
        raise RuntimeError(f"optbridge's MindSpore kernels are unavailable: {why}")
    prim = ops.Custom(f"{path}:optbridge_{name}", out_shape=lambda *shapes: [1],
                      out_dtype=lambda *dtypes: ms.float32, func_type="aot")
    prim.add_prim_attr("side_effect_mem", True)                   # in place: keep, order, pass the real memory
    return prim
