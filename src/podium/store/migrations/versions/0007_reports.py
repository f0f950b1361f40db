"""Puppet runs in the inventory: reports and their resource events, catalogs with their
resources and edges.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _name(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.String(255), nullable=nullable)


def _text(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def _owned_by(table: str, column: str, parent: str, key: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{parent}.{key}"], name=f"fk_{table}_{column}_{parent}", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("hash", sa.String(40), nullable=False),
        _name("certname", nullable=False),
        _name("environment", nullable=False),
        _name("status"),
        sa.Column("noop", sa.Boolean(), nullable=True),
        sa.Column("noop_pending", sa.Boolean(), nullable=True),
        sa.Column("corrective_change", sa.Boolean(), nullable=True),
        _name("puppet_version", nullable=False),
        sa.Column("report_format", sa.Integer(), nullable=False),
        _text("configuration_version", nullable=False),
        _when("start_time"),
        _when("end_time"),
        _when("producer_timestamp"),
        _when("receive_time"),
        _name("producer"),
        _name("transaction_uuid"),
        _name("catalog_uuid"),
        _text("code_id"),
        _name("job_id"),
        _name("cached_catalog_status"),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("metrics", _JSON, nullable=False),
        sa.Column("logs", _JSON, nullable=False),
        _owned_by("reports", "certname", "nodes", "certname"),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("hash", name="uq_reports_hash"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_reports_certname_producer_timestamp", "reports", ["certname", "producer_timestamp"]
    )
    op.create_index("ix_reports_producer_timestamp", "reports", ["producer_timestamp"])
    op.create_index("ix_reports_job_id", "reports", ["job_id"])
    op.create_table(
        "resource_events",
        sa.Column("report_id", _ID, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _name("certname", nullable=False),
        _name("status"),
        _when("timestamp"),
        _text("resource_type", nullable=False),
        _text("resource_title", nullable=False),
        _text("property"),
        _text("name"),
        _text("new_value"),
        _text("old_value"),
        _text("message"),
        _text("file"),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("containment_path", _JSON, nullable=True),
        _text("containing_class"),
        sa.Column("corrective_change", sa.Boolean(), nullable=True),
        _owned_by("resource_events", "report_id", "reports", "id"),
        sa.PrimaryKeyConstraint("report_id", "seq", name="pk_resource_events"),
    )
    op.create_index("ix_resource_events_certname", "resource_events", ["certname"])
    op.create_index("ix_resource_events_resource_type", "resource_events", ["resource_type"])
    op.create_table(
        "catalogs",
        _name("certname", nullable=False),
        sa.Column("hash", sa.String(40), nullable=False),
        _text("version", nullable=False),
        _name("environment"),
        _name("transaction_uuid"),
        _name("catalog_uuid"),
        _text("code_id"),
        _name("job_id"),
        _when("producer_timestamp"),
        _name("producer"),
        _when("received"),
        _owned_by("catalogs", "certname", "nodes", "certname"),
        sa.PrimaryKeyConstraint("certname", name="pk_catalogs"),
    )
    op.create_table(
        "catalog_resources",
        _name("certname", nullable=False),
        _text("type", nullable=False),
        _text("title", nullable=False),
        sa.Column("resource", sa.String(40), nullable=False),
        sa.Column("exported", sa.Boolean(), nullable=False),
        _text("file"),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("parameters", _JSON, nullable=False),
        _owned_by("catalog_resources", "certname", "catalogs", "certname"),
        sa.PrimaryKeyConstraint("certname", "type", "title", name="pk_catalog_resources"),
    )
    op.create_index("ix_catalog_resources_type_title", "catalog_resources", ["type", "title"])
    op.create_table(
        "catalog_edges",
        _name("certname", nullable=False),
        _text("source_type", nullable=False),
        _text("source_title", nullable=False),
        _text("target_type", nullable=False),
        _text("target_title", nullable=False),
        sa.Column("relationship", sa.String(32), nullable=False),
        _owned_by("catalog_edges", "certname", "catalogs", "certname"),
    )
    op.create_index("ix_catalog_edges_certname", "catalog_edges", ["certname"])


def downgrade() -> None:
    for table in ("catalog_edges", "catalog_resources", "catalogs", "resource_events", "reports"):
        op.drop_table(table)
