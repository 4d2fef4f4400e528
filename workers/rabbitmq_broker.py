"""dramatiq's RabbitMQ broker, hardened for a worker: screened deliveries, patient consumers.

* dramatiq's RabbitMQ consumer dead-letters a message it cannot decode, with no audit
  record, and hands any decodable one to the worker, where a message whose arguments do not
  fit fails and is retried for hours. Here each delivery is screened first
  (:mod:`workers.screening`): one that would fail is recorded as rejected and acknowledged,
  and the others go on as usual (without a rejecter, it is dead-lettered, as dramatiq does
  with what it cannot decode).
* A consumer that loses RabbitMQ does not log a critical line and restart every 3 s: it
  asks the process's :class:`~workers.outage.Health` to ride the outage out (one line per
  back-off step, for all consumers together), then ends, and dramatiq starts a new one on a
  new connection. A consumer (re)started while RabbitMQ is down waits the same way.
* A message whose connection died before it was acknowledged is delivered again by
  RabbitMQ (handling is idempotent): its acknowledgement is dropped, as its delivery tag
  means nothing on another connection (or could name another message there).

Without a :class:`~workers.outage.Health` and a rejecter (a publishing command), it behaves
as dramatiq's broker.
"""

from __future__ import annotations

from typing import Any

import pika.exceptions
import structlog
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import q_name
from dramatiq.errors import BrokerConnectionError, ConnectionClosed

from orchestrator.rejection import Rejection
from workers.screening import Screened, screen

__all__ = ["LogoutRabbitmqBroker"]

_log = structlog.get_logger("logout.worker")

#: What pika raises when a consumer's channel or connection fails (as dramatiq catches).
_LOST = (AssertionError, pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)


class LogoutRabbitmqBroker(Screened, RabbitmqBroker):
    """:class:`RabbitmqBroker` whose consumers screen each delivery and ride outages out
    (module docstring)."""

    @property
    def consumer_class(self) -> type[_ScreeningConsumer]:
        return _ScreeningConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """dramatiq's consumer, once RabbitMQ answers (waiting out an outage first)."""
        from workers.outage import Passed

        while True:
            try:
                return super().consume(queue_name, prefetch, timeout)
            except BrokerConnectionError:
                if self.health is None or self.health.broker.ride_out() is not Passed.RECOVERED:
                    raise


class _Delivery(_RabbitmqMessage):
    """A delivered message and the consumer (so the connection) it came on."""

    def __init__(self, consumer: _ScreeningConsumer, redelivered: bool, tag: int, message: Any):
        super().__init__(redelivered, tag, message)  # type: ignore[no-untyped-call]
        self.consumer = consumer


class _ScreeningConsumer(_RabbitmqConsumer):
    """dramatiq's consumer, with the decoding step replaced by :func:`screen`, that ends
    once an outage of RabbitMQ is over (module docstring)."""

    broker: LogoutRabbitmqBroker

    def __next__(self) -> MessageProxy | None:
        from workers.outage import Passed

        try:
            method, _properties, body = next(self.iterator)
            if method is None or body is None:
                return None
        except _LOST as exc:
            # As dramatiq: a queue that disappeared is declared again on restart.
            if getattr(exc, "reply_code", None) == 404:
                self.broker.queues_pending.add(q_name(self.queue_name))
            health = self.broker.health
            if health is None or health.broker.ride_out() is Passed.NO_OUTAGE:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            # RabbitMQ is back (or the worker stops): dramatiq starts a new consumer.
            raise StopIteration from None
        verdict = screen(self.broker.actors, self.queue_name, body)
        if isinstance(verdict, Rejection):
            rejecter = self.broker.rejecter
            if rejecter is None:
                self._nack(method.delivery_tag)  # type: ignore[no-untyped-call]
            else:
                rejecter([verdict])
                # This consumer's thread owns the connection: acknowledge directly.
                self.channel.basic_ack(method.delivery_tag)
            return None
        self.known_tags.add(method.delivery_tag)
        return _Delivery(self, method.redelivered, method.delivery_tag, verdict)

    def _holds(self, message: MessageProxy) -> bool:
        """True when ``message`` came on this consumer's connection and it is open; else
        RabbitMQ delivers it again, and its acknowledgement is dropped (module docstring)."""
        if getattr(message, "consumer", None) is self and self.connection.is_open:
            return True
        _log.debug(
            "connection lost before the message was settled; RabbitMQ delivers it again",
            message_id=message.message_id,
        )
        return False

    def ack(self, message: MessageProxy) -> None:
        if self._holds(message):
            super().ack(message)  # type: ignore[no-untyped-call]

    def nack(self, message: MessageProxy) -> None:
        if self._holds(message):
            super().nack(message)  # type: ignore[no-untyped-call]
