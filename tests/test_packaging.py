"""What pyproject.toml declares matches what the library imports."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_thop_is_a_benchmark_dependency_not_the_librarys():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "thop" not in _names(project["dependencies"])
    assert "thop" in _names(project["optional-dependencies"]["bench"])
    assert "thop" in _names(project["optional-dependencies"]["dev"])
    importers = [str(p.relative_to(ROOT)) for p in (ROOT / "nni_topo_pruner").rglob("*.py")
                 if re.search(r"^\s*(import thop|from thop\b)", p.read_text(), re.MULTILINE)]
    assert not importers, f"the library imports thop in {importers}: declare it a core dependency again"
