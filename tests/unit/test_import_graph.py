"""The package's import graph: no cycle, and workflow code never reaches the executor.

The graph is built from the source (``ast``), not by importing: an edge for
every ``import`` and ``from ... import`` of a module of ``fluxo``, wherever it
stands (at module level, in a function, under ``if TYPE_CHECKING:``). A
``from package import name`` is an edge to the submodule when ``name`` is one,
else to the package. A package's ``__init__`` that Python runs before one of its
submodules is no edge of that submodule: the code states no such dependency.

One kind of edge is left out: an import under ``if TYPE_CHECKING:`` from one
module of a subpackage to another of the same subpackage. Such an import never
runs, and the executor's parts (``fluxo/_executor/``) name the run context that
composes them in their annotations, while the context imports them. Between
modules of different packages, or of ``fluxo`` itself, every import counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fluxo

PACKAGE = Path(fluxo.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = _module_names()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """``(imported module, under TYPE_CHECKING)`` for every import of a fluxo module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            guarded.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.append(full if full in MODULES else base)
        found += [(t, id(node) in guarded) for t in targets if t in MODULES and t != module]
    return found


def _subpackage(module: str) -> str:
    """The package directly holding ``module``, below ``fluxo`` itself ("" for fluxo's own)."""
    parent = module.rpartition(".")[0]
    return parent if parent.count(".") >= 1 else ""


def graph() -> dict[str, set[str]]:
    """Every module of fluxo, and the modules of fluxo it imports (see the docstring)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for module, path in MODULES.items():
        for target, typing_only in _imports(module, path):
            within = _subpackage(module) != "" and _subpackage(module) == _subpackage(target)
            if not (typing_only and within):
                edges[module].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_sees_the_package() -> None:
    edges = graph()
    assert "fluxo._executor._context" in edges
    assert "fluxo._runtime" in edges["fluxo._definitions"]
    assert "fluxo._executor" in edges["fluxo._runner"]
    assert "fluxo.testing" in edges["fluxo.cli"]  # imported in a function: it counts


def test_no_import_cycle_inside_fluxo() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


AUTHORING = ["fluxo._definitions", "fluxo._workflow_api", "fluxo._runtime", "fluxo._saga"]
"""What workflow code is written with: it calls the runtime protocol, never the executor."""

RUNNING = ["fluxo._executor", "fluxo._runner", "fluxo._engine", "fluxo._worker", "fluxo._leases"]


def test_the_authoring_layer_never_imports_the_executor_or_the_engine() -> None:
    edges = graph()
    for module in AUTHORING:
        reached = reachable(edges, module)
        assert not [m for m in reached if m.startswith(tuple(RUNNING))], module


def _private_names_of_the_run_context() -> set[str]:
    """Every private attribute a RunContext has: assigned on ``self`` or defined in the class."""
    tree = ast.parse((PACKAGE / "_executor" / "_context.py").read_text(encoding="utf-8"))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RunContext"]
    names = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("_"):
            names.add(node.name)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and node.attr.startswith("_")
        ):
            names.add(node.attr)
    return {name for name in names if not name.startswith("__")}


def test_no_module_outside_the_executor_touches_a_run_contexts_private_attributes() -> None:
    private = _private_names_of_the_run_context()
    assert {"_cursor", "_record_many", "_cancel_delivered", "_unwinding"} <= private
    offenders = []
    for module, path in MODULES.items():
        if module.startswith("fluxo._executor"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in private
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                offenders.append(f"{module}:{node.lineno} .{node.attr}")
    assert offenders == []
