"""the outbox: messages written with the decision that made them, published by a relay

The expiry claim, the session limit and the binding check write their events here in the
transaction of their decision, so a broker that is down loses nothing. The sweeper's scan
for lost claims is gone (the outbox re-publishes what the pipeline never recorded), and
with it its index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_OPEN_CLAIMED = "ended_at IS NULL AND expiry_claimed_at IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=36), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_outbox_message_id")),
    )
    op.create_index(op.f("ix_outbox_event_id"), "outbox", ["event_id"], unique=False)
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"], unique=False)
    op.drop_index("ix_idp_sessions_expiry_claimed", table_name="idp_sessions")
    # An expiry claimed before this revision but never handled was published (if at all) the
    # old way, which nothing re-publishes any more: unclaim it, so the next sweep claims it
    # again into the outbox. Its event id is derived from the session, so one that did reach
    # the pipeline is handled once.
    op.execute(
        sa.text(
            "UPDATE idp_sessions SET expiry_claimed_at = NULL "
            "WHERE ended_at IS NULL AND expiry_claimed_at IS NOT NULL"
        )
    )


def downgrade() -> None:
    op.create_index(
        "ix_idp_sessions_expiry_claimed",
        "idp_sessions",
        ["expiry_claimed_at"],
        postgresql_where=sa.text(_OPEN_CLAIMED),
        sqlite_where=sa.text(_OPEN_CLAIMED),
    )
    op.drop_index("ix_outbox_sent_at", table_name="outbox")
    op.drop_index(op.f("ix_outbox_event_id"), table_name="outbox")
    op.drop_table("outbox")
