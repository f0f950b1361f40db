"""Reports and catalogs from PuppetDB's wire formats: what a payload becomes, the errors
that name the field at fault, and (hypothesis) that nothing but ValidationError ever
comes out of the parsers, whatever they are given."""

from __future__ import annotations

import contextlib
import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory import runs
from podium.errors import ValidationError
from podium.inventory.reports import (
    MAX_TYPE_TITLE_BYTES,
    containing_class,
    parse_catalog,
    parse_report,
)


def sample_report() -> dict[str, Any]:
    """web1's failed run: a change, a failure and a skipped resource."""
    return copy.deepcopy(runs.reports()[1])


def sample_catalog() -> dict[str, Any]:
    return copy.deepcopy(runs.catalogs()[0])


WIRE = Path(__file__).parent / "cases" / "wire"


# Reports


def test_what_puppets_puppetdb_terminus_sends_parses() -> None:
    """Payloads made by Puppet 7.23's PuppetDB terminus code from a real ``puppet apply``
    (a file created, an exec failed, a notify) and a real compiled catalog."""
    report = parse_report(json.loads((WIRE / "report_v8_puppet7.json").read_text()))
    assert (report.certname, report.status, report.puppet_version) == (
        "agent.example.com",
        "failed",
        "7.23.0",
    )
    assert [(e.resource_type, e.status, e.old_value, e.new_value) for e in report.events] == [
        ("File", "success", "absent", "file"),
        ("Exec", "failure", "notrun", '["0"]'),
        ("Notify", "success", "absent", "hello"),
    ]
    assert {m.category for m in report.metrics} >= {"resources", "time", "changes", "events"}
    catalog = parse_catalog(json.loads((WIRE / "catalog_v9_puppet7.json").read_text()))
    assert ("Service", "nginx") in {(r.type, r.title) for r in catalog.resources}
    assert any(e.relationship == "required-by" for e in catalog.edges)


def test_a_report_becomes_its_fields_and_a_flat_list_of_events() -> None:
    report = parse_report(sample_report())
    assert (report.certname, report.status, report.environment) == (
        "web1.example.com",
        "failed",
        "production",
    )
    assert report.start_time == datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert report.producer_timestamp == datetime(2026, 3, 1, 13, 1, 30, tzinfo=UTC)
    assert (report.type, report.job_id, report.noop) == ("agent", "7", False)
    assert [(e.resource_type, e.status, e.property) for e in report.events] == [
        ("File", "success", "mode"),
        ("Service", "failure", "ensure"),
        ("Exec", "skipped", None),  # a skipped resource is one skipped event
    ]
    failure = report.events[1]
    assert (failure.old_value, failure.new_value) == ("stopped", "running")
    assert failure.containment_path == ("Stage[main]", "Nginx", "Service[nginx]")
    assert failure.containing_class == "Nginx"
    assert [(m.category, m.name, m.value) for m in report.metrics] == [
        ("resources", "total", 3),
        ("time", "total", 1.25),
    ]
    assert report.logs[0].level == "notice"


def test_unchanged_resources_have_no_events() -> None:
    payload = sample_report()
    payload["resources"].append(runs.resource_status("File", "/tmp/quiet"))
    assert len(parse_report(payload).events) == 3


def test_the_same_report_has_the_same_hash_and_another_another() -> None:
    one, again = parse_report(sample_report()), parse_report(sample_report())
    assert one.hash == again.hash and len(one.hash) == 40
    changed = sample_report()
    changed["resources"][1]["events"][0]["message"] = "another message"
    assert parse_report(changed).hash != one.hash


def test_times_of_any_zone_and_precision_become_utc_milliseconds() -> None:
    payload = sample_report()
    payload["start_time"] = "2015-02-26T16:27:48.416642999-08:00"  # as Ruby writes them
    payload["end_time"] = "2015-02-27T00:27:49Z"
    payload["producer_timestamp"] = "2015-02-27 00:27:50"  # no zone: UTC
    report = parse_report(payload)
    assert report.start_time == datetime(2015, 2, 27, 0, 27, 48, 416000, tzinfo=UTC)
    assert report.end_time == datetime(2015, 2, 27, 0, 27, 49, tzinfo=UTC)
    assert report.producer_timestamp == datetime(2015, 2, 27, 0, 27, 50, tzinfo=UTC)


def test_text_the_database_cannot_hold_is_replaced_and_other_values_become_json() -> None:
    payload = sample_report()
    event = payload["resources"][1]["events"][0]
    event["message"] = "bad\x00byte and a lone \ud800 surrogate"
    event["old_value"] = ["a", 1]
    event["new_value"] = {"b": True}
    parsed = parse_report(payload).events[1]
    assert parsed.message == "bad\ufffdbyte and a lone \ufffd surrogate"
    assert (parsed.old_value, parsed.new_value) == ('["a",1]', '{"b":true}')


