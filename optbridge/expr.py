"""Safe, vectorised lambda expressions for ``LambdaLR`` / ``MultiplicativeLR``.

Users describe torch ``lr_lambda`` functions as the *body* of the lambda, e.g.
``"0.95 ** epoch"`` or ``"min((step + 1) ** -0.5, (step + 1) * 4000 ** -1.5)"``.
:func:`parse` turns such a string into an :class:`Expr` without executing any
code: the text goes through :func:`ast.parse` (which only builds a syntax tree)
and every node is checked against a small whitelist.  :meth:`Expr.evaluate`
walks the tree with numpy, over whole arrays of step counters at once.

Grammar (a subset of Python expressions):

* literals: ``int``, ``float``, ``True``, ``False`` (no strings, no complex);
* names: the counter names given to :func:`parse` (default
  :data:`COUNTER_NAMES`) and the constants ``pi``, ``e``, ``inf`` (a counter
  name shadows a constant of the same name, as a lambda parameter would);
* unary ``+ - not``; binary ``+ - * / // % **``; comparisons
  ``< <= > >= == !=`` (chained too); ``and`` / ``or``; ``a if c else b``;
* calls, by bare name only, of ``min``, ``max`` (2+ arguments), ``abs``,
  ``pow`` (2 arguments), ``int``, ``float``, ``round`` (1 argument), and the
  :mod:`math` functions ``cos sin tan sqrt exp log log2 log10 floor ceil``
  (``log`` takes an optional base).

Semantics follow Python's, element by element, so ``evaluate`` returns what
``lambda epoch: <source>`` returns for each step (with ``cos`` meaning
``math.cos`` ...):

* Integers stay ``int64`` while a sub-expression is integral: ``epoch // 30``
  and ``epoch % 7`` are integer floor division / modulo (numpy's floor
  semantics equal Python's), ``/`` is true division, ``bool`` counts as ``int``.
* ``int ** int`` is exact in ``int64`` when the exponent is non-negative and the
  result fits; a negative exponent gives a float (as in Python).  An integer
  result that leaves the ``int64`` range (where Python would switch to a big
  int) is carried as the correctly rounded ``float64`` instead (``**`` computes
  it from the exact big int, for up to 100 000 distinct base/exponent pairs per
  call, beyond that libm's ``pow``, within an ulp); later ``//`` or ``%`` then
  act on that rounded value.  The same holds for ``+ - *`` and unary ``-``/``abs``.
  ``floor``/``ceil``/``int``/``round`` of a float beyond ``int64`` keep the (already integral) float value.
* ``and`` / ``or`` short-circuit element-wise and return an operand's value, as
  in Python; with comparisons as operands (the usual case) that is 1.0/0.0.
  ``not`` and comparisons give 1.0/0.0.
* Errors Python would raise become :class:`EvaluationError` naming the first
  failing step: division or modulo by zero, ``0 ** negative``, a negative base
  to a fractional power (a complex number in Python), float ``**`` overflow,
  math domain/range errors (``sqrt(-1)``, ``log(0)``, ``exp(1000)``), and
  ``int``/``floor``/``ceil``/``round`` of inf or nan.  Only the elements a
  conditional or ``and``/``or`` actually selects are evaluated, so
  ``1 / epoch if epoch > 0 else 1.0`` is fine at epoch 0.  Operations Python
  lets produce nan or inf silently (``inf - inf``, ``1e308 * 10``) do so here.
* Complex numbers are not supported: a negative base to a fractional power is
  an error even where Python would carry the complex value on and make it real
  again (``abs((epoch - 1) ** 0.5)``); a lambda returning a complex number is
  useless as a learning-rate factor anyway.
* Where a conditional, ``and``/``or`` or ``min``/``max`` mixes int and float
  results, the ints are carried as (exact) floats, so a zero may come out as
  ``-0.0`` where Python has the int ``0`` (``-(0.5 if epoch else epoch)``).
* When several steps fail, the step reported is the first failing element of
  the first failing operation in tree order, not necessarily the smallest step.

Known, documented differences from Python (none reachable by realistic
schedules): comparisons and true division between integers beyond 2**53 go
through ``float64`` (Python is exact); transcendental functions and ``**`` use
numpy's kernels, which equal libm bit for bit on x86-64 with AVX2 but may
differ by an ulp or so where numpy dispatches to its AVX-512 (SVML) kernels.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

import numpy as np

from .errors import ConfigError, EvaluationError

__all__ = [
    "COUNTER_NAMES",
    "CONSTANTS",
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_SOURCE_LENGTH",
    "Expr",
    "parse",
]

COUNTER_NAMES: frozenset[str] = frozenset(
    {"epoch", "step", "k", "t", "x", "it", "iteration", "last_epoch"}
)
"""Counter names an expression may use by default."""

CONSTANTS: Mapping[str, float] = {"pi": math.pi, "e": math.e, "inf": math.inf}
"""Named constants (the :mod:`math` values)."""

FUNCTIONS: Mapping[str, tuple[int, int | None]] = {
    "min": (2, None),
    "max": (2, None),
    "abs": (1, 1),
    "pow": (2, 2),
    "int": (1, 1),
    "float": (1, 1),
    "round": (1, 1),
    "cos": (1, 1),
    "sin": (1, 1),
    "tan": (1, 1),
    "sqrt": (1, 1),
    "exp": (1, 1),
    "log": (1, 2),
    "log2": (1, 1),
    "log10": (1, 1),
    "floor": (1, 1),
    "ceil": (1, 1),
}
"""Callable names mapped to (minimum, maximum or None) argument counts."""

MAX_SOURCE_LENGTH = 2000
"""Longest accepted source string, in characters."""

MAX_DEPTH = 100
"""Deepest accepted syntax-tree nesting."""

_MATH_FUNCTIONS = frozenset({"cos", "sin", "tan", "sqrt", "exp", "log", "log2", "log10", "floor", "ceil"})
_BUILTIN_FUNCTIONS = frozenset(FUNCTIONS) - _MATH_FUNCTIONS

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_TWO63 = 2.0**63

_BINOP_SYMBOLS: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
}
_ALLOWED_BINOPS = frozenset({ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow})
_ALLOWED_UNARYOPS = frozenset({ast.UAdd, ast.USub, ast.Not})
_CMP_SYMBOLS: dict[type, str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}
_CMP_UFUNCS: dict[type, np.ufunc] = {
    ast.Lt: np.less,
    ast.LtE: np.less_equal,
    ast.Gt: np.greater,
    ast.GtE: np.greater_equal,
    ast.Eq: np.equal,
    ast.NotEq: np.not_equal,
}
_FORBIDDEN: dict[type, str] = {
    ast.Attribute: "attribute access is not allowed (call functions by bare name, e.g. cos(x))",
    ast.Subscript: "subscripts are not allowed",
    ast.Slice: "slices are not allowed",
    ast.Lambda: "lambda is not allowed (write only the lambda's body, e.g. '0.95 ** epoch')",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Starred: "starred arguments are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}

_UNARY_MATH: dict[str, np.ufunc] = {
    "cos": np.cos,
    "sin": np.sin,
    "tan": np.tan,
    "sqrt": np.sqrt,
    "exp": np.exp,
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
}
_LOG_FAMILY = frozenset({"log", "log2", "log10"})
_TO_INT: dict[str, np.ufunc] = {"floor": np.floor, "ceil": np.ceil, "int": np.trunc, "round": np.rint}

_Array = Any  # a numpy ndarray or numpy scalar of dtype bool, int64 or float64
_EnvValue = np.ndarray | int | float


# --------------------------------------------------------------------------- parsing


def parse(source: str, *, path: str = "lambda", names: Collection[str] = COUNTER_NAMES) -> Expr:
    """Parse and validate an expression; nothing in it is executed.

    Args:
        source: The lambda's body, e.g. ``"0.95 ** epoch"``.  Surrounding
            whitespace is stripped; the stripped text is the canonical form.
        path: Location of the expression in the config, used in error messages.
        names: Counter names the expression may use.

    Returns:
        The parsed expression.

    Raises:
        ConfigError: The source is not a string, too long, not a valid
            expression, too deeply nested, or uses anything outside the grammar
            (attribute access, unknown names or functions, strings, ...).  No
            other exception escapes.
    """
    if not isinstance(source, str):
        raise ConfigError(path, "must be a string holding an expression", source)
    try:
        allowed = frozenset(names)
    except TypeError:
        raise ConfigError(path, "counter names must be a collection of strings", names) from None
    if not all(isinstance(n, str) and n.isidentifier() for n in allowed):
        raise ConfigError(path, "counter names must be identifiers", sorted(map(repr, allowed)))
    text = source.strip()
    if len(text) > MAX_SOURCE_LENGTH:
        raise ConfigError(path, f"expression too long ({len(text)} characters, max {MAX_SOURCE_LENGTH})", text)
    tree = _ast_parse(text, path)
    validator = _Validator(text, path, allowed)
    try:
        validator.check(tree.body, 1)
    except ConfigError:
        raise
    except (RecursionError, MemoryError, ValueError, TypeError) as exc:  # defensive: never escape
        raise ConfigError(path, f"cannot be checked ({type(exc).__name__})", text) from None
    return Expr(text, _Parsed(text, allowed, tree, frozenset(validator.variables)), allowed, path)


def _ast_parse(text: str, path: str) -> ast.Expression:
    """Build the syntax tree of ``text`` (eval mode), turning every failure into ConfigError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for '1 is 1'
            tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        where = ""
        if exc.offset is not None:
            where = (f" at column {exc.offset}" if (exc.lineno or 1) == 1
                     else f" at line {exc.lineno}, column {exc.offset}")
        detail = f" ({exc.msg}{where})" if exc.msg else where
        raise ConfigError(path, f"not a valid expression{detail}", text) from None
    except RecursionError:
        raise ConfigError(path, f"not a valid expression (nested deeper than {MAX_DEPTH} levels)", text) from None
    except Exception as exc:  # ValueError (null bytes), UnicodeError (surrogates), MemoryError ...
        raise ConfigError(path, f"not a valid expression ({type(exc).__name__}: {exc})", text) from None
    return tree


