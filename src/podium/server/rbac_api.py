"""``/rbac-api``: logging in, tokens, users, roles, directory groups, permissions (PE's
paths and shapes), and ``/activity-api/v1/events``."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from podium.cli.durations import parse_duration
from podium.errors import NotPermitted, ValidationError
from podium.rbac import credentials
from podium.rbac.permissions import TYPES, Permission
from podium.rbac.service import AccessService, Principal
from podium.rbac.store import (
    LOCAL,
    SERVICE,
    ActivityFilter,
    ActivityRecord,
    GroupRecord,
    RbacStore,
    RoleRecord,
    UserRecord,
)
from podium.server.access import CurrentPrincipal, GuardedRoute, address, allow, audit
from podium.server.views import ERRORS, timestamp

router = APIRouter(prefix="/rbac-api/v1", route_class=GuardedRoute, responses=ERRORS)
tokens_v2 = APIRouter(prefix="/rbac-api/v2", route_class=GuardedRoute, responses=ERRORS)
activity = APIRouter(prefix="/activity-api/v1", route_class=GuardedRoute, responses=ERRORS)

Name = Annotated[str, Field(min_length=1, max_length=255)]
Text = Annotated[str, Field(max_length=4096)]
Password = Annotated[str, Field(max_length=credentials.MAX_PASSWORD)]
RoleId = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
RolePath = Annotated[int, Path(ge=1, le=2**31 - 1)]
Uuid = Annotated[str, Field(min_length=1, max_length=36)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Strict):
    login: Name
    password: Password
    lifetime: Annotated[StrictInt | str | None, Field(description="seconds, or 30m, 2h, 1d")] = None
    label: Annotated[str, Field(max_length=200)] = ""
    description: Text = ""
    client: Annotated[str, Field(max_length=200)] = ""


class NewUser(_Strict):
    login: Name
    display_name: Annotated[str, Field(max_length=255)] = ""
    email: Annotated[str, Field(max_length=255)] = ""
    password: Password | None = None
    role_ids: list[RoleId] = []
    is_service: StrictBool = False


class UserChange(_Strict):
    """PE's user object (read-only keys allowed and ignored), plus a new password."""

    id: Uuid | None = None
    login: Name | None = None
    display_name: Annotated[str, Field(max_length=255)] | None = None
    email: Annotated[str, Field(max_length=255)] | None = None
    role_ids: list[RoleId] | None = None
    is_revoked: StrictBool | None = None
    password: Password | None = None
    is_group: StrictBool | None = None
    is_remote: StrictBool | None = None
    is_superuser: StrictBool | None = None
    is_service: StrictBool | None = None
    last_login: str | None = None
    inherited_role_ids: list[RoleId] | None = None
    group_ids: list[Uuid] | None = None


class RoleBody(_Strict):
    display_name: Name
    description: Text | None = ""
    permissions: list[dict[str, Any]] = []
    user_ids: list[Uuid] = []
    group_ids: list[Uuid] = []
    id: RoleId | None = None


class GroupBody(_Strict):
    login: Name
    display_name: Annotated[str, Field(max_length=255)] = ""
    role_ids: list[RoleId] = []
    id: Uuid | None = None
    is_group: StrictBool | None = None
    is_remote: StrictBool | None = None
    is_superuser: StrictBool | None = None
    user_ids: list[Uuid] | None = None


class ServiceTokenBody(_Strict):
    lifetime: StrictInt | str | None = None
    label: Annotated[str, Field(max_length=200)] = ""


class RevokeBody(_Strict):
    revoke_tokens: list[Annotated[str, Field(max_length=512)]] = []
    revoke_tokens_by_usernames: list[Name] = []
    revoke_tokens_by_ids: list[Uuid] = []
    revoke_tokens_by_labels: list[str] = []


class PermittedBody(_Strict):
    permissions: list[dict[str, Any]]
    token: str | None = None


