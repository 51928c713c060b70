"""MindSpore optimizer state to and from optbridge's neutral form (:mod:`optbridge.state`).

MindSpore keeps optimizer state as Parameters of the optimizer cell, named
``<prefix>.<param name>``, so ``ms.save_checkpoint(optimizer or train net)`` holds
them and ``ms.load_checkpoint`` gives them back as ``{name: Parameter}``. Each
supported class has a :class:`Spec`: which Parameter holds which of torch's states,
and what counts the steps. Measured against the classes' sources (MindSpore 2.10):

* optbridge's torch-exact optimizers (``optbridge_adapters.mindspore.optimizers``):
  torch's names, ``<state>.<param>``, a float32 ``step`` per parameter; SGD's
  ``has_momentum_buffer`` is torch's "buffer exists"; a parameter with step 0 has no
  state (torch's empty entry);
* ``nn.SGD`` (``accum`` = momentum buffer, ``stat`` = 1 until the first update),
  ``nn.Momentum`` (``moments``: ``v = mu*v + g`` from zero, which equals torch's buffer
  ``buf = g`` at the first update), ``nn.Adam`` (``moment1``, ``moment2``, ``vhat``;
  the step is the int32 ``global_step``; ``beta1_power`` / ``beta2_power`` are float32
  running products, rebuilt bit for bit from the step when written), ``nn.Adadelta``
  (``accum``, ``accum_update``), ``nn.Adagrad`` (``accum``), ``nn.AdamWeightDecay``
  (``adam_m``, ``adam_v``: it keeps **no step**, writing into it drops the step
  unless ``lossy=True``; reading it takes the step from ``global_step``);
* ``mindspore.experimental.optim``: ``SGD`` (``accum``/``stat``), ``Adam`` / ``AdamW``
  (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, int32 ``state_step``), ``Adagrad``
  (``accum``, ``step_t``), ``Adadelta`` (``accum``, ``accum_update``; no step),
  ``Adamax`` (``exp_avg``, ``exp_inf``, ``step_t``), ``NAdam`` (``exp_avg``,
  ``exp_avg_sq``, ``mu_product_<param>`` -- a plain list the checkpoint does not hold --
  and ``step_t``), ``RAdam`` (``exp_avg``, ``exp_avg_sq``, ``step_t``), ``RMSprop``
  (``mean_square``, ``mean_grad``, ``moment``; no step).

A global counter (``global_step``, ``state_step``, ``step_t``) holds one step for
every parameter: a state whose parameters have different steps is refused there
unless ``lossy=True``. Tensors are float32 copies both ways (bit for bit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops

from optbridge.errors import ConfigError
from optbridge.names import NameMap, Overrides
from optbridge.params import ParamRecord
from optbridge.state import (
    SCALAR_STATES,
    Converted,
    OptimizerState,
    ParamState,
    TargetParam,
    apply_position,
    fit_state,
    float32_power,
    read_position,
    remap,
    single_step,
)

from .build import model_records
from .optimizers import ExactOptimizer

__all__ = ["Spec", "SPECS", "spec_of", "read_state", "write_state"]


@dataclass(frozen=True)
class Spec:
    """Where one MindSpore optimizer class keeps torch's states.

    Attributes:
        kind: torch's class name of the same state.
        label: The class, for messages (``"nn.Adam"``).
        tensors: ``(torch state, MindSpore prefix)``: Parameters ``<prefix>.<param name>``.
        counter: The int32 Parameter counting updates for all parameters (``global_step``,
            ``state_step``, ``step_t``), or None.
        step: Whether the counter is torch's per-parameter ``step`` (False: the class
            keeps none; writing a step into it is a loss).
        first: SGD's ``stat`` prefix (1 until the first update: torch's "no buffer yet").
        started_by_counter: The buffer exists once the counter is > 0 (``nn.Momentum``).
        mu_product: NAdam's per-parameter ``mu_product_<param>`` list attribute.
        powers: ``nn.Adam``'s float32 ``beta1_power`` / ``beta2_power``.
    """

    kind: str
    label: str
    tensors: tuple[tuple[str, str], ...]
    counter: str | None = None
    step: bool = True
    first: str | None = None
    started_by_counter: bool = False
    mu_product: bool = False
    powers: bool = False


_ADAM_X = (("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq"), ("max_exp_avg_sq", "max_exp_avg_sq"))

#: ``(module, class name) -> Spec`` of the native classes.
SPECS: Mapping[tuple[str, str], Spec] = {
    ("mindspore.nn.optim.sgd", "SGD"): Spec("SGD", "nn.SGD", (("momentum_buffer", "accum"),), "global_step",
                                            False, first="stat"),
    ("mindspore.nn.optim.momentum", "Momentum"): Spec("SGD", "nn.Momentum", (("momentum_buffer", "moments"),),
                                                      "global_step", False, started_by_counter=True),
    ("mindspore.nn.optim.adam", "Adam"): Spec("Adam", "nn.Adam", (("exp_avg", "moment1"), ("exp_avg_sq", "moment2"),
                                                                  ("max_exp_avg_sq", "vhat")), "global_step",
                                              powers=True),
    ("mindspore.nn.optim.adam", "AdamWeightDecay"): Spec("AdamW", "nn.AdamWeightDecay",
                                                         (("exp_avg", "adam_m"), ("exp_avg_sq", "adam_v")),
                                                         "global_step", False),
    ("mindspore.nn.optim.adadelta", "Adadelta"): Spec("Adadelta", "nn.Adadelta", (("square_avg", "accum"),
                                                                                  ("acc_delta", "accum_update")),
                                                      "global_step"),
    ("mindspore.nn.optim.ada_grad", "Adagrad"): Spec("Adagrad", "nn.Adagrad", (("sum", "accum"),), "global_step"),
    ("mindspore.experimental.optim.sgd", "SGD"): Spec("SGD", "experimental.SGD", (("momentum_buffer", "accum"),),
                                                      None, False, first="stat"),
    ("mindspore.experimental.optim.adam", "Adam"): Spec("Adam", "experimental.Adam", _ADAM_X, "state_step"),
    ("mindspore.experimental.optim.adamw", "AdamW"): Spec("AdamW", "experimental.AdamW", _ADAM_X, "state_step"),
    ("mindspore.experimental.optim.adagrad", "Adagrad"): Spec("Adagrad", "experimental.Adagrad",
                                                              (("sum", "accum"),), "step_t"),
    ("mindspore.experimental.optim.adadelta", "Adadelta"): Spec("Adadelta", "experimental.Adadelta",
                                                                (("square_avg", "accum"),
                                                                 ("acc_delta", "accum_update")), None, False),
    ("mindspore.experimental.optim.adamax", "Adamax"): Spec("Adamax", "experimental.Adamax",
                                                            (("exp_avg", "exp_avg"), ("exp_inf", "exp_inf")),
                                                            "step_t"),
    ("mindspore.experimental.optim.nadam", "NAdam"): Spec("NAdam", "experimental.NAdam",
                                                          (("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq")),
                                                          "step_t", mu_product=True),
    ("mindspore.experimental.optim.radam", "RAdam"): Spec("RAdam", "experimental.RAdam",
                                                          (("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq")),
                                                          "step_t"),
    ("mindspore.experimental.optim.rmsprop", "RMSprop"): Spec("RMSprop", "experimental.RMSprop",
                                                              (("square_avg", "mean_square"), ("grad_avg", "mean_grad"),
                                                               ("momentum_buffer", "moment")), None, False),
}


def spec_of(optimizer: Any) -> Spec | None:
    """The :class:`Spec` of a native optimizer, None for optbridge's exact ones.

    Raises:
        ConfigError: a class without a state conversion.
    """
    if isinstance(optimizer, ExactOptimizer):
        return None
    for cls in type(optimizer).__mro__:
        spec = SPECS.get((cls.__module__, cls.__name__))
        if spec is not None:
            return spec
    raise ConfigError("optimizer", "must be optbridge's exact MindSpore optimizer or one of "
                      f"{', '.join(s.label for s in SPECS.values())} (no state conversion for this class)",
                      type(optimizer).__name__)


# --------------------------------------------------------------------------- structure

def _params(optimizer: Any) -> list[Parameter]:
    return list(optimizer.parameters if isinstance(optimizer, ExactOptimizer) or not hasattr(optimizer, "_parameters")
                else optimizer._parameters)


def _group_of(optimizer: Any, params: Sequence[Parameter]) -> tuple[list[int], list[dict[str, Any]]]:
    """Each parameter's group index and each group's options in torch's keys."""
    groups = getattr(optimizer, "param_groups", None)
    if isinstance(groups, list) and groups and all(isinstance(g, Mapping) and "params" in g for g in groups):
        where = {id(p): gi for gi, g in enumerate(groups) for p in g["params"]}
        opts = [{k: v for k, v in g.items() if k != "params"} for g in groups]
        for o in opts:  # experimental groups keep torch's keys; 'betas' etc. as given
            if "lr" in o and isinstance(o["lr"], Parameter):
                o["lr"] = float(o["lr"].asnumpy())
        return [where.get(id(p), 0) for p in params], opts
    options: dict[str, Any] = {}
    if hasattr(optimizer, "vhat"):
        options["amsgrad"] = True
    mom = getattr(optimizer, "momentum", None)
    if isinstance(mom, Parameter):
        options["momentum"] = float(mom.asnumpy())
    for attr, key in (("dampening", "dampening"), ("nesterov", "nesterov"), ("use_nesterov", "nesterov")):
        if isinstance(getattr(optimizer, attr, None), (int, float, bool)):
            options[key] = getattr(optimizer, attr)
    return [0] * len(params), [options]


