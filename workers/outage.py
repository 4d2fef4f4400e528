"""Riding out a lost database or broker: wait, say so once per back-off step, resume.

At start-up :func:`reach` waits for each server before anything starts. Once running, a
worker process holds one :class:`Health` (an :class:`Outage` per server). A thread that hits
a connection error asks the outage to :meth:`~Outage.ride_out` it: the first thread probes
the server and, while it does not answer, logs one line per attempt (1 s, 2 s, 4 s ... 30 s)
and waits; every other thread waits silently for the same recovery. Then each goes on where
it stopped: an event is handled again in place (handling is idempotent), so an outage
spends no dramatiq retry and dead-letters nothing, and a consumer fetches again instead of
restarting (dramatiq's own consumer logs a critical line every few seconds, forever).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar

import sqlalchemy.exc
import structlog

from orchestrator.errors import DatabaseUnavailableError, UnavailableError
from orchestrator.metrics import count_backend_error
from workers.broker import BROKER_ERRORS

__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_FIRST",
    "DATABASE_ERRORS",
    "Guard",
    "Health",
    "Outage",
    "Passed",
    "reach",
    "unguarded",
]

_log = structlog.get_logger("logout.worker")
_T = TypeVar("_T")

#: Seconds before the first new attempt to reach the database or broker; each further
#: attempt waits twice as long, at most :data:`BACKOFF_CAP`.
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0

#: What the database client raises when the server cannot be reached or drops the
#: connection (SQLAlchemy wraps the driver's errors).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    DatabaseUnavailableError,
)


class Guard(Protocol):
    """Runs a job, perhaps again once the server it lost answers: :meth:`Health.guard`."""

    def __call__(self, job: Callable[[], _T], /) -> _T: ...


def unguarded(job: Callable[[], _T], /) -> _T:
    """The :class:`Guard` of a process without :class:`Health` (in-process, tests)."""
    return job()


def reach(connect: Callable[[], _T], stop: threading.Event) -> _T | None:
    """``connect()`` until it succeeds; None when ``stop`` is set while waiting.

    While the database or broker is unreachable, logs one line per attempt naming it and
    when the next attempt comes (1 s, 2 s, 4 s ... 30 s); any other error is raised.
    """
    delay = BACKOFF_FIRST
    attempt = 1
    while True:
        try:
            return connect()
        except UnavailableError as exc:
            _log.warning(f"{exc}; retrying in {delay:g} s", attempt=attempt, retry_in=delay)
        if stop.wait(delay):
            return None
        delay = min(delay * 2, BACKOFF_CAP)
        attempt += 1


class Passed(StrEnum):
    """How :meth:`Outage.ride_out` ended."""

    #: The server answered at once: the error was not an outage (the caller raises it).
    NO_OUTAGE = "no_outage"
    #: The server was down and answers again: do the work again.
    RECOVERED = "recovered"
    #: The process is stopping: give up the work (it is not acknowledged).
    STOPPED = "stopped"


class Outage:
    """One server's outages as this process sees them; see the module docstring."""

    def __init__(self, what: str, probe: Callable[[], None], stop: threading.Event) -> None:
        """``probe()`` raises :class:`UnavailableError` (naming the server) while it is down."""
        self.what = what
        self._probe = probe
        self._stop = stop
        self._lock = threading.Lock()
        self._back = threading.Event()
        self._back.set()

    def _answers(self) -> bool:
        self._probe()
        return True

    @property
    def active(self) -> bool:
        """True while this server is known to be down."""
        return not self._back.is_set()

    def wait(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the current outage (if any) to end."""
        self._back.wait(timeout)

    def ride_out(self) -> Passed:
        """Wait until the server answers (logging as the module docstring says)."""
        if self._stop.is_set():
            return Passed.STOPPED
        with self._lock:
            leader = self._back.is_set()
            if leader:
                try:
                    self._probe()
                except UnavailableError:
                    self._back.clear()
                else:
                    return Passed.NO_OUTAGE
        if not leader:
            while not self._back.wait(0.5):
                if self._stop.is_set():
                    return Passed.STOPPED
            return Passed.RECOVERED
        started = time.monotonic()
        try:
            if reach(self._answers, self._stop) is None:
                return Passed.STOPPED
        finally:
            self._back.set()
        _log.info(
            f"{self.what} reachable again; resuming",
            down_seconds=round(time.monotonic() - started, 1),
        )
        return Passed.RECOVERED


@dataclass(frozen=True, slots=True)
class Health:
    """The database's and the broker's outages, shared by every thread of a process."""

    database: Outage
    broker: Outage

    def outage_of(self, exc: BaseException) -> Outage | None:
        """The outage ``exc`` may mean (a connection error of that server), if any."""
        if isinstance(exc, DATABASE_ERRORS):
            return self.database
        if isinstance(exc, BROKER_ERRORS):
            return self.broker
        return None

    def guard(self, job: Callable[[], _T], /) -> _T:
        """``job()``; when it fails because the database or the broker is down, wait until
        that server answers again and run it again (so it must be idempotent). Any other
        error, or a connection error while the server answers, is raised."""
        while True:
            try:
                return job()
            except Exception as exc:
                outage = self.outage_of(exc)
                if outage is not None:
                    count_backend_error(outage.what)
                if outage is None or outage.ride_out() is not Passed.RECOVERED:
                    raise
