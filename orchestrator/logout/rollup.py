"""Counting a logout's deliveries by status, and the roll-up records that say so.

:class:`Tally` is the one count of deliveries by status: the engine's ``logout.completed``
and ``logout.settled``, the waiter's :class:`~orchestrator.waiting.Completion` and the
front-channel answer (is anyone not logged out?) all read it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, func, select

import orchestrator.store.statements as sql
from orchestrator.audit import AuditEntry, emit, write_audit
from orchestrator.logout.batch import Begun, Outcome, Work
from orchestrator.store import OPEN_DELIVERY_STATUSES, DeliveryStatus
from orchestrator.store.core import audit_records
from orchestrator.trail import logout_completed, logout_settled
from schemas.audit import AuditType

__all__ = ["Tally", "complete", "count", "settle"]

#: Statuses of a participant not (yet) logged out.
_NOT_LOGGED_OUT = OPEN_DELIVERY_STATUSES | {DeliveryStatus.FAILED}


@dataclass(frozen=True, slots=True)
class Tally:
    """Deliveries by status (absent statuses count zero)."""

    counts: Mapping[DeliveryStatus, int] = field(default_factory=dict)

    @classmethod
    def of(cls, statuses: Iterable[DeliveryStatus | str]) -> Tally:
        """Count statuses one by one."""
        return cls(Counter(DeliveryStatus(status) for status in statuses))

    def __getitem__(self, status: DeliveryStatus) -> int:
        return self.counts.get(status, 0)

    @property
    def settled(self) -> bool:
        """No delivery is still pending or retrying."""
        return not any(self[status] for status in OPEN_DELIVERY_STATUSES)

    @property
    def logged_out(self) -> bool:
        """Every participant is logged out (or had nothing to log out of)."""
        return not any(self[status] for status in _NOT_LOGGED_OUT)

    @property
    def completed_outcome(self) -> str:
        """``logout.completed``'s outcome: ``partial``, ``retrying`` or ``success``."""
        if self[DeliveryStatus.FAILED]:
            return "partial"
        return "success" if self.settled else "retrying"

    @property
    def settled_outcome(self) -> str:
        """``logout.settled``'s outcome: ``partial`` or ``success``."""
        return "partial" if self[DeliveryStatus.FAILED] else "success"

    def as_detail(self) -> dict[str, int]:
        """Every status by name, zeros included (an audit record's ``deliveries``)."""
        return {status.value: self[status] for status in DeliveryStatus}


def count(conn: Connection, event_ids: Collection[str]) -> dict[str, tuple[Tally, str]]:
    """Each event's deliveries counted from their rows, with the user they log out."""
    counts: dict[str, Counter[DeliveryStatus]] = {}
    users: dict[str, str] = {}
    rows = conn.execute(sql.COUNT_DELIVERIES, {"b_ids": sorted(event_ids)})
    for event_id, status, user_id, n in rows:
        counts.setdefault(event_id, Counter())[DeliveryStatus(status)] = n
        users[event_id] = user_id
    return {event_id: (Tally(tally), users[event_id]) for event_id, tally in counts.items()}


def complete(
    conn: Connection,
    begun: Sequence[Begun],
    works: Sequence[Work],
    outcomes: Mapping[str, Outcome],
    lost: Collection[str],
    now: datetime,
) -> tuple[list[AuditEntry], list[str]]:
    """Mark the events completed and roll each up: ``logout.completed``, and
    ``logout.settled`` when nothing is left to retry. Returns the entries and the events to
    :func:`settle` once committed.

    An event whose deliveries this run did not all record (resumed after a crash, or an
    attempt lost its lease, ``lost``) is counted from its rows, and settled from them once
    committed; the others are counted from the outcomes just recorded.
    """
    partial = {w.context.event_id for w in works if w.delivery_id in lost}
    recount = [b.event_id for b in begun if b.resumed or b.event_id in partial]
    statuses: dict[str, list[DeliveryStatus]] = defaultdict(list)
    for work in works:
        if work.context.event_id not in recount:
            statuses[work.context.event_id].append(outcomes[work.delivery_id].status)
    tallies = {event_id: Tally.of(found) for event_id, found in statuses.items()}
    if recount:
        tallies.update({event_id: c[0] for event_id, c in count(conn, recount).items()})
    entries: list[AuditEntry] = []
    for item in begun:
        tally = tallies.get(item.event_id, Tally())
        event, ended = item.logout.event, item.ended
        entries.append(logout_completed(event, ended.user_id, ended.sessions_ended, tally))
        if item.event_id not in recount and tally.settled:
            session_id = item.logout.session_id
            entries.append(logout_settled(item.event_id, ended.user_id, session_id, tally))
    conn.execute(sql.COMPLETE_EVENTS, {"b_ids": [item.event_id for item in begun], "b_now": now})
    return entries, recount


def settle(engine: Engine, event_ids: Iterable[str]) -> None:
    """Write ``logout.settled`` for each event whose deliveries are all final now,
    counted from the rows.

    Runs after the outcomes are committed, so of two retries finishing the last
    deliveries of one event at once, the later always sees both (the same counts, the same
    record). A final status changes only by an operator's retry (``failed`` to
    ``retrying``, then final again): each retry generation settles anew, under its own key
    (the retries requested so far), so the latest ``logout.settled`` is the logout's word.
    """
    wanted = sorted(event_ids)
    if not wanted:
        return
    with engine.begin() as conn:
        done = {event_id: c for event_id, c in count(conn, wanted).items() if c[0].settled}
        named = _named_by(conn, done) if done else {}
        retries = _retries_requested(conn, done) if done else {}
        entries: list[AuditEntry] = []
        for event_id, (tally, user_id) in done.items():
            named_user, session_id = named.get(event_id, (None, None))
            entries.append(
                logout_settled(
                    event_id, named_user or user_id, session_id, tally, retries.get(event_id, 0)
                )
            )
        records = write_audit(conn, entries)
    emit(records)


def _retries_requested(conn: Connection, event_ids: Collection[str]) -> dict[str, int]:
    """How many operator retries (``delivery.retry_requested``) each event's deliveries had:
    its settlement's generation."""
    rows = conn.execute(
        select(audit_records.c.event_id, func.count())
        .where(
            audit_records.c.type == AuditType.DELIVERY_RETRY_REQUESTED.value,
            audit_records.c.event_id.in_(sorted(event_ids)),
        )
        .group_by(audit_records.c.event_id)
    )
    return {str(event_id): int(n) for event_id, n in rows}


def _named_by(
    conn: Connection, event_ids: Collection[str]
) -> dict[str, tuple[str | None, str | None]]:
    """The user and the single session each event names (from its stored payload), if any."""
    named: dict[str, tuple[str | None, str | None]] = {}
    rows = conn.execute(sql.EVENT_PAYLOADS, {"b_ids": sorted(event_ids)})
    for event_id, payload in rows:
        user_id, session_id = payload.get("user_id"), payload.get("session_id")
        named[event_id] = (
            str(user_id) if user_id is not None else None,
            str(session_id) if session_id is not None else None,
        )
    return named
