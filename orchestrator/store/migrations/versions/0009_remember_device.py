"""idp_sessions: remember device

A login reports the device cookie id the IdP holds; the session keeps its SHA-256 (never the
id) so a later login can tell the device was seen, and whether this login came from a known
device and why (``cookie``, ``same_ip``, ``unknown``, ``off``). Sessions recorded before this
revision keep ``null`` in all three.

Revision ID: 0009_remember_device
Revises: 0008_session_identifiers
Create Date: 2026-11-29 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_remember_device"
down_revision = "0008_session_identifiers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idp_sessions") as batch_op:
        batch_op.add_column(sa.Column("device_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("known_device", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("known_device_reason", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idp_sessions") as batch_op:
        batch_op.drop_column("known_device_reason")
        batch_op.drop_column("known_device")
        batch_op.drop_column("device_hash")
