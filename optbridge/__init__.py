"""optbridge: move training hyperparameter setups between PyTorch, MindSpore and MegEngine exactly.

The public surface::

    plan = optbridge.load("config.yaml")      # canonical IR, torch- or MindSpore-style dialect
    tr = optbridge.trace(plan, 1000)          # exact per-step values, tr["lr"].shape == (groups, 1000)
    optbridge.dump(plan, "plan.json")

``import optbridge`` imports no framework (and not even numpy): the evaluator,
the traces and every backend load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import ir
from .errors import BackendUnavailable, ConfigError, EvaluationError, OptbridgeError, UnsupportedError
from .plan import Clip, Group, OptimizerSpec, Plan, Selector
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

_LAZY = {
    "trace": ("optbridge.tracing", "trace"),
    "Trace": ("optbridge.tracing", "Trace"),
    "ParamRecord": ("optbridge.params", "ParamRecord"),
    "resolve": ("optbridge.params", "resolve"),
    "recipes": ("optbridge.recipes", None),
    "Fidelity": ("optbridge.report", "Fidelity"),
    # backends (adapters/, installed as optbridge_adapters); each imports its framework lazily
    "to_torch": ("optbridge_adapters.torch_backend", "to_torch"),
    "from_torch": ("optbridge_adapters.torch_backend", "from_torch"),
    "to_mindspore": ("optbridge_adapters.mindspore_backend", "to_mindspore"),
    "to_mindspore_lists": ("optbridge_adapters.mindspore_backend", "to_mindspore_lists"),
    "from_mindspore": ("optbridge_adapters.mindspore_backend", "from_mindspore"),
    "to_megengine": ("optbridge_adapters.megengine_backend", "to_megengine"),
    "from_megengine": ("optbridge_adapters.megengine_backend", "from_megengine"),
}


def __getattr__(name: str) -> Any:  # PEP 562: numpy-using modules load on first use
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'optbridge' has no attribute {name!r}")
