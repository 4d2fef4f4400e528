"""Schema migrations with Alembic, safe to run from several workers at once."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from orchestrator.errors import SchemaOutdatedError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["alembic_config", "check_schema", "head_revisions", "upgrade"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x4C4F474F5554  # "LOGOUT": one advisory lock for every migrating process
_REVISION = re.compile(r"^(down_)?revision\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)
_UPGRADE = "run `logout-orchestrator db upgrade`"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at our migrations, bound to ``connection``."""
    from alembic.config import Config  # Alembic is loaded only by what migrates

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> tuple[str, str] | None:
    """Bring the schema to ``revision``; on PostgreSQL under an advisory lock. Returns the
    revisions before and after (each ``", "``-joined; ``"none"`` for an empty database), or
    None when the schema was already at the newest revision.

    A schema already at the newest revision costs one query (Alembic is not even loaded);
    otherwise one log line says what was applied, instead of Alembic's own lines.
    """
    import structlog

    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            connection.commit()
        try:
            before = _current(connection)
            if revision == "head" and before == head_revisions():
                return None
            chatty = logging.getLogger("alembic")
            level = chatty.level
            chatty.setLevel(max(logging.WARNING, level))
            try:
                from alembic import command  # its import logs a line per plugin, at INFO

                command.upgrade(alembic_config(connection), revision)
            finally:
                chatty.setLevel(level)
            connection.commit()
            after = _current(connection)
            if after == before:
                return None
            moved = (", ".join(sorted(before)) or "none", ", ".join(sorted(after)))
            structlog.get_logger("logout.store").info(
                "database schema upgraded", before=moved[0], after=moved[1]
            )
            return moved
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                connection.commit()


def _current(connection: Connection) -> set[str]:
    """The revisions the schema is at (none before the first migration)."""
    if not inspect(connection).has_table("alembic_version"):
        return set()
    return set(connection.scalars(text("SELECT version_num FROM alembic_version")))


def _revisions() -> tuple[set[str], set[str]]:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        for down, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            names = set(re.findall(r"[\"']([^\"']+)[\"']", value))
            (parents if down else revisions).update(names)
    return revisions, parents


def head_revisions() -> set[str]:
    """The newest revision(s) of our migrations, read from the version files' headers.

    What Alembic's script directory says, without loading Alembic and every migration
    (a unit test holds the two equal): the revisions no other revision names as its parent.
    """
    revisions, parents = _revisions()
    return revisions - parents


def check_schema(engine: Engine) -> None:
    """Raise :class:`SchemaOutdatedError` unless the schema is at the newest revision.

    For commands that only read: they never migrate, so they say what to run instead.
    """
    with engine.connect() as connection:
        current = _current(connection)
    if not current:
        raise SchemaOutdatedError(f"the database has no schema yet; {_UPGRADE}")
    known, _ = _revisions()
    heads = head_revisions()
    found = ", ".join(sorted(current)) or "none"
    if current - known:
        raise SchemaOutdatedError(
            f"the database schema is at revision {found}, newer than this version knows; "
            "run a newer logout-orchestrator against it"
        )
    if current != heads:
        raise SchemaOutdatedError(
            f"the database schema is at revision {found}, this version needs "
            f"{', '.join(sorted(heads))}; {_UPGRADE}"
        )
