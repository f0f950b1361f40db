"""The server's ASGI application: orchestrator API, CA API and file content for agents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from podium import __version__
from podium.errors import PodiumError, RateLimited
from podium.server import ca_api, classifier_api, files_api, limits, orchestrator, pdb_api, rbac_api
from podium.server.access import GuardedRoute, allow
from podium.server.apps_api import router as apps_router
from podium.server.puppet_api import router as puppet_router
from podium.server.runtime import Runtime


def _error(status: int, kind: str, msg: str, details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"kind": kind, "msg": msg, "details": details or {}}, status_code=status)


async def _podium_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PodiumError)
    response = _error(exc.status, exc.kind, exc.msg, exc.details)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return _error(
        400,
        "puppetlabs.orchestrator/validation-error",
        "invalid request: " + "; ".join(problems),
        {"errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]},
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = "puppetlabs.orchestrator/not-found" if exc.status_code == 404 else "podium/http-error"
    return _error(exc.status_code, kind, str(exc.detail))


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    # The schema and its page are routes like the others, with their access declared.
    app = FastAPI(
        title="Podium",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    app.add_exception_handler(PodiumError, _podium_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(
        limits.BodyLimit,
        limit=runtime.settings.max_request_body,
        routes={"/pdb/cmd/v1": pdb_api.MAX_COMMAND_BYTES},
    )
    app.include_router(orchestrator.router)
    app.include_router(apps_router)
    app.include_router(puppet_router)
    app.include_router(classifier_api.router)
    app.include_router(ca_api.router)
    app.include_router(files_api.router)
    app.include_router(pdb_api.router)
    app.include_router(rbac_api.router)
    app.include_router(rbac_api.tokens_v2)
    app.include_router(rbac_api.activity)
    app.include_router(_own_routes(app))
    return app


def _own_routes(app: FastAPI) -> APIRouter:
    router = APIRouter(route_class=GuardedRoute)

    @router.get("/status/v1/simple", include_in_schema=False, openapi_extra=allow("open"))
    async def simple_status() -> dict[str, str]:
        return {"state": "running"}

    @router.get("/openapi.json", include_in_schema=False, openapi_extra=allow("open"))
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs", include_in_schema=False, openapi_extra=allow("open"))
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Podium API")

    return router
