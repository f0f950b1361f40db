"""``/orchestrator/v1``: commands, jobs, events and inventory."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from podium.errors import NotFound, ValidationError
from podium.inventory.targeting import EMPTY_TARGET, Target, parse_scope, resolve
from podium.jobs.payloads import file_entries
from podium.jobs.states import NODE_STATES
from podium.protocol.names import validate_certname
from podium.server import views
from podium.server.auth import require_token
from podium.server.runtime import Runtime
from podium.store import NodeRecord
from podium.tasks.metadata import NAME_PART, Task, task_display_name

PREFIX = "/orchestrator/v1"


router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_token)])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Scope = Annotated[
    dict[str, Any],
    Field(description="exactly one of nodes (certnames or globs), query (PQL or AST), node_group"),
]


class TaskCommand(_Strict):
    task: str
    params: dict[str, Any]
    scope: Scope
    environment: str = "production"
    noop: StrictBool = False
    description: str = ""
    timeout: Annotated[
        StrictInt | None,
        Field(ge=1, le=7 * 24 * 3600, description="seconds a node's run may take"),
    ] = None


class InventoryQuery(_Strict):
    nodes: list[str]


class TargetQuery(_Strict):
    scope: Scope


class PingCommand(_Strict):
    scope: Scope
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0


async def _resolve(runtime: Runtime, raw: dict[str, Any]) -> Target:
    scope = parse_scope(raw)
    return await asyncio.to_thread(resolve, scope, runtime.inventory)


def _target_view(runtime: Runtime, target: Target) -> dict[str, Any]:
    connected = runtime.link.connected
    return {
        "items": [{"name": c, "connected": c in connected} for c in target.certnames],
        "explain": target.explain,
        "duplicates": list(target.duplicates),
        "unmatched": list(target.unmatched),
        "missing_facts": target.missing_facts,
    }


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


@router.post("/command/task", status_code=202)
async def command_task(body: TaskCommand, request: Request) -> JSONResponse:
    runtime = _runtime(request)
    target = await _resolve(runtime, body.scope)
    if not target.certnames:
        raise ValidationError(
            f"the target matches no node ({target.explain}); see what it resolves to with "
            "podium job plan",
            kind=EMPTY_TARGET,
            details=_target_view(runtime, target),
        )
    job_id = await runtime.jobs.run_task(
        task=body.task,
        params=body.params,
        nodes=target.certnames,
        scope=body.scope,
        environment=body.environment,
        description=body.description,
        noop=body.noop,
        run_timeout=body.timeout,
    )
    job = {"id": f"{_base(request)}/jobs/{job_id}", "name": str(job_id)}
    return JSONResponse({"job": job}, status_code=202)


@router.post("/targets")
async def targets(body: TargetQuery, request: Request) -> dict[str, Any]:
    """What a scope resolves to, as a job would freeze it (a Podium addition)."""
    runtime = _runtime(request)
    return _target_view(runtime, await _resolve(runtime, body.scope))


@router.post("/command/ping")
async def command_ping(body: PingCommand, request: Request) -> dict[str, Any]:
    """A round trip to each targeted node's agent (a Podium addition)."""
    runtime = _runtime(request)
    target = await _resolve(runtime, body.scope)
    answers = await runtime.jobs.round_trip(target.certnames, wait=body.timeout)
    view = _target_view(runtime, target)
    for item in view["items"]:
        answer = answers[item["name"]]
        item["seconds" if isinstance(answer, float) else "error"] = answer
    return view


def _job_id(raw: str) -> int:
    if not raw.isdigit():
        raise NotFound(
            f"no job {raw!r}: job ids are numbers", kind="puppetlabs.orchestrator/unknown-job"
        )
    return int(raw)


@router.get("/jobs")
async def list_jobs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    order_by: Literal["owner", "timestamp", "environment", "name", "state"] = "timestamp",
    order: Literal["asc", "desc"] = "desc",
    type: Literal["task", "deploy", "plan"] | None = None,
) -> dict[str, Any]:
    store = _runtime(request).store
    items, total = await asyncio.to_thread(
        store.list_jobs, limit=limit, offset=offset, order_by=order_by, order=order, type=type
    )
    base = _base(request)
    return {
        "items": [views.job(j, base) for j in items],
        "pagination": {
            "limit": limit,
            "offset": offset,
            "total": total,
            "order_by": order_by,
            "order": order,
        },
    }


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    record = await asyncio.to_thread(_runtime(request).store.get_job, _job_id(job_id))
    return views.job(record, _base(request))


