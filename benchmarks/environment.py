"""Where and with what a benchmark ran: package versions, git commit, machine.

Example
-------
>>> sorted(package_versions(["numpy"]))
['numpy', 'python']
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

REPORTED_PACKAGES = ("torch", "torchvision", "nni", "nni-topo-pruner", "thop", "gudhi", "pyeasyga", "numpy",
                     "scipy", "matplotlib", "tqdm")


def package_versions(names: Iterable[str] = REPORTED_PACKAGES) -> Dict[str, Optional[str]]:
    """Installed version of each package (``None`` if absent), plus Python's."""
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(repo: Path) -> Dict[str, Optional[object]]:
    """Commit hash and whether the working tree has uncommitted changes (``None`` without git)."""
    def git(*args: str) -> Optional[str]:
        try:
            result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    if commit is None:
        # no .git (e.g. inside the Docker image): the image records the commit it was built from
        built_from = os.environ.get("NNI_TOPO_PRUNER_SOURCE_COMMIT") or None
        return {"commit": built_from, "dirty": None, "source": "NNI_TOPO_PRUNER_SOURCE_COMMIT" if built_from else None}
    return {"commit": commit, "dirty": None if status is None else bool(status), "source": "git"}


def machine_info(device: torch.device) -> Dict[str, object]:
    """CPU, thread and accelerator facts that bear on timings."""
    info: Dict[str, object] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
        "python_executable": sys.executable,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
