"""session lifecycle: remember-me, binding modes and login facts, expiry claims

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 19:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OPEN_UNCLAIMED = "ended_at IS NULL AND expiry_claimed_at IS NULL"
_OPEN_CLAIMED = "ended_at IS NULL AND expiry_claimed_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("idp_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("remember_me", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("stay_signed_in", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column(
                "network_binding", sa.String(length=32), nullable=False, server_default="no_binding"
            )
        )
        batch_op.add_column(
            sa.Column(
                "geoip_binding", sa.String(length=32), nullable=False, server_default="no_binding"
            )
        )
        batch_op.add_column(sa.Column("asn", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("as_network", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("continent", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("country", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("city", sa.String(length=255), nullable=True))
        batch_op.add_column(
            sa.Column("expiry_claimed_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_index(
        "ix_idp_sessions_due_absolute",
        "idp_sessions",
        ["expires_at"],
        postgresql_where=sa.text(_OPEN_UNCLAIMED),
        sqlite_where=sa.text(_OPEN_UNCLAIMED),
    )
    op.create_index(
        "ix_idp_sessions_due_idle",
        "idp_sessions",
        ["last_seen"],
        postgresql_where=sa.text(_OPEN_UNCLAIMED),
        sqlite_where=sa.text(_OPEN_UNCLAIMED),
    )
    op.create_index(
        "ix_idp_sessions_expiry_claimed",
        "idp_sessions",
        ["expiry_claimed_at"],
        postgresql_where=sa.text(_OPEN_CLAIMED),
        sqlite_where=sa.text(_OPEN_CLAIMED),
    )


def downgrade() -> None:
    op.drop_index("ix_idp_sessions_expiry_claimed", table_name="idp_sessions")
    op.drop_index("ix_idp_sessions_due_idle", table_name="idp_sessions")
    op.drop_index("ix_idp_sessions_due_absolute", table_name="idp_sessions")
    with op.batch_alter_table("idp_sessions", schema=None) as batch_op:
        for column in (
            "expiry_claimed_at",
            "city",
            "country",
            "continent",
            "as_network",
            "asn",
            "geoip_binding",
            "network_binding",
            "stay_signed_in",
            "remember_me",
        ):
            batch_op.drop_column(column)
