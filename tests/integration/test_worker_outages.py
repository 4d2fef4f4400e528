"""A running worker loses its broker or its database, or starts before its database: it
says so once per growing back-off step (no traceback, no dramatiq critical line every few
seconds), takes no message it cannot handle, spends no retry, and goes on by itself once
the server is back. Each test owns the server it stops (own ports, own data)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.outbox import event_message
from orchestrator.store import AuditRow, EventRecord
from orchestrator.validation import parse_event

from .servers import OwnPostgres, OwnRabbitmq, OwnRedis
from .support import Stack, WorkerProcess, logout_event

pytestmark = pytest.mark.integration

EVENTS = 20


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    """One PostgreSQL cluster for this module's tests (initdb is slow), removed after."""
    server = OwnPostgres()
    try:
        yield server
    finally:
        server.remove()


def _waiting(worker: WorkerProcess, server: str) -> list[dict[str, Any]]:
    """The back-off lines about ``server`` ("database unreachable ...; retrying in N s")."""
    return [
        x
        for x in worker.lines()
        if str(x.get("event", "")).startswith(f"{server} unreachable")
        and "retrying in" in str(x["event"])
    ]


def _assert_backed_off(lines: list[dict[str, Any]]) -> None:
    delays = [float(x["retry_in"]) for x in lines]
    assert delays[:3] == [1.0, 2.0, 4.0], delays
    assert delays == sorted(delays), "the back-off only grows"
    assert len(delays) == len(set(delays)) or delays.count(30.0) > 1, "one line per step"


def _quiet(worker: WorkerProcess) -> None:
    """Nothing but sentences: no traceback, no dramatiq restart loop, no failed message."""
    output = worker.output()
    for noise in ("Traceback", "Consumer encountered", "Failed to process", "Retrying message"):
        assert noise not in output, noise


def _completed(stack: Stack, events: list[dict[str, Any]]) -> int:
    """How many of ``events`` are completed (the module's tests share one database)."""
    among = EventRecord.event_id.in_([e["event_id"] for e in events])
    return stack.count(EventRecord, EventRecord.status == "completed", among)


def _seed(stack: Stack, count: int = EVENTS) -> list[dict[str, Any]]:
    stack.protocols = []
    stack.seed(
        records=[
            {"kind": "session", "session_id": f"s-{i}", "user_id": f"u-{i}"} for i in range(count)
        ]
    )
    return [logout_event(f"s-{i}") for i in range(count)]


def test_worker_started_while_postgres_is_down_waits_then_starts(
    stack: Stack, own_postgres: OwnPostgres
) -> None:
    """PostgreSQL down at start: one line per attempt (1, 2, 4 s ...), no traceback, no
    "worker started"; PostgreSQL started: the worker migrates, starts and handles events."""
    if own_postgres.running():
        own_postgres.stop()
    stack.database_url = own_postgres.url
    stack.protocols = []
    worker = stack.start_worker()
    stack.wait_for(lambda: len(_waiting(worker, "database")) >= 3, what="3 back-off lines")
    lines = _waiting(worker, "database")
    _assert_backed_off(lines)
    assert all(f"127.0.0.1:{own_postgres.port}" in x["event"] for x in lines), lines
    assert "worker started" not in worker.output()
    own_postgres.start()
    stack.wait_for(lambda: "worker started" in worker.output(), what="the worker to start")
    event = logout_event("s-none")
    with stack.publisher() as publisher:
        publisher.publish(event)
    stack.wait_for(lambda: _completed(stack, [event]) == 1, what="the event to be handled")
    assert worker.stop() == 0
    _quiet(worker)


def test_postgres_outage_is_ridden_out_without_spending_retries(
    stack: Stack, own_postgres: OwnPostgres
) -> None:
    """PostgreSQL stopped ~10 s while 20 events arrive at two workers: each says so once per
    growing back-off step, spends no dramatiq retry, dead-letters nothing, keeps its Redis
    heartbeat (so neither takes the messages the other holds: no event handled twice), and
    all 20 are handled (each session ended once) once PostgreSQL is back."""
    if not own_postgres.running():
        own_postgres.start()
    stack.database_url = own_postgres.url
    events = _seed(stack)
    worker, other = stack.start_worker(), stack.start_worker()
    stack.wait_for(
        lambda: "worker started" in worker.output() and "worker started" in other.output(),
        what="both workers to start",
    )
    own_postgres.stop()
    stopped = time.monotonic()
    # Sent straight to the broker: this package's publisher needs the database (it records
    # each event before it enqueues it), so these come as from a foreign publisher.
    with stack.raw_sender() as send:
        for event in events:
            send(event_message(parse_event(event, "event"), stack.namespace))
    stack.wait_for(
        lambda: len(_waiting(worker, "database")) + len(_waiting(other, "database")) >= 3,
        what="3 back-off lines",
    )
    time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
    own_postgres.start()
    stack.engine.dispose()  # its connections died with the server
    stack.wait_for(lambda: _completed(stack, events) == EVENTS, what=f"{EVENTS} events", timeout=60)
    again = "database reachable again; resuming"
    for each in (worker, other):
        if _waiting(each, "database"):  # a worker with no message in hand may not notice
            _assert_backed_off(_waiting(each, "database"))
            recovered = [x for x in each.lines() if x.get("event") == again]
            assert len(recovered) == 1, "one outage, one recovery"
    queue = f"dramatiq:{stack.namespace}.events"
    assert stack.redis.zcard(f"{queue}.XQ") == 0, "nothing is dead-lettered"
    assert stack.queue_length("events.DQ") == 0, "no retry is scheduled"
    duplicates = stack.count(AuditRow, AuditRow.type == "event.duplicate")
    ended = stack.count(
        AuditRow,
        AuditRow.type == "session.ended",
        AuditRow.event_id.in_([e["event_id"] for e in events]),
    )
    assert ended == EVENTS
    assert duplicates == 0, "a message held through the outage was handled twice"
    for each in (worker, other):
        assert each.stop() == 0
        _quiet(each)


