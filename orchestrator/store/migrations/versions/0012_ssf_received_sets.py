"""ssf_received_sets: the jti of every SET an upstream transmitter pushed, for replay

``POST /v1/ssf/push/<stream>`` refuses a SET whose issuer and jti it has seen; a row is kept
until the SET would be refused as stale anyway (``expires_at``), then deleted.

Revision ID: 0012_ssf_received_sets
Revises: 0011_provider_subscriptions
Create Date: 2026-11-29 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_ssf_received_sets"
down_revision = "0011_provider_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ssf_received_sets",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_ssf_received_sets")),
    )
    op.create_index(op.f("ix_ssf_received_sets_expires_at"), "ssf_received_sets", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ssf_received_sets_expires_at"), table_name="ssf_received_sets")
    op.drop_table("ssf_received_sets")
