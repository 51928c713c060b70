"""The MegEngine 1.13 backend: plans to real MegEngine optimizers and drivers, and back.

Modules (the same skeleton as every adapter package):

* :mod:`.backend` -- the entry points ``to_megengine``, ``from_megengine`` and the
  ``"megengine"`` trace backend, usable from any interpreter (in-process where
  ``megengine`` imports, through the persistent worker elsewhere), the MegEngine
  interpreter's location and :func:`~.backend.availability`; imports no MegEngine.
* :mod:`.build` -- :func:`to_megengine`: optimizers (MegEngine's own or optbridge's
  torch-exact ones), one scheduler per optimizer, :class:`MegEngineSetup`,
  ``MultipleOptimizer`` / ``MultipleScheduler``.
* :mod:`.driver` -- :class:`PlanScheduler` (the reference's values through
  ``optbridge.source.ValueSource``) and the guard on each optimizer's ``step``.
* :mod:`.read` -- :func:`from_megengine`.
* :mod:`.tracing` -- the trace backend, in-process.
* :mod:`.optimizers` -- torch-exact optimizers in MegEngine ops, and the measured
  native-vs-torch table.
* :mod:`.patches` -- repairs of MegEngine bugs (LAMB's constructor, SGD's
  ``load_state_dict``, the momentum buffer created only at construction).
* :mod:`.lrfind` -- the lr range test runner.

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
