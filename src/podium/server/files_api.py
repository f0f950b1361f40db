"""``/puppet/v3/file_content``: task and module files for agents to download.

Served only to callers with an unrevoked certificate from Podium's CA: a task's files
may hold what an operator would not publish.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from podium.errors import NotFound
from podium.server.access import GuardedRoute, allow
from podium.server.views import ERRORS
from podium.tasks.codedir import CodeDir

router = APIRouter(prefix="/puppet/v3/file_content", route_class=GuardedRoute, responses=ERRORS)


def _codedir(request: Request) -> CodeDir:
    codedir: CodeDir = request.app.state.runtime.codedir
    return codedir


@router.get("/tasks/{module}/{filename}", openapi_extra=allow("node"))
async def task_file(
    module: str, filename: str, request: Request, environment: str = "production"
) -> FileResponse:
    path = await asyncio.to_thread(
        _codedir(request).file_path, environment, module, f"tasks/{filename}"
    )
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/modules/{module}/{relative:path}", openapi_extra=allow("node"))
async def module_file(
    module: str, relative: str, request: Request, environment: str = "production"
) -> FileResponse:
    path = await asyncio.to_thread(_codedir(request).file_path, environment, module, relative)
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/packs/{sha256}", openapi_extra=allow("node"))
async def pack(sha256: str, request: Request) -> FileResponse:
    """An environment packed for apply mode, by its SHA-256 (see podium.puppet.pack)."""
    packer = request.app.state.runtime.jobs.packer
    path = packer.path(sha256) if packer is not None else None
    if path is None:
        raise NotFound(
            f"no packed environment {sha256[:64]!r} on this server; the job that named it "
            "may be older than the packs kept, run it again",
            kind="podium/unknown-pack",
        )
    return FileResponse(path, media_type="application/gzip")
