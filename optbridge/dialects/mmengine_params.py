"""MMEngine ``paramwise_cfg`` and optimizer constructors as optbridge param groups.

Implements what the constructors' **code** does (MMEngine 0.10.7
``DefaultOptimWrapperConstructor.add_params``, mmpretrain 1.2
``LearningRateDecayOptimWrapperConstructor``, mmdet 3.3 / mmseg 1.2
``LearningRateDecayOptimizerConstructor``):

* With ``model=`` (a torch ``nn.Module``), every parameter gets MMEngine's lr
  and weight decay, walking the modules as ``add_params`` does (duck-typed: no
  torch import), and parameters with equal options form one group whose selector
  lists their names. Frozen parameters (``requires_grad=False``), which MMEngine
  leaves out, form a ``frozen: exclude`` group.
* Without a model, rules that names and shapes express become selectors:
  ``custom_keys`` (a regular expression per key that reproduces "longest key
  contained in ``prefix.name``, ties alphabetical"), ``bias_decay_mult``
  (``leaf: bias``) and ``flat_decay_mult`` (``ndim: [1]``). Rules that test a
  module's type or attributes (``norm_decay_mult``, ``dwconv_decay_mult``,
  ``bias_lr_mult``, which skips norm layers, ``dcn_offset_lr_mult``) and the
  layer-decay constructors raise a :class:`~optbridge.errors.ConfigError` that
  names the rule and asks for the model.

Group options are multipliers where MMEngine multiplies (``lr_mult`` =
``base_lr * lr_mult``, ``weight_decay_mult`` = ``base_wd * decay_mult``, the same
float products), so a group's base values are bit-identical to MMEngine's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..ir import check_bool, check_real
from ..plan import GROUP_OPTIONS, Selector
from ..serialize import expect_mapping
from ._common import join, suggest

__all__ = ["DEFAULT_RULES", "CONSTRUCTORS", "build_groups"]

#: ``paramwise_cfg`` keys of MMEngine's DefaultOptimWrapperConstructor.
DEFAULT_RULES = ("custom_keys", "bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult",
                 "flat_decay_mult", "dcn_offset_lr_mult", "bypass_duplicate")
_PRETRAIN_RULES = ("custom_keys", "layer_decay_rate", "bias_decay_mult", "norm_decay_mult", "flat_decay_mult")
_DETSEG_RULES = ("num_layers", "decay_rate", "decay_type")
#: Constructor names accepted in ``optim_wrapper.constructor`` (registry scope prefixes allowed).
CONSTRUCTORS = ("DefaultOptimWrapperConstructor", "LearningRateDecayOptimWrapperConstructor",
                "LearningRateDecayOptimizerConstructor")
_NORM_BASES = {("torch.nn.modules.batchnorm", "_BatchNorm"), ("torch.nn.modules.instancenorm", "_InstanceNorm"),
               ("torch.nn.modules.normalization", "GroupNorm"), ("torch.nn.modules.normalization", "LayerNorm")}
_MODEL_RULES = {
    "norm_decay_mult": "tests isinstance(module, (_BatchNorm, _InstanceNorm, GroupNorm, LayerNorm)), which names "
                       "and module-type globs cannot express (subclasses under other names count)",
    "dwconv_decay_mult": "tests a Conv2d's in_channels == groups, an attribute no selector sees",
    "bias_lr_mult": "skips the biases of normalization layers, which needs the module types",
    "dcn_offset_lr_mult": "needs to know which modules are mmcv deformable convolutions",
}


@dataclass
class GroupSpec:
    """One group before the plan is assembled."""

    name: str
    select: tuple[Selector, ...]
    options: dict[str, Any]
    frozen: str | None = None
    params: list[str] = field(default_factory=list)


def build_groups(ow: Mapping[str, Any], opt: Mapping[str, Any], path: str, model: Any,
                 allowed: tuple[str, ...]) -> tuple[list[GroupSpec], int | None]:
    """Groups for ``optim_wrapper`` ``ow`` (optimizer kwargs ``opt``).

    Returns:
        The groups, and how many param groups MMEngine builds (1 without paramwise_cfg; None when
        it builds one per parameter, so per-group scheduler lists cannot be related).
    """
    ctor = ow.get("constructor", "DefaultOptimWrapperConstructor")
    cpath = join(path, "constructor")
    name = ctor.rsplit(".", 1)[-1] if isinstance(ctor, str) else ctor
    if name not in CONSTRUCTORS:
        raise ConfigError(cpath, "is not a supported optimizer wrapper constructor" + suggest(name, CONSTRUCTORS)
                          + " (supported: " + ", ".join(CONSTRUCTORS) + ")", ctor)
    ppath = join(path, "paramwise_cfg")
    pw = ow.get("paramwise_cfg")
    pw = {} if pw is None else dict(expect_mapping(ppath, pw))
    rules = {"DefaultOptimWrapperConstructor": DEFAULT_RULES,
             "LearningRateDecayOptimWrapperConstructor": _PRETRAIN_RULES,
             "LearningRateDecayOptimizerConstructor": _DETSEG_RULES}[name]
    for key, v in pw.items():
        if key not in rules:
            raise ConfigError(join(ppath, str(key)), f"is not read by {name}" + suggest(key, rules)
                              + " (keys: " + ", ".join(rules) + ")", v)
    base_lr, base_wd = opt.get("lr"), opt.get("weight_decay")
    if not pw:
        return [GroupSpec("all", (Selector(rest=True),), {})], 1
    if base_lr is None:
        raise ConfigError(join(path, "optimizer.lr"), "is required with paramwise_cfg (MMEngine multiplies it)", None,
                          show_value=False)
    check_real(join(path, "optimizer.lr"), base_lr)
    if name == "DefaultOptimWrapperConstructor":
        return _default(pw, ppath, model, base_wd, allowed), None
    if model is None:
        raise ConfigError(cpath, f"{name} needs the model (pass model=): it splits groups by the layer depth the "
                          "model computes and by parameter ndim, which selectors cannot express", ctor)
    if name == "LearningRateDecayOptimWrapperConstructor":
        return _pretrain(pw, ppath, model, base_wd, allowed), None
    return _detseg(pw, ppath, model, base_wd), None


# --------------------------------------------------------------------------- custom keys

def _custom_keys(pw: Mapping[str, Any], ppath: str, base_wd: Any, allowed: tuple[str, ...]) -> dict[str, dict]:
    raw = pw.get("custom_keys", {})
    kpath = join(ppath, "custom_keys")
    raw = expect_mapping(kpath, raw)
    out: dict[str, dict] = {}
    for key, cfg in raw.items():
        p = f"{kpath}[{key!r}]"
        if not isinstance(key, str) or not key:
            raise ConfigError(kpath, "keys must be non-empty strings (substrings of parameter names)", key)
        cfg = dict(expect_mapping(p, cfg))
        for k, v in cfg.items():
            if k not in ("lr_mult", "decay_mult") and k not in allowed:
                raise ConfigError(join(p, str(k)), "is not lr_mult, decay_mult or an option of the optimizer"
                                  + suggest(k, ("lr_mult", "decay_mult", *allowed)), v)
            if k in ("lr_mult", "decay_mult"):
                check_real(join(p, k), v)
        if "decay_mult" in cfg and base_wd is None:
            raise ConfigError(join(p, "decay_mult"), "needs optimizer.weight_decay (MMEngine: 'base_wd should not be "
                              "None')", cfg["decay_mult"])
        out[key] = cfg
    return out


def _sorted_keys(keys: Mapping[str, Any]) -> list[str]:
    return sorted(sorted(keys), key=len, reverse=True)  # MMEngine: alphabetical, then longest first


def _custom_options(cfg: Mapping[str, Any], base_wd: Any) -> dict[str, Any]:
    """MMEngine: lr = base_lr * lr_mult, weight_decay = base_wd * decay_mult, then the key's other settings."""
    opts: dict[str, Any] = {}
    if cfg.get("lr_mult", 1.0) != 1.0:
        opts["lr_mult"] = cfg["lr_mult"]
    if base_wd is not None and cfg.get("decay_mult", 1.0) != 1.0:
        opts["weight_decay_mult"] = cfg["decay_mult"]
    for k, v in cfg.items():
        if k in ("lr_mult", "decay_mult"):
            continue
        opts[k] = v
        if k == "lr":
            opts.pop("lr_mult", None)
        if k == "weight_decay":
            opts.pop("weight_decay_mult", None)
    return opts


