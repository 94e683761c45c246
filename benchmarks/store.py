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

import json
import logging
import math
import os
import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

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
    _atomic_write(path, lambda stream: torch.save(payload, stream), "wb")


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


def load_torch_or_none(path: Path, *, weights_only: bool = False) -> Optional[Any]:
    """``torch.load`` of ``path`` on CPU, or ``None`` if missing or unreadable (then moved aside).

    Only for files this benchmark wrote itself (``weights_only=False`` unpickles modules).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ModuleNotFoundError) as error:
        # truncated or foreign files surface as any of these, depending on where the bytes stop
        quarantine(path, error)
        return None
