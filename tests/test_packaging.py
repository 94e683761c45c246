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


def test_setup_refuses_to_start_a_venv_without_the_disk_space_it_needs(tmp_path):
    """scripts/setup.sh checks free space before creating .venv (a full disk once broke CI mid-install)."""
    import subprocess
    import sys

    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "setup.sh").write_text((ROOT / "scripts" / "setup.sh").read_text())
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "SETUP_MIN_FREE_GB": "1e9"}
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "GB free on the disk" in done.stderr and "SETUP_MIN_FREE_GB" in done.stderr
    assert not (tmp_path / ".venv").exists()
