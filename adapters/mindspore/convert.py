"""MindSpore lr lists from any plan, and ``optbridge convert CONFIG --to mindspore``.

This module needs numpy and optbridge only (not MindSpore): lists are computed by
the reference evaluator and rounded once to float32, as MindSpore stores a list
(``np.array(list).astype(float32)``). :func:`write` puts, in a directory:

* ``<group>.npy``: one float32 array per group (file names made filesystem-safe;
  ``lr.json`` maps group names to files);
* ``lr.json``: ``{"total_steps", "optimizer", "groups": {name: {"file", "lr", "values"}}}``;
* ``build_optimizer.py``: a standalone MindSpore script. ``build_optimizer(net)``
  resolves the plan's group selectors over ``net.parameters_and_names()`` (name
  globs, regexes, owning Cell type, ndim, last name component, rest; groups must
  be disjoint, as optbridge requires) and returns ``(optimizer, after_step)``:
  an nn optimizer with ``learning_rate=<group list>`` per group (explicit groups,
  every lr dynamic) and a no-op, or, for AdamW, ``mindspore.experimental.optim.AdamW``
  and a function that assigns the next list entry into each group's lr Parameter
  (call it after each update).
"""

from __future__ import annotations

import json
import re
from pprint import pformat
from pathlib import Path
from typing import Any

import numpy as np

from optbridge import ir
from optbridge.errors import ConfigError, EvaluationError, UnsupportedError
from optbridge.params import effective_options
from optbridge.plan import Plan, scheduled_hypers
from optbridge.tracing import reference_trace

__all__ = ["lists", "write"]

INT32_STEP_LIMIT = 2**31 - 1
#: Steps evaluated at once for long lists (keeps the float64 intermediates in cache-sized pieces).
CHUNK = 1 << 20


def lists(plan: Plan, total_steps: int | None = None, *, hyper: str = "lr") -> dict[str, np.ndarray]:
    """Per-group float32 lists of ``hyper`` (see ``optbridge.to_mindspore_lists``)."""
    n = total_steps if total_steps is not None else plan.total_steps
    if n is None:
        raise ConfigError("total_steps", "is required: MindSpore's lr lists must cover every step (it raises past "
                          "their end), and the plan sets no total_steps", None, show_value=False)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError("total_steps", "must be a positive integer", n)
    if plan.total_steps is not None and n > plan.total_steps:
        raise EvaluationError(f"the plan is defined for {plan.total_steps} steps (total_steps), {n} were asked for")
    if n > INT32_STEP_LIMIT:
        raise UnsupportedError("total_steps", "mindspore-list", f"{n} steps exceed MindSpore's int32 global_step "
                               f"(at most {INT32_STEP_LIMIT})")
    groups = [g for g in plan.groups if g.frozen != "exclude"]
    for g in groups:
        node = plan.schedule_for(g, hyper)
        if node is not None and any(isinstance(x, ir.Plateau) for x in ir.walk(node)):
            path = f"groups.{g.name}.schedule.{hyper}" if hyper in g.schedule else f"schedule.{hyper}"
            raise UnsupportedError(path, "mindspore-list", "plateau needs the metric at run time; a list cannot be "
                                   "precomputed (use form='experimental')")
    n = int(n)
    # the reference over windows of CHUNK steps (identical to slicing one whole trace), rounded once to float32
    first = reference_trace(plan, min(n, CHUNK))
    if hyper not in first.data:
        raise ConfigError("hyper", "is not scheduled in this plan (scheduled: " + ", ".join(first.data) + ")", hyper)
    out = np.empty((len(first.groups), n), dtype=np.float32)
    out[:, : min(n, CHUNK)] = first.data[hyper]
    for lo in range(CHUNK, n, CHUNK):
        out[:, lo:min(lo + CHUNK, n)] = reference_trace(plan, min(CHUNK, n - lo), start=lo).data[hyper]
    return {name: out[i] for i, name in enumerate(first.groups)}


