"""The MegEngine 1.13 backend's entry points, usable in both environments: to_megengine, from_megengine, trace.

MegEngine publishes wheels only for Python <= 3.10, so it usually lives in its own
interpreter (``.venv-mge``, built by ``./dev setup``). This module imports nothing
from MegEngine and works in both environments:

* where ``megengine`` is importable, everything runs in-process (:mod:`.build`,
  :mod:`.read`, :mod:`.tracing` hold the MegEngine code);
* elsewhere, :func:`trace` runs the backend-neutral persistent worker
  (:mod:`optbridge_adapters.worker`) under the MegEngine interpreter: the plan goes
  over as JSON, the trace comes back with its arrays bit-exact, and one interpreter
  serves every trace of the process. ``to_megengine`` / ``from_megengine`` build or
  read live MegEngine objects, so they need MegEngine in this interpreter and raise
  :class:`~optbridge.BackendUnavailable` (with the set-up hint) otherwise.

The MegEngine interpreter is, in order: the ``python=`` option,
``$OPTBRIDGE_MGE_PYTHON``, ``<repo root>/.venv-mge/bin/python``.
:func:`availability` says whether the backend can run at all (None) or why not.

``trace`` is served through the module's ``__getattr__``: the backend registry
(``optbridge.backends``, target ``optbridge_adapters.megengine.backend:trace``)
then gets :class:`~optbridge.BackendUnavailable` with the reason when MegEngine
cannot run here, so the conformance probe counts the backend unavailable.

See docs/megengine.md for the mapping, the traps it avoids and the tolerances.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbridge.errors import BackendUnavailable

from ..worker import WORKER_ENV  # set in a worker process: one that cannot import megengine spawns no other

if TYPE_CHECKING:  # pragma: no cover
    from optbridge.plan import Plan
    from optbridge.tracing import Trace

__all__ = ["to_megengine", "from_megengine", "trace_megengine", "megengine_python", "megengine_importable",
           "availability", "runs_here", "BACKEND", "SETUP_HINT"]

BACKEND = "megengine"

#: How to get a MegEngine interpreter (part of every BackendUnavailable message).
SETUP_HINT = (
    "MegEngine 1.13 needs Python <= 3.10 and lives in its own environment: run `./dev setup` in the "
    "optbridge repository (it builds .venv-mge with MegEngine 1.13), or point OPTBRIDGE_MGE_PYTHON at a "
    "Python 3.10 interpreter that has MegEngine 1.13 and optbridge installed "
    "(pip install 'MegEngine==1.13.0' 'numpy<2' && pip install -e <optbridge checkout>)")



def megengine_importable() -> bool:
    """Whether ``megengine`` can be found by this interpreter (nothing is imported)."""
    try:
        return importlib.util.find_spec("megengine") is not None
    except (ImportError, ValueError):  # pragma: no cover - broken meta path entries
        return False


def runs_here() -> bool:
    """Whether MegEngine work runs in this process: megengine is already imported (a MegEngine
    script) or this is the worker. Otherwise it goes to the worker even when megengine is
    importable, since ``import megengine`` switches the CPU to flush-to-zero process-wide."""
    return ("megengine" in sys.modules or os.environ.get(WORKER_ENV) == "1") and megengine_importable()


def repo_root() -> Path | None:
    """The optbridge checkout this module lives in (``adapters/megengine/../..``), or None when installed elsewhere."""
    root = Path(__file__).resolve().parents[2]
    if (root / "dev").is_file() and (root / "pyproject.toml").is_file() and (root / "optbridge").is_dir():
        return root
    return None


def megengine_python() -> str:
    """Path of the MegEngine interpreter, or BackendUnavailable saying how to create it.

    ``$OPTBRIDGE_MGE_PYTHON`` when set (it must exist), else the repository's
    ``.venv-mge/bin/python``.
    """
    env = os.environ.get("OPTBRIDGE_MGE_PYTHON")
    if env:
        p = Path(env).expanduser()
        if not p.is_absolute():
            root = repo_root()
            p = (root / p) if root is not None else p.absolute()
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise BackendUnavailable(
                f"backend 'megengine': OPTBRIDGE_MGE_PYTHON={env} is not an executable file; {SETUP_HINT}")
        return str(p)
    root = repo_root()
    if root is None:
        raise BackendUnavailable(
            "backend 'megengine': megengine is not importable here and OPTBRIDGE_MGE_PYTHON is not set "
            f"(optbridge is not running from a checkout, so there is no default .venv-mge); {SETUP_HINT}")
    p = root / ".venv-mge" / "bin" / "python"
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise BackendUnavailable(
            f"backend 'megengine': the MegEngine interpreter {p} does not exist; {SETUP_HINT}")
    return str(p)


def _require_megengine(what: str, module: str) -> Any:
    """The MegEngine module ``.<module>`` of this package, or BackendUnavailable."""
    if not megengine_importable():
        raise BackendUnavailable(
            f"optbridge.{what} builds live MegEngine objects, and megengine is not importable by this "
            f"interpreter; run your MegEngine code with the MegEngine interpreter. {SETUP_HINT}. "
            "(optbridge.trace(plan, steps, backend='megengine') works from any environment: it runs a worker.)")
    try:
        return importlib.import_module(f"{__package__}.{module}")
    except ImportError as e:
        raise BackendUnavailable(f"optbridge.{what}: importing megengine failed ({e}); {SETUP_HINT}") from e


def availability() -> str | None:
    """None when the MegEngine backend can run from this interpreter, else why not (with the set-up command).

    It can run when it runs in this process (:func:`runs_here`), or when the
    MegEngine interpreter (:func:`megengine_python`) exists. Nothing is imported or started.
    """
    if runs_here():
        return None
    try:
        megengine_python()
    except BackendUnavailable as e:
        return str(e)
    return None


def to_megengine(plan: Plan, model: Any, *, total_steps: int | None = None, form: str | None = None,
                 metrics: Sequence[float] | None = None, split_nesterov: bool = True, optimizer: str = "auto") -> Any:
    """See :func:`optbridge.to_megengine` (needs megengine importable in this interpreter).

    Raises:
        BackendUnavailable: megengine is not importable here.
    """
    return _require_megengine("to_megengine", "build").to_megengine(
        plan, model, total_steps=total_steps, form=form, metrics=metrics, split_nesterov=split_nesterov,
        optimizer=optimizer)


def from_megengine(optimizer: Any, scheduler: Any = None, *, model: Any = None, step_unit: str = "iter",
                   steps_per_epoch: int | None = None, total_steps: int | None = None) -> Plan:
    """See :func:`optbridge.from_megengine` (needs megengine importable in this interpreter).

    Raises:
        BackendUnavailable: megengine is not importable here.
    """
    return _require_megengine("from_megengine", "read").from_megengine(
        optimizer, scheduler, model=model, step_unit=step_unit, steps_per_epoch=steps_per_epoch,
        total_steps=total_steps)


def trace_megengine(plan: Plan, steps: int, *, metrics: Sequence[float] | None = None, **options: Any) -> Trace:
    """The MegEngine trace of ``plan`` (the backend contract in docs/adapters.md).

    In-process when this process has already imported megengine (a MegEngine script,
    the worker itself); otherwise through the persistent worker under the MegEngine
    interpreter, even when megengine is importable here: ``import megengine`` switches
    the CPU to flush-to-zero for the whole process (subnormals become 0.0), which
    must not happen behind a caller's back.

    Options:
        python: Run the worker under this interpreter (forces the worker).
        worker: True to use the worker even when megengine is importable here.
        timeout: Seconds to wait for the worker's answer (default 600).
        Other options go to the MegEngine side (:func:`optbridge_adapters.megengine.tracing.trace`:
        ``native``, ``chunk``, ``split_nesterov``, ``optimizer``, ``updates``).
    """
    python = options.pop("python", None)
    use_worker = bool(options.pop("worker", False)) or python is not None
    timeout = options.pop("timeout", None)
    if not use_worker and runs_here():
        return _require_megengine("trace", "tracing").trace(plan, steps, metrics=metrics, **options)
    if python is None and os.environ.get(WORKER_ENV) == "1":
        raise BackendUnavailable(
            f"backend 'megengine': megengine is not importable by the worker's interpreter {sys.executable}; "
            f"{SETUP_HINT}")
    from ..worker import run_in_worker
    return run_in_worker(python or megengine_python(), BACKEND, plan, steps, metrics=metrics,
                         timeout=timeout, hint=SETUP_HINT, **options)


def __getattr__(name: str) -> Any:
    """``trace``: :func:`trace_megengine` when the backend can run here, else BackendUnavailable (an ImportError)."""
    if name == "trace":
        why = availability()
        if why is not None:
            raise BackendUnavailable(why)
        return trace_megengine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
