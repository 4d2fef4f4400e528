"""The outbox relay: publish what the outbox holds, and mark it sent.

:meth:`OutboxRelay.run` leases a batch of unsent rows with one conditional ``UPDATE``
(its ``WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` lets relays on PostgreSQL take
different rows; the condition on the lease makes it atomic on SQLite too), sends them in
order, marks the sent ones sent and frees the rest. So of many relays in many processes on
many machines, one publishes each row in the normal path. Rows stay unsent when the broker
fails (the attempt and the error are recorded): the next run publishes them. A relay that
dies between sending and marking leaves its lease to expire, and the row is published again
under the same message id: at least once, and the pipeline handles an event once.

:meth:`OutboxRelay.recover` (periodic, with the recovery sweep) deletes sent rows whose
event the pipeline has completed, and sends again those sent longer than the grace period
ago whose event the pipeline never recorded (a broker that lost them).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dramatiq
import structlog
from dramatiq import Message
from sqlalchemy import delete, exists, func, or_, select, update

from orchestrator.outbox import OutboxMessage, add_to_outbox
from orchestrator.store import (
    Database,
    EventStatus,
    utcnow,
)
from orchestrator.store.sql import engine_of
from orchestrator.store.tables import EVENTS, OUTBOX, REJECTED_EVENTS

__all__ = ["BrokerSender", "OutboxRecovery", "OutboxRelay", "RelayReport"]

_log = structlog.get_logger("logout.outbox")
_ERROR_LIMIT = 500
#: Resends of a lost message wait grace, 2 x grace, 4 x grace ... at most 2**6 x grace.
#: The most overdue rows one recovery run looks at (the oldest first); the next run goes on.
_RECOVER_MAX = 5000
_MAX_DOUBLINGS = 6


@dataclass(frozen=True, slots=True)
class RelayReport:
    """What one run published, what it left unsent, and why it stopped."""

    published: int
    #: Unsent rows in the outbox when the run stopped early (a broker failure, or
    #: ``max_per_run`` reached); 0 when it took every row it could (nothing was counted).
    pending: int
    #: The broker's error when publishing failed (the rows are kept), else None.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRecovery:
    """Sent rows deleted (their event completed) and rows sent again (their message lost)."""

    done: int
    resent: int


class BrokerSender:
    """Sends outbox messages on a dramatiq broker under their own message ids."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker
        self._declared: set[str] = set()

    def __call__(self, message: OutboxMessage) -> None:
        if message.queue not in self._declared:
            self._broker.declare_queue(message.queue)
            self._declared.add(message.queue)
        self._broker.enqueue(
            Message(
                queue_name=message.queue,
                actor_name=message.actor,
                args=(message.payload,),
                kwargs={},
                options={},
                message_id=message.message_id,
            )
        )


