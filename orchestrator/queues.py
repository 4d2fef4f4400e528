"""Queue and actor names: where events and delivery retries travel, by namespace."""

from __future__ import annotations

__all__ = ["DELIVER_ACTOR", "HANDLE_EVENT_ACTOR", "deliveries_queue", "events_queue"]

HANDLE_EVENT_ACTOR = "handle_event"
DELIVER_ACTOR = "deliver"


def events_queue(namespace: str) -> str:
    """The queue events are published to."""
    return f"{namespace}.events"


def deliveries_queue(namespace: str) -> str:
    """The queue delivery retries are scheduled on."""
    return f"{namespace}.deliveries"
