"""``podium activity`` against a real server in-process (see test_access_cli.py): the
logins and changes the other commands make, by whom and from where."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_access_cli import CLIENT_ADDRESS, Podium, Server, login, runner, serving

from podium.cli import activity as cli_activity

HEADERS = ["TIME", "USER", "ADDRESS", "SERVICE", "TYPE", "OBJECT", "MESSAGE"]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with serving(tmp_path, monkeypatch) as server:
        yield server


@pytest.fixture
def podium(
    server: Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Podium:
    return runner(monkeypatch, capsys)


def table(text: str) -> list[dict[str, str]]:
    """The rows of ``podium activity``'s table, by column (cut where the header's are)."""
    lines = text.splitlines()
    header = lines[0]
    starts = [header.index(h) for h in HEADERS]
    rows = []
    for line in lines[1:]:
        if not line.startswith("20"):
            break  # the footer
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows.append(dict(zip(HEADERS, cells, strict=True)))
    return rows


@pytest.fixture
def story(server: Server, podium: Podium) -> Podium:
    """The admin logs in, makes erin, who logs in (once with a wrong password), and
    gives erin's role a permission; ``podium`` is left logged in as the admin."""
    login(podium)
    assert podium("role", "create", "Auditors").code == 0
    assert podium("user", "create", "erin", "--role", "Auditors").code == 0
    assert podium("user", "password", "erin", "--password-stdin", stdin="erin's secret\n").code == 0
    admin = server.token_file.read_text()
    assert podium("access", "login", "--user", "erin", "--password-stdin", stdin="nope\n").code == 1
    login(podium, "erin", "erin's secret")
    server.token_file.write_text(admin)
    assert podium("role", "grant", "Auditors", "activity:view").code == 0
    return podium


def test_activity_shows_the_logins_and_the_role_change_with_who_did_them(story: Podium):
    done = story("activity")
    assert done.code == 0, done.err
    assert done.out.splitlines()[0].split() == HEADERS
    rows = table(done.out)
    said = [(r["USER"], r["TYPE"], r["OBJECT"]) for r in rows]
    assert said[:6] == [  # newest first
        ("admin", "update", "roles Auditors"),
        ("erin", "login", "users erin"),
        ("erin", "login_failed", "users erin"),
        ("admin", "update", "users erin"),
        ("admin", "create", "users erin"),
        ("admin", "create", "roles Auditors"),
    ]
    assert said[6] == ("admin", "login", "users admin")
    assert rows[0]["MESSAGE"] == "changed role Auditors: permissions activity:view:*"
    assert rows[2]["MESSAGE"] == "failed to log in: wrong login or password"
    assert {r["ADDRESS"] for r in rows[:7]} == {CLIENT_ADDRESS}
    assert {r["SERVICE"] for r in rows} == {"rbac"}
    stamp = datetime.strptime(rows[0]["TIME"], "%Y-%m-%d %H:%M:%S").astimezone()
    assert abs(datetime.now(UTC) - stamp) < timedelta(hours=1)


def test_activity_filters_by_user_type_and_object(story: Podium):
    erin = table(story("activity", "--user", "erin").out)
    assert [(r["USER"], r["TYPE"]) for r in erin] == [("erin", "login"), ("erin", "login_failed")]
    roles = table(story("activity", "--object-type", "roles", "--type", "update").out)
    assert [r["MESSAGE"] for r in roles] == ["changed role Auditors: permissions activity:view:*"]
    user = json.loads(story("user", "show", "erin", "--format", "json").out)
    about = table(story("activity", "--object", user["id"], "--service", "rbac").out)
    assert [r["TYPE"] for r in about] == ["login", "login_failed", "update", "create"]


def test_a_user_given_activity_view_reads_the_log(server: Server, story: Podium):
    login(story, "erin", "erin's secret")
    done = story("activity", "--limit", "1")
    assert done.code == 0, done.err
    assert len(table(done.out)) == 1
    assert done.out.splitlines()[-1].startswith("1-1 of ")
    assert done.out.splitlines()[-1].endswith(", newest first; --offset 1 for more.")


def test_activity_as_json_is_the_servers_answer(server: Server, story: Podium):
    done = story("activity", "--user", "erin", "--limit", "5", "--format", "json")
    with server.http(server.admin_token()) as http:
        direct = http.get(
            "/activity-api/v1/events", params={"login": "erin", "limit": 5, "offset": 0}
        ).json()
    assert json.loads(done.out) == direct
    assert direct["total-rows"] == 2


def test_since_takes_a_time_or_a_duration_ago(story: Podium):
    recent = table(story("activity", "--since", "1h").out)
    assert len(recent) >= 7
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert story("activity", "--since", future).out == "No activity matches.\n"
    local = (datetime.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert table(story("activity", "--since", local).out) == recent
    refused = story("activity", "--since", "yesterday")
    assert refused.code == 1
    assert refused.err.startswith("podium activity: --since 'yesterday' is neither a time ")


def test_query_parameters_are_the_apis_names():
    args = argparse.Namespace(
        user="erin", service="ca", type="sign", object_type="certificates", object="web01",
        since=datetime(2026, 5, 9, 10, 0, tzinfo=UTC), limit=10, offset=20,
    )  # fmt: skip
    assert cli_activity.query(args) == {
        "limit": 10,
        "offset": 20,
        "login": "erin",
        "service_id": "ca",
        "type": "sign",
        "object_type": "certificates",
        "object_id": "web01",
        "after": "2026-05-09T10:00:00+00:00",
    }


def test_a_limit_out_of_range_is_refused(podium: Podium):
    done = podium("activity", "--limit", "0")
    assert done.err == "podium activity: --limit: must be a whole number from 1 to 1000, not '0'\n"
