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
new runner's Parameter values into the kept one's (in-place ``copy_``, in walk
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
from collections.abc import Mapping
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn
from mindspore.common import dtype as mstype
from mindspore.experimental.optim import Optimizer as ExperimentalOptimizer
from mindspore.experimental.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau, SequentialLR
from mindspore.ops import Primitive
from mindspore.ops.composite import base as composite

from .setup import Holder, MindSporeSetup

__all__ = ["structure", "python_side", "Pool", "POOL", "Setups", "SETUPS", "SKIP", "reuse_enabled"]

#: Attributes left out of the key: MindSpore's per-instance bookkeeping (never read by a graph: creation
#: times, ids, compile caches, names of parameters, the arguments an nn optimizer was built with, kept
#: for MindSpore's boost module, and what its first call records: the scope, the init and refresh flags, the
#: mutable-argument flags, the method parsed) and optbridge's guard (Python side: ``Guarded.__call__``).
SKIP = frozenset({"_create_time", "_id", "_compile_cache", "_phase_cache", "arguments_key", "init_params",
                  "init_args", "init_learning_rate", "_exist_names", "_exist_objs", "_lazy_user_parameters",
                  "_scope", "_init_flag", "_is_check_and_refresh", "_mutable_flags", "__parse_method__",
                  "optbridge_guard"})
#: Dicts keyed by parameter names (unique per instance): their values count, in order, not their keys.
_NAME_KEYED = frozenset({"_params", "_params_list"})
#: Per class, attributes only Python reads (never a compiled graph), besides a class's own ``PYTHON_SIDE``
#: (optbridge's exact optimizers): an experimental optimizer's ``defaults`` fill groups added later
#: (``add_param_group``). Left out of the key; :meth:`Setups.adopt` copies them over.
_PYTHON_SIDE: dict[type, frozenset[str]] = {ExperimentalOptimizer: frozenset({"defaults"})}
#: Entries of ``param_groups`` dicts only Python reads: an lr_scheduler's ``initial_lr`` (its ``base_lrs`` are
#: its own attribute).
_GROUP_PYTHON_SIDE = frozenset({"initial_lr"})
_SCALARS = (bool, int, float, str, type(None), np.generic)
_OBJECTS = (nn.Cell, Primitive, composite.HyperMap, composite.Map, composite.MultitypeFuncGraph, LRScheduler)


class _NotReusable(Exception):
    pass


def _walk(o: Any, out: list[str], params: list[Parameter], memo: dict[int, tuple[int, Any]],
          strict: bool = False) -> None:
    if isinstance(o, _SCALARS):
        out.append(f"{type(o).__name__}:{o!r}")
        return
    if id(o) in memo:  # the same object again (a shared Parameter, a back-reference): its first position
        out.append(f"@{memo[id(o)][0]}")
        return
    memo[id(o)] = (len(memo), o)  # holding o: a list made for the walk keeps its id while the walk runs
    if isinstance(o, Parameter):
        if o.has_init:
            o.init_data()
        out.append(f"P{tuple(o.shape)}{o.dtype}{o.requires_grad}")
        if strict and o.name.startswith("optbridge_horizon"):  # strict: a trace's horizon counts by its value
            out.append(o.asnumpy().tobytes().hex())
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
            _walk(x, out, params, memo, strict)
        out.append("]")
    elif isinstance(o, dict):
        out.append(f"{type(o).__qualname__}{{")
        for k, x in o.items():
            _walk(k, out, params, memo, strict)
            _walk(x, out, params, memo, strict)
        out.append("}")
    elif isinstance(o, (set, frozenset)) and all(isinstance(x, _SCALARS) for x in o):
        out.append(f"{type(o).__qualname__}{sorted(map(repr, o))}")
    elif isinstance(o, _OBJECTS) or (dataclasses.is_dataclass(o) and not isinstance(o, type)):
        t = type(o)
        out.append(f"{t.__module__}.{t.__qualname__}(")
        skip = SKIP if strict else SKIP | python_side(o)
        for k, x in vars(o).items():
            if k in skip:
                continue
            out.append(k)
            if k in _NAME_KEYED and isinstance(x, (dict, list)):
                x = list(x.values()) if isinstance(x, dict) else list(x)
            elif k.startswith("_lazy_") and not x:  # hooks: None until the first call, then empty
                x = None
            elif k == "param_groups" and isinstance(x, list) and not strict:
                x = [{n: v for n, v in g.items() if n not in _GROUP_PYTHON_SIDE} if isinstance(g, dict) else g
                     for g in x]
            _walk(x, out, params, memo, strict)
        out.append(")")
    else:
        raise _NotReusable(type(o).__qualname__)


def python_side(o: Any) -> frozenset[str]:
    """The attributes of ``o`` only Python reads (see :data:`_PYTHON_SIDE`)."""
    names: frozenset[str] = getattr(type(o), "PYTHON_SIDE", frozenset())
    for t, more in _PYTHON_SIDE.items():
        if isinstance(o, t):
            names = names | more
    return names


def structure(runner: Any, strict: bool = False) -> tuple[str, list[Parameter]] | None:
    """The key of ``runner``'s graph and its Parameters in walk order (None: not reusable, see the module doc).

    ``strict`` (the compiled runners' :class:`Pool`) also counts what only Python reads (:func:`python_side`,
    ``initial_lr``) and a trace's movable guard horizon by its value: the runners' pool keeps the key it had
    before the training loop's optimizers were reused (only the loop's reuse re-walks the kept objects).
    """
    out: list[str] = [str(ms.get_context("mode"))]
    params: list[Parameter] = []
    try:
        _walk(runner, out, params, {}, strict)
    except _NotReusable:
        return None
    return "|".join(out), params


class Pool:
    """Runners kept by :func:`structure` key, least recently used out first.

    Args:
        size: How many runners to keep.
    """

    #: Whether the key is :func:`structure`'s strict one.
    strict = True

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._kept: OrderedDict[str, tuple[Any, list[Parameter]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def take(self, runner: Any) -> Any:
        """A kept runner of ``runner``'s structure holding ``runner``'s Parameter values, else ``runner`` (kept)."""
        found = self._match(runner)
        return runner if found is None else found[0]

    def _match(self, obj: Any) -> tuple[Any, dict[int, Parameter], str, list[Parameter]] | None:
        """The kept object of ``obj``'s key with ``obj``'s Parameter values copied in, ``id(obj's Parameter) -> kept
        Parameter``, the key and ``obj``'s Parameters; None when ``obj`` is kept (or not reusable)."""
        found = structure(obj, self.strict)
        if found is None:
            self.misses += 1
            return None
        key, params = found
        kept = self._kept.get(key)
        if kept is None:
            self.misses += 1
            self._keep(key, obj, params)
            return None
        self.hits += 1
        self._kept.move_to_end(key)
        old, old_params = kept
        for dst, src in zip(old_params, params):
            dst.copy_(src)  # in place, as ops.assign writes, at ~40% of its cost
        return old, {id(src): dst for src, dst in zip(params, old_params)}, key, params

    def _keep(self, key: str, obj: Any, params: list[Parameter]) -> None:
        self._kept[key] = (obj, params)
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)


#: The pool the compiled trace path uses (per process).
POOL = Pool()

_SCHEDULERS = (LRScheduler, SequentialLR, ReduceLROnPlateau)


def _rebind(o: Any, mapping: Mapping[int, Any], seen: set[int]) -> Any:
    """``o`` with the objects ``mapping`` names replaced: lists, tuples and dicts rebuilt, experimental
    lr_schedulers rebound in place (they hold the optimizer and its lr Parameters); anything else as it is."""
    if id(o) in mapping:
        return mapping[id(o)]
    if type(o) is list:
        return [_rebind(x, mapping, seen) for x in o]
    if type(o) is tuple:
        return tuple(_rebind(x, mapping, seen) for x in o)
    if type(o) is dict:
        return {k: _rebind(x, mapping, seen) for k, x in o.items()}
    if isinstance(o, _SCHEDULERS) and id(o) not in seen:
        seen.add(id(o))
        for k, x in list(vars(o).items()):
            setattr(o, k, _rebind(x, mapping, seen))
    return o


class Setups(Pool):
    """The optimizers of training-loop traces (``fast=False``), kept and reused across traces of one structure.

    A training-loop trace calls each optimizer once per update, and its first call compiles the optimizer's graph
    (0.2-0.4 s, most of a short trace). :meth:`adopt` swaps a new setup's optimizers for kept ones of the same
    :func:`structure` (the key of the optimizers together, so the Parameters they share count), after making the
    kept ones hold exactly the new ones' state:

    * every Parameter value (in-place ``copy_``, walk order): probes, lr lists, moments, counters, driven values;
    * the Python side the key leaves out: the guard, :func:`python_side` attributes, ``param_groups`` entries
      (an lr_scheduler's ``initial_lr``);

    then checks that the kept optimizers' key is the new ones' again (any Python state not restored shows there:
    the new optimizers are kept instead) and points the setup's Python objects at the kept Parameters: probes,
    holders, the driver's targets and clock, and the lr_schedulers it steps. The setup then moves the kept graph
    exactly as it would have moved its own (tests/test_mindspore_trace.py compares traces bit for bit).
    """

    strict = False

    def adopt(self, setup: MindSporeSetup, probes: Mapping[str, list[Parameter]]
              ) -> tuple[MindSporeSetup, dict[str, list[Parameter]]]:
        """``setup`` and ``probes`` on kept optimizers of the same structure, or as they are (the new ones kept)."""
        new = tuple(setup.optimizers)
        found = self._match(new)
        if found is None:
            return setup, {g: list(ps) for g, ps in probes.items()}
        kept, mapping, key, params = found
        mapping.update({id(f): k for f, k in zip(new, kept)})
        for f, k in zip(new, kept):
            if hasattr(f, "optbridge_guard"):
                k.optbridge_guard = f.optbridge_guard
            side = python_side(f)
            for name in side:
                if hasattr(f, name):
                    setattr(k, name, _rebind(getattr(f, name), mapping, set()))
            if "param_groups" not in side and isinstance(getattr(f, "param_groups", None), list):
                for dk, df in zip(k.param_groups, f.param_groups):
                    dk.clear()
                    dk.update(_rebind(df, mapping, set()))
        again = structure(kept, self.strict)
        if again is None or again[0] != key:  # Python state the walk sees was not restored: keep the new ones
            self.hits, self.misses = self.hits - 1, self.misses + 1
            self._keep(key, new, params)
            return setup, {g: list(ps) for g, ps in probes.items()}
        seen: set[int] = set()
        if setup.driver is not None:
            setup.driver.rebind(mapping)
            for st in setup.driver.steppers:
                st.scheduler = _rebind(st.scheduler, mapping, seen)
        holders = {k: Holder(h.kind, mapping.get(id(h.obj), h.obj)) for k, h in setup.holders.items()}
        out = dataclasses.replace(
            setup, optimizers=tuple(kept), holders=holders,
            params={g: [mapping.get(id(p), p) for p in ps] for g, ps in setup.params.items()},
            lr={g: mapping.get(id(v), v) for g, v in setup.lr.items()},
            hypers={g: {h: mapping.get(id(v), v) for h, v in d.items()} for g, d in setup.hypers.items()})
        return out, {g: [mapping.get(id(p), p) for p in ps] for g, ps in probes.items()}


#: The optimizers the training-loop trace path reuses (per process).
SETUPS = Setups()


def reuse_enabled() -> bool:
    """Whether the trace backends reuse runners (``OPTBRIDGE_MS_REUSE=0`` turns it off)."""
    return os.environ.get("OPTBRIDGE_MS_REUSE", "1") != "0"
