"""Reports, events, catalogs, resources and edges in PuppetDB's query language, on
SQLite and PostgreSQL alike.

Each file of ``cases/reports`` is one query against the fleet of ``runs.py``:
``{"description", "pql" (optional: the query as PQL), "query" (the AST),
"expected": [rows] or "error": "<words of the 400's message>", "source"}``. Rows are
compared in order: every answer is ordered. The PQL of a case must parse to its AST.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS
from inventory import runs
from podium.inventory.pql import parse_pql
from podium.inventory.query import QueryError, aggregate_event_counts, event_counts, run_query
from podium.inventory.store import InventoryStore
from podium.store import Store

CASES = Path(__file__).parent / "cases" / "reports"
CASE_FILES = sorted(CASES.glob("*.json"))
ISO_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InventoryStore]:
    """The runs' fleet, stored once per module and backend (the queries only read)."""
    supply = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('runs') / 'podium.db'}"
    else:
        supply = request.getfixturevalue("postgres_databases")
        url = supply.take()
    store = Store(url)
    store.migrate()
    inventory = InventoryStore.of(store)
    runs.load(inventory)
    yield inventory
    store.close()
    if supply is not None:
        supply.give_back(url)


def test_there_are_cases_for_each_entity_and_the_issues_targets() -> None:
    cases = [json.loads(p.read_text()) for p in CASE_FILES]
    assert len(cases) >= 30
    entities = {c["query"][1] for c in cases}
    assert {"reports", "events", "catalogs", "resources", "edges", "nodes", "inventory"} <= entities
    assert sum(1 for c in cases if "issue 9" in c.get("source", "")) >= 3


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_query_case(fleet: InventoryStore, path: Path) -> None:
    case = json.loads(path.read_text())
    if "pql" in case:
        assert parse_pql(case["pql"]) == case["query"]
    if "error" in case:
        with pytest.raises(QueryError) as caught:
            run_query(fleet, case["query"])
        assert case["error"] in caught.value.msg
        assert caught.value.status == 400
        return
    rows, total = run_query(fleet, case["query"], include_total=True)
    assert rows == case["expected"]
    assert total == len(case["expected"]) or "limit" in json.dumps(case["query"])


def test_a_report_row_has_puppetdbs_fields_with_its_events_metrics_and_logs(
    fleet: InventoryStore,
) -> None:
    rows, _ = run_query(fleet, "reports", query=["=", "status", "failed"])
    assert [r["certname"] for r in rows] == ["web1.example.com"]
    report = rows[0]
    assert list(report) == [
        "certname",
        "hash",
        "environment",
        "status",
        "noop",
        "noop_pending",
        "corrective_change",
        "puppet_version",
        "report_format",
        "configuration_version",
        "start_time",
        "end_time",
        "producer_timestamp",
        "receive_time",
        "producer",
        "transaction_uuid",
        "catalog_uuid",
        "code_id",
        "job_id",
        "cached_catalog_status",
        "type",
        "resource_events",
        "metrics",
        "logs",
    ]
    digest = report["hash"]
    assert len(digest) == 40
    for field in ("start_time", "end_time", "producer_timestamp", "receive_time"):
        assert report[field].endswith("Z") and len(report[field]) == 24
    assert report["start_time"] == "2026-03-01T13:00:00.000Z"
    assert report["metrics"] == {
        "href": f"/pdb/query/v4/reports/{digest}/metrics",
        "data": [
            {"category": "resources", "name": "total", "value": 3},
            {"category": "time", "name": "total", "value": 1.25},
        ],
    }
    assert report["logs"]["href"] == f"/pdb/query/v4/reports/{digest}/logs"
    assert report["logs"]["data"][0]["message"] == "Applied catalog in 1.00 seconds (failed)"
    events = report["resource_events"]
    assert events["href"] == f"/pdb/query/v4/reports/{digest}/events"
    assert [(e["resource_type"], e["status"], e["property"]) for e in events["data"]] == [
        ("File", "success", "mode"),
        ("Service", "failure", "ensure"),
        ("Exec", "skipped", None),
    ]
    failure = events["data"][1]
    assert failure == {
        "status": "failure",
        "timestamp": "2026-03-01T13:00:00.000Z",
        "resource_type": "Service",
        "resource_title": "nginx",
        "property": "ensure",
        "corrective_change": False,
        "new_value": "running",
        "old_value": "stopped",
        "message": "Could not start Service[nginx]",
        "file": "/etc/puppet/code/environments/production/manifests/site.pp",
        "line": 1,
        "containment_path": ["Stage[main]", "Nginx", "Service[nginx]"],
        "containing_class": "Nginx",
        "name": "ensure_changed",
    }
    # the events entity answers the same, with the report's fields
    listed, _ = run_query(fleet, "events", query=["=", "report", digest])
    assert [e["resource_title"] for e in listed] == [
        "/etc/nginx/nginx.conf",
        "nginx",
        "reload nginx",
    ]
    assert {k: listed[1][k] for k in failure} == failure
    assert listed[1]["run_end_time"] == report["end_time"]
    assert listed[1]["report_receive_time"] == report["receive_time"]


