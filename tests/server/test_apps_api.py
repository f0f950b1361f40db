"""The applications API: an environment's instances, and the run order of a scope."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from podium.server.settings import ServerSettings

SHOP = """\
description: The web shop
components:
  db:
    nodes: [db-1]
    produces: [Sql]
  web:
    nodes: [web-1, web-2]
    consumes: [Sql]
    produces: [Http]
  lb:
    nodes: [lb-1]
    consumes: [Http]
"""
SMALL = """\
components:
  db: {nodes: [small-1], produces: [Sql]}
  web: {nodes: [small-1], consumes: [Sql]}
"""
ONE = "components:\n  a: {nodes: [n1], produces: [X]}\n  b: {nodes: [n2], consumes: [X]}\n"
TWO = "components:\n  a: {nodes: [n2], produces: [Y]}\n  b: {nodes: [n1], consumes: [Y]}\n"


@pytest.fixture
def settings(settings: ServerSettings, tmp_path: Path) -> ServerSettings:
    code = tmp_path / "code"
    files = {
        "production/applications/shop.yaml": SHOP,
        "production/applications/small.yaml": SMALL,
        "production/applications/README.md": "Applications of the shop.",
        "broken/applications/shop.yaml": SHOP.replace("consumes: [Http]", "consume: [Http]"),
        "tangled/applications/one.yaml": ONE,
        "tangled/applications/two.yaml": TWO,
    }
    for name, text in files.items():
        path = code / "environments" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (code / "environments/bare/manifests").mkdir(parents=True)
    return dataclasses.replace(settings, codedir=code)


async def test_an_environment_lists_its_instances_components_and_their_order(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/environments/production/applications")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["environment"] == "production"
    shop, small = body["items"]
    assert (shop["name"], shop["description"], small["name"]) == ("shop", "The web shop", "small")
    assert shop["components"] == [
        {"name": "db", "nodes": ["db-1"], "produces": ["Sql"], "consumes": [], "after": []},
        {
            "name": "web",
            "nodes": ["web-1", "web-2"],
            "produces": ["Http"],
            "consumes": ["Sql"],
            "after": ["db"],
        },
        {"name": "lb", "nodes": ["lb-1"], "produces": [], "consumes": ["Http"], "after": ["web"]},
    ]


async def test_an_environment_without_applications_lists_none(api: httpx.AsyncClient) -> None:
    response = await api.get("/environments/bare/applications")
    assert response.json() == {"environment": "bare", "items": []}


async def test_an_unknown_environment_is_a_404_naming_those_there_are(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/environments/staging/applications")
    assert response.status_code == 404
    body = response.json()
    assert body["kind"] == "puppetlabs.orchestrator/unknown-environment"
    assert "bare, broken, production, tangled" in body["msg"]


async def test_a_broken_application_file_is_a_400_naming_the_file_and_the_key(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/environments/broken/applications")
    assert response.status_code == 400
    body = response.json()
    assert body["details"]["key"] == "components.lb.consume"
    assert body["details"]["file"].endswith("environments/broken/applications/shop.yaml")
    assert "unknown key; the keys here are nodes, produces, consumes" in body["msg"]
    plan = await api.post(
        "/command/plan", json={"environment": "broken", "scope": {"nodes": ["db-1"]}}
    )
    assert plan.status_code == 400
    assert plan.json()["details"]["key"] == "components.lb.consume"


async def test_the_plan_gives_levels_and_what_each_node_runs_after(
    api: httpx.AsyncClient,
) -> None:
    scope = {"nodes": ["lb-1", "web-1", "web-2", "db-1", "mail-1", "small-1"]}
    response = await api.post("/command/plan", json={"scope": scope})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "environment": "production",
        "levels": [["db-1", "mail-1", "small-1"], ["web-1", "web-2"], ["lb-1"]],
        "nodes": {
            "db-1": {"after": [], "application": "shop", "component": "db"},
            "mail-1": {"after": []},
            "small-1": {
                "after": [],
                "application": "small",
                "component": "db",
                "components": [
                    {"application": "small", "component": "db"},
                    {"application": "small", "component": "web"},
                ],
            },
            "web-1": {"after": ["db-1"], "application": "shop", "component": "web"},
            "web-2": {"after": ["db-1"], "application": "shop", "component": "web"},
            "lb-1": {"after": ["web-1", "web-2"], "application": "shop", "component": "lb"},
        },
    }


async def test_the_plan_orders_targeted_nodes_through_those_not_targeted(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/command/plan", json={"scope": {"nodes": ["lb-1", "db-1"]}})
    body = response.json()
    assert body["levels"] == [["db-1"], ["lb-1"]]
    assert body["nodes"]["lb-1"]["after"] == ["db-1"]


async def test_a_cycle_across_applications_is_refused_naming_it(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/command/plan", json={"environment": "tangled", "scope": {"nodes": ["n1"]}}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["kind"] == "puppetlabs.orchestrator/dependency-cycle"
    assert "n2 runs after n1 (one: b runs after a)" in body["msg"]
    assert "n1 runs after n2 (two: b runs after a)" in body["msg"]
    assert body["details"]["cycle"] == ["n2", "n1", "n2"]


async def test_a_plan_body_is_checked(api: httpx.AsyncClient) -> None:
    extra = await api.post("/command/plan", json={"scope": {"nodes": ["a"]}, "noop": True})
    assert extra.status_code == 400
    assert "noop" in extra.json()["msg"]
    bad = await api.post("/command/plan", json={"scope": {"nodes": ["Not A Name"]}})
    assert bad.status_code == 400
    unknown = await api.post(
        "/command/plan", json={"environment": "nowhere", "scope": {"nodes": ["a"]}}
    )
    assert unknown.status_code == 404
    assert unknown.json()["kind"] == "puppetlabs.orchestrator/unknown-environment"
