"""A RabbitMQ consumer that loses its connection (fakes, no network): during an outage it
waits for the broker, then ends so dramatiq starts a new one, without the critical line
of a connection error; a channel error while RabbitMQ answers is raised as before; the
acknowledgement of a message whose connection died is dropped (RabbitMQ delivers it again)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import pika
import pika.exceptions
import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.errors import ConnectionClosed

from orchestrator import Settings
from orchestrator.errors import BrokerUnavailableError
from workers import outage
from workers.broker import check_broker
from workers.outage import Health, Outage
from workers.rabbitmq_broker import LogoutRabbitmqBroker, _Delivery, _ScreeningConsumer


class Server:
    """A probe: down for ``down`` probes, then answering."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.probes = 0

    def probe(self) -> None:
        self.probes += 1
        if self.down > 0:
            self.down -= 1
            raise BrokerUnavailableError("broker unreachable: amqp://rabbit.test")


class FakeConnection:
    """The part of a pika connection dramatiq's acknowledgements use."""

    def __init__(self) -> None:
        self.is_open = True
        self.callbacks: list[Callable[[], None]] = []

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(outage, "BACKOFF_CAP", 0.02)


def _broker(server: Server | None) -> LogoutRabbitmqBroker:
    broker = LogoutRabbitmqBroker(url="amqp://guest:guest@rabbit.test:5672/%2F")
    if server is not None:
        broker.health = Health(
            database=Outage("database", Server(0).probe, threading.Event()),
            broker=Outage("broker", server.probe, threading.Event()),
        )
    return broker


class FakeChannel:
    def basic_ack(self, tag: int) -> None: ...

    def basic_nack(self, tag: int, requeue: bool) -> None: ...


def _consumer(broker: LogoutRabbitmqBroker, deliveries: Iterator[Any]) -> _ScreeningConsumer:
    """A consumer on a fake connection (its real constructor connects)."""
    consumer = object.__new__(_ScreeningConsumer)
    fake = cast(Any, consumer)
    fake.broker = broker
    fake.queue_name = "lo.events"
    fake.iterator = deliveries
    fake.connection = FakeConnection()
    fake.channel = FakeChannel()
    fake.known_tags = set()
    return consumer


def _connection(consumer: _ScreeningConsumer) -> FakeConnection:
    return cast(FakeConnection, consumer.connection)


def _lost() -> Iterator[Any]:
    raise pika.exceptions.StreamLostError("Transport indicated EOF")
    yield  # a generator, as pika's consume() is


def test_an_outage_ends_the_consumer_cleanly_once_rabbitmq_answers() -> None:
    """Connection lost, RabbitMQ down for 3 probes: the consumer waits, then ends its
    iteration (dramatiq restarts it without a critical line)."""
    server = Server(down=3)
    consumer = _consumer(_broker(server), _lost())
    with pytest.raises(StopIteration):
        next(consumer)
    assert server.probes == 4


def test_a_channel_error_while_rabbitmq_answers_is_raised() -> None:
    """No outage (the probe answers at once): raised as dramatiq does, the queue to be
    declared again when it was deleted."""

    def deleted() -> Iterator[Any]:
        raise pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue 'lo.events'")
        yield

    broker = _broker(Server(down=0))
    consumer = _consumer(broker, deleted())
    with pytest.raises(ConnectionClosed):
        next(consumer)
    assert "lo.events" in broker.queues_pending


def test_without_health_the_error_is_raised_as_dramatiq_does() -> None:
    consumer = _consumer(_broker(None), _lost())
    with pytest.raises(ConnectionClosed):
        next(consumer)


def test_consume_waits_out_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer (re)started while RabbitMQ is down waits for it instead of failing; one
    that fails while RabbitMQ answers is raised."""
    attempts: list[str] = []

    def consume(self: RabbitmqBroker, queue_name: str, prefetch: int, timeout: int) -> Any:
        attempts.append(queue_name)
        if len(attempts) % 2:
            raise ConnectionClosed(pika.exceptions.AMQPConnectionError("refused"))  # type: ignore[no-untyped-call]
        return "consumer"

    monkeypatch.setattr(RabbitmqBroker, "consume", consume)
    server = Server(down=2)
    assert cast(Any, _broker(server).consume("lo.events", 1, 1000)) == "consumer"
    assert attempts == ["lo.events", "lo.events"]
    assert server.probes == 3
    with pytest.raises(ConnectionClosed):
        _broker(Server(down=0)).consume("lo.events", 1, 1000)
    assert len(attempts) == 3


def _delivery(consumer: _ScreeningConsumer, tag: int) -> _Delivery:
    consumer.known_tags.add(tag)
    return _Delivery(consumer, False, tag, Message("lo.events", "handle_event", (), {}, {}))


def test_acks_go_to_the_connection_the_message_came_on() -> None:
    consumer = _consumer(_broker(Server(0)), iter(()))
    consumer.ack(_delivery(consumer, 1))
    consumer.nack(_delivery(consumer, 2))
    assert len(_connection(consumer).callbacks) == 2
    assert consumer.known_tags == set()


def test_the_ack_of_a_message_whose_connection_died_is_dropped() -> None:
    """The old consumer's message (its tag may name another message on the new connection)
    and a message of a closed connection are not settled: RabbitMQ delivers them again."""
    broker = _broker(Server(0))
    old, new = _consumer(broker, iter(())), _consumer(broker, iter(()))
    held = _delivery(old, 1)
    same_tag = _delivery(new, 1)
    new.ack(held)
    new.nack(held)
    assert new.known_tags == {1}
    assert _connection(new).callbacks == []
    _connection(new).is_open = False
    new.ack(same_tag)
    assert new.known_tags == {1}
    assert _connection(new).callbacks == []


def test_the_probe_opens_a_connection_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe does not trust a connection a thread keeps (it may be dead unknowingly)."""
    opened: list[Any] = []

    class Connection:
        def __init__(self, parameters: Any) -> None:
            opened.append(parameters)

        def close(self) -> None:
            opened.append("closed")

    broker = _broker(None)
    settings = Settings.load(None, broker_url="amqp://guest:guest@rabbit.test:5672/%2F")
    monkeypatch.setattr(pika, "BlockingConnection", Connection)
    check_broker(broker, settings)
    assert opened == [broker.parameters, "closed"]

    def refused(parameters: Any) -> None:
        raise pika.exceptions.AMQPConnectionError("refused")

    monkeypatch.setattr(pika, "BlockingConnection", refused)
    with pytest.raises(BrokerUnavailableError, match=r"rabbit\.test"):
        check_broker(broker, settings)