class _Validator:
    """Checks a syntax tree against the whitelist and collects the counters it uses."""

    def __init__(self, source: str, path: str, names: frozenset[str]) -> None:
        self.source = source
        self.path = path
        self.names = names
        self.variables: set[str] = set()

    def fail(self, rule: str) -> NoReturn:
        raise ConfigError(self.path, rule, self.source)

    def piece(self, node: ast.AST) -> str:
        try:
            segment = ast.get_source_segment(self.source, node)
        except Exception:  # pragma: no cover - positions are always present after ast.parse
            segment = None
        return segment if segment is not None else ast.unparse(node)

    def check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.Constant):  # ast.parse builds these exact classes: isinstance is `type(node) is`
            self.check_constant(node)
        elif isinstance(node, ast.Name):
            self.check_name(node)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _ALLOWED_UNARYOPS:
                self.fail(f"operator '~' is not allowed in {self.piece(node)!r}")
            self.check(node.operand, depth + 1)
        elif isinstance(node, ast.BinOp):
            op = type(node.op)
            if op not in _ALLOWED_BINOPS:
                symbol = _BINOP_SYMBOLS.get(op, op.__name__)
                self.fail(f"operator {symbol!r} is not allowed in {self.piece(node)!r}")
            self.check(node.left, depth + 1)
            self.check(node.right, depth + 1)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.check(value, depth + 1)
        elif isinstance(node, ast.Compare):
            for cmp in node.ops:
                if type(cmp) not in _CMP_UFUNCS:
                    symbol = _CMP_SYMBOLS.get(type(cmp), type(cmp).__name__)
                    self.fail(f"comparison {symbol!r} is not allowed in {self.piece(node)!r}")
            self.check(node.left, depth + 1)
            for comparator in node.comparators:
                self.check(comparator, depth + 1)
        elif isinstance(node, ast.IfExp):
            self.check(node.test, depth + 1)
            self.check(node.body, depth + 1)
            self.check(node.orelse, depth + 1)
        elif isinstance(node, ast.Call):
            self.check_call(node, depth)
        else:
            kind = type(node)
            rule = _FORBIDDEN.get(kind, f"{kind.__name__} expressions are not allowed")
            self.fail(f"{rule}: {self.piece(node)!r}")

    def check_constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            if value > _I64_MAX:
                self.fail(f"integer literal {self.piece(node)!r} does not fit in 64 bits")
            return
        if isinstance(value, float):
            return
        if isinstance(value, (str, bytes)):
            self.fail(f"strings are not allowed: {self.piece(node)!r}")
        if isinstance(value, complex):
            self.fail(f"complex numbers are not allowed: {self.piece(node)!r}")
        self.fail(f"{self.piece(node)!r} is not allowed (only int and float literals)")

    def check_name(self, node: ast.Name) -> None:
        name = node.id
        if name in self.names:
            self.variables.add(name)
        elif name not in CONSTANTS:
            if name in FUNCTIONS:
                self.fail(f"function {name!r} must be called, e.g. {name}(epoch)")
            self.fail(
                f"unknown name {name!r} (allowed: {', '.join(sorted(self.names))}; "
                f"constants: {', '.join(CONSTANTS)})"
            )

    def check_call(self, node: ast.Call, depth: int) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in FUNCTIONS:
            self.fail(f"attribute access is not allowed: write {func.attr}(...) instead of {self.piece(func)}(...)")
        if not isinstance(func, ast.Name):
            self.fail(f"only allowed functions may be called, by bare name: {self.piece(func)!r}")
            return
        name = func.id
        if name not in FUNCTIONS:
            self.fail(f"unknown function {name!r} (allowed: {', '.join(sorted(FUNCTIONS))})")
        if node.keywords:
            self.fail(f"keyword arguments are not allowed in {self.piece(node)!r}")
        for arg in node.args:
            if type(arg) is ast.Starred:
                self.fail(f"starred arguments are not allowed in {self.piece(node)!r}")
        low, high = FUNCTIONS[name]
        count = len(node.args)
        if count < low or (high is not None and count > high):
            if high is None:
                wanted = f"at least {low} arguments"
            elif low == high:
                wanted = f"exactly {low} argument{'s' if low != 1 else ''}"
            else:
                wanted = f"{low} to {high} arguments"
            self.fail(f"{name}() takes {wanted}, not {count}, in {self.piece(node)!r}")
        for arg in node.args:
            self.check(arg, depth + 1)


