"""Opening the database for a command that only reads (``audit list``), in Core only."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from orchestrator.errors import SchemaOutdatedError
from orchestrator.store.engine import check_connection, make_engine, sqlite_file
from orchestrator.store.migrate import check_schema

__all__ = ["reading_engine"]


def reading_engine(url: str, origin: str = "database_url (LOGOUT_DATABASE_URL)") -> Engine:
    """An engine on ``url`` whose schema is current; it never migrates nor creates a file.
    ``origin`` names where the URL came from in errors (:meth:`Settings.origin`).

    A missing SQLite file, or a missing or older schema, is
    :class:`~orchestrator.errors.SchemaOutdatedError` (run ``db upgrade``); an unreachable
    database is :class:`~orchestrator.errors.DatabaseUnavailableError`.
    """
    file = sqlite_file(make_url(url))
    if file is not None and not file.exists():
        # Opening it would create it (and its folders): a typo would leave files behind.
        raise SchemaOutdatedError(
            f"no database at {file}; check {origin}, or run "
            "`logout-orchestrator db upgrade` to create it"
        )
    engine = make_engine(url, origin)
    try:
        check_connection(engine)
        check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
