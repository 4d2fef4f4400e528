"""Checked at the start of a command that delivers: every directory it will write is writable.

The embedded SQLite database's directory and each handler's generated-key directory
(:meth:`ProtocolHandler.key_directories`). A read-only or misplaced data directory is then
a configuration error (exit 6) naming the directory, the setting and its source, before any
event is taken, instead of a logout that fails when its first token is signed.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import make_url

from orchestrator.errors import ConfigurationError
from orchestrator.settings import Settings
from orchestrator.store.engine import sqlite_file
from protocols import ProtocolHandler
from protocols.keyfiles import KeyDirectory, unwritable_reason

__all__ = ["check_writable"]


def check_writable(settings: Settings, handlers: Mapping[str, ProtocolHandler]) -> None:
    """Raise :class:`ConfigurationError` naming every directory that cannot be written, the
    setting to change (and where it was set), and what avoids writing keys at all."""
    sentences = []
    database = sqlite_file(make_url(settings.effective_database_url))
    if database is not None:
        reason = unwritable_reason(database.parent, 0o777)
        if reason is not None:
            where = settings.origin("database_url" if settings.database_url else "data_dir")
            sentences.append(
                f"cannot write the database's directory {database.parent} ({reason}); set "
                f"{where} to a writable place"
            )
    failed: list[tuple[KeyDirectory, str]] = []
    for handler in handlers.values():
        for target in handler.key_directories():
            reason = unwritable_reason(target.path)
            if reason is not None:
                failed.append((target, reason))
    if failed:
        listed = ", ".join(f"{target.path} ({reason})" for target, reason in failed)
        instead = "; ".join(target.instead for target, _ in failed)
        sentences.append(
            f"cannot write generated signing keys to {listed}; set "
            f"{settings.origin('data_dir')} to a writable directory, or configure keys: {instead}"
        )
    if sentences:
        raise ConfigurationError(". ".join(sentences))
