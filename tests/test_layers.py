"""The package's layers, read from its own imports: each subpackage imports only the layers
below it (foundations, metrics, data, training, unlearning, forget sets, reporting, config,
jobs), and no module imports itself back through others."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "klomflow"

# Bottom up; a module belongs to the first entry its dotted name starts with.
LAYERS = [
    ("foundations", ("klomflow.io", "klomflow.logs", "klomflow.versions", "klomflow.options",
                     "klomflow.fingerprints",
                     "klomflow.seeds")),
    ("metrics", ("klomflow.metrics",)),
    ("data", ("klomflow.data",)),
    ("training", ("klomflow.training",)),
    ("unlearning", ("klomflow.unlearning",)),
    ("forget_sets", ("klomflow.forget_sets",)),
    ("reporting", ("klomflow.reporting",)),
    ("config", ("klomflow.config",)),
    ("jobs", ("klomflow.jobs", "klomflow.job_server", "klomflow.job_control", "klomflow.cli")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(name: str) -> int:
    if name == "klomflow":  # the package itself holds only __version__
        return 0
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def imported_modules(source: str) -> set[str]:
    """Every klomflow module a source imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("klomflow")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("klomflow"):
            for alias in node.names:  # `from klomflow.x import y`: y may be a module
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


GRAPH = {name: imported_modules(path.read_text()) - {name} for name, path in MODULES.items()}


def upward_imports(graph: dict) -> list[str]:
    return [f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} "
            f"({LAYERS[layer_of(target)][0]})"
            for name, targets in graph.items() for target in sorted(targets)
            if layer_of(target) > layer_of(name)]


def cycles(graph: dict) -> list[list[str]]:
    """Every cycle's members (strongly connected components of more than one module)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
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


def test_every_module_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports(GRAPH) == []


def test_no_import_cycle():
    # A package imports its modules only through its __init__; a cycle through an
    # __init__ that re-exports a module is still a cycle.
    assert cycles(GRAPH) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    broken = {"klomflow.io": {"klomflow.config"}, "klomflow.config": {"klomflow.io"}}
    assert upward_imports(broken) == ["klomflow.io (foundations) imports klomflow.config (config)"]
    assert cycles(broken) == [["klomflow.config", "klomflow.io"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_hold_one_role_each(name):
    """About 400 lines at most: a module past that holds more than one role."""
    assert len(MODULES[name].read_text().splitlines()) <= 420, name
