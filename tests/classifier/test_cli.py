"""``podium group``: argument parsing and what it prints, against a fake API client.

(The CLI speaks real HTTPS; runs against a real server belong to the end-to-end suite.)
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from podium.classifier.rules import RuleError
from podium.cli import group as cli
from podium.cli.main import build_parser, main
from podium.errors import NotFound, ValidationError

ROOT = "00000000-0000-4000-8000-000000000000"
DEBIAN_ID = "00000000-0000-4000-8000-000000000001"
WEB_ID = "00000000-0000-4000-8000-000000000002"


def g(gid: str, name: str, parent: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": gid,
        "name": name,
        "parent": parent,
        "environment": "production",
        "environment_trumps": False,
        "classes": {},
        "variables": {},
        "config_data": {},
        "serial_number": 3,
        "last_edited": "2026-03-01T12:00:00.000Z",
        **fields,
    }


GROUPS = [
    g(ROOT, "All Nodes", ROOT, rule=["and", ["~", "name", ".*"]]),
    g(WEB_ID, "Debian web", DEBIAN_ID, rule=["or", ["~", "name", "^web"], ["=", "name", "db-01"]],
      classes={"nginx": {"workers": 4}}, variables={"tier": "web"}, environment="staging",
      environment_trumps=True),
    g(DEBIAN_ID, "Debian", ROOT, rule=["=", ["fact", "os", "family"], "Debian"]),
]  # fmt: skip


class FakeClient:
    """Answers like the classifier API; records every call."""

    def __init__(self, answers: dict[tuple[str, str], Any] | None = None) -> None:
        self.answers = {("GET", "/groups"): GROUPS, **(answers or {})}
        self.calls: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs.get("json")))
        if method == "PUT":
            return {**g(path.rsplit("/", 1)[1], "", ROOT), **kwargs["json"]}
        answer = self.answers.get((method, path))
        if isinstance(answer, Exception):
            raise answer
        if answer is None and method == "GET" and path.endswith("/nodes"):
            raise NotFound("The resource could not be found.", kind="not-found")
        return answer


def run(argv: list[str], client: FakeClient) -> tuple[int, str]:
    args = build_parser().parse_args(["group", *argv])
    out = io.StringIO()
    code = cli.dispatch(client, args, out)
    return code, out.getvalue()


def test_list_prints_the_tree_indented_with_ids():
    code, text = run(["list"], FakeClient())
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "ID", "ENVIRONMENT", "PINNED"]
    assert lines[1].startswith("All Nodes") and ROOT in lines[1]
    assert lines[2].startswith("  Debian ") and DEBIAN_ID in lines[2]
    assert lines[3].startswith("    Debian web") and "staging (trumps)" in lines[3]
    assert lines[3].rstrip().endswith("1")  # one pinned node


def test_list_as_json_is_the_apis_groups():
    _, text = run(["list", "--format", "json"], FakeClient())
    assert json.loads(text) == GROUPS


def test_show_prints_place_rule_pins_classes_and_matching_nodes():
    client = FakeClient({("GET", f"/groups/{WEB_ID}/nodes"): {"nodes": ["web-01", "db-01"]}})
    code, text = run(["show", "Debian web"], client)
    assert code == 0
    assert "Path:         All Nodes > Debian > Debian web" in text
    assert "Environment:  staging (environment_trumps" in text
    assert '    ["~", "name", "^web"]' in text  # the rule without its pins
    assert "Pinned nodes: db-01" in text
    assert "    nginx\n      workers = 4" in text
    assert '    tier = "web"' in text
    assert "Matching nodes (2): web-01, db-01" in text


def test_show_without_matching_nodes_when_the_server_cannot_tell():
    _, text = run(["show", DEBIAN_ID], FakeClient())
    assert "Matching nodes" not in text
    assert 'Rule:\n    ["=", ["fact", "os", "family"], "Debian"]' in text
    assert "Pinned nodes: none" in text
    assert "Children:     Debian web" in text


def test_show_as_json_adds_pinned_and_matching_nodes():
    _, text = run(["show", "Debian web", "--format", "json"], FakeClient())
    shown = json.loads(text)
    assert shown["pinned_nodes"] == ["db-01"]
    assert shown["matching_nodes"] is None
    assert shown["id"] == WEB_ID


def test_a_nested_rule_prints_one_condition_a_line():
    lines = cli.pretty_rule(
        ["and", ["=", "name", "a"], ["or", ["~", "name", "b"], ["not", ["=", "name", "c"]]]]
    )
    assert lines == [
        '["and",',
        '  ["=", "name", "a"],',
        '  ["or",',
        '    ["~", "name", "b"],',
        '    ["not",',
        '      ["=", "name", "c"]]]]',
    ]


def test_create_puts_a_new_group_under_the_named_parent(tmp_path: Path):
    rule_file = tmp_path / "rule.json"
    rule_file.write_text('["~", "name", "^web"]')
    client = FakeClient()
    code, text = run(
        ["create", "Web", "--parent", "Debian", "--rule", f"@{rule_file}", "--class", "nginx",
         "--class", "ntp", "-e", "staging", "--environment-trumps", "--variable", "ports=[80, 443]",
         "--variable", "tier=web", "--description", "front ends"],
        client,
    )  # fmt: skip
    assert code == 0
    method, path, body = client.calls[-1]
    assert method == "PUT" and path.startswith("/groups/")
    assert body == {
        "name": "Web",
        "parent": DEBIAN_ID,
        "environment": "staging",
        "environment_trumps": True,
        "classes": {"nginx": {}, "ntp": {}},
        "variables": {"ports": [80, 443], "tier": "web"},
        "rule": ["~", "name", "^web"],
        "description": "front ends",
    }
    assert text.startswith("Created group Web (") and "under Debian." in text


def test_create_without_rule_says_the_group_matches_nothing_yet():
    _, text = run(["create", "Empty"], FakeClient())
    assert "matches no node" in text
    assert run(["create", "Empty"], client := FakeClient())[0] == 0
    assert client.calls[-1][2]["parent"] == ROOT  # All Nodes by default


def test_edit_sends_a_delta_with_the_serial_number_and_keeps_pins():
    client = FakeClient({("POST", f"/groups/{WEB_ID}"): GROUPS[1]})
    code, text = run(
        ["edit", "Debian web", "--rule", '["~", "name", "^www"]', "--class", "php",
         "--remove-class", "nginx", "--variable", "tier=front", "--remove-variable", "old",
         "--no-environment-trumps", "--name", "Web"],
        client,
    )  # fmt: skip
    assert code == 0
    method, path, delta = client.calls[-1]
    assert (method, path) == ("POST", f"/groups/{WEB_ID}")
    assert delta == {
        "name": "Web",
        "rule": ["or", ["~", "name", "^www"], ["=", "name", "db-01"]],
        "environment_trumps": False,
        "classes": {"php": {}, "nginx": None},
        "variables": {"tier": "front", "old": None},
        "serial_number": 3,
    }
    assert text.startswith("Updated group Debian web")


def test_edit_with_nothing_to_change_is_an_error():
    with pytest.raises(ValidationError, match="nothing to change"):
        run(["edit", "Debian"], FakeClient())


def test_pin_and_unpin_say_what_changed(tmp_path: Path):
    after = g(
        WEB_ID,
        "Debian web",
        DEBIAN_ID,
        rule=["or", ["~", "name", "^web"], ["=", "name", "db-01"], ["=", "name", "db-02"]],
    )
    client = FakeClient({("GET", f"/groups/{WEB_ID}"): after})
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("db-02\n\n")
    _, text = run(["pin", "Debian web", "db-01", f"@{nodes}"], client)
    assert ("POST", f"/groups/{WEB_ID}/pin", {"nodes": ["db-01", "db-02"]}) in client.calls
    assert "Pinned db-02 to Debian web." in text
    assert "Pinned nodes now: db-01, db-02" in text
    client = FakeClient({("GET", f"/groups/{WEB_ID}"): GROUPS[1]})
    _, text = run(["unpin", WEB_ID, "db-01,db-09"], client)
    assert ("POST", f"/groups/{WEB_ID}/unpin", {"nodes": ["db-01", "db-09"]}) in client.calls
    assert "Unpinned db-01 from Debian web." in text
    assert "Not pinned there: db-09." in text


def test_delete_names_the_group_deleted():
    client = FakeClient()
    _, text = run(["delete", "Debian"], client)
    assert client.calls[-1] == ("DELETE", f"/groups/{DEBIAN_ID}", None)
    assert text == f"Deleted group Debian ({DEBIAN_ID}).\n"


def test_a_group_is_found_by_id_or_name_and_a_near_miss_is_suggested():
    assert cli.resolve(GROUPS, WEB_ID)["name"] == "Debian web"
    assert cli.resolve(GROUPS, "All Nodes")["id"] == ROOT
    with pytest.raises(NotFound, match="did you mean 'Debian web'"):
        cli.resolve(GROUPS, "debian WEB")
    with pytest.raises(NotFound, match="podium group list"):
        cli.resolve(GROUPS, "Mail")


def test_rule_arguments_are_checked_before_anything_is_sent(tmp_path: Path):
    assert cli.parse_rule("none") is None
    with pytest.raises(ValidationError, match="not JSON"):
        cli.parse_rule("[~, name]")
    with pytest.raises(RuleError, match="unknown field 'nmae'"):
        cli.parse_rule('["=", "nmae", "x"]')
    with pytest.raises(ValidationError, match="cannot read rule file"):
        cli.parse_rule(f"@{tmp_path / 'missing.json'}")
    with pytest.raises(ValidationError, match="not KEY=VALUE"):
        cli.parse_variables(["oops"])
    assert cli.parse_variables(["n=3", "s=three", "b=true"]) == {"n": 3, "s": "three", "b": True}


def test_the_group_command_reaches_the_classifier_api(capsys, tmp_path: Path):
    from podium.pki.ca import CertificateAuthority

    ca = CertificateAuthority.init(tmp_path / "ca")
    code = main(
        ["group", "list", "--server-url", "https://127.0.0.1:9", "--cacert", str(ca.ca_cert_path)]
    )
    assert code == 1
    assert "cannot reach the server" in capsys.readouterr().err
