"""The logout engine's SQL, by name (SQLAlchemy Core, no ORM on the hot path).

Constants are prepared once and executed with one parameter set per row (executemany);
functions build the statements whose ``IN`` lists vary. Nothing here opens a transaction:
each stage runs these in the one its engine opened.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Update,
    bindparam,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql import ColumnElement

from orchestrator.store.models import OPEN_DELIVERY_STATUSES, EventStatus
from orchestrator.store.sql import insert_ignore
from orchestrator.store.tables import (
    DELIVERIES,
    EVENTS,
    IDP_SESSIONS,
    PROVIDER_SESSIONS,
    PROVIDERS,
)

__all__ = [
    "CLAIMED_DELIVERY_COLUMNS",
    "END_ONE_PROVIDER_SESSION",
    "END_PROVIDER_SESSIONS",
    "END_SESSION",
    "END_USER_SESSIONS",
    "END_USER_SESSIONS_BUT_ONE",
    "PROVIDER_SESSION_COLUMNS",
    "RECORD_OUTCOME",
    "claim_due_deliveries",
    "claimed_deliveries",
    "complete_events",
    "count_deliveries",
    "ended_provider_sessions",
    "event_lease",
    "event_payloads",
    "events",
    "full_logout_providers",
    "held_attempts",
    "idp_sessions",
    "insert_deliveries",
    "insert_events",
    "not_due_deliveries",
    "open_deliveries_of",
    "open_idp_sessions",
    "provider_protocol",
    "sessions_ended_by",
    "take_events",
]

_OPEN = [status.value for status in sorted(OPEN_DELIVERY_STATUSES)]


def _end_idp_sessions(*where: ColumnElement[bool]) -> Update:
    return (
        update(IDP_SESSIONS)
        .where(*where, IDP_SESSIONS.c.ended_at.is_(None))
        .values(
            ended_at=bindparam("b_now"),
            end_reason=bindparam("b_reason"),
            ended_by_event=bindparam("b_event"),
        )
    )


def _end_provider_sessions(*where: ColumnElement[bool]) -> Update:
    table = PROVIDER_SESSIONS
    return (
        update(table)
        .where(table.c.session_id == bindparam("b_session"), *where, table.c.ended_at.is_(None))
        .values(ended_at=bindparam("b_now"), ended_by_event=bindparam("b_event"))
    )


#: Ends one IdP session (``b_session``), marked with ``b_event``, ``b_reason`` at ``b_now``.
END_SESSION = _end_idp_sessions(IDP_SESSIONS.c.session_id == bindparam("b_session"))
#: Ends every open session of ``b_user``.
END_USER_SESSIONS = _end_idp_sessions(IDP_SESSIONS.c.user_id == bindparam("b_user"))
#: Ends every open session of ``b_user`` but ``b_keep``.
END_USER_SESSIONS_BUT_ONE = _end_idp_sessions(
    IDP_SESSIONS.c.user_id == bindparam("b_user"),
    IDP_SESSIONS.c.session_id != bindparam("b_keep"),
)
#: Ends every open provider session of the IdP session ``b_session``.
END_PROVIDER_SESSIONS = _end_provider_sessions()
#: Ends the open provider session of ``b_session`` at provider ``b_provider``.
END_ONE_PROVIDER_SESSION = _end_provider_sessions(
    PROVIDER_SESSIONS.c.provider == bindparam("b_provider")
)

#: Records an attempt's outcome. Fenced: only the attempt that holds the delivery
#: (``b_attempt``) records, and only while the delivery is open.
RECORD_OUTCOME = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id == bindparam("b_id"),
        DELIVERIES.c.attempts == bindparam("b_attempt"),
        or_(*(DELIVERIES.c.status == status for status in _OPEN)),  # executemany: no IN
    )
    .values(
        status=bindparam("b_status"),
        last_error=bindparam("b_error"),
        last_status_code=bindparam("b_code"),
        updated_at=bindparam("b_now"),
        next_attempt_at=bindparam("b_next"),
        completed_at=bindparam("b_done"),
    )
)

#: What a provider session and its provider contribute to a delivery attempt (labelled).
PROVIDER_SESSION_COLUMNS = (
    PROVIDER_SESSIONS.c.id.label("ps_id"),
    PROVIDER_SESSIONS.c.session_id,
    PROVIDER_SESSIONS.c.provider,
    PROVIDER_SESSIONS.c.sid,
    PROVIDER_SESSIONS.c.sub,
    PROVIDER_SESSIONS.c.name_id,
    PROVIDER_SESSIONS.c.name_id_format,
    PROVIDER_SESSIONS.c.name_qualifier,
    PROVIDER_SESSIONS.c.sp_name_qualifier,
    PROVIDER_SESSIONS.c.session_index,
    PROVIDERS.c.protocol,
    PROVIDERS.c.enabled,
    PROVIDERS.c.full_logout_on_rp_initiated,
    PROVIDERS.c.settings,
    PROVIDERS.c.updated_at.label("provider_updated_at"),
)

#: A claimed delivery, its event, and :data:`PROVIDER_SESSION_COLUMNS`.
CLAIMED_DELIVERY_COLUMNS = (
    DELIVERIES.c.id.label("delivery_id"),
    DELIVERIES.c.created_at,
    DELIVERIES.c.attempts,
    DELIVERIES.c.user_id,
    EVENTS.c.event_id,
    EVENTS.c.type.label("event_type"),
    EVENTS.c.payload,
    *PROVIDER_SESSION_COLUMNS,
)


# -- events ----------------------------------------------------------------------------


def insert_events(conn: Connection) -> Any:
    """Insert events rows unless their ``event_id`` exists; returns the ids inserted."""
    return insert_ignore(conn, EVENTS, ["event_id"]).returning(EVENTS.c.event_id)


def events(event_ids: Collection[str]) -> Select[Any]:
    """The events rows of ``event_ids``."""
    return select(EVENTS).where(EVENTS.c.event_id.in_(list(event_ids)))


def take_events(event_ids: Collection[str], now: datetime, until: datetime) -> Any:
    """Lease the unfinished events among ``event_ids`` whose lease ran out (or none runs);
    returns the ids taken."""
    return (
        update(EVENTS)
        .where(
            EVENTS.c.event_id.in_(list(event_ids)),
            EVENTS.c.status != EventStatus.COMPLETED,
            or_(EVENTS.c.lease_until.is_(None), EVENTS.c.lease_until <= now),
        )
        .values(attempted_at=now, lease_until=until)
        .returning(EVENTS.c.event_id)
    )


def complete_events(event_ids: Collection[str], now: datetime) -> Update:
    """Mark events completed and give up their leases."""
    return (
        update(EVENTS)
        .where(EVENTS.c.event_id.in_(list(event_ids)))
        .values(status=EventStatus.COMPLETED, completed_at=now, lease_until=None)
    )


def event_lease(event_id: str) -> Select[Any]:
    """When the lease on ``event_id`` ends (NULL for none)."""
    return select(EVENTS.c.lease_until).where(EVENTS.c.event_id == event_id)


def event_payloads(event_ids: Collection[str]) -> Select[Any]:
    """``(event_id, payload)`` of ``event_ids``."""
    return select(EVENTS.c.event_id, EVENTS.c.payload).where(EVENTS.c.event_id.in_(list(event_ids)))


# -- sessions --------------------------------------------------------------------------


def full_logout_providers(providers: Collection[str]) -> Select[Any]:
    """``(name, full_logout_on_rp_initiated)`` of ``providers``."""
    return select(PROVIDERS.c.name, PROVIDERS.c.full_logout_on_rp_initiated).where(
        PROVIDERS.c.name.in_(list(providers))
    )


def provider_protocol(provider: str) -> Select[Any]:
    """The protocol of one provider."""
    return select(PROVIDERS.c.protocol).where(PROVIDERS.c.name == provider)


def sessions_ended_by(event_ids: Collection[str]) -> Select[Any]:
    """``(session_id, user_id, ended_by_event)`` of the IdP sessions these events ended."""
    return (
        select(IDP_SESSIONS.c.session_id, IDP_SESSIONS.c.user_id, IDP_SESSIONS.c.ended_by_event)
        .where(IDP_SESSIONS.c.ended_by_event.in_(list(event_ids)))
        .order_by(IDP_SESSIONS.c.session_id)
    )


def open_idp_sessions(session_ids: Collection[str]) -> Select[Any]:
    """``(session_id, user_id)`` of the open IdP sessions among ``session_ids``."""
    return select(IDP_SESSIONS.c.session_id, IDP_SESSIONS.c.user_id).where(
        IDP_SESSIONS.c.session_id.in_(list(session_ids)), IDP_SESSIONS.c.ended_at.is_(None)
    )


def idp_sessions(session_ids: Collection[str]) -> Select[Any]:
    """The IdP sessions rows of ``session_ids``, open or ended."""
    return select(IDP_SESSIONS).where(IDP_SESSIONS.c.session_id.in_(list(session_ids)))


def ended_provider_sessions(event_ids: Collection[str]) -> Select[Any]:
    """The provider sessions these events ended, with their providers and users."""
    return (
        select(
            *PROVIDER_SESSION_COLUMNS, PROVIDER_SESSIONS.c.ended_by_event, IDP_SESSIONS.c.user_id
        )
        .join(PROVIDERS, PROVIDERS.c.name == PROVIDER_SESSIONS.c.provider)
        .join(IDP_SESSIONS, IDP_SESSIONS.c.session_id == PROVIDER_SESSIONS.c.session_id)
        .where(PROVIDER_SESSIONS.c.ended_by_event.in_(list(event_ids)))
        .order_by(PROVIDER_SESSIONS.c.id)
    )


# -- deliveries ------------------------------------------------------------------------


def insert_deliveries(conn: Connection) -> Any:
    """Insert deliveries unless one exists per (event, provider session); returns the keys
    of those inserted."""
    return insert_ignore(conn, DELIVERIES, ["event_id", "provider_session_id"]).returning(
        DELIVERIES.c.event_id, DELIVERIES.c.provider_session_id
    )


def open_deliveries_of(event_ids: Collection[str]) -> Select[Any]:
    """``(id, event_id)`` of the open deliveries of ``event_ids``."""
    return select(DELIVERIES.c.id, DELIVERIES.c.event_id).where(
        DELIVERIES.c.event_id.in_(list(event_ids)), DELIVERIES.c.status.in_(_OPEN)
    )


def claim_due_deliveries(delivery_ids: Collection[str], now: datetime, until: datetime) -> Any:
    """Lease the open, due deliveries among ``delivery_ids`` for their next attempt;
    returns their ids.

    Locked in id order, as every writer of deliveries does (no deadlock); a delivery another
    transaction is recording or renewing right now is its holder's (skipped).
    """
    due = (
        select(DELIVERIES.c.id)
        .where(
            DELIVERIES.c.id.in_(list(delivery_ids)),
            DELIVERIES.c.status.in_(_OPEN),
            or_(DELIVERIES.c.next_attempt_at.is_(None), DELIVERIES.c.next_attempt_at <= now),
        )
        .order_by(DELIVERIES.c.id)
        .with_for_update(skip_locked=True)
    )
    return (
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(due))
        .values(attempts=DELIVERIES.c.attempts + 1, next_attempt_at=until, updated_at=now)
        .returning(DELIVERIES.c.id)
    )


def claimed_deliveries(delivery_ids: Sequence[str]) -> Select[Any]:
    """:data:`CLAIMED_DELIVERY_COLUMNS` of ``delivery_ids``."""
    return (
        select(*CLAIMED_DELIVERY_COLUMNS)
        .join(PROVIDER_SESSIONS, PROVIDER_SESSIONS.c.id == DELIVERIES.c.provider_session_id)
        .join(PROVIDERS, PROVIDERS.c.name == DELIVERIES.c.provider)
        .join(EVENTS, EVENTS.c.event_id == DELIVERIES.c.event_id)
        .where(DELIVERIES.c.id.in_(list(delivery_ids)))
    )


def not_due_deliveries(delivery_ids: Collection[str], now: datetime) -> Select[Any]:
    """``(id, next_attempt_at)`` of the open deliveries among ``delivery_ids`` not due yet."""
    return select(DELIVERIES.c.id, DELIVERIES.c.next_attempt_at).where(
        DELIVERIES.c.id.in_(list(delivery_ids)),
        DELIVERIES.c.status.in_(_OPEN),
        DELIVERIES.c.next_attempt_at > now,
    )


def held_attempts(attempts: Collection[tuple[str, int]], now: datetime) -> Select[Any]:
    """``(id, attempts)`` among ``attempts`` stamped at ``now``: those a transaction that
    wrote at ``now`` recorded (an attempt's number is claimed once)."""
    return select(DELIVERIES.c.id, DELIVERIES.c.attempts).where(
        tuple_(DELIVERIES.c.id, DELIVERIES.c.attempts).in_(list(attempts)),
        DELIVERIES.c.updated_at == now,
    )


def count_deliveries(event_ids: Collection[str]) -> Select[Any]:
    """``(event_id, status, user_id, count)`` of the deliveries of ``event_ids``."""
    return (
        select(
            DELIVERIES.c.event_id,
            DELIVERIES.c.status,
            func.max(DELIVERIES.c.user_id),
            func.count(),
        )
        .where(DELIVERIES.c.event_id.in_(list(event_ids)))
        .group_by(DELIVERIES.c.event_id, DELIVERIES.c.status)
    )
