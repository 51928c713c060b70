"""The MMEngine dialect: OpenMMLab configs (``optim_wrapper`` + ``param_scheduler``) as a plan.

A document is an MMEngine config as a dict (the whole config may be passed: keys
this dialect does not read, such as ``model`` or ``train_dataloader``, are
ignored)::

    optim_wrapper = dict(
        optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
        paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}),
        clip_grad=dict(max_norm=35, norm_type=2))
    param_scheduler = [
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)]
    train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
    steps_per_epoch = 7330          # optbridge's key (or parse(..., steps_per_epoch=...))

What is read, and how (docs/mmengine.md has the details and every difference
between MMEngine's docs and its code):

* ``optim_wrapper.optimizer``: a torch optimizer and its keyword arguments.
* ``optim_wrapper.paramwise_cfg`` / ``constructor``: groups, see
  :mod:`optbridge.dialects.mmengine_params` (``model=`` for rules on module types).
* ``optim_wrapper.clip_grad``: MMEngine clips all parameters together: the
  optimizer-level clip of the plan (``OptimizerSpec.clip``).
* ``param_scheduler``: see :mod:`optbridge.dialects.mmengine_schedulers`.
* ``train_cfg``: ``max_epochs`` / ``max_iters`` give schedulers their default
  ``end`` (as MMEngine's runner does) and the plan its ``total_steps``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import ir
from ..errors import ConfigError
from ..ir import FrozenMap, check_int
from ..plan import OPTIMIZER_DEFAULTS, Clip, Group, OptimizerSpec, Plan, hyper_base
from ..serialize import expect_mapping
from ._common import description as _description
from ._common import join, suggest
from .mmengine_params import build_groups
from .mmengine_schedulers import Clock, Sched, compose, parse_schedulers, plateau_node

__all__ = ["parse", "looks_like"]

_WRAPPERS = ("OptimWrapper", "AmpOptimWrapper")
_WRAPPER_KEYS = ("type", "optimizer", "paramwise_cfg", "constructor", "clip_grad", "accumulative_counts",
                 "loss_scale", "dtype", "use_fsdp")
_LOOPS = ("EpochBasedTrainLoop", "IterBasedTrainLoop")


def looks_like(doc: Mapping[str, Any]) -> bool:
    """An MMEngine config: a top-level ``optim_wrapper`` or ``param_scheduler``."""
    return isinstance(doc, Mapping) and ("optim_wrapper" in doc or "param_scheduler" in doc)


def parse(doc: Mapping[str, Any], *, model: Any = None, path: str = "", steps_per_epoch: int | None = None) -> Plan:
    """Build the plan of an MMEngine config.

    Args:
        doc: The config as a mapping (``mmengine.Config`` objects are mappings too).
        model: The torch ``nn.Module`` the config trains; needed by paramwise rules on module
            types (norm layers, depthwise convs) and by the layer-decay constructors.
        path: Prefix for error paths (the document's location in a larger file).
        steps_per_epoch: Iterations per epoch (``len(train_dataloader)``), overriding the
            document's ``steps_per_epoch``; needed for ``convert_to_iter_based`` and to mix
            epoch- and iteration-based schedulers.

    Returns:
        A :class:`~optbridge.plan.Plan` whose reference trace is MMEngine's per-group values.

    Raises:
        ConfigError: one line with the config path (``param_scheduler[1].T_max``) for bad input,
            unknown types (with a suggestion), missing arguments, and what optbridge cannot
            express exactly (with the reason).
    """
    d = expect_mapping(path, doc)

    def p(key: str) -> str:
        return join(path, key)

    if "optim_wrapper" not in d:
        raise ConfigError(p("optim_wrapper"), "is required (dict(optimizer=dict(type='SGD', lr=0.01, ...)))", None,
                          show_value=False)
    ow_path = p("optim_wrapper")
    ow = expect_mapping(ow_path, d["optim_wrapper"])
    if "optimizer" not in ow:
        several = [k for k, v in ow.items() if isinstance(v, Mapping) and "optimizer" in v]
        rule = ("holds several optimizer wrappers (" + ", ".join(several) + "): several optimizers are not supported "
                "yet") if several else "needs an optimizer (dict(type='SGD', lr=0.01, ...))"
        raise ConfigError(ow_path, rule, None, show_value=False)
    for key, v in ow.items():
        if key not in _WRAPPER_KEYS:
            raise ConfigError(join(ow_path, str(key)), "is not an argument of MMEngine's optimizer wrapper"
                              + suggest(key, _WRAPPER_KEYS), v)
    wtype = ow.get("type", "OptimWrapper")
    wname = wtype.rsplit(".", 1)[-1] if isinstance(wtype, str) else wtype
    if wname not in _WRAPPERS:
        raise ConfigError(join(ow_path, "type"), "must be one of " + ", ".join(_WRAPPERS) + suggest(wname, _WRAPPERS),
                          wtype)
    acc = ow.get("accumulative_counts", 1)
    if check_int(join(ow_path, "accumulative_counts"), acc, minimum=1) != 1:
        raise ConfigError(join(ow_path, "accumulative_counts"), "must be 1: with gradient accumulation the optimizer "
                          "steps every N iterations while the schedulers step every iteration, which a plan (one "
                          "step per optimizer update) cannot express", acc)

    # ---- optimizer
    from .torch import OPTIMIZER_KWARGS
    opath = join(ow_path, "optimizer")
    opt = expect_mapping(opath, ow["optimizer"])
    if "type" not in opt:
        raise ConfigError(join(opath, "type"), "is required (a torch.optim class: " + ", ".join(OPTIMIZER_KWARGS)
                          + ")", None, show_value=False)
    otype = opt["type"]
    oname = otype[len("torch.optim."):] if isinstance(otype, str) and otype.startswith("torch.optim.") else otype
    if not isinstance(oname, str) or oname not in OPTIMIZER_KWARGS:
        raise ConfigError(join(opath, "type"), "must be one of " + ", ".join(OPTIMIZER_KWARGS)
                          + suggest(oname, OPTIMIZER_KWARGS), otype)
    accepted = OPTIMIZER_KWARGS[oname]
    options: dict[str, Any] = {}
    for key, v in opt.items():
        if key == "type":
            continue
        if key not in accepted:
            raise ConfigError(join(opath, str(key)), f"is not an argument of torch.optim.{oname}"
                              + suggest(key, accepted) + " (accepted: " + ", ".join(accepted) + ")", v)
        options[key] = list(v) if isinstance(v, tuple) else v

    # ---- groups and clipping
    specs, n_mm_groups = build_groups(ow, options, ow_path, model, accepted)
    clip = _clip(ow.get("clip_grad"), join(ow_path, "clip_grad"))  # MMEngine clips all parameters together

    # ---- clock
    spe = steps_per_epoch if steps_per_epoch is not None else d.get("steps_per_epoch")
    if spe is not None:
        spe = check_int("steps_per_epoch" if steps_per_epoch is not None else p("steps_per_epoch"), spe, minimum=1)
    clock = _clock(d, p, spe)

    # ---- schedulers
    keys = OPTIMIZER_DEFAULTS[oname]
    momentum_hyper = "momentum" if "momentum" in keys else ("beta1" if "betas" in keys else None)
    hypers = tuple(k for k, v in keys.items() if isinstance(v, float) or k == "lr")
    scheds = parse_schedulers(d.get("param_scheduler"), p("param_scheduler"), clock, momentum_hyper=momentum_hyper,
                              hypers=hypers, n_groups=n_mm_groups)

    groups = []
    for g in specs:
        try:
            groups.append(Group(name=g.name, select=g.select, options=FrozenMap(g.options), frozen=g.frozen))
        except ConfigError as e:
            raise e.under(join(ow_path, f"groups.{g.name}")) from None
    try:
        spec = OptimizerSpec(type=oname, options=FrozenMap(options), groups=tuple(groups), clip=clip)
    except ConfigError as e:
        raise e.under(opath) from None
    kw: dict[str, Any] = {"step_unit": clock.unit}
    if spe is not None:
        kw["steps_per_epoch"] = spe
    total = _total(clock)
    if total is not None:
        kw["total_steps"] = total
    kw.update(_description(d))
    plan0 = Plan(optimizers=(spec,), **kw)
    plan_schedule, group_schedules = _schedules(plan0, scheds, clock)
    if group_schedules:
        groups = [Group(name=g.name, select=g.select, options=g.options, frozen=g.frozen, clip=g.clip,
                        schedule=FrozenMap(group_schedules.get(g.name, {}))) for g in plan0.groups]
        spec = OptimizerSpec(type=oname, options=FrozenMap(options), groups=tuple(groups), clip=clip)
    return Plan(optimizers=(spec,), schedule=FrozenMap(plan_schedule), **kw)


def _clip(raw: Any, path: str) -> Clip | None:
    if raw is None:
        return None
    c = dict(expect_mapping(path, raw))
    kind = c.pop("type", "norm")
    if kind not in ("norm", "value"):
        raise ConfigError(join(path, "type"), "must be 'norm' or 'value' (MMEngine: 'type of clip_grad should be "
                          "\"norm\" or \"value\"')", kind)
    if not c:
        raise ConfigError(path, "needs the arguments of clip_grad_norm_ (max_norm) or clip_grad_value_ (clip_value)",
                          raw)
    if kind == "value":
        for k in c:
            if k not in ("clip_value", "foreach"):
                raise ConfigError(join(path, k), "is not an argument of torch.nn.utils.clip_grad_value_"
                                  + suggest(k, ("clip_value", "foreach")), c[k])
        if "clip_value" not in c:
            raise ConfigError(join(path, "clip_value"), "is required", None, show_value=False)
        return _make_clip(path, value=c["clip_value"])
    for k in c:
        if k not in ("max_norm", "norm_type", "error_if_nonfinite", "foreach"):
            raise ConfigError(join(path, k), "is not an argument of torch.nn.utils.clip_grad_norm_"
                              + suggest(k, ("max_norm", "norm_type", "error_if_nonfinite", "foreach")), c[k])
    if "max_norm" not in c:
        raise ConfigError(join(path, "max_norm"), "is required", None, show_value=False)
    return _make_clip(path, max_norm=c["max_norm"], norm_type=c.get("norm_type", 2.0))


def _make_clip(path: str, **kw: Any) -> Clip:
    try:
        return Clip(**kw)
    except ConfigError as e:
        raise e.under(path) from None


def _clock(d: Mapping[str, Any], p: Callable[[str], str], spe: int | None) -> Clock:
    cfg = d.get("train_cfg")
    max_epochs = max_iters = None
    iter_loop = False
    val_interval = 1
    if cfg is not None:
        tpath = p("train_cfg")
        cfg = expect_mapping(tpath, cfg)
        if "type" in cfg and "by_epoch" in cfg:
            raise ConfigError(tpath, "can have type or by_epoch, not both (MMEngine: 'Only one of `type` or "
                              "`by_epoch` can exist in `loop_cfg`')", dict(cfg))
        if "type" in cfg:
            t = cfg["type"]
            name = t.rsplit(".", 1)[-1] if isinstance(t, str) else t
            if name not in _LOOPS:
                raise ConfigError(join(tpath, "type"), "must be one of " + ", ".join(_LOOPS) + suggest(name, _LOOPS), t)
            iter_loop = name == "IterBasedTrainLoop"
        else:
            iter_loop = cfg.get("by_epoch", True) is False
        if iter_loop:
            if "max_iters" in cfg:
                max_iters = check_int(join(tpath, "max_iters"), cfg["max_iters"], minimum=1)
        elif "max_epochs" in cfg:
            max_epochs = check_int(join(tpath, "max_epochs"), cfg["max_epochs"], minimum=1)
            if spe is not None:
                max_iters = max_epochs * spe
        val_interval = check_int(join(tpath, "val_interval"), cfg.get("val_interval", 1), minimum=1)
    raw = d.get("param_scheduler")
    items = raw if isinstance(raw, list) else ([raw] if raw is not None else [])
    iter_based = any(isinstance(s, Mapping) and (s.get("by_epoch", True) is False or s.get("convert_to_iter_based"))
                     for s in items)
    unit = "iter" if (spe is not None or iter_based or iter_loop or not items) else "epoch"
    return Clock(unit, spe, max_epochs, max_iters, iter_loop, val_interval)


def _total(clock: Clock) -> int | None:
    if clock.iter_loop:
        return clock.max_iters
    if clock.max_epochs is None:
        return None
    if clock.unit == "epoch":
        return clock.max_epochs
    return clock.max_epochs * clock.steps_per_epoch if clock.steps_per_epoch else None


def _schedules(plan: Plan, scheds: list[Sched], clock: Clock) -> tuple[dict[str, ir.Node], dict[str, dict]]:
    """Per hyperparameter: one tree for every group (plan-wide) or one per group."""
    by_hyper: dict[str, list[Sched]] = {}
    for s in scheds:
        by_hyper.setdefault(s.hyper, []).append(s)
    groups = [g for g in plan.groups if g.frozen is None]
    plan_schedule: dict[str, ir.Node] = {}
    per_group: dict[str, dict] = {}
    for hyper, items in by_hyper.items():
        plateaus = [s for s in items if s.family == "ReduceOnPlateau"]
        nodes: list[ir.Node] = []
        if plateaus:
            if len(items) > 1:
                other = next(s for s in items if s is not plateaus[0])
                raise ConfigError(plateaus[0].path, f"ReduceOnPlateau must be the only scheduler of {hyper!r} (here "
                                  f"with {other.path}: {other.cls}); a plan's plateau is a schedule's root",
                                  plateaus[0].cls)
            nodes = [plateau_node(plateaus[0], i) for i in range(len(groups))]
        else:
            cache: dict[float, ir.Node] = {}
            for g in groups:
                base = hyper_base(plan, g, hyper, path=items[0].path)
                if base not in cache:
                    cache[base] = compose(items, base, clock)
                nodes.append(cache[base])
        if all(n == nodes[0] for n in nodes):
            plan_schedule[hyper] = nodes[0]
        else:
            for g, n in zip(groups, nodes):
                per_group.setdefault(g.name, {})[hyper] = n
    return plan_schedule, per_group

