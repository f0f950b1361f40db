"""The agent's cache of task files, by SHA-256, checked before every run."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from podium.errors import ValidationError
from podium.files import write_atomic

_SHA256: Final = re.compile(r"\A[0-9a-fA-F]{64}\Z")


class FileCache:
    """Task files by SHA-256 in ``root/<sha256>/<basename>``, checked before every use.

    ``fetch`` gets a path with its query (``/puppet/v3/file_content/...?environment=x``)
    and returns the body. Concurrent requests for one file share one download.
    """

    def __init__(
        self,
        root: Path,
        fetch: Callable[[str], Awaitable[bytes]],
        *,
        ttl: timedelta = timedelta(days=14),
    ) -> None:
        self.root = Path(root)
        self.ttl = ttl
        self._fetch = fetch
        self._inflight: dict[tuple[str, str], asyncio.Future[Path]] = {}

    async def get(self, spec: Mapping[str, Any]) -> Path:
        """The local copy of a task file described as in the PE API's ``files`` list."""
        sha256, size, basename, url = check_spec(spec)
        key = (sha256, basename)
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._get(sha256, size, basename, url, spec))
            self._inflight[key] = future
            future.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    async def _get(
        self, sha256: str, size: int, basename: str, url: str, spec: Mapping[str, Any]
    ) -> Path:
        path = self.root / sha256 / basename
        if await asyncio.to_thread(_cached, path, sha256, size):
            return path
        data = await self._fetch(url)
        actual = hashlib.sha256(data).hexdigest()
        if len(data) != size or actual != sha256:
            raise ValidationError(
                f"task file {spec['filename']} changed on the server or in transit: expected "
                f"{size} bytes with SHA-256 {sha256}, received {len(data)} bytes with SHA-256 "
                f"{actual}; it was not run",
                details={"filename": spec["filename"], "sha256": sha256, "received": actual},
            )
        await asyncio.to_thread(_store, path, data)
        return path

    async def purge(self, now: datetime, ttl: timedelta | None = None) -> int:
        """Remove files not used for ``ttl`` (the cache's own by default); returns how
        many cache entries went."""
        busy = {sha for sha, _ in self._inflight}
        cutoff = (now - (self.ttl if ttl is None else ttl)).timestamp()
        return await asyncio.to_thread(_purge, self.root, cutoff, busy)


def check_spec(spec: Mapping[str, Any]) -> tuple[str, int, str, str]:
    """(sha256, size, basename, path?query) of a file entry, each safe to use;
    :class:`ValidationError` if it is not."""
    if not isinstance(spec, Mapping):
        raise ValidationError("a task file entry must be an object")
    filename = spec.get("filename")
    parts = filename.split("/") if isinstance(filename, str) else [""]
    if not all(p and p not in (".", "..") and "\\" not in p and "\0" not in p for p in parts):
        raise ValidationError(
            f"invalid task file name {filename!r}", details={"filename": str(filename)}
        )
    sha256 = spec.get("sha256")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ValidationError(f"task file {filename}: sha256 must be 64 hex digits")
    size = spec.get("size_bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValidationError(f"task file {filename}: size_bytes must be a whole number")
    uri = spec.get("uri")
    path = uri.get("path") if isinstance(uri, Mapping) else None
    query = uri.get("params") if isinstance(uri, Mapping) else None
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or path.startswith("//")
        or any(c in path for c in "?#\\")
        or not path.isprintable()
        or " " in path
    ):
        raise ValidationError(f"task file {filename}: uri.path must be an absolute URL path")
    if query is not None and not (
        isinstance(query, Mapping) and all(isinstance(v, str | int) for v in query.values())
    ):
        raise ValidationError(f"task file {filename}: uri.params must map names to strings")
    url = path + (f"?{urlencode(dict(query))}" if query else "")
    return sha256.lower(), size, parts[-1], url


def _cached(path: Path, sha256: str, size: int) -> bool:
    """Whether the cached copy is intact; marks it used. A damaged copy is removed."""
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size != size:
                raise ValueError
            intact = hashlib.file_digest(f, "sha256").hexdigest() == sha256
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        intact = False
    if not intact:
        with contextlib.suppress(OSError):
            path.unlink()
        return False
    os.utime(path.parent)
    return True


def _store(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, data, mode=0o700, durable=True)
    os.utime(path.parent)


def _purge(root: Path, cutoff: float, busy: set[str]) -> int:
    removed = 0
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not _SHA256.match(entry.name) or entry.name in busy:
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed
