"""Deliveries in the database: one recorded per provider session an event ended, claimed
for an attempt, and the attempt's outcome recorded.

A delivery is claimed with one conditional UPDATE (or inserted already claimed by the
event that creates it), so two workers, or a redelivered message, never send the same
attempt twice, and a delivery that succeeded is never sent again. The claim is a lease
(see :mod:`orchestrator.leases`), renewed while the attempt waits and runs, and its
number is a fencing token: an outcome is recorded only where the delivery is still open
and still at that attempt, so a stale attempt records nothing and a final status never
changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, RowMapping

import orchestrator.store.statements as sql
from orchestrator.audit import AuditEntry
from orchestrator.errors import InputError
from orchestrator.leases import Leases
from orchestrator.logout.batch import Begun, Ended, Outcome, Work
from orchestrator.store import DeliveryStatus, utcnow
from orchestrator.store.ids import new_ids
from orchestrator.store.sql import json_rows
from orchestrator.trail import delivery_outcome
from protocols import LogoutContext, ProtocolHandler, ProviderInfo, ProviderSessionInfo

__all__ = ["Deliveries", "Recorded", "RetryScheduler", "provider_session"]

_log = structlog.get_logger("logout.fanout")

#: Called with a delivery id and a delay in seconds to try it again later.
RetryScheduler = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :meth:`Deliveries.record` wrote: audit entries to write, retries to schedule
    once committed, and the deliveries whose attempt had lost its lease (nothing recorded)."""

    entries: list[AuditEntry] = field(default_factory=list)
    retries: list[tuple[str, float]] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)


def provider_session(row: RowMapping, user_id: str) -> ProviderSessionInfo:
    """What a handler is told of one provider session (a row of
    :data:`~orchestrator.store.statements.PROVIDER_SESSION_COLUMNS`)."""
    return ProviderSessionInfo(
        id=row["ps_id"],
        session_id=row["session_id"],
        user_id=user_id,
        provider=row["provider"],
        identifiers=row["identifiers"] or {},
    )


def _occurred(payload: Mapping[str, Any]) -> datetime | None:
    """The stored event's ``occurred_at`` (validated when it was accepted), or None."""
    try:
        return datetime.fromisoformat(str(payload["occurred_at"]))
    except (KeyError, ValueError):
        return None


