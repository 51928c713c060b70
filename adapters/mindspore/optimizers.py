"""Torch-exact optimizers written with MindSpore 2.10 ops (imports mindspore).

MindSpore's own optimizers do not all compute torch 2.13's update
(``../shared/reference/semantics.md`` §5, and :data:`NATIVE` below, measured):
``nn.Adam`` and ``experimental.optim.Adam`` put eps outside the bias correction,
``nn.Momentum(use_nesterov=True)`` is plain momentum on CPU, ``experimental.optim.Adam``
ignores amsgrad, ``nn.AdamWeightDecay`` has no bias correction, and momentum and betas
are constants, so a schedule cannot move them. This module has torch's update rules as
MindSpore cells: :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`RMSprop`,
:class:`Adagrad`, :class:`Adadelta`, :class:`Adamax`, :class:`NAdam`, :class:`RAdam`.

* **Drop-in.** ``optimizer(grads)`` with the gradients in ``optimizer.parameters``
  order; works in PyNative (the update is one ``ms.jit`` graph) and GRAPH mode, inside
  ``nn.TrainOneStepCell``, ``ms.Model(...).train`` and user ``ms.jit`` functions (an
  ``nn.Optimizer`` subclass, for Model's type check, initialised as a plain Cell).
  Groups are torch's: ``[{"params": [...], "lr": ..., ...}, ...]`` plus keyword
  defaults (torch's defaults). Frozen parameters are simply in no group.
* **Hyperparameters are Parameters.** Every numeric hyperparameter of every group
  (``lr``, ``momentum``, ``dampening``, ``beta1``/``beta2`` for torch's ``betas``,
  ``eps``, ``weight_decay``, ``alpha``, ``rho``, ``lr_decay``, ``momentum_decay``) is a
  float64 0-d Parameter named ``<prefix>.group<g>.<name>``: :meth:`hyper`,
  :meth:`hypers`. A schedule driver writes it with ``ops.assign`` before an update
  (``Parameter.set_data`` is ignored by a compiled construct). ``scheduled=`` lists the
  hyperparameters that will change; the others are then compile-time constants, which
  lets the update skip what torch skips for a zero value (weight decay, momentum) --
  same values, fewer passes. Default: every hyperparameter is a Parameter.
* **State is Parameters** named ``<state>.<param name>`` (torch's state names, see
  :data:`STATE_NAMES`), so ``ms.save_checkpoint`` holds them: :meth:`state`,
  :meth:`states`. ``step`` and NAdam's ``mu_product`` are float32 0-d Parameters per
  parameter, as torch's float32 tensors. SGD has no ``step``; torch's "no momentum
  buffer yet" is ``has_momentum_buffer.<param name>`` = 0.

How each update follows torch (``torch/optim/*.py`` ``_single_tensor_*``, the path torch
takes on CPU):

* every scalar (bias corrections, step sizes, ``clr``, NAdam's ``mu``, RAdam's
  ``rho_t``) is computed in float64 in the graph, from the **current** hyperparameter
  Parameters and the parameter's own step, with torch's Python expression in torch's
  order, and rounded to float32 once where torch's kernel takes it;
* the tensor operations are torch's, on float32, in torch's order. In-place updates use
  MindSpore kernels that round as torch's operations do (measured):
  ``ApplyGradientDescent(x, a, d)`` (``x - a*d``, two roundings) for
  ``x.add_(d, alpha=-a)`` and for ``lerp_`` (``m - w*(m - g)``), and ``ApplyMomentum``
  (``accum*mu + grad``, then ``var - lr*accum``) for momentum buffers (SGD, RMSprop);
  everything else is ops + ``ops.assign``. Centered RMSprop's
  ``square_avg.addcmul(grad_avg, grad_avg, value=-1)`` is one fused multiply-add in
  torch's kernel and cancels: it is computed in float64 from the float32 values and
  rounded once, as the FMA rounds.
* **One op per parameter** (``kernels=None``, the default, when :mod:`.kernels` is
  available): each parameter's update runs as one C++ kernel (``kernels.cc`` through
  ``ops.Custom(func_type="aot")``) that computes the scalars above from the group's
  float64 hyperparameters and the parameter's scalar states with the same float64
  expressions (the C library's ``pow``, as MindSpore's 0-d ``Pow`` and Python's ``**``),
  then the tensor lines with the same operations in the same order and roundings,
  compiled without FMA contraction or fast-math: the parameters and states are the
  composed ops', bit for bit, on every CPU (tested for every kind and flag set).
  ``kernels=False`` runs the composed ops (so does a machine without a C++ compiler);
  ``kernels=True`` raises ``ConfigError`` saying why the kernels are unavailable. Without
  kernels, SGD with momentum and a constant dampening of 0 runs MindSpore's one-pass
  ``SGD`` kernel, bit-identical to the composed ops too.

What remains is float32 rounding: torch's AVX kernels fuse multiply-adds (``lerp``,
``add(alpha=)``, ``addcmul``) and its ``addcdiv`` is ``(value*t1)/t2 + p`` where
MindSpore computes ``p - value*(t1/t2)``. Measured (tests/test_mindspore_exact_optimizers.py):
within 1.65 float32 ulps of the parameters' scale of torch over 100 steps on every
well-conditioned case, where torch's own float32 error (against float64) is 1-21 ulps.
docs/optimizers.md has the figures, the native-vs-exact table and the benchmark.

Limits: float32 parameters only (ConfigError otherwise); dense gradients (a RowTensor has no
registered update); states are assumed finite (an inf momentum buffer meets ``lr = 0`` in
``ApplyMomentum`` on a step whose scheduled momentum is 0: NaN, where torch leaves the parameter).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.ops import operations as P

from optbridge import ir
from optbridge.errors import ConfigError

# The measured native-vs-exact table is framework-free data (optbridge.lint reads it without MindSpore).
from . import kernels as _kernels
from .native import NATIVE, NativeEquivalence, native_equivalent

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam",
           "ExactOptimizer", "OPTIMIZERS", "STATE_NAMES", "exact_optimizer",
           "NativeEquivalence", "NATIVE", "native_equivalent"]

F32, F64 = ms.float32, ms.float64

# ----------------------------------------------------------------------------- kernels and constants
_AGD = P.ApplyGradientDescent()   # var -= alpha * delta (in place; two roundings, measured)
_AM = P.ApplyMomentum()           # accum = accum * momentum + grad; var -= lr * accum (in place; two roundings each)
_ZERO64 = Tensor(0.0, F64)
_ONE64 = Tensor(1.0, F64)
_P96 = Tensor(0.96, F64)          # NAdam's momentum-cache base
_MODE64 = (_ZERO64, _ONE64, Tensor(2.0, F64))    # a weight decay or momentum mode as the kernels read it
# The one-pass kernels (kernels.cc through ops.Custom), set by _load_kernels() before any graph uses them.
_K_SGD: Any = None
_K_ADAM: Any = None
_K_RMSPROP: Any = None
_K_ADAGRAD: Any = None
_K_ADADELTA: Any = None
_K_ADAMAX: Any = None
_K_NADAM: Any = None
_K_RADAM: Any = None

# Positions in a group's static configuration tuple (graph constants); the last is whether the kernel runs.
_MAXIMIZE, _WD, _OPT1, _OPT2, _OPT3, _OPT4, _KERNEL = 0, 1, 2, 3, 4, 5, -1
# Weight decay modes: torch skips weight decay when it is 0; a constant 0 skips it here too.
_WD_OFF, _WD_L2, _WD_DECOUPLED = 0, 1, 2
# Momentum modes (SGD, RMSprop): a constant 0, a constant non-zero, or a Parameter (any value, torch's branches).
_MOM_OFF, _MOM_CONST, _MOM_DYNAMIC = 0, 1, 2


def _f32(x: Any) -> Any:
    """A float64 scalar rounded to float32, where torch's kernel takes a Python float."""
    return ops.cast(x, F32)


def _flag64(on: bool) -> Any:
    """A static option as the kernels read it (float64 0 or 1, before the group's hyperparameters)."""
    return _ONE64 if on else _ZERO64


def _load_kernels() -> None:
    """Bind the kernels' ops.Custom primitives to the names the updates call (once available)."""
    for name in _kernels.KERNELS:
        globals()[f"_K_{name.upper()}"] = _kernels.op(name)


def _tick(step: Any) -> Any:
    """``step += 1`` on the float32 step Parameter (torch's float32 tensor); the new step as float64."""
    new = step + 1
    ops.assign(step, new)
    return ops.cast(new, F64)


def _direction(cfg: tuple, wd: Any, param: Any, grad: Any) -> Any:
    """torch: ``grad = -grad`` if maximize; ``grad = grad.add(param, alpha=weight_decay)`` (L2)."""
    g = ops.neg(grad) if cfg[_MAXIMIZE] else grad
    if cfg[_WD] == _WD_L2:
        g = g + param * _f32(wd)
    return g


def _decay(cfg: tuple, lr: Any, wd: Any, param: Any) -> Any:
    """torch (decoupled weight decay): ``param.mul_(1 - lr * weight_decay)``."""
    if cfg[_WD] == _WD_DECOUPLED:
        ops.assign(param, param * _f32(1 - lr * wd))
    return param


def _descend(x: Any, alpha: Any, d: Any) -> Any:
    """torch: ``x.add_(d, alpha=-alpha)`` with float64 ``alpha``: ``x - float32(alpha) * d``, in place."""
    return _AGD(x, _f32(alpha), d)


def _lerp(state: Any, g: Any, weight: Any) -> Any:
    """torch: ``state.lerp_(g, weight)`` = ``state + weight * (g - state)`` (weight < 0.5), in place."""
    return _AGD(state, _f32(weight), state - g)


def _ema_sq(state: Any, g: Any, beta: Any) -> Any:
    """torch: ``state.mul_(beta).addcmul_(g, g, value=1 - beta)``, in place."""
    return ops.assign(state, state * _f32(beta) + (g * _f32(1 - beta)) * g)


# ----------------------------------------------------------------------------- per-parameter updates
# One MultitypeFuncGraph per optimizer, mapped over a group's parameters with ops.HyperMap.
# cfg: the group's static configuration (bools/ints); h: the group's hyperparameters (float64
# Parameters or constants) in ExactOptimizer.HYPERS order; then the parameter, its gradient and state.

_sgd = ops.MultitypeFuncGraph("optbridge_exact_sgd")
_adam = ops.MultitypeFuncGraph("optbridge_exact_adam")
_rmsprop = ops.MultitypeFuncGraph("optbridge_exact_rmsprop")
_adagrad = ops.MultitypeFuncGraph("optbridge_exact_adagrad")
_adadelta = ops.MultitypeFuncGraph("optbridge_exact_adadelta")
_adamax = ops.MultitypeFuncGraph("optbridge_exact_adamax")
_nadam = ops.MultitypeFuncGraph("optbridge_exact_nadam")
_radam = ops.MultitypeFuncGraph("optbridge_exact_radam")


