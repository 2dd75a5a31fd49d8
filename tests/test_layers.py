"""Imports flow one way (docs/architecture.md "Imports flow one way"), read from the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {
    "config": set(),
    "drivers": {"config"},
    "optimizer": {"config"},
    "simulators": {"config", "optimizer.curves"},
    "controller": {"config", "drivers", "optimizer"},
    "edge": {"config", "drivers", "optimizer", "controller"},
    "twin": {"config", "drivers", "optimizer", "simulators", "controller", "edge", "factory"},
}


def sparcs_imports(path: Path) -> set[str]:
    """The sparcs modules a file imports, without the ``sparcs.`` prefix (at any depth, lazy ones too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparcs."):
            out.add(node.module.removeprefix("sparcs."))
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("sparcs.") for a in node.names if a.name.startswith("sparcs.")}
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_packages_below_it(package):
    allowed = ALLOWED[package] | {package}
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        for module in sparcs_imports(path):
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                wrong.append(f"{path.relative_to(REPO)} imports sparcs.{module}")
    assert not wrong, "\n".join(wrong)