class Deliveries:
    """The deliveries of one process: ``handlers`` by protocol, ``leases`` it holds,
    ``schedule`` for retries."""

    def __init__(
        self,
        engine: Engine,
        handlers: Mapping[str, ProtocolHandler],
        leases: Leases,
        schedule: RetryScheduler,
    ) -> None:
        self._engine = engine
        self._handlers = handlers
        self.leases = leases
        self._schedule = schedule
        self._settings_cache: dict[tuple[str, datetime], Any] = {}

    @property
    def lease(self) -> timedelta:
        """How long a claim (or an event's lease) lasts past its last renewal."""
        return self.leases.lease

    def hold(
        self, works: Sequence[Work], events: Iterable[str] = ()
    ) -> AbstractContextManager[None]:
        """Keep the leases of ``works`` (and of ``events``) renewed until the block ends."""
        return self.leases.hold(((w.delivery_id, w.attempt, w.context.now) for w in works), events)

    # -- recording them ----------------------------------------------------------------

    def open(self, conn: Connection, ended: Sequence[Ended], now: datetime) -> list[Begun]:
        """One delivery per provider session each event ended, inserted already leased;
        of an event replayed, the open deliveries an earlier attempt recorded."""
        by_id = {e.owned.logout.event_id: e for e in ended}
        found = conn.execute(sql.ENDED_PROVIDER_SESSIONS, {"b_ids": list(by_id)})
        links = found.mappings().all()
        if not links:
            return [Begun(e, (), ()) for e in ended]
        rows = {
            (link["ended_by_event"], link["ps_id"]): self._new_row(link, delivery_id, now)
            for link, delivery_id in zip(links, new_ids(len(links)), strict=True)
        }
        inserted = sql.INSERT_DELIVERIES.execute(conn, list(rows.values()))
        fresh = {(event_id, ps_id) for event_id, ps_id in inserted}
        works: dict[str, list[Work]] = {event_id: [] for event_id in by_id}
        for link in links:
            key = (link["ended_by_event"], link["ps_id"])
            if key in fresh:
                works[key[0]].append(self._first_work(link, rows[key], by_id[key[0]], now))
        reopened: dict[str, list[str]] = {event_id: [] for event_id in by_id}
        replayed = {key[0] for key in rows if key not in fresh}
        if replayed:  # deliveries of an earlier attempt exist: pick up the open ones
            open_ones = conn.execute(sql.OPEN_DELIVERIES_OF, {"b_ids": sorted(replayed)})
            for delivery_id, event_id in open_ones:
                if delivery_id not in {w.delivery_id for w in works[event_id]}:
                    reopened[event_id].append(delivery_id)
        return [
            Begun(e, tuple(works[event_id]), tuple(reopened[event_id]))
            for event_id, e in by_id.items()
        ]

    def _new_row(self, link: RowMapping, delivery_id: str, now: datetime) -> dict[str, Any]:
        return {
            "id": delivery_id,
            "event_id": link["ended_by_event"],
            "provider_session_id": link["ps_id"],
            "provider": link["provider"],
            "session_id": link["session_id"],
            "user_id": link["user_id"],
            "status": DeliveryStatus.PENDING.value,
            "attempts": 1,
            "created_at": now,
            "updated_at": now,
            "next_attempt_at": now + self.lease,
        }

    def _first_work(
        self, link: RowMapping, row: Mapping[str, Any], ended: Ended, now: datetime
    ) -> Work:
        logout = ended.owned.logout
        event = logout.event
        context = LogoutContext(
            event_id=logout.event_id,
            event_type=event.type,
            initiator=event.initiator,
            delivery_id=row["id"],
            attempt=1,
            now=now,
            occurred_at=event.occurred_at,
        )
        return self._work(link, created_at=now, user_id=row["user_id"], context=context)

    # -- claiming them -----------------------------------------------------------------

    def claim(self, delivery_ids: Sequence[str]) -> list[Work]:
        """Lease the open, due deliveries among ``delivery_ids`` for one attempt each.

        Those open but not due yet (a retry message that came early, or a lease another
        worker, alive or dead, still holds) are scheduled again for when they are due.
        """
        works = self._claim(delivery_ids)
        claimed = {work.delivery_id for work in works}
        self._put_back([i for i in delivery_ids if i not in claimed])
        return works

    def _claim(self, delivery_ids: Sequence[str]) -> list[Work]:
        if not delivery_ids:
            return []
        now = utcnow()
        with self._engine.begin() as conn:
            params = {"b_ids": list(delivery_ids), "b_now": now, "b_until": now + self.lease}
            claimed = conn.scalars(sql.CLAIM_DUE_DELIVERIES, params).all()
            if not claimed:
                return []
            rows = conn.execute(sql.CLAIMED_DELIVERIES, {"b_ids": list(claimed)}).mappings().all()
        return [self._claimed_work(row, now) for row in rows]

    def _claimed_work(self, row: RowMapping, now: datetime) -> Work:
        context = LogoutContext(
            event_id=row["event_id"],
            event_type=row["event_type"],
            initiator=str(row["payload"].get("initiator", "system")),
            delivery_id=row["delivery_id"],
            attempt=row["attempts"],
            now=now,
            occurred_at=_occurred(row["payload"]),
        )
        return self._work(
            row, created_at=row["created_at"], user_id=row["user_id"], context=context
        )

    def _put_back(self, delivery_ids: Sequence[str]) -> None:
        if not delivery_ids:
            return
        now = utcnow()
        with self._engine.connect() as conn:
            params = {"b_ids": list(delivery_ids), "b_now": now}
            waiting = conn.execute(sql.NOT_DUE_DELIVERIES, params).all()
        for delivery_id, due in waiting:
            self._schedule(delivery_id, (due - now).total_seconds())

    def _work(
        self, row: RowMapping, *, created_at: datetime, user_id: str, context: LogoutContext
    ) -> Work:
        handler = self._handlers.get(row["protocol"])
        return Work(
            delivery_id=context.delivery_id,
            created_at=created_at,
            attempt=context.attempt,
            provider=ProviderInfo(
                name=row["provider"],
                protocol=row["protocol"],
                enabled=row["enabled"],
                full_logout_on_rp_initiated=row["full_logout_on_rp_initiated"],
                settings=self._provider_settings(handler, row),
            ),
            session=provider_session(row, user_id),
            context=context,
            handler=handler,
        )

    def _provider_settings(self, handler: ProtocolHandler | None, row: RowMapping) -> Any:
        """The provider's settings as ``handler`` reads them (None: it refuses them), read
        once per provider and version; without a handler, as stored."""
        if handler is None:
            return json.loads(row["settings_json"])
        key = (row["provider"], row["provider_updated_at"])
        if key not in self._settings_cache:
            try:
                self._settings_cache[key] = handler.stored_settings(
                    row["provider"], json.loads(row["settings_json"])
                )
            except InputError:
                self._settings_cache[key] = None
        return self._settings_cache[key]

    # -- recording outcomes ------------------------------------------------------------

    def record(
        self, conn: Connection, works: Sequence[Work], outcomes: Mapping[str, Outcome]
    ) -> Recorded:
        """Write the outcome of every attempt that still holds its delivery, in the
        caller's transaction (see :func:`_write_outcomes`).

        An attempt superseded meanwhile (its lease ran out and another attempt claimed the
        delivery, or the delivery is final) records nothing: no row, no audit record, no
        retry; it is logged and named in :attr:`Recorded.lost`.
        """
        if not works:
            return Recorded()
        now = utcnow()
        ordered = sorted(works, key=lambda w: w.delivery_id)  # lock order: by id
        self.leases.release((w.delivery_id, w.attempt) for w in ordered)
        rows = [_outcome_row(work, outcomes[work.delivery_id], now) for work in ordered]
        held = _write_outcomes(conn, rows, now)
        recorded = Recorded()
        for work in works:
            outcome = outcomes[work.delivery_id]
            if (work.delivery_id, work.attempt) not in held:
                recorded.lost.add(work.delivery_id)
                _log.info(
                    "delivery attempt lost its lease; its outcome is not recorded",
                    delivery_id=work.delivery_id,
                    attempt=work.attempt,
                    outcome=outcome.status.value,
                )
                continue
            recorded.entries.append(delivery_outcome(work, outcome))
            if outcome.next_attempt_at is not None:
                recorded.retries.append((work.delivery_id, outcome.retry_in))
        return recorded

    def schedule(self, retries: Sequence[tuple[str, float]]) -> None:
        """Schedule retries (after their outcomes are committed)."""
        for delivery_id, wait in retries:
            # Counted from the answer, so the retry never comes before ``Retry-After``.
            self._schedule(delivery_id, wait)


