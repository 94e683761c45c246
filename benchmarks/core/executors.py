"""Where the records of a benchmark run: in this process (``local``, the default) or as Ray tasks
(``ray``) on a local or remote Ray cluster.

An executor maps a module-level function ``function(shared, task)`` over tasks and yields
``(task, outcome)`` as each finishes, in completion order; ``outcome`` is the function's return
value or the exception that prevented it (a Ray worker that died, say). ``shared`` holds the
large read-only inputs (configuration, baseline weights, data arrays): Ray ships it once
through its object store instead of once per task.

>>> list(LocalExecutor().map(_add, 10, [1, 2]))
[(1, 11), (2, 12)]
>>> make_executor("slurm")
Traceback (most recent call last):
...
ValueError: --executor 'slurm' is not an executor; choose one of ['local', 'ray'] (for Slurm, start a Ray cluster inside the allocation and use --executor ray; see docs/benchmarks.md)
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

_logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RAY_MISSING = ("--executor ray needs the Ray library, which is an optional extra: install it with "
               "`.venv/bin/python -m pip install -c requirements/tested.txt -e '.[ray]'` (or `pip install ray`)")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class ExecutorError(RuntimeError):
    """The executor cannot run this benchmark as asked (Ray missing, resources the cluster lacks)."""


Task = Any
Outcome = Any  # the function's result, or the exception that prevented it


def _add(shared: int, task: int) -> int:  # for the doctest
    return shared + task


class LocalExecutor:
    """Run every task in this process, one after the other (exceptions propagate)."""

    name = "local"

    def map(self, function: Callable[[Any, Task], Any], shared: Any,
            tasks: Iterable[Task]) -> Iterator[Tuple[Task, Outcome]]:
        for task in tasks:
            yield task, function(shared, task)


def _in_ray_worker(function: Callable[[Any, Task], Any], shared: Any, task: Task, threads: int) -> Any:
    """Run ``function`` in a Ray worker with a fixed torch thread count (results depend on it)."""
    import torch

    # INFO lines of the benchmark (per epoch, per record) reach the driver's console through Ray
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    return function(shared, task)


class RayExecutor:
    """Submit every task as a Ray task requesting ``num_cpus`` CPUs and ``num_gpus`` GPUs.

    Connects to ``address`` (default: ``RAY_ADDRESS``, else the cluster ``ray.init()`` finds
    or starts on this machine); uses Ray as it is when the caller already called ``ray.init``.
    Workers import this repository's ``benchmarks`` package from the same path as the driver
    (``PYTHONPATH`` is set for them), so on several machines the repository and its
    environment must sit at the same path on each node.
    """

    name = "ray"

    def __init__(self, num_cpus: float = 1.0, num_gpus: float = 0.0, threads: int = 1,
                 address: Optional[str] = None):
        self.num_cpus, self.num_gpus, self.threads = num_cpus, num_gpus, threads
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS") or None

    def _ray(self) -> Tuple[Any, bool]:
        """The ``ray`` module, and whether this executor started (so must stop) the connection."""
        try:
            import ray
        except ImportError as error:
            raise ExecutorError(RAY_MISSING) from error
        if ray.is_initialized():
            return ray, False
        ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
        return ray, True

    def _check_resources(self, ray: Any) -> None:
        total = ray.cluster_resources()
        for key, wanted, option in (("CPU", self.num_cpus, "ray_num_cpus"), ("GPU", self.num_gpus, "ray_num_gpus")):
            if wanted > total.get(key, 0.0):
                # an infeasible request would wait forever instead of failing
                raise ExecutorError(f"{option}={wanted:g} but the Ray cluster has {total.get(key, 0.0):g} {key}(s) in "
                                   f"all; lower it with --set {option}=... or add nodes with {key}s")

    def map(self, function: Callable[[Any, Task], Any], shared: Any,
            tasks: Iterable[Task]) -> Iterator[Tuple[Task, Outcome]]:
        tasks = list(tasks)
        if not tasks:
            return
        ray, started = self._ray()
        pending: Dict[Any, Task] = {}
        try:
            self._check_resources(ray)
            total = ray.cluster_resources()
            _logger.info("ray: %d task(s) on a cluster of %g CPU(s) and %g GPU(s); per task %g CPU(s), %g GPU(s), "
                         "%d torch thread(s)", len(tasks), total.get("CPU", 0.0), total.get("GPU", 0.0),
                         self.num_cpus, self.num_gpus, self.threads)
            python_path = os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))
            remote = ray.remote(_in_ray_worker).options(
                num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0,
                runtime_env={"env_vars": {"PYTHONPATH": python_path}})
            shared_ref = ray.put(shared)
            pending = {remote.remote(function, shared_ref, task, self.threads): task for task in tasks}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(done[0])
                try:
                    outcome = ray.get(done[0])
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as error:  # noqa: BLE001 - a dead worker or a lost task: the caller records it
                    outcome = error
                yield task, outcome
        finally:
            for ref in pending:  # interrupted: do not leave work running on the cluster
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


def ray_available() -> bool:
    """Whether the optional ``ray`` package imports."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def make_executor(name: str, num_cpus: float = 1.0, num_gpus: float = 0.0, threads: int = 1):
    """The executor called ``name`` (one of :data:`EXECUTORS`); ``num_cpus``, ``num_gpus`` and
    ``threads`` are the per-task requests of the ``ray`` executor (checked here, before any work:
    :class:`ExecutorError` if Ray is not installed)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        if not ray_available():
            raise ExecutorError(RAY_MISSING)
        return RayExecutor(num_cpus=num_cpus, num_gpus=num_gpus, threads=threads)
    raise ValueError(f"--executor {name!r} is not an executor; choose one of {list(EXECUTORS)} (for Slurm, start "
                     f"a Ray cluster inside the allocation and use --executor ray; see docs/benchmarks.md)")


__all__: List[str] = ["EXECUTORS", "ExecutorError", "LocalExecutor", "RayExecutor", "make_executor", "RAY_MISSING"]
