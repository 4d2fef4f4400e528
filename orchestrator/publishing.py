"""Publishing events: validate first, record each in the outbox, then enqueue it.

An accepted event is in the database before the broker is asked to carry it (the outbox of
:mod:`orchestrator.outbox`, in the state "sent"), so a broker that loses it (Redis restarted
without persistence, a publisher dying between the commit and the enqueue) loses nothing:
the workers' recovery sweep sends again, under the same message id, every accepted event the
pipeline has not recorded ``recovery_grace`` after it was sent (see
:meth:`OutboxRelay.recover <orchestrator.relay.OutboxRelay.recover>`). An enqueue that fails
leaves its events unsent in the outbox, for the next relay run of any worker.

The wire format, for publishers in other languages: a dramatiq message on the queue
``<namespace>.events`` (``logout.events`` by default) for the actor ``handle_event``, whose
single argument is the event object described by ``schemas/json/event.schema.json``. (Such
a publisher writes no outbox row: what its broker loses is lost.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import dramatiq

from orchestrator.errors import InputError, Problem
from orchestrator.outbox import event_message
from orchestrator.queues import DELIVER_ACTOR, HANDLE_EVENT_ACTOR, deliveries_queue, events_queue
from orchestrator.relay import BrokerSender, OutboxRelay, RelayReport
from orchestrator.store import Database
from orchestrator.validation import parse_event
from schemas import Event, EventBase

__all__ = [
    "DELIVER_ACTOR",
    "HANDLE_EVENT_ACTOR",
    "Publisher",
    "deliveries_queue",
    "events_queue",
    "publish",
    "validate_events",
]

#: Events recorded in one transaction, then enqueued, by :meth:`Publisher.enqueue`.
_CHUNK = 500


class Publisher:
    """Publishes validated events through the outbox of ``database`` to ``broker``;
    nothing of an invalid batch is recorded or sent."""

    def __init__(
        self, broker: dramatiq.Broker, database: Database, namespace: str = "logout"
    ) -> None:
        self._namespace = namespace
        self._relay = OutboxRelay(database, BrokerSender(broker))
        broker.declare_queue(events_queue(namespace))

    def publish(self, event: EventBase | Mapping[str, Any] | str) -> Event:
        """Validate and publish one event; returns the validated event."""
        return self.publish_many([event])[0]

    def publish_many(self, events: Iterable[EventBase | Mapping[str, Any] | str]) -> list[Event]:
        """Validate every event, then publish them all; raise :class:`InputError` if any is bad.

        Returns once every event is recorded; what the broker refused waits in the outbox
        for the next relay run of a worker (logged; :meth:`enqueue` returns how many)."""
        parsed = validate_events(events)
        self.enqueue(parsed)
        return parsed

    def enqueue(self, events: Iterable[Event]) -> RelayReport:
        """Record already-validated events in the outbox and enqueue them, each under a new
        message id (publishing an event again is a new message: the pipeline keeps one and
        records ``event.duplicate``). After the broker's first failure the rest is only
        recorded: every event is then in the outbox, and the report counts those that wait
        there (``pending``) and says why (``error``); any worker's relay publishes them."""
        published = kept = 0
        error: str | None = None
        items = iter(events)
        while chunk := list(islice(items, _CHUNK)):
            messages = [event_message(e, self._namespace, str(uuid.uuid4())) for e in chunk]
            report = self._relay.accept(messages, send=error is None)
            published += report.published
            kept += report.pending
            error = error or report.error
        return RelayReport(published, kept, error)


def validate_events(events: Iterable[EventBase | Mapping[str, Any] | str]) -> list[Event]:
    """Validate every event (``event 1``, ``event 2`` ... in the problems); raise
    :class:`InputError` naming every problem of the batch when any is bad."""
    parsed: list[Event] = []
    problems: list[Problem] = []
    for number, item in enumerate(events, start=1):
        where = f"event {number}"
        try:
            raw = item.model_dump(mode="json") if isinstance(item, EventBase) else item
            parsed.append(parse_event(raw, where))
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    return parsed


def publish(
    event: EventBase | Mapping[str, Any] | str,
    *,
    broker: dramatiq.Broker,
    database: Database,
    namespace: str = "logout",
) -> Event:
    """Validate ``event``, record it in the outbox of ``database`` and publish it on
    ``broker``; returns the validated event."""
    return Publisher(broker, database, namespace).publish(event)
