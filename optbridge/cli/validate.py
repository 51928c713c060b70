"""``optbridge validate``: check configs in any dialect and describe them."""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING, Any

from ..lint import FRAMEWORKS
from ._common import CLIError, _clock, _fail, _Formatter, _load, _positive_int

if TYPE_CHECKING:  # pragma: no cover
    from ..ir import Node
    from ..plan import Plan

_VALIDATE_EPILOG = """\
examples:
  optbridge validate plan.yaml
  optbridge validate configs/*.yaml configs/*.json
  optbridge validate -v plan.yaml                  # also describe groups and schedules
  optbridge validate --framework mindspore plan.yaml   # also the traps of porting to MindSpore by hand
  optbridge validate --strict --steps 100000 plan.yaml # lints are errors; check a run of 100000 updates

Prints "OK <path>: <n> optimizer(s), <g> group(s), schedules: lr, momentum" per
valid file, then one "  lint: ..." line per porting trap found (optbridge.lint:
code, path, what happens and how much), and one error line per invalid file,
including hyperparameter values no optimizer can use (a beta reaching 1, a
negative lr: optbridge.checks), checked over --steps or the plan's total_steps.
Exits 0 if all are valid (and, with --strict, lint-free), else 2.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="check configs and summarise them", formatter_class=_Formatter,
                       description="Load each config (any dialect) and report whether it is valid.",
                       epilog=_VALIDATE_EPILOG)
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="config files (.yaml, .yml, .json, .toml)")
    p.add_argument("-v", "--verbose", action="store_true", help="also describe the groups and schedules")
    p.add_argument("--steps", "-n", type=_positive_int, metavar="N",
                   help="updates the run has, for the value checks and lints (default: the plan's total_steps)")
    p.add_argument("--framework", "-f", action="append", choices=FRAMEWORKS, metavar="FW",
                   help="also show the traps of porting to this framework by hand (torch, mindspore, megengine; "
                        "repeatable)")
    p.add_argument("--strict", action="store_true", help="lints are errors (exit 2)")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..checks import check_plan
    from ..errors import OptbridgeError
    from ..lint import lint
    from ..plan import scheduled_hypers
    bad = 0
    frameworks = tuple(getattr(args, "framework", None) or ())
    for path in args.configs:
        try:
            plan = _load(path)
            check_plan(plan, steps=args.steps)
            found = [x for x in lint(plan, steps=args.steps) if not x.frameworks or set(x.frameworks) & set(frameworks)]
        except CLIError as e:
            _fail(str(e))
            bad += 1
            continue
        except OptbridgeError as e:
            _fail(f"{path}: {e}")
            bad += 1
            continue
        scheduled = [h for h in scheduled_hypers(plan)
                     if h in plan.schedule or any(h in g.schedule for g in plan.groups)]
        n_opt, n_grp = len(plan.optimizers), len(plan.groups)
        print(f"OK {path}: {n_opt} optimizer{'s' if n_opt != 1 else ''}, "
              f"{n_grp} group{'s' if n_grp != 1 else ''}, "
              f"schedules: {', '.join(scheduled) if scheduled else 'none (constant hyperparameters)'}")
        for x in found:
            print(f"  lint: {x}")
        if args.strict and found:
            _fail(f"{path}: {len(found)} lint{'s' if len(found) != 1 else ''} (--strict)")
            bad += 1
        if args.verbose:
            print(textwrap.indent(describe_plan(plan), "    "))
    return 2 if bad else 0


def describe_plan(plan: Plan, steps: int | None = None) -> str:
    """A short human-readable summary: optimizers, groups with base values, schedules, clock."""
    from ..errors import ConfigError
    from ..plan import hyper_base, scheduled_hypers
    lines: list[str] = []
    hypers = list(scheduled_hypers(plan))
    cols = hypers + [h for h in ("weight_decay",) if h not in hypers]
    for opt in plan.optimizers:
        opts = " ".join(f"{k}={_fmt(v)}" for k, v in opt.options.items())
        label = "optimizer" if len(plan.optimizers) == 1 else f"optimizer {opt.name}"
        lines.append(f"{label}: {opt.type}" + (f"  {opts}" if opts else ""))
    header = ["group", "params"] + cols
    rows = []
    for g in plan.groups:
        params = "; ".join(s.describe() for s in g.select) or "(unbound)"
        if g.frozen:
            params += f"  [frozen: {g.frozen}]"
        cells = [g.name, params]
        for h in cols:
            try:
                cells.append(f"{hyper_base(plan, g, h):.6g}")
            except (ConfigError, TypeError, ValueError):
                cells.append("-")
        rows.append(cells)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines.append("groups (base values):")
    lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    lines.append("schedules:")
    entries: list[tuple[str, Node, str | None]] = [(h, n, None) for h, n in plan.schedule.items()]
    entries += [(h, n, g.name) for g in plan.groups for h, n in g.schedule.items()]
    if not entries:
        lines.append("  (none: every hyperparameter keeps its base value)")
    width = max((len(h) + (len(g) + 2 if g else 0) for h, _, g in entries), default=0)
    for h, node, gname in entries:
        label = f"{h}[{gname}]" if gname else h
        lines.append(f"  {label.ljust(width)}  {describe_node(node, plan.step_unit)}")
    clock = f"clock: one scheduler step per {'epoch' if plan.step_unit == 'epoch' else 'update'}"
    if plan.steps_per_epoch:
        clock += f", {plan.steps_per_epoch} updates per epoch"
    if plan.total_steps:
        clock += f", total_steps {plan.total_steps}"
    if steps is not None:
        clock += f"; traced: {_clock(plan, steps)}"
    lines.append(clock)
    return "\n".join(lines)

def describe_node(node: Node, unit: str = "iter") -> str:
    """``linear(start_factor=0, steps=500); from step 500: cosine(steps=2500, end=1e-05)``."""
    from .. import ir
    from ..serialize import node_to_dict
    u = node.unit or unit
    if isinstance(node, ir.Sequence):
        word = "epoch" if u == "epoch" else "step"
        text = describe_node(node.parts[0], u)
        for b, part in zip(node.boundaries, node.parts[1:]):
            text += f"; from {word} {b}: {describe_node(part, u)}"
        return f"[{text}]" if node.unit else text
    if isinstance(node, ir.Chain):
        return "product of (" + ", ".join(describe_node(p, u) for p in node.parts) + ")"
    d = node_to_dict(node)
    kind = d.pop("kind")
    return f"{kind}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in d.items()) + ")"

def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "null"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)
