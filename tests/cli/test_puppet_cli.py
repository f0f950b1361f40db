"""``podium puppet status|enable|disable`` and ``podium resource``: what is sent, what a
person sees (nodes grouped by state, the nodes that differ, those that did not answer)
and the exit codes; against a fake API client answering as the server does (its answers
are made by the server's own view functions)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from podium.cli import puppet as cli_puppet
from podium.cli import resource as cli_resource
from podium.cli.main import main
from podium.jobs.service import Answer
from podium.server.puppet_api import resource_view, status_view

ESC = "\x1b]0;pwned\x07"


class FakeClient:
    """Answers every ``call`` with ``answer`` and records what was asked."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs.get("json")))
        return self.answer

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    """Install a fake client answering ``answer``; returns it."""

    def install(answer: dict[str, Any]) -> FakeClient:
        fake = FakeClient(answer)
        monkeypatch.setattr(cli_puppet, "api_client", lambda args, wait: fake)
        monkeypatch.setattr(cli_resource, "api_client", lambda args, wait: fake)
        return fake

    return install


def target(*names: str, **extra: Any) -> dict[str, Any]:
    return {
        "items": [{"name": n, "connected": True} for n in names],
        "explain": f"nodes {', '.join(names)}",
        "duplicates": [],
        "unmatched": [],
        "missing_facts": {},
        **extra,
    }


def status(
    *,
    enabled: bool = True,
    message: str | None = None,
    running: bool = False,
    run: Any = "unchanged",
    version: str = "1764669600",
) -> dict[str, Any]:
    last_run = {
        "time": "2026-05-09T07:35:25Z",
        "status": run,
        "config_version": version,
        "resources": {"total": 12, "changed": 2, "failed": 0},
        "events": {},
        "changes": {"total": 2},
        "duration": 3.25,
    }
    return {
        "enabled": enabled,
        "disabled_message": message,
        "running": running,
        "last_run": None if run is None else last_run,
        "since_last_run": 150,
    }


def status_answer(answers: dict[str, dict[str, Any] | str], **extra: Any) -> dict[str, Any]:
    """The server's answer for nodes answering ``answers`` (a string: why not)."""
    asked = {
        n: Answer(error=a) if isinstance(a, str) else Answer(results=a, seconds=0.01)
        for n, a in answers.items()
    }
    return status_view(target(*answers, **extra), asked)


def resource_answer(answers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    asked = {
        n: Answer(error=a) if isinstance(a, str) else Answer(results=a, seconds=0.01)
        for n, a in answers.items()
    }
    return {"type": "file", "title": "/etc/motd", **resource_view(target(*answers), asked)}


FLEET = {
    "web-1": status(enabled=False, message="maintenance window"),
    "web-2": status(enabled=False, message="maintenance window"),
    "web-3": status(run="changed"),
    "web-4": status(run="changed"),
    "web-5": status(running=True, run="unchanged"),
    "web-6": status(run=None),
    "web-7": "no answer within 10 s",
}


# -- podium puppet ----------------------------------------------------------------------


def test_status_prints_the_nodes_grouped_by_state(server, capsys) -> None:
    fake = server(status_answer(FLEET))
    code = main(["puppet", "status", "--nodes", "web-*"])
    assert fake.calls == [
        ("POST", "/command/puppet_status", {"scope": {"nodes": ["web-*"]}, "timeout": 10.0})
    ]
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "7 nodes",
        "Disabled (2): web-1, web-2 — maintenance window",
        "Running (1): web-5",
        "Idle, last run changed (2): web-3, web-4",
        "Idle, never run (1): web-6",
        "No answer (1): web-7 — no answer within 10 s",
    ]
    assert code == 2  # some did not answer


def test_verbose_adds_a_line_per_node_with_its_last_run(server, capsys) -> None:
    server(status_answer(FLEET))
    main(["puppet", "status", "--nodes", "web-*", "--verbose"])
    lines = capsys.readouterr().out.splitlines()
    assert (
        "web-1  disabled: maintenance window; last run unchanged 2m 30s ago "
        "(12 resources, 2 changed, 0 failed; 3.2s; config 1764669600)"
    ) in lines
    assert "web-6  idle; never run" in lines
    assert "web-7  no answer: no answer within 10 s" in lines


