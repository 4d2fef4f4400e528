"""Everything one worker process needs, built once from the settings and passed down."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine

from orchestrator.fanout import FanOut, RetryScheduler
from orchestrator.pipeline import EventProcessor
from orchestrator.registry import SessionRegistry
from orchestrator.retry import RetryPolicy
from orchestrator.sender import HttpSender
from orchestrator.settings import Settings
from orchestrator.store import SessionFactory, make_engine, make_session_factory, upgrade
from protocols import ProtocolHandler, load_handlers

__all__ = ["Runtime"]


@dataclass
class Runtime:
    """Database, handlers, sender and processor of one process. Close it when done."""

    settings: Settings
    engine: Engine
    sessions: SessionFactory
    handlers: Mapping[str, ProtocolHandler]
    _sender: HttpSender | None = field(default=None, repr=False)
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
    def registry(self) -> SessionRegistry:
        return SessionRegistry(self.sessions, self.handlers)

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

    def processor(self, schedule: RetryScheduler) -> EventProcessor:
        """An event processor whose transient failures are retried through ``schedule``."""
        return EventProcessor(self.sessions, self.fanout(schedule))

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
        self.engine.dispose()
