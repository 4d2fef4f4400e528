"""Unit tests of the engine's deliveries: claims, attempts, outcomes, retries, skips and the
audit trail.

Deliveries are created by the real ``LogoutEngine`` over SQLite in ``tmp_path``; the
provider side is an ``httpx.MockTransport`` behind a real ``HttpSender``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import structlog
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update

from orchestrator import HandleResult, Settings
from orchestrator.audit import write_audit
from orchestrator.errors import InputError, PermanentDeliveryError, Problem
from orchestrator.handlers import build_handler
from orchestrator.leases import Leases
from orchestrator.logging import configure_logging
from orchestrator.logout import Attempts, LogoutEngine, Outcome, RetryScheduler, Work
from orchestrator.logout.attempts import _groups
from orchestrator.registry import SessionRegistry
from orchestrator.retry import RetryPolicy
from orchestrator.sender import HttpSender
from orchestrator.store import (
    AuditRow,
    Database,
    Delivery,
    DeliveryStatus,
    EventRecord,
    Provider,
    make_database,
    make_engine,
    upgrade,
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
from schemas import ProviderConfig

# -- handlers ----------------------------------------------------------------------------


class _TestHandler(ProtocolHandler):
    """POSTs ``sid=<sid>`` to the provider's ``url``."""

    protocol = "test"

    def backchannel_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> BackchannelRequest:
        return BackchannelRequest(
            url=str(provider.settings["url"]),
            content=f"sid={session.identifiers.get('sid')}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )


class _RefusingHandler(_TestHandler):
    """Cannot build a request for any session."""

    protocol = "refusing"

    def backchannel_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> BackchannelRequest:
        raise PermanentDeliveryError("session has no sid to log out")


class _IframeHandler(_TestHandler):
    """Logs out through a front-channel iframe only."""

    protocol = "iframe"

    def channel(self, provider: ProviderInfo) -> Channel:
        return Channel.FRONTCHANNEL_IFRAME


class _PausedHandler(_TestHandler):
    """Its providers take nothing now (as a paused SSF stream)."""

    protocol = "paused"

    def skip_reason(self, provider: ProviderInfo) -> str | None:
        return "the stream is paused"


class _StrictHandler(_TestHandler):
    """Refuses provider settings without a ``url``."""

    protocol = "strict"

    def validate_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        if "url" not in settings:
            raise InputError([Problem(f"provider {provider!r}", "url", "is required")])
        return dict(settings)


class _RaisingHandler(_TestHandler):
    """A third-party handler with a bug: building a request raises a plain ValueError whose
    message holds the session's sid."""

    protocol = "raising"

    def backchannel_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> BackchannelRequest:
        raise ValueError(f"cannot read {session.identifiers.get('sid')}")


class _Ticket(BaseModel):
    """A strict identifier model: a ``ticket`` and nothing else."""

    model_config = ConfigDict(extra="forbid")
    ticket: str


class _MisreadingHandler(_TestHandler):
    """Reads each answer with a strict identifier model that the stored identifiers do not
    fit: pydantic's ValidationError escapes ``interpret_response``."""

    protocol = "misreading"

    def interpret_response(
        self,
        provider: ProviderInfo,
        session: ProviderSessionInfo,
        request: BackchannelRequest,
        response: BackchannelResponse,
        context: LogoutContext,
    ) -> None:
        _Ticket.model_validate(session.identifiers)


# -- the provider side -------------------------------------------------------------------


@dataclass
class _RelyingParties:
    """A MockTransport handler: answers per URL path, records every request it sees."""

    answers: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    answered_at: list[datetime] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, *answers: tuple[int, dict[str, str]] | int) -> None:
        """Queue answers for ``path``; the last one repeats."""
        self.answers[path] = [a if isinstance(a, tuple) else (a, {}) for a in answers]

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        with self.lock:
            self.requests.append((path, request.content))
            queue = self.answers.get(path, [(200, {})])
            status, headers = queue.pop(0) if len(queue) > 1 else queue[0]
            self.answered_at.append(utcnow())
        # the body echoes the request, so a leak of the response into the audit shows too
        return httpx.Response(
            status, headers=headers, stream=httpx.ByteStream(b"echo " + request.content)
        )

    def paths(self) -> list[str]:
        with self.lock:
            return [path for path, _ in self.requests]


# -- the environment ---------------------------------------------------------------------


