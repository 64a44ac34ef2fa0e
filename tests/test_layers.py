"""bastion's modules import one way: no cycle among them, whatever kind of import.

import-linter's layers contract (pyproject.toml, run by ``make lint``) says which layer
may import which; this reads every ``import`` statement of ``src/bastion`` itself —
module-level, under ``TYPE_CHECKING`` and inside functions — and finds no cycle, so the
contract's order is a real order and not one that lazy imports hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "bastion").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The bastion modules ``name`` imports, in any statement anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_no_import_cycle_among_bastions_modules() -> None:
    """Every import counted, lazy and type-only ones included: no cycle."""
    found = graph()
    assert len(found) > 30
    assert sum(len(targets) for targets in found.values()) > 100
    assert cycles(found) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    """Control: an upward import (sessions → app, as the old design had) is a cycle."""
    found = graph()
    found["bastion.sessions"].add("bastion.app")
    assert ["bastion.app", "bastion.sessions"] in [
        [m for m in cycle if m in ("bastion.app", "bastion.sessions")] for cycle in cycles(found)
    ]


def test_nothing_below_the_facade_imports_it() -> None:
    """Only the package root, the command line and the test client import bastion.app:
    the stages get a Runtime or plain values, never Bastion."""
    importers = sorted(name for name, targets in graph().items() if "bastion.app" in targets)
    assert importers == ["bastion", "bastion.cli", "bastion.testing"]
