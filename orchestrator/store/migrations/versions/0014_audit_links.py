"""audit_links: the hash chain's links in a narrow table of their own

Until now the sealer wrote each record's link (``chain_seq``, ``record_hash``, ``prev_hash``,
``chain_hash``) into the record's own row: on PostgreSQL a new version of every audit record
with its nine index entries, the largest statement of a busy fan-out. A link is now a row
of ``audit_links`` (an insert with two index entries), naming its record by ``seq``. The
upgrade carries every link over as it is (the chain verifies across it, checkpoints
included), then drops the four columns; the downgrade carries them back.

Revision ID: 0014_audit_links
Revises: 0013_redundant_indexes
Create Date: 2026-11-29 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_audit_links"
down_revision = "0013_redundant_indexes"
branch_labels = None
depends_on = None

_LINK_COLUMNS = "chain_seq, seq, record_hash, prev_hash, chain_hash"


def upgrade() -> None:
    op.create_table(
        "audit_links",
        sa.Column("chain_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("chain_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("chain_seq", name="pk_audit_links"),
        sa.UniqueConstraint("seq", name="uq_audit_links_seq"),
    )
    op.execute(
        f"INSERT INTO audit_links ({_LINK_COLUMNS}) SELECT {_LINK_COLUMNS} FROM audit_records "
        "WHERE chain_seq IS NOT NULL"
    )
    op.drop_index("uq_audit_records_chain_seq", table_name="audit_records")
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.drop_column("chain_hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("chain_seq")
        batch_op.drop_column("record_hash")


def downgrade() -> None:
    with op.batch_alter_table("audit_records") as batch_op:
        batch_op.add_column(sa.Column("record_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
    op.execute(
        "UPDATE audit_records SET "
        + ", ".join(
            f"{name} = (SELECT audit_links.{name} FROM audit_links "
            "WHERE audit_links.seq = audit_records.seq)"
            for name in ("record_hash", "chain_seq", "prev_hash", "chain_hash")
        )
        + " WHERE seq IN (SELECT seq FROM audit_links)"
    )
    op.create_index(
        "uq_audit_records_chain_seq",
        "audit_records",
        ["chain_seq"],
        unique=True,
        postgresql_where=sa.text("chain_seq IS NOT NULL"),
        sqlite_where=sa.text("chain_seq IS NOT NULL"),
    )
    op.drop_table("audit_links")