@dataclass
class _Env:
    database: Database
    settings: Settings
    handlers: dict[str, ProtocolHandler]
    rps: _RelyingParties
    sender: HttpSender
    scheduled: list[tuple[str, float]]
    senders: list[HttpSender] = field(default_factory=list)

    def engine(
        self,
        policy: RetryPolicy | None = None,
        sender: Callable[[], HttpSender] | None = None,
        *,
        attempts: Attempts | None = None,
        schedule: RetryScheduler | None = None,
    ) -> LogoutEngine:
        attempts = attempts or Attempts(
            sender or (lambda: self.sender),
            policy or RetryPolicy(max_attempts=3, initial_delay=30.0, max_delay=600.0),
        )
        return LogoutEngine(
            self.database, self.handlers, attempts, schedule or self._schedule, lease=30
        )

    def _schedule(self, delivery_id: str, delay: float) -> None:
        self.scheduled.append((delivery_id, delay))

    def provider(self, name: str, protocol: str = "test", enabled: bool = True) -> None:
        registry = SessionRegistry(self.database, self.handlers)
        config = ProviderConfig.model_validate(
            {
                "name": name,
                "protocol": protocol,
                "enabled": enabled,
                "url": f"http://rp.test/{name}",
            }
        )
        registry.upsert_providers([config])

    def session(self, session_id: str, user_id: str, links: Mapping[str, str]) -> None:
        registry = SessionRegistry(self.database, self.handlers)
        registry.record_session(session_id, user_id)
        for provider, sid in links.items():
            registry.record_provider_session(session_id, provider, sid=sid, sub=user_id)

    def logout(self, session_id: str, engine: LogoutEngine | None = None) -> str:
        event = _event(session_id)
        processor = engine or self.engine()
        assert processor.handle(event, f"m-{uuid.uuid4()}") is HandleResult.COMPLETED
        return str(event["event_id"])

    def deliveries(self, event_id: str) -> dict[str, Delivery]:
        """The event's deliveries by provider name."""
        with self.database() as db:
            rows = db.scalars(select(Delivery).where(Delivery.event_id == event_id))
            return {row.provider: row for row in rows}

    def delivery(self, delivery_id: str) -> Delivery:
        with self.database() as db:
            row = db.get(Delivery, delivery_id)
            assert row is not None
            return row

    def audit(self, kind: str | None = None) -> list[AuditRow]:
        with self.database() as db:
            query = select(AuditRow).order_by(AuditRow.seq)
            if kind is not None:
                query = query.where(AuditRow.type == kind)
            return list(db.scalars(query))

    def make_due(self, delivery_id: str) -> None:
        """Move the next attempt into the past, as if the retry time had come."""
        with self.database.begin() as db:
            db.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(next_attempt_at=utcnow() - timedelta(seconds=5))
            )

    def new_sender(self) -> HttpSender:
        sender = HttpSender(transport=httpx.MockTransport(self.rps.handler))
        self.senders.append(sender)
        return sender


def _event(session_id: str) -> dict[str, Any]:
    return {
        "type": "logout.user",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "initiator": "user",
        "session_id": session_id,
    }


@pytest.fixture
def env(tmp_path: Path) -> Iterator[_Env]:
    """A migrated SQLite registry, the test handlers and a sender over a MockTransport."""
    with open_env(tmp_path, f"sqlite:///{tmp_path}/t.db") as environment:
        yield environment


@contextmanager
def open_env(tmp_path: Path, database_url: str) -> Iterator[_Env]:
    """:func:`env` on the database at ``database_url`` (migrated here)."""
    engine = make_engine(database_url)
    upgrade(engine)
    settings = Settings.load(None, data_dir=tmp_path, protocols=[])
    handlers: dict[str, ProtocolHandler] = {
        cls.protocol: build_handler(settings, cls)
        for cls in (
            _TestHandler,
            _RefusingHandler,
            _IframeHandler,
            _PausedHandler,
            _StrictHandler,
            _RaisingHandler,
            _MisreadingHandler,
        )
    }
    rps = _RelyingParties()
    sender = HttpSender(transport=httpx.MockTransport(rps.handler))
    environment = _Env(make_database(engine), settings, handlers, rps, sender, [])
    try:
        yield environment
    finally:
        sender.close()
        for other in environment.senders:
            other.close()
        engine.dispose()


@pytest.fixture
def one_rp(env: _Env) -> _Env:
    """Provider ``rp1`` (protocol test) and alice's session s-1 with sid ``sid-rp1-s1``."""
    env.provider("rp1")
    env.session("s-1", "alice", {"rp1": "sid-rp1-s1"})
    return env


# -- outcomes ----------------------------------------------------------------------------


def test_200_succeeds(one_rp: _Env) -> None:
    """A 200 makes the delivery succeeded after one attempt, audited, nothing scheduled."""
    event_id = one_rp.logout("s-1")
    delivery = one_rp.deliveries(event_id)["rp1"]
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempts == 1
    assert delivery.last_status_code == 200
    assert delivery.last_error is None
    assert delivery.next_attempt_at is None
    assert delivery.completed_at is not None
    assert one_rp.rps.requests == [("/rp1", b"sid=sid-rp1-s1")]
    assert one_rp.scheduled == []
    [audit] = one_rp.audit("delivery.succeeded")
    assert audit.outcome == "succeeded"
    assert audit.provider == "rp1"
    assert audit.user_id == "alice"
    assert audit.session_id == "s-1"
    assert audit.event_id == event_id
    assert audit.detail["delivery_id"] == delivery.id
    assert audit.detail["attempt"] == 1
    assert audit.detail["status_code"] == 200
    [completed] = one_rp.audit("logout.completed")
    assert completed.outcome == "success"


