"""A job's node keeps when it is given up on while its agent is disconnected; jobs are
listed by state and owner.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_nodes") as batch:
        batch.add_column(sa.Column("give_up_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_owner", "jobs", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner", "jobs")
    op.drop_index("ix_jobs_state", "jobs")
    with op.batch_alter_table("job_nodes") as batch:
        batch.drop_column("give_up_at")
