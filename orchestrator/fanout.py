"""Fan-out: claim deliveries, build each request with its handler, send them all at once,
record every attempt and outcome, and schedule retries of transient failures.

A delivery is claimed with one conditional UPDATE (or inserted already claimed by the
event that creates it), so two workers, or a redelivered message, never send the same
attempt twice, and a delivery that succeeded is never sent again. The claim is a lease
(see :mod:`orchestrator.leases`), renewed while the attempt waits and runs, and its
number is a fencing token: an outcome is recorded only where the delivery is still open
and still at that attempt, so a stale attempt records nothing and a final status never
changes. Hot path: SQLAlchemy Core only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import (
    Connection,
    RowMapping,
    Select,
    Table,
    bindparam,
    func,
    or_,
    select,
    tuple_,
    update,
)

from orchestrator.audit import AuditEntry, emit, write_audit
from orchestrator.errors import DeliveryError, InputError, PermanentDeliveryError
from orchestrator.leases import Leases
from orchestrator.retry import RetryPolicy
from orchestrator.sender import Built, HttpSender, SendResult, TimeLeft
from orchestrator.store import (
    Delivery,
    DeliveryStatus,
    EventRecord,
    Provider,
    ProviderSession,
    SessionFactory,
    utcnow,
)
from orchestrator.store.sql import engine_of
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

__all__ = [
    "LINK_COLUMNS",
    "FanOut",
    "Outcome",
    "Recorded",
    "RetryScheduler",
    "Work",
    "is_settled",
    "settled_entry",
]

_log = structlog.get_logger("logout.fanout")

#: Called with a delivery id and a delay in seconds to try it again later.
RetryScheduler = Callable[[str, float], None]

_OPEN = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)
_DELIVERIES = cast(Table, Delivery.__table__)

#: What a provider session and its provider contribute to a :class:`Work` (labelled columns).
LINK_COLUMNS = (
    ProviderSession.id.label("ps_id"),
    ProviderSession.session_id,
    ProviderSession.provider,
    ProviderSession.identifiers,
    Provider.protocol,
    Provider.enabled,
    Provider.full_logout_on_rp_initiated,
    Provider.settings,
    Provider.updated_at.label("provider_updated_at"),
)

_EVENTS = cast(Table, EventRecord.__table__)

# Fenced: only the attempt that holds the delivery records, and only while it is open.
_RECORD = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id == bindparam("b_id"),
        _DELIVERIES.c.attempts == bindparam("b_attempt"),
        or_(*(_DELIVERIES.c.status == status.value for status in _OPEN)),  # executemany: no IN
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


@dataclass(frozen=True, slots=True)
class Work:
    """One claimed attempt of one delivery, with everything its handler needs."""

    delivery_id: str
    created_at: datetime
    attempt: int
    provider: ProviderInfo
    session: ProviderSessionInfo
    context: LogoutContext
    handler: ProtocolHandler | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :meth:`FanOut.record` wrote: audit entries to write, retries to schedule once
    committed, and the deliveries whose attempt had lost its lease (nothing recorded)."""

    entries: list[AuditEntry] = field(default_factory=list)
    retries: list[tuple[str, float]] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    status: DeliveryStatus
    detail: str | None = None
    status_code: int | None = None
    next_attempt_at: datetime | None = None
    retry_after: float | None = None
    retry_in: float = 0.0
    #: Fields the error adds to the audit record (``DeliveryError.facts``).
    facts: Mapping[str, Any] = field(default_factory=dict)


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
        builders: Executor | None = None,
    ) -> None:
        self._engine = engine_of(sessions)
        self._builders = builders
        self._handlers = handlers
        self._sender = sender
        self._policy = policy
        self._schedule = schedule
        self.lease = timedelta(seconds=lease)
        self.leases = Leases(self._engine, self.lease)
        self._settings_cache: dict[tuple[str, datetime], Any] = {}

    def hold(
        self, works: Sequence[Work], events: Iterable[str] = ()
    ) -> AbstractContextManager[None]:
        """Keep the leases of ``works`` (and of ``events``) renewed until the block ends."""
        return self.leases.hold(((w.delivery_id, w.attempt, w.context.now) for w in works), events)

    # -- the retry path: claim, attempt, record ----------------------------------------

    def deliver(self, delivery_ids: Sequence[str]) -> None:
        """Attempt every open, due delivery among ``delivery_ids`` once, concurrently."""
        works = self.claim(delivery_ids)
        if not works:
            return
        with self.hold(works):
            outcomes = self.attempt(works)
            with self._engine.begin() as conn:
                recorded = self.record(conn, works, outcomes)
                records = write_audit(conn, recorded.entries)
        emit(records)
        self.schedule(recorded.retries)
        self.settle({work.context.event_id for work in works})

    def settle(self, event_ids: Iterable[str]) -> None:
        """Write ``logout.settled`` for each event whose deliveries are all final now,
        counted from the rows (final statuses never change, so the counts stay true).

        Runs after the outcomes are committed, so of two retries finishing the last
        deliveries of one event at once, the later always sees both.
        """
        wanted = sorted(event_ids)
        if not wanted:
            return
        with self._engine.begin() as conn:
            counts: dict[str, Counter[DeliveryStatus]] = {}
            users: dict[str, str] = {}
            for event_id, status, user_id, count in conn.execute(
                select(
                    _DELIVERIES.c.event_id,
                    _DELIVERIES.c.status,
                    func.max(_DELIVERIES.c.user_id),
                    func.count(),
                )
                .where(_DELIVERIES.c.event_id.in_(wanted))
                .group_by(_DELIVERIES.c.event_id, _DELIVERIES.c.status)
            ):
                counts.setdefault(event_id, Counter())[DeliveryStatus(status)] = count
                users[event_id] = user_id
            done = [event_id for event_id, tally in counts.items() if is_settled(tally)]
            named = _named_by(conn, done)
            entries = [
                settled_entry(
                    event_id,
                    named.get(event_id, (None, None))[0] or users[event_id],
                    named.get(event_id, (None, None))[1],
                    counts[event_id],
                )
                for event_id in done
            ]
            records = write_audit(conn, entries)
        emit(records)

    def claim(self, delivery_ids: Sequence[str]) -> list[Work]:
        """Lease the open, due deliveries among ``delivery_ids`` for one attempt each.

        Those open but not due yet (a retry message that came early, or a lease another
        worker, alive or dead, still holds) are scheduled again for when they are due.
        """
        works = self._claim(delivery_ids)
        claimed = {work.delivery_id for work in works}
        self._put_back([i for i in delivery_ids if i not in claimed])
        return works

    def _claim(self, delivery_ids: Sequence[str]) -> list[Work]:
        if not delivery_ids:
            return []
        now = utcnow()
        # Locked in id order, as every writer of deliveries does (no deadlock); a delivery
        # another transaction is recording or renewing right now is its holder's.
        due = (
            select(_DELIVERIES.c.id)
            .where(
                _DELIVERIES.c.id.in_(delivery_ids),
                _DELIVERIES.c.status.in_(_OPEN),
                or_(
                    _DELIVERIES.c.next_attempt_at.is_(None),
                    _DELIVERIES.c.next_attempt_at <= now,
                ),
            )
            .order_by(_DELIVERIES.c.id)
            .with_for_update(skip_locked=True)
        )
        with self._engine.begin() as conn:
            claimed = conn.scalars(
                update(_DELIVERIES)
                .where(_DELIVERIES.c.id.in_(due))
                .values(
                    attempts=_DELIVERIES.c.attempts + 1,
                    next_attempt_at=now + self.lease,
                    updated_at=now,
                )
                .returning(_DELIVERIES.c.id)
            ).all()
            if not claimed:
                return []
            rows = conn.execute(_claimed_rows(claimed)).mappings().all()
        return [
            self.work(
                row,
                delivery_id=row["delivery_id"],
                created_at=row["created_at"],
                attempt=row["attempts"],
                user_id=row["user_id"],
                event_id=row["event_id"],
                event_type=row["event_type"],
                initiator=str(row["payload"].get("initiator", "system")),
                now=now,
            )
            for row in rows
        ]

    def _put_back(self, delivery_ids: Sequence[str]) -> None:
        if not delivery_ids:
            return
        now = utcnow()
        with self._engine.connect() as conn:
            waiting = conn.execute(
                select(_DELIVERIES.c.id, _DELIVERIES.c.next_attempt_at).where(
                    _DELIVERIES.c.id.in_(delivery_ids),
                    _DELIVERIES.c.status.in_(_OPEN),
                    _DELIVERIES.c.next_attempt_at > now,
                )
            ).all()
        for delivery_id, due in waiting:
            self._schedule(delivery_id, (due - now).total_seconds())

    def work(
        self,
        link: RowMapping,
        *,
        delivery_id: str,
        created_at: datetime,
        attempt: int,
        user_id: str,
        event_id: str,
        event_type: str,
        initiator: str,
        now: datetime,
    ) -> Work:
        """A :class:`Work` from a row of :data:`LINK_COLUMNS` and the delivery's facts."""
        handler = self._handlers.get(link["protocol"])
        return Work(
            delivery_id=delivery_id,
            created_at=created_at,
            attempt=attempt,
            provider=ProviderInfo(
                name=link["provider"],
                protocol=link["protocol"],
                enabled=link["enabled"],
                full_logout_on_rp_initiated=link["full_logout_on_rp_initiated"],
                settings=self._provider_settings(handler, link),
            ),
            session=ProviderSessionInfo(
                id=link["ps_id"],
                session_id=link["session_id"],
                user_id=user_id,
                provider=link["provider"],
                identifiers=link["identifiers"] or {},
            ),
            context=LogoutContext(
                event_id=event_id,
                event_type=event_type,
                initiator=initiator,
                delivery_id=delivery_id,
                attempt=attempt,
                now=now,
            ),
            handler=handler,
        )

    def _provider_settings(self, handler: ProtocolHandler | None, link: RowMapping) -> Any:
        if handler is None:
            return link["settings"]
        key = (link["provider"], link["provider_updated_at"])
        if key not in self._settings_cache:
            try:
                self._settings_cache[key] = handler.stored_settings(
                    link["provider"], link["settings"]
                )
            except InputError:
                self._settings_cache[key] = None
        return self._settings_cache[key]

    # -- attempting (no database) ------------------------------------------------------

    def attempt(self, works: Sequence[Work]) -> dict[str, Outcome]:
        """Build every request and send them all at once; one outcome per delivery."""
        outcomes: dict[str, Outcome] = {}
        to_build: list[Work] = []
        for work in works:
            reason = self._skip_reason(work)
            if reason is None:
                to_build.append(work)
            else:
                outcomes[work.delivery_id] = Outcome(DeliveryStatus.SKIPPED, reason)
        if not to_build:
            return outcomes
        # Signing (RSA above all) releases the GIL: several threads sign side by side, and
        # each request goes out as soon as it is built, while the next ones are signed.
        builds: list[Future[Built]]
        if self._builders is not None and len(to_build) > 1:
            builds = [self._builders.submit(_build, work) for work in to_build]
        else:
            builds = [_done(_build(work)) for work in to_build]
        sent = self._sender().send_as_built(builds, [self._time_left(w) for w in to_build])
        answered = utcnow()  # Retry-After counts from the answer, not from the send
        for work, item in zip(to_build, sent, strict=True):
            if isinstance(item, DeliveryError):
                outcomes[work.delivery_id] = self._failure(work, item, answered)
            else:
                outcomes[work.delivery_id] = self._interpret(work, *item, answered)
        return outcomes

    def _time_left(self, work: Work) -> TimeLeft | None:
        lease = self.leases.get(work.delivery_id, work.attempt)
        return lease.time_left if lease is not None else None

    def _skip_reason(self, work: Work) -> str | None:
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
        self, work: Work, request: BackchannelRequest, result: SendResult, answered: datetime
    ) -> Outcome:
        if isinstance(result, DeliveryError):
            return self._failure(work, result, answered)
        assert work.handler is not None
        try:
            work.handler.interpret_response(
                work.provider, work.session, request, result, work.context
            )
        except DeliveryError as exc:
            return self._failure(work, exc, answered, result)
        return Outcome(DeliveryStatus.SUCCEEDED, status_code=result.status_code)

    def _failure(
        self,
        work: Work,
        exc: DeliveryError,
        answered: datetime,
        response: BackchannelResponse | None = None,
    ) -> Outcome:
        code = exc.status_code
        if code is None and response is not None:
            code = response.status_code
        if isinstance(exc, PermanentDeliveryError):
            return Outcome(DeliveryStatus.FAILED, exc.detail, code, facts=exc.facts)
        retry_after = getattr(exc, "retry_after", None)
        when = self._policy.next_attempt(work.attempt, work.created_at, answered, retry_after)
        if when is None:
            detail = f"{exc.detail}; gave up after {work.attempt} attempts"
            return Outcome(DeliveryStatus.FAILED, detail, code, facts=exc.facts)
        wait = (when - answered).total_seconds()
        return Outcome(
            DeliveryStatus.RETRYING, exc.detail, code, when, retry_after, wait, exc.facts
        )

    # -- recording ---------------------------------------------------------------------

    def record(
        self, conn: Connection, works: Sequence[Work], outcomes: Mapping[str, Outcome]
    ) -> Recorded:
        """Write the outcome of every attempt that still holds its delivery, in the
        caller's transaction: one fenced executemany, and a read of what it wrote only when
        it wrote fewer rows than it was given.

        An attempt superseded meanwhile (its lease ran out and another attempt claimed the
        delivery, or the delivery is final) records nothing: no row, no audit record, no
        retry; it is logged and named in :attr:`Recorded.lost`.
        """
        if not works:
            return Recorded()
        now = utcnow()
        ordered = sorted(works, key=lambda w: w.delivery_id)  # lock order: by id
        self.leases.release((w.delivery_id, w.attempt) for w in ordered)
        rows: list[dict[str, Any]] = []
        for work in ordered:
            outcome = outcomes[work.delivery_id]
            final = outcome.status is not DeliveryStatus.RETRYING
            rows.append(
                {
                    "b_id": work.delivery_id,
                    "b_attempt": work.attempt,
                    "b_status": outcome.status.value,
                    "b_error": outcome.detail,
                    "b_code": outcome.status_code,
                    "b_now": now,
                    "b_next": outcome.next_attempt_at,
                    "b_done": now if final else None,
                }
            )
        written = conn.execute(_RECORD, rows).rowcount
        held = {(w.delivery_id, w.attempt) for w in ordered}
        if written != len(rows) or not conn.dialect.supports_sane_multi_rowcount:
            # Some attempt was superseded. An attempt's number is claimed once: a row at
            # that number stamped with this transaction's time was written by it (and it
            # holds the row until commit).
            held = {
                (delivery_id, attempt)
                for delivery_id, attempt in conn.execute(
                    select(_DELIVERIES.c.id, _DELIVERIES.c.attempts).where(
                        tuple_(_DELIVERIES.c.id, _DELIVERIES.c.attempts).in_(held),
                        _DELIVERIES.c.updated_at == now,
                    )
                )
            }
        recorded = Recorded()
        for work in works:
            outcome = outcomes[work.delivery_id]
            if (work.delivery_id, work.attempt) not in held:
                recorded.lost.add(work.delivery_id)
                _log.info(
                    "delivery attempt lost its lease; its outcome is not recorded",
                    delivery_id=work.delivery_id,
                    attempt=work.attempt,
                    outcome=outcome.status.value,
                )
                continue
            recorded.entries.append(_audit(work, outcome))
            if outcome.next_attempt_at is not None:
                recorded.retries.append((work.delivery_id, outcome.retry_in))
        return recorded

    def schedule(self, retries: Sequence[tuple[str, float]]) -> None:
        """Schedule retries (after their outcomes are committed)."""
        for delivery_id, wait in retries:
            # Counted from the answer, so the retry never comes before ``Retry-After``.
            self._schedule(delivery_id, wait)


