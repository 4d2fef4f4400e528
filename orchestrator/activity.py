"""Session activity reported by IdP components: a login started a session, a session was seen.

Both are idempotent, so a redelivered message or a repeated call is harmless: a start
upserts the session (its deadline from the :class:`SessionPolicy`, its login facts for the
binding) and audits ``session.started`` once; a sighting moves ``last_seen`` forward only.

Over the per-user limit (``max_sessions_per_user``) a start ends the user's oldest other
sessions: one ``session.revoke`` each (initiator ``policy``, with the reason), written to the
outbox in the transaction that decides it, then published by ``relay`` (run after the
commit), so every ended session gets its full logout fan-out and audit trail even when the
broker was down at the time. A revocation's ``event_id`` (and message id) is derived from
the session it ends, so a start handled twice, or a later start that sees the session still
open because its revocation is still queued, ends nothing twice (the outbox keeps one row,
the pipeline drops a repeat as a duplicate).

A start is also judged by the remember-device rule (:mod:`orchestrator.devices`): whether it
came from a known device, and why, is kept on the session and in its ``session.started``
record, so an alert on logins from unknown devices is a query of the audit trail.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, select, update

from orchestrator.audit import emit, write_audit
from orchestrator.devices import record_verdict
from orchestrator.outbox import Relay, add_to_outbox, event_message
from orchestrator.registry import SessionRegistry
from orchestrator.revoking import revoke_session
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import Database
from orchestrator.store.sql import engine_of
from orchestrator.store.tables import IDP_SESSIONS
from orchestrator.trail import session_started
from schemas import SessionRevoke, SessionSeen, SessionStarted

__all__ = ["LIMIT_ACTOR", "SessionActivity", "limit_revoke_id"]

#: The ``actor`` of the revocations the session limit makes.
LIMIT_ACTOR = "session-limit"
_IDS = uuid.UUID("6f1c3c5e-52a8-4a53-9a41-3b0a4f0f6a11")


def limit_revoke_id(session_id: str) -> uuid.UUID:
    """The one ``event_id`` of the session limit's revocation of ``session_id``."""
    return uuid.uuid5(_IDS, f"session-limit:{session_id}")


class SessionActivity:
    """Record starts and sightings; see the module docstring."""

    def __init__(
        self,
        database: Database,
        registry: SessionRegistry,
        policy: SessionPolicy,
        *,
        namespace: str = "logout",
        relay: Relay | None = None,
        remember_device: timedelta = timedelta(0),
    ) -> None:
        self._engine = engine_of(database)
        self._remember_device = remember_device
        self._registry = registry
        self._policy = policy
        self._namespace = namespace
        self._relay = relay

    def handle(self, event: SessionStarted | SessionSeen) -> None:
        """Handle an activity event as published."""
        if isinstance(event, SessionStarted):
            self.started(event)
        else:
            self.seen(event.session_id, event.occurred_at)

    def started(self, event: SessionStarted) -> list[SessionRevoke]:
        """Record the new session and whether its device is known; end the oldest others
        over the limit (returned).

        The revocations are written to the outbox with the start's audit record, then
        ``relay`` runs (when given) to publish them.
        """
        self._registry.record_session(
            event.session_id,
            event.user_id,
            ip=event.ip,
            user_agent=event.user_agent,
            created=event.occurred_at,
            expires=event.expires_at,
            remember_me=event.remember_me,
            stay_signed_in=event.stay_signed_in,
            network_binding=event.network_binding,
            geoip_binding=event.geoip_binding,
        )
        with self._engine.begin() as conn:
            verdict = record_verdict(
                conn,
                self._remember_device,
                event.session_id,
                event.user_id,
                device_hash=event.device_hash,
                ip=event.ip,
                at=event.occurred_at,
            )
            entry = session_started(event, verdict)
            over = self._over_limit(conn, event.user_id, event.session_id)
            revokes = [self._revoke(event, session_id) for session_id in over]
            add_to_outbox(conn, [event_message(r, self._namespace) for r in revokes])
            records = write_audit(conn, [entry])  # last: see write_audit
        emit(records)
        if revokes and self._relay is not None:
            self._relay([str(revoke.event_id) for revoke in revokes])
        return revokes

    def _over_limit(self, conn: Connection, user_id: str, keep: str) -> list[str]:
        limit = self._policy.max_sessions_per_user
        if limit <= 0:
            return []
        open_sessions = list(
            conn.scalars(
                select(IDP_SESSIONS.c.session_id)
                .where(IDP_SESSIONS.c.user_id == user_id, IDP_SESSIONS.c.ended_at.is_(None))
                .order_by(IDP_SESSIONS.c.created_at.desc(), IDP_SESSIONS.c.session_id.desc())
            )
        )
        if keep in open_sessions:  # the new one always stays
            open_sessions.remove(keep)
            open_sessions.insert(0, keep)
        return list(reversed(open_sessions[limit:]))  # oldest first

    def _revoke(self, started: SessionStarted, session_id: str) -> SessionRevoke:
        limit = self._policy.max_sessions_per_user
        return revoke_session(
            session_id,
            initiator="policy",
            actor=LIMIT_ACTOR,
            reason=(
                f"concurrent session limit: user has more than {limit} session"
                f"{'s' if limit != 1 else ''} after login to {started.session_id}"
            ),
            event_id=limit_revoke_id(session_id),
            user_id=started.user_id,
        )

    def seen(self, session_id: str, at: datetime | None = None) -> bool:
        """Move ``last_seen`` forward to ``at`` (default now); False if unknown or ended."""
        when = at or datetime.now(UTC)
        with self._engine.begin() as conn:
            result = conn.execute(
                update(IDP_SESSIONS)
                .where(
                    IDP_SESSIONS.c.session_id == session_id,
                    IDP_SESSIONS.c.ended_at.is_(None),
                    IDP_SESSIONS.c.last_seen < when,
                )
                .values(last_seen=when)
            )
            if result.rowcount:
                return True
            known = conn.scalar(
                select(IDP_SESSIONS.c.session_id).where(
                    IDP_SESSIONS.c.session_id == session_id, IDP_SESSIONS.c.ended_at.is_(None)
                )
            )
        return known is not None