def test_older_wire_formats_give_the_same_report() -> None:
    v8 = parse_report(sample_report())
    v7 = sample_report()
    for key in ("producer", "noop_pending", "corrective_change", "job_id"):
        del v7[key]
    for resource in v7["resources"]:
        resource.pop("corrective_change")
        for event in resource["events"]:
            event.pop("corrective_change")
            event.pop("name")
    parsed = parse_report(v7, version=7)
    assert [(e.resource_title, e.status) for e in parsed.events] == [
        (e.resource_title, e.status) for e in v8.events
    ]
    assert parsed.job_id is None and parsed.producer is None
    v6 = copy.deepcopy(v7)
    for key in ("catalog_uuid", "code_id", "cached_catalog_status"):
        del v6[key]
    assert parse_report(v6, version=6).catalog_uuid == v8.transaction_uuid
    v5 = copy.deepcopy(v6)
    v5["resource_events"] = [
        {**{k: v for k, v in r.items() if k not in ("events", "skipped")}, **e}
        for r in v5.pop("resources")
        for e in r["events"]
    ]
    flat = parse_report(v5, version=5)
    assert [(e.resource_title, e.status) for e in flat.events] == [
        ("/etc/nginx/nginx.conf", "success"),
        ("nginx", "failure"),
    ]


def test_a_plans_report_says_so_and_an_agents_is_the_default() -> None:
    assert parse_report(runs.report_payload("a.example.com", kind="plan")).type == "plan"
    assert parse_report(runs.report_payload("a.example.com")).type == "agent"


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("certname",), None, "certname is missing"),
        (("certname",), "Not A Certname!", "invalid certname"),
        (("environment",), None, "environment is missing"),
        (("report_format",), "12", "report_format is an integer, not '12'"),
        (("report_format",), True, "report_format is an integer"),
        (("start_time",), "soon", "start_time is a time in ISO-8601"),
        (("producer_timestamp",), 1700000000, "producer_timestamp is a time"),
        (("noop",), "false", "noop is true or false"),
        (("type",), "cron", "type is agent or plan"),
        (("resources",), {}, "resources is an array"),
        (("resources",), None, "resources is missing"),
        (("resources", 0), "File[/tmp]", "a resource (resources[0]) is a JSON object"),
        (("resources", 0, "resource_type"), "", "resources[0].resource_type is empty"),
        (("resources", 1, "events", 0, "timestamp"), "x", "resources[1].events[0].timestamp"),
        (("resources", 1, "line"), 2**40, "resources[1].line is out of range"),
        (("resources", 1, "containment_path"), "Main", "resources[1].containment_path is an array"),
        (("resources", 1, "events", 0, "old_value"), {"k": float("nan")}, "not finite"),
        (("metrics", 0, "value"), "3", "metrics[0].value is a number"),
        (("logs", 0, "tags"), "notice", "logs[0].tags is an array"),
        (("logs", 0, "time"), "yesterday", "logs[0].time is a time"),
        (("status",), "x" * 300, "status is longer than 255 characters"),
    ],
)
def test_a_bad_report_is_an_error_that_names_the_field(
    path: tuple[Any, ...], value: Any, words: str
) -> None:
    payload = sample_report()
    parent: Any = payload
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    with pytest.raises(ValidationError) as caught:
        parse_report(payload)
    assert words in caught.value.msg
    assert caught.value.status == 400


def test_unsupported_versions_and_non_objects_are_refused() -> None:
    with pytest.raises(ValidationError, match="version 9 is not supported"):
        parse_report(sample_report(), version=9)
    with pytest.raises(ValidationError, match="the report is a JSON object, not an array"):
        parse_report([])
    with pytest.raises(ValidationError, match="version 7 is not supported"):
        parse_catalog(sample_catalog(), version=7)


def test_the_containing_class_is_the_innermost_class() -> None:
    assert containing_class(["Stage[main]", "Apache::Mod", "Apache::Vhost[x]", "File[/a]"]) == (
        "Apache::Mod"
    )
    assert containing_class(["Stage[main]", "", "Node[default]", "Notify[x]"]) is None
    assert containing_class(None) is None


# Catalogs


def test_a_catalog_becomes_sorted_resources_and_checked_edges() -> None:
    catalog = parse_catalog(sample_catalog())
    assert catalog.certname == "web1.example.com" and catalog.version == "1700000059"
    assert [(r.type, r.title) for r in catalog.resources] == sorted(
        (r.type, r.title) for r in catalog.resources
    )
    service = next(r for r in catalog.resources if r.type == "Service")
    assert service.parameters == {"ensure": "running", "enable": True, "restarts": 3}
    assert service.tags == ("nginx", "service")
    assert len(service.resource) == 40
    assert {e.relationship for e in catalog.edges} == {"contains", "before", "notifies"}


