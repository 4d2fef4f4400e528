"""Handling one event: validate, dedupe, end sessions, record deliveries, fan out, roll up.

Every step is idempotent, so a redelivered message (a worker died mid-event) resumes where
the last one stopped and never doubles a logout or an audit record:

1. claim the ``event_id`` (a re-published event only leaves ``event.duplicate``);
2. in one transaction, end the IdP sessions and provider sessions the event names (marked
   with the event's id, so a replay finds them again) and record one delivery each;
3. fan out the open deliveries;
4. write the ``logout.completed`` roll-up and mark the event completed.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import structlog
from sqlalchemy import Connection, Table, and_, func, select, update
from sqlalchemy.sql import ColumnElement

from orchestrator.audit import AuditEntry, emit, write_audit
from orchestrator.errors import InputError
from orchestrator.fanout import LINK_COLUMNS, FanOut, Outcome, Work, is_settled, settled_entry
from orchestrator.store import (
    Delivery,
    DeliveryStatus,
    EventRecord,
    EventStatus,
    IdpSession,
    Provider,
    ProviderSession,
    RejectedEvent,
    SessionFactory,
    utcnow,
)
from orchestrator.store.sql import engine_of, insert_ignore
from orchestrator.validation import parse_event
from schemas import (
    BINDING_LOGOUT_REASON,
    AuditType,
    Event,
    LogoutProvider,
    LogoutUser,
    SessionBindingViolation,
    SessionExpired,
    SessionRevoke,
    SessionTerminateOthers,
    UserRevokeAll,
)

__all__ = ["EventProcessor", "HandleResult", "end_reason"]

_log = structlog.get_logger("logout.pipeline")


class HandleResult(StrEnum):
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    COMPLETED = "completed"


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


@dataclass(frozen=True, slots=True)
class _Scope:
    """Which sessions an event ends."""

    sessions: ColumnElement[bool]  # a WHERE clause over idp_sessions
    end_idp_sessions: bool
    only_provider: str | None
    single_session: str | None


@dataclass(frozen=True, slots=True)
class _Begun:
    """What the first transaction of an event established."""

    works: list[Work]
    reopened: list[str]
    sessions_ended: int
    user_id: str | None
    resumed: bool


_EVENTS = cast(Table, EventRecord.__table__)
_SESSIONS = cast(Table, IdpSession.__table__)
_LINKS = cast(Table, ProviderSession.__table__)
_DELIVERIES = cast(Table, Delivery.__table__)
_REJECTED = cast(Table, RejectedEvent.__table__)


class EventProcessor:
    """Handles events; safe to call from many threads and processes at once."""

    def __init__(self, sessions: SessionFactory, fanout: FanOut) -> None:
        self._engine = engine_of(sessions)
        self._fanout = fanout

    def handle(self, raw: Any, message_id: str) -> HandleResult:
        """Handle one event as published (a JSON object); see the module docstring."""
        try:
            event = parse_event(raw, "event")
        except InputError as exc:
            self._reject(raw, message_id, exc)
            return HandleResult.REJECTED
        event_id = str(event.event_id)
        with structlog.contextvars.bound_contextvars(event_id=event_id, event_type=event.type):
            begun = self._begin(event, message_id)
            if begun is None:
                return HandleResult.DUPLICATE
            works = begun.works + self._fanout.claim(begun.reopened)
            outcomes = self._fanout.attempt(works)
            self._finish(event, begun, works, outcomes)
        return HandleResult.COMPLETED

    # -- rejection ---------------------------------------------------------------------

    def _reject(self, raw: Any, message_id: str, exc: InputError) -> None:
        problems = [str(p) for p in exc.problems]
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        event_id = str(event_id)[:64] if event_id is not None else None
        payload = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        with self._engine.begin() as conn:
            conn.execute(
                insert_ignore(conn, _REJECTED, ["message_id"]).values(
                    message_id=message_id,
                    event_id=event_id,
                    received_at=utcnow(),
                    payload=payload,
                    problems=problems,
                )
            )
            records = write_audit(
                conn,
                [
                    AuditEntry(
                        key=f"event.rejected:{message_id}",
                        type=AuditType.EVENT_REJECTED,
                        outcome="rejected",
                        event_id=event_id,
                        detail={"message_id": message_id, "problems": problems},
                    )
                ],
            )
        emit(records)
        _log.warning("event rejected", message_id=message_id, problems=problems)

    # -- transaction 1: claim the event, end sessions, record claimed deliveries ---------

    def _claim(self, conn: Connection, event: Event, message_id: str, now: datetime) -> Any:
        """The event's row when this message owns it, else None (after auditing a duplicate).

        Owner: the first message with this ``event_id``, or that same message redelivered
        before the event completed (a worker died: resume).
        """
        event_id = str(event.event_id)
        inserted = conn.scalar(
            insert_ignore(conn, _EVENTS, ["event_id"])
            .values(
                event_id=event_id,
                type=event.type,
                status=EventStatus.PROCESSING,
                message_id=message_id,
                payload=event.model_dump(mode="json"),
                received_at=now,
                attempted_at=now,
            )
            .returning(_EVENTS.c.event_id)
        )
        if inserted is not None:
            return True
        first = conn.execute(select(_EVENTS).where(_EVENTS.c.event_id == event_id)).one()
        if first.message_id == message_id and first.status != EventStatus.COMPLETED:
            conn.execute(
                update(_EVENTS).where(_EVENTS.c.event_id == event_id).values(attempted_at=now)
            )
            return False
        return first

    def _begin(self, event: Event, message_id: str) -> _Begun | None:
        now = utcnow()
        reason = end_reason(event)
        with self._engine.begin() as conn:
            claim = self._claim(conn, event, message_id, now)
            if claim is not True and claim is not False:
                records = write_audit(conn, [_duplicate(event, claim, message_id)], at=now)
                owned = None
            else:
                entries = [_received(event, message_id)] if claim is True else []
                owned = self._end_sessions(conn, event, now, reason, entries, resumed=not claim)
                records = write_audit(conn, entries, at=now)
        emit(records)
        return owned

    def _scope(self, conn: Connection, event: Event) -> _Scope:
        match event:
            case UserRevokeAll():
                return _Scope(_SESSIONS.c.user_id == event.user_id, True, None, None)
            case SessionTerminateOthers():
                where = and_(
                    _SESSIONS.c.user_id == event.user_id,
                    _SESSIONS.c.session_id != event.keep_session_id,
                )
                return _Scope(where, True, None, None)
            case LogoutProvider():
                configured = conn.scalar(
                    select(Provider.full_logout_on_rp_initiated).where(
                        Provider.name == event.provider
                    )
                )
                full = event.full_logout or bool(configured)
                where = _SESSIONS.c.session_id == event.session_id
                return _Scope(where, full, None if full else event.provider, event.session_id)
            case _:
                where = _SESSIONS.c.session_id == event.session_id
                return _Scope(where, True, None, event.session_id)

    def _end_sessions(
        self,
        conn: Connection,
        event: Event,
        now: datetime,
        reason: str,
        entries: list[AuditEntry],
        *,
        resumed: bool,
    ) -> _Begun:
        """End what the event names and record a delivery per provider session ended.

        Ending is a conditional UPDATE (``WHERE ended_at IS NULL``), atomic on SQLite and
        PostgreSQL alike: when two events race for one session, exactly one ends it. What
        this event ended carries its id, so a replay finds the same sessions again. The
        deliveries are inserted already leased for their first attempt.
        """
        event_id = str(event.event_id)
        scope = self._scope(conn, event)
        if scope.end_idp_sessions:
            conn.execute(
                update(_SESSIONS)
                .where(scope.sessions, _SESSIONS.c.ended_at.is_(None))
                .values(ended_at=now, end_reason=reason, ended_by_event=event_id)
            )
            targets = conn.execute(
                select(_SESSIONS.c.session_id, _SESSIONS.c.user_id)
                .where(_SESSIONS.c.ended_by_event == event_id)
                .order_by(_SESSIONS.c.session_id)
            ).all()
            entries += [_session_ended(event, sid, uid, reason) for sid, uid in targets]
            ended = len(targets)
        else:
            targets = conn.execute(
                select(_SESSIONS.c.session_id, _SESSIONS.c.user_id).where(
                    scope.sessions, _SESSIONS.c.ended_at.is_(None)
                )
            ).all()
            ended = 0
        users: dict[str, str] = {sid: uid for sid, uid in targets}
        user_id = getattr(event, "user_id", None) or next(iter(users.values()), None)
        if not targets and scope.single_session is not None:
            missing = self._not_found(conn, event, scope.single_session)
            user_id = user_id or missing.user_id
            entries.append(missing)
        if not targets:
            return _Begun([], [], ended, user_id, resumed)
        owned: list[ColumnElement[bool]] = [_LINKS.c.session_id.in_(users)]
        if scope.only_provider is not None:
            owned.append(_LINKS.c.provider == scope.only_provider)
        conn.execute(
            update(_LINKS)
            .where(*owned, _LINKS.c.ended_at.is_(None))
            .values(ended_at=now, ended_by_event=event_id)
        )
        links = {
            link["ps_id"]: link
            for link in conn.execute(
                select(*LINK_COLUMNS)
                .join(Provider, Provider.name == _LINKS.c.provider)
                .where(*owned, _LINKS.c.ended_by_event == event_id)
                .order_by(_LINKS.c.id)
            ).mappings()
        }
        if not links:
            return _Begun([], [], ended, user_id, resumed)
        rows = {
            ps_id: {
                "id": str(uuid.uuid4()),
                "event_id": event_id,
                "provider_session_id": ps_id,
                "provider": link["provider"],
                "session_id": link["session_id"],
                "user_id": users[link["session_id"]],
                "status": DeliveryStatus.PENDING.value,
                "attempts": 1,
                "created_at": now,
                "updated_at": now,
                "next_attempt_at": now + self._fanout.lease,
            }
            for ps_id, link in links.items()
        }
        fresh = set(
            conn.scalars(
                insert_ignore(conn, _DELIVERIES, ["event_id", "provider_session_id"]).returning(
                    _DELIVERIES.c.provider_session_id
                ),
                list(rows.values()),
            )
        )
        works = [
            self._fanout.work(
                links[ps_id],
                delivery_id=rows[ps_id]["id"],
                created_at=now,
                attempt=1,
                user_id=rows[ps_id]["user_id"],
                event_id=event_id,
                event_type=event.type,
                initiator=event.initiator,
                now=now,
            )
            for ps_id in links
            if ps_id in fresh
        ]
        reopened: list[str] = []
        if len(fresh) < len(links):  # a replay: deliveries of an earlier attempt exist
            reopened = list(
                conn.scalars(
                    select(_DELIVERIES.c.id).where(
                        _DELIVERIES.c.event_id == event_id,
                        _DELIVERIES.c.status.in_((DeliveryStatus.PENDING, DeliveryStatus.RETRYING)),
                        _DELIVERIES.c.provider_session_id.not_in(fresh),
                    )
                )
            )
        return _Begun(works, reopened, ended, user_id, resumed or bool(reopened))

    def _not_found(self, conn: Connection, event: Event, session_id: str) -> AuditEntry:
        row = conn.execute(select(_SESSIONS).where(_SESSIONS.c.session_id == session_id)).first()
        detail: dict[str, Any] = {"reason": "unknown session"}
        if row is not None:
            detail = {
                "reason": "session already ended",
                "ended_at": row.ended_at.isoformat() if row.ended_at else None,
                "end_reason": row.end_reason,
            }
        return AuditEntry(
            key=f"session.not_found:{event.event_id}:{session_id}",
            type=AuditType.SESSION_NOT_FOUND,
            outcome="already_ended" if row is not None else "not_found",
            event_id=str(event.event_id),
            user_id=row.user_id if row is not None else None,
            session_id=session_id,
            detail=detail,
        )

    # -- transaction 2: outcomes, roll-up, completion ----------------------------------

    def _finish(
        self, event: Event, begun: _Begun, works: list[Work], outcomes: dict[str, Outcome]
    ) -> None:
        event_id = str(event.event_id)
        with self._engine.begin() as conn:
            entries, retries = self._fanout.record(conn, works, outcomes)
            if begun.resumed:
                counts = Counter(
                    {
                        DeliveryStatus(status): count
                        for status, count in conn.execute(
                            select(_DELIVERIES.c.status, func.count())
                            .where(_DELIVERIES.c.event_id == event_id)
                            .group_by(_DELIVERIES.c.status)
                        )
                    }
                )
            else:  # every delivery of the event was just attempted here
                counts = Counter(outcome.status for outcome in outcomes.values())
            entries.append(_completed(event, begun, counts))
            settled_now = not begun.resumed and is_settled(counts)
            if settled_now:
                session_id = getattr(event, "session_id", None)
                entries.append(settled_entry(event_id, begun.user_id, session_id, counts))
            records = write_audit(conn, entries)
            conn.execute(
                update(_EVENTS)
                .where(_EVENTS.c.event_id == event_id)
                .values(status=EventStatus.COMPLETED, completed_at=utcnow())
            )
        emit(records)
        self._fanout.schedule(retries)
        if begun.resumed:  # other attempts may have finished deliveries meanwhile
            self._fanout.settle([event_id])


def _completed(event: Event, begun: _Begun, counts: Counter[DeliveryStatus]) -> AuditEntry:
    outcome = "success"
    if counts[DeliveryStatus.FAILED]:
        outcome = "partial"
    elif counts[DeliveryStatus.RETRYING] or counts[DeliveryStatus.PENDING]:
        outcome = "retrying"
    return AuditEntry(
        key=f"logout.completed:{event.event_id}",
        type=AuditType.LOGOUT_COMPLETED,
        outcome=outcome,
        event_id=str(event.event_id),
        user_id=begun.user_id,
        session_id=getattr(event, "session_id", None),
        detail={
            "event_type": event.type,
            "sessions_ended": begun.sessions_ended,
            "deliveries": {status.value: counts[status] for status in DeliveryStatus},
        },
    )


def _received(event: Event, message_id: str) -> AuditEntry:
    detail: dict[str, Any] = {
        "type": event.type,
        "initiator": event.initiator,
        "actor": event.actor,
        "message_id": message_id,
        "occurred_at": event.occurred_at.isoformat(),
    }
    if event.request is not None:
        detail["request"] = event.request.model_dump(mode="json", exclude={"args"})
    return AuditEntry(
        key=f"event.received:{event.event_id}",
        type=AuditType.EVENT_RECEIVED,
        outcome="accepted",
        event_id=str(event.event_id),
        user_id=getattr(event, "user_id", None),
        session_id=getattr(event, "session_id", None),
        detail=detail,
    )


def _duplicate(event: Event, first: Any, message_id: str) -> AuditEntry:
    same = first.payload == event.model_dump(mode="json")
    return AuditEntry(
        key=f"event.duplicate:{event.event_id}:{message_id}",
        type=AuditType.EVENT_DUPLICATE,
        outcome="ignored",
        event_id=str(event.event_id),
        user_id=getattr(event, "user_id", None),
        session_id=getattr(event, "session_id", None),
        detail={
            "message_id": message_id,
            "first_message_id": first.message_id,
            "first_received_at": first.received_at.isoformat(),
            "first_status": first.status,
            "same_payload": same,
        },
    )


def _session_ended(event: Event, session_id: str, user_id: str, reason: str) -> AuditEntry:
    detail: dict[str, Any] = {
        "end_reason": reason,
        "initiator": event.initiator,
        "actor": event.actor,
    }
    if isinstance(event, SessionBindingViolation):
        detail.update(
            logout_reason=BINDING_LOGOUT_REASON,
            binding=event.binding.model_dump(mode="json"),
            ip=event.ip.model_dump(mode="json"),
            asn=event.asn.model_dump(mode="json"),
            geo=event.geo.model_dump(mode="json"),
            http_request=event.http_request.model_dump(mode="json"),
        )
    if isinstance(event, LogoutUser) and event.plan_id is not None:
        detail["plan_id"] = event.plan_id
    return AuditEntry(
        key=f"session.ended:{session_id}",
        type=AuditType.SESSION_ENDED,
        outcome="ended",
        event_id=str(event.event_id),
        user_id=user_id,
        session_id=session_id,
        detail=detail,
    )