def _contains(key: str) -> str:
    """Regex (over an optbridge name) for ``key in S``, S being MMEngine's ``f'{prefix}.{name}'``.

    For a parameter of the root module MMEngine's string is ``'.' + name``.
    """
    alts = [f".*{re.escape(key)}.*"]
    if key.startswith(".") and "." not in key[1:]:
        alts.append(rf"(?=[^.]*\Z){re.escape(key[1:])}.*")
    return "|".join(f"(?:{a})" for a in alts)


# --------------------------------------------------------------------------- DefaultOptimWrapperConstructor

def _default(pw: Mapping[str, Any], ppath: str, model: Any, base_wd: Any, allowed: tuple[str, ...]) -> list[GroupSpec]:
    custom = _custom_keys(pw, ppath, base_wd, allowed)
    mults = {}
    for key in ("bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult", "flat_decay_mult",
                "dcn_offset_lr_mult"):
        if pw.get(key) is not None:
            mults[key] = check_real(join(ppath, key), pw[key])
    bypass = check_bool(join(ppath, "bypass_duplicate"), pw.get("bypass_duplicate", False))
    for key in ("bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult"):
        if key in mults and base_wd is None:
            raise ConfigError(join(ppath, key), "needs optimizer.weight_decay (MMEngine: 'base_wd should not be None')",
                              mults[key])
    if model is not None:
        return _default_model(custom, mults, bypass, base_wd, model)
    for key, why in _MODEL_RULES.items():
        if key in mults:
            raise ConfigError(join(ppath, key), f"needs the model (pass model=): MMEngine {why}", mults[key])
    keys = _sorted_keys(custom)
    groups: list[GroupSpec] = []
    for i, key in enumerate(keys):
        ahead = "".join(f"(?!{_contains(k)})" for k in keys[:i])
        groups.append(GroupSpec(f"custom:{key}", (Selector(regex=(f"{ahead}(?:{_contains(key)})",)),),
                                _custom_options(custom[key], base_wd)))
    nokey = "".join(f"(?!{_contains(k)})" for k in keys)
    bias, flat = mults.get("bias_decay_mult"), mults.get("flat_decay_mult")
    if base_wd is None:
        flat = None  # MMEngine applies the weight-decay rules only when the optimizer sets weight_decay
    if bias is not None:
        sel = Selector(regex=(nokey + ".*",), leaf=("bias",)) if keys else Selector(leaf=("bias",))
        groups.append(GroupSpec("bias_decay", (sel,), {"weight_decay_mult": bias}))
    if flat is not None:
        if bias is not None:
            sel = Selector(regex=(nokey + r"(?!(?:.*\.)?bias\Z).*",), ndim=(1,))
        else:
            sel = Selector(regex=(nokey + ".*",), ndim=(1,)) if keys else Selector(ndim=(1,))
        groups.append(GroupSpec("flat_decay", (sel,), {"weight_decay_mult": flat}))
    groups.append(GroupSpec("default", (Selector(rest=True),), {}))
    return groups


