"""Config dialects: documents written in a framework's or a library's own vocabulary.

:func:`optbridge.load` reads, besides the canonical IR (``optbridge: 1``,
:mod:`optbridge.dialects.canonical`):

* **torch** (:mod:`optbridge.dialects.torch`): a ``torch.optim`` optimizer,
  ``param_groups`` and ``torch.optim.lr_scheduler`` schedulers;
* **mindspore** (:mod:`optbridge.dialects.mindspore`): a ``mindspore.nn``
  optimizer, ``learning_rate`` (a float, a list function, a cell) and
  ``group_params``;
* **mmengine** (:mod:`optbridge.dialects.mmengine`): ``optim_wrapper`` and
  ``param_scheduler`` of an MMEngine config;
* **timm** (:mod:`optbridge.dialects.timm`): ``create_scheduler_v2`` /
  ``scheduler_kwargs`` arguments, ``create_optimizer_v2`` arguments and timm's
  param groups;
* **hf** (:mod:`optbridge.dialects.hf`): Hugging Face ``TrainingArguments``
  fields and ``transformers.get_scheduler`` names.

Every dialect module has ``parse(doc, ...) -> Plan`` and ``looks_like(doc) -> bool``.
:data:`TABLE` lists them (imported lazily, on first use), so a new dialect is
one row.

Detection (:func:`detect`): an explicit ``dialect:`` key wins; an ``optbridge:``
key means the canonical IR; then the tiers of :data:`TABLE` are asked in order
(library dialects, whose keys are their own; then torch and MindSpore; then the
canonical keys ``schedule``/``groups``/``optimizers``): the first tier with a
match decides, and two matches in one tier are an error asking for
``dialect:``. Last, an optimizer ``type`` only MindSpore has (``Momentum``,
``AdamWeightDecay``) means MindSpore and a torch optimizer class means torch;
anything else is read as the canonical IR.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ConfigError
from ._common import suggest

if TYPE_CHECKING:  # pragma: no cover
    from ..plan import Plan

__all__ = ["DIALECTS", "TABLE", "Dialect", "detect", "from_dialect", "module"]


class Dialect(NamedTuple):
    """One row of the dialect table.

    Attributes:
        name: The ``dialect:`` value.
        module: Dotted path of the module with ``parse`` and ``looks_like``.
        tier: Detection tier (lower is asked first); two matches in one tier are ambiguous.
    """

    name: str
    module: str
    tier: int


#: The dialects, in the order ``dialect:`` lists them.
TABLE: tuple[Dialect, ...] = (
    Dialect("optbridge", "optbridge.dialects.canonical", 2),
    Dialect("torch", "optbridge.dialects.torch", 1),
    Dialect("mindspore", "optbridge.dialects.mindspore", 1),
    Dialect("mmengine", "optbridge.dialects.mmengine", 0),
    Dialect("timm", "optbridge.dialects.timm", 0),
    Dialect("hf", "optbridge.dialects.hf", 0),
)

#: Dialect names accepted by ``dialect:``.
DIALECTS: tuple[str, ...] = tuple(row.name for row in TABLE)

_ROWS = {row.name: row for row in TABLE}
#: Optimizer names only MindSpore uses (nn.Momentum, nn.AdamWeightDecay).
_MINDSPORE_ONLY_OPTIMIZERS = ("Momentum", "AdamWeightDecay")


def _unknown(name: object) -> ConfigError:
    return ConfigError("dialect", "must be one of " + ", ".join(DIALECTS) + suggest(name, DIALECTS), name)


def module(name: str) -> ModuleType:
    """The module of dialect ``name`` (imported on first use).

    Raises:
        ConfigError: ``name`` is not a dialect, or its module is not installed.
    """
    row = _ROWS.get(name) if isinstance(name, str) else None
    if row is None:
        raise _unknown(name)
    try:
        return importlib.import_module(row.module)
    except ModuleNotFoundError as e:
        if e.name != row.module:
            raise
        raise ConfigError("dialect", f"the {name} dialect is not available in this installation (no module "
                          f"{row.module})", name) from None


def detect(d: Mapping[str, Any]) -> str:
    """Which dialect ``d`` is written in (a name of :data:`DIALECTS`).

    Raises:
        ConfigError: ``dialect:`` names an unknown dialect, or two dialects of one
            tier both claim the document.
    """
    if "dialect" in d:
        name = d["dialect"]
        if not isinstance(name, str) or name not in _ROWS:
            raise _unknown(name)
        return name
    if "optbridge" in d:
        return "optbridge"
    for tier in sorted({row.tier for row in TABLE}):
        hits = [row.name for row in TABLE if row.tier == tier and _claims(row, d)]
        if len(hits) > 1:
            keys = ", ".join(str(k) for k in d)
            raise ConfigError("dialect", "cannot tell the dialect: the document reads as " + " and as ".join(hits)
                              + f" (keys: {keys}); add " + " or ".join(f"dialect: {h}" for h in hits), None,
                              show_value=False)
        if hits:
            return hits[0]
    opt = d.get("optimizer")
    otype = opt.get("type") if isinstance(opt, Mapping) else None
    if isinstance(otype, str):
        from ..plan import OPTIMIZER_DEFAULTS
        if otype in _MINDSPORE_ONLY_OPTIMIZERS:
            return "mindspore"
        if otype in OPTIMIZER_DEFAULTS:
            return "torch"
    return "optbridge"


def _claims(row: Dialect, d: Mapping[str, Any]) -> bool:
    try:
        mod = module(row.name)
    except ConfigError:  # a dialect not installed claims nothing
        return False
    return bool(mod.looks_like(d))


def from_dialect(name: str, d: Mapping[str, Any], **options: Any) -> Plan:
    """Build the :class:`~optbridge.plan.Plan` of document ``d`` written in dialect ``name``.

    Args:
        name: A name of :data:`DIALECTS`.
        d: The document.
        **options: Passed to the dialect's ``parse`` (for example ``model=`` for mmengine and timm).

    Raises:
        ConfigError: naming the path of the bad field in the dialect's own terms.
    """
    return module(name).parse(d, **options)
