"""The agent's task file cache."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from podium.agent.filecache import FileCache
from podium.errors import ValidationError
from waiting import until

CONTENT = b"#!/bin/sh\necho cached\n"
SHA = hashlib.sha256(CONTENT).hexdigest()


def _spec(**overrides: Any) -> dict[str, Any]:
    spec = {
        "filename": "echo.sh",
        "uri": {
            "path": "/puppet/v3/file_content/tasks/podium/echo.sh",
            "params": {"environment": "production", "code_id": "a b&c"},
        },
        "sha256": SHA,
        "size_bytes": len(CONTENT),
    }
    spec.update(overrides)
    return spec


class Server:
    """A fake file server that records what was asked; with a ``gate``, each answer
    waits for it to be set."""

    def __init__(self, content: bytes = CONTENT, gate: asyncio.Event | None = None) -> None:
        self.content = content
        self.gate = gate
        self.requests: list[str] = []

    async def __call__(self, path: str) -> bytes:
        self.requests.append(path)
        if self.gate is not None:
            await self.gate.wait()
        return self.content


async def test_a_file_is_fetched_once_then_served_from_the_cache(tmp_path: Path) -> None:
    server = Server()
    cache = FileCache(tmp_path / "cache", server)
    path = await cache.get(_spec())
    assert path == tmp_path / "cache" / SHA / "echo.sh"
    assert path.read_bytes() == CONTENT
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert server.requests == [
        "/puppet/v3/file_content/tasks/podium/echo.sh?environment=production&code_id=a+b%26c"
    ]
    assert await cache.get(_spec()) == path
    assert len(server.requests) == 1


async def test_concurrent_requests_for_a_file_share_one_download(tmp_path: Path) -> None:
    gate = asyncio.Event()
    server = Server(gate=gate)
    cache = FileCache(tmp_path / "cache", server)
    first = [asyncio.ensure_future(cache.get(_spec())) for _ in range(10)]
    await until(lambda: server.requests, what="the download to start")
    # Requests made while the download is under way (the file is not cached yet).
    later = [asyncio.ensure_future(cache.get(_spec())) for _ in range(10)]
    gate.set()
    paths = await asyncio.gather(*first, *later)
    assert len(set(paths)) == 1
    assert len(server.requests) == 1


async def test_a_file_whose_hash_does_not_match_is_refused(tmp_path: Path) -> None:
    server = Server(content=CONTENT.replace(b"cached", b"evil!!"))
    cache = FileCache(tmp_path / "cache", server)
    with pytest.raises(ValidationError, match="changed on the server or in transit"):
        await cache.get(_spec())
    assert not (tmp_path / "cache" / SHA / "echo.sh").exists()


async def test_a_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", Server(content=CONTENT + b"\n"))
    with pytest.raises(ValidationError, match="changed on the server or in transit"):
        await cache.get(_spec())


async def test_a_damaged_cached_copy_is_fetched_again(tmp_path: Path) -> None:
    server = Server()
    cache = FileCache(tmp_path / "cache", server)
    path = await cache.get(_spec())
    path.write_bytes(CONTENT.replace(b"cached", b"tamper"))
    assert (await cache.get(_spec())).read_bytes() == CONTENT
    assert len(server.requests) == 2


async def test_extra_files_are_cached_under_their_base_name(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", Server())
    path = await cache.get(_spec(filename="mymod/files/lib.sh"))
    assert path == tmp_path / "cache" / SHA / "lib.sh"


@pytest.mark.parametrize(
    "overrides",
    [
        {"filename": "../../etc/passwd"},
        {"filename": "a/../b"},
        {"filename": "/etc/passwd"},
        {"filename": ""},
        {"filename": "..\\x"},
        {"filename": None},
        {"sha256": "../" * 21 + "a"},
        {"sha256": SHA[:-1]},
        {"sha256": SHA[:-1] + "g"},
        {"size_bytes": -1},
        {"size_bytes": "22"},
        {"size_bytes": True},
        {"uri": {"path": "//evil.example/x", "params": {}}},
        {"uri": {"path": "relative/x", "params": {}}},
        {"uri": {"path": "/x?inject=1", "params": {}}},
        {"uri": {"path": "/x\r\nHost: evil", "params": {}}},
        {"uri": {"path": "/x", "params": {"a": ["list"]}}},
        {"uri": "/x"},
    ],
)
async def test_unsafe_file_entries_are_refused_before_any_path_is_built(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    server = Server()
    cache = FileCache(tmp_path / "cache", server)
    with pytest.raises(ValidationError):
        await cache.get(_spec(**overrides))
    assert server.requests == []
    assert not (tmp_path / "cache").exists()


async def test_purge_removes_files_unused_for_the_ttl(tmp_path: Path) -> None:
    other = b"other\n"
    server = Server()
    cache = FileCache(tmp_path / "cache", server)
    await cache.get(_spec())
    server.content = other
    await cache.get(_spec(sha256=hashlib.sha256(other).hexdigest(), size_bytes=len(other)))
    old = (datetime.now(UTC) - timedelta(days=20)).timestamp()
    os.utime(tmp_path / "cache" / SHA, (old, old))
    (tmp_path / "cache" / "unrelated").mkdir()
    assert await cache.purge(datetime.now(UTC)) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        hashlib.sha256(other).hexdigest(),
        "unrelated",
    ]
    # Using a file marks it used.
    server.content = CONTENT
    await cache.get(_spec())
    os.utime(tmp_path / "cache" / SHA, (old, old))
    await cache.get(_spec())
    assert await cache.purge(datetime.now(UTC)) == 0


async def test_the_cache_purges_after_its_own_ttl(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", Server(), ttl=timedelta(days=2))
    await cache.get(_spec())
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    os.utime(tmp_path / "cache" / SHA, (three_days_ago, three_days_ago))
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    assert await cache.purge(two_days_ago) == 0  # then unused for a day only
    assert await cache.purge(datetime.now(UTC)) == 1