@_sgd.register("Tuple", "Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _sgd_update(cfg: tuple, h: tuple, param: Any, grad: Any, buf: Any, ready: Any, stat: Any) -> bool:
    """torch ``_single_tensor_sgd``. cfg: maximize, wd mode, nesterov, momentum mode, scale the grad, fused.

    ``fused`` (not None: dampening is a constant 0 and momentum can be non-zero) runs MindSpore's
    ``SGD`` kernel, which rounds as the ops below do (measured: bit-identical) in one pass: ``grad +
    param * weight_decay`` (``fused`` is the constant weight decay it applies), then, for momentum > 0,
    ``buf = buf * momentum + grad`` and ``grad + buf * momentum`` (nesterov) or ``buf``, then ``param -
    lr * grad``; momentum 0 skips the buffer, as torch's branch does (the kernel tests ``float32(momentum)
    > 0`` where torch tests ``momentum != 0``: they differ only for a scheduled momentum below float32's
    smallest subnormal, 1.4e-45). torch's first buffer, ``grad``, is ``0 * momentum + grad``: the buffer is
    0 until then (``stat``: zeros, the kernel's "first" flags).
    """
    lr, mom, damp, wd = h
    mode = cfg[_OPT2]
    if cfg[_KERNEL]:
        return _sgd_kernel(cfg, h, param, grad, buf, ready)
    if mode != _MOM_OFF and cfg[_OPT4] is not None:
        g = _direction(cfg, wd, param, grad) if cfg[_OPT4] == 0.0 else grad
        P.SGD(0.0, cfg[_OPT4], cfg[_OPT1])(param, g, _f32(lr), buf, _f32(mom), stat)
        if mode == _MOM_CONST:
            ops.assign(ready, ops.ones_like(ready))
        else:
            ops.assign(ready, ops.select(mom != 0, ops.ones_like(ready), ready))
        return True
    g = _direction(cfg, wd, param, grad)
    if mode == _MOM_OFF:
        _descend(param, lr, g)                                  # param.add_(grad, alpha=-lr)
        return True
    first = ready <= 0                                            # no momentum_buffer yet: buf = grad.clone()
    if mode == _MOM_CONST:
        on = True
        a = ops.select(first, _ZERO64, mom)
        c = ops.select(first, _ONE64, 1 - damp)
    else:                                                         # torch's `if momentum != 0`, per step
        on = mom != 0
        a = ops.select(on, ops.select(first, _ZERO64, mom), _ONE64)
        c = ops.select(on, ops.select(first, _ONE64, 1 - damp), _ZERO64)
    gc = g * _f32(c) if cfg[_OPT3] else g                         # grad * (1 - dampening); exact 1 otherwise
    if cfg[_OPT1]:                                                # nesterov: grad + momentum * buf
        ops.assign(buf, buf * _f32(a) + gc)                          # buf.mul_(momentum).add_(grad, alpha=1-d)
        _descend(param, lr, g + buf * _f32(mom))
    elif mode == _MOM_CONST:
        _AM(param, buf, _f32(lr), gc, _f32(a))                    # ... and param.add_(buf, alpha=-lr)
    else:
        _AM(param, buf, _f32(ops.select(on, lr, _ZERO64)), gc, _f32(a))
        _descend(param, ops.select(on, _ZERO64, lr), g)         # momentum 0: param.add_(grad, alpha=-lr)
    if mode == _MOM_CONST:
        ops.assign(ready, ops.ones_like(ready))
    else:
        ops.assign(ready, ops.select(on, ops.ones_like(ready), ready))
    return True


def _sgd_kernel(cfg: tuple, h: tuple, param: Any, grad: Any, buf: Any, ready: Any) -> bool:
    """The composed SGD update above as one op, ``optbridge_sgd`` (kernels.cc): the same branches and roundings,
    the buffer factors and ``ready`` computed in the kernel from the group's values."""
    lr, mom, damp, wd = h
    _K_SGD(param, grad, buf, ready, ops.stack((_flag64(cfg[_MAXIMIZE]), _flag64(cfg[_WD] == _WD_L2),
                                              _flag64(cfg[_OPT1]), _flag64(cfg[_OPT3]), _MODE64[cfg[_OPT2]], wd, lr,
                                              mom, damp)))
    return True


@_adam.register("Tuple", "Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _adam_update(cfg: tuple, h: tuple, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_sq: Any,
                 step: Any) -> bool:
    """torch ``_single_tensor_adam`` (AdamW: decoupled weight decay). cfg: maximize, wd mode, amsgrad."""
    lr, beta1, beta2, eps, wd = h
    if cfg[_KERNEL]:                   # the step, the scalars below and the tensor lines as one op (kernels.cc)
        _K_ADAM(param, grad, exp_avg, exp_avg_sq, max_sq, step,
                ops.stack((_flag64(cfg[_MAXIMIZE]), _flag64(cfg[_OPT1]), _MODE64[cfg[_WD]], lr, beta1, beta2, eps, wd)))
        return True
    t = _tick(step)
    bias_correction1 = 1 - ops.pow(beta1, t)
    bias_correction2 = 1 - ops.pow(beta2, t)
    step_size = lr / bias_correction1
    bias_correction2_sqrt = ops.sqrt(bias_correction2)
    _decay(cfg, lr, wd, param)
    g = _direction(cfg, wd, param, grad)
    _lerp(exp_avg, g, 1 - beta1)
    _ema_sq(exp_avg_sq, g, beta2)
    v = exp_avg_sq
    if cfg[_OPT1]:
        v = ops.maximum(max_sq, exp_avg_sq)
        ops.assign(max_sq, v)
    denom = ops.sqrt(v) / _f32(bias_correction2_sqrt) + _f32(eps)
    _descend(param, step_size, exp_avg / denom)                 # param.addcdiv_(exp_avg, denom, value=-step_size)
    return True


@_rmsprop.register("Tuple", "Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _rmsprop_update(cfg: tuple, h: tuple, param: Any, grad: Any, square_avg: Any, grad_avg: Any, buf: Any,
                    step: Any) -> bool:
    """torch ``_single_tensor_rmsprop``. cfg: maximize, wd mode, centered, momentum mode."""
    lr, alpha, eps, wd, mom = h
    mode = cfg[_OPT2]
    if cfg[_KERNEL]:                   # the step and the lines below as one op (kernels.cc)
        _K_RMSPROP(param, grad, square_avg, grad_avg, buf, step,
                   ops.stack((_flag64(cfg[_MAXIMIZE]), _flag64(cfg[_WD] == _WD_L2), _flag64(cfg[_OPT1]), _MODE64[mode],
                              lr, alpha, eps, wd, mom)))
        return True
    _tick(step)
    g = _direction(cfg, wd, param, grad)
    _ema_sq(square_avg, g, alpha)
    if cfg[_OPT1]:
        _lerp(grad_avg, g, 1 - alpha)
        # square_avg.addcmul(grad_avg, grad_avg, value=-1): torch's kernel is one fused multiply-add (measured), which
        # matters here (cancellation): the exact float32 product and difference in float64, rounded once
        sq, ga = ops.cast(square_avg, F64), ops.cast(grad_avg, F64)
        avg = ops.sqrt(_f32(sq - ga * ga))
    else:
        avg = ops.sqrt(square_avg)
    q = g / (avg + _f32(eps))
    if mode == _MOM_OFF:
        _descend(param, lr, q)                                  # param.addcdiv_(grad, avg, value=-lr)
    elif mode == _MOM_CONST:
        _AM(param, buf, _f32(lr), q, _f32(mom))                   # buf.mul_(m).addcdiv_(grad, avg); add_(buf, -lr)
    else:                                                         # torch's `if momentum > 0`, per step
        on = mom > 0
        _AM(param, buf, _f32(ops.select(on, lr, _ZERO64)), q * _f32(ops.select(on, _ONE64, _ZERO64)),
            _f32(ops.select(on, mom, _ONE64)))
        _descend(param, ops.select(on, _ZERO64, lr), q)
    return True


@_adagrad.register("Tuple", "Tuple", "Tensor", "Tensor", "Tensor", "Tensor")
def _adagrad_update(cfg: tuple, h: tuple, param: Any, grad: Any, state_sum: Any, step: Any) -> bool:
    """torch ``_single_tensor_adagrad`` (dense). cfg: maximize, wd mode."""
    lr, lr_decay, wd, eps = h
    if cfg[_KERNEL]:                   # the step, clr and the tensor lines as one op (kernels.cc)
        _K_ADAGRAD(param, grad, state_sum, step,
                   ops.stack((_flag64(cfg[_MAXIMIZE]), _flag64(cfg[_WD] == _WD_L2), lr, lr_decay, wd, eps)))
        return True
    t = _tick(step)
    clr = lr / (1 + (t - 1) * lr_decay)
    g = _direction(cfg, wd, param, grad)
    ops.assign_add(state_sum, g * g)                              # state_sum.addcmul_(grad, grad, value=1)
    std = ops.sqrt(state_sum) + _f32(eps)
    _descend(param, clr, g / std)                               # param.addcdiv_(grad, std, value=-clr)
    return True


@_adadelta.register("Tuple", "Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _adadelta_update(cfg: tuple, h: tuple, param: Any, grad: Any, square_avg: Any, acc_delta: Any,
                     step: Any) -> bool:
    """torch ``_single_tensor_adadelta``. cfg: maximize, wd mode."""
    lr, rho, eps, wd = h
    if cfg[_KERNEL]:                   # the step and the lines below as one op (kernels.cc)
        _K_ADADELTA(param, grad, square_avg, acc_delta, step,
                    ops.stack((_flag64(cfg[_MAXIMIZE]), _flag64(cfg[_WD] == _WD_L2), lr, rho, eps, wd)))
        return True
    _tick(step)
    g = _direction(cfg, wd, param, grad)
    e = _f32(eps)
    _ema_sq(square_avg, g, rho)
    std = ops.sqrt(square_avg + e)
    delta = ops.sqrt(acc_delta + e) / std * g                     # acc_delta.add(eps).sqrt_().div_(std).mul_(grad)
    _ema_sq(acc_delta, delta, rho)
    _descend(param, lr, delta)                                  # param.add_(delta, alpha=-lr)
    return True


@_adamax.register("Tuple", "Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _adamax_update(cfg: tuple, h: tuple, param: Any, grad: Any, exp_avg: Any, exp_inf: Any, step: Any) -> bool:
    """torch ``_single_tensor_adamax``. cfg: maximize, wd mode."""
    lr, beta1, beta2, eps, wd = h
    if cfg[_KERNEL]:                   # the step, clr and the lines below as one op (kernels.cc)
        _K_ADAMAX(param, grad, exp_avg, exp_inf, step,
                  ops.stack((_flag64(cfg[_MAXIMIZE]), _flag64(cfg[_WD] == _WD_L2), lr, beta1, beta2, eps, wd)))
        return True
    t = _tick(step)
    clr = lr / (1 - ops.pow(beta1, t))
    g = _direction(cfg, wd, param, grad)
    _lerp(exp_avg, g, 1 - beta1)
    ops.assign(exp_inf, ops.maximum(exp_inf * _f32(beta2), ops.abs(g) + _f32(eps)))
    _descend(param, clr, exp_avg / exp_inf)                     # param.addcdiv_(exp_avg, exp_inf, value=-clr)
    return True


@_nadam.register("Tuple", "Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _nadam_update(cfg: tuple, h: tuple, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, mu_product: Any,
                  step: Any) -> bool:
    """torch ``_single_tensor_nadam``. cfg: maximize, wd mode (L2 or decoupled)."""
    lr, beta1, beta2, eps, wd, momentum_decay = h
    if cfg[_KERNEL]:                   # the step, mu_product, the scalars below and the tensor lines as one op
        _K_NADAM(param, grad, exp_avg, exp_avg_sq, step, mu_product,
                 ops.stack((_flag64(cfg[_MAXIMIZE]), _MODE64[cfg[_WD]], lr, beta1, beta2, eps, wd, momentum_decay)))
        return True
    t = _tick(step)
    bias_correction2 = 1 - ops.pow(beta2, t)
    mu = beta1 * (1.0 - 0.5 * ops.pow(_P96, t * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * ops.pow(_P96, (t + 1) * momentum_decay))
    mp = mu_product * _f32(mu)                                    # mu_product *= mu (float32 tensor)
    ops.assign(mu_product, mp)
    mp64 = ops.cast(mp, F64)
    mu_product_next = mp64 * mu_next
    grad_step = -(-lr * (1.0 - mu) / (1.0 - mp64))
    momentum_step = -((-lr * mu_next) / (1.0 - mu_product_next))
    _decay(cfg, lr, wd, param)
    g = _direction(cfg, wd, param, grad)
    _lerp(exp_avg, g, 1 - beta1)
    _ema_sq(exp_avg_sq, g, beta2)
    denom = ops.sqrt(exp_avg_sq / _f32(bias_correction2)) + _f32(eps)
    _descend(param, grad_step, g / denom)
    _descend(param, momentum_step, exp_avg / denom)
    return True


@_radam.register("Tuple", "Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _radam_update(cfg: tuple, h: tuple, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, step: Any) -> bool:
    """torch ``_single_tensor_radam`` (both branches of ``rho_t > 5``). cfg: maximize, wd mode."""
    lr, beta1, beta2, eps, wd = h
    if cfg[_KERNEL]:                   # the step, the scalars below and the tensor lines as one op (kernels.cc)
        _K_RADAM(param, grad, exp_avg, exp_avg_sq, step,
                 ops.stack((_flag64(cfg[_MAXIMIZE]), _MODE64[cfg[_WD]], lr, beta1, beta2, eps, wd)))
        return True
    t = _tick(step)
    bias_correction1 = 1 - ops.pow(beta1, t)
    bias_correction2 = 1 - ops.pow(beta2, t)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * ops.pow(beta2, t) / bias_correction2
    rect = ops.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    _decay(cfg, lr, wd, param)
    g = _direction(cfg, wd, param, grad)
    _lerp(exp_avg, g, 1 - beta1)
    _ema_sq(exp_avg_sq, g, beta2)
    bias_corrected = exp_avg / _f32(bias_correction1)
    base = bias_corrected * _f32(lr)
    adaptive = _f32(ops.sqrt(bias_correction2)) / (ops.sqrt(exp_avg_sq) + _f32(eps))
    ops.assign_sub(param, ops.select(rho_t > 5.0, base * adaptive * _f32(rect), base))  # param.add_(.., alpha=-1.0)
    return True


# ----------------------------------------------------------------------------- hyperparameter checks


def _checker(kind: str) -> Any:
    return lambda value, path: ir.check_hyper(path, value, kind)


_CHECKS = {kind: _checker(kind) for kind in ir.HYPER_RANGES}  # the core's ranges (optbridge.ir.check_hyper)
_TORCH_IMPL_KEYS = ("foreach", "fused", "capturable", "differentiable")  # torch implementation switches
_IGNORED_KEYS = ("name", "initial_lr")


# ----------------------------------------------------------------------------- the optimizer


@dataclass(frozen=True)
class _Group:
    """One parsed param group: its parameters (indices into ``parameters``), values, flags."""

    start: int
    stop: int
    values: tuple[tuple[str, float], ...]
    flags: tuple[tuple[str, bool], ...]
    init: tuple[tuple[str, float], ...]
    join: int = 0  # the update the group joins at (``start_step``; 0: the first)


class ExactOptimizer(nn.Optimizer):
    """Base class: torch-style groups, hyperparameter and state Parameters, one HyperMap per group.

    Subclasses set the class attributes below and a per-parameter update (a
    ``MultitypeFuncGraph``) with the signature ``(cfg, h, param, grad, *states)``.

    Attributes:
        parameters: The optimized Parameters (a ``ParameterTuple``), group by group, in
            the order the groups list them: the order ``optimizer(grads)`` expects.
        param_groups: One dict per group, torch-style: ``params`` plus every option (the
            values given at construction; the live values are the :meth:`hyper` Parameters).

    A group may carry ``start_step: k`` (an optbridge extension, for a group torch adds with
    ``add_param_group`` before update ``k``, as Lightning's BackboneFinetuning does): until the
    optimizer's ``k``-th call its parameters and state are left untouched, so its first update
    is a first update (Adam's step 1). The optimizer then counts its calls in an int32
    Parameter ``<prefix>.update`` (checkpointed with the state).

    ``kernels=``: run each parameter's update as one pass of its C++ kernel in ``kernels.cc``
    (:mod:`.kernels`; bit-identical to the composed ops, several times faster on large
    tensors); ``None`` (default) where it can be built, ``False`` never, ``True`` or a
    ConfigError saying why not. :attr:`kernels` is the choice made.
    """

    KIND: ClassVar[str] = ""
    #: numeric hyperparameters (float64 Parameters), in the order the update receives them, with their check.
    HYPERS: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: static boolean options (torch's flags), with torch's defaults.
    FLAGS: ClassVar[tuple[tuple[str, bool], ...]] = (("maximize", False),)
    #: options used only to initialise state (Adagrad's initial_accumulator_value).
    INIT: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: per-parameter state: (torch's name, float32 shape "tensor" or "scalar", initial value or INIT key).
    STATES: ClassVar[tuple[tuple[str, str, Any], ...]] = ()
    UPDATE: ClassVar[Any] = None
    #: the one-pass kernel in kernels.cc that does this update's tensor work (None: composed ops only).
    KERNEL: ClassVar[str | None] = None
    #: attributes only Python reads, never the compiled update: the torch-style group view and the parsed groups
    #: (construction values; the update reads ``_spans``, ``_h``, ``_cfg``, ``_joins`` and the Parameters). A trace
    #: reusing a compiled optimizer (:mod:`.reuse`) leaves them out of the graph's key and copies them over.
    PYTHON_SIDE: ClassVar[frozenset[str]] = frozenset({"param_groups", "_groups"})

    def __init__(self, params: Any, defaults: Mapping[str, Any], *, scheduled: Iterable[str] | None = None,
                 prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        nn.Cell.__init__(self, auto_prefix=False)                 # a Cell; nn.Optimizer only for Model's type check
        self.prefix = prefix if prefix is not None else self.KIND.lower()
        names = {name for name, _ in self.HYPERS}
        if scheduled is None:
            self.scheduled = frozenset(names)
        else:
            if isinstance(scheduled, str) or not isinstance(scheduled, Iterable):
                raise ConfigError("scheduled", "must be a list of hyperparameter names", scheduled)
            wanted = {"lr"}
            for s in scheduled:
                wanted |= {"beta1", "beta2"} if s == "betas" else {s}
            bad = sorted(str(n) for n in wanted - names)
            if bad:
                raise ConfigError("scheduled", f"must name hyperparameters of {self.KIND} ({', '.join(sorted(names))})",
                                  bad)
            self.scheduled = frozenset(wanted)
        params_list, groups = self._parse(params, defaults)
        self.param_groups = [self._group_dict(params_list, g) for g in groups]
        self.parameters = ParameterTuple(params_list)
        self._groups = tuple(groups)
        self._spans = tuple((g.start, g.stop) for g in groups)  # what the update reads of the groups
        self._hyper: dict[tuple[int, str], Parameter] = {}
        hyper_tuples = []
        hyper_params: list[Parameter] = []
        for gi, group in enumerate(groups):
            h = []
            for name, value in group.values:
                if name in self.scheduled:
                    p = Parameter(Tensor(value, F64), name=f"{self.prefix}.group{gi}.{name}", requires_grad=False)
                    self._hyper[(gi, name)] = p
                    hyper_params.append(p)
                    h.append(p)
                else:
                    h.append(Tensor(value, F64))
            hyper_tuples.append(tuple(h))
        self.hyper_parameters = ParameterTuple(hyper_params)
        self._h = tuple(hyper_tuples)
        self.kernels = self._use_kernels(kernels)
        self._cfg = tuple(self._config(g) + (self.kernels,) for g in groups)  # cfg[_KERNEL]: the one-pass kernel
        self._state: dict[tuple[str, str], Parameter] = {}
        self._state_attrs = tuple(f"state_{name}" for name, _, _ in self.STATES)
        for attr, (name, shape, init) in zip(self._state_attrs, self.STATES):
            column = []
            for group in groups:
                needed = self._needs_state(name, group)
                for p in params_list[group.start:group.stop]:
                    if not needed:
                        column.append(p)                          # placeholder: the update never touches it
                        continue
                    value = dict(group.init)[init] if isinstance(init, str) else init
                    data = (Tensor(np.full(p.shape, value, np.float32)) if shape == "tensor"
                            else Tensor(float(value), F32))
                    s = Parameter(data, name=f"{name}.{p.name}", requires_grad=False)
                    self._state[(p.name, name)] = s
                    column.append(s)
            setattr(self, attr, ParameterTuple(column))         # registered: checkpoints hold the state
        self.hyper_map = ops.HyperMap()
        self.enable_tuple_broaden = True
        self._extra_init()
        self._joins = tuple(g.join for g in groups)
        self._untouched: tuple[Any, ...] = tuple((False,) * (g.stop - g.start) for g in groups)  # before a join
        self._late = any(self._joins)
        if self._late:
            self.update_count = Parameter(Tensor(0, ms.int32), name=f"{self.prefix}.update", requires_grad=False)

    # --------------------------------------------------------------------- parsing

    def _parse(self, params: Any, defaults: Mapping[str, Any]) -> tuple[list[Parameter], list[_Group]]:
        if isinstance(params, (Parameter, Mapping)) or not isinstance(params, Iterable):
            raise ConfigError("params", "must be an iterable of Parameters or of group dicts", params)
        items = list(params)
        if not items:
            raise ConfigError("params", "must not be empty (frozen parameters are simply left out)", items)
        if all(isinstance(x, Mapping) for x in items):
            raw_groups = items
            base = "params"
        elif any(isinstance(x, Mapping) for x in items):
            raise ConfigError("params", "must be all Parameters or all group dicts", items)
        else:
            raw_groups = [{"params": items}]
            base = ""
        known = {n for n, _ in self.HYPERS} | {n for n, _ in self.FLAGS} | {n for n, _ in self.INIT}
        if {"beta1", "beta2"} <= {n for n, _ in self.HYPERS}:
            known = (known - {"beta1", "beta2"}) | {"betas"}
        out: list[Parameter] = []
        seen: dict[int, str] = {}
        names: set[str] = set()
        groups = []
        for gi, raw in enumerate(raw_groups):
            gpath = f"{base}[{gi}]" if base else "params"
            merged = dict(defaults)
            for key, value in raw.items():
                if key == "params":
                    continue
                kpath = f"{gpath}.{key}"
                if key in _TORCH_IMPL_KEYS:
                    if value not in (None, False):
                        raise ConfigError(kpath, "is a torch implementation switch; only None/False (torch's "
                                                 "single-tensor path, which this optimizer reproduces) is accepted",
                                          value)
                elif key in _IGNORED_KEYS:
                    pass
                elif key == "start_step":
                    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                        raise ConfigError(kpath, "must be an update index >= 0", value)
                elif key not in known:
                    raise ConfigError(kpath, f"is not an option of torch's {self.KIND} "
                                             f"({', '.join(sorted(known))})", key)
                else:
                    merged[key] = value
            plist = raw.get("params", None)
            if isinstance(plist, Parameter):
                plist = [plist]
            if plist is None or isinstance(plist, (str, Mapping, set)) or not isinstance(plist, Iterable):
                raise ConfigError(f"{gpath}.params" if base else "params",
                                  "must be a list of Parameters (sets have no order)", plist)
            start = len(out)
            for pi, p in enumerate(list(plist)):
                ppath = f"{gpath}.params[{pi}]" if base else f"params[{pi}]"
                if not isinstance(p, Parameter):
                    raise ConfigError(ppath, "must be a mindspore Parameter", type(p).__name__)
                if p.dtype != F32:
                    raise ConfigError(ppath, "must be a float32 Parameter (the update is torch's float32 path)",
                                      str(p.dtype))
                if id(p) in seen:
                    raise ConfigError(ppath, f"appears in more than one place (first at {seen[id(p)]})", p.name)
                if p.name in names:
                    raise ConfigError(ppath, "must have a unique name (state Parameters are named "
                                             "'<state>.<param name>')", p.name)
                seen[id(p)] = ppath
                names.add(p.name)
                out.append(p)
            if len(out) == start:
                raise ConfigError(f"{gpath}.params" if base else "params", "must not be empty", plist)
            values, flags, init = self._check(merged, gpath if base else "", defaults)
            groups.append(_Group(start, len(out), values, flags, init, int(raw.get("start_step", 0))))
        return out, groups

    def _check(self, merged: Mapping[str, Any], gpath: str, defaults: Mapping[str, Any]) -> tuple[tuple, tuple, tuple]:
        def path(key: str) -> str:
            return f"{gpath}.{key}" if gpath else key
        if "betas" in merged:
            betas = merged["betas"]
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise ConfigError(path("betas"), "must be a pair (beta1, beta2)", betas)
            merged = {**merged, "beta1": betas[0], "beta2": betas[1]}
        values = []
        for name, check in self.HYPERS:
            key = {"beta1": "betas[0]", "beta2": "betas[1]"}.get(name, name)
            values.append((name, _CHECKS[check](merged[name], path(key))))
        flags = []
        for name, _ in self.FLAGS:
            value = merged[name]
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(path(name), "must be a bool", value)
            flags.append((name, bool(value)))
        # torch reads these from its constructor arguments only (a group's own value is ignored): the same here
        init = tuple((name, _CHECKS[check](defaults[name], name)) for name, check in self.INIT)
        self._check_group(dict(values), dict(flags), gpath)
        return tuple(values), tuple(flags), init

    def _check_group(self, values: dict[str, float], flags: dict[str, bool], gpath: str) -> None:
        """Cross-option rules (SGD: nesterov); subclasses override."""

    def _use_kernels(self, kernels: bool | None) -> bool:
        """Whether the update runs the one-pass C++ kernel (:mod:`.kernels`): ``None`` where it is available."""
        if kernels is not None and kernels is not True and kernels is not False:
            raise ConfigError("kernels", "must be True, False or None (use them where available)", kernels)
        if kernels is False:
            return False
        ok, why = (False, f"{self.KIND} has no one-pass kernel") if self.KERNEL is None else _kernels.status()
        if not ok:
            if kernels:
                raise ConfigError("kernels", f"the one-pass kernels are unavailable: {why}", kernels)
            return False
        _load_kernels()
        return True

    def _group_dict(self, params: list[Parameter], group: _Group) -> dict[str, Any]:
        d: dict[str, Any] = {"params": params[group.start:group.stop]}
        values = dict(group.values)
        for name, value in group.values:
            if name == "beta1":
                d["betas"] = (values["beta1"], values["beta2"])
            elif name != "beta2":
                d[name] = value
        d.update(group.flags)
        d.update(group.init)
        if group.join:
            d["start_step"] = group.join
        return d

    # --------------------------------------------------------------------- static configuration

    def _constant(self, group: _Group, name: str) -> float | None:
        """The hyperparameter's value if it is a compile-time constant (not scheduled), else None."""
        return None if name in self.scheduled else dict(group.values)[name]

    def _wd_mode(self, group: _Group, decoupled: bool) -> int:
        if self._constant(group, "weight_decay") == 0.0:
            return _WD_OFF
        return _WD_DECOUPLED if decoupled else _WD_L2

    def _momentum_mode(self, group: _Group) -> int:
        value = self._constant(group, "momentum")
        if value is None:
            return _MOM_DYNAMIC
        return _MOM_OFF if value == 0.0 else _MOM_CONST

    def _config(self, group: _Group) -> tuple:
        """The group's static configuration: (maximize, weight decay mode, kind-specific...)."""
        flags = dict(group.flags)
        return (flags["maximize"], self._wd_mode(group, flags.get("decoupled_weight_decay", False)))

    def _needs_state(self, name: str, group: _Group) -> bool:
        """Whether the group's parameters hold state ``name`` (torch creates some only for some options)."""
        return True

    def _extra_init(self) -> None:
        """Per-parameter constants a subclass's update needs besides its state (none here)."""

    # --------------------------------------------------------------------- update

    def _update_group(self, gi: int, grads: tuple) -> tuple:
        start, stop = self._spans[gi]
        return self.hyper_map(ops.partial(self.UPDATE, self._cfg[gi], self._h[gi]),
                              self.parameters[start:stop], grads[start:stop],
                              *[getattr(self, attr)[start:stop] for attr in self._state_attrs],
                              *self._extra_columns(start, stop))

    def _extra_columns(self, start: int, stop: int) -> tuple:
        """Per-parameter constants the update takes after the state (see :meth:`_extra_init`)."""
        return ()

    @ms.jit
    def _apply(self, grads: tuple) -> tuple:
        ok = ()
        for gi in range(len(self._groups)):
            if self._joins[gi] == 0:
                ok = ok + self._update_group(gi, grads)
            elif self.update_count >= self._joins[gi]:  # joined: from here on as if added at this update
                ok = ok + self._update_group(gi, grads)
            else:
                ok = ok + self._untouched[gi]
        if self._late:
            ops.assign_add(self.update_count, ops.ones((), ms.int32))
        return ok

    def construct(self, gradients: tuple) -> tuple:
        """One update of every group, with ``gradients`` in ``parameters`` order."""
        return self._apply(gradients)

    # --------------------------------------------------------------------- access

    def hyper(self, group: int, name: str) -> Parameter:
        """The float64 Parameter holding hyperparameter ``name`` of group ``group`` (write it with ``ops.assign``).

        ``betas`` are ``beta1`` and ``beta2``. Raises ConfigError for an unknown name or
        a hyperparameter made a constant by ``scheduled=``.
        """
        if not isinstance(group, int) or not 0 <= group < len(self._groups):
            raise ConfigError("group", f"must be a group index in [0, {len(self._groups)})", group)
        if (group, name) in self._hyper:
            return self._hyper[(group, name)]
        if name in {n for n, _ in self.HYPERS}:
            raise ConfigError("name", f"is a constant of this {self.KIND} (scheduled= did not list it); "
                                      "list it in scheduled= to drive it", name)
        raise ConfigError("name", f"must be a hyperparameter of {self.KIND} "
                                  f"({', '.join(n for n, _ in self.HYPERS)})", name)

    def hypers(self) -> list[tuple[int, str, Parameter]]:
        """Every driven hyperparameter as ``(group index, name, Parameter)``."""
        return [(g, n, p) for (g, n), p in self._hyper.items()]

    def state(self, param: Parameter | str, name: str) -> Parameter:
        """The state Parameter ``<name>.<param name>`` (torch's state name, see STATE_NAMES)."""
        key = (param if isinstance(param, str) else param.name, name)
        if key not in self._state:
            raise ConfigError("state", f"no state {name!r} for parameter {key[0]!r} in this {self.KIND} "
                                       f"(its states: {', '.join(sorted({n for _, n in self._state}))})", key)
        return self._state[key]

    def states(self) -> list[tuple[str, str, Parameter]]:
        """Every state Parameter as ``(param name, state name, Parameter)``."""
        return [(p, n, s) for (p, n), s in self._state.items()]


class SGD(ExactOptimizer):
    """torch.optim.SGD (momentum, dampening, nesterov, weight_decay, maximize).

    State per parameter: ``momentum_buffer`` and ``has_momentum_buffer`` (float32 0/1:
    torch's buffer is None until the first update with momentum != 0), only in groups
    whose momentum can be non-zero.
    """

    KIND = "SGD"
    HYPERS = (("lr", "nonneg"), ("momentum", "nonneg"), ("dampening", "real"), ("weight_decay", "nonneg"))
    FLAGS = (("nesterov", False), ("maximize", False))
    STATES = (("momentum_buffer", "tensor", 0.0), ("has_momentum_buffer", "scalar", 0.0))
    UPDATE = _sgd
    KERNEL = "sgd"

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 scheduled: Iterable[str] | None = None, prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize),
                         scheduled=scheduled, prefix=prefix, kernels=kernels)

    def _check_group(self, values: dict[str, float], flags: dict[str, bool], gpath: str) -> None:
        if flags["nesterov"] and (values["momentum"] <= 0 or values["dampening"] != 0):
            raise ConfigError(f"{gpath}.nesterov" if gpath else "nesterov",
                              "needs momentum > 0 and dampening 0 (torch's rule)",
                              {"momentum": values["momentum"], "dampening": values["dampening"]})

    def _config(self, group: _Group) -> tuple:
        mode = self._momentum_mode(group)
        scale = mode == _MOM_DYNAMIC or self._constant(group, "dampening") != 0.0
        base = super()._config(group)
        fused = None  # the SGD kernel (see _sgd_update): dampening a constant 0, not maximize
        if mode != _MOM_OFF and self._constant(group, "dampening") == 0.0 and not base[_MAXIMIZE]:
            wd = self._constant(group, "weight_decay")
            fused = float(wd) if base[_WD] == _WD_L2 and wd is not None else 0.0
        return base + (dict(group.flags)["nesterov"], mode, scale, fused)

    def _needs_state(self, name: str, group: _Group) -> bool:
        return self._momentum_mode(group) != _MOM_OFF

    def _extra_columns(self, start: int, stop: int) -> tuple:
        return (self._stat[start:stop],)

    def _extra_init(self) -> None:
        """The SGD kernel's per-element "first update" flags: zeros, which it only reads (one tensor per shape,
        shared; placeholders where the kernel is not used)."""
        zeros: dict[tuple[int, ...], Tensor] = {}
        stat = []
        for gi, g in enumerate(self._groups):
            for p in self.parameters[g.start:g.stop]:
                if self._cfg[gi][_OPT4] is None or self.kernels:
                    stat.append(p)
                    continue
                if tuple(p.shape) not in zeros:
                    zeros[tuple(p.shape)] = Tensor(np.zeros(p.shape, np.float32))
                stat.append(zeros[tuple(p.shape)])
        self._stat = tuple(stat)


class Adam(ExactOptimizer):
    """torch.optim.Adam (amsgrad, maximize, decoupled_weight_decay).

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad).
    """

    KIND = "Adam"
    HYPERS = (("lr", "nonneg"), ("beta1", "beta"), ("beta2", "beta"), ("eps", "nonneg"), ("weight_decay", "nonneg"))
    FLAGS: ClassVar[tuple[tuple[str, bool], ...]] = (("amsgrad", False), ("maximize", False),
                                                     ("decoupled_weight_decay", False))
    STATES = (("exp_avg", "tensor", 0.0), ("exp_avg_sq", "tensor", 0.0), ("max_exp_avg_sq", "tensor", 0.0),
              ("step", "scalar", 0.0))
    UPDATE = _adam
    KERNEL = "adam"

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False, scheduled: Iterable[str] | None = None,
                 prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay),
                         scheduled=scheduled, prefix=prefix, kernels=kernels)

    def _config(self, group: _Group) -> tuple:
        return super()._config(group) + (dict(group.flags)["amsgrad"],)

    def _needs_state(self, name: str, group: _Group) -> bool:
        return name != "max_exp_avg_sq" or dict(group.flags)["amsgrad"]


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 1e-2)."""

    KIND = "AdamW"
    FLAGS = (("amsgrad", False), ("maximize", False))

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 scheduled: Iterable[str] | None = None, prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        ExactOptimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                                   amsgrad=amsgrad, maximize=maximize),
                                scheduled=scheduled, prefix=prefix, kernels=kernels)

    def _config(self, group: _Group) -> tuple:
        flags = dict(group.flags)
        return (flags["maximize"], self._wd_mode(group, True), flags["amsgrad"])


class RMSprop(ExactOptimizer):
    """torch.optim.RMSprop (alpha, eps, centered, momentum, weight_decay, maximize).

    State per parameter: ``step``, ``square_avg``, ``grad_avg`` (centered),
    ``momentum_buffer`` (momentum can be > 0).
    """

    KIND = "RMSprop"
    HYPERS = (("lr", "nonneg"), ("alpha", "nonneg"), ("eps", "nonneg"), ("weight_decay", "nonneg"),
              ("momentum", "nonneg"))
    FLAGS = (("centered", False), ("maximize", False))
    STATES = (("square_avg", "tensor", 0.0), ("grad_avg", "tensor", 0.0), ("momentum_buffer", "tensor", 0.0),
              ("step", "scalar", 0.0))
    UPDATE = _rmsprop
    KERNEL = "rmsprop"

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False, scheduled: Iterable[str] | None = None, prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize),
                         scheduled=scheduled, prefix=prefix, kernels=kernels)

    def _config(self, group: _Group) -> tuple:
        return super()._config(group) + (dict(group.flags)["centered"], self._momentum_mode(group))

    def _needs_state(self, name: str, group: _Group) -> bool:
        if name == "grad_avg":
            return dict(group.flags)["centered"]
        if name == "momentum_buffer":
            return self._momentum_mode(group) != _MOM_OFF
        return True


class Adagrad(ExactOptimizer):
    """torch.optim.Adagrad (lr_decay, initial_accumulator_value, eps outside the sqrt, maximize).

    State per parameter: ``step``, ``sum`` (starts at the constructor's
    initial_accumulator_value in every group: torch ignores a group's own value).
    """

    KIND = "Adagrad"
    HYPERS = (("lr", "nonneg"), ("lr_decay", "nonneg"), ("weight_decay", "nonneg"), ("eps", "nonneg"))
    INIT = (("initial_accumulator_value", "nonneg"),)
    STATES = (("sum", "tensor", "initial_accumulator_value"), ("step", "scalar", 0.0))
    UPDATE = _adagrad
    KERNEL = "adagrad"

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False,
                 scheduled: Iterable[str] | None = None, prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps,
                                      maximize=maximize), scheduled=scheduled, prefix=prefix, kernels=kernels)


class Adadelta(ExactOptimizer):
    """torch.optim.Adadelta (rho, eps, lr, weight_decay, maximize).

    State per parameter: ``step``, ``square_avg``, ``acc_delta``.
    """

    KIND = "Adadelta"
    HYPERS = (("lr", "nonneg"), ("rho", "unit"), ("eps", "nonneg"), ("weight_decay", "nonneg"))
    STATES = (("square_avg", "tensor", 0.0), ("acc_delta", "tensor", 0.0), ("step", "scalar", 0.0))
    UPDATE = _adadelta
    KERNEL = "adadelta"

    def __init__(self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 *, maximize: bool = False, scheduled: Iterable[str] | None = None,
                 prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize),
                         scheduled=scheduled, prefix=prefix, kernels=kernels)


class Adamax(ExactOptimizer):
    """torch.optim.Adamax (betas, eps inside the max, weight_decay, maximize).

    State per parameter: ``step``, ``exp_avg``, ``exp_inf``.
    """

    KIND = "Adamax"
    HYPERS = (("lr", "nonneg"), ("beta1", "beta"), ("beta2", "beta"), ("eps", "nonneg"), ("weight_decay", "nonneg"))
    STATES = (("exp_avg", "tensor", 0.0), ("exp_inf", "tensor", 0.0), ("step", "scalar", 0.0))
    UPDATE = _adamax
    KERNEL = "adamax"

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False, scheduled: Iterable[str] | None = None,
                 prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize),
                         scheduled=scheduled, prefix=prefix, kernels=kernels)


class NAdam(ExactOptimizer):
    """torch.optim.NAdam (momentum_decay, decoupled_weight_decay, torch's float32 mu_product).

    State per parameter: ``step``, ``mu_product`` (float32, starts at 1), ``exp_avg``, ``exp_avg_sq``.
    """

    KIND = "NAdam"
    HYPERS = (("lr", "nonneg"), ("beta1", "beta"), ("beta2", "beta"), ("eps", "nonneg"), ("weight_decay", "nonneg"),
              ("momentum_decay", "nonneg"))
    FLAGS = (("maximize", False), ("decoupled_weight_decay", False))
    STATES = (("exp_avg", "tensor", 0.0), ("exp_avg_sq", "tensor", 0.0), ("mu_product", "scalar", 1.0),
              ("step", "scalar", 0.0))
    UPDATE = _nadam
    KERNEL = "nadam"

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False, scheduled: Iterable[str] | None = None, prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize), scheduled=scheduled, prefix=prefix, kernels=kernels)


class RAdam(ExactOptimizer):
    """torch.optim.RAdam (decoupled_weight_decay; torch's rho_t > 5 rectification branch per step).

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    KIND = "RAdam"
    HYPERS = (("lr", "nonneg"), ("beta1", "beta"), ("beta2", "beta"), ("eps", "nonneg"), ("weight_decay", "nonneg"))
    FLAGS = (("maximize", False), ("decoupled_weight_decay", False))
    STATES = (("exp_avg", "tensor", 0.0), ("exp_avg_sq", "tensor", 0.0), ("step", "scalar", 0.0))
    UPDATE = _radam
    KERNEL = "radam"

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 scheduled: Iterable[str] | None = None, prefix: str | None = None,
                 kernels: bool | None = None) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay, maximize=maximize),
                         scheduled=scheduled, prefix=prefix, kernels=kernels)


#: torch class name -> exact optimizer class.
OPTIMIZERS: dict[str, type[ExactOptimizer]] = {c.KIND: c for c in (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta,
                                                                   Adamax, NAdam, RAdam)}

#: torch class name -> the state names its Parameters use (``<state>.<param name>``).
STATE_NAMES: dict[str, tuple[str, ...]] = {k: tuple(n for n, _, _ in c.STATES) for k, c in OPTIMIZERS.items()}


def exact_optimizer(kind: str, params: Any, **options: Any) -> ExactOptimizer:
    """The exact optimizer for torch class name ``kind`` (``"AdamW"``), with torch's keyword options."""
    if kind not in OPTIMIZERS:
        raise ConfigError("optimizer.type", f"must be one of {', '.join(OPTIMIZERS)} for the exact MindSpore "
                                            "optimizers", kind)
    try:
        return OPTIMIZERS[kind](params, **options)
    except TypeError as exc:
        raise ConfigError("optimizer", f"options must be keyword options of torch's {kind}", str(exc)) from None
