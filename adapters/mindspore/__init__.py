"""The MindSpore 2.10 backend: plans to real MindSpore optimizers, traces, lr lists, and back.

Modules (docs/mindspore.md has the map, the forms, the traps and the tolerances):

* :mod:`.build` -- :func:`to_mindspore` (forms ``list``, ``cell``, ``experimental``)
  and :func:`to_mindspore_lists`; :mod:`.choose` picks each plan optimizer's MindSpore
  optimizer (native or torch-exact), :mod:`.families` builds it, :mod:`.optim` has the
  constructors, :mod:`.setup` the result;
* :mod:`.driver` (values written per update from one value source), :mod:`.guard`
  (every update checks the horizon and the driver's clock, and clips gradients),
  :mod:`.schedulers` (MindSpore's experimental lr_schedulers);
* :mod:`.cells`, :mod:`.nodecells`, :mod:`.exprcells` -- ``LearningRateSchedule``
  cells: MindSpore's own where exact, generated float64 translations otherwise;
* :mod:`.tracing` and :mod:`.runner` -- the ``mindspore-list``, ``mindspore-cell`` and
  ``mindspore-experimental`` trace backends (many updates per compiled call);
* :mod:`.read` -- :func:`from_mindspore`; :mod:`.convert` -- float32 lists and the list
  export (numpy only: no MindSpore needed).

Importing this package imports no framework.
"""

from __future__ import annotations

from optbridge._lazy import lazy_attributes

__all__ = ["to_mindspore", "to_mindspore_lists", "from_mindspore", "trace_list", "trace_cell", "trace_experimental",
           "MindSporeSetup"]

__getattr__ = lazy_attributes(__name__, {
    "to_mindspore": (".build", "to_mindspore"),
    "to_mindspore_lists": (".build", "to_mindspore_lists"),
    "MindSporeSetup": (".setup", "MindSporeSetup"),
    "from_mindspore": (".read", "from_mindspore"),
    "trace_list": (".tracing", "trace_list"),
    "trace_cell": (".tracing", "trace_cell"),
    "trace_experimental": (".tracing", "trace_experimental"),
}, {"mindspore": "pip install 'optbridge[mindspore]' (mindspore==2.10.0)"})
