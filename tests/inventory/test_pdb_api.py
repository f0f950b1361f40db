"""PuppetDB's HTTP API on the server: commands in, queries out, errors a client can act on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from access import admin_token
from podium.server.app import create_app
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings

WEB = {"os": {"family": "Debian", "release": {"major": "12"}}, "role": "web", "cpus": 4}
DB = {"os": {"family": "RedHat", "release": {"major": "9"}}, "role": "db", "cpus": 16}


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


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture
async def pdb(app: FastAPI, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://podium.test",
        headers={"X-Authentication": admin_token(runtime)},
    ) as client:
        yield client


def replace_facts(
    certname: str,
    values: dict[str, Any],
    *,
    env: str = "production",
    at: str = "2026-03-01T12:00:00.000Z",
) -> dict[str, Any]:
    return {
        "certname": certname,
        "environment": env,
        "values": values,
        "producer_timestamp": at,
        "producer": "puppet.example.com",
    }


async def submit(
    pdb: httpx.AsyncClient, payload: dict[str, Any], *, wait: bool = True
) -> httpx.Response:
    """Submit facts; by default wait until they are stored (PuppetDB's blocking form)."""
    params: dict[str, Any] = {"command": "replace_facts", "version": 5}
    params["certname"] = payload["certname"]
    if wait:
        params["secondsToWaitForCompletion"] = 30
    return await pdb.post("/pdb/cmd/v1", params=params, json=payload)


async def fleet(pdb: httpx.AsyncClient) -> None:
    for name, values, env in (
        ("web1.example.com", WEB, "production"),
        ("web2.example.com", {**WEB, "cpus": 2}, "staging"),
        ("db1.example.com", DB, "production"),
    ):
        response = await submit(pdb, replace_facts(name, values, env=env))
        assert response.status_code == 200, response.text


async def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"kind", "msg", "details"}
    return body


async def test_replaced_facts_are_answered_by_every_endpoint(pdb: httpx.AsyncClient) -> None:
    response = await submit(pdb, replace_facts("web1.example.com", WEB))
    assert response.status_code == 200
    assert set(response.json()) == {"uuid", "processed", "timed_out"}
    nodes = (await pdb.get("/pdb/query/v4/nodes")).json()
    assert [(n["certname"], n["facts_environment"], n["deactivated"]) for n in nodes] == [
        ("web1.example.com", "production", None)
    ]
    assert nodes[0]["facts_timestamp"].endswith("Z")
    facts = (await pdb.get("/pdb/query/v4/facts/role")).json()
    assert facts == [
        {
            "certname": "web1.example.com",
            "name": "role",
            "value": "web",
            "environment": "production",
        }
    ]
    inventory = (await pdb.get("/pdb/query/v4/inventory")).json()
    assert inventory[0]["facts"] == WEB
    contents = await pdb.get(
        "/pdb/query/v4/fact-contents", params={"query": json.dumps(["=", "path", ["os", "family"]])}
    )
    assert [c["value"] for c in contents.json()] == ["Debian"]
    factset = (await pdb.get("/pdb/query/v4/factsets/web1.example.com")).json()
    assert factset["producer"] == "puppet.example.com"
    assert {"name": "cpus", "value": 4} in factset["facts"]["data"]
    assert (await pdb.get("/pdb/query/v4/fact-names")).json() == ["cpus", "os", "role"]
    assert (await pdb.get("/pdb/query/v4/environments/production")).json() == {"name": "production"}


async def test_pql_and_ast_on_the_root_endpoint(pdb: httpx.AsyncClient) -> None:
    await fleet(pdb)
    pql = 'inventory[certname] { facts.cpus >= 4 and facts.os.family = "Debian" }'
    assert (await pdb.get("/pdb/query/v4", params={"query": pql})).json() == [
        {"certname": "web1.example.com"}
    ]
    ast = ["from", "nodes", ["extract", "certname", ["subquery", "facts", ["=", "value", "db"]]]]
    response = await pdb.post("/pdb/query/v4", json={"query": ast})
    assert response.json() == [{"certname": "db1.example.com"}]
    shown = await pdb.get("/pdb/query/v4", params={"query": "nodes {}", "ast_only": "true"})
    assert shown.json() == ["from", "nodes"]