def _access(request: Request) -> AccessService:
    access: AccessService = request.app.state.runtime.access
    return access


def _store(request: Request) -> RbacStore:
    return _access(request).store


def _lifetime(value: int | str | None) -> float | None:
    if value is None or isinstance(value, int):
        return value
    units = {"y": 365 * 86400, "w": 7 * 86400}
    text = value.strip().lower()
    try:
        if text[-1:] in units and text[:-1].isascii() and text[:-1].isdigit():
            return int(text[:-1]) * units[text[-1]]
        return parse_duration(text)
    except ValueError as exc:
        raise ValidationError(
            f"lifetime {value!r} is not a duration: give seconds or 30m, 2h, 1d, 1y"
        ) from exc


def user_view(user: UserRecord) -> dict[str, Any]:
    return {
        "id": user.id,
        "login": user.login,
        "email": user.email,
        "display_name": user.display_name,
        "role_ids": list(user.role_ids),
        "is_group": False,
        "is_remote": user.kind == "remote",
        "is_superuser": user.is_superuser,
        "is_revoked": user.is_revoked,
        "is_service": user.kind == SERVICE,
        "last_login": timestamp(user.last_login),
        "inherited_role_ids": list(user.inherited_role_ids),
        "group_ids": list(user.group_ids),
    }


def role_view(role: RoleRecord) -> dict[str, Any]:
    return {
        "id": role.id,
        "display_name": role.display_name,
        "description": role.description,
        "permissions": [p.to_dict() for p in role.permissions],
        "user_ids": list(role.user_ids),
        "group_ids": list(role.group_ids),
    }


def group_view(group: GroupRecord) -> dict[str, Any]:
    return {
        "id": group.id,
        "login": group.login,
        "display_name": group.display_name,
        "role_ids": list(group.role_ids),
        "is_group": True,
        "is_remote": True,
        "is_superuser": False,
    }


def _created(location: str, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=201, headers={"Location": location})


# Logging in and tokens


@router.post("/auth/token", openapi_extra=allow("open"))
async def login(body: LoginBody, request: Request) -> dict[str, Any]:
    """A token for a login and password (local or directory user)."""
    token, record, _ = await asyncio.to_thread(
        _access(request).login,
        body.login,
        body.password,
        lifetime=_lifetime(body.lifetime),
        label=body.label,
        address=address(request),
    )
    return {"token": token, "id": record.id, "expires": timestamp(record.expires_at)}


@tokens_v2.post("/tokens", status_code=204, openapi_extra=allow("authenticated"))
async def revoke_tokens(
    body: RevokeBody, request: Request, principal: CurrentPrincipal
) -> Response:
    """Revoke tokens: by value (anyone holding one), or a user's, by id or label (one's
    own, or anyone's with ``users:edit``)."""
    return await _revoke(body, request, principal)


@tokens_v2.delete("/tokens", status_code=204, openapi_extra=allow("authenticated"))
async def revoke_tokens_by_query(
    request: Request,
    principal: CurrentPrincipal,
    revoke_tokens: Annotated[str, Query(max_length=65536)] = "",
    revoke_tokens_by_usernames: Annotated[str, Query(max_length=65536)] = "",
    revoke_tokens_by_ids: Annotated[str, Query(max_length=65536)] = "",
    revoke_tokens_by_labels: Annotated[str, Query(max_length=65536)] = "",
) -> Response:
    """PE's form of the same: comma-separated lists in the query string."""

    def items(text: str) -> list[str]:
        return [i.strip() for i in text.split(",") if i.strip()]

    body = RevokeBody(
        revoke_tokens=items(revoke_tokens),
        revoke_tokens_by_usernames=items(revoke_tokens_by_usernames),
        revoke_tokens_by_ids=items(revoke_tokens_by_ids),
        revoke_tokens_by_labels=items(revoke_tokens_by_labels),
    )
    return await _revoke(body, request, principal)


