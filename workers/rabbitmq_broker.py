"""dramatiq's RabbitMQ broker, with every delivered message screened (:mod:`workers.screening`).

dramatiq's RabbitMQ consumer dead-letters a message it cannot decode, with no audit record,
and hands any decodable one to the worker, where a message whose arguments do not fit
fails and is retried for hours. Here each delivery is screened first: one that would fail
is recorded as rejected and acknowledged, and the others go on as usual (without a rejecter,
it is dead-lettered, as dramatiq does with what it cannot decode).
"""

from __future__ import annotations

import pika.exceptions
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed

from orchestrator.rejection import Rejection
from workers.screening import Screened, screen

__all__ = ["LogoutRabbitmqBroker"]


class LogoutRabbitmqBroker(Screened, RabbitmqBroker):
    """:class:`RabbitmqBroker` whose consumers screen each delivery (module docstring)."""

    @property
    def consumer_class(self) -> type[_ScreeningConsumer]:
        return _ScreeningConsumer


class _ScreeningConsumer(_RabbitmqConsumer):
    """dramatiq's consumer, with the decoding step replaced by :func:`screen`."""

    broker: LogoutRabbitmqBroker

    def __next__(self) -> MessageProxy | None:
        try:
            method, _properties, body = next(self.iterator)
            if method is None or body is None:
                return None
        except (
            AssertionError,
            pika.exceptions.AMQPConnectionError,
            pika.exceptions.AMQPChannelError,
        ) as exc:
            # As dramatiq: a queue that disappeared is declared again on restart.
            if getattr(exc, "reply_code", None) == 404:
                self.broker.queues_pending.add(q_name(self.queue_name))
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
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
        message: MessageProxy = _RabbitmqMessage(  # type: ignore[no-untyped-call]
            method.redelivered, method.delivery_tag, verdict
        )
        return message
