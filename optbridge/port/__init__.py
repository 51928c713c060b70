"""``optbridge.port``: a plan as a runnable module for torch, MindSpore or MegEngine.

::

    res = optbridge.port("plan.yaml", "mindspore", out="ported/", total_steps=10_000)
    res.module       # ported/optim_mindspore.py: build(net) -> Setup (optimizer, step(), callback(), ...)
    res.metadata     # ported/port.json: shapes, dtypes, files, sha256, the plan (never the values)

The generated module is **standalone** where the framework's own optimizer
computes torch's update (the framework and numpy only): every schedule value
is precomputed by the reference evaluator into float64 tables
(``tables/c<i>.npy``, streamed in windows, so a port of 150 groups x 1e6
updates stays within a few MB of memory per column window); groups that share
a schedule up to their base share one table and multiply by their own base,
the evaluator's own product, so every value is the reference's bit for bit.
A small generated resolver assigns the model's parameters to the plan's groups
with :func:`optbridge.params.resolve`'s rules. Where only optbridge's torch-exact
optimizer classes compute the plan's update, the module imports them (the
header and ``port.json`` say so). Past the end: the update at the horizon
raises (the words of :class:`optbridge.source.PastHorizon`), or the last value
holds when every schedule says ``hold``; a driver that was not stepped is
detected at the next update. docs/porting.md walks a port end to end.
"""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ..names import NameMap
    from ..params import ParamRecord
    from ..plan import Plan
    from ..report import Fidelity
    from .spec import PortSpec

__all__ = ["port", "PortResult", "load_records", "save_records", "model_records", "TARGETS"]

TARGETS = ("torch", "mindspore", "megengine")


@dataclass(frozen=True)
class PortResult:
    """What :func:`port` wrote.

    Attributes:
        out: The output directory.
        module: The generated module (``optim_<framework>.py``).
        metadata: ``port.json``.
        tables: The table files (``tables/c<i>.npy``), in column order.
        names: The name-map report (``names.txt``), when names were mapped.
        spec: What the port holds (:class:`optbridge.port.spec.PortSpec`).
        fidelity: How each scheduled hyperparameter of each group reaches the framework.
        notes: Decisions worth reading (optimizer classes, run-time needs, sharing).
    """

    out: Path
    module: Path
    metadata: Path
    tables: tuple[Path, ...]
    names: Path | None
    spec: PortSpec
    fidelity: tuple[Fidelity, ...]
    notes: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"wrote {self.module}", f"wrote {self.metadata}"]
        if self.tables:
            lines.append(f"wrote {len(self.tables)} table(s) in {self.tables[0].parent} "
                         f"({sum(p.stat().st_size for p in self.tables) / 1e6:.1f} MB)")
        if self.names is not None:
            lines.append(f"wrote {self.names}")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


# --------------------------------------------------------------------------- parameter records


def _record(i: int, row: Any, where: str) -> ParamRecord:
    from ..params import ParamRecord
    if isinstance(row, ParamRecord):
        return row
    if isinstance(row, Mapping):
        row = [row.get("name"), row.get("shape", []), row.get("module_type", ""), row.get("requires_grad", True)]
    if not isinstance(row, (list, tuple)) or not 1 <= len(row) <= 4 or not isinstance(row[0], str) or not row[0]:
        raise ConfigError(f"{where}[{i}]", "must be [name, shape, module type, requires_grad] or a mapping with "
                          "those keys", row)
    shape = row[1] if len(row) > 1 else []
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                       for d in shape):
        raise ConfigError(f"{where}[{i}].shape", "must be a list of integers", shape)
    module = row[2] if len(row) > 2 else ""
    grad = row[3] if len(row) > 3 else True
    if not isinstance(module, str) or not isinstance(grad, bool):
        raise ConfigError(f"{where}[{i}]", "module type must be a string and requires_grad true or false", row)
    return ParamRecord(row[0], tuple(shape), module, None, grad)


def load_records(src: str | os.PathLike[str] | Iterable[Any], *, where: str = "names") -> list[ParamRecord]:
    """Parameter records from a JSON file or a sequence.

    Args:
        src: A ``.json`` file holding a list of ``[name, shape, module type, requires_grad]``
            rows (or mappings with those keys, or ``{"records": [...]}``), or such a
            list, or :class:`~optbridge.params.ParamRecord` s.
        where: The argument's name in errors.

    Raises:
        ConfigError: an unreadable file or a malformed row (naming it).
    """
    data: Any = src
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(where, f"cannot read {p} ({e.strerror or e})", str(p)) from None
        except ValueError as e:
            raise ConfigError(where, f"{p} is not valid JSON ({e})", str(p)) from None
    if isinstance(data, Mapping):
        data = data.get("records")
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ConfigError(where, "must be a list of parameter records", type(data).__name__)
    return [_record(i, row, where) for i, row in enumerate(data)]