@router.get("/jobs/{job_id}/nodes")
async def job_nodes(
    job_id: str,
    request: Request,
    state: str | None = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    if state is not None and state not in NODE_STATES:
        raise ValidationError(f"unknown node state {state!r}; use one of {', '.join(NODE_STATES)}")
    store = _runtime(request).store
    jid = _job_id(job_id)
    await asyncio.to_thread(store.get_job, jid)  # 404 for an unknown job
    items, total = await asyncio.to_thread(
        store.job_nodes, jid, state=state, limit=limit, offset=offset
    )
    return {
        "items": [views.job_node(n) for n in items],
        "pagination": {"limit": limit, "offset": offset, "total": total},
    }


@router.get("/jobs/{job_id}/events")
async def job_events(
    job_id: str,
    request: Request,
    start: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    store = _runtime(request).store
    jid = _job_id(job_id)
    job = await asyncio.to_thread(store.get_job, jid)
    events = await asyncio.to_thread(store.job_events, jid, start=start, limit=limit)
    nxt = events[-1].id + 1 if events else start
    return {
        "next-events": {"id": f"{_base(request)}/jobs/{jid}/events?start={nxt}", "event": str(nxt)},
        "items": [views.event(e) for e in events],
        "job_state": job.state,
    }


def _inventory_item(
    runtime: Runtime, certname: str, node: NodeRecord | None = None
) -> dict[str, Any]:
    """PE's connection status of a node; with its record, Podium's own fields too."""
    since = runtime.link.connected.get(certname)
    item: dict[str, Any] = {"name": certname, "connected": since is not None}
    if since is not None:
        item["broker"] = runtime.link.broker_url or "pcp:///server"
        item["timestamp"] = views.timestamp(since)
    if node is not None:
        item["last_seen"] = views.timestamp(node.last_seen)
        item["agent_version"] = node.facts.get("podium_agent_version")
        item["features"] = node.features
    return item


@router.get("/inventory")
async def inventory(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    nodes = {n.certname: n for n in await asyncio.to_thread(runtime.store.list_nodes)}
    names = sorted(nodes.keys() | runtime.link.connected.keys())
    return {"items": [_inventory_item(runtime, n, nodes.get(n)) for n in names]}


@router.get("/inventory/{node}")
async def inventory_node(node: str, request: Request) -> dict[str, Any]:
    return _inventory_item(_runtime(request), validate_certname(node, "node"))


@router.post("/inventory")
async def inventory_nodes(body: InventoryQuery, request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    return {"items": [_inventory_item(runtime, validate_certname(n, "node")) for n in body.nodes]}


def _task_url(base: str, task: Task) -> str:
    return f"{base}/tasks/{task.module}/{task.short_name}"


@router.get("/tasks")
async def list_tasks(request: Request, environment: str = "production") -> dict[str, Any]:
    tasks = await asyncio.to_thread(_runtime(request).codedir.list_tasks, environment)
    base = _base(request)
    return {
        "environment": {"name": environment, "code_id": None},
        "items": [
            {
                "id": _task_url(base, t),
                "name": t.name,
                "module": t.module,
                "description": t.description,
                "permitted": True,
            }
            for t in tasks
            if not t.private
        ],
    }


@router.get("/tasks/{module}/{task}")
async def get_task(
    module: str, task: str, request: Request, environment: str = "production"
) -> dict[str, Any]:
    name = task_display_name(module, task) if NAME_PART.match(task) else f"{module}::{task}"
    found = await asyncio.to_thread(_runtime(request).codedir.task, environment, name)
    return {
        "id": _task_url(_base(request), found),
        "name": found.name,
        "environment": {"name": environment, "code_id": None},
        "metadata": found.metadata,
        "files": file_entries(found, found.files),
    }
