"""``/orchestrator/v1``: commands, jobs, events and inventory."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from podium.errors import NotFound, NotPermitted, ValidationError
from podium.inventory import targeting
from podium.inventory.targeting import EMPTY_TARGET, Target, parse_scope, resolve
from podium.jobs.kinds import PACE_OPTIONS
from podium.jobs.payloads import file_entries
from podium.jobs.states import NODE_STATES
from podium.protocol.names import validate_certname
from podium.rbac.permissions import NodeScope, Partition, partition
from podium.rbac.service import Principal
from podium.server import views
from podium.server.access import CurrentPrincipal, GuardedRoute, allow, audit
from podium.server.runtime import Runtime
from podium.server.streams import events_stream
from podium.store import NodeRecord
from podium.tasks.metadata import NAME_PART, Task, task_display_name

PREFIX = "/orchestrator/v1"
NODES_PAGE = 1000  # a job's nodes per page unless asked otherwise
JobState = Literal["new", "ready", "running", "stopping", "stopped", "finished", "failed"]


router = APIRouter(prefix=PREFIX, route_class=GuardedRoute, responses=views.ERRORS)
VIEW = allow("orchestrator:view")
_DENIED = "puppetlabs.rbac/permission-denied"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Scope = Annotated[
    dict[str, Any],
    Field(description="exactly one of nodes (certnames or globs), query (PQL or AST), node_group"),
]


_WEEK = 7 * 24 * 3600
Seconds = Annotated[StrictInt | None, Field(ge=1, le=_WEEK)]


class PaceFields(Strict):
    """How fast a job goes and when it gives up: on every job command."""

    concurrency: Annotated[
        StrictInt | None, Field(ge=1, le=100_000, description="nodes running at once")
    ] = None
    batch: Annotated[
        StrictInt | str | None,
        Field(description='nodes per batch, a number or a percentage such as "10%"'),
    ] = None
    batch_sleep: Annotated[
        StrictInt | StrictFloat | None,
        Field(ge=0, le=86400, description="seconds between batches"),
    ] = None
    fail_fast: StrictBool = False
    timeout: Annotated[Seconds, Field(description="seconds a node's run may take")] = None
    job_timeout: Annotated[Seconds, Field(description="seconds the whole job may take")] = None
    offline_ttl: Annotated[
        Seconds, Field(description="seconds offline nodes may take to connect and run")
    ] = None

    def pace(self) -> dict[str, Any]:
        # By identity: 0 == False, and a batch of 0 must reach the check that refuses it.
        return {
            k: v for k in PACE_OPTIONS if (v := getattr(self, k)) is not None and v is not False
        }


class TaskCommand(PaceFields):
    task: str
    params: dict[str, Any]
    scope: Scope
    environment: str = "production"
    noop: StrictBool = False
    description: str = ""


class DeployCommand(PaceFields):
    """PE's ``/command/deploy`` body, and ``mode`` (a Podium addition)."""

    scope: Scope
    environment: str = "production"
    noop: StrictBool = False
    no_noop: StrictBool = False
    enforce_environment: StrictBool = True
    description: str = ""
    debug: StrictBool = False
    trace: StrictBool = False
    evaltrace: StrictBool = False
    mode: Literal["apply", "agent"] = Field(
        "apply",
        description="apply: puppet apply with the environment packed by the server; "
        "agent: puppet agent against the site's Puppet Server",
    )


JobRef = Annotated[StrictInt | str, Field(description="the job's id (a number) or its URL")]


class StopCommand(Strict):
    job: JobRef
    force: StrictBool = False


class RerunCommand(Strict):
    job: JobRef
    only_failed: StrictBool = False


class InventoryQuery(Strict):
    nodes: list[str]


class TargetQuery(Strict):
    scope: Scope


class PingCommand(Strict):
    scope: Scope
    timeout: Annotated[StrictInt | StrictFloat, Field(gt=0, le=60)] = 5.0


async def resolve_scope(runtime: Runtime, raw: dict[str, Any]) -> Target:
    scope = parse_scope(raw)
    return await asyncio.to_thread(resolve, scope, runtime.inventory)


def target_view(runtime: Runtime, target: Target) -> dict[str, Any]:
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


_PUPPET_RUN = ("puppet_agent", "run", "*")