def _lookup(optimizer: Any, checkpoint: Mapping[str, Any] | None) -> Callable[[str], np.ndarray | None]:
    live = {p.name: p for _, p in optimizer.parameters_and_names()}
    extra = {p.name: p for p in getattr(optimizer, "mu_product", []) or [] if isinstance(p, Parameter)}

    def get(name: str) -> np.ndarray | None:
        if checkpoint is not None:
            v = checkpoint.get(name)
            if v is None and name in extra:
                return None
            if v is None:
                return None
        else:
            v = live.get(name, extra.get(name))
            if v is None:
                return None
        return np.array(v.asnumpy() if hasattr(v, "asnumpy") else v, copy=True)
    return get


# --------------------------------------------------------------------------- reading

def read_state(optimizer: Any, *, model: Any = None, scheduler: Any = None, state_dict: Any = None) -> OptimizerState:
    """The neutral state of a MindSpore optimizer (live, or a ``load_checkpoint`` dict interpreted against it).

    See :func:`optbridge.read_state`.
    """
    spec = spec_of(optimizer)
    if state_dict is not None and not isinstance(state_dict, Mapping):
        raise ConfigError("state_dict", "must be a MindSpore checkpoint dict {name: Parameter} (ms.load_checkpoint)",
                          type(state_dict).__name__)
    get = _lookup(optimizer, state_dict)
    params = _params(optimizer)
    where, groups = _group_of(optimizer, params)
    types: dict[str, str] = {}
    if model is not None:
        records, _ = model_records(model)
        types = {r.name: r.module_type for r in records}

    def need(name: str) -> np.ndarray:
        v = get(name)
        if v is None:
            raise ConfigError(f"state_dict[{name!r}]" if state_dict is not None else name,
                              "is missing: the optimizer's state holds it", None, show_value=False)
        return v

    notes: list[str] = []
    out: list[ParamState] = []
    if spec is None:
        kind = optimizer.KIND
        for p, gi in zip(params, where):
            names = [n for n in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "has_momentum_buffer",
                                 "square_avg", "grad_avg", "sum", "acc_delta", "exp_inf", "mu_product", "step")
                     if _holds_exact(optimizer, p.name, n)]
            found = {n: need(f"{n}.{p.name}") for n in names}
            if kind == "SGD":
                has = found.pop("has_momentum_buffer", np.zeros(()))
                if float(np.asarray(has)) == 0.0:
                    found.pop("momentum_buffer", None)
            elif float(found.get("step", 0.0)) == 0.0 and kind != "Adagrad":
                found = {}  # never updated: torch keeps no state
            out.append(ParamState(p.name, tuple(p.shape), gi, types.get(p.name, ""), _cast(kind, found)))
        return OptimizerState(kind, tuple(out), tuple(groups), read_position(scheduler), "mindspore:exact", ())
    kind = spec.kind
    count = None
    if spec.counter is not None:
        count = int(need(spec.counter).reshape(-1)[0])
    if spec.counter is not None and not spec.step:
        if kind == "AdamW":
            notes.append(f"{spec.label} keeps no step: the step is taken from {spec.counter} = {count} "
                         "(its update counter)")
    momentum = float(groups[0].get("momentum", 1.0)) if kind == "SGD" else None
    for p, gi in zip(params, where):
        values: dict[str, np.ndarray] = {}
        for torch_name, prefix in spec.tensors:
            if torch_name == "max_exp_avg_sq" and not (groups[gi].get("amsgrad") or hasattr(optimizer, "vhat")):
                continue  # experimental Adam/AdamW make it for every group; torch keeps it for amsgrad only
            v = get(f"{prefix}.{p.name}")
            if v is None:
                if kind == "RMSprop" and torch_name != "square_avg":
                    continue
                v = need(f"{prefix}.{p.name}")
            values[torch_name] = v
        started = True
        if spec.first is not None:
            started = float(need(f"{spec.first}.{p.name}").reshape(-1)[0]) == 0.0
        elif count is not None:
            started = count > 0
        if kind == "SGD":
            if not started or momentum == 0.0:
                values = {}  # torch: no buffer before the first update with momentum
        elif not started:
            values = {}
        else:
            if spec.counter is not None and (spec.step or kind == "AdamW"):
                values["step"] = np.asarray(count, np.float32)
            if spec.mu_product:
                mp = get(f"mu_product_{p.name}")
                if mp is None:
                    raise ConfigError(f"mu_product_{p.name}", "is missing: experimental.NAdam keeps mu_product in a "
                                      "plain list that checkpoints do not hold (read the live optimizer)", None,
                                      show_value=False)
                values["mu_product"] = mp
        out.append(ParamState(p.name, tuple(p.shape), gi, types.get(p.name, ""), _cast(kind, values)))
    if spec.powers and count:
        b1 = float(np.asarray(optimizer.beta1.asnumpy()).reshape(-1)[0])
        got = float(need("beta1_power").reshape(-1)[0])
        if got != float32_power(b1, count):
            notes.append(f"beta1_power {got!r} is not the float32 running product of beta1 over global_step "
                         f"{count}: the step is global_step")
    return OptimizerState(kind, tuple(out), tuple(groups), read_position(scheduler), f"mindspore:{spec.label}",
                          tuple(notes))


