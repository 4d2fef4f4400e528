"""Fan-out: claim deliveries, build each request with its handler, send them all at once,
record every attempt and outcome, and schedule retries of transient failures.

A delivery is claimed with one conditional UPDATE, so two workers (or a redelivered message)
never send the same attempt twice, and a delivery that succeeded is never sent again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select, update

from orchestrator.audit import AuditEntry, emit, write_audit
from orchestrator.errors import DeliveryError, InputError, PermanentDeliveryError
from orchestrator.retry import RetryPolicy
from orchestrator.sender import HttpSender, SendResult
from orchestrator.store import (
    Delivery,
    DeliveryStatus,
    EventRecord,
    Provider,
    ProviderSession,
    SessionFactory,
    utcnow,
)
from protocols import (
    BackchannelRequest,
    BackchannelResponse,
    Channel,
    LogoutContext,
    ProtocolHandler,
    ProviderInfo,
    ProviderSessionInfo,
)
from schemas import AuditType

__all__ = ["FanOut", "RetryScheduler"]

_log = structlog.get_logger("logout.fanout")

#: Called with a delivery id and a delay in seconds to try it again later.
RetryScheduler = Callable[[str, float], None]

_OPEN = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


@dataclass(frozen=True, slots=True)
class _Work:
    delivery_id: str
    created_at: datetime
    attempt: int
    provider: ProviderInfo
    session: ProviderSessionInfo
    context: LogoutContext
    handler: ProtocolHandler | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: DeliveryStatus
    detail: str | None = None
    status_code: int | None = None
    next_attempt_at: datetime | None = None
    retry_after: float | None = None
    retry_in: float = 0.0


class FanOut:
    """Deliver logouts for a set of deliveries; see the module docstring."""

    def __init__(
        self,
        sessions: SessionFactory,
        handlers: Mapping[str, ProtocolHandler],
        sender: Callable[[], HttpSender],
        policy: RetryPolicy,
        schedule: RetryScheduler,
        lease: float,
    ) -> None:
        self._sessions = sessions
        self._handlers = handlers
        self._sender = sender
        self._policy = policy
        self._schedule = schedule
        self._lease = timedelta(seconds=lease)
        self._settings_cache: dict[tuple[str, datetime], Any] = {}

    def deliver(self, delivery_ids: Sequence[str]) -> None:
        """Attempt every open delivery among ``delivery_ids`` once, concurrently.

        A delivery that is open but not yet due (a retry message that came early, or one
        leased by another worker right now) is scheduled again for when it is due.
        """
        works = self._claim(delivery_ids)
        self._put_back([i for i in delivery_ids if i not in {w.delivery_id for w in works}])
        if not works:
            return
        outcomes: dict[str, _Outcome] = {}
        to_send: list[tuple[_Work, BackchannelRequest]] = []
        for work in works:
            reason = self._skip_reason(work)
            if reason is not None:
                outcomes[work.delivery_id] = _Outcome(DeliveryStatus.SKIPPED, reason)
                continue
            assert work.handler is not None
            try:
                request = work.handler.backchannel_request(
                    work.provider, work.session, work.context
                )
            except DeliveryError as exc:
                outcomes[work.delivery_id] = self._failure(work, exc, utcnow())
                continue
            to_send.append((work, request))
        if to_send:
            results = self._sender().send_all([request for _, request in to_send])
            answered = utcnow()  # Retry-After counts from the answer, not from the send
            for (work, request), result in zip(to_send, results, strict=True):
                outcomes[work.delivery_id] = self._interpret(work, request, result, answered)
        self._record(works, outcomes)

    # -- steps -------------------------------------------------------------------------

    def _claim(self, delivery_ids: Sequence[str]) -> list[_Work]:
        now = utcnow()
        with self._sessions.begin() as db:
            claimed = db.scalars(
                update(Delivery)
                .where(
                    Delivery.id.in_(delivery_ids),
                    Delivery.status.in_(_OPEN),
                    or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
                )
                .values(
                    attempts=Delivery.attempts + 1,
                    next_attempt_at=now + self._lease,
                    updated_at=now,
                )
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            ).all()
            if not claimed:
                return []
            rows = db.execute(
                select(Delivery, ProviderSession, Provider, EventRecord)
                .join(ProviderSession, ProviderSession.id == Delivery.provider_session_id)
                .join(Provider, Provider.name == Delivery.provider)
                .join(EventRecord, EventRecord.event_id == Delivery.event_id)
                .where(Delivery.id.in_(claimed))
            ).all()
            return [self._work(d, ps, p, e, now) for d, ps, p, e in rows]

    def _put_back(self, delivery_ids: Sequence[str]) -> None:
        if not delivery_ids:
            return
        now = utcnow()
        with self._sessions() as db:
            waiting = db.execute(
                select(Delivery.id, Delivery.next_attempt_at).where(
                    Delivery.id.in_(delivery_ids),
                    Delivery.status.in_(_OPEN),
                    Delivery.next_attempt_at > now,
                )
            ).all()
        for delivery_id, due in waiting:
            assert due is not None  # the query asked for a future time
            self._schedule(delivery_id, math.ceil((due - now).total_seconds() * 1000) / 1000)

    def _work(
        self, d: Delivery, ps: ProviderSession, p: Provider, e: EventRecord, now: datetime
    ) -> _Work:
        handler = self._handlers.get(p.protocol)
        return _Work(
            delivery_id=d.id,
            created_at=d.created_at,
            attempt=d.attempts,
            provider=ProviderInfo(
                name=p.name,
                protocol=p.protocol,
                enabled=p.enabled,
                full_logout_on_rp_initiated=p.full_logout_on_rp_initiated,
                settings=self._provider_settings(handler, p),
            ),
            session=ProviderSessionInfo(
                id=ps.id,
                session_id=ps.session_id,
                user_id=d.user_id,
                provider=ps.provider,
                sid=ps.sid,
                sub=ps.sub,
                name_id=ps.name_id,
                name_id_format=ps.name_id_format,
                name_qualifier=ps.name_qualifier,
                sp_name_qualifier=ps.sp_name_qualifier,
                session_index=ps.session_index,
            ),
            context=LogoutContext(
                event_id=e.event_id,
                event_type=e.type,
                initiator=str(e.payload.get("initiator", "system")),
                delivery_id=d.id,
                attempt=d.attempts,
                now=now,
            ),
            handler=handler,
        )

    def _provider_settings(self, handler: ProtocolHandler | None, p: Provider) -> Any:
        if handler is None:
            return p.settings
        key = (p.name, p.updated_at)
        if key not in self._settings_cache:
            try:
                self._settings_cache[key] = handler.validate_settings(p.name, p.settings)
            except InputError:
                self._settings_cache[key] = None
        return self._settings_cache[key]

    def _skip_reason(self, work: _Work) -> str | None:
        provider = work.provider
        if work.handler is None:
            return f"no handler for protocol {provider.protocol!r} is enabled"
        if not provider.enabled:
            return "provider is disabled"
        if provider.settings is None:
            return "provider settings no longer validate; reload the providers file"
        channel = work.handler.channel(provider)
        if channel is not Channel.BACKCHANNEL:
            return f"{channel.value} logout is shown to the browser, not sent by the worker"
        return None

    def _interpret(
        self, work: _Work, request: BackchannelRequest, result: SendResult, answered: datetime
    ) -> _Outcome:
        if isinstance(result, DeliveryError):
            return self._failure(work, result, answered)
        assert work.handler is not None
        try:
            work.handler.interpret_response(
                work.provider, work.session, request, result, work.context
            )
        except DeliveryError as exc:
            return self._failure(work, exc, answered, result)
        return _Outcome(DeliveryStatus.SUCCEEDED, status_code=result.status_code)

    def _failure(
        self,
        work: _Work,
        exc: DeliveryError,
        answered: datetime,
        response: BackchannelResponse | None = None,
    ) -> _Outcome:
        code = (
            exc.status_code
            if exc.status_code is not None
            else (response.status_code if response is not None else None)
        )
        if isinstance(exc, PermanentDeliveryError):
            return _Outcome(DeliveryStatus.FAILED, exc.detail, code)
        retry_after = getattr(exc, "retry_after", None)
        when = self._policy.next_attempt(work.attempt, work.created_at, answered, retry_after)
        if when is None:
            return _Outcome(
                DeliveryStatus.FAILED,
                f"{exc.detail}; gave up after {work.attempt} attempts",
                code,
            )
        wait = (when - answered).total_seconds()
        return _Outcome(DeliveryStatus.RETRYING, exc.detail, code, when, retry_after, wait)

    def _record(self, works: Sequence[_Work], outcomes: Mapping[str, _Outcome]) -> None:
        now = utcnow()
        entries: list[AuditEntry] = []
        retries: list[tuple[str, float]] = []
        rows: list[dict[str, Any]] = []
        for work in works:
            outcome = outcomes[work.delivery_id]
            final = outcome.status is not DeliveryStatus.RETRYING
            rows.append(
                {
                    "id": work.delivery_id,
                    "status": outcome.status,
                    "last_error": outcome.detail,
                    "last_status_code": outcome.status_code,
                    "updated_at": now,
                    "next_attempt_at": outcome.next_attempt_at,
                    "completed_at": now if final else None,
                }
            )
            entries.append(_audit(work, outcome))
            if outcome.next_attempt_at is not None:
                retries.append((work.delivery_id, outcome.retry_in))
        with self._sessions.begin() as db:
            db.execute(update(Delivery), rows)  # one executemany, by primary key
            records = write_audit(db, entries, at=now)
        emit(records)
        for delivery_id, wait in retries:
            # Counted from the answer and rounded up to the broker's milliseconds, so the
            # message never arrives before ``next_attempt_at`` (an early one is put back).
            self._schedule(delivery_id, math.ceil(wait * 1000) / 1000)


_AUDIT_TYPES = {
    DeliveryStatus.SUCCEEDED: AuditType.DELIVERY_SUCCEEDED,
    DeliveryStatus.RETRYING: AuditType.DELIVERY_RETRYING,
    DeliveryStatus.FAILED: AuditType.DELIVERY_FAILED,
    DeliveryStatus.SKIPPED: AuditType.DELIVERY_SKIPPED,
}


def _audit(work: _Work, outcome: _Outcome) -> AuditEntry:
    kind = _AUDIT_TYPES[outcome.status]
    detail: dict[str, Any] = {
        "delivery_id": work.delivery_id,
        "protocol": work.provider.protocol,
        "attempt": work.attempt,
    }
    if outcome.status_code is not None:
        detail["status_code"] = outcome.status_code
    if outcome.status is DeliveryStatus.SKIPPED:
        detail["reason"] = outcome.detail
    elif outcome.detail is not None:
        detail["error"] = outcome.detail
    if outcome.next_attempt_at is not None:
        detail["next_attempt_at"] = outcome.next_attempt_at.isoformat()
    if outcome.retry_after is not None:
        detail["retry_after"] = outcome.retry_after
    suffix = f":{work.attempt}" if outcome.status is DeliveryStatus.RETRYING else ""
    return AuditEntry(
        key=f"{kind.value}:{work.delivery_id}{suffix}",
        type=kind,
        outcome=outcome.status.value,
        event_id=work.context.event_id,
        user_id=work.session.user_id,
        session_id=work.session.session_id,
        provider=work.provider.name,
        detail=detail,
    )