@router.post("/command/deploy", status_code=202, openapi_extra=allow("puppet_agent:run"))
async def command_deploy(
    body: DeployCommand, request: Request, principal: CurrentPrincipal
) -> JSONResponse:
    """Run Puppet now on the nodes the caller may run it on (PE's deploy): a node list
    naming others is refused (403, naming them); a query or group runs on the
    permitted ones only."""
    runtime = _runtime(request)
    scope = parse_scope(body.scope)
    target = await non_empty(runtime, scope)
    split = await permitted_nodes(
        runtime, principal, _PUPPET_RUN, target.certnames, scope, doing="run Puppet"
    )
    job_id = await runtime.jobs.run_puppet(
        nodes=split.allowed,
        environment=body.environment,
        mode=body.mode,
        noop=body.noop,
        no_noop=body.no_noop,
        debug=body.debug,
        trace=body.trace,
        evaltrace=body.evaltrace,
        enforce_environment=body.enforce_environment,
        description=body.description,
        owner=principal.login,
        scope=body.scope,
        pace=body.pace(),
    )
    noop = " in noop mode" if body.noop else ""
    await _audit_job(
        request,
        principal,
        "create",
        job_id,
        f"ran Puppet{noop} in {body.environment} on {len(split.allowed)} nodes ({target.explain})",
    )
    return _created(request, job_id, split)


async def non_empty(runtime: Runtime, scope: targeting.Scope) -> Target:
    """What ``scope`` resolves to; an empty target is a 400 saying what it matched."""
    target = await asyncio.to_thread(resolve, scope, runtime.inventory)
    if not target.certnames:
        raise ValidationError(
            f"the target matches no node ({target.explain}); see what it resolves to with "
            "podium job plan",
            kind=EMPTY_TARGET,
            details=target_view(runtime, target),
        )
    return target


@router.post("/command/task", status_code=202, openapi_extra=allow("tasks:run"))
async def command_task(
    body: TaskCommand, request: Request, principal: CurrentPrincipal
) -> JSONResponse:
    """Run a task on the nodes the caller may run it on: a node list naming others is
    refused (403, naming them); a query or group runs on the permitted ones only."""
    runtime = _runtime(request)
    scope = parse_scope(body.scope)
    target = await non_empty(runtime, scope)
    split = await _permitted(runtime, principal, body.task, target.certnames, scope)
    job_id = await runtime.jobs.run_task(
        task=body.task,
        params=body.params,
        nodes=split.allowed,
        scope=body.scope,
        environment=body.environment,
        description=body.description,
        owner=principal.login,
        noop=body.noop,
        pace=body.pace(),
    )
    await _audit_job(
        request,
        principal,
        "create",
        job_id,
        f"ran task {body.task} on {len(split.allowed)} nodes ({target.explain})",
    )
    return _created(request, job_id, split)


async def _permitted(
    runtime: Runtime,
    principal: Principal,
    task: str,
    certnames: tuple[str, ...] | list[str],
    scope: targeting.Scope | None,
) -> Partition:
    """The nodes ``principal`` may run ``task`` on (see :func:`permitted_nodes`)."""
    return await permitted_nodes(
        runtime, principal, ("tasks", "run", task), certnames, scope, doing=f"run {task}"
    )


async def permitted_nodes(
    runtime: Runtime,
    principal: Principal,
    permission: tuple[str, str, str],
    certnames: tuple[str, ...] | list[str],
    scope: targeting.Scope | None,
    *,
    doing: str,
) -> Partition:
    """The nodes on which ``principal`` holds the node-scoped ``permission`` (type,
    action, instance); refused outright (403) when the caller named the nodes
    (``scope`` None or a node list) and some are not, or when none is."""
    kind, action, instance = permission
    name = f"{kind}:{action}:{instance}" if instance != "*" else f"{kind}:{action}"
    if not principal.allows(kind, action, instance):
        raise NotPermitted(
            f"{principal.login} may not {doing}: it needs {name}"
            + (f" (or {kind}:{action}:*)" if instance != "*" else ""),
            kind=_DENIED,
            details={"permission": name},
        )
    reach = principal.grants.node_scopes(kind, action, instance)
    members: dict[NodeScope, list[str]] = {}
    for limit in reach.scopes:
        members[limit] = await asyncio.to_thread(_members, runtime, limit)
    split = partition(certnames, reach, members, what=name)
    named = scope is None or bool(scope.nodes)
    if split.refused and (named or not split.allowed):
        shown = ", ".join(split.refused[:20]) + (" ..." if len(split.refused) > 20 else "")
        raise NotPermitted(
            f"{principal.login} may not {doing} on {shown}: {split.reason}",
            kind=_DENIED,
            details={"nodes": list(split.refused), "reason": split.reason},
        )
    return split