async def _revoke(body: RevokeBody, request: Request, principal: Principal) -> Response:
    store = _store(request)
    users = await asyncio.to_thread(store.users)
    by_login = {u.login: u for u in users}
    unknown = [n for n in body.revoke_tokens_by_usernames if n not in by_login]
    if unknown:
        raise ValidationError(f"no user named {', '.join(unknown)}")
    user_ids = [by_login[n].id for n in body.revoke_tokens_by_usernames]
    ids = list(body.revoke_tokens_by_ids)
    if body.revoke_tokens_by_labels:  # the caller's own, as in PE
        mine = await asyncio.to_thread(store.tokens, principal.id)
        ids += [t.id for t in mine if t.label in body.revoke_tokens_by_labels]
    if (ids or user_ids) and not principal.allows("users", "edit"):
        tokens = await asyncio.to_thread(store.tokens, principal.id)
        own = {t.id for t in tokens}
        if any(u != principal.id for u in user_ids) or any(i not in own for i in ids):
            raise NotPermitted(
                f"{principal.login} may revoke only their own tokens: revoking others' needs "
                "the permission users:edit",
                kind="puppetlabs.rbac/permission-denied",
            )
    await asyncio.to_thread(
        _access(request).revoke,
        principal,
        tokens=body.revoke_tokens,
        ids=ids,
        user_ids=user_ids,
        address=address(request),
    )
    return Response(status_code=204)


@tokens_v2.delete("/tokens/{token}", status_code=204, openapi_extra=allow("authenticated"))
async def revoke_token(token: str, request: Request, principal: CurrentPrincipal) -> Response:
    """Revoke the token given (holding it is the right to revoke it)."""
    await asyncio.to_thread(
        _access(request).revoke, principal, tokens=[token], address=address(request)
    )
    return Response(status_code=204)


# Users


@router.get("/users", openapi_extra=allow("users:view"))
async def list_users(request: Request, id: str | None = None) -> list[dict[str, Any]]:
    ids = [i for i in id.split(",") if i] if id else None
    return [user_view(u) for u in await asyncio.to_thread(_store(request).users, ids)]


