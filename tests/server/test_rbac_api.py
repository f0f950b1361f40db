"""``/rbac-api``: users, service accounts, roles, directory groups and tokens, in PE's
shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from access import admin_token
from podium.server.app import create_app
from podium.server.runtime import Runtime


@pytest.fixture
async def rbac(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)),
        base_url="https://podium.test",
        headers={"X-Authentication": admin_token(runtime)},
    ) as client:
        yield client


async def login(client: httpx.AsyncClient, user: str, password: str, **extra: object) -> str:
    response = await client.post(
        "/rbac-api/v1/auth/token",
        json={"login": user, "password": password, **extra},
        headers={"X-Authentication": ""},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def test_users_are_created_listed_and_changed_in_pe_shapes(rbac: httpx.AsyncClient) -> None:
    roles = {r["display_name"]: r["id"] for r in (await rbac.get("/rbac-api/v1/roles")).json()}
    created = await rbac.post(
        "/rbac-api/v1/users",
        json={
            "login": "kalo",
            "display_name": "Kalo Hill",
            "email": "kalo@example.test",
            "password": "kalo-password",
            "role_ids": [roles["Viewers"]],
        },
    )
    assert created.status_code == 201
    user = created.json()
    assert created.headers["location"] == f"/rbac-api/v1/users/{user['id']}"
    assert {k: user[k] for k in ("login", "display_name", "role_ids", "is_remote")} == {
        "login": "kalo",
        "display_name": "Kalo Hill",
        "role_ids": [roles["Viewers"]],
        "is_remote": False,
    }
    assert user["last_login"] is None and not user["is_superuser"]
    token = await login(rbac, "kalo", "kalo-password")
    me = await rbac.get("/rbac-api/v1/users/current", headers={"X-Authentication": token})
    assert me.json()["login"] == "kalo" and me.json()["last_login"] is not None
    # a viewer may not create jobs
    job = await rbac.post(
        "/orchestrator/v1/command/task",
        json={"task": "podium::echo", "params": {}, "scope": {"nodes": ["a"]}},
        headers={"X-Authentication": token},
    )
    assert job.status_code == 403
    # revoking the user ends their tokens
    changed = await rbac.put(f"/rbac-api/v1/users/{user['id']}", json={**user, "is_revoked": True})
    assert changed.status_code == 200 and changed.json()["is_revoked"]
    again = await rbac.get("/rbac-api/v1/users/current", headers={"X-Authentication": token})
    assert again.status_code == 401
    # reinstating does not bring the old tokens back
    await rbac.put(f"/rbac-api/v1/users/{user['id']}", json={"is_revoked": False})
    later = await rbac.get("/rbac-api/v1/users/current", headers={"X-Authentication": token})
    assert later.status_code == 401 and "revoked" in later.json()["msg"]
    duplicate = await rbac.post("/rbac-api/v1/users", json={"login": "kalo"})
    assert duplicate.status_code == 409


async def test_a_short_password_is_refused(rbac: httpx.AsyncClient) -> None:
    response = await rbac.post("/rbac-api/v1/users", json={"login": "x", "password": "short"})
    assert response.status_code == 400
    assert "at least 8 characters" in response.json()["msg"]


async def test_service_accounts_get_long_lived_tokens_and_cannot_log_in(
    rbac: httpx.AsyncClient,
) -> None:
    roles = {r["display_name"]: r["id"] for r in (await rbac.get("/rbac-api/v1/roles")).json()}
    account = (
        await rbac.post(
            "/rbac-api/v1/users",
            json={"login": "ci-bot", "is_service": True, "role_ids": [roles["Operators"]]},
        )
    ).json()
    assert account["is_service"]
    issued = await rbac.post(
        f"/rbac-api/v1/users/{account['id']}/tokens", json={"lifetime": "90d", "label": "ci"}
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["token"]
    jobs = await rbac.get("/orchestrator/v1/jobs", headers={"X-Authentication": token})
    assert jobs.status_code == 200
    users = await rbac.get("/rbac-api/v1/users", headers={"X-Authentication": token})
    assert users.status_code == 403  # scoped by its role
    too_long = await rbac.post(
        f"/rbac-api/v1/users/{account['id']}/tokens", json={"lifetime": "2y"}
    )
    assert too_long.status_code == 400
    refused = await rbac.post(
        "/rbac-api/v1/auth/token",
        json={"login": "ci-bot", "password": "anything-at-all"},
        headers={"X-Authentication": ""},
    )
    assert refused.status_code == 401


async def test_a_wrong_password_is_refused_and_a_lifetime_that_is_no_duration_is_a_400(
    rbac: httpx.AsyncClient,
) -> None:
    refused = await rbac.post(
        "/rbac-api/v1/auth/token",
        json={"login": "admin", "password": "x" * 8, "lifetime": "2d"},
        headers={"X-Authentication": ""},
    )
    assert refused.status_code == 401  # the password is checked first
    bad = await rbac.post(
        "/rbac-api/v1/auth/token",
        json={"login": "admin", "password": "x" * 8, "lifetime": "soon"},
        headers={"X-Authentication": ""},
    )
    assert bad.status_code == 400 and "not a duration" in bad.json()["msg"]


async def test_users_revoke_their_own_tokens_and_only_editors_revoke_others(
    rbac: httpx.AsyncClient,
) -> None:
    await rbac.post("/rbac-api/v1/users", json={"login": "una", "password": "una-password"})
    una = await login(rbac, "una", "una-password")
    second = await login(rbac, "una", "una-password")
    as_una = {"X-Authentication": una}
    others = await rbac.post(
        "/rbac-api/v2/tokens", json={"revoke_tokens_by_usernames": ["admin"]}, headers=as_una
    )
    assert others.status_code == 403 and "users:edit" in others.json()["msg"]
    own = await rbac.post("/rbac-api/v2/tokens", json={"revoke_tokens": [second]}, headers=as_una)
    assert own.status_code == 204
    gone = await rbac.get("/rbac-api/v1/users/current", headers={"X-Authentication": second})
    assert gone.status_code == 401 and "revoked" in gone.json()["msg"]
    by_admin = await rbac.post("/rbac-api/v2/tokens", json={"revoke_tokens_by_usernames": ["una"]})
    assert by_admin.status_code == 204
    assert (await rbac.get("/rbac-api/v1/users/current", headers=as_una)).status_code == 401


async def test_roles_hold_permissions_in_pe_shape_and_refuse_unknown_ones(
    rbac: httpx.AsyncClient,
) -> None:
    body = {
        "display_name": "web deployers",
        "description": "Puppet on web",
        "permissions": [
            {
                "object_type": "puppet_agent",
                "action": "run",
                "instance": "*",
                "nodes": {"query": "inventory[certname] { certname ~ 'web' }"},
            }
        ],
    }
    created = await rbac.post("/rbac-api/v1/roles", json=body)
    assert created.status_code == 201
    role = created.json()
    assert role["permissions"] == body["permissions"]
    wrong = await rbac.post(
        "/rbac-api/v1/roles",
        json={"display_name": "x", "permissions": [{"object_type": "nodes", "action": "fly"}]},
    )
    assert wrong.status_code == 400 and "unknown permission nodes:fly" in wrong.json()["msg"]
    types = (await rbac.get("/rbac-api/v1/types")).json()
    assert any(t["object_type"] == "tasks" for t in types)
    permitted = await rbac.post(
        "/rbac-api/v1/permitted",
        json={"permissions": [{"object_type": "users", "action": "edit", "instance": "*"}]},
    )
    assert permitted.json() == [True]
    deleted = await rbac.delete(f"/rbac-api/v1/roles/{role['id']}")
    assert deleted.status_code == 204
    assert (await rbac.get(f"/rbac-api/v1/roles/{role['id']}")).status_code == 404
