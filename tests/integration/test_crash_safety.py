"""A worker SIGKILLed mid-batch loses nothing and doubles nothing once another one takes over."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator.store import (
    TERMINAL_DELIVERY_STATUSES,
    AuditRow,
    Delivery,
    EventRecord,
    IdpSession,
    ProviderSession,
)

from .support import Stack, logout_event

pytestmark = pytest.mark.integration

EVENTS = 1000
KILL_AFTER = 100  # completed events before the SIGKILL
DEADLINE = 120.0  # seconds for the second worker to finish everything


def _seed(stack: Stack) -> list[str]:
    sessions = [f"s-{n:04d}" for n in range(EVENTS)]
    records: list[dict[str, Any]] = [
        {"kind": "session", "session_id": session_id, "user_id": f"u-{n}"}
        for n, session_id in enumerate(sessions)
    ]
    records += [
        {"kind": "provider_session", "session_id": session_id, "provider": "wiki", "sid": f"w{n}"}
        for n, session_id in enumerate(sessions)
    ]
    provider = {
        "name": "wiki",
        "protocol": "oidc",
        "client_id": "wiki",
        "backchannel_logout_uri": "https://wiki.example.test/bcl",
    }
    stack.seed(providers=[provider], records=records)
    return sessions


def _completed(stack: Stack) -> int:
    return stack.count(EventRecord, EventRecord.status == "completed")


def _open_deliveries(stack: Stack) -> int:
    return stack.count(Delivery, Delivery.status.not_in(TERMINAL_DELIVERY_STATUSES))


def _count(stack: Stack, record_type: str) -> int:
    return stack.count(AuditRow, AuditRow.type == record_type)


def test_sigkill_mid_batch_then_recovery(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """1000 logouts survive a SIGKILLed worker: each handled and audited exactly once."""
    stack.protocols = []  # no handler for "oidc": deliveries are skipped, no network involved
    sessions = _seed(stack)
    events = [logout_event(session_id) for session_id in sessions]
    with stack.publisher() as publisher:
        publisher.publish_many(events)
    assert stack.queue_length("events") == EVENTS

    first = stack.start_worker()
    deadline = time.monotonic() + 90
    while (done := _completed(stack)) < KILL_AFTER:
        if not first.alive():
            pytest.fail(f"the first worker exited with {first.process.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"only {done} events completed in 90 s before the planned crash")
        time.sleep(0.02)
    first.kill()
    at_kill = _completed(stack)
    report = [f"SIGKILLed worker {first.pid} with {at_kill}/{EVENTS} events completed"]
    assert at_kill < EVENTS, "the worker finished everything before it could be killed"

    second = stack.start_worker()
    waited = stack.wait_for(
        lambda: _completed(stack) == EVENTS and _open_deliveries(stack) == 0,
        what=f"all {EVENTS} events completed and their deliveries final",
        timeout=DEADLINE,
        interval=0.25,
    )
    with stack.db() as db:
        duplicates = list(db.scalars(select(AuditRow).where(AuditRow.type == "event.duplicate")))
    redelivered = [d for d in duplicates if d.detail["message_id"] == d.detail["first_message_id"]]
    report += [
        f"recovery: the second worker finished the remaining {EVENTS - at_kill} events "
        f"(and every delivery) {waited:.1f} s after it was started",
        f"event.duplicate records: {len(duplicates)}, of which {len(redelivered)} for a "
        "redelivery of the event's own first message",
    ]
    with capsys.disabled():  # shown even when pytest captures output
        print("\n" + "\n".join(f"  [crash-safety] {line}" for line in report))
    assert second.alive()

    assert _count(stack, "event.received") == EVENTS
    assert _count(stack, "session.ended") == EVENTS
    assert _count(stack, "logout.completed") == EVENTS
    assert _count(stack, "logout.settled") == EVENTS
    assert _count(stack, "delivery.skipped") == EVENTS
    assert _count(stack, "event.rejected") == 0

    with stack.db() as db:
        doubled = list(
            db.execute(
                select(AuditRow.dedupe_key, func.count())
                .group_by(AuditRow.dedupe_key)
                .having(func.count() > 1)
            )
        )
        assert doubled == [], f"audit records written twice: {doubled[:5]}"

        per_session = dict(
            db.execute(
                select(AuditRow.session_id, func.count())
                .where(AuditRow.type == "session.ended")
                .group_by(AuditRow.session_id)
            ).all()
        )
        assert set(per_session) == set(sessions)
        assert set(per_session.values()) == {1}, "a session was ended more than once"

        by_event = {e["session_id"]: e["event_id"] for e in events}
        idp = list(db.scalars(select(IdpSession)))
        assert len(idp) == EVENTS
        assert all(s.ended_at is not None for s in idp), "a session was never ended"
        assert all(s.ended_by_event == by_event[s.session_id] for s in idp)
        links = list(db.scalars(select(ProviderSession)))
        assert all(link.ended_at is not None for link in links)

        deliveries = list(db.scalars(select(Delivery)))
        assert len(deliveries) == EVENTS
        assert {d.event_id for d in deliveries} == set(by_event.values())
        assert len({d.provider_session_id for d in deliveries}) == EVENTS
        statuses = {d.status for d in deliveries}
        assert statuses <= set(TERMINAL_DELIVERY_STATUSES), statuses

        completed_per_event = dict(
            db.execute(
                select(AuditRow.event_id, func.count())
                .where(AuditRow.type == "logout.completed")
                .group_by(AuditRow.event_id)
            ).all()
        )
        assert set(completed_per_event) == set(by_event.values())
