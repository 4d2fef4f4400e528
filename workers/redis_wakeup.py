"""A Redis broker whose idle consumers are woken by the publisher instead of polling.

dramatiq's Redis consumer sleeps between empty fetches, backing off up to the worker's
``worker_timeout`` (1 s by default), so a message published to an idle worker waited up to
a second before anyone looked (measured: pick-up median 180-660 ms, max ~1.4 s). Here every
enqueue also PUBLISHes on the queue's wake-up channel (one extra Redis command), and an idle
consumer waits on that channel, with the same backoff as its upper bound, instead of
sleeping. A message is picked up within a Redis round trip of its publish.

The notification is only a hint: the message itself is in the queue, which consumers still
fetch as dramatiq does. A lost notification (a consumer reconnecting, a message enqueued
by something else, such as a foreign publisher) costs at most one backoff period, as
before; each upkeep run (``workers.redis_upkeep``), which may requeue a dead worker's
messages, wakes every queue's consumers.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed

from workers.redis_broker import LogoutRedisBroker, PatientConsumer

__all__ = ["AT_CAPACITY_MAX_WAIT_MS", "WakingRedisBroker", "wake_channel"]

#: Longest pause while this consumer already holds ``prefetch`` unfinished messages: the
#: wait is for a local worker thread to finish, so it is polled, briefly.
AT_CAPACITY_MAX_WAIT_MS = 50


def wake_channel(namespace: str, queue_name: str) -> str:
    """The Pub/Sub channel announcing new messages on ``queue_name``."""
    return f"{namespace}:wake:{queue_name}"


class WakingRedisBroker(LogoutRedisBroker):
    """:class:`LogoutRedisBroker` that announces each enqueue; see the module docstring."""

    @property
    def consumer_class(self) -> type[_WakingConsumer]:
        return _WakingConsumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued: Message[Any] = super().enqueue(message, delay=delay)
        # ``enqueued.queue_name`` is the delay queue's when ``delay`` is set.
        self.client.publish(wake_channel(self.namespace, enqueued.queue_name), b"")
        return enqueued

    def after_upkeep(self, queues: set[str]) -> None:
        """Messages requeued from a dead worker came with no notice: wake the consumers."""
        with self.client.pipeline(transaction=False) as pipe:
            for queue in sorted(queues):
                pipe.publish(wake_channel(self.namespace, queue), b"")
            pipe.execute()


class _WakingConsumer(PatientConsumer):
    """Fetches as dramatiq's consumer does; waits on the wake-up channel when idle."""

    def __init__(
        self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        # A zero timeout makes the parent's backoff sleep 0 ms; this class does the waiting.
        super().__init__(broker, queue_name, prefetch, 0)
        self._idle_timeout = timeout
        self._idle_misses = 0
        self._pubsub = broker.client.pubsub(ignore_subscribe_messages=True)
        try:
            self._pubsub.subscribe(wake_channel(broker.namespace, queue_name))
        except redis.ConnectionError as exc:
            self._pubsub.close()
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _next(self) -> MessageProxy | None:
        try:
            self._drain()  # notifications of messages the fetch below will see anyway
            message: MessageProxy | None = super()._next()
            if message is not None:
                self._idle_misses = 0
                return message
            if self.outstanding_message_count >= self.prefetch:
                self._idle_misses, wait = compute_backoff(
                    self._idle_misses, max_backoff=min(self._idle_timeout, AT_CAPACITY_MAX_WAIT_MS)
                )
                time.sleep(wait / 1000)
            else:
                self._idle_misses, wait = compute_backoff(
                    self._idle_misses, max_backoff=self._idle_timeout
                )
                self._pubsub.get_message(timeout=wait / 1000)
            return None
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def _drain(self) -> None:
        while self._pubsub.get_message(timeout=0.0) is not None:
            pass

    def close(self) -> None:
        self._pubsub.close()
