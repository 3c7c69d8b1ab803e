"""The module graph as drawn: no import cycles, and the front end never knows the stages after it.

The graph is read from the source (ast), so it counts every import: at the top of a module, inside a
function (a lazy import is still a dependency) and under `if TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "compiler"

# Stages in pipeline order (spec -> ir -> render -> backends): a stage imports nothing from a stage after it.
STAGES = ("compiler.spec", "compiler.ir", "compiler.render", "compiler.backends")

Graph = Mapping[str, Mapping[str, int]]  # module -> {imported compiler module: line of the import}


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is named by its __init__)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _owner(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module that `name` (a module, or a name defined in one) lives in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.AST, module: str, is_package: bool, modules: Mapping[str, Path]) -> Iterator[str]:
    """The compiler modules one import statement names: `from a import b` names a.b when b is a module, else a."""
    if isinstance(node, ast.Import):
        found = [_owner(alias.name, modules) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        found = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _owner(base, modules)
            for alias in node.names
        ]
    else:
        return
    yield from (name for name in found if name is not None and name != module)


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """Every compiler module's imports of other compiler modules, with the line of each first import."""
    modules = module_names(package)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, module, path.name == "__init__.py", modules):
                edges.setdefault(target, getattr(node, "lineno", 0))
        graph[module] = edges
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
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
                    work.append((child, iter(sorted(graph.get(child, {})))))
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


def reachable(graph: Graph, start: str) -> dict[str, list[str]]:
    """Every module `start` loads, directly or through others, with one import chain to it.

    Importing a module runs its packages' __init__ first, so a module also reaches its parent packages.
    """
    chains = {start: [start]}
    todo = [start]
    while todo:
        module = todo.pop()
        parents = [module.rsplit(".", depth)[0] for depth in range(1, module.count("."))]
        for target in [*sorted(graph.get(module, {})), *parents]:
            if target not in chains and target in graph:
                chains[target] = [*chains[module], target]
                todo.append(target)
    return chains


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read_from_the_source() -> None:
    """The reader sees top-level, function-local and relative imports, and names a module, not a name in it."""
    graph = import_graph(PACKAGE)
    assert "compiler.spec.routing" in graph["compiler.ir.lower"]
    assert "compiler.render.documents" in graph["compiler.render"]
    assert "compiler.incremental" in graph["compiler.cli"]  # a lazy import, inside _build
    assert "compiler.rollout.rebuild" in graph["compiler.incremental"]  # lazy, only with a rollout.yaml
    assert "compiler.render" in graph["compiler.backends"]  # `from compiler.render import SidecarConfig`


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    """The compiler's import graph, read from the source once for the checks below (they only read it)."""
    return import_graph(PACKAGE)


def test_cycles_are_found() -> None:
    """The cycle finder is not vacuous: it reports a three-module ring and leaves a tree alone."""
    ring = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}}
    assert cycles(ring) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) == []


def test_no_import_cycles(graph: Graph) -> None:
    """No compiler module imports itself through others: each can be read, tested and loaded on its own."""
    found = cycles(graph)
    described = [
        ", ".join(f"{a} -> {b} (line {graph[a][b]})" for a in ring for b in sorted(graph[a]) if b in ring)
        for ring in found
    ]
    assert not found, "import cycles: " + "; ".join(described)


@pytest.mark.parametrize("stage", STAGES[:-1])
def test_a_stage_imports_no_later_stage(stage: str, graph: Graph) -> None:
    """spec knows no IR, rendering or backend; ir no rendering or backend; render no backend (directly or not)."""
    later = STAGES[STAGES.index(stage) + 1 :]
    leaks = [
        " -> ".join(chain)
        for module in sorted(graph)
        if _in(module, stage)
        for target, chain in sorted(reachable(graph, module).items())
        if any(_in(target, other) for other in later)
    ]
    assert not leaks, f"{stage} reaches a later stage: " + "; ".join(leaks[:5])


def test_the_spec_stands_alone(graph: Graph) -> None:
    """The front end (spec/) reaches nothing but itself and the diagnostics: it can be read and reused on its own."""
    allowed = ("compiler.spec", "compiler.diagnostics")
    leaks = [
        " -> ".join(chain)
        for module in sorted(graph)
        if _in(module, "compiler.spec")
        for target, chain in sorted(reachable(graph, module).items())
        if target != "compiler" and not any(_in(target, package) for package in allowed)
    ]
    assert not leaks, "the spec reaches beyond itself: " + "; ".join(leaks[:5])


# The library under the commands: none of it reaches what a command shows (compiler.commands) or the CLI.
LIBRARY = (
    *STAGES,
    "compiler.emit",
    "compiler.output",
    "compiler.incremental",
    "compiler.pipeline",
    "compiler.diff",
    "compiler.rollout",
    "compiler.drift",
)


def test_the_library_reaches_no_command(graph: Graph) -> None:
    """Presentation sits on top: the pipeline, diff, rollout and drift never import compiler.commands or the CLI."""
    leaks = [
        " -> ".join(chain)
        for module in sorted(graph)
        if any(_in(module, package) for package in LIBRARY)
        for target, chain in sorted(reachable(graph, module).items())
        if _in(target, "compiler.commands") or target == "compiler.cli"
    ]
    assert not leaks, "the library reaches a command: " + "; ".join(leaks[:5])
