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
from threadpoolctl import threadpool_info, threadpool_limits

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


def limit_threads(threads: int) -> str:
    """Run this process's compute on ``threads`` threads: torch's intra-op pool *and* the native
    pools NumPy and SciPy use (OpenBLAS, OpenMP; through threadpoolctl), for the rest of the process.

    A timing benchmark must limit both: NumPy's BLAS keeps its default thread count when only
    torch's is set, so a NumPy product (the topological engine's distances) runs on every core
    and its spinning threads are billed as CPU time. Returns the setting, for the report.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # not a context: the limit holds until the process ends
    return describe_threads()


def describe_threads() -> str:
    """The thread counts in effect: torch's, and each native pool's (e.g. ``openblas 1``)."""
    pools = sorted({f"{pool['internal_api']} {pool['num_threads']}" for pool in threadpool_info()})
    return f"{torch.get_num_threads()} torch threads" + "".join(f", {pool}" for pool in pools)


def git_state(repo: Path, ignore: Iterable[Path] = ()) -> Dict[str, Optional[object]]:
    """Commit hash and whether tracked files differ from it (``None`` without git).

    Changes under ``ignore`` (a benchmark's own output directory, when it sits in the repository)
    do not count: the outputs change while the run goes, and the flag is meant to say whether the
    *code* that ran differs from the commit. ``changed`` lists the differing paths (at most 20).
    """
    def git(*args: str) -> Optional[str]:
        try:
            result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        # no .git (e.g. inside the Docker image): the image records the commit it was built from
        built_from = os.environ.get("NNI_TOPO_PRUNER_SOURCE_COMMIT") or None
        return {"commit": built_from, "dirty": None, "source": "NNI_TOPO_PRUNER_SOURCE_COMMIT" if built_from else None}
    root = Path(repo).resolve()
    excluded = []
    for path in ignore:
        try:
            excluded.append(f":(exclude){Path(path).resolve().relative_to(root).as_posix()}")
        except ValueError:  # outside the repository: git does not see it anyway
            continue
    status = git("diff", "--name-only", "HEAD", "--", ".", *excluded)  # staged or not, tracked files only
    changed = None if status is None else [line for line in status.splitlines() if line.strip()]
    return {"commit": commit, "dirty": None if changed is None else bool(changed),
            "changed": None if changed is None else changed[:20], "source": "git"}


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
