"""Storing reports and catalogs: history, each node's latest, staleness, new and
deactivated nodes, and batches of a fleet in a handful of statements."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from inventory import runs
from podium.inventory.query import run_query
from podium.inventory.reports import parse_catalog, parse_report
from podium.inventory.store import INCORPORATED, STALE, FactsCommand, InventoryStore
from podium.store import Store

WEB = "web1.example.com"
NODE_FIELDS = [
    "certname",
    "latest_report_status",
    "latest_report_hash",
    "latest_report_job_id",
    "latest_report_noop",
    "latest_report_noop_pending",
    "latest_report_corrective_change",
    "report_timestamp",
    "report_environment",
    "cached_catalog_status",
    "catalog_timestamp",
    "catalog_environment",
    "deactivated",
]


@pytest.fixture
def inventory(store: Store) -> InventoryStore:
    return InventoryStore.of(store)


def node(inventory: InventoryStore, certname: str = WEB) -> dict[str, Any]:
    query = [
        "extract",
        NODE_FIELDS,
        ["and", ["=", "certname", certname], ["=", "node_state", "any"]],
    ]
    rows, _ = run_query(inventory, "nodes", query=query)
    assert len(rows) == 1, rows
    return rows[0]


def reports_of(inventory: InventoryStore, certname: str = WEB) -> list[tuple[str, str]]:
    query = [
        "extract",
        ["status", "hash"],
        ["and", ["=", "certname", certname], ["=", "type", "any"]],
    ]
    rows, _ = run_query(inventory, "reports", query=query, order_by=[["producer_timestamp", "asc"]])
    return [(r["status"], r["hash"]) for r in rows]


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        sent.append(sql)

    event.listen(store._engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(store._engine, "before_cursor_execute", record)


def test_a_report_is_stored_with_its_events_and_becomes_the_nodes_latest(
    inventory: InventoryStore,
) -> None:
    report = parse_report(runs.reports()[1])
    assert inventory.store_reports([report]) == [INCORPORATED]
    assert node(inventory) | {"catalog_timestamp": None} == {
        "certname": WEB,
        "latest_report_status": "failed",
        "latest_report_hash": report.hash,
        "latest_report_job_id": "7",
        "latest_report_noop": False,
        "latest_report_noop_pending": False,
        "latest_report_corrective_change": False,
        "report_timestamp": "2026-03-01T13:01:00.000Z",  # the run's end
        "report_environment": "production",
        "cached_catalog_status": "not_used",
        "catalog_timestamp": None,
        "catalog_environment": None,
        "deactivated": None,
    }
    events, _ = run_query(inventory, "events", query=["=", "report", report.hash])
    assert [(e["resource_title"], e["status"]) for e in events] == [
        ("/etc/nginx/nginx.conf", "success"),
        ("nginx", "failure"),
        ("reload nginx", "skipped"),
    ]


def test_reports_are_history_and_the_newest_is_the_latest_whatever_the_order(
    inventory: InventoryStore,
) -> None:
    older, newer = (parse_report(p) for p in runs.reports()[:2])
    assert inventory.store_reports([newer]) == [INCORPORATED]
    assert inventory.store_reports([older]) == [INCORPORATED]  # kept, but not the latest
    assert node(inventory)["latest_report_hash"] == newer.hash
    assert reports_of(inventory) == [("changed", older.hash), ("failed", newer.hash)]
    latest, _ = run_query(inventory, "reports", query=["=", "latest_report?", True])
    assert [r["hash"] for r in latest] == [newer.hash]


def test_the_same_report_again_is_stale_and_stored_once(inventory: InventoryStore) -> None:
    report = parse_report(runs.reports()[0])
    assert inventory.store_reports([report, report]) == [INCORPORATED, STALE]
    assert inventory.store_reports([report]) == [STALE]
    assert len(reports_of(inventory)) == 1
    events, _ = run_query(inventory, "events", query=["=", "certname", WEB])
    assert len(events) == 1


def test_a_plans_report_is_kept_but_never_a_nodes_latest(inventory: InventoryStore) -> None:
    agent = parse_report(runs.report_payload(WEB, 0, status="unchanged"))
    plan = parse_report(runs.report_payload(WEB, 60, status="failed", kind="plan"))
    assert inventory.store_reports([agent, plan]) == [INCORPORATED, INCORPORATED]
    assert node(inventory)["latest_report_status"] == "unchanged"
    assert [s for s, _ in reports_of(inventory)] == ["unchanged", "failed"]


def test_a_run_of_an_unknown_node_adds_it_and_a_newer_one_reactivates_it(
    inventory: InventoryStore,
) -> None:
    inventory.store_reports([parse_report(runs.report_payload("new.example.com", 0))])
    nodes, _ = run_query(inventory, "nodes", query=["=", "certname", "new.example.com"])
    assert nodes[0]["latest_report_status"] == "changed"
    assert nodes[0]["facts_environment"] is None
    inventory.deactivate_node("new.example.com", runs.T0 + timedelta(minutes=30))
    inventory.store_reports([parse_report(runs.report_payload("new.example.com", 10))])
    assert node(inventory, "new.example.com")["deactivated"] == "2026-03-01T12:30:00.000Z"
    inventory.replace_catalogs([parse_catalog(runs.catalog_payload("new.example.com", 20))])
    assert node(inventory, "new.example.com")["deactivated"] is not None  # older than that
    inventory.store_reports([parse_report(runs.report_payload("new.example.com", 40))])
    assert node(inventory, "new.example.com")["deactivated"] is None


def test_reports_leave_a_nodes_facts_as_they_are(inventory: InventoryStore) -> None:
    facts = FactsCommand(WEB, {"role": "web"}, "staging", runs.T0, runs.SERVER)
    inventory.replace_facts_many([facts])
    inventory.store_reports([parse_report(runs.report_payload(WEB, 5))])
    rows, _ = run_query(inventory, "inventory", query=["=", "certname", WEB])
    assert (rows[0]["facts"], rows[0]["environment"]) == ({"role": "web"}, "staging")
    assert node(inventory)["report_environment"] == "production"


def test_a_newer_catalog_replaces_the_nodes_and_an_older_one_is_stale(
    inventory: InventoryStore,
) -> None:
    first = parse_catalog(runs.catalogs()[0])
    assert inventory.replace_catalogs([first]) == [INCORPORATED]
    assert node(inventory)["catalog_environment"] == "production"
    assert node(inventory)["catalog_timestamp"] is not None
    smaller = runs.catalog_payload(WEB, 120, environment="staging")
    assert inventory.replace_catalogs([parse_catalog(smaller)]) == [INCORPORATED]
    older = runs.catalog_payload(WEB, 10, resources=[runs.resource("File", "/old", 1, [])])
    assert inventory.replace_catalogs([parse_catalog(older)]) == [STALE]
    resources, _ = run_query(inventory, "resources", query=["=", "certname", WEB])
    assert [(r["type"], r["title"], r["environment"]) for r in resources] == [
        ("Class", "Main", "staging"),
        ("Stage", "main", "staging"),
    ]
    edges, _ = run_query(inventory, "edges", query=["=", "certname", WEB])
    assert len(edges) == 1
    assert node(inventory)["catalog_environment"] == "staging"


def test_in_one_batch_a_nodes_newest_catalog_wins(inventory: InventoryStore) -> None:
    newer = parse_catalog(runs.catalog_payload(WEB, 60, environment="staging"))
    older = parse_catalog(runs.catalog_payload(WEB, 0))
    assert inventory.replace_catalogs([newer, older]) == [INCORPORATED, STALE]
    rows, _ = run_query(inventory, "catalogs", query=["=", "certname", WEB])
    assert rows[0]["environment"] == "staging"


def test_an_unchanged_catalog_rewrites_no_resource(store: Store, inventory: InventoryStore) -> None:
    inventory.replace_catalogs([parse_catalog(runs.catalogs()[0])])
    again = runs.catalogs()[0] | {"producer_timestamp": runs.at(500), "version": "later"}
    with statements(store) as sent:
        assert inventory.replace_catalogs([parse_catalog(again)]) == [INCORPORATED]
    assert not [s for s in sent if "catalog_resources" in s or "catalog_edges" in s]
    rows, _ = run_query(inventory, "catalogs", query=["=", "certname", WEB])
    assert rows[0]["version"] == "later"
    assert len(rows[0]["resources"]["data"]) == 6


def test_a_fleets_runs_are_written_in_a_handful_of_statements(
    store: Store, inventory: InventoryStore
) -> None:
    names = [f"node{i:04d}.example.com" for i in range(1500)]
    status = [
        runs.resource_status("File", f"/etc/f{i}", [runs.event("mode", "1", "2")]) for i in range(4)
    ]
    reports = [parse_report(runs.report_payload(n, 0, resources=status)) for n in names]
    catalogs = [parse_catalog(runs.catalogs()[0] | {"certname": n}) for n in names]
    with statements(store) as sent:
        assert set(inventory.store_reports(reports)) == {INCORPORATED}
        assert set(inventory.replace_catalogs(catalogs)) == {INCORPORATED}
    assert len(sent) <= 60  # chunks of 500 nodes and 5,000 rows, not one a row
    counted, _ = run_query(inventory, "events", query=["extract", [["function", "count"]]])
    assert counted == [{"count": 1500 * 4}]
    failed, _ = run_query(
        inventory,
        "nodes",
        query=["extract", [["function", "count"]], ["=", "latest_report_status", "changed"]],
    )
    assert failed == [{"count": 1500}]
    resources, _ = run_query(
        inventory, "resources", query=["extract", [["function", "count"]], ["=", "type", "Service"]]
    )
    assert resources == [{"count": 1500}]


def test_a_job_runs_report_carries_its_job_id(inventory: InventoryStore) -> None:
    """What the job service does with a finished Puppet run's result."""
    result = {"status": "changed", "report": runs.report_payload(WEB, 0, job_id="42")}
    inventory.store_reports([parse_report(result["report"])])
    assert node(inventory)["latest_report_job_id"] == "42"
    rows, _ = run_query(inventory, "reports", query=["=", "job_id", "42"])
    assert [r["certname"] for r in rows] == [WEB]
