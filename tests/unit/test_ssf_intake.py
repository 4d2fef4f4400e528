"""Accepting verified SETs (SQLite, the in-process broker): each acting event goes to the
outbox under an id derived from issuer, jti and type; the jti is kept against replay until
it is too old to pass the freshness check, then deleted; every SET is audited once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select

from orchestrator.publishing import Publisher
from orchestrator.ssf_intake import ReceivedSet, SetIntake, event_id_of
from orchestrator.store import (
    AuditRow,
    Database,
    OutboxRow,
    make_database,
    make_engine,
    upgrade,
)
from orchestrator.store import (
    ReceivedSet as ReceivedRow,
)
from protocols.ssf.receiving import SetRefusedError
from protocols.ssf.signals import Signal
from tests.ssf_support import ISSUER, SESSION_REVOKED, VERIFICATION

MAX_AGE = 300.0


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    engine = make_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    upgrade(engine)
    try:
        yield make_database(engine)
    finally:
        engine.dispose()


@pytest.fixture
def intake(database: Database) -> SetIntake:
    return SetIntake(database, Publisher(StubBroker(), database, "ssftest"))


def _revoked(jti: str, iat: float, session_id: str = "s-1") -> ReceivedSet:
    signal = Signal(SESSION_REVOKED, "session", session_id)
    return ReceivedSet("upstream", ISSUER, jti, iat, [signal])


def test_an_acting_set_is_published_once_and_its_replay_refused(
    database: Database, intake: SetIntake
) -> None:
    received = _revoked("jti-1", time.time())
    [effect] = intake.accept(received, MAX_AGE)
    event_id = event_id_of(ISSUER, "jti-1", received.iat, SESSION_REVOKED)
    assert effect == {
        "type": SESSION_REVOKED,
        "action": "session",
        "event_id": event_id,
        "event_type": "session.revoke",
    }
    with pytest.raises(SetRefusedError, match="replay") as caught:
        intake.accept(received, MAX_AGE)
    assert caught.value.err == "invalid_request"
    with database() as db:
        [row] = db.scalars(select(OutboxRow))
        [record] = db.scalars(select(AuditRow).where(AuditRow.type == "ssf.received"))
    assert row.event_id == event_id
    assert row.payload["initiator"] == "system"
    assert row.payload["actor"] == "upstream"
    assert row.payload["session_id"] == "s-1"
    assert (record.outcome, record.event_id, record.detail["jti"]) == (
        "accepted",
        event_id,
        "jti-1",
    )


def test_an_ignored_set_publishes_nothing_and_is_audited_as_ignored(
    database: Database, intake: SetIntake
) -> None:
    signal = Signal(VERIFICATION, "ignore", why="an event type this receiver does not act on")
    intake.accept(ReceivedSet("upstream", ISSUER, "jti-v", time.time(), [signal]), MAX_AGE)
    with database() as db:
        assert list(db.scalars(select(OutboxRow))) == []
        [record] = db.scalars(select(AuditRow).where(AuditRow.type == "ssf.received"))
    assert record.outcome == "ignored"
    assert record.detail["events"] == [
        {"type": VERIFICATION, "action": "ignore", "why": signal.why}
    ]


def test_a_jti_is_forgotten_once_its_set_would_be_stale(
    database: Database, intake: SetIntake
) -> None:
    """A jti kept past max_age (+ 60 s of clock skew) is deleted by the next accepted SET."""
    intake.accept(_revoked("old", time.time() - MAX_AGE - 61, "s-old"), MAX_AGE)
    intake.accept(_revoked("recent", time.time() - 10, "s-recent"), MAX_AGE)
    with database() as db:
        kept = set(db.scalars(select(ReceivedRow.jti)))
    assert kept == {"recent"}


def test_a_subject_that_is_no_identifier_is_an_invalid_request(intake: SetIntake) -> None:
    with pytest.raises(SetRefusedError) as caught:
        intake.accept(_revoked("jti-bad", time.time(), "bad\x00id"), MAX_AGE)
    assert caught.value.err == "invalid_request"
    assert "subject's session id" in caught.value.description


def test_a_session_named_with_its_user_is_published_with_that_user_to_check(
    database: Database, intake: SetIntake
) -> None:
    """The intake does not look the session up (it may be recorded later, or for someone
    else): the event carries the user, and the engine ends the session only if it is theirs."""
    signals = [Signal(SESSION_REVOKED, "session", "s-bob", user="alice")]
    [effect] = intake.accept(
        ReceivedSet("upstream", ISSUER, "jti-own", time.time(), signals), MAX_AGE
    )
    assert effect["action"] == "session"
    with database() as db:
        [row] = db.scalars(select(OutboxRow))
    assert (row.payload["session_id"], row.payload["user_id"]) == ("s-bob", "alice")


def test_a_jti_reused_with_another_iat_is_a_new_event(
    database: Database, intake: SetIntake
) -> None:
    """After the replay window a transmitter may reuse a jti: a new iat, a new event (not an
    ``event.duplicate`` of the first); the same iat gives the same id, int or float."""
    intake.accept(_revoked("jti-r", time.time() - MAX_AGE - 61), MAX_AGE)
    intake.accept(_revoked("other", time.time(), "s-2"), MAX_AGE)  # forgets jti-r
    intake.accept(_revoked("jti-r", time.time()), MAX_AGE)
    with database() as db:
        rows = db.scalars(select(OutboxRow))
        published = {row.event_id for row in rows if row.payload["session_id"] == "s-1"}
    assert len(published) == 2
    assert event_id_of(ISSUER, "j", 1700000000, SESSION_REVOKED) == event_id_of(
        ISSUER, "j", 1700000000.0, SESSION_REVOKED
    )


def test_an_unusable_occurred_at_is_reported_as_the_event_timestamp(
    database: Database, intake: SetIntake
) -> None:
    """Never an OverflowError (a 500 the transmitter would retry forever), never called a
    subject problem; nothing is published."""
    signal = Signal(SESSION_REVOKED, "session", "s-1", timestamp=1e300)
    with pytest.raises(SetRefusedError) as caught:
        intake.accept(ReceivedSet("upstream", ISSUER, "jti-t", time.time(), [signal]), MAX_AGE)
    assert caught.value.err == "invalid_request"
    assert "event_timestamp" in caught.value.description
    assert "subject" not in caught.value.description
    with database() as db:
        assert list(db.scalars(select(OutboxRow))) == []