def test_a_catalogs_hash_is_that_of_its_resources_and_edges() -> None:
    one = parse_catalog(sample_catalog())
    shuffled = sample_catalog()
    shuffled["resources"].reverse()
    shuffled["edges"].append(shuffled["edges"][0])  # the same edge twice is one edge
    shuffled["producer_timestamp"] = runs.at(500)
    again = parse_catalog(shuffled)
    assert again.hash == one.hash and len(again.edges) == len(one.edges)
    changed = sample_catalog()
    changed["resources"][-1]["parameters"]["ensure"] = "stopped"
    assert parse_catalog(changed).hash != one.hash


def test_tags_are_kept_in_lower_case() -> None:
    payload = sample_catalog()
    payload["resources"][2]["tags"] = ["Apache", "CLASS"]
    catalog = parse_catalog(payload)
    assert next(r for r in catalog.resources if r.title == "Apache").tags == ("apache", "class")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            lambda c: c["edges"].append(runs.edge(("Class", "Main"), ("File", "/x"), "before")),
            "edges[4].target names File[/x], which is not a resource of the catalog",
        ),
        (lambda c: c["edges"][0].update(relationship="likes"), "edges[0].relationship is one of"),
        (lambda c: c["resources"].append(c["resources"][0]), "repeats Stage[main]"),
        (
            lambda c: c["resources"][0].update(parameters=[]),
            "resources[0].parameters is a JSON object",
        ),
        (lambda c: c["resources"][0].update(title="x" * MAX_TYPE_TITLE_BYTES), "too long"),
        (
            lambda c: c["resources"][0]["parameters"].update(deep=_nested(70)),
            "nests deeper than 64",
        ),
        (lambda c: c["resources"][0]["parameters"].update(big=2**70), "out of range"),
        (lambda c: c.update(version=1), "version is a string"),
        (lambda c: c.pop("producer_timestamp"), "producer_timestamp is missing"),
        (lambda c: c.update(edges=None), "edges is missing"),
    ],
)
def test_a_bad_catalog_is_an_error_that_names_the_field(change: Any, words: str) -> None:
    payload = sample_catalog()
    change(payload)
    with pytest.raises(ValidationError) as caught:
        parse_catalog(payload)
    assert words in caught.value.msg


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


# Properties: untrusted payloads never make the parsers fail otherwise

_text = st.text(max_size=12)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=12,
)
# What a payload handed over in Python (not from JSON) could hold as well.
_anything = _json | st.sets(st.integers(), max_size=2) | st.binary(max_size=4) | st.just(object())


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document: keys of objects, indexes of arrays."""
    out = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _places(item, (*path, index))
    return out


def _mutated(document: Any, data: st.DataObject) -> Any:
    document = copy.deepcopy(document)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="changes")):
        path = data.draw(st.sampled_from(_places(document)), label="where")
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and data.draw(st.booleans(), label="delete"):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(_anything, label="value")
    return document


@given(payload=_anything, version=st.integers(min_value=4, max_value=9))
def test_parsing_anything_as_a_report_or_catalog_raises_nothing_but_validation_errors(
    payload: Any, version: int
) -> None:
    for parse in (parse_report, parse_catalog):
        with contextlib.suppress(ValidationError):
            parse(payload, version=version)


@given(data=st.data())
def test_a_changed_report_parses_or_raises_a_validation_error(data: st.DataObject) -> None:
    payload = _mutated(sample_report(), data)
    try:
        report = parse_report(payload)
    except ValidationError as error:
        assert error.msg and ("field" in error.details or "certname" in error.details)
    else:
        assert len(report.hash) == 40


@given(data=st.data())
def test_a_changed_catalog_parses_or_raises_a_validation_error(data: st.DataObject) -> None:
    payload = _mutated(sample_catalog(), data)
    try:
        catalog = parse_catalog(payload)
    except ValidationError as error:
        assert error.msg
    else:
        assert len(catalog.hash) == 40


@given(
    message=st.text(max_size=40),
    title=st.text(min_size=1, max_size=40),
    value=_json,
    status=st.sampled_from(["success", "failure", "noop"]),
)
def test_any_text_and_values_a_run_reports_are_kept(
    message: str, title: str, value: Any, status: str
) -> None:
    payload = runs.report_payload(
        "a.example.com",
        resources=[
            runs.resource_status("File", title, [runs.event("content", value, "x", status)])
        ],
    )
    payload["resources"][0]["events"][0]["message"] = message
    try:
        report = parse_report(payload)
    except ValidationError as error:  # only a value JSON cannot hold
        assert "finite" in error.msg or "out of range" in error.msg
        return
    (event,) = report.events
    assert event.status == status
    assert event.message == re.sub("[\ud800-\udfff\x00]", "\ufffd", message)
    assert event.resource_title == re.sub("[\ud800-\udfff\x00]", "\ufffd", title)
