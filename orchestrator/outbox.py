"""The transactional outbox: a message is written in the transaction of the decision that
made it, so the decision and its publication never come apart.

The expiry claim, the session limit and the binding check call :func:`add_to_outbox` on
the connection of their own transaction; :class:`~orchestrator.relay.OutboxRelay` then
publishes what the outbox holds (at once after the commit, and periodically). A broker that
is down loses nothing: the rows wait until it answers.

A message is a broker message in all but name: its queue, its actor, its one argument (the
event as the contract serialises it) and its ``message_id``, which is the outbox's dedupe
key and the id every (re)publication carries. Writing a message whose id is already in the
outbox does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete

from orchestrator.queues import HANDLE_EVENT_ACTOR, events_queue
from orchestrator.store import utcnow
from orchestrator.store.sql import insert_ignore
from orchestrator.store.tables import OUTBOX
from schemas import Event

__all__ = ["OutboxMessage", "Relay", "add_to_outbox", "event_message", "remove_arrived"]

#: Publishes the outbox rows of these message ids (what one commit wrote), e.g.
#: :meth:`OutboxRelay.run <orchestrator.relay.OutboxRelay.run>`.
Relay = Callable[[Collection[str]], object]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message for the broker: ``actor`` on ``queue`` with ``payload`` as its argument."""

    message_id: str
    event_id: str
    queue: str
    actor: str
    #: The actor's one argument: the event as the contract serialises it (``handle_event``),
    #: or a delivery id (``deliver``: a retry an operator asked for).
    payload: dict[str, Any] | str


def event_message(event: Event, namespace: str, message_id: str | None = None) -> OutboxMessage:
    """``event`` for the ``handle_event`` actor; its message id is its event id by default."""
    return OutboxMessage(
        message_id=message_id or str(event.event_id),
        event_id=str(event.event_id),
        queue=events_queue(namespace),
        actor=HANDLE_EVENT_ACTOR,
        payload=event.model_dump(mode="json"),
    )


def add_to_outbox(
    conn: Connection, messages: Sequence[OutboxMessage], *, sent_at: datetime | None = None
) -> None:
    """Write ``messages`` in the caller's transaction; ids already held are left alone.

    ``sent_at``: the caller enqueues them itself right after the commit (a publisher), so no
    relay takes them; if they never arrive, recovery sends them again after its grace."""
    if not messages:
        return
    now = utcnow()
    conn.execute(
        insert_ignore(conn, OUTBOX, ["message_id"]),
        [
            {
                "message_id": m.message_id,
                "event_id": m.event_id,
                "queue": m.queue,
                "actor": m.actor,
                "payload": m.payload,
                "created_at": now,
                "sent_at": sent_at,
                "attempts": 0 if sent_at is None else 1,
            }
            for m in messages
        ],
    )


def remove_arrived(conn: Connection, message_ids: Collection[str]) -> None:
    """Delete the sent rows of ``message_ids``: their messages arrived and were handled.

    For what leaves no ``events`` row to show it arrived (session activity); without this,
    recovery would take such a row for lost and send it again, and again."""
    ids = sorted(message_ids)
    for chunk in range(0, len(ids), 500):
        conn.execute(
            delete(OUTBOX).where(
                OUTBOX.c.message_id.in_(ids[chunk : chunk + 500]), OUTBOX.c.sent_at.is_not(None)
            )
        )