def _write_outcomes(
    conn: Connection, rows: list[dict[str, Any]], now: datetime
) -> set[tuple[str, int]]:
    """Record the outcome rows (sorted by delivery id); returns the (delivery, attempt) pairs
    that still held their delivery and were recorded.

    PostgreSQL: one statement that says which it recorded. Elsewhere: one fenced executemany,
    and a read of what it wrote only when it wrote fewer rows than it was given.
    """
    if conn.dialect.name == "postgresql":
        recorded = {"b_rows": json_rows(rows), "b_ids": [row["b_id"] for row in rows]}
        return {(i, n) for i, n in conn.execute(sql.RECORD_OUTCOMES, recorded)}
    written = conn.execute(sql.RECORD_OUTCOME, rows).rowcount
    held = {(row["b_id"], row["b_attempt"]) for row in rows}
    if written != len(rows) or not conn.dialect.supports_sane_multi_rowcount:
        # Some attempt was superseded. An attempt's number is claimed once: a row at that
        # number stamped with this transaction's time was written by it (and it holds the
        # row until commit).
        stamped: dict[str, Any] = {"b_attempts": sorted(held), "b_now": now}
        held = {(i, n) for i, n in conn.execute(sql.HELD_ATTEMPTS, stamped)}
    return held


def _outcome_row(work: Work, outcome: Outcome, now: datetime) -> dict[str, Any]:
    final = outcome.status is not DeliveryStatus.RETRYING
    return {
        "b_id": work.delivery_id,
        "b_attempt": work.attempt,
        "b_status": outcome.status.value,
        "b_error": outcome.detail,
        "b_code": outcome.status_code,
        "b_now": now,
        "b_next": outcome.next_attempt_at,
        "b_done": now if final else None,
    }
