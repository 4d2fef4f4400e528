"""Reading the audit trail: filters, pages and keyset streaming, in SQLAlchemy Core.

What ``audit list`` runs, so it loads neither the ORM nor the logging stack; it reads through
a Core connection or an ORM session alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    Select,
    and_,
    column,
    func,
    or_,
    select,
    table,
    text,
    union,
)

from orchestrator.errors import IncompleteError, InputError, Problem
from orchestrator.store.core import AUDIT_LOCK_KEY, audit_records
from schemas.audit import AuditRecord, AuditType

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "AUDIT_TYPE_FAMILIES",
    "HORIZON_WAIT",
    "PAGE_SIZE",
    "TIMESTAMP_RANGE",
    "AuditPage",
    "AuditQuery",
    "audit_horizon",
    "audit_types",
    "iter_audit",
    "parse_timestamp",
    "query_audit",
    "read_audit_page",
    "resolve_event_id",
]

_AUDIT = audit_records.c
#: The ``events`` table's ids, as Core reads them: the mapped table
#: (:data:`orchestrator.store.tables.EVENTS`) would load the ORM into every reading command.
_EVENT_IDS = table("events", column("event_id"))

#: Record types by family: ``delivery.`` selects every ``delivery.*`` type.
AUDIT_TYPE_FAMILIES: tuple[str, ...] = tuple(
    sorted({member.value.partition(".")[0] + "." for member in AuditType})
)

#: How many records one keyset page of :func:`iter_audit` reads.
PAGE_SIZE = 500

#: The trail's lock as ``pg_locks`` shows a one-bigint advisory key.
_THE_LOCK = (
    "locktype = 'advisory' AND granted AND objsubid = 1 "
    f"AND classid = {AUDIT_LOCK_KEY >> 32} AND objid = {AUDIT_LOCK_KEY & 0xFFFFFFFF}"
)
_HOLDERS = text(f"SELECT virtualtransaction FROM pg_locks WHERE {_THE_LOCK}")  # noqa: S608
_STILL_HOLDING = text(
    f"SELECT virtualtransaction FROM pg_locks WHERE {_THE_LOCK} "  # noqa: S608 - constants
    "AND virtualtransaction = ANY(CAST(:holders AS text[]))"
)
#: The highest ``seq`` handed out so far, committed or not (NULL before the first).
_HANDED_OUT = text(
    "SELECT pg_sequence_last_value(CAST(pg_get_serial_sequence('audit_records', 'seq') "
    "AS regclass))"
)
#: How long a reader waits for the transactions writing audit records before giving up.
HORIZON_WAIT = 30
_POLL = 0.005

_MAX_CANDIDATES = 10
#: The times :func:`parse_timestamp` accepts, in UTC: ``datetime``'s whole range.
TIMESTAMP_RANGE = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z"
_HEX = frozenset("0123456789abcdefABCDEF-")


def audit_types(selector: str) -> tuple[AuditType, ...]:
    """The types ``selector`` names: one type (``delivery.failed``) or a family (``delivery.``).

    Anything else is an :class:`InputError` listing the valid types and families.
    """
    text = selector.strip()
    if text in {member.value for member in AuditType}:
        return (AuditType(text),)
    if text in AUDIT_TYPE_FAMILIES:
        return tuple(member for member in AuditType if member.value.startswith(text))
    types = ", ".join(member.value for member in AuditType)
    families = ", ".join(AUDIT_TYPE_FAMILIES)
    raise InputError(
        [
            Problem(
                "",
                "type",
                f"{selector!r} is not an audit record type; valid types: {types}; "
                f"or a family ending in a dot: {families}",
            )
        ]
    )


def parse_timestamp(text: str) -> datetime:
    """A timestamp in any form the tool prints, as an aware datetime (UTC when no offset).

    RFC 3339 / ISO 8601 with or without fractional seconds, ``Z`` or an offset (the JSON
    output and the log lines), the table's ``2026-01-31 12:00:00`` (UTC), or a date.
    A time whose UTC reading falls outside ``datetime``'s range (``0001-01-01T00:00:00+01:00``,
    ``9999-12-31T23:59:59-01:00``) is refused too: no database could compare it.
    """
    try:
        parsed = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        raise _timestamp_refused(
            f"{text!r} is not a timestamp; give one as the tool prints it: "
            "2026-01-31T12:00:00.250Z or 2026-01-31T13:00:00+01:00 (JSON), "
            "2026-01-31 12:00:00 (the table, UTC) or 2026-01-31"
        ) from None
    aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    try:
        aware.astimezone(UTC)
    except OverflowError:
        raise _timestamp_refused(
            f"{text!r} is out of range: in UTC it falls outside {TIMESTAMP_RANGE}; "
            "give a time within it"
        ) from None
    return aware


def _timestamp_refused(message: str) -> InputError:
    return InputError([Problem("", "since", message)])


def resolve_event_id(db: Connection | Session, prefix: str) -> str:
    """The one event id that starts with ``prefix`` (a full id is its own prefix), of the
    trail or the events table (a purged trail leaves the events and their deliveries).

    No match, or several, is an :class:`InputError`; several are listed (up to ten).
    """
    text = prefix.strip()
    if all(char in _HEX for char in text):
        text = text.lower()  # event ids are written in lower case
    if not text:
        raise InputError([Problem("", "event", "give an event id or the start of one")])
    # The trail, and the events it was written of: they (and their deliveries, whose rows
    # name them) outlive a purged trail.
    sides = [  # each limited: a short prefix reads no whole table
        select(column.label("event_id"))
        .where(column.startswith(text, autoescape=True))
        .distinct()
        .order_by(column)
        .limit(_MAX_CANDIDATES + 1)
        .subquery()
        for column in (_AUDIT.event_id, _EVENT_IDS.c.event_id)
    ]
    found = union(*(select(side.c.event_id) for side in sides)).subquery()
    candidates = db.scalars(
        select(found.c.event_id).order_by(found.c.event_id).limit(_MAX_CANDIDATES + 1)
    )
    matches = [str(candidate) for candidate in candidates if candidate is not None]
    if text in matches:
        return text
    if len(matches) == 1:
        return matches[0]
    if not matches:
        message = f"no audit record or event has an id starting with {prefix!r}"
    else:
        listed = ", ".join(matches[:_MAX_CANDIDATES])
        more = ", and more" if len(matches) > _MAX_CANDIDATES else ""
        message = (
            f"{prefix!r} is the start of several event ids: {listed}{more}; give more characters"
        )
    raise InputError([Problem("", "event", message)])


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for reading the trail; all optional, combined with AND.

    ``user_id`` also matches the records of that user's events that name no user
    (``event.received``, ``event.duplicate``). ``type`` is a type or a family
    (``delivery.``, see :func:`audit_types`). ``after`` is a record id: only the records
    written after it. ``limit`` keeps the latest records, or with ``after`` the first ones
    after it; ``None`` keeps all.
    """

    user_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    type: str | None = None
    since: datetime | None = None
    limit: int | None = 1000
    after: str | None = None

    def __post_init__(self) -> None:
        if self.type is not None:
            audit_types(self.type)  # refuses an unknown type at once
        if self.limit is not None and self.limit < 1:
            raise InputError([Problem("", "limit", f"{self.limit} is not a positive number")])

    def where(self) -> list[ColumnElement[bool]]:
        """The filters as SQL conditions (without ``after``)."""
        conditions: list[ColumnElement[bool]] = []
        if self.user_id is not None:
            users_events = select(_AUDIT.event_id).where(
                _AUDIT.user_id == self.user_id, _AUDIT.event_id.is_not(None)
            )
            conditions.append(
                or_(
                    _AUDIT.user_id == self.user_id,
                    and_(_AUDIT.user_id.is_(None), _AUDIT.event_id.in_(users_events)),
                )
            )
        if self.session_id is not None:
            conditions.append(_AUDIT.session_id == self.session_id)
        if self.event_id is not None:
            conditions.append(_AUDIT.event_id == self.event_id)
        if self.type is not None:
            conditions.append(_AUDIT.type.in_([t.value for t in audit_types(self.type)]))
        if self.since is not None:
            conditions.append(_AUDIT.at >= self.since)
        return conditions

    def statement(self) -> Select[Any]:
        """The latest ``limit`` matching rows, newest first (oldest first when no limit).

        ``after`` is not applied here: it needs the database (see :func:`read_audit_page`).
        """
        stmt = select(audit_records).where(*self.where())
        if self.limit is None:
            return stmt.order_by(_AUDIT.seq)
        return stmt.order_by(_AUDIT.seq.desc()).limit(self.limit)


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Records read for one query, oldest first, and how many matched in all."""

    records: list[AuditRecord]
    total: int
    latest: bool
    """True: the latest records that matched; False: the first ones after ``after``."""

    @property
    def cut(self) -> bool:
        """Whether more records matched than were read."""
        return len(self.records) < self.total


def _after_seq(db: Connection | Session, record_id: str | None) -> int | None:
    if record_id is None:
        return None
    seq = db.scalar(select(_AUDIT.seq).where(_AUDIT.id == record_id.strip()))
    if seq is None:
        raise InputError(
            [
                Problem(
                    "",
                    "after",
                    f"no audit record has the id {record_id!r} (the `id` of a --json line)",
                )
            ]
        )
    return int(seq)


def audit_horizon(db: Connection | Session) -> int | None:
    """The highest ``seq`` a reader may list now; ``None``: no bound is needed (SQLite).

    ``seq`` is taken at insert, so on PostgreSQL a transaction can hold a lower ``seq``
    uncommitted while one with a higher ``seq`` commits and is read; a reader that then
    continued after the higher one (``--after``) would never see the lower. Below the
    horizon nothing can still appear. It is found without making any writer wait: read the
    highest ``seq`` handed out so far, then which transactions hold the trail's lock (each
    writer takes it, shared, before its insert and keeps it to its commit, so every writer
    that may hold a ``seq`` up to that one and has not finished is among them), and wait
    until each of those has finished (polled every few milliseconds; usually none, or one
    committing). More than :data:`HORIZON_WAIT` seconds is an :class:`IncompleteError`; so
    read the trail outside any transaction that has written audit records (it would wait for
    itself). On SQLite one writer at a time commits in ``seq`` order.
    """
    bind = db if isinstance(db, Connection) else db.get_bind()
    if bind.dialect.name != "postgresql":
        return None
    engine = bind.engine
    with engine.connect() as conn:
        handed_out = conn.scalar(_HANDED_OUT)
        holders = list(conn.scalars(_HOLDERS))
        deadline = time.monotonic() + HORIZON_WAIT
        while holders:
            conn.rollback()  # a fresh look at pg_locks each time
            holders = list(conn.scalars(_STILL_HOLDING, {"holders": holders}))
            if holders and time.monotonic() > deadline:
                raise IncompleteError(
                    f"a transaction has been writing audit records for over {HORIZON_WAIT} s, "
                    "and the trail cannot be read past it until it ends; nothing was listed: "
                    "run the command again (PostgreSQL's pg_stat_activity shows the transaction)"
                )
            if holders:
                time.sleep(_POLL)
        conn.rollback()
    return int(handed_out or 0)


def _record(row: RowMapping) -> AuditRecord:
    return AuditRecord.model_validate({name: row[name] for name in AuditRecord.model_fields})


def read_audit_page(db: Connection | Session, query: AuditQuery) -> AuditPage:
    """The records :class:`AuditQuery` selects, with the number that matched in all.

    Without ``after``: the latest ``limit``; with it, the first ``limit`` written after it;
    either way only up to the :func:`audit_horizon`, so a later ``after`` skips nothing.
    The count is only run when the limit cut the output.
    """
    after = _after_seq(db, query.after)
    conditions = query.where()
    if after is not None:
        conditions.append(_AUDIT.seq > after)
    horizon = audit_horizon(db)
    if horizon is not None:
        conditions.append(_AUDIT.seq <= horizon)
    stmt = select(audit_records).where(*conditions)
    if query.limit is None:
        rows = db.execute(stmt.order_by(_AUDIT.seq)).mappings()
        records = [_record(row) for row in rows]
        return AuditPage(records, len(records), latest=after is None)
    order = _AUDIT.seq if after is not None else _AUDIT.seq.desc()
    rows = db.execute(stmt.order_by(order).limit(query.limit + 1)).mappings()
    records = [_record(row) for row in rows]
    total = len(records)
    if total > query.limit:
        records = records[: query.limit]
        count = select(func.count()).select_from(audit_records).where(*conditions)
        total = db.scalar(count) or total
    if after is None:
        records.reverse()
    return AuditPage(records, total, latest=after is None)


def iter_audit(
    db: Connection | Session, query: AuditQuery, *, page_size: int = PAGE_SIZE
) -> Iterator[AuditRecord]:
    """Every record matching ``query`` (``limit`` is ignored), oldest first, in constant memory.

    Reads keyset pages of ``page_size`` rows by the trail's sequence, so nothing holds more
    than one page, on SQLite and PostgreSQL alike; up to the :func:`audit_horizon` taken at
    the start (what commits later is for the next run, after the last record shown).
    """
    last = _after_seq(db, query.after)
    conditions = query.where()
    horizon = audit_horizon(db)
    if horizon is not None:
        conditions.append(_AUDIT.seq <= horizon)
    while True:
        page = conditions if last is None else [*conditions, _AUDIT.seq > last]
        stmt = select(audit_records).where(*page).order_by(_AUDIT.seq).limit(page_size)
        rows = db.execute(stmt).mappings().all()
        for row in rows:
            yield _record(row)
        if len(rows) < page_size:
            return
        last = rows[-1]["seq"]


def query_audit(db: Connection | Session, query: AuditQuery) -> list[AuditRecord]:
    """The records matching ``query`` (the latest ``limit`` of them), oldest first."""
    return read_audit_page(db, query).records
