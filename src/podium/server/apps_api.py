"""``/orchestrator/v1``: an environment's applications, and the run order of a target."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from podium.puppet.apps import Application, RunOrder, applications_of, run_order
from podium.server import views
from podium.server.access import GuardedRoute, allow
from podium.server.orchestrator import PREFIX, Scope, resolve_scope
from podium.server.runtime import Runtime

router = APIRouter(prefix=PREFIX, route_class=GuardedRoute, responses=views.ERRORS)
VIEW = allow("orchestrator:view")


class PlanQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Scope
    environment: str = "production"


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/environments/{environment}/applications", openapi_extra=VIEW)
async def list_applications(environment: str, request: Request) -> dict[str, Any]:
    """The application instances of an environment, with their components' nodes and
    what each produces, consumes and runs after (a Podium addition)."""
    apps = await asyncio.to_thread(applications_of, _runtime(request).codedir, environment)
    return {"environment": environment, "items": [application_view(a) for a in apps]}


@router.post("/command/plan", openapi_extra=VIEW)
async def command_plan(body: PlanQuery, request: Request) -> dict[str, Any]:
    """The order a deploy job would run the scope's nodes in, by the environment's
    applications, without running anything (a Podium addition)."""
    runtime = _runtime(request)
    target = await resolve_scope(runtime, body.scope)
    apps = await asyncio.to_thread(applications_of, runtime.codedir, body.environment)
    order = run_order(apps, target.certnames)
    return {"environment": body.environment, **order_view(order)}


def application_view(app: Application) -> dict[str, Any]:
    return {
        "name": app.name,
        "description": app.description,
        "components": [
            {
                "name": c.name,
                "nodes": list(c.nodes),
                "produces": list(c.produces),
                "consumes": list(c.consumes),
                "after": list(app.after.get(c.name, ())),
            }
            for c in app.components
        ],
    }


def order_view(order: RunOrder) -> dict[str, Any]:
    """``levels`` and, per node, what it runs after and the component it is of (the
    first; ``components`` lists them all when it is of several)."""
    nodes: dict[str, dict[str, Any]] = {}
    for level in order.levels:
        for node in level:
            view: dict[str, Any] = {"after": list(order.after[node])}
            roles = order.roles.get(node, ())
            if roles:
                view["application"], view["component"] = roles[0]
            if len(roles) > 1:
                view["components"] = [{"application": a, "component": c} for a, c in roles]
            nodes[node] = view
    return {"levels": order.levels, "nodes": nodes}