def _done(built: Built) -> Future[Built]:
    future: Future[Built] = Future()
    future.set_result(built)
    return future


def _build(work: Work) -> Built:
    """The request of one attempt, or why it cannot be built."""
    assert work.handler is not None
    try:
        return work.handler.backchannel_request(work.provider, work.session, work.context)
    except DeliveryError as exc:
        return exc


def is_settled(counts: Mapping[DeliveryStatus, int]) -> bool:
    """True when no delivery is still pending or retrying."""
    return not any(counts.get(status, 0) for status in _OPEN)


def settled_entry(
    event_id: str,
    user_id: str | None,
    session_id: str | None,
    counts: Mapping[DeliveryStatus, int],
) -> AuditEntry:
    """The final word on one logout: every delivery's outcome, counted."""
    return AuditEntry(
        key=f"logout.settled:{event_id}",
        type=AuditType.LOGOUT_SETTLED,
        outcome="partial" if counts.get(DeliveryStatus.FAILED, 0) else "success",
        event_id=event_id,
        user_id=user_id,
        session_id=session_id,
        detail={"deliveries": {status.value: counts.get(status, 0) for status in DeliveryStatus}},
    )


def _named_by(
    conn: Connection, event_ids: Sequence[str]
) -> dict[str, tuple[str | None, str | None]]:
    """The user and the single session each event names (from its stored payload), if any."""
    if not event_ids:
        return {}
    named: dict[str, tuple[str | None, str | None]] = {}
    for event_id, payload in conn.execute(
        select(_EVENTS.c.event_id, _EVENTS.c.payload).where(_EVENTS.c.event_id.in_(event_ids))
    ):
        user_id, session_id = payload.get("user_id"), payload.get("session_id")
        named[event_id] = (
            str(user_id) if user_id is not None else None,
            str(session_id) if session_id is not None else None,
        )
    return named


