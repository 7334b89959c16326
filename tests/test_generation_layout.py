"""Issue 22: generation/ is a DAG around one `Network`, and no module reads another module's private names.

The imports are read from the source (ast), every import statement included: inside functions and under
`if TYPE_CHECKING:` too, which lint-imports' contracts leave out."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "charlstm"
PACKAGES = ("generation", "server")


def modules(package: str) -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8")) for p in sorted((SRC / package).glob("*.py"))}


def imported(tree: ast.Module, package: str) -> set[str]:
    """The modules of charlstm.<package> that `tree` imports, anywhere in it."""
    prefix = f"charlstm.{package}"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith(prefix + "."):
                out.add(name[len(prefix) + 1 :].split(".")[0])
    return out


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `graph` (as a path that ends where it starts), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start, [])
        if found:
            return found
    return None


def test_the_cycle_finder_finds_cycles_through_type_checking_imports():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from charlstm.generation.model import CharModel\n"
    )
    graph = {"state": imported(tree, "generation"), "model": {"state"}}
    assert graph["state"] == {"model"}
    assert cycle(graph) == ["model", "state", "model"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    trees = modules(package)
    graph = {name: imported(tree, package) & set(trees) - {name} for name, tree in trees.items()}
    assert cycle(graph) is None, f"import cycle in charlstm.{package}: {' -> '.join(cycle(graph) or [])}"


def own_private_names(tree: ast.Module) -> set[str]:
    """The underscore names a module defines: functions, classes, methods, attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return {n for n in names if n.startswith("_")}


def private_reads(tree: ast.Module) -> list[str]:
    """Reads of another module's underscore names: `x._name` that this module does not define itself, and
    `from charlstm... import _name`."""
    own = own_private_names(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr not in own:
                out.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charlstm"):
            out += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")]
    return out


def test_the_private_name_check_sees_reads_of_other_modules_names():
    assert private_reads(ast.parse("def f(model):\n    return model._chars\n")) == ["line 2: ._chars"]
    assert private_reads(ast.parse("class A:\n    def __init__(self):\n        self._x = 1\n"
                                   "def f(a):\n    return a._x\n")) == []
    assert private_reads(ast.parse("from charlstm.generation.state import _same\n")) == ["line 1: import _same"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_reads_another_modules_private_names(package):
    found = {name: reads for name, tree in modules(package).items() if (reads := private_reads(tree))}
    assert not found, f"charlstm.{package} reads private names of other modules: {found}"
