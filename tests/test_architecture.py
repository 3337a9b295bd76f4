"""The product's import graph, walked with ``ast``: no cycles, click only in the CLI, rooms layered.

Map: ``_graph()`` reads every module of the product packages and records each ``import`` and
``from ... import`` (lazy ones inside functions too) as an edge between product modules;
``_cycles()`` finds strongly connected components; each test below states one rule and, when it
fails, lists the offending edges.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shipyard", "agent", "sandbox", "server", "autoscaler", "scheduler")

Edges = dict[str, set[str]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=1)
def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_package(name: str) -> bool:
    return _modules()[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.AST) -> list[str]:
    """Every module named by one import statement (a submodule when ``from pkg import mod``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    source = _absolute(module, node)
    named = [f"{source}.{alias.name}" for alias in node.names]
    return [name if name in _modules() else source for name in named]


def _owner(name: str) -> str | None:
    """The product module an imported name belongs to (longest known prefix), or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in _modules():
            return candidate
        parts.pop()
    return None


@lru_cache(maxsize=1)
def _raw_imports() -> dict[str, set[str]]:
    """module -> every dotted name it imports (product or not)."""
    imports: dict[str, set[str]] = {}
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            names.update(_targets(module, node))
        imports[module] = names
    return imports


@lru_cache(maxsize=1)
def _graph() -> Edges:
    graph: Edges = {}
    for module, names in _raw_imports().items():
        owners = {_owner(name) for name in names}
        graph[module] = {owner for owner in owners if owner and owner != module}
    return graph


def _cycles(graph: Edges) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = _pop_component(stack, on_stack, node)
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _pop_component(stack: list[str], on_stack: set[str], root: str) -> list[str]:
    component: list[str] = []
    while True:
        node = stack.pop()
        on_stack.discard(node)
        component.append(node)
        if node == root:
            return component


def _in(module: str, *rooms: str) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def _is_core(module: str) -> bool:
    excluded = ("shipyard.cli", "shipyard.client", "shipyard.__main__")
    return _in(module, "shipyard") and not _in(module, *excluded)


def _violations(allowed_from, forbidden) -> list[str]:
    """Edges from modules matching ``allowed_from`` to product modules matching ``forbidden``."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if allowed_from(module)
        for target in targets
        if forbidden(target)
    )


def _report(rule: str, bad: list[str]) -> str:
    return rule + ":\n  " + "\n  ".join(bad)


def test_the_walk_sees_the_product():
    graph = _graph()
    assert "agent.daemon.loop" in graph and "server.app" in graph
    assert graph["agent.daemon.loop"], "the walk found no imports in agent.daemon.loop"


def test_no_import_cycle():
    graph = _graph()
    cycles = _cycles(graph)
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("cycle: " + ", ".join(component))
        lines += [f"    {m} -> {t}" for m in component for t in sorted(graph[m] & members)]
    assert not cycles, "import cycles between product modules:\n" + "\n".join(lines)


def test_click_only_in_the_cli():
    bad = sorted(
        module
        for module, names in _raw_imports().items()
        if not _in(module, "shipyard.cli")
        and any(name == "click" or name.startswith("click.") for name in names)
    )
    assert not bad, _report("click imported outside shipyard/cli/", bad)


def test_nothing_imports_the_cli_but_main():
    bad = _violations(
        lambda m: not _in(m, "shipyard.cli") and m != "shipyard.__main__",
        lambda t: _in(t, "shipyard.cli"),
    )
    assert not bad, _report("shipyard.cli imported from outside the CLI", bad)


def test_core_imports_only_itself():
    bad = _violations(_is_core, lambda t: not _is_core(t))
    assert not bad, _report("shipyard core imports beyond itself", bad)


def test_client_imports_only_core():
    bad = _violations(
        lambda m: _in(m, "shipyard.client"),
        lambda t: not (_is_core(t) or _in(t, "shipyard.client")),
    )
    assert not bad, _report("shipyard.client imports beyond shipyard core", bad)


def test_sandbox_imports_only_core():
    bad = _violations(
        lambda m: _in(m, "sandbox"), lambda t: not (_is_core(t) or _in(t, "sandbox"))
    )
    assert not bad, _report("sandbox imports beyond shipyard core", bad)


def test_agent_does_not_import_the_services():
    bad = _violations(
        lambda m: _in(m, "agent"), lambda t: _in(t, "server", "autoscaler", "scheduler")
    )
    assert not bad, _report("agent imports server/autoscaler/scheduler", bad)


def test_server_imports_no_client_side():
    bad = _violations(
        lambda m: _in(m, "server"),
        lambda t: _in(t, "agent", "sandbox", "autoscaler", "scheduler", "shipyard.client", "shipyard.cli"),
    )
    assert not bad, _report("server imports client-side code", bad)


def test_autoscaler_and_scheduler_stay_in_their_lanes():
    bad = _violations(
        lambda m: _in(m, "autoscaler"),
        lambda t: _in(t, "agent", "sandbox", "server", "scheduler", "shipyard.cli"),
    ) + _violations(
        lambda m: _in(m, "scheduler"),
        lambda t: _in(t, "agent", "sandbox", "server", "autoscaler", "shipyard.cli"),
    )
    assert not bad, _report("autoscaler/scheduler import beyond client and core", bad)