def test_broker_lost_after_start_is_ridden_out(stack: Stack, own_redis: OwnRedis) -> None:
    """Redis killed under a running worker: one line per growing back-off step for the whole
    process (not one critical line per consumer every few seconds); Redis restarted: the
    worker says so and handles new events by itself."""
    stack.broker_url = own_redis.url
    events = _seed(stack)
    worker = stack.start_worker()
    stack.wait_for(lambda: "worker started" in worker.output(), what="the worker to start")
    own_redis.stop()
    stack.wait_for(lambda: len(_waiting(worker, "broker")) >= 4, what="4 back-off lines")
    lines = _waiting(worker, "broker")
    _assert_backed_off(lines)
    assert all(f"127.0.0.1:{own_redis.port}" in x["event"] for x in lines), lines
    own_redis.start()
    stack.wait_for(
        lambda: any(
            str(x.get("event", "")).startswith("broker reachable again") for x in worker.lines()
        ),
        what="the worker to see Redis again",
        timeout=40,
    )
    with stack.publisher() as publisher:
        publisher.publish_many(events)
    stack.wait_for(lambda: _completed(stack, events) == EVENTS, what=f"{EVENTS} events")
    assert worker.stop() == 0
    _quiet(worker)


def test_rabbitmq_lost_after_start_is_ridden_out(
    stack: Stack, own_rabbitmq: OwnRabbitmq, capsys: pytest.CaptureFixture[str]
) -> None:
    """RabbitMQ stopped ~10 s under a running worker, right after 20 events were published:
    one line per growing back-off step for the whole process (no critical line per consumer
    every 3 s); RabbitMQ started again: the worker says so once, and the 20 events queued
    before the outage and 20 published after it are each handled once."""
    stack.broker_url = own_rabbitmq.url
    events = _seed(stack, 2 * EVENTS)
    before, after = events[:EVENTS], events[EVENTS:]
    worker = stack.start_worker()
    stack.wait_for(lambda: "worker started" in worker.output(), what="the worker to start")
    with stack.publisher() as publisher:
        publisher.publish(before[0])
        stack.wait_for(lambda: _completed(stack, before[:1]) == 1, what="the consumers to run")
        publisher.publish_many(before[1:])
    own_rabbitmq.stop()  # at once: some events are in the worker's hands, some queued
    stopped = time.monotonic()
    stack.wait_for(lambda: len(_waiting(worker, "broker")) >= 3, what="3 back-off lines")
    time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
    own_rabbitmq.start()
    again = "broker reachable again; resuming"
    stack.wait_for(
        lambda: any(x.get("event") == again for x in worker.lines()),
        what="the worker to see RabbitMQ again",
        timeout=60,
    )
    resumed = time.monotonic()
    with stack.publisher() as publisher:
        publisher.publish_many(after)
    stack.wait_for(lambda: _completed(stack, events) == 2 * EVENTS, what="40 events", timeout=60)
    handled = time.monotonic()
    lines = _waiting(worker, "broker")
    _assert_backed_off(lines)
    assert all(f"127.0.0.1:{own_rabbitmq.port}" in x["event"] for x in lines), lines
    assert [x for x in worker.lines() if x.get("event") == again] != []
    assert len([x for x in worker.lines() if x.get("event") == again]) == 1, "one recovery"
    ids = [e["event_id"] for e in events]
    for kind in ("event.received", "session.ended"):
        got = stack.count(AuditRow, AuditRow.type == kind, AuditRow.event_id.in_(ids))
        assert got == len(events), f"{kind}: {got}"
    assert worker.stop() == 0
    _quiet(worker)
    with capsys.disabled():
        delays = [x["retry_in"] for x in lines]
        print(
            f"\n  [rabbitmq outage] back-off {delays}; all 40 handled "
            f"{handled - resumed:.1f} s after 'reachable again' "
            f"({resumed - stopped:.1f} s after the stop)"
        )