def _cast(kind: str, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: (np.asarray(v, np.float32).reshape(()) if k in SCALAR_STATES[kind] else np.asarray(v))
            for k, v in values.items()}


def _holds_exact(optimizer: ExactOptimizer, pname: str, name: str) -> bool:
    try:
        optimizer.state(pname, name)
    except ConfigError:
        return False
    return True


# --------------------------------------------------------------------------- writing

def write_state(state: OptimizerState, optimizer: Any, *, model: Any = None, names: Overrides | NameMap = None,
                scheduler: Any = None, lossy: bool = False, load: bool = True) -> Converted:
    """Load a neutral state into a MindSpore optimizer; see :func:`optbridge.convert_state`.

    The native result is the checkpoint dict ``{name: Parameter}`` of every state
    Parameter written (what ``ms.load_checkpoint`` gives for the optimizer's state).
    """
    spec = spec_of(optimizer)
    kind = optimizer.KIND if spec is None else spec.kind
    params = _params(optimizer)
    where, groups = _group_of(optimizer, params)
    types: dict[str, str] = {}
    if model is not None:
        records, _ = model_records(model)
        types = {r.name: r.module_type for r in records}
    targets = [TargetParam(ParamRecord(p.name, tuple(p.shape), types.get(p.name, ""), id(p)), gi)
               for p, gi in zip(params, where)]
    mapped, nm = remap(state, targets, names=names, frameworks=(state.origin.split(":")[0] or "source", "mindspore"))
    if spec is None:
        def holds(ps: ParamState, n: str) -> bool:
            return _holds_exact(optimizer, ps.name, n)
    else:
        own = {t for t, _ in spec.tensors} | ({"step"} if spec.step else set()) | \
              ({"mu_product"} if spec.mu_product else set())
        if spec.label == "nn.Adam" and not hasattr(optimizer, "vhat"):
            own.discard("max_exp_avg_sq")

        def holds(ps: ParamState, n: str) -> bool:
            return n in own
    fitted, fit_notes = fit_state(mapped, kind, groups, holds=holds, lossy=lossy,
                                     target="exact " + kind if spec is None else spec.label)
    notes = list(state.notes) + list(fit_notes)
    out: dict[str, Any] = {}
    if spec is None:
        _write_exact(optimizer, fitted, out)
    else:
        notes += _write_native(optimizer, spec, fitted, state, out, lossy=lossy)
    rounded = sorted({str(np.asarray(v).dtype) for p in fitted.params for v in p.values.values()} - {"float32"})
    if rounded:
        notes.append(f"state arrays of dtype {', '.join(rounded)} rounded to float32 (MindSpore's state dtype)")
    native = {name: Parameter(Tensor(value), name=name, requires_grad=False) for name, value in out.items()}
    if load:
        live = {p.name: p for _, p in optimizer.parameters_and_names()}
        live.update({p.name: p for p in getattr(optimizer, "mu_product", []) or [] if isinstance(p, Parameter)})
        for name, value in out.items():
            target = live[name]
            ops.assign(target, Tensor(np.asarray(value).reshape(target.shape).astype(_np_dtype(target))))
        # a to_mindspore setup's update counter, and an exact optimizer's join clock (groups with start_step)
        for attr in ("optbridge_updates", "update_count"):
            counter = getattr(optimizer, attr, None)
            if state.position is not None and isinstance(counter, Parameter):
                ops.assign(counter, Tensor(state.position.update, counter.dtype))
        note = apply_position(state.position, scheduler)
        if note:
            notes.append(note)
    origin = "mindspore:exact" if spec is None else f"mindspore:{spec.label}"
    result = OptimizerState(kind, fitted.params, tuple(groups), state.position, origin, ())
    return Converted(result, native, nm, tuple(notes), state.position)


