"""One logout as a timeline: what happened to an event, in order, from its audit records and
its deliveries.

Built once here and drawn twice: in the terminal (``audit show``, :mod:`workers.timeline`)
and as the service's HTML page (:mod:`api.pages`, served by :mod:`api.routes.logouts`).
:func:`build_timeline` is a pure function of the records and the delivery rows, so a trail
with records missing (purged, or written by an older version) still gives a timeline: a
delivery row without records shows no attempts, an attempt without a row shows under its
record's provider, and a logout without ``event.received`` starts at its first record.

Where each record goes:

=================================== =========================================================
``event.received``                  the start (``received``)
``event.*``, ``session.*``,         a step, in time order
``plan.built``, ``logout.completed``
``logout.settled``                  a step, and the timeline's ``settled``
``delivery.*``                      an attempt of its delivery (``detail.delivery_id``)
``frontchannel.*``                  an attempt of its delivery (``detail.delivery_id``, else
                                    the plan entry: the browser reports each once)
=================================== =========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter
from sqlalchemy import select

from orchestrator.audit_query import AuditQuery, iter_audit
from schemas.audit import DELIVERY_AUDIT_TYPES, AuditRecord, AuditType

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

__all__ = [
    "Attempt",
    "DeliveryLine",
    "DeliveryRow",
    "Step",
    "Timeline",
    "build_timeline",
    "read_timeline",
    "timeline_json",
]

_FRONTCHANNEL_TYPES = frozenset(t for t in AuditType if t.value.startswith("frontchannel."))
#: What a step of each type is called on the timeline.
_STEP_NAMES = {
    AuditType.EVENT_RECEIVED: "received",
    AuditType.EVENT_DUPLICATE: "duplicate received",
    AuditType.EVENT_REJECTED: "rejected",
    AuditType.SESSION_STARTED: "session started",
    AuditType.SESSION_ENDED: "session ended",
    AuditType.SESSION_NOT_FOUND: "session not found",
    AuditType.PLAN_BUILT: "plan built",
    AuditType.LOGOUT_COMPLETED: "completed",
    AuditType.LOGOUT_SETTLED: "settled",
    AuditType.DELIVERY_RETRY_REQUESTED: "retry requested",
    AuditType.EVENT_REPLAYED: "replayed",
}
#: Record detail fields a step shows (never a token, a message or request arguments: the
#: trail holds none, and these are the ones worth a glance).
_STEP_FIELDS = (
    "type",
    "initiator",
    "actor",
    "end_reason",
    "reason",
    "plan_id",
    "stages",
    "sessions_ended",
    "deliveries",
    "first_status",
)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """What the ``deliveries`` table says of one delivery of the event."""

    delivery_id: str
    provider: str
    status: str
    attempts: int
    created_at: datetime | None = None
    completed_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One fact of the logout that is not a delivery attempt."""

    at: datetime
    offset_ms: float
    type: str
    name: str
    outcome: str
    session_id: str | None = None
    user_id: str | None = None
    provider: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of one delivery and what it came to (a record of ``delivery.*`` or
    ``frontchannel.*``). ``latency_ms``: how long the provider took to answer (absent from
    records written before it was measured); ``retry_in_ms``: when the next try was due,
    from this attempt's record."""

    number: int
    at: datetime
    offset_ms: float
    outcome: str
    record_type: str
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    error_class: str | None = None
    retry_in_ms: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    """One delivery with its attempts, oldest first. ``status`` and ``attempts_made`` come
    from the delivery row (None when it is gone): more attempts made than shown means
    records are missing."""

    delivery_id: str
    provider: str | None
    channel: str
    status: str | None
    attempts_made: int | None
    attempts: tuple[Attempt, ...]

    @property
    def outcome(self) -> str:
        """The row's status, else what the last attempt came to."""
        if self.status is not None:
            return self.status
        return self.attempts[-1].outcome if self.attempts else "unknown"

    @property
    def attempt_count(self) -> int:
        """Attempts made: the row's count, else the attempts recorded."""
        return self.attempts_made if self.attempts_made is not None else len(self.attempts)

    @property
    def unrecorded(self) -> int:
        """Attempts made that have no record (purged, or lost)."""
        return max(0, self.attempt_count - len(self.attempts))


