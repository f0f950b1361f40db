"""Logging in, tokens and their end, the activity log: the service on a real database."""

from __future__ import annotations

import pytest
from slapd import GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, SlapdServer

from podium.errors import RateLimited, Unauthenticated, ValidationError
from podium.rbac.directory import LdapDirectory, LdapSettings
from podium.rbac.service import AccessService, TokenPolicy
from podium.rbac.store import ActivityFilter, RbacStore
from podium.store import Store

START = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def access(store: Store, clock: Clock) -> AccessService:
    service = AccessService(RbacStore(store), clock=clock, cache_seconds=5.0)
    service.bootstrap("admin-password")
    return service


def activity(access: AccessService, **where: str) -> list[tuple[str, str, str]]:
    rows, _ = access.store.activity(ActivityFilter(**where), offset=0, limit=100)
    return [(r.type, r.subject_name, r.message) for r in rows]


def test_the_first_start_makes_the_admin_and_the_default_roles(store: Store) -> None:
    access = AccessService(RbacStore(store))
    password = access.bootstrap(None)
    assert password is not None and len(password) >= 16
    assert access.bootstrap(None) is None  # once only
    roles = {r.display_name for r in access.store.roles()}
    assert roles == {"Administrators", "Operators", "Viewers"}
    token, _, user = access.login("admin", password)
    assert user.is_superuser
    assert access.principal(token).allows("users", "edit")


def test_a_wrong_password_is_refused_and_logged_with_the_address(access: AccessService) -> None:
    with pytest.raises(Unauthenticated, match="the login or the password is wrong"):
        access.login("admin", "nope-nope", address="192.0.2.7")
    with pytest.raises(Unauthenticated, match="the login or the password is wrong"):
        access.login("nobody", "nope-nope", address="192.0.2.7")
    rows, _ = access.store.activity(ActivityFilter(type="login_failed"), offset=0, limit=10)
    assert [(r.subject_name, r.address) for r in rows] == [
        ("nobody", "192.0.2.7"),
        ("admin", "192.0.2.7"),
    ]


def test_repeated_failures_are_rate_limited_per_login_until_the_window_passes(
    access: AccessService, clock: Clock
) -> None:
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            access.login("admin", "wrong-password", address="192.0.2.1")
    with pytest.raises(RateLimited, match="too many failed logins") as refused:
        access.login("admin", "admin-password", address="192.0.2.2")  # even the right one
    assert refused.value.status == 429
    clock.now += 301
    token, _, _ = access.login("admin", "admin-password", address="192.0.2.2")
    assert access.principal(token).login == "admin"


def test_tokens_end_when_they_expire_or_are_revoked(access: AccessService, clock: Clock) -> None:
    token, record, _ = access.login("admin", "admin-password", lifetime=600)
    admin = access.principal(token)
    assert admin.token_id == record.id
    clock.now += 601
    with pytest.raises(Unauthenticated, match="expired; log in again with: podium access login"):
        access.principal(token)
    other, _, _ = access.login("admin", "admin-password")
    access.principal(other)  # cached now
    access.revoke(admin, tokens=[other])
    with pytest.raises(Unauthenticated, match="revoked"):
        access.principal(other)
    assert ("revoke_token", "admin") in [(t, s) for t, s, _ in activity(access)]


def test_only_the_digest_of_a_token_is_stored(store: Store, access: AccessService) -> None:
    token, _, _ = access.login("admin", "admin-password")
    with store._read() as connection:
        dump = "\n".join(
            str(row) for row in connection.exec_driver_sql("SELECT * FROM rbac_tokens")
        )
    assert token not in dump


def test_a_lifetime_over_the_maximum_is_refused(store: Store) -> None:
    access = AccessService(RbacStore(store), tokens=TokenPolicy(max_lifetime=7200))
    access.bootstrap("admin-password")
    with pytest.raises(ValidationError, match="at most 7200 s"):
        access.login("admin", "admin-password", lifetime=7201)


def test_a_revoked_user_can_neither_log_in_nor_use_a_token(access: AccessService) -> None:
    token, _, user = access.login("admin", "admin-password")
    access.store.update_user(user.id, is_revoked=True)
    access.forget()
    with pytest.raises(Unauthenticated, match="has been revoked"):
        access.principal(token)
    with pytest.raises(Unauthenticated):
        access.login("admin", "admin-password")


def test_a_directory_user_gets_the_roles_of_their_directory_group(
    store: Store, slapd: SlapdServer
) -> None:
    directory = LdapDirectory(
        LdapSettings(
            url=slapd.url,
            bind_dn=SERVICE_DN,
            bind_password=SERVICE_PASSWORD,
            user_base=PEOPLE,
            group_base=GROUPS,
        )
    )
    access = AccessService(RbacStore(store), directory=directory)
    access.bootstrap("admin-password")
    operators = access.store.role_by_name("Operators")
    assert operators is not None
    access.store.save_group(login="ops", display_name="Operations", role_ids=[operators.id])
    token, _, user = access.login("alice", "alice-secret")
    assert user.kind == "remote" and user.inherited_role_ids == (operators.id,)
    alice = access.principal(token)
    assert alice.allows("tasks", "run", "package")
    assert not alice.allows("users", "edit")
    with pytest.raises(Unauthenticated):
        access.login("alice", "wrong")
    # carol is in no mapped group: she may log in and do nothing
    carol = access.principal(access.login("carol", "carol-secret")[0])
    assert not carol.allows("orchestrator", "view")
