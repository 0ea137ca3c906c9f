"""The package's layers import only downwards, with no hidden cycle: checked on every import
statement (function-local ones included), so a cycle cannot hide behind a deferred import."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmresearch"

#: layer -> the layers it may import (besides itself). The entry points (train, eval, search,
#: ablate) sit on top and may import anything.
ALLOWED = {
    "utils": set(),
    "optim": {"utils"},
    "data": {"utils"},
    "modules": {"utils", "data"},
    "evaluation": {"utils", "data", "modules"},
    "models": {"utils", "data", "modules", "evaluation", "optim"},
    "callbacks": {"utils", "data", "modules", "evaluation", "models", "optim"},
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below_it(layer):
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "mmresearch" or len(parts) < 2 or parts[1] == layer:
                continue
            target = parts[1]
            if target in ALLOWED and target not in ALLOWED[layer] or target not in ALLOWED:
                if target not in ALLOWED and not (PACKAGE / f"{target}.py").exists():
                    continue  # mmresearch itself (e.g. CONFIG_DIR)
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not wrong, "\n".join(wrong)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_between_modules():
    """Module-level graph over every import (deferred ones included): acyclic. A package's
    ``__init__`` re-exporting its own modules is not a cycle of the layering and is left out."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not (path.name == "__init__.py" and imported.startswith(name + ".")):
                if not name.startswith(imported + ".") or modules[imported].name != "__init__.py":
                    deps.add(imported)
        graph[name] = deps
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
