"""Database engines: SQLite embedded by default, PostgreSQL in production (Core only: the
database handle that opens ORM sessions is :mod:`orchestrator.store.database`)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from orchestrator.errors import ConfigurationError, DatabaseUnavailableError
from orchestrator.settings import redact_url

__all__ = [
    "check_connection",
    "installed_drivers",
    "make_engine",
    "sqlite_file",
]


def installed_drivers() -> list[str]:
    """The databases this installation can use, as a user would name them."""
    drivers = ["sqlite"]
    if find_spec("psycopg") is not None:
        drivers.append("postgresql (psycopg)")
    return drivers


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite ``url`` opens (None: not SQLite, in memory, or a ``file:`` URI)."""
    database = url.database if url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(url: str, origin: str = "database_url (LOGOUT_DATABASE_URL)") -> Engine:
    """An engine for ``url``; ``postgresql://`` uses psycopg 3, SQLite gets WAL and foreign keys.

    ``origin`` names where the URL came from in errors (:meth:`Settings.origin`).
    """
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(
            f"{origin}: cannot parse {redact_url(url)!r}: {exc}; fix it there"
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ConfigurationError(
            f"{origin}: {parsed.drivername}:// is not supported; installed drivers: "
            f"{', '.join(installed_drivers())}. Set it there to a sqlite:/// or postgresql:// "
            "URL"
        )
    if parsed.get_backend_name() == "sqlite":
        file = sqlite_file(parsed)
        if file is not None:
            directory = file.parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot create the database directory {directory}: {exc.strerror}; "
                    "set data_dir (LOGOUT_DATA_DIR) or database_url to a writable place"
                ) from exc
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def check_connection(engine: Engine) -> None:
    """Connect once; raise :class:`DatabaseUnavailableError` naming the database and why."""
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        raise DatabaseUnavailableError(_unreachable(engine, exc)) from exc


def _unreachable(engine: Engine, exc: DBAPIError) -> str:
    """One sentence: which database, what the driver said, and what to do."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    reason = reason.rstrip(".")
    shown = engine.url.set(drivername=engine.url.get_backend_name())  # as the user wrote it
    url = redact_url(shown.render_as_string(hide_password=False))
    return (
        f"database unreachable: {url}: {reason}; start it, or fix database_url "
        "(LOGOUT_DATABASE_URL)"
    )
