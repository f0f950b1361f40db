"""Who may call what: every route declares its rule, and every rule holds.

The matrix walks the app's routes: without a token, or with an expired or revoked one,
every protected route answers 401; a user without the route's permission gets 403; one
with it gets through (and, for the routes sampled below, succeeds).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from access import admin_token
from podium.rbac.credentials import new_token, token_digest
from podium.rbac.permissions import Permission
from podium.server.access import GuardedRoute, allow, routes_of
from podium.server.app import create_app
from podium.server.runtime import Runtime

from .fleet import FakeAgent

_PARAM = re.compile(r"\{(\w+)(?::path)?\}")


@dataclass
class World:
    runtime: Runtime
    client: httpx.AsyncClient
    job: str
    group: str
    admin_id: str
    tokens: dict[str, str]  # who -> token: admin, nobody, expired, revoked, <rule> holders


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"X-Authentication": token}


def user_with(runtime: Runtime, login: str, permissions: list[Permission]) -> str:
    """A token of a new user whose one role grants ``permissions``."""
    store = runtime.access.store
    role_ids = []
    if permissions:
        role = store.save_role(
            display_name=f"role of {login}",
            description="",
            permissions=permissions,
            user_ids=(),
            group_ids=(),
        )
        role_ids = [role.id]
    store.create_user(
        login=login,
        kind="local",
        display_name=login,
        email="",
        password_hash=None,
        role_ids=role_ids,
        at=datetime.now(UTC),
    )
    return runtime.access.token_for(login)


@pytest.fixture
async def world(runtime: Runtime) -> AsyncIterator[World]:
    admin = admin_token(runtime)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="https://podium.test") as client:
        FakeAgent(runtime.broker, "web-01")
        job = await client.post(
            "/orchestrator/v1/command/task",
            json={
                "task": "podium::echo",
                "params": {"message": "hi"},
                "scope": {"nodes": ["web-01"]},
            },
            headers=bearer(admin),
        )
        assert job.status_code == 202, job.text
        created = await client.post(
            "/classifier-api/v1/groups",
            json={
                "name": "web",
                "parent": "00000000-0000-4000-8000-000000000000",
                "rule": ["~", "name", "^web"],
                "classes": {},
            },
            headers=bearer(admin),
        )
        assert created.status_code == 303, created.text
        group = created.headers["location"].rsplit("/", 1)[1]
        found = runtime.access.store.user_by_login("admin")
        assert found is not None
        admin_id = found[0].id
        expired = new_token()
        now = datetime.now(UTC)
        runtime.access.store.add_token(
            digest=token_digest(expired),
            user_id=admin_id,
            label="",
            client="",
            created_at=now - timedelta(hours=2),
            expires_at=now - timedelta(hours=1),
        )
        revoked = runtime.access.token_for("admin")
        runtime.access.store.revoke_tokens(now, digests=[token_digest(revoked)])
        tokens = {
            "admin": admin,
            "nobody": user_with(runtime, "nobody", []),
            "expired": expired,
            "revoked": revoked,
        }
        for route in guarded_routes(runtime):
            rule = str(route.rule)
            if route.rule.kind == "permission" and rule not in tokens:
                object_type, action = rule.split(":")
                login = f"holder-{object_type}-{action}"
                tokens[rule] = user_with(runtime, login, [Permission(object_type, action)])
        yield World(runtime, client, job.json()["job"]["name"], group, admin_id, tokens)


def guarded_routes(runtime: Runtime) -> list[GuardedRoute]:
    return [r for r in routes_of(create_app(runtime)) if isinstance(r, GuardedRoute)]


def concrete(path: str, world: World) -> str:
    values = {
        "job_id": world.job,
        "group_id": world.group,
        "sid": world.admin_id,
        "role_id": "1",
        "node": "web-01",
        "name": "web-01",
        "certname": "web-01",
        "module": "podium",
        "task": "echo",
        "filename": "echo.json",
        "relative": "tasks/echo.json",
        "entity": "nodes",
        "fact": "os",
        "value": "x",
        "token": "not-a-token",
        "environment": "production",
    }
    return _PARAM.sub(lambda m: values.get(m.group(1), "x"), path)


ECHO = {"task": "podium::echo", "params": {"message": "x"}, "scope": {"nodes": ["web-01"]}}
VIEW = {"object_type": "orchestrator", "action": "view", "instance": "*"}
QUICK = {"scope": {"nodes": ["web-01"]}, "timeout": 0.05}  # web-01 answers no puppet request

# Requests that succeed for whoever holds the route's permission.
SAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/orchestrator/v1/jobs"): {},
    ("GET", "/orchestrator/v1/jobs/{job_id}"): {},
    ("GET", "/orchestrator/v1/jobs/{job_id}/nodes"): {},
    ("GET", "/orchestrator/v1/jobs/{job_id}/report"): {},
    ("GET", "/orchestrator/v1/jobs/{job_id}/events"): {},
    ("GET", "/orchestrator/v1/inventory"): {},
    ("GET", "/orchestrator/v1/inventory/{node}"): {},
    ("POST", "/orchestrator/v1/inventory"): {"json": {"nodes": ["web-01"]}},
    ("POST", "/orchestrator/v1/targets"): {"json": {"scope": {"nodes": ["web-01"]}}},
    ("GET", "/orchestrator/v1/tasks"): {},
    ("GET", "/orchestrator/v1/tasks/{module}/{task}"): {},
    ("POST", "/orchestrator/v1/command/task"): {"json": ECHO},
    ("POST", "/orchestrator/v1/command/deploy"): {"json": {"scope": {"nodes": ["web-01"]}}},
    ("POST", "/orchestrator/v1/command/puppet_status"): {"json": QUICK},
    ("POST", "/orchestrator/v1/command/puppet_enable"): {"json": QUICK},
    ("POST", "/orchestrator/v1/command/puppet_disable"): {"json": {**QUICK, "message": "x"}},
    ("POST", "/orchestrator/v1/command/puppet_resource"): {"json": {**QUICK, "type": "file"}},
    ("POST", "/orchestrator/v1/command/plan"): {"json": {"scope": {"nodes": ["web-01"]}}},
    ("GET", "/orchestrator/v1/environments/{environment}/applications"): {},
    ("GET", "/classifier-api/v1/groups"): {},
    ("GET", "/classifier-api/v1/groups/{group_id}"): {},
    ("GET", "/classifier-api/v1/groups/{group_id}/rules"): {},
    ("GET", "/classifier-api/v1/groups/{group_id}/nodes"): {},
    ("POST", "/classifier-api/v1/rules/translate"): {"json": ["=", "name", "a"]},
    ("POST", "/classifier-api/v1/groups/{group_id}/pin"): {"json": {"nodes": ["web-09"]}},
    ("GET", "/pdb/query/v4/{entity}"): {},
    ("GET", "/pdb/query/v4/event-counts"): {"params": {"summarize_by": "certname"}},
    ("GET", "/pdb/query/v4/aggregate-event-counts"): {"params": {"summarize_by": "resource"}},
    ("GET", "/pdb/query/v4/resources/{resource_type}/{title:path}"): {},
    ("GET", "/pdb/meta/v1/version"): {},
    ("GET", "/rbac-api/v1/users"): {},
    ("GET", "/rbac-api/v1/users/current"): {},
    ("GET", "/rbac-api/v1/users/{sid}"): {},
    ("POST", "/rbac-api/v1/users"): {"json": {"login": "new-user", "password": "s3cret-enough"}},
    ("GET", "/rbac-api/v1/roles"): {},
    ("GET", "/rbac-api/v1/roles/{role_id}"): {},
    ("POST", "/rbac-api/v1/roles"): {"json": {"display_name": "new role", "permissions": [VIEW]}},
    ("GET", "/rbac-api/v1/groups"): {},
    ("GET", "/rbac-api/v1/types"): {},
    ("GET", "/rbac-api/v1/permissions"): {},
    ("GET", "/activity-api/v1/events"): {},
}  # fmt: skip


def requests(world: World) -> list[tuple[GuardedRoute, str, str]]:
    every = [
        (route, method, concrete(route.path, world))
        for route in guarded_routes(world.runtime)
        for method in sorted(route.methods)
    ]
    return sorted(every, key=lambda r: r[1] == "DELETE")  # deletions last


async def test_every_route_declares_who_may_call_it(runtime: Runtime) -> None:
    app = create_app(runtime)
    undeclared = [
        getattr(r, "path", repr(r)) for r in routes_of(app) if not isinstance(r, GuardedRoute)
    ]
    assert undeclared == []
    schema = app.openapi()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "x-podium-access" in operation, f"{method} {path}"


def test_a_route_without_a_declaration_cannot_be_built() -> None:
    router = APIRouter(route_class=GuardedRoute)
    with pytest.raises(TypeError, match="declares no access rule"):

        @router.get("/forgotten")
        async def forgotten() -> None: ...

    with pytest.raises(ValueError, match="unknown access rule"):
        allow("tasks:fly")


async def test_without_a_valid_token_every_protected_route_answers_401(world: World) -> None:
    checked = 0
    for route, method, path in requests(world):
        if route.rule.kind in ("open", "node"):
            continue
        for who in (None, "expired", "revoked"):
            token = None if who is None else world.tokens[who]
            response = await world.client.request(method, path, headers=bearer(token))
            assert response.status_code == 401, (method, path, who, response.text)
            body = response.json()
            assert body["kind"] == "puppetlabs.rbac/user-unauthenticated"
            assert "podium access login" in body["msg"]
            assert "/tmp" not in body["msg"] and "datadir" not in body["msg"]
        checked += 1
    assert checked >= 40


async def test_bearer_tokens_work_as_well_as_x_authentication(world: World) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['admin']}"}
    response = await world.client.get("/orchestrator/v1/jobs", headers=headers)
    assert response.status_code == 200


async def test_without_the_permission_a_route_answers_403_and_with_it_succeeds(
    world: World,
) -> None:
    sampled = set()
    for route, method, path in requests(world):
        if route.rule.kind != "permission":
            continue
        rule = str(route.rule)
        refused = await world.client.request(method, path, headers=bearer(world.tokens["nobody"]))
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json()["details"]["permission"] == rule
        assert rule in refused.json()["msg"]
        sample = SAMPLES.get((method, route.path))
        holder = bearer(world.tokens[rule])
        response = await world.client.request(method, path, headers=holder, **(sample or {}))
        assert response.status_code not in (401, 403), (method, path, response.text)
        if sample is not None:
            assert response.status_code < 400, (method, path, response.text)
            sampled.add((method, route.path))
    missing = {k for k in SAMPLES if k not in sampled}
    authenticated = {(m, r.path) for r, m, _ in requests(world) if r.rule.kind == "authenticated"}
    assert missing <= authenticated


async def test_routes_any_user_may_call_succeed_for_a_user_without_roles(world: World) -> None:
    nobody = bearer(world.tokens["nobody"])
    for path in ("/rbac-api/v1/users/current", "/rbac-api/v1/types", "/pdb/meta/v1/version"):
        response = await world.client.get(path, headers=nobody)
        assert response.status_code == 200, (path, response.text)
    assert (await world.client.get("/rbac-api/v1/users/current", headers=nobody)).json()[
        "login"
    ] == "nobody"


async def test_agent_routes_want_a_node_certificate_not_a_token(world: World) -> None:
    for route, method, path in requests(world):
        if route.rule.kind != "node":
            continue
        response = await world.client.request(method, path, headers=bearer(world.tokens["admin"]))
        assert response.status_code == 403, (method, path)
        assert "certificate" in response.json()["msg"]


async def test_open_routes_need_no_token(world: World) -> None:
    for path in ("/status/v1/simple", "/openapi.json", "/puppet-ca/v1/certificate/ca"):
        assert (await world.client.get(path)).status_code == 200, path


async def test_an_unauthenticated_body_is_never_read(world: World) -> None:
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(64):
            read += 1
            yield b"x" * 65536

    response = await world.client.post(
        "/orchestrator/v1/command/task",
        content=body(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert read <= 1  # what the transport sends before the app answers, at most


async def test_job_owners_are_the_users_who_started_them(world: World) -> None:
    operator = user_with(
        world.runtime,
        f"operator-{uuid.uuid4().hex[:6]}",
        [Permission("tasks", "run"), Permission("orchestrator", "view")],
    )
    response = await world.client.post(
        "/orchestrator/v1/command/task",
        json={"task": "podium::echo", "params": {"message": "x"}, "scope": {"nodes": ["web-01"]}},
        headers=bearer(operator),
    )
    job = response.json()["job"]["name"]
    shown = await world.client.get(f"/orchestrator/v1/jobs/{job}", headers=bearer(operator))
    assert shown.json()["owner"]["login"].startswith("operator-")
    # someone else's job: stopping it needs orchestrator:stop
    stop = await world.client.post(
        "/orchestrator/v1/command/stop", json={"job": world.job}, headers=bearer(operator)
    )
    assert stop.status_code == 403
    assert "orchestrator:stop" in stop.json()["msg"]
    own = await world.client.post(
        "/orchestrator/v1/command/stop", json={"job": job}, headers=bearer(operator)
    )
    assert own.status_code == 202


async def test_a_task_permission_limited_to_a_node_group_reaches_its_nodes_only(
    world: World,
) -> None:
    runtime = world.runtime
    from podium.inventory.store import InventoryStore
    from podium.rbac.permissions import NodeScope

    now = datetime.now(UTC)
    InventoryStore.of(runtime.store).record_facts_many(
        [(name, {"os": {"family": "Debian"}}, now) for name in ("web-01", "web-02", "db-01")]
    )
    for name in ("web-02", "db-01"):
        FakeAgent(runtime.broker, name)
    token = user_with(
        runtime,
        "web-operator",
        [
            Permission("tasks", "run", "package", NodeScope("node_group", world.group)),
            Permission("orchestrator", "view"),
        ],
    )

    def package(scope: dict[str, Any]) -> dict[str, Any]:
        return {"task": "package", "params": {"action": "status", "name": "bash"}, "scope": scope}

    async def run(body: dict[str, Any]) -> httpx.Response:
        return await world.client.post(
            "/orchestrator/v1/command/task", json=body, headers=bearer(token)
        )

    # the group itself: every node of it
    response = await run(package({"node_group": world.group}))
    assert response.status_code == 202, response.text
    assert "left_out" not in response.json()
    job = response.json()["job"]["name"]
    nodes = await world.client.get(f"/orchestrator/v1/jobs/{job}/nodes", headers=bearer(token))
    assert sorted(n["name"] for n in nodes.json()["items"]) == ["web-01", "web-02"]
    # a node list naming a node outside it: refused, naming it
    refused = await run(package({"nodes": ["web-01", "db-01"]}))
    assert refused.status_code == 403
    assert refused.json()["details"]["nodes"] == ["db-01"]
    assert "db-01" in refused.json()["msg"] and world.group in refused.json()["msg"]
    # a query matching more: runs where permitted, says who was left out and why
    query = 'inventory[certname] { facts.os.family = "Debian" }'
    partial = await run(package({"query": query}))
    assert partial.status_code == 202, partial.text
    assert partial.json()["left_out"]["nodes"] == ["db-01"]
    assert "node group" in partial.json()["left_out"]["reason"]
    job = partial.json()["job"]["name"]
    nodes = await world.client.get(f"/orchestrator/v1/jobs/{job}/nodes", headers=bearer(token))
    assert sorted(n["name"] for n in nodes.json()["items"]) == ["web-01", "web-02"]
    # another task: not at all
    other = await run({**package({"node_group": world.group}), "task": "service"})
    assert other.status_code == 403
    assert "tasks:run:service" in other.json()["msg"]
    # a rerun of someone else's job on db-01 is checked the same way
    rerun = await world.client.post(
        "/orchestrator/v1/command/rerun", json={"job": world.job}, headers=bearer(token)
    )
    assert rerun.status_code == 403


async def test_every_action_leaves_a_trace_with_its_user(world: World) -> None:
    admin = bearer(world.tokens["admin"])
    client = world.client
    login = await client.post(
        "/rbac-api/v1/auth/token", json={"login": "admin", "password": "wrong-one"}
    )
    assert login.status_code == 401
    created = await client.post(
        "/rbac-api/v1/users", json={"login": "eve", "password": "eve-password"}, headers=admin
    )
    eve_id = created.json()["id"]
    token = (
        await client.post(
            "/rbac-api/v1/auth/token", json={"login": "eve", "password": "eve-password"}
        )
    ).json()["token"]
    await client.post("/rbac-api/v2/tokens", json={"revoke_tokens": [token]}, headers=admin)
    role = await client.post(
        "/rbac-api/v1/roles",
        json={"display_name": "eve's", "user_ids": [eve_id], "permissions": []},
        headers=admin,
    )
    assert role.status_code == 201
    await client.post("/orchestrator/v1/command/stop", json={"job": world.job}, headers=admin)
    rerun = await client.post(
        "/orchestrator/v1/command/rerun", json={"job": world.job}, headers=admin
    )
    assert rerun.status_code == 202
    events = await client.get("/activity-api/v1/events?limit=100", headers=admin)
    seen = [
        (c["subject"]["name"], c["events"][0]["type"], c["object"]["type"])
        for c in events.json()["commits"]
    ]
    for expected in (
        ("admin", "login_failed", "users"),
        ("admin", "create", "users"),
        ("eve", "login", "users"),
        ("admin", "revoke_token", "tokens"),
        ("admin", "create", "roles"),
        ("admin", "create", "jobs"),
        ("admin", "stop", "jobs"),
        ("admin", "rerun", "jobs"),
        ("admin", "create", "node_groups"),
    ):
        assert expected in seen, expected
    mine = await client.get("/activity-api/v1/events?login=eve", headers=admin)
    assert {c["subject"]["name"] for c in mine.json()["commits"]} == {"eve"}
    assert mine.json()["total-rows"] == 1