# --------------------------------------------------------------------------- the expression


class _Parsed(NamedTuple):
    """What :func:`parse` learnt about a source (kept with it, so a stale tree is detectable)."""

    source: str
    names: frozenset[str]
    tree: ast.Expression
    variables: frozenset[str]


@dataclass(frozen=True)
class Expr:
    """A parsed lambda body, compared and hashed by its canonical source.

    Build it with :func:`parse` (or ``Expr(source)``, which parses with the
    default counter names).

    Attributes:
        source: The user's string, stripped of surrounding whitespace.
    """

    source: str
    _parsed: _Parsed | None = field(default=None, compare=False, repr=False)
    _names: frozenset[str] = field(default=COUNTER_NAMES, compare=False, repr=False)
    _path: str = field(default="lambda", compare=False, repr=False)

    def __post_init__(self) -> None:
        parsed = self._parsed
        if parsed is None or parsed.source != self.source or parsed.names != self._names:
            # built as Expr(source) or by dataclasses.replace(): (re)parse
            fresh = parse(self.source, path=self._path, names=self._names)
            object.__setattr__(self, "source", fresh.source)
            object.__setattr__(self, "_parsed", fresh._parsed)
            object.__setattr__(self, "_names", fresh._names)

    @property
    def _tree(self) -> ast.Expression:
        assert self._parsed is not None  # set by __post_init__
        return self._parsed.tree

    @property
    def _variables(self) -> frozenset[str]:
        assert self._parsed is not None  # set by __post_init__
        return self._parsed.variables

    @property
    def variables(self) -> frozenset[str]:
        """The counter names the expression uses (constants and functions excluded)."""
        return self._variables

    def evaluate(self, env: Mapping[str, _EnvValue]) -> np.ndarray:
        """Evaluate element-wise over arrays of counters.

        Args:
            env: Counter name to an integer/float scalar or array.  Every name
                in :attr:`variables` must be present; all values must
                broadcast together (extra names are allowed and take part in
                the broadcast).

        Returns:
            A new ``float64`` array with the broadcast shape of the ``env``
            values (so ``"0.5"`` still yields one value per step).

        Raises:
            EvaluationError: A counter is missing or not numeric, the values do
                not broadcast, or Python would raise for some step (see the
                module docstring); the message names the step.
        """
        if not isinstance(env, Mapping):
            raise EvaluationError(f"{self._path}: env must be a mapping of counter names to arrays, got "
                                  f"{type(env).__name__}")
        missing = sorted(self._variables - set(env))
        if missing:
            raise EvaluationError(
                f"{self._path}: no value given for counter {missing[0]!r} (env has {list(env)!r}), got {self.source!r}"
            )
        arrays = {name: _counter_array(env[name], name, self._path) for name in self._variables}
        try:
            shape = np.broadcast_shapes(*(arrays[k].shape if k in arrays else np.shape(v) for k, v in env.items()))
        except ValueError:
            shapes = {k: np.shape(v) for k, v in env.items()}
            raise EvaluationError(f"{self._path}: counter arrays do not broadcast together, got shapes "
                                  f"{shapes}") from None
        size = math.prod(shape)
        if size == 0:
            return np.zeros(shape, dtype=np.float64)
        flat = {k: np.broadcast_to(v, shape).reshape(-1) for k, v in arrays.items()}
        evaluator = _Evaluator(self.source, self._path, flat)
        with np.errstate(all="ignore"):
            result = evaluator.ev(self._tree.body, _Ctx(flat, None, size))
        result = np.asarray(result)
        if (
            result.dtype == np.float64
            and result.shape == (size,)
            and not any(np.may_share_memory(result, v) for v in flat.values())
        ):
            return result.reshape(shape)
        out = np.empty(size, dtype=np.float64)
        out[...] = result
        return out.reshape(shape)

    def __call__(self, x: _EnvValue) -> float | np.ndarray:
        """Evaluate with every allowed counter name bound to ``x``.

        Args:
            x: A step (int or float) or an array of steps.

        Returns:
            A float for a scalar ``x``, else a ``float64`` array shaped like ``x``.

        Raises:
            EvaluationError: As :meth:`evaluate`.
        """
        value = np.asarray(x) if not isinstance(x, np.ndarray) else x
        out = self.evaluate(dict.fromkeys(self._names, value))
        return float(out) if out.ndim == 0 else out

    def to_python(self, var: str = "epoch") -> str:
        """Return Python source of an equivalent ``lambda`` for generated code.

        Every counter becomes ``var``; ``cos``, ``floor``, ``pi`` ... become
        ``math.cos``, ``math.floor``, ``math.pi`` ...; ``min``, ``max``, ``abs``,
        ``pow``, ``int``, ``float`` and ``round`` stay builtins.  The generated
        code must ``import math``.  Comments in the source are dropped.

        Args:
            var: The lambda's parameter name.

        Returns:
            Source such as ``"lambda epoch: 0.95 ** epoch"``.

        Raises:
            ConfigError: ``var`` is not a plain identifier, or is ``math`` or a
                builtin the expression may call.
        """
        if not _is_plain_identifier(var) or var == "math" or var in _BUILTIN_FUNCTIONS:
            raise ConfigError(
                f"{self._path}.to_python(var)",
                "must be an identifier other than 'math' and the builtins min, max, abs, pow, int, float, round",
                var,
            )
        tree = _ast_parse(self.source, self._path)
        body = _ToPython(var, self._names).visit(tree.body)
        return f"lambda {var}: {ast.unparse(body)}"


