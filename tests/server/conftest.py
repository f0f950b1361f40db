from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from access import admin_token
from podium.server.app import create_app
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    return ServerSettings(
        datadir=tmp_path / "server",
        database_url=db_url,
        certname="podium-server",
        broker_port=0,
        reconnect_grace=300.0,
    )


@pytest.fixture
async def runtime(settings: ServerSettings) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings)
    await runtime.start()
    yield runtime
    await runtime.stop()


def api_client(runtime: Runtime) -> httpx.AsyncClient:
    """An in-process client of ``runtime``'s orchestrator API, with its token."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)),
        base_url="https://podium.test/orchestrator/v1",
        headers={"X-Authentication": admin_token(runtime)},
    )


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(runtime) as client:
        yield client
