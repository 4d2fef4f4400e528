"""Publishing events: validate first, then enqueue one broker message per event.

The wire format, for publishers in other languages: a dramatiq message on the queue
``<namespace>.events`` (``logout.events`` by default) for the actor ``handle_event``, whose
single argument is the event object described by ``schemas/json/event.schema.json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dramatiq
from dramatiq import Message

from orchestrator.errors import InputError, Problem
from orchestrator.validation import parse_event
from schemas import Event, EventBase

__all__ = [
    "DELIVER_ACTOR",
    "HANDLE_EVENT_ACTOR",
    "Publisher",
    "deliveries_queue",
    "events_queue",
    "publish",
]

HANDLE_EVENT_ACTOR = "handle_event"
DELIVER_ACTOR = "deliver"


def events_queue(namespace: str) -> str:
    """The queue events are published to."""
    return f"{namespace}.events"


def deliveries_queue(namespace: str) -> str:
    """The queue delivery retries are scheduled on."""
    return f"{namespace}.deliveries"


def _message(event: Event, namespace: str, message_id: str | None = None) -> Message[Any]:
    message: Message[Any] = Message(
        queue_name=events_queue(namespace),
        actor_name=HANDLE_EVENT_ACTOR,
        args=(event.model_dump(mode="json"),),
        kwargs={},
        options={},
    )
    return message.copy(message_id=message_id) if message_id else message


class Publisher:
    """Publishes validated events to a broker; nothing of an invalid batch is sent."""

    def __init__(self, broker: dramatiq.Broker, namespace: str = "logout") -> None:
        self._broker = broker
        self._namespace = namespace
        broker.declare_queue(events_queue(namespace))

    def publish(self, event: EventBase | Mapping[str, Any] | str) -> Event:
        """Validate and publish one event; returns the validated event."""
        return self.publish_many([event])[0]

    def publish_many(self, events: Iterable[EventBase | Mapping[str, Any] | str]) -> list[Event]:
        """Validate every event, then publish them all; raise :class:`InputError` if any is bad."""
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
        self.enqueue(parsed)
        return parsed

    def enqueue(self, events: Sequence[Event], message_ids: Sequence[str] | None = None) -> None:
        """Enqueue already-validated events (``message_ids`` lets recovery reuse the first id)."""
        ids = list(message_ids) if message_ids is not None else [None] * len(events)
        for event, message_id in zip(events, ids, strict=True):
            self._broker.enqueue(_message(event, self._namespace, message_id))


def publish(
    event: EventBase | Mapping[str, Any] | str,
    *,
    broker: dramatiq.Broker,
    namespace: str = "logout",
) -> Event:
    """Validate ``event`` and publish it on ``broker``; returns the validated event."""
    return Publisher(broker, namespace).publish(event)
