"""Smoke test on RabbitMQ: one event published over AMQP is handled by a real worker."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from orchestrator.store import AuditRow, Delivery, EventRecord, IdpSession

from .support import Stack, logout_event

pytestmark = pytest.mark.integration


def test_one_event_over_rabbitmq(amqp_stack: Stack) -> None:
    """A logout published on RabbitMQ is completed by a worker consuming from it."""
    stack = amqp_stack
    stack.seed(
        providers=[
            {
                "name": "wiki",
                "protocol": "oidc",
                "client_id": "wiki",
                "backchannel_logout_uri": "https://wiki.example.test/bcl",
            }
        ],
        records=[
            {"kind": "session", "session_id": "s-amqp", "user_id": "alice"},
            {"kind": "provider_session", "session_id": "s-amqp", "provider": "wiki", "sid": "w1"},
        ],
    )
    event = logout_event("s-amqp")
    with stack.publisher() as publisher:
        publisher.publish(event)
    stack.start_worker()

    def completed() -> bool:
        with stack.db() as db:
            status = db.scalar(
                select(EventRecord.status).where(EventRecord.event_id == event["event_id"])
            )
        return status == "completed"

    stack.wait_for(completed, what="the event to complete over RabbitMQ", timeout=60)
    with stack.db() as db:
        session = db.get(IdpSession, "s-amqp")
        assert session is not None
        assert session.ended_by_event == event["event_id"]
        assert [d.status for d in db.scalars(select(Delivery))] == ["skipped"]
        types = list(
            db.scalars(
                select(AuditRow.type)
                .where(AuditRow.event_id == event["event_id"])
                .order_by(AuditRow.seq)
            )
        )
    assert types == [
        "event.received",
        "session.ended",
        "delivery.skipped",
        "logout.completed",
        "logout.settled",
    ]
