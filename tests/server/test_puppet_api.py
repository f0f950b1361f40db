"""``/command/puppet_status|enable|disable|resource``: what the nodes answer, grouped so
that a node that differs stands out; who may change what, and the activity log. The
nodes' answers come from a stand-in for the job service's ``ask`` (one test goes through
the broker to an agent that answers over PXP)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from podium.broker.server import LocalSession
from podium.inventory.store import InventoryStore
from podium.jobs.service import Answer
from podium.protocol import messages as msg
from podium.protocol.envelope import Envelope
from podium.rbac.permissions import NodeScope, Permission
from podium.server.runtime import Runtime
from waiting import until

from .conftest import api_client
from .test_access import bearer, user_with

ADMIN_GROUP_ROOT = "00000000-0000-4000-8000-000000000000"


def idle(status: str | None = "unchanged", **changes: Any) -> dict[str, Any]:
    """A node's puppet/status answer: enabled, not running, its last run ``status``."""
    answer: dict[str, Any] = {
        "enabled": True,
        "disabled_message": None,
        "running": False,
        "last_run": {
            "time": "2026-05-09T07:35:25Z",
            "config_version": "1764669600",
            "resources": {"total": 12, "changed": 0, "failed": 0},
            "events": {"total": 0, "failure": 0, "success": 0},
            "changes": {"total": 0},
            "duration": 3.25,
        },
        "since_last_run": 120.0,
    }
    if status is not None:
        answer["last_run"]["status"] = status
    answer.update(changes)
    return answer


def disabled(message: str | None) -> dict[str, Any]:
    return idle(enabled=False, disabled_message=message)


def motd(**parameters: Any) -> dict[str, Any]:
    params = {"ensure": "file", "content": "{md5}aa", "mode": "0644", **parameters}
    return {"resources": [{"type": "file", "title": "/etc/motd", "parameters": params}]}


class Asked:
    """Stands in for ``JobService.ask``: answers each node from ``answers`` (results, or
    a string: why there is no answer) and records what was asked."""

    def __init__(self, answers: Mapping[str, dict[str, Any] | str]) -> None:
        self.answers = dict(answers)
        self.calls: list[tuple[list[str], str, str, dict[str, Any] | None, float]] = []

    async def __call__(
        self,
        certnames: Sequence[str],
        module: str,
        action: str,
        params: dict[str, Any] | None,
        *,
        wait: float = 5.0,
    ) -> dict[str, Answer]:
        self.calls.append((list(certnames), module, action, params, wait))
        out = {}
        for certname in certnames:
            found = self.answers.get(certname, "not connected to the broker")
            if isinstance(found, str):
                out[certname] = Answer(error=found)
            else:
                out[certname] = Answer(results=found, seconds=0.02)
        return out


def answering(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, answers: Mapping[str, Any]
) -> Asked:
    asked = Asked(answers)
    monkeypatch.setattr(runtime.jobs, "ask", asked)
    return asked


def nodes(*names: str) -> dict[str, Any]:
    return {"nodes": list(names)}


# -- puppet_status ----------------------------------------------------------------------


