"""Initial schema: nodes, jobs, job_nodes, job_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Types are spelled out here rather than imported from ``podium.store.tables``: a
migration describes the schema as it was when written, whatever the code says later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_ID64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("certname", sa.String(255), nullable=False),
        sa.Column("facts", _JSON, nullable=False),
        _timestamp("facts_timestamp", nullable=True),
        _timestamp("first_seen", nullable=False),
        _timestamp("last_seen", nullable=False),
        sa.PrimaryKeyConstraint("certname", name="pk_nodes"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("environment", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("options", _JSON, nullable=False),
        sa.Column("node_count", sa.Integer(), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_table(
        "job_nodes",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("certname", sa.String(255), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        sa.Column("result", _JSON, nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_nodes_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "certname", name="pk_job_nodes"),
        sa.UniqueConstraint("transaction_id", name="uq_job_nodes_transaction_id"),
    )
    op.create_index("ix_job_nodes_job_id_state", "job_nodes", ["job_id", "state"])
    op.create_table(
        "job_events",
        sa.Column("id", _ID64, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("certname", sa.String(255), nullable=True),
        _timestamp("timestamp", nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", _JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_events_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_job_events_job_id_id", "job_events", ["job_id", "id"])


def downgrade() -> None:
    op.drop_table("job_events")
    op.drop_table("job_nodes")
    op.drop_table("jobs")
    op.drop_table("nodes")
