"""Leases: an attempt owns its delivery, and a worker its event, only while its lease runs.

A delivery attempt is claimed with a lease (``deliveries.next_attempt_at`` is its end) and
a fencing token (``deliveries.attempts``, the attempt's number): its outcome is recorded
only where that number still matches (see :mod:`orchestrator.logout.deliveries`). An event
being handled carries a lease too (``events.lease_until``). While this process works on
them, one keeper thread renews every lease it holds, every third of a lease: work waiting
for a connection slot or a slow answer stays its own however long it waits, and neither
recovery nor another worker takes it. Work of a process that died is free again one lease
after its last renewal.

A renewal that finds its attempt superseded (another attempt claimed the delivery, or it
is final) marks the lease lost: a request that has not started is not sent, and no outcome
of the attempt is recorded. A renewal that fails (the database is down) is tried again at
the next turn; meanwhile the lease runs out, and the sender starts nothing it could not
finish within it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Connection, Engine, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.store import OPEN_DELIVERY_STATUSES, EventStatus, utcnow
from orchestrator.store.tables import DELIVERIES, EVENTS

__all__ = ["DeliveryLease", "Leases", "lease_events"]

_log = structlog.get_logger("logout.leases")


def lease_events(conn: Connection, event_ids: Collection[str], until: datetime | None) -> None:
    """Lease the events still processing among ``event_ids`` until ``until``; ``None`` gives
    their leases up (another worker may take them at once)."""
    conn.execute(
        update(EVENTS)
        .where(EVENTS.c.event_id.in_(list(event_ids)), EVENTS.c.status == EventStatus.PROCESSING)
        .values(lease_until=until)
    )


@dataclass
class DeliveryLease:
    """This process's hold on one attempt of one delivery."""

    delivery_id: str
    attempt: int
    #: When the lease ends, on ``time.monotonic()``'s clock.
    expires: float
    lost: bool = False

    def time_left(self) -> float:
        """Seconds this attempt still owns its delivery (0 once lost or run out)."""
        return 0.0 if self.lost else max(0.0, self.expires - time.monotonic())


class Leases:
    """The leases this process holds, and the thread that renews them while any is held."""

    def __init__(self, engine: Engine, lease: timedelta) -> None:
        self._engine = engine
        self.lease = lease
        self._interval = lease.total_seconds() / 3
        self._cond = threading.Condition()
        self._deliveries: dict[tuple[str, int], DeliveryLease] = {}
        self._events: Counter[str] = Counter()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(
        self, attempts: Iterable[tuple[str, int, datetime]], events: Iterable[str] = ()
    ) -> Iterator[None]:
        """Renew the leases of ``attempts`` (delivery id, attempt, when it was claimed) and of
        ``events`` until the block ends."""
        now, clock = utcnow(), time.monotonic()
        span = self.lease.total_seconds()
        held = [
            DeliveryLease(i, n, clock + span - (now - claimed).total_seconds())
            for i, n, claimed in attempts
        ]
        kept = list(events)
        with self._cond:
            for lease in held:
                self._deliveries[(lease.delivery_id, lease.attempt)] = lease
            self._events.update(kept)
            if (held or kept) and self._thread is None:
                self._thread = threading.Thread(
                    target=self._keep, name="logout-leases", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._cond:
                for lease in held:
                    self._deliveries.pop((lease.delivery_id, lease.attempt), None)
                self._events.subtract(kept)
                self._events += Counter()  # drop the events no longer held

    def get(self, delivery_id: str, attempt: int) -> DeliveryLease | None:
        """The lease this process holds on that attempt, if any."""
        with self._cond:
            return self._deliveries.get((delivery_id, attempt))

    def release(self, attempts: Iterable[tuple[str, int]]) -> None:
        """Stop renewing these attempts (their outcomes are being recorded)."""
        with self._cond:
            for key in attempts:
                self._deliveries.pop(key, None)

    def _keep(self) -> None:
        while True:
            with self._cond:
                self._cond.wait(self._interval)
                if not self._deliveries and not self._events:
                    self._thread = None
                    return
                deliveries = [lease for lease in self._deliveries.values() if not lease.lost]
                events = sorted(self._events)
            self.renew(deliveries, events)

    def renew(self, deliveries: list[DeliveryLease], events: list[str]) -> None:
        """Extend these leases by one lease from now; mark the superseded ones lost."""
        started = time.monotonic()
        until = utcnow() + self.lease
        renewed: set[tuple[str, int]] = set()
        try:
            with self._engine.begin() as conn:
                if deliveries:
                    # Locked in id order, as every writer of deliveries does: no deadlock.
                    mine = (
                        select(DELIVERIES.c.id)
                        .where(
                            tuple_(DELIVERIES.c.id, DELIVERIES.c.attempts).in_(
                                [(lease.delivery_id, lease.attempt) for lease in deliveries]
                            ),
                            DELIVERIES.c.status.in_(OPEN_DELIVERY_STATUSES),
                        )
                        .order_by(DELIVERIES.c.id)
                        .with_for_update()
                    )
                    renewed = {
                        (delivery_id, attempt)
                        for delivery_id, attempt in conn.execute(
                            update(DELIVERIES)
                            .where(DELIVERIES.c.id.in_(mine.scalar_subquery()))
                            .values(next_attempt_at=until)
                            .returning(DELIVERIES.c.id, DELIVERIES.c.attempts)
                        )
                    }
                if events:
                    lease_events(conn, events, until)
        except SQLAlchemyError as exc:
            _log.warning(
                "leases not renewed; trying again",
                error=type(exc).__name__,
                deliveries=len(deliveries),
                events=len(events),
            )
            return
        end = started + self.lease.total_seconds()
        with self._cond:
            for lease in deliveries:
                key = (lease.delivery_id, lease.attempt)
                if key in renewed:
                    lease.expires = end
                elif self._deliveries.get(key) is lease and not lease.lost:
                    lease.lost = True
                    _log.info(
                        "delivery attempt superseded; it records nothing",
                        delivery_id=lease.delivery_id,
                        attempt=lease.attempt,
                    )
