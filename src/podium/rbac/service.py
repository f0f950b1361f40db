"""Access control as the server uses it: log in, look a token up, issue and revoke.

Blocking (database, Argon2, the directory): the server calls it from worker threads.
A token's principal is cached for a few seconds, so that a busy client does not cost a
query per request; revoking a token, or changing a user or a role, empties the cache of
this process at once (another server process on the same database sees it within
``cache_seconds``).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from podium.errors import RateLimited, Unauthenticated, ValidationError
from podium.rbac import credentials
from podium.rbac.permissions import Grants, default_roles
from podium.rbac.store import LOCAL, SERVICE, Activity, RbacStore, TokenRecord, UserRecord
from podium.rbac.throttle import Throttle

if TYPE_CHECKING:
    from podium.rbac.directory import Directory

log = logging.getLogger(__name__)

ADMIN: Final = "admin"
ADMINISTRATORS: Final = "Administrators"
_CACHE_MAX: Final = 50_000
_LOGIN_HINT: Final = "log in again with: podium access login"


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: a user, a service account, or a node's certificate."""

    id: str
    login: str
    kind: str  # local | remote | service | node
    display_name: str = ""
    grants: Grants = field(default_factory=Grants)
    token_id: str | None = None

    def allows(self, object_type: str, action: str, instance: str | None = None) -> bool:
        return self.grants.allows(object_type, action, instance)


def node_principal(certname: str) -> Principal:
    return Principal(id=certname, login=certname, kind="node", display_name=certname)


@dataclass(frozen=True)
class TokenPolicy:
    """How long tokens live, in seconds."""

    default_lifetime: float = 3600.0
    max_lifetime: float = 86400.0
    max_service_lifetime: float = 366 * 86400.0


