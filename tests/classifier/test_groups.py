"""The group tree (pure): request bodies, PE's delta merge, what the tree refuses,
inheritance, pinned nodes, and classification with environment trumping and conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.classifier.groups import (
    ROOT_ID,
    ROOT_RULE,
    ClassificationConflict,
    Group,
    GroupError,
    GroupId,
    Hierarchy,
    apply_delta,
    check_change,
    check_delete,
    check_group_id,
    classify,
    group_members,
    groups_matching,
    parse_group,
    pin_nodes,
    root_group,
    unpin_nodes,
)
from podium.errors import Conflict, NotFound, ValidationError

DEBIAN = {"os": {"family": "Debian"}}
REDHAT = {"os": {"family": "RedHat"}}


def gid(n: int) -> GroupId:
    return GroupId(f"00000000-0000-4000-8000-{n:012d}")


def group(n: int, name: str, parent: GroupId = ROOT_ID, **fields: Any) -> Group:
    return Group(id=gid(n), name=name, parent=parent, **fields)


def tree(*groups: Group) -> Hierarchy:
    return Hierarchy([root_group(), *groups])


# -- bodies ---------------------------------------------------------------------------


def test_a_group_body_gets_pe_defaults_and_comes_back_in_pe_shape():
    g = parse_group({"name": "Web", "parent": ROOT_ID, "classes": {}}, gid(1))
    assert (g.environment, g.environment_trumps, g.rule, g.description) == (
        "production",
        False,
        None,
        None,
    )
    shape = g.to_json()
    assert "rule" not in shape and "description" not in shape  # absent, as PE leaves them
    assert set(shape) == {
        "id", "name", "parent", "environment", "environment_trumps", "classes",
        "variables", "config_data", "serial_number", "last_edited",
    }  # fmt: skip


def test_a_group_read_back_from_the_api_can_be_written_again():
    g = group(1, "Web", rule=["~", "name", "^web"], description="web servers")
    assert parse_group(g.to_json(), g.id) == g


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        ([], "schema-violation", "must be a JSON object"),
        ({"name": "W", "parent": ROOT_ID}, "schema-violation", "needs 'classes'"),
        ({"parent": ROOT_ID, "classes": {}}, "schema-violation", "needs 'name'"),
        ({"name": "", "parent": ROOT_ID, "classes": {}}, "schema-violation", "non-empty string"),
        ({"name": "W", "parent": "all", "classes": {}}, "schema-violation", "parent must be"),
        (
            {"name": "W", "parent": ROOT_ID, "classes": {}, "environment": "Prod-1"},
            "schema-violation",
            "invalid environment 'Prod-1'",
        ),
        (
            {"name": "W", "parent": ROOT_ID, "classes": {"Apache": {}}},
            "schema-violation",
            "class name",
        ),
        ({"name": "W", "parent": ROOT_ID, "classes": {"ntp": 1}}, "schema-violation", "parameters"),
        (
            {"name": "W", "parent": ROOT_ID, "classes": {}, "colour": 1},
            "schema-violation",
            "'colour'",
        ),
        (
            {"name": "W", "parent": ROOT_ID, "classes": {}, "rule": ["=", "nam", "x"]},
            "schema-violation",
            "at rule[1]",
        ),
        (
            {"name": "W", "parent": ROOT_ID, "classes": {}, "id": str(gid(9))},
            "conflicting-ids",
            "not the id",
        ),
    ],
)
def test_a_bad_group_body_is_refused_saying_what_to_change(body, kind, words):
    with pytest.raises(ValidationError) as caught:
        parse_group(body, gid(1))
    assert caught.value.kind == kind
    assert words in caught.value.msg
    assert caught.value.status == 400


def test_a_group_id_must_be_a_uuid():
    assert check_group_id(str(gid(3))) == gid(3)
    with pytest.raises(ValidationError) as caught:
        check_group_id("web")
    assert caught.value.kind == "malformed-uuid"


def test_a_delta_merges_classes_and_variables_and_null_removes_as_pe_does():
    g = group(
        1,
        "Webservers",
        environment="staging",
        rule=["~", ["trusted", "certname"], "www"],
        classes={
            "apache": {"serveradmin": "bofh@example.com", "keepalive_timeout": 5},
            "ssl": {"keystore": "/k"},
        },
        variables={"ntp_servers": ["0.pool"]},
    )
    changed = apply_delta(
        g,
        {
            "name": "Production Webservers",
            "environment": "production",
            "classes": {
                "apache": {"serveradmin": "roy@example.com", "keepalive_timeout": None},
                "ssl": None,
            },
            "variables": {"dns_servers": ["dns.example.com"]},
        },
    )
    assert changed.name == "Production Webservers"
    assert changed.environment == "production"
    assert changed.rule == g.rule  # not in the delta: kept
    assert changed.classes == {"apache": {"serveradmin": "roy@example.com"}}
    assert changed.variables == {"ntp_servers": ["0.pool"], "dns_servers": ["dns.example.com"]}
    assert apply_delta(changed, {"rule": None, "variables": {"ntp_servers": None}}).rule is None


def test_a_delta_based_on_an_old_serial_number_is_refused_with_409():
    g = group(1, "Web", classes={}, serial_number=4)
    assert apply_delta(g, {"serial_number": 4, "description": "x"}).description == "x"
    with pytest.raises(Conflict) as caught:
        apply_delta(g, {"serial_number": 3, "description": "x"})
    assert caught.value.status == 409
    assert "changed since you read it" in caught.value.msg


def test_pinning_and_unpinning_a_group_edits_its_rule():
    g = group(1, "Web", rule=["=", ["fact", "os", "family"], "RedHat"])
    pinned = pin_nodes(g, ["web-07"])
    assert pinned.pinned == ["web-07"]
    assert unpin_nodes(pinned, ["web-07"]) == g


# -- the tree refuses -----------------------------------------------------------------


def test_a_group_whose_parent_does_not_exist_is_refused():
    with pytest.raises(GroupError) as caught:
        check_change(tree(), group(1, "Web", parent=gid(99)))
    assert (caught.value.kind, caught.value.status) == ("missing-parent", 422)


def test_a_group_cannot_become_its_own_descendant():
    a, b = group(1, "A"), group(2, "B", parent=gid(1))
    c = group(3, "C", parent=gid(2))
    with pytest.raises(GroupError) as caught:
        check_change(tree(a, b, c), group(1, "A", parent=gid(3)))
    assert caught.value.kind == "inheritance-cycle"
    assert "'A' -> 'C' -> 'B' -> 'A'" in caught.value.msg
    with pytest.raises(GroupError, match="cycle"):
        check_change(tree(a), group(1, "A", parent=gid(1)))


def test_two_groups_cannot_share_a_name():
    with pytest.raises(GroupError) as caught:
        check_change(tree(group(1, "Web")), group(2, "Web"))
    assert caught.value.kind == "uniqueness-violation"
    check_change(tree(group(1, "Web")), group(1, "Web", description="same group"))


def test_the_root_group_keeps_its_rule_and_parent_but_may_change_classes():
    root = root_group()
    check_change(tree(), Group(**{**root.__dict__, "classes": {"ntp": {}}}))
    with pytest.raises(GroupError) as caught:
        check_change(tree(), pin_nodes(root, ["web-01"]))
    assert caught.value.kind == "root-rule-edit"
    with pytest.raises(GroupError):
        check_change(tree(group(1, "A")), Group(**{**root.__dict__, "parent": gid(1)}))


def test_deleting_a_group_with_children_is_refused_naming_them():
    web = group(1, "Web")
    kids = [group(2, "Web staging", parent=gid(1)), group(3, "Web prod", parent=gid(1))]
    with pytest.raises(GroupError) as caught:
        check_delete(tree(web, *kids), str(gid(1)))
    assert caught.value.kind == "children-present"
    assert "'Web prod', 'Web staging'" in caught.value.msg
    assert len(caught.value.details["children"]) == 2
    assert check_delete(tree(web, *kids), str(gid(2))).name == "Web staging"
    with pytest.raises(GroupError, match="root group"):
        check_delete(tree(web), ROOT_ID)
    with pytest.raises(NotFound):
        check_delete(tree(web), str(gid(42)))


# -- matching -------------------------------------------------------------------------


def _debian_web_tree(**web_fields: Any) -> Hierarchy:
    debian = group(1, "Debian", rule=["=", ["fact", "os", "family"], "Debian"])
    web_fields.setdefault("rule", ["~", "name", "^web"])
    web = group(2, "Debian web", parent=gid(1), **web_fields)
    return tree(debian, web)


def test_a_child_matches_only_nodes_its_parent_matches():
    t = _debian_web_tree()
    names = lambda c, f: [g.name for g in groups_matching(t, c, f, {})]  # noqa: E731
    assert names("web-01", DEBIAN) == ["All Nodes", "Debian", "Debian web"]
    assert names("web-02", REDHAT) == ["All Nodes"]  # matches the child's rule, not the parent's
    assert names("db-01", DEBIAN) == ["All Nodes", "Debian"]


def test_a_pinned_node_joins_its_group_only_if_it_matches_the_ancestors():
    t = _debian_web_tree(rule=pin(["~", "name", "^web"], ["db-01", "db-02"]))
    names = lambda c, f: [g.name for g in groups_matching(t, c, f, {})]  # noqa: E731
    assert "Debian web" in names("db-01", DEBIAN)  # pinned: in, although not ^web
    assert names("db-02", REDHAT) == ["All Nodes"]  # pinned, but not in the parent: out, as in PE


def pin(rule: list[Any], names: list[str]) -> list[Any]:
    return ["or", rule, *(["=", "name", n] for n in names)]


def test_a_group_without_rule_matches_no_node_nor_do_its_children():
    t = tree(group(1, "Empty"), group(2, "Below", parent=gid(1), rule=["~", "name", ".*"]))
    assert [g.name for g in groups_matching(t, "web-01", {}, {})] == ["All Nodes"]
    assert t.rule_with_inherited(str(gid(2))) is None


def test_group_members_finds_the_nodes_of_a_group_among_ten_thousand():
    t = _debian_web_tree(rule=pin(["~", "name", "^web"], ["db-8"]))
    nodes = [
        (f"{'web' if i % 2 else 'db'}-{i}", DEBIAN if i % 3 else REDHAT, {}) for i in range(10_000)
    ]
    members = group_members(t, str(gid(2)), nodes)
    expected = [c for c, f, _ in nodes if f is DEBIAN and (c.startswith("web") or c == "db-8")]
    assert members == expected
    assert "db-8" in members
    assert len(group_members(t, ROOT_ID, nodes)) == 10_000
    with pytest.raises(NotFound):
        group_members(t, str(gid(77)), nodes)


def test_rule_with_inherited_joins_the_ancestors_rules():
    t = _debian_web_tree()
    assert t.rule_with_inherited(str(gid(2))) == [
        "and",
        ["~", "name", "^web"],
        ["=", ["fact", "os", "family"], "Debian"],
        ROOT_RULE,
    ]
    assert t.rule_with_inherited(ROOT_ID) == ROOT_RULE
    assert [(d, g.name) for d, g in t.in_tree_order()] == [
        (0, "All Nodes"),
        (1, "Debian"),
        (2, "Debian web"),
    ]


# -- classifying ----------------------------------------------------------------------


def test_classes_and_variables_are_inherited_and_children_override_parents():
    root = Group(**{**root_group().__dict__, "classes": {"ntp": {"servers": ["a"]}}})
    debian = group(
        1, "Debian", rule=DEBIAN_RULE, classes={"apt": {"proxy": "p"}}, variables={"tier": "base"}
    )
    web = group(
        2,
        "Web",
        parent=gid(1),
        rule=["~", "name", "^web"],
        classes={"apt": {"proxy": "q", "purge": True}, "nginx": {}},
        variables={"tier": "web"},
        config_data={"nginx": {"workers": 4}},
    )
    result = classify([root, debian, web], "web-01", DEBIAN, {})
    assert result.groups == [ROOT_ID, gid(1), gid(2)]
    assert result.classes == {
        "ntp": {"servers": ["a"]},
        "apt": {"proxy": "q", "purge": True},
        "nginx": {},
    }
    assert result.variables == result.parameters == {"tier": "web"}
    assert result.config_data == {"nginx": {"workers": 4}}
    assert result.environment == "production"
    assert result.to_json()["parameters"] == {"tier": "web"}
    assert Hierarchy([root, debian, web]).inherited_json(str(gid(2)))["classes"] == result.classes


DEBIAN_RULE = ["=", ["fact", "os", "family"], "Debian"]
ALL = ["~", "name", ".*"]


def test_unrelated_groups_classes_are_merged():
    a = group(1, "A", rule=ALL, classes={"ntp": {"x": 1}})
    b = group(2, "B", rule=ALL, classes={"ntp": {"y": 2}, "ssh": {}}, variables={"v": 1})
    result = classify(tree(a, b), "n", {}, {})
    assert result.classes == {"ntp": {"x": 1, "y": 2}, "ssh": {}}
    assert result.variables == {"v": 1}


def test_a_trumping_group_sets_the_environment():
    env_group = group(
        1,
        "Development environment",
        rule=["~", "name", "^dev"],
        environment="development",
        environment_trumps=True,
    )
    app = group(2, "App", rule=ALL, environment="production")
    assert classify(tree(env_group, app), "dev-01", {}, {}).environment == "development"
    assert classify(tree(env_group, app), "prod-01", {}, {}).environment == "production"


def test_unrelated_groups_with_different_environments_are_a_conflict():
    a = group(1, "A", rule=ALL, environment="staging")
    b = group(2, "B", rule=ALL, environment="production")
    with pytest.raises(ClassificationConflict) as caught:
        classify(tree(a, b), "n", {}, {})
    assert caught.value.status == 500
    assert caught.value.kind == "classification-conflict"
    assert "set environment_trumps" in caught.value.msg
    assert sorted(d["value"] for d in caught.value.details["environment"]) == [
        "production",
        "staging",
    ]


def test_two_trumping_groups_with_different_environments_are_a_conflict():
    a = group(1, "A", rule=ALL, environment="staging", environment_trumps=True)
    b = group(2, "B", rule=ALL, environment="development", environment_trumps=True)
    c = group(3, "C", rule=ALL, environment="production")
    with pytest.raises(ClassificationConflict) as caught:
        classify(tree(a, b, c), "n", {}, {})
    assert "only one of them may set environment_trumps" in caught.value.msg
    assert {d["from"]["name"] for d in caught.value.details["environment"]} == {"A", "B"}
    # two trumping groups that agree are no conflict
    b2 = group(2, "B", rule=ALL, environment="staging", environment_trumps=True)
    assert classify(tree(a, b2, c), "n", {}, {}).environment == "staging"


def test_a_parent_and_child_with_different_environments_are_no_conflict():
    parent = group(1, "P", rule=ALL, environment="staging")
    child = group(2, "C", parent=gid(1), rule=ALL, environment="development")
    assert classify(tree(parent, child), "n", {}, {}).environment == "development"


def test_conflicting_parameters_report_where_each_value_comes_from():
    base = group(1, "Base", rule=ALL, classes={"ntp": {"servers": "a"}})
    leaf = group(2, "Leaf", parent=gid(1), rule=ALL)
    other = group(3, "Other", rule=ALL, classes={"ntp": {"servers": "b"}}, variables={"x": 1})
    other_vars = group(4, "Vars", rule=ALL, variables={"x": True})
    with pytest.raises(ClassificationConflict) as caught:
        classify(tree(base, leaf, other, other_vars), "n", {}, {})
    entries = caught.value.details["classes"]["ntp"]["servers"]
    by_value = {e["value"]: e for e in entries}
    assert by_value["a"]["from"]["name"] == "Leaf"
    assert by_value["a"]["defined_by"]["name"] == "Base"
    assert by_value["b"]["defined_by"]["name"] == "Other"
    # 1 and true differ, although Python's 1 == True
    assert sorted(repr(e["value"]) for e in caught.value.details["variables"]["x"]) == ["1", "True"]
    assert "classes ntp::servers" in caught.value.msg and "variable x" in caught.value.msg


def test_a_node_in_no_group_but_the_root_gets_the_roots_classification():
    result = classify(tree(group(1, "Web", rule=["~", "name", "^web"])), "db-01", {}, {})
    assert result.groups == [ROOT_ID]
    assert (result.environment, result.classes) == ("production", {})


# -- untrusted bodies -----------------------------------------------------------------

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=6)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
_keys = st.sampled_from(
    ["name", "parent", "classes", "rule", "variables", "config_data", "environment", "id"]
)
_bodies = st.one_of(
    _json,
    st.dictionaries(_keys, st.one_of(_json, st.just(ROOT_ID), st.just({"ntp": {}})), max_size=8),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=_bodies)
def test_any_body_is_a_group_or_a_400_never_a_crash(body: Any):
    try:
        parsed = parse_group(body, gid(1))
    except ValidationError as exc:
        assert exc.status == 400
    else:
        assert parse_group(parsed.to_json(), gid(1)) == parsed
    try:
        apply_delta(group(1, "G", classes={"ntp": {"a": 1}}), body)
    except ValidationError as exc:
        assert exc.status == 400