def _is_plain_identifier(var: object) -> bool:
    if not isinstance(var, str) or not var.isidentifier():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            node = ast.parse(var, mode="eval").body
    except Exception:
        return False  # a keyword such as 'lambda'
    return type(node) is ast.Name  # rules out True, False, None


class _ToPython(ast.NodeTransformer):
    """Rewrites a validated tree into plain Python using ``math``."""

    def __init__(self, var: str, names: frozenset[str]) -> None:
        self.var = var
        self.names = names

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.names:
            return ast.Name(id=self.var, ctx=ast.Load())
        if node.id in CONSTANTS:
            return ast.Attribute(value=ast.Name(id="math", ctx=ast.Load()), attr=node.id, ctx=ast.Load())
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        args = [self.visit(arg) for arg in node.args]
        assert isinstance(node.func, ast.Name)  # validated: calls are by bare name
        name = node.func.id
        func: ast.expr = ast.Name(id=name, ctx=ast.Load())
        if name in _MATH_FUNCTIONS:
            func = ast.Attribute(value=ast.Name(id="math", ctx=ast.Load()), attr=name, ctx=ast.Load())
        return ast.Call(func=func, args=args, keywords=[])


def _counter_array(value: object, name: str, path: str) -> np.ndarray:
    """Convert one env value to an int64 or float64 array."""
    try:
        arr: np.ndarray = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        arr = np.empty(0, dtype=object)
    kind = arr.dtype.kind
    if kind in "bi":
        return arr.astype(np.int64, copy=False)
    if kind == "u":
        if arr.size and int(arr.max()) > _I64_MAX:
            raise EvaluationError(f"{path}: counter {name!r} must fit in int64, got {value!r}")
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        return arr.astype(np.float64, copy=False)
    text = repr(value)
    text = text if len(text) <= 80 else text[:77] + "..."
    raise EvaluationError(f"{path}: counter {name!r} must be a real number or an array of them, got {text}")


