"""PuppetDB's API for Puppet runs over HTTP: "store report" and "replace catalog" in,
reports, events, event counts, catalogs, resources and edges out."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from access import admin_token
from inventory import runs
from podium.server.app import create_app
from podium.server.pdb_api import MAX_COMMAND_BYTES
from podium.server.runtime import Runtime

WEB = "web1.example.com"
WIRE = Path(__file__).parent.parent / "inventory" / "cases" / "wire"


@pytest.fixture
async def pdb(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)),
        base_url="https://podium.test",
        headers={"X-Authentication": admin_token(runtime)},
    ) as client:
        yield client


async def submit(
    pdb: httpx.AsyncClient, command: str, version: int, payload: dict[str, Any]
) -> httpx.Response:
    """A command as PuppetDB's terminus sends it (its name in the query string), waited for."""
    params = {
        "command": command,
        "version": version,
        "certname": payload["certname"],
        "secondsToWaitForCompletion": 30,
    }
    return await pdb.post("/pdb/cmd/v1", params=params, json=payload)


async def store_fleet(pdb: httpx.AsyncClient) -> None:
    for catalog in runs.catalogs()[:3]:
        response = await submit(pdb, "replace_catalog", 9, catalog)
        assert response.status_code == 200, response.text
    for report in runs.reports()[:5]:
        response = await submit(pdb, "store_report", 8, report)
        assert response.status_code == 200, response.text


