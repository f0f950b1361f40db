"""Node groups of the classifier, starting with the root group "All Nodes".

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

# PE's root group: the lowest random UUID, its own parent, matching every node.
_ROOT_ID = "00000000-0000-4000-8000-000000000000"


def upgrade() -> None:
    table = op.create_table(
        "node_groups",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("parent", sa.String(36), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("environment", sa.String(255), nullable=False),
        sa.Column("environment_trumps", sa.Boolean(), nullable=False),
        sa.Column("rule", _JSON, nullable=True),
        sa.Column("classes", _JSON, nullable=False),
        sa.Column("variables", _JSON, nullable=False),
        sa.Column("config_data", _JSON, nullable=False),
        sa.Column("last_edited", sa.DateTime(timezone=True), nullable=False),
        sa.Column("serial_number", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_node_groups"),
        sa.UniqueConstraint("name", name="uq_node_groups_name"),
    )
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # stored as naive UTC text, as the code's type does
    op.bulk_insert(
        table,
        [
            {
                "id": _ROOT_ID,
                "name": "All Nodes",
                "parent": _ROOT_ID,
                "description": None,
                "environment": "production",
                "environment_trumps": False,
                "rule": ["and", ["~", "name", ".*"]],
                "classes": {},
                "variables": {},
                "config_data": {},
                "last_edited": now,
                "serial_number": 0,
            }
        ],
    )


def downgrade() -> None:
    op.drop_table("node_groups")
