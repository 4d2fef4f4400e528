"""Writing an import's rows: multi-row upserts, or on PostgreSQL binary ``COPY``.

Rows new to the database go by ``COPY`` straight into their table; the stored ones by ``COPY``
into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``. Fewer than
:data:`COPY_FROM` rows (one login's session), and SQLite, take the upsert in chunks of
:data:`CHUNK` rows (SQLAlchemy sends each chunk as multi-row ``VALUES``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, column, select, text
from sqlalchemy import table as sql_table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from orchestrator.errors import LogoutError
from orchestrator.importing.stored import chunks

__all__ = ["CHUNK", "COPY_FROM", "copy_write", "executemany_upsert"]

#: Rows per statement (and between two progress reports while writing).
CHUNK = 2000
#: Fewest rows worth a temporary table and ``COPY`` (PostgreSQL); fewer, as one login's
#: session, go by a plain upsert.
COPY_FROM = 1000
#: Rows per ``COPY`` and upsert from the temporary table (PostgreSQL).
_COPY_CHUNK = 10_000


def _conflict_update(statement: Any, keys: Sequence[str], updates: Iterable[str]) -> Any:
    """``statement ON CONFLICT (keys) DO UPDATE SET`` each of ``updates`` to the new value."""
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: statement.excluded[name] for name in updates}
    )


def executemany_upsert(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    updates: Iterable[str],
    rows: Sequence[dict[str, Any]],
    advanced: Callable[[int], None],
) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` the ``rows``, :data:`CHUNK` at a time."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = _conflict_update(insert(table), keys, updates)
    for chunk in chunks(rows, CHUNK):
        conn.execute(statement, list(chunk))
        advanced(len(chunk))


def copy_write(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    updates: Iterable[str],
    rows: Sequence[dict[str, Any]],
    new: Sequence[bool],
    advanced: Callable[[int], None],
) -> None:
    """PostgreSQL: ``COPY`` the rows ``new`` marks straight into ``table``; the others, and
    all of them when one turns out to exist by now, by :func:`_copy_upsert`."""
    import psycopg  # PostgreSQL only: SQLite users of the registry never load it

    fresh = [row for row, is_new in zip(rows, new, strict=True) if is_new]
    stored = [row for row, is_new in zip(rows, new, strict=True) if not is_new]
    if fresh:
        savepoint = conn.begin_nested()
        try:
            _copy_rows(conn, table.name, columns, fresh, lambda _: None)
        except psycopg.errors.UniqueViolation:
            savepoint.rollback()  # created by someone else meanwhile: upsert them all
            stored += fresh
        else:
            savepoint.commit()
            advanced(len(fresh))
    if stored:
        _copy_upsert(conn, table, columns, keys, updates, stored, advanced)


def _copy_rows(
    conn: Connection,
    target: str,
    columns: Sequence[str],
    rows: Sequence[dict[str, Any]],
    advanced: Callable[[int], None],
) -> None:
    """``COPY target (columns) FROM STDIN`` in binary, :data:`_COPY_CHUNK` rows at a time.

    Binary rows cost the client about a seventh of text ones (no value is formatted as
    text) and the server less parsing; the columns' types are read from the catalog.
    """
    import psycopg

    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise LogoutError("PostgreSQL is reached through psycopg 3 (postgresql+psycopg://)")
    catalog = text(
        "SELECT attname, atttypid::int FROM pg_attribute "
        "WHERE attrelid = CAST(:target AS regclass) AND attnum > 0 AND NOT attisdropped"
    )
    types: dict[str, int] = {name: oid for name, oid in conn.execute(catalog, {"target": target})}
    listed = ", ".join(columns)
    values = itemgetter(*columns)
    for chunk in chunks(rows, _COPY_CHUNK):
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {target} ({listed}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types([types[name] for name in columns])
            for row in chunk:
                copy.write_row(values(row))
        advanced(len(chunk))


def _copy_upsert(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    updates: Iterable[str],
    rows: Sequence[dict[str, Any]],
    advanced: Callable[[int], None],
) -> None:
    """``COPY`` the rows into a temporary table (dropped at commit), then upsert from it."""
    staging = f"import_{table.name}"
    listed = ", ".join(columns)
    conn.execute(
        text(
            f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS "  # noqa: S608 - our names
            f"SELECT {listed} FROM {table.name} WITH NO DATA"
        )
    )
    staged = sql_table(staging, *(column(name) for name in columns))
    upsert = _conflict_update(
        pg_insert(table).from_select(list(columns), select(*staged.c)), keys, updates
    )
    empty = text(f"TRUNCATE {staging}")
    for chunk in chunks(rows, _COPY_CHUNK):
        _copy_rows(conn, staging, columns, chunk, lambda _: None)
        conn.execute(upsert)
        conn.execute(empty)
        advanced(len(chunk))
