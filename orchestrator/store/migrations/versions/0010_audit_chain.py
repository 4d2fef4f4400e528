"""audit_records: the hash chain's columns; audit_checkpoints: its signed checkpoints

All four are written by the sealer when it links a record into the chain, the records
written before this revision included. Nothing is computed here: the upgrade is an ALTER
and a CREATE on a trail of any size.

Revision ID: 0010_audit_chain
Revises: 0009_remember_device
Create Date: 2026-11-29 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_audit_chain"
down_revision = "0009_remember_device"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.add_column(sa.Column("record_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
    # Partial: an unsealed record (NULL) costs its insert no index entry.
    op.create_index(
        "uq_audit_records_chain_seq",
        "audit_records",
        ["chain_seq"],
        unique=True,
        postgresql_where=sa.text("chain_seq IS NOT NULL"),
        sqlite_where=sa.text("chain_seq IS NOT NULL"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("jws", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    op.create_index("ix_audit_checkpoints_at", "audit_checkpoints", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_checkpoints_at", table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_index("uq_audit_records_chain_seq", table_name="audit_records")
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_column("chain_hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("chain_seq")
        batch_op.drop_column("record_hash")
