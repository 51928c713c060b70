"""Plans covering every node kind of the core (18), both clocks and per-group schedules.

Shared by the MegEngine tests (no MegEngine import here).
"""

from __future__ import annotations

import numpy as np

from optbridge import ir
from optbridge.plan import Group, OptimizerSpec, Plan, Selector

N = 160
_rs = np.random.RandomState(3)
TABLE = tuple(float(x) for x in np.round(_rs.uniform(0.001, 0.2, N), 6))
METRICS = tuple(float(x) for x in np.round(np.cumsum(_rs.normal(-0.02, 0.1, N)) + 3.0, 6))


def groups() -> tuple[Group, ...]:
    return (Group(name="a", select=(Selector(names=("a*",)),)),
            Group(name="b", select=(Selector(names=("b*",)),), options={"lr_mult": 0.5}),
            Group(name="c", select=(Selector(rest=True),), options={"lr": 0.02, "momentum": 0.8, "weight_decay": 0.0}))


def sgd(schedule: dict, *, step_unit: str = "iter", spe: int | None = None, gs: tuple[Group, ...] | None = None,
        **opt: object) -> Plan:
    options = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, **opt}
    return Plan(optimizers=(OptimizerSpec(type="SGD", options=options, groups=gs or groups()),),
                schedule=schedule, step_unit=step_unit, steps_per_epoch=spe)


