"""Random valid plans, drawn by hypothesis, as conformance cases.

:func:`case_docs` is a hypothesis strategy of case documents (the same shape as a
case file, family ``random``): 1-3 optimizers' worth of groups with different base
values, SGD / Adam / AdamW, iteration and epoch clocks, every node kind nested up to
two combinators deep, schedules on lr, momentum / beta1 and weight_decay, per-group
overrides, frozen groups and plateaus with a metric series. Every plan is valid by
construction for its ``steps`` (one_cycle horizons cover the trace, tables hold,
plateaus get their metrics), and is checked by the reference before it is used.

:func:`random_cases` draws ``n`` of them deterministically from a seed (the runner's
``--random N --seed S``); ``tests/test_conformance.py`` uses the strategy directly,
so hypothesis shrinks a disagreement to a minimal plan.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import strategies as st

from .cases import Case, validate_case_doc

__all__ = ["case_docs", "random_cases", "node_docs"]

LRS = (0.1, 0.05, 0.02, 0.3, 1e-3, 0.25, 0.007)
EXPRS = ("0.95 ** epoch", "epoch // 7 * 0.1 + 0.5", "min(1.0, (step + 1) / 20)", "1 / (1 + 0.1 * k)",
         "cos(pi * t / 50) * 0.5 + 0.5 if t < 50 else 0.1", "max(0.1, exp(-0.03 * epoch))",
         "sqrt(x + 1) / (x + 1)", "0.5 ** (epoch // 10)", "epoch / 10 if epoch < 10 else 1.0")
FACTORS = ("0.99", "0.9 if epoch % 10 == 0 else 1.0", "1.0 - 0.01 * (k % 3)", "0.995")

unit = st.sampled_from([None, None, "iter", "epoch"])


def _f(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Finite floats without subnormals (MegEngine sets flush-to-zero in-process, which hypothesis refuses)."""
    return st.floats(lo, hi, allow_nan=False, allow_subnormal=False)


frac = _f(0.0, 1.0).map(lambda x: round(x, 6))


# The strategies below are built once per (horizon, hyperparameter, depth): building them is most of the cost of
# drawing a plan (random_cases(20): 9.5 s uncached, 0.95 s cached; the same plans either way).
@functools.cache
def _leaf(h: int, hyper: str) -> st.SearchStrategy[dict[str, Any]]:
    """Leaf nodes whose counter stays below ``h`` (the horizon in the node's own unit at most)."""
    span = st.integers(1, max(1, h))
    small = _f(1e-6, 1e-3).map(lambda x: float(f"{x:.3g}"))
    if hyper in ("momentum", "beta1"):
        lo_hi = st.tuples(_f(0.8, 0.95), _f(0.8, 0.95)).map(lambda t: (round(t[0], 4), round(t[1], 4)))
    else:
        lo_hi = st.tuples(_f(1e-4, 0.01), _f(0.01, 0.2)).map(lambda t: (float(f"{t[0]:.3g}"), float(f"{t[1]:.3g}")))
    return st.one_of(
        st.builds(lambda f, s, u: _n("constant", factor=f, steps=s, unit=u), frac, st.none() | st.integers(0, h), unit),
        st.builds(lambda a, b, s, u: _n("linear", start_factor=a, end_factor=b, steps=s, unit=u),
                  frac, frac, span, unit),
        st.builds(lambda g, e, s, u: _n("exponential", gamma=g, every=e, stair=s, unit=u),
                  _f(0.9, 1.0).map(lambda x: round(x, 5)), span, st.booleans(), unit),
        st.builds(lambda m, g, u: _n("multistep", milestones=sorted(m), gamma=g, unit=u),
                  st.lists(st.integers(0, h), max_size=4), _f(0.1, 1.0).map(lambda x: round(x, 4)), unit),
        st.builds(lambda r, e, s, u: _n("natural_exp", rate=r, every=e, stair=s, unit=u),
                  _f(0.0, 0.05).map(lambda x: round(x, 5)), span, st.booleans(), unit),
        st.builds(lambda r, e, s, u: _n("inverse_time", rate=r, every=e, stair=s, unit=u),
                  _f(0.0, 1.0).map(lambda x: round(x, 4)), span, st.booleans(), unit),
        st.builds(lambda s, p, e, c, u: _n("polynomial", steps=s, power=p, end=e, cycle=c, unit=u),
                  span, st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.just(0.0) | small, st.booleans(), unit),
        st.builds(lambda s, e, c, u: _n("cosine", steps=s, end=e, clamp=c, unit=u),
                  span, st.just(0.0) | small, st.booleans(), unit),
        st.builds(lambda p, m, e, u: _n("cosine_restarts", period=p, mult=m, end=e, unit=u),
                  span, st.integers(1, 3), st.just(0.0) | small, unit),
        st.builds(lambda lh, up, down, mode, g, u: _n("cyclic", low=lh[0], high=lh[1], step_size_up=up,
                                                      step_size_down=down, mode=mode, gamma=g, unit=u),
                  lo_hi, span, st.none() | span, st.sampled_from(["triangular", "triangular2", "exp_range"]),
                  _f(0.95, 1.0).map(lambda x: round(x, 5)), unit),
        st.builds(lambda e, u: _n("lambda", expr=e, unit=u), st.sampled_from(EXPRS), unit),
        st.builds(lambda e, u: _n("multiplicative", expr=e, unit=u), st.sampled_from(FACTORS), unit),
        st.builds(lambda v, r, u: _n("table", values=v, relative=r, hold=True, unit=u),
                  st.lists(_f(0.0, 1.0).map(lambda x: round(x, 5)), min_size=1, max_size=8), st.booleans(), unit),
        st.integers(0, 3).flatmap(lambda n: st.builds(
            lambda b, v, u: _n("piecewise", boundaries=b, values=v, relative=True, unit=u),
            st.lists(st.integers(1, max(1, h)), min_size=n, max_size=n, unique=True).map(sorted),
            st.lists(_f(0.0, 1.0).map(lambda x: round(x, 4)), min_size=n + 1, max_size=n + 1), unit)),
    )


