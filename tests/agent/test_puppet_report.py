"""Puppet's report and run summary read as plain data: results, the PuppetDB payload."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.agent.puppet.report import (
    failure_message,
    fit,
    parse_report,
    parse_summary,
    run_results,
)
from podium.errors import ValidationError

REPORTS = Path(__file__).parent / "puppet_reports"
NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)


def load(name: str) -> dict:
    return parse_report((REPORTS / f"{name}.yaml").read_bytes())


def test_a_changed_run_gives_its_status_metrics_and_events():
    results = run_results(load("changed"), mode="apply", exit_code=2, now=NOW)
    assert results["status"] == "changed"
    assert results["metrics"] == {
        "total": 10,
        "changed": 3,
        "failed": 0,
        "skipped": 0,
        "out_of_sync": 3,
        "noop": 0,
        "corrective_change": 0,
        "restarted": 0,
        "failed_to_restart": 0,
        "scheduled": 0,
    }
    file_event = next(e for e in results["events"] if e["resource_type"] == "File")
    assert file_event == {
        "resource_type": "File",
        "resource_title": "/tmp/site/out/a",
        "property": "ensure",
        "old_value": "absent",
        "new_value": "file",
        "status": "success",
        "message": file_event["message"],
        "corrective_change": False,
        "file": "/tmp/site/env/production/manifests/site.pp",
        "line": 2,
        "timestamp": "2026-12-02T13:58:36.422Z",
    }
    assert results["start_time"] == "2026-12-02T13:58:36.420Z"
    assert results["puppet_version"] == "7.23.0"
    assert results["configuration_version"] == "1796219916"
    assert (results["mode"], results["exit_code"], results["noop"]) == ("apply", 2, False)
    assert failure_message(load("changed")) is None


def test_the_report_is_in_puppetdbs_store_report_v8_format():
    wire = run_results(load("changed"), mode="apply", exit_code=2, now=NOW)["report"]
    assert set(wire) == {
        "certname", "environment", "puppet_version", "report_format", "configuration_version",
        "start_time", "end_time", "producer_timestamp", "producer", "corrective_change", "noop",
        "noop_pending", "status", "transaction_uuid", "catalog_uuid", "code_id", "job_id",
        "cached_catalog_status", "type", "logs", "metrics", "resources",
    }  # fmt: skip
    assert wire["certname"] == "n1.example"
    assert wire["producer_timestamp"] == "2026-12-02T14:00:00.000Z"
    assert {"category": "resources", "name": "total", "value": 10} in wire["metrics"]
    # Only resources that had events (or were skipped) are sent, as PuppetDB's terminus does.
    assert sorted(r["resource_title"] for r in wire["resources"]) == [
        "/tmp/site/out/a",
        "foo fromenc",
        "node block hello",
    ]
    log = wire["logs"][0]
    assert set(log) == {"level", "message", "source", "tags", "time", "file", "line"}
    orjson.dumps(wire)


def test_a_failed_run_names_the_failed_resource_and_why():
    report = load("failed")
    results = run_results(report, mode="apply", exit_code=6, now=NOW)
    assert results["status"] == "failed"
    assert (results["metrics"]["failed"], results["metrics"]["skipped"]) == (1, 1)
    assert failure_message(report) == (
        "1 resource failed: Exec[boom]: 'false' returned 1 instead of one of [0]"
    )


def test_a_noop_run_counts_its_pending_events():
    results = run_results(load("noop"), mode="apply", exit_code=0, now=NOW)
    assert (results["status"], results["noop"], results["noop_pending"]) == (
        "unchanged",
        True,
        True,
    )
    assert results["metrics"]["noop"] == 4
    assert {e["status"] for e in results["events"]} == {"noop"}


def test_results_too_big_for_a_message_are_cut_logs_first():
    results = run_results(load("failed"), mode="apply", exit_code=6, now=NOW)
    size = len(orjson.dumps(results)) + 4096
    fitted = fit(results, size - 100)
    assert fitted["truncated"] is True
    assert len(orjson.dumps(fitted)) + 4096 <= size - 100
    assert fitted["metrics"] == results["metrics"]
    assert fitted["events"] == results["events"]  # the logs were enough
    assert fit(results, size) is results
    tiny = fit(results, 4096 + 3000)
    assert tiny["events"] == [] and tiny["report"]["resources"] == []


def test_the_run_summary_gives_the_last_run():
    text = (REPORTS / "last_run_summary.yaml").read_bytes()
    last_run, since = parse_summary(text, NOW)
    assert last_run["time"] == "2026-12-02T13:58:56.000Z"
    assert last_run["status"] == "unchanged"
    assert last_run["config_version"] == "1796219936"
    assert last_run["resources"]["total"] == 12
    assert since == pytest.approx(64.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "not a mapping"),
        ("host: n\n", "has no status"),
        ("host: n\nstatus: great\ntime: '2024-01-01T00:00:00Z'\n", "unknown status"),
        ("host: n\nstatus: changed\ntime: soon\n", "not a time"),
        ("host: n\nstatus: changed\ntime: '2024-01-01'\nlogs: 3\n", "logs is not a list"),
        ("{[a]: b}", "not YAML"),
        ("key: [unclosed", "not YAML"),
    ],
)
def test_text_puppet_did_not_write_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_report(text)


@settings(suppress_health_check=list(HealthCheck), deadline=None, max_examples=200)
@given(st.text(max_size=300))
def test_any_text_is_read_or_refused_with_a_validation_error(text: str) -> None:
    try:
        report = parse_report(text)
    except ValidationError:
        return
    orjson.dumps(run_results(report, mode="apply", exit_code=0, now=NOW))


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(suppress_health_check=list(HealthCheck), deadline=None, max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from(["logs", "metrics", "resource_statuses", "noop", "host"]), yaml_values
    )
)
def test_a_report_with_odd_fields_gives_results_or_a_validation_error(fields: dict) -> None:
    text = json.dumps({"host": "n", "status": "changed", "time": "2024-01-01T00:00:00Z", **fields})
    try:
        report = parse_report(text)
    except ValidationError:
        return
    orjson.dumps(run_results(report, mode="apply", exit_code=2, now=NOW))
    failure_message(report)
