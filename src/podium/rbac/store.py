"""Access control's storage: users, roles, directory groups, tokens, the activity log.

Each public method is one transaction on the server's :class:`~podium.store.Store`.
Nothing here decides who may do what (that is :mod:`podium.rbac.permissions` and the
service); this only reads and writes rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy import exc as sa_exc

from podium.errors import Conflict, NotFound
from podium.rbac.permissions import Permission
from podium.store import Store
from podium.store.tables import (
    activity_events,
    rbac_group_roles,
    rbac_groups,
    rbac_roles,
    rbac_tokens,
    rbac_user_roles,
    rbac_users,
)

_NS = "puppetlabs.rbac"

LOCAL, REMOTE, SERVICE = "local", "remote", "service"


@dataclass(frozen=True)
class UserRecord:
    id: str
    login: str
    kind: str  # local | remote | service
    display_name: str
    email: str
    is_superuser: bool
    is_revoked: bool
    role_ids: tuple[int, ...]  # given to the user directly
    group_ids: tuple[str, ...]  # the known directory groups a remote user is in
    inherited_role_ids: tuple[int, ...]  # from those groups
    created_at: datetime
    last_login: datetime | None


@dataclass(frozen=True)
class RoleRecord:
    id: int
    display_name: str
    description: str
    permissions: tuple[Permission, ...]
    user_ids: tuple[str, ...]
    group_ids: tuple[str, ...]


@dataclass(frozen=True)
class GroupRecord:
    id: str
    login: str
    display_name: str
    role_ids: tuple[int, ...]


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user_id: str
    label: str
    client: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Activity:
    """One entry of the activity log: who (subject) did what (type) to which object."""

    service: str
    type: str
    subject_name: str
    object_type: str
    object_id: str
    object_name: str
    message: str
    subject_id: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class ActivityRecord(Activity):
    id: int = 0
    timestamp: datetime | None = None


@dataclass(frozen=True)
class ActivityFilter:
    service: str | None = None
    subject_id: str | None = None
    subject_name: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    type: str | None = None
    after: datetime | None = None
    before: datetime | None = None


class RbacStore:
    """Access control's rows in ``store``'s database."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # Users

    def user_count(self) -> int:
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(rbac_users)).scalar_one())

    def users(self, ids: Sequence[str] | None = None) -> list[UserRecord]:
        with self._read() as c:
            query = select(rbac_users).order_by(rbac_users.c.login)
            if ids is not None:
                query = query.where(rbac_users.c.id.in_(list(ids)))
            return _users(c, c.execute(query).mappings().all())

    def user(self, user_id: str) -> UserRecord:
        found = self.users([user_id])
        if not found:
            raise NotFound(f"no user with id {user_id}", kind=f"{_NS}/not-found")
        return found[0]

    def user_by_login(self, login: str) -> tuple[UserRecord, str | None] | None:
        """The user and their password hash."""
        with self._read() as c:
            row = c.execute(select(rbac_users).where(rbac_users.c.login == login)).mappings()
            found = row.first()
            if found is None:
                return None
            return _users(c, [found])[0], found["password_hash"]

    def create_user(
        self,
        *,
        login: str,
        kind: str,
        display_name: str,
        email: str,
        password_hash: str | None,
        role_ids: Iterable[int],
        at: datetime,
        is_superuser: bool = False,
    ) -> UserRecord:
        user_id = str(uuid.uuid4())
        with self._write() as c:
            try:
                c.execute(
                    insert(rbac_users).values(
                        id=user_id,
                        login=login,
                        kind=kind,
                        display_name=display_name,
                        email=email,
                        password_hash=password_hash,
                        is_superuser=is_superuser,
                        is_revoked=False,
                        directory_groups=[],
                        created_at=at,
                    )
                )
            except sa_exc.IntegrityError as exc:
                raise _taken("user", login) from exc
            _set_roles(c, rbac_user_roles, "user_id", user_id, role_ids)
        return self.user(user_id)

    def update_user(
        self,
        user_id: str,
        *,
        display_name: str | None = None,
        email: str | None = None,
        role_ids: Iterable[int] | None = None,
        is_revoked: bool | None = None,
        password_hash: str | None = None,
    ) -> UserRecord:
        values: dict[str, Any] = {
            k: v
            for k, v in (
                ("display_name", display_name),
                ("email", email),
                ("is_revoked", is_revoked),
                ("password_hash", password_hash),
            )
            if v is not None
        }
        with self._write() as c:
            _require(c, rbac_users, user_id, "user")
            if values:
                c.execute(update(rbac_users).where(rbac_users.c.id == user_id).values(**values))
            if role_ids is not None:
                _set_roles(c, rbac_user_roles, "user_id", user_id, role_ids)
        return self.user(user_id)

    def delete_user(self, user_id: str) -> None:
        with self._write() as c:
            _require(c, rbac_users, user_id, "user")
            c.execute(delete(rbac_tokens).where(rbac_tokens.c.user_id == user_id))
            c.execute(delete(rbac_user_roles).where(rbac_user_roles.c.user_id == user_id))
            c.execute(delete(rbac_users).where(rbac_users.c.id == user_id))

    def remote_login(
        self, *, login: str, display_name: str, email: str, groups: Sequence[str], at: datetime
    ) -> UserRecord:
        """Record a directory user's login: created the first time, refreshed after."""
        with self._write() as c:
            row = c.execute(select(rbac_users.c.id).where(rbac_users.c.login == login)).first()
            values = {
                "display_name": display_name,
                "email": email,
                "directory_groups": sorted(set(groups)),
                "last_login": at,
            }
            if row is None:
                user_id = str(uuid.uuid4())
                c.execute(
                    insert(rbac_users).values(
                        id=user_id,
                        login=login,
                        kind=REMOTE,
                        password_hash=None,
                        is_superuser=False,
                        is_revoked=False,
                        created_at=at,
                        **values,
                    )
                )
            else:
                user_id = row[0]
                c.execute(update(rbac_users).where(rbac_users.c.id == user_id).values(**values))
        return self.user(user_id)

    def record_login(self, user_id: str, at: datetime, *, password_hash: str | None) -> None:
        values: dict[str, Any] = {"last_login": at}
        if password_hash is not None:
            values["password_hash"] = password_hash
        with self._write() as c:
            c.execute(update(rbac_users).where(rbac_users.c.id == user_id).values(**values))

    def permissions_of(self, user_id: str) -> tuple[Permission, ...]:
        """The union of the permissions of the user's roles, direct and inherited."""
        with self._read() as c:
            return _permissions(c, _role_ids_of(c, user_id))

    # Roles

    def roles(self, ids: Sequence[int] | None = None) -> list[RoleRecord]:
        with self._read() as c:
            query = select(rbac_roles).order_by(rbac_roles.c.id)
            if ids is not None:
                query = query.where(rbac_roles.c.id.in_(list(ids)))
            rows = c.execute(query).mappings().all()
            role_ids = [r["id"] for r in rows]
            users = _members(c, rbac_user_roles, "user_id", role_ids)
            groups = _members(c, rbac_group_roles, "group_id", role_ids)
            return [
                RoleRecord(
                    id=r["id"],
                    display_name=r["display_name"],
                    description=r["description"],
                    permissions=tuple(Permission.from_dict(p) for p in r["permissions"]),
                    user_ids=tuple(users.get(r["id"], ())),
                    group_ids=tuple(groups.get(r["id"], ())),
                )
                for r in rows
            ]

    def role(self, role_id: int) -> RoleRecord:
        found = self.roles([role_id])
        if not found:
            raise NotFound(f"no role with id {role_id}", kind=f"{_NS}/not-found")
        return found[0]

    def role_by_name(self, name: str) -> RoleRecord | None:
        with self._read() as c:
            row = c.execute(
                select(rbac_roles.c.id).where(rbac_roles.c.display_name == name)
            ).first()
        return None if row is None else self.role(row[0])

    def save_role(
        self,
        *,
        display_name: str,
        description: str,
        permissions: Sequence[Permission],
        user_ids: Iterable[str],
        group_ids: Iterable[str],
        role_id: int | None = None,
    ) -> RoleRecord:
        """Create a role (``role_id`` None) or replace one."""
        values = {
            "display_name": display_name,
            "description": description,
            "permissions": [p.to_dict() for p in permissions],
        }
        with self._write() as c:
            try:
                if role_id is None:
                    key = c.execute(insert(rbac_roles).values(**values)).inserted_primary_key
                    role_id = int(key[0]) if key is not None else 0
                else:
                    _require(c, rbac_roles, role_id, "role")
                    c.execute(update(rbac_roles).where(rbac_roles.c.id == role_id).values(**values))
            except sa_exc.IntegrityError as exc:
                raise _taken("role", display_name) from exc
            _set_members(c, rbac_user_roles, "user_id", rbac_users, role_id, user_ids, "user")
            _set_members(c, rbac_group_roles, "group_id", rbac_groups, role_id, group_ids, "group")
        return self.role(role_id)

    def delete_role(self, role_id: int) -> None:
        with self._write() as c:
            _require(c, rbac_roles, role_id, "role")
            c.execute(delete(rbac_user_roles).where(rbac_user_roles.c.role_id == role_id))
            c.execute(delete(rbac_group_roles).where(rbac_group_roles.c.role_id == role_id))
            c.execute(delete(rbac_roles).where(rbac_roles.c.id == role_id))

    # Directory groups

    def groups(self, ids: Sequence[str] | None = None) -> list[GroupRecord]:
        with self._read() as c:
            query = select(rbac_groups).order_by(rbac_groups.c.login)
            if ids is not None:
                query = query.where(rbac_groups.c.id.in_(list(ids)))
            rows = c.execute(query).mappings().all()
            roles = _roles_of(c, rbac_group_roles, "group_id", [r["id"] for r in rows])
            return [
                GroupRecord(r["id"], r["login"], r["display_name"], tuple(roles.get(r["id"], ())))
                for r in rows
            ]

    def group(self, group_id: str) -> GroupRecord:
        found = self.groups([group_id])
        if not found:
            raise NotFound(f"no directory group with id {group_id}", kind=f"{_NS}/not-found")
        return found[0]

    def save_group(
        self,
        *,
        login: str,
        display_name: str,
        role_ids: Iterable[int],
        group_id: str | None = None,
    ) -> GroupRecord:
        with self._write() as c:
            try:
                if group_id is None:
                    group_id = str(uuid.uuid4())
                    c.execute(
                        insert(rbac_groups).values(
                            id=group_id, login=login, display_name=display_name
                        )
                    )
                else:
                    _require(c, rbac_groups, group_id, "directory group")
                    c.execute(
                        update(rbac_groups)
                        .where(rbac_groups.c.id == group_id)
                        .values(login=login, display_name=display_name)
                    )
            except sa_exc.IntegrityError as exc:
                raise _taken("directory group", login) from exc
            _set_roles(c, rbac_group_roles, "group_id", group_id, role_ids)
        return self.group(group_id)

    def delete_group(self, group_id: str) -> None:
        with self._write() as c:
            _require(c, rbac_groups, group_id, "directory group")
            c.execute(delete(rbac_group_roles).where(rbac_group_roles.c.group_id == group_id))
            c.execute(delete(rbac_groups).where(rbac_groups.c.id == group_id))

    # Tokens

    def add_token(
        self,
        *,
        digest: str,
        user_id: str,
        label: str,
        client: str,
        created_at: datetime,
        expires_at: datetime,
    ) -> TokenRecord:
        token_id = str(uuid.uuid4())
        with self._write() as c:
            c.execute(
                insert(rbac_tokens).values(
                    digest=digest,
                    id=token_id,
                    user_id=user_id,
                    label=label,
                    client=client,
                    created_at=created_at,
                    expires_at=expires_at,
                )
            )
        return TokenRecord(token_id, user_id, label, client, created_at, expires_at, None)

    def token(self, digest: str) -> tuple[TokenRecord, UserRecord, tuple[Permission, ...]] | None:
        """A token by digest, its user and the user's permissions (revoked or not)."""
        with self._read() as c:
            row = c.execute(select(rbac_tokens).where(rbac_tokens.c.digest == digest)).mappings()
            found = row.first()
            if found is None:
                return None
            user_row = c.execute(
                select(rbac_users).where(rbac_users.c.id == found["user_id"])
            ).mappings()
            user = _users(c, [user_row.one()])[0]
            roles = sorted({*user.role_ids, *user.inherited_role_ids})
            return _token(found), user, _permissions(c, roles)

    def tokens(self, user_id: str | None = None) -> list[TokenRecord]:
        with self._read() as c:
            query = select(rbac_tokens).order_by(rbac_tokens.c.created_at)
            if user_id is not None:
                query = query.where(rbac_tokens.c.user_id == user_id)
            return [_token(r) for r in c.execute(query).mappings()]

    def revoke_tokens(
        self,
        at: datetime,
        *,
        digests: Sequence[str] = (),
        ids: Sequence[str] = (),
        user_ids: Sequence[str] = (),
    ) -> list[TokenRecord]:
        """Revoke the tokens named any of these ways; returns those newly revoked."""
        conditions = []
        if digests:
            conditions.append(rbac_tokens.c.digest.in_(list(digests)))
        if ids:
            conditions.append(rbac_tokens.c.id.in_(list(ids)))
        if user_ids:
            conditions.append(rbac_tokens.c.user_id.in_(list(user_ids)))
        if not conditions:
            return []
        where = or_(*conditions) & rbac_tokens.c.revoked_at.is_(None)
        with self._write() as c:
            rows = [_token(r) for r in c.execute(select(rbac_tokens).where(where)).mappings()]
            c.execute(update(rbac_tokens).where(where).values(revoked_at=at))
        return rows

    def purge_tokens(self, expired_before: datetime) -> int:
        with self._write() as c:
            result = c.execute(delete(rbac_tokens).where(rbac_tokens.c.expires_at < expired_before))
            return int(result.rowcount or 0)

    # Activity

    def record(self, entries: Sequence[Activity], at: datetime) -> None:
        if not entries:
            return
        with self._write() as c:
            c.execute(
                insert(activity_events),
                [
                    {
                        "timestamp": at,
                        "service": e.service,
                        "type": e.type,
                        "subject_id": e.subject_id,
                        "subject_name": e.subject_name[:255],
                        "object_type": e.object_type,
                        "object_id": e.object_id[:255],
                        "object_name": e.object_name[:255],
                        "message": e.message,
                        "address": e.address,
                    }
                    for e in entries
                ],
            )

    def activity(
        self, where: ActivityFilter, *, offset: int, limit: int, newest_first: bool = True
    ) -> tuple[list[ActivityRecord], int]:
        t = activity_events.c
        conditions = [
            column == value
            for column, value in (
                (t.service, where.service),
                (t.subject_id, where.subject_id),
                (t.subject_name, where.subject_name),
                (t.object_type, where.object_type),
                (t.object_id, where.object_id),
                (t.type, where.type),
            )
            if value is not None
        ]
        if where.after is not None:
            conditions.append(t.timestamp >= where.after)
        if where.before is not None:
            conditions.append(t.timestamp < where.before)
        with self._read() as c:
            total = c.execute(
                select(func.count()).select_from(activity_events).where(*conditions)
            ).scalar_one()
            rows = c.execute(
                select(activity_events)
                .where(*conditions)
                .order_by(t.id.desc() if newest_first else t.id.asc())
                .offset(offset)
                .limit(limit)
            ).mappings()
            return [ActivityRecord(**dict(r)) for r in rows], int(total)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._store._read() as connection:
            yield connection

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._store._write() as connection:
            yield connection


