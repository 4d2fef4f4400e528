"""One import: check every record, then write them all (:class:`SessionImport`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from sqlalchemy import Connection

from orchestrator.binding import IpFacts
from orchestrator.errors import InputError, Problem
from orchestrator.importing.columns import (
    IDENTIFIERS,
    LINK_COLUMNS,
    LINKS,
    SESSION_COLUMNS,
    SESSION_UPDATES,
    SESSIONS,
)
from orchestrator.importing.link_rows import LinkRows
from orchestrator.importing.merged import Merged
from orchestrator.importing.session_rows import GeoipDatabases, SessionRows
from orchestrator.importing.stored import stored_sessions
from orchestrator.importing.writing import COPY_FROM, copy_write, executemany_upsert
from orchestrator.session_policy import SessionPolicy
from protocols import ProtocolHandler
from schemas import ProviderSessionRecord, SessionRecord

__all__ = ["Progress", "SessionImport"]

#: ``progress(stage, done, total)``: ``stage`` is ``"validating"`` or ``"writing"``.
Progress = Callable[[str, int, int], None]


class SessionImport:
    """One import: :meth:`check` the records, then :meth:`write` them (same connection)."""

    def __init__(
        self,
        handlers: Mapping[str, ProtocolHandler],
        policy: SessionPolicy,
        lookup: Callable[[str], IpFacts] | None,
        databases: GeoipDatabases,
        progress: Progress | None = None,
        *,
        refused: Sequence[Problem] = (),
        refused_sessions: Collection[str] = (),
    ) -> None:
        self._progress = progress
        # Problems found before (the input's own), reported with these checks' in one round.
        self._merged = Merged(problems=list(refused))
        self._session_rows = SessionRows(self._merged, policy, lookup, databases)
        self._link_rows = LinkRows(self._merged, handlers, refused_sessions)
        self.counts = self._merged.counts

    def check(
        self,
        conn: Connection,
        sessions: Sequence[SessionRecord],
        links: Sequence[ProviderSessionRecord],
        where: Mapping[int, str],
    ) -> None:
        """Merge the records with what is stored; raise :class:`InputError` naming every
        record that cannot be written, and the field and fix, before anything is."""
        existing = stored_sessions(conn, {s.session_id for s in sessions})
        self._merged.stored = set(existing)
        for rec in sessions:
            self._session_rows.merge(rec, existing, where.get(id(rec)))
        if links:
            self._link_rows.merge(conn, links, where)
        if self._merged.problems:
            raise InputError(self._merged.problems)

    def write(self, conn: Connection) -> None:
        """Upsert the merged rows: IdP sessions, then provider sessions.

        PostgreSQL, from :data:`~orchestrator.importing.writing.COPY_FROM` rows: the rows new
        to the database go by ``COPY`` straight into their table (under a savepoint: should
        another transaction have created one of them since :meth:`check`, the unique key
        refuses the ``COPY``, and they go the upsert's way instead); the stored ones by
        ``COPY`` into a temporary table, then one ``INSERT ... SELECT ... ON CONFLICT DO
        UPDATE``. Fewer rows (a login) and SQLite: the upsert, executed for many rows at once.
        """
        merged = self._merged
        sessions = list(merged.sessions.values())
        links = list(merged.links.values())
        total = len(sessions) + len(links)
        written = 0

        def advanced(count: int) -> None:
            nonlocal written
            written += count
            self._report("writing", written, total)

        self._report("writing", 0, total)
        if conn.dialect.name == "postgresql" and total >= COPY_FROM:
            copy_write(
                conn,
                SESSIONS,
                SESSION_COLUMNS,
                ("session_id",),
                SESSION_UPDATES,
                sessions,
                [sid not in merged.stored for sid in merged.sessions],
                advanced,
            )
            copy_write(
                conn,
                LINKS,
                LINK_COLUMNS,
                ("session_id", "provider"),
                IDENTIFIERS,
                links,
                [key not in merged.stored_keys for key in merged.links],
                advanced,
            )
            return
        if sessions:
            executemany_upsert(conn, SESSIONS, ("session_id",), SESSION_UPDATES, sessions, advanced)
        if links:
            executemany_upsert(
                conn, LINKS, ("session_id", "provider"), IDENTIFIERS, links, advanced
            )

    def _report(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(stage, done, total)
