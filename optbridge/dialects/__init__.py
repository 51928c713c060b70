"""Config dialects: documents written in torch's or MindSpore's vocabulary.

:func:`optbridge.load` accepts, besides the canonical IR (``optbridge: 1``):

* the **torch** dialect (:mod:`optbridge.dialects.torch`): ``optimizer`` with a
  ``torch.optim`` class and its keyword arguments, ``param_groups``, and a
  ``scheduler`` written with ``torch.optim.lr_scheduler`` class names and
  keyword arguments;
* the **mindspore** dialect (:mod:`optbridge.dialects.mindspore`): a
  ``mindspore.nn`` optimizer, ``learning_rate`` given as a float, a dynamic-lr
  list function (``cosine_decay_lr``, ...), a ``LearningRateSchedule`` cell
  (``CosineDecayLR``, ...) or a concatenation of list functions, and
  ``group_params``.

Detection (:func:`detect`): an explicit ``dialect:`` key wins; an ``optbridge:``
key means the canonical IR; ``scheduler``/``schedulers``/``lr_scheduler``/
``param_groups`` mean torch; ``learning_rate``/``group_params`` (also inside
the optimizer) mean MindSpore; ``schedule``/``groups``/``optimizers`` mean the
canonical IR; then an optimizer ``type`` that only MindSpore has (``Momentum``,
``AdamWeightDecay``) means MindSpore and a torch optimizer class means torch;
anything else is read as the canonical IR.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from ._common import suggest

__all__ = ["DIALECTS", "detect", "from_dialect"]

#: Dialect names accepted by ``dialect:``.
DIALECTS = ("optbridge", "torch", "mindspore")

_TORCH_KEYS = ("scheduler", "schedulers", "lr_scheduler", "param_groups")
_MINDSPORE_KEYS = ("learning_rate", "group_params")
_CANONICAL_KEYS = ("schedule", "groups", "optimizers")
#: Optimizer names only MindSpore uses (nn.Momentum, nn.AdamWeightDecay).
_MINDSPORE_ONLY_OPTIMIZERS = ("Momentum", "AdamWeightDecay")


def detect(d: Mapping[str, Any]) -> str:
    """Which dialect ``d`` is written in: ``"optbridge"``, ``"torch"`` or ``"mindspore"``.

    Raises:
        ConfigError: ``dialect:`` names an unknown dialect, or the document mixes
            torch-only and MindSpore-only keys without saying which it is.
    """
    if "dialect" in d:
        name = d["dialect"]
        if name not in DIALECTS:
            raise ConfigError("dialect", "must be one of " + ", ".join(DIALECTS) + suggest(name, DIALECTS), name)
        return str(name)
    if "optbridge" in d:
        return "optbridge"
    opt = d.get("optimizer")
    opt = opt if isinstance(opt, Mapping) else {}
    torch_keys = [k for k in _TORCH_KEYS if k in d]
    ms_keys = [k for k in _MINDSPORE_KEYS if k in d] + (["optimizer.learning_rate"] if "learning_rate" in opt else [])
    if torch_keys and ms_keys:
        raise ConfigError("dialect", "cannot tell the dialect: the document has torch keys (" + ", ".join(torch_keys)
                          + ") and MindSpore keys (" + ", ".join(ms_keys) + "); add dialect: torch or dialect: mindspore",
                          None, show_value=False)
    if torch_keys:
        return "torch"
    if ms_keys:
        return "mindspore"
    if any(k in d for k in _CANONICAL_KEYS):
        return "optbridge"
    otype = opt.get("type")
    if isinstance(otype, str):
        from ..plan import OPTIMIZER_DEFAULTS
        if otype in _MINDSPORE_ONLY_OPTIMIZERS:
            return "mindspore"
        if otype in OPTIMIZER_DEFAULTS:
            return "torch"
    return "optbridge"


def from_dialect(name: str, d: Mapping[str, Any]):  # -> Plan (no import at module level: serialize imports us lazily)
    """Build the :class:`~optbridge.plan.Plan` of document ``d`` written in dialect ``name``.

    Raises:
        ConfigError: naming the path of the bad field in the dialect's own terms.
    """
    if name == "torch":
        from .torch import from_torch
        return from_torch(d)
    if name == "mindspore":
        from .mindspore import from_mindspore
        return from_mindspore(d)
    if name == "optbridge":
        from ..serialize import from_dict
        return from_dict({k: v for k, v in d.items() if k != "dialect"})
    raise ConfigError("dialect", "must be one of " + ", ".join(DIALECTS) + suggest(name, DIALECTS), name)
