"""Crash-safe files: write to a temporary sibling, then ``os.replace`` it into place.

A reader sees either the old file or the new one, never half a file, so Ctrl-C or a
killed process leaves nothing corrupt. Files found unreadable anyway (a disk fault, a hand
edit) are moved aside to ``NAME.corrupt`` and treated as missing, with a warning.

Example
-------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "record.json"
>>> atomic_write_json({"ok": 1}, path)
>>> load_json_or_none(path)
{'ok': 1}
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import pickle
import tempfile
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from nni_topo_pruner.fileio import atomic_write

_logger = logging.getLogger(__name__)


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    # one writer for the repository: nni_topo_pruner.fileio (temporary file, fsync, rename; the
    # new file gets open()'s mode, an existing one keeps its own)
    with atomic_write(path, mode) as stream:
        write(stream)


def finite_or_none(payload: Any) -> Any:
    """``payload`` with every NaN / infinite float replaced by ``None`` (strict JSON has no NaN).

    >>> finite_or_none({"loss": [1.0, float("nan")]})
    {'loss': [1.0, None]}
    """
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {key: finite_or_none(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [finite_or_none(value) for value in payload]
    return payload


def atomic_write_json(payload: Any, path: Path) -> None:
    """Write ``payload`` as indented strict JSON to ``path`` atomically (NaN / inf become ``null``)."""
    text = json.dumps(finite_or_none(payload), indent=2, allow_nan=False) + "\n"
    _atomic_write(path, lambda stream: stream.write(text), "w")


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic_write(path, lambda stream: stream.write(text), "w")


def atomic_write_bytes(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` atomically."""
    _atomic_write(path, lambda stream: stream.write(data), "wb")


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch  # here, not at the top: the lock and JSON helpers serve processes without torch

    _atomic_write(path, lambda stream: torch.save(payload, stream), "wb")


class UnwritablePathError(ValueError):
    """A directory or file the command must write cannot be written (a usage error, not a crash)."""


def writable_directory(path: Path, option: str) -> Path:
    """Create the directory ``path`` (and its parents) if needed and check that a file can be
    written in it; :class:`UnwritablePathError` naming ``option`` and ``path`` otherwise. The probe
    file is anonymous (deleted by the OS), so an existing directory is left as it was.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> writable_directory(folder / "out", "--out-dir") == folder / "out"
    True
    >>> (folder / "file").write_text("x")
    1
    >>> writable_directory(folder / "file", "--out-dir")
    Traceback (most recent call last):
    ...
    benchmarks.core.store.UnwritablePathError: --out-dir ... is a file, not a directory; pass a directory (it is created if missing)
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UnwritablePathError(f"{option} {path} is a file, not a directory; pass a directory (it is created "
                                  f"if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UnwritablePathError(f"{option} {path}: cannot write there ({error.strerror or error}); pass a "
                                  f"directory this user can write") from None
    return path


#: the errors of a path that cannot be written (or created) as asked: the user's to fix, not a crash
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.ENOTDIR, errno.EISDIR}


def unwritable_path_message(error: BaseException, options: Optional[dict] = None) -> Optional[str]:
    """One line for an ``OSError`` about a path the command cannot write or create (permission,
    read-only file system, a file where a directory belongs), naming the path and, where ``options``
    (flag -> directory) holds it, the flag it came from; ``None`` for any other error.

    >>> import errno
    >>> unwritable_path_message(PermissionError(errno.EACCES, "Permission denied", "/data/out/.lock"),
    ...                         {"--out-dir": "/data/out"})
    '/data/out/.lock: Permission denied (in --out-dir /data/out); pass a --out-dir this user can write'
    >>> unwritable_path_message(OSError(errno.ENOSPC, "No space left on device", "/x")) is None
    True
    """
    if not isinstance(error, OSError) or error.errno not in _PATH_ERRNOS or not error.filename:
        return None
    path = Path(os.fsdecode(error.filename)).absolute()
    for option, folder in (options or {}).items():
        folder = Path(folder).absolute()
        if path == folder or folder in path.parents:
            return (f"{error.filename}: {error.strerror} (in {option} {folder}); pass a {option} this user can "
                    f"write")
    return f"{error.filename}: {error.strerror}; check that this user can write there"


def run_output_problem(stored: Any, path: Path) -> Optional[str]:
    """Why ``stored`` (the JSON read from ``path``) is not the results.json of a ``benchmarks.run``
    output directory (``None`` when it is one): ``baseline`` and ``data`` objects, a ``runs`` list.

    >>> run_output_problem({"baseline": {}, "data": {}, "runs": []}, Path("out/results.json")) is None
    True
    >>> run_output_problem([1, 2], Path("out/results.json"))
    'out is not a benchmarks.run output directory (its results.json holds a JSON list, not the object benchmarks.run writes)'
    """
    where = f"{path.parent} is not a benchmarks.run output directory"
    if not isinstance(stored, dict):
        return f"{where} (its {path.name} holds a JSON {type(stored).__name__}, not the object benchmarks.run writes)"
    if isinstance(stored.get("experiment"), str):
        return f"{where} (its {path.name} holds results of {stored['experiment']})"
    missing = [key for key, kind in (("baseline", dict), ("data", dict), ("runs", list))
               if not isinstance(stored.get(key), kind)]
    if missing:
        return f"{where} (its {path.name} has no {' / '.join(missing)} of the kind benchmarks.run writes)"
    return None


class LockedError(RuntimeError):
    """Another live process holds the lock of a directory."""


@contextmanager
def process_lock(folder: Path, what: str = "a benchmark") -> Iterator[None]:
    """Hold ``folder/.lock`` (an OS file lock, ``filelock``) for this process; refuse at once
    if another process holds it. The operating system releases the lock when its holder
    dies, so a killed run never leaves a stale lock behind."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise LockedError(f"another process is using {folder} for {what}; wait for it to finish or use another "
                          f"directory") from None
    try:
        yield
    finally:
        lock.release()


