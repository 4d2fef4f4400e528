"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 16:14:12.979853
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("dedupe_key", sa.String(length=512), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("session_id", sa.String(length=255), nullable=True),
        sa.Column("provider", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_records")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_audit_records_dedupe_key")),
        sa.UniqueConstraint("id", name=op.f("uq_audit_records_id")),
    )
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_records_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_event_id"), ["event_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_records_session_id"), ["session_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_records_type"), ["type"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_records_user_id"), ["user_id"], unique=False)

    op.create_table(
        "events",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_status_attempted", ["status", "attempted_at"], unique=False
        )

    op.create_table(
        "idp_sessions",
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=64), nullable=True),
        sa.Column("ended_by_event", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_idp_sessions")),
    )
    with op.batch_alter_table("idp_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idp_sessions_ended_by_event"), ["ended_by_event"], unique=False
        )
        batch_op.create_index("ix_idp_sessions_user_active", ["user_id", "ended_at"], unique=False)

    op.create_table(
        "providers",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("protocol", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("full_logout_on_rp_initiated", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_providers")),
    )
    op.create_table(
        "rejected_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_events")),
        sa.UniqueConstraint("message_id", name=op.f("uq_rejected_events_message_id")),
    )
    op.create_table(
        "provider_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("sid", sa.String(length=255), nullable=True),
        sa.Column("sub", sa.String(length=255), nullable=True),
        sa.Column("name_id", sa.Text(), nullable=True),
        sa.Column("name_id_format", sa.String(length=255), nullable=True),
        sa.Column("name_qualifier", sa.String(length=255), nullable=True),
        sa.Column("sp_name_qualifier", sa.String(length=255), nullable=True),
        sa.Column("session_index", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by_event", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["providers.name"],
            name=op.f("fk_provider_sessions_provider_providers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["idp_sessions.session_id"],
            name=op.f("fk_provider_sessions_session_id_idp_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_sessions")),
        sa.UniqueConstraint("session_id", "provider", name=op.f("uq_provider_sessions_session_id")),
    )
    with op.batch_alter_table("provider_sessions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_provider_sessions_session_id"), ["session_id"], unique=False
        )

    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("provider_session_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=255), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.event_id"], name=op.f("fk_deliveries_event_id_events")
        ),
        sa.ForeignKeyConstraint(
            ["provider_session_id"],
            ["provider_sessions.id"],
            name=op.f("fk_deliveries_provider_session_id_provider_sessions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("event_id", "provider_session_id", name=op.f("uq_deliveries_event_id")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_event_id"), ["event_id"], unique=False)
        batch_op.create_index(
            "ix_deliveries_status_next", ["status", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_status_next")
        batch_op.drop_index(batch_op.f("ix_deliveries_event_id"))

    op.drop_table("deliveries")
    with op.batch_alter_table("provider_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provider_sessions_session_id"))

    op.drop_table("provider_sessions")
    op.drop_table("rejected_events")
    op.drop_table("providers")
    with op.batch_alter_table("idp_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_idp_sessions_user_active")
        batch_op.drop_index(batch_op.f("ix_idp_sessions_ended_by_event"))

    op.drop_table("idp_sessions")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_status_attempted")

    op.drop_table("events")
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_records_user_id"))
        batch_op.drop_index(batch_op.f("ix_audit_records_type"))
        batch_op.drop_index(batch_op.f("ix_audit_records_session_id"))
        batch_op.drop_index(batch_op.f("ix_audit_records_event_id"))
        batch_op.drop_index(batch_op.f("ix_audit_records_at"))

    op.drop_table("audit_records")
