"""Remember device: each path of the rule (cookie known, same IP, neither, expired, off), as
session.started records it on the session and in its audit record, and as DeviceCheck
answers before a login (SQLite, the real runtime)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from orchestrator import Runtime, Settings
from orchestrator.api_tokens import hash_token
from orchestrator.audit import AuditQuery, query_audit
from orchestrator.store import IdpSession
from schemas import DeviceVerdict, SessionStarted

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOME = "81.2.69.142"
CAFE = "216.160.83.56"


@pytest.fixture
def remembering(settings: Settings) -> Iterator[Runtime]:
    """remember_device = 30 days (written in the compact notation)."""
    runtime = Runtime.start(settings.with_overrides(remember_device="30d"), handlers={})
    yield runtime
    runtime.close()


def _login(session_id: str, at: datetime, user: str = "alice", **fields: Any) -> SessionStarted:
    return SessionStarted(
        event_id=uuid.uuid4(),
        occurred_at=at,
        initiator="user",
        session_id=session_id,
        user_id=user,
        **fields,
    )


def _start(
    runtime: Runtime, session_id: str, at: datetime, *, ip: str | None = HOME, **fields: Any
) -> DeviceVerdict:
    """Start ``session_id`` for alice; the verdict as the session and its record keep it."""
    runtime.activity().started(_login(session_id, at, ip=ip, **fields))
    with runtime.database() as db:
        row = db.get(IdpSession, session_id)
        assert row is not None
        records = query_audit(db, AuditQuery(session_id=session_id, type="session.started"))
    (record,) = records
    assert record.detail["known_device"] == row.known_device
    assert record.detail["known_device_reason"] == row.known_device_reason
    assert row.known_device is not None
    return DeviceVerdict(known=row.known_device, reason=row.known_device_reason)


def _end(runtime: Runtime, session_id: str) -> None:
    with runtime.database.begin() as db:
        row = db.get(IdpSession, session_id)
        assert row is not None
        row.ended_at = row.last_seen


def test_a_cookie_seen_within_the_window_is_known(remembering: Runtime) -> None:
    """A cookie seen 29 days ago on an ended session, from another address: known by cookie."""
    _start(remembering, "s-1", T0, ip=HOME, device_id="dev-1")
    _end(remembering, "s-1")
    later = T0 + timedelta(days=29)
    verdict = _start(remembering, "s-2", later, ip=CAFE, device_id="dev-1")
    assert verdict == DeviceVerdict(known=True, reason="cookie")


def test_an_open_session_from_the_same_ip_is_known(remembering: Runtime) -> None:
    """No cookie, but alice has an open session from the login's address: known by IP."""
    _start(remembering, "s-1", T0, ip=HOME)
    verdict = _start(remembering, "s-2", T0 + timedelta(hours=1), ip=HOME)
    assert verdict == DeviceVerdict(known=True, reason="same_ip")


def test_an_ended_session_from_the_same_ip_does_not_vouch(remembering: Runtime) -> None:
    """The IP rule needs an open session: once it ended, the address alone is unknown."""
    _start(remembering, "s-1", T0, ip=HOME)
    _end(remembering, "s-1")
    verdict = _start(remembering, "s-2", T0 + timedelta(hours=1), ip=HOME)
    assert verdict == DeviceVerdict(known=False, reason="unknown")


def test_neither_cookie_nor_ip_is_unknown(remembering: Runtime) -> None:
    """Another cookie, another address: unknown; the first login of a user is unknown too."""
    assert _start(remembering, "s-1", T0, ip=HOME, device_id="dev-1") == DeviceVerdict(
        known=False, reason="unknown"
    )
    verdict = _start(remembering, "s-2", T0 + timedelta(hours=1), ip=CAFE, device_id="dev-2")
    assert verdict == DeviceVerdict(known=False, reason="unknown")


def test_another_users_cookie_is_not_this_users_device(remembering: Runtime) -> None:
    """A cookie seen for bob vouches for nothing of alice's."""
    remembering.activity().started(_login("b-1", T0, "bob", ip=HOME, device_id="dev-1"))
    verdict = _start(remembering, "s-1", T0 + timedelta(hours=1), ip=CAFE, device_id="dev-1")
    assert verdict == DeviceVerdict(known=False, reason="unknown")


def test_a_cookie_seen_longer_ago_than_the_window_has_expired(remembering: Runtime) -> None:
    """Last seen 31 days before the login (window 30 days): the cookie no longer vouches."""
    _start(remembering, "s-1", T0, ip=HOME, device_id="dev-1")
    _end(remembering, "s-1")
    verdict = _start(remembering, "s-2", T0 + timedelta(days=31), ip=CAFE, device_id="dev-1")
    assert verdict == DeviceVerdict(known=False, reason="unknown")
    check = remembering.device_check()
    at = T0 + timedelta(days=30)
    assert check.check("alice", device_id="dev-1", at=at) == DeviceVerdict(
        known=True, reason="cookie"
    )


