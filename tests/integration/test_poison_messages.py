"""Poison among valid events: every raw message on the events queue becomes either a handled
event or a ``rejected_events`` row with its ``event.rejected`` record (raw bytes included),
with real Redis, PostgreSQL and a real worker process; nothing is stranded, retried or
dead-lettered, and no secret a message carries reaches the log."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pika
import pytest
from sqlalchemy import func, select

from orchestrator.store import AuditRow, EventRecord, RejectedEvent

from .support import RABBITMQ_URL, Stack, logout_event

pytestmark = pytest.mark.integration

VALID = 20
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImF1ZCI6Indpa2kifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _message(stack: Stack, **fields: Any) -> tuple[str, bytes]:
    """A dramatiq message as it sits in Redis (its id, its bytes), with ``fields`` changed."""
    redis_id = str(uuid.uuid4())
    message = {
        "queue_name": f"{stack.namespace}.events",
        "actor_name": "handle_event",
        "args": [logout_event("s-poison")],
        "kwargs": {},
        "options": {"redis_message_id": redis_id},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    message.update(fields)
    return redis_id, json.dumps(message).encode()


def _poison(stack: Stack) -> dict[str, tuple[str, bytes]]:
    """Each kind of message the campaign found raising, looping or stranding others."""
    event = logout_event("s-poison")
    with_nul = {**logout_event("s-poison"), "session_id": "s-\x00-1"}
    with_secrets = {**event, "request": {"args": {"id_token_hint": JWT, "password": "hunter2"}}}
    return {
        "not JSON": (str(uuid.uuid4()), b"\x00\xff{not json password=hunter2"),
        "the same bytes again": (str(uuid.uuid4()), b"\x00\xff{not json password=hunter2"),
        "JSON but no message": (str(uuid.uuid4()), b'{"hello": "world"}'),
        "unknown actor": _message(stack, actor_name="drop_everything"),
        "actor of another queue": _message(stack, actor_name="deliver", args=["d-1"]),
        "two arguments": _message(stack, args=[event, "extra"]),
        "no argument": _message(stack, args=[]),
        "keyword argument": _message(stack, kwargs={"password": "hunter2"}),
        "event not an object": _message(stack, args=["logout.user"]),
        "NUL in session_id": _message(stack, args=[with_nul]),
        "message_id over 64": _message(stack, message_id="m" * 65),
        "nesting 500 deep": _message(stack, args=[{**event, "actor": _nested(500)}]),
        "queue_name of another queue": _message(stack, queue_name=f"{stack.namespace}.deliveries"),
        "no redis_message_id": _message(stack, options={}),
        "secrets, refused by validation": _message(
            stack, args=[{**with_secrets, "initiator": "nobody"}]
        ),
    }


def _seeded(stack: Stack) -> list[dict[str, Any]]:
    """20 sessions and their valid events; the first event carries both planted secrets."""
    stack.protocols = []
    sessions = [{"kind": "session", "session_id": f"s-{i}", "user_id": "u"} for i in range(VALID)]
    stack.seed(records=sessions)
    valid = [logout_event(f"s-{i}") for i in range(VALID)]
    valid[0]["request"] = {"args": {"id_token_hint": JWT, "password": "hunter2"}}
    return valid


def _counts(stack: Stack) -> tuple[int, int]:
    """Events completed, messages rejected."""
    with stack.db() as db:
        done = db.scalar(
            select(func.count()).select_from(EventRecord).where(EventRecord.status == "completed")
        )
        refused = db.scalar(select(func.count()).select_from(RejectedEvent))
    return int(done or 0), int(refused or 0)


def _assert_recorded(stack: Stack, poison: int, valid: list[dict[str, Any]]) -> None:
    """Each rejection has its record with the raw bytes; the planted secrets are stored
    redacted."""
    with stack.db() as db:
        rejected = db.scalars(select(RejectedEvent)).all()
        records = db.scalars(select(AuditRow).where(AuditRow.type == "event.rejected")).all()
        stored = db.scalar(
            select(EventRecord.payload).where(EventRecord.event_id == valid[0]["event_id"])
        )
    assert len(records) == poison
    assert {r.detail["message_id"] for r in records} == {r.message_id for r in rejected}
    for row in rejected:
        assert row.problems, row.message_id
        assert "\x00" not in row.payload
        assert len(row.message_id) <= 64
    raw = [r.detail["raw"] for r in records if "raw" in r.detail]
    assert len(raw) == poison - 1, "all but the one refused by validation keep raw bytes"
    assert all(r["bytes"] > 0 and ("text" in r or "base64" in r) for r in raw)
    assert any("base64" in r for r in raw), "bytes that are no UTF-8 are kept as base64"
    assert stored is not None
    assert stored["request"]["args"] == {"id_token_hint": "[redacted]", "password": "[redacted]"}


def _assert_quiet(output: str) -> None:
    for forbidden in ("Traceback", "Failed to process", "Consumer encountered", "hunter2", JWT):
        assert forbidden not in output, forbidden


def test_poison_messages_never_strand_valid_events(stack: Stack) -> None:
    """15 poison messages ahead of 20 valid events: all 20 completed, each poison message
    rejected once with its raw bytes, the queue empty and unacknowledged set empty, no
    dead letter, no retry, no traceback, and neither planted secret in any log line."""
    valid = _seeded(stack)
    poison = _poison(stack)
    queue = f"dramatiq:{stack.namespace}.events"
    for redis_id, data in poison.values():
        stack.redis.hset(f"{queue}.msgs", redis_id, data)
        stack.redis.rpush(queue, redis_id)
    with stack.publisher() as publisher:
        publisher.publish_many(valid)
    worker = stack.start_worker()
    stack.wait_for(
        lambda: _counts(stack) == (VALID, len(poison)),
        what=f"{VALID} events completed and {len(poison)} rejected",
        timeout=60,
    )
    stack.wait_for(
        lambda: stack.queue_length("events") == 0 and stack.unacked("events") == 0,
        what="the events queue to be empty and acknowledged",
    )
    assert stack.redis.zcard(f"{queue}.XQ") == 0, "nothing is dead-lettered"
    assert stack.queue_length("events.DQ") == 0, "nothing is retried"
    _assert_recorded(stack, len(poison), valid)
    assert worker.stop() == 0
    _assert_quiet(worker.output())


# Under pytest-xdist on a saturated machine, copies were left on the queue (8 of them, once):
# a load-dependent path, not a shared resource (the queues are the test's own).
@pytest.mark.alone
def test_poison_messages_over_rabbitmq(amqp_stack: Stack) -> None:
    """The same over RabbitMQ (but the Redis-only cases): all 20 valid events completed,
    each poison delivery rejected once with its raw bytes, nothing left in the queue or
    dead-lettered, no traceback, no planted secret in the log."""
    stack = amqp_stack
    valid = _seeded(stack)
    redis_only = ("no redis_message_id", "the same bytes again")
    poison = {k: v for k, v in _poison(stack).items() if k not in redis_only}
    with stack.publisher() as publisher:
        publisher.publish(valid[0])  # declares the queues as dramatiq does
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        try:
            channel = connection.channel()
            for _, data in poison.values():
                channel.basic_publish(
                    exchange="",
                    routing_key=f"{stack.namespace}.events",
                    body=data,
                    properties=pika.BasicProperties(delivery_mode=2),  # type: ignore[no-untyped-call]
                )
        finally:
            connection.close()
        publisher.publish_many(valid[1:])
    worker = stack.start_worker()
    stack.wait_for(
        lambda: _counts(stack) == (VALID, len(poison)),
        what=f"{VALID} events completed and {len(poison)} rejected",
        timeout=60,
    )
    _assert_recorded(stack, len(poison), valid)
    assert worker.stop() == 0
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for queue in (f"{stack.namespace}.events", f"{stack.namespace}.events.XQ"):
            left = channel.queue_declare(queue=queue, passive=True).method.message_count
            assert left == 0, f"{left} message(s) left on {queue}"
    finally:
        connection.close()
    _assert_quiet(worker.output())
