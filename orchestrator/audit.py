"""The audit trail: every record goes to the database and to one JSON log line.

Reading it is :mod:`orchestrator.audit_query` (re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from orchestrator.audit_query import (
    AUDIT_TYPE_FAMILIES,
    HORIZON_WAIT,
    PAGE_SIZE,
    AuditPage,
    AuditQuery,
    audit_horizon,
    audit_types,
    iter_audit,
    parse_timestamp,
    query_audit,
    read_audit_page,
    resolve_event_id,
)
from orchestrator.metrics import count_records
from orchestrator.store import utcnow
from orchestrator.store.core import AUDIT_LOCK_KEY, audit_records
from orchestrator.store.ids import new_ids
from orchestrator.store.sql import InsertIgnoring, dialect_name
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
_WRITING = text("SELECT pg_advisory_xact_lock_shared(:key)").bindparams(key=AUDIT_LOCK_KEY)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record to write. ``key`` is unique per fact, so replaying a step writes nothing twice.
    ``detail`` holds plain JSON values (it is written as it is: no model is dumped)."""

    key: str
    type: AuditType
    outcome: str
    event_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    provider: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


_AUDIT = audit_records


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
    if not entries:
        return []
    when = at or utcnow()
    ids = new_ids(len(entries))
    rows = [
        {
            "id": record_id,
            "at": when,
            "type": entry.type.value,
            "event_id": entry.event_id,
            "user_id": entry.user_id,
            "session_id": entry.session_id,
            "provider": entry.provider,
            "outcome": entry.outcome,
            "detail": entry.detail,
            "dedupe_key": entry.key,
        }
        for entry, record_id in zip(entries, ids, strict=True)
    ]
    if dialect_name(db) == "postgresql":
        db.execute(_WRITING)
    written = set(_INSERTING.execute(db, rows).scalars())
    return [
        AuditRecord.model_construct(
            id=record_id,
            at=when,
            type=entry.type,
            event_id=entry.event_id,
            user_id=entry.user_id,
            session_id=entry.session_id,
            provider=entry.provider,
            outcome=entry.outcome,
            detail=entry.detail,
        )
        for entry, record_id in zip(entries, ids, strict=True)
        if entry.key in written
    ]


#: The trail's insert (a key written before is ignored).
_INSERTING = InsertIgnoring(_AUDIT, ("dedupe_key",), ("dedupe_key",))


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
    """One structured JSON log line per record (after the records are committed), and the
    metrics they move (:func:`orchestrator.metrics.count_records`)."""
    count_records(records)
    if not records:
        return
    log = _log.bind()  # one logger for the lot (the proxy would bind one per call)
    check = getattr(log, "is_enabled_for", None)  # an embedding application's wrapper may lack it
    for record in records:
        level = log_level(record)
        if check is not None and not check(level):
            continue  # filtered out: not worth serialising (most records, below ``warning``)
        log.log(
            level,
            "audit",
            **record.model_dump(mode="json", exclude={"detail"}),
            detail=record.detail,
        )
