"""The MegEngine 1.13 backend: plans to real MegEngine optimizers and drivers, and back.

Modules (the same skeleton as every adapter package), one line each:

* :mod:`.backend` -- the entry points ``to_megengine``, ``from_megengine``, ``trace``, in-process or via the worker.
* :mod:`.build` -- :func:`to_megengine` and the :class:`MegEngineSetup` it returns.
* :mod:`.driver` -- :class:`PlanScheduler` and the guard on each optimizer's ``step``.
* :mod:`.read` -- :func:`from_megengine`: live MegEngine objects to a plan.
* :mod:`.tracing` -- the ``"megengine"`` trace backend, in this interpreter.
* :mod:`.optimizers` -- torch-exact optimizers written in MegEngine ops.
* :mod:`.native` -- native MegEngine optimizers against torch, as measured (pure data, no framework import).
* :mod:`.patches` -- work-arounds for MegEngine bugs that reach users of the native optimizers.
* :mod:`.state` -- MegEngine optimizer state to and from optbridge's neutral form (:mod:`optbridge.state`).
* :mod:`.lrfind` -- the MegEngine runner of the lr range test (:func:`optbridge.lrfind.lr_find`).

Importing this package imports no framework: MegEngine loads on first use of a
name that needs it. See docs/megengine.md.
"""

from __future__ import annotations

from optbridge._lazy import lazy_attributes

__all__ = ["to_megengine", "from_megengine", "trace", "availability", "megengine_python", "megengine_importable",
           "MegEngineSetup", "MultipleOptimizer", "MultipleScheduler", "PlanScheduler", "NotStepped"]

__getattr__ = lazy_attributes(__name__, {
    "to_megengine": (".backend", "to_megengine"),
    "from_megengine": (".backend", "from_megengine"),
    "trace": (".backend", "trace"),
    "availability": (".backend", "availability"),
    "megengine_python": (".backend", "megengine_python"),
    "megengine_importable": (".backend", "megengine_importable"),
    "MegEngineSetup": (".build", "MegEngineSetup"),
    "MultipleOptimizer": (".build", "MultipleOptimizer"),
    "MultipleScheduler": (".build", "MultipleScheduler"),
    "PlanScheduler": (".driver", "PlanScheduler"),
    "NotStepped": (".driver", "NotStepped"),
}, {"megengine": "MegEngine 1.13 needs Python <= 3.10: run `./dev setup` (it builds .venv-mge), or see "
                 "docs/megengine.md"})