@functools.cache
def _one_cycle(h: int, hyper: str) -> st.SearchStrategy[dict[str, Any]]:
    """A one_cycle whose total_steps covers the trace (it raises past its end, as torch does)."""
    if hyper in ("momentum", "beta1"):
        vals = st.tuples(_f(0.85, 0.95), _f(0.8, 0.9)).map(
            lambda t: {"initial": round(t[0], 4), "peak": round(t[1], 4), "final": round(t[0], 4)})
    else:
        vals = st.just({})
    return st.builds(lambda n, p, a, t, v: _n("one_cycle", total_steps=n, pct_start=p, anneal=a, three_phase=t, **v),
                     st.integers(max(2, h), 2 * h + 2), _f(0.1, 0.9).map(lambda x: round(x, 3)),
                     st.sampled_from(["cos", "linear"]), st.booleans(), vals)


@functools.cache
def node_docs(h: int, hyper: str = "lr", depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    """Schedule nodes (as documents) valid for ``h`` counter steps, at most ``depth`` combinators deep."""
    leaf = _leaf(h, hyper)
    if depth <= 0:
        return leaf
    child = node_docs(h, hyper, depth - 1)
    seq = st.integers(2, 3).flatmap(lambda n: st.builds(
        lambda parts, b, u: _n("sequence", parts=parts, boundaries=sorted(b), unit=u),
        st.lists(child, min_size=n, max_size=n),
        st.lists(st.integers(0, max(1, h)), min_size=n - 1, max_size=n - 1, unique=True), unit))
    chain = st.builds(lambda parts: _n("chain", parts=parts), st.lists(child, min_size=2, max_size=3))
    return st.one_of(leaf, leaf, seq, chain)


def _n(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, **{k: v for k, v in fields.items() if v is not None}}


@st.composite
def case_docs(draw: st.DrawFn, max_steps: int = 120, seed: int = 0) -> dict[str, Any]:
    """A random case document (valid by construction; see the module docstring)."""
    steps = max_steps - draw(st.integers(0, max(0, max_steps - 8)))  # long traces first
    spe = draw(st.integers(1, 7))
    step_unit = draw(st.sampled_from(["iter", "epoch"]))
    h_iter = steps  # counters stay below the trace length in iterations, and in epochs too
    opt = draw(st.sampled_from(["SGD", "SGD", "Adam", "AdamW"]))
    options: dict[str, Any] = {"lr": draw(st.sampled_from(LRS))}
    extra_hyper = draw(st.sampled_from(["momentum", "weight_decay", None, None]))
    if opt == "SGD" and (extra_hyper == "momentum" or draw(st.booleans())):
        options["momentum"] = 0.9
    if extra_hyper == "momentum" and opt != "SGD":
        extra_hyper = "beta1"
    if extra_hyper == "weight_decay":
        options["weight_decay"] = draw(st.sampled_from([1e-4, 5e-4, 0.01, 0.05]))
    n_groups = draw(st.integers(1, 3))
    lrs = draw(st.lists(st.sampled_from(LRS), min_size=n_groups, max_size=n_groups, unique=True))
    groups: list[dict[str, Any]] = []
    for i, lr in enumerate(lrs):
        g: dict[str, Any] = {"name": f"g{i}", "lr": lr}
        if i == n_groups - 1 and n_groups > 1 and draw(st.integers(0, 5)) == 5:
            g["frozen"] = draw(st.sampled_from(["zero_lr", "exclude"]))
        groups.append(g)
    metrics = None
    if draw(st.integers(0, 7)) == 7:  # hypothesis draws small integers first: 0 is the common case
        schedule: dict[str, Any] = {"lr": _n("plateau", mode=draw(st.sampled_from(["min", "max"])),
                                             factor=draw(st.sampled_from([0.1, 0.5, 0.8])),
                                             patience=draw(st.integers(0, 6)), cooldown=draw(st.integers(0, 3)),
                                             threshold_mode=draw(st.sampled_from(["rel", "abs"])),
                                             min_value=draw(st.sampled_from([0.0, 1e-4])))}
        import numpy as np
        rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
        walk = 1.0 + np.cumsum(rng.normal(-0.01, 0.05, steps))
        metrics = [round(float(x), 6) for x in walk]
    else:
        schedule = {"lr": draw(node_docs(h_iter, "lr") | _one_cycle(h_iter, "lr"))}
    if extra_hyper:
        schedule[extra_hyper] = draw(node_docs(h_iter, extra_hyper, 1) | _one_cycle(h_iter, extra_hyper))
    if n_groups > 1 and schedule["lr"]["kind"] != "plateau" and draw(st.integers(0, 3)) == 3:
        groups[0]["schedule"] = {"lr": draw(node_docs(h_iter, "lr", 1))}
    plan = {"optbridge": 1, "step_unit": step_unit, "steps_per_epoch": spe,
            "optimizer": {"type": opt, **options}, "groups": groups, "schedule": schedule}
    doc: dict[str, Any] = {"id": f"random-{seed}-000", "family": "random",
                           "description": f"hypothesis-generated plan (seed {seed}): " + _summary(plan),
                           "plan": plan, "steps": steps}
    if metrics is not None:
        doc["metrics"] = metrics
    return doc


def _summary(plan: dict[str, Any]) -> str:
    def walk(n: dict[str, Any]) -> str:
        if n["kind"] in ("sequence", "chain"):
            return n["kind"] + "(" + ", ".join(walk(p) for p in n["parts"]) + ")"
        return n["kind"] + (f"@{n['unit']}" if n.get("unit") else "")
    sched = "; ".join(f"{h}: {walk(n)}" for h, n in plan["schedule"].items())
    return (f"{plan['optimizer']['type']}, {len(plan['groups'])} group(s), {plan['step_unit']} clock "
            f"({plan['steps_per_epoch']}/epoch); {sched}")


def usable(doc: dict[str, Any]) -> bool:
    """The document validates and the reference evaluates it to finite values."""
    if validate_case_doc(doc):
        return False
    import numpy as np

    import optbridge
    case = Case(doc)
    try:
        tr = optbridge.trace(case.plan, case.steps, metrics=case.metrics)
    except optbridge.OptbridgeError:
        return False
    return all(bool(np.isfinite(a).all()) for a in tr.data.values())


def random_cases(n: int, *, seed: int = 0, max_steps: int = 120) -> list[Case]:
    """``n`` random cases, the same for the same seed (hypothesis in generate-only mode, no database)."""
    import json

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    pool: list[dict[str, Any]] = []
    seen: set[str] = set()

    @hseed(seed)
    @settings(max_examples=max(1, 6 * n), database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(doc=case_docs(max_steps=max_steps, seed=seed))
    def collect(doc: dict[str, Any]) -> None:
        key = json.dumps([doc["plan"], doc["steps"]], sort_keys=True)
        if len(pool) < 4 * n and key not in seen and usable(doc):
            seen.add(key)
            pool.append(doc)

    collect()
    # hypothesis starts with its simplest examples and then mutates earlier ones: spread the pick over the pool
    docs = [pool[(i * len(pool)) // n] for i in range(min(n, len(pool)))]
    out = []
    for i, d in enumerate(docs):
        d = dict(d, id=f"random-{seed}-{i:03d}")
        d["description"] = d["description"].replace(f"(seed {seed})", f"(seed {seed}, #{i})", 1)
        out.append(Case(d))
    return out