def _taken(what: str, name: str) -> Conflict:
    return Conflict(f"a {what} named {name!r} exists already", kind=f"{_NS}/conflict")


def _require(c: Connection, table: Any, key: Any, what: str) -> None:
    if c.execute(select(table.c.id).where(table.c.id == key)).first() is None:
        raise NotFound(f"no {what} with id {key}", kind=f"{_NS}/not-found")


def _set_roles(c: Connection, table: Any, column: str, key: str, role_ids: Iterable[int]) -> None:
    wanted = sorted(set(role_ids))
    if wanted:
        known = {
            r[0] for r in c.execute(select(rbac_roles.c.id).where(rbac_roles.c.id.in_(wanted)))
        }
        missing = [r for r in wanted if r not in known]
        if missing:
            raise NotFound(
                f"no role with id {', '.join(map(str, missing))}", kind=f"{_NS}/not-found"
            )
    c.execute(delete(table).where(table.c[column] == key))
    if wanted:
        c.execute(insert(table), [{column: key, "role_id": r} for r in wanted])


def _set_members(
    c: Connection,
    table: Any,
    column: str,
    members: Any,
    role_id: int,
    keys: Iterable[str],
    what: str,
) -> None:
    wanted = sorted(set(keys))
    if wanted:
        known = {r[0] for r in c.execute(select(members.c.id).where(members.c.id.in_(wanted)))}
        missing = [k for k in wanted if k not in known]
        if missing:
            raise NotFound(f"no {what} with id {', '.join(missing)}", kind=f"{_NS}/not-found")
    c.execute(delete(table).where(table.c.role_id == role_id))
    if wanted:
        c.execute(insert(table), [{column: k, "role_id": role_id} for k in wanted])


