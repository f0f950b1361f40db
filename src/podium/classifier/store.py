"""Node groups in the database: a thin repository over the Store's engine.

Every write is one transaction that reads the whole tree, lets the pure functions of
:mod:`podium.classifier.groups` decide, and writes the one row that changed. Writers take
turns (SQLite's write lock; on PostgreSQL an advisory lock), so two concurrent changes
cannot together build a cycle or lose each other's update.

    groups = GroupStore(runtime.store)
    tree = groups.hierarchy()
    group = groups.put(parse_group(body, group_id), at=datetime.now(UTC))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import Connection, Row

from podium.classifier.groups import (
    Group,
    GroupId,
    Hierarchy,
    check_change,
    check_delete,
    check_serial,
    unknown_group,
)
from podium.store import Store
from podium.store.tables import node_groups

# Key of the PostgreSQL advisory lock that serialises changes to the group tree.
_TREE_LOCK = 0x706F6469756D01  # "podium" + 1


class GroupStore:
    """The classifier's node groups, kept in ``store``'s database (its engine and pool)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # Reads

    def all(self) -> list[Group]:
        """Every group, by name."""
        with self._read() as connection:
            rows = connection.execute(select(node_groups).order_by(node_groups.c.name)).all()
        return [_group(row) for row in rows]

    def hierarchy(self) -> Hierarchy:
        """Every group, as a tree (what matching and classifying take)."""
        return Hierarchy(self.all())

    def get(self, group_id: str) -> Group:
        """The group ``group_id``, or 404."""
        with self._read() as connection:
            row = connection.execute(
                select(node_groups).where(node_groups.c.id == group_id)
            ).first()
        if row is None:
            raise unknown_group(group_id)
        return _group(row)

    # Writes

    def put(
        self, group: Group, *, at: datetime, expect_serial: int | None = None
    ) -> tuple[Group, bool]:
        """Create ``group``, or replace the group with its id; returns it as stored and
        whether it is new. Replacing with the same content changes nothing."""
        with self._write() as connection:
            tree = Hierarchy(_all(connection))
            current = tree.by_id.get(group.id)
            if current is not None:
                check_serial(current, expect_serial)
                if current.same_content(group):
                    return current, False
            check_change(tree, group)
            stored = _stamped(group, current, at)
            _save(connection, stored, new=current is None)
        return stored, current is None

    def change(self, group_id: str, how: Callable[[Group], Group], *, at: datetime) -> Group:
        """Apply ``how`` (a pure change, such as a delta or a pin) to the group and store
        the result if it differs; returns the group as stored."""
        with self._write() as connection:
            tree = Hierarchy(_all(connection))
            current = tree.get(group_id)
            changed = how(current)
            if changed.same_content(current):
                return current
            check_change(tree, changed)
            stored = _stamped(changed, current, at)
            _save(connection, stored, new=False)
        return stored

    def delete(self, group_id: str) -> Group:
        """Delete a group without children; returns what it was."""
        with self._write() as connection:
            group = check_delete(Hierarchy(_all(connection)), group_id)
            connection.execute(delete(node_groups).where(node_groups.c.id == group.id))
        return group

    # Plumbing: the Store's own transactions, so that groups share its engine and pool.

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._store._read() as connection:
            yield connection

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._store._write() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TREE_LOCK})
            yield connection


def _all(connection: Connection) -> list[Group]:
    return [_group(row) for row in connection.execute(select(node_groups)).all()]


def _group(row: Row[Any]) -> Group:
    return Group(
        id=GroupId(row.id),
        name=row.name,
        parent=GroupId(row.parent),
        rule=row.rule,
        environment=row.environment,
        environment_trumps=bool(row.environment_trumps),
        description=row.description,
        classes=row.classes,
        variables=row.variables,
        config_data=row.config_data,
        serial_number=row.serial_number,
        last_edited=row.last_edited,
    )


def _stamped(group: Group, current: Group | None, at: datetime) -> Group:
    serial = 0 if current is None else current.serial_number + 1
    return replace(group, serial_number=serial, last_edited=at)


def _save(connection: Connection, group: Group, *, new: bool) -> None:
    values = {
        "name": group.name,
        "parent": group.parent,
        "description": group.description,
        "environment": group.environment,
        "environment_trumps": group.environment_trumps,
        "rule": group.rule,
        "classes": group.classes,
        "variables": group.variables,
        "config_data": group.config_data,
        "last_edited": group.last_edited,
        "serial_number": group.serial_number,
    }
    if new:
        connection.execute(insert(node_groups).values(id=group.id, **values))
    else:
        connection.execute(update(node_groups).where(node_groups.c.id == group.id).values(values))
