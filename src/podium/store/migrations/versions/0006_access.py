"""Access control: users, roles, directory groups, tokens and the activity log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "rbac_users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("login", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("is_superuser", sa.Boolean(), nullable=False),
        sa.Column("is_revoked", sa.Boolean(), nullable=False),
        sa.Column("directory_groups", _JSON, nullable=False),
        _when("created_at"),
        _when("last_login", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rbac_users"),
        sa.UniqueConstraint("login", name="uq_rbac_users_login"),
    )
    op.create_table(
        "rbac_roles",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("permissions", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rbac_roles"),
        sa.UniqueConstraint("display_name", name="uq_rbac_roles_display_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "rbac_user_roles",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["rbac_users.id"],
            name="fk_rbac_user_roles_user_id_rbac_users",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["rbac_roles.id"],
            name="fk_rbac_user_roles_role_id_rbac_roles",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "role_id", name="pk_rbac_user_roles"),
    )
    op.create_index("ix_rbac_user_roles_role_id", "rbac_user_roles", ["role_id"])
    op.create_table(
        "rbac_groups",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("login", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rbac_groups"),
        sa.UniqueConstraint("login", name="uq_rbac_groups_login"),
    )
    op.create_table(
        "rbac_group_roles",
        sa.Column("group_id", sa.String(36), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["rbac_groups.id"],
            name="fk_rbac_group_roles_group_id_rbac_groups",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["rbac_roles.id"],
            name="fk_rbac_group_roles_role_id_rbac_roles",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "role_id", name="pk_rbac_group_roles"),
    )
    op.create_index("ix_rbac_group_roles_role_id", "rbac_group_roles", ["role_id"])
    op.create_table(
        "rbac_tokens",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("client", sa.String(255), nullable=False),
        _when("created_at"),
        _when("expires_at"),
        _when("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["rbac_users.id"],
            name="fk_rbac_tokens_user_id_rbac_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("digest", name="pk_rbac_tokens"),
        sa.UniqueConstraint("id", name="uq_rbac_tokens_id"),
    )
    op.create_index("ix_rbac_tokens_user_id", "rbac_tokens", ["user_id"])
    op.create_index("ix_rbac_tokens_expires_at", "rbac_tokens", ["expires_at"])
    op.create_table(
        "activity_events",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        _when("timestamp"),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(255), nullable=True),
        sa.Column("subject_name", sa.String(255), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("object_name", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_activity_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_activity_events_timestamp", "activity_events", ["timestamp"])
    op.create_index("ix_activity_events_subject_name_id", "activity_events", ["subject_name", "id"])
    op.create_index(
        "ix_activity_events_object_type_object_id_id",
        "activity_events",
        ["object_type", "object_id", "id"],
    )
    op.create_index("ix_activity_events_service_id", "activity_events", ["service", "id"])


def downgrade() -> None:
    for table in (
        "activity_events",
        "rbac_tokens",
        "rbac_group_roles",
        "rbac_groups",
        "rbac_user_roles",
        "rbac_roles",
        "rbac_users",
    ):
        op.drop_table(table)
