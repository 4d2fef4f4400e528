"""The expiry sweeper: a ``session.expired`` for each session past a limit, once.

Every worker process sweeps every ``expiry_interval`` seconds. A sweep takes due sessions in
batches: open, not yet claimed, past their absolute deadline (``expires_at``) or unseen for
the idle timeout; both scans use a partial index of open, unclaimed sessions, so a sweep
costs the same with a million quiet sessions as with ten. Rows are locked with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL; other processes take other rows) and claimed with a
conditional ``UPDATE ... WHERE expiry_claimed_at IS NULL RETURNING``, so of several
processes on several machines exactly one claims each session, even where row locks do not
exist (SQLite). Work per sweep is bounded by ``expiry_max_per_sweep``.

The claim writes the session's ``session.expired`` to the outbox in the same transaction
(:mod:`orchestrator.outbox`), so a claim and its event never come apart: the caller then
runs the relay, and a broker that is down keeps the events in the outbox until it answers.
The event's ``event_id`` (and message id) is derived from the session id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import structlog
from sqlalchemy import Connection, Select, or_, select, update
from sqlalchemy.sql import ColumnElement

from orchestrator.metrics import count_expired
from orchestrator.outbox import add_to_outbox, event_message
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import Database, utcnow
from orchestrator.store.sql import engine_of
from orchestrator.store.tables import IDP_SESSIONS
from schemas import SessionExpired

__all__ = ["ExpirySweeper", "SweepReport", "expiry_event_id"]

_log = structlog.get_logger("logout.expiry")
_IDS = uuid.UUID("0b6f2f8e-8f7b-4c55-bb0e-2f3b1c1d9e27")

Reason = Literal["absolute", "idle"]


def expiry_event_id(session_id: str) -> uuid.UUID:
    """The one ``event_id`` a session's ``session.expired`` ever has."""
    return uuid.uuid5(_IDS, f"session.expired:{session_id}")


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep claimed: one ``session.expired`` each, written to the outbox."""

    claimed: int


class ExpirySweeper:
    """Find due sessions, claim them and write their expiry to the outbox; see the module
    docstring."""

    def __init__(
        self,
        database: Database,
        policy: SessionPolicy,
        *,
        namespace: str = "logout",
        batch: int = 500,
        max_per_sweep: int = 20_000,
    ) -> None:
        self._engine = engine_of(database)
        self._policy = policy
        self._namespace = namespace
        self._batch = batch
        self._max = max_per_sweep

    def sweep(self, now: datetime | None = None) -> SweepReport:
        """One sweep: claim due sessions in batches, at most ``max_per_sweep``."""
        now = now or utcnow()
        claimed = 0
        while claimed < self._max:
            batch = self._claim_batch(now, min(self._batch, self._max - claimed))
            if not batch:
                break
            claimed += batch
        if claimed:
            _log.info("sessions expired", claimed=claimed)
        return SweepReport(claimed)

    def _claim_batch(self, now: datetime, limit: int) -> int:
        """Claim up to ``limit`` due sessions and write their events, in one transaction."""
        open_unclaimed = (
            IDP_SESSIONS.c.ended_at.is_(None),
            IDP_SESSIONS.c.expiry_claimed_at.is_(None),
        )
        with self._engine.begin() as conn:
            due: dict[str, Reason] = dict.fromkeys(
                _locked(
                    conn,
                    select(IDP_SESSIONS.c.session_id)
                    .where(*open_unclaimed, IDP_SESSIONS.c.expires_at <= now)
                    .order_by(IDP_SESSIONS.c.expires_at),
                    limit,
                ),
                "absolute",
            )
            idle_since = self._policy.idle_since(now)
            if idle_since is not None and len(due) < limit:
                # Past its deadline too: an absolute expiry, for the next batch (a session
                # committed between the two scans would otherwise be called idle here).
                within_deadline = or_(
                    IDP_SESSIONS.c.expires_at.is_(None), IDP_SESSIONS.c.expires_at > now
                )
                for session_id in _locked(
                    conn,
                    select(IDP_SESSIONS.c.session_id)
                    .where(*open_unclaimed, IDP_SESSIONS.c.last_seen < idle_since, within_deadline)
                    .order_by(IDP_SESSIONS.c.last_seen),
                    limit - len(due),
                ):
                    due.setdefault(session_id, "idle")
            won = _claim(conn, list(due), now, IDP_SESSIONS.c.expiry_claimed_at.is_(None))
            add_to_outbox(
                conn,
                [
                    event_message(_expired(session_id, reason, now), self._namespace)
                    for session_id, reason in due.items()
                    if session_id in won
                ],
            )
        for reason in ("idle", "absolute"):  # counted once committed
            ended = sum(1 for sid, why in due.items() if sid in won and why == reason)
            if ended:
                count_expired(reason, ended)
        return len(won)


def _locked(conn: Connection, statement: Select[tuple[str]], limit: int) -> list[str]:
    """Ids from ``statement``, at most ``limit``, row-locked (skipping locked rows) where the
    database can."""
    return list(conn.scalars(statement.limit(limit).with_for_update(skip_locked=True)))


def _claim(
    conn: Connection, session_ids: list[str], now: datetime, *still: ColumnElement[bool]
) -> set[str]:
    """Claim the sessions that still match ``still``; the ids actually claimed."""
    if not session_ids:
        return set()
    return set(
        conn.scalars(
            update(IDP_SESSIONS)
            .where(
                IDP_SESSIONS.c.session_id.in_(session_ids),
                IDP_SESSIONS.c.ended_at.is_(None),
                *still,
            )
            .values(expiry_claimed_at=now)
            .returning(IDP_SESSIONS.c.session_id)
        )
    )


def _expired(session_id: str, reason: Reason, now: datetime) -> SessionExpired:
    return SessionExpired(
        event_id=expiry_event_id(session_id),
        occurred_at=now.astimezone(UTC),
        initiator="system",
        actor="expiry-sweeper",
        session_id=session_id,
        reason=reason,
    )
