"""Small SQL helpers shared by the hot paths (SQLAlchemy Core, no ORM overhead)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

import orjson
from sqlalchemy import Connection, Engine, Executable, Result, Table, bindparam, insert, text
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "InsertIgnoring",
    "dialect_name",
    "engine_of",
    "insert_ignore",
    "insert_ignore_for",
    "json_rows",
]


def dialect_name(db: Connection | Session) -> str:
    """The database a connection or session talks to: ``postgresql``, ``sqlite``..."""
    return db.get_bind().dialect.name if isinstance(db, Session) else db.dialect.name


def insert_ignore(
    db: Connection | Session, table: Table, keys: Sequence[str], where: Any = None
) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` for the connection's dialect (``where``:
    see :func:`insert_ignore_for`)."""
    return insert_ignore_for(dialect_name(db), table, keys, where)


def insert_ignore_for(dialect: str, table: Table, keys: Sequence[str], where: Any = None) -> Any:
    """``INSERT ... ON CONFLICT (keys) [WHERE where] DO NOTHING`` for ``dialect`` (its name);
    ``where`` names a partial unique index (its predicate)."""
    # Each dialect's module is loaded by its engine anyway; SQLite users never load PostgreSQL's.
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=list(keys), index_where=where)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(
            index_elements=list(keys), index_where=where
        )
    return insert(table).prefix_with("IGNORE")  # pragma: no cover - other dialects


def engine_of(database: sessionmaker[Session]) -> Engine:
    """The engine a database handle is bound to."""
    bind = database.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the database handle must be bound to an Engine")
    return bind


@dataclass(frozen=True, slots=True)
class InsertIgnoring:
    """Many rows inserted in one statement unless their ``keys`` exist, returning the
    ``returning`` columns of the rows written, in the order given.

    On PostgreSQL the rows travel as one JSON array that the server expands over the table's
    own row type (``json_populate_record``; ``json``, not ``jsonb``, so that a JSON column keeps
    the very text Python wrote, keys in order): the statement's text is the same whatever the
    number of rows, so psycopg parses it once and the server prepares it once. A multi-row
    ``VALUES`` is new text for every number of rows, with a placeholder per value, and parsing
    it cost the worker ~40 µs of CPU per row (a 100-row audit insert: 5.9 ms of client CPU,
    2.1 ms this way). Elsewhere, SQLAlchemy's multi-row insert. On every dialect the rows
    must give each column that has a Python-side default (``ValueError`` naming them).
    """

    table: Table
    keys: tuple[str, ...]
    returning: tuple[str, ...] = ()

    def execute(
        self, db: Connection | Session, rows: Sequence[Mapping[str, Any]]
    ) -> Result[*tuple[Any, ...]]:
        """Insert ``rows`` (at least one, each with the same columns, named as the table's) in
        the caller's transaction."""
        dialect = dialect_name(db)
        statement = _insert_ignoring(self, dialect, tuple(rows[0]))
        if dialect == "postgresql":
            return db.execute(statement, {"b_rows": json_rows(rows)})
        return db.execute(statement, list(rows))


@cache
def _insert_ignoring(spec: InsertIgnoring, dialect: str, columns: tuple[str, ...]) -> Executable:
    """The statement of ``spec`` for ``dialect`` and these columns, built once."""
    table = spec.table
    # PostgreSQL's server would not fill these in; SQLAlchemy would elsewhere. Refused on
    # every dialect alike, so that rows a SQLite test accepts are rows PostgreSQL accepts.
    missing = [c.name for c in table.c if c.default is not None and c.name not in columns]
    if missing:
        raise ValueError(f"rows of {table.name} must give {missing}: their defaults are Python's")
    if dialect != "postgresql":
        base = insert_ignore_for(dialect, table, spec.keys)
        return cast(Executable, base.returning(*(table.c[name] for name in spec.returning)))
    from sqlalchemy.dialects.postgresql.base import PGDialect  # loaded by its engine anyway

    quote = PGDialect().identifier_preparer  # type: ignore[no-untyped-call]
    name = quote.format_table(table)
    listed = ", ".join(quote.quote(column) for column in columns)
    picked = ", ".join(f"r.{quote.quote(column)}" for column in columns)
    keys = ", ".join(quote.quote(key) for key in spec.keys)
    returned = ", ".join(quote.quote(column) for column in spec.returning)
    # Only the table's own names, quoted by the dialect, go into the text; the rows are bound.
    statement = (
        f"INSERT INTO {name} ({listed}) SELECT {picked} "  # noqa: S608
        "FROM json_array_elements(CAST(:b_rows AS json)) WITH ORDINALITY AS e(value, n) "
        f"CROSS JOIN LATERAL json_populate_record(NULL::{name}, e.value) AS r "
        f"ORDER BY e.n ON CONFLICT ({keys}) DO NOTHING"
        + (f" RETURNING {returned}" if returned else "")
    )
    compiled = text(statement).bindparams(bindparam("b_rows"))
    return compiled.columns(*(table.c[column] for column in spec.returning))


def json_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows as one JSON array for PostgreSQL to expand (timestamps in ISO 8601, UTC).

    Written by orjson: on the engine's path these arrays (its audit records, deliveries and
    outcomes, a few hundred bytes a delivery) cost the standard library's encoder ~15% of the
    engine thread's instructions (``bench.instructions``: 849k → 723k a delivery). What orjson
    refuses (an integer past 64 bits, a key that is not text, a lone surrogate) is written by
    the standard library as before, so every row that was accepted still is, alike (a UUID
    or an enum member, which the standard library refused, is now written as its value; a
    NaN or infinity as ``null``, where PostgreSQL refused the row). Anything else that is no
    column value (not text, number, boolean, null, list, object or timestamp; a naive
    timestamp) is refused, naming its type.
    """
    # A batch's rows share a few timestamps (its ``now`` in several columns of every row):
    # each is converted once, not once per cell.
    texts: dict[datetime, str] = {}

    def value(cell: object) -> str:
        if not isinstance(cell, datetime):
            raise TypeError(f"{type(cell).__name__} is not a column value")
        text = texts.get(cell)
        if text is None:
            text = texts[cell] = _utc_text(cell)
        return text

    try:
        return orjson.dumps(rows, default=value, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError, or what ``value`` refused: as before
        return json.dumps(rows, default=value)


#: Timestamps and dataclasses go to ``default``, as with the standard library's encoder.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _utc_text(value: datetime) -> str:
    """A timestamp in UTC, ISO 8601 (a naive one is refused, as
    :class:`~orchestrator.store.core.UTCDateTime` refuses it)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given where UTC is required")
    return value.astimezone(UTC).isoformat()
