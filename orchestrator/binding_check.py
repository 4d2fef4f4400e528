"""The binding check for IdP middleware: judge a request's address against its session.

:class:`BindingChecker` reads what the session recorded at login (binding modes and the
login address's facts), asks :func:`orchestrator.binding.evaluate` about the new address
and, on a violation, publishes ``session.binding_violation`` (the session then ends with
the full logout fan-out). The same check backs ``logout-orchestrator binding check``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
from orchestrator.store import IdpSession, SessionFactory
from schemas import Event, HttpRequest

__all__ = ["BindingChecker"]


class BindingChecker:
    """Check addresses against sessions; publish violations through ``publish``."""

    def __init__(
        self,
        sessions: SessionFactory,
        reader: GeoipReader,
        policy: UnlistedAddressPolicy,
        publish: Callable[[Sequence[Event]], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._reader = reader
        self._policy = policy
        self._publish = publish

    def bound_session(self, session_id: str) -> BoundSession:
        """The open session's binding as recorded at login; InputError if unknown or ended."""
        with self._sessions() as db:
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
                as_network=row.as_network,
                continent=row.continent,
                country=row.country,
                city=row.city,
            )

    def check(
        self,
        session_id: str,
        ip: str,
        *,
        request: HttpRequest | None = None,
        publish: bool = True,
    ) -> BindingResult:
        """Judge ``ip``; on a violation publish the event (unless ``publish`` is False)."""
        result = evaluate(self.bound_session(session_id), ip, self._reader, self._policy)
        if isinstance(result, BindingViolation) and publish and self._publish is not None:
            self._publish([result.event(session_id, request=request)])
        return result
