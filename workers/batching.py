"""Cooperative batching: the events this process's worker threads hold are handled together.

Each actor thread puts its event on a shared list, waits for one of ``concurrency`` leader
slots, then takes everything on the list (up to ``max_batch``) and handles that batch; if
another leader took its event first, it waits for that leader's result. Nothing waits to
fill a batch: at low load a batch is one event; under load, the events that arrive while
the slots are busy go together, sharing SQL statements, transactions and one concurrent
fan-out. A slow provider holds one slot for at most the delivery timeout. A message is
acknowledged only after its event's work is committed, so a crash loses nothing.
"""

from __future__ import annotations

import threading
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
        self._lock = threading.Lock()
        self._pending: list[_Job] = []

    def handle(self, raw: Any, message_id: str) -> HandleResult:
        """Handle one event (perhaps within a batch); raises what handling it raised."""
        job = _Job(raw, message_id)
        with self._lock:
            self._pending.append(job)
        while not job.result.done():
            with self._slots:
                with self._lock:
                    batch = self._pending[: self._max]
                    del self._pending[: len(batch)]
                if batch:
                    self._run(batch)
            if not batch:
                break  # another leader has our event: wait for its result below
        return job.result.result()

    def _run(self, batch: list[_Job]) -> None:
        try:
            messages = [(job.raw, job.message_id) for job in batch]
            results = self._guard(lambda: self._processor.handle_batch(messages))
        except Exception as exc:  # noqa: BLE001 - one bad message must not fail the others
            if len(batch) == 1:
                batch[0].result.set_exception(exc)
                return
            _log.warning("batch failed; handling its events one by one", size=len(batch))
            for job in batch:
                self._run([job])
            return
        for job, result in zip(batch, results, strict=True):
            job.result.set_result(result)
