"""Access control with real processes: a scoped operator through the CLI, a CLI that
is not logged in, and each command's answer to a missing permission."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from e2e.installation import NODES, Installation
from podium.cli.client import ApiClient

pytestmark = pytest.mark.e2e

WEB = NODES[:2]
ROOT_GROUP = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def web_operator(fleet: Installation) -> Iterator[tuple[str, str]]:
    """(token, node group id) of a user who may run ``package`` on the group "web"."""
    fleet.wait_for_facts(*WEB)  # a group holds the nodes of the inventory its rule matches
    where = (fleet.fleet.server_url, fleet.fleet.cacert, fleet.fleet.api_token)
    rbac = ApiClient(*where, api="/rbac-api/v1")
    classifier = ApiClient(*where, api="/classifier-api/v1")
    rule = ["or", *(["=", "name", n] for n in WEB)]
    classifier.call(
        "POST",
        "/groups",
        json={"name": "web", "parent": ROOT_GROUP, "rule": rule, "classes": {}},
    )
    group = next(g["id"] for g in classifier.call("GET", "/groups") if g["name"] == "web")
    role = rbac.call(
        "POST",
        "/roles",
        json={
            "display_name": "web packages",
            "permissions": [
                {
                    "object_type": "tasks",
                    "action": "run",
                    "instance": "package",
                    "nodes": {"node_group": group},
                },
                {"object_type": "orchestrator", "action": "view", "instance": "*"},
            ],
        },
    )
    user = rbac.call(
        "POST",
        "/users",
        json={"login": "wendy", "password": "wendy-password", "role_ids": [role["id"]]},
    )
    try:
        yield fleet.fleet.login("wendy", "wendy-password"), group
    finally:
        rbac.call("DELETE", f"/users/{user['id']}")
        rbac.call("DELETE", f"/roles/{role['id']}")
        classifier.call("DELETE", f"/groups/{group}")
        rbac.close()
        classifier.close()


def test_a_user_allowed_package_on_a_node_group_runs_it_there_and_nowhere_else(
    fleet: Installation, web_operator: tuple[str, str]
) -> None:
    token, group = web_operator
    status = ("task", "run", "package", "action=status", "name=bash")
    there = fleet.cli(*status, "--node-group", group, token=token)
    assert there.returncode == 0, there.stderr
    ran = fleet.cli("job", "show", "--format", "json", token=token)
    assert ran.returncode == 0, ran.stderr
    latest = json.loads(ran.stdout)["items"][0]
    assert latest["owner"]["login"] == "wendy"
    assert latest["node_count"] == len(WEB)

    named = fleet.cli(*status, "--nodes", ",".join([WEB[0], NODES[3]]), token=token)
    assert named.returncode != 0
    assert NODES[3] in named.stderr and "may not run package" in named.stderr

    query = fleet.cli(*status, "--query", "nodes[certname] {}", token=token)
    assert query.returncode == 0, query.stderr
    assert f"left out {len(NODES) - len(WEB)} nodes" in query.stderr

    other = fleet.cli(
        "task", "run", "podium::echo", "message=hi", "--node-group", group, token=token
    )
    assert other.returncode != 0
    assert "tasks:run:podium::echo" in other.stderr


def test_a_cli_that_is_not_logged_in_says_how_to_log_in(fleet: Installation) -> None:
    for command in (
        ("job", "show"),
        ("task", "run", "podium::echo", "message=x", "--nodes", NODES[0]),
    ):
        result = fleet.cli(*command, token="")
        assert result.returncode != 0
        assert "podium access login" in result.stderr, result.stderr
        refused = fleet.cli(*command, token="not-a-real-token")
        assert refused.returncode != 0
        assert "refused your token" in refused.stderr, refused.stderr
