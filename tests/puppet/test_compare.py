"""Nodes grouped by their Puppet's state and by the live state of a resource: the
groups are a partition of the nodes, identical states share a group, and what nodes
send is checked before it is grouped."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.errors import ProtocolError
from podium.puppet.compare import (
    RUN_STATUSES,
    Difference,
    LastRun,
    PuppetStatus,
    Resource,
    canonical,
    differences,
    parse_resources,
    parse_status,
    reason_groups,
    resource_groups,
    state_of,
    status_groups,
)

# -- strategies -------------------------------------------------------------------------

certnames = st.lists(
    st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), min_size=0, max_size=12, unique=True
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from([0.5, 1.0])
    | (st.text(max_size=4))
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
parameters = st.dictionaries(st.sampled_from(["ensure", "mode", "owner", "content"]), json_values)


@st.composite
def resource_lists(draw: st.DrawFn) -> tuple[Resource, ...]:
    titles = draw(st.lists(st.sampled_from(["/a", "/b", "/c"]), unique=True, max_size=3))
    return tuple(Resource("file", t, draw(parameters)) for t in titles)


statuses = st.builds(
    PuppetStatus,
    enabled=st.booleans(),
    running=st.booleans(),
    disabled_message=st.none() | st.sampled_from(["maintenance", "upgrade"]),
    last_run=st.none() | st.builds(LastRun, status=st.sampled_from(RUN_STATUSES)),
)


def shown_as(status: PuppetStatus) -> tuple[Any, ...]:
    """What a person reading the groups tells apart."""
    if not status.enabled:
        return ("disabled", status.disabled_message)
    if status.running:
        return ("running",)
    return ("idle", status.last_run.status if status.last_run else "never")


def answer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "enabled": True,
        "disabled_message": None,
        "running": False,
        "last_run": {
            "time": "2026-05-09T07:35:25Z",
            "status": "changed",
            "config_version": 1764669600,
            "resources": {"total": 3, "changed": 1},
            "events": {"success": 1, "total": 1},
            "changes": {"total": 1},
            "duration": 1.5,
        },
        "since_last_run": 30,
    }
    base.update(changes)
    return base


# -- status -----------------------------------------------------------------------------


def test_a_status_answer_reads_as_the_agent_sent_it() -> None:
    status = parse_status(answer())
    assert status.state == "idle"
    assert status.last_run is not None
    assert status.last_run.status == "changed"
    assert status.last_run.config_version == "1764669600"  # a number in the summary
    assert status.to_dict()["last_run"]["resources"] == {"total": 3, "changed": 1}
    assert parse_status(status.to_dict()) == status


def test_a_disabled_agent_keeps_its_reason_and_an_enabled_one_has_none() -> None:
    assert parse_status(answer(enabled=False, disabled_message="why")).disabled_message == "why"
    assert parse_status(answer(disabled_message="stale")).disabled_message is None
    assert parse_status(answer(enabled=False, disabled_message="")).disabled_message is None
    long = parse_status(answer(enabled=False, disabled_message="x" * 5000)).disabled_message
    assert long is not None and len(long) == 1000 and long.endswith("…")


@pytest.mark.parametrize(
    ("answer_", "problem"),
    [
        ([], "the answer must be an object"),
        ({"running": False}, "enabled must be true or false"),
        (answer(running="no"), "running must be true or false"),
        (answer(disabled_message=3), "disabled_message must be text"),
        (answer(last_run=[]), "last_run must be an object"),
        (answer(last_run={"status": "great"}), "last_run.status is 'great'"),
        (answer(last_run={"resources": {"total": "3"}}), "last_run.resources.total must be"),
        (answer(last_run={"duration": float("nan")}), "last_run.duration must be a number"),
        (answer(last_run={"config_version": True}), "config_version must be text or a number"),
        (answer(since_last_run="soon"), "since_last_run must be a number"),
    ],
)
def test_a_status_answer_that_is_not_one_is_refused_saying_what_is_wrong(
    answer_: Any, problem: str
) -> None:
    with pytest.raises(ProtocolError, match="the node's answer is not valid") as raised:
        parse_status(answer_)
    assert problem in raised.value.msg


@given(st.recursive(json_scalars, lambda i: st.lists(i) | st.dictionaries(st.text(), i)))
def test_parsing_any_json_as_a_status_either_works_or_says_why(value: Any) -> None:
    try:
        status = parse_status(value)
    except ProtocolError as exc:
        assert exc.msg.startswith("the node's answer is not valid: ")
    else:
        assert parse_status(status.to_dict()) == status


def test_groups_come_disabled_running_then_idle_by_last_run() -> None:
    def run(status: str) -> dict[str, Any]:
        return answer(last_run={**answer()["last_run"], "status": status})

    groups = status_groups(
        {
            "n1": parse_status(run("unchanged")),
            "n2": parse_status(answer(last_run=None)),
            "n3": parse_status(run("failed")),
            "n4": parse_status(answer(running=True)),
            "n5": parse_status(answer(enabled=False, disabled_message="b")),
            "n6": parse_status(answer(enabled=False, disabled_message="a")),
            "n7": parse_status(answer(enabled=False, disabled_message="b")),
            "n8": parse_status(run("changed")),
        }
    )
    assert [(g.state, g.detail, g.nodes) for g in groups] == [
        ("disabled", "b", ("n5", "n7")),
        ("disabled", "a", ("n6",)),
        ("running", None, ("n4",)),
        ("idle", "failed", ("n3",)),
        ("idle", "changed", ("n8",)),
        ("idle", "unchanged", ("n1",)),
        ("idle", None, ("n2",)),
    ]
    assert groups[0].to_dict() == {"state": "disabled", "message": "b", "nodes": ["n5", "n7"]}
    assert groups[-1].to_dict() == {"state": "idle", "last_run": None, "nodes": ["n2"]}


@given(
    certnames.flatmap(
        lambda names: st.tuples(
            st.just(names), st.lists(statuses, min_size=len(names), max_size=len(names))
        )
    )
)
def test_status_groups_are_a_partition_and_equal_states_share_one(
    drawn: tuple[list[str], list[PuppetStatus]],
) -> None:
    names, found = drawn
    by_node = dict(zip(names, found, strict=True))
    groups = status_groups(by_node)
    placed = [n for g in groups for n in g.nodes]
    assert sorted(placed) == sorted(names)  # every node once
    where = {n: i for i, g in enumerate(groups) for n in g.nodes}
    for a in names:
        for b in names:
            assert (where[a] == where[b]) == (shown_as(by_node[a]) == shown_as(by_node[b]))


# -- resources --------------------------------------------------------------------------


def motd(**parameters: Any) -> dict[str, Any]:
    params = {"ensure": "file", "mode": "0644", **parameters}
    return {"type": "file", "title": "/etc/motd", "parameters": params}


def test_resources_read_sorted_and_with_their_parameters() -> None:
    found = parse_resources(
        {"resources": [motd(), {"type": "file", "title": "/etc/hosts", "parameters": {}}]}
    )
    assert [r.title for r in found] == ["/etc/hosts", "/etc/motd"]
    assert found[1].parameters == {"ensure": "file", "mode": "0644"}
    assert found[1].ref == "File[/etc/motd]"
    assert Resource("apt::source", "debian", {}).ref == "Apt::Source[debian]"


@pytest.mark.parametrize(
    ("results", "problem"),
    [
        ({}, "no resources list"),
        ({"resources": [1]}, "resources[0] must be an object"),
        ({"resources": [{"title": "x", "parameters": {}}]}, "resources[0].type"),
        ({"resources": [{"type": "file", "title": 3, "parameters": {}}]}, "resources[0].title"),
        ({"resources": [{"type": "file", "title": "x"}]}, "resources[0].parameters must be"),
        ({"resources": [motd(), motd()]}, "names file '/etc/motd' twice"),
        ({"resources": [motd(mode=float("inf"))]}, "which JSON has not"),
        ({"resources": [motd(mode={1: 2})]}, "a key that is not text"),
    ],
)
def test_a_resource_answer_that_is_not_one_is_refused_saying_what_is_wrong(
    results: Any, problem: str
) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_resources(results)
    assert problem in raised.value.msg


def test_a_resource_nested_without_end_is_refused() -> None:
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(ProtocolError, match="nested deeper"):
        parse_resources({"resources": [motd(content=deep)]})


def test_when_a_file_was_changed_is_left_out_of_its_state() -> None:
    def read(mtime: str) -> tuple[Resource, ...]:
        file = motd(ctime=mtime, mtime=mtime, content="{sha256}aa")
        return parse_resources({"resources": [file]})

    early, late = read("2026-12-02 10:44:48 +0000"), read("2026-12-03 08:00:00 +0000")
    assert "mtime" not in early[0].parameters and "ctime" not in early[0].parameters
    assert len(resource_groups({"a": early, "b": late})) == 1
    other = {"type": "exec", "title": "x", "parameters": {"mtime": 1}}
    assert parse_resources({"resources": [other]})[0].parameters == {"mtime": 1}


def test_a_password_is_replaced_by_a_fingerprint_that_still_tells_values_apart() -> None:
    def user(password: str) -> Resource:
        found = parse_resources(
            {"resources": [{"type": "user", "title": "root", "parameters": {"password": password}}]}
        )
        return found[0]

    one, same, other = user("$6$a$one"), user("$6$a$one"), user("$6$a$two")
    assert "$6$" not in json.dumps(one.to_dict())
    assert one.parameters["password"].startswith("(sensitive: sha256 ")
    assert one == same and one != other
    again = parse_resources({"resources": [one.to_dict()]})[0]
    assert again == one  # what the API shows reads back as it was


@given(st.recursive(json_scalars, lambda i: st.lists(i) | st.dictionaries(st.text(), i)))
def test_parsing_any_json_as_resources_either_works_or_says_why(value: Any) -> None:
    try:
        found = parse_resources({"resources": value})
    except ProtocolError as exc:
        assert exc.msg.startswith("the node's answer is not valid: ")
    else:
        assert parse_resources({"resources": [r.to_dict() for r in found]}) == found


def test_the_largest_group_comes_first_and_the_other_says_how_it_differs() -> None:
    same = parse_resources({"resources": [motd()]})
    odd = parse_resources({"resources": [motd(mode="0600", owner="root")]})
    groups = resource_groups({"a": odd, "b": same, "c": same})
    assert [g.nodes for g in groups] == [("b", "c"), ("a",)]
    assert groups[0].differences == ()
    assert groups[1].differences == (
        Difference("file", "/etc/motd", "mode", reference="0644", value="0600"),
        Difference("file", "/etc/motd", "owner", value="root", missing="reference"),
    )


def test_a_resource_only_one_side_has_is_a_difference_of_the_whole_resource() -> None:
    hosts = Resource("file", "/etc/hosts", {"ensure": "file"})
    motd_ = Resource("file", "/etc/motd", {"ensure": "file"})
    assert differences([hosts, motd_], [motd_]) == [
        Difference("file", "/etc/hosts", None, reference={"ensure": "file"}, missing="value")
    ]
    assert differences([motd_], [hosts, motd_])[0].missing == "reference"


def test_numbers_and_booleans_that_python_calls_equal_are_different_states() -> None:
    one = [Resource("file", "/x", {"v": 1})]
    true = [Resource("file", "/x", {"v": True})]
    assert state_of(one) != state_of(true)
    assert differences(one, true) != []
    assert len(resource_groups({"a": one, "b": true})) == 2


@given(
    certnames.flatmap(
        lambda names: st.tuples(
            st.just(names),
            st.lists(resource_lists(), min_size=len(names), max_size=len(names)),
        )
    )
)
def test_resource_groups_are_a_partition_with_identical_states_in_one_group(
    drawn: tuple[list[str], list[tuple[Resource, ...]]],
) -> None:
    names, found = drawn
    by_node = dict(zip(names, found, strict=True))
    groups = resource_groups(by_node)
    assert sorted(n for g in groups for n in g.nodes) == sorted(names)
    where = {n: i for i, g in enumerate(groups) for n in g.nodes}
    for a in names:
        for b in names:
            assert (where[a] == where[b]) == (state_of(by_node[a]) == state_of(by_node[b]))
    sizes = [len(g.nodes) for g in groups]
    assert sizes == sorted(sizes, reverse=True)
    assert len({g.digest for g in groups}) == len(groups)
    for group in groups[1:]:
        assert group.differences  # a later group always differs from the first
    for group in groups:
        assert state_of(group.resources) == state_of(by_node[group.nodes[0]])


@given(resource_lists(), resource_lists())
def test_no_difference_exactly_when_the_states_are_identical(
    a: tuple[Resource, ...], b: tuple[Resource, ...]
) -> None:
    assert (differences(a, b) == []) == (state_of(a) == state_of(b))
    assert len(differences(a, b)) == len(differences(b, a))


@given(resource_lists())
def test_the_order_resources_come_in_does_not_change_the_state(
    found: tuple[Resource, ...],
) -> None:
    assert state_of(found) == state_of(tuple(reversed(found)))
    shuffled = {k: v for k, v in reversed(found[0].parameters.items())} if found else {}
    if found:
        again = (Resource(found[0].type, found[0].title, shuffled), *found[1:])
        assert state_of(again) == state_of(found)


def test_canonical_json_sorts_keys_and_keeps_text_as_it_is() -> None:
    assert canonical({"b": 1, "a": ["ü", 1.0]}) == '{"a":["ü",1.0],"b":1}'


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["x", "y"])))
def test_unanswered_nodes_group_by_reason_most_first(reasons: dict[str, str]) -> None:
    groups = reason_groups(reasons)
    assert sorted(n for _, nodes in groups for n in nodes) == sorted(reasons)
    assert all(reasons[n] == reason for reason, nodes in groups for n in nodes)
    sizes = [len(nodes) for _, nodes in groups]
    assert sizes == sorted(sizes, reverse=True)
