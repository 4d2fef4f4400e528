"""Ending what each logout names: its IdP sessions and their provider sessions, audited.

Ending a session is a conditional UPDATE (``WHERE ended_at IS NULL``), atomic on SQLite and
PostgreSQL alike: when two events race for one session, exactly one ends it. Each is marked
with the event's id, so a replay finds what its first attempt ended. A ``session.revoke``
that names the session's user (``user_id``: a Shared Signals transmitter names the pair)
ends it only when it is that user's, checked in the same UPDATE: a session recorded later,
or for someone else, is never ended by it (audited as ``session.not_found``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

import orchestrator.store.statements as sql
from orchestrator.audit import AuditEntry
from orchestrator.logout.batch import Ended, Logout, Owned
from orchestrator.subscriptions import attach
from orchestrator.trail import session_ended, session_not_found
from schemas import (
    Event,
    LogoutProvider,
    SessionBindingViolation,
    SessionExpired,
    SessionRevoke,
    SessionTerminateOthers,
    UserRevokeAll,
)

__all__ = ["end", "end_reason"]

#: The sessions an event ended (or, of a provider-only logout, names): (session, user).
_Targets = dict[str, list[tuple[str, str]]]


def end_reason(event: Event) -> str:
    """The ``end_reason`` an IdP session gets when ``event`` ends it."""
    match event:
        case SessionExpired():
            return f"expired_{event.reason}"
        case SessionBindingViolation():
            return "binding_violation"
        case LogoutProvider():
            return "provider_logout"
        case SessionTerminateOthers():
            return "terminated_at_login"
        case UserRevokeAll():
            return "revoked_all"
        case SessionRevoke():
            return "revoked"
        case _:
            return "logout"


def end(
    conn: Connection, owned: Sequence[Owned], now: datetime
) -> tuple[list[Ended], list[AuditEntry]]:
    """End what every owned logout names; returns them ended, and their audit entries.

    A provider's logout (``logout.provider``) ends only that provider's session unless the
    event or the provider asks for a full logout (the event's ``provider_only`` overrules
    the provider's ``full_logout_on_rp_initiated``); every other logout ends IdP sessions
    and all their provider sessions.
    """
    logouts = [o.logout for o in owned]
    ending, provider_only = _split(conn, logouts)
    _end_idp_sessions(conn, ending, now)
    targets = _targets(conn, ending, provider_only)
    entries: list[AuditEntry] = []
    missing = [lo for lo in logouts if not targets[lo.event_id] and lo.session_id is not None]
    known_users = _not_found(conn, missing, entries) if missing else {}
    sessions_ended: dict[str, int] = {}
    for logout in ending:
        reason = end_reason(logout.event)
        found = targets[logout.event_id]
        sessions_ended[logout.event_id] = len(found)
        entries += [session_ended(logout.event, sid, uid, reason) for sid, uid in found]
    attach(conn, [target for lo in ending for target in targets[lo.event_id]], now)
    _end_provider_sessions(conn, ending, provider_only, targets, now)
    ended = []
    for o in owned:
        found = targets[o.logout.event_id]
        user_id = (
            getattr(o.logout.event, "user_id", None)
            or (found[0][1] if found else None)
            or known_users.get(o.logout.event_id)
        )
        count = sessions_ended.get(o.logout.event_id, 0)
        ended.append(Ended(o, tuple(found), count, user_id))
    return ended, entries


def _split(conn: Connection, logouts: Sequence[Logout]) -> tuple[list[Logout], list[Logout]]:
    """The logouts that end IdP sessions, and those that end one provider's session only."""
    providers = sorted(
        {lo.event.provider for lo in logouts if isinstance(lo.event, LogoutProvider)}
    )
    full: dict[str, bool] = {}
    if providers:
        rows = conn.execute(sql.FULL_LOGOUT_PROVIDERS, {"b_ids": providers})
        full = {name: bool(f) for name, f in rows}
    ending: list[Logout] = []
    provider_only: list[Logout] = []
    for logout in logouts:
        event = logout.event
        if isinstance(event, LogoutProvider) and (
            event.provider_only or not (event.full_logout or full.get(event.provider, False))
        ):
            provider_only.append(logout)
        else:
            ending.append(logout)
    return ending, provider_only


def _end_idp_sessions(conn: Connection, ending: Sequence[Logout], now: datetime) -> None:
    """One executemany per kind: a session, all of a user's, all of a user's but one."""
    singles: list[dict[str, Any]] = []
    owned: list[dict[str, Any]] = []
    all_of_user: list[dict[str, Any]] = []
    others_of_user: list[dict[str, Any]] = []
    for logout in ending:
        event = logout.event
        params = {"b_now": now, "b_reason": end_reason(event), "b_event": logout.event_id}
        match event:
            case UserRevokeAll():
                all_of_user.append({**params, "b_user": event.user_id})
            case SessionTerminateOthers():
                others_of_user.append(
                    {**params, "b_user": event.user_id, "b_keep": event.keep_session_id}
                )
            case SessionRevoke(user_id=str() as user):
                owned.append({**params, "b_session": logout.session_id, "b_user": user})
            case _:
                singles.append({**params, "b_session": logout.session_id})
    for statement, rows in (
        (sql.END_SESSION, singles),
        (sql.END_OWNED_SESSION, owned),
        (sql.END_USER_SESSIONS, all_of_user),
        (sql.END_USER_SESSIONS_BUT_ONE, others_of_user),
    ):
        if rows:
            conn.execute(statement, rows)


def _targets(
    conn: Connection, ending: Sequence[Logout], provider_only: Sequence[Logout]
) -> _Targets:
    """The sessions each ending logout ended; the open session each provider-only names."""
    targets: _Targets = defaultdict(list)
    if ending:
        ended_by = {"b_ids": [lo.event_id for lo in ending]}
        for session_id, user_id, event_id in conn.execute(sql.SESSIONS_ENDED_BY, ended_by):
            targets[event_id].append((session_id, user_id))
    if provider_only:
        wanted = sorted({lo.session_id for lo in provider_only if lo.session_id is not None})
        open_sessions = {
            str(session_id): str(user_id)
            for session_id, user_id in conn.execute(sql.OPEN_IDP_SESSIONS, {"b_ids": wanted})
        }
        for logout in provider_only:
            session_id = logout.session_id
            if session_id is not None and session_id in open_sessions:
                targets[logout.event_id].append((session_id, open_sessions[session_id]))
    return targets


def _end_provider_sessions(
    conn: Connection,
    ending: Sequence[Logout],
    provider_only: Sequence[Logout],
    targets: _Targets,
    now: datetime,
) -> None:
    """All provider sessions of each ended session, or the one provider's."""
    every = [
        {"b_now": now, "b_event": lo.event_id, "b_session": session_id}
        for lo in ending
        for session_id, _ in targets[lo.event_id]
    ]
    one = [
        {"b_now": now, "b_event": lo.event_id, "b_session": session_id, "b_provider": provider}
        for lo in provider_only
        for provider in [getattr(lo.event, "provider", None)]
        for session_id, _ in targets[lo.event_id]
    ]
    if every:
        conn.execute(sql.END_PROVIDER_SESSIONS, every)
    if one:
        conn.execute(sql.END_ONE_PROVIDER_SESSION, one)


def _not_found(
    conn: Connection, logouts: Sequence[Logout], entries: list[AuditEntry]
) -> dict[str, str]:
    """Audit each named session that was unknown, already ended or (``session.revoke`` with
    a ``user_id``) another user's; returns the users of those known, by event."""
    wanted = sorted({str(lo.session_id) for lo in logouts})
    found = conn.execute(sql.IDP_SESSIONS_BY_ID, {"b_ids": wanted})
    rows = {row.session_id: row for row in found}
    users: dict[str, str] = {}
    for logout in logouts:
        session_id = str(logout.session_id)
        row = rows.get(session_id)
        user_id = None if row is None else row.user_id
        named = getattr(logout.event, "user_id", None)
        open_elsewhere = row is not None and row.ended_at is None and named != user_id
        other = named if open_elsewhere else None
        ended = None if row is None or other else (row.ended_at, row.end_reason)
        if user_id is not None:
            users[logout.event_id] = user_id
        entries.append(
            session_not_found(logout.event_id, session_id, user_id, ended, named_user=other)
        )
    return users