def _np_dtype(p: Parameter) -> Any:
    return {ms.float32: np.float32, ms.float64: np.float64, ms.int32: np.int32}.get(p.dtype, np.float32)


def _write_exact(optimizer: ExactOptimizer, fitted: OptimizerState, out: dict[str, Any]) -> None:
    init = {"mu_product": 1.0}
    for ps in fitted.params:
        for pname, name, sp in optimizer.states():
            if pname != ps.name:
                continue
            if name == "has_momentum_buffer":
                out[sp.name] = np.float32(1.0 if "momentum_buffer" in ps.values else 0.0)
            elif name in ps.values:
                out[sp.name] = np.asarray(ps.values[name], np.float32)
            elif name == "sum":
                group = optimizer.param_groups[ps.group]
                out[sp.name] = np.full(ps.shape, group.get("initial_accumulator_value", 0.0), np.float32)
            elif name in ("step", "mu_product"):
                out[sp.name] = np.float32(init.get(name, 0.0))
            else:
                out[sp.name] = np.zeros(ps.shape, np.float32)


def _write_native(optimizer: Any, spec: Spec, fitted: OptimizerState, source: OptimizerState, out: dict[str, Any],
                  *, lossy: bool) -> list[str]:
    notes: list[str] = []
    step, step_notes = single_step(source, spec.label, lossy=lossy)
    notes += step_notes
    with_state = any(p.values for p in fitted.params)
    count = int(step) if step is not None else (source.position.update if source.position and with_state else 0)
    if spec.kind == "SGD" and with_state:
        count = max(count, 1)
    for ps in fitted.params:
        for torch_name, prefix in spec.tensors:
            key = f"{prefix}.{ps.name}"
            if torch_name == "max_exp_avg_sq" and not _has(optimizer, key):
                continue
            v = ps.values.get(torch_name)
            if v is None and spec.kind == "Adagrad":
                group = optimizer.param_groups[ps.group] if hasattr(optimizer, "param_groups") and \
                    isinstance(optimizer.param_groups, list) else {}
                init = float(group.get("initial_accumulator_value", getattr(optimizer, "accum_init", 0.0)))
                v = np.full(ps.shape, init, np.float32) if not ps.values else v
            out[key] = np.zeros(ps.shape, np.float32) if v is None else np.asarray(v, np.float32)
        if spec.first is not None:
            out[f"{spec.first}.{ps.name}"] = np.full(ps.shape, 0.0 if "momentum_buffer" in ps.values else 1.0,
                                                     np.float32)
        if spec.mu_product:
            out[f"mu_product_{ps.name}"] = np.float32(ps.values.get("mu_product", 1.0))
        if spec.label == "nn.Momentum" and ps.values == {} and with_state:
            notes.append(f"{ps.name}: no momentum buffer yet, and nn.Momentum starts every buffer at the same "
                         "global step: it starts at zero (the same first update, v = g)")
    if spec.counter == "global_step" and source.position is not None and source.position.update != count:
        if spec.step and step is not None:
            notes.append(f"global_step is {count:g} (the step count); the schedule position says update "
                         f"{source.position.update}: {spec.label} uses one counter for both")
        else:
            count = source.position.update  # the lr clock of an optimizer whose state has no step
    if spec.counter is not None:
        out[spec.counter] = np.asarray([count] if spec.counter == "global_step" else count, np.int32)
        if not spec.step and step is not None and spec.kind != "SGD":
            notes.append(f"{spec.label} keeps no step: the step ({step:g}) survives only as {spec.counter}, the "
                         "update counter its lr schedule reads (lossy=True)")
    elif step is not None and not spec.step and spec.kind != "SGD":
        notes.append(f"{spec.label} keeps no step: the step count {step:g} is dropped (lossy=True)")
    if spec.powers:
        b1 = float(np.asarray(optimizer.beta1.asnumpy()).reshape(-1)[0])
        b2 = float(np.asarray(optimizer.beta2.asnumpy()).reshape(-1)[0])
        out["beta1_power"] = np.float32(float32_power(b1, count))
        out["beta2_power"] = np.float32(float32_power(b2, count))
        notes.append(f"beta1_power / beta2_power rebuilt as float32 running products over {count} updates "
                     "(nn.Adam's own rounding)")
    return notes


def _has(optimizer: Any, name: str) -> bool:
    return any(p.name == name for _, p in optimizer.parameters_and_names())
