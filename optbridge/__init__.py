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
from ._lazy import lazy_attributes
from .entry import (
    from_megengine,
    from_mindspore,
    from_torch,
    record,
    to_megengine,
    to_mindspore,
    to_mindspore_lists,
    to_torch,
)
from .errors import BackendUnavailable, ConfigError, EvaluationError, OptbridgeError, UnsupportedError
from .plan import Clip, Group, OptimizerSpec, Plan, Selector
from .serialize import dump, dumps, from_dict, load, loads, to_dict

if TYPE_CHECKING:  # pragma: no cover
    from .params import ParamRecord, resolve
    from .port import PortResult, port
    from .tracing import Trace, trace

__version__ = "0.1.0"

__all__ = [
    "ir", "Plan", "OptimizerSpec", "Group", "Selector", "Clip",
    "load", "loads", "dump", "dumps", "to_dict", "from_dict",
    "trace", "Trace", "ParamRecord", "resolve", "recipes", "Fidelity",
    "to_torch", "from_torch", "to_mindspore", "to_mindspore_lists", "from_mindspore", "to_megengine", "from_megengine",
    "from_lightning", "record", "port", "PortResult",
    "convert_state", "read_state", "save_state", "load_state", "OptimizerState", "SchedulePosition",
    "recover_groups", "Recovered", "RecoveredGroups", "describe_schedule",
    "map_names", "map_plan", "NameMap", "NameRules", "readable_selectors",
    "lr_find", "LRFindResult",
    "OptbridgeError", "ConfigError", "EvaluationError", "UnsupportedError", "BackendUnavailable",
]

__getattr__ = lazy_attributes(__name__, {
    "trace": (".tracing", "trace"),
    "Trace": (".tracing", "Trace"),
    "ParamRecord": (".params", "ParamRecord"),
    "resolve": (".params", "resolve"),
    "recipes": (".recipes", None),
    "Fidelity": (".report", "Fidelity"),
    # closed forms from recorded or sampled values (optbridge.recover.recover for one series)
    "recover_groups": (".recover", "recover_groups"),
    "Recovered": (".recover", "Recovered"),
    "RecoveredGroups": (".recover", "RecoveredGroups"),
    "describe_schedule": (".recover", "describe"),
    # parameter names between frameworks, readable selectors
    "map_names": (".names", "map_names"),
    "map_plan": (".names", "map_plan"),
    "NameMap": (".names", "NameMap"),
    "NameRules": (".names", "NameRules"),
    "readable_selectors": (".describe_groups", "readable_selectors"),
    # the lr range test
    "lr_find": (".lrfind", "lr_find"),
    "LRFindResult": (".lrfind_result", "LRFindResult"),
    # generated code for a framework (``optbridge.port(...)``: the module is callable)
    "port": (".port", None),
    "PortResult": (".port", "PortResult"),
    # optimizer state between frameworks
    "convert_state": (".state", "convert_state"),
    "read_state": (".state", "read_state"),
    "save_state": (".state", "save_state"),
    "load_state": (".state", "load_state"),
    "OptimizerState": (".state", "OptimizerState"),
    "SchedulePosition": (".state", "SchedulePosition"),
    # Lightning's configure_optimizers() result (imports torch only when called)
    "from_lightning": ("optbridge_adapters.torch.lightning", "from_lightning"),
}, {"torch": "install torch: pip install 'optbridge[torch]'"})
