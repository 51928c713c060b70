"""Torch-exact optimizers written in MegEngine 1.13 (imports megengine).

MegEngine's own optimizers differ from torch 2.13's (``../shared/reference/semantics.md``
§5): SGD has no dampening, Adagrad puts eps inside the square root, Adam keeps its
betas and step counter in float32, and there is no RMSprop, Adamax, NAdam, RAdam,
amsgrad or maximize. This module has torch's update rules as
``megengine.optimizer.Optimizer`` subclasses: :class:`SGD`, :class:`Adam`,
:class:`AdamW`, :class:`RMSprop`, :class:`Adagrad`, :class:`Adadelta`,
:class:`Adamax`, :class:`NAdam`, :class:`RAdam` (and, for plans ported from
MindSpore, :class:`AdamWeightDecay`: ``nn.AdamWeightDecay``'s update, which neither
torch nor MegEngine has). They work with ``GradManager``,
``param_groups`` (torch's keys, every one per group), ``state_dict`` /
``load_state_dict`` and a scheduler that writes ``group[key]`` before each ``step()``.

How each update follows torch (``torch/optim/*.py``, ``_single_tensor_*``, the path
torch takes on CPU):

* the same operations in the same order on float32 tensors: ``lerp`` as torch
  computes it, ``addcmul`` as ``(value * t1) * t2 + self``, ``addcdiv`` as
  ``(value * t1) / t2 + self``;
* every scalar (lr, bias corrections, step sizes, NAdam's ``mu``) computed in Python
  float64 from the **current** group values and the parameter's step, with torch's
  expression, then rounded to float32 once, as torch's kernels do;
* the step counter and NAdam's ``mu_product`` with torch's float32 semantics (torch
  keeps them in float32 tensors), held as Python floats;
* state names as torch's (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``,
  ``max_exp_avg_sq``, ``step``, ``square_avg``, ``grad_avg``, ``sum``,
  ``acc_delta``, ``exp_inf``, ``mu_product``), created lazily at a parameter's first
  update as torch does (Adagrad's ``sum`` in the constructor, as torch).

What remains is float32 rounding: torch's vectorised CPU kernels fuse multiply-adds
and use a sqrt that is not always correctly rounded; MegEngine rounds each product.
The measured effect, and which native MegEngine optimizer is good enough for which
options (:data:`NATIVE`, :func:`native_equivalent`), are in
docs/optimizers_megengine.md.

Beyond torch (documented, never silently different): a group added after the
constructor works (state is created lazily), and a momentum (SGD, RMSprop) or
amsgrad switched on by a scheduler starts its state where torch's would start it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import megengine.optimizer as mopt
import numpy as np
from megengine import Parameter, Tensor
from megengine.core._imperative_rt.core2 import apply, get_auto_format_convert, set_auto_format_convert, set_option
from megengine.core.ops import builtin
from megengine.core.tensor.utils import set_convert_inputs

from optbridge import ir
from optbridge.errors import ConfigError

# The measured native-vs-exact table is framework-free data (optbridge.lint reads it without MegEngine).
from .native import NATIVE, NativeEquivalence, native_equivalent

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "AdamWeightDecay",
           "OPTIMIZERS", "NativeEquivalence", "NATIVE", "native_equivalent", "torch_defaults", "TorchExactOptimizer"]

# ----------------------------------------------------------------------------- float32 elementwise ops
# One MegEngine kernel each. FUSE_MUL_ADD3 is a*b + c with the product rounded to
# float32 (measured: identical to MUL then ADD, and as fast as either). Not used, as
# measured slow on CPU (unvectorised, 5-10x an ADD): FUSE_MUL_ADD4 (MUL + MUL + MAD3
# rounds identically), ABS (max(x, -x)) and POW (SQRT).
_ADD = builtin.Elemwise(mode="ADD")
_SUB = builtin.Elemwise(mode="SUB")
_MUL = builtin.Elemwise(mode="MUL")
_DIV = builtin.Elemwise(mode="TRUE_DIV")
_SQRT = builtin.Elemwise(mode="SQRT")
_NEG = builtin.Elemwise(mode="NEGATE")
_MAX = builtin.Elemwise(mode="MAX")
_MAD3 = builtin.Elemwise(mode="FUSE_MUL_ADD3")

_F32_STEP_LIMIT = 16777216.0  # 2**24: a float32 counter stops here (torch's float32 ``step`` does)


def _next_step(step: float) -> float:
    """``step + 1`` as torch's float32 ``step`` tensor computes it."""
    if step < _F32_STEP_LIMIT:
        return step + 1.0
    return float(np.float32(step + 1.0))


