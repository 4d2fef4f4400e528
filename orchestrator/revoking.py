"""Revoking sessions by hand: the events an operator's or a user's revocation publishes.

Nothing new is invented: one session ends by ``session.revoke``; all of a user's by
``user.revoke_all``; all but one by ``session.terminate_others``. They are published like
any event (outbox, then broker) and handled by the workers with the full logout fan-out, so
the audit trail names the initiator and the actor (``session.ended``'s ``initiator`` and
``actor``). Each is checked first against the registry: revoking a session that is not open
(or not the user's) publishes nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from orchestrator.store import Database
from orchestrator.store.sql import engine_of
from orchestrator.store.tables import IDP_SESSIONS
from schemas import SessionRevoke, SessionTerminateOthers, UserRevokeAll
from schemas.errors import InputError, Problem
from schemas.events import Initiator

__all__ = ["Revocations", "revoke_session", "self_service_revoke_id"]

_IDS = uuid.UUID("0d7c1f3e-8a51-4f0e-a2a4-6a3f1c9b5e27")


def self_service_revoke_id(session_id: str) -> uuid.UUID:
    """The one ``event_id`` of a user's own revocation of ``session_id``: a repeated click
    (or a retried request) publishes the same event, handled once."""
    return uuid.uuid5(_IDS, f"self-service:{session_id}")


def _issued_now(
    initiator: Initiator, actor: str | None, event_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """The fields every revocation carries: who asks, and a new event happening now (a new
    ``event_id`` unless one is given)."""
    return {
        "event_id": event_id or uuid.uuid4(),
        "occurred_at": datetime.now(UTC),
        "initiator": initiator,
        "actor": actor,
    }


def revoke_session(
    session_id: str,
    *,
    initiator: Initiator,
    actor: str | None,
    reason: str | None,
    event_id: uuid.UUID | None = None,
    user_id: str | None = None,
) -> SessionRevoke:
    """The ``session.revoke`` of ``session_id``, happening now; ``event_id`` (default: a new
    one) is given when a repeated request must publish the same event; ``user_id``: end it
    only if it is that user's (the engine checks when it ends it, whatever happened since)."""
    return SessionRevoke(
        **_issued_now(initiator, actor, event_id),
        session_id=session_id,
        reason=reason,
        user_id=user_id,
    )


class Revocations:
    """Builds, after checking the registry, the events that revoke sessions."""

    def __init__(self, database: Database) -> None:
        self._engine = engine_of(database)

    def _owner(self, session_id: str) -> str | None:
        """The user of the open session ``session_id``; None when unknown or ended."""
        with self._engine.connect() as conn:
            owner: str | None = conn.scalar(
                select(IDP_SESSIONS.c.user_id).where(
                    IDP_SESSIONS.c.session_id == session_id, IDP_SESSIONS.c.ended_at.is_(None)
                )
            )
        return owner

    def _open_count(self, user_id: str) -> int:
        with self._engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count()).where(
                        IDP_SESSIONS.c.user_id == user_id, IDP_SESSIONS.c.ended_at.is_(None)
                    )
                )
                or 0
            )

    def session(
        self,
        session_id: str,
        *,
        initiator: Initiator = "admin",
        actor: str | None = None,
        reason: str | None = None,
    ) -> SessionRevoke:
        """``session.revoke`` of the open session ``session_id`` (InputError otherwise)."""
        if self._owner(session_id) is None:
            raise InputError([_not_open("session_id", session_id)])
        return revoke_session(session_id, initiator=initiator, actor=actor, reason=reason)

    def user(
        self,
        user_id: str,
        *,
        keep: str | None = None,
        initiator: Initiator = "admin",
        actor: str | None = None,
    ) -> UserRevokeAll | SessionTerminateOthers:
        """Every open session of ``user_id`` (``user.revoke_all``), or every one but ``keep``
        (``session.terminate_others``); InputError when there is none to end, or ``keep`` is
        not an open session of that user."""
        if keep is None:
            if not self._open_count(user_id):
                raise InputError(
                    [Problem("", "user_id", f"user {user_id!r} has no open session to revoke")]
                )
            return UserRevokeAll(**_issued_now(initiator, actor), user_id=user_id)
        if self._owner(keep) != user_id:
            raise InputError(
                [
                    Problem(
                        "",
                        "keep_session_id",
                        f"{keep!r} is not an open session of user {user_id!r}; list them "
                        "with sessions list --user",
                    )
                ]
            )
        return SessionTerminateOthers(
            **_issued_now(initiator, actor), user_id=user_id, keep_session_id=keep
        )

    def own(self, user_id: str, session_id: str) -> SessionRevoke | None:
        """A user's revocation of one of their own sessions (initiator ``user``, actor the
        user); None when ``session_id`` is not an open session of ``user_id``, so a caller
        tells nothing about other users' sessions."""
        if self._owner(session_id) != user_id:
            return None
        return revoke_session(
            session_id,
            initiator="user",
            actor=user_id,
            reason="revoked by the user from the sessions page",
            event_id=self_service_revoke_id(session_id),
            user_id=user_id,
        )


def _not_open(field: str, session_id: str) -> Problem:
    return Problem(
        "",
        field,
        f"{session_id!r} is not an open session (unknown, or already ended); list them with "
        "sessions list",
    )