def test_400_fails_permanently(one_rp: _Env) -> None:
    """A 400 fails the delivery with its status code and schedules nothing."""
    one_rp.rps.answer("/rp1", 400)
    event_id = one_rp.logout("s-1")
    delivery = one_rp.deliveries(event_id)["rp1"]
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 1
    assert delivery.last_status_code == 400
    assert delivery.last_error == "HTTP 400"
    assert delivery.next_attempt_at is None
    assert delivery.completed_at is not None
    assert one_rp.scheduled == []
    [audit] = one_rp.audit("delivery.failed")
    assert audit.detail["status_code"] == 400
    assert audit.detail["error"] == "HTTP 400"
    assert audit.detail["error_class"] == "permanent"
    assert audit.detail["latency_ms"] >= 0
    [completed] = one_rp.audit("logout.completed")
    assert completed.outcome == "partial"


def test_503_retries_then_succeeds(one_rp: _Env) -> None:
    """A 503 schedules a retry; the retry is refused until due, then a 200 succeeds."""
    one_rp.rps.answer("/rp1", 503, 200)
    engine = one_rp.engine()
    before = utcnow()
    event_id = one_rp.logout("s-1", engine)
    delivery = one_rp.deliveries(event_id)["rp1"]
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.attempts == 1
    assert delivery.last_status_code == 503
    assert delivery.last_error == "HTTP 503"
    assert delivery.completed_at is None
    assert delivery.next_attempt_at is not None
    # initial_delay 30 s: the first retry is 15 to 30 s after the attempt
    assert before + timedelta(seconds=15) <= delivery.next_attempt_at
    assert delivery.next_attempt_at <= utcnow() + timedelta(seconds=30)
    [(scheduled_id, delay)] = one_rp.scheduled
    assert scheduled_id == delivery.id
    assert 0 < delay <= 30
    [audit] = one_rp.audit("delivery.retrying")
    assert audit.outcome == "retrying"
    assert audit.detail["error"] == "HTTP 503"
    assert audit.detail["status_code"] == 503
    assert audit.detail["attempt"] == 1
    assert audit.detail["next_attempt_at"] == delivery.next_attempt_at.isoformat()

    engine.retry([delivery.id])  # too early: the claim refuses, nothing is sent
    assert one_rp.rps.paths() == ["/rp1"]
    # an early message may be put back for later, but never for sooner than it is due
    remaining = (delivery.next_attempt_at - utcnow()).total_seconds()
    for scheduled_id, delay in one_rp.scheduled[1:]:
        assert scheduled_id == delivery.id
        assert remaining - 1 <= delay <= remaining + 1
    early = one_rp.delivery(delivery.id)
    assert early.status == DeliveryStatus.RETRYING
    assert early.attempts == 1
    assert early.next_attempt_at == delivery.next_attempt_at

    one_rp.make_due(delivery.id)
    scheduled_before = len(one_rp.scheduled)
    engine.retry([delivery.id])
    done = one_rp.delivery(delivery.id)
    assert one_rp.rps.paths() == ["/rp1", "/rp1"]
    assert done.status == DeliveryStatus.SUCCEEDED
    assert done.attempts == 2
    assert done.last_status_code == 200
    assert done.last_error is None
    assert done.next_attempt_at is None
    assert [a.detail["attempt"] for a in one_rp.audit("delivery.succeeded")] == [2]
    assert len(one_rp.scheduled) == scheduled_before


def test_retry_after_is_honoured(one_rp: _Env) -> None:
    """A 429 with Retry-After: 7 is retried no sooner than 7 s after the answer."""
    one_rp.rps.answer("/rp1", (429, {"Retry-After": "7"}))
    event_id = one_rp.logout("s-1", one_rp.engine(RetryPolicy(initial_delay=1.0)))
    delivery = one_rp.deliveries(event_id)["rp1"]
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.last_status_code == 429
    [(_, delay)] = one_rp.scheduled
    assert delay >= 7
    assert delivery.next_attempt_at is not None
    [answered] = one_rp.rps.answered_at
    assert delivery.next_attempt_at >= answered + timedelta(seconds=7)
    [audit] = one_rp.audit("delivery.retrying")
    assert audit.detail["retry_after"] == 7.0
    assert audit.detail["error_class"] == "transient"
    assert audit.detail["latency_ms"] >= 0  # the exchange was timed (audit show reads it)


def test_connection_failure_is_retried(one_rp: _Env) -> None:
    """A transport error (no HTTP status at all) is transient: retrying, no status code."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    refusing = HttpSender(transport=httpx.MockTransport(refuse))
    one_rp.senders.append(refusing)
    event_id = one_rp.logout("s-1", one_rp.engine(sender=lambda: refusing))
    delivery = one_rp.deliveries(event_id)["rp1"]
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.last_status_code is None
    assert delivery.last_error is not None
    assert "connection failed" in delivery.last_error
    assert [d for d, _ in one_rp.scheduled] == [delivery.id]


def test_gives_up_after_max_attempts(one_rp: _Env) -> None:
    """Transient failures until max_attempts end in failed, 'gave up after N attempts'."""
    one_rp.rps.answer("/rp1", 503)
    engine = one_rp.engine(RetryPolicy(max_attempts=3, initial_delay=30.0))
    event_id = one_rp.logout("s-1", engine)
    delivery_id = one_rp.deliveries(event_id)["rp1"].id
    for _ in range(2):
        assert one_rp.delivery(delivery_id).status == DeliveryStatus.RETRYING
        one_rp.make_due(delivery_id)
        engine.retry([delivery_id])
    final = one_rp.delivery(delivery_id)
    assert final.status == DeliveryStatus.FAILED
    assert final.attempts == 3
    assert final.last_status_code == 503
    assert final.last_error is not None
    assert "gave up after 3 attempts" in final.last_error
    assert final.next_attempt_at is None
    assert one_rp.rps.paths() == ["/rp1"] * 3
    assert [d for d, _ in one_rp.scheduled] == [delivery_id] * 2
    assert [a.detail["attempt"] for a in one_rp.audit("delivery.retrying")] == [1, 2]
    [failed] = one_rp.audit("delivery.failed")
    assert "gave up after 3 attempts" in failed.detail["error"]

    one_rp.make_due(delivery_id)
    engine.retry([delivery_id])  # a failed delivery is final
    assert len(one_rp.rps.requests) == 3


def test_succeeded_delivery_is_never_sent_again(one_rp: _Env) -> None:
    """Delivering a succeeded delivery again sends nothing and changes nothing."""
    engine = one_rp.engine()
    event_id = one_rp.logout("s-1", engine)
    delivery = one_rp.deliveries(event_id)["rp1"]
    assert delivery.status == DeliveryStatus.SUCCEEDED
    engine.retry([delivery.id])
    one_rp.make_due(delivery.id)
    engine.retry([delivery.id])
    one_rp.engine().retry([delivery.id])
    again = one_rp.delivery(delivery.id)
    assert len(one_rp.rps.requests) == 1
    assert one_rp.scheduled == []
    assert again.status == DeliveryStatus.SUCCEEDED
    assert again.attempts == 1
    assert len(one_rp.audit("delivery.succeeded")) == 1


def test_unknown_ids_are_ignored(one_rp: _Env) -> None:
    """Delivering ids that do not exist sends nothing and records nothing."""
    before = len(one_rp.audit())
    one_rp.engine().retry([str(uuid.uuid4())])
    one_rp.engine().retry([])
    assert one_rp.rps.requests == []
    assert len(one_rp.audit()) == before


# -- skips and handler failures ----------------------------------------------------------


def test_disabled_provider_and_missing_handler_are_skipped(env: _Env) -> None:
    """A disabled provider and a protocol without handler are skipped, with reasons."""
    env.provider("off", enabled=False)
    with env.database.begin() as db:  # stored before such providers were refused
        db.add(Provider(name="legacy", protocol="other", enabled=True, settings={}))
    env.provider("rp1")
    env.session("s-1", "alice", {"off": "sid-off", "legacy": "sid-legacy", "rp1": "sid-rp1"})
    event_id = env.logout("s-1")
    deliveries = env.deliveries(event_id)
    assert deliveries["off"].status == DeliveryStatus.SKIPPED
    assert deliveries["legacy"].status == DeliveryStatus.SKIPPED
    assert deliveries["rp1"].status == DeliveryStatus.SUCCEEDED
    assert env.rps.paths() == ["/rp1"]
    reasons = {row.provider: row.detail["reason"] for row in env.audit("delivery.skipped")}
    assert reasons["off"] == "provider is disabled"
    assert "no handler for protocol 'other'" in reasons["legacy"]
    assert set(reasons) == {"off", "legacy"}
    assert deliveries["off"].completed_at is not None
    assert env.scheduled == []


def test_a_handler_may_skip_a_provider(env: _Env) -> None:
    """A provider its handler says takes nothing now is skipped with the handler's reason,
    not failed: nothing is sent and ``deliveries retry --failed`` has nothing to take."""
    env.provider("held", protocol="paused")
    env.provider("rp1")
    env.session("s-1", "alice", {"held": "sid-held", "rp1": "sid-rp1"})
    event_id = env.logout("s-1")
    deliveries = env.deliveries(event_id)
    assert deliveries["held"].status == DeliveryStatus.SKIPPED
    assert deliveries["rp1"].status == DeliveryStatus.SUCCEEDED
    assert env.rps.paths() == ["/rp1"]
    [skipped] = env.audit("delivery.skipped")
    assert (skipped.provider, skipped.detail["reason"]) == ("held", "the stream is paused")


def test_settings_that_no_longer_validate_are_skipped(env: _Env) -> None:
    """A stored provider whose settings its handler now refuses is skipped, not sent."""
    with env.database.begin() as db:
        db.add(Provider(name="stale", protocol="strict", enabled=True, settings={}))
    env.session("s-1", "alice", {"stale": "sid-stale"})
    event_id = env.logout("s-1")
    assert env.deliveries(event_id)["stale"].status == DeliveryStatus.SKIPPED
    [skipped] = env.audit("delivery.skipped")
    assert "no longer validate" in skipped.detail["reason"]
    assert env.rps.requests == []


def test_handler_permanent_error_fails_without_request(env: _Env) -> None:
    """A handler refusing to build the request fails the delivery; nothing is sent."""
    env.provider("nosid", protocol="refusing")
    env.session("s-1", "alice", {"nosid": "sid-x"})
    event_id = env.logout("s-1")
    delivery = env.deliveries(event_id)["nosid"]
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error == "session has no sid to log out"
    assert delivery.last_status_code is None
    assert delivery.attempts == 1
    assert env.rps.requests == []
    assert env.scheduled == []
    [failed] = env.audit("delivery.failed")
    assert failed.detail["error"] == "session has no sid to log out"
    assert "latency_ms" not in failed.detail  # nothing was sent: no latency to tell


def test_a_handler_bug_fails_its_delivery_only(env: _Env) -> None:
    """A handler raising anything but a DeliveryError (a ValueError building the request, a
    ValidationError reading the answer) fails that delivery, audited, naming only the
    exception type; every other delivery of the batch succeeds, nothing is retried."""
    for name, protocol in (("ok", "test"), ("buggy", "raising"), ("strict", "misreading")):
        env.provider(name, protocol=protocol)
    env.session("s-1", "alice", {"ok": "sid-ok-1", "buggy": "sid-secret-1"})
    env.session("s-2", "bob", {"ok": "sid-ok-2", "strict": "sid-secret-2"})
    first, second = _event("s-1"), _event("s-2")
    configure_logging("INFO", "json")  # an earlier test may have left ERROR in force
    with structlog.testing.capture_logs() as logs:
        results = env.engine().handle_batch([(first, "m-1"), (second, "m-2")])
    assert results == [HandleResult.COMPLETED, HandleResult.COMPLETED]
    statuses = {
        (event["session_id"], name): delivery.status
        for event in (first, second)
        for name, delivery in env.deliveries(str(event["event_id"])).items()
    }
    assert statuses == {
        ("s-1", "ok"): DeliveryStatus.SUCCEEDED,
        ("s-1", "buggy"): DeliveryStatus.FAILED,
        ("s-2", "ok"): DeliveryStatus.SUCCEEDED,
        ("s-2", "strict"): DeliveryStatus.FAILED,
    }
    assert env.scheduled == []
    assert sorted(env.rps.paths()) == ["/ok", "/ok", "/strict"]
    failed = {row.provider: row for row in env.audit("delivery.failed")}
    assert set(failed) == {"buggy", "strict"}
    assert "building the request (ValueError)" in failed["buggy"].detail["error"]
    assert "reading the answer (ValidationError)" in failed["strict"].detail["error"]
    assert failed["strict"].detail["status_code"] == 200
    warned = [log for log in logs if log.get("error") in {"ValueError", "ValidationError"}]
    assert [log["step"] for log in warned] == ["building the request", "reading the answer"]
    everything = json.dumps(logs, default=str) + json.dumps(
        [row.detail for row in env.audit()], default=str
    )
    assert "sid-secret" not in everything


def test_frontchannel_provider_is_skipped(env: _Env) -> None:
    """A provider whose handler says front-channel iframe is skipped, never sent."""
    env.provider("portal", protocol="iframe")
    env.session("s-1", "alice", {"portal": "sid-portal"})
    event_id = env.logout("s-1")
    assert env.deliveries(event_id)["portal"].status == DeliveryStatus.SKIPPED
    assert env.rps.requests == []
    [skipped] = env.audit("delivery.skipped")
    assert "frontchannel_iframe" in skipped.detail["reason"]


def test_one_event_mixes_outcomes(env: _Env) -> None:
    """Several providers in one batch each get their own outcome."""
    for name in ("ok", "bad", "busy"):
        env.provider(name)
    env.rps.answer("/bad", 404)
    env.rps.answer("/busy", 503)
    env.session("s-1", "alice", {"ok": "sid-ok", "bad": "sid-bad", "busy": "sid-busy"})
    event_id = env.logout("s-1")
    statuses = {name: d.status for name, d in env.deliveries(event_id).items()}
    assert statuses == {
        "ok": DeliveryStatus.SUCCEEDED,
        "bad": DeliveryStatus.FAILED,
        "busy": DeliveryStatus.RETRYING,
    }
    assert sorted(env.rps.paths()) == ["/bad", "/busy", "/ok"]
    [completed] = env.audit("logout.completed")
    assert completed.outcome == "partial"
    assert completed.detail["deliveries"]["succeeded"] == 1


@pytest.mark.parametrize(
    ("count", "spread", "sizes"),
    [
        (1, 8, [1]),
        (5, 8, [1] * 5),
        (9, 8, [2, 2, 2, 2, 1]),
        (128, 8, [16] * 8),
        (129, 8, [16] * 8 + [1]),
        (160, 8, [16] * 10),
        (40, 20, [2] * 20),
    ],
)
def test_requests_are_signed_in_consecutive_groups(
    count: int, spread: int, sizes: list[int]
) -> None:
    """Groups of at most 16, ``spread`` of them while the requests last (as many as the
    signing threads, at least 8), more past ``spread`` x 16; in order, none lost."""
    works = cast(list[Work], list(range(count)))
    groups = _groups(works, spread)
    assert [len(group) for group in groups] == sizes
    assert [work for group in groups for work in group] == works


class _CountingPool(ThreadPoolExecutor):
    """Signing threads that count the tasks handed to them."""

    def __init__(self) -> None:
        super().__init__(max_workers=2, thread_name_prefix="test-sign")
        self.tasks = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.tasks += 1
        return super().submit(fn, *args, **kwargs)


def test_signing_threads_build_a_large_fan_out_in_a_few_groups(env: _Env) -> None:
    """40 deliveries of one event are built by the signing threads in a few tasks, not one
    per request (each hand-over costs more than an ES256 signature), and every delivery
    still gets its own outcome: a handler's bug in one build fails that delivery only."""
    names = [f"rp{index:02d}" for index in range(40)]
    for name in names:
        env.provider(name)
    env.provider("buggy", protocol="raising")
    env.rps.answer("/rp07", 404)
    env.session("s-1", "alice", {name: f"sid-{name}" for name in [*names, "buggy"]})
    pool = _CountingPool()
    policy = RetryPolicy(max_attempts=3, initial_delay=30.0, max_delay=600.0)
    try:
        engine = env.engine(attempts=Attempts(lambda: env.sender, policy, pool))
        event_id = env.logout("s-1", engine)
    finally:
        pool.shutdown()
    statuses = {name: d.status for name, d in env.deliveries(event_id).items()}
    assert statuses == {
        **{name: DeliveryStatus.SUCCEEDED for name in names if name != "rp07"},
        "rp07": DeliveryStatus.FAILED,
        "buggy": DeliveryStatus.FAILED,
    }
    assert sorted(env.rps.paths()) == sorted(f"/{name}" for name in names)
    assert 1 < pool.tasks <= 8, f"{pool.tasks} signing tasks for 41 requests"


# -- secrets -----------------------------------------------------------------------------


def test_audit_never_contains_the_request_body(env: _Env) -> None:
    """No audit record's detail holds the sid-bearing request body (or its echo)."""
    for name in ("ok", "bad", "busy", "limited"):
        env.provider(name)
    env.rps.answer("/bad", 400)
    env.rps.answer("/busy", 503, 200)
    env.rps.answer("/limited", (429, {"Retry-After": "3"}), 500)
    sids = {name: f"secret-sid-{name}-{uuid.uuid4().hex}" for name in ("ok", "bad", "busy")}
    sids["limited"] = f"secret-sid-limited-{uuid.uuid4().hex}"
    env.session("s-1", "alice", sids)
    engine = env.engine()
    event_id = env.logout("s-1", engine)
    for delivery in env.deliveries(event_id).values():
        env.make_due(delivery.id)
    engine.retry([d.id for d in env.deliveries(event_id).values()])
    bodies = [content for _, content in env.rps.requests]
    assert len(bodies) == 6
    rows = env.audit()
    assert {row.type for row in rows} >= {
        "delivery.succeeded",
        "delivery.failed",
        "delivery.retrying",
    }
    for row in rows:
        text = json.dumps(row.detail)
        for sid in sids.values():
            assert sid not in text, (row.type, text)
        for body in bodies:
            assert body.decode() not in text, (row.type, text)


# -- concurrent claims -------------------------------------------------------------------


class _Deferred(Attempts):
    """Sends nothing: every delivery the engine hands over is left open and due now."""

    def __init__(self) -> None:
        super().__init__(_no_sender, RetryPolicy())
        self.handed: list[str] = []

    def attempt(self, works: Sequence[Work], leases: Leases) -> dict[str, Outcome]:
        self.handed.extend(work.delivery_id for work in works)
        due = utcnow() - timedelta(seconds=1)
        return {
            work.delivery_id: Outcome(DeliveryStatus.RETRYING, "deferred", None, due)
            for work in works
        }


def _no_sender() -> HttpSender:
    raise AssertionError("the deferred attempts send nothing")


def _deferring(env: _Env, deferred: _Deferred) -> LogoutEngine:
    """An engine whose attempts ``deferred`` carries out, and whose retries go nowhere."""
    return env.engine(attempts=deferred, schedule=lambda delivery_id, delay: None)


def _race(env: _Env, delivery_ids: list[str]) -> None:
    """Two workers, each with its own engine and sender, deliver the same ids at once."""
    second = env.new_sender()  # a second worker process has a sender of its own
    workers = [env.engine(), env.engine(sender=lambda: second)]
    barrier = threading.Barrier(len(workers))

    def run(engine: LogoutEngine) -> None:
        barrier.wait(timeout=10)  # both claim at the same moment
        engine.retry(delivery_ids)

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        futures = [pool.submit(run, worker) for worker in workers]
        for future in futures:
            future.result(timeout=30)  # re-raises anything a worker raised


