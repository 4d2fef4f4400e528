"""The audit trail: every record goes to the database and to one JSON log line."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Select,
    Table,
    and_,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session

from orchestrator.errors import IncompleteError, InputError, Problem
from orchestrator.store import AuditRow, utcnow
from orchestrator.store.sql import dialect_name, insert_ignore
from schemas import AuditRecord, AuditType

__all__ = [
    "AUDIT_LOCK_KEY",
    "AUDIT_TYPE_FAMILIES",
    "HORIZON_WAIT",
    "PAGE_SIZE",
    "AuditEntry",
    "AuditPage",
    "AuditQuery",
    "audit_horizon",
    "audit_types",
    "emit",
    "iter_audit",
    "log_level",
    "parse_timestamp",
    "query_audit",
    "read_audit_page",
    "resolve_event_id",
    "write_audit",
]

_log = structlog.get_logger("logout.audit")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record to write. ``key`` is unique per fact, so replaying a step writes nothing twice."""

    key: str
    type: AuditType
    outcome: str
    event_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    provider: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


_AUDIT = cast(Table, AuditRow.__table__)

#: The PostgreSQL advisory lock of the trail ("AUDIT" in ASCII; the migrations use another
#: key). Every writer holds it shared from just before its insert to its commit, so a reader
#: can tell which transactions may still hold a ``seq`` (see :func:`audit_horizon`).
AUDIT_LOCK_KEY = 0x4155444954
_WRITING = text("SELECT pg_advisory_xact_lock_shared(:key)").bindparams(key=AUDIT_LOCK_KEY)
#: The lock as ``pg_locks`` shows a one-bigint advisory key.
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


def write_audit(
    db: Connection | Session, entries: Sequence[AuditEntry], *, at: datetime | None = None
) -> list[AuditRecord]:
    """Insert the entries in the caller's transaction; returns only those newly written.

    Call :func:`emit` with the result after the transaction commits.

    On PostgreSQL the insert first takes the trail's advisory lock (:data:`AUDIT_LOCK_KEY`)
    in shared mode, held until the commit. Nothing ever takes it exclusively: no writer waits
    for another or for a reader; it only shows a reader which transactions may still hold a
    ``seq`` (see :func:`audit_horizon`). Call it **last** in the transaction, after every
    other write, so that it is held for the insert and the commit only (a reader's wait).
    """
    when = at or utcnow()
    records = [
        AuditRecord.model_construct(
            id=str(uuid.uuid4()),
            at=when,
            type=entry.type,
            event_id=entry.event_id,
            user_id=entry.user_id,
            session_id=entry.session_id,
            provider=entry.provider,
            outcome=entry.outcome,
            detail=entry.detail,
        )
        for entry in entries
    ]
    if not records:
        return []
    keys = [entry.key for entry in entries]
    rows = [
        {**record.model_dump(), "type": record.type.value, "dedupe_key": key}
        for record, key in zip(records, keys, strict=True)
    ]
    statement = insert_ignore(db, _AUDIT, ["dedupe_key"]).returning(_AUDIT.c.dedupe_key)
    if dialect_name(db) == "postgresql":
        db.execute(_WRITING)
    written = set(db.execute(statement, rows).scalars())
    return [record for record, key in zip(records, keys, strict=True) if key in written]


#: Records logged at ``warning``: a delivery that failed or will be tried again.
_WARNING_TYPES = frozenset(
    {AuditType.DELIVERY_FAILED, AuditType.DELIVERY_RETRYING, AuditType.FRONTCHANNEL_TIMED_OUT}
)
#: Roll-ups logged at ``error`` when some delivery failed for good (outcome ``partial``).
_ROLL_UPS = frozenset({AuditType.LOGOUT_COMPLETED, AuditType.LOGOUT_SETTLED})


def log_level(record: AuditRecord) -> int:
    """The level of a record's log line: a WARNING filter shows every failed logout.

    ``error`` for a logout whose roll-up counts failed deliveries, ``warning`` for a failed or
    retrying delivery (and a front-channel time-out), ``info`` for everything else.
    """
    if record.type in _ROLL_UPS and record.outcome == "partial":
        return logging.ERROR
    if record.type in _WARNING_TYPES:
        return logging.WARNING
    return logging.INFO


def emit(records: Sequence[AuditRecord]) -> None:
    """One structured JSON log line per record (after the records are committed)."""
    for record in records:
        _log.log(
            log_level(record),
            "audit",
            **record.model_dump(mode="json", exclude={"detail"}),
            detail=record.detail,
        )


#: Record types by family: ``delivery.`` selects every ``delivery.*`` type.
AUDIT_TYPE_FAMILIES: tuple[str, ...] = tuple(
    sorted({member.value.partition(".")[0] + "." for member in AuditType})
)

#: How many records one keyset page of :func:`iter_audit` reads.
PAGE_SIZE = 500