def _f32(x: float) -> float:
    """``x`` rounded to float32, as a Python float."""
    return float(np.float32(x))


# ----------------------------------------------------------------------------- hyperparameter checks

def _real(value: Any, path: str) -> float:
    if type(value) is float and value - value == 0.0:  # the common case, checked every step: a finite Python float
        return value
    if isinstance(value, Tensor) and value.size == 1:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(path, "must be a real number", value)
    x = float(value)
    if not math.isfinite(x):
        raise ConfigError(path, "must be finite", value)
    return x


def _ranged(kind: str) -> Any:
    return lambda value, path: ir.check_hyper(path, _real(value, path), kind)  # the core's ranges


_nonneg, _unit, _beta = (_ranged(kind) for kind in ("nonneg", "unit", "beta"))


def _betas(value: Any, path: str) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(path, "must be a pair (beta1, beta2)", value)
    return _beta(value[0], path + "[0]"), _beta(value[1], path + "[1]")


def _flag(value: Any, path: str) -> bool:
    if value is True or value is False:
        return value
    if not isinstance(value, np.bool_):
        raise ConfigError(path, "must be true or false", value)
    return bool(value)


_CHECKS = {"real": _real, "nonneg": _nonneg, "unit": _unit, "betas": _betas, "flag": _flag}


# ----------------------------------------------------------------------------- the base class