def _safe(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "group"
    out, i = base, 1
    while out.lower() in taken:
        i += 1
        out = f"{base}_{i}"
    taken.add(out.lower())
    return out


_NN_KEYS = {"SGD": ("momentum", "dampening", "nesterov", "maximize"), "Adam": ("betas", "eps", "amsgrad", "maximize"),
            "AdamWeightDecay": ("betas", "eps"), "AdamW": ("betas", "eps", "amsgrad", "maximize")}


def write(plan: Plan, total_steps: int, out_dir: str | Path, *, source: str = "plan") -> list[Path]:
    """Write the lists, lr.json and build_optimizer.py into ``out_dir``; returns the paths written."""
    if len(plan.optimizers) != 1:
        raise UnsupportedError("optimizers", "mindspore-list", "convert writes one optimizer (the plan has "
                               f"{len(plan.optimizers)}); use optbridge.to_mindspore for several")
    spec = plan.optimizers[0]
    if spec.type not in _NN_KEYS:
        raise UnsupportedError(f"optimizers.{spec.name}.type", "mindspore-list",
                               f"{spec.type} has no verified MindSpore counterpart (SGD, Adam, AdamW, AdamWeightDecay)")
    others = [h for h in scheduled_hypers(plan) if h != "lr" and any(plan.schedule_for(g, h) is not None
                                                                      for g in plan.groups)]
    if others:
        raise UnsupportedError("schedule." + others[0], "mindspore-list", f"convert writes lr lists only; {others[0]} "
                               "is scheduled (use optbridge.to_mindspore(plan, net, form='experimental'))")
    groups = [g for g in spec.groups if g.frozen != "exclude"]
    opts = [effective_options(plan, g) for g in groups]
    for key in _NN_KEYS[spec.type]:
        vals = {repr(o.get(key)) for o in opts}
        if len(vals) > 1:
            raise UnsupportedError(f"groups.*.{key}", "mindspore-list", f"groups differ in {key}, which an nn "
                                   "optimizer holds once (use optbridge.to_mindspore, which builds separate or "
                                   "experimental optimizers)")
    o = opts[0]
    if o.get("maximize"):
        raise UnsupportedError("maximize", "mindspore-list", "nn optimizers cannot maximize")
    if o.get("amsgrad"):
        raise UnsupportedError("amsgrad", "mindspore-list", "amsgrad is not verified in MindSpore")
    lr = lists(plan, total_steps)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", "exists and is not a directory", str(out))
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = {"lr", "build_optimizer"}
    written: list[Path] = []
    doc_groups: dict[str, Any] = {}
    specs = []
    for g, go in zip(groups, opts):
        fname = _safe(g.name, taken) + ".npy"
        np.save(out / fname, lr[g.name])
        written.append(out / fname)
        doc_groups[g.name] = {"file": fname, "lr": float(go["lr"]), "weight_decay": float(go.get("weight_decay", 0.0)),
                              "values": [float(v) for v in lr[g.name]]}
        specs.append({"name": g.name, "file": fname, "weight_decay": float(go.get("weight_decay", 0.0)),
                      "select": [{k: list(getattr(s, k)) for k in ("names", "regex", "modules", "ndim", "leaf")
                                  if getattr(s, k)} | ({"rest": True} if s.rest else {}) for s in g.select]})
    excluded = [{"name": g.name, "select": [{k: list(getattr(s, k)) for k in ("names", "regex", "modules", "ndim",
                                                                               "leaf") if getattr(s, k)}
                                            | ({"rest": True} if s.rest else {}) for s in g.select]}
                for g in spec.groups if g.frozen == "exclude"]
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in o.items()
               if k in ("momentum", "dampening", "nesterov", "betas", "eps")}
    doc = {"source": source, "total_steps": int(total_steps), "optimizer": spec.type, "options": options,
           "groups": doc_groups}
    (out / "lr.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    written.append(out / "lr.json")
    script = _SCRIPT.replace("@SOURCE@", source.replace('"', "'")).replace("@TOTAL@", str(int(total_steps))) \
        .replace("@TYPE@", spec.type).replace("@OPTIONS@", pformat(options)) \
        .replace("@GROUPS@", pformat(specs, width=110)).replace("@EXCLUDED@", pformat(excluded, width=110))
    (out / "build_optimizer.py").write_text(script, encoding="utf-8")
    written.append(out / "build_optimizer.py")
    return written


_SCRIPT = '''"""MindSpore optimizer with per-group float32 lr lists, written by `optbridge convert` from @SOURCE@.

    from build_optimizer import build_optimizer
    optimizer, after_step = build_optimizer(net)   # groups resolved over net.parameters_and_names()
    ...  # each training step: grads for optimizer.parameters, optimizer(grads), after_step()

The lists (<group>.npy beside this file, float32, @TOTAL@ steps) are the exact reference values rounded once
to float32. MindSpore raises past the end of a list: train for at most @TOTAL@ updates. Every group is
explicit with its own lr list and weight decay (MindSpore's beta/gamma weight-decay name filter never applies,
and no static lr sits beside a dynamic one). Needs mindspore and numpy only.
"""

import fnmatch
import os
import re

import numpy as np

TOTAL_STEPS = @TOTAL@
OPTIMIZER = "@TYPE@"
OPTIONS = @OPTIONS@
GROUPS = @GROUPS@
EXCLUDED = @EXCLUDED@
HERE = os.path.dirname(os.path.abspath(__file__))


def _owners(net):
    owner = {}
    for _, cell in net.cells_and_names():
        for _, p in cell.parameters_and_names(expand=False):
            owner.setdefault(id(p), type(cell).__name__)
    return owner


def _match(sel, name, param, owner):
    if sel.get("rest"):
        return False
    leaf = name.rsplit(".", 1)[-1]
    checks = [("names", lambda p: fnmatch.fnmatchcase(name, p)), ("regex", lambda p: re.fullmatch(p, name)),
              ("modules", lambda p: fnmatch.fnmatchcase(owner.get(id(param), ""), p)),
              ("ndim", lambda p: len(param.shape) == p), ("leaf", lambda p: fnmatch.fnmatchcase(leaf, p))]
    return all(any(f(p) for p in sel[k]) for k, f in checks if k in sel)


def resolve(net):
    """{group name: [Parameter]} over the net's trainable parameters (disjoint groups, one rest group)."""
    owner = _owners(net)
    groups = GROUPS + [dict(g, file=None) for g in EXCLUDED]
    taken = {g["name"]: [] for g in groups}
    rest = [g for g in groups if any(s.get("rest") for s in g["select"])]
    seen = set()
    for name, p in net.parameters_and_names():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        hits = [g for g in groups if any(_match(s, name, p, owner) for s in g["select"])]
        if len(hits) > 1:
            raise ValueError(f"parameter {name!r} is matched by groups {hits[0]['name']!r} and {hits[1]['name']!r}")
        if not hits and not rest:
            raise ValueError(f"parameter {name!r} is matched by no group")
        taken[(hits or rest)[0]["name"]].append(p)
    for g in GROUPS:
        if not taken[g["name"]]:
            raise ValueError(f"group {g['name']!r} matches no parameter")
    return {g["name"]: taken[g["name"]] for g in GROUPS}


def build_optimizer(net):
    """(optimizer, after_step) for ``net``; call after_step() after every optimizer update."""
    import mindspore as ms
    from mindspore import nn, ops, Tensor

    params = resolve(net)
    lists = {g["name"]: np.load(os.path.join(HERE, g["file"])).astype(np.float32) for g in GROUPS}
    order = [p for p in net.trainable_params() if any(p is q for ps in params.values() for q in ps)]
    if OPTIMIZER == "AdamW":  # nn.AdamWeightDecay is not torch's AdamW: the experimental AdamW, lr assigned per step
        from mindspore.experimental import optim
        b1, b2 = OPTIONS["betas"]
        groups = [{"params": params[g["name"]], "lr": float(lists[g["name"]][0]), "weight_decay": g["weight_decay"],
                   "betas": (b1, b2), "eps": OPTIONS["eps"]} for g in GROUPS]
        opt = optim.AdamW(groups, lr=groups[0]["lr"])
        state = {"k": 0}

        def after_step():
            state["k"] += 1
            if state["k"] < TOTAL_STEPS:
                for grp, g in zip(opt.param_groups, GROUPS):
                    ops.assign(grp["lr"], Tensor(lists[g["name"]][state["k"]], ms.float32))
        return opt, after_step
    groups = [{"params": params[g["name"]], "lr": Tensor(lists[g["name"]]), "weight_decay": g["weight_decay"]}
              for g in GROUPS]
    groups.append({"order_params": order})
    first = groups[0]["lr"]
    if OPTIMIZER == "SGD":
        opt = nn.SGD(groups, learning_rate=first, momentum=float(OPTIONS.get("momentum", 0.0)),
                     dampening=float(OPTIONS.get("dampening", 0.0)), nesterov=bool(OPTIONS.get("nesterov", False)))
    elif OPTIMIZER == "Adam":
        b1, b2 = OPTIONS["betas"]
        opt = nn.Adam(groups, learning_rate=first, beta1=float(b1), beta2=float(b2), eps=float(OPTIONS["eps"]))
    else:
        b1, b2 = OPTIONS["betas"]
        opt = nn.AdamWeightDecay(groups, learning_rate=first, beta1=float(b1), beta2=float(b2),
                                 eps=float(OPTIONS["eps"]))
    return opt, (lambda: None)


if __name__ == "__main__":
    print(f"{OPTIMIZER} with {len(GROUPS)} group lr lists of {TOTAL_STEPS} steps: "
          + ", ".join(g["name"] for g in GROUPS) + "; import build_optimizer and call it with your net")
'''