def _members(runtime: Runtime, limit: NodeScope) -> list[str]:
    try:
        return list(resolve(parse_scope({limit.kind: limit.value}), runtime.inventory).certnames)
    except (NotFound, ValidationError):  # a deleted group, a query gone bad: no nodes
        return []


def _created(request: Request, job_id: int, split: Partition | None = None) -> JSONResponse:
    job = {"id": f"{_base(request)}/jobs/{job_id}", "name": str(job_id)}
    body: dict[str, Any] = {"job": job}
    if split is not None and split.refused:
        body["left_out"] = {"nodes": list(split.refused), "reason": split.reason}
    return JSONResponse(body, status_code=202)


async def _audit_job(
    request: Request, principal: Principal, type: str, job_id: int, message: str
) -> None:
    await audit(
        request,
        principal,
        service="orchestrator",
        type=type,
        object_type="jobs",
        object_id=str(job_id),
        object_name=str(job_id),
        message=message,
    )


@router.post("/command/stop", status_code=202, openapi_extra=allow("authenticated"))
async def command_stop(
    body: StopCommand, request: Request, principal: CurrentPrincipal
) -> JSONResponse:
    """Nothing new starts, nodes not started end skipped; ``force`` kills running ones.
    One's own jobs, or anyone's with ``orchestrator:stop``."""
    runtime = _runtime(request)
    job_id = _job_ref(body.job)
    record = await asyncio.to_thread(runtime.store.get_job, job_id)
    if record.owner != principal.login and not principal.allows("orchestrator", "stop"):
        raise NotPermitted(
            f"job {job_id} is {record.owner}'s: stopping others' jobs needs the permission "
            "orchestrator:stop",
            kind=_DENIED,
            details={"permission": "orchestrator:stop"},
        )
    job = await runtime.jobs.stop_job(job_id, by=principal.login, force=body.force)
    await _audit_job(
        request, principal, "stop", job_id, f"{'force-' if body.force else ''}stopped job {job_id}"
    )
    view = {
        "id": f"{_base(request)}/jobs/{job.id}",
        "name": str(job.id),
        "state": job.state,
        "nodes": job.node_states,
    }
    return JSONResponse({"job": view}, status_code=202)


@router.post("/command/rerun", status_code=202, openapi_extra=allow("authenticated"))
async def command_rerun(
    body: RerunCommand, request: Request, principal: CurrentPrincipal
) -> JSONResponse:
    """A new job with the command and options of another (a Podium addition), checked
    against the caller's own permissions as a node list would be."""
    runtime = _runtime(request)
    first = _job_ref(body.job)

    async def check(task: str, nodes: list[str]) -> None:
        if task:
            await _permitted(runtime, principal, task, nodes, None)
        else:  # a deploy job
            await permitted_nodes(runtime, principal, _PUPPET_RUN, nodes, None, doing="run Puppet")

    job_id = await runtime.jobs.rerun(
        first, owner=principal.login, only_failed=body.only_failed, check=check
    )
    await _audit_job(request, principal, "rerun", job_id, f"reran job {first} as job {job_id}")
    return _created(request, job_id)


@router.post("/targets", openapi_extra=VIEW)
async def targets(body: TargetQuery, request: Request) -> dict[str, Any]:
    """What a scope resolves to, as a job would freeze it (a Podium addition)."""
    runtime = _runtime(request)
    return target_view(runtime, await resolve_scope(runtime, body.scope))


@router.post("/command/ping", openapi_extra=VIEW)
async def command_ping(body: PingCommand, request: Request) -> dict[str, Any]:
    """A round trip to each targeted node's agent (a Podium addition)."""
    runtime = _runtime(request)
    target = await resolve_scope(runtime, body.scope)
    answers = await runtime.jobs.round_trip(target.certnames, wait=body.timeout)
    view = target_view(runtime, target)
    for item in view["items"]:
        answer = answers[item["name"]]
        item["seconds" if isinstance(answer, float) else "error"] = answer
    return view


_MAX_JOB_ID = 2**63 - 1  # the databases' largest integer: also bounds offsets and event ids


def _job_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise NotFound(
            f"no job {raw!r}: job ids are numbers", kind="puppetlabs.orchestrator/unknown-job"
        )
    if len(raw.lstrip("0")) > len(str(_MAX_JOB_ID)):  # int() refuses thousands of digits
        raise ValidationError(f"job ids are at most {_MAX_JOB_ID}; {raw[:40]}... is not one")
    return _job_ref(int(raw))