def test_raw_rows_keep_the_databases_json_as_it_is(fleet: InventoryStore) -> None:
    parsed, _ = run_query(fleet, "reports", query=["=", "status", "failed"])
    raw, _ = run_query(fleet, "reports", query=["=", "status", "failed"], raw=True)
    import orjson

    assert orjson.loads(orjson.dumps(raw)) == parsed


def test_a_catalog_row_has_its_resources_and_edges(fleet: InventoryStore) -> None:
    rows, _ = run_query(fleet, "catalogs", query=["=", "certname", "web2.example.com"])
    catalog = rows[0]
    assert list(catalog) == [
        "certname",
        "version",
        "environment",
        "transaction_uuid",
        "catalog_uuid",
        "code_id",
        "job_id",
        "hash",
        "producer_timestamp",
        "producer",
        "resources",
        "edges",
    ]
    assert catalog["producer_timestamp"] == "2026-03-01T12:29:00.000Z"
    resources = catalog["resources"]
    assert resources["href"] == "/pdb/query/v4/catalogs/web2.example.com/resources"
    assert [(r["type"], r["title"]) for r in resources["data"]] == [
        ("Class", "Apache"),
        ("Class", "Main"),
        ("File", "/etc/nginx/nginx.conf"),
        ("Package", "nginx"),
        ("Service", "nginx"),
        ("Stage", "main"),
    ]
    service = resources["data"][4]
    assert service["parameters"] == {"ensure": "stopped", "enable": True, "restarts": 3}
    assert service["exported"] is False and service["line"] == 20
    assert service["tags"] == ["nginx", "service"]
    entity, _ = run_query(fleet, "resources", query=["=", "certname", "web2.example.com"])
    assert [{k: v for k, v in r.items() if k != "environment"} for r in entity] == resources["data"]
    assert {r["environment"] for r in entity} == {"production"}
    assert catalog["edges"]["href"] == "/pdb/query/v4/catalogs/web2.example.com/edges"
    assert {
        (e["source_type"], e["relationship"], e["target_type"]) for e in catalog["edges"]["data"]
    } == {
        ("Stage", "contains", "Class"),
        ("Class", "contains", "Class"),
        ("Package", "before", "File"),
        ("File", "notifies", "Service"),
    }


def test_a_deactivated_nodes_runs_are_left_out_unless_asked_for(fleet: InventoryStore) -> None:
    def names(entity: str, query: Any = None) -> set[str]:
        return {r["certname"] for r in run_query(fleet, entity, query=query)[0]}

    for entity in ("reports", "events", "catalogs", "resources", "edges"):
        assert runs.DEACTIVATED not in names(entity)
        assert runs.DEACTIVATED in names(entity, ["=", "node_state", "any"])


