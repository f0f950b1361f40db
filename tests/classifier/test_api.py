"""``/classifier-api/v1`` through an in-process client, on SQLite and PostgreSQL: PE's
status codes and error kinds, and classification by rules, inheritance and pins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from access import admin_token
from podium.server.app import create_app
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings

ROOT = "00000000-0000-4000-8000-000000000000"
DEBIAN = {"os": {"family": "Debian"}, "processors": {"count": 4}}
REDHAT = {"os": {"family": "RedHat"}, "processors": {"count": 1}}


@pytest.fixture
async def runtime(tmp_path: Path, db_url: str) -> AsyncIterator[Runtime]:
    settings = ServerSettings(
        datadir=tmp_path / "server",
        database_url=db_url,
        certname="podium-server",
        broker_port=0,
        reconnect_grace=300.0,
    )
    runtime = Runtime(settings)
    await runtime.start()
    yield runtime
    await runtime.stop()


def client_of(runtime: Runtime, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)),
        base_url="https://podium.test/classifier-api/v1",
        headers=headers,
    )


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(runtime, **{"X-Authentication": admin_token(runtime)}) as client:
        yield client


def error_of(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"kind", "msg", "details"}
    assert body["kind"] == kind, body
    return body


async def create(api: httpx.AsyncClient, **group: Any) -> dict[str, Any]:
    body = {"parent": ROOT, "classes": {}, **group}
    response = await api.post("/groups", json=body)
    assert response.status_code == 303, response.text
    fetched = await api.get(response.headers["location"].removeprefix("/classifier-api/v1"))
    assert fetched.status_code == 200
    created: dict[str, Any] = fetched.json()
    return created


async def classified(api: httpx.AsyncClient, name: str, **body: Any) -> dict[str, Any]:
    response = await api.post(f"/classified/nodes/{name}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_every_endpoint_needs_the_token(runtime: Runtime):
    async with client_of(runtime) as anonymous:
        for method, path in [("GET", "/groups"), ("POST", "/classified/nodes/a")]:
            response = await anonymous.request(method, path)
            error_of(response, 401, "puppetlabs.rbac/user-unauthenticated")


async def test_a_new_classifier_has_the_root_group(api: httpx.AsyncClient):
    response = await api.get("/groups")
    assert response.status_code == 200
    [root] = response.json()
    assert root["id"] == ROOT and root["parent"] == ROOT and root["name"] == "All Nodes"
    assert root["rule"] == ["and", ["~", "name", ".*"]]
    assert root["serial_number"] == 0 and root["last_edited"].endswith("Z")


async def test_creating_a_group_answers_303_see_other_with_its_location(api: httpx.AsyncClient):
    response = await api.post(
        "/groups",
        json={"name": "My Nodes", "parent": ROOT, "environment": "production", "classes": {}},
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/classifier-api/v1/groups/")
    group = (await api.get(location.removeprefix("/classifier-api/v1"))).json()
    assert group["name"] == "My Nodes"
    assert group["id"] == location.rsplit("/", 1)[1]
    assert "rule" not in group


async def test_put_creates_with_201_and_an_identical_put_answers_200(api: httpx.AsyncClient):
    gid = "085e2797-32f3-4920-9412-8e9decf4ef65"
    body = {"name": "Web", "parent": ROOT, "classes": {"nginx": {}}, "rule": ["~", "name", "^web"]}
    first = await api.put(f"/groups/{gid}", json=body)
    assert first.status_code == 201
    assert first.json()["id"] == gid
    again = await api.put(f"/groups/{gid}", json=body)
    assert again.status_code == 200
    assert again.json()["serial_number"] == 0
    replaced = await api.put(f"/groups/{gid}", json={**body, "classes": {}})
    assert (replaced.status_code, replaced.json()["serial_number"]) == (200, 1)


async def test_post_to_a_group_merges_a_delta_as_pe_does(api: httpx.AsyncClient):
    group = await create(
        api,
        name="Webservers",
        environment="staging",
        classes={"apache": {"serveradmin": "a@example.com", "keepalive": 5}, "ssl": {}},
        variables={"ntp": ["0.pool"]},
    )
    response = await api.post(
        f"/groups/{group['id']}",
        json={
            "environment": "production",
            "classes": {"apache": {"keepalive": None}, "ssl": None},
            "variables": {"dns": ["dns1"]},
            "serial_number": group["serial_number"],
        },
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["environment"] == "production"
    assert updated["classes"] == {"apache": {"serveradmin": "a@example.com"}}
    assert updated["variables"] == {"ntp": ["0.pool"], "dns": ["dns1"]}
    assert updated["serial_number"] == group["serial_number"] + 1
    stale = await api.post(f"/groups/{group['id']}", json={"description": "x", "serial_number": 0})
    error_of(stale, 409, "conflict")


async def test_bad_requests_get_the_classifiers_error_kinds(api: httpx.AsyncClient):
    web = await create(api, name="Web", rule=["~", "name", "^web"])
    unknown = "11111111-2222-4333-8444-555555555555"
    error_of(await api.get("/groups/web"), 400, "malformed-uuid")
    error_of(await api.get(f"/groups/{unknown}"), 404, "not-found")
    error_of(await api.post(f"/groups/{unknown}", json={"name": "x"}), 404, "not-found")
    body = {"name": "Orphan", "parent": unknown, "classes": {}}
    error_of(await api.post("/groups", json=body), 422, "missing-parent")
    error_of(
        await api.post("/groups", json={**body, "parent": ROOT, "name": "Web"}),
        422,
        "uniqueness-violation",
    )
    cycle = await api.post(f"/groups/{ROOT}", json={"parent": web["id"]})
    error_of(cycle, 422, "inheritance-cycle")
    error_of(
        await api.post(f"/groups/{ROOT}", json={"rule": ["=", "name", "a"]}), 422, "root-rule-edit"
    )
    error_of(
        await api.post("/groups", json={"name": "No classes", "parent": ROOT}),
        400,
        "schema-violation",
    )
    bad_rule = await api.post(
        "/groups", json={**body, "parent": ROOT, "rule": ["=", ["facts", "os"], "x"]}
    )
    assert "at rule[1][0]" in error_of(bad_rule, 400, "schema-violation")["msg"]
    garbled = await api.post(
        "/groups", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    error_of(garbled, 400, "malformed-request")
    ids = await api.put(f"/groups/{unknown}", json={**body, "parent": ROOT, "id": web["id"]})
    assert error_of(ids, 400, "conflicting-ids")["details"] == {
        "submitted": web["id"],
        "fromUrl": unknown,
    }


async def test_deleting_a_group_with_children_is_refused_naming_them(api: httpx.AsyncClient):
    parent = await create(api, name="Web")
    child = await create(api, name="Web staging", parent=parent["id"])
    refused = error_of(await api.delete(f"/groups/{parent['id']}"), 422, "children-present")
    assert "'Web staging'" in refused["msg"]
    assert (await api.delete(f"/groups/{child['id']}")).status_code == 204
    assert (await api.delete(f"/groups/{parent['id']}")).status_code == 204
    error_of(await api.get(f"/groups/{parent['id']}"), 404, "not-found")
    error_of(await api.delete(f"/groups/{ROOT}"), 422, "root-group-delete")


async def test_classification_follows_rules_inheritance_and_pinned_nodes(api: httpx.AsyncClient):
    debian = await create(
        api,
        name="Debian",
        rule=["=", ["fact", "os", "family"], "Debian"],
        classes={"apt": {"proxy": "http://proxy:3128"}},
        variables={"tier": "base"},
    )
    web = await create(
        api,
        name="Debian web",
        parent=debian["id"],
        rule=["and", ["~", "name", "^web"], [">=", ["fact", "processors", "count"], "2"]],
        classes={"nginx": {"workers": 4}, "apt": {"purge": True}},
        variables={"tier": "web"},
    )
    pinned = await api.post(f"/groups/{web['id']}/pin", json={"nodes": ["db-01", "db-02"]})
    assert pinned.status_code == 204

    result = await classified(api, "web-01", fact=DEBIAN)
    assert result["name"] == "web-01"
    assert result["groups"] == [ROOT, debian["id"], web["id"]]
    assert result["classes"] == {
        "apt": {"proxy": "http://proxy:3128", "purge": True},
        "nginx": {"workers": 4},
    }
    assert result["parameters"] == {"tier": "web"}
    assert result["environment"] == "production"

    assert (await classified(api, "web-02", fact=REDHAT))["groups"] == [ROOT]  # not Debian
    small = {"os": {"family": "Debian"}, "processors": {"count": 1}}
    assert (await classified(api, "web-03", fact=small))["groups"] == [ROOT, debian["id"]]
    # pinned: in the child whatever its own rule says, but only if the parent matches
    assert (await classified(api, "db-01", fact=DEBIAN))["groups"] == [
        ROOT,
        debian["id"],
        web["id"],
    ]
    assert (await classified(api, "db-02", fact=REDHAT))["groups"] == [ROOT]

    unpinned = await api.post(f"/groups/{web['id']}/unpin?nodes=db-01,never-pinned")
    assert unpinned.status_code == 204
    assert (await classified(api, "db-01", fact=DEBIAN))["groups"] == [ROOT, debian["id"]]
    rule = (await api.get(f"/groups/{web['id']}")).json()["rule"]
    assert rule[0] == "or" and rule[-1] == ["=", "name", "db-02"]


async def test_classification_reads_the_trusted_facts_given(api: httpx.AsyncClient):
    role = await create(
        api, name="Role web", rule=["=", ["trusted", "extensions", "pp_role"], "web"]
    )
    trusted = {"certname": "n1", "extensions": {"pp_role": "web"}}
    assert role["id"] in (await classified(api, "n1", fact={}, trusted=trusted))["groups"]
    # a node's own facts never stand in for trusted ones
    claimed = await classified(
        api, "n1", fact={"trusted": trusted, "extensions": {"pp_role": "web"}}
    )
    assert role["id"] not in claimed["groups"]


async def test_classification_without_facts_uses_the_nodes_stored_facts(
    api: httpx.AsyncClient, runtime: Runtime
):
    debian = await create(api, name="Debian", rule=["=", ["fact", "os", "family"], "Debian"])
    runtime.store.record_facts("web-09", DEBIAN, datetime.now(UTC))
    assert (await classified(api, "web-09"))["groups"] == [ROOT, debian["id"]]
    response = await api.post("/classified/nodes/web-09")  # no body at all
    assert response.json()["groups"] == [ROOT, debian["id"]]
    assert (await classified(api, "unknown-node"))["groups"] == [ROOT]
    assert (await classified(api, "web-09", fact=REDHAT))["groups"] == [ROOT]  # given facts win
    error_of(await api.post("/classified/nodes/x", json={"facts": {}}), 400, "schema-violation")


async def test_environment_trumps_and_conflicting_environments(api: httpx.AsyncClient):
    await create(api, name="App", rule=["~", "name", ".*"], environment="production")
    dev = await create(
        api,
        name="Development",
        rule=["~", "name", "^dev"],
        environment="development",
        environment_trumps=True,
    )
    assert (await classified(api, "dev-01", fact={}))["environment"] == "development"
    assert (await classified(api, "prod-01", fact={}))["environment"] == "production"
    await create(
        api,
        name="Staging",
        rule=["~", "name", "^dev"],
        environment="staging",
        environment_trumps=True,
    )
    conflict = error_of(
        await api.post("/classified/nodes/dev-01", json={"fact": {}}),
        500,
        "classification-conflict",
    )
    assert {d["value"] for d in conflict["details"]["environment"]} == {"development", "staging"}
    assert dev["id"] in {d["from"]["id"] for d in conflict["details"]["environment"]}


async def test_pinning_needs_valid_node_names(api: httpx.AsyncClient):
    group = await create(api, name="Web")
    error_of(await api.post(f"/groups/{group['id']}/pin"), 400, "missing-parameters")
    error_of(
        await api.post(f"/groups/{group['id']}/pin", json={"nodes": ["Bad Name"]}),
        400,
        "schema-violation",
    )
    error_of(
        await api.post(f"/groups/{group['id']}/pin", json={"nodes": ["a"], "x": 1}),
        400,
        "schema-violation",
    )
    one = await api.post(f"/groups/{group['id']}/pin", json={"nodes": "web-01"})
    assert one.status_code == 204
    assert (await api.get(f"/groups/{group['id']}")).json()["rule"] == [
        "or",
        ["=", "name", "web-01"],
    ]
    error_of(await api.post(f"/groups/{ROOT}/pin", json={"nodes": ["a"]}), 422, "root-rule-edit")


async def test_rules_translate_to_puppetdb_queries(api: httpx.AsyncClient):
    rule = ["and", ["=", ["fact", "os", "family"], "Debian"], ["~", "name", "^web"]]
    inventory = await api.post("/rules/translate?format=inventory", json=rule)
    assert inventory.json() == [
        "and",
        ["=", "facts.os.family", "Debian"],
        ["~", "certname", "^web"],
    ]
    nodes = (await api.post("/rules/translate", json=rule)).json()
    assert nodes[0] == "and" and nodes[1][0] == "in" and nodes[2] == ["~", "certname", "^web"]
    bad = await api.post("/rules/translate", json=["=", "nam", "x"])
    assert "at rule[1]" in error_of(bad, 400, "schema-violation")["msg"]
    error_of(await api.post("/rules/translate?format=pql", json=rule), 400, "malformed-request")


async def test_a_groups_rules_come_with_its_ancestors_and_translated(api: httpx.AsyncClient):
    debian = await create(api, name="Debian", rule=["=", ["fact", "os", "family"], "Debian"])
    web = await create(api, name="Web", parent=debian["id"], rule=["~", "name", "^web"])
    rules = (await api.get(f"/groups/{web['id']}/rules")).json()
    assert rules["rule"] == ["~", "name", "^web"]
    assert rules["rule_with_inherited"] == [
        "and",
        ["~", "name", "^web"],
        ["=", ["fact", "os", "family"], "Debian"],
        ["and", ["~", "name", ".*"]],
    ]
    assert rules["translated"]["inventory_query_format"] == [
        "and",
        ["~", "certname", "^web"],
        ["=", "facts.os.family", "Debian"],
        ["and", ["~", "certname", ".*"]],
    ]


async def test_a_groups_matching_nodes_come_from_the_inventory(
    api: httpx.AsyncClient, runtime: Runtime
):
    debian = await create(api, name="Debian", rule=["=", ["fact", "os", "family"], "Debian"])
    now = datetime.now(UTC)
    for name, facts in [("web-01", DEBIAN), ("web-02", REDHAT), ("db-01", DEBIAN)]:
        runtime.store.record_facts(name, facts, now)
    found = (await api.get(f"/groups/{debian['id']}/nodes")).json()
    assert found == {"id": debian["id"], "name": "Debian", "nodes": ["db-01", "web-01"]}


async def test_groups_can_be_listed_with_what_they_inherit(api: httpx.AsyncClient):
    await api.post(f"/groups/{ROOT}", json={"classes": {"ntp": {"servers": ["a"]}}})
    web = await create(api, name="Web", classes={"nginx": {}}, variables={"tier": "web"})
    plain = {g["id"]: g for g in (await api.get("/groups")).json()}
    inherited = {g["id"]: g for g in (await api.get("/groups?inherited=true")).json()}
    assert plain[web["id"]]["classes"] == {"nginx": {}}
    assert inherited[web["id"]]["classes"] == {"ntp": {"servers": ["a"]}, "nginx": {}}
