"""Smoke test on RabbitMQ: one event published over AMQP is handled by a real worker."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

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


def test_a_killed_workers_prefetched_events_are_redelivered_at_once(
    amqp_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """RabbitMQ: a worker SIGKILLed mid-batch; what it had fetched is requeued when its
    connection closes, so a second worker completes all 300 events, each received once,
    with no heartbeat to wait for."""
    stack = amqp_stack
    sessions = [f"s-{n:03d}" for n in range(300)]
    stack.seed(records=[{"kind": "session", "session_id": s, "user_id": "u"} for s in sessions])
    with stack.publisher() as publisher:
        publisher.publish_many([logout_event(s) for s in sessions])

    def completed() -> int:
        with stack.db() as db:
            query = select(func.count()).where(EventRecord.status == "completed")
            return int(db.scalar(query) or 0)

    first = stack.start_worker()
    stack.wait_for(lambda: completed() >= 30, what="30 events completed", interval=0.02)
    first.kill()
    assert completed() < len(sessions), "the worker finished before it could be killed"
    killed = time.monotonic()
    stack.start_worker()
    stack.wait_for(lambda: completed() == len(sessions), what="every event", timeout=60)
    took = time.monotonic() - killed
    with capsys.disabled():
        print(f"\n  [rabbitmq] SIGKILLed worker: all 300 events completed {took:.1f} s later")
    with stack.db() as db:
        received = db.scalar(select(func.count()).where(AuditRow.type == "event.received"))
    assert received == len(sessions)
