"""What the routes share, built once when the app starts: the runtime (database), the broker,
the publisher, the relay, the waiter, the binding checker, session activity and the token
check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import dramatiq
from starlette.concurrency import run_in_threadpool

from api.auth import Authenticator
from orchestrator.binding_check import BindingChecker
from orchestrator.errors import ConfigurationError
from orchestrator.publishing import Publisher
from orchestrator.relay import BrokerSender, OutboxRelay
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from orchestrator.waiting import LogoutWaiter

__all__ = ["Service"]

_T = TypeVar("_T")


@dataclass
class Service:
    settings: Settings
    runtime: Runtime
    broker: dramatiq.Broker
    publisher: Publisher
    relay: OutboxRelay
    waiter: LogoutWaiter
    auth: Authenticator

    @classmethod
    def start(cls, settings: Settings, *, migrate: bool | None = None) -> Service:
        """Reach the database (migrating when ``migrate``, by default when ``auto_migrate``)
        and build the rest."""
        from workers.broker import build_broker, is_in_process

        if is_in_process(settings):
            raise ConfigurationError(
                "serve needs a broker the workers share: broker_url memory:// lives in one "
                "process; set LOGOUT_BROKER_URL to redis:// or amqp://"
            )
        runtime = Runtime.start(settings, migrate=migrate)
        broker = build_broker(settings)
        return cls(
            settings=settings,
            runtime=runtime,
            broker=broker,
            publisher=Publisher(broker, runtime.database, settings.namespace),
            relay=runtime.relay(BrokerSender(broker)),
            waiter=runtime.waiter(),
            auth=Authenticator(settings.api_tokens),
        )

    def checker(self) -> BindingChecker:
        """The binding check on the configured GeoIP databases (ConfigurationError if none)."""
        if not self.runtime.has_geoip:
            raise ConfigurationError(
                "binding checks need geoip_city_db and/or geoip_asn_db (LOGOUT_GEOIP_CITY_DB, "
                "LOGOUT_GEOIP_ASN_DB)"
            )
        s = self.settings
        return BindingChecker(
            self.runtime.database,
            self.runtime.geoip(),
            s.binding_unlisted_addresses,
            namespace=s.namespace,
        )

    async def run(self, job: Callable[[], _T]) -> _T:
        """``job()`` in a worker thread (database and broker calls block)."""
        return await run_in_threadpool(job)

    def close(self) -> None:
        self.waiter.close()
        self.broker.close()
        self.runtime.close()
