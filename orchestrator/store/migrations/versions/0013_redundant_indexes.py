"""Drop two indexes that a unique index already gives

``ix_deliveries_event_id`` repeats the leading column of ``uq_deliveries_event_id``
(``event_id, provider_session_id``), and ``ix_provider_sessions_session_id`` that of
``uq_provider_sessions_session_id`` (``session_id, provider``): PostgreSQL and SQLite look
rows up by a leading column in the wider index, so each only cost every delivery's insert and
update, and every provider session's ending, one more index entry.

Revision ID: 0013_redundant_indexes
Revises: 0012_ssf_received_sets
Create Date: 2026-11-29 23:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0013_redundant_indexes"
down_revision = "0012_ssf_received_sets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_event_id", table_name="deliveries")
    op.drop_index("ix_provider_sessions_session_id", table_name="provider_sessions")


def downgrade() -> None:
    op.create_index("ix_provider_sessions_session_id", "provider_sessions", ["session_id"])
    op.create_index("ix_deliveries_event_id", "deliveries", ["event_id"])