def save_records(records: Iterable[ParamRecord], path: str | os.PathLike[str]) -> Path:
    """Write records as the JSON :func:`load_records` reads (``[name, shape, module type, requires_grad]`` rows)."""
    p = Path(path)
    rows = [[r.name, list(r.shape), r.module_type, r.requires_grad] for r in records]
    p.write_text("[\n" + ",\n".join(" " + json.dumps(r) for r in rows) + "\n]\n", encoding="utf-8")
    return p


def model_records(model: Any) -> list[ParamRecord]:
    """The parameter records of a live torch, MindSpore or MegEngine model (what the adapters read).

    Imports the model's framework (through its adapter); :func:`save_records` writes them
    for ``optbridge port --model-names``.

    Raises:
        ConfigError: the model is none of these.
    """
    root = type(model).__module__.split(".")[0]
    for base in type(model).__mro__:
        root = base.__module__.split(".")[0]
        if root in TARGETS:
            break
    if root == "torch":
        from optbridge_adapters.torch.build import model_records as torch_records
        return torch_records(model)[0]
    if root == "mindspore":
        from optbridge_adapters.mindspore.build import model_records as ms_records  # the adapter's reader (trainable)
        return ms_records(model)[0]
    if root == "megengine":
        from optbridge_adapters.megengine.build import named_parameters

        from ..params import ParamRecord
        named, owners = named_parameters(model)
        return [ParamRecord(n, tuple(p.shape), owners.get(n, ""), id(p)) for n, p in named]
    raise ConfigError("model", "must be a torch nn.Module, a MindSpore Cell or a MegEngine Module",
                      type(model).__name__)


# --------------------------------------------------------------------------- the port


def _plan(plan: Any) -> Plan:
    from ..plan import Plan
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, (str, os.PathLike, Mapping)):
        from ..serialize import load
        return load(plan)
    raise ConfigError("plan", "must be a Plan, a config file or a config mapping", type(plan).__name__)


def _map_names(plan: Plan, to: str, model_names: Any, source_names: Any, name_map: Any, source_framework: str
               ) -> tuple[Plan, Any]:
    if model_names is None:
        if source_names is not None or name_map is not None:
            raise ConfigError("model_names", "is required with source_names or name_map (the target model's "
                              "parameter records the plan's groups are mapped onto)", None, show_value=False)
        return plan, None
    target = load_records(model_names, where="model_names")
    if source_names is None:
        if name_map is not None:
            raise ConfigError("source_names", "is required with name_map (the records of the model the plan's "
                              "selectors were written for)", None, show_value=False)
        from ..params import resolve
        resolve(plan, target)  # the plan's own selectors must fit the target model
        return plan, None
    from ..names import map_plan
    source = load_records(source_names, where="source_names")
    return map_plan(plan, source, target, name_map, frameworks=(source_framework, to))


