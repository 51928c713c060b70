"""The torch dialect: optimizers and lr schedulers as ``torch.optim`` spells them (torch 2.13).

A document::

    dialect: torch
    optimizer: {type: SGD, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}
    param_groups:                       # optional; torch group dicts, params = a selector
      - {name: backbone, params: "backbone.*", lr: 0.01}
      - {name: head, params: rest}
    scheduler:                          # one scheduler, or a list stacked on the optimizer
      type: SequentialLR
      schedulers:
        - {type: LinearLR, start_factor: 0.1, total_iters: 5}
        - {type: CosineAnnealingLR, T_max: 95}
      milestones: [5]
    step_unit: iter                     # what scheduler.step() counts (iter | epoch)
    steps_per_epoch: 100                # optional
    total_steps: 10000                  # optional

``scheduler`` may also be spelled ``schedulers`` or ``lr_scheduler``. Lambdas
(``lr_lambda``) are expression strings (:mod:`optbridge.expr`), or a list with
one per param group. A top-level scheduler (or each entry of a stacked list) may
carry its own ``step_unit``.

What the translation encodes, beyond the class-by-class mapping (measured in
torch 2.13, see ``semantics.md`` §1):

* Several schedulers on one optimizer, and ``ChainedScheduler``, multiply
  (:class:`~optbridge.ir.Chain`) only when every child is *chainable*: ConstantLR,
  LinearLR, StepLR, MultiStepLR, ExponentialLR, PolynomialLR, MultiplicativeLR and
  CosineAnnealingLR with ``eta_min == 0`` (and ChainedSchedulers of those). Other
  children overwrite the lr, so torch's result is not a product: an error.
* ``ReduceLROnPlateau`` must be the only scheduler; momentum cycling
  (CyclicLR/OneCycleLR with ``cycle_momentum``) too.
* ``SequentialLR`` cannot hold a ``SequentialLR`` (torch raises
  NotImplementedError at the milestone, or shifts the nested clock by one step),
  a ``ChainedScheduler`` only as its first scheduler (at a later milestone torch
  raises NotImplementedError), ``OneCycleLR`` only as its first scheduler (its
  constructor overwrites ``initial_lr``, the base of every scheduler constructed
  after it and the lr that SequentialLR resets to), ``SWALR`` only first (later it
  anneals from wherever the previous scheduler left the lr).
* ``SWALR`` (``torch.optim.swa_utils``) anneals from the group's lr to ``swa_lr``
  over ``anneal_epochs`` steps: a clamped ``cosine`` (``anneal_strategy: cos``) or
  a linear ``polynomial`` to the absolute ``swa_lr``.
* The first scheduler constructed (the first one in the document, depth first)
  sets ``initial_lr``: for CyclicLR that is ``base_lr`` (its constructor writes
  ``group['lr'] = base_lr``), for OneCycleLR ``max_lr / div_factor``. The plan's
  lr is set to that value, as torch's param groups hold it.
* Per-group lists (``lr_lambda``, CyclicLR/OneCycleLR lrs and momenta,
  ``min_lr``) give one schedule tree per group: in ``plan.schedule`` when all
  groups' trees are equal, else in each group's ``schedule``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from ..configio import expect_mapping, selectors_from_config
from ..errors import ConfigError
from ..ir import check_choice, check_int, check_real
from ..plan import OPTIMIZER_DEFAULTS, Group, OptimizerSpec, Plan
from ._common import REQUIRED, check_document, check_keywords, group_path, join, make_node, suggest
from ._common import description as _description

__all__ = ["parse", "looks_like", "from_torch", "SCHEDULERS", "CHAINABLE", "OPTIMIZER_KWARGS"]

_TOP_KEYS = ("dialect", "description", "optimizer", "param_groups", "scheduler", "schedulers", "lr_scheduler",
             "step_unit", "steps_per_epoch", "total_steps")
_SCHEDULER_KEYS = ("scheduler", "schedulers", "lr_scheduler")

#: Keyword arguments of each torch 2.13 optimizer (``optimizer`` positional excluded).
OPTIMIZER_KWARGS: dict[str, tuple[str, ...]] = {
    "SGD": ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach", "differentiable",
            "fused"),
    "Adam": ("lr", "betas", "eps", "weight_decay", "amsgrad", "foreach", "maximize", "capturable", "differentiable",
             "fused", "decoupled_weight_decay"),
    "AdamW": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable", "differentiable",
              "fused"),
    "RMSprop": ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "capturable", "foreach", "maximize",
                "differentiable"),
    "Adagrad": ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "foreach", "maximize",
                "differentiable", "fused"),
    "Adadelta": ("lr", "rho", "eps", "weight_decay", "foreach", "capturable", "maximize", "differentiable"),
    "Adamax": ("lr", "betas", "eps", "weight_decay", "foreach", "maximize", "differentiable", "capturable"),
    "NAdam": ("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay", "foreach", "maximize",
              "capturable", "differentiable"),
    "RAdam": ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "foreach", "maximize", "capturable",
              "differentiable"),
}

#: Keyword arguments and defaults of each torch 2.13 lr scheduler (``optimizer`` excluded).
SCHEDULERS: dict[str, dict[str, Any]] = {
    "LambdaLR": {"lr_lambda": REQUIRED, "last_epoch": -1},
    "MultiplicativeLR": {"lr_lambda": REQUIRED, "last_epoch": -1},
    "StepLR": {"step_size": REQUIRED, "gamma": 0.1, "last_epoch": -1},
    "MultiStepLR": {"milestones": REQUIRED, "gamma": 0.1, "last_epoch": -1},
    "ConstantLR": {"factor": 1.0 / 3, "total_iters": 5, "last_epoch": -1},
    "LinearLR": {"start_factor": 1.0 / 3, "end_factor": 1.0, "total_iters": 5, "last_epoch": -1},
    "ExponentialLR": {"gamma": REQUIRED, "last_epoch": -1},
    "PolynomialLR": {"total_iters": 5, "power": 1.0, "last_epoch": -1},
    "CosineAnnealingLR": {"T_max": REQUIRED, "eta_min": 0.0, "last_epoch": -1},
    "CosineAnnealingWarmRestarts": {"T_0": REQUIRED, "T_mult": 1, "eta_min": 0.0, "last_epoch": -1},
    "CyclicLR": {"base_lr": REQUIRED, "max_lr": REQUIRED, "step_size_up": 2000, "step_size_down": None,
                 "mode": "triangular", "gamma": 1.0, "scale_fn": None, "scale_mode": "cycle",
                 "cycle_momentum": True, "base_momentum": 0.8, "max_momentum": 0.9, "last_epoch": -1},
    "OneCycleLR": {"max_lr": REQUIRED, "total_steps": None, "epochs": None, "steps_per_epoch": None,
                   "pct_start": 0.3, "anneal_strategy": "cos", "cycle_momentum": True, "base_momentum": 0.85,
                   "max_momentum": 0.95, "div_factor": 25.0, "final_div_factor": 1e4, "three_phase": False,
                   "last_epoch": -1},
    "SequentialLR": {"schedulers": REQUIRED, "milestones": REQUIRED, "last_epoch": -1},
    "ChainedScheduler": {"schedulers": REQUIRED},
    "ReduceLROnPlateau": {"mode": "min", "factor": 0.1, "patience": 10, "threshold": 1e-4, "threshold_mode": "rel",
                          "cooldown": 0, "min_lr": 0, "eps": 1e-8},
    # torch.optim.swa_utils.SWALR (an LRScheduler like the others)
    "SWALR": {"swa_lr": REQUIRED, "anneal_epochs": 10, "anneal_strategy": "cos", "last_epoch": -1},
}

#: Schedulers whose ``step()`` multiplies the current lr (so stacking them is a product).
CHAINABLE = ("ConstantLR", "LinearLR", "StepLR", "MultiStepLR", "ExponentialLR", "PolynomialLR", "MultiplicativeLR",
             "CosineAnnealingLR")  # CosineAnnealingLR only with eta_min == 0

_NOT_CHAINABLE_WHY = {
    "LambdaLR": "sets lr = initial_lr * lr_lambda(k) at every step, overwriting the other schedulers' factors",
    "CyclicLR": "computes the lr from its own absolute base_lr/max_lr at every step, overwriting the other "
                "schedulers' factors",
    "OneCycleLR": "computes the lr from its own absolute max_lr at every step, overwriting the other schedulers' "
                  "factors",
    "CosineAnnealingWarmRestarts": "sets lr from initial_lr at every step, overwriting the other schedulers' factors",
    "CosineAnnealingLR": "with eta_min != 0 updates the lr affinely (lr - eta_min scaled, plus eta_min), not by a "
                         "factor",
    "SequentialLR": "resets the lr to its next scheduler's value from initial_lr at each milestone",
    "ReduceLROnPlateau": "is refused by torch's ChainedScheduler (it needs a metric at every step)",
    "SWALR": "anneals from the lr it finds in the group towards swa_lr, undoing and redoing its own interpolation "
             "at every step, so other schedulers' factors are not multiplied through",
}


# --------------------------------------------------------------------------- parsed schedulers

@dataclass
class _Entry:
    """One parsed scheduler: its nodes for each param group, and what composition needs to know."""

    cls: str
    path: str
    lr: list[ir.Node]                       # one per group
    momentum: list[ir.Node] | None = None   # one per group, when the scheduler cycles momentum/beta1
    chainable: bool = False
    children: list[_Entry] = field(default_factory=list)
    initial_lr: list[float] | None = None   # what the constructor writes as initial_lr (CyclicLR/OneCycleLR)
    unit: str | None = None

    def first_constructed(self) -> _Entry:
        return self.children[0].first_constructed() if self.children else self


class _Reader:
    def __init__(self, otype: str, ngroups: int) -> None:
        self.otype = otype
        self.n = ngroups
        keys = OPTIMIZER_DEFAULTS[otype]
        # torch: use_beta1 = "betas" in optimizer.defaults; else "momentum" must be there.
        self.momentum_hyper = "beta1" if "betas" in keys else ("momentum" if "momentum" in keys else None)

    # ---------------------------------------------------------------- helpers

    def per_group(self, path: str, name: str, v: Any, check: Callable[[str, Any], Any]) -> tuple[list[Any], list[str]]:
        """A scalar broadcast to every group, or a list with one value per group (torch's _format_param)."""
        p = join(path, name)
        if isinstance(v, (list, tuple)):
            if len(v) != self.n:
                raise ConfigError(p, f"must be one value, or a list with one value per param group ({self.n} "
                                  f"group{'s' if self.n != 1 else ''}), as torch requires; got {len(v)} values",
                                  list(v))
            return [check(f"{p}[{i}]", x) for i, x in enumerate(v)], [f"{name}[{i}]" for i in range(self.n)]
        return [check(p, v)] * self.n, [name] * self.n

    def same(self, make: Callable[[], ir.Node]) -> list[ir.Node]:
        node = make()
        return [node] * self.n

    # ---------------------------------------------------------------- entry point

    def parse(self, spec: Any, path: str, where: str, index: int = 0) -> _Entry:
        """Parse one scheduler dict. ``where``: top | stack | sequential | chained."""
        spec = expect_mapping(path, spec)
        if "type" not in spec:
            raise ConfigError(join(path, "type"), "is required (a torch.optim.lr_scheduler class such as StepLR)",
                              None, show_value=False)
        cls = spec["type"]
        if not isinstance(cls, str) or cls not in SCHEDULERS:
            raise ConfigError(join(path, "type"), "is not a torch lr scheduler" + suggest(cls, SCHEDULERS)
                              + " (known: " + ", ".join(SCHEDULERS) + ")", cls)
        unit = None
        if "step_unit" in spec:
            if where not in ("top", "stack"):
                raise ConfigError(join(path, "step_unit"), "can only be set on a top-level scheduler (SequentialLR and "
                                  "ChainedScheduler step their children themselves: set step_unit on them)",
                                  spec["step_unit"])
            unit = check_choice(join(path, "step_unit"), spec["step_unit"], ir.UNITS)
        kwargs = {k: v for k, v in spec.items() if k not in ("type", "step_unit")}
        args = check_keywords(path, kwargs, SCHEDULERS[cls], cls)
        if "last_epoch" in args and args["last_epoch"] != -1:
            raise ConfigError(join(path, "last_epoch"), "must be -1 (a plan starts at step 0; resuming a scheduler "
                              "mid-run is not expressible)", args["last_epoch"])
        entry: _Entry = getattr(self, "_" + cls)(args, path, where, index)
        if where in ("stack", "chained") and not entry.chainable:
            why = _NOT_CHAINABLE_WHY.get(cls, "does not multiply the current lr")
            container = "ChainedScheduler" if where == "chained" else "several schedulers stacked on one optimizer"
            raise ConfigError(path, f"cannot be combined by {container}: torch's {cls} {why}, so the result is not the "
                              "product of the schedules (chainable: ConstantLR, LinearLR, StepLR, MultiStepLR, "
                              "ExponentialLR, PolynomialLR, MultiplicativeLR, CosineAnnealingLR with eta_min 0; "
                              "use SequentialLR or a single scheduler instead)", cls)
        if unit is not None:
            entry.unit = unit
            entry.lr = [dataclasses.replace(n, unit=unit) for n in entry.lr]
            if entry.momentum is not None:
                entry.momentum = [dataclasses.replace(n, unit=unit) for n in entry.momentum]
        return entry

    # ---------------------------------------------------------------- lambdas

    def _lambdas(self, cls: str, node_cls: type[ir.Node], args: dict[str, Any], path: str) -> list[ir.Node]:
        v = args["lr_lambda"]
        if isinstance(v, (list, tuple)):
            if len(v) != self.n:
                raise ConfigError(join(path, "lr_lambda"), f"must be one expression, or a list with one expression per "
                                  f"param group (expected {self.n} lr_lambdas, as torch does), got {len(v)}", list(v))
            return [make_node(node_cls, path, {"expr": f"lr_lambda[{i}]"}, expr=x) for i, x in enumerate(v)]
        return self.same(lambda: make_node(node_cls, path, {"expr": "lr_lambda"}, expr=v))

    def _LambdaLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        return _Entry("LambdaLR", path, self._lambdas("LambdaLR", ir.Lambda, args, path))

    def _MultiplicativeLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        return _Entry("MultiplicativeLR", path, self._lambdas("MultiplicativeLR", ir.Multiplicative, args, path),
                      chainable=True)

    # ---------------------------------------------------------------- closed forms

    def _StepLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        lr = self.same(lambda: make_node(ir.Exponential, path, {"every": "step_size"},
                                         gamma=args["gamma"], every=args["step_size"], stair=True))
        return _Entry("StepLR", path, lr, chainable=True)

    def _MultiStepLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        ms = args["milestones"]
        p = join(path, "milestones")
        if not isinstance(ms, (list, tuple)):
            raise ConfigError(p, "must be a list of integers", ms)
        checked = [check_int(f"{p}[{i}]", m, minimum=0) for i, m in enumerate(ms)]
        # torch keeps a Counter: order does not matter and repeats count repeatedly
        lr = self.same(lambda: make_node(ir.MultiStep, path, {}, milestones=tuple(sorted(checked)),
                                         gamma=args["gamma"]))
        return _Entry("MultiStepLR", path, lr, chainable=True)

    def _ConstantLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        f = check_real(join(path, "factor"), args["factor"])
        if not 0.0 <= f <= 1.0:
            raise ConfigError(join(path, "factor"), "must be between 0 and 1 (torch's ConstantLR requires "
                              "0 <= factor <= 1)", args["factor"])
        steps = args["total_iters"]
        if steps == 0 and not (where == "sequential" and index > 0):
            # torch 2.13 applies the factor at its initial step and only lifts it when last_epoch reaches
            # total_iters again, which never happens for 0: the factor holds forever. As a later SequentialLR
            # part the milestone takes the closed form (factor if k < 0), so there it never applies (steps 0).
            steps = None
        lr = self.same(lambda: make_node(ir.Constant, path, {"steps": "total_iters"}, factor=f, steps=steps))
        return _Entry("ConstantLR", path, lr, chainable=True)

    def _LinearLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        s = check_real(join(path, "start_factor"), args["start_factor"])
        if not 0.0 < s <= 1.0:
            raise ConfigError(join(path, "start_factor"), "must be greater than 0 and at most 1 (torch's LinearLR "
                              "requires 0 < start_factor <= 1)", args["start_factor"])
        e = check_real(join(path, "end_factor"), args["end_factor"])
        if not 0.0 <= e <= 1.0:
            raise ConfigError(join(path, "end_factor"), "must be between 0 and 1 (torch's LinearLR requires "
                              "0 <= end_factor <= 1)", args["end_factor"])
        lr = self.same(lambda: make_node(ir.Linear, path, {"steps": "total_iters"},
                                         start_factor=s, end_factor=e, steps=args["total_iters"]))
        return _Entry("LinearLR", path, lr, chainable=True)

    def _ExponentialLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        lr = self.same(lambda: make_node(ir.Exponential, path, {}, gamma=args["gamma"]))
        return _Entry("ExponentialLR", path, lr, chainable=True)

    def _PolynomialLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        lr = self.same(lambda: make_node(ir.Polynomial, path, {"steps": "total_iters"},
                                         steps=args["total_iters"], power=args["power"]))
        return _Entry("PolynomialLR", path, lr, chainable=True)

    def _CosineAnnealingLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        lr = self.same(lambda: make_node(ir.Cosine, path, {"steps": "T_max", "end": "eta_min"},
                                         steps=args["T_max"], end=args["eta_min"]))
        cosine = lr[0]
        assert isinstance(cosine, ir.Cosine)  # built just above
        return _Entry("CosineAnnealingLR", path, lr, chainable=cosine.end == 0.0)

    def _CosineAnnealingWarmRestarts(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        t0, tm, eta = args["T_0"], args["T_mult"], args["eta_min"]
        if not isinstance(t0, int) or isinstance(t0, bool) or t0 <= 0:  # torch: isinstance(T_0, int)
            raise ConfigError(join(path, "T_0"), "must be a positive integer", t0)
        if not isinstance(tm, int) or isinstance(tm, bool) or tm < 1:
            raise ConfigError(join(path, "T_mult"), "must be an integer >= 1", tm)
        if not isinstance(eta, (int, float)) or isinstance(eta, bool):
            raise ConfigError(join(path, "eta_min"), "must be a number (torch expects a float or int eta_min)", eta)
        lr = self.same(lambda: make_node(ir.CosineRestarts, path, {"period": "T_0", "mult": "T_mult", "end": "eta_min"},
                                         period=t0, mult=tm, end=eta))
        return _Entry("CosineAnnealingWarmRestarts", path, lr)

    # ---------------------------------------------------------------- cycles

    def _momentum_ok(self, cls: str, args: dict[str, Any], path: str, where: str) -> bool:
        cm = args["cycle_momentum"]
        if not isinstance(cm, bool):
            raise ConfigError(join(path, "cycle_momentum"), "must be true or false", cm)
        if not cm:
            return False
        if self.momentum_hyper is None:
            raise ConfigError(join(path, "cycle_momentum"), f"needs an optimizer with momentum or betas, and "
                              f"{self.otype} has neither (torch: 'optimizer must support momentum or beta1 with "
                              "`cycle_momentum` option enabled'); set cycle_momentum: false", cm)
        if where == "sequential":
            raise ConfigError(join(path, "cycle_momentum"), f"momentum cycling is only supported when {cls} is the "
                              f"only scheduler (inside SequentialLR the {self.momentum_hyper} schedule would not "
                              "follow the composition): set cycle_momentum: false or use it as the only scheduler", cm)
        # in a chain or a stack the scheduler itself is refused (it is not chainable), see _Reader.parse
        return where == "top"

    def _CyclicLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        if args["scale_fn"] is not None:
            raise ConfigError(join(path, "scale_fn"), "is not supported (a config holds no Python callables); use "
                              "mode: triangular, triangular2 or exp_range", args["scale_fn"])
        check_choice(join(path, "scale_mode"), args["scale_mode"], ("cycle", "iterations"))  # ignored without scale_fn
        base, base_names = self.per_group(path, "base_lr", args["base_lr"], check_real)
        high, high_names = self.per_group(path, "max_lr", args["max_lr"], check_real)
        mode = args["mode"]
        if mode not in ir.CYCLIC_MODES:
            raise ConfigError(join(path, "mode"), "must be one of " + ", ".join(map(repr, ir.CYCLIC_MODES))
                              + " (torch: 'mode is invalid and scale_fn is None')", mode)
        common = dict(step_size_up=args["step_size_up"], step_size_down=args["step_size_down"], mode=mode,
                      gamma=args["gamma"])
        lr = [make_node(ir.Cyclic, path, {"low": base_names[g], "high": high_names[g]}, low=base[g], high=high[g],
                        **common) for g in range(self.n)]
        momentum = None
        if self._momentum_ok("CyclicLR", args, path, where):
            bm, bm_names = self.per_group(path, "base_momentum", args["base_momentum"], check_real)
            mm, mm_names = self.per_group(path, "max_momentum", args["max_momentum"], check_real)
            momentum = [make_node(ir.Cyclic, path, {"low": mm_names[g], "high": bm_names[g]}, low=mm[g], high=bm[g],
                                  **common) for g in range(self.n)]
        return _Entry("CyclicLR", path, lr, momentum, initial_lr=list(base))

    def _OneCycleLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        if where == "sequential" and index > 0:
            raise ConfigError(path, "OneCycleLR can only be the first scheduler of a SequentialLR: its constructor "
                              "overwrites initial_lr (to max_lr / div_factor), which changes the base of the "
                              "schedulers "
                              "constructed before it and the lr SequentialLR resets to", "OneCycleLR")
        total, epochs, spe = args["total_steps"], args["epochs"], args["steps_per_epoch"]
        if total is not None:
            if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
                raise ConfigError(join(path, "total_steps"), "must be a positive integer", total)
        elif epochs is not None and spe is not None:
            if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
                raise ConfigError(join(path, "epochs"), "must be a positive integer", epochs)
            if not isinstance(spe, int) or isinstance(spe, bool) or spe <= 0:
                raise ConfigError(join(path, "steps_per_epoch"), "must be a positive integer", spe)
            total = epochs * spe
        else:
            raise ConfigError(join(path, "total_steps"), "is required unless both epochs and steps_per_epoch are given "
                              "(torch: 'You must define either total_steps OR (epochs AND steps_per_epoch)')",
                              None, show_value=False)
        pct = args["pct_start"]
        if not isinstance(pct, float) or not 0.0 <= pct <= 1.0:  # torch: isinstance(pct_start, float)
            raise ConfigError(join(path, "pct_start"), "must be a float between 0 and 1 (torch rejects ints: write "
                              "0.0 or 1.0)", pct)
        anneal = args["anneal_strategy"]
        if anneal not in ("cos", "linear"):
            raise ConfigError(join(path, "anneal_strategy"), "must be one of 'cos', 'linear'", anneal)
        for key in ("div_factor", "final_div_factor"):
            check_real(join(path, key), args[key])
        three = args["three_phase"]
        if not isinstance(three, bool):
            raise ConfigError(join(path, "three_phase"), "must be true or false", three)
        peak, peak_names = self.per_group(path, "max_lr", args["max_lr"], check_real)
        common = dict(total_steps=total, pct_start=pct, anneal=anneal, three_phase=three)
        names = {"anneal": "anneal_strategy"}
        lr = [make_node(ir.OneCycle, path, {**names, "peak": peak_names[g]}, peak=peak[g],
                        div_factor=args["div_factor"], final_div_factor=args["final_div_factor"], **common)
              for g in range(self.n)]
        momentum = None
        if self._momentum_ok("OneCycleLR", args, path, where):
            bm, bm_names = self.per_group(path, "base_momentum", args["base_momentum"], check_real)
            mm, mm_names = self.per_group(path, "max_momentum", args["max_momentum"], check_real)
            momentum = [make_node(ir.OneCycle, path, {**names, "initial": mm_names[g], "peak": bm_names[g],
                                                      "final": mm_names[g]},
                                  initial=mm[g], peak=bm[g], final=mm[g], **common) for g in range(self.n)]
        initial = [p / float(args["div_factor"]) for p in peak]
        return _Entry("OneCycleLR", path, lr, momentum, initial_lr=initial)

    # ---------------------------------------------------------------- composition

    def _children(self, args: dict[str, Any], path: str, cls: str, where: str) -> list[_Entry]:
        raw = args["schedulers"]
        p = join(path, "schedulers")
        if not isinstance(raw, (list, tuple)) or not raw:
            raise ConfigError(p, f"must be a non-empty list of schedulers ({cls} expects at least one scheduler)", raw)
        return [self.parse(s, f"{p}[{i}]", where, i) for i, s in enumerate(raw)]

    def _SequentialLR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        if where == "sequential":
            raise ConfigError(path, "SequentialLR cannot be nested in a SequentialLR (torch raises NotImplementedError "
                              "at the milestone, or shifts the nested clock by one step when it comes first): list "
                              "all schedulers in one SequentialLR", "SequentialLR")
        children = self._children(args, path, "SequentialLR", "sequential")
        ms = args["milestones"]
        p = join(path, "milestones")
        if not isinstance(ms, (list, tuple)):
            raise ConfigError(p, "must be a list of integers", ms)
        if len(ms) != len(children) - 1:
            raise ConfigError(p, f"must have one milestone fewer than schedulers ({len(children)} schedulers, so "
                              f"{len(children) - 1} milestones), as torch's SequentialLR requires", list(ms))
        names = {"parts": "schedulers", "boundaries": "milestones"}
        first = [_chained_first(c) for c in children[0].lr] if children[0].cls == "ChainedScheduler" else children[0].lr
        lr = [make_node(ir.Sequence, path, names, parts=(first[g],) + tuple(c.lr[g] for c in children[1:]),
                        boundaries=tuple(ms)) for g in range(self.n)]
        return _Entry("SequentialLR", path, lr, children=children)

    def _ChainedScheduler(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        if where == "sequential" and index > 0:
            # As the first part torch 2.13 runs it correctly: SequentialLR's recursive_undo steps its children back
            # and its initial step steps them all from the reset lr. At a later milestone SequentialLR calls
            # _update_lr(0) on it, and ChainedScheduler has no get_lr: NotImplementedError.
            raise ConfigError(path, "ChainedScheduler cannot be nested in a SequentialLR except as its first scheduler "
                              "(at a later milestone torch calls its _update_lr(0), and ChainedScheduler has no "
                              "get_lr: NotImplementedError): stack the schedulers instead", "ChainedScheduler")
        children = self._children(args, path, "ChainedScheduler", "chained")
        lr = [make_node(ir.Chain, path, {"parts": "schedulers"}, parts=tuple(c.lr[g] for c in children))
              for g in range(self.n)]
        return _Entry("ChainedScheduler", path, lr, chainable=True, children=children)

    def _SWALR(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        if where == "sequential" and index > 0:
            raise ConfigError(path, "SWALR can only be the first scheduler of a SequentialLR: at a later milestone it "
                              "anneals from the lr the previous scheduler left (its step count is not reset), "
                              "which a sequence part cannot say", "SWALR")
        A = args["anneal_epochs"]
        if not isinstance(A, int) or isinstance(A, bool) or A < 0:  # torch: isinstance(anneal_epochs, int)
            raise ConfigError(join(path, "anneal_epochs"), "must be an integer >= 0", A)
        strategy = check_choice(join(path, "anneal_strategy"), args["anneal_strategy"], ("cos", "linear"))
        swa, swa_names = self.per_group(path, "swa_lr", args["swa_lr"], check_real)
        # lr(s) = swa_lr * alpha(s) + lr0 * (1 - alpha(s)), alpha = (1 - cos(pi t)) / 2 or t, t = min(s / A, 1),
        # from the group's lr lr0: a clamped cosine / a linear polynomial to the absolute swa_lr over A steps
        # (A = 0: swa_lr from the first step)
        names = {"steps": "anneal_epochs"}
        if A == 0:
            lr = [make_node(ir.Piecewise, path, {"values": swa_names[g]}, values=(swa[g],)) for g in range(self.n)]
        elif strategy == "cos":
            lr = [make_node(ir.Cosine, path, {**names, "end": swa_names[g]}, steps=A, end=swa[g], clamp=True)
                  for g in range(self.n)]
        else:
            lr = [make_node(ir.Polynomial, path, {**names, "end": swa_names[g]}, steps=A, power=1.0, end=swa[g])
                  for g in range(self.n)]
        return _Entry("SWALR", path, lr)

    def _ReduceLROnPlateau(self, args: dict[str, Any], path: str, where: str, index: int) -> _Entry:
        if where != "top":
            container = {"sequential": "SequentialLR", "chained": "ChainedScheduler"}.get(
                where, "a stack of schedulers")
            raise ConfigError(path, f"ReduceLROnPlateau must be the only scheduler: it needs a metric at every step, "
                              f"and torch's SequentialLR/ChainedScheduler refuse it (here inside {container})",
                              "ReduceLROnPlateau")
        min_lr, min_names = self.per_group(path, "min_lr", args["min_lr"], check_real)
        kw = {k: args[k] for k in ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "eps")}
        lr = [make_node(ir.Plateau, path, {"min_value": min_names[g]}, min_value=min_lr[g], **kw)
              for g in range(self.n)]
        return _Entry("ReduceLROnPlateau", path, lr)


def _initial_ratio(n: ir.Node) -> float:
    """The factor torch's chainable ``get_lr`` applies at ``last_epoch == 0`` outside the initial step.

    A ChainedScheduler that is the first part of a SequentialLR has its children
    stepped back to -1 (``recursive_undo``) and then stepped by the ChainedScheduler's
    initial step, where the children are not in their initial mode: each takes its
    recursive ratio from -1 to 0 (torch 2.13, ``lr_scheduler.py``): ExponentialLR
    ``gamma``, PolynomialLR ``((1 - 0/T) / (1 - (0 - 1)/T)) ** power``,
    CosineAnnealingLR ``(1 + cos(pi * 0 / T)) / (1 + cos(pi * (0 - 1) / T))``,
    MultiplicativeLR ``lr_lambda(0)``; ConstantLR, LinearLR, StepLR and MultiStepLR
    apply the same factor as in their initial step (1 here).
    """
    import math
    if isinstance(n, ir.Exponential) and not n.stair:
        return n.gamma
    if isinstance(n, ir.Polynomial):
        T = n.steps
        return ((1.0 - 0 / T) / (1.0 - (0 - 1) / T)) ** n.power
    if isinstance(n, ir.Cosine):
        T = n.steps
        return (1 + math.cos(math.pi * 0 / T)) / (1 + math.cos(math.pi * (0 - 1) / T))
    if isinstance(n, ir.Multiplicative):
        return float(n.function(0))
    if isinstance(n, ir.Chain):
        out = 1.0
        for p in n.parts:
            out *= _initial_ratio(p)
        return out
    return 1.0


def _chained_first(n: ir.Node) -> ir.Node:
    """A ChainedScheduler's chain as the first part of a SequentialLR: times the children's initial ratios."""
    r = _initial_ratio(n)
    return n if r == 1.0 else ir.Chain(parts=(n, ir.Constant(factor=r)), unit=n.unit)


# --------------------------------------------------------------------------- the document

def parse(d: Mapping[str, Any]) -> Plan:
    """Build a plan from a torch-dialect document (see the module docstring).

    Raises:
        ConfigError: naming the dialect path (``scheduler.schedulers[1].T_max``), the rule and the value.
    """
    d = check_document(d, "torch", _TOP_KEYS)

    # ---- optimizer
    if "optimizer" not in d:
        raise ConfigError("optimizer", "is required (e.g. {type: SGD, lr: 0.1, momentum: 0.9})", None, show_value=False)
    opt = expect_mapping("optimizer", d["optimizer"])
    if "type" not in opt:
        raise ConfigError("optimizer.type", "is required (a torch.optim class: " + ", ".join(OPTIMIZER_DEFAULTS) + ")",
                          None, show_value=False)
    otype = opt["type"]
    if not isinstance(otype, str) or otype not in OPTIMIZER_DEFAULTS:
        raise ConfigError("optimizer.type", "must be one of " + ", ".join(OPTIMIZER_DEFAULTS)
                          + suggest(otype, OPTIMIZER_DEFAULTS), otype)
    accepted = OPTIMIZER_KWARGS.get(otype, tuple(OPTIMIZER_DEFAULTS[otype]))
    options = {}
    for key, v in opt.items():
        if key == "type":
            continue
        if key not in accepted:
            raise ConfigError(f"optimizer.{key}", f"is not an argument of torch.optim.{otype}" + suggest(key, accepted)
                              + " (accepted: " + ", ".join(accepted) + ")", v)
        options[key] = v

    # ---- param groups
    raw_groups = d.get("param_groups")
    if raw_groups is None:
        raw_groups = [{"name": "all", "params": "rest"}]
        group_paths = ["optimizer"]
    else:
        if not isinstance(raw_groups, list) or not raw_groups:
            raise ConfigError("param_groups", "must be a non-empty list of param group dicts", raw_groups)
        group_paths = [f"param_groups[{i}]" for i in range(len(raw_groups))]
    group_specs = []
    for i, (g, gp) in enumerate(zip(raw_groups, group_paths)):
        g = expect_mapping(gp, g)
        if "params" not in g:
            raise ConfigError(f"{gp}.params", "is required (a glob, a list, a selector mapping or 'rest')", None,
                              show_value=False)
        name = g.get("name", f"group{i}")
        gopts = {}
        for key, v in g.items():
            if key in ("name", "params"):
                continue
            if key not in accepted:
                raise ConfigError(f"{gp}.{key}", f"is not an option of torch.optim.{otype}" + suggest(key, accepted)
                                  + " (accepted: params, name, " + ", ".join(accepted) + ")", v)
            gopts[key] = v
        group_specs.append((name, selectors_from_config(g["params"], f"{gp}.params"), gopts, gp))
    n = len(group_specs)

    # ---- schedulers
    keys = [k for k in _SCHEDULER_KEYS if k in d]
    if len(keys) > 1:
        raise ConfigError(keys[1], f"cannot be given together with {keys[0]} (they are the same thing)", d[keys[1]])
    step_unit = d.get("step_unit", "iter")
    check_choice("step_unit", step_unit, ir.UNITS)
    spe = d.get("steps_per_epoch")
    lr_nodes: list[ir.Node] | None = None
    mom_nodes: list[ir.Node] | None = None
    initial: list[float] | None = None
    reader = _Reader(otype, n)
    if keys and d[keys[0]] is not None:
        skey = keys[0]
        spec = d[skey]
        if isinstance(spec, list):
            if not spec:
                raise ConfigError(skey, "must be a scheduler or a non-empty list of schedulers", spec)
            if len(spec) == 1:
                entries = [reader.parse(spec[0], f"{skey}[0]", "top")]
            else:
                entries = [reader.parse(s, f"{skey}[{i}]", "stack", i) for i, s in enumerate(spec)]
        else:
            entries = [reader.parse(spec, skey, "top")]
        for e in entries:
            if e.unit is not None and e.unit != step_unit and spe is None:
                raise ConfigError(f"{e.path}.step_unit", f"differs from the document's step_unit ({step_unit}), so "
                                  "steps_per_epoch is needed to relate epochs and iterations", e.unit)
        _check_chained_cosine(entries, step_unit, spe, d.get("total_steps"))
        if len(entries) == 1:
            lr_nodes, mom_nodes = entries[0].lr, entries[0].momentum
        else:
            lr_nodes = [make_node(ir.Chain, skey, {"parts": ""}, parts=tuple(e.lr[g] for e in entries))
                        for g in range(n)]
        initial = entries[0].first_constructed().initial_lr

    # ---- assemble
    plan_schedule: dict[str, ir.Node] = {}
    group_schedule: list[dict[str, ir.Node]] = [{} for _ in range(n)]
    for hyper, nodes in (("lr", lr_nodes), (reader.momentum_hyper or "momentum", mom_nodes)):
        if nodes is None:
            continue
        if all(x == nodes[0] for x in nodes):
            plan_schedule[hyper] = nodes[0]
        else:
            for g in range(n):
                group_schedule[g][hyper] = nodes[g]
    if initial is not None:  # the first scheduler constructed wrote initial_lr (= the base of every schedule)
        if all(x == initial[0] for x in initial):
            options["lr"] = initial[0]
            for _, _, gopts, _ in group_specs:
                gopts.pop("lr", None)
        else:
            for (_, _, gopts, _), v in zip(group_specs, initial):
                gopts["lr"] = v
    groups = []
    for (name, select, gopts, gp), sched in zip(group_specs, group_schedule):
        try:
            groups.append(Group(name=name, select=select, options=gopts, schedule=sched))
        except ConfigError as e:
            raise e.under(gp) from None
    try:
        spec_ = OptimizerSpec(type=otype, options=options, groups=tuple(groups))
    except ConfigError as e:
        raise group_path(e, group_paths, "optimizer", "param_groups") from None
    kw: dict[str, Any] = {"step_unit": step_unit}
    for key in ("steps_per_epoch", "total_steps"):
        if d.get(key) is not None:
            kw[key] = d[key]
    kw.update(_description(d))
    try:
        return Plan(optimizers=(spec_,), schedule=plan_schedule, **kw)
    except ConfigError as e:
        raise group_path(e, group_paths, "", "param_groups") from None


from_torch = parse  # the reader's former name (optbridge.from_torch is the live-object importer)

#: Top-level keys that only a torch-dialect document has.
_MARKERS = ("scheduler", "schedulers", "lr_scheduler", "param_groups")


def looks_like(doc: Mapping[str, Any]) -> bool:
    """True when ``doc`` has a torch-only key (``scheduler``, ``schedulers``, ``lr_scheduler``, ``param_groups``)."""
    return any(k in doc for k in _MARKERS)


def _check_chained_cosine(entries: list[_Entry], step_unit: str, spe: Any, total: Any) -> None:
    """A chained CosineAnnealingLR is a factor only up to T_max: past it torch's recursion adds a term.

    Checked when ``total_steps`` says how far the plan runs.
    """
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        return

    def cosines(e: _Entry) -> list[_Entry]:
        if e.cls == "CosineAnnealingLR":
            return [e]
        return [c for child in e.children for c in cosines(child)] if e.cls == "ChainedScheduler" else []

    for e in entries:
        if len(entries) == 1 and e.cls != "ChainedScheduler":
            continue
        unit = e.unit or step_unit
        per = spe if isinstance(spe, int) and not isinstance(spe, bool) and spe > 0 else 1  # as the evaluator does
        last = (total - 1) // per if unit == "epoch" else total - 1
        for c in cosines(e):
            cosine = c.lr[0]
            assert isinstance(cosine, ir.Cosine)  # a CosineAnnealingLR entry's nodes (_CosineAnnealingLR)
            t_max = cosine.steps
            if last > t_max:
                raise ConfigError(f"{c.path}.T_max", f"must cover the whole run when CosineAnnealingLR is chained "
                                  f"(the plan reaches step {last} in {unit}s): past T_max torch's CosineAnnealingLR "
                                  "adds a term instead of multiplying, so the chain is no longer a product", t_max)

