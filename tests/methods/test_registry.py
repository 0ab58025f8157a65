"""The method registry: torch-free, in agreement with the implementations, and no method
module importing another."""

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import klomflow.unlearning.methods
from klomflow.unlearning.methods import METHODS, REGISTRY
from klomflow.unlearning.methods.registry import MethodSpec

METHODS_DIR = Path(klomflow.unlearning.methods.__file__).parent


def test_the_registry_and_the_config_check_import_no_torch():
    code = ("import sys, klomflow.unlearning.methods.registry, klomflow.unlearning.methods, "
            "klomflow.config; "
            "from klomflow.unlearning.methods import METHODS, REGISTRY; "
            "assert sorted(METHODS) == sorted(REGISTRY); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_implementation_is_its_registry_entry(name):
    spec = REGISTRY[name]
    method = spec.load()
    assert method.unlearn.__module__ == spec.module == f"klomflow.unlearning.methods.{name}"
    for field in dataclasses.fields(MethodSpec):
        assert getattr(method, field.name) == getattr(spec, field.name), (name, field.name)
    assert METHODS[name] is method


def test_every_method_module_is_registered():
    shared = {"__init__", "base", "fisher", "matching", "registry", "user"}
    modules = {path.stem for path in METHODS_DIR.glob("*.py")} - shared
    assert modules == set(REGISTRY)


def imported_modules(path: Path) -> set:
    """Fully qualified names of the modules (and names) a file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the klomflow.unlearning.methods package
                base = ".".join(["klomflow", "unlearning", "methods"][: 4 - node.level] +
                                ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def method_modules_imported(path: Path) -> set:
    return {name.split(".")[3] for name in imported_modules(path)
            if name.startswith("klomflow.unlearning.methods.") and name.split(".")[3] in REGISTRY}


@pytest.mark.parametrize("path", sorted(METHODS_DIR.glob("*.py")), ids=lambda path: path.stem)
def test_no_module_imports_a_method_module_but_its_own(path):
    """Methods share code through base, fisher and matching, never through each other."""
    assert method_modules_imported(path) <= {path.stem}


def test_the_import_check_sees_a_method_importing_another(tmp_path):
    module = tmp_path / "pbu.py"
    module.write_text("from klomflow.unlearning.methods.fisher_forgetting import fisher_diagonal\n"
                      "from klomflow.unlearning.methods import random_label\n"
                      "from . import dmm\n"
                      "import klomflow.unlearning.methods.salun\n")
    assert method_modules_imported(module) == {"fisher_forgetting", "random_label", "dmm",
                                                "salun"}


def test_methods_table_loads_lazily_and_takes_stand_ins():
    table = klomflow.unlearning.methods.LazyMethods(REGISTRY)
    assert list(table) == list(REGISTRY) and len(table) == len(REGISTRY)
    stand_in = object()
    table["do_nothing"] = stand_in
    assert table["do_nothing"] is stand_in
    del table["do_nothing"]
    assert table["do_nothing"] is REGISTRY["do_nothing"].load()
