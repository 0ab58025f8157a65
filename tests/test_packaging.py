"""A base install (`pip install -e .`, no extras) has what `snakemake --report` imports.

A real fresh virtual environment would reinstall torch (minutes, gigabytes); instead
this walks the installed packages' declared requirements from pyproject.toml's base
dependencies, as pip would resolve them, and leaves out the test extra, whose pytest
brings pygments in and so once hid its absence.
"""

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def base_closure() -> set[str]:
    """Canonical names of every distribution a base install pulls in."""
    pending = [Requirement(text) for text in
               tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    seen: dict[str, set[str]] = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in seen and extras <= seen[name]:
            continue
        seen[name] = seen.get(name, set()) | extras
        for text in importlib.metadata.requires(requirement.name) or []:
            dependency = Requirement(text)
            if dependency.marker is None or any(
                    dependency.marker.evaluate({"extra": extra}) for extra in seen[name] | {""}):
                pending.append(dependency)
    return set(seen)


def report_requirements() -> set[str]:
    """What snakemake's HTML report needs beyond snakemake itself: its `reports` extra."""
    names = set()
    for text in importlib.metadata.requires("snakemake"):
        requirement = Requirement(text)
        if requirement.marker is not None and requirement.marker.evaluate({"extra": "reports"}) \
                and not requirement.marker.evaluate({"extra": ""}):
            names.add(canonicalize_name(requirement.name))
    return names


def test_the_base_install_provides_what_the_report_imports():
    needed = report_requirements() | {"jinja2", "matplotlib"}
    assert "pygments" in needed  # snakemake's own report check names it
    missing = needed - base_closure()
    assert not missing, f"pyproject.toml's base dependencies lack {sorted(missing)}"


def test_the_test_extra_is_not_counted():
    # The closure is of the base dependencies only: pytest (the test extra) is not in it.
    assert "pytest" not in base_closure()