async def get(pdb: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await pdb.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_stored_report_is_served_with_its_events_metrics_and_logs(
    pdb: httpx.AsyncClient,
) -> None:
    response = await submit(pdb, "store_report", 8, runs.reports()[1])
    assert set(response.json()) == {"uuid", "processed", "timed_out"}
    reports = await get(pdb, "/pdb/query/v4/reports")
    assert [(r["certname"], r["status"], r["job_id"]) for r in reports] == [(WEB, "failed", "7")]
    digest = reports[0]["hash"]
    events = await get(pdb, f"/pdb/query/v4/reports/{digest}/events")
    assert [(e["resource_title"], e["status"]) for e in events] == [
        ("/etc/nginx/nginx.conf", "success"),
        ("nginx", "failure"),
        ("reload nginx", "skipped"),
    ]
    inline = reports[0]["resource_events"]["data"]
    assert [{k: e[k] for k in inline[0]} for e in events] == inline
    assert {e["report"] for e in events} == {digest}
    failures = await get(
        pdb, f"/pdb/query/v4/reports/{digest}/events", query='["=", "status", "failure"]'
    )
    assert [e["message"] for e in failures] == ["Could not start Service[nginx]"]
    metrics = await get(pdb, f"/pdb/query/v4/reports/{digest}/metrics")
    assert metrics == reports[0]["metrics"]["data"]
    assert {"category": "time", "name": "total", "value": 1.25} in metrics
    logs = await get(pdb, f"/pdb/query/v4/reports/{digest}/logs")
    assert logs[0]["message"].startswith("Applied catalog")
    (node,) = await get(pdb, "/pdb/query/v4/nodes")
    assert (node["latest_report_status"], node["latest_report_hash"]) == ("failed", digest)
    assert node["report_timestamp"] == "2026-03-01T13:01:00.000Z"


async def test_the_terminus_gzipped_commands_are_taken(pdb: httpx.AsyncClient) -> None:
    """A report made by Puppet's PuppetDB terminus code, posted as it posts it."""
    payload = json.loads((WIRE / "report_v8_puppet7.json").read_text())
    body = gzip.compress(orjson.dumps(payload))
    params = {
        "checksum": hashlib.sha1(body, usedforsecurity=False).hexdigest(),
        "version": 8,
        "certname": payload["certname"],
        "command": "store_report",
        "producer-timestamp": payload["producer_timestamp"],
        "secondsToWaitForCompletion": 30,
    }
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json; charset=utf-8"}
    response = await pdb.post("/pdb/cmd/v1", params=params, content=body, headers=headers)
    assert response.status_code == 200, response.text
    reports = await get(pdb, "/pdb/query/v4/reports")
    assert [(r["certname"], r["status"]) for r in reports] == [("agent.example.com", "failed")]
    failed = await get(pdb, "/pdb/query/v4/events", query='["=", "status", "failure"]')
    assert [(e["resource_type"], e["resource_title"]) for e in failed] == [("Exec", "fail-me")]


async def test_the_older_form_with_everything_in_the_body_works_too(pdb: httpx.AsyncClient) -> None:
    body = {"command": "replace catalog", "version": 9, "payload": runs.catalogs()[0]}
    response = await pdb.post("/pdb/cmd/v1", params={"secondsToWaitForCompletion": 30}, json=body)
    assert response.status_code == 200, response.text
    catalog = await get(pdb, f"/pdb/query/v4/catalogs/{WEB}")
    assert (catalog["certname"], catalog["version"]) == (WEB, "1700000059")


async def test_catalog_inputs_are_taken_and_not_kept(pdb: httpx.AsyncClient) -> None:
    """A Puppet Server's terminus sends them after a catalog that looked Hiera keys up."""
    inputs = {
        "certname": WEB,
        "catalog_uuid": "cat-1",
        "producer_timestamp": runs.at(0),
        "inputs": [["hiera", "ntp::servers"]],
    }
    response = await submit(pdb, "replace_catalog_inputs", 1, inputs)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    assert await get(pdb, "/pdb/query/v4/nodes", query='["=", "node_state", "any"]') == []


async def test_catalogs_resources_and_edges_have_their_endpoints(pdb: httpx.AsyncClient) -> None:
    await store_fleet(pdb)
    catalog = await get(pdb, f"/pdb/query/v4/catalogs/{WEB}")
    assert catalog["resources"]["href"] == f"/pdb/query/v4/catalogs/{WEB}/resources"
    resources = await get(pdb, f"/pdb/query/v4/catalogs/{WEB}/resources")
    assert [{k: v for k, v in r.items() if k != "environment"} for r in resources] == catalog[
        "resources"
    ]["data"]
    edges = await get(pdb, f"/pdb/query/v4/catalogs/{WEB}/edges")
    assert {e["relationship"] for e in edges} == {"contains", "before", "notifies"}
    services = await get(pdb, "/pdb/query/v4/resources/Service")
    assert [(r["certname"], r["title"]) for r in services] == [
        ("db1.example.com", "postgresql"),
        (WEB, "nginx"),
        ("web2.example.com", "nginx"),
    ]
    nginx = await get(
        pdb, "/pdb/query/v4/resources/Service/nginx", query='["=", "parameters.ensure", "stopped"]'
    )
    assert [r["certname"] for r in nginx] == ["web2.example.com"]
    conf = await get(pdb, "/pdb/query/v4/resources/File//etc/nginx/nginx.conf")
    assert {r["certname"] for r in conf} == {WEB, "web2.example.com"}
    assert conf[0]["parameters"]["mode"] == "0644"


async def test_pql_finds_the_nodes_the_issue_targets(pdb: httpx.AsyncClient) -> None:
    await store_fleet(pdb)
    for query, names in (
        ('reports[certname] { latest_report? = true and status = "failed" }', [WEB]),
        ('nodes[certname] { reports { latest_report? = true and status = "failed" } }', [WEB]),
        (
            'resources[certname] { type = "Service" and title = "nginx" }',
            [WEB, "web2.example.com"],
        ),
    ):
        rows = await get(pdb, "/pdb/query/v4", query=query)
        assert [r["certname"] for r in rows] == names, query


async def test_event_counts_and_their_aggregate_over_http(pdb: httpx.AsyncClient) -> None:
    await store_fleet(pdb)
    counts = await pdb.get(
        "/pdb/query/v4/event-counts",
        params={
            "summarize_by": "certname",
            "query": '["=", "latest_report?", true]',
            "counts_filter": '[">", "failures", 0]',
            "include_total": "true",
        },
    )
    assert counts.status_code == 200, counts.text
    assert counts.json() == [
        {
            "subject_type": "certname",
            "subject": {"title": WEB},
            "failures": 1,
            "successes": 1,
            "noops": 0,
            "skips": 1,
        }
    ]
    assert counts.headers["X-Records"] == "1"
    posted = await pdb.post(
        "/pdb/query/v4/event-counts",
        json={
            "summarize_by": "resource",
            "count_by": "certname",
            "order_by": [{"field": "skips", "order": "desc"}],
            "limit": 1,
        },
    )
    assert posted.json()[0]["subject"] == {"type": "Exec", "title": "reload nginx"}
    aggregate = await get(
        pdb, "/pdb/query/v4/aggregate-event-counts", summarize_by="certname,containing_class"
    )
    assert [(a["summarize_by"], a["total"]) for a in aggregate] == [
        ("certname", 2),
        ("containing_class", 3),
    ]


async def test_the_same_report_again_and_an_older_catalog_change_nothing(
    pdb: httpx.AsyncClient,
) -> None:
    report = runs.reports()[0]
    assert "status" not in (await submit(pdb, "store_report", 8, report)).json()
    assert (await submit(pdb, "store_report", 8, report)).json()["status"] == "stale"
    await submit(pdb, "replace_catalog", 9, runs.catalog_payload(WEB, 60))
    older = await submit(pdb, "replace_catalog", 9, runs.catalog_payload(WEB, 10))
    assert older.json()["status"] == "stale"
    assert len(await get(pdb, "/pdb/query/v4/reports")) == 1
    catalog = await get(pdb, f"/pdb/query/v4/catalogs/{WEB}")
    assert catalog["producer_timestamp"] == runs.at(60)


@pytest.mark.parametrize(
    ("command", "version", "change", "words"),
    [
        ("store_report", 8, {"start_time": "soon"}, "start_time is a time in ISO-8601"),
        (
            "store_report",
            8,
            {"resources": [{"resource_type": "File"}]},
            "resources[0].resource_title is missing",
        ),
        ("store_report", 9, {}, "Version 9 is not supported"),
        ("replace_catalog", 9, {"edges": [{"source": {}}]}, "edges[0].source.type is missing"),
        ("replace_catalog", 9, {"version": None}, "version is missing"),
    ],
)
async def test_a_bad_report_or_catalog_is_a_400_naming_the_field_and_stores_nothing(
    pdb: httpx.AsyncClient, command: str, version: int, change: dict[str, Any], words: str
) -> None:
    base = runs.reports()[0] if command == "store_report" else runs.catalogs()[0]
    response = await submit(pdb, command, version, base | change)
    assert response.status_code == 400, response.text
    body = response.json()
    assert words in body["msg"]
    assert body["kind"] == "puppetlabs.puppetdb/invalid-command"
    assert body["msg"].startswith(f"Command {command.replace('_', ' ')} for certname {WEB}")
    assert await get(pdb, "/pdb/query/v4/nodes", query='["=", "node_state", "any"]') == []


async def test_bodies_that_are_not_gzip_or_too_big_unpacked_are_400s(
    pdb: httpx.AsyncClient,
) -> None:
    headers = {"Content-Encoding": "gzip"}
    params = {"command": "store_report", "version": 8}
    broken = await pdb.post("/pdb/cmd/v1", params=params, content=b"not gzip", headers=headers)
    assert broken.status_code == 400 and "not valid gzip" in broken.json()["msg"]
    bomb = gzip.compress(b"[" + b" " * (MAX_COMMAND_BYTES + 10) + b"]")
    assert len(bomb) < 100_000
    big = await pdb.post("/pdb/cmd/v1", params=params, content=bomb, headers=headers)
    assert big.status_code == 400 and "exceeds max-command-size" in big.json()["msg"]
    cut = await pdb.post(
        "/pdb/cmd/v1", params=params, content=gzip.compress(b"{}")[:-6], headers=headers
    )
    assert cut.status_code == 400
    other = await pdb.post("/pdb/cmd/v1", content=b"{}", headers={"Content-Encoding": "br"})
    assert other.status_code == 400 and "gzip" in other.json()["msg"]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/pdb/query/v4/catalogs/ghost.example.com", "No information is known about catalog"),
        ("/pdb/query/v4/catalogs/ghost.example.com/resources", "about catalog ghost.example.com"),
        ("/pdb/query/v4/catalogs/ghost.example.com/edges", "about catalog ghost.example.com"),
        ("/pdb/query/v4/reports/" + "0" * 40 + "/metrics", "No information is known about report"),
        ("/pdb/query/v4/reports/" + "0" * 40 + "/logs", "about report"),
        ("/pdb/query/v4/reports/" + "0" * 40 + "/events", "about report"),
    ],
)
async def test_unknown_catalogs_and_reports_are_404s(
    pdb: httpx.AsyncClient, path: str, words: str
) -> None:
    response = await pdb.get(path)
    assert response.status_code == 404, response.text
    assert words in response.json()["msg"]


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        ("/pdb/query/v4/event-counts", {}, "Missing required query parameter 'summarize_by'"),
        ("/pdb/query/v4/event-counts", {"summarize_by": "x"}, "summarize_by is certname"),
        (
            "/pdb/query/v4/event-counts",
            {"summarize_by": "certname", "counts_filter": "[nope"},
            "counts_filter is not valid JSON",
        ),
        (
            "/pdb/query/v4/aggregate-event-counts",
            {"summarize_by": "certname", "limit": "1"},
            "Unsupported query parameter 'limit'",
        ),
        ("/pdb/query/v4/reports", {"query": '["~", "latest_report?", "x"]'}, "not allowed"),
        ("/pdb/query/v4/event_counts", {}, "asked of its endpoint"),
        ("/pdb/query/v4", {"query": '["from", "producers"]'}, "holds no producers"),
    ],
)
async def test_bad_run_queries_are_400s_that_say_what_is_valid(
    pdb: httpx.AsyncClient, path: str, params: dict[str, str], words: str
) -> None:
    response = await pdb.get(path, params=params)
    assert response.status_code == 400, response.text
    assert words in response.json()["msg"]


async def test_paging_of_reports_says_how_many_there_are(pdb: httpx.AsyncClient) -> None:
    await store_fleet(pdb)
    response = await pdb.get(
        "/pdb/query/v4/reports",
        params={
            "limit": 1,
            "order_by": json.dumps([{"field": "producer_timestamp", "order": "desc"}]),
            "include_total": "true",
        },
    )
    assert response.headers["X-Records"] == "4"
    assert [r["certname"] for r in response.json()] == [WEB]
