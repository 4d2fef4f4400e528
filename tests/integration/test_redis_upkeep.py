"""Redis upkeep against a real Redis: a live worker's fetched messages stay its own however
long it holds them, a dead worker's go back to their queue at the next upkeep after its
heartbeat timed out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq import Message

from workers.redis_upkeep import UpkeptRedisBroker, keep_up

from .support import REDIS_URL

pytestmark = pytest.mark.integration

TIMEOUT_MS = 1000


@pytest.fixture
def brokers(namespace: str) -> Iterator[tuple[UpkeptRedisBroker, UpkeptRedisBroker, str]]:
    """Two workers' brokers on one queue (1 s heartbeat timeout, no random maintenance)."""
    made = [
        UpkeptRedisBroker(url=REDIS_URL, heartbeat_timeout=TIMEOUT_MS, maintenance_chance=0)
        for _ in range(2)
    ]
    queue = f"{namespace}.events"
    for broker in made:
        broker.declare_queue(queue)
    try:
        yield made[0], made[1], queue
    finally:
        made[0].flush(queue)
        for broker in made:
            broker.close()


def _fetch(broker: UpkeptRedisBroker, queue: str, count: int) -> Any:
    """A consumer that has fetched ``count`` messages (in its ack set, never acknowledged)."""
    consumer = broker.consume(queue, prefetch=count, timeout=100)
    assert next(consumer) is not None
    return consumer


def _queued(broker: UpkeptRedisBroker, queue: str) -> int:
    return int(broker.client.llen(f"dramatiq:{queue}"))


def test_a_busy_live_worker_keeps_its_messages_and_a_dead_ones_come_back(
    brokers: tuple[UpkeptRedisBroker, UpkeptRedisBroker, str],
) -> None:
    """Worker A fetches 5 messages and holds them for 3 heartbeat timeouts while its upkeep
    runs: B's upkeep leaves them. A's upkeep stops (A is dead): one timeout later B's next
    upkeep puts all 5 back on the queue."""
    first, second, queue = brokers
    for n in range(5):
        first.enqueue(Message(queue, "handle_event", (n,), {}, {}))
    consumer = _fetch(first, queue, 5)
    assert _queued(first, queue) == 0
    alive = threading.Event()
    keep_up(first, alive)
    deadline = time.monotonic() + 3 * TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        second.upkeep()
        assert _queued(second, queue) == 0, "a live worker's messages were taken from it"
        time.sleep(0.1)
    alive.set()  # A's upkeep stops: from now on A is silent, as if SIGKILLed
    dead_at = time.monotonic()
    while _queued(second, queue) < 5:
        assert time.monotonic() - dead_at < 1.25 * TIMEOUT_MS / 1000 + 1.0, "never requeued"
        second.upkeep()
        time.sleep(TIMEOUT_MS / 4000)
    assert time.monotonic() - dead_at >= TIMEOUT_MS / 1000 * 0.75
    consumer.close()