def test_status_exits_0_when_every_node_answered_and_3_when_none_did(server, capsys) -> None:
    server(status_answer({"a": status(run="unchanged")}))
    assert main(["puppet", "status", "--nodes", "a"]) == 0
    server(status_answer({"a": "not connected to the broker"}))
    assert main(["puppet", "status", "--nodes", "a"]) == 3
    server(status_answer({}))
    assert main(["puppet", "status", "--query", "nodes[certname] {}"]) == 1


def test_disable_sends_the_reason_and_says_where_puppet_is_disabled_now(server, capsys) -> None:
    fake = server(
        status_answer(
            {"web-1": status(enabled=False, message="db move"), "web-2": status(enabled=False)}
        )
    )
    code = main(["puppet", "disable", "--nodes", "web-1,web-2", "--message", "db move"])
    assert fake.calls[0][1:] == (
        "/command/puppet_disable",
        {"scope": {"nodes": ["web-1", "web-2"]}, "timeout": 10.0, "message": "db move"},
    )
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "Disabled Puppet on 2 of 2 nodes.",
        "Disabled (1): web-1 — db move",
        "Disabled (1): web-2 — no reason given",
    ]
    assert code == 0


def test_a_node_that_stays_enabled_or_is_left_out_makes_exit_code_2(server, capsys) -> None:
    server(status_answer({"a": status(enabled=False), "b": status(run="unchanged")}))
    assert main(["puppet", "disable", "--nodes", "a,b"]) == 2
    assert "Disabled Puppet on 1 of 2 nodes." in capsys.readouterr().out
    left_out = {"nodes": ["db-1"], "reason": "puppet_agent:run reaches node group 7 only"}
    server(status_answer({"a": status(run="unchanged")}, left_out=left_out))
    assert main(["puppet", "enable", "--query", "nodes[certname] {}"]) == 2
    out = capsys.readouterr().out
    assert "Enabled Puppet on 1 of 1 node." in out
    assert "Left out (1): db-1 — puppet_agent:run reaches node group 7 only" in out


def test_enable_sends_no_message(server, capsys) -> None:
    fake = server(status_answer({"a": status(run="unchanged")}))
    assert main(["puppet", "enable", "--nodes", "a", "--timeout", "2.5"]) == 0
    assert fake.calls[0][2] == {"scope": {"nodes": ["a"]}, "timeout": 2.5}


def test_what_nodes_send_reaches_the_terminal_cleaned(server, capsys) -> None:
    server(
        status_answer(
            {
                "a": status(enabled=False, message=f"why{ESC}"),
                "b": f"the agent refused: {ESC}",
                "c": status(version=f"v{ESC}"),
            }
        )
    )
    main(["puppet", "status", "--nodes", "a,b,c", "--verbose"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "why\ufffd]0;pwned\ufffd" in out


def test_json_prints_the_servers_answer(server, capsys) -> None:
    answer = status_answer(FLEET)
    server(answer)
    assert main(["puppet", "status", "--nodes", "web-*", "--format", "json"]) == 2
    assert json.loads(capsys.readouterr().out) == answer


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("0", "--timeout must be more than 0 and at most 120 seconds"),
        ("-1", "--timeout must be more than 0 and at most 120 seconds"),
        ("121", "--timeout must be more than 0 and at most 120 seconds"),
        ("soon", "'soon' is not a number of seconds"),
    ],
)
def test_a_bad_timeout_is_refused_before_anything_is_sent(server, capsys, value, said) -> None:
    fake = server({})
    with pytest.raises(SystemExit) as exited:
        main(["puppet", "status", "--nodes", "a", f"--timeout={value}"])
    assert exited.value.code == 1
    assert said in capsys.readouterr().err
    assert fake.calls == []


def test_the_http_client_waits_longer_than_the_nodes(monkeypatch) -> None:
    made = {}

    class Recorder:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.update(kwargs)

    monkeypatch.setattr(cli_puppet, "ApiClient", Recorder)
    args = type("Args", (), {"server_url": None, "cacert": None, "token": None})()
    cli_puppet.api_client(args, 100.0)
    assert made["timeout"] > 100.0


# -- podium resource --------------------------------------------------------------------


