"""``/orchestrator/v1/command/puppet_*``: Puppet's state on nodes, switched on and off,
and the live state of a resource compared across nodes (Podium additions, as
MCollective's puppet agent offered them).

Each command resolves its scope, asks every node's agent at once (a blocking
``puppet/<action>`` request, :meth:`~podium.jobs.service.JobService.ask`) and answers
with each node's answer (``items``), the nodes that answered grouped so that a node
that differs stands out (``groups``, by :mod:`podium.puppet.compare`), and those that
gave no usable answer by reason (``unanswered``):

- ``puppet_status`` (``orchestrator:view``): enabled or disabled and why, running, the
  last run;
- ``puppet_enable`` and ``puppet_disable`` (``puppet_agent:run`` on every node
  targeted: a node list naming others is refused, a query or group is narrowed to the
  permitted nodes and says who was ``left_out``): the status after the change; each
  node asked is written to the activity log;
- ``puppet_resource`` (``nodes:view_data``): a resource type's resources, or one of
  them, as ``puppet resource`` reads them, nodes grouped by identical state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import Field, StrictFloat, StrictInt, StrictStr, field_validator

from podium.errors import ProtocolError
from podium.inventory.targeting import Target, parse_scope
from podium.jobs.service import Answer
from podium.puppet.compare import (
    PuppetStatus,
    Resource,
    parse_resources,
    parse_status,
    reason_groups,
    resource_groups,
    status_groups,
)
from podium.rbac.permissions import Partition
from podium.rbac.service import Principal
from podium.rbac.store import Activity
from podium.server import views
from podium.server.access import CurrentPrincipal, GuardedRoute, address, allow
from podium.server.orchestrator import (
    PREFIX,
    Scope,
    Strict,
    non_empty,
    permitted_nodes,
    resolve_scope,
    target_view,
)
from podium.server.runtime import Runtime

router = APIRouter(prefix=PREFIX, route_class=GuardedRoute, responses=views.ERRORS)

MODULE = "puppet"  # the agent's PXP module
MAX_MESSAGE = 1000
MAX_TITLE = 4096
MAX_TYPE = 256
TYPE_NAME = re.compile(r"[a-z][a-z0-9_]*(::[a-z][a-z0-9_]*)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PUPPET_RUN = ("puppet_agent", "run", "*")

T = TypeVar("T")


_WAIT = "seconds to wait for the nodes' answers"
ShortWait = Annotated[StrictInt | StrictFloat, Field(gt=0, le=120, description=_WAIT)]
LongWait = Annotated[StrictInt | StrictFloat, Field(gt=0, le=300, description=_WAIT)]


class StatusCommand(Strict):
    scope: Scope
    timeout: ShortWait = 10.0


class EnableCommand(StatusCommand):
    """As ``puppet_status``'s body: the nodes and how long to wait."""


class DisableCommand(StatusCommand):
    message: Annotated[
        StrictStr,
        Field(max_length=MAX_MESSAGE, description="why Puppet is disabled, one line"),
    ] = ""

    @field_validator("message")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError(
                "the message must be one line of text, without control characters "
                "(newlines, tabs, escapes)"
            )
        return value


class ResourceCommand(Strict):
    scope: Scope
    type: Annotated[StrictStr, Field(description="a resource type: file, apt::source")]
    title: Annotated[StrictStr | None, Field(description="one resource; none: all of the type")] = (
        None
    )
    timeout: LongWait = 30.0

    @field_validator("type")
    @classmethod
    def _type_name(cls, value: str) -> str:
        if len(value) > MAX_TYPE or not TYPE_NAME.fullmatch(value):
            raise ValueError(
                "not a resource type's name: give one such as file, package or apt::source "
                "(lower-case letters, digits and _, starting with a letter, parts joined by ::)"
            )
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # `puppet resource` would take a title starting with "-" for an option.
        if not value or len(value) > MAX_TITLE or "\x00" in value or value.startswith("-"):
            raise ValueError(
                f"a title is 1 to {MAX_TITLE} characters without NUL, not starting with "
                "'-'; leave it out to read every resource of the type"
            )
        return value


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.post("/command/puppet_status", openapi_extra=allow("orchestrator:view"))
async def puppet_status(body: StatusCommand, request: Request) -> dict[str, Any]:
    """Each node's Puppet: enabled or disabled (and why), running, its last run; the
    nodes grouped by state."""
    runtime = _runtime(request)
    target = await resolve_scope(runtime, body.scope)
    answers = await runtime.jobs.ask(target.certnames, MODULE, "status", {}, wait=body.timeout)
    return status_view(target_view(runtime, target), answers)


@router.post("/command/puppet_enable", openapi_extra=allow("puppet_agent:run"))
async def puppet_enable(
    body: EnableCommand, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Enable Puppet on the nodes (lift the lock ``puppet agent --disable`` sets); each
    node's status after it."""
    return await _switch(request, principal, body, "enable", {})


@router.post("/command/puppet_disable", openapi_extra=allow("puppet_agent:run"))
async def puppet_disable(
    body: DisableCommand, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Disable Puppet on the nodes, with a reason that ``puppet agent`` and Podium's
    runs answer with; each node's status after it."""
    params = {"message": body.message} if body.message else {}
    return await _switch(request, principal, body, "disable", params)


async def _switch(
    request: Request,
    principal: Principal,
    body: StatusCommand,
    action: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    runtime = _runtime(request)
    scope = parse_scope(body.scope)
    target = await non_empty(runtime, scope)
    split = await permitted_nodes(
        runtime, principal, _PUPPET_RUN, target.certnames, scope, doing=f"{action} Puppet"
    )
    answers = await runtime.jobs.ask(split.allowed, MODULE, action, params, wait=body.timeout)
    view = status_view(target_view(runtime, _narrowed(target, split)), answers)
    if split.refused:
        view["left_out"] = {"nodes": list(split.refused), "reason": split.reason}
    entries = [
        _activity(request, principal, action, item["name"], _switch_message(action, params, item))
        for item in view["items"]
    ]
    await asyncio.to_thread(runtime.access.record, *entries)
    return view


@router.post("/command/puppet_resource", openapi_extra=allow("nodes:view_data"))
async def puppet_resource(body: ResourceCommand, request: Request) -> dict[str, Any]:
    """A resource type's resources (or one, by title) as ``puppet resource`` reads
    them on each node; the nodes grouped by identical state, largest group first, each
    other group with what differs from the first."""
    runtime = _runtime(request)
    target = await resolve_scope(runtime, body.scope)
    params: dict[str, Any] = {"type": body.type}
    if body.title is not None:
        params["title"] = body.title
    answers = await runtime.jobs.ask(
        target.certnames, MODULE, "resource", params, wait=body.timeout
    )
    return {
        "type": body.type,
        "title": body.title,
        **resource_view(target_view(runtime, target), answers),
    }


# -- views (pure) ----------------------------------------------------------------------


def outcome(answer: Answer, parse: Callable[[object], T]) -> T | str:
    """What a node's answer says, parsed; or why there is nothing to show (no answer,
    the agent refused or failed, an answer that is not valid)."""
    if answer.error is not None:
        return answer.error
    results = answer.results if answer.results is not None else {}
    error = results.get("_error")
    if error is not None:
        said = error.get("msg") if isinstance(error, dict) else None
        return str(said) if said else f"the agent failed: {str(error)[:200]}"
    try:
        return parse(results)
    except ProtocolError as exc:
        return exc.msg


def status_view(view: dict[str, Any], answers: Mapping[str, Answer]) -> dict[str, Any]:
    """``view`` (a target's, its ``items`` the nodes asked) with each node's status or
    why there is none, the groups by state, and the unanswered nodes by reason."""
    statuses: dict[str, PuppetStatus] = {}
    reasons: dict[str, str] = {}
    for item in view["items"]:
        answer = answers[item["name"]]
        found = outcome(answer, parse_status)
        if isinstance(found, str):
            item["error"] = reasons[item["name"]] = found
        else:
            statuses[item["name"]] = found
            item["seconds"] = round(answer.seconds, 6)
            item["status"] = found.to_dict()
    view["groups"] = [g.to_dict() for g in status_groups(statuses)]
    view["unanswered"] = _unanswered(reasons)
    return view


def resource_view(view: dict[str, Any], answers: Mapping[str, Answer]) -> dict[str, Any]:
    """``view`` with each node's group (an index into ``groups``) or why it has none,
    the groups of identical state, and the unanswered nodes by reason."""
    states: dict[str, Sequence[Resource]] = {}
    reasons: dict[str, str] = {}
    for item in view["items"]:
        answer = answers[item["name"]]
        found = outcome(answer, parse_resources)
        if isinstance(found, str):
            reasons[item["name"]] = found
        else:
            states[item["name"]] = found
            item["seconds"] = round(answer.seconds, 6)
    groups = resource_groups(states)
    index = {certname: i for i, g in enumerate(groups) for certname in g.nodes}
    for item in view["items"]:
        if item["name"] in index:
            item["group"] = index[item["name"]]
        else:
            item["error"] = reasons[item["name"]]
    view["groups"] = [g.to_dict() for g in groups]
    view["unanswered"] = _unanswered(reasons)
    return view


def _unanswered(reasons: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"reason": r, "nodes": list(nodes)} for r, nodes in reason_groups(reasons)]


def _narrowed(target: Target, split: Partition) -> Target:
    """``target`` without the nodes the caller may not touch."""
    allowed = set(split.allowed)
    return dataclasses.replace(target, certnames=tuple(c for c in target.certnames if c in allowed))


def _switch_message(action: str, params: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    """The activity log's sentence for one node: what was asked, what the node said."""
    certname, why = item["name"], params.get("message")
    asked = f"{action}d Puppet on {certname}" + (f": {why}" if why else "")
    status = item.get("status")
    if status is None:
        return f"asked to {action} Puppet on {certname}; it did not confirm: {item['error']}"
    if status["enabled"] != (action == "enable"):
        now = "enabled" if status["enabled"] else "disabled"
        return f"asked to {action} Puppet on {certname}; it reports Puppet still {now}"
    return asked


def _activity(
    request: Request, principal: Principal, action: str, certname: str, message: str
) -> Activity:
    return Activity(
        service="orchestrator",
        type=f"puppet_{action}",
        subject_name=principal.login,
        subject_id=principal.id,
        object_type="nodes",
        object_id=certname,
        object_name=certname,
        message=message,
        address=address(request) or None,
    )