def _docstring(spec: PortSpec, name: str, source: str, names: bool) -> str:
    from .render import module_name
    fw = {"torch": "torch", "mindspore": "MindSpore", "megengine": "MegEngine"}[spec.framework]
    mod = module_name(spec.framework)
    end = (f"updates 0 .. {spec.horizon - 1}; update {spec.horizon} and later raise PastHorizon ({spec.why})"
           if spec.horizon is not None else f"every schedule holds its last value after update {spec.total - 1}")
    needs = (f"{fw}, numpy and optbridge (optbridge_adapters: the torch-exact optimizers "
             + ", ".join(o.choice.cls for o in spec.optimizers if o.choice.needs_optbridge) + ")"
             if spec.needs_optbridge else f"{fw} and numpy only (standalone)")
    usage = {
        "torch": f"""    import {mod}
    setup = {mod}.build(model)     # the plan's groups over model's parameters
    for x, y in batches:
        setup.optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        setup.clip_gradients()      # as the plan says (nothing without clipping)
        setup.optimizer.step()
        setup.scheduler.step()      # once per update, after optimizer.step()""",
        "megengine": f"""    import {mod}
    setup = {mod}.build(model)
    gm = GradManager().attach(setup.params)
    for x, y in batches:
        setup.optimizer.clear_grad()
        with gm:
            gm.backward(loss_fn(model(x), y))
        setup.clip_gradients()
        setup.optimizer.step()
        setup.scheduler.step()      # once per update, after optimizer.step()""",
        "mindspore": f"""    import {mod}
    setup = {mod}.build(net)       # the plan's groups over net's trainable parameters
    step = {mod}.train_step(net, loss_fn, setup)
    for x, y in dataset:
        loss = step(x, y)          # grads, clip, setup.optimizer(grads), setup.step()
    # or Model.train: setup.model(net, loss_fn).train(epochs, dataset, callbacks=[setup.callback()],
    #                                                 dataset_sink_mode=False)""",
    }[spec.framework]
    forms = {"list": "lr lists: each group's float32 list, gathered at the optimizer's global_step",
             "cell": "lr cells: float32(scale * table[global_step]) per group, from the float64 tables",
             "experimental": "experimental optimizers: setup.step() writes each update's lrs",
             "table": "a scheduler that writes the tables' values into the groups before each update"}
    opt_lines = "\n".join(f"    {o.name}: {o.choice.cls} ({o.choice.why})" for o in spec.optimizers)
    return f"""{fw} optimizers and schedule for {source}: written by `optbridge port` (optbridge).

Form: {spec.form}: {forms[spec.form]}.
Holds: {end}.
Exact: every value is the reference evaluator's, precomputed into float64 tables beside this
module (tables/*.npy, checked against their SHA-256 when built); groups that share a schedule
share a table and multiply by their own base (the evaluator's own product).
Needs: {needs}.
Optimizers:
{opt_lines}
{"Parameter names: mapped onto this framework's model, see names.txt." if names else ""}
Use:

{usage}

`python {mod}.py` runs a self-check (probe parameters, no model needed). port.json beside this
module describes the port (files, shapes, dtypes, sha256, the plan); it repeats no value.
"""


