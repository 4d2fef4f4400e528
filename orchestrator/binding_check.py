"""The binding check for IdP middleware: judge a request's address against its session.

:class:`BindingChecker` reads what the session recorded at login (binding modes and the
login address's facts), asks :func:`orchestrator.binding.evaluate` about the new address
and, on a violation, writes ``session.binding_violation`` to the outbox (in a transaction
that first checks the session is still open) and runs ``relay`` to publish it; the session
then ends with the full logout fan-out, even if the broker was down at the time. The same
check backs ``logout-orchestrator binding check``.
"""

from __future__ import annotations

from sqlalchemy import select

from orchestrator.binding import (
    BindingResult,
    BindingViolation,
    BoundSession,
    GeoipBinding,
    GeoipReader,
    NetworkBinding,
    UnlistedAddressPolicy,
    evaluate,
)
from orchestrator.errors import InputError, Problem
from orchestrator.metrics import count_binding_violation
from orchestrator.outbox import Relay, add_to_outbox, event_message
from orchestrator.store import Database, IdpSession
from orchestrator.store.sql import engine_of
from orchestrator.store.tables import IDP_SESSIONS
from schemas import HttpRequest, SessionBindingViolation

__all__ = ["BindingChecker"]


class BindingChecker:
    """Check addresses against sessions; write violations to the outbox, then ``relay``."""

    def __init__(
        self,
        database: Database,
        reader: GeoipReader,
        policy: UnlistedAddressPolicy,
        *,
        namespace: str = "logout",
        relay: Relay | None = None,
    ) -> None:
        self._database = database
        self._reader = reader
        self._policy = policy
        self._namespace = namespace
        self._relay = relay

    def bound_session(self, session_id: str) -> BoundSession:
        """The open session's binding as recorded at login; InputError if unknown or ended."""
        with self._database() as db:
            row = db.get(IdpSession, session_id)
            if row is None or row.ended_at is not None:
                state = "has ended" if row is not None else "is not known"
                raise InputError([Problem(f"session {session_id!r}", "session_id", state)])
            return BoundSession(
                session_id=row.session_id,
                network_binding=NetworkBinding(row.network_binding),
                geoip_binding=GeoipBinding(row.geoip_binding),
                ip=row.ip,
                asn=row.asn,
                as_org=row.as_org,
                as_network=row.as_network,
                continent=row.continent,
                country=row.country,
                city=row.city,
                lat=row.lat,
                long=row.long,
            )

    def check(
        self,
        session_id: str,
        ip: str,
        *,
        request: HttpRequest | None = None,
        publish: bool = True,
    ) -> BindingResult:
        """Judge ``ip``; on a violation :meth:`record` its event (unless ``publish`` is False)."""
        result = evaluate(self.bound_session(session_id), ip, self._reader, self._policy)
        if isinstance(result, BindingViolation) and publish:
            self.record(result.event(session_id, request=request))
        return result

    def record(self, event: SessionBindingViolation) -> None:
        """Write ``event`` to the outbox if its session is still open (else InputError), then
        run the relay."""
        with engine_of(self._database).begin() as conn:
            still_open = conn.scalar(
                select(IDP_SESSIONS.c.session_id)
                .where(
                    IDP_SESSIONS.c.session_id == event.session_id, IDP_SESSIONS.c.ended_at.is_(None)
                )
                .with_for_update()
            )
            if still_open is None:
                raise InputError(
                    [Problem(f"session {event.session_id!r}", "session_id", "has ended")]
                )
            message = event_message(event, self._namespace)
            add_to_outbox(conn, [message])
        count_binding_violation(event.binding.reason)
        if self._relay is not None:
            self._relay([message.message_id])
