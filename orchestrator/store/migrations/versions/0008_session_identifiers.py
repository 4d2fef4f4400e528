"""provider_sessions: the protocol's identifiers in one JSON column, opaque to the host

The seven identifier columns (``sid``, ``sub``, ``name_id``, ``name_id_format``,
``name_qualifier``, ``sp_name_qualifier``, ``session_index``) become one ``identifiers``
object holding those that had a value, under the same names; the downgrade puts them back.
Nothing looks provider sessions up by an identifier (discovery goes by IdP session), so no
index is lost.

Revision ID: 0008_session_identifiers
Revises: 0007_event_leases
Create Date: 2026-11-29 11:50:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008_session_identifiers"
down_revision = "0007_event_leases"
branch_labels = None
depends_on = None

_COLUMNS = {
    "sid": sa.String(255),
    "sub": sa.String(255),
    "name_id": sa.Text(),
    "name_id_format": sa.String(255),
    "name_qualifier": sa.String(255),
    "sp_name_qualifier": sa.String(255),
    "session_index": sa.String(255),
}
_BATCH = 5000


def _table(*columns: str) -> sa.TableClause:
    return sa.table(
        "provider_sessions",
        sa.column("id", sa.Integer()),
        sa.column("identifiers", sa.JSON()),
        *(sa.column(name, _COLUMNS[name]) for name in columns),
    )


def _rewrite(read: list[str], write: Any) -> None:
    """Every row, ``_BATCH`` at a time by id: ``write(row)`` gives the values to set."""
    table = _table(*_COLUMNS)
    connection = op.get_bind()
    last = -1
    while True:
        rows = connection.execute(
            sa.select(table.c.id, *(table.c[name] for name in read))
            .where(table.c.id > last)
            .order_by(table.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        last = rows[-1].id
        values = [{"row_id": row.id, **write(row)} for row in rows]
        names = [name for name in values[0] if name != "row_id"]
        connection.execute(
            table.update()
            .where(table.c.id == sa.bindparam("row_id"))
            .values({name: sa.bindparam(name) for name in names}),
            values,
        )


def upgrade() -> None:
    with op.batch_alter_table("provider_sessions") as batch_op:
        batch_op.add_column(
            sa.Column("identifiers", sa.JSON(), nullable=False, server_default="{}")
        )

    def identifiers(row: Any) -> dict[str, Any]:
        found = {name: getattr(row, name) for name in _COLUMNS}
        return {"identifiers": {k: v for k, v in found.items() if v is not None}}

    _rewrite(list(_COLUMNS), identifiers)
    with op.batch_alter_table("provider_sessions") as batch_op:
        for name in _COLUMNS:
            batch_op.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table("provider_sessions") as batch_op:
        for name, kind in _COLUMNS.items():
            batch_op.add_column(sa.Column(name, kind, nullable=True))

    def columns(row: Any) -> dict[str, Any]:
        given = row.identifiers or {}
        return {name: given.get(name) for name in _COLUMNS}

    _rewrite(["identifiers"], columns)
    with op.batch_alter_table("provider_sessions") as batch_op:
        batch_op.drop_column("identifiers")