async def test_status_groups_the_nodes_by_state_and_lists_those_that_did_not_answer(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = answering(
        runtime,
        monkeypatch,
        {
            "web-1": disabled("maintenance window"),
            "web-2": disabled("maintenance window"),
            "web-3": idle("changed"),
            "web-4": idle(running=True),
            "web-5": idle("changed"),
            "web-6": idle(last_run=None, since_last_run=None),
            "web-7": "no answer within 10 s",
        },
    )
    names = [f"web-{i}" for i in range(1, 8)]
    response = await api.post("/command/puppet_status", json={"scope": nodes(*names)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert asked.calls == [(names, "puppet", "status", {}, 10.0)]
    assert body["groups"] == [
        {"state": "disabled", "message": "maintenance window", "nodes": ["web-1", "web-2"]},
        {"state": "running", "nodes": ["web-4"]},
        {"state": "idle", "last_run": "changed", "nodes": ["web-3", "web-5"]},
        {"state": "idle", "last_run": None, "nodes": ["web-6"]},
    ]
    assert body["unanswered"] == [{"reason": "no answer within 10 s", "nodes": ["web-7"]}]
    items = {i["name"]: i for i in body["items"]}
    assert items["web-1"]["status"]["disabled_message"] == "maintenance window"
    assert items["web-3"]["status"]["last_run"]["resources"]["total"] == 12
    assert items["web-7"]["error"] == "no answer within 10 s"
    assert "status" not in items["web-7"]


async def test_a_last_run_without_a_status_is_read_from_its_counts(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = idle(None)
    failed["last_run"]["resources"]["failed"] = 1
    changed = idle(None)
    changed["last_run"]["changes"]["total"] = 3
    answering(runtime, monkeypatch, {"a": failed, "b": changed, "c": idle(None)})
    body = (await api.post("/command/puppet_status", json={"scope": nodes("a", "b", "c")})).json()
    assert [(g["last_run"], g["nodes"]) for g in body["groups"]] == [
        ("failed", ["a"]),
        ("changed", ["b"]),
        ("unchanged", ["c"]),
    ]


async def test_answers_that_are_not_a_status_count_as_unanswered_saying_why(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    answering(
        runtime,
        monkeypatch,
        {
            "broken": {"enabled": "yes", "running": False},
            "failing": {"_error": {"kind": "podium.puppet/not-installed", "msg": "no puppet"}},
            "old": "the agent refused: unknown module puppet",
            "fine": idle(),
        },
    )
    scope = nodes("broken", "failing", "old", "fine")
    body = (await api.post("/command/puppet_status", json={"scope": scope})).json()
    reasons = {u["nodes"][0]: u["reason"] for u in body["unanswered"]}
    assert "enabled must be true or false" in reasons["broken"]
    assert reasons["failing"] == "no puppet"
    assert reasons["old"] == "the agent refused: unknown module puppet"
    assert body["groups"] == [{"state": "idle", "last_run": "unchanged", "nodes": ["fine"]}]


async def test_status_of_a_target_matching_nothing_is_empty(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    answering(runtime, monkeypatch, {})
    query = 'inventory[certname] { facts.os.family = "Plan9" }'
    body = (await api.post("/command/puppet_status", json={"scope": {"query": query}})).json()
    assert (body["items"], body["groups"], body["unanswered"]) == ([], [], [])


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"scope": nodes("a"), "timeout": 0}, "timeout"),
        ({"scope": nodes("a"), "timeout": 121}, "timeout"),
        ({"scope": nodes("a"), "extra": 1}, "extra"),
        ({"scope": {}}, "scope"),
    ],
)
async def test_bad_status_requests_are_refused_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], problem: str
) -> None:
    response = await api.post("/command/puppet_status", json=body)
    assert response.status_code == 400, response.text
    assert problem in response.json()["msg"]


# -- puppet_enable / puppet_disable -----------------------------------------------------


