"""Waiting for a logout, for the IdP: the stage plan, and the back-channel outcome.

:class:`LogoutWaiter` returns a plan as soon as the worker has stored it
(:meth:`~LogoutWaiter.await_plan`), and returns once every back-channel delivery of a logout
has a final outcome or is retrying (:meth:`~LogoutWaiter.await_completion`), so an
RP-initiated logout can redirect only after the RPs were notified (OIDC RP-Initiated Logout
§3). Both wait on a notification, never a sleep-poll loop, and time out cleanly with a
result that says so.

The worker announces ``plan:<plan_id>`` and ``event:<event_id>`` after committing, on the
first of these that can reach the waiting process:

* **PostgreSQL** ``NOTIFY`` on the channel ``<namespace>_logout`` when the database is
  PostgreSQL (any broker): one listening connection per waiter object;
* **Redis** Pub/Sub on ``<namespace>:logout`` when the broker is Redis (and the database not
  PostgreSQL);
* **in-process** otherwise (SQLite with ``memory://``: the embedded worker runs in the same
  process), on the :class:`NoticeBoard` of the :class:`~orchestrator.runtime.Runtime` that
  both the worker and the waiter come from.

A waiter registers before it reads the database, so a notification between the two is never
missed; should one still be lost (a dropped connection), the waiter reads the database again
once a second while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
import redis
import structlog
from sqlalchemy import select

from orchestrator.logout.rollup import Tally, count
from orchestrator.notices import (
    NoticeBoard,
    notification_backend,
    pg_channel,
    psycopg_conninfo,
    redis_channel,
)
from orchestrator.plans import load_plan
from orchestrator.settings import Settings
from orchestrator.store import (
    Database,
    EventRecord,
    EventStatus,
)
from schemas import LogoutPlan

__all__ = ["Completion", "LogoutWaiter", "PlanWait"]

_log = structlog.get_logger("logout.waiting")
#: Longest wait between two reads of the database while waiting (lost notifications).
RECHECK_SECONDS = 1.0

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PlanWait:
    """``plan`` when it was built in time; ``timed_out`` otherwise."""

    plan: LogoutPlan | None
    timed_out: bool


@dataclass(frozen=True, slots=True)
class Completion:
    """Whether the logout completed in time, with its deliveries by status."""

    completed: bool
    timed_out: bool
    deliveries: dict[str, int] = field(default_factory=dict)


# -- the IdP side ------------------------------------------------------------------------------


class LogoutWaiter:
    """Wait for plans and completions (thread-safe; one per process is enough). Close it."""

    def __init__(
        self, settings: Settings, database: Database, board: NoticeBoard | None = None
    ) -> None:
        """``board``: where this process's worker announces notices in-process (the
        runtime's); needed only when notices travel in-process (see the module docstring)."""
        self._settings = settings
        self._database = database
        self._backend = notification_backend(settings)
        self._registry = board if board is not None else NoticeBoard()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._listener: threading.Thread | None = None
        if self._backend != "local":
            self._listener = threading.Thread(
                target=self._listen, name="logout-waiter", daemon=True
            )
            self._listener.start()
            self._ready.wait(5.0)

    # -- listening ---------------------------------------------------------------------

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                if self._backend == "postgresql":
                    self._listen_postgres()
                else:
                    self._listen_redis()
            except (psycopg.Error, redis.RedisError, OSError) as exc:
                _log.warning("notification listener reconnecting", error=str(exc))
                self._stop.wait(0.5)

    def _listen_postgres(self) -> None:
        conninfo = psycopg_conninfo(self._settings)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'LISTEN "{pg_channel(self._settings)}"')
            self._ready.set()
            while not self._stop.is_set():
                for note in conn.notifies(timeout=0.5):
                    self._registry.fire(note.payload)

    def _listen_redis(self) -> None:
        client = redis.Redis.from_url(self._settings.broker_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(redis_channel(self._settings))
            self._ready.set()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message is not None:
                    data = message["data"]
                    self._registry.fire(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            pubsub.close()
            client.close()

    # -- waiting -----------------------------------------------------------------------

    def wait_plan(self, plan_id: str, timeout: float) -> PlanWait:
        """Block until the plan is built or ``timeout`` seconds pass."""
        plan = self._wait_sync(
            f"plan:{plan_id}", lambda: load_plan(self._database, plan_id), timeout, _plan_body
        )
        return PlanWait(plan, plan is None)

    async def await_plan(self, plan_id: str, timeout: float) -> PlanWait:
        """The plan as soon as the worker has built it; ``timed_out`` after ``timeout`` s."""
        plan = await self._wait_async(
            f"plan:{plan_id}", lambda: load_plan(self._database, plan_id), timeout, _plan_body
        )
        return PlanWait(plan, plan is None)

    def wait_completion(self, event_id: str, timeout: float) -> Completion:
        """Block until the logout completed (every delivery final or retrying)."""
        done = self._wait_sync(f"event:{event_id}", lambda: self._completion(event_id), timeout)
        return done or Completion(False, True, self._counts(event_id))

    async def await_completion(self, event_id: str, timeout: float) -> Completion:
        """Once every back-channel delivery has a final outcome or is retrying."""
        done = await self._wait_async(
            f"event:{event_id}", lambda: self._completion(event_id), timeout
        )
        if done is not None:
            return done
        return Completion(False, True, await asyncio.to_thread(self._counts, event_id))

    def _completion(self, event_id: str) -> Completion | None:
        with self._database() as db:
            status = db.scalar(select(EventRecord.status).where(EventRecord.event_id == event_id))
        if status != EventStatus.COMPLETED:
            return None
        return Completion(True, False, self._counts(event_id))

    def _counts(self, event_id: str) -> dict[str, int]:
        with self._database() as db:
            counted = count(db.connection(), [event_id])
        tally = counted[event_id][0] if event_id in counted else Tally()
        return tally.as_detail()

    def _wait_sync(
        self,
        key: str,
        read: Callable[[], _T | None],
        timeout: float,
        parse: Callable[[str], _T | None] | None = None,
    ) -> _T | None:
        woken = threading.Event()
        bodies: list[str] = []

        def wake(body: str) -> None:
            bodies.append(body)
            woken.set()

        self._registry.add(key, wake)
        try:
            deadline = time.monotonic() + timeout
            while True:
                woken.clear()
                found = _from_body(bodies, parse) or read()
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                woken.wait(min(left, RECHECK_SECONDS))
        finally:
            self._registry.remove(key, wake)

    async def _wait_async(
        self,
        key: str,
        read: Callable[[], _T | None],
        timeout: float,
        parse: Callable[[str], _T | None] | None = None,
    ) -> _T | None:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        bodies: list[str] = []

        def wake(body: str) -> None:
            bodies.append(body)
            loop.call_soon_threadsafe(woken.set)

        self._registry.add(key, wake)
        try:
            deadline = loop.time() + timeout
            while True:
                woken.clear()
                found = _from_body(bodies, parse) or await asyncio.to_thread(read)
                left = deadline - loop.time()
                if found is not None or left <= 0:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(left, RECHECK_SECONDS))
        finally:
            self._registry.remove(key, wake)

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)


def _from_body(bodies: list[str], parse: Callable[[str], _T | None] | None) -> _T | None:
    """What a notification carried, when it carried it (else the caller reads)."""
    while bodies:
        body = bodies.pop()
        if body and parse is not None:
            return parse(body)
    return None


def _plan_body(body: str) -> LogoutPlan | None:
    try:
        return LogoutPlan.model_validate_json(body)
    except ValueError:
        return None