async def test_paging_parameters_and_the_total_header(pdb: httpx.AsyncClient) -> None:
    await fleet(pdb)
    params = {
        "order_by": json.dumps([{"field": "certname", "order": "desc"}]),
        "limit": "2",
        "offset": "0",
        "include_total": "true",
    }
    response = await pdb.get("/pdb/query/v4/nodes", params=params)
    assert [n["certname"] for n in response.json()] == ["web2.example.com", "web1.example.com"]
    assert response.headers["X-Records"] == "3"
    posted = await pdb.post(
        "/pdb/query/v4/facts",
        json={"query": ["=", "name", "cpus"], "order_by": [{"field": "value"}], "limit": 1},
    )
    assert posted.json()[0]["value"] == 2
    assert "X-Records" not in posted.headers
    pretty = await pdb.get("/pdb/query/v4/environments", params={"pretty": "true"})
    assert pretty.text.startswith("[\n  {")


async def test_deactivated_nodes_keep_their_facts_out_of_sight(pdb: httpx.AsyncClient) -> None:
    await fleet(pdb)
    old_form = {
        "command": "deactivate node",
        "version": 3,
        "payload": {"certname": "db1.example.com", "producer_timestamp": "2026-03-01T13:00:00Z"},
    }
    waiting = {"secondsToWaitForCompletion": "10"}
    assert (await pdb.post("/pdb/cmd/v1", params=waiting, json=old_form)).status_code == 200
    names = [n["certname"] for n in (await pdb.get("/pdb/query/v4/nodes")).json()]
    assert names == ["web1.example.com", "web2.example.com"]
    node = (await pdb.get("/pdb/query/v4/nodes/db1.example.com")).json()
    assert node["deactivated"] == "2026-03-01T13:00:00.000Z"
    assert (await pdb.get("/pdb/query/v4/nodes/db1.example.com/facts")).json() == []
    kept = (await pdb.get("/pdb/query/v4/factsets/db1.example.com/facts")).json()
    assert {f["name"] for f in kept} == {"os", "role", "cpus"}
    newer = replace_facts("db1.example.com", DB, at="2026-03-01T14:00:00Z")
    assert (await submit(pdb, newer)).status_code == 200
    back = await pdb.get("/pdb/query/v4/nodes/db1.example.com/facts/role/db")
    assert [f["certname"] for f in back.json()] == ["db1.example.com"]


async def test_stale_commands_are_answered_and_change_nothing(pdb: httpx.AsyncClient) -> None:
    await submit(pdb, replace_facts("a.example.com", {"v": 2}, at="2026-03-01T12:00:00Z"))
    response = await submit(
        pdb, replace_facts("a.example.com", {"v": 1}, at="2026-03-01T11:00:00Z")
    )
    assert response.json()["status"] == "stale"
    assert (await pdb.get("/pdb/query/v4/facts/v")).json()[0]["value"] == 2


async def test_commands_are_answered_once_queued_and_stored_together(
    pdb: httpx.AsyncClient, app: FastAPI
) -> None:
    payloads = [replace_facts(f"n{i:02d}.example.com", {"i": i}) for i in range(40)]
    responses = await asyncio.gather(*(submit(pdb, p, wait=False) for p in payloads))
    assert [r.status_code for r in responses] == [200] * 40
    assert all(set(r.json()) == {"uuid"} for r in responses)
    await asyncio.to_thread(app.state.pdb_writer.join)
    count = await pdb.get(
        "/pdb/query/v4/nodes", params={"query": json.dumps(["extract", [["function", "count"]]])}
    )
    assert count.json() == [{"count": 40}]


async def test_facts_that_cannot_be_stored_are_refused_before_queueing(
    pdb: httpx.AsyncClient,
) -> None:
    response = await submit(pdb, replace_facts("bad.example.com", {"x": "a\u0000b"}), wait=False)
    assert "NUL" in (await error_of(response, 400))["msg"]


async def test_one_bad_document_in_a_batch_fails_alone(
    pdb: httpx.AsyncClient, app: FastAPI
) -> None:
    deep: Any = "x"
    for _ in range(70):
        deep = {"k": deep}
    payloads = [replace_facts(f"g{i}.example.com", {"i": i}) for i in range(5)]
    payloads.insert(2, replace_facts("deep.example.com", {"deep": deep}))
    responses = await asyncio.gather(*(submit(pdb, p, wait=False) for p in payloads))
    assert [r.status_code for r in responses] == [200] * 6  # queued: the writer finds out
    await asyncio.to_thread(app.state.pdb_writer.join)
    names = [n["certname"] for n in (await pdb.get("/pdb/query/v4/nodes")).json()]
    assert names == [f"g{i}.example.com" for i in range(5)]


async def test_waiting_for_completion_says_so(pdb: httpx.AsyncClient) -> None:
    response = await submit(pdb, replace_facts("a.example.com", {}))
    assert response.json() == response.json() | {"processed": True, "timed_out": False}


