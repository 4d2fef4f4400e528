"""The Redis broker's wake-up: an idle consumer is woken by the enqueue, not by its poll.

Against the real Redis server. The consumers here get a 20 s idle timeout, so a consumer
that only polled would sleep up to 20 s; every wait below is bounded well under that, so a
pass means the notification woke it (no timing target is checked: that is the benchmark's).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.common import dq_name

from orchestrator.settings import Settings
from workers.broker import build_broker
from workers.redis_broker import LogoutRedisBroker
from workers.redis_wakeup import WakingRedisBroker, wake_channel

from .support import REDIS_URL

pytestmark = pytest.mark.integration

IDLE_TIMEOUT_MS = 20_000
#: Far below IDLE_TIMEOUT_MS: reached only when no notification arrived.
WOKEN_WITHIN = 5.0


@pytest.fixture
def broker(redis_client: redis.Redis, namespace: str) -> Iterator[WakingRedisBroker]:
    settings = Settings(broker_url=REDIS_URL, namespace=namespace)
    built = build_broker(settings)
    assert isinstance(built, WakingRedisBroker)
    try:
        yield built
    finally:
        built.close()


def _message(queue: str, n: int = 0) -> dramatiq.Message[object]:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=(n,), kwargs={}, options={})


def test_idle_consumer_is_woken_by_an_enqueue(broker: WakingRedisBroker, namespace: str) -> None:
    """After many empty fetches (full backoff), an enqueue ends the wait at once."""
    queue = f"{namespace}.wake"
    broker.declare_queue(queue)
    consumer = broker.consume(queue, prefetch=4, timeout=IDLE_TIMEOUT_MS)
    try:
        assert next(consumer) is None  # an empty fetch, then a short first backoff
        consumer._idle_misses = 32  # type: ignore[attr-defined]  # as after a long idle
        timer = threading.Timer(0.3, lambda: broker.enqueue(_message(queue, 7)))
        timer.start()
        began = time.monotonic()
        assert next(consumer) is None  # the wait ends with the notification
        waited = time.monotonic() - began
        timer.join()
        assert 0.2 < waited < WOKEN_WITHIN
        message = next(consumer)
        assert message is not None
        assert message.args == (7,)
        consumer.ack(message)
    finally:
        consumer.close()


def test_delayed_enqueue_wakes_the_delay_queue(broker: WakingRedisBroker, namespace: str) -> None:
    """A delayed message (a retry) announces itself on the delay queue's channel."""
    queue = f"{namespace}.wake"
    broker.declare_queue(queue)
    listener = broker.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(wake_channel(broker.namespace, dq_name(queue)))
    try:
        broker.enqueue(_message(queue), delay=60_000)
        deadline = time.monotonic() + WOKEN_WITHIN
        notice = None
        while notice is None and time.monotonic() < deadline:
            notice = listener.get_message(timeout=0.5)
        assert notice is not None
        assert notice["channel"].decode() == wake_channel(broker.namespace, dq_name(queue))
    finally:
        listener.close()


def test_a_worker_with_the_default_timeout_picks_up_promptly(
    broker: WakingRedisBroker, namespace: str
) -> None:
    """A real dramatiq Worker, idle long enough to back off fully, runs a message woken."""
    done = threading.Event()

    @dramatiq.actor(broker=broker, queue_name=f"{namespace}.work", actor_name="wake_probe")
    def probe() -> None:
        done.set()

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=IDLE_TIMEOUT_MS)
    worker.start()
    try:
        time.sleep(1.5)  # empty fetches: the consumers' backoff grows past 1 s
        probe.send()
        assert done.wait(WOKEN_WITHIN), "the idle worker was not woken by the enqueue"
    finally:
        worker.stop()


def test_close_releases_the_subscription(broker: WakingRedisBroker, namespace: str) -> None:
    """Closing a consumer closes its Pub/Sub connection (no subscriber left behind)."""
    queue = f"{namespace}.wake"
    broker.declare_queue(queue)
    channel = wake_channel(broker.namespace, queue)
    consumer = broker.consume(queue, prefetch=1, timeout=IDLE_TIMEOUT_MS)
    assert broker.client.pubsub_numsub(channel) == [(channel.encode(), 1)]
    consumer.close()
    deadline = time.monotonic() + WOKEN_WITHIN
    while broker.client.pubsub_numsub(channel)[0][1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.client.pubsub_numsub(channel) == [(channel.encode(), 0)]


def test_redis_wakeup_false_builds_a_polling_broker(namespace: str) -> None:
    """``redis_wakeup = false``: no wake-up channel; consumers poll as dramatiq's do (still
    screening what they fetch and riding outages out, as every worker's broker)."""
    built = build_broker(Settings(broker_url=REDIS_URL, namespace=namespace, redis_wakeup=False))
    try:
        assert type(built) is LogoutRedisBroker
        assert not isinstance(built, WakingRedisBroker)
    finally:
        built.close()