def cases() -> dict[str, tuple[Plan, tuple[float, ...] | None]]:
    """name -> (plan, metrics)."""
    mom_cycle = ir.Cyclic(low=0.95, high=0.8, step_size_up=20, step_size_down=10)
    c: dict[str, tuple[Plan, tuple[float, ...] | None]] = {
        "constant": (sgd({"lr": ir.Constant(factor=0.25, steps=40)}), None),
        "linear_warmup_from_0": (sgd({"lr": ir.Linear(start_factor=0.0, end_factor=1.0, steps=60)}), None),
        "exponential": (sgd({"lr": ir.Exponential(gamma=0.98)}), None),
        "exponential_every": (sgd({"lr": ir.Exponential(gamma=0.5, every=7)}), None),
        "exponential_stair": (sgd({"lr": ir.Exponential(gamma=0.5, every=40, stair=True)}), None),
        "multistep": (sgd({"lr": ir.MultiStep(milestones=(30, 80, 80, 120), gamma=0.3)}), None),
        "multistep_epoch": (sgd({"lr": ir.MultiStep(milestones=(3, 7), gamma=0.1)}, step_unit="epoch", spe=13), None),
        "natural_exp": (sgd({"lr": ir.NaturalExp(rate=0.02, every=10, stair=True)}), None),
        "inverse_time": (sgd({"lr": ir.InverseTime(rate=0.05, every=4)}), None),
        "polynomial_cycle": (sgd({"lr": ir.Polynomial(steps=50, power=2.0, end=1e-4, cycle=True)}), None),
        "cosine_periodic": (sgd({"lr": ir.Cosine(steps=60, end=1e-3)}), None),
        "cosine_clamped_epoch": (sgd({"lr": ir.Cosine(steps=10, clamp=True)}, step_unit="epoch", spe=9), None),
        "cosine_restarts": (sgd({"lr": ir.CosineRestarts(period=15, mult=2, end=1e-4)}), None),
        "cyclic_lr_and_momentum": (sgd({"lr": ir.Cyclic(high=0.5, step_size_up=20, step_size_down=10, mode="triangular2"),
                                        "momentum": mom_cycle}), None),
        "cyclic_exp_range": (sgd({"lr": ir.Cyclic(low=0.001, high=0.2, step_size_up=25, mode="exp_range", gamma=0.99)}), None),
        "one_cycle_lr_and_momentum": (sgd({"lr": ir.OneCycle(total_steps=N, three_phase=True, anneal="linear"),
                                           "momentum": ir.OneCycle(total_steps=N, initial=0.95, peak=0.85, final=0.95)}), None),
        "lambda": (sgd({"lr": ir.Lambda(expr="min(1, (step + 1) / 50) * 0.99 ** (step // 10)")}), None),
        "multiplicative": (sgd({"lr": ir.Multiplicative(expr="0.98")}), None),
        "table_absolute": (sgd({"lr": ir.Table(values=TABLE)}), None),
        "table_relative_hold": (sgd({"lr": ir.Table(values=(1.0, 0.5, 0.25), relative=True, hold=True)}), None),
        "piecewise": (sgd({"lr": ir.Piecewise(boundaries=(20, 70), values=(0.1, 0.03, 0.003))}), None),
        "sequence_with_multiplicative": (sgd({"lr": ir.Sequence(
            parts=(ir.Linear(start_factor=0.0, steps=20), ir.Multiplicative(expr="0.97"), ir.Cosine(steps=100)),
            boundaries=(20, 60))}), None),
        "sequence_iter_warmup_epoch_cosine": (sgd({"lr": ir.Sequence(
            parts=(ir.Linear(start_factor=0.1, steps=40, unit="iter"), ir.Cosine(steps=15)), boundaries=(5,))},
            step_unit="epoch", spe=8), None),
        "chain": (sgd({"lr": ir.Chain(parts=(ir.Linear(start_factor=0.1, steps=10), ir.Exponential(gamma=0.99),
                                             ir.MultiStep(milestones=(100,), gamma=0.5)))}), None),
        "plateau": (sgd({"lr": ir.Plateau(patience=3, factor=0.5, cooldown=2, threshold=0.01)}), METRICS),
        "plateau_epoch_max": (sgd({"lr": ir.Plateau(mode="max", patience=1, factor=0.3, unit="epoch")}, spe=10),
                              METRICS[: N // 10]),
        "weight_decay_and_momentum_schedules": (sgd({"lr": ir.Cosine(steps=N),
                                                     "weight_decay": ir.Cosine(steps=N // 2, end=1e-5),
                                                     "momentum": ir.Linear(start_factor=0.5, steps=30)}), None),
    }
    # per-group schedules: a plan default, a group override, a zero_lr group and an excluded one
    per_group = (
        Group(name="a", select=(Selector(names=("a*",)),),
              schedule={"lr": ir.Lambda(expr="1 / (1 + 0.05 * step)"), "momentum": mom_cycle}),
        Group(name="b", select=(Selector(names=("b*",)),), options={"lr": 0.3}),
        Group(name="frozen", select=(Selector(names=("f*",)),), frozen="zero_lr"),
        Group(name="skipped", select=(Selector(names=("s*",)),), frozen="exclude"),
        Group(name="c", select=(Selector(rest=True),), options={"lr": 0.02},
              schedule={"lr": ir.Piecewise(boundaries=(50,), values=(1.0, 0.1), relative=True)}),
    )
    c["per_group_schedules"] = (sgd({"lr": ir.Cosine(steps=80, end=1e-4)}, gs=per_group), None)
    adam_groups = (Group(name="a", select=(Selector(names=("a*",)),)),
                   Group(name="c", select=(Selector(rest=True),), options={"lr": 0.003, "betas": (0.8, 0.99)}))
    c["adam_betas_eps_wd"] = (Plan(optimizers=(OptimizerSpec(type="AdamW", options={"lr": 0.01}, groups=adam_groups),),
                                   schedule={"lr": ir.Cosine(steps=N), "beta1": ir.OneCycle(total_steps=N, initial=0.95, peak=0.85, final=0.95),
                                             "beta2": ir.Linear(start_factor=0.99, end_factor=1.0, steps=50),
                                             "eps": ir.Exponential(gamma=0.9, every=20, stair=True),
                                             "weight_decay": ir.Linear(start_factor=0.0, steps=40)}), None)
    c["adagrad_lr_decay"] = (Plan(optimizers=(OptimizerSpec(type="Adagrad", options={"lr": 0.05}, groups=adam_groups[:1]),),
                                  schedule={"lr": ir.Cosine(steps=N), "lr_decay": ir.Linear(start_factor=0.0, steps=N)},
                                  ), None)
    c["adadelta_rho"] = (Plan(optimizers=(OptimizerSpec(type="Adadelta", groups=adam_groups[:1]),),
                              schedule={"lr": ir.Exponential(gamma=0.99), "rho": ir.Linear(start_factor=0.9, steps=N)}), None)
    c["lamb"] = (Plan(optimizers=(OptimizerSpec(type="LAMB", options={"lr": 0.01, "weight_decay": 0.01}, groups=adam_groups),),
                      schedule={"lr": ir.Linear(start_factor=0.01, steps=30), "beta1": ir.Constant(factor=0.9, steps=10)}), None)
    return c


#: the node kinds each case uses (the coverage test checks that all 18 appear)
def kinds_used() -> set[str]:
    out: set[str] = set()
    for plan, _ in cases().values():
        for sched in [plan.schedule] + [g.schedule for g in plan.groups]:
            for node in sched.values():
                out.update(n.kind for n in ir.walk(node))
    return out
