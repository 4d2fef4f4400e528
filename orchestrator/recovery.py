"""Recovery: nothing is lost even when the broker loses messages or a worker dies.

Periodically, events still ``processing`` long after their last attempt, and no longer
leased by a live worker, are published again under their first message id (so the worker
resumes them, deliveries included), and open deliveries of completed events whose retry (or
lease) is overdue are scheduled again. Work a live worker holds is never taken: its leases
are renewed while it works (:mod:`orchestrator.leases`). Claims make any doubled message
harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from orchestrator.errors import InputError
from orchestrator.store import (
    OPEN_DELIVERY_STATUSES,
    Database,
    Delivery,
    EventRecord,
    EventStatus,
    RejectedEvent,
    utcnow,
)
from orchestrator.validation import parse_event
from schemas import Event

__all__ = ["RecoveryReport", "recover"]

_log = structlog.get_logger("logout.recovery")


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    events: int
    deliveries: int


def recover(
    database: Database,
    *,
    grace: float,
    republish: Callable[[Event, str], None],
    reschedule: Callable[[str, float], None],
    batch: int = 500,
) -> RecoveryReport:
    """Re-publish stuck events and re-schedule overdue deliveries, at most ``batch`` of each."""
    now = utcnow()
    cutoff = now - timedelta(seconds=grace)
    with database.begin() as db:
        stuck = _claim_stuck_events(db, now, cutoff, batch)
        overdue = _claim_overdue_deliveries(db, now, cutoff, batch)
    for row in stuck:
        _republish(row, republish)
    for delivery_id in overdue:
        reschedule(delivery_id, 0.0)
    if stuck or overdue:
        _log.warning("recovered stuck work", events=len(stuck), deliveries=len(overdue))
    return RecoveryReport(len(stuck), len(overdue))


def _claim_stuck_events(
    db: Session, now: datetime, cutoff: datetime, batch: int
) -> list[EventRecord]:
    """Events still processing since before ``cutoff`` and leased by no live worker, their
    last attempt moved to ``now`` (so the next round leaves them to this one). An event
    whose message a worker gave up on (its handling raised on every try: a rejection under
    that message id) is left alone: publishing it again would only fail again."""
    stuck = list(
        db.scalars(
            select(EventRecord)
            .where(
                EventRecord.status == EventStatus.PROCESSING,
                EventRecord.attempted_at < cutoff,
                or_(EventRecord.lease_until.is_(None), EventRecord.lease_until < now),
                ~exists().where(RejectedEvent.message_id == EventRecord.message_id),
            )
            .order_by(EventRecord.attempted_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )
    for row in stuck:
        row.attempted_at = now
    return stuck


def _claim_overdue_deliveries(
    db: Session, now: datetime, cutoff: datetime, batch: int
) -> list[str]:
    """Open deliveries of completed events whose retry (or lease) was due before
    ``cutoff``, made due ``now``; their ids."""
    return list(
        db.scalars(
            update(Delivery)
            .where(
                Delivery.id.in_(
                    select(Delivery.id)
                    .join(EventRecord, EventRecord.event_id == Delivery.event_id)
                    .where(
                        # A stuck event's deliveries are resumed by its re-publication.
                        EventRecord.status == EventStatus.COMPLETED,
                        Delivery.status.in_(OPEN_DELIVERY_STATUSES),
                        or_(
                            Delivery.next_attempt_at < cutoff,
                            Delivery.next_attempt_at.is_(None) & (Delivery.created_at < cutoff),
                        ),
                    )
                    .limit(batch)
                )
            )
            .values(next_attempt_at=now)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )


def _republish(row: EventRecord, republish: Callable[[Event, str], None]) -> None:
    """Publish a stuck event again under its first message id, unless it no longer passes."""
    try:
        event = parse_event(row.payload)
    except InputError as exc:
        # Stored before a stricter contract (an upgrade): it cannot be resumed as it is,
        # but must not stop the others; said once per grace period, with its id.
        _log.warning(
            "stuck event no longer valid; it cannot be resumed",
            event_id=row.event_id,
            problems=[f"{p.field}: {p.message}" for p in exc.problems][:3],
        )
        return
    republish(event, row.message_id)