class TorchExactOptimizer(mopt.Optimizer):
    """Base class: torch's hyperparameter handling and state, on MegEngine's Optimizer.

    Subclasses declare the group keys they read (:attr:`HYPERS`, with torch's
    defaults in their constructors), the state names they keep (:attr:`STATE`),
    and the per-parameter update (:meth:`_update`). Every key is read from the group
    and checked before each ``step()``, so a scheduler may write any of them; a bad
    value raises :class:`~optbridge.errors.ConfigError` (path
    ``param_groups[i].key``) before any tensor changes.
    """

    #: group key -> check ("real", "nonneg", "unit", "betas", "flag")
    HYPERS: ClassVar[dict[str, str]] = {}
    #: torch's state names, tensors and scalars
    STATE: ClassVar[tuple[str, ...]] = ()
    #: the state entries torch keeps as 0-d float32 tensors (Python floats here)
    SCALAR_STATE: ClassVar[frozenset[str]] = frozenset({"step", "mu_product"})

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._check_group(defaults, "")
        self._consts: dict[float | tuple[float, float], Tensor] = {}
        self._hyper: dict[int, dict[str, Any]] = {}
        super().__init__(params, defaults)
        self._disable_type_convert = True

    # -- groups
    def add_param_group(self, param_group: dict) -> None:
        """MegEngine's ``add_param_group`` with optbridge's errors; later groups work (lazy state)."""
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise ConfigError("param_group", "must be a dict with 'params'", param_group, show_value=False)
        params = param_group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise ConfigError(f"param_groups[{len(self.param_groups)}].params[{i}]",
                                  "must be a megengine Parameter", type(p).__name__)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ConfigError(f"param_groups[{len(self.param_groups)}].params",
                              "must not repeat parameters of another group", len(params))
        for key, default in self._defaults.items():
            param_group.setdefault(key, default)
        self._check_group(param_group, f"param_groups[{len(self.param_groups)}]")
        param_group["params"] = params
        super().add_param_group(param_group)

    def _check_group(self, group: Mapping[str, Any], path: str) -> dict[str, Any]:
        prefix = f"{path}." if path else ""
        return {key: _CHECKS[kind](group[key] if key in group else None, prefix + key)
                for key, kind in self.HYPERS.items()}

    def _create_state(self, param_group: dict) -> None:
        """No state before a parameter's first update (torch creates it lazily too)."""

    # -- stepping
    def step(self) -> TorchExactOptimizer:
        """One update of every parameter that has a gradient, with the groups' current values."""
        self._hyper = {id(g): self._check_group(g, f"param_groups[{i}]")
                       for i, g in enumerate(self.param_groups)}
        convert = set_convert_inputs(True)
        set_convert_inputs(convert)
        auto_format = get_auto_format_convert()
        try:
            super().step()
        except BaseException:
            # MegEngine's step() leaves its global switches off when an update raises
            set_convert_inputs(convert)
            set_auto_format_convert(auto_format)
            set_option("record_computing_path", 1)
            raise
        finally:
            self._hyper = {}
        return self

    def _updates(self, param_group: dict) -> None:
        h = self._hyper[id(param_group)]
        for param in param_group["params"]:
            grad = param.grad
            if grad is None:
                continue
            state = self._state.get(param)
            if state is None:
                state = self._state[param] = {}
            self._update(param, grad, state, h)

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- helpers for the updates
    def _c(self, x: float) -> Tensor:
        """``x`` as a float32 scalar tensor (cached: constant hyperparameters cost nothing per step)."""
        key: float | tuple[float, float] = x if x != 0.0 else (0.0, math.copysign(1.0, x))
        t = self._consts.get(key)
        if t is None:
            if len(self._consts) >= 512:
                self._consts.clear()
            t = self._consts[key] = Tensor(np.float32(x))
        return t

    def _direction(self, param: Parameter, grad: Tensor, h: dict[str, Any], l2: bool = True) -> Tensor:
        """torch's ``grad`` (negated for maximize) plus ``weight_decay * param`` (L2) when ``l2``."""
        d = apply(_NEG, grad)[0] if h.get("maximize") else grad
        wd = h["weight_decay"]
        if l2 and wd != 0.0:
            d = apply(_MAD3, param, self._c(wd), d)[0]  # grad.add(param, alpha=wd)
        return d

    def _zeros(self, param: Parameter, value: float = 0.0) -> Tensor:
        return Tensor(np.full(param.shape, value, np.float32), no_cache=True)

    def _lerp(self, start: Tensor, end: Tensor, weight: float) -> Tensor:
        """``start.lerp_(end, weight)`` as torch's CPU kernel computes it (float32 weight)."""
        w = _f32(weight)
        diff = apply(_SUB, end, start)[0]
        if abs(w) < 0.5:
            return apply(_MAD3, diff, self._c(w), start)[0]      # start + w * (end - start)
        return apply(_MAD3, diff, self._c(w - 1.0), end)[0]     # end - (end - start) * (1 - w)

    def _ema_sq(self, avg: Tensor, d: Tensor, beta: float) -> Tensor:
        """``avg.mul_(beta).addcmul_(d, d, value=1 - beta)``: ``beta*avg + ((1 - beta)*d)*d``."""
        sq = apply(_MUL, apply(_MUL, d, self._c(1 - beta))[0], d)[0]
        return apply(_MAD3, avg, self._c(beta), sq)[0]

    def _addcdiv(self, param: Tensor, t1: Tensor, t2: Tensor, value: float) -> Tensor:
        """``param.addcdiv(t1, t2, value=value)``: ``param + (value * t1) / t2``."""
        return apply(_ADD, param, apply(_DIV, apply(_MUL, t1, self._c(value))[0], t2)[0])[0]

    # -- state
    def state_dict(self, keep_var: bool = False) -> dict[str, Any]:
        """The state in MegEngine's (and torch's) layout.

        ``{"param_groups": [{key: value, ..., "params": [index, ...]}], "state":
        {index: {name: value}}}``, parameters numbered in group order. Tensors become
        float32 numpy arrays (the tensors themselves with ``keep_var``); ``step`` and
        ``mu_product`` become 0-d float32 arrays, as torch's 0-d float32 tensors.
        Parameters that were never updated, or keep no state, have no entry, as in torch.
        """
        ids: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            for p in g["params"]:
                ids.setdefault(id(p), len(ids))
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": [ids[id(p)] for p in g["params"]]})
        state: dict[int, dict[str, Any]] = {}
        for p, st in self._state.items():
            if not st:  # e.g. SGD without momentum: torch keeps no entry
                continue
            state[ids[id(p)]] = {k: (np.array(v, np.float32) if k in self.SCALAR_STATE
                                     else v if keep_var else v.numpy()) for k, v in st.items()}
        return {"param_groups": groups, "state": state}

    def load_state_dict(self, state: dict) -> None:
        """Load a :meth:`state_dict` (checked first: nothing changes when it does not fit)."""
        if not isinstance(state, Mapping) or not {"param_groups", "state"} <= set(state):
            raise ConfigError("state_dict", "must have 'param_groups' and 'state'", type(state).__name__)
        saved_groups, saved_state = state["param_groups"], state["state"]
        if not isinstance(saved_groups, (list, tuple)) or not isinstance(saved_state, Mapping):
            raise ConfigError("state_dict", "must map 'param_groups' to a list and 'state' to a dict",
                              (type(saved_groups).__name__, type(saved_state).__name__))
        if len(saved_groups) != len(self.param_groups):
            raise ConfigError("state_dict.param_groups", f"must have {len(self.param_groups)} groups",
                              len(saved_groups))
        new_state: dict[Parameter, dict[str, Any]] = {}
        values = []
        for i, (mine, saved) in enumerate(zip(self.param_groups, saved_groups)):
            path = f"state_dict.param_groups[{i}]"
            if not isinstance(saved, Mapping):
                raise ConfigError(path, "must be a dict", type(saved).__name__)
            if len(saved.get("params", ())) != len(mine["params"]):
                raise ConfigError(path + ".params", f"must list {len(mine['params'])} parameters",
                                  len(saved.get("params", ())))
            if set(saved) != set(mine):
                raise ConfigError(path, f"must have the keys {sorted(mine)}", sorted(saved))
            self._check_group(saved, path)
            values.append({k: v for k, v in saved.items() if k != "params"})
            for param, index in zip(mine["params"], saved["params"]):
                if index in saved_state:
                    new_state[param] = self._load_entry(param, saved_state[index], f"state_dict.state[{index}]")
        known = {i for g in saved_groups for i in g["params"]}
        if set(saved_state) - known:
            raise ConfigError("state_dict.state", "must only hold parameters listed in param_groups",
                              sorted(set(saved_state) - known))
        for mine, vals in zip(self.param_groups, values):
            mine.update(vals)
        self._state = new_state

    def _load_entry(self, param: Parameter, entry: Mapping[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in entry.items():
            if name not in self.STATE:
                raise ConfigError(f"{path}.{name}", f"must be one of {list(self.STATE)}", name)
            arr = np.asarray(value, dtype=np.float32)
            if name in self.SCALAR_STATE:
                if arr.size != 1:
                    raise ConfigError(f"{path}.{name}", "must be a scalar", arr.shape)
                out[name] = float(arr.reshape(()))
            elif arr.shape != tuple(param.shape):
                raise ConfigError(f"{path}.{name}", f"must have the parameter's shape {tuple(param.shape)}", arr.shape)
            else:
                out[name] = Tensor(arr, no_cache=True)
        return out


# ----------------------------------------------------------------------------- the optimizers

class SGD(TorchExactOptimizer):
    """torch.optim.SGD: momentum, dampening, nesterov, weight_decay, maximize, all per group.

    ``d = g (+ wd*p)``; momentum: first update ``buf = d``, then
    ``buf = momentum*buf + (1 - dampening)*d``; nesterov ``d = d + momentum*buf``,
    else ``d = buf``; ``p = p - lr*d``. The buffer starts at the first update whose
    momentum is non-zero, so a momentum scheduled up from 0 works (as in torch).
    """

    HYPERS = {"lr": "nonneg", "momentum": "nonneg", "dampening": "real", "weight_decay": "nonneg",
              "nesterov": "flag", "maximize": "flag"}
    STATE = ("momentum_buffer",)

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False) -> None:
        if nesterov and (not isinstance(momentum, (int, float)) or momentum <= 0 or dampening != 0):
            raise ConfigError("nesterov", "requires a momentum and zero dampening", nesterov)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        d = self._direction(param, grad, h)
        momentum = h["momentum"]
        if momentum != 0.0:
            buf = state.get("momentum_buffer")
            if buf is None:  # torch: buf = grad.clone(); never alias the gradient MegEngine may accumulate into
                buf = apply(_MUL, d, self._c(1.0))[0] if d is grad else d
            else:  # buf.mul_(momentum).add_(d, alpha=1 - dampening)
                dampening = h["dampening"]
                t = d if dampening == 0.0 else apply(_MUL, d, self._c(1 - dampening))[0]
                buf = apply(_MAD3, buf, self._c(momentum), t)[0]
            state["momentum_buffer"] = buf
            d = apply(_MAD3, buf, self._c(momentum), d)[0] if h["nesterov"] else buf
        param._reset(apply(_MAD3, d, self._c(-h["lr"]), param)[0])


class Adam(TorchExactOptimizer):
    """torch.optim.Adam (and AdamW through ``decoupled_weight_decay``), with amsgrad and maximize.

    ``m = lerp(m, d, 1 - beta1)``, ``v = beta2*v + (1 - beta2)*d*d``,
    ``p = p + (-lr/bc1) * m / (sqrt(v_max or v) / sqrt(bc2) + eps)`` with
    ``bc = 1 - beta**step`` in Python float64 from the group's current betas.
    Decoupled weight decay: ``p = p * (1 - lr*wd)`` first; else ``d = g + wd*p``.
    """

    HYPERS = {"lr": "nonneg", "betas": "betas", "eps": "nonneg", "weight_decay": "nonneg", "amsgrad": "flag",
              "maximize": "flag", "decoupled_weight_decay": "flag"}
    STATE = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if "step" not in state:
            state.update(step=0.0, exp_avg=self._zeros(param), exp_avg_sq=self._zeros(param))
        step = state["step"] = _next_step(state["step"])
        lr, wd, (beta1, beta2) = h["lr"], h["weight_decay"], h["betas"]
        decoupled = h["decoupled_weight_decay"]
        p = param
        if decoupled and wd != 0.0:
            p = apply(_MUL, p, self._c(1 - lr * wd))[0]
        d = self._direction(param, grad, h, l2=not decoupled)
        m = state["exp_avg"] = self._lerp(state["exp_avg"], d, 1 - beta1)
        v = state["exp_avg_sq"] = self._ema_sq(state["exp_avg_sq"], d, beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if h["amsgrad"]:
            vmax = state.get("max_exp_avg_sq")
            v = state["max_exp_avg_sq"] = v if vmax is None else apply(_MAX, vmax, v)[0]
        denom = apply(_ADD, apply(_DIV, apply(_SQRT, v)[0], self._c(bias_correction2_sqrt))[0], self._c(h["eps"]))[0]
        param._reset(self._addcdiv(p, m, denom, -step_size))


class AdamW(Adam):
    """torch.optim.AdamW: :class:`Adam` with decoupled weight decay (default 1e-2)."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)


class RMSprop(TorchExactOptimizer):
    """torch.optim.RMSprop: alpha, eps, centered, momentum, weight_decay, maximize.

    ``sq = alpha*sq + (1 - alpha)*d*d``; centered: ``ga = lerp(ga, d, 1 - alpha)``,
    ``avg = sqrt(sq - ga*ga) + eps``, else ``avg = sqrt(sq) + eps``; momentum:
    ``buf = momentum*buf + d/avg``, ``p = p - lr*buf``; else ``p = p + (-lr*d)/avg``.
    torch creates the buffer only when momentum > 0 at the first update (a momentum
    scheduled up from 0 raises KeyError there); here it starts at zero when needed.
    """

    HYPERS = {"lr": "nonneg", "alpha": "nonneg", "eps": "nonneg", "weight_decay": "nonneg", "momentum": "nonneg",
              "centered": "flag", "maximize": "flag"}
    STATE = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if "step" not in state:
            state.update(step=0.0, square_avg=self._zeros(param))
            if h["momentum"] > 0:
                state["momentum_buffer"] = self._zeros(param)
            if h["centered"]:
                state["grad_avg"] = self._zeros(param)
        state["step"] = _next_step(state["step"])
        alpha, momentum = h["alpha"], h["momentum"]
        d = self._direction(param, grad, h)
        sq = state["square_avg"] = self._ema_sq(state["square_avg"], d, alpha)
        if h["centered"]:
            ga = state.get("grad_avg")
            ga = state["grad_avg"] = self._lerp(self._zeros(param) if ga is None else ga, d, 1 - alpha)
            avg = apply(_SQRT, apply(_SUB, sq, apply(_MUL, ga, ga)[0])[0])[0]  # sq.addcmul(ga, ga, value=-1)
        else:
            avg = apply(_SQRT, sq)[0]
        avg = apply(_ADD, avg, self._c(h["eps"]))[0]
        if momentum > 0:
            buf = state.get("momentum_buffer")
            buf = self._zeros(param) if buf is None else buf
            buf = state["momentum_buffer"] = apply(_MAD3, buf, self._c(momentum), apply(_DIV, d, avg)[0])[0]
            param._reset(apply(_MAD3, buf, self._c(-h["lr"]), param)[0])
        else:
            param._reset(self._addcdiv(param, d, avg, -h["lr"]))


class Adagrad(TorchExactOptimizer):
    """torch.optim.Adagrad: lr_decay, initial_accumulator_value, eps outside the root.

    ``sum = sum + d*d``, ``p = p + (-clr*d) / (sqrt(sum) + eps)`` with
    ``clr = lr / (1 + (step - 1)*lr_decay)``. As torch, the state (``sum`` filled with
    the group's ``initial_accumulator_value``, ``step`` 0) is created in the constructor.
    """

    HYPERS = {"lr": "nonneg", "lr_decay": "nonneg", "weight_decay": "nonneg",
              "initial_accumulator_value": "nonneg", "eps": "nonneg", "maximize": "flag"}
    STATE = ("step", "sum")

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize))

    def _create_state(self, param_group: dict) -> None:
        for param in param_group["params"]:
            self._init(param, param_group)

    def _init(self, param: Parameter, group: Mapping[str, Any]) -> dict[str, Any]:
        state = self._state[param] = {"step": 0.0,
                                      "sum": self._zeros(param, _real(group["initial_accumulator_value"],
                                                                      "initial_accumulator_value"))}
        return state

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if "step" not in state:  # a group added after the constructor
            state.update(self._init(param, h))
        step = state["step"] = _next_step(state["step"])
        d = self._direction(param, grad, h)
        clr = h["lr"] / (1 + (step - 1) * h["lr_decay"])
        total = state["sum"] = apply(_MAD3, d, d, state["sum"])[0]  # addcmul_(d, d, value=1)
        std = apply(_ADD, apply(_SQRT, total)[0], self._c(h["eps"]))[0]
        param._reset(self._addcdiv(param, d, std, -clr))


class Adadelta(TorchExactOptimizer):
    """torch.optim.Adadelta: rho, eps, weight_decay, maximize.

    ``sq = rho*sq + (1 - rho)*d*d``, ``delta = sqrt(acc + eps) / sqrt(sq + eps) * d``,
    ``acc = rho*acc + (1 - rho)*delta*delta``, ``p = p - lr*delta``.
    """

    HYPERS = {"lr": "nonneg", "rho": "unit", "eps": "nonneg", "weight_decay": "nonneg", "maximize": "flag"}
    STATE = ("step", "square_avg", "acc_delta")

    def __init__(self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if "step" not in state:
            state.update(step=0.0, square_avg=self._zeros(param), acc_delta=self._zeros(param))
        state["step"] = _next_step(state["step"])
        rho, eps = h["rho"], self._c(h["eps"])
        d = self._direction(param, grad, h)
        sq = state["square_avg"] = self._ema_sq(state["square_avg"], d, rho)
        std = apply(_SQRT, apply(_ADD, sq, eps)[0])[0]
        delta = apply(_SQRT, apply(_ADD, state["acc_delta"], eps)[0])[0]
        delta = apply(_MUL, apply(_DIV, delta, std)[0], d)[0]
        state["acc_delta"] = self._ema_sq(state["acc_delta"], delta, rho)
        param._reset(apply(_MAD3, delta, self._c(-h["lr"]), param)[0])


class Adamax(TorchExactOptimizer):
    """torch.optim.Adamax: ``exp_inf = max(beta2*exp_inf, |d| + eps)``, ``p = p + (-lr/bc1)*m/exp_inf``."""

    HYPERS = {"lr": "nonneg", "betas": "betas", "eps": "nonneg", "weight_decay": "nonneg", "maximize": "flag"}
    STATE = ("step", "exp_avg", "exp_inf")

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if "step" not in state:
            state.update(step=0.0, exp_avg=self._zeros(param), exp_inf=self._zeros(param))
        step = state["step"] = _next_step(state["step"])
        beta1, beta2 = h["betas"]
        d = self._direction(param, grad, h)
        m = state["exp_avg"] = self._lerp(state["exp_avg"], d, 1 - beta1)
        inf = state["exp_inf"] = apply(_MAX, apply(_MUL, state["exp_inf"], self._c(beta2))[0],
                                       apply(_ADD, apply(_MAX, d, apply(_NEG, d)[0])[0], self._c(h["eps"]))[0])[0]
        clr = h["lr"] / (1 - beta1**step)
        param._reset(self._addcdiv(param, m, inf, -clr))


class NAdam(TorchExactOptimizer):
    """torch.optim.NAdam: momentum_decay, decoupled_weight_decay, torch's float32 ``mu_product``.

    ``mu_t = beta1*(1 - 0.5*0.96**(step*momentum_decay))``; ``mu_product *= mu_t`` in
    float32; ``denom = sqrt(v/bc2) + eps``;
    ``p = p + (-lr*(1 - mu_t)/(1 - mu_product))*d/denom + (-lr*mu_next/(1 - mu_product*mu_next))*m/denom``.
    """

    HYPERS = {"lr": "nonneg", "betas": "betas", "eps": "nonneg", "weight_decay": "nonneg",
              "momentum_decay": "nonneg", "decoupled_weight_decay": "flag", "maximize": "flag"}
    STATE = ("step", "mu_product", "exp_avg", "exp_avg_sq")

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if "step" not in state:
            state.update(step=0.0, mu_product=1.0, exp_avg=self._zeros(param), exp_avg_sq=self._zeros(param))
        step = state["step"] = _next_step(state["step"])
        lr, wd, (beta1, beta2), momentum_decay = h["lr"], h["weight_decay"], h["betas"], h["momentum_decay"]
        decoupled = h["decoupled_weight_decay"]
        bias_correction2 = 1 - beta2**step
        p = param
        if decoupled and wd != 0.0:
            p = apply(_MUL, p, self._c(1 - lr * wd))[0]
        d = self._direction(param, grad, h, l2=not decoupled)
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        mu_product = state["mu_product"] = _f32(state["mu_product"] * _f32(mu))  # float32 tensor *= mu
        m = state["exp_avg"] = self._lerp(state["exp_avg"], d, 1 - beta1)
        v = state["exp_avg_sq"] = self._ema_sq(state["exp_avg_sq"], d, beta2)
        denom = apply(_SQRT, apply(_DIV, v, self._c(bias_correction2))[0])[0]
        mu_product_next = mu_product * mu_next
        denom = apply(_ADD, denom, self._c(h["eps"]))[0]
        p = self._addcdiv(p, d, denom, -lr * (1.0 - mu) / (1.0 - mu_product))
        param._reset(self._addcdiv(p, m, denom, (-lr * mu_next) / (1.0 - mu_product_next)))


class RAdam(TorchExactOptimizer):
    """torch.optim.RAdam: decoupled_weight_decay and the rectification branch.

    ``rho_t = rho_inf - 2*step*beta2**step/bc2``; if ``rho_t > 5``:
    ``p = p - (m/bc1)*lr*(sqrt(bc2)/(sqrt(v) + eps))*rect``, else ``p = p - (m/bc1)*lr``.
    """

    HYPERS = {"lr": "nonneg", "betas": "betas", "eps": "nonneg", "weight_decay": "nonneg",
              "decoupled_weight_decay": "flag", "maximize": "flag"}
    STATE = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize))

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if "step" not in state:
            state.update(step=0.0, exp_avg=self._zeros(param), exp_avg_sq=self._zeros(param))
        step = state["step"] = _next_step(state["step"])
        lr, wd, (beta1, beta2) = h["lr"], h["weight_decay"], h["betas"]
        decoupled = h["decoupled_weight_decay"]
        p = param
        if decoupled and wd != 0.0:
            p = apply(_MUL, p, self._c(1 - lr * wd))[0]
        d = self._direction(param, grad, h, l2=not decoupled)
        m = state["exp_avg"] = self._lerp(state["exp_avg"], d, 1 - beta1)
        v = state["exp_avg_sq"] = self._ema_sq(state["exp_avg_sq"], d, beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        corrected = apply(_MUL, apply(_DIV, m, self._c(bias_correction1))[0], self._c(lr))[0]
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
        if rho_t > 5.0:
            # float / tensor in torch is ``tensor.reciprocal() * float``
            adaptive = apply(_MUL, apply(_DIV, self._c(1.0), apply(_ADD, apply(_SQRT, v)[0], self._c(h["eps"]))[0])[0],
                             self._c(bias_correction2**0.5))[0]
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            corrected = apply(_MUL, apply(_MUL, corrected, adaptive)[0], self._c(rect))[0]
        param._reset(apply(_SUB, p, corrected)[0])


class AdamWeightDecay(TorchExactOptimizer):
    """MindSpore's ``nn.AdamWeightDecay`` (MegEngine has none): Adam without bias correction, decay in the update.

    MindSpore's CPU kernel, every quantity float32: ``m = m + (g - m)*(1 - beta1)``,
    ``v = v + (g*g - v)*(1 - beta2)``, ``p = p - lr*(m/(sqrt(v) + eps) + weight_decay*p)``;
    the hyperparameters rounded to float32 as MindSpore holds them. No step count (MindSpore
    keeps none). ``tests_megengine/test_adamweightdecay.py`` compares it with optbridge's torch
    class of the same update, which tests/test_torch_optimizers.py compares with MindSpore's.
    """

    HYPERS = {"lr": "nonneg", "betas": "betas", "eps": "nonneg", "weight_decay": "nonneg"}
    STATE = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, param: Parameter, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        if "exp_avg" not in state:
            state.update(exp_avg=self._zeros(param), exp_avg_sq=self._zeros(param))
        beta1, beta2 = (_f32(b) for b in h["betas"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m = state["exp_avg"] = apply(_MAD3, apply(_SUB, grad, m)[0], self._c(1.0 - beta1), m)[0]
        gg = apply(_MUL, grad, grad)[0]
        v = state["exp_avg_sq"] = apply(_MAD3, apply(_SUB, gg, v)[0], self._c(1.0 - beta2), v)[0]
        u = apply(_DIV, m, apply(_ADD, apply(_SQRT, v)[0], self._c(h["eps"]))[0])[0]
        if h["weight_decay"] != 0.0:
            u = apply(_MAD3, param, self._c(h["weight_decay"]), u)[0]
        param._reset(apply(_MAD3, u, self._c(-_f32(h["lr"])), param)[0])


#: torch optimizer name -> its torch-exact MegEngine class
OPTIMIZERS: dict[str, type[TorchExactOptimizer]] = {
    c.__name__: c for c in (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, NAdam, RAdam)}


def torch_defaults(optimizer: str) -> dict[str, Any]:
    """torch 2.13's defaults of ``optimizer`` (those of the exact class, which uses torch's)."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError("optimizer.type", f"must be one of {sorted(OPTIMIZERS)}", optimizer)
    sig = inspect.signature(OPTIMIZERS[optimizer].__init__)
    return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