class AccessService:
    """Logins, tokens and the activity log over an :class:`RbacStore`."""

    def __init__(
        self,
        store: RbacStore,
        *,
        directory: Directory | None = None,
        tokens: TokenPolicy | None = None,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.directory = directory
        self.tokens = tokens or TokenPolicy()
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()
        self._by_login = Throttle(limit=5, window=300.0)
        self._by_address = Throttle(limit=30, window=300.0)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # First start

    def bootstrap(self, admin_password: str | None) -> str | None:
        """Create the default roles and the ``admin`` superuser when there are no users;
        returns the admin's password when it was generated here (to be shown once)."""
        if self.store.user_count():
            return None
        roles = []
        for name, description, permissions in default_roles():
            role = self.store.role_by_name(name) or self.store.save_role(
                display_name=name,
                description=description,
                permissions=permissions,
                user_ids=(),
                group_ids=(),
            )
            roles.append(role)
        generated = None
        if admin_password is None:
            admin_password = generated = secrets.token_urlsafe(18)
        admins = [r.id for r in roles if r.display_name == ADMINISTRATORS]
        self.store.create_user(
            login=ADMIN,
            kind=LOCAL,
            display_name="Administrator",
            email="",
            password_hash=credentials.hash_password(admin_password),
            role_ids=admins,
            at=self.now(),
            is_superuser=True,
        )
        self.record(
            Activity("rbac", "create", ADMIN, "users", ADMIN, ADMIN, "created the admin user")
        )
        return generated

    # Logging in

    def login(
        self,
        login: str,
        password: str,
        *,
        lifetime: float | None = None,
        label: str = "",
        address: str = "",
    ) -> tuple[str, TokenRecord, UserRecord]:
        """A new token for ``login`` if ``password`` is theirs (locally or in the
        directory); :class:`Unauthenticated` otherwise, the same for every reason."""
        now = self._clock()
        for throttle, key in ((self._by_login, login), (self._by_address, address)):
            wait = throttle.retry_after(key, now)
            if wait is not None:
                self._failed(login, address, "too many failed attempts")
                raise RateLimited(
                    f"too many failed logins; try again in {max(1, round(wait))} s",
                    retry_after=wait,
                )
        user = self._check(login, password)
        if user is None:
            self._by_login.failed(login, now)
            self._by_address.failed(address, now)
            self._failed(login, address, "wrong login or password")
            raise Unauthenticated(
                "the login or the password is wrong", kind="puppetlabs.rbac/user-unauthenticated"
            )
        self._by_login.succeeded(login)
        token, record = self._issue(user, lifetime, self.tokens.max_lifetime, label, address)
        self.record(
            Activity(
                "rbac",
                "login",
                user.login,
                "users",
                user.id,
                user.login,
                f"logged in; token {record.id} expires {_iso(record.expires_at)}",
                subject_id=user.id,
                address=address or None,
            )
        )
        return token, record, user

    def _check(self, login: str, password: str) -> UserRecord | None:
        if not login or not password:
            credentials.verify_password(None, password)  # the same cost as a wrong password
            return None
        found = self.store.user_by_login(login)
        if found is not None and found[0].kind != "remote":
            user, stored = found
            if user.kind == SERVICE or stored is None:  # service accounts use tokens only
                credentials.verify_password(None, password)
                return None
            if not credentials.verify_password(stored, password) or user.is_revoked:
                return None
            rehash = credentials.hasher.hash(password) if credentials.needs_rehash(stored) else None
            self.store.record_login(user.id, self.now(), password_hash=rehash)
            return user
        if self.directory is None:
            credentials.verify_password(None, password)
            return None
        remote = self.directory.authenticate(login, password)
        if remote is None:
            return None
        user = self.store.remote_login(
            login=remote.login,
            display_name=remote.display_name,
            email=remote.email,
            groups=remote.groups,
            at=self.now(),
        )
        self.forget()
        return None if user.is_revoked else user

    def _failed(self, login: str, address: str, why: str) -> None:
        # Like every entry about a user, by the user's id (when the login is one).
        found = self.store.user_by_login(login) if login else None
        self.record(
            Activity(
                "rbac",
                "login_failed",
                login[:255] or "(none)",
                "users",
                found[0].id if found is not None else login[:255],
                login[:255],
                f"failed to log in: {why}",
                subject_id=found[0].id if found is not None else None,
                address=address or None,
            )
        )

    def token_for(self, login: str, *, lifetime: float | None = None, label: str = "") -> str:
        """A token for ``login`` without their password, for the server's own callers
        (never offered over the API)."""
        found = self.store.user_by_login(login)
        if found is None:
            raise ValidationError(f"no user {login}")
        return self._issue(found[0], lifetime, self.tokens.max_service_lifetime, label, "")[0]

    def issue_service_token(
        self, user: UserRecord, *, lifetime: float | None, label: str, address: str
    ) -> tuple[str, TokenRecord]:
        """A long-lived token for a service account."""
        if user.kind != SERVICE:
            raise ValidationError(
                f"{user.login} is not a service account; users get tokens by logging in"
            )
        return self._issue(user, lifetime, self.tokens.max_service_lifetime, label, address)

    def _issue(
        self, user: UserRecord, lifetime: float | None, cap: float, label: str, address: str
    ) -> tuple[str, TokenRecord]:
        seconds = self.tokens.default_lifetime if lifetime is None else lifetime
        if seconds <= 0:
            raise ValidationError("a token's lifetime is a positive number of seconds")
        if seconds > cap:
            raise ValidationError(
                f"a token lives at most {int(cap)} s here (asked: {int(seconds)} s); ask for "
                "less, or have the server's maximum raised"
            )
        token = credentials.new_token()
        created = self.now()
        record = self.store.add_token(
            digest=credentials.token_digest(token),
            user_id=user.id,
            label=label,
            client=address,
            created_at=created,
            expires_at=created + timedelta(seconds=seconds),
        )
        return token, record

    # Every request

    def cached(self, token: str) -> Principal | None:
        """The principal of ``token`` if this process looked it up a moment ago."""
        with self._lock:
            cached = self._cache.get(credentials.token_digest(token))
        return cached[0] if cached is not None and cached[1] > self._clock() else None

    def principal(self, token: str) -> Principal:
        """Who holds ``token``; :class:`Unauthenticated` when it is unknown, expired,
        revoked, or its user is."""
        digest = credentials.token_digest(token)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = self.store.token(digest)
        if found is None:
            raise Unauthenticated(f"the token is not valid; {_LOGIN_HINT}")
        record, user, permissions = found
        expires = record.expires_at.timestamp()
        if record.revoked_at is not None:
            raise Unauthenticated(f"the token has been revoked; {_LOGIN_HINT}")
        if expires <= now:
            raise Unauthenticated(f"the token has expired; {_LOGIN_HINT}")
        if user.is_revoked:
            raise Unauthenticated(f"the user {user.login} has been revoked")
        principal = Principal(
            id=user.id,
            login=user.login,
            kind=user.kind,
            display_name=user.display_name,
            grants=Grants(permissions, superuser=user.is_superuser),
            token_id=record.id,
        )
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[digest] = (principal, min(now + self._cache_seconds, expires))
        return principal

    def forget(self) -> None:
        """Drop cached principals: permissions or tokens have changed."""
        with self._lock:
            self._cache.clear()

    def revoke(
        self,
        by: Principal,
        *,
        tokens: Sequence[str] = (),
        ids: Sequence[str] = (),
        user_ids: Sequence[str] = (),
        address: str = "",
    ) -> list[TokenRecord]:
        """Revoke tokens (given by value, by id, or all of some users')."""
        revoked = self.store.revoke_tokens(
            self.now(),
            digests=[credentials.token_digest(t) for t in tokens],
            ids=ids,
            user_ids=user_ids,
        )
        self.forget()
        owners = {u.id: u.login for u in self.store.users(sorted({r.user_id for r in revoked}))}
        self.record(
            *(
                Activity(
                    "rbac",
                    "revoke_token",
                    by.login,
                    "tokens",
                    r.id,
                    r.label or r.id,
                    f"revoked token {r.id} of {owners.get(r.user_id, r.user_id)}",
                    subject_id=by.id,
                    address=address or None,
                )
                for r in revoked
            )
        )
        return revoked

    # The activity log

    def record(self, *entries: Activity) -> None:
        self.store.record(entries, self.now())


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