def _members(c: Connection, table: Any, column: str, role_ids: list[int]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    if role_ids:
        query = select(table.c.role_id, table.c[column]).where(table.c.role_id.in_(role_ids))
        for role_id, member in c.execute(query.order_by(table.c[column])):
            out.setdefault(role_id, []).append(member)
    return out


def _roles_of(c: Connection, table: Any, column: str, keys: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    if keys:
        query = select(table.c[column], table.c.role_id).where(table.c[column].in_(keys))
        for key, role_id in c.execute(query.order_by(table.c.role_id)):
            out.setdefault(key, []).append(role_id)
    return out


def _users(c: Connection, rows: Sequence[Any]) -> list[UserRecord]:
    direct = _roles_of(c, rbac_user_roles, "user_id", [r["id"] for r in rows])
    names = sorted({g for r in rows for g in (r["directory_groups"] or ())})
    by_name: dict[str, tuple[str, list[int]]] = {}
    if names:
        groups = c.execute(
            select(rbac_groups.c.id, rbac_groups.c.login).where(rbac_groups.c.login.in_(names))
        ).all()
        inherited = _roles_of(c, rbac_group_roles, "group_id", [g[0] for g in groups])
        by_name = {login: (gid, inherited.get(gid, [])) for gid, login in groups}
    out = []
    for r in rows:
        mine = [by_name[g] for g in (r["directory_groups"] or ()) if g in by_name]
        out.append(
            UserRecord(
                id=r["id"],
                login=r["login"],
                kind=r["kind"],
                display_name=r["display_name"],
                email=r["email"],
                is_superuser=bool(r["is_superuser"]),
                is_revoked=bool(r["is_revoked"]),
                role_ids=tuple(direct.get(r["id"], ())),
                group_ids=tuple(g for g, _ in mine),
                inherited_role_ids=tuple(sorted({i for _, ids in mine for i in ids})),
                created_at=r["created_at"],
                last_login=r["last_login"],
            )
        )
    return out


def _role_ids_of(c: Connection, user_id: str) -> list[int]:
    users = _users(
        c, c.execute(select(rbac_users).where(rbac_users.c.id == user_id)).mappings().all()
    )
    if not users:
        return []
    return sorted({*users[0].role_ids, *users[0].inherited_role_ids})


def _permissions(c: Connection, role_ids: list[int]) -> tuple[Permission, ...]:
    if not role_ids:
        return ()
    rows = c.execute(select(rbac_roles.c.permissions).where(rbac_roles.c.id.in_(role_ids)))
    return tuple(dict.fromkeys(Permission.from_dict(p) for (perms,) in rows for p in perms))


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        label=row["label"],
        client=row["client"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )
