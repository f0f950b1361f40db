"""``/classifier-api/v1``: node groups, classification and rule translation, as PE has them.

Bodies are read here and judged by :mod:`podium.classifier.groups` (so that errors carry
PE's classifier kinds, such as ``schema-violation``); the store calls run in threads.
``GET /groups/:id/nodes`` (the inventory's nodes a group matches) is Podium's own.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from podium.classifier import groups as model
from podium.classifier.rules import rule_to_ast, rule_to_nodes_query
from podium.classifier.store import GroupStore
from podium.errors import NotFound, ValidationError
from podium.protocol.names import CERTNAME_RULE, is_certname
from podium.server.access import CurrentPrincipal, GuardedRoute, allow, audit
from podium.server.runtime import Runtime
from podium.server.views import ERRORS

PREFIX = "/classifier-api/v1"

router = APIRouter(prefix=PREFIX, route_class=GuardedRoute, responses=ERRORS)
VIEW = allow("node_groups:view")
EDIT = allow("groups:edit")

# How many characters of an unparsable body an error quotes back.
_QUOTED_BODY = 2000


def _reads(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route that reads its JSON body itself."""
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": required, "content": content}}


_CLASSES = {"type": "object", "additionalProperties": {"type": ["object", "null"]}}
_GROUP_FIELDS = {
    "name": {"type": "string"},
    "parent": {"type": "string", "format": "uuid"},
    "rule": {"type": ["array", "null"]},
    "environment": {"type": "string"},
    "environment_trumps": {"type": "boolean"},
    "description": {"type": ["string", "null"]},
    "classes": _CLASSES,
    "config_data": _CLASSES,
    "variables": {"type": "object"},
    "serial_number": {"type": "integer"},
}
_GROUP = _reads(
    {"type": "object", "properties": _GROUP_FIELDS, "required": ["name", "parent", "classes"]}
)
_DELTA = _reads({"type": "object", "properties": _GROUP_FIELDS})
_NODES = _reads(
    {
        "type": "object",
        "properties": {"nodes": {"type": ["array", "string"], "items": {"type": "string"}}},
        "required": ["nodes"],
    },
    required=False,
)
_FACTS = _reads(
    {
        "type": "object",
        "properties": {"fact": {"type": "object"}, "trusted": {"type": "object"}},
    },
    required=False,
)
_RULE = _reads({"type": "array"})


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _groups(request: Request) -> GroupStore:
    return GroupStore(_runtime(request).store)


