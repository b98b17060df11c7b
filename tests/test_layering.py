"""The package's modules import one another one way: no import cycles, reports never reach back.

Imports are read from the source (module level and inside functions alike), so a cycle hidden
in a lazy import is found too.  A package's ``__init__`` importing its own submodules is how a
package exposes them, not a cycle, and is left out of the graph.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bids_mdpp"

#: Modules that run the whole pipeline; the stages they orchestrate never import them.
ORCHESTRATORS = ("bids_mdpp.cli", "bids_mdpp.participant", "bids_mdpp.group")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The ``bids_mdpp`` modules that ``path`` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    is_package = path.name == "__init__.py"
    return {m for m in found if m in known and m != name
            and not (is_package and m.startswith(name + "."))}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_cycle_finder_sees_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_reads_lazy_imports():
    graph = import_graph()
    # bids_mdpp.group imports the report writer inside a function.
    assert "bids_mdpp.reports.group" in graph["bids_mdpp.group"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("prefix", ["bids_mdpp.reports", "bids_mdpp.preproc", "bids_mdpp.nn",
                                    "bids_mdpp.interfaces", "bids_mdpp.workflows"])
def test_stages_do_not_import_the_orchestrators(prefix):
    graph = import_graph()
    reaching_back = {(module, target) for module, targets in graph.items()
                     if module == prefix or module.startswith(prefix + ".")
                     for target in targets
                     if any(target == o or target.startswith(o + ".") for o in ORCHESTRATORS)}
    assert reaching_back == set()