def test_two_engines_racing_send_each_delivery_once(env: _Env) -> None:
    """Two engines claiming the same deliveries at once send each exactly once."""
    names = [f"rp{i}" for i in range(4)]
    for name in names:
        env.provider(name)
    rounds = 3
    for round_ in range(rounds):
        env.session(f"s-{round_}", "alice", {name: f"sid-{name}-{round_}" for name in names})
        deferred = _Deferred()
        env.logout(f"s-{round_}", _deferring(env, deferred))
        assert len(deferred.handed) == len(names)
        _race(env, deferred.handed)

    sent = sorted(content for _, content in env.rps.requests)
    expected = sorted(
        f"sid=sid-{name}-{round_}".encode() for name in names for round_ in range(rounds)
    )
    assert sent == expected
    with env.database() as db:
        rows = list(db.scalars(select(Delivery)))
    assert len(rows) == len(names) * rounds
    # attempt 1 was the deferred one; the race made exactly one more
    assert all(row.status == DeliveryStatus.SUCCEEDED and row.attempts == 2 for row in rows)
    assert len(env.audit("delivery.succeeded")) == len(names) * rounds


def test_logout_settles_when_the_last_retry_ends(one_rp: _Env) -> None:
    """logout.settled appears only once every delivery is final, with the final counts."""
    one_rp.rps.answer("/rp1", (503, {}), (200, {}))
    event_id = one_rp.logout("s-1", one_rp.engine(RetryPolicy(initial_delay=1.0)))
    assert one_rp.audit("logout.settled") == []
    [completed] = one_rp.audit("logout.completed")
    assert completed.outcome == "retrying"
    delivery = one_rp.deliveries(event_id)["rp1"]
    with one_rp.database.begin() as db:
        db.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    one_rp.engine().retry([delivery.id])
    [settled] = one_rp.audit("logout.settled")
    assert settled.event_id == event_id
    assert settled.outcome == "success"
    assert settled.detail["deliveries"]["succeeded"] == 1
    assert settled.detail["deliveries"]["retrying"] == 0
    one_rp.engine().settle([event_id])
    assert len(one_rp.audit("logout.settled")) == 1


# -- fenced attempts and leases ----------------------------------------------------------


def _deferred_delivery(env: _Env) -> str:
    """The one delivery of a logout of s-1, left open and due (its first attempt deferred)."""
    deferred = _Deferred()
    env.logout("s-1", _deferring(env, deferred))
    [delivery_id] = deferred.handed
    return delivery_id


def _final_records(env: _Env, delivery_id: str) -> list[str]:
    return [
        row.type
        for row in env.audit()
        if row.type in ("delivery.succeeded", "delivery.failed")
        and row.detail["delivery_id"] == delivery_id
    ]


def test_a_superseded_attempt_records_nothing(one_rp: _Env) -> None:
    """An attempt whose lease ran out and was claimed again writes no row, audit or retry."""
    delivery_id = _deferred_delivery(one_rp)
    stale = one_rp.engine()
    [first] = stale.deliveries.claim([delivery_id])
    one_rp.make_due(delivery_id)  # its lease ran out while it waited
    fresh = one_rp.engine()
    [second] = fresh.deliveries.claim([delivery_id])
    assert second.attempt == first.attempt + 1
    with one_rp.database.begin() as db:
        won = fresh.deliveries.record(
            db.connection(), [second], {delivery_id: Outcome(DeliveryStatus.SUCCEEDED)}
        )
    assert won.lost == set()
    assert len(won.entries) == 1
    retry = Outcome(DeliveryStatus.RETRYING, "no answer", None, utcnow(), retry_in=5)
    configure_logging("INFO", "json")  # an earlier test may have left WARNING in force
    with structlog.testing.capture_logs() as logs, one_rp.database.begin() as db:
        lost = stale.deliveries.record(db.connection(), [first], {delivery_id: retry})
    assert (lost.lost, lost.entries, lost.retries) == ({delivery_id}, [], [])
    [line] = [entry for entry in logs if "lost its lease" in entry["event"]]
    assert line["log_level"] == "info"
    assert (line["delivery_id"], line["attempt"]) == (delivery_id, first.attempt)
    assert one_rp.delivery(delivery_id).status == DeliveryStatus.SUCCEEDED


def test_a_superseded_attempt_records_nothing_while_the_next_is_in_flight(one_rp: _Env) -> None:
    """The attempt number fences: with the delivery still open (the newer attempt has not
    answered yet), the older attempt's outcome is not recorded."""
    delivery_id = _deferred_delivery(one_rp)
    stale = one_rp.engine()
    [first] = stale.deliveries.claim([delivery_id])
    one_rp.make_due(delivery_id)
    [second] = one_rp.engine().deliveries.claim([delivery_id])
    with one_rp.database.begin() as db:
        lost = stale.deliveries.record(
            db.connection(), [first], {delivery_id: Outcome(DeliveryStatus.FAILED, "HTTP 400")}
        )
    assert (lost.lost, lost.entries) == ({delivery_id}, [])
    row = one_rp.delivery(delivery_id)
    assert (row.status, row.attempts, row.last_error) == (
        DeliveryStatus.RETRYING,
        second.attempt,
        "deferred",
    )


