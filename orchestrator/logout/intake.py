"""Intake: read each message, record session activity, refuse what is no event, and claim
each logout's ``event_id`` for the message that owns it.

A message owns its event when it is the first with that ``event_id``, or that same message
redelivered before the event completed (a worker died) and no live worker holds the event's
lease. Every other message is a duplicate and leaves ``event.duplicate``; a copy arriving
while a live worker holds the event is refused as busy, to be tried again later.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine

import orchestrator.store.statements as sql
from orchestrator.audit import AuditEntry
from orchestrator.errors import InputError, Problem
from orchestrator.logout.batch import HandleResult, Logout, Message, Owned, Refused
from orchestrator.outbox import remove_arrived
from orchestrator.rejection import Rejection, record_rejections
from orchestrator.store import EventStatus
from orchestrator.trail import event_duplicate, event_received
from orchestrator.validation import parse_event
from schemas import SessionSeen, SessionStarted
from schemas.redaction import redact

__all__ = ["Activity", "Claimed", "claim", "lease_left", "read", "reject"]

_log = structlog.get_logger("logout.pipeline")

#: Records ``session.started`` / ``session.seen`` (raises InputError for bad references).
Activity = Callable[[SessionStarted | SessionSeen], None]


def read(
    engine: Engine, messages: Sequence[Message], activity: Activity | None
) -> tuple[list[Logout], list[Refused], list[Message]]:
    """The logouts among ``messages``, those refused, and those recorded as activity (their
    outbox rows removed: no events row shows they arrived)."""
    logouts: list[Logout] = []
    refused: list[Refused] = []
    recorded: list[Message] = []
    for message in messages:
        try:
            event = parse_event(message.raw, "event")
        except InputError as exc:
            refused.append(Refused(message, exc))
            continue
        if not isinstance(event, SessionStarted | SessionSeen):
            logouts.append(Logout(message, event))
        elif activity is None:
            problem = Problem("event", "type", f"{event.type} is not handled by this processor")
            refused.append(Refused(message, InputError([problem])))
        else:
            try:
                activity(event)
            except InputError as exc:
                refused.append(Refused(message, exc))
            else:
                recorded.append(message)
    if recorded:
        with engine.begin() as conn:
            remove_arrived(conn, [message.message_id for message in recorded])
    return logouts, refused, recorded


def reject(engine: Engine, refused: Sequence[Refused]) -> None:
    """Record each refused message (``rejected_events`` and ``event.rejected``)."""
    rejections: list[Rejection] = []
    for item in refused:
        raw = item.message.raw
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        rejections.append(
            Rejection(
                message_id=item.message.message_id,
                event_id=str(event_id) if event_id is not None else None,
                payload=redact(raw)
                if isinstance(raw, str)
                else json.dumps(redact(raw), default=str),
                problems=[str(p) for p in item.problems.problems],
            )
        )
    record_rejections(engine, rejections)


@dataclass
class Claimed:
    """What claiming found: the logouts owned, each other message's result, the events
    whose roll-up is to be settled again, and the audit entries."""

    owned: list[Owned] = field(default_factory=list)
    results: dict[int, HandleResult] = field(default_factory=dict)
    settle_again: set[str] = field(default_factory=set)
    entries: list[AuditEntry] = field(default_factory=list)


def claim(conn: Connection, logouts: Sequence[Logout], now: datetime, lease: timedelta) -> Claimed:
    """Claim each logout's event for the message that owns it (see the module docstring)."""
    first: dict[str, Logout] = {}
    for logout in logouts:
        first.setdefault(logout.event_id, logout)
    new_rows = [_event_row(logout, now, lease) for logout in first.values()]
    inserted = set(sql.INSERT_EVENTS.execute(conn, new_rows).scalars())
    known = [event_id for event_id in first if event_id not in inserted]
    rows = (
        {row.event_id: row for row in conn.execute(sql.EVENTS_BY_ID, {"b_ids": known})}
        if known
        else {}
    )
    resumable = [
        event_id
        for event_id, row in rows.items()
        if row.message_id == first[event_id].message.message_id
        and row.status != EventStatus.COMPLETED
    ]
    taken: set[str] = set()
    if resumable:  # the message of an unfinished event: resume it unless a live worker has it
        params = {"b_ids": resumable, "b_now": now, "b_until": now + lease}
        taken = set(conn.scalars(sql.TAKE_EVENTS, params))
    claimed = Claimed()
    for logout in logouts:
        event_id, message = logout.event_id, logout.message
        is_first = logout is first[event_id]
        if is_first and event_id in inserted:
            claimed.owned.append(Owned(logout, resumed=False))
            claimed.entries.append(event_received(logout.event, message.message_id))
        elif is_first and event_id in taken:
            claimed.owned.append(Owned(logout, resumed=True))
        elif is_first and event_id in resumable:
            _log.info(
                "event held by a live worker; its message is tried again later",
                event_id=event_id,
                message_id=message.message_id,
            )
            claimed.results[message.index] = HandleResult.BUSY
        else:
            _duplicate(claimed, logout, rows.get(event_id), first[event_id], now)
    return claimed


def _duplicate(
    claimed: Claimed, logout: Logout, row: Any | None, first: Logout, now: datetime
) -> None:
    """``logout`` is a duplicate of the stored event ``row`` (None: of ``first``, in this
    batch)."""
    message_id = logout.message.message_id
    if row is None:  # first seen earlier in this batch
        first_id, received, status = first.message.message_id, now, EventStatus.PROCESSING
        first_payload = first.event.model_dump(mode="json")
    else:
        first_id, received, status, first_payload = (
            row.message_id,
            row.received_at,
            row.status,
            row.payload,
        )
    claimed.entries.append(
        event_duplicate(
            logout.event,
            message_id,
            first_message_id=first_id,
            first_received_at=received,
            first_status=str(status),
            same_payload=first_payload == logout.event.model_dump(mode="json"),
        )
    )
    claimed.results[logout.message.index] = HandleResult.DUPLICATE
    # Its own message again, the event completed: what followed that commit (the roll-up
    # counted from the rows) may not have happened; it is settled again.
    if row is not None and row.message_id == message_id and row.status == EventStatus.COMPLETED:
        claimed.settle_again.add(logout.event_id)


def _event_row(logout: Logout, now: datetime, lease: timedelta) -> dict[str, Any]:
    return {
        "event_id": logout.event_id,
        "type": logout.event.type,
        "status": EventStatus.PROCESSING.value,
        "message_id": logout.message.message_id,
        "payload": logout.event.model_dump(mode="json"),
        "received_at": now,
        "attempted_at": now,
        "lease_until": now + lease,
    }


def lease_left(engine: Engine, event_id: str, now: datetime) -> timedelta:
    """How much longer the lease a worker holds on ``event_id`` runs (zero when none does)."""
    with engine.connect() as conn:
        until = conn.scalar(sql.EVENT_LEASE, {"b_event": event_id})
    return max(until - now, timedelta(0)) if until is not None else timedelta(0)