def _is_norm(module: Any) -> bool:
    return any((c.__module__, c.__name__) in _NORM_BASES for c in type(module).__mro__)


def _is_dwconv(module: Any) -> bool:
    is_conv2d = any((c.__module__, c.__name__) == ("torch.nn.modules.conv", "Conv2d") for c in type(module).__mro__)
    return is_conv2d and getattr(module, "in_channels", None) == getattr(module, "groups", None)


def _is_dcn(module: Any) -> bool:
    return any(c.__module__.startswith("mmcv.ops") and c.__name__ in ("DeformConv2d", "ModulatedDeformConv2d")
               for c in type(module).__mro__)


class _Collector:
    """Parameters with their options and rule labels, grouped as the plan needs them."""

    def __init__(self) -> None:
        self.order: list[tuple[str, tuple]] = []
        self.groups: dict[tuple[str, tuple], GroupSpec] = {}
        self.frozen: list[str] = []
        self.seen: set[int] = set()

    def add(self, label: str, options: dict[str, Any], name: str) -> None:
        key = (label, tuple(sorted(options.items())))
        if key not in self.groups:
            self.groups[key] = GroupSpec(label, (), options)
            self.order.append(key)
        self.groups[key].params.append(name)

    def result(self) -> list[GroupSpec]:
        out = []
        names: dict[str, int] = {}
        for key in self.order:
            g = self.groups[key]
            n = names.get(g.name, 0)
            names[g.name] = n + 1
            label = g.name if n == 0 else f"{g.name}#{n}"
            out.append(GroupSpec(label, (Selector(names=tuple(_glob_escape(p) for p in g.params)),), g.options,
                                 params=g.params))
        if self.frozen:
            out.append(GroupSpec("frozen", (Selector(names=tuple(_glob_escape(p) for p in self.frozen)),), {},
                                 frozen="exclude", params=self.frozen))
        return out


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _default_model(custom: Mapping[str, dict], mults: Mapping[str, float], bypass: bool, base_wd: Any,
                   model: Any) -> list[GroupSpec]:
    keys = _sorted_keys(custom)
    out = _Collector()

    def add_params(module: Any, prefix: str, is_dcn_module: bool) -> None:
        is_norm, is_dw = _is_norm(module), _is_dwconv(module)
        for name, param in module.named_parameters(recurse=False):
            full = f"{prefix}.{name}" if prefix else name
            if id(param) in out.seen:
                if bypass:
                    continue
                raise ConfigError("optim_wrapper.paramwise_cfg.bypass_duplicate", f"must be true for this model: "
                                  f"parameter {full!r} is shared with another name, and without bypass_duplicate "
                                  "MMEngine passes it twice (torch: 'some parameters appear in more than one "
                                  "parameter group')", bypass)
            out.seen.add(id(param))
            if not param.requires_grad:
                out.frozen.append(full)
                continue
            mm_name = f"{prefix}.{name}"
            key = next((k for k in keys if k in mm_name), None)
            if key is not None:
                out.add(f"custom:{key}", _custom_options(custom[key], base_wd), full)
                continue
            opts: dict[str, Any] = {}
            labels = []
            if name == "bias" and not (is_norm or is_dcn_module) and "bias_lr_mult" in mults:
                opts["lr_mult"] = mults["bias_lr_mult"]
                labels.append("bias_lr")
            if prefix.find("conv_offset") != -1 and is_dcn_module and "dcn_offset_lr_mult" in mults \
                    and any((c.__module__, c.__name__) == ("torch.nn.modules.conv", "Conv2d")
                            for c in type(module).__mro__):
                opts["lr_mult"] = mults["dcn_offset_lr_mult"]
                labels.append("dcn_offset_lr")
            if base_wd is not None:
                if is_norm and "norm_decay_mult" in mults:
                    opts["weight_decay_mult"] = mults["norm_decay_mult"]
                    labels.append("norm_decay")
                elif name == "bias" and not is_dcn_module and "bias_decay_mult" in mults:
                    opts["weight_decay_mult"] = mults["bias_decay_mult"]
                    labels.append("bias_decay")
                elif is_dw and "dwconv_decay_mult" in mults:
                    opts["weight_decay_mult"] = mults["dwconv_decay_mult"]
                    labels.append("dwconv_decay")
                elif param.ndim == 1 and not is_dcn_module and "flat_decay_mult" in mults:
                    opts["weight_decay_mult"] = mults["flat_decay_mult"]
                    labels.append("flat_decay")
            out.add("+".join(labels) or "default", opts, full)
        child_dcn = _is_dcn(module)
        for child_name, child in module.named_children():
            add_params(child, f"{prefix}.{child_name}" if prefix else child_name, child_dcn)

    add_params(getattr(model, "module", model), "", False)
    return out.result()


