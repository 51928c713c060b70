"""``optbridge port``: a config as a runnable module for torch, MindSpore or MegEngine (:mod:`optbridge.port`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._common import CLIError, _Formatter, _load, _load_metrics, _positive_int

_PORT_EPILOG = """\
Writes into DIR:
  optim_<framework>.py   build(model) -> setup (optimizers, the schedule driver, clip_gradients), a training
                         step example and, for MindSpore, a Model.train callback; `python optim_<framework>.py`
                         runs a self-check. Standalone (the framework and numpy) unless an optimizer needs
                         optbridge's torch-exact class (the header says which)
  tables/c<i>.npy        float64 schedule values, one file per schedule (groups that differ only in their base
                         share one and multiply by it); written in windows, so memory stays small
  port.json              files, shapes, dtypes, sha256, optimizers, groups, the plan (no values)
  names.txt              with --model-names and --source-names: how the groups' selectors were mapped

Past the end of the tables the update raises ("update K is past the end of the schedule: ..."), unless every
schedule holds its last value (table with hold: true). An update made without stepping the driver raises at
that update. CONFIG may be in any dialect (canonical, torch, mindspore, mmengine, timm, hf).

examples:
  optbridge port train.yaml --to mindspore --out ported_ms/               # lr cells (default form)
  optbridge port train.yaml --to mindspore --form list -n 10000 --out ms_lists/
  optbridge port train.yaml --to megengine --out ported_mge/
  optbridge port train.yaml --to mindspore --source-names torch_names.json --model-names ms_names.json \\
      --out ported_ms/                                                   # selectors mapped onto MindSpore names
  (names files: [[name, shape, module type, requires_grad], ...], e.g. from
   optbridge.port.save_records(optbridge.port.model_records(model), "names.json"))
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("port", help="write a runnable optimizer/schedule module for a framework",
                       formatter_class=_Formatter, epilog=_PORT_EPILOG,
                       description="Port a config to torch, MindSpore or MegEngine: a module with the optimizer "
                                   "builder, the schedule driver and a training step, plus exact value tables.")
    p.add_argument("config", metavar="CONFIG", help="config file (any dialect)")
    p.add_argument("--to", required=True, choices=("torch", "mindspore", "megengine"), help="target framework")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument("--form", choices=("cell", "list", "experimental", "table"),
                   help="MindSpore: cell (default), list or experimental; torch/MegEngine: table")
    p.add_argument("--total-steps", "-n", type=_positive_int, metavar="N",
                   help="updates the port holds (default: the plan's total_steps, or where its schedules end)")
    p.add_argument("--optimizer", choices=("auto", "native", "exact"), default="auto",
                   help="auto: the framework's own optimizer where it computes torch's update, else optbridge's "
                        "torch-exact class; native: refuse instead; exact: optbridge's classes")
    p.add_argument("--model-names", metavar="FILE", help="the target model's parameter records (JSON)")
    p.add_argument("--source-names", metavar="FILE",
                   help="the records of the model the config's selectors were written for (JSON)")
    p.add_argument("--source-framework", default="torch", metavar="NAME", help="label of the source side (torch)")
    p.add_argument("--name-map", metavar="FILE", help="name overrides (optbridge.names rules: map / rules)")
    p.add_argument("--metrics", metavar="FILE", help="metric series for plateau schedules (.txt, .json, .npy)")
    p.set_defaults(func=cmd_port)


def run_port(args: argparse.Namespace, *, form: str | None) -> Any:
    """Port ``args.config`` as the options say; OptbridgeErrors about the step count become CLI hints."""
    from ..port import port
    plan = _load(args.config)
    metrics = _load_metrics(args.metrics) if getattr(args, "metrics", None) else None
    name_map = None
    if getattr(args, "name_map", None):
        from ..names import load_name_rules
        name_map = load_name_rules(args.name_map)
    try:
        return port(plan, args.to, out=args.out, form=form, total_steps=args.total_steps,
                    model_names=getattr(args, "model_names", None), source_names=getattr(args, "source_names", None),
                    source_framework=getattr(args, "source_framework", "torch"), name_map=name_map,
                    metrics=None if metrics is None else metrics.tolist(),
                    optimizer=getattr(args, "optimizer", "auto"), source=Path(args.config).name)
    except ConfigError as e:
        if e.path == "total_steps":
            raise CLIError(f"{args.config}: --total-steps N is required (the plan sets no total_steps and its "
                           "schedules have no end)") from None
        raise CLIError(f"{args.config}: {e}") from None


def cmd_port(args: argparse.Namespace) -> int:
    form = args.form
    if form == "table" and args.to == "mindspore":
        raise CLIError("--form table is the torch and MegEngine form; MindSpore: cell, list or experimental")
    if form in ("cell", "list", "experimental") and args.to != "mindspore":
        raise CLIError(f"--form {form} is a MindSpore form; {args.to} has one form (table)")
    print(run_port(args, form=form))
    return 0
