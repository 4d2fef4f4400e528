"""front-channel stage plans

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("plan_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("plan_id", name=op.f("pk_plans")),
    )
    op.create_index(op.f("ix_plans_event_id"), "plans", ["event_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_plans_event_id"), table_name="plans")
    op.drop_table("plans")