@router.get("/users/current", openapi_extra=allow("authenticated"))
async def current_user(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    """The caller, with their permissions and the token they came with."""
    store = _store(request)
    user = await asyncio.to_thread(store.user, principal.id)
    tokens = await asyncio.to_thread(store.tokens, principal.id)
    token = next((t for t in tokens if t.id == principal.token_id), None)
    return {
        **user_view(user),
        "permissions": [p.to_dict() for p in principal.grants.permissions],
        "token": token
        and {
            "id": token.id,
            "label": token.label,
            "created": timestamp(token.created_at),
            "expires": timestamp(token.expires_at),
        },
    }


@router.get("/users/{sid}", openapi_extra=allow("users:view"))
async def get_user(sid: Uuid, request: Request) -> dict[str, Any]:
    return user_view(await asyncio.to_thread(_store(request).user, sid))


@router.post("/users", status_code=201, openapi_extra=allow("users:edit"))
async def create_user(body: NewUser, request: Request, principal: CurrentPrincipal) -> JSONResponse:
    """A local user (with a password) or, with ``is_service``, a service account."""
    if body.is_service and body.password is not None:
        raise ValidationError("a service account has no password: give it a token instead")
    hashed = None
    if body.password is not None:
        hashed = await asyncio.to_thread(credentials.hash_password, body.password)
    user = await asyncio.to_thread(
        _store(request).create_user,
        login=body.login,
        kind=SERVICE if body.is_service else LOCAL,
        display_name=body.display_name or body.login,
        email=body.email,
        password_hash=hashed,
        role_ids=body.role_ids,
        at=_access(request).now(),
    )
    kind = "service account" if body.is_service else "user"
    await _audit_user(request, principal, "create", user, f"created {kind} {user.login}")
    return _created(f"/rbac-api/v1/users/{user.id}", user_view(user))


@router.put("/users/{sid}", openapi_extra=allow("users:edit"))
async def update_user(
    sid: Uuid, body: UserChange, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    store = _store(request)
    before = await asyncio.to_thread(store.user, sid)
    if body.login is not None and body.login != before.login:
        raise ValidationError("a user's login cannot change; create a new user instead")
    hashed = None
    if body.password is not None:
        if before.kind != LOCAL:
            raise ValidationError(f"{before.login} is not a local user: it has no password here")
        hashed = await asyncio.to_thread(credentials.hash_password, body.password)
    user = await asyncio.to_thread(
        store.update_user,
        sid,
        display_name=body.display_name,
        email=body.email,
        role_ids=body.role_ids,
        is_revoked=body.is_revoked,
        password_hash=hashed,
    )
    if user.is_revoked and not before.is_revoked:  # reinstating must not revive old tokens
        await asyncio.to_thread(
            _access(request).revoke, principal, user_ids=[sid], address=address(request)
        )
    _access(request).forget()
    changes = [
        what
        for what, changed in (
            ("roles", body.role_ids is not None and set(body.role_ids) != set(before.role_ids)),
            ("password", hashed is not None),
            ("revoked", body.is_revoked is True and not before.is_revoked),
            ("reinstated", body.is_revoked is False and before.is_revoked),
        )
        if changed
    ]
    message = f"changed user {user.login}" + (f": {', '.join(changes)}" if changes else "")
    await _audit_user(request, principal, "update", user, message)
    return user_view(user)


@router.delete("/users/{sid}", status_code=204, openapi_extra=allow("users:edit"))
async def delete_user(sid: Uuid, request: Request, principal: CurrentPrincipal) -> Response:
    store = _store(request)
    user = await asyncio.to_thread(store.user, sid)
    if user.id == principal.id:
        raise ValidationError("you cannot delete yourself")
    await asyncio.to_thread(store.delete_user, sid)
    _access(request).forget()
    await _audit_user(request, principal, "delete", user, f"deleted user {user.login}")
    return Response(status_code=204)


@router.post("/users/{sid}/tokens", openapi_extra=allow("users:edit"))
async def service_token(
    sid: Uuid, body: ServiceTokenBody, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    """A long-lived token for a service account (a Podium addition)."""
    access = _access(request)
    user = await asyncio.to_thread(access.store.user, sid)
    token, record = await asyncio.to_thread(
        access.issue_service_token,
        user,
        lifetime=_lifetime(body.lifetime),
        label=body.label,
        address=address(request),
    )
    await audit(
        request,
        principal,
        service="rbac",
        type="create_token",
        object_type="tokens",
        object_id=record.id,
        object_name=user.login,
        message=f"created token {record.id} for service account {user.login}, "
        f"expires {timestamp(record.expires_at)}",
    )
    return {"token": token, "id": record.id, "expires": timestamp(record.expires_at)}


async def _audit_user(
    request: Request, principal: Principal, type: str, user: UserRecord, message: str
) -> None:
    await audit(
        request,
        principal,
        service="rbac",
        type=type,
        object_type="users",
        object_id=user.id,
        object_name=user.login,
        message=message,
    )


# Roles


def _permissions(items: list[dict[str, Any]]) -> list[Permission]:
    return [Permission.from_dict(p) for p in items]


@router.get("/roles", openapi_extra=allow("users:view"))
async def list_roles(request: Request) -> list[dict[str, Any]]:
    return [role_view(r) for r in await asyncio.to_thread(_store(request).roles)]


@router.get("/roles/{role_id}", openapi_extra=allow("users:view"))
async def get_role(role_id: RolePath, request: Request) -> dict[str, Any]:
    return role_view(await asyncio.to_thread(_store(request).role, role_id))


@router.post("/roles", status_code=201, openapi_extra=allow("users:edit"))
async def create_role(
    body: RoleBody, request: Request, principal: CurrentPrincipal
) -> JSONResponse:
    role = await _save_role(request, body, None)
    await _audit_role(request, principal, "create", role, f"created role {role.display_name}")
    return _created(f"/rbac-api/v1/roles/{role.id}", role_view(role))


@router.put("/roles/{role_id}", openapi_extra=allow("users:edit"))
async def update_role(
    role_id: RolePath, body: RoleBody, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    if body.id is not None and body.id != role_id:
        raise ValidationError(f"the body's id {body.id} is not the path's {role_id}")
    store = _store(request)
    before = await asyncio.to_thread(store.role, role_id)
    role = await _save_role(request, body, role_id)
    perms = ", ".join(str(p) for p in role.permissions) or "none"
    message = f"changed role {role.display_name}: permissions {perms}"
    users = {u.id: u.login for u in await asyncio.to_thread(store.users)}
    for what, now, then, names in (
        ("users", role.user_ids, before.user_ids, users),
        ("directory groups", role.group_ids, before.group_ids, {}),
    ):
        added = [names.get(i, i) for i in now if i not in then]
        removed = [names.get(i, i) for i in then if i not in now]
        if added:
            message += f"; {what} added: {', '.join(added)}"
        if removed:
            message += f"; {what} removed: {', '.join(removed)}"
    await _audit_role(request, principal, "update", role, message)
    return role_view(role)


@router.delete("/roles/{role_id}", status_code=204, openapi_extra=allow("users:edit"))
async def delete_role(role_id: RolePath, request: Request, principal: CurrentPrincipal) -> Response:
    store = _store(request)
    role = await asyncio.to_thread(store.role, role_id)
    await asyncio.to_thread(store.delete_role, role_id)
    _access(request).forget()
    await _audit_role(request, principal, "delete", role, f"deleted role {role.display_name}")
    return Response(status_code=204)


async def _save_role(request: Request, body: RoleBody, role_id: int | None) -> RoleRecord:
    role = await asyncio.to_thread(
        _store(request).save_role,
        display_name=body.display_name,
        description=body.description or "",
        permissions=_permissions(body.permissions),
        user_ids=body.user_ids,
        group_ids=body.group_ids,
        role_id=role_id,
    )
    _access(request).forget()
    return role


async def _audit_role(
    request: Request, principal: Principal, type: str, role: RoleRecord, message: str
) -> None:
    await audit(
        request,
        principal,
        service="rbac",
        type=type,
        object_type="roles",
        object_id=str(role.id),
        object_name=role.display_name,
        message=message,
    )


# Directory groups


@router.get("/groups", openapi_extra=allow("users:view"))
async def list_groups(request: Request) -> list[dict[str, Any]]:
    return [group_view(g) for g in await asyncio.to_thread(_store(request).groups)]


@router.get("/groups/{group_id}", openapi_extra=allow("users:view"))
async def get_group(group_id: Uuid, request: Request) -> dict[str, Any]:
    return group_view(await asyncio.to_thread(_store(request).group, group_id))


@router.post("/groups", status_code=201, openapi_extra=allow("users:edit"))
async def create_group(
    body: GroupBody, request: Request, principal: CurrentPrincipal
) -> JSONResponse:
    """Map a directory group to roles: its members get them when they log in."""
    group = await _save_group(request, body, None)
    await _audit_group(request, principal, "create", group)
    return _created(f"/rbac-api/v1/groups/{group.id}", group_view(group))


@router.put("/groups/{group_id}", openapi_extra=allow("users:edit"))
async def update_group(
    group_id: Uuid, body: GroupBody, request: Request, principal: CurrentPrincipal
) -> dict[str, Any]:
    group = await _save_group(request, body, group_id)
    await _audit_group(request, principal, "update", group)
    return group_view(group)


@router.delete("/groups/{group_id}", status_code=204, openapi_extra=allow("users:edit"))
async def delete_group(group_id: Uuid, request: Request, principal: CurrentPrincipal) -> Response:
    store = _store(request)
    group = await asyncio.to_thread(store.group, group_id)
    await asyncio.to_thread(store.delete_group, group_id)
    _access(request).forget()
    await _audit_group(request, principal, "delete", group)
    return Response(status_code=204)


async def _save_group(request: Request, body: GroupBody, group_id: str | None) -> GroupRecord:
    group = await asyncio.to_thread(
        _store(request).save_group,
        login=body.login,
        display_name=body.display_name or body.login,
        role_ids=body.role_ids,
        group_id=group_id,
    )
    _access(request).forget()
    return group


async def _audit_group(
    request: Request, principal: Principal, type: str, group: GroupRecord
) -> None:
    roles = ", ".join(map(str, group.role_ids)) or "none"
    await audit(
        request,
        principal,
        service="rbac",
        type=type,
        object_type="groups",
        object_id=group.id,
        object_name=group.login,
        message=f"{type}d directory group {group.login} (roles {roles})",
    )


# Permissions


@router.get("/types", openapi_extra=allow("authenticated"))
async def permission_types() -> list[dict[str, Any]]:
    """Every permission there is: object types and their actions."""
    return [t.to_dict() for t in TYPES]


@router.get("/permissions", openapi_extra=allow("authenticated"))
async def permissions(principal: CurrentPrincipal) -> dict[str, Any]:
    """The caller's permissions, and every permission there is."""
    return {
        "superuser": principal.grants.superuser,
        "permissions": [p.to_dict() for p in principal.grants.permissions],
        "types": [t.to_dict() for t in TYPES],
    }


@router.post("/permitted", openapi_extra=allow("authenticated"))
async def permitted(body: PermittedBody, principal: CurrentPrincipal) -> list[bool]:
    """For each permission asked about, whether the caller holds it (on some nodes)."""
    asked = _permissions(body.permissions)
    return [principal.allows(p.object_type, p.action, p.instance) for p in asked]


# The activity log


def _commit(record: ActivityRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "service": {"id": record.service},
        "subject": {"id": record.subject_id, "name": record.subject_name},
        "object": {"id": record.object_id, "name": record.object_name, "type": record.object_type},
        "timestamp": timestamp(record.timestamp),
        "ip_address": record.address,
        "events": [
            {
                "type": record.type,
                "what": record.object_type,
                "description": record.type,
                "message": record.message,
            }
        ],
    }


@activity.get("/events", openapi_extra=allow("activity:view"))
async def events(
    request: Request,
    service_id: Annotated[str | None, Query(max_length=32)] = None,
    subject_type: Annotated[str | None, Query(max_length=32)] = None,
    subject_id: Annotated[str | None, Query(max_length=255)] = None,
    login: Annotated[str | None, Query(max_length=255)] = None,
    object_type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=255)] = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    after: datetime | None = None,
    before: datetime | None = None,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> dict[str, Any]:
    """Who did what, newest first, in PE's shape (``commits``, ``total-rows``)."""
    if subject_type not in (None, "users"):
        raise ValidationError("subject_type is users: only users act")
    where = ActivityFilter(
        service=service_id,
        subject_id=subject_id,
        subject_name=login,
        object_type=object_type,
        object_id=object_id,
        type=type,
        after=_aware(after, "after"),
        before=_aware(before, "before"),
    )
    rows, total = await asyncio.to_thread(
        _store(request).activity, where, offset=offset, limit=limit, newest_first=order == "desc"
    )
    return {
        "commits": [_commit(r) for r in rows],
        "offset": offset,
        "limit": limit,
        "total-rows": total,
    }


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise ValidationError(f"{name} needs a time zone, e.g. 2026-12-01T10:00:00Z")
    return value