@pytest.mark.parametrize(
    ("params", "body", "words"),
    [
        (
            {"command": "configure_expiration", "version": 1, "certname": "a"},
            {},
            "Command must be one of",
        ),
        (
            {"command": "replace_facts", "version": 3, "certname": "a"},
            {},
            "Version 3 is not supported",
        ),
        (
            {"command": "replace_facts", "version": "x", "certname": "a"},
            {},
            "Version must be a valid integer",
        ),
        (
            {"command": "replace_facts", "version": 5, "certname": "b.example.com"},
            replace_facts("a.example.com", {}),
            "is not the query's",
        ),
        (
            {"command": "replace_facts", "version": 5},
            {"certname": "a.example.com", "values": []},
            "values must be",
        ),
        (
            {"command": "replace_facts", "version": 5},
            {"certname": "Bad Name!", "values": {}},
            "invalid certname",
        ),
        ({}, {"payload": {}}, "JSON map with keys command"),
        (
            {"command": "replace_facts", "version": 5},
            {**replace_facts("a.example.com", {}), "producer_timestamp": "soon"},
            "not a valid timestamp",
        ),
    ],
)
async def test_invalid_commands_are_400s_that_say_why(
    pdb: httpx.AsyncClient, params: dict[str, Any], body: dict[str, Any], words: str
) -> None:
    error = await error_of(await pdb.post("/pdb/cmd/v1", params=params, json=body), 400)
    assert words in error["msg"]
    assert (await pdb.get("/pdb/query/v4/nodes")).json() == []


async def test_a_body_that_is_not_json_is_a_400(pdb: httpx.AsyncClient) -> None:
    response = await pdb.post("/pdb/cmd/v1?command=replace_facts&version=5", content=b"{nope")
    assert "not JSON" in (await error_of(response, 400))["msg"]


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        (
            "/pdb/query/v4/nodes",
            {"query": '["=", "hostname", "x"]'},
            "Known queryable objects are certname",
        ),
        ("/pdb/query/v4/nodes", {"query": "[not json"}, "query is not valid JSON"),
        ("/pdb/query/v4/nodes", {"query": "nodes {}"}, "PQL goes to /pdb/query/v4"),
        ("/pdb/query/v4/nodes", {"limit": "-1"}, "expected a positive non-zero integer"),
        ("/pdb/query/v4/nodes", {"order_by": "certname"}, "order_by is not valid JSON"),
        ("/pdb/query/v4/nodes", {"colour": "red"}, "Unsupported query parameter 'colour'"),
        ("/pdb/query/v4", {}, "Missing required query parameter 'query'"),
        ("/pdb/query/v4", {"query": "nodes { certname ~~ 1 }"}, "PQL parse error"),
        ("/pdb/query/v4", {"query": '["from", "packages"]'}, "holds no packages"),
        ("/pdb/query/v4/facts", {"query": '["<", "value", "5"]'}, "incompatible types"),
    ],
)
async def test_invalid_queries_are_400s_that_say_what_is_valid(
    pdb: httpx.AsyncClient, path: str, params: dict[str, str], words: str
) -> None:
    error = await error_of(await pdb.get(path, params=params), 400)
    assert words in error["msg"]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (
            "/pdb/query/v4/nodes/ghost.example.com",
            "No information is known about node ghost.example.com",
        ),
        ("/pdb/query/v4/factsets/ghost.example.com", "No information is known about factset"),
        ("/pdb/query/v4/environments/nowhere", "No information is known about environment nowhere"),
        ("/pdb/query/v4/nodes/ghost.example.com/facts", "No information is known about node"),
    ],
)
async def test_unknown_things_are_404s(pdb: httpx.AsyncClient, path: str, words: str) -> None:
    error = await error_of(await pdb.get(path), 404)
    assert words in error["msg"]


async def test_every_endpoint_needs_the_token(runtime: Runtime) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="https://podium.test"
    ) as anonymous:
        for path in (
            "/pdb/query/v4/nodes",
            "/pdb/meta/v1/version",
            "/status/v1/services/puppetdb-status",
        ):
            assert (await anonymous.get(path)).status_code == 401
        assert (await anonymous.post("/pdb/cmd/v1", json={})).status_code == 401


async def test_version_and_status_look_like_puppetdbs(pdb: httpx.AsyncClient) -> None:
    version = (await pdb.get("/pdb/meta/v1/version")).json()["version"]
    assert int(version.split(".")[0]) == 7
    status = (await pdb.get("/status/v1/services/puppetdb-status")).json()
    assert status["state"] == "running"
    assert status["status"]["read_db_up?"] is True
    assert status["status"]["queue_depth"] == 0
    assert (await pdb.get("/pdb/meta/v1/server-time")).json()["server_time"].endswith("Z")