def port(plan: Plan | str | os.PathLike[str] | Mapping[str, Any], to: str, *, out: str | os.PathLike[str],
         form: str | None = None, total_steps: int | None = None, model_names: Any = None,
         name_map: NameMap | Mapping[str, str] | Any = None, source_names: Any = None,
         source_framework: str = "torch", metrics: Sequence[float] | None = None, optimizer: str = "auto",
         source: str | None = None) -> PortResult:
    """Write a runnable module for framework ``to`` that sets up ``plan``'s optimizers, groups and schedules.

    Args:
        plan: A :class:`~optbridge.plan.Plan` (a live import such as ``optbridge.from_torch(...)``,
            a recorded plan), or a config in any dialect (a file or a mapping, read
            with :func:`optbridge.load`).
        to: ``"torch"``, ``"mindspore"`` or ``"megengine"``.
        out: Output directory (created; the module, ``port.json``, ``tables/`` and
            ``names.txt`` are written there).
        form: MindSpore: ``"cell"`` (default), ``"list"`` or ``"experimental"``;
            torch and MegEngine: ``"table"`` (the only form).
        total_steps: Updates the port holds (default: the plan's ``total_steps``, else
            where its schedules end).
        model_names: The target model's parameter records (a JSON file, rows, or
            :class:`~optbridge.params.ParamRecord` s; :func:`model_records` reads them off
            a live model). With ``source_names``, the plan's selectors are mapped onto
            these names (:func:`optbridge.names.map_plan`); alone, they are checked to fit.
        name_map: Overrides for the name map (a dict, a function, ``NameRules`` or a ``NameMap``).
        source_names: The records of the model the plan's selectors were written for.
        source_framework: Label of the source side in the name report.
        metrics: Plateau metric series (a plateau schedule is precomputed from it).
        optimizer: ``"auto"`` (the framework's own class where it computes torch's
            update, else optbridge's torch-exact class), ``"native"`` (refuse where
            the own class differs) or ``"exact"``.
        source: What to call the plan's origin in the module (default: the file name).

    Returns:
        A :class:`PortResult`.

    Raises:
        ConfigError: bad arguments, a plan whose groups do not fit ``model_names``, a
            port without an end (``total_steps`` needed).
        UnsupportedError: what the target cannot run exactly (the reason says what).
        EvaluationError: ``total_steps`` reaches past the end of the plan's schedules.
        NameMapError: the models' names cannot be paired.
    """
    from .. import ir
    from ..report import Fidelity
    from ..serialize import to_dict
    from .render import module_name, render
    from .spec import build_spec
    from .tables import write_columns

    to = ir.check_choice("to", to, TARGETS)
    if source is None:
        source = Path(plan).name if isinstance(plan, (str, os.PathLike)) else "a plan"
    loaded = _plan(plan)
    mapped, report = _map_names(loaded, to, model_names, source_names, name_map, source_framework)
    spec = build_spec(mapped, to, form=form, total_steps=total_steps, metrics=metrics, optimizer=optimizer)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigError("out", "exists and is not a directory", str(root))
    tables_dir = root / "tables"
    for stale in tables_dir.glob("c*.npy") if tables_dir.is_dir() else ():
        stale.unlink()
    written = write_columns(spec, tables_dir)
    paths = [p for p, _ in written]
    users: dict[int, list[str]] = {}
    for s in spec.slots:
        users.setdefault(s.column, []).append(f"{spec.groups[s.group].name}.{s.hyper}")
    columns = [{"file": f"tables/{p.name}", "dtype": "float64", "shape": [spec.total], "sha256": digest,
                "relative": c.relative, "path": c.path} for c, (p, digest) in zip(spec.columns, written)]
    name = module_name(to)
    names_path = None
    if report is not None:
        names_path = root / "names.txt"
        names_path.write_text(str(report) + "\n", encoding="utf-8")
    module = root / f"{name}.py"
    module.write_text(render(spec, columns, source=source, docstring=_docstring(spec, name, source,
                                                                                  report is not None)),
                      encoding="utf-8")
    fidelity = tuple(
        Fidelity(spec.backend, spec.groups[s.group].name, s.hyper, "table",
                 f"{columns[s.column]['file']}: " + (f"shared by {len(users[s.column])} slot(s), times the base "
                                                     f"{s.scale!r}" if spec.columns[s.column].relative
                                                     else "its own values"))
        for s in spec.slots)
    notes = [f"{o.name}: {o.choice.cls}: {o.choice.why}" for o in spec.optimizers]
    if spec.needs_optbridge:
        notes.append(f"{module.name} imports optbridge's torch-exact optimizers at run time "
                     "(install optbridge where it runs)")
    shared = sum(1 for c in spec.columns if c.relative and len(users[spec.columns.index(c)]) > 1)
    if shared:
        notes.append(f"{shared} table(s) shared by groups that differ only in their base")
    doc = {
        "optbridge_port": 1, "optbridge": _version(), "framework": to, "form": spec.form, "module": module.name,
        "source": source,
        "runtime": {"needs": [to, "numpy"] + (["optbridge"] if spec.needs_optbridge else []),
                    "standalone": not spec.needs_optbridge},
        "clock": {"step_unit": spec.unit, "steps_per_epoch": spec.steps_per_epoch},
        "total": spec.total, "horizon": spec.horizon, "why": spec.why, "hold": spec.hold,
        "fingerprint": spec.fingerprint,
        "tables": {"layout": "one float64 .npy per column, shape [total]: the value of a slot at update k is "
                             "slot.scale * column[k]",
                   "shared": "a relative column holds its schedule at base 1 and is shared by every group with "
                             "that schedule; each multiplies by its own base (scale), the reference evaluator's "
                             "own product, so values are bit for bit the reference's",
                   "columns": [dict(c, slots=users.get(i, [])) for i, c in enumerate(columns)]},
        "optimizers": [{"name": o.name, "type": o.type, "class": o.choice.cls, "module": o.choice.module,
                        "options": o.options, "clip": o.clip, "why": o.choice.why} for o in spec.optimizers],
        "groups": [{"name": g.name, "optimizer": spec.optimizers[g.optimizer].name, "index": g.index,
                    "select": g.select, "options": g.options, "frozen": g.frozen, "clip": g.clip}
                   for g in spec.groups],
        "excluded": [{"name": n, "select": s} for n, s in spec.excluded],
        "slots": [{"group": spec.groups[s.group].name, "hyper": s.hyper, "column": s.column, "scale": s.scale,
                   "base": s.base, "path": s.path} for s in spec.slots],
        "held": [{"group": spec.groups[g].name, "lr": v} for g, v in spec.held],
        "metrics": None if spec.metrics is None else len(spec.metrics),
        "names": None if report is None else {"report": "names.txt", "frameworks": list(report.names.frameworks),
                                              "groups": {g.group: g.how for g in report.groups}},
        "plan": to_dict(spec.plan),
        "notes": notes,
    }
    meta = root / "port.json"
    meta.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return PortResult(root, module, meta, tuple(paths), names_path, spec, fidelity, tuple(notes))


def _version() -> str:
    from .. import __version__
    return __version__


class _CallableModule(types.ModuleType):
    """``optbridge.port(...)`` calls :func:`port`; ``optbridge.port.<name>`` is this package's attribute."""

    def __call__(self, *args: Any, **kwargs: Any) -> PortResult:
        return port(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
