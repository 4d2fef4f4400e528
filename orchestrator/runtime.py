"""Everything one worker process needs, built once from the settings and passed down."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from orchestrator.retry import RetryPolicy
from orchestrator.session_policy import SessionPolicy
from orchestrator.settings import Settings
from orchestrator.store.database import Database, make_database
from orchestrator.store.engine import check_connection, make_engine

# What only some commands use (HTTP, fan-out, waiting, GeoIP) is imported where it is used,
# so a command that only reads the database starts without loading those stacks.
if TYPE_CHECKING:
    from orchestrator.activity import SessionActivity
    from orchestrator.binding import GeoipReader
    from orchestrator.devices import DeviceCheck
    from orchestrator.logout import Attempts, LogoutEngine, RetryScheduler
    from orchestrator.notices import NoticeBoard, Notifier
    from orchestrator.outbox import OutboxMessage, Relay
    from orchestrator.plans import PlanTimeouts
    from orchestrator.registry import SessionRegistry
    from orchestrator.relay import OutboxRelay
    from orchestrator.sender import HttpSender
    from orchestrator.waiting import LogoutWaiter
    from protocols import ProtocolHandler
    from schemas import SessionSeen, SessionStarted

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """Database, handlers, sender and processor of one process. Close it when done."""

    settings: Settings
    engine: Engine
    database: Database
    handlers: Mapping[str, ProtocolHandler]
    _sender: HttpSender | None = field(default=None, repr=False)
    _geoip: GeoipReader | None = field(default=None, repr=False)
    _notices: NoticeBoard | None = field(default=None, repr=False)
    _notifier: Notifier | None = field(default=None, repr=False)
    _builders: ThreadPoolExecutor | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        migrate: bool | None = None,
        handlers: Mapping[str, ProtocolHandler] | None = None,
    ) -> Runtime:
        """Connect, migrate (when ``auto_migrate``) and load the enabled protocol handlers.

        Raises :class:`~orchestrator.errors.HandlerLoadError` when a handler cannot load,
        :class:`~orchestrator.errors.DatabaseUnavailableError` when the database cannot be
        reached, :class:`~orchestrator.errors.ConfigurationError` for a database URL that
        cannot work.
        """
        if handlers is None:
            from orchestrator.handlers import load_handlers

            handlers = load_handlers(settings)
        engine = make_engine(settings.effective_database_url, settings.origin("database_url"))
        try:
            check_connection(engine)
            if settings.auto_migrate if migrate is None else migrate:
                from orchestrator.store.migrate import upgrade

                upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(settings, engine, make_database(engine), handlers)

    @classmethod
    def for_reading(cls, settings: Settings) -> Runtime:
        """A runtime that only reads: it never migrates and loads no handler; a missing or
        older schema is :class:`~orchestrator.errors.SchemaOutdatedError` (run ``db
        upgrade``). Its engine is :func:`~orchestrator.store.reading.reading_engine`'s, as
        ``audit list``'s."""
        from orchestrator.store.reading import reading_engine

        engine = reading_engine(settings.effective_database_url, settings.origin("database_url"))
        return cls(settings, engine, make_database(engine), {})

    @property
    def notices(self) -> NoticeBoard:
        """The in-process board this runtime's notifier fires and its waiters listen on."""
        with self._lock:
            if self._notices is None:
                from orchestrator.notices import NoticeBoard

                self._notices = NoticeBoard()
            return self._notices

    @property
    def policy(self) -> SessionPolicy:
        return SessionPolicy.from_settings(self.settings)

    @property
    def registry(self) -> SessionRegistry:
        from orchestrator.registry import GeoipDatabases, SessionRegistry

        lookup = self.geoip().lookup if self.has_geoip else None
        databases = GeoipDatabases(
            asn=self.settings.geoip_asn_db is not None,
            city=self.settings.geoip_city_db is not None,
        )
        return SessionRegistry(
            self.database,
            self.handlers,
            self.policy,
            lookup,
            databases,
            egress_allow=self.settings.egress_allow,
        )

    @property
    def has_geoip(self) -> bool:
        """True when a GeoIP City or ASN database is configured."""
        return self.settings.geoip_city_db is not None or self.settings.geoip_asn_db is not None

    def geoip(self) -> GeoipReader:
        """The process's GeoIP reader (the configured databases), opened on first use."""
        with self._lock:
            if self._geoip is None:
                from orchestrator.binding import GeoipReader

                self._geoip = GeoipReader(self.settings.geoip_city_db, self.settings.geoip_asn_db)
            return self._geoip

    @property
    def plan_timeouts(self) -> PlanTimeouts:
        from orchestrator.plans import PlanTimeouts

        s = self.settings
        return PlanTimeouts(
            frame_ms=s.frontchannel_frame_timeout_ms,
            page_ms=s.frontchannel_page_timeout_ms,
            native_ms=s.frontchannel_native_timeout_ms,
        )

    def notifier(self) -> Notifier:
        """Announces built plans and completed logouts to waiting IdPs (made on first use)."""
        with self._lock:
            if self._notifier is None:
                from orchestrator.notices import make_notifier

                self._notifier = make_notifier(self.settings, self.notices)
            return self._notifier

    def waiter(self) -> LogoutWaiter:
        """A new :class:`LogoutWaiter` on this runtime's database (close it when done)."""
        from orchestrator.waiting import LogoutWaiter

        return LogoutWaiter(self.settings, self.database, self.notices)

    def logout_engine(
        self,
        schedule: RetryScheduler,
        activity: Callable[[SessionStarted | SessionSeen], None] | None = None,
    ) -> LogoutEngine:
        """A :class:`LogoutEngine` retrying through ``schedule``, with this runtime's
        handlers, sender, plan timeouts and notifier; ``activity`` records session starts
        and sightings. One per process: events and retries share it."""
        from orchestrator.logout import LogoutEngine

        return LogoutEngine(
            self.database,
            self.handlers,
            self.attempts(),
            schedule,
            lease=self.delivery_lease,
            activity=activity,
            timeouts=self.plan_timeouts,
            notify=self.notifier(),
        )

    def activity(self, relay: Relay | None = None) -> SessionActivity:
        """Session starts and sightings; the session limit's revocations go to the outbox and
        ``relay`` (e.g. :meth:`OutboxRelay.run`) publishes them after each commit that wrote
        some."""
        from orchestrator.activity import SessionActivity

        return SessionActivity(
            self.database,
            self.registry,
            self.policy,
            namespace=self.settings.namespace,
            relay=relay,
            remember_device=self.settings.remember_device,
        )

    def device_check(self) -> DeviceCheck:
        """The remember-device question, asked before a login completes (read-only)."""
        from orchestrator.devices import DeviceCheck

        return DeviceCheck(self.database, self.settings.remember_device)

    def relay(self, send: Callable[[OutboxMessage], None]) -> OutboxRelay:
        """A relay publishing this database's outbox through ``send`` (a ``BrokerSender``)."""
        from orchestrator.relay import OutboxRelay

        return OutboxRelay(self.database, send)

    def sender(self) -> HttpSender:
        """The process's HTTP sender, started on first use."""
        with self._lock:
            if self._sender is None:
                from orchestrator.egress import EgressPolicy
                from orchestrator.sender import HttpSender

                s = self.settings
                self._sender = HttpSender(
                    timeout=s.delivery_timeout,
                    body_limit=s.response_body_limit,
                    max_concurrency=s.max_concurrent_deliveries,
                    per_host=s.max_concurrent_per_host,
                    egress=EgressPolicy.from_entries(s.egress_allow),
                )
            return self._sender

    def retry_policy(self) -> RetryPolicy:
        s = self.settings
        return RetryPolicy(
            max_attempts=s.delivery_max_attempts,
            max_age=s.delivery_max_age,
            initial_delay=s.retry_initial_delay,
            max_delay=s.retry_max_delay,
        )

    def processor(
        self, schedule: RetryScheduler, send: Callable[[OutboxMessage], None] | None = None
    ) -> LogoutEngine:
        """A logout engine whose transient failures are retried through ``schedule``.

        What the session limit writes to the outbox is relayed through ``send`` (a worker's
        broker); by default this engine handles it at once, in the caller's thread.
        """
        engine: list[LogoutEngine] = []

        def in_process(message: OutboxMessage) -> None:
            engine[0].handle(message.payload, message.message_id)

        activity = self.activity(self.relay(send or in_process).run)
        engine.append(self.logout_engine(schedule, activity.handle))
        return engine[0]

    def start_handlers(self) -> None:
        """Start the handlers (their keys and certificates loaded or generated now), before
        anything builds a request with them: the engine and the front-channel app call it."""
        from orchestrator.handlers import start_each

        start_each(self.handlers)

    @property
    def delivery_lease(self) -> float:
        """Seconds a delivery attempt (or an event being handled) is leased past its last
        renewal: building, one send (at most ``delivery_timeout``) and recording, with room
        to spare."""
        return self.settings.delivery_timeout * 2 + 5

    def attempts(self) -> Attempts:
        """Carries out delivery attempts with the process's sender and signing threads."""
        from orchestrator.logout import Attempts

        self.start_handlers()
        with self._lock:
            if self._builders is None:
                self._builders = ThreadPoolExecutor(
                    self.settings.signing_threads, thread_name_prefix="logout-sign"
                )
        return Attempts(
            self.sender, self.retry_policy(), self._builders, self.settings.signing_threads
        )

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
            if self._builders is not None:
                self._builders.shutdown()
                self._builders = None
            if self._geoip is not None:
                self._geoip.close()
                self._geoip = None
            if self._notifier is not None:
                self._notifier.close()
                self._notifier = None
        self.engine.dispose()
