"""The audit trail: every record goes to the database and to one JSON log line."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import structlog
from sqlalchemy import Connection, Select, Table, select
from sqlalchemy.orm import Session

from orchestrator.store import AuditRow, utcnow
from orchestrator.store.sql import insert_ignore
from schemas import AuditRecord, AuditType

__all__ = ["AuditEntry", "AuditQuery", "emit", "log_level", "query_audit", "write_audit"]

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


def _to_record(row: AuditRow) -> AuditRecord:
    return AuditRecord.model_validate(row, from_attributes=True)


_AUDIT = cast(Table, AuditRow.__table__)


def write_audit(
    db: Connection | Session, entries: Sequence[AuditEntry], *, at: datetime | None = None
) -> list[AuditRecord]:
    """Insert the entries in the caller's transaction; returns only those newly written.

    Call :func:`emit` with the result after the transaction commits.
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


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for reading the trail; all optional, combined with AND."""

    user_id: str | None = None
    session_id: str | None = None
    event_id: str | None = None
    type: str | None = None
    since: datetime | None = None
    limit: int | None = 1000

    def statement(self) -> Select[AuditRow]:
        stmt = select(AuditRow)
        if self.user_id is not None:
            stmt = stmt.where(AuditRow.user_id == self.user_id)
        if self.session_id is not None:
            stmt = stmt.where(AuditRow.session_id == self.session_id)
        if self.event_id is not None:
            stmt = stmt.where(AuditRow.event_id == self.event_id)
        if self.type is not None:
            stmt = stmt.where(AuditRow.type == self.type)
        if self.since is not None:
            stmt = stmt.where(AuditRow.at >= self.since)
        if self.limit is None:
            return stmt.order_by(AuditRow.seq)
        return stmt.order_by(AuditRow.seq.desc()).limit(self.limit)


def query_audit(db: Session, query: AuditQuery) -> list[AuditRecord]:
    """The records matching ``query`` (the latest ``limit`` of them), oldest first."""
    records = [_to_record(row) for row in db.scalars(query.statement())]
    if query.limit is not None:
        records.reverse()
    return records
