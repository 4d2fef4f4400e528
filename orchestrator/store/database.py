"""The database handle: ORM sessions on an engine, for the commands and workers that write."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "make_database"]

#: Opens ORM sessions on one engine: ``with database() as db`` or ``database.begin()``.
Database = sessionmaker[Session]


def make_database(engine: Engine) -> Database:
    """The database handle of ``engine``; loaded objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
