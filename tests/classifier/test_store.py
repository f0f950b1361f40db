"""Node groups in the database, on SQLite and PostgreSQL: the root group, writes that
bump the serial number, what the tree refuses, and writers taking turns."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from podium.classifier.groups import (
    ROOT_ID,
    ROOT_RULE,
    Group,
    GroupError,
    GroupId,
    apply_delta,
    pin_nodes,
    unpin_nodes,
)
from podium.classifier.store import GroupStore
from podium.errors import Conflict, NotFound
from podium.store import Store

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = AT + timedelta(minutes=5)


def gid(n: int) -> GroupId:
    return GroupId(f"00000000-0000-4000-8000-{n:012d}")


@pytest.fixture
def groups(store: Store) -> GroupStore:
    return GroupStore(store)


def web(**fields) -> Group:
    return Group(
        id=gid(1),
        name="Web",
        parent=ROOT_ID,
        rule=["~", "name", "^web"],
        classes={"nginx": {"workers": 4}},
        variables={"tier": "web", "ports": [80, 443]},
        **fields,
    )


def test_a_migrated_database_has_the_root_group(groups: GroupStore):
    [root] = groups.all()
    assert (root.id, root.name, root.parent, root.rule) == (
        ROOT_ID,
        "All Nodes",
        ROOT_ID,
        ROOT_RULE,
    )
    assert (root.environment, root.environment_trumps, root.serial_number) == (
        "production",
        False,
        0,
    )
    assert root.last_edited is not None and root.last_edited.tzinfo is not None


def test_a_group_is_stored_and_read_back_whole(groups: GroupStore):
    stored, created = groups.put(web(description="front ends", environment_trumps=True), at=AT)
    assert created
    assert (stored.serial_number, stored.last_edited) == (0, AT)
    again = groups.get(gid(1))
    assert again == stored
    assert again.classes == {"nginx": {"workers": 4}}
    assert again.variables == {"tier": "web", "ports": [80, 443]}
    assert again.environment_trumps is True
    assert [g.name for g in groups.all()] == ["All Nodes", "Web"]
    assert set(groups.hierarchy().by_id) == {ROOT_ID, gid(1)}


def test_writing_the_same_group_again_changes_nothing(groups: GroupStore):
    groups.put(web(), at=AT)
    same, created = groups.put(web(), at=LATER)
    assert not created
    assert (same.serial_number, same.last_edited) == (0, AT)


def test_every_change_bumps_the_serial_number(groups: GroupStore):
    groups.put(web(), at=AT)
    changed = groups.change(gid(1), lambda g: apply_delta(g, {"description": "x"}), at=LATER)
    assert (changed.serial_number, changed.last_edited) == (1, LATER)
    replaced, _ = groups.put(web(description="y"), at=LATER, expect_serial=1)
    assert replaced.serial_number == 2
    unchanged = groups.change(gid(1), lambda g: apply_delta(g, {"description": "y"}), at=AT)
    assert unchanged.serial_number == 2
    assert groups.get(gid(1)).description == "y"


def test_a_write_based_on_a_stale_serial_number_is_refused_and_changes_nothing(
    groups: GroupStore,
):
    groups.put(web(), at=AT)
    groups.change(gid(1), lambda g: apply_delta(g, {"description": "first"}), at=AT)
    with pytest.raises(Conflict):
        groups.change(
            gid(1), lambda g: apply_delta(g, {"serial_number": 0, "description": "lost"}), at=AT
        )
    with pytest.raises(Conflict):
        groups.put(web(description="lost"), at=AT, expect_serial=0)
    assert groups.get(gid(1)).description == "first"


def test_concurrent_edits_from_one_version_let_exactly_one_through(groups: GroupStore):
    groups.put(web(), at=AT)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def edit(n: int) -> None:
        barrier.wait()
        try:
            groups.change(
                gid(1),
                lambda g: apply_delta(g, {"serial_number": 0, "description": f"edit {n}"}),
                at=AT,
            )
            outcomes.append("stored")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=edit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "stored"]
    assert groups.get(gid(1)).serial_number == 1


def test_the_tree_refuses_missing_parents_cycles_and_duplicate_names(groups: GroupStore):
    groups.put(web(), at=AT)
    groups.put(
        Group(id=gid(2), name="Web staging", parent=gid(1), rule=["~", "name", "stg"]), at=AT
    )
    with pytest.raises(GroupError, match="not a group") as missing:
        groups.put(Group(id=gid(3), name="Orphan", parent=gid(99)), at=AT)
    assert missing.value.kind == "missing-parent"
    with pytest.raises(GroupError) as cycle:
        groups.change(gid(1), lambda g: apply_delta(g, {"parent": str(gid(2))}), at=AT)
    assert cycle.value.kind == "inheritance-cycle"
    with pytest.raises(GroupError) as duplicate:
        groups.put(Group(id=gid(4), name="Web", parent=ROOT_ID), at=AT)
    assert duplicate.value.kind == "uniqueness-violation"
    assert [g.name for g in groups.all()] == ["All Nodes", "Web", "Web staging"]
    assert groups.get(gid(1)).parent == ROOT_ID


def test_a_group_with_children_is_not_deleted_and_a_leaf_is(groups: GroupStore):
    groups.put(web(), at=AT)
    groups.put(Group(id=gid(2), name="Web staging", parent=gid(1)), at=AT)
    with pytest.raises(GroupError, match="'Web staging'") as refused:
        groups.delete(gid(1))
    assert refused.value.kind == "children-present"
    assert groups.delete(gid(2)).name == "Web staging"
    groups.delete(gid(1))
    with pytest.raises(NotFound):
        groups.get(gid(1))
    with pytest.raises(NotFound):
        groups.delete(gid(1))
    with pytest.raises(GroupError, match="root group"):
        groups.delete(ROOT_ID)


def test_pins_are_stored_in_the_rule(groups: GroupStore):
    groups.put(web(), at=AT)
    pinned = groups.change(gid(1), lambda g: pin_nodes(g, ["db-01", "db-02"]), at=AT)
    assert pinned.rule == [
        "or",
        ["~", "name", "^web"],
        ["=", "name", "db-01"],
        ["=", "name", "db-02"],
    ]
    assert groups.get(gid(1)).pinned == ["db-01", "db-02"]
    again = groups.change(gid(1), lambda g: pin_nodes(g, ["db-01"]), at=LATER)
    assert again.serial_number == pinned.serial_number  # already pinned: no write
    after = groups.change(gid(1), lambda g: unpin_nodes(g, ["db-01", "db-02"]), at=AT)
    assert after.rule == ["~", "name", "^web"]
    with pytest.raises(GroupError):
        groups.change(ROOT_ID, lambda g: pin_nodes(g, ["db-01"]), at=AT)
