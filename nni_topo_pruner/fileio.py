"""Atomic file writes shared by the library (masks, reports).

:func:`atomic_write` writes to a temporary file next to the target and renames it over the
target only when writing succeeded: a reader never sees a partial file, a failed write
leaves no temporary file behind and the previous file intact, and the new file gets the
mode an ordinary ``open(path, 'w')`` would give it (``0o666`` minus the umask; an existing
file keeps its mode), not ``tempfile``'s ``0o600``.

Example
-------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), 'out.txt')
>>> with atomic_write(path, 'w') as handle:
...     _ = handle.write('hello')
>>> open(path).read()
'hello'
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator, Union

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: Union[str, Path], mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``'w'`` or ``'wb'`` (plus ``open`` keyword arguments such as ``encoding``).
    On any exception inside the ``with`` block the temporary file is removed and ``path``
    is left as it was. Parent directories are created.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        file_mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        file_mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
