"""Where an accepted event stands, by ``event_id``: for an HTTP publisher that sends an event
again (idempotent intake) and for the logout status it reads.

``queued``: in the outbox, not yet taken by a worker; ``processing`` and ``completed``: as the
pipeline records it (:class:`~orchestrator.store.EventStatus`); ``rejected``: a worker refused
it, or gave up handling it after every try raised, even part-way (kept in ``rejected_events``
under its message id). An id in none of these is unknown (absent from the result).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Literal

from sqlalchemy import literal, select, union_all

from orchestrator.store import (
    Database,
    Delivery,
    DeliveryStatus,
    EventRecord,
    EventStatus,
    OutboxRow,
    RejectedEvent,
)

__all__ = ["EVENT_STATES", "DeliveryState", "EventState", "delivery_states", "event_states"]

EventState = Literal["queued", "processing", "completed", "rejected"]
#: Every state :func:`event_states` reports.
EVENT_STATES: Final[tuple[EventState, ...]] = ("queued", "processing", "completed", "rejected")
_CHUNK = 500
#: Which source wins for one id: the outbox < a rejection < the pipeline's record < a
#: rejection of the very message the pipeline's record is processing (given up part-way).
_RANK = {"queued": 0, "rejected": 1, "processing": 2, "completed": 2, "given_up": 3}
_STATE: dict[str, EventState] = {
    "queued": "queued",
    "rejected": "rejected",
    "completed": "completed",
    "given_up": "rejected",
}


def event_states(database: Database, event_ids: Collection[str]) -> dict[str, EventState]:
    """The state of each known id among ``event_ids`` (unknown ids are left out)."""
    ids = sorted(set(event_ids))
    states: dict[str, EventState] = {}
    with database() as db:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            # One round trip: the outbox, then rejections, then the pipeline's own record,
            # then a rejection of the message it is still processing (each later source says
            # more than an earlier one about the same id).
            found = union_all(  # type: ignore[var-annotated]
                select(OutboxRow.event_id, literal("queued").label("state")).where(
                    OutboxRow.event_id.in_(chunk)
                ),
                select(RejectedEvent.event_id, literal("rejected")).where(
                    RejectedEvent.event_id.in_(chunk)
                ),
                select(EventRecord.event_id, EventRecord.status).where(
                    EventRecord.event_id.in_(chunk)
                ),
                select(EventRecord.event_id, literal("given_up"))
                .join(RejectedEvent, RejectedEvent.message_id == EventRecord.message_id)
                .where(
                    EventRecord.event_id.in_(chunk),
                    EventRecord.status == EventStatus.PROCESSING,
                ),
            )
            rows: list[tuple[str | None, str]] = [(row[0], row[1]) for row in db.execute(found)]
            for event_id, state in sorted(rows, key=lambda row: _RANK.get(row[1], 2)):
                if event_id is not None:
                    states[event_id] = _STATE.get(state, "processing")
    return states


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """One delivery of a logout: to which provider, where it stands, after how many tries."""

    delivery_id: str
    provider: str
    status: DeliveryStatus
    attempts: int


def delivery_states(database: Database, event_id: str) -> list[DeliveryState]:
    """Every delivery of ``event_id``'s logout, by provider."""
    with database() as db:
        rows = db.execute(
            select(Delivery.id, Delivery.provider, Delivery.status, Delivery.attempts)
            .where(Delivery.event_id == event_id)
            .order_by(Delivery.provider, Delivery.id)
        ).all()
    return [DeliveryState(r.id, r.provider, DeliveryStatus(r.status), r.attempts) for r in rows]