_MAX_CANDIDATES = 10
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
    """
    try:
        parsed = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        raise InputError(
            [
                Problem(
                    "",
                    "since",
                    f"{text!r} is not a timestamp; give one as the tool prints it: "
                    "2026-01-31T12:00:00.250Z or 2026-01-31T13:00:00+01:00 (JSON), "
                    "2026-01-31 12:00:00 (the table, UTC) or 2026-01-31",
                )
            ]
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def resolve_event_id(db: Session, prefix: str) -> str:
    """The one event id of the trail that starts with ``prefix`` (a full id is its own prefix).

    No match, or several, is an :class:`InputError`; several are listed (up to ten).
    """
    text = prefix.strip()
    if all(char in _HEX for char in text):
        text = text.lower()  # event ids are written in lower case
    if not text:
        raise InputError([Problem("", "event", "give an event id or the start of one")])
    candidates = list(
        db.scalars(
            select(AuditRow.event_id)
            .where(AuditRow.event_id.startswith(text, autoescape=True))
            .distinct()
            .order_by(AuditRow.event_id)
            .limit(_MAX_CANDIDATES + 1)
        )
    )
    matches = [candidate for candidate in candidates if candidate is not None]
    if text in matches:
        return text
    if len(matches) == 1:
        return matches[0]
    if not matches:
        message = f"no audit record has an event id starting with {prefix!r}"
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
            users_events = select(AuditRow.event_id).where(
                AuditRow.user_id == self.user_id, AuditRow.event_id.is_not(None)
            )
            conditions.append(
                or_(
                    AuditRow.user_id == self.user_id,
                    and_(AuditRow.user_id.is_(None), AuditRow.event_id.in_(users_events)),
                )
            )
        if self.session_id is not None:
            conditions.append(AuditRow.session_id == self.session_id)
        if self.event_id is not None:
            conditions.append(AuditRow.event_id == self.event_id)
        if self.type is not None:
            conditions.append(AuditRow.type.in_([t.value for t in audit_types(self.type)]))
        if self.since is not None:
            conditions.append(AuditRow.at >= self.since)
        return conditions

    def statement(self) -> Select[AuditRow]:
        """The latest ``limit`` matching rows, newest first (oldest first when no limit).

        ``after`` is not applied here: it needs the database (see :func:`read_audit_page`).
        """
        stmt = select(AuditRow).where(*self.where())
        if self.limit is None:
            return stmt.order_by(AuditRow.seq)
        return stmt.order_by(AuditRow.seq.desc()).limit(self.limit)


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


def _after_seq(db: Session, record_id: str | None) -> int | None:
    if record_id is None:
        return None
    seq = db.scalar(select(AuditRow.seq).where(AuditRow.id == record_id.strip()))
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
    return seq


def audit_horizon(db: Session) -> int | None:
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
    if dialect_name(db) != "postgresql":
        return None
    bind = db.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
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


def read_audit_page(db: Session, query: AuditQuery) -> AuditPage:
    """The records :class:`AuditQuery` selects, with the number that matched in all.

    Without ``after``: the latest ``limit``; with it, the first ``limit`` written after it;
    either way only up to the :func:`audit_horizon`, so a later ``after`` skips nothing.
    The count is only run when the limit cut the output.
    """
    after = _after_seq(db, query.after)
    conditions = query.where()
    if after is not None:
        conditions.append(AuditRow.seq > after)
    horizon = audit_horizon(db)
    if horizon is not None:
        conditions.append(AuditRow.seq <= horizon)
    stmt = select(_AUDIT).where(*conditions)
    if query.limit is None:
        rows = db.execute(stmt.order_by(AuditRow.seq)).mappings()
        records = [_record(row) for row in rows]
        return AuditPage(records, len(records), latest=after is None)
    order = AuditRow.seq if after is not None else AuditRow.seq.desc()
    rows = db.execute(stmt.order_by(order).limit(query.limit + 1)).mappings()
    records = [_record(row) for row in rows]
    total = len(records)
    if total > query.limit:
        records = records[: query.limit]
        count = select(func.count()).select_from(_AUDIT).where(*conditions)
        total = db.scalar(count) or total
    if after is None:
        records.reverse()
    return AuditPage(records, total, latest=after is None)


def iter_audit(
    db: Session, query: AuditQuery, *, page_size: int = PAGE_SIZE
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
        conditions.append(AuditRow.seq <= horizon)
    while True:
        page = conditions if last is None else [*conditions, AuditRow.seq > last]
        stmt = select(_AUDIT).where(*page).order_by(AuditRow.seq).limit(page_size)
        rows = db.execute(stmt).mappings().all()
        for row in rows:
            yield _record(row)
        if len(rows) < page_size:
            return
        last = rows[-1]["seq"]


def query_audit(db: Session, query: AuditQuery) -> list[AuditRecord]:
    """The records matching ``query`` (the latest ``limit`` of them), oldest first."""
    return read_audit_page(db, query).records
