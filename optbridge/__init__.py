"""optbridge: move training hyperparameter setups between PyTorch, MindSpore and MegEngine exactly.

The public surface::

    plan = optbridge.load("config.yaml")      # canonical IR, torch- or MindSpore-style dialect
    tr = optbridge.trace(plan, 1000)          # exact per-step values, tr["lr"].shape == (groups, 1000)
    optbridge.dump(plan, "plan.json")

``import optbridge`` imports no framework (and not even numpy): the evaluator,
the traces and every backend load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ir
from .errors import BackendUnavailable, ConfigError, EvaluationError, OptbridgeError, UnsupportedError
from .plan import Clip, Group, OptimizerSpec, Plan, Selector
from .entry import (from_megengine, from_mindspore, from_torch, to_megengine, to_mindspore, to_mindspore_lists,
                    to_torch)
from ._lazy import lazy_attributes
from .serialize import dump, dumps, load, loads, to_dict, from_dict

if TYPE_CHECKING:  # pragma: no cover
    from .tracing import Trace, trace
    from .params import ParamRecord, resolve

__version__ = "0.1.0"

__all__ = [
    "ir", "Plan", "OptimizerSpec", "Group", "Selector", "Clip",
    "load", "loads", "dump", "dumps", "to_dict", "from_dict",
    "trace", "Trace", "ParamRecord", "resolve", "recipes", "Fidelity",
    "to_torch", "from_torch", "to_mindspore", "to_mindspore_lists", "from_mindspore", "to_megengine", "from_megengine",
    "OptbridgeError", "ConfigError", "EvaluationError", "UnsupportedError", "BackendUnavailable",
]

__getattr__ = lazy_attributes(__name__, {
    "trace": (".tracing", "trace"),
    "Trace": (".tracing", "Trace"),
    "ParamRecord": (".params", "ParamRecord"),
    "resolve": (".params", "resolve"),
    "recipes": (".recipes", None),
    "Fidelity": (".report", "Fidelity"),
})