def test_a_final_status_never_changes(one_rp: _Env) -> None:
    """An attempt that recorded a final outcome cannot record another over it."""
    delivery_id = _deferred_delivery(one_rp)
    engine = one_rp.engine()
    [work] = engine.deliveries.claim([delivery_id])
    for outcome in (Outcome(DeliveryStatus.SUCCEEDED), Outcome(DeliveryStatus.FAILED, "HTTP 400")):
        with one_rp.database.begin() as db:
            recorded = engine.deliveries.record(db.connection(), [work], {delivery_id: outcome})
            write_audit(db.connection(), recorded.entries)
    assert recorded.lost == {delivery_id}, "the second outcome was not recorded"
    assert one_rp.delivery(delivery_id).status == DeliveryStatus.SUCCEEDED
    assert _final_records(one_rp, delivery_id) == ["delivery.succeeded"]
    assert engine.deliveries.claim([delivery_id]) == [], "a final delivery is never claimed again"


def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.02)


def test_a_renewal_moves_held_leases_forward(one_rp: _Env) -> None:
    """Renewing extends the held attempt's and event's leases to one lease from now."""
    delivery_id = _deferred_delivery(one_rp)
    engine = one_rp.engine()  # leases of 30 s
    [work] = engine.deliveries.claim([delivery_id])
    leases = Leases(engine_of(one_rp.database), timedelta(seconds=600))
    with one_rp.database.begin() as db:  # as if the event were still being handled
        db.execute(update(EventRecord).values(status="processing", lease_until=None))
        event_id = db.scalar(select(EventRecord.event_id))
    assert event_id is not None
    with leases.hold([(work.delivery_id, work.attempt, work.context.now)], [event_id]):
        lease = leases.get(work.delivery_id, work.attempt)
        assert lease is not None
        leases.renew([lease], [event_id])
        assert lease.time_left() > 590
    renewed = one_rp.delivery(delivery_id).next_attempt_at
    with one_rp.database() as db:
        event_lease = db.scalar(select(EventRecord.lease_until))
    assert renewed is not None
    assert event_lease is not None
    for until in (renewed, event_lease):
        assert utcnow() + timedelta(seconds=590) < until < utcnow() + timedelta(seconds=601)


def test_the_keeper_renews_while_held_and_stops_after(one_rp: _Env) -> None:
    """The keeper thread renews held leases by itself, and ends once nothing is held."""
    delivery_id = _deferred_delivery(one_rp)
    [work] = one_rp.engine().deliveries.claim([delivery_id])
    claimed_until = one_rp.delivery(delivery_id).next_attempt_at
    leases = Leases(engine_of(one_rp.database), timedelta(seconds=0.3))  # renewed every 0.1 s
    with leases.hold([(work.delivery_id, work.attempt, work.context.now)]):
        _until(
            lambda: one_rp.delivery(delivery_id).next_attempt_at != claimed_until,
            "the held lease renewed",
        )
    _until(lambda: leases._thread is None, "the keeper thread ended")
    last = one_rp.delivery(delivery_id).next_attempt_at
    time.sleep(0.4)
    assert one_rp.delivery(delivery_id).next_attempt_at == last, "renewed after the hold"


def test_a_renewal_finds_a_superseded_attempt_lost(one_rp: _Env) -> None:
    """When another attempt claimed the delivery, the holder's lease is lost: no time left."""
    delivery_id = _deferred_delivery(one_rp)
    engine = one_rp.engine()
    [work] = engine.deliveries.claim([delivery_id])
    with engine.deliveries.hold([work]):
        lease = engine.leases.get(work.delivery_id, work.attempt)
        assert lease is not None
        assert lease.time_left() > 0
        one_rp.make_due(delivery_id)
        assert len(one_rp.engine().deliveries.claim([delivery_id])) == 1
        engine.leases.renew([lease], [])
        assert lease.lost
        assert lease.time_left() == 0


def test_settled_on_the_retry_path_names_session_and_user(one_rp: _Env) -> None:
    """``logout.settled`` written by the last retry carries the event's session and user."""
    one_rp.rps.answer("/rp1", (503, {}), (200, {}))
    event_id = one_rp.logout("s-1", one_rp.engine(RetryPolicy(initial_delay=1.0)))
    delivery = one_rp.deliveries(event_id)["rp1"]
    one_rp.make_due(delivery.id)
    one_rp.engine().retry([delivery.id])
    [settled] = one_rp.audit("logout.settled")
    assert (settled.session_id, settled.user_id) == ("s-1", "alice")
    assert settled.detail["deliveries"]["succeeded"] == 1
