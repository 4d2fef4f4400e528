"""A worker started before its broker: it waits, says so once per growing back-off step,
never claims to have started, and starts by itself once the broker is there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store import EventRecord

from .servers import OwnRedis
from .support import Stack, logout_event

pytestmark = pytest.mark.integration


@pytest.fixture
def late_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """This test's own Redis, on a port of its own, which the test starts later; stopped
    afterwards."""
    server = OwnRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("processes", [1, 2])
def test_worker_waits_for_its_broker_then_starts(
    stack: Stack,
    late_redis: OwnRedis,
    processes: int,
) -> None:
    """Broker down: one line per attempt, delays growing, no "worker started"; then it runs.
    With several processes the supervisor waits alone: the lines are not repeated N times."""
    port = late_redis.port
    stack.protocols = []
    stack.broker_url = late_redis.url
    stack.seed(records=[{"kind": "session", "session_id": "s-1", "user_id": "u"}])
    worker = stack.start_worker(processes=processes)

    def waiting() -> list[dict[str, object]]:
        return [x for x in worker.lines() if "retrying in" in str(x.get("event"))]

    stack.wait_for(lambda: len(waiting()) >= 3, what="three back-off lines", timeout=30)
    lines = waiting()
    assert all("broker unreachable" in str(x["event"]) for x in lines), lines
    assert all(f"127.0.0.1:{port}" in str(x["event"]) for x in lines), lines
    delays = [float(str(x["retry_in"])) for x in lines]
    assert delays[:3] == [1.0, 2.0, 4.0], delays
    assert delays.count(1.0) == 1, "one process waits and says so, not each of them"
    assert "worker started" not in worker.output()
    assert "Traceback" not in worker.output()

    late_redis.start()
    stack.wait_for(
        lambda: "worker started" in worker.output(), what="the worker to start", timeout=40
    )

    event = logout_event("s-1")
    with stack.publisher() as publisher:
        publisher.publish(event)

    def handled() -> bool:
        with stack.db() as db:
            status = db.scalar(
                select(EventRecord.status).where(EventRecord.event_id == event["event_id"])
            )
        return status == "completed"

    stack.wait_for(handled, what="the event to be handled", timeout=30)
    assert worker.stop() == 0