class OutboxRelay:
    """Publish the outbox through ``send``; see the module docstring."""

    def __init__(
        self,
        database: Database,
        send: Callable[[OutboxMessage], None],
        *,
        batch: int = 500,
        max_per_run: int = 20_000,
        lease: float = 60.0,
    ) -> None:
        self._engine = engine_of(database)
        self._send = send
        self._batch = batch
        self._max = max_per_run
        self._lease = timedelta(seconds=lease)
        self._lock = threading.Lock()
        self._total = 0

    @property
    def total_published(self) -> int:
        """Messages this relay has published since it was made, over all its runs."""
        with self._lock:
            return self._total

    def run(self, only: Collection[str] | None = None) -> RelayReport:
        """Publish unsent rows in batches, at most ``max_per_run``; stop at the first failure.

        ``only``: just the rows of these message ids (what one commit wrote, published by the
        thread that committed it; a backlog is the periodic run's work, not a handler's).

        The outbox is counted (:meth:`pending`) only when the run stopped with rows left: on a
        broker failure or at ``max_per_run``. A run that took every row it could reports 0
        without counting, so the common runs (nothing to send, or one commit's rows) cost one
        ``UPDATE`` each, or two plus the sends, instead of a scan of the outbox."""
        owner = str(uuid.uuid4())
        published = 0
        error: str | None = None
        while published < self._max and error is None:
            limit = min(self._batch, self._max - published)
            leased = self._lease_batch(owner, limit, only)
            if not leased:
                break
            sent: list[int] = []
            for row_id, message in leased:
                try:
                    self._send(message)
                except Exception as exc:  # noqa: BLE001 - any broker failure keeps the row
                    error = f"{type(exc).__name__}: {exc}"[:_ERROR_LIMIT]
                    break
                sent.append(row_id)
            untried = [row_id for row_id, _ in leased[len(sent) + 1 :]]
            failed = leased[len(sent)][0] if error is not None else None
            self._finish(owner, sent, failed, untried, error)
            published += len(sent)
            if len(leased) < limit:  # nothing more was free to take
                break
        with self._lock:
            self._total += published
        stopped_early = error is not None or published >= self._max
        pending = self.pending() if stopped_early else 0
        if error is not None:
            _log.warning(
                "outbox not published: the broker failed; rows kept",
                published=published,
                pending=pending,
                error=error,
            )
        elif published:
            _log.info("outbox published", published=published, pending=pending)
        return RelayReport(published, pending, error)

    def accept(self, messages: Sequence[OutboxMessage], *, send: bool = True) -> RelayReport:
        """Record ``messages`` in the outbox as sent, then send them, in order.

        The publisher's path: one transaction and no lease, as no relay takes a row marked
        sent. A process dying between the commit and the sends leaves the rows to
        :meth:`recover`; a send that fails unmarks that row and the rest (the failed one with
        its error), so the next :meth:`run` publishes them. ``send=False`` only records them,
        unsent (the broker already failed), for the next :meth:`run`."""
        if not messages:
            return RelayReport(0, 0)
        with self._engine.begin() as conn:
            add_to_outbox(conn, messages, sent_at=utcnow() if send else None)
        if not send:
            return RelayReport(0, len(messages))
        for published, message in enumerate(messages):
            try:
                self._send(message)
            except Exception as exc:  # noqa: BLE001 - any broker failure keeps the rows
                error = f"{type(exc).__name__}: {exc}"[:_ERROR_LIMIT]
                self._unmark(messages[published:], error)
                _log.warning(
                    "events recorded but not published: the broker failed; rows kept",
                    published=published,
                    kept=len(messages) - published,
                    error=error,
                )
                return RelayReport(published, len(messages) - published, error)
        with self._lock:
            self._total += len(messages)
        return RelayReport(len(messages), 0)

    def _unmark(self, messages: Sequence[OutboxMessage], error: str) -> None:
        """Make ``messages`` unsent again; the first (whose send failed) keeps ``error``."""
        c = OUTBOX.c
        with self._engine.begin() as conn:
            conn.execute(
                update(OUTBOX)
                .where(c.message_id == messages[0].message_id)
                .values(sent_at=None, last_error=error)
            )
            for chunk in range(1, len(messages), 500):
                ids = [m.message_id for m in messages[chunk : chunk + 500]]
                conn.execute(
                    update(OUTBOX).where(c.message_id.in_(ids)).values(sent_at=None, attempts=0)
                )

    def pending(self) -> int:
        """Rows not yet sent."""
        with self._engine.connect() as conn:
            count = conn.scalar(select(func.count()).where(OUTBOX.c.sent_at.is_(None)))
        return int(count or 0)

    def recover(self, grace: float) -> OutboxRecovery:
        """Delete rows whose event completed; unmark rows whose event never arrived, so the
        next :meth:`run` sends them again.

        A row is sent again ``grace`` seconds after its first send, then after twice that,
        four times... (up to 64 times): a queue merely slower than the grace period (a backlog
        behind a long outage) gets a few copies, not one more every recovery run."""
        now = utcnow()
        c = OUTBOX.c
        event = EVENTS.c.event_id == c.event_id
        # A message the pipeline refused is kept in rejected_events: it arrived, and sending
        # it again would only be refused again.
        rejected = exists().where(REJECTED_EVENTS.c.message_id == c.message_id)
        with self._engine.begin() as conn:
            done = conn.execute(
                delete(OUTBOX).where(
                    c.sent_at.is_not(None),
                    or_(exists().where(event, EVENTS.c.status == EventStatus.COMPLETED), rejected),
                )
            ).rowcount
            overdue = conn.execute(
                select(c.id, c.sent_at, c.attempts)
                .where(
                    c.sent_at < now - timedelta(seconds=grace), ~exists().where(event), ~rejected
                )
                .order_by(c.sent_at)
                .limit(_RECOVER_MAX)
                .with_for_update(skip_locked=True)
            ).all()
            lost = [
                row.id
                for row in overdue
                if row.sent_at
                < now
                - timedelta(seconds=grace * 2 ** min(max(row.attempts - 1, 0), _MAX_DOUBLINGS))
            ]
            for chunk in range(0, len(lost), 500):
                conn.execute(
                    update(OUTBOX).where(c.id.in_(lost[chunk : chunk + 500])).values(sent_at=None)
                )
        if lost:
            _log.warning("outbox messages lost by the broker; sending again", resent=len(lost))
        return OutboxRecovery(done, len(lost))

    def _lease_batch(
        self, owner: str, limit: int, only: Collection[str] | None
    ) -> list[tuple[int, OutboxMessage]]:
        now = utcnow()
        c = OUTBOX.c
        free = [c.sent_at.is_(None), or_(c.lease_until.is_(None), c.lease_until < now)]
        if only is not None:
            free.append(c.message_id.in_(sorted(only)))
        candidates = (
            select(c.id)
            .where(*free)
            .order_by(c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self._engine.begin() as conn:
            rows = conn.execute(
                update(OUTBOX)
                .where(c.id.in_(candidates), *free)
                .values(lease_owner=owner, lease_until=now + self._lease)
                .returning(c.id, c.message_id, c.event_id, c.queue, c.actor, c.payload)
            ).all()
        return sorted(
            ((row.id, _message(row)) for row in rows),
            key=lambda item: item[0],
        )

    def _finish(
        self,
        owner: str,
        sent: Sequence[int],
        failed: int | None,
        untried: Sequence[int],
        error: str | None,
    ) -> None:
        """Mark ``sent`` sent; free the rest of the lease, counting an attempt only for the row
        whose send ``failed``."""
        c = OUTBOX.c
        free: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        with self._engine.begin() as conn:
            if sent:
                conn.execute(
                    update(OUTBOX)
                    .where(c.id.in_(sent), c.sent_at.is_(None))
                    .values(sent_at=utcnow(), last_error=None, attempts=c.attempts + 1, **free)
                )
            if failed is not None:
                conn.execute(
                    update(OUTBOX)
                    .where(c.id == failed, c.lease_owner == owner)
                    .values(last_error=error, attempts=c.attempts + 1, **free)
                )
            if untried:
                conn.execute(
                    update(OUTBOX).where(c.id.in_(untried), c.lease_owner == owner).values(**free)
                )


def _message(row: Any) -> OutboxMessage:
    return OutboxMessage(
        message_id=row.message_id,
        event_id=row.event_id,
        queue=row.queue,
        actor=row.actor,
        payload=row.payload,
    )
