"""The MindSpore 2.10 backend: plans to real MindSpore optimizers, traces, lr lists, and back.

Modules (the same skeleton as every adapter package):

* :mod:`.build` -- :func:`to_mindspore` (forms ``list``, ``cell``, ``experimental``,
  chosen by ``form="auto"``) and :func:`to_mindspore_lists`;
* :mod:`.read` -- :func:`from_mindspore`: list-function specs, cells, nn optimizer
  group setups and experimental schedulers back into a plan;
* :mod:`.tracing` -- the ``mindspore-list``, ``mindspore-cell`` and
  ``mindspore-experimental`` trace backends;
* :mod:`.cells` -- ``LearningRateSchedule`` cells (MindSpore's own where exact,
  generated otherwise); :mod:`.optim` -- optimizers, experimental schedulers and the
  per-step driver; :mod:`.convert` -- float32 lists and ``optbridge convert``
  (numpy only: no MindSpore needed).

Importing this package imports no framework. See docs/mindspore.md for the form
table, the traps and the tolerances.
"""

from __future__ import annotations

from optbridge._lazy import lazy_attributes

__all__ = ["to_mindspore", "to_mindspore_lists", "from_mindspore", "trace_list", "trace_cell", "trace_experimental",
           "MindSporeSetup"]

__getattr__ = lazy_attributes(__name__, {
    "to_mindspore": (".build", "to_mindspore"),
    "to_mindspore_lists": (".build", "to_mindspore_lists"),
    "MindSporeSetup": (".build", "MindSporeSetup"),
    "from_mindspore": (".read", "from_mindspore"),
    "trace_list": (".tracing", "trace_list"),
    "trace_cell": (".tracing", "trace_cell"),
    "trace_experimental": (".tracing", "trace_experimental"),
}, {"mindspore": "pip install 'optbridge[mindspore]' (mindspore==2.10.0)"})