@dataclass(frozen=True, slots=True)
class Timeline:
    """One logout: its start, its steps and its deliveries, each in time order."""

    event_id: str
    started_at: datetime
    received: bool
    steps: tuple[Step, ...]
    deliveries: tuple[DeliveryLine, ...]
    settled_at: datetime | None
    outcome: str | None
    """``logout.settled``'s outcome, else ``logout.completed``'s, else None (still open)."""

    @property
    def settled(self) -> bool:
        return self.settled_at is not None

    @property
    def settled_after_ms(self) -> float | None:
        """From the start to ``logout.settled``; None while not settled."""
        return None if self.settled_at is None else _offset(self.settled_at, self.started_at)

    @property
    def deliveries_after(self) -> int:
        """How many steps come before the deliveries: those before the first attempt (all
        of them when no attempt was recorded), so both drawings put the block in one place.
        A step of the attempt's own transaction (``logout.completed``) shares its time and
        comes after it."""
        first = min(
            (line.attempts[0].at for line in self.deliveries if line.attempts), default=None
        )
        if first is None:
            return len(self.steps)
        return sum(1 for step in self.steps if step.at < first)


def _offset(at: datetime, start: datetime) -> float:
    return round((at - start).total_seconds() * 1000, 3)


def _step(record: AuditRecord, start: datetime) -> Step:
    detail = {name: record.detail[name] for name in _STEP_FIELDS if name in record.detail}
    return Step(
        at=record.at,
        offset_ms=_offset(record.at, start),
        type=record.type.value,
        name=_STEP_NAMES.get(record.type, record.type.value),
        outcome=record.outcome,
        session_id=record.session_id,
        user_id=record.user_id,
        provider=record.provider,
        detail=detail,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _error_class(record: AuditRecord) -> str | None:
    """``transient`` (tried again, or given up on after the last try) or ``permanent``."""
    named = record.detail.get("error_class")
    if isinstance(named, str):
        return named
    if record.type is AuditType.DELIVERY_RETRYING:
        return "transient"
    if record.type is AuditType.DELIVERY_FAILED:
        error = str(record.detail.get("error", ""))
        return "transient" if "gave up after" in error else "permanent"
    return None


def _attempt(record: AuditRecord, number: int, start: datetime) -> Attempt:
    detail = record.detail
    error = detail.get("error", detail.get("reason"))
    retry_in: float | None = None
    next_at = detail.get("next_attempt_at")
    if isinstance(next_at, str):
        try:
            retry_in = _offset(datetime.fromisoformat(next_at), record.at)
        except ValueError:
            retry_in = None
    code = detail.get("status_code")
    latency = _number(detail.get("latency_ms", detail.get("elapsed_ms")))
    return Attempt(
        number=number,
        at=record.at,
        offset_ms=_offset(record.at, start),
        outcome=record.outcome,
        record_type=record.type.value,
        status_code=code if isinstance(code, int) else None,
        latency_ms=latency,
        error=str(error) if error is not None else None,
        error_class=_error_class(record),
        retry_in_ms=retry_in,
    )


def _delivery_key(record: AuditRecord) -> str:
    delivery_id = record.detail.get("delivery_id")
    if delivery_id:
        return str(delivery_id)
    entry = record.detail.get("entry_id") or record.id
    return f"frontchannel:{entry}"


def _lines(
    attempts: dict[str, list[AuditRecord]], rows: Sequence[DeliveryRow], start: datetime
) -> list[DeliveryLine]:
    by_id = {row.delivery_id: row for row in rows}
    keys = list(dict.fromkeys([*(row.delivery_id for row in rows), *attempts]))
    lines = []
    for key in keys:
        row, records = by_id.get(key), attempts.get(key, [])
        numbered = [
            _attempt(record, int(record.detail.get("attempt") or n), start)
            for n, record in enumerate(records, start=1)
        ]
        front = any(record.type in _FRONTCHANNEL_TYPES for record in records)
        provider = row.provider if row else next((r.provider for r in records), None)
        lines.append(
            DeliveryLine(
                delivery_id=key,
                provider=provider,
                channel="front" if front else "back",
                status=row.status if row else None,
                attempts_made=row.attempts if row else None,
                attempts=tuple(numbered),
            )
        )
    lines.sort(
        key=lambda line: (line.attempts[0].at if line.attempts else start, line.provider or "")
    )
    return lines


def build_timeline(
    event_id: str, records: Iterable[AuditRecord], rows: Sequence[DeliveryRow] = ()
) -> Timeline | None:
    """The timeline of ``event_id`` from its records (in trail order) and delivery rows;
    None when there is neither a record nor a row."""
    records = sorted(records, key=lambda record: record.at)  # stable: trail order on ties
    if not records and not rows:
        return None
    received = next((r for r in records if r.type is AuditType.EVENT_RECEIVED), None)
    times = [r.at for r in records] + [row.created_at for row in rows if row.created_at]
    start = received.at if received is not None else min(times)
    steps: list[Step] = []
    attempts: dict[str, list[AuditRecord]] = {}
    settled: AuditRecord | None = None
    completed: AuditRecord | None = None
    for record in records:
        if record.type in DELIVERY_AUDIT_TYPES or record.type in _FRONTCHANNEL_TYPES:
            attempts.setdefault(_delivery_key(record), []).append(record)
            continue
        steps.append(_step(record, start))
        if record.type is AuditType.LOGOUT_SETTLED:
            settled = record
        elif record.type is AuditType.LOGOUT_COMPLETED:
            completed = record
    last_word = settled or completed
    return Timeline(
        event_id=event_id,
        started_at=start,
        received=received is not None,
        steps=tuple(steps),
        deliveries=tuple(_lines(attempts, rows, start)),
        settled_at=settled.at if settled is not None else None,
        outcome=last_word.outcome if last_word is not None else None,
    )


def _delivery_rows(db: Connection | Session, event_id: str) -> list[DeliveryRow]:
    # Here, not at the top: the table's handle loads the ORM models, which building a
    # timeline from records (tests, the page's renderer) does not need.
    from orchestrator.store.tables import DELIVERIES

    c = DELIVERIES.c
    columns = (
        c.id,
        c.provider,
        c.status,
        c.attempts,
        c.created_at,
        c.completed_at,
        c.last_status_code,
        c.last_error,
    )
    rows = db.execute(select(*columns).where(c.event_id == event_id).order_by(c.created_at))
    return [DeliveryRow(*row) for row in rows]


def read_timeline(db: Connection | Session, event_id: str) -> Timeline | None:
    """The timeline of ``event_id`` (a full id: see
    :func:`orchestrator.audit_query.resolve_event_id`) as the database has it now."""
    records = list(iter_audit(db, AuditQuery(event_id=event_id, limit=None)))
    return build_timeline(event_id, records, _delivery_rows(db, event_id))


def timeline_json(timeline: Timeline) -> dict[str, Any]:
    """The timeline as JSON data (``audit show --json``): every field, times in RFC 3339."""
    data: dict[str, Any] = TypeAdapter(Timeline).dump_python(timeline, mode="json")
    data["settled"] = timeline.settled
    data["settled_after_ms"] = timeline.settled_after_ms
    for line, dumped in zip(timeline.deliveries, data["deliveries"], strict=True):
        dumped["outcome"] = line.outcome
        dumped["unrecorded"] = line.unrecorded
    return data
