"""The module graph of optbridge, optbridge_adapters and optbridge_conformance has no cycles.

Every import counts: at module level, inside functions (lazy imports hide a cycle, they do not
remove it) and under ``TYPE_CHECKING`` (a type named across two modules ties them as much as a
call). ``from package import name`` is an edge to the submodule ``name`` when there is one, else
to the package's ``__init__``; a module's own ancestor packages are no edge (Python loads them before
the module). The graph is read from the sources with :mod:`ast`, nothing runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: installed name -> source folder (pyproject.toml's package-dir)
PACKAGES = {"optbridge": ROOT / "optbridge", "optbridge_adapters": ROOT / "adapters",
            "optbridge_conformance": ROOT / "conformance"}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (source file, whether it is a package's ``__init__``)."""
    out: dict[str, tuple[Path, bool]] = {}
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            init = parts[-1] == "__init__"
            out[".".join(parts[:-1] if init else parts)] = (path, init)
    return out


def _edges(module: str, path: Path, init: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports, anywhere in its source."""
    package = module if init else module.rpartition(".")[0]
    out: set[str] = set()

    def add(target: str) -> None:  # the longest known prefix: `import a.b.c` loads a.b.c
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != module and not module.startswith(target + "."):  # an ancestor is loaded first
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            for a in node.names:
                add(f"{source}.{a.name}" if f"{source}.{a.name}" in known else source)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _edges(m, path, init, set(mods)) for m, (path, init) in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in import order, the first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return [*stack[stack.index(n):], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_three_packages_have_no_import_cycles() -> None:
    graph = _graph()
    assert len(graph) > 120 and "optbridge_conformance.results" in graph  # the whole tree was read
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_layers_the_docs_name() -> None:
    """docs/design.md § 3: the result model above the cases, checks below tracing, the range test's settings below
    its loop and its result, configio below serialize: each pair imported one way and never reached back; the
    conformance outputs below the runner."""
    graph = _graph()
    below = [("optbridge_conformance.results", "optbridge_conformance.cases"),
             ("optbridge_conformance.report", "optbridge_conformance.results"),
             ("optbridge.tracing", "optbridge.checks"),
             ("optbridge.lrfind", "optbridge.lrfind_settings"),
             ("optbridge.lrfind_result", "optbridge.lrfind_settings"),
             ("optbridge.serialize", "optbridge.configio")]
    for upper, lower in below:
        assert lower in graph[upper], (upper, lower)
    reach: dict[str, set[str]] = {}

    def reachable(m: str) -> set[str]:
        if m not in reach:
            reach[m] = set()
            for n in graph[m]:
                reach[m] |= {n} | reachable(n)
        return reach[m]

    for upper, lower in below:
        assert upper not in reachable(lower), (lower, "reaches", upper)
    for reader in ("report", "plots", "docs"):  # the outputs read the result model, never the runner
        assert "optbridge_conformance.runner" not in reachable(f"optbridge_conformance.{reader}"), reader


@pytest.mark.parametrize("graph, want", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"b2"}, "b2": {"b"}}, ["b", "b2", "b"]),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], want: list[str] | None) -> None:
    assert _cycle(graph) == want


def test_edges_count_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
                   "def f():\n    from . import b\n    import optbridge.c.d\n", encoding="utf-8")
    known = {"p", "p.a", "p.b", "optbridge", "optbridge.c", "p.m"}
    assert _edges("p.m", src, False, known) == {"p.a", "p.b", "optbridge.c"}
