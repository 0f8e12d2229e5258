"""The package's import graph, read from its source (no import runs: the fast tier).

A module imports what it needs at its top, and no two modules need each other:
an import inside a function is for a reason its comment gives (an optional
dependency, a part most apps never load), never to dodge a cycle. Imports
under ``if TYPE_CHECKING:`` never run, so they are not edges: a module may
name another's type in an annotation that the other imports at run time.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flask_pine_ws"


@dataclass(frozen=True)
class Import:
    """One import statement that runs: who imports whom, and where."""

    source: str
    target: str
    line: int
    lazy: bool  # inside a function: runs when the function is first called
    commented: bool  # a comment on its line says why it is there


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Each module of the package by dotted name (a package by its own name)."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return True
    return False


@functools.cache
def imports(root: Path = PACKAGE) -> tuple[Import, ...]:
    """Every import of one of the package's modules by another that runs."""
    modules = module_names(root)
    found: list[Import] = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        parents = {child: node for node in ast.walk(tree)
                   for child in ast.iter_child_nodes(node)}
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = here.split(".")
                    package = package[:len(package) - (node.level - 1)]
                    base = ".".join([*package, *([node.module] if node.module else [])])
                # ``from . import x`` imports the module x when there is one,
                # else the name x from the package itself
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                           else base for alias in node.names]
            else:
                continue
            if _under_type_checking(node, parents):
                continue
            for target in targets:
                if target in modules and target != name:
                    found.append(Import(name, target, node.lineno, _in_function(node, parents),
                                        "#" in lines[node.lineno - 1]))
    return tuple(found)


def find_cycle(edges: Sequence[Import]) -> list[str] | None:
    """A cycle of modules in ``edges`` (the first module repeated last), or ``None``."""
    graph: dict[str, list[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge.target)
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for target in graph.get(module, []):
            cycle = visit(target, [*path, module])
            if cycle is not None:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle is not None:
            return cycle
    return None


def test_the_graph_is_read_from_the_source() -> None:
    """The reader sees the imports the package has (else the next tests prove nothing)."""
    edges = {(e.source, e.target): e for e in imports()}
    assert ("flask_pine_ws.watch", "flask_pine_ws.watchtable") in edges
    assert ("flask_pine_ws", "flask_pine_ws.extension") in edges
    assert ("flask_pine_ws.channels", "flask_pine_ws.channels.backend") in edges
    viewer = edges[("flask_pine_ws.extension", "flask_pine_ws.viewer")]
    assert viewer.lazy and viewer.commented
    # an annotation's import is no edge
    assert ("flask_pine_ws.shutdown", "flask_pine_ws.conn") not in edges


def test_no_module_level_import_cycle() -> None:
    assert find_cycle([e for e in imports() if not e.lazy]) is None


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    """An import moved into a function hides a cycle from Python, not from this test."""
    assert find_cycle(imports()) is None


def test_every_import_inside_a_function_says_why() -> None:
    silent = [f"{e.source}:{e.line}" for e in imports() if e.lazy and not e.commented]
    assert silent == []


@pytest.mark.parametrize("lazy", [False, True])
def test_a_cycle_is_found(tmp_path: Path, lazy: bool) -> None:
    """The check fails on a cycle, at module level or through a function's import."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import B\nA = 1\n")
    body = "def f():\n    from .a import A  # why\n" if lazy else "from . import a\n"
    (package / "b.py").write_text(f"from typing import TYPE_CHECKING\n{body}B = 2\n"
                                  "if TYPE_CHECKING:\n    from .a import A\n")
    edges = imports(package)
    assert find_cycle([e for e in edges if not e.lazy]) == (None if lazy else
                                                            ["pkg.a", "pkg.b", "pkg.a"])
    assert find_cycle(edges) == ["pkg.a", "pkg.b", "pkg.a"]