def test_zero_turns_the_rule_off(settings: Settings) -> None:
    """remember_device = 0 (the default): the same cookie and IP are not known (reason off)."""
    runtime = Runtime.start(settings, handlers={})
    try:
        assert runtime.settings.remember_device == timedelta(0)
        _start(runtime, "s-1", T0, ip=HOME, device_id="dev-1")
        verdict = _start(runtime, "s-2", T0 + timedelta(hours=1), ip=HOME, device_id="dev-1")
        assert verdict == DeviceVerdict(known=False, reason="off")
        answer = runtime.device_check().check("alice", device_id="dev-1", ip=HOME)
        assert answer == DeviceVerdict(known=False, reason="off")
    finally:
        runtime.close()


@pytest.mark.parametrize("text", ["30d", "days=30", "P30D", "2592000"])
def test_remember_device_takes_every_notation(settings: Settings, text: str) -> None:
    """The compact, keyword, ISO 8601 and plain-seconds notations read the same window."""
    assert settings.with_overrides(remember_device=text).remember_device == timedelta(days=30)


def test_the_check_before_login_records_nothing(remembering: Runtime) -> None:
    """DeviceCheck answers each path and writes no session, record or event."""
    _start(remembering, "s-1", T0, ip=HOME, device_id="dev-1")
    check = remembering.device_check()
    soon = T0 + timedelta(days=1)
    assert check.check("alice", device_id="dev-1", ip=CAFE, at=soon).reason == "cookie"
    assert check.check("alice", device_id="other", ip=HOME, at=soon).reason == "same_ip"
    assert check.check("alice", device_id="other", ip=CAFE, at=soon).reason == "unknown"
    assert check.check("alice", at=soon).reason == "unknown"
    with remembering.database() as db:
        assert list(db.scalars(select(IdpSession.session_id))) == ["s-1"]
        assert len(query_audit(db, AuditQuery(limit=None))) == 1


def test_only_the_hash_of_the_cookie_is_stored_and_a_redelivery_keeps_the_verdict(
    remembering: Runtime,
) -> None:
    """The session keeps the id's SHA-256, never the id; the audit record neither; a start
    handled again keeps its first verdict, so the session and its record agree."""
    _start(remembering, "s-1", T0, ip=HOME, device_id="dev-secret")
    first = _login("s-2", T0 + timedelta(hours=1), ip=HOME, device_id="dev-other")
    remembering.activity().started(first)
    _end(remembering, "s-1")
    remembering.activity().started(first)  # redelivered: judged now, it would be unknown
    with remembering.database() as db:
        cookie = db.get(IdpSession, "s-1")
        assert cookie is not None
        assert cookie.device_hash == hash_token("dev-secret") != "dev-secret"
        row = db.get(IdpSession, "s-2")
        assert row is not None
        assert (row.known_device, row.known_device_reason) == (True, "same_ip")
        (started,) = query_audit(db, AuditQuery(session_id="s-2", type="session.started"))
        assert started.detail["known_device_reason"] == "same_ip"
        records = query_audit(db, AuditQuery(limit=None))
    assert all("dev-secret" not in str(record.detail) for record in records)


def test_a_validated_start_carries_the_cookie_id_s_hash_never_the_id() -> None:
    """Validation swaps ``device_id`` for its SHA-256 (``device_hash``); an IdP may give the
    hash itself; a hash that is not the id's, or is no hex SHA-256, names ``device_hash``."""
    digest = hash_token("dev-1")  # the same SHA-256 an API token's hash is
    started = _login("s-1", T0, device_id="dev-1")
    assert (started.device_id, started.device_hash) == (None, digest)
    assert "dev-1" not in started.model_dump_json()
    assert started.model_dump(exclude_unset=True)["device_hash"] == digest
    assert _login("s-1", T0, device_hash=digest).device_hash == digest
    assert _login("s-1", T0, device_id="dev-1", device_hash=digest).device_hash == digest
    with pytest.raises(ValidationError, match="device_hash: is not the SHA-256 of device_id"):
        _login("s-1", T0, device_id="dev-1", device_hash=hash_token("dev-2"))
    with pytest.raises(ValidationError, match="device_hash"):
        _login("s-1", T0, device_hash=digest.upper())


def test_a_start_given_the_hash_is_known_by_the_same_cookie(remembering: Runtime) -> None:
    """An IdP that hashes the cookie id itself: the same verdicts as with the id."""
    _start(remembering, "s-1", T0, ip=HOME, device_hash=hash_token("dev-1"))
    verdict = _start(remembering, "s-2", T0 + timedelta(hours=1), ip=CAFE, device_id="dev-1")
    assert verdict == DeviceVerdict(known=True, reason="cookie")
