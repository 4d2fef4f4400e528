"""The logout engine's SQL, by name (SQLAlchemy Core, no ORM on the hot path).

Every statement is built once: executed with parameters named ``b_*`` (an ``IN`` list is one
expanding parameter, ``b_ids``), so a call costs no statement building nor cache-key
generation (~0.2 ms each for the joins). Inserts that ignore conflicts depend on the
dialect and are built once per dialect (:class:`~orchestrator.store.sql.InsertIgnoring`).
Nothing here opens a transaction: each stage runs these in the one its engine opened.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Text,
    Update,
    bindparam,
    cast,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.sql import ColumnElement

from orchestrator.store.models import OPEN_DELIVERY_STATUSES, EventStatus
from orchestrator.store.sql import InsertIgnoring
from orchestrator.store.tables import (
    DELIVERIES,
    EVENTS,
    IDP_SESSIONS,
    PROVIDER_SESSIONS,
    PROVIDERS,
)

__all__ = [
    "CLAIMED_DELIVERIES",
    "CLAIMED_DELIVERY_COLUMNS",
    "CLAIM_DUE_DELIVERIES",
    "COMPLETE_EVENTS",
    "COUNT_DELIVERIES",
    "ENDED_PROVIDER_SESSIONS",
    "END_ONE_PROVIDER_SESSION",
    "END_OWNED_SESSION",
    "END_PROVIDER_SESSIONS",
    "END_SESSION",
    "END_USER_SESSIONS",
    "END_USER_SESSIONS_BUT_ONE",
    "EVENTS_BY_ID",
    "EVENT_LEASE",
    "EVENT_PAYLOADS",
    "FULL_LOGOUT_PROVIDERS",
    "HELD_ATTEMPTS",
    "IDP_SESSIONS_BY_ID",
    "INSERT_DELIVERIES",
    "INSERT_EVENTS",
    "NOT_DUE_DELIVERIES",
    "OPEN_DELIVERIES_OF",
    "OPEN_IDP_SESSIONS",
    "OUTCOME_COLUMNS",
    "PROVIDER_PROTOCOL",
    "PROVIDER_SESSION_COLUMNS",
    "RECORD_OUTCOME",
    "RECORD_OUTCOMES",
    "SESSIONS_ENDED_BY",
    "TAKE_EVENTS",
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
#: Ends one IdP session (``b_session``) only when it is ``b_user``'s.
END_OWNED_SESSION = _end_idp_sessions(
    IDP_SESSIONS.c.session_id == bindparam("b_session"),
    IDP_SESSIONS.c.user_id == bindparam("b_user"),
)
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

#: What recording an attempt's outcome sets, defined once for both statements below: each
#: column of ``deliveries``, the parameter that gives it, and that parameter's SQL type.
OUTCOME_COLUMNS: dict[str, tuple[str, str]] = {
    "status": ("b_status", "varchar"),
    "last_error": ("b_error", "text"),
    "last_status_code": ("b_code", "integer"),
    "updated_at": ("b_now", "timestamptz"),
    "next_attempt_at": ("b_next", "timestamptz"),
    "completed_at": ("b_done", "timestamptz"),
}

#: Records an attempt's outcome. Fenced: only the attempt that holds the delivery
#: (``b_attempt``) records, and only while the delivery is open.
RECORD_OUTCOME = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id == bindparam("b_id"),
        DELIVERIES.c.attempts == bindparam("b_attempt"),
        or_(*(DELIVERIES.c.status == status for status in _OPEN)),  # executemany: no IN
    )
    .values({column: bindparam(param) for column, (param, _) in OUTCOME_COLUMNS.items()})
)


def _record_outcomes() -> Any:
    """:data:`RECORD_OUTCOMES`, its ``SET`` and record type from :data:`OUTCOME_COLUMNS`
    (only those constant names go into the text; the rows are bound)."""
    assigned = ", ".join(f"{column} = r.{param}" for column, (param, _) in OUTCOME_COLUMNS.items())
    typed = ", ".join(f"{param} {kind}" for param, kind in OUTCOME_COLUMNS.values())
    return (
        text(
            f"UPDATE deliveries AS d SET {assigned} "  # noqa: S608
            "FROM json_to_recordset(CAST(:b_rows AS json)) "
            f"AS r(b_id varchar, b_attempt integer, {typed}) "
            "WHERE d.id = r.b_id AND d.attempts = r.b_attempt "
            "AND d.status = ANY(CAST(:b_open AS varchar[])) "
            "AND d.id IN (SELECT id FROM deliveries WHERE id = ANY(CAST(:b_ids AS varchar[])) "
            "ORDER BY id FOR UPDATE) "
            "RETURNING d.id, d.attempts"
        )
        .bindparams(bindparam("b_rows"), bindparam("b_ids"), bindparam("b_open", value=_OPEN))
        .columns(DELIVERIES.c.id, DELIVERIES.c.attempts)
    )


#: PostgreSQL: :data:`RECORD_OUTCOME` for every attempt at once: ``b_rows`` its parameter
#: sets as one JSON array (:func:`~orchestrator.store.sql.json_rows`), ``b_ids`` their ids.
#: One statement of the same text for any number of rows (an executemany sends one per row);
#: the rows are locked in id order first, as every writer of deliveries locks them (no
#: deadlock). Returns ``(id, attempts)`` of each attempt recorded: the others were superseded.
RECORD_OUTCOMES = _record_outcomes()

#: What a provider session and its provider contribute to a delivery attempt (labelled).
#: The provider's settings come as their JSON text (``settings_json``): a process reads them
#: once per provider and version (``provider_updated_at``), not once per delivery.
PROVIDER_SESSION_COLUMNS = (
    PROVIDER_SESSIONS.c.id.label("ps_id"),
    PROVIDER_SESSIONS.c.session_id,
    PROVIDER_SESSIONS.c.provider,
    PROVIDER_SESSIONS.c.identifiers,
    PROVIDERS.c.protocol,
    PROVIDERS.c.enabled,
    PROVIDERS.c.full_logout_on_rp_initiated,
    cast(PROVIDERS.c.settings, Text).label("settings_json"),
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


def _ids() -> Any:
    return bindparam("b_ids", expanding=True)


# -- events ----------------------------------------------------------------------------

#: The events rows of ``b_ids``.
EVENTS_BY_ID = select(EVENTS).where(EVENTS.c.event_id.in_(_ids()))
#: Lease the unfinished events among ``b_ids`` whose lease ran out (or none runs) until
#: ``b_until``; returns the ids taken.
TAKE_EVENTS = (
    update(EVENTS)
    .where(
        EVENTS.c.event_id.in_(_ids()),
        EVENTS.c.status != EventStatus.COMPLETED,
        or_(EVENTS.c.lease_until.is_(None), EVENTS.c.lease_until <= bindparam("b_now")),
    )
    .values(attempted_at=bindparam("b_now"), lease_until=bindparam("b_until"))
    .returning(EVENTS.c.event_id)
)
#: Mark the events ``b_ids`` completed at ``b_now`` and give up their leases.
COMPLETE_EVENTS = (
    update(EVENTS)
    .where(EVENTS.c.event_id.in_(_ids()))
    .values(status=EventStatus.COMPLETED, completed_at=bindparam("b_now"), lease_until=None)
)
#: When the lease on ``b_event`` ends (NULL for none).
EVENT_LEASE = select(EVENTS.c.lease_until).where(EVENTS.c.event_id == bindparam("b_event"))
#: ``(event_id, payload)`` of ``b_ids``.
EVENT_PAYLOADS = select(EVENTS.c.event_id, EVENTS.c.payload).where(EVENTS.c.event_id.in_(_ids()))

# -- sessions --------------------------------------------------------------------------

#: ``(name, full_logout_on_rp_initiated)`` of the providers ``b_ids``.
FULL_LOGOUT_PROVIDERS = select(PROVIDERS.c.name, PROVIDERS.c.full_logout_on_rp_initiated).where(
    PROVIDERS.c.name.in_(_ids())
)
#: The protocol of the provider ``b_provider``.
PROVIDER_PROTOCOL = select(PROVIDERS.c.protocol).where(PROVIDERS.c.name == bindparam("b_provider"))
#: ``(session_id, user_id, ended_by_event)`` of the IdP sessions the events ``b_ids`` ended.
SESSIONS_ENDED_BY = (
    select(IDP_SESSIONS.c.session_id, IDP_SESSIONS.c.user_id, IDP_SESSIONS.c.ended_by_event)
    .where(IDP_SESSIONS.c.ended_by_event.in_(_ids()))
    .order_by(IDP_SESSIONS.c.session_id)
)
#: ``(session_id, user_id)`` of the open IdP sessions among ``b_ids``.
OPEN_IDP_SESSIONS = select(IDP_SESSIONS.c.session_id, IDP_SESSIONS.c.user_id).where(
    IDP_SESSIONS.c.session_id.in_(_ids()), IDP_SESSIONS.c.ended_at.is_(None)
)
#: The IdP sessions rows of ``b_ids``, open or ended.
IDP_SESSIONS_BY_ID = select(IDP_SESSIONS).where(IDP_SESSIONS.c.session_id.in_(_ids()))
#: The provider sessions the events ``b_ids`` ended, with their providers and users.
ENDED_PROVIDER_SESSIONS = (
    select(*PROVIDER_SESSION_COLUMNS, PROVIDER_SESSIONS.c.ended_by_event, IDP_SESSIONS.c.user_id)
    .join(PROVIDERS, PROVIDERS.c.name == PROVIDER_SESSIONS.c.provider)
    .join(IDP_SESSIONS, IDP_SESSIONS.c.session_id == PROVIDER_SESSIONS.c.session_id)
    .where(PROVIDER_SESSIONS.c.ended_by_event.in_(_ids()))
    .order_by(PROVIDER_SESSIONS.c.id)
)

# -- deliveries ------------------------------------------------------------------------

#: ``(id, event_id)`` of the open deliveries of the events ``b_ids``.
OPEN_DELIVERIES_OF = select(DELIVERIES.c.id, DELIVERIES.c.event_id).where(
    DELIVERIES.c.event_id.in_(_ids()), DELIVERIES.c.status.in_(_OPEN)
)
#: Lease the open deliveries among ``b_ids`` due at ``b_now`` for their next attempt, until
#: ``b_until``; returns their ids. Locked in id order, as every writer of deliveries does
#: (no deadlock); a delivery another transaction is recording or renewing right now is its
#: holder's (skipped).
CLAIM_DUE_DELIVERIES = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id.in_(
            select(DELIVERIES.c.id)
            .where(
                DELIVERIES.c.id.in_(_ids()),
                DELIVERIES.c.status.in_(_OPEN),
                or_(
                    DELIVERIES.c.next_attempt_at.is_(None),
                    DELIVERIES.c.next_attempt_at <= bindparam("b_now"),
                ),
            )
            .order_by(DELIVERIES.c.id)
            .with_for_update(skip_locked=True)
        )
    )
    .values(
        attempts=DELIVERIES.c.attempts + 1,
        next_attempt_at=bindparam("b_until"),
        updated_at=bindparam("b_now"),
    )
    .returning(DELIVERIES.c.id)
)
#: :data:`CLAIMED_DELIVERY_COLUMNS` of the deliveries ``b_ids``.
CLAIMED_DELIVERIES = (
    select(*CLAIMED_DELIVERY_COLUMNS)
    .join(PROVIDER_SESSIONS, PROVIDER_SESSIONS.c.id == DELIVERIES.c.provider_session_id)
    .join(PROVIDERS, PROVIDERS.c.name == DELIVERIES.c.provider)
    .join(EVENTS, EVENTS.c.event_id == DELIVERIES.c.event_id)
    .where(DELIVERIES.c.id.in_(_ids()))
)
#: ``(id, next_attempt_at)`` of the open deliveries among ``b_ids`` not due at ``b_now``.
NOT_DUE_DELIVERIES = select(DELIVERIES.c.id, DELIVERIES.c.next_attempt_at).where(
    DELIVERIES.c.id.in_(_ids()),
    DELIVERIES.c.status.in_(_OPEN),
    DELIVERIES.c.next_attempt_at > bindparam("b_now"),
)
#: ``(id, attempts)`` among the pairs ``b_attempts`` stamped at ``b_now``: those a
#: transaction that wrote at ``b_now`` recorded (an attempt's number is claimed once).
HELD_ATTEMPTS = select(DELIVERIES.c.id, DELIVERIES.c.attempts).where(
    tuple_(DELIVERIES.c.id, DELIVERIES.c.attempts).in_(bindparam("b_attempts", expanding=True)),
    DELIVERIES.c.updated_at == bindparam("b_now"),
)
#: ``(event_id, status, user_id, count)`` of the deliveries of the events ``b_ids``.
COUNT_DELIVERIES = (
    select(
        DELIVERIES.c.event_id,
        DELIVERIES.c.status,
        func.max(DELIVERIES.c.user_id),
        func.count(),
    )
    .where(DELIVERIES.c.event_id.in_(_ids()))
    .group_by(DELIVERIES.c.event_id, DELIVERIES.c.status)
)


# -- inserts that ignore a conflict ---------------------------------------------------

#: Insert events rows unless their ``event_id`` exists; returns the ids inserted.
INSERT_EVENTS = InsertIgnoring(EVENTS, ("event_id",), ("event_id",))
#: Insert deliveries unless one exists per (event, provider session); returns the keys of
#: those inserted.
INSERT_DELIVERIES = InsertIgnoring(
    DELIVERIES, ("event_id", "provider_session_id"), ("event_id", "provider_session_id")
)