async def test_disable_sends_the_reason_and_answers_the_status_after_it(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = answering(
        runtime,
        monkeypatch,
        {"web-1": disabled("kernel update"), "web-2": disabled("kernel update")},
    )
    response = await api.post(
        "/command/puppet_disable",
        json={"scope": nodes("web-1", "web-2", "web-3"), "message": "kernel update", "timeout": 3},
    )
    assert response.status_code == 200, response.text
    assert asked.calls == [
        (["web-1", "web-2", "web-3"], "puppet", "disable", {"message": "kernel update"}, 3)
    ]
    body = response.json()
    assert body["groups"] == [
        {"state": "disabled", "message": "kernel update", "nodes": ["web-1", "web-2"]}
    ]
    assert body["unanswered"] == [{"reason": "not connected to the broker", "nodes": ["web-3"]}]
    assert "left_out" not in body


async def test_disable_without_a_message_sends_none_and_enable_sends_nothing(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = answering(runtime, monkeypatch, {"a": disabled(None)})
    first = await api.post("/command/puppet_disable", json={"scope": nodes("a")})
    assert first.json()["groups"] == [{"state": "disabled", "message": None, "nodes": ["a"]}]
    asked.answers["a"] = idle()
    second = await api.post("/command/puppet_enable", json={"scope": nodes("a")})
    assert second.json()["groups"][0]["state"] == "idle"
    assert [(c[2], c[3]) for c in asked.calls] == [("disable", {}), ("enable", {})]


async def test_every_node_asked_to_change_is_in_the_activity_log(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    answering(
        runtime,
        monkeypatch,
        {"web-1": disabled("maintenance"), "web-2": idle(), "web-3": "no answer within 10 s"},
    )
    response = await api.post(
        "/command/puppet_disable",
        json={"scope": nodes("web-1", "web-2", "web-3"), "message": "maintenance"},
    )
    assert response.status_code == 200, response.text
    log = await api.get("https://podium.test/activity-api/v1/events", params={"limit": 50})
    entries = {
        c["object"]["id"]: (c["subject"]["name"], c["events"][0]["type"], c["events"][0]["message"])
        for c in log.json()["commits"]
        if c["object"]["type"] == "nodes"
    }
    assert entries == {
        "web-1": ("admin", "puppet_disable", "disabled Puppet on web-1: maintenance"),
        "web-2": (
            "admin",
            "puppet_disable",
            "asked to disable Puppet on web-2; it reports Puppet still enabled",
        ),
        "web-3": (
            "admin",
            "puppet_disable",
            "asked to disable Puppet on web-3; it did not confirm: no answer within 10 s",
        ),
    }


@pytest.mark.parametrize(
    ("message", "problem"),
    [("x" * 1001, "at most 1000"), ("two\nlines", "one line"), ("esc\x1b[2J", "one line")],
)
async def test_a_disable_message_is_one_line_of_at_most_1000_characters(
    runtime: Runtime,
    api: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    message: str,
    problem: str,
) -> None:
    asked = answering(runtime, monkeypatch, {})
    response = await api.post(
        "/command/puppet_disable", json={"scope": nodes("a"), "message": message}
    )
    assert response.status_code == 400, response.text
    assert "message" in response.json()["msg"] and problem in response.json()["msg"]
    assert asked.calls == []


async def test_changing_a_target_that_matches_no_node_is_refused(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = answering(runtime, monkeypatch, {})
    query = 'inventory[certname] { facts.os.family = "Plan9" }'
    response = await api.post("/command/puppet_enable", json={"scope": {"query": query}})
    assert response.status_code == 400
    assert "matches no node" in response.json()["msg"]
    assert asked.calls == []


async def test_enable_and_disable_reach_only_the_nodes_the_caller_may_run_puppet_on(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    InventoryStore.of(runtime.store).record_facts_many(
        [(name, {"os": {"family": "Debian"}}, now) for name in ("web-01", "web-02", "db-01")]
    )
    async with api_client(runtime) as admin:
        created = await admin.post(
            "https://podium.test/classifier-api/v1/groups",
            json={
                "name": "web",
                "parent": ADMIN_GROUP_ROOT,
                "rule": ["~", "name", "^web"],
                "classes": {},
            },
        )
        assert created.status_code == 303, created.text
    group = created.headers["location"].rsplit("/", 1)[1]
    token = user_with(
        runtime,
        "web-operator",
        [
            Permission("puppet_agent", "run", nodes=NodeScope("node_group", group)),
            Permission("orchestrator", "view"),
        ],
    )
    asked = answering(
        runtime, monkeypatch, {n: disabled("db move") for n in ("web-01", "web-02", "db-01")}
    )
    async with api_client(runtime) as client:
        client.headers.update(bearer(token))
        # a node list naming a node outside the group: refused, naming it
        refused = await client.post(
            "/command/puppet_disable", json={"scope": nodes("web-01", "db-01")}
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["details"]["nodes"] == ["db-01"]
        assert "db-01" in refused.json()["msg"] and "disable Puppet" in refused.json()["msg"]
        assert asked.calls == []
        # a query matching more: narrowed to the permitted nodes, saying who was left out
        query = 'inventory[certname] { facts.os.family = "Debian" }'
        partial = await client.post(
            "/command/puppet_disable", json={"scope": {"query": query}, "message": "db move"}
        )
        assert partial.status_code == 200, partial.text
        assert asked.calls[-1][0] == ["web-01", "web-02"]
        body = partial.json()
        assert [i["name"] for i in body["items"]] == ["web-01", "web-02"]
        assert body["left_out"]["nodes"] == ["db-01"]
        assert "node group" in body["left_out"]["reason"]
        # reading the status needs no puppet_agent:run
        status = await client.post("/command/puppet_status", json={"scope": nodes("db-01")})
        assert status.status_code == 200


# -- puppet_resource --------------------------------------------------------------------


async def test_resource_groups_identical_nodes_and_shows_how_the_other_differs(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = answering(
        runtime,
        monkeypatch,
        {
            "web-1": motd(),
            "web-2": motd(),
            "web-3": motd(content="{md5}bb"),
            "web-4": motd(),
            "web-5": "no answer within 30 s",
        },
    )
    scope = nodes("web-1", "web-2", "web-3", "web-4", "web-5")
    response = await api.post(
        "/command/puppet_resource", json={"scope": scope, "type": "file", "title": "/etc/motd"}
    )
    assert response.status_code == 200, response.text
    assert asked.calls == [
        (scope["nodes"], "puppet", "resource", {"type": "file", "title": "/etc/motd"}, 30.0)
    ]
    body = response.json()
    assert (body["type"], body["title"]) == ("file", "/etc/motd")
    assert [g["nodes"] for g in body["groups"]] == [["web-1", "web-2", "web-4"], ["web-3"]]
    first, second = body["groups"]
    assert first["resources"] == motd()["resources"]
    assert first["differences"] == []
    assert second["differences"] == [
        {
            "type": "file",
            "title": "/etc/motd",
            "parameter": "content",
            "reference": "{md5}aa",
            "value": "{md5}bb",
            "missing": None,
        }
    ]
    assert first["digest"] != second["digest"]
    assert [i.get("group") for i in body["items"]] == [0, 0, 1, 0, None]
    assert body["items"][4]["error"] == "no answer within 30 s"
    assert body["unanswered"] == [{"reason": "no answer within 30 s", "nodes": ["web-5"]}]


async def test_resource_without_a_title_reads_every_resource_of_the_type(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def packages(*names: str) -> dict[str, Any]:
        return {
            "resources": [
                {"type": "package", "title": n, "parameters": {"ensure": "1.0"}} for n in names
            ]
        }

    asked = answering(
        runtime, monkeypatch, {"a": packages("curl", "vim"), "b": packages("vim", "curl")}
    )
    response = await api.post(
        "/command/puppet_resource", json={"scope": nodes("a", "b"), "type": "package"}
    )
    assert asked.calls[0][3] == {"type": "package"}
    body = response.json()
    assert body["title"] is None
    assert [g["nodes"] for g in body["groups"]] == [["a", "b"]]  # the order does not matter


async def test_passwords_are_shown_and_compared_by_a_fingerprint_only(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def root(password: str) -> dict[str, Any]:
        parameters = {"ensure": "present", "uid": 0, "password": password}
        return {"resources": [{"type": "user", "title": "root", "parameters": parameters}]}

    answering(runtime, monkeypatch, {"a": root("$6$salt$one"), "b": root("$6$salt$two")})
    response = await api.post(
        "/command/puppet_resource",
        json={"scope": nodes("a", "b"), "type": "user", "title": "root"},
    )
    assert "$6$" not in response.text
    groups = response.json()["groups"]
    assert len(groups) == 2
    assert groups[0]["resources"][0]["parameters"]["password"].startswith("(sensitive: sha256 ")
    assert [d["parameter"] for d in groups[1]["differences"]] == ["password"]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"type": "File"}, "type"),
        ({"type": "file; rm -rf /"}, "type"),
        ({"type": "apt::"}, "type"),
        ({"type": "x" * 300}, "type"),
        ({"type": "file", "title": ""}, "title"),
        ({"type": "file", "title": "a\x00b"}, "title"),
        ({"type": "file", "title": "x" * 4097}, "title"),
        ({"type": "file", "title": "--help"}, "title"),
        ({"type": "file", "timeout": 301}, "timeout"),
        ({}, "type"),
    ],
)
async def test_resource_types_and_titles_are_checked_before_any_node_is_asked(
    runtime: Runtime,
    api: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, Any],
    problem: str,
) -> None:
    asked = answering(runtime, monkeypatch, {})
    response = await api.post("/command/puppet_resource", json={"scope": nodes("a"), **fields})
    assert response.status_code == 400, response.text
    assert problem in response.json()["msg"]
    assert asked.calls == []


async def test_type_names_with_namespaces_and_any_title_are_taken(
    runtime: Runtime, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = answering(runtime, monkeypatch, {})
    title = "C:\\Program Files\\ünï cödé 'quoted' [x]"
    response = await api.post(
        "/command/puppet_resource",
        json={"scope": nodes("a"), "type": "apt::source_2", "title": title},
    )
    assert response.status_code == 200, response.text
    assert asked.calls[0][3] == {"type": "apt::source_2", "title": title}


# -- over the broker --------------------------------------------------------------------


class PuppetAgent:
    """An agent on the server's broker that answers puppet/status and puppet/resource
    requests as the real one does, blocking."""

    def __init__(self, runtime: Runtime, certname: str, status: dict[str, Any]) -> None:
        assert runtime.broker is not None
        self.certname = certname
        self.status = status
        self.requests: list[msg.BlockingRequest] = []
        self.session: LocalSession = runtime.broker.attach(certname, "agent", self._deliver)

    def _deliver(self, env: Envelope) -> None:
        request = msg.decode(env)
        if not isinstance(request, msg.BlockingRequest):
            return
        self.requests.append(request)
        results = self.status if request.action == "status" else motd()
        reply = msg.BlockingResponse(transaction_id=request.transaction_id, results=results)
        self.session.send(
            msg.encode(reply, sender=f"pcp://{self.certname}/agent", target=env.sender)
        )


async def test_the_request_reaches_the_agents_as_a_puppet_action_and_their_answers_group(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    agents = [
        PuppetAgent(runtime, "web-1", disabled("upgrade")),
        PuppetAgent(runtime, "web-2", idle("changed")),
    ]
    await until(lambda: {"web-1", "web-2"} <= runtime.link.connected.keys())
    response = await api.post(
        "/command/puppet_status", json={"scope": nodes("web-1", "web-2", "web-3")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["groups"] == [
        {"state": "disabled", "message": "upgrade", "nodes": ["web-1"]},
        {"state": "idle", "last_run": "changed", "nodes": ["web-2"]},
    ]
    assert body["unanswered"] == [{"reason": "not connected to the broker", "nodes": ["web-3"]}]
    assert [(r.module, r.action, r.params) for r in agents[0].requests] == [
        ("puppet", "status", {})
    ]
    resource = await api.post(
        "/command/puppet_resource",
        json={"scope": nodes("web-1", "web-2"), "type": "file", "title": "/etc/motd"},
    )
    assert [g["nodes"] for g in resource.json()["groups"]] == [["web-1", "web-2"]]
    assert agents[1].requests[-1].params == {"type": "file", "title": "/etc/motd"}
