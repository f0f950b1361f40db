"""Node groups of the classifier.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "node_groups",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("parent", sa.String(36), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("environment", sa.String(255), nullable=False),
        sa.Column("environment_trumps", sa.Boolean(), nullable=False),
        sa.Column("rule", _JSON, nullable=True),
        sa.Column("classes", _JSON, nullable=False),
        sa.Column("variables", _JSON, nullable=False),
        sa.Column("config_data", _JSON, nullable=False),
        sa.Column("last_edited", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_node_groups"),
        sa.UniqueConstraint("name", name="uq_node_groups_name"),
    )


def downgrade() -> None:
    op.drop_table("node_groups")
