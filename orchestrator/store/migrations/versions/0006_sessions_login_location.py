"""idp_sessions: the login's AS organisation and location

A broken binding's record shows the login's full ASN record (``as_org``) and GeoIP record
(``lat``, ``long``) beside the new address's; these were looked up at login but not kept.
Sessions recorded before this revision keep ``null`` there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 06:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("idp_sessions") as batch_op:
        batch_op.add_column(sa.Column("as_org", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("lat", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("long", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idp_sessions") as batch_op:
        batch_op.drop_column("long")
        batch_op.drop_column("lat")
        batch_op.drop_column("as_org")
