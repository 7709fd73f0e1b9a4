"""The dependency rule, checked on the source: arrows point down and the step's layers import no
module above them (imports under ``if TYPE_CHECKING:`` are type names only and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "kvlab"

# module prefix -> prefixes it must never import at run time
FORBIDDEN = {
    "kvlab.allocator": ("kvlab.scheduler", "kvlab.engine", "kvlab.executor", "kvlab.commit", "kvlab.server"),
    "kvlab.scheduler": ("kvlab.engine", "kvlab.executor", "kvlab.server"),
    "kvlab.commit": ("kvlab.scheduler", "kvlab.engine", "kvlab.executor", "kvlab.allocator", "kvlab.server"),
    "kvlab.request": ("kvlab.scheduler", "kvlab.engine", "kvlab.executor", "kvlab.allocator", "kvlab.commit"),
    "kvlab.executor": ("kvlab.scheduler", "kvlab.engine", "kvlab.allocator", "kvlab.server", "kvlab.calibrate"),
    "kvlab.hardware": ("kvlab.calibrate", "kvlab.executor", "kvlab.engine"),
    "kvlab.machine": ("kvlab.calibrate", "kvlab.executor", "kvlab.engine", "kvlab.manifest"),
    "kvlab.models": ("kvlab.executor", "kvlab.scheduler", "kvlab.engine", "kvlab.allocator", "kvlab.server"),
    "kvlab.kernels": ("kvlab.executor", "kvlab.models", "kvlab.scheduler", "kvlab.engine", "kvlab.allocator",
                      "kvlab.commit", "kvlab.server"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, type_checking: bool = False) -> set[str]:
    """kvlab modules ``path`` imports; with ``type_checking`` also those under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if not type_checking and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("kvlab")}


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_runs_back_up_the_layers(layer):
    bad = []
    for name, path in MODULES.items():
        if name == layer or name.startswith(layer + "."):
            for imp in runtime_imports(path):
                if any(imp == f or imp.startswith(f + ".") for f in FORBIDDEN[layer]):
                    bad.append(f"{name} imports {imp}")
    assert not bad, bad


def test_no_import_cycle_between_kvlab_modules():
    """Type-only imports count here: two modules that name each other are one concept split badly
    (the allocator report modules and their allocators did)."""
    graph = {n: {i for i in runtime_imports(p, type_checking=True) if i in MODULES and i != n}
             for n, p in MODULES.items()}
    # A package's __init__ importing its own submodules is how registration works, not a cycle.
    def edges(n: str) -> set[str]:
        return {m for m in graph[n] if not (m.startswith(n + ".") and MODULES[n].name == "__init__.py")}

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in edges(n):
            if state.get(m) == 1:
                if not n.startswith(m + "."):  # a submodule importing its own package
                    raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
