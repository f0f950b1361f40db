"""Puppet's report and run summary read as plain data: results, the PuppetDB payload."""

from __future__ import annotations

import contextlib
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


# Puppet before 6 wrote every object of its report with a Ruby tag, symbols as
# !ruby/sym, and times as YAML timestamps: they read as plain data all the same.
TAGGED = """\
--- !ruby/object:Puppet::Transaction::Report
host: old.example
time: 2019-03-04 05:06:07.891234 +01:00
configuration_version: 1551675967
transaction_uuid: 0b9a3d4e-1111-2222-3333-444455556666
report_format: 10
puppet_version: 5.5.10
status: changed
noop: false
noop_pending: false
environment: production
logs:
- !ruby/object:Puppet::Util::Log
  level: !ruby/sym notice
  message: defined content as '{md5}abc'
  source: /Stage[main]/Main/File[/etc/motd]/content
  tags: !ruby/array:Puppet::Util::TagSet
  - notice
  - file
  time: 2019-03-04 05:06:08.000000 +01:00
  file: /etc/puppetlabs/code/environments/production/manifests/site.pp
  line: 1
metrics:
  resources: !ruby/object:Puppet::Util::Metric
    name: resources
    label: Resources
    values:
    - - total
      - Total
      - 8
    - - changed
      - Changed
      - 1
  time: !ruby/object:Puppet::Util::Metric
    name: time
    label: Time
    values:
    - - total
      - Total
      - 1.5
resource_statuses:
  File[/etc/motd]: !ruby/object:Puppet::Resource::Status
    title: /etc/motd
    resource: File[/etc/motd]
    resource_type: File
    file: /etc/puppetlabs/code/environments/production/manifests/site.pp
    line: 1
    containment_path:
    - Stage[main]
    - Main
    - File[/etc/motd]
    time: 2019-03-04 05:06:07.950000 +01:00
    failed: false
    changed: true
    skipped: false
    events:
    - !ruby/object:Puppet::Transaction::Event
      property: content
      previous_value: !ruby/sym absent
      desired_value: "{md5}abc"
      message: defined content as '{md5}abc'
      name: !ruby/sym content_changed
      status: success
      time: 2019-03-04 05:06:07.960000 +01:00
      corrective_change: false
"""


def test_ruby_tags_and_yaml_times_read_as_plain_data():
    results = run_results(parse_report(TAGGED), mode="agent", exit_code=2, now=NOW)
    assert results["start_time"] == "2019-03-04T04:06:07.891Z"
    assert results["end_time"] == "2019-03-04T04:06:09.391Z"
    assert (results["metrics"]["total"], results["metrics"]["changed"]) == (8, 1)
    assert results["events"] == [
        {
            "resource_type": "File",
            "resource_title": "/etc/motd",
            "property": "content",
            "old_value": "absent",
            "new_value": "{md5}abc",
            "status": "success",
            "message": "defined content as '{md5}abc'",
            "corrective_change": False,
            "file": "/etc/puppetlabs/code/environments/production/manifests/site.pp",
            "line": 1,
            "timestamp": "2019-03-04T04:06:07.960Z",
        }
    ]
    (log,) = results["logs"]
    assert (log["level"], log["tags"], log["time"]) == (
        "notice",
        ["notice", "file"],
        "2019-03-04T04:06:08.000Z",
    )
    assert results["report"]["resources"][0]["events"][0]["name"] == "content_changed"
    orjson.dumps(results)


@pytest.mark.parametrize(
    "time",
    ["'0001-01-01T00:00:00+01:00'", "9999-12-31 23:59:59 -01:00", "'9999-12-31T23:59:59Z'"],
)
def test_times_at_the_ends_of_the_calendar_are_read_or_refused(time: str) -> None:
    text = (
        f"host: n\nstatus: changed\ntime: {time}\n"
        "metrics: {time: {values: [[total, Total, 100]]},"
        " resources: {values: [[total, T, .inf]]}}\n"
        "resource_statuses: {a: {time: '0001-01-01T00:00:00+05:00', line: 99999999999999999999}}\n"
    )
    try:
        report = parse_report(text)
    except ValidationError as exc:
        assert "not a time" in exc.msg
        return
    results = run_results(report, mode="apply", exit_code=2, now=NOW)
    assert results["metrics"]["total"] == 0
    orjson.dumps(results)


ruby_tags = st.sampled_from(
    [
        "",
        "!ruby/sym ",
        "!ruby/object:Puppet::Util::Log ",
        "!ruby/object:Puppet::Transaction::Event ",
        "!ruby/hash:Puppet::Util::Metric ",
        "!ruby/array:Puppet::Util::TagSet ",
        "!!binary ",
        "!unknown ",
    ]
)


@st.composite
def tagged_yaml(draw: st.DrawFn, depth: int = 0) -> str:
    """A YAML flow value, any node of it tagged as Puppet's reports are."""
    tag = draw(ruby_tags)
    kind = draw(st.sampled_from(["scalar", "list", "map"] if depth < 3 else ["scalar"]))
    if kind == "scalar":
        value = draw(
            st.sampled_from(["x", "12", "1.5", ".nan", "-.inf", "~", "2024-01-01 00:00:00 +05:00"])
            | st.text(alphabet="ab:- ", max_size=6)
        )
        return f"{tag}{json.dumps(value) if draw(st.booleans()) else value}"
    items = draw(st.lists(tagged_yaml(depth + 1), max_size=3))
    if kind == "list":
        return f"{tag}[{', '.join(items)}]"
    keys = ["host", "status", "time", "logs", "metrics", "resource_statuses", "events", "line"]
    pairs = [f"{draw(st.sampled_from(keys))}: {item}" for item in items]
    return f"{tag}{{{', '.join(pairs)}}}"


@settings(suppress_health_check=list(HealthCheck), deadline=None, max_examples=300)
@given(tagged_yaml())
def test_tagged_yaml_is_read_or_refused_with_a_validation_error(text: str) -> None:
    for document in (text, f"{{host: n, status: failed, time: '2024-01-01', logs: [{text}]}}"):
        try:
            report = parse_report(document)
        except ValidationError:
            continue
        orjson.dumps(run_results(report, mode="apply", exit_code=4, now=NOW))
        failure_message(report)
    with contextlib.suppress(ValidationError):
        parse_summary(text, NOW)


@settings(suppress_health_check=list(HealthCheck), deadline=None, max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_are_read_or_refused_with_a_validation_error(data: bytes) -> None:
    for parse in (parse_report, lambda d: parse_summary(d, NOW)):
        with contextlib.suppress(ValidationError):
            parse(data)