async def _body(request: Request) -> Any:
    """The JSON body, None when there is none; ``malformed-request`` when unparsable."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(
            f"the request body is not JSON: {exc}",
            kind="malformed-request",
            details={"body": raw[:_QUOTED_BODY].decode(errors="replace"), "error": str(exc)},
        ) from None


def _now() -> datetime:
    return datetime.now(UTC)


async def _audit(
    request: Request, principal: Any, type: str, group: model.Group, message: str
) -> None:
    await audit(
        request,
        principal,
        service="classifier",
        type=type,
        object_type="node_groups",
        object_id=str(group.id),
        object_name=group.name,
        message=message,
    )


def _location(group_id: str) -> str:
    return f"{PREFIX}/groups/{group_id}"


# -- groups ---------------------------------------------------------------------------


@router.get("/groups", openapi_extra=VIEW)
async def list_groups(request: Request) -> list[dict[str, Any]]:
    tree = await asyncio.to_thread(_groups(request).hierarchy)
    inherited = request.query_params.get("inherited", "false").lower() not in ("0", "false")
    ordered = sorted(tree.by_id.values(), key=lambda g: g.name)
    if inherited:
        return [tree.inherited_json(g.id) for g in ordered]
    return [g.to_json() for g in ordered]


@router.post("/groups", status_code=303, openapi_extra=EDIT | _GROUP)
async def create_group(request: Request, principal: CurrentPrincipal) -> Response:
    body = await _body(request)
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "id"}  # POST always makes a new id
    group = model.parse_group(body, model.GroupId(str(uuid.uuid4())))
    stored, _ = await asyncio.to_thread(_groups(request).put, group, at=_now())
    await _audit(request, principal, "create", stored, f"created node group {stored.name}")
    return Response(status_code=303, headers={"Location": _location(stored.id)})


@router.get("/groups/{group_id}", openapi_extra=VIEW)
async def get_group(group_id: str, request: Request) -> dict[str, Any]:
    gid = model.check_group_id(group_id)
    group = await asyncio.to_thread(_groups(request).get, gid)
    return group.to_json()


@router.put(
    "/groups/{group_id}",
    responses={201: {"description": "The group was created"}},
    openapi_extra=EDIT | _GROUP,
)
async def put_group(group_id: str, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    gid = model.check_group_id(group_id)
    body = await _body(request)
    group = model.parse_group(body, gid)
    stored, created = await asyncio.to_thread(
        _groups(request).put, group, at=_now(), expect_serial=model.expected_serial(body)
    )
    headers = {"Location": _location(gid)} if created else None
    verb = "created" if created else "replaced"
    await _audit(
        request,
        principal,
        "create" if created else "update",
        stored,
        f"{verb} node group {stored.name}",
    )
    return JSONResponse(stored.to_json(), status_code=201 if created else 200, headers=headers)


@router.post("/groups/{group_id}", openapi_extra=EDIT | _DELTA)
async def update_group(
    group_id: str, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    gid = model.check_group_id(group_id)
    delta = await _body(request)
    stored = await asyncio.to_thread(
        _groups(request).change, gid, lambda g: model.apply_delta(g, delta), at=_now()
    )
    await _audit(request, principal, "update", stored, f"changed node group {stored.name}")
    return stored.to_json()


@router.delete("/groups/{group_id}", status_code=204, openapi_extra=EDIT)
async def delete_group(group_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    gid = model.check_group_id(group_id)
    group = await asyncio.to_thread(_groups(request).get, gid)
    await asyncio.to_thread(_groups(request).delete, gid)
    await _audit(request, principal, "delete", group, f"deleted node group {group.name}")
    return Response(status_code=204)


async def _nodes_to_pin(request: Request) -> list[str]:
    """Certnames from ``?nodes=a,b`` and/or a body ``{"nodes": [...]}`` (or one name)."""
    names = [n.strip() for n in request.query_params.get("nodes", "").split(",") if n.strip()]
    body = await _body(request)
    if body is not None:
        if not isinstance(body, dict) or set(body) != {"nodes"}:
            raise model.schema_violation(
                'the body must be {"nodes": ["certname", ...]} and nothing else', body
            )
        given = body["nodes"]
        given = [given] if isinstance(given, str) else given
        if not isinstance(given, list) or not all(isinstance(n, str) for n in given):
            raise model.schema_violation("nodes is a certname or an array of certnames", body)
        names.extend(given)
    if not names:
        raise ValidationError(
            'name the nodes: ?nodes=a,b or a body {"nodes": ["a", "b"]}',
            kind="missing-parameters",
        )
    bad = [n for n in names if not is_certname(n)]
    if bad:
        raise model.schema_violation(f"invalid certname {bad[0]!r}: {CERTNAME_RULE}", body)
    return names


@router.post("/groups/{group_id}/pin", status_code=204, openapi_extra=EDIT | _NODES)
async def pin(group_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    gid = model.check_group_id(group_id)
    nodes = await _nodes_to_pin(request)
    stored = await asyncio.to_thread(
        _groups(request).change, gid, lambda g: model.pin_nodes(g, nodes), at=_now()
    )
    await _audit(request, principal, "pin", stored, f"pinned {', '.join(nodes)} in {stored.name}")
    return Response(status_code=204)


@router.post("/groups/{group_id}/unpin", status_code=204, openapi_extra=EDIT | _NODES)
async def unpin(group_id: str, request: Request, principal: CurrentPrincipal) -> Response:
    gid = model.check_group_id(group_id)
    nodes = await _nodes_to_pin(request)
    stored = await asyncio.to_thread(
        _groups(request).change, gid, lambda g: model.unpin_nodes(g, nodes), at=_now()
    )
    await _audit(
        request, principal, "unpin", stored, f"unpinned {', '.join(nodes)} in {stored.name}"
    )
    return Response(status_code=204)


def _translated(rule: list[Any] | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {
        "nodes_query_format": rule_to_nodes_query(rule),
        "inventory_query_format": rule_to_ast(rule),
    }


@router.get("/groups/{group_id}/rules", openapi_extra=VIEW)
async def group_rules(group_id: str, request: Request) -> dict[str, Any]:
    gid = model.check_group_id(group_id)
    tree = await asyncio.to_thread(_groups(request).hierarchy)
    group = tree.get(gid)
    inherited = tree.rule_with_inherited(gid)
    return {
        "rule": group.rule,
        "rule_with_inherited": inherited,
        "translated": _translated(inherited),
    }


@router.get("/groups/{group_id}/nodes", openapi_extra=VIEW)
async def group_nodes(group_id: str, request: Request) -> dict[str, Any]:
    """Podium's own: the inventory's nodes the group matches, by their stored facts."""
    gid = model.check_group_id(group_id)
    runtime = _runtime(request)

    def members() -> dict[str, Any]:
        tree = GroupStore(runtime.store).hierarchy()
        group = tree.get(gid)
        nodes = runtime.store.list_nodes()
        found = model.group_members(
            tree, gid, ((n.certname, n.facts, _trusted(n.certname)) for n in nodes)
        )
        return {"id": group.id, "name": group.name, "nodes": found}

    return await asyncio.to_thread(members)


# -- classification and rules ---------------------------------------------------------


def _trusted(certname: str) -> dict[str, Any]:
    # What the server itself vouches for. Never the node's own facts: a node could
    # claim any "trusted" fact it liked.
    return {"certname": certname}


@router.post("/classified/nodes/{name}", openapi_extra=VIEW | _FACTS)
async def classified_node(name: str, request: Request) -> dict[str, Any]:
    body = await _body(request)
    if body is not None and not isinstance(body, dict):
        raise model.schema_violation('the body is {"fact": {...}, "trusted": {...}}', body)
    given = body or {}
    unknown = sorted(set(given) - {"fact", "trusted", "name"})
    if unknown:
        raise model.schema_violation(
            f"unknown keys {', '.join(map(repr, unknown))}: the body has fact and trusted", body
        )
    for key in ("fact", "trusted"):
        if key in given and not isinstance(given[key], dict):
            raise model.schema_violation(f"{key} is an object of facts", body)
    runtime = _runtime(request)

    def classification() -> dict[str, Any]:
        facts = given.get("fact")
        if facts is None:
            try:
                facts = runtime.store.get_node(name).facts
            except NotFound:
                facts = {}
        trusted = given.get("trusted", _trusted(name))
        tree = GroupStore(runtime.store).hierarchy()
        return model.classify(tree, name, facts, trusted).to_json()

    return await asyncio.to_thread(classification)


@router.post("/rules/translate", openapi_extra=VIEW | _RULE)
async def translate(request: Request) -> Any:
    wanted = request.query_params.get("format", "nodes")
    if wanted not in ("nodes", "inventory"):
        raise ValidationError(
            f"unknown format {wanted!r}: use nodes (the default) or inventory",
            kind="malformed-request",
            details={"format": wanted},
        )
    rule = await _body(request)
    return rule_to_ast(rule) if wanted == "inventory" else rule_to_nodes_query(rule)
