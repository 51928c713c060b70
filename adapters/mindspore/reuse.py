"""Compiled trace runners kept and reused across traces of the same structure.

MindSpore compiles a graph per Cell *instance*: a trace builds new optimizers, so
its :class:`~.runner.Stepper` (or :class:`~.runner.Runner`) compiles again even
when an earlier trace compiled the same graph, and compiling is most of a trace's
cost (0.25-0.5 s of a 0.4-0.7 s list-form trace, measured). Two runners compile to
the same graph when everything the graph is built from is equal except the
*values* of their Parameters: the classes, every constant (Python scalars, Tensors,
numpy arrays, primitive attributes), the shapes and dtypes of the Parameters and
which of them are the same object. :func:`structure` computes that as a key,
conservatively:

* it walks every attribute reachable from the runner (Cells, primitives,
  containers, dataclasses, experimental lr_schedulers), leaving out only MindSpore's per-instance
  bookkeeping (creation times, ids, compile caches, parameter names) and optbridge's
  Python-side guard object (:data:`SKIP`);
* Tensors and arrays count with their bytes, scalars with their ``repr``;
* any other object (a function, a lambda, an object of an unknown class) makes
  the runner not reusable (``None``): a new graph is compiled, as without the pool.

:meth:`Pool.take` then returns the kept runner of the same key, after copying the
new runner's Parameter values into the kept one's (``ops.assign``, in walk
order), so it starts from exactly the state the new one would; else it keeps the
new one. The trace reads its results from the runner's outputs only, so it is the
same trace (tests/test_mindspore_trace.py compares traces with and without the pool
bit for bit). A runner whose setup has lr_schedulers stepped from Python (they move
the new setup's Parameters) is not reused; the caller decides that.
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.experimental.optim.lr_scheduler import LRScheduler
from mindspore.ops import Primitive
from mindspore.ops.composite import base as composite

__all__ = ["structure", "Pool", "POOL", "SKIP", "reuse_enabled"]

#: Attributes left out of the key: MindSpore's per-instance bookkeeping (never read by a graph: creation
#: times, ids, compile caches, names of parameters, the arguments an nn optimizer was built with, kept
#: for MindSpore's boost module) and optbridge's guard (Python side: ``Guarded.__call__``).
SKIP = frozenset({"_create_time", "_id", "_compile_cache", "_phase_cache", "arguments_key", "init_params",
                  "init_args", "init_learning_rate", "_exist_names", "_exist_objs", "_lazy_user_parameters",
                  "optbridge_guard"})
#: Dicts keyed by parameter names (unique per instance): their values count, in order, not their keys.
_NAME_KEYED = frozenset({"_params", "_params_list"})
_SCALARS = (bool, int, float, str, type(None), np.generic)
_OBJECTS = (nn.Cell, Primitive, composite.HyperMap, composite.Map, composite.MultitypeFuncGraph, LRScheduler)


class _NotReusable(Exception):
    pass


def _walk(o: Any, out: list[str], params: list[Parameter], memo: dict[int, int]) -> None:
    if isinstance(o, _SCALARS):
        out.append(f"{type(o).__name__}:{o!r}")
        return
    if id(o) in memo:  # the same object again (a shared Parameter, a back-reference): its first position
        out.append(f"@{memo[id(o)]}")
        return
    memo[id(o)] = len(memo)
    if isinstance(o, Parameter):
        if o.has_init:
            o.init_data()
        out.append(f"P{tuple(o.shape)}{o.dtype}{o.requires_grad}")
        params.append(o)
    elif isinstance(o, Tensor):
        a = o.asnumpy()
        out.append(f"T{a.dtype}{a.shape}{a.tobytes().hex()}")
    elif isinstance(o, np.ndarray):
        out.append(f"N{o.dtype}{o.shape}{o.tobytes().hex()}")
    elif isinstance(o, mstype.Type):
        out.append(f"D{o!r}")
    elif isinstance(o, (tuple, list)):
        out.append(f"{type(o).__qualname__}[")
        for x in o:
            _walk(x, out, params, memo)
        out.append("]")
    elif isinstance(o, dict):
        out.append(f"{type(o).__qualname__}{{")
        for k, x in o.items():
            _walk(k, out, params, memo)
            _walk(x, out, params, memo)
        out.append("}")
    elif isinstance(o, (set, frozenset)) and all(isinstance(x, _SCALARS) for x in o):
        out.append(f"{type(o).__qualname__}{sorted(map(repr, o))}")
    elif isinstance(o, _OBJECTS) or (dataclasses.is_dataclass(o) and not isinstance(o, type)):
        t = type(o)
        out.append(f"{t.__module__}.{t.__qualname__}(")
        for k, x in vars(o).items():
            if k in SKIP:
                continue
            out.append(k)
            _walk(list(x.values()) if k in _NAME_KEYED and isinstance(x, dict) else x, out, params, memo)
        out.append(")")
    else:
        raise _NotReusable(type(o).__qualname__)


def structure(runner: Any) -> tuple[str, list[Parameter]] | None:
    """The key of ``runner``'s graph and its Parameters in walk order (None: not reusable, see the module doc)."""
    out: list[str] = [str(ms.get_context("mode"))]
    params: list[Parameter] = []
    try:
        _walk(runner, out, params, {})
    except _NotReusable:
        return None
    return "|".join(out), params


class Pool:
    """Runners kept by :func:`structure` key, least recently used out first.

    Args:
        size: How many runners to keep.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._kept: OrderedDict[str, tuple[Any, list[Parameter]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def take(self, runner: Any) -> Any:
        """A kept runner of ``runner``'s structure holding ``runner``'s Parameter values, else ``runner`` (kept)."""
        found = structure(runner)
        if found is None:
            self.misses += 1
            return runner
        key, params = found
        kept = self._kept.get(key)
        if kept is None:
            self.misses += 1
            self._kept[key] = (runner, params)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
            return runner
        self.hits += 1
        self._kept.move_to_end(key)
        old, old_params = kept
        for dst, src in zip(old_params, params):
            ops.assign(dst, src)
        return old


#: The pool the trace backends use (per process).
POOL = Pool()


def reuse_enabled() -> bool:
    """Whether the trace backends reuse runners (``OPTBRIDGE_MS_REUSE=0`` turns it off)."""
    return os.environ.get("OPTBRIDGE_MS_REUSE", "1") != "0"
