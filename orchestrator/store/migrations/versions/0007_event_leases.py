"""events: the lease of the worker handling an event

A worker renews ``lease_until`` while it handles the event, so recovery and a second copy
of the event's message never take over an event a live worker holds. Rows written before
this revision hold no lease (``null``): they are free to be resumed.

Revision ID: 0007_event_leases
Revises: 0006
Create Date: 2026-11-29 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_event_leases"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_column("lease_until")
