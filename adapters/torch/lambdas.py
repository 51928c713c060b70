"""``Lambda``: a portable ``lr_lambda`` for torch's LambdaLR / MultiplicativeLR.

``Lambda("0.95 ** epoch")`` is a callable that torch calls with the scheduler's
counter; it evaluates an optbridge expression (:mod:`optbridge.expr`: parsed with
a whitelist, never executed as Python). Because it is an expression and not a
Python function:

* :func:`optbridge.from_torch` imports it exactly as a
  ``lambda`` / ``multiplicative`` node (a plain Python function can only be
  sampled into a table);
* it pickles, and torch's ``LambdaLR.state_dict()`` stores it: torch saves the
  ``__dict__`` of callable objects, which here is ``{"expr": "<source>"}``
  (plain data, loadable with ``torch.load(weights_only=True)``).

This module does not import torch.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from typing import Any

from optbridge import ir
from optbridge.errors import EvaluationError
from optbridge.expr import Expr, parse
from optbridge.source import CHUNK

__all__ = ["Lambda"]

#: Expressions whose value source is kept (torch calls an lr_lambda once per step; the
#: source evaluates :data:`optbridge.source.CHUNK` steps at once, so a call is a list lookup).
_KEEP = 64
_SOURCES: OrderedDict[str, Any] = OrderedDict()


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Expr:
    return parse(source, path="lr_lambda")


def _source(expr: str) -> Any:
    """The :class:`optbridge.source.ValueSource` of ``expr`` (base 1: the value is the expression's), LRU-kept."""
    src = _SOURCES.get(expr)
    if src is None:
        from optbridge.slots import Slot
        from optbridge.source import ValueSource  # numpy loads on the first call
        node = ir.Lambda(expr=_compiled(expr))
        src = ValueSource([Slot("lr_lambda", "", 0, 0, "lr", "lr", None, node, 1.0, "lr_lambda")])
        _SOURCES[expr] = src
        if len(_SOURCES) > _KEEP:
            _SOURCES.popitem(last=False)
    else:
        _SOURCES.move_to_end(expr)
    return src


#: ``expr -> first step of a chunk that failed``: steps of that chunk are evaluated one by one.
_FAILED: dict[str, int] = {}


def _value(expr: str, epoch: int) -> float:
    bad = _FAILED.get(expr)
    if bad is None or not bad <= epoch < bad + CHUNK:
        try:
            return float(_source(expr).row(epoch)[0])
        except EvaluationError:  # undefined somewhere in the chunk: step by step there (raises where undefined)
            if len(_FAILED) >= _KEEP:
                _FAILED.clear()
            _FAILED[expr] = epoch
    return float(_compiled(expr)(epoch))


class Lambda:
    """An ``lr_lambda`` from an optbridge expression, e.g. ``Lambda("min(1, (epoch + 1) / 500)")``.

    Args:
        expr: The expression's source (the body of the lambda; the counter may be
            called ``epoch``, ``step``, ``k``, ...) or a parsed
            :class:`optbridge.expr.Expr`.

    Raises:
        ConfigError: The expression is invalid (the message names the offending part).
    """

    def __init__(self, expr: str | Expr) -> None:
        source = expr.source if isinstance(expr, Expr) else expr
        # the only instance attribute: torch's LambdaLR.state_dict() copies __dict__
        self.expr: str = _compiled(source).source

    @property
    def parsed(self) -> Expr:
        """The parsed expression."""
        return _compiled(self.expr)

    def __call__(self, epoch: Any) -> float:
        if type(epoch) is int and epoch >= 0:
            return _value(self.expr, epoch)
        return float(_compiled(self.expr)(epoch))

    def __repr__(self) -> str:
        return f"Lambda({self.expr!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lambda) and other.expr == self.expr

    def __hash__(self) -> int:
        return hash(("Lambda", self.expr))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Lambda, (self.expr,))
