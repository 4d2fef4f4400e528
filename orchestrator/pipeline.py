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
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from orchestrator.audit import AuditEntry, emit, write_audit
from orchestrator.errors import InputError
from orchestrator.fanout import FanOut
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


def _insert_ignore(db: Session, model: Any, keys: list[str]) -> Any:
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_insert(model).on_conflict_do_nothing(index_elements=keys)
    if dialect == "sqlite":
        return sqlite_insert(model).on_conflict_do_nothing(index_elements=keys)
    return insert(model)  # pragma: no cover - other dialects


@dataclass(frozen=True, slots=True)
class _Scope:
    """Which sessions an event ends."""

    sessions: Any  # a WHERE clause over IdpSession
    end_idp_sessions: bool
    only_provider: str | None
    single_session: str | None


class EventProcessor:
    """Handles events; safe to call from many threads and processes at once."""

    def __init__(self, sessions: SessionFactory, fanout: FanOut) -> None:
        self._sessions = sessions
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
            if not self._claim(event, message_id):
                return HandleResult.DUPLICATE
            delivery_ids = self._end_sessions(event)
            self._fanout.deliver(delivery_ids)
            self._complete(event)
        return HandleResult.COMPLETED

    # -- 0. rejection ------------------------------------------------------------------

    def _reject(self, raw: Any, message_id: str, exc: InputError) -> None:
        problems = [str(p) for p in exc.problems]
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        event_id = str(event_id)[:64] if event_id is not None else None
        payload = raw if isinstance(raw, str) else json.dumps(raw, default=str)
        with self._sessions.begin() as db:
            db.execute(
                _insert_ignore(db, RejectedEvent, ["message_id"]).values(
                    message_id=message_id,
                    event_id=event_id,
                    received_at=utcnow(),
                    payload=payload,
                    problems=problems,
                )
            )
            records = write_audit(
                db,
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

    # -- 1. claim ----------------------------------------------------------------------

    def _claim(self, event: Event, message_id: str) -> bool:
        """True when this message owns the event (first sight, or a redelivery to resume)."""
        event_id = str(event.event_id)
        payload = event.model_dump(mode="json")
        with self._sessions.begin() as db:
            inserted = db.scalar(
                _insert_ignore(db, EventRecord, ["event_id"])
                .values(
                    event_id=event_id,
                    type=event.type,
                    status=EventStatus.PROCESSING,
                    message_id=message_id,
                    payload=payload,
                    received_at=utcnow(),
                    attempted_at=utcnow(),
                )
                .returning(EventRecord.event_id)
            )
            if inserted is not None:
                records = write_audit(db, [_received(event, message_id)])
                owner = True
            else:
                row = db.get(EventRecord, event_id)
                assert row is not None
                owner = row.message_id == message_id and row.status != EventStatus.COMPLETED
                if owner:
                    row.attempted_at = utcnow()
                records = [] if owner else write_audit(db, [_duplicate(event, row, message_id)])
        emit(records)
        return owner

    # -- 2. end sessions, record deliveries --------------------------------------------

    def _scope(self, db: Session, event: Event) -> _Scope:
        match event:
            case UserRevokeAll():
                where = IdpSession.user_id == event.user_id
                return _Scope(where, True, None, None)
            case SessionTerminateOthers():
                where = (IdpSession.user_id == event.user_id) & (
                    IdpSession.session_id != event.keep_session_id
                )
                return _Scope(where, True, None, None)
            case LogoutProvider():
                configured = db.scalar(
                    select(Provider.full_logout_on_rp_initiated).where(
                        Provider.name == event.provider
                    )
                )
                full = event.full_logout or bool(configured)
                where = IdpSession.session_id == event.session_id
                return _Scope(where, full, None if full else event.provider, event.session_id)
            case _:
                where = IdpSession.session_id == event.session_id
                return _Scope(where, True, None, event.session_id)

    def _end_sessions(self, event: Event) -> list[str]:
        """End what the event names and record a delivery per provider session ended.

        Ending is a conditional UPDATE (``WHERE ended_at IS NULL``), atomic on SQLite and
        PostgreSQL alike: when two events race for one session, exactly one ends it. What
        this event ended carries its id, so a replay finds the same sessions again.
        """
        event_id = str(event.event_id)
        now = utcnow()
        reason = end_reason(event)
        entries: list[AuditEntry] = []
        with self._sessions.begin() as db:
            scope = self._scope(db, event)
            if scope.end_idp_sessions:
                db.execute(
                    update(IdpSession)
                    .where(scope.sessions, IdpSession.ended_at.is_(None))
                    .values(ended_at=now, end_reason=reason, ended_by_event=event_id)
                    .execution_options(synchronize_session=False)
                )
                targets = list(
                    db.scalars(
                        select(IdpSession)
                        .where(IdpSession.ended_by_event == event_id)
                        .order_by(IdpSession.session_id)
                    )
                )
                entries += [_session_ended(event, target, reason) for target in targets]
            else:
                targets = list(
                    db.scalars(
                        select(IdpSession).where(scope.sessions, IdpSession.ended_at.is_(None))
                    )
                )
            if not targets and scope.single_session is not None:
                entries.append(self._not_found(db, event, scope.single_session))
            users = {t.session_id: t.user_id for t in targets}
            owned: list[ColumnElement[bool]] = [ProviderSession.session_id.in_(users)]
            if scope.only_provider is not None:
                owned.append(ProviderSession.provider == scope.only_provider)
            db.execute(
                update(ProviderSession)
                .where(*owned, ProviderSession.ended_at.is_(None))
                .values(ended_at=now, ended_by_event=event_id)
                .execution_options(synchronize_session=False)
            )
            links = list(
                db.scalars(
                    select(ProviderSession)
                    .where(*owned, ProviderSession.ended_by_event == event_id)
                    .order_by(ProviderSession.id)
                )
            )
            if links:
                db.execute(
                    _insert_ignore(db, Delivery, ["event_id", "provider_session_id"]),
                    [
                        {
                            "id": str(uuid.uuid4()),
                            "event_id": event_id,
                            "provider_session_id": link.id,
                            "provider": link.provider,
                            "session_id": link.session_id,
                            "user_id": users[link.session_id],
                            "status": DeliveryStatus.PENDING,
                            "attempts": 0,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for link in links
                    ],
                )
            records = write_audit(db, entries, at=now)
            delivery_ids = list(
                db.scalars(
                    select(Delivery.id).where(
                        Delivery.event_id == event_id,
                        Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.RETRYING)),
                    )
                )
            )
        emit(records)
        return delivery_ids

    def _not_found(self, db: Session, event: Event, session_id: str) -> AuditEntry:
        row = db.get(IdpSession, session_id)
        detail: dict[str, Any] = {"reason": "unknown session"}
        user_id = None
        if row is not None:
            user_id = row.user_id
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
            user_id=user_id,
            session_id=session_id,
            detail=detail,
        )

    # -- 3. roll-up --------------------------------------------------------------------

    def _complete(self, event: Event) -> None:
        event_id = str(event.event_id)
        with self._sessions.begin() as db:
            counts = Counter(
                {
                    status: count
                    for status, count in db.execute(
                        select(Delivery.status, func.count())
                        .where(Delivery.event_id == event_id)
                        .group_by(Delivery.status)
                    )
                }
            )
            ended = db.scalar(
                select(func.count())
                .select_from(IdpSession)
                .where(IdpSession.ended_by_event == event_id)
            )
            user_id = _event_user(db, event)
            outcome = "success"
            if counts[DeliveryStatus.FAILED]:
                outcome = "partial"
            elif counts[DeliveryStatus.RETRYING] or counts[DeliveryStatus.PENDING]:
                outcome = "retrying"
            detail = {
                "event_type": event.type,
                "sessions_ended": ended or 0,
                "deliveries": {status.value: counts[status] for status in DeliveryStatus},
            }
            records = write_audit(
                db,
                [
                    AuditEntry(
                        key=f"logout.completed:{event_id}",
                        type=AuditType.LOGOUT_COMPLETED,
                        outcome=outcome,
                        event_id=event_id,
                        user_id=user_id,
                        session_id=getattr(event, "session_id", None),
                        detail=detail,
                    )
                ],
            )
            row = db.get(EventRecord, event_id, with_for_update=True)
            assert row is not None
            row.status = EventStatus.COMPLETED
            row.completed_at = utcnow()
        emit(records)


def _event_user(db: Session, event: Event) -> str | None:
    user_id = getattr(event, "user_id", None)
    if user_id is not None:
        return str(user_id)
    session_id = getattr(event, "session_id", None)
    if session_id is None:
        return None
    return db.scalar(select(IdpSession.user_id).where(IdpSession.session_id == session_id))


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


def _duplicate(event: Event, first: EventRecord, message_id: str) -> AuditEntry:
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


def _session_ended(event: Event, session: IdpSession, reason: str) -> AuditEntry:
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
        key=f"session.ended:{session.session_id}",
        type=AuditType.SESSION_ENDED,
        outcome="ended",
        event_id=str(event.event_id),
        user_id=session.user_id,
        session_id=session.session_id,
        detail=detail,
    )
