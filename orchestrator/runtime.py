"""Everything one worker process needs, built once from the settings and passed down."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine

from orchestrator.activity import SessionActivity
from orchestrator.binding import GeoipReader
from orchestrator.fanout import FanOut, RetryScheduler
from orchestrator.outbox import OutboxMessage
from orchestrator.pipeline import EventProcessor
from orchestrator.plans import PlanTimeouts
from orchestrator.registry import GeoipDatabases, SessionRegistry
from orchestrator.relay import OutboxRelay
from orchestrator.retry import RetryPolicy
from orchestrator.sender import HttpSender
from orchestrator.session_policy import SessionPolicy
from orchestrator.settings import Settings
from orchestrator.store import SessionFactory, make_engine, make_session_factory, upgrade
from orchestrator.waiting import LogoutWaiter, NoticeBoard, Notifier, make_notifier
from protocols import ProtocolHandler, load_handlers
from schemas import SessionSeen, SessionStarted

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """Database, handlers, sender and processor of one process. Close it when done."""

    settings: Settings
    engine: Engine
    sessions: SessionFactory
    handlers: Mapping[str, ProtocolHandler]
    _sender: HttpSender | None = field(default=None, repr=False)
    _geoip: GeoipReader | None = field(default=None, repr=False)
    notices: NoticeBoard = field(default_factory=NoticeBoard, repr=False)
    _notifier: Notifier | None = field(default=None, repr=False)
    _builders: ThreadPoolExecutor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        migrate: bool | None = None,
        handlers: Mapping[str, ProtocolHandler] | None = None,
    ) -> Runtime:
        """Connect, migrate (when ``auto_migrate``) and load the enabled protocol handlers.

        Raises :class:`~orchestrator.errors.HandlerLoadError` when a handler cannot load.
        """
        loaded = handlers if handlers is not None else load_handlers(settings)
        engine = make_engine(settings.effective_database_url)
        if settings.auto_migrate if migrate is None else migrate:
            upgrade(engine)
        return cls(settings, engine, make_session_factory(engine), loaded)

    @property
    def policy(self) -> SessionPolicy:
        return SessionPolicy.from_settings(self.settings)

    @property
    def registry(self) -> SessionRegistry:
        lookup = self.geoip().lookup if self.has_geoip else None
        databases = GeoipDatabases(
            asn=self.settings.geoip_asn_db is not None,
            city=self.settings.geoip_city_db is not None,
        )
        return SessionRegistry(self.sessions, self.handlers, self.policy, lookup, databases)

    @property
    def has_geoip(self) -> bool:
        """True when a GeoIP City or ASN database is configured."""
        return self.settings.geoip_city_db is not None or self.settings.geoip_asn_db is not None

    def geoip(self) -> GeoipReader:
        """The process's GeoIP reader (the configured databases), opened on first use."""
        with self._lock:
            if self._geoip is None:
                self._geoip = GeoipReader(self.settings.geoip_city_db, self.settings.geoip_asn_db)
            return self._geoip

    @property
    def plan_timeouts(self) -> PlanTimeouts:
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
                self._notifier = make_notifier(self.settings, self.notices)
            return self._notifier

    def waiter(self) -> LogoutWaiter:
        """A new :class:`LogoutWaiter` on this runtime's database (close it when done)."""
        return LogoutWaiter(self.settings, self.sessions, self.notices)

    def event_processor(
        self,
        fanout: FanOut,
        activity: Callable[[SessionStarted | SessionSeen], None] | None,
    ) -> EventProcessor:
        """An :class:`EventProcessor` with this runtime's plan timeouts and notifier."""
        return EventProcessor(
            self.sessions,
            fanout,
            activity,
            timeouts=self.plan_timeouts,
            notify=self.notifier(),
        )

    def activity(self, relay: Callable[[], object] | None = None) -> SessionActivity:
        """Session starts and sightings; the session limit's revocations go to the outbox and
        ``relay`` (e.g. :meth:`OutboxRelay.run`) runs after each commit that wrote some."""
        return SessionActivity(
            self.sessions,
            self.registry,
            self.policy,
            namespace=self.settings.namespace,
            relay=relay,
        )

    def relay(self, send: Callable[[OutboxMessage], None]) -> OutboxRelay:
        """A relay publishing this database's outbox through ``send`` (a ``BrokerSender``)."""
        return OutboxRelay(self.sessions, send)

    def sender(self) -> HttpSender:
        """The process's HTTP sender, started on first use."""
        with self._lock:
            if self._sender is None:
                s = self.settings
                self._sender = HttpSender(
                    timeout=s.delivery_timeout,
                    body_limit=s.response_body_limit,
                    max_concurrency=s.max_concurrent_deliveries,
                    per_host=s.max_concurrent_per_host,
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
    ) -> EventProcessor:
        """An event processor whose transient failures are retried through ``schedule``.

        What the session limit writes to the outbox is relayed through ``send`` (a worker's
        broker); by default this processor handles it at once, in the caller's thread.
        """
        processor: list[EventProcessor] = []

        def in_process(message: OutboxMessage) -> None:
            processor[0].handle(message.payload, message.message_id)

        activity = self.activity(self.relay(send or in_process).run)
        processor.append(self.event_processor(self.fanout(schedule), activity.handle))
        return processor[0]

    def fanout(self, schedule: RetryScheduler) -> FanOut:
        # Covers building, one send (at most delivery_timeout) and recording, with room to spare.
        lease = self.settings.delivery_timeout * 2 + 5
        with self._lock:
            if self._builders is None:
                self._builders = ThreadPoolExecutor(
                    self.settings.signing_threads, thread_name_prefix="logout-sign"
                )
        return FanOut(
            self.sessions,
            self.handlers,
            self.sender,
            self.retry_policy(),
            schedule,
            lease,
            self._builders,
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