def quarantine(path: Path, error: BaseException) -> None:
    """Move an unusable file aside to ``NAME.corrupt`` (replacing an older one), with a warning."""
    aside = path.with_name(path.name + ".corrupt")
    _logger.warning("unreadable file %s (%s: %s); moved aside to %s and ignored",
                    path, type(error).__name__, error, aside)
    os.replace(path, aside)


def load_json_or_none(path: Path) -> Optional[Any]:
    """The JSON in ``path``, or ``None`` if it is missing or unreadable (then moved aside)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        quarantine(path, error)
        return None


#: where each module of the once-flat ``benchmarks/`` folder went (issue 28). A record's
#: ``pruned.pt`` pickles the pruned model, whose class was ``benchmarks.models.CifarVGG`` before
#: the move: such files, left by an interrupted run, still load (and the run resumes) after it.
MOVED_MODULES = {f"benchmarks.{name}": f"benchmarks.{part}.{name}" for part, names in {
    "core": ("config", "data", "models", "training", "baseline", "baseline_store", "measure", "store",
             "environment", "executors", "framework"),
    "grid": ("runner", "experiment", "backends", "gradual", "scratch", "summary", "report_markdown",
             "plots", "compare_runs"),
    "bmvc": ("convergence_study", "betti_threshold", "betti_activation_plot"),
    "speed": ("pruner_speed", "engine_speed", "tp_speed", "cpu_throughput"),
    "studies": ("backends_smoke", "allocation_curves", "mask_stability", "recipe_check"),
}.items() for name in names}


class MovedModulesUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that finds classes of :data:`MOVED_MODULES` at their new path.

    >>> import io
    >>> data = pickle.dumps(MovedModulesUnpickler, protocol=0).replace(b"benchmarks.core.store", b"benchmarks.store")
    >>> MovedModulesUnpickler(io.BytesIO(data)).load() is MovedModulesUnpickler
    True
    """

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED_MODULES.get(module, module), name)


#: ``pickle`` with :class:`MovedModulesUnpickler`, for ``torch.load(..., pickle_module=MOVED_PICKLE)``
MOVED_PICKLE = types.ModuleType("benchmarks_moved_pickle")
MOVED_PICKLE.__dict__.update({name: getattr(pickle, name) for name in dir(pickle) if not name.startswith("__")})
MOVED_PICKLE.Unpickler = MovedModulesUnpickler


def load_torch_or_none(path: Path, *, weights_only: bool = False) -> Optional[Any]:
    """``torch.load`` of ``path`` on CPU, or ``None`` if missing or unreadable (then moved aside).

    Only for files this benchmark wrote itself (``weights_only=False`` unpickles modules).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        if weights_only:
            return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=MOVED_PICKLE)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ModuleNotFoundError) as error:
        # truncated or foreign files surface as any of these, depending on where the bytes stop
        quarantine(path, error)
        return None
