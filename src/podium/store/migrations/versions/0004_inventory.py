"""The inventory: PuppetDB's node columns, fact sets, fact paths and fact leaves.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Nodes that already have facts get their leaves here, so that queries see them at once.
The flattening is spelled out below rather than imported from ``podium.inventory``: a
migration must keep doing what it did when it was written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_TIMESTAMPS = (
    "deactivated",
    "expired",
    "producer_timestamp",
    "catalog_timestamp",
    "report_timestamp",
)
_STRINGS = (
    "facts_environment",
    "producer",
    "catalog_environment",
    "report_environment",
    "latest_report_status",
    "latest_report_hash",
    "latest_report_job_id",
    "cached_catalog_status",
)
_FLAGS = ("latest_report_noop", "latest_report_noop_pending", "latest_report_corrective_change")


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        for name in _TIMESTAMPS:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        for name in _STRINGS:
            batch.add_column(sa.Column(name, sa.String(255), nullable=True))
        for name in _FLAGS:
            batch.add_column(sa.Column(name, sa.Boolean(), nullable=True))
    op.create_index(
        "ix_nodes_inventory",
        "nodes",
        ["certname", "facts_timestamp", *_TIMESTAMPS, *_STRINGS, *_FLAGS],
    )
    inactive = sa.text("deactivated IS NOT NULL OR expired IS NOT NULL")
    op.create_index(
        "ix_nodes_inactive",
        "nodes",
        ["certname"],
        sqlite_where=inactive,
        postgresql_where=inactive,
    )
    op.create_table(
        "factsets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("certname", sa.String(255), nullable=False),
        sa.Column("hash", sa.String(40), nullable=False),
        sa.ForeignKeyConstraint(
            ["certname"],
            ["nodes.certname"],
            name="fk_factsets_certname_nodes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_factsets"),
        sa.UniqueConstraint("certname", name="uq_factsets_certname"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "fact_paths",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("type", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fact_paths"),
        sa.UniqueConstraint("path", "type", name="uq_fact_paths_path_type"),
    )
    op.create_index("ix_fact_paths_name_depth", "fact_paths", ["name", "depth"])
    op.create_table(
        "fact_leaves",
        sa.Column("path_id", sa.Integer(), nullable=False),
        sa.Column("factset_id", sa.Integer(), nullable=False),
        sa.Column("s", sa.Text(), nullable=True),
        sa.Column("n", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("path_id", "factset_id", name="pk_fact_leaves"),
        sqlite_with_rowid=False,
    )
    _index_existing_facts(op.get_bind())


def downgrade() -> None:
    op.drop_table("fact_leaves")
    op.drop_table("fact_paths")
    op.drop_table("factsets")
    op.drop_index("ix_nodes_inactive", table_name="nodes")
    op.drop_index("ix_nodes_inventory", table_name="nodes")
    with op.batch_alter_table("nodes") as batch:
        for name in (*_TIMESTAMPS, *_STRINGS, *_FLAGS):
            batch.drop_column(name)


# Backfill: the rows podium.inventory would have written for each node's facts.

_STRING, _INTEGER, _FLOAT, _BOOLEAN, _NULL, _OBJECT, _ARRAY = range(7)


def _index_existing_facts(connection: sa.Connection) -> None:
    documents = connection.execute(sa.text("SELECT certname, facts FROM nodes")).all()
    paths: dict[tuple[str, int], int] = {}
    for certname, raw in documents:
        values = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(values, dict) or not values:
            continue
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()
        connection.execute(
            sa.text("INSERT INTO factsets (certname, hash) VALUES (:c, :h)"),
            {"c": certname, "h": digest},
        )
        factset = connection.execute(
            sa.text("SELECT id FROM factsets WHERE certname = :c"), {"c": certname}
        ).scalar_one()
        rows = []
        for path, kind, s, n in _leaves(values):
            key = (json.dumps(path, separators=(",", ":"), ensure_ascii=False), kind)
            if key not in paths:
                connection.execute(
                    sa.text(
                        "INSERT INTO fact_paths (path, type, name, depth) "
                        "VALUES (:p, :t, :name, :d)"
                    ),
                    {"p": key[0], "t": kind, "name": path[0], "d": len(path) - 1},
                )
                paths[key] = connection.execute(
                    sa.text("SELECT id FROM fact_paths WHERE path = :p AND type = :t"),
                    {"p": key[0], "t": kind},
                ).scalar_one()
            rows.append({"p": paths[key], "f": factset, "s": s, "n": n})
        connection.execute(
            sa.text("INSERT INTO fact_leaves (path_id, factset_id, s, n) VALUES (:p, :f, :s, :n)"),
            rows,
        )


def _leaves(values: dict[str, Any]) -> Iterator[tuple[list[Any], int, str | None, float | None]]:
    for name, value in values.items():
        if isinstance(value, dict | list) and value:
            yield [name], _OBJECT if isinstance(value, dict) else _ARRAY, None, None
        yield from _walk([name], value)


def _walk(path: list[Any], value: Any) -> Iterator[tuple[list[Any], int, str | None, float | None]]:
    if isinstance(value, dict):
        if not value:
            yield path, _OBJECT, None, None
        for key, item in value.items():
            yield from _walk([*path, key], item)
    elif isinstance(value, list):
        if not value:
            yield path, _ARRAY, None, None
        for index, item in enumerate(value):
            yield from _walk([*path, index], item)
    elif isinstance(value, str):
        yield path, _STRING, value, None
    elif isinstance(value, bool):
        yield path, _BOOLEAN, None, 1.0 if value else 0.0
    elif isinstance(value, int):
        yield path, _INTEGER, str(value) if abs(value) > 2**53 else None, float(value)
    elif isinstance(value, float):
        yield path, _FLOAT, None, value
    else:
        yield path, _NULL, None, None
