"""Small SQL helpers shared by the hot paths (SQLAlchemy Core, no ORM overhead)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["dialect_name", "engine_of", "insert_ignore", "insert_ignore_for"]


def dialect_name(db: Connection | Session) -> str:
    """The database a connection or session talks to: ``postgresql``, ``sqlite``..."""
    return db.get_bind().dialect.name if isinstance(db, Session) else db.dialect.name


def insert_ignore(db: Connection | Session, table: Table, keys: Sequence[str]) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` for the connection's dialect."""
    return insert_ignore_for(dialect_name(db), table, keys)


def insert_ignore_for(dialect: str, table: Table, keys: Sequence[str]) -> Any:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` for ``dialect`` (its name)."""
    # Each dialect's module is loaded by its engine anyway; SQLite users never load PostgreSQL's.
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=list(keys))
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=list(keys))
    return insert(table).prefix_with("IGNORE")  # pragma: no cover - other dialects


def engine_of(database: sessionmaker[Session]) -> Engine:
    """The engine a database handle is bound to."""
    bind = database.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the database handle must be bound to an Engine")
    return bind
