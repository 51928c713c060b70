"""Parameter-name maps between frameworks (torch <-> MindSpore <-> MegEngine), and plans moved through them.

The same model has different parameter names and shapes in each framework:
MindSpore calls a BatchNorm's ``weight``/``bias`` ``gamma``/``beta`` and an
Embedding's ``weight`` ``embedding_table``; MegEngine stores BatchNorm and conv
biases as ``(1, C, 1, 1)``. :func:`map_names` pairs every parameter of a source
model with one of a target model, over :class:`~optbridge.params.ParamRecord` s
(no framework is imported), and says which rule paired each one.
:func:`map_plan` rewrites a plan's selectors so that it resolves on the target
model to the same groups.

Matching, in this order (each pass sees only what the earlier ones left):

1. **overrides**: a dict ``source name -> target name``, a function
   ``source name -> target name | None`` or :class:`NameRules` (the config's
   ``names:`` section: exact ``map`` entries, then regex ``rules``). The name an
   override gives is a target name, or a name the structural rules then finish
   (a rule may rename a module path and leave the leaf to the layer rules).
2. **structure**: module path + leaf, the leaf read through the owning layer's
   rule (:data:`LAYER_RULES`: ``gamma`` is BatchNorm's ``weight``); the shapes
   must agree up to the layer's known reshapes.
3. **structural aliases**: module paths a framework spells differently
   (MindSpore's BatchNorm3d keeps its parameters in an inner ``bn2d``; its
   TransformerEncoderLayer calls torch's ``linear1`` ``dense1``), and leaf
   aliases for parameters whose module type is unknown.
4. **container order**: parameters left over in the same container
   (``features.3`` against ``features.2``, paths equal but for numeric
   indices) pair in index order, only when both sides have the same number of
   such modules with the same parameters and shapes, position by position.

Whatever is left is an error (:class:`NameMapError`) listing the parameters
of both sides, ambiguous matches and shape conflicts, with suggested rules.
Parameters that are not trained (``requires_grad=False``: MindSpore's
``moving_mean``, buffers, frozen weights) may stay unpaired; they are listed in
:attr:`NameMap.unpaired_source` / :attr:`NameMap.unpaired_target`.
See docs/names.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .configio import expect_list, expect_mapping
from .describe_groups import RecordIndex, exact_selectors, glob_escape, selector_text
from .errors import ConfigError
from .ir import FrozenMap
from .params import ParamRecord, resolve
from .plan import Plan, Selector
from .serialize import _FORMATS, _parse

__all__ = ["LayerRule", "LAYER_RULES", "LEAF_ALIASES", "RenameRule", "NameRules", "NamePair", "NameMap",
           "NameMapError", "GroupMap", "PlanMap", "Overrides", "map_names", "map_plan", "name_rules_from_config",
           "load_name_rules"]

Shape = tuple[int, ...]


# --------------------------------------------------------------------------- layer rules

@dataclass(frozen=True)
class LayerRule:
    """How one kind of layer names and shapes its parameters in torch, MindSpore and MegEngine.

    Leaves are named in torch's words (the *role*); every other framework's
    spelling is listed as an alias. Measured in torch 2.13, MindSpore 2.10 and
    MegEngine 1.13 (docs/names.md has the table).

    Attributes:
        family: Label used in reports (``"BatchNorm"``).
        types: Module type names, of every framework, that own these parameters.
        leaves: ``torch leaf -> other frameworks' leaves`` (``weight -> ("gamma",)``).
        squeeze: torch leaves that MegEngine stores as ``(1, C, 1, ...)`` instead of ``(C,)``.
        wrappers: Inner modules a framework inserts between the layer and its
            parameters (MindSpore's ``BatchNorm3d`` keeps them in ``bn2d``).
        components: ``other framework's attribute -> torch's`` for sub-layers the
            twin layers name differently (MindSpore ``dense1`` = torch ``linear1``).
        conv: Convolution weights: MegEngine's grouped ``(G, O/G, I/G, k...)`` and
            MindSpore's 1-D ``(O, I, 1, k)`` are torch's ``(O, I/G, k...)``.
    """

    family: str
    types: frozenset[str]
    leaves: FrozenMap = field(default_factory=FrozenMap)
    squeeze: frozenset[str] = frozenset()
    wrappers: tuple[str, ...] = ()
    components: FrozenMap = field(default_factory=FrozenMap)
    conv: bool = False

    def role(self, leaf: str) -> str:
        """The torch leaf that ``leaf`` (any framework's spelling) stands for."""
        for role, aliases in self.leaves.items():
            if leaf == role or leaf in aliases:
                return str(role)
        return leaf

    def shapes(self, role: str, module_type: str, shape: Shape) -> dict[Shape, str]:
        """``torch-convention shape -> reshape that gives it`` (``""`` for none) for a parameter's ``shape``."""
        out = {shape: ""}
        if role in self.squeeze and len(shape) >= 2 and shape[0] == 1 and all(d == 1 for d in shape[2:]):
            out.setdefault((shape[1],), f"MegEngine {_dims(shape)}")
        if self.conv and role == "weight":
            m = re.search(r"(\d)[dD]", module_type)
            dims = int(m.group(1)) if m else None
            if dims is not None and len(shape) == dims + 3:
                out.setdefault((shape[0] * shape[1],) + shape[2:], "MegEngine group axis (G, O/G, I/G, k...)")
                if dims == 1 and shape[2] == 1:
                    out.setdefault((shape[0], shape[1], shape[3]), "MindSpore 1-D conv (O, I, 1, k)")
        return out


def _dims(shape: Shape) -> str:
    return "(" + ", ".join("1" if d == 1 and i != 1 else "C" for i, d in enumerate(shape)) + ")"


_AFFINE = {"weight": ("gamma",), "bias": ("beta",)}
_STATS = {"running_mean": ("moving_mean",), "running_var": ("moving_variance",)}

#: The automatic rules (module type names of all three frameworks; docs/names.md shows the measured table).
LAYER_RULES: tuple[LayerRule, ...] = (
    LayerRule("BatchNorm", frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"}),
              FrozenMap({**_AFFINE, **_STATS}), squeeze=frozenset({"weight", "bias", "running_mean", "running_var"}),
              wrappers=("bn2d",)),
    LayerRule("InstanceNorm", frozenset({"InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "InstanceNorm"}),
              FrozenMap({**_AFFINE, **_STATS})),
    LayerRule("LayerNorm", frozenset({"LayerNorm"}), FrozenMap(_AFFINE)),
    LayerRule("GroupNorm", frozenset({"GroupNorm"}), FrozenMap(_AFFINE)),
    LayerRule("Linear", frozenset({"Linear", "Dense", "NonDynamicallyQuantizableLinear"}),
              components=FrozenMap({"dense1": "linear1", "dense2": "linear2"})),
    LayerRule("Conv", frozenset({"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                                 "Conv1dTranspose", "Conv2dTranspose", "Conv3dTranspose"}),
              squeeze=frozenset({"bias"}), conv=True),
    LayerRule("Embedding", frozenset({"Embedding"}), FrozenMap({"weight": ("embedding_table",)})),
    LayerRule("PReLU", frozenset({"PReLU"}), FrozenMap({"weight": ("w",)}), squeeze=frozenset({"weight"})),
    LayerRule("MultiheadAttention", frozenset({"MultiheadAttention"})),
    LayerRule("RNN", frozenset({"LSTM", "GRU", "RNN"})),
)

_RULE_OF_TYPE = {t: r for r in LAYER_RULES for t in r.types}

#: Leaf aliases tried (structural-alias pass) for parameters whose module type has no rule.
LEAF_ALIASES = FrozenMap({"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                          "moving_variance": "running_var", "embedding_table": "weight"})


# --------------------------------------------------------------------------- overrides and the names: section

@dataclass(frozen=True)
class RenameRule:
    """One regex rename: a source name that ``match`` fully matches becomes ``match``'s expansion of ``to``.

    Attributes:
        match: A regular expression, matched with ``re.fullmatch`` against source names.
        to: The target name, with ``\\1`` / ``\\g<name>`` group references.
    """

    match: str
    to: str
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("match", "to"):
            v = getattr(self, key)
            if not isinstance(v, str) or not v:
                raise ConfigError(key, "must be a non-empty string", v)
        try:
            pattern = re.compile(self.match)
        except re.error as e:
            raise ConfigError("match", f"must be a valid regular expression ({e})", self.match) from None
        try:
            pattern.sub(self.to, "")  # parses the template: unknown group references fail here
        except (re.error, IndexError) as e:
            raise ConfigError("to", f"must be a valid replacement for match ({e})", self.to) from None
        object.__setattr__(self, "pattern", pattern)


@dataclass(frozen=True)
class NameRules:
    """User overrides for :func:`map_names`: the ``names:`` section of a config.

    Attributes:
        map: Exact ``source name -> target name`` pairs (checked first).
        rules: Regex renames, first full match wins.
    """

    map: FrozenMap = field(default_factory=FrozenMap)
    rules: tuple[RenameRule, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.map, Mapping):
            raise ConfigError("map", "must map source parameter names to target names", self.map)
        for k, v in self.map.items():
            if not isinstance(k, str) or not k:
                raise ConfigError("map", "keys must be parameter names (non-empty strings)", k)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"map[{k!r}]", "must be a target parameter name (a non-empty string)", v)
        object.__setattr__(self, "map", FrozenMap(self.map))
        rules = tuple(self.rules)
        for i, r in enumerate(rules):
            if not isinstance(r, RenameRule):
                raise ConfigError(f"rules[{i}]", "must be a RenameRule", r)
        object.__setattr__(self, "rules", rules)

    def rename(self, name: str) -> tuple[str, str] | None:
        """``(target name, which entry gave it)`` for ``name``, or None when no entry applies."""
        if name in self.map:
            return str(self.map[name]), f"names.map[{name!r}]"
        for i, r in enumerate(self.rules):
            m = r.pattern.fullmatch(name)
            if m:
                return m.expand(r.to), f"names.rules[{i}]"
        return None

    def to_config(self) -> dict[str, Any]:
        """The ``names:`` section (inverse of :func:`name_rules_from_config`)."""
        out: dict[str, Any] = {}
        if self.rules:
            out["rules"] = [{"match": r.match, "to": r.to} for r in self.rules]
        if self.map:
            out["map"] = dict(self.map)
        return out


def name_rules_from_config(value: object, path: str = "names") -> NameRules:
    """:class:`NameRules` from a config's ``names:`` section.

    Accepted forms: ``{rules: [{match: REGEX, to: NAME}, ...], map: {SOURCE: TARGET}}``
    (both keys optional), or just the list of rules.

    Raises:
        ConfigError: naming the path (``names.rules[1].match: must be a valid
            regular expression (...), got '(('``).
    """
    if isinstance(value, (list, tuple)):
        value = {"rules": list(value)}
    d = expect_mapping(path, value)
    for k in d:
        if k not in ("rules", "map"):
            raise ConfigError(f"{path}.{k}", "is not a names field (fields: map, rules)", d[k])
    rules = []
    for i, r in enumerate(expect_list(f"{path}.rules", d.get("rules", []), "a list of {match, to} rules")):
        p = f"{path}.rules[{i}]"
        r = expect_mapping(p, r)
        for k in r:
            if k not in ("match", "to"):
                raise ConfigError(f"{p}.{k}", "is not a rule field (fields: match, to)", r[k])
        for k in ("match", "to"):
            if k not in r:
                raise ConfigError(f"{p}.{k}", "is required", None, show_value=False)
        try:
            rules.append(RenameRule(r["match"], r["to"]))
        except ConfigError as e:
            raise e.under(p) from None
    m = expect_mapping(f"{path}.map", d.get("map", {}))
    try:
        return NameRules(map=FrozenMap(m), rules=tuple(rules))
    except ConfigError as e:
        raise e.under(path) from None


def load_name_rules(src: str | os.PathLike[str] | Mapping[str, Any]) -> NameRules:
    """:class:`NameRules` from a file (JSON, YAML, TOML), a document string or a dict.

    The document is either the section itself or holds it under ``names``
    (a plan file with a ``names:`` section). Loading never executes code.
    """
    if isinstance(src, Mapping):
        doc: Any = src
    elif isinstance(src, os.PathLike) or (isinstance(src, str) and "\n" not in src
                                          and os.path.splitext(src)[1].lower() in _FORMATS):
        p = os.fspath(src)
        if not os.path.isfile(p):
            raise ConfigError("", f"names file {p!r} does not exist", p, show_value=False)
        with open(p, encoding="utf-8") as f:
            doc = _parse(f.read(), _FORMATS[os.path.splitext(p)[1].lower()], p)
    elif isinstance(src, str):
        doc = _parse(src, "json" if src.lstrip().startswith("{") else "yaml", "<string>")
    else:
        raise ConfigError("", "load_name_rules() takes a path, a document string or a dict", type(src).__name__)
    if isinstance(doc, Mapping) and "names" in doc:
        return name_rules_from_config(doc["names"], "names")
    return name_rules_from_config(doc, "names")


Overrides = Mapping[str, str] | Callable[[str], str | None] | NameRules | None
"""What :func:`map_names` accepts as user overrides."""


def _renamer(overrides: Overrides) -> Callable[[str], tuple[str, str] | None]:
    if overrides is None:
        return lambda name: None
    if isinstance(overrides, NameRules):
        return overrides.rename
    if isinstance(overrides, Mapping):
        try:
            return NameRules(map=FrozenMap(overrides)).rename
        except ConfigError as e:
            raise e.under("names") from None
    if callable(overrides):
        fn = overrides

        def call(name: str) -> tuple[str, str] | None:
            v = fn(name)
            if v is None:
                return None
            if not isinstance(v, str) or not v:
                raise ConfigError("names", f"the rename function must return a parameter name or None (for {name!r})",
                                  v)
            return v, "function"
        return call
    raise ConfigError("names", "must be a dict source -> target name, a function, NameRules or a NameMap",
                      type(overrides).__name__)


# --------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class NamePair:
    """One source parameter and its target twin.

    Attributes:
        source: Source name.
        target: Target name.
        rule: What paired them (``same name``, ``BatchNorm: weight -> gamma``,
            ``names.rules[0]``, ``container order``, ...).
        source_shape: Its shape in the source framework.
        target_shape: Its shape in the target framework.
        reshape: The known reshape between the two (``""`` when the shapes are equal).
    """

    source: str
    target: str
    rule: str
    source_shape: Shape = ()
    target_shape: Shape = ()
    reshape: str = ""


@dataclass(frozen=True)
class NameMap(Mapping[str, str]):
    """A complete source -> target parameter-name correspondence (a ``Mapping``), with how each pair was made.

    Attributes:
        pairs: One :class:`NamePair` per paired parameter, in source order.
        unpaired_source: Source parameters without a twin (never trained ones, or tied aliases).
        unpaired_target: Target parameters without a twin (the same kinds).
        frameworks: Labels of the two sides, for reports (``("torch", "mindspore")``).
    """

    pairs: tuple[NamePair, ...]
    unpaired_source: tuple[str, ...] = ()
    unpaired_target: tuple[str, ...] = ()
    frameworks: tuple[str, str] = ("source", "target")
    _fwd: dict[str, str] = field(init=False, repr=False, compare=False)
    _bwd: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fwd = {p.source: p.target for p in self.pairs}
        bwd = {p.target: p.source for p in self.pairs}
        if len(fwd) != len(self.pairs) or len(bwd) != len(self.pairs):
            raise ConfigError("names", "a name map must pair each parameter once on each side",
                              [p.source for p in self.pairs])
        object.__setattr__(self, "_fwd", fwd)
        object.__setattr__(self, "_bwd", bwd)

    def __getitem__(self, source: str) -> str:
        return self._fwd[source]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fwd)

    def __len__(self) -> int:
        return len(self._fwd)

    def source_of(self, target: str) -> str | None:
        """The source name paired with ``target`` (None if it has no twin)."""
        return self._bwd.get(target)

    def inverse(self) -> NameMap:
        """The same correspondence read target -> source."""
        return NameMap(tuple(NamePair(p.target, p.source, p.rule, p.target_shape, p.source_shape, p.reshape)
                             for p in self.pairs), self.unpaired_target, self.unpaired_source,
                       (self.frameworks[1], self.frameworks[0]))

    def renames(self) -> tuple[NamePair, ...]:
        """Pairs whose names or shapes differ."""
        return tuple(p for p in self.pairs if p.source != p.target or p.source_shape != p.target_shape)

    def by_rule(self) -> dict[str, int]:
        """``rule -> number of pairs`` (rules in order of first use)."""
        out: dict[str, int] = {}
        for p in self.pairs:
            out[p.rule] = out.get(p.rule, 0) + 1
        return out

    def table(self, *, renames_only: bool = True) -> str:
        """The pairs as a text table (only renames and reshapes unless ``renames_only=False``)."""
        a, b = self.frameworks
        rows = [(p.source, p.target, p.rule, _shape_text(p)) for p in (self.renames() if renames_only else self.pairs)]
        return _table((f"{a} name", f"{b} name", "rule", "shape"), rows)

    def __str__(self) -> str:
        a, b = self.frameworks
        head = (f"{len(self.pairs)} parameters paired {a} -> {b}, {len(self.renames())} renamed or reshaped: "
                + ", ".join(f"{n} by {r}" for r, n in self.by_rule().items()))
        lines = [head, self.table()]
        for side, names in ((a, self.unpaired_source), (b, self.unpaired_target)):
            if names:
                lines.append(f"unpaired in {side} (not trained or tied): " + ", ".join(names))
        return "\n".join(lines)


def _shape_text(p: NamePair) -> str:
    if p.source_shape == p.target_shape:
        return str(p.source_shape)
    return f"{p.source_shape} -> {p.target_shape} ({p.reshape})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


class NameMapError(ConfigError):
    """The two models cannot be paired completely; the message lists every problem.

    Attributes:
        only_source: Trained source parameters without a twin.
        only_target: Trained target parameters without a twin.
        ambiguous: ``(what, candidates)``: parameters that could pair several ways.
        shape_conflicts: ``(source, target, why)``: structural twins whose shapes disagree.
        suggestions: Rename rules that would pair leftover modules with the same parameters and shapes.
    """

    def __init__(self, frameworks: tuple[str, str], only_source: Sequence[str], only_target: Sequence[str],
                 ambiguous: Sequence[tuple[str, tuple[str, ...]]], shape_conflicts: Sequence[tuple[str, str, str]],
                 problems: Sequence[str], suggestions: Sequence[str], describe: Mapping[str, str]) -> None:
        self.only_source, self.only_target = tuple(only_source), tuple(only_target)
        self.ambiguous, self.shape_conflicts = tuple(ambiguous), tuple(shape_conflicts)
        self.suggestions, self.problems = tuple(suggestions), tuple(problems)
        a, b = frameworks
        n = len(only_source) + len(only_target) + len(ambiguous) + len(shape_conflicts) + len(problems)
        lines = [f"cannot pair every parameter of {a} with {b} ({n} problems; give overrides: a dict, "
                 "a function or names rules, docs/names.md)"]
        lines += [f"  {x}" for x in problems]
        for side, names in ((a, only_source), (b, only_target)):
            if names:
                lines.append(f"  only in {side} ({len(names)}): " + _listing([describe.get(x, x) for x in names]))
        for what, cands in ambiguous:
            lines.append(f"  ambiguous: {what} could pair with any of " + ", ".join(cands))
        for s, t, why in shape_conflicts:
            lines.append(f"  shapes differ: {a} {s} vs {b} {t}: {why}")
        for s in suggestions:
            lines.append(f"  suggested rule: {s}")
        super().__init__("names", "\n".join(lines), show_value=False)


def _listing(items: Sequence[str], limit: int = 24) -> str:
    shown = list(items[:limit])
    if len(items) > limit:
        shown.append(f"... and {len(items) - limit} more")
    return "; ".join(shown)


# --------------------------------------------------------------------------- matching

@dataclass(frozen=True)
class _Entry:
    """A record read through its layer rule."""

    i: int
    rec: ParamRecord
    path: str
    leaf: str
    rule: LayerRule | None
    role: str
    shapes: Mapping[Shape, str]

    @property
    def key(self) -> tuple[str, str]:
        return self.path, self.role

    @property
    def alias_key(self) -> tuple[tuple[str, str], str]:
        """Path and role in torch's spelling: wrappers dropped, sub-layer names and unknown leaves aliased."""
        parts = self.path.split(".") if self.path else []
        why = []
        role = self.role
        if self.rule is not None:
            if parts and parts[-1] in self.rule.wrappers:
                why.append(f"{self.rule.family} wrapper {parts[-1]!r}")
                parts = parts[:-1]
            if parts and parts[-1] in self.rule.components:
                why.append(f"{self.rule.family} {parts[-1]!r} = {self.rule.components[parts[-1]]!r}")
                parts = parts[:-1] + [str(self.rule.components[parts[-1]])]
        elif self.leaf in LEAF_ALIASES:
            role = str(LEAF_ALIASES[self.leaf])
            why.append(f"leaf {self.leaf!r} = {role!r} (module type unknown)")
        return (".".join(parts), role), "; ".join(why)

    def describe(self) -> str:
        return f"{self.rec.name} {self.rec.shape} {self.rec.module_type or '?'}"


def _entry(i: int, r: ParamRecord, name: str | None = None) -> _Entry:
    name = r.name if name is None else name
    path, _, leaf = name.rpartition(".")
    rule = _RULE_OF_TYPE.get(r.module_type)
    role = rule.role(leaf) if rule else leaf
    shapes = rule.shapes(role, r.module_type, tuple(r.shape)) if rule else {tuple(r.shape): ""}
    return _Entry(i, r, path, leaf, rule, role, shapes)


def _common_shape(a: _Entry, b: _Entry) -> tuple[bool, str]:
    """Whether the shapes agree up to known reshapes, and which reshape."""
    for shape, why_a in a.shapes.items():
        if shape in b.shapes:
            why = "; ".join(x for x in (why_a, b.shapes[shape]) if x)
            return True, why
    return False, ""


def _skeleton(path: str) -> tuple[str, tuple[int, ...]]:
    """``("blocks.#.mlp.#", (3, 0))`` for ``blocks.3.mlp.0``: the path with its numeric indices taken out."""
    parts = path.split(".")
    return (".".join("#" if p.isdigit() else p for p in parts), tuple(int(p) for p in parts if p.isdigit()))


def _leaf_rule(s: _Entry, t: _Entry) -> str:
    if s.rec.name == t.rec.name:
        return "same name"
    if s.path == t.path and s.leaf != t.leaf:
        rule = s.rule or t.rule
        return f"{rule.family if rule else 'leaf'}: {s.leaf} -> {t.leaf}"
    return "structure"


class _Matcher:
    """The passes of :func:`map_names` over two lists of records."""

    def __init__(self, source: Sequence[ParamRecord], target: Sequence[ParamRecord], frameworks: tuple[str, str]):
        self.frameworks = frameworks
        self.src = [_entry(i, r) for i, r in enumerate(source)]
        self.tgt = [_entry(i, r) for i, r in enumerate(target)]
        for side, entries in ((frameworks[0], self.src), (frameworks[1], self.tgt)):
            seen: dict[str, int] = {}
            for e in entries:
                if e.rec.name in seen:
                    raise ConfigError(f"names.{side}", "lists a parameter name twice", e.rec.name)
                seen[e.rec.name] = e.i
        self.src_left = {e.i: e for e in self.src}
        self.tgt_left = {e.i: e for e in self.tgt}
        self.tgt_by_name = {e.rec.name: e for e in self.tgt}
        self.pairs: dict[int, tuple[int, str, str]] = {}  # source index -> (target index, rule, reshape)
        self.ambiguous: list[tuple[str, tuple[str, ...]]] = []
        self.shape_conflicts: list[tuple[str, str, str]] = []
        self.problems: list[str] = []

    def pair(self, s: _Entry, t: _Entry, rule: str) -> None:
        ok, why = _common_shape(s, t)
        del self.src_left[s.i]
        del self.tgt_left[t.i]
        if not ok:
            self.shape_conflicts.append((s.describe(), t.describe(),
                                         f"paired by {rule}; no known reshape relates them"))
            return
        self.pairs[s.i] = (t.i, rule, why)

    def overrides(self, renamer: Callable[[str], tuple[str, str] | None]) -> None:
        claimed: dict[int, str] = {}
        by_key: dict[Hashable, list[_Entry]] = {}
        by_alias: dict[Hashable, list[_Entry]] = {}
        for e in self.tgt:
            by_key.setdefault(e.key, []).append(e)
            by_alias.setdefault(e.alias_key[0], []).append(e)
        for s in self.src:
            hit = renamer(s.rec.name)
            if hit is None:
                continue
            new, label = hit
            t = self.tgt_by_name.get(new)
            rule = label
            if t is None:
                renamed = _entry(s.i, s.rec, new)
                cands = by_key.get(renamed.key) or by_alias.get(renamed.alias_key[0], [])
                if len(cands) > 1:
                    self.ambiguous.append((f"{label} gives {new!r} for {s.rec.name}", tuple(e.rec.name for e in cands)))
                    del self.src_left[s.i]
                    continue
                if not cands:
                    self.problems.append(f"{label} renames {s.rec.name!r} to {new!r}, which names no "
                                         f"{self.frameworks[1]} parameter")
                    del self.src_left[s.i]
                    continue
                t = cands[0]
                rule = f"{label} + {_leaf_rule(renamed, t)}" if renamed.leaf != t.leaf else label
            if t.i in claimed:
                self.ambiguous.append((f"{self.frameworks[1]} {t.rec.name}",
                                       (f"{claimed[t.i]} (by override)", f"{s.rec.name} ({label})")))
                del self.src_left[s.i]
                continue
            claimed[t.i] = s.rec.name
            self.pair(s, t, rule)

    def renumbered(self) -> set[str]:
        """Container skeletons (``backbone.#.conv1``) whose index sets differ between the sides.

        Equal paths there may name different layers (torch numbers a ReLU in a
        Sequential, a twin without it does not), so only the order pass pairs them.
        """
        idx: list[dict[str, set[tuple[int, ...]]]] = [{}, {}]
        for side, left in enumerate((self.src_left, self.tgt_left)):
            for e in left.values():
                skel, ix = _skeleton(e.alias_key[0][0])
                if ix:
                    idx[side].setdefault(skel, set()).add(ix)
        return {k for k in set(idx[0]) | set(idx[1]) if idx[0].get(k) != idx[1].get(k)}

    def by_key(self, alias: bool) -> None:
        renumbered = self.renumbered()

        def keyed(left: Mapping[int, _Entry]) -> dict[Hashable, list[_Entry]]:
            out: dict[Hashable, list[_Entry]] = {}
            for e in left.values():
                if _skeleton(e.alias_key[0][0])[0] not in renumbered:
                    out.setdefault(e.alias_key[0] if alias else e.key, []).append(e)
            return out
        src, tgt = keyed(self.src_left), keyed(self.tgt_left)
        for k, ss in src.items():
            ts = tgt.get(k, [])
            if not ts:
                continue
            if len(ss) > 1 or len(ts) > 1:
                for s in ss:
                    self.ambiguous.append((f"{self.frameworks[0]} {s.rec.name}", tuple(t.rec.name for t in ts)))
                    del self.src_left[s.i]
                for t in ts:
                    del self.tgt_left[t.i]
                continue
            s, t = ss[0], ts[0]
            if alias:
                why = "; ".join(x for x in (s.alias_key[1], t.alias_key[1]) if x)
                rule = why + (f"; {_leaf_rule(replace(s, path=t.path), t)}" if s.leaf != t.leaf else "")
            else:
                rule = _leaf_rule(s, t)
            self.pair(s, t, rule)

    def by_order(self) -> None:
        """Pair leftover modules whose paths differ only in numeric indices, in index order, when they line up."""
        def modules(left: Mapping[int, _Entry]) -> dict[str, dict[str, list[_Entry]]]:
            out: dict[str, dict[str, list[_Entry]]] = {}
            for e in left.values():
                path = e.alias_key[0][0]
                skel, ix = _skeleton(path)
                if ix:
                    out.setdefault(skel, {}).setdefault(path, []).append(e)
            return out
        src, tgt = modules(self.src_left), modules(self.tgt_left)
        for skel, smods in src.items():
            tmods = tgt.get(skel)
            if not tmods or len(tmods) != len(smods):
                continue
            spaths = sorted(smods, key=lambda p: _skeleton(p)[1])
            tpaths = sorted(tmods, key=lambda p: _skeleton(p)[1])
            plan: list[tuple[_Entry, _Entry]] = []
            for sp, tp in zip(spaths, tpaths):
                ss = {e.alias_key[0][1]: e for e in smods[sp]}
                ts = {e.alias_key[0][1]: e for e in tmods[tp]}
                both = [r for r in ss if r in ts]
                trained = lambda m: sorted(r for r, e in m.items() if e.rec.requires_grad)  # noqa: E731
                if trained(ss) != trained(ts) or len(ss) != len(smods[sp]) or len(ts) != len(tmods[tp]) \
                        or not all(_common_shape(ss[r], ts[r])[0] for r in both):
                    plan = []
                    break
                plan += [(ss[r], ts[r]) for r in both]
            for s, t in plan:
                sp, tp = s.alias_key[0][0], t.alias_key[0][0]
                self.pair(s, t, f"container order ({sp} -> {tp})" if sp != tp else "container order")

    def suggestions(self, only_s: list[_Entry], only_t: list[_Entry]) -> list[str]:
        """Rename rules for leftover modules that have exactly one leftover twin (same roles, compatible shapes)."""
        def modules(entries: list[_Entry]) -> dict[str, dict[str, _Entry]]:
            out: dict[str, dict[str, _Entry]] = {}
            for e in entries:
                out.setdefault(e.alias_key[0][0], {})[e.alias_key[0][1]] = e
            return out
        ms, mt = modules(only_s), modules(only_t)
        if len(ms) * len(mt) > 10_000:
            return []

        def fits(a: dict[str, _Entry], b: dict[str, _Entry]) -> bool:
            return sorted(a) == sorted(b) and all(_common_shape(a[r], b[r])[0] for r in a)
        out = []
        for sp, sm in ms.items():
            cands = [tp for tp, tm in mt.items() if fits(sm, tm)]
            if len(cands) == 1 and sp and cands[0] != sp and [p for p, m in ms.items() if fits(m,
                                                                                               mt[cands[0]])] == [sp]:
                src_path = next(iter(sm.values())).path
                tgt_path = next(iter(mt[cands[0]].values())).path
                out.append("{match: '" + re.escape(src_path) + r"\.(.*)', to: '" + tgt_path.replace("\\", "\\\\")
                           + r".\1'}" + " (the only leftover modules with these parameters and shapes)")
        return out

    def result(self, source: Sequence[ParamRecord], target: Sequence[ParamRecord]) -> NameMap:
        paired_keys_s = {self.src[i].rec.key for i in self.pairs}
        paired_keys_t = {self.tgt[t].rec.key for t, _, _ in self.pairs.values()}

        def excused(e: _Entry, paired: set[Hashable]) -> bool:
            return not e.rec.requires_grad or e.rec.key in paired  # never trained, or a tied alias
        only_s = [e for e in self.src_left.values() if not excused(e, paired_keys_s)]
        only_t = [e for e in self.tgt_left.values() if not excused(e, paired_keys_t)]
        if only_s or only_t or self.ambiguous or self.shape_conflicts or self.problems:
            describe = {e.rec.name: e.describe() for e in self.src + self.tgt}
            raise NameMapError(self.frameworks, [e.rec.name for e in only_s], [e.rec.name for e in only_t],
                               self.ambiguous, self.shape_conflicts, self.problems, self.suggestions(only_s, only_t),
                               describe)
        pairs = []
        for i in sorted(self.pairs):
            t, rule, why = self.pairs[i]
            s_rec, t_rec = source[i], target[t]
            pairs.append(NamePair(s_rec.name, t_rec.name, rule, tuple(s_rec.shape), tuple(t_rec.shape), why))
        return NameMap(tuple(pairs), tuple(e.rec.name for e in self.src_left.values()),
                       tuple(e.rec.name for e in self.tgt_left.values()), self.frameworks)


def map_names(source: Iterable[ParamRecord], target: Iterable[ParamRecord], overrides: Overrides = None, *,
              frameworks: tuple[str, str] = ("source", "target")) -> NameMap:
    """Pair every parameter of ``source`` with its twin in ``target``.

    Args:
        source: The source model's records (``ParamRecord(name, shape, module_type,
            ident, requires_grad)``, as the adapters read them), in model order.
        target: The target model's records.
        overrides: A dict ``source name -> target name``, a function
            ``source name -> target name | None``, or :class:`NameRules` (the
            ``names:`` config section). Overrides come first; a name they give
            that is not a target name is finished by the layer rules.
        frameworks: Labels of the two sides in reports and errors.

    Returns:
        A :class:`NameMap` (a ``Mapping`` source name -> target name; ``print`` it
        for the table of renames).

    Raises:
        NameMapError: a trained parameter without a twin, an ambiguous pairing,
            shapes no known reshape relates, an override naming no target
            parameter (every problem is listed, both sides).
        ConfigError: malformed overrides, a name listed twice.
    """
    src, tgt = list(source), list(target)
    m = _Matcher(src, tgt, frameworks)
    m.overrides(_renamer(overrides))
    m.by_key(alias=False)
    m.by_key(alias=True)
    m.by_order()
    return m.result(src, tgt)


# --------------------------------------------------------------------------- plans

@dataclass(frozen=True)
class GroupMap:
    """How one group's selectors were moved to the target model.

    Attributes:
        group: Group name.
        how: ``kept`` (the same selectors select the twins), ``translated``
            (patterns rewritten through the name map) or ``synthesized`` (the
            shortest exact selectors over the target, see
            :func:`optbridge.describe_groups.readable_selectors`).
        before: The source selectors.
        after: The target selectors.
    """

    group: str
    how: str
    before: tuple[Selector, ...]
    after: tuple[Selector, ...]


@dataclass(frozen=True)
class PlanMap:
    """The report of :func:`map_plan`: the name map and what happened to each group.

    Attributes:
        names: The parameter-name map used.
        groups: One :class:`GroupMap` per group, in plan order.
    """

    names: NameMap
    groups: tuple[GroupMap, ...]

    def table(self) -> str:
        """The groups' selectors before and after, as a text table."""
        rows = [(g.group, g.how, _clip(" | ".join(selector_text(s) for s in g.before)),
                 _clip(" | ".join(selector_text(s) for s in g.after))) for g in self.groups]
        a, b = self.names.frameworks
        return _table(("group", "how", f"{a} selectors", f"{b} selectors"), rows)

    def __str__(self) -> str:
        return self.table() + "\n\n" + str(self.names)


def _clip(text: str, width: int = 72) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _unique_records(records: Sequence[ParamRecord], drop: set[str]) -> list[ParamRecord]:
    return [r for r in records if r.name not in drop]


def _source_groups(plan: Plan, records: Sequence[ParamRecord]) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """``group -> parameter names`` over the source (``frozen: exclude`` groups included), and tied aliases."""
    unfrozen = replace(plan, optimizers=tuple(
        replace(o, groups=tuple(replace(g, frozen=None) for g in o.groups)) for o in plan.optimizers))
    res = resolve(unfrozen, records)
    return {g.name: g.params for g in res.groups}, dict(res.aliases)


def _translations(sel: Selector, index_s: RecordIndex, index_t: RecordIndex, nm: NameMap) -> Iterator[Selector]:
    """Candidate target selectors for ``sel``: as is, then each criterion rewritten through ``nm``."""
    options: list[list[tuple[str, tuple[Any, ...]]]] = []
    twins = [index_t.records[index_t.pos[nm[n]]] for n in index_s.names_of(index_s.select(sel) or 0) if n in nm]
    for crit in ("names", "regex", "modules", "ndim", "leaf"):
        pats = getattr(sel, crit)
        if not pats:
            continue
        cands: list[tuple[Any, ...]] = [pats]
        if crit == "names":
            moved = tuple(dict.fromkeys(_move_glob(p, nm, index_s) for p in pats))
            if moved != pats:
                cands.append(moved)
        elif crit == "modules":
            cands.append(tuple(dict.fromkeys(glob_escape(r.module_type) for r in twins if r.module_type)))
        elif crit == "leaf":
            cands.append(tuple(dict.fromkeys(glob_escape(r.leaf) for r in twins)))
        elif crit == "ndim":
            cands.append(tuple(sorted({len(r.shape) for r in twins})))
        options.append([(crit, c) for c in dict.fromkeys(cands) if c])
    combos: list[list[tuple[str, tuple[Any, ...]]]] = [[]]
    for opts in options:
        combos = [c + [o] for c in combos for o in opts][:64]
    for combo in combos:
        fields: dict[str, Any] = dict(combo)
        yield Selector(**fields)


def _move_glob(pattern: str, nm: NameMap, index_s: RecordIndex) -> str:
    """``pattern`` with its literal module-path prefix replaced by the twin module's path."""
    if not any(c in pattern for c in "*?["):
        return nm.get(pattern, pattern)
    lit = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    prefix = lit.rpartition(".")[0]
    if not prefix:
        return pattern
    targets = [nm[r.name] for r in index_s.records if r.name.startswith(prefix + ".") and r.name in nm]
    if not targets:
        return pattern
    common = targets[0].split(".")[:-1]
    for t in targets[1:]:
        parts = t.split(".")[:-1]
        k = 0
        while k < min(len(common), len(parts)) and common[k] == parts[k]:
            k += 1
        common = common[:k]
    if not common:
        return pattern
    return glob_escape(".".join(common)) + pattern[len(prefix):]


def map_plan(plan: Plan, source_records: Iterable[ParamRecord], target_records: Iterable[ParamRecord],
             name_map: NameMap | Overrides = None, *,
             frameworks: tuple[str, str] = ("source", "target")) -> tuple[Plan, PlanMap]:
    """``plan`` rewritten so that its groups select, on the target model, the twins of what they select on the source.

    For each group, selectors that already select exactly the twins are kept
    (``backbone.*``, ``ndim: [1]`` across torch and MindSpore); otherwise their
    patterns are translated through the name map (``backbone.1.weight`` ->
    ``backbone.1.gamma``, ``modules: [Linear]`` -> ``[Dense]``, ``leaf: [weight]``
    -> ``[gamma]``); a group neither way fits gets the shortest exact selectors
    over the target. The ``rest`` group stays ``rest``. The result is verified
    with :func:`optbridge.params.resolve` over the target records.

    Args:
        plan: A plan whose selectors resolve over ``source_records``.
        source_records: The source model's records.
        target_records: The target model's records.
        name_map: A :class:`NameMap`, or overrides for :func:`map_names` (dict,
            function, :class:`NameRules`), or None (automatic).
        frameworks: Labels of the two sides in reports and errors.

    Returns:
        ``(plan for the target, PlanMap report)``.

    Raises:
        ConfigError: the plan does not resolve over the source; a group has no
            parameter with a twin on the target; tied parameters in different groups
            are one parameter on the target.
        NameMapError: the models cannot be paired (see :func:`map_names`).
    """
    src, tgt = list(source_records), list(target_records)
    nm = name_map if isinstance(name_map, NameMap) else map_names(src, tgt, name_map, frameworks=frameworks)
    _check_fits(nm, src, tgt)
    frameworks = nm.frameworks
    groups_s, aliases_s = _source_groups(plan, src)
    group_of = {n: g for g, ns in groups_s.items() for n in ns}
    index_s = RecordIndex(_unique_records(src, set(nm.unpaired_source) - set(aliases_s)))
    kept_t = _unique_records(tgt, set(nm.unpaired_target))
    index_t = RecordIndex(kept_t)
    expected: dict[str, int] = {g.name: 0 for g in plan.groups}
    owner: dict[int, str] = {}
    for r in index_t.records:
        s = nm.source_of(r.name)
        if s is None:
            continue
        grp = group_of[aliases_s.get(s, s)]
        i = index_t.pos[r.name]
        expected[grp] |= 1 << i
        owner[i] = grp
    for alias, first in index_t.aliases.items():
        s = nm.source_of(alias)
        if s is not None:
            grp = group_of[aliases_s.get(s, s)]
            if grp != owner.get(index_t.pos[first], grp):
                raise ConfigError("groups", f"{frameworks[1]} ties {alias!r} to {first!r} (one parameter), but their "
                                  f"{frameworks[0]} twins are in groups {grp!r} and {owner[index_t.pos[first]]!r}",
                                  alias)
    new_groups: dict[str, tuple[Selector, ...]] = {}
    reports: list[GroupMap] = []
    paths = {g.name: p for g, p in _group_paths(plan)}
    for g in plan.groups:
        if g.is_rest:
            new_groups[g.name], how = g.select, "kept"
        elif not expected[g.name]:
            raise ConfigError(f"{paths[g.name]}.params", f"group {g.name!r} has no parameter with a twin in "
                              f"{frameworks[1]} (its parameters: {list(groups_s[g.name])})", frameworks[1])
        else:
            new_groups[g.name], how = _move_group(g.select, index_s, index_t, nm, expected[g.name])
        reports.append(GroupMap(g.name, how, g.select, new_groups[g.name]))
    out = replace(plan, optimizers=tuple(replace(o, groups=tuple(replace(g, select=new_groups[g.name])
                                                                   for g in o.groups)) for o in plan.optimizers))
    got, _ = _source_groups(out, kept_t)
    for g in plan.groups:
        if index_t.mask_of(got[g.name]) != expected[g.name]:
            raise ConfigError(f"{paths[g.name]}.params", f"group {g.name!r} does not resolve to its twins on "
                              f"{frameworks[1]} (expected {index_t.names_of(expected[g.name])}, got "
                              f"{list(got[g.name])}); this is a bug in optbridge.names", g.name)
    return out, PlanMap(nm, tuple(reports))


def _check_fits(nm: NameMap, src: Sequence[ParamRecord], tgt: Sequence[ParamRecord]) -> None:
    """A given NameMap must cover exactly these two models."""
    names_s, names_t = {r.name for r in src}, {r.name for r in tgt}
    bad = [f"{nm.frameworks[0]} {p.source}" for p in nm.pairs if p.source not in names_s]
    bad += [f"{nm.frameworks[1]} {p.target}" for p in nm.pairs if p.target not in names_t]
    bad += [f"{nm.frameworks[0]} {n} (not in the map)" for n in names_s - set(nm) - set(nm.unpaired_source)]
    bad += [f"{nm.frameworks[1]} {r.name} (not in the map)" for r in tgt
            if nm.source_of(r.name) is None and r.name not in nm.unpaired_target]
    if bad:
        raise ConfigError("names", "the name map was made for other models: " + _listing(sorted(bad), 8),
                          show_value=False)


def _group_paths(plan: Plan) -> Iterator[tuple[Any, str]]:
    for i, o in enumerate(plan.optimizers):
        for j, g in enumerate(o.groups):
            yield g, (f"groups[{j}]" if len(plan.optimizers) == 1 else f"optimizers[{i}].groups[{j}]")


def _move_group(select: tuple[Selector, ...], index_s: RecordIndex, index_t: RecordIndex, nm: NameMap,
                expected: int) -> tuple[tuple[Selector, ...], str]:
    """The group's selectors for the target, and how they were obtained."""
    out: list[Selector] = []
    how = "kept"
    for sel in select:
        want = index_t.mask_of(nm[n] for n in index_s.names_of(index_s.select(sel) or 0) if n in nm)
        for k, cand in enumerate(_translations(sel, index_s, index_t, nm)):
            if index_t.select(cand) == want:
                out.append(cand)
                if k:
                    how = "translated"
                break
        else:
            return exact_selectors(index_t, expected), "synthesized"
    return tuple(out), how