@pytest.mark.parametrize(
    ("summarize_by", "subjects"),
    [
        (
            "certname",
            [
                ({"title": "db1.example.com"}, (0, 0, 1, 0)),
                ({"title": "web1.example.com"}, (1, 2, 0, 1)),
            ],
        ),
        (
            "resource",
            [
                ({"type": "Exec", "title": "reload nginx"}, (0, 0, 0, 1)),
                ({"type": "File", "title": "/etc/nginx/nginx.conf"}, (0, 2, 0, 0)),
                ({"type": "Service", "title": "nginx"}, (1, 0, 0, 0)),
                ({"type": "Service", "title": "postgresql"}, (0, 0, 1, 0)),
            ],
        ),
        (
            "containing_class",
            [
                ({"title": "Main"}, (0, 0, 0, 1)),
                ({"title": "Nginx"}, (1, 2, 0, 0)),
                ({"title": "Postgresql::Server"}, (0, 0, 1, 0)),
            ],
        ),
    ],
)
def test_event_counts_sum_each_subjects_events_by_status(
    fleet: InventoryStore, summarize_by: str, subjects: list[tuple[dict[str, Any], tuple[int, ...]]]
) -> None:
    rows, total = event_counts(fleet, None, summarize_by=summarize_by, include_total=True)
    assert rows == [
        {
            "subject_type": summarize_by,
            "subject": subject,
            **dict(zip(("failures", "successes", "noops", "skips"), counts, strict=True)),
        }
        for subject, counts in subjects
    ]
    assert total == len(subjects)


def test_event_counts_take_the_events_query_a_count_by_and_a_filter(fleet: InventoryStore) -> None:
    latest = ["=", "latest_report?", True]
    rows, _ = event_counts(fleet, latest, summarize_by="certname")
    assert [(r["subject"]["title"], r["successes"]) for r in rows] == [
        ("db1.example.com", 0),
        ("web1.example.com", 1),
    ]
    by_node, _ = event_counts(fleet, None, summarize_by="containing_class", count_by="certname")
    assert [(r["subject"]["title"], r["successes"]) for r in by_node] == [
        ("Main", 0),
        ("Nginx", 1),  # web1's two successes: one node
        ("Postgresql::Server", 0),
    ]
    failing, _ = event_counts(
        fleet, None, summarize_by="resource", counts_filter=["and", [">", "failures", 0]]
    )
    assert [r["subject"] for r in failing] == [{"type": "Service", "title": "nginx"}]
    paged, _ = event_counts(
        fleet,
        None,
        summarize_by="resource",
        order_by=[{"field": "successes", "order": "desc"}],
        limit=1,
    )
    assert [r["subject"]["title"] for r in paged] == ["/etc/nginx/nginx.conf"]
    everyone, _ = event_counts(fleet, ["=", "node_state", "any"], summarize_by="certname")
    assert runs.DEACTIVATED in {r["subject"]["title"] for r in everyone}


def test_aggregate_event_counts_count_the_subjects_with_each_status(fleet: InventoryStore) -> None:
    rows = aggregate_event_counts(fleet, None, summarize_by="certname,resource")
    assert rows == [
        {
            "summarize_by": "certname",
            "failures": 1,
            "successes": 1,
            "noops": 1,
            "skips": 1,
            "total": 2,
        },
        {
            "summarize_by": "resource",
            "failures": 1,
            "successes": 1,
            "noops": 1,
            "skips": 1,
            "total": 4,
        },
    ]
    none = aggregate_event_counts(fleet, ["=", "certname", "nobody"], summarize_by="resource")
    assert none == [
        {
            "summarize_by": "resource",
            "failures": 0,
            "successes": 0,
            "noops": 0,
            "skips": 0,
            "total": 0,
        }
    ]


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"summarize_by": "colour"}, "summarize_by is certname, resource or containing_class"),
        ({"summarize_by": "certname", "count_by": "node"}, "count_by is resource or certname"),
        ({"summarize_by": "certname", "counts_filter": [">", "total", 1]}, "not 'total'"),
        ({"summarize_by": "certname", "counts_filter": [">", "failures", "x"]}, "with a number"),
        (
            {"summarize_by": "certname", "counts_filter": ["~", "failures", 1]},
            "counts_filter takes",
        ),
        ({"summarize_by": "certname", "order_by": [["status", "asc"]]}, "Unrecognized column"),
        ({"summarize_by": "certname", "query": ["extract", ["certname"]]}, "not an extract"),
        ({"summarize_by": "certname", "query": ["=", "colour", "red"]}, "not a queryable object"),
    ],
)
def test_bad_event_counts_are_400s_that_say_what_is_valid(
    fleet: InventoryStore, arguments: dict[str, Any], words: str
) -> None:
    options = dict(arguments)
    query = options.pop("query", None)
    with pytest.raises(QueryError) as caught:
        event_counts(fleet, query, **options)
    assert words in caught.value.msg
