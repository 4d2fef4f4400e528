"""index provider_sessions.ended_by_event

A logout's first transaction finds the provider sessions it ended by this column; without an
index that was a sequential scan of every provider session.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 20:05:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        op.f("ix_provider_sessions_ended_by_event"),
        "provider_sessions",
        ["ended_by_event"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_provider_sessions_ended_by_event"), table_name="provider_sessions")
