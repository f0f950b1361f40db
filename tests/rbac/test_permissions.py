"""Permissions: their names, what they grant, which nodes they reach."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.errors import ValidationError
from podium.rbac.permissions import (
    EVERYTHING,
    TYPES,
    Grants,
    NodeScope,
    Permission,
    partition,
)

WEB = NodeScope("node_group", "web-id")
DEBIAN = NodeScope("query", 'inventory[certname] { facts.os.family = "Debian" }')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tasks:run:package", Permission("tasks", "run", "package")),
        ("tasks:run", Permission("tasks", "run", "*")),
        ("puppet_agent:run", Permission("puppet_agent", "run")),
        ("tasks:run:package@node_group=web-id", Permission("tasks", "run", "package", WEB)),
        (
            'tasks:run:*@query=inventory[certname] { facts.os.family = "Debian" }',
            Permission("tasks", "run", "*", DEBIAN),
        ),
        ("*:*:*", EVERYTHING),
    ],
)
def test_permissions_are_read_from_their_short_form(text: str, expected: Permission) -> None:
    assert Permission.parse(text) == expected
    assert Permission.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tasks", "type:action"),
        ("nodes:dance", "unknown permission nodes:dance"),
        ("users:edit:bob", "applies to every instance"),
        ("users:edit@node_group=web", "cannot be limited to nodes"),
        ("tasks:run@group=web", "node_group=<id> or query=<PQL>"),
        ("tasks:run@node_group", "@node_group=<id> or @query=<PQL>"),
        ("tasks:run@node_group=", "an empty node_group limit"),
        ("*:run", "must be *:*:*"),
    ],
)
def test_a_wrong_permission_says_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words.replace("*", r"\*").replace("[", r"\[")):
        Permission.parse(text)


def test_json_permissions_round_trip_and_refuse_unknown_keys() -> None:
    scoped = Permission("tasks", "run", "package", WEB)
    assert scoped.to_dict() == {
        "object_type": "tasks",
        "action": "run",
        "instance": "package",
        "nodes": {"node_group": "web-id"},
    }
    assert Permission.from_dict(scoped.to_dict()) == scoped
    with pytest.raises(ValidationError, match="unknown keys in a permission: colour"):
        Permission.from_dict({"object_type": "tasks", "action": "run", "colour": "red"})
    with pytest.raises(ValidationError, match="are strings"):
        Permission.from_dict({"object_type": "tasks", "action": 1})
    with pytest.raises(ValidationError, match='"nodes" is'):
        Permission.from_dict({"object_type": "tasks", "action": "run", "nodes": []})


def test_grants_match_type_action_and_instance() -> None:
    grants = Grants((Permission("tasks", "run", "package"), Permission("orchestrator", "view")))
    assert grants.allows("tasks", "run", "package")
    assert grants.allows("tasks", "run")  # some instance
    assert not grants.allows("tasks", "run", "service")
    assert grants.allows("orchestrator", "view")
    assert not grants.allows("users", "edit")
    assert Grants((EVERYTHING,)).allows("users", "edit")
    assert Grants(superuser=True).allows("certificates", "sign")


def test_node_reach_is_every_node_once_one_permission_has_no_limit() -> None:
    limited = Grants((Permission("tasks", "run", "package", WEB),))
    assert limited.node_scopes("tasks", "run", "package").scopes == (WEB,)
    assert not limited.node_scopes("tasks", "run", "package").everywhere
    assert limited.node_scopes("tasks", "run", "service").scopes == ()
    wider = Grants((*limited.permissions, Permission("tasks", "run", "*")))
    assert wider.node_scopes("tasks", "run", "package").everywhere


def test_partition_keeps_order_and_says_why_the_rest_are_refused() -> None:
    reach = Grants((Permission("tasks", "run", "package", WEB),)).node_scopes(
        "tasks", "run", "package"
    )
    split = partition(
        ["db1", "web2", "web1"], reach, {WEB: ["web1", "web2"]}, what="tasks:run:package"
    )
    assert split.allowed == ("web2", "web1")
    assert split.refused == ("db1",)
    assert split.reason == "tasks:run:package is granted only on the nodes of node group web-id"
    nothing = partition(["a"], Grants().node_scopes("tasks", "run", "x"), {}, what="tasks:run:x")
    assert nothing.refused == ("a",) and nothing.reason == "no role grants tasks:run:x"


def test_every_type_lists_its_actions_for_the_types_endpoint() -> None:
    names = {f"{t.object_type}:{a['name']}" for t in TYPES for a in t.to_dict()["actions"]}
    for required in (
        "puppet_agent:run",
        "orchestrator:view",
        "tasks:run",
        "plans:run",
        "nodes:view_data",
        "users:edit",
        "groups:edit",
        "certificates:sign",
    ):
        assert required in names


_NAME = st.text(st.characters(blacklist_characters="@:", blacklist_categories=["Cs"]), min_size=1)


@given(st.text())
def test_parsing_any_text_gives_a_permission_or_a_validation_error(text: str) -> None:
    try:
        permission = Permission.parse(text)
    except ValidationError:
        return
    assert Permission.parse(str(permission)) == permission


@given(_NAME, st.one_of(st.none(), st.sampled_from(["node_group", "query"])), _NAME)
def test_task_permissions_round_trip_through_text_and_json(
    task: str, kind: str | None, value: str
) -> None:
    if task.strip() != task or not task.strip() or (kind and not value.strip()):
        return
    scope = NodeScope(kind, value.strip()) if kind else None  # type: ignore[arg-type]
    permission = Permission("tasks", "run", task, scope)
    assert Permission.from_dict(permission.to_dict()) == permission
    assert Permission.parse(str(permission)) == permission