def _claimed_rows(delivery_ids: Sequence[str]) -> Select[Any]:
    return (
        select(
            _DELIVERIES.c.id.label("delivery_id"),
            _DELIVERIES.c.created_at,
            _DELIVERIES.c.attempts,
            _DELIVERIES.c.user_id,
            EventRecord.event_id,
            EventRecord.type.label("event_type"),
            EventRecord.payload,
            *LINK_COLUMNS,
        )
        .join(ProviderSession, ProviderSession.id == _DELIVERIES.c.provider_session_id)
        .join(Provider, Provider.name == _DELIVERIES.c.provider)
        .join(EventRecord, EventRecord.event_id == _DELIVERIES.c.event_id)
        .where(_DELIVERIES.c.id.in_(delivery_ids))
    )


_AUDIT_TYPES = {
    DeliveryStatus.SUCCEEDED: AuditType.DELIVERY_SUCCEEDED,
    DeliveryStatus.RETRYING: AuditType.DELIVERY_RETRYING,
    DeliveryStatus.FAILED: AuditType.DELIVERY_FAILED,
    DeliveryStatus.SKIPPED: AuditType.DELIVERY_SKIPPED,
}


def _audit(work: Work, outcome: Outcome) -> AuditEntry:
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
    for name, value in outcome.facts.items():
        detail.setdefault(name, value)  # never over what the record itself says
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