# --------------------------------------------------------------------------- evaluation


class _Ctx:
    """The elements being evaluated: counter arrays, and their flat positions in the full input."""

    __slots__ = ("env", "pos", "n")

    def __init__(self, env: dict[str, np.ndarray], pos: np.ndarray | None, n: int) -> None:
        self.env = env
        self.pos = pos  # None: identity (all elements, in order)
        self.n = n

    def sub(self, idx: np.ndarray) -> _Ctx:
        """The subset at indices ``idx`` (relative to this context)."""
        env = {k: v[idx] for k, v in self.env.items()}
        return _Ctx(env, idx if self.pos is None else self.pos[idx], len(idx))


def _num(v: _Array) -> _Array:
    """bool -> int64 (Python's bool is an int); other values unchanged."""
    return v.astype(np.int64) if v.dtype == np.bool_ else v


def _f(v: _Array) -> _Array:
    return v if v.dtype == np.float64 else v.astype(np.float64)


def _take(v: _Array, idx: np.ndarray) -> _Array:
    return v[idx] if np.ndim(v) else v


def _truthy(v: _Array) -> _Array:
    return v if v.dtype == np.bool_ else (v != 0)


def _bounds(v: _Array) -> tuple[int, int]:
    if np.ndim(v) == 0:
        return int(v), int(v)
    return int(v.min()), int(v.max())


