"""The package's shape: no import circles between lora_ft's modules, no module over 450 lines.

Every import statement counts, wherever it stands: at module level, inside a function (a lazy import), or under
``if TYPE_CHECKING:``. A lazy or type-only import defers or hides the crash a circle would cause, but the two modules
still each depend on the other: a lower layer reaches up. Lazy imports stay welcome for heavy third-party packages
(torch, matplotlib) and for loading one layer's implementations on demand; only imports of lora_ft modules form edges.

Importing ``lora_ft.tasks.base`` from outside ``lora_ft.tasks`` first runs ``lora_ft/tasks/__init__.py``, so such an
import is also an edge to the package ``lora_ft.tasks``; a module importing its siblings is not (its package is
already being initialised).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "lora_ft"
MAX_LINES = 450


def _module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package_dir: Path) -> dict[str, Path]:
    return {_module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of ``modules`` (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The lora_ft modules an import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            base_parts = package[: len(package) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # `from pkg import sub` names the submodule pkg.sub when there is one, else a name defined in pkg.
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    return [found for name in names if (found := _known_prefix(name, modules)) is not None]


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, dict[str, int]]:
    """module -> {imported lora_ft module: line of the first such import}."""
    modules = _modules(package_dir)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        if is_package:
            own_packages.add(module)
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, module, is_package, modules):
                # The target and every package above it that this module is not already inside (they run first).
                parts = target.split(".")
                for end in range(1, len(parts) + 1):
                    step = ".".join(parts[:end])
                    if step in modules and step not in own_packages and step != module:
                        edges.setdefault(step, node.lineno)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest circle through each group of mutually dependent modules (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules (~70)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)

    cycles = []
    for component in components:
        start, members = component[0], set(component)
        # Breadth-first from start back to start, inside the component: a shortest circle.
        paths = {start: [start]}
        queue = [start]
        cycle = None
        while queue and cycle is None:
            node = queue.pop(0)
            for target in sorted(graph[node]):
                if target == start:
                    cycle = paths[node] + [start]
                    break
                if target in members and target not in paths:
                    paths[target] = paths[node] + [target]
                    queue.append(target)
        cycles.append(cycle)
    return sorted(cycles)


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    modules = _modules(PACKAGE_DIR)
    steps = []
    for source, target in zip(cycle, cycle[1:]):
        where = modules[source].relative_to(PACKAGE_DIR.parent)
        steps.append(f"{source} ({where}:{graph[source][target]})")
    return " -> ".join(steps + [cycle[-1]])


def test_no_import_circles():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import circles (module (file:line of the import) -> imported module):\n" + "\n".join(
        describe_cycle(c, graph) for c in cycles
    )


def test_no_module_over_450_lines():
    too_long = {
        str(path.relative_to(PACKAGE_DIR.parent)): n
        for path in PACKAGE_DIR.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them along their seams): {too_long}"


# The walker itself, on a made-up package: it must find what it is meant to find.


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


@pytest.mark.parametrize(
    "files, expected",
    [
        # module level, relative
        ({"__init__.py": "", "a.py": "from .b import x\n", "b.py": "from . import a\n"}, [["pkg.a", "pkg.b", "pkg.a"]]),
        # lazy (inside a function) and type-only imports count
        (
            {
                "__init__.py": "",
                "a.py": "def f():\n    from pkg.b import x\n",
                "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",
            },
            [["pkg.a", "pkg.b", "pkg.a"]],
        ),
        # importing a submodule of another package runs that package's __init__ first
        (
            {
                "__init__.py": "",
                "config.py": "from pkg.tasks.names import NAMES\n",
                "tasks/__init__.py": "from .e2e import E2E\n",
                "tasks/names.py": "NAMES = ()\n",
                "tasks/e2e.py": "from ..config import X\n",
            },
            [["pkg.config", "pkg.tasks", "pkg.tasks.e2e", "pkg.config"]],
        ),
        # a package re-exporting its submodules, and submodules importing siblings: no circle
        (
            {
                "__init__.py": "from .a import x\n",
                "a.py": "from .b import y\nimport os\n",
                "b.py": "from pkg import errors\n",
                "errors.py": "",
            },
            [],
        ),
    ],
)
def test_walker_finds_circles(tmp_path, files, expected):
    graph = import_graph(_write_package(tmp_path, files))
    assert find_cycles(graph) == expected
