"""Bulk session import: check every record first, then write with set-based upserts.

:class:`SessionImport` is what :meth:`SessionRegistry.import_records` runs inside its one
transaction. Nothing is written until every record has passed: its binding modes against the
configured GeoIP databases, its references (provider, IdP session), the IdP session's owner,
and the provider session's identifiers against its protocol handler
(:meth:`ProtocolHandler.validate_provider_session`). Then the rows, merged in memory exactly as
one-by-one upserts would leave them (a session or provider session repeated in the input is
one row, updated by each later record), go out as ``INSERT ... ON CONFLICT DO UPDATE`` in
chunks of :data:`CHUNK` rows (SQLAlchemy sends each chunk as multi-row ``VALUES``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    Table,
    any_,
    bindparam,
    column,
    select,
    text,
)
from sqlalchemy import table as sql_table
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from orchestrator.binding import BoundSession, InvalidAddressError, IpFacts, unserved_modes
from orchestrator.errors import InputError, LogoutError, Problem
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import IdpSession, Provider, ProviderSession, utcnow
from protocols import ProtocolHandler, ProviderInfo
from schemas import ProviderSessionRecord, SessionRecord

__all__ = ["CHUNK", "GeoipDatabases", "ImportCounts", "Progress", "SessionImport"]

#: Rows per statement (and between two progress reports while writing).
CHUNK = 2000
#: Rows per ``COPY`` and upsert from the temporary table (PostgreSQL).
_COPY_CHUNK = 10_000
#: Fewest rows worth a temporary table and ``COPY`` (PostgreSQL); fewer, as one login's
#: session, go by a plain upsert.
_COPY_FROM = 1000
#: Keys per ``IN (...)`` list when reading what already exists (SQLite's parameter limit).
_KEYS_PER_QUERY = 900

#: ``progress(stage, done, total)``: ``stage`` is ``"validating"`` or ``"writing"``.
Progress = Callable[[str, int, int], None]

_SESSIONS = cast(Table, IdpSession.__table__)
_LINKS = cast(Table, ProviderSession.__table__)
_PROVIDERS = cast(Table, Provider.__table__)
_FACTS = ("asn", "as_org", "as_network", "continent", "country", "city", "lat", "long")
#: The provider session's protocol identifiers: one JSON object, opaque to the host.
_IDENTIFIERS = ("identifiers",)
#: Columns an import sets on an IdP session that already exists (never its owner or end).
_SESSION_UPDATES = (
    "last_seen",
    "expires_at",
    "ip",
    "user_agent",
    "remember_me",
    "stay_signed_in",
    "network_binding",
    "geoip_binding",
    *_FACTS,
)
_SESSION_COLUMNS = ("session_id", "user_id", "created_at", *_SESSION_UPDATES)
_FACTS_GIVEN = frozenset(_FACTS)
#: Fields of a record that make its session's login facts be recorded again.
_FACTS_TOUCHED = frozenset({"ip", "network_binding", "geoip_binding", *_FACTS})
_LINK_COLUMNS = ("session_id", "provider", "created_at", *_IDENTIFIERS)


@dataclass(frozen=True, slots=True)
class GeoipDatabases:
    """Which GeoIP databases are configured (``geoip_asn_db``, ``geoip_city_db``)."""

    asn: bool = False
    city: bool = False


@dataclass(slots=True)
class ImportCounts:
    """Rows created and updated, per table."""

    sessions_created: int = 0
    sessions_updated: int = 0
    links_created: int = 0
    links_updated: int = 0
    #: Enabled providers with no enabled handler, and how many of their sessions came in.
    unchecked: dict[str, int] = field(default_factory=dict)
    #: Providers whose stored settings their handler now refuses, likewise.
    stale: dict[str, int] = field(default_factory=dict)


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
        self._handlers = handlers
        self._policy = policy
        self._lookup = lookup
        self._databases = databases
        self._progress = progress
        # Problems found before (the input's own), reported with these checks' in one round.
        self._problems: list[Problem] = list(refused)
        self._refused_sessions = frozenset(refused_sessions)
        self._sessions: dict[str, dict[str, Any]] = {}
        self._links: dict[tuple[str, str], dict[str, Any]] = {}
        self._stored: set[str] = set()  # IdP sessions stored before this import
        self._stored_keys: set[tuple[str, str]] = set()  # provider sessions likewise
        self.counts = ImportCounts()

    # -- checking ----------------------------------------------------------------------

    def check(
        self,
        conn: Connection,
        sessions: Sequence[SessionRecord],
        links: Sequence[ProviderSessionRecord],
        where: Mapping[int, str],
    ) -> None:
        """Merge the records with what is stored; raise :class:`InputError` naming every
        record that cannot be written, and the field and fix, before anything is."""
        existing = self._stored_sessions(conn, {s.session_id for s in sessions})
        self._stored = set(existing)
        for rec in sessions:
            self._merge_session(rec, existing, where.get(id(rec)))
        if links:
            self._merge_links(conn, links, where)
        if self._problems:
            raise InputError(self._problems)

    def _merge_session(
        self, rec: SessionRecord, existing: Mapping[str, dict[str, Any]], label: str | None
    ) -> None:
        where = label or f"session {rec.session_id!r}"
        bound = rec.network_binding != "no_binding" or rec.geoip_binding != "no_binding"
        if bound:
            unserved = unserved_modes(
                rec.network_binding,
                rec.geoip_binding,
                has_asn_database=self._databases.asn,
                has_city_database=self._databases.city,
            )
            self._problems.extend(Problem(where, name, reason) for name, reason in unserved)
        row = self._sessions.get(rec.session_id) or existing.get(rec.session_id)
        if bound and rec.ip is None and (row is None or row["ip"] is None):
            # Nothing to compare a later address with: every check would end the session.
            self._problems.append(
                Problem(
                    where,
                    "ip",
                    "a network or GeoIP binding needs the login's address: give ip, or use "
                    "no_binding",
                )
            )
        if row is None:
            started = rec.created or utcnow()
            row = {
                "session_id": rec.session_id,
                "user_id": rec.user_id,
                "created_at": started,
                "last_seen": rec.last_seen or started,
                "expires_at": self._policy.expires_at(
                    started, remember_me=rec.remember_me, stay_signed_in=rec.stay_signed_in
                ),
                "ip": None,
                "user_agent": None,
                "remember_me": rec.remember_me,
                "stay_signed_in": rec.stay_signed_in,
                "network_binding": rec.network_binding,
                "geoip_binding": rec.geoip_binding,
                **dict.fromkeys(_FACTS),
            }
            self.counts.sessions_created += 1
            if bound or _FACTS_GIVEN & rec.model_fields_set:
                self._record_facts(row, rec, where)
        else:
            given = rec.model_fields_set
            if row["user_id"] != rec.user_id:
                self._problems.append(
                    Problem(
                        where,
                        "user_id",
                        f"belongs to user {row['user_id']!r}; a session never moves",
                    )
                )
                return
            self.counts.sessions_updated += 1
            if rec.last_seen is not None:
                row["last_seen"] = rec.last_seen
            for name in ("remember_me", "stay_signed_in", "network_binding", "geoip_binding"):
                if name in given:
                    row[name] = getattr(rec, name)
            if given & _FACTS_TOUCHED:
                self._record_facts(row, rec, where)
        row["expires_at"] = rec.expires or row["expires_at"]
        row["ip"] = rec.ip or row["ip"]
        row["user_agent"] = rec.user_agent or row["user_agent"]
        self._sessions[rec.session_id] = row

    def _record_facts(self, row: dict[str, Any], rec: SessionRecord, where: str) -> None:
        """The login address's facts a binding compares with: given, or looked up."""
        given = {name: getattr(rec, name) for name in _FACTS}
        if any(value is not None for value in given.values()):
            row.update(given)
            return
        bound = row["network_binding"] != "no_binding" or row["geoip_binding"] != "no_binding"
        address = rec.ip or row["ip"]
        if not bound or address is None or self._lookup is None:
            return
        try:
            facts = self._lookup(address)
        except InvalidAddressError as exc:
            self._problems.append(Problem(where, "ip", str(exc)))
            return
        login = BoundSession.at_login(rec.session_id, facts)
        row.update({name: getattr(login, name) for name in _FACTS})

    def _merge_links(
        self, conn: Connection, links: Sequence[ProviderSessionRecord], where: Mapping[int, str]
    ) -> None:
        providers = self._providers(conn, {link.provider for link in links})
        wanted = {link.session_id for link in links}
        known_ids = set(self._sessions)
        stored_ids = self._existing_ids(conn, wanted - known_ids)
        # Only a session stored before this import can already have provider sessions.
        stored_links = self._stored_links(conn, (wanted & self._stored) | stored_ids)
        self._stored_keys = set(stored_links)
        labels: dict[tuple[str, str], str] = {}
        for link in links:
            label = where.get(id(link)) or f"provider session {link.session_id}/{link.provider}"
            known = True
            if link.provider not in providers:
                self._problems.append(
                    Problem(label, "provider", "no such provider (load it first)")
                )
                known = False
            if link.session_id not in known_ids and link.session_id not in stored_ids:
                if link.session_id not in self._refused_sessions:
                    self._problems.append(Problem(label, "session_id", "no such IdP session"))
                known = False
            if not known:
                continue
            key = (link.session_id, link.provider)
            row = self._links.get(key) or stored_links.get(key)
            if row is None:
                row = {
                    "session_id": link.session_id,
                    "provider": link.provider,
                    "created_at": link.created or utcnow(),
                    "identifiers": {},
                }
                self.counts.links_created += 1
            else:
                self.counts.links_updated += 1
            row["identifiers"] = {**row["identifiers"], **link.given_identifiers()}
            self._links[key] = row
            labels[key] = label
        self._check_identifiers(providers, labels)

    def _check_identifiers(
        self, providers: Mapping[str, ProviderInfo], labels: Mapping[tuple[str, str], str]
    ) -> None:
        """Each provider session as it will be stored, checked by its protocol's handler."""
        for key, label in labels.items():
            info = providers[key[1]]
            handler = self._handlers.get(info.protocol)
            if handler is None:
                if info.enabled:
                    self.counts.unchecked[info.name] = self.counts.unchecked.get(info.name, 0) + 1
                continue
            if info.settings is None:
                self.counts.stale[info.name] = self.counts.stale.get(info.name, 0) + 1
                continue
            row = self._links[key]
            for problem in handler.identifier_problems(info, row["identifiers"]):
                self._problems.append(Problem(label, problem.field, problem.message))

    def _providers(self, conn: Connection, names: Collection[str]) -> dict[str, ProviderInfo]:
        """The named providers, their settings as their handler parses them (None: refused)."""
        found: dict[str, ProviderInfo] = {}
        for where in _among(conn, _PROVIDERS.c.name, names):
            for row in conn.execute(select(_PROVIDERS).where(where)).mappings():
                handler = self._handlers.get(row["protocol"])
                settings: Any = row["settings"]
                if handler is not None:
                    try:
                        settings = handler.stored_settings(row["name"], row["settings"])
                    except InputError:
                        settings = None
                found[row["name"]] = ProviderInfo(
                    name=row["name"],
                    protocol=row["protocol"],
                    enabled=row["enabled"],
                    full_logout_on_rp_initiated=row["full_logout_on_rp_initiated"],
                    settings=settings,
                )
        return found

    @staticmethod
    def _stored_sessions(conn: Connection, ids: Collection[str]) -> dict[str, dict[str, Any]]:
        """Stored IdP sessions among ``ids`` (locked on PostgreSQL until the commit)."""
        columns = [_SESSIONS.c[name] for name in _SESSION_COLUMNS]
        found: dict[str, dict[str, Any]] = {}
        for where in _among(conn, _SESSIONS.c.session_id, ids):
            query = select(*columns).where(where).with_for_update()
            for row in conn.execute(query).all():
                found[row[0]] = dict(zip(_SESSION_COLUMNS, row, strict=True))
        return found

    @staticmethod
    def _existing_ids(conn: Connection, ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        for where in _among(conn, _SESSIONS.c.session_id, ids):
            found.update(conn.scalars(select(_SESSIONS.c.session_id).where(where)))
        return found

    @staticmethod
    def _stored_links(
        conn: Connection, session_ids: Collection[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        columns = [_LINKS.c[name] for name in _LINK_COLUMNS]
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for where in _among(conn, _LINKS.c.session_id, session_ids):
            query = select(*columns).where(where).with_for_update()
            for row in conn.execute(query).all():
                found[(row[0], row[1])] = dict(zip(_LINK_COLUMNS, row, strict=True))
        return found

    # -- writing -----------------------------------------------------------------------

    def write(self, conn: Connection) -> None:
        """Upsert the merged rows: IdP sessions, then provider sessions.

        PostgreSQL, from :data:`_COPY_FROM` rows: the rows new to the database go by ``COPY``
        straight into their table (under a savepoint: should another transaction have
        created one of them since :meth:`check`, the unique key refuses the ``COPY``, and
        they go the upsert's way instead); the stored ones by ``COPY`` into a temporary
        table, then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``. Fewer rows (a login)
        and SQLite: the upsert, executed for many rows at once.
        """
        sessions = list(self._sessions.values())
        links = list(self._links.values())
        total = len(sessions) + len(links)
        written = 0

        def advanced(count: int) -> None:
            nonlocal written
            written += count
            self._report("writing", written, total)

        self._report("writing", 0, total)
        if conn.dialect.name == "postgresql" and total >= _COPY_FROM:
            _copy_write(
                conn,
                _SESSIONS,
                _SESSION_COLUMNS,
                ("session_id",),
                _SESSION_UPDATES,
                sessions,
                [sid not in self._stored for sid in self._sessions],
                advanced,
            )
            _copy_write(
                conn,
                _LINKS,
                _LINK_COLUMNS,
                ("session_id", "provider"),
                _IDENTIFIERS,
                links,
                [key not in self._stored_keys for key in self._links],
                advanced,
            )
            return
        if sessions:
            _executemany_upsert(
                conn, _SESSIONS, ("session_id",), _SESSION_UPDATES, sessions, advanced
            )
        if links:
            _executemany_upsert(
                conn, _LINKS, ("session_id", "provider"), _IDENTIFIERS, links, advanced
            )

    def _report(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(stage, done, total)


def _conflict_update(statement: Any, keys: Sequence[str], updates: Iterable[str]) -> Any:
    """``statement ON CONFLICT (keys) DO UPDATE SET`` each of ``updates`` to the new value."""
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: statement.excluded[name] for name in updates}
    )


def _executemany_upsert(
    conn: Connection,
    table: Table,
    keys: Sequence[str],
    updates: Iterable[str],
    rows: Sequence[dict[str, Any]],
    advanced: Callable[[int], None],
) -> None:
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = _conflict_update(insert(table), keys, updates)
    for chunk in _chunks(rows, CHUNK):
        conn.execute(statement, list(chunk))
        advanced(len(chunk))


def _copy_write(
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
    for chunk in _chunks(rows, _COPY_CHUNK):
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
    for chunk in _chunks(rows, _COPY_CHUNK):
        _copy_rows(conn, staging, columns, chunk, lambda _: None)
        conn.execute(upsert)
        conn.execute(empty)
        advanced(len(chunk))


def _among(
    conn: Connection, key: ColumnElement[str], values: Collection[str]
) -> Iterable[ColumnElement[bool]]:
    """Conditions that together select the rows whose ``key`` is one of ``values``: one
    ``= ANY(array)`` on PostgreSQL, ``IN`` lists of :data:`_KEYS_PER_QUERY` elsewhere."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        yield key == any_(bindparam("keys", list(values), type_=ARRAY(String)))
        return
    for chunk in _chunks(sorted(values), _KEYS_PER_QUERY):
        yield key.in_(chunk)


_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
