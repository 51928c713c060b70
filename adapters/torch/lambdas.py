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

from functools import lru_cache
from typing import Any

from optbridge.errors import EvaluationError
from optbridge.expr import Expr, parse

__all__ = ["Lambda"]


#: Steps evaluated at once: torch calls an lr_lambda once per step, and evaluating the
#: expression over a whole chunk (the same vectorised evaluation the reference uses)
#: makes a call a list lookup.
CHUNK = 4096
_VALUES: dict[str, tuple[int, int, list[float]]] = {}


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Expr:
    return parse(source, path="lr_lambda")


def _chunk(source: str, epoch: int) -> float:
    import numpy as np
    e = _compiled(source)
    try:
        vals = e(np.arange(epoch, epoch + CHUNK, dtype=np.int64)).tolist()  # type: ignore[union-attr]
    except EvaluationError:  # fails somewhere in the chunk: evaluate this step alone (raises if it fails)
        return float(e(epoch))  # type: ignore[arg-type]
    if len(_VALUES) >= 256:
        _VALUES.clear()
    _VALUES[source] = (epoch, epoch + CHUNK, vals)
    return vals[0]


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
            c = _VALUES.get(self.expr)
            if c is not None and c[0] <= epoch < c[1]:
                return c[2][epoch - c[0]]
            return _chunk(self.expr, epoch)
        return float(_compiled(self.expr)(epoch))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"Lambda({self.expr!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lambda) and other.expr == self.expr

    def __hash__(self) -> int:
        return hash(("Lambda", self.expr))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Lambda, (self.expr,))
