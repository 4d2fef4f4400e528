"""dramatiq's Redis broker, hardened for a worker: screened fetches, patient consumers.

* Every fetched message is screened (:mod:`workers.screening`) before dramatiq decodes it:
  one that would strand, dead-letter or loop is recorded as rejected and acknowledged, and
  the valid messages fetched beside it go on as usual.
* A consumer that loses Redis does not restart every few seconds with a critical line each
  time: it asks the process's :class:`~workers.outage.Health` to ride the outage out (one
  line per back-off step, for all consumers together), then fetches again. Acknowledgements
  wait for Redis the same way instead of warning every 5 s.

Without a :class:`~workers.outage.Health` and a rejecter (a publishing command), it behaves
as dramatiq's broker.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.errors import BrokerConnectionError

from orchestrator.rejection import Rejection
from workers.redis_upkeep import UpkeptRedisBroker
from workers.screening import Screened, screen

__all__ = ["LogoutRedisBroker", "PatientConsumer"]

_LOST = (BrokerConnectionError, redis.ConnectionError, redis.TimeoutError)


class LogoutRedisBroker(Screened, UpkeptRedisBroker):
    """dramatiq's Redis broker with maintenance on a clock (:class:`UpkeptRedisBroker`),
    screened fetches and patient consumers (module docstring)."""

    @property
    def consumer_class(self) -> type[PatientConsumer]:
        return PatientConsumer

    def do_fetch(self, queue_name: str, prefetch: int) -> list[bytes | None]:
        fetched: list[bytes | None] = self._dispatch("fetch")(queue_name, prefetch)  # type: ignore[no-untyped-call]
        if self.rejecter is None:
            return fetched
        kept: list[bytes | None] = []
        refused: list[tuple[bytes, Rejection]] = []
        for data in fetched:
            verdict = (
                None if data is None else screen(self.actors, queue_name, data, "redis_message_id")
            )
            if isinstance(verdict, Rejection):
                assert data is not None
                refused.append((data, verdict))
            else:
                kept.append(data)
        if refused:
            self._refuse(queue_name, refused)
        return kept

    def _refuse(self, queue_name: str, refused: list[tuple[bytes, Rejection]]) -> None:
        """Record the rejections, then acknowledge their messages, found by their bytes
        among those this worker holds (a message that does not decode has no id to read;
        it is recorded under its Redis id, so a redelivery is recorded once)."""
        assert self.rejecter is not None
        acks = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
        held = [bytes(i) for i in self.client.smembers(acks) if isinstance(i, bytes)]
        stored = self.client.hmget(f"{self.namespace}:{queue_name}.msgs", held) if held else []
        by_data: dict[bytes, list[str]] = {}
        for held_id, data in zip(held, stored, strict=True):
            if data is not None:
                by_data.setdefault(bytes(data), []).append(held_id.decode())
        found: list[tuple[str | None, Rejection]] = []
        for data, rejection in refused:
            ids = by_data.get(data)
            redis_id = ids.pop() if ids else None
            if redis_id is not None and rejection.message_id.startswith("sha256:"):
                rejection = dataclasses.replace(rejection, message_id=f"redis:{redis_id}")
            found.append((redis_id, rejection))
        self.rejecter([rejection for _, rejection in found])
        for redis_id, _ in found:
            if redis_id is not None:
                self.do_ack(queue_name, redis_id)


class PatientConsumer(_RedisConsumer):
    """Rides Redis outages out instead of restarting (see the module docstring)."""

    broker: LogoutRedisBroker
    #: Connection errors in a row while Redis answers a ping (connections it dropped when
    #: it restarted, each re-made on its next use) before dramatiq's restart takes over.
    STALE_RETRIES = 3

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._stale = 0

    def _again(self) -> bool:
        """After a connection error: True when the work may be done again now (Redis
        answers again after an outage, or the error came from a dropped connection)."""
        from workers.outage import Passed

        health = self.broker.health
        passed = Passed.STOPPED if health is None else health.broker.ride_out()
        if passed is Passed.NO_OUTAGE:
            self._stale += 1
            return self._stale <= self.STALE_RETRIES
        self._stale = 0
        return passed is Passed.RECOVERED

    def _next(self) -> MessageProxy | None:
        """One step of dramatiq's consumer (a message, or None when there is none yet)."""
        return super().__next__()  # type: ignore[no-untyped-call,no-any-return]

    def __next__(self) -> MessageProxy | None:
        try:
            message = self._next()
        except _LOST:
            if self._again():
                return None
            raise
        self._stale = 0
        return message

    def ack(self, message: MessageProxy) -> None:
        while True:
            try:
                super().ack(message)  # type: ignore[no-untyped-call]
                return
            except _LOST:
                if not self._again():
                    raise

    def nack(self, message: MessageProxy) -> None:
        while True:
            try:
                super().nack(message)  # type: ignore[no-untyped-call]
                return
            except _LOST:
                if not self._again():
                    raise

    def requeue(self, messages: Any) -> None:
        # Redis is gone: it hands this worker's messages to others once it is seen dead.
        with contextlib.suppress(redis.RedisError):
            super().requeue(messages)  # type: ignore[no-untyped-call]
