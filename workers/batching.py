"""Cooperative batching: the events this process's worker threads hold are handled together.

Each actor thread puts its event on a shared list, waits for one of ``concurrency`` leader
slots, then for the process's one *intake*, then takes everything on the list (up to
``max_batch``) and handles that batch; if another leader took its event first, it waits for
that leader's result. A leader keeps the intake only for its batch's first transaction
(claims, ending, deliveries, plans: the part that is all CPU and database) and lets it go
before the batch's deliveries are attempted, so batches overlap where they wait on the
network, never where they compete for the CPU.

Nothing waits to fill a batch: at low load a batch is one event, taken at once. Under load,
the events that arrive while another batch holds the intake go together, sharing SQL
statements, transactions and one concurrent fan-out, so the busier the worker, the less
each event costs. (Without the intake, each new arrival found a free slot and went alone:
measured under a backlog, half the events were handled in batches of one to four, at two to
three times the CPU per event of a batch of 32.) A slow provider holds one slot for at most
the delivery timeout, never the intake. A message is acknowledged only after its event's
work is committed, so a crash loses nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import structlog

from orchestrator.logout import HandleResult, LogoutEngine
from workers.outage import Guard, unguarded

__all__ = ["EventBatcher"]

_log = structlog.get_logger("logout.batching")


@dataclass
class _Job:
    raw: Any
    message_id: str
    result: Future[HandleResult] = field(default_factory=Future)
    taken: bool = False  # a leader has it in a batch


class _Intake:
    """The process's intake, held by one leader from its take until its batch's first
    transaction has committed; :meth:`release` may be called more than once."""

    def __init__(self, lock: threading.Lock) -> None:
        lock.acquire()
        self._lock: threading.Lock | None = lock

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


class EventBatcher:
    """Handles events submitted from many threads in batches; see the module docstring."""

    def __init__(
        self,
        processor: LogoutEngine,
        max_batch: int = 64,
        concurrency: int = 4,
        guard: Guard = unguarded,
    ) -> None:
        """``guard`` runs each batch: with a worker's :class:`~workers.outage.Health`, a
        batch the database or broker failed is handled again once it answers."""
        self._processor = processor
        self._guard = guard
        self._max = max_batch
        self._slots = threading.Semaphore(concurrency)
        self._intake = threading.Lock()
        self._lock = threading.Lock()
        self._pending: list[_Job] = []

    def handle(self, raw: Any, message_id: str) -> HandleResult:
        """Handle one event (perhaps within a batch); raises what handling it raised."""
        job = _Job(raw, message_id)
        with self._lock:
            self._pending.append(job)
        while not job.taken:
            with self._slots:
                if job.taken:  # another leader took it while this thread waited for a slot
                    break
                intake = _Intake(self._intake)
                try:
                    batch = self._take()
                    self._run(batch, intake.release)
                finally:
                    intake.release()
        return job.result.result()

    def _take(self) -> list[_Job]:
        with self._lock:
            batch = self._pending[: self._max]
            del self._pending[: len(batch)]
            for job in batch:
                job.taken = True
        return batch

    def _run(self, batch: list[_Job], begun: Callable[[], None] | None = None) -> None:
        """Handle ``batch``; ``begun`` (if given) is called once its first transaction is
        committed, or when it failed."""
        if not batch:
            return
        try:
            messages = [(job.raw, job.message_id) for job in batch]
            results = self._guard(lambda: self._processor.handle_batch(messages, begun))
        except Exception as exc:  # noqa: BLE001 - one bad message must not fail the others
            if begun is not None:
                begun()
            if len(batch) == 1:
                batch[0].result.set_exception(exc)
                return
            _log.warning("batch failed; handling its events one by one", size=len(batch))
            for job in batch:
                self._run([job])
            return
        for job, result in zip(batch, results, strict=True):
            job.result.set_result(result)
