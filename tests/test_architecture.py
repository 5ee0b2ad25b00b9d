"""The shape DESIGN.md gives the code: no import circle anywhere in edc, and the domain (models, eCRF engine,
services, exports) imports without the web stack.

Both read the source or a fresh interpreter, never the app: no fixture, no database.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "edc"
# The web edge: only these may import Flask and its extensions (the API, the browser app, the CLI, the error
# handlers and the extension objects). Everything else must import without them.
WEB_EDGE = ("edc.api", "edc.web", "edc.cli", "edc.errors", "edc.extensions")
WEB_STACK = ("flask", "flask_migrate", "flask_smorest", "flask_sqlalchemy", "flask_swagger_ui", "marshmallow", "werkzeug")


def _modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, not <name>.__init__)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {imported module of the package: line of the first such import}.

    Imports anywhere in a module count (module level, inside functions, under TYPE_CHECKING): an import
    moved into a function to dodge a circle is still a circle. `from a.b import c` counts as importing
    a.b, and a.b.c too when c is a module; relative imports are resolved. The root package is the
    composition root (create_app wires everything), so importing a name from it counts only as importing
    the submodule of that name, as ../shared/tools/import_cycles.py counts it.
    """
    modules = _modules(root, package)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        base = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    parts = base.split(".")
                    source = ".".join(parts[: len(parts) - node.level + 1] + ([source] if source else []))
                targets = [source, *(f"{source}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                if target in modules and target not in (name, package):
                    graph[name].setdefault(target, node.lineno)
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
                components.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return components


def shortest_circle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One shortest circle through the component's first module: [a, b, ..., a]."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if target in members and target not in came_from:
                came_from[target] = node
                queue.append(target)
    raise AssertionError(f"{component} is not a strongly connected component")


def describe(graph: dict[str, dict[str, int]], modules: dict[str, Path], component: list[str], root: Path = ROOT) -> str:
    circle = shortest_circle(graph, component)
    steps = [f"  {a} imports {b}  ({modules[a].relative_to(root)}:{graph[a][b]})" for a, b in zip(circle, circle[1:])]
    return f"import circle among {len(component)} modules ({', '.join(component)}), e.g.:\n" + "\n".join(steps)


def test_no_import_circle_in_edc():
    graph = import_graph()
    cycles = import_cycles(graph)
    modules = _modules()
    assert not cycles, "\n\n".join(describe(graph, modules, component) for component in cycles)


def test_the_import_walk_sees_circles_hidden_in_functions(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "a.py").write_text("from . import b\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("def late():\n    from pkg.sub.c import thing\n")
    (tmp_path / "pkg" / "sub" / "c.py").write_text("import pkg.sub.a\nthing = 1\n")
    (tmp_path / "pkg" / "d.py").write_text("from pkg import sub\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.sub.b"] == {"pkg.sub.c": 2}
    assert import_cycles(graph) == [["pkg.sub.a", "pkg.sub.b", "pkg.sub.c"]]
    assert shortest_circle(graph, ["pkg.sub.a", "pkg.sub.b", "pkg.sub.c"]) == ["pkg.sub.a", "pkg.sub.b", "pkg.sub.c", "pkg.sub.a"]


def _web_stack_after_importing(modules: list[str]) -> dict[str, list[str]]:
    """Import the modules one after another in a fresh interpreter; for the first one that brings in the
    web stack, which of its packages it loaded ({} when none does)."""
    script = (
        "import importlib, json, sys\n"
        f"stack = {WEB_STACK!r}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted({m.split('.')[0] for m in sys.modules} & set(stack))\n"
        "    if loaded:\n"
        "        print(json.dumps({name: loaded}))\n"
        "        break\n"
        "else:\n"
        "    print('{}')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["edc.ecrf", "edc.services.entries", "edc.models", "edc.problems"])
def test_the_domain_imports_without_flask(module):
    assert _web_stack_after_importing([module]) == {}


def test_no_module_outside_the_web_edge_imports_flask():
    domain = [name for name in _modules() if not any(name == edge or name.startswith(f"{edge}.") for edge in WEB_EDGE)]
    assert "edc.services.entries" in domain and "edc.api.entries" not in domain
    assert _web_stack_after_importing(domain) == {}, "imported the web stack (DESIGN.md: services never import Flask)"