def _job_ref(ref: int | str) -> int:
    """A job named by its id or by its URL (as commands answer with it)."""
    if isinstance(ref, int):
        if ref < 1:
            raise NotFound(f"no job {ref}", kind="puppetlabs.orchestrator/unknown-job")
        if ref > _MAX_JOB_ID:
            raise ValidationError(f"job ids are at most {_MAX_JOB_ID}; {ref} is not one")
        return ref
    return _job_id(ref.rstrip("/").rsplit("/", 1)[-1])


@router.get("/jobs", openapi_extra=VIEW)
async def list_jobs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=_MAX_JOB_ID)] = 0,
    order_by: Literal["owner", "timestamp", "environment", "name", "state"] = "timestamp",
    order: Literal["asc", "desc"] = "desc",
    type: Literal["task", "deploy", "plan"] | None = None,
    state: JobState | None = None,
    owner: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    store = _runtime(request).store
    items, total = await asyncio.to_thread(
        store.list_jobs,
        limit=limit,
        offset=offset,
        order_by=order_by,
        order=order,
        type=type,
        state=state,
        owner=owner,
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


@router.get("/jobs/{job_id}", openapi_extra=VIEW)
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    record = await asyncio.to_thread(_runtime(request).store.get_job, _job_id(job_id))
    return views.job(record, _base(request))


@router.get("/jobs/{job_id}/nodes", openapi_extra=VIEW)
async def job_nodes(
    job_id: str,
    request: Request,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = NODES_PAGE,
    offset: Annotated[int, Query(ge=0, le=_MAX_JOB_ID)] = 0,
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


@router.get("/jobs/{job_id}/report", openapi_extra=VIEW)
async def job_report(job_id: str, request: Request) -> dict[str, Any]:
    """Each node's state, when it last changed, and the ids of its events."""
    store = _runtime(request).store
    jid = _job_id(job_id)
    nodes, events = await asyncio.to_thread(store.job_report, jid)
    return {
        "items": [
            {
                "node": n.certname,
                "state": n.state,
                "timestamp": views.timestamp(n.finished_at or n.started_at),
                "events": [str(i) for i in events.get(n.certname, ())],
            }
            for n in nodes
        ]
    }


@router.get("/jobs/{job_id}/events", response_model=None, openapi_extra=VIEW)
async def job_events(
    job_id: str,
    request: Request,
    start: Annotated[int, Query(ge=0, le=_MAX_JOB_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    last_event_id: Annotated[str | None, Header()] = None,
) -> dict[str, Any] | StreamingResponse:
    """The job's events from ``start`` on; as Server-Sent Events when asked for
    ``text/event-stream`` (resuming after ``Last-Event-ID``), until the job ends."""
    runtime = _runtime(request)
    store = runtime.store
    jid = _job_id(job_id)
    job = await asyncio.to_thread(store.get_job, jid)
    if "text/event-stream" in request.headers.get("accept", ""):
        after = last_event_id.strip() if last_event_id else ""
        if after and not (
            after.isascii() and after.isdigit() and len(after) <= 19 and int(after) < _MAX_JOB_ID
        ):
            raise ValidationError("Last-Event-ID must be an event id (a number)")
        first = int(after) + 1 if after else start
        return StreamingResponse(
            events_stream(runtime, request, jid, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
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


@router.get("/inventory", openapi_extra=VIEW)
async def inventory(request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    nodes = {n.certname: n for n in await asyncio.to_thread(runtime.store.list_nodes)}
    names = sorted(nodes.keys() | runtime.link.connected.keys())
    return {"items": [_inventory_item(runtime, n, nodes.get(n)) for n in names]}


@router.get("/inventory/{node}", openapi_extra=VIEW)
async def inventory_node(node: str, request: Request) -> dict[str, Any]:
    return _inventory_item(_runtime(request), validate_certname(node, "node"))


@router.post("/inventory", openapi_extra=VIEW)
async def inventory_nodes(body: InventoryQuery, request: Request) -> dict[str, Any]:
    runtime = _runtime(request)
    return {"items": [_inventory_item(runtime, validate_certname(n, "node")) for n in body.nodes]}


def _task_url(base: str, task: Task) -> str:
    return f"{base}/tasks/{task.module}/{task.short_name}"


@router.get("/tasks", openapi_extra=VIEW)
async def list_tasks(
    request: Request, principal: CurrentPrincipal, environment: str = "production"
) -> dict[str, Any]:
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
                "permitted": principal.allows("tasks", "run", t.name),
            }
            for t in tasks
            if not t.private
        ],
    }


@router.get("/tasks/{module}/{task}", openapi_extra=VIEW)
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
