"""File primitives: atomic replacement, single-write appends, an inter-process lock.

The CA directory (changed by the server and by ``podium ca``), the agent's spool, task
cache and certificates all rely on them: a reader never sees half a file, and two
writers never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from podium.errors import PodiumError


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one.

    ``durable`` also flushes the data to disk before the rename: worth it for the CA key
    or a task's final result, too slow for every issued certificate.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        _fsync_directory(path.parent)


def overwrite_in_place(path: Path, data: bytes) -> None:
    """Overwrite a small file with one ``write``, creating it if needed.

    For the serial counter: far cheaper than :func:`write_atomic`, and safe because it is
    only read under the CA lock and a torn value is repaired from the index.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def append_line(path: Path, line: bytes) -> None:
    """Append one line with a single ``write``, so concurrent readers never see it torn."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the duration of the block.

    Each call opens its own file description, so the lock excludes other threads of
    this process as well as other processes. It is not re-entrant.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PodiumError(f"cannot lock {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
