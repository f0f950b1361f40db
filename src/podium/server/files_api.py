"""``/puppet/v3/file_content``: task and module files for agents to download.

Served only to callers with an unrevoked certificate from Podium's CA: a task's files
may hold what an operator would not publish.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

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