# --------------------------------------------------------------------------- layer decay

def _pretrain(pw: Mapping[str, Any], ppath: str, model: Any, base_wd: Any, allowed: tuple[str, ...]) -> list[GroupSpec]:
    """mmpretrain's LearningRateDecayOptimWrapperConstructor.add_params, parameter by parameter."""
    custom = _custom_keys(pw, ppath, base_wd, allowed)
    keys = _sorted_keys(custom)
    mults = {k: check_real(join(ppath, k), pw[k]) for k in ("bias_decay_mult", "norm_decay_mult", "flat_decay_mult")
             if pw.get(k) is not None}
    rate = check_real(join(ppath, "layer_decay_rate"), pw.get("layer_decay_rate", 1.0))
    root = getattr(model, "module", model)
    depth = getattr(root, "get_layer_depth", None)
    if depth is None:
        raise ConfigError(join(ppath, "layer_decay_rate"), f"needs a model with get_layer_depth (mmpretrain: 'The "
                          f"layer-wise learning rate decay need the model {type(root).__name__} has `get_layer_depth` "
                          "method')", rate)
    out = _Collector()

    def add_params(module: Any, prefix: str) -> None:
        is_norm = _is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            pname = prefix + name
            if not param.requires_grad:
                out.frozen.append(pname)
                continue
            opts: dict[str, Any] = {}
            label = "layer"
            if base_wd is not None:
                key = next((k for k in keys if k in pname), None)
                if key is not None:
                    cfg = dict(custom[key])
                    mult = cfg.pop("decay_mult", 1.0)
                    opts["weight_decay_mult"] = mult
                    for k, v in cfg.items():
                        if k == "lr_mult":
                            continue  # stored as an extra group key: "lr_mult is disabled in this constructor"
                        if k == "weight_decay":
                            opts.pop("weight_decay_mult", None)
                        opts[k] = v
                    opts.pop("lr", None)  # overwritten by base_lr * scale below
                    label = f"custom:{key}"
                elif is_norm and "norm_decay_mult" in mults:
                    opts["weight_decay_mult"], label = mults["norm_decay_mult"], "norm_decay"
                elif name == "bias" and "bias_decay_mult" in mults:
                    opts["weight_decay_mult"], label = mults["bias_decay_mult"], "bias_decay"
                elif param.ndim == 1 and "flat_decay_mult" in mults:
                    opts["weight_decay_mult"], label = mults["flat_decay_mult"], "flat_decay"
                else:
                    label = "decay"
            layer_id, max_id = depth(pname)
            scale = rate ** (max_id - layer_id - 1)
            opts["lr_mult"] = scale
            out.add(f"layer_{layer_id}_{label}", opts, pname)
        for child_name, child in module.named_children():
            add_params(child, f"{prefix}{child_name}.")

    add_params(root, "")
    return out.result()


