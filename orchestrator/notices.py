"""Notices: what a worker announces after a commit (a plan built, a logout completed), and
how it reaches a waiting IdP (see :mod:`orchestrator.waiting` for the waiting side).

The backend is the first of these that can reach the waiting process: PostgreSQL ``NOTIFY``
on ``<namespace>_logout`` when the database is PostgreSQL, Redis Pub/Sub on
``<namespace>:logout`` when the broker is Redis, and otherwise the in-process
:class:`NoticeBoard` of the :class:`~orchestrator.runtime.Runtime` both sides come from.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import psycopg
import redis
import structlog
from sqlalchemy.engine import make_url

from orchestrator.settings import Settings

__all__ = [
    "MAX_PAYLOAD",
    "Backend",
    "Notice",
    "NoticeBoard",
    "Notifier",
    "make_notifier",
    "notification_backend",
    "parse_notice",
    "pg_channel",
    "psycopg_conninfo",
    "redis_channel",
]

_log = structlog.get_logger("logout.waiting")

Backend = Literal["postgresql", "redis", "local"]

#: What is announced: a key (``plan:<id>``, ``event:<id>``) and a body ("" for none). A plan's
#: body is the plan itself when it fits a notification, which then saves the waiter a read.
Notice = tuple[str, str]
#: PostgreSQL refuses NOTIFY payloads from 8000 bytes on; larger bodies are left out.
MAX_PAYLOAD = 7900


class Notifier(Protocol):
    """Announce notices after the transaction that made what they name. Never raises: a
    notice that cannot be sent is logged (waiters re-read at least once a second)."""

    def __call__(self, notices: Sequence[Notice]) -> None: ...

    def close(self) -> None: ...


def _payload(notice: Notice) -> str:
    key, body = notice
    text = f"{key}\n{body}" if body else key
    return text if len(text.encode()) <= MAX_PAYLOAD else key


def parse_notice(payload: str) -> Notice:
    key, _, body = payload.partition("\n")
    return key, body


def notification_backend(settings: Settings) -> Backend:
    """Which way notifications travel for these settings (see the module docstring)."""
    if make_url(settings.effective_database_url).get_backend_name() == "postgresql":
        return "postgresql"
    if urlsplit(settings.broker_url).scheme in ("redis", "rediss"):
        return "redis"
    return "local"


def pg_channel(settings: Settings) -> str:
    return f"{settings.namespace}_logout"


def redis_channel(settings: Settings) -> str:
    return f"{settings.namespace}:logout"


def psycopg_conninfo(settings: Settings) -> str:
    url = make_url(settings.effective_database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


# -- in-process delivery of notifications ---------------------------------------------------


class NoticeBoard:
    """Callbacks waiting for keys; fired from any thread. A :class:`Runtime` holds one: its
    notifier fires it in-process, and its waiters listen on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[Callable[[str], None]]] = defaultdict(list)

    def add(self, key: str, callback: Callable[[str], None]) -> None:
        with self._lock:
            self._waiting[key].append(callback)

    def remove(self, key: str, callback: Callable[[str], None]) -> None:
        with self._lock:
            callbacks = self._waiting.get(key)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._waiting[key]

    def fire(self, payload: str) -> None:
        key, body = parse_notice(payload)
        with self._lock:
            callbacks = list(self._waiting.get(key, ()))
        for callback in callbacks:
            callback(body)


def make_notifier(settings: Settings, board: NoticeBoard) -> Notifier:
    """The worker side: announce notices on the backend the waiters listen to (``board``
    for in-process waiters)."""
    backend = notification_backend(settings)
    if backend == "postgresql":
        return _PostgresNotifier(psycopg_conninfo(settings), pg_channel(settings))
    if backend == "redis":
        return _RedisNotifier(settings.broker_url, redis_channel(settings))
    return _LocalNotifier(board)


class _LocalNotifier:
    def __init__(self, board: NoticeBoard) -> None:
        self._board = board

    def __call__(self, notices: Sequence[Notice]) -> None:
        for notice in notices:
            self._board.fire(_payload(notice))

    def close(self) -> None:
        """Nothing to release."""


class _RedisNotifier:
    """PUBLISH on the namespace's channel, pipelined."""

    def __init__(self, url: str, channel: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._channel = channel

    def __call__(self, notices: Sequence[Notice]) -> None:
        if not notices:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for notice in notices:
                pipe.publish(self._channel, _payload(notice))
            pipe.execute()
        except redis.RedisError as exc:  # a missed notice costs waiters one re-read
            _log.warning("could not notify waiters", error=str(exc))

    def close(self) -> None:
        self._client.close()


#: ``pg_notify`` of every payload ``b_keys`` on ``b_channel`` (psycopg's placeholders).
_NOTIFY_ALL = "SELECT pg_notify(%(b_channel)s, key) FROM unnest(%(b_keys)s::text[]) AS key"


class _PostgresNotifier:
    """``pg_notify`` on one long-lived autocommit connection (reconnects once on error), after
    the commit of what the notices name, never inside that transaction: a ``NOTIFY`` takes a
    cluster-wide lock at commit, held until the commit's WAL is flushed, which would put every
    worker's completing commit in one line; and a full notification queue would then fail the
    commit, that is the logout, where here it costs a logged warning."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def __call__(self, notices: Sequence[Notice]) -> None:
        if not notices:
            return
        payloads = [_payload(notice) for notice in notices]
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(self._conninfo, autocommit=True)
                    self._conn.execute(_NOTIFY_ALL, self._params(payloads))
                    return
                except psycopg.Error as exc:
                    self._conn = None
                    if attempt == 2:
                        # A missed notice costs waiters one re-read; never the logout.
                        _log.warning("could not notify waiters", error=str(exc))

    def _params(self, payloads: list[str]) -> dict[str, Any]:
        return {"b_channel": self._channel, "b_keys": payloads}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
