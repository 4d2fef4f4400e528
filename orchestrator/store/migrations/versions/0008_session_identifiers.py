"""provider_sessions: the protocol's identifiers in one JSON column, opaque to the host

The seven identifier columns (``sid``, ``sub``, ``name_id``, ``name_id_format``,
``name_qualifier``, ``sp_name_qualifier``, ``session_index``) become one ``identifiers``
object holding those that had a value, under the same names (one UPDATE). The downgrade
puts them back, and refuses before changing anything when some row holds what the old
columns cannot keep (another identifier, such as a CAS ``ticket``; a value over 255
characters).
Nothing looks provider sessions up by an identifier (discovery goes by IdP session), so no
index is lost.

Revision ID: 0008_session_identifiers
Revises: 0007_event_leases
Create Date: 2026-11-29 11:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from schemas.errors import InputError, Problem

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
#: The longest value a ``String(255)`` column of the old schema keeps.
_OLD_LIMIT = 255


def _postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def _member(name: str) -> str:
    """SQL for the text of member ``name`` of a row's identifiers (NULL when absent)."""
    if _postgresql():
        return f"provider_sessions.identifiers ->> '{name}'"
    return f"json_extract(provider_sessions.identifiers, '$.{name}')"


def upgrade() -> None:
    with op.batch_alter_table("provider_sessions") as batch_op:
        batch_op.add_column(
            sa.Column("identifiers", sa.JSON(), nullable=False, server_default="{}")
        )
    # One statement: the object of the columns that have a value. PostgreSQL drops the
    # nulls with json_strip_nulls; SQLite with json_patch, which removes a member whose
    # patch value is null (RFC 7396).
    pairs = ", ".join(f"'{name}', {name}" for name in _COLUMNS)
    built = (
        f"json_strip_nulls(json_build_object({pairs}))"
        if _postgresql()
        else f"json_patch('{{}}', json_object({pairs}))"
    )
    op.execute(f"UPDATE provider_sessions SET identifiers = {built}")
    with op.batch_alter_table("provider_sessions") as batch_op:
        for name in _COLUMNS:
            batch_op.drop_column(name)


def _unkept() -> str | None:
    """Why the old columns cannot hold every row's identifiers (None: they can): identifier
    names other than the seven (a third handler's ``ticket``), values longer than a
    ``String(255)`` column keeps. Counted before anything changes."""
    connection = op.get_bind()
    known = ", ".join(f"'{name}'" for name in _COLUMNS)
    if _postgresql():
        keys = "json_object_keys(provider_sessions.identifiers) AS found(key)"
    else:
        keys = "json_each(provider_sessions.identifiers) AS found"
    other = f"found.key NOT IN ({known})"
    too_long = " OR ".join(
        f"length({_member(name)}) > {_OLD_LIMIT}"
        for name, kind in _COLUMNS.items()
        if not isinstance(kind, sa.Text)
    )
    by_key = connection.execute(
        sa.text(
            f"SELECT found.key, count(*) FROM provider_sessions, {keys} WHERE {other} "
            "GROUP BY found.key ORDER BY found.key"
        )
    ).all()
    long_rows = connection.execute(
        sa.text(f"SELECT count(*) FROM provider_sessions WHERE {too_long}")
    ).scalar_one()
    if not by_key and not long_rows:
        return None
    rows = connection.execute(
        sa.text(
            f"SELECT count(*) FROM provider_sessions WHERE ({too_long}) OR EXISTS "
            f"(SELECT 1 FROM {keys} WHERE {other})"
        )
    ).scalar_one()
    found = [f"{key} ({count})" for key, count in by_key]
    if long_rows:
        found.append(f"values over {_OLD_LIMIT} characters ({long_rows})")
    return (
        f"{rows} provider sessions hold identifiers the old columns cannot keep: "
        f"{', '.join(found)}; remove those provider sessions (or their providers) first, "
        "then downgrade again (nothing was changed)"
    )


def downgrade() -> None:
    refusal = _unkept()
    if refusal is not None:
        raise InputError([Problem("", "", refusal)])
    with op.batch_alter_table("provider_sessions") as batch_op:
        for name, kind in _COLUMNS.items():
            batch_op.add_column(sa.Column(name, kind, nullable=True))
    columns = ", ".join(f"{name} = {_member(name)}" for name in _COLUMNS)
    op.execute(f"UPDATE provider_sessions SET {columns}")
    with op.batch_alter_table("provider_sessions") as batch_op:
        batch_op.drop_column("identifiers")
