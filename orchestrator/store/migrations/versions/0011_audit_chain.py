"""audit_records: the hash chain's columns; audit_checkpoints: its signed checkpoints

``record_hash`` is written with each new record; ``chain_seq``, ``prev_hash`` and
``chain_hash`` by the sealer, which also hashes the records written before this revision
(their ``record_hash`` is NULL) when it first links them. Nothing is computed here: the
upgrade is two ALTERs and a CREATE on a trail of any size.

Revision ID: 0011_audit_chain
Revises: 0008_session_identifiers
Create Date: 2026-11-29 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_audit_chain"
down_revision = "0008_session_identifiers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.add_column(sa.Column("record_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
        batch_op.create_unique_constraint("uq_audit_records_chain_seq", ["chain_seq"])
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
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_constraint("uq_audit_records_chain_seq", type_="unique")
        batch_op.drop_column("chain_hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("chain_seq")
        batch_op.drop_column("record_hash")
