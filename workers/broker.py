"""The one module that builds the broker, from explicit settings; chosen by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

import dramatiq
import pika
import pika.exceptions
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware, default_middleware

from orchestrator.errors import BrokerUnavailableError, ConfigurationError
from orchestrator.settings import Settings, redact_url
from workers.exit_codes import broker_unreachable_message
from workers.middleware import LogContext
from workers.rabbitmq_broker import LogoutRabbitmqBroker
from workers.redis_broker import LogoutRedisBroker
from workers.redis_wakeup import WakingRedisBroker

__all__ = ["BROKER_ERRORS", "broker_unreachable", "build_broker", "check_broker", "is_in_process"]

#: What the broker clients raise when the server cannot be reached or drops the connection.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.RedisError,
    pika.exceptions.AMQPError,
    dramatiq.errors.BrokerConnectionError,
    OSError,
)


def is_in_process(settings: Settings) -> bool:
    """True for ``memory://``: the broker lives in this process only."""
    return urlsplit(settings.broker_url).scheme == "memory"


def build_broker(settings: Settings) -> dramatiq.Broker:
    """Build the broker for ``settings.broker_url`` and make it dramatiq's global broker."""
    middleware: list[Middleware] = [m() for m in default_middleware]
    middleware += [CurrentMessage(), LogContext()]
    scheme = urlsplit(settings.broker_url).scheme
    broker: dramatiq.Broker
    if scheme in ("redis", "rediss"):
        # Idle consumers wait on a Pub/Sub wake-up instead of sleeping (workers/redis_wakeup).
        # A thread of each worker runs their maintenance on a clock (workers/redis_upkeep).
        redis_broker = WakingRedisBroker if settings.redis_wakeup else LogoutRedisBroker
        broker = redis_broker(
            url=settings.broker_url,
            middleware=middleware,
            heartbeat_timeout=settings.redis_heartbeat_timeout_ms,
            maintenance_chance=settings.redis_maintenance_chance,
        )
    elif scheme in ("amqp", "amqps"):
        broker = LogoutRabbitmqBroker(url=settings.broker_url, middleware=middleware)
    elif scheme == "memory":
        broker = StubBroker(middleware=middleware)
    else:  # pragma: no cover - Settings already refuses other schemes
        raise ConfigurationError(f"broker_url: unsupported scheme {scheme!r}")
    dramatiq.set_broker(broker)
    return broker


def _reason(exc: BaseException, depth: int = 0) -> str:
    """The first line of what went wrong; pika's errors keep it in a nested exception."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0].rstrip(".")
    inner = [a for a in exc.args if isinstance(a, BaseException)]
    inner.append(getattr(exc, "exception", None) or exc.__cause__)  # type: ignore[arg-type]
    for nested in inner:
        if isinstance(nested, BaseException) and depth < 5:
            return _reason(nested, depth + 1)
    return type(exc).__name__


def broker_unreachable(settings: Settings, exc: BaseException) -> BrokerUnavailableError:
    """The error to raise for ``exc``: which broker, what its client said, what to do."""
    where = redact_url(settings.broker_url)
    return BrokerUnavailableError(broker_unreachable_message(where, _reason(exc)))


def check_broker(broker: dramatiq.Broker, settings: Settings) -> None:
    """Reach the broker once; raise :class:`BrokerUnavailableError` when it does not answer."""
    try:
        if isinstance(broker, RedisBroker):
            broker.client.ping()
        elif isinstance(broker, RabbitmqBroker):
            # A connection of its own, closed at once: the one a thread keeps may have died
            # without its knowing yet (a probe during an outage must not trust it).
            pika.BlockingConnection(broker.parameters).close()
    except BROKER_ERRORS as exc:
        raise broker_unreachable(settings, exc) from exc