def _combine(n: int, parts: list[tuple[np.ndarray | None, _Array]]) -> _Array:
    """Assemble values computed on disjoint index subsets into one array of length n."""
    if len(parts) == 1 and parts[0][0] is None:
        return parts[0][1]
    dtype = np.result_type(*(p[1].dtype for p in parts))
    out = np.empty(n, dtype=dtype)
    for idx, value in parts:
        if idx is None:
            out[...] = value
        else:
            out[idx] = value
    return out


_INT_ARITH: dict[type, tuple[np.ufunc, Callable[[Any, Any], Any]]] = {
    ast.Add: (np.add, operator.add),
    ast.Sub: (np.subtract, operator.sub),
    ast.Mult: (np.multiply, operator.mul),
}


class _Evaluator:
    """Evaluates a validated tree over a :class:`_Ctx`, raising Python's errors as EvaluationError."""

    def __init__(self, source: str, path: str, flat_env: dict[str, np.ndarray]) -> None:
        self.source = source
        self.path = path
        self.flat = flat_env

    # ---- errors

    def fail(self, rule: str, bad: _Array, ctx: _Ctx) -> None:
        """Raise EvaluationError if any element of ``bad`` (0-d or length ctx.n) is true."""
        if np.ndim(bad) == 0:
            if not bad:
                return
            j = 0
        else:
            if not bad.any():
                return
            j = int(np.argmax(bad))
        k = j if ctx.pos is None else int(ctx.pos[j])
        if self.flat:
            where = ", ".join(f"{name}={self.flat[name][k].item()!r}" for name in sorted(self.flat))
        else:
            where = "every step"  # no counters: the expression is constant
        raise EvaluationError(f"{self.path}: {rule} at {where}, got {self.source!r}")

    # ---- dispatch

    def ev(self, node: ast.AST, ctx: _Ctx) -> _Array:
        if isinstance(node, ast.Constant):  # a validated tree: these exact classes (see _Validator.check)
            value = node.value
            if isinstance(value, bool):
                return np.bool_(value)
            if isinstance(value, int):
                return np.int64(value)
            return np.float64(value)
        if isinstance(node, ast.Name):
            name = node.id
            if name in ctx.env:
                return ctx.env[name]
            return np.float64(CONSTANTS[name])
        if isinstance(node, ast.BinOp):
            return self.binop(node, ctx)
        if isinstance(node, ast.UnaryOp):
            return self.unaryop(node, ctx)
        if isinstance(node, ast.Compare):
            return self.compare(node, ctx)
        if isinstance(node, ast.BoolOp):
            return self.boolop(node, ctx)
        if isinstance(node, ast.IfExp):
            return self.ifexp(node, ctx)
        if isinstance(node, ast.Call):
            return self.call(node, ctx)
        raise AssertionError(f"unvalidated node {type(node).__name__}")  # pragma: no cover

    # ---- arithmetic

    def binop(self, node: ast.BinOp, ctx: _Ctx) -> _Array:
        a = _num(self.ev(node.left, ctx))
        b = _num(self.ev(node.right, ctx))
        op = type(node.op)
        ints = a.dtype.kind == "i" and b.dtype.kind == "i"
        if op is ast.Pow:
            return self.power(a, b, ctx)
        if op is ast.Div:
            self.fail("division by zero", b == 0, ctx)
            return np.true_divide(_f(a), _f(b))
        if op is ast.FloorDiv or op is ast.Mod:
            self.fail("division by zero" if op is ast.FloorDiv else "modulo by zero", b == 0, ctx)
            ufunc: np.ufunc = np.floor_divide if op is ast.FloorDiv else np.remainder
            if ints and not (op is ast.FloorDiv and np.any((a == _I64_MIN) & (b == -1))):
                return ufunc(a, b)
            return ufunc(_f(a), _f(b))
        ufunc, pyop = _INT_ARITH[op]
        if not ints:
            return ufunc(_f(a), _f(b))
        (alo, ahi), (blo, bhi) = _bounds(a), _bounds(b)
        if op is ast.Add:
            safe = _I64_MIN <= alo + blo and ahi + bhi <= _I64_MAX
        elif op is ast.Sub:
            safe = _I64_MIN <= alo - bhi and ahi - blo <= _I64_MAX
        else:
            safe = max(abs(alo), abs(ahi)) * max(abs(blo), abs(bhi)) <= _I64_MAX
        if not safe:
            exact = pyop(a.astype(object), b.astype(object))
            if np.any((exact < _I64_MIN) | (exact > _I64_MAX)):
                return ufunc(_f(a), _f(b))  # Python would hold a big int: carry it as float64
        return ufunc(a, b)

    def power(self, a: _Array, b: _Array, ctx: _Ctx) -> _Array:
        """``a ** b`` with Python's rules (both already bool-free)."""
        if a.dtype.kind == "i" and b.dtype.kind == "i":
            self.fail("0 cannot be raised to a negative power", (a == 0) & (b < 0), ctx)
            approx = np.power(_f(a), _f(b))  # Python's result for negative exponents
            nonneg = b >= 0
            fits = nonneg & (np.abs(approx) < 2.0**62)
            if np.all(fits):
                return np.power(a, b)  # exact int64
            self.fail("integer power too large for float64", np.isinf(approx), ctx)
            # Beyond int64 Python holds the exact big int; its float is the correctly rounded
            # value, which libm's pow misses by an ulp now and then: compute those exactly.
            if np.ndim(approx) == 0:
                if nonneg:
                    approx = np.float64(_exact_int_pow(int(a), int(b)))
            else:
                if fits.any():
                    approx[fits] = np.power(_take(a, fits), _take(b, fits))
                big = nonneg & ~fits
                if big.any():
                    ia = np.broadcast_to(a, approx.shape)[big]
                    ib = np.broadcast_to(b, approx.shape)[big]
                    pairs, inverse = np.unique(np.stack([ia, ib], axis=1), axis=0, return_inverse=True)
                    if len(pairs) <= _EXACT_POW_LIMIT:  # else keep libm's (within an ulp)
                        exact = np.array([_exact_int_pow(int(x), int(y)) for x, y in pairs], dtype=np.float64)
                        approx[big] = exact[inverse.reshape(-1)]
            self.fail("integer power too large for float64", np.isinf(approx), ctx)
            return approx
        x, y = _f(a), _f(b)
        # numpy >= 2 turns a constant exponent of 2, 0.5 or -1 into x*x, sqrt(x) or 1/x, which
        # differ from libm's pow (Python's) by an ulp, or at -0.0 and -inf: give it no constant.
        if np.ndim(x) == 0 and np.ndim(y) == 0:  # a constant: libm's pow, as Python computes it
            result = _scalar_libm(math.pow, x, y)
            if result is None:
                result = np.power(np.full(1, x), np.full(1, y))[0]
        elif np.ndim(y) == 0:
            result = np.power(x, np.full(x.shape, y))
        else:
            result = np.power(x, y)
        zero = x == 0
        if np.any(zero):
            self.fail("0.0 cannot be raised to a negative power", zero & (y < 0) & np.isfinite(y), ctx)
        negative = x < 0
        if np.any(negative):
            fractional = negative & np.isfinite(x) & np.isfinite(y) & (np.floor(y) != y)
            self.fail("negative number raised to a fractional power (complex result)", fractional, ctx)
        infinite = np.isinf(result)
        if np.any(infinite):
            self.fail("float power overflow", infinite & np.isfinite(x) & np.isfinite(y), ctx)
        return result

    def unaryop(self, node: ast.UnaryOp, ctx: _Ctx) -> _Array:
        v = self.ev(node.operand, ctx)
        op = type(node.op)
        if op is ast.Not:
            return np.logical_not(_truthy(v))
        v = _num(v)
        if op is ast.UAdd:
            return v
        if v.dtype.kind == "i" and np.any(v == _I64_MIN):
            return np.negative(_f(v))
        return np.negative(v)

    # ---- comparisons and logic

    def compare_values(self, op: type, a: _Array, b: _Array) -> _Array:
        a, b = _num(a), _num(b)
        if a.dtype != b.dtype:
            a, b = _f(a), _f(b)
        return _CMP_UFUNCS[op](a, b)

    def compare(self, node: ast.Compare, ctx: _Ctx) -> _Array:
        left = self.ev(node.left, ctx)
        sub = ctx  # elements whose comparisons are all true so far
        active: np.ndarray | None = None  # their indices in ctx; None = all
        for op, comparator in zip(node.ops, node.comparators):
            right = self.ev(comparator, sub)
            ok = self.compare_values(type(op), left, right)
            if np.ndim(ok) == 0:
                if not ok:
                    return np.bool_(False)  # every element still alive fails: all are False
                left = right
                continue
            keep = np.flatnonzero(ok)
            if len(keep) == 0:
                return np.bool_(False)
            if len(keep) < sub.n:
                left = _take(right, keep)
                active = keep if active is None else active[keep]
                sub = sub.sub(keep)
            else:
                left = right
        return np.bool_(True) if active is None else _mask(ctx.n, active)

    def boolop(self, node: ast.BoolOp, ctx: _Ctx) -> _Array:
        is_or = type(node.op) is ast.Or
        parts: list[tuple[np.ndarray | None, _Array]] = []
        sub = ctx
        active: np.ndarray | None = None
        last = len(node.values) - 1
        for i, operand in enumerate(node.values):
            v = self.ev(operand, sub)
            if i == last:
                parts.append((active, v))
                break
            t = _truthy(v)
            stop = t if is_or else np.logical_not(t)  # elements whose result is this operand
            if np.ndim(stop) == 0:
                if stop:
                    parts.append((active, v))
                    break
                continue
            stopped = np.flatnonzero(stop)
            if len(stopped):
                parts.append((stopped if active is None else active[stopped], _take(v, stopped)))
            if len(stopped) == sub.n:
                break
            if len(stopped):
                go = np.flatnonzero(np.logical_not(stop))
                active = go if active is None else active[go]
                sub = sub.sub(go)
        return _combine(ctx.n, parts)

    def ifexp(self, node: ast.IfExp, ctx: _Ctx) -> _Array:
        t = _truthy(self.ev(node.test, ctx))
        if np.ndim(t) == 0:
            return self.ev(node.body if t else node.orelse, ctx)
        yes = np.flatnonzero(t)
        if len(yes) == ctx.n:
            return self.ev(node.body, ctx)
        if len(yes) == 0:
            return self.ev(node.orelse, ctx)
        no = np.flatnonzero(np.logical_not(t))
        return _combine(ctx.n, [(yes, self.ev(node.body, ctx.sub(yes))), (no, self.ev(node.orelse, ctx.sub(no)))])

    # ---- calls

    def call(self, node: ast.Call, ctx: _Ctx) -> _Array:
        assert isinstance(node.func, ast.Name)  # validated: calls are by bare name
        name = node.func.id
        args = [self.ev(arg, ctx) for arg in node.args]  # Python evaluates every argument
        if name in ("min", "max"):
            op = ast.Lt if name == "min" else ast.Gt
            best = args[0]
            for v in args[1:]:  # Python keeps the first extreme item: replace only if strictly better
                best = np.where(self.compare_values(op, v, best), v, best)
            return best
        if name == "pow":
            return self.power(_num(args[0]), _num(args[1]), ctx)
        if name == "abs":
            v = _num(args[0])
            if v.dtype.kind == "i" and np.any(v == _I64_MIN):
                return np.abs(_f(v))
            return np.abs(v)
        if name == "float":
            return _f(_num(args[0]))
        if name in _TO_INT:
            return self.to_int(name, args[0], ctx)
        if name == "log" and len(args) == 2:
            num = self.math1("log", args[0], ctx)
            den = self.math1("log", args[1], ctx)
            self.fail("division by zero in log() (base 1)", den == 0, ctx)
            return num / den
        return self.math1(name, args[0], ctx)

    def math1(self, name: str, v: _Array, ctx: _Ctx) -> _Array:
        """A one-argument :mod:`math` function with CPython's error rules."""
        x = _f(_num(v))
        r = _scalar_libm(getattr(math, name), x)  # a constant: libm's value, as Python computes it
        if r is None:
            r = _UNARY_MATH[name](x)
        nan = np.isnan(r)
        if np.any(nan):
            self.fail(f"math domain error in {name}()", nan & ~np.isnan(x), ctx)
        inf = np.isinf(r)
        if np.any(inf):
            rule = "math domain error" if name in _LOG_FAMILY else "math range error"
            self.fail(f"{rule} in {name}()", inf & np.isfinite(x), ctx)
        return r

    def to_int(self, name: str, v: _Array, ctx: _Ctx) -> _Array:
        """``floor``/``ceil``/``int``/``round``: Python returns an int."""
        v = _num(v)
        if v.dtype.kind == "i":
            return v
        finite = np.isfinite(v)
        if not np.all(finite):
            self.fail(f"cannot convert inf or nan to an integer in {name}()", np.logical_not(finite), ctx)
        r = _TO_INT[name](v)
        if np.all((r >= -_TWO63) & (r < _TWO63)):
            return r.astype(np.int64)
        return r  # beyond int64: the float is already integral, keep it


_EXACT_POW_LIMIT = 100_000


def _scalar_libm(fn: Callable[..., float], *args: Any) -> Any:
    """``fn(*args)`` through :mod:`math` (the C library, as Python computes it) for 0-d operands.

    numpy's SIMD (SVML) kernels on AVX-512 CPUs may differ from libm by an ulp; a constant
    subexpression (``pi ** -1``, ``cos(1)``) then takes libm's value, exactly Python's on every
    CPU. Returns None for arrays and where :mod:`math` raises (numpy's inf/nan then go to the
    caller's error rules).
    """
    if any(np.ndim(a) for a in args):
        return None
    try:
        return np.float64(fn(*(float(a) for a in args)))
    except (ValueError, OverflowError):
        return None


def _exact_int_pow(base: int, exponent: int) -> float:
    """``float(base ** exponent)`` as Python computes it (inf where that conversion overflows)."""
    try:
        return float(base**exponent)
    except OverflowError:
        return math.inf


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    out = np.zeros(n, dtype=np.bool_)
    out[idx] = True
    return out