def _convnext_layer(name: str, max_layer_id: int) -> int:
    """mmdet/mmseg ``get_layer_id_for_convnext``."""
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    if name.startswith("backbone.downsample_layers"):
        stage = int(name.split(".")[2])
        table = {0: 0, 1: 2, 2: 3, 3: max_layer_id}
        if stage not in table:
            raise ConfigError("optim_wrapper.paramwise_cfg.num_layers", f"parameter {name!r} is in downsample stage "
                              f"{stage}; mmdet's rule knows stages 0-3 (it fails with UnboundLocalError)", max_layer_id)
        return table[stage]
    if name.startswith("backbone.stages"):
        stage, block = int(name.split(".")[2]), int(name.split(".")[3])
        if stage not in (0, 1, 2, 3):
            raise ConfigError("optim_wrapper.paramwise_cfg.num_layers", f"parameter {name!r} is in stage {stage}; "
                              "mmdet's rule knows stages 0-3 (it fails with UnboundLocalError)", max_layer_id)
        return {0: 1, 1: 2, 2: 3 + block // 3, 3: max_layer_id}[stage]
    return max_layer_id + 1


def _convnext_stage(name: str, max_stage_id: int) -> int:
    """mmdet/mmseg ``get_stage_id_for_convnext``."""
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    if name.startswith("backbone.downsample_layers"):
        return 0
    if name.startswith("backbone.stages"):
        return int(name.split(".")[2]) + 1
    return max_stage_id - 1


def _vit_layer(name: str, max_layer_id: int) -> int:
    """mmseg ``get_layer_id_for_vit`` (BEiT / MAE backbones)."""
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    if name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.layers"):
        return int(name.split(".")[2]) + 1
    return max_layer_id - 1


def _detseg(pw: Mapping[str, Any], ppath: str, model: Any, base_wd: Any) -> list[GroupSpec]:
    """mmdet's / mmseg's LearningRateDecayOptimizerConstructor.add_params (ConvNeXt; mmseg also BEiT/MAE)."""
    if "num_layers" not in pw or "decay_rate" not in pw:
        raise ConfigError(join(ppath, "num_layers" if "num_layers" not in pw else "decay_rate"), "is required by "
                          "LearningRateDecayOptimizerConstructor", None, show_value=False)
    from ..ir import check_int
    cfg_layers = check_int(join(ppath, "num_layers"), pw["num_layers"], minimum=0)
    num_layers = cfg_layers + 2
    rate = check_real(join(ppath, "decay_rate"), pw["decay_rate"])
    dtype = pw.get("decay_type", "layer_wise")
    if not isinstance(dtype, str) or not ("layer_wise" in dtype or dtype == "stage_wise"):
        raise ConfigError(join(ppath, "decay_type"), "must be 'layer_wise' or 'stage_wise'", dtype)
    root = getattr(model, "module", model)
    backbone = type(getattr(root, "backbone", None)).__name__
    convnext, vit = "ConvNeXt" in backbone, ("BEiT" in backbone or "MAE" in backbone)
    if not convnext and not (vit and "layer_wise" in dtype):
        raise ConfigError(join(ppath, "decay_type"), f"is implemented for ConvNeXt backbones (and BEiT/MAE with "
                          f"layer_wise in mmseg), not {backbone} (the libraries raise NotImplementedError)", dtype)
    out = _Collector()
    for name, param in root.named_parameters():
        if not param.requires_grad:
            out.frozen.append(name)
            continue
        no_decay = len(param.shape) == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
        if "layer_wise" in dtype:
            layer = _convnext_layer(name, cfg_layers) if convnext else _vit_layer(name, num_layers)
        else:
            layer = _convnext_stage(name, num_layers)
        scale = rate ** (num_layers - layer - 1)
        opts = {"lr_mult": scale, "weight_decay": 0.0 if no_decay else base_wd}
        if opts["weight_decay"] is None:
            raise ConfigError("optim_wrapper.optimizer.weight_decay", "is required by "
                              "LearningRateDecayOptimizerConstructor (it writes weight_decay into every group)", None,
                              show_value=False)
        out.add(f"layer_{layer}_{'no_decay' if no_decay else 'decay'}", opts, name)
    return out.result()


def check_group_options(groups: list[GroupSpec], allowed: tuple[str, ...]) -> None:
    """Every option is one optbridge knows (the plan checks values)."""
    for g in groups:
        for k in g.options:
            if k not in GROUP_OPTIONS:
                raise ConfigError(f"groups.{g.name}.{k}", "is not an optimizer option optbridge knows", g.options[k])