def motd(**parameters: Any) -> dict[str, Any]:
    params = {"ensure": "file", "content": "{md5}aa", "mode": "0644", **parameters}
    return {"resources": [{"type": "file", "title": "/etc/motd", "parameters": params}]}


def test_resource_prints_each_group_with_its_parameters_and_what_differs(server, capsys) -> None:
    fake = server(
        resource_answer(
            {
                "web-1": motd(),
                "web-2": motd(),
                "web-3": motd(mode="0600"),
                "web-4": motd(),
                "web-5": motd(),
                "web-6": "no answer within 30 s",
            }
        )
    )
    code = main(["resource", "File", "/etc/motd", "--nodes", "web-*"])
    assert fake.calls[0][1:] == (
        "/command/puppet_resource",
        {"scope": {"nodes": ["web-*"]}, "type": "file", "timeout": 30.0, "title": "/etc/motd"},
    )
    assert capsys.readouterr().out.splitlines() == [
        "6 nodes",
        "2 groups: 4 nodes identical, 1 node differs.",
        "",
        "Group 1 (4 nodes): web-1, web-2, web-4, web-5",
        "  file { '/etc/motd':",
        "    ensure  => 'file',",
        "    content => '{md5}aa',",
        "    mode    => '0644',",
        "  }",
        "",
        "Group 2 (1 node), differs from group 1: web-3",
        "  File[/etc/motd] mode: '0644' → '0600'",
        "  file { '/etc/motd':",
        "    ensure  => 'file',",
        "    content => '{md5}aa',",
        "    mode    => '0600',",
        "  }",
        "",
        "No answer (1): web-6 — no answer within 30 s",
    ]
    assert code == 2


def test_resource_exits_0_when_every_node_is_identical(server, capsys) -> None:
    server(resource_answer({"a": motd(), "b": motd()}))
    assert main(["resource", "file", "/etc/motd", "--nodes", "a,b"]) == 0
    assert "All 2 nodes identical." in capsys.readouterr().out


def test_resource_exits_2_when_a_node_did_not_answer_and_3_when_none_did(server, capsys) -> None:
    server(resource_answer({"a": motd(), "b": "not connected to the broker"}))
    assert main(["resource", "file", "/etc/motd", "--nodes", "a,b"]) == 2
    server(resource_answer({"a": "not connected to the broker"}))
    assert main(["resource", "file", "/etc/motd", "--nodes", "a"]) == 3
    assert "No node answered." in capsys.readouterr().out
    server(resource_answer({}))
    assert main(["resource", "file", "--query", "nodes[certname] {}"]) == 1


def test_without_a_title_every_resource_of_the_type_is_asked_for(server, capsys) -> None:
    def packages(*names: str, version: str = "1.0") -> dict[str, Any]:
        return {
            "resources": [
                {"type": "package", "title": n, "parameters": {"ensure": version}} for n in names
            ]
        }

    many = [f"pkg{i}" for i in range(8)]
    fake = server(
        resource_answer({"a": packages(*many), "b": packages(*many), "c": packages(*many[:7])})
    )
    assert main(["resource", "package", "--nodes", "a,b,c"]) == 2
    assert "title" not in fake.calls[0][2]
    out = capsys.readouterr().out.splitlines()
    assert "  8 resources: pkg0, pkg1, pkg2, pkg3, pkg4 and 3 more (--verbose shows them)" in out
    assert "  Package[pkg7]: only in group 1" in out


def test_values_from_nodes_are_cleaned_and_quoted_as_puppet_does(server, capsys) -> None:
    server(
        resource_answer(
            {
                "a": motd(content=f"it's{ESC}", mode=["x", 1, True, None, {"k": 2}]),
                "b": motd(),
            }
        )
    )
    main(["resource", "file", "/etc/motd", "--nodes", "a,b"])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "content => 'it\\'s\ufffd]0;pwned\ufffd'," in out
    assert "mode    => ['x', 1, true, undef, {'k' => 2}]," in out


def test_the_title_may_come_after_the_target_flags(server, capsys) -> None:
    fake = server(resource_answer({"a": motd()}))
    main(["resource", "file", "--nodes", "a", "/etc/motd"])
    assert fake.calls[0][2]["title"] == "/etc/motd"
    assert main(["resource", "file", "/etc/motd", "--nodes", "a", "/etc/hosts"]) == 1
    assert "give one title" in capsys.readouterr().err
