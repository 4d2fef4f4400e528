"""provider_subscriptions: providers that hear of a user's (or every user's) ended sessions

A subscribed provider gets a delivery for each ended session of the user even without a
provider session of its own (an SSF stream that added the user as a subject). A new table
only: the downgrade drops it. ``(provider, user_id)`` is unique, and so is ``provider`` among
the every-user rows (``user_id`` null): a unique constraint treats nulls as distinct, so a
partial unique index keeps a provider to one every-user row.

Revision ID: 0011_provider_subscriptions
Revises: 0010_audit_chain
Create Date: 2026-11-29 14:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_provider_subscriptions"
down_revision = "0010_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_subscriptions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["providers.name"],
            name=op.f("fk_provider_subscriptions_provider_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_subscriptions")),
        sa.UniqueConstraint("provider", "user_id", name=op.f("uq_provider_subscriptions_provider")),
    )
    op.create_index(
        op.f("ix_provider_subscriptions_provider"), "provider_subscriptions", ["provider"]
    )
    op.create_index(
        op.f("ix_provider_subscriptions_user_id"), "provider_subscriptions", ["user_id"]
    )
    op.create_index(
        "uq_provider_subscriptions_every_user",
        "provider_subscriptions",
        ["provider"],
        unique=True,
        postgresql_where=sa.text("user_id IS NULL"),
        sqlite_where=sa.text("user_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_provider_subscriptions_every_user", table_name="provider_subscriptions")
    op.drop_index(op.f("ix_provider_subscriptions_user_id"), table_name="provider_subscriptions")
    op.drop_index(op.f("ix_provider_subscriptions_provider"), table_name="provider_subscriptions")
    op.drop_table("provider_subscriptions")
