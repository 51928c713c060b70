"""Case files and expected-deviation files: loading, validation, coverage.

A case is data (``conformance/cases/<id>.yaml``, schema ``case.schema.json``)::

    id: cosine-periodic-past-tmax
    family: cosine
    description: torch's CosineAnnealingLR is periodic past T_max ...
    plan: {optbridge: 1, optimizer: {type: SGD, lr: 0.1}, schedule: {kind: cosine, steps: 300}}
    steps: 1000

Expected deviations are data too (``conformance/xfail/<backend>.yaml``, schema
``xfail.schema.json``), and strict: an entry that passes fails the run.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from optbridge.errors import ConfigError

from . import schema as _schema

if TYPE_CHECKING:  # pragma: no cover
    from optbridge.plan import Plan

__all__ = ["Case", "Deviation", "CASES_DIR", "XFAIL_DIR", "FAMILIES", "load_case", "load_cases", "select_cases",
           "write_plan",
           "load_deviations", "features", "FEATURES", "validate_case_doc", "budget_caps", "config_case",
           "is_case_doc", "family_order", "Budget", "trajectory_plan_errors"]

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "cases"
XFAIL_DIR = HERE / "xfail"

#: The families the suite ships, in matrix order. ``family`` is an open name: any other
#: family (a user's config is ``user``) gets its own row after these, in order of appearance.
FAMILIES = ("constant-linear", "decay", "cosine", "cyclic", "expression", "data", "plateau", "composition", "clocks",
            "hyperparameters", "groups-optimizers", "long-horizon", "edge-values", "recipes", "dialect-torch",
            "dialect-mindspore", "real-setups", "lr-find", "trajectory", "user", "random")


def family_order(families: Iterable[str]) -> list[str]:
    """``families`` without repeats, the shipped ones first in :data:`FAMILIES` order, then the others as they come."""
    seen = list(dict.fromkeys(families))
    known = [f for f in FAMILIES if f in seen]
    return known + [f for f in seen if f not in FAMILIES]


def _yaml_load(path: Path) -> Any:
    import yaml
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "is not valid YAML: " + " ".join(str(e).split()), None, show_value=False) from None


# --------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Budget:
    """Why a result ran fewer updates than its case has (never silent: every report prints it).

    Attributes:
        ran: Updates the backend ran.
        of: Updates the case (or the user's ``--steps``) asks for.
        source: ``"budget.yaml"``, ``"case"`` (the case's ``steps_by_backend``) or ``"--max-steps"``.
        reason: Why, in words (the budget's or the case's reason).
    """

    ran: int
    of: int
    source: str
    reason: str

    def describe(self) -> str:
        return f"ran {self.ran:,} of {self.of:,} updates ({self.source}: {self.reason})"

    def to_json(self) -> dict[str, Any]:
        return {"ran": self.ran, "of": self.of, "source": self.source, "reason": self.reason}


@lru_cache(maxsize=1)
def _budget_doc() -> Mapping[str, Any]:
    return _yaml_load(HERE / "budget.yaml") or {}


def budget_caps() -> dict[str, tuple[int, str]]:
    """``backend -> (cap, reason)`` from ``budget.yaml``: at most this many updates per case."""
    doc = _budget_doc()
    return {b: (int(e["steps"]), " ".join(str(e["reason"]).split())) for b, e in (doc.get("caps") or {}).items()}


def estimated_seconds(backend: str, steps: int) -> float:
    """A rough cost of one trace (``budget.yaml``: a cap's ``cost``, else ``costs``), to balance the batches."""
    doc = _budget_doc()
    c = (((doc.get("caps") or {}).get(backend) or {}).get("cost")) or (doc.get("costs") or {}).get(backend) or {}
    return float(c.get("trace_s", 0.05)) + float(c.get("update_ms", 0.3)) * steps / 1e3


@dataclass(frozen=True)
class Case:
    """One conformance case (see ``case.schema.json``).

    ``doc`` is the whole case document; everything else is read from it, so a
    case crosses process boundaries as plain data. ``series`` is a user's plateau
    metric series (``optbridge conform CONFIG --metrics FILE``), held as an array
    rather than written into the document.
    """

    doc: Mapping[str, Any]
    path: str | None = None
    series: Any = field(default=None, compare=False)   # a user's metric series (float64 array), kept out of doc

    @property
    def id(self) -> str:
        return str(self.doc["id"])

    @property
    def family(self) -> str:
        return str(self.doc["family"])

    @property
    def description(self) -> str:
        return " ".join(str(self.doc["description"]).split())

    @property
    def steps(self) -> int:
        return int(self.doc["steps"])

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.doc.get("tags", ()))

    @property
    def dialect(self) -> str:
        src = self.doc.get("source")
        if isinstance(src, Mapping) and src.get("dialect"):
            return str(src["dialect"])
        from optbridge.dialects import detect
        return detect(self.doc["plan"])

    @cached_property
    def plan(self) -> Plan:
        """The plan the backends run: the case's plan, or the lr range test's ramp over it (``lr_find``)."""
        import optbridge
        try:
            plan = optbridge.load(self.doc["plan"])
        except ConfigError as e:
            raise e.under(f"{self.where}: plan") from None
        spec = self.doc.get("lr_find")
        if spec is None:
            return plan
        from optbridge.lrfind import RangeTest, ramp_plan
        try:
            test = RangeTest(start_lr=spec["start_lr"], end_lr=spec["end_lr"], steps=self.steps,
                             mode=spec.get("mode", "exp"))
            return ramp_plan(plan, test).plan
        except ConfigError as e:
            raise e.under(f"{self.where}: lr_find") from None

    @property
    def trajectory(self) -> Mapping[str, Any] | None:
        """The ``trajectory`` spec (family trajectory: parameters are compared, with torch as the oracle)."""
        t = self.doc.get("trajectory")
        return t if isinstance(t, Mapping) else None

    @property
    def where(self) -> str:
        return self.path or f"case {self.id}"

    @cached_property
    def metrics(self) -> Sequence[float] | None:
        """The plateau metric series (a float64 array), or None."""
        if self.series is not None:
            return cast("Sequence[float]", self.series)
        m = self.doc.get("metrics")
        if m is None:
            return None
        import numpy as np
        if isinstance(m, Mapping):
            from optbridge.expr import parse
            e = parse(m["expr"], path=f"{self.where}: metrics.expr", names=("k",))
            arr = np.asarray(e.evaluate({"k": np.arange(int(m["length"]))}), dtype=np.float64)
        else:
            arr = np.asarray(m, dtype=np.float64)
        return cast("Sequence[float]", arr)  # an array: indexable and sized like a sequence

    def steps_for(self, backend: str, *, budget: bool = True) -> tuple[int, Budget | None]:
        """Updates to run on ``backend`` and, when fewer than the case's, why.

        The case's ``steps_by_backend`` (with its ``steps_reason``) wins; else ``steps``
        within the backend's cap in ``budget.yaml`` (``budget=False``: no cap).
        """
        own = self.doc.get("steps_by_backend", {}).get(backend)
        if own is not None:
            n = int(own)
            why = " ".join(str(self.doc.get("steps_reason", "")).split())
            return n, (Budget(n, self.steps, "case", why) if n < self.steps else None)
        cap = budget_caps().get(backend) if budget else None
        if cap is None or cap[0] >= self.steps:
            return self.steps, None
        return cap[0], Budget(cap[0], self.steps, "budget.yaml", cap[1])

    def restriction(self, backend: str) -> str | None:
        """Why this case does not run on ``backend`` (None: it runs)."""
        b = self.doc.get("backends")
        if not b:
            return None
        if "only" in b:
            return None if backend in b["only"] else str(b["reason"])
        return b.get("skip", {}).get(backend)

    @property
    def pins(self) -> list[Mapping[str, Any]]:
        return list(self.doc.get("pins", ()))

    def tolerance_override(self, backend: str) -> Mapping[str, Any] | None:
        return self.doc.get("tolerance", {}).get(backend)


def validate_case_doc(doc: Any, path: str | None = None) -> list[str]:
    """Schema errors, then semantic errors (plan loads, steps fit the plan, id = file name)."""
    where = path or "<case>"
    errs = [f"{where}: {e}" for e in _schema.errors(doc)]
    if errs:
        return errs
    if path is not None and Path(path).stem != doc["id"]:
        errs.append(f"{where}: id {doc['id']!r} must equal the file name {Path(path).stem!r}")
    if "steps_by_backend" in doc and "steps_reason" not in doc:
        errs.append(f"{where}: steps_by_backend needs steps_reason")
    if "lr_find" in doc and "trajectory" in doc:
        errs.append(f"{where}: a case is an lr_find ramp or a trajectory, not both")
    case = Case(doc, path)
    try:
        plan = case.plan
        m = case.metrics
    except ConfigError as e:
        return errs + [str(e) if str(e).startswith(where) else f"{where}: {e}"]
    if plan.total_steps is not None:
        for b, n in [("*", case.steps), *doc.get("steps_by_backend", {}).items()]:
            if n > plan.total_steps:
                errs.append(f"{where}: steps ({b}) = {n} exceed the plan's total_steps {plan.total_steps}")
    if m is not None and not all(abs(float(x)) < float("inf") for x in m):
        errs.append(f"{where}: metrics must be finite")
    names = [g.name for g in plan.groups if g.frozen != "exclude"]
    for i, pin in enumerate(doc.get("pins", ())):
        if pin["step"] >= case.steps:
            errs.append(f"{where}: pins[{i}].step {pin['step']} is not below steps {case.steps}")
        if pin["group"] not in names:
            errs.append(f"{where}: pins[{i}].group {pin['group']!r} is not a traced group ({', '.join(names)})")
    if case.trajectory is not None:
        errs += [f"{where}: {e}" for e in trajectory_plan_errors(plan)]
    return errs


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def trajectory_plan_errors(plan: Plan) -> list[str]:
    """Why ``plan`` cannot be a trajectory plan (empty: it can): group names are identifiers, each
    group selects exactly its own ``<group>.w``, nothing is frozen."""
    from optbridge.params import ParamRecord, resolve
    errs: list[str] = []
    names = [g.name for g in plan.groups]
    for g in plan.groups:
        if not _IDENT.match(g.name):
            errs.append(f"trajectory: group name {g.name!r} must be an identifier (it names the parameter {g.name}.w)")
        if g.frozen is not None:
            errs.append(f"trajectory: group {g.name!r} is frozen ({g.frozen}); every group must train")
    if errs:
        return errs
    try:
        res = resolve(plan, [ParamRecord(f"{n}.w", (1,), "", i) for i, n in enumerate(names)])
    except ConfigError as e:
        return [f"trajectory: the groups must select <group>.w: {e}"]
    for rg in res.groups:
        if list(rg.params) != [f"{rg.name}.w"]:
            errs.append(f"trajectory: group {rg.name!r} must select exactly {rg.name}.w, it selects {list(rg.params)}")
    return errs


def is_case_doc(doc: object) -> bool:
    """Whether a document is meant as a case (it has ``plan``, or ``id`` and ``family``) rather than a plain config."""
    return isinstance(doc, Mapping) and ("plan" in doc or {"id", "family"} <= set(doc))


def load_case(path: str | Path) -> Case:
    """Load and validate one case file; raises ConfigError listing every problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), "no such case file", None, show_value=False)
    doc = _yaml_load(p)
    errs = validate_case_doc(doc, str(p))
    if errs:
        raise ConfigError("", "; ".join(errs), None, show_value=False)
    return Case(doc, str(p))


def _case_id(path: Path) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")
    return text if len(text) >= 2 else f"config-{text or 'x'}"


def config_case(path: str | Path, *, steps: int | None = None, metrics: Sequence[float] | None = None) -> Case:
    """A case made from a plain config file (canonical or any dialect, read by :func:`optbridge.load`).

    The case carries the plan in canonical form (plain data, so it crosses process
    boundaries), family ``user``, and the config's path and dialect as ``source``.

    Args:
        path: The config file (.yaml, .yml, .json or .toml).
        steps: Updates to run (default: the plan's ``total_steps``).
        metrics: The plateau metric series, when the plan has a plateau.

    Raises:
        ConfigError: the file does not load, or no ``steps`` is known.
    """
    import optbridge
    from optbridge.serialize import to_dict
    p = Path(path)
    try:
        plan = optbridge.load(p)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(str(p), msg if str(p) in msg else msg, None, show_value=False) from None
    if steps is None:
        if plan.total_steps is None:
            raise ConfigError("--steps", f"is required for {p} (the plan sets no total_steps)", None, show_value=False)
        steps = plan.total_steps
    doc: dict[str, Any] = {
        "id": _case_id(p), "family": "user",
        "description": " ".join((plan.description or f"the config {p}").split()) + f" (from {p})",
        "plan": to_dict(plan), "steps": int(steps), "source": {"path": str(p), "dialect": _dialect_of(p)}}
    import numpy as np
    series = None if metrics is None else np.asarray(metrics, dtype=np.float64).reshape(-1)
    if series is not None and not np.isfinite(series).all():
        raise ConfigError("--metrics", "must be finite numbers", None, show_value=False)
    errs = validate_case_doc(doc)
    if errs:
        raise ConfigError(str(p), "; ".join(e.removeprefix("<case>: ") for e in errs), None, show_value=False)
    return Case(doc, str(p), series)


def _dialect_of(p: Path) -> str:
    """The dialect a config file is written in (detected as :func:`optbridge.load` does)."""
    from optbridge.dialects import detect
    from optbridge.serialize import _format_of, _parse, _read
    try:
        return detect(_parse(_read(p), _format_of(p), str(p)))
    except ConfigError:
        return "optbridge"


_LOADED: dict[Path, tuple[Case, float]] = {}


def _load_cached(p: Path) -> Case:
    mtime = p.stat().st_mtime
    hit = _LOADED.get(p)
    if hit is None or hit[1] != mtime:
        hit = _LOADED[p] = (load_case(p), mtime)
    return hit[0]


def write_plan(case_id: str, path: str | Path, *, clips: Mapping[str, Any] | None = None, **top: Any) -> Path:
    """Case ``case_id``'s plan as a config file at ``path``, with top-level keys replaced by ``top`` (``optimizer``,
    ``total_steps``, ...; None leaves a key as it is) and group clips set by ``clips`` (group name -> clip): a
    variation of a case for tests and examples.
    """
    import copy

    import yaml
    plan = copy.deepcopy(dict(select_cases([case_id])[0].doc["plan"]))
    plan.update({k: v for k, v in top.items() if v is not None})
    for g in plan.get("groups", []):
        if clips and g["name"] in clips:
            g["clip"] = clips[g["name"]]
    out = Path(path)
    out.write_text(yaml.safe_dump(plan), encoding="utf-8")
    return out


def load_cases(directory: str | Path = CASES_DIR) -> list[Case]:
    """Every case in ``directory`` (``*.yaml``), sorted by id; ids must be unique.

    Files are parsed and validated once per process (again when they change).
    """
    cases = [_load_cached(p.resolve()) for p in sorted(Path(directory).glob("*.yaml"))]
    seen: dict[str, str] = {}
    for c in cases:
        if c.id in seen:
            raise ConfigError(c.where, f"duplicate case id {c.id!r} (also {seen[c.id]})", None, show_value=False)
        seen[c.id] = c.where
    return sorted(cases, key=lambda c: c.id)


def select_cases(patterns: Sequence[str], directory: str | Path = CASES_DIR, *, steps: int | None = None,
                 metrics: Sequence[float] | None = None) -> list[Case]:
    """Cases named by ``patterns``: ids, globs over ids (``cosine-*``), ``family:NAME``, case files or config files.

    A file is a case file when it holds a case document (``id``, ``family``, ``plan``,
    ``steps``); any other ``.yaml``/``.yml``/``.json``/``.toml`` file is a plain config
    (canonical or any dialect), run for ``steps`` updates with ``metrics``
    (:func:`config_case`). No pattern selects every case. A pattern that selects
    nothing is an error.
    """
    if not patterns:
        return load_cases(directory)
    out: dict[str, Case] = {}
    library: list[Case] | None = None
    for pat in patterns:
        p = Path(pat)
        if pat.lower().endswith((".yaml", ".yml", ".json", ".toml")) or p.is_file():
            doc = _yaml_load(p) if p.is_file() and p.suffix.lower() in (".yaml", ".yml") else None
            c = load_case(p) if is_case_doc(doc) else config_case(p, steps=steps, metrics=metrics)
            if c.id in out and out[c.id].path != c.path:
                raise ConfigError("CASES", f"{c.path} and {out[c.id].path} both make case {c.id!r}: rename one",
                                  None, show_value=False)
            out.setdefault(c.id, c)
            continue
        if library is None:
            library = load_cases(directory)
        if pat.startswith("family:"):
            hits = [c for c in library if c.family == pat[len("family:"):]]
        else:
            hits = [c for c in library if fnmatch.fnmatchcase(c.id, pat)]
        if not hits:
            import difflib
            close = difflib.get_close_matches(pat, [c.id for c in library], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError("CASES", f"{pat!r} matches no case{hint}; `optbridge conform --list` lists them",
                              None, show_value=False)
        for c in hits:
            out.setdefault(c.id, c)
    return list(out.values())


# --------------------------------------------------------------------------- expected deviations

@dataclass(frozen=True)
class Deviation:
    """One expected deviation of one backend (an entry of ``xfail/<backend>.yaml``)."""

    backend: str
    case: str
    expect: str
    reason: str
    group: str | None = None
    hyper: str | None = None
    issue: str | None = None
    kind: str = "framework"   # or "backend-bug": reported, listed until fixed
    source: str = ""

    def covers(self, group: str, hyper: str) -> bool:
        return (self.group is None or self.group == group) and (self.hyper is None or self.hyper == hyper)

    def label(self) -> str:
        where = "/".join(x for x in (self.group, self.hyper) if x)
        return f"{self.backend}:{self.case}" + (f" [{where}]" if where else "")


def load_deviations(paths: Iterable[str | Path] | None = None) -> dict[str, list[Deviation]]:
    """``backend -> [Deviation]`` from ``xfail/*.yaml`` (default) or the given files."""
    files = sorted(XFAIL_DIR.glob("*.yaml")) if paths is None else [Path(p) for p in paths]
    xs = _schema.load_schema("xfail.schema.json")
    out: dict[str, list[Deviation]] = {}
    for f in files:
        if not f.is_file():
            raise ConfigError(str(f), "no such expected-deviation file", None, show_value=False)
        doc = _yaml_load(f)
        errs = _schema.errors(doc, xs)
        if errs:
            raise ConfigError(str(f), "; ".join(errs), None, show_value=False)
        for e in doc["deviations"]:
            d = Deviation(backend=doc["backend"], source=str(f), **e)
            for other in out.get(d.backend, []):
                if (other.case, other.group, other.hyper) == (d.case, d.group, d.hyper):
                    raise ConfigError(str(f), f"duplicate expected deviation {d.label()} (also in {other.source})",
                                      None, show_value=False)
            out.setdefault(d.backend, []).append(d)
    return out


# --------------------------------------------------------------------------- coverage (computed from the data)

#: Features the issue asks the cases to cover, each computed from a case's plan and steps.
FEATURES: dict[str, str] = {
    "sequence": "a sequence (SequentialLR-style composition)",
    "chain": "a chain (stacked / ChainedScheduler-style product)",
    "nested": "a combinator inside a combinator",
    "per-group-schedule": "a different schedule per group",
    "iter-clock": "a node on the iteration clock",
    "epoch-clock": "a node on the epoch clock",
    "mixed-clock": "iteration and epoch nodes in one schedule",
    "warmup-from-0": "a linear warmup that starts at 0",
    "restarts": "warm restarts (cosine_restarts, polynomial cycle)",
    "momentum-cycling": "cyclic / one_cycle on momentum",
    "beta-cycling": "cyclic / one_cycle on beta1",
    "plateau-metrics": "a plateau driven by a metric series",
    "weight-decay-schedule": "a schedule on weight_decay",
    "frozen-group": "a frozen group (exclude or zero_lr)",
    "several-optimizers": "more than one optimizer in one plan",
    "three-groups-different-bases": "three or more groups with different base lrs",
    "long-horizon": "at least 1e6 steps",
    "edge-lr-1e-8": "a base lr of 1e-8 or less",
    "edge-gamma-1": "a decay with gamma 1",
    "edge-t-max-1": "a cosine with steps (T_max) 1",
    "edge-milestone-0": "a milestone or boundary at 0",
    "dialect-torch": "a plan written in the torch dialect",
    "dialect-mindspore": "a plan written in the MindSpore dialect",
}


def features(case: Case) -> set[str]:
    """The :data:`FEATURES` and node kinds (``kind:<name>``) a case exercises, read from its plan."""
    from optbridge import ir
    from optbridge.plan import hyper_base, scheduled_hypers
    plan = case.plan
    out: set[str] = set()
    dialect = case.dialect
    if dialect != "optbridge":
        out.add(f"dialect-{dialect}")
    roots: list[tuple[str, ir.Node]] = [(h, n) for h, n in plan.schedule.items()]
    roots += [(h, n) for g in plan.groups for h, n in g.schedule.items()]
    if any(g.schedule for g in plan.groups):
        out.add("per-group-schedule")

    def visit(node: ir.Node, unit: str, depth_comb: int, units: set[str], hyper: str) -> None:
        u = node.unit or unit
        out.add(f"kind:{node.kind}")
        units.add(u)
        if isinstance(node, (ir.Sequence, ir.Chain)):
            out.add(node.kind)
            if depth_comb:
                out.add("nested")
            if isinstance(node, ir.Sequence) and 0 in node.boundaries:
                out.add("edge-milestone-0")
            for child in node.children:
                visit(child, u, depth_comb + 1, units, hyper)
            return
        if isinstance(node, ir.Linear) and node.start_factor == 0.0 and node.end_factor > 0.0:
            out.add("warmup-from-0")
        if isinstance(node, (ir.CosineRestarts,)) or (isinstance(node, ir.Polynomial) and node.cycle):
            out.add("restarts")
        if isinstance(node, (ir.Cyclic, ir.OneCycle)) and hyper == "momentum":
            out.add("momentum-cycling")
        if isinstance(node, (ir.Cyclic, ir.OneCycle)) and hyper == "beta1":
            out.add("beta-cycling")
        if isinstance(node, ir.Plateau) and case.metrics is not None:
            out.add("plateau-metrics")
        if isinstance(node, (ir.Exponential, ir.MultiStep)) and node.gamma == 1.0:
            out.add("edge-gamma-1")
        if isinstance(node, ir.Cosine) and node.steps == 1:
            out.add("edge-t-max-1")
        if isinstance(node, ir.MultiStep) and 0 in node.milestones:
            out.add("edge-milestone-0")

    for hyper, node in roots:
        units: set[str] = set()
        visit(node, plan.step_unit, 0, units, hyper)
        out |= {f"{u}-clock" for u in units}
        if len(units) > 1:
            out.add("mixed-clock")
        if hyper == "weight_decay":
            out.add("weight-decay-schedule")
    if any(g.frozen for g in plan.groups):
        out.add("frozen-group")
    if len(plan.optimizers) > 1:
        out.add("several-optimizers")
    bases = {hyper_base(plan, g, "lr") for g in plan.groups if g.frozen is None}
    if len(bases) >= 3:
        out.add("three-groups-different-bases")
    if any(0.0 < b <= 1e-8 for b in bases):
        out.add("edge-lr-1e-8")
    if max([case.steps, *case.doc.get("steps_by_backend", {}).values()]) >= 10**6:
        out.add("long-horizon")
    out |= {f"optimizer:{o.type}" for o in plan.optimizers}
    out |= {f"hyper:{h}" for h in scheduled_hypers(plan)}
    return out
