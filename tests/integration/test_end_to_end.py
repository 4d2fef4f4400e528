"""A logout from the CLI to the audit trail, through Redis, a real worker and PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator.store import AuditRow, Delivery, EventRecord, IdpSession, ProviderSession

from .support import Stack, logout_event

pytestmark = pytest.mark.integration


def _seed(stack: Stack) -> None:
    stack.seed(
        providers=[
            {
                "name": name,
                "protocol": "oidc",
                "client_id": f"{name}-client",
                "backchannel_logout_uri": f"https://{name}.example.test/bcl",
            }
            for name in ("wiki", "chat")
        ],
        records=[
            {"kind": "session", "session_id": "s-e2e", "user_id": "alice"},
            {"kind": "session", "session_id": "s-other", "user_id": "alice"},
            {"kind": "provider_session", "session_id": "s-e2e", "provider": "wiki", "sid": "w1"},
            {"kind": "provider_session", "session_id": "s-e2e", "provider": "chat", "sid": "c1"},
            {"kind": "provider_session", "session_id": "s-other", "provider": "wiki", "sid": "w2"},
        ],
    )


def _audit(stack: Stack, event_id: str) -> list[dict[str, Any]]:
    listed = stack.cli("audit", "list", "--event", event_id, "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]


def _audit_rows(stack: Stack) -> int:
    with stack.db() as db:
        return int(db.scalar(select(func.count()).select_from(AuditRow)) or 0)


def test_publish_to_audit_trail_and_duplicate(stack: Stack, tmp_path: Path) -> None:
    """A published logout ends its session and is audited; publishing it again adds a duplicate."""
    stack.protocols = []  # no handler for "oidc" is enabled: its deliveries are skipped
    _seed(stack)
    worker = stack.start_worker()
    event = logout_event("s-e2e")
    event_id = event["event_id"]
    source = tmp_path / "event.json"
    source.write_text(json.dumps(event), encoding="utf-8")

    published = stack.cli("publish", str(source))
    assert published.returncode == 0, published.stderr
    assert event_id in published.stdout

    def completed() -> bool:
        with stack.db() as db:
            return (
                db.scalar(select(EventRecord.status).where(EventRecord.event_id == event_id))
                == "completed"
            )

    stack.wait_for(completed, what="the event to complete", timeout=60)
    stack.wait_for(
        lambda: stack.unacked("events") == 0, what="the event message to be acknowledged"
    )

    records = _audit(stack, event_id)
    types = Counter(r["type"] for r in records)
    assert types == Counter(
        {
            "event.received": 1,
            "session.ended": 1,
            "delivery.skipped": 2,
            "logout.completed": 1,
            "logout.settled": 1,
        }
    ), records
    assert records[0]["type"] == "event.received"
    assert [r["type"] for r in records[-2:]] == ["logout.completed", "logout.settled"]
    ended = next(r for r in records if r["type"] == "session.ended")
    assert ended["session_id"] == "s-e2e"
    assert ended["user_id"] == "alice"
    skipped = [r for r in records if r["type"] == "delivery.skipped"]
    assert {r["provider"] for r in skipped} == {"wiki", "chat"}
    for record in skipped:
        reason = record["detail"]["reason"]
        assert "no handler" in reason, reason
        assert "oidc" in reason, reason
    rollup = next(r for r in records if r["type"] == "logout.completed")
    assert rollup["detail"]["deliveries"]["skipped"] == 2
    assert rollup["detail"]["sessions_ended"] == 1

    with stack.db() as db:
        session = db.get(IdpSession, "s-e2e")
        other = db.get(IdpSession, "s-other")
        assert session is not None
        assert other is not None
        assert session.ended_at is not None
        assert session.ended_by_event == event_id
        assert other.ended_at is None, "another session of the user was ended"
        links = {p.provider: p for p in db.scalars(select(ProviderSession))}
        assert all(p.ended_at is not None for p in links.values() if p.session_id == "s-e2e")
        deliveries = list(db.scalars(select(Delivery)))
        assert len(deliveries) == 2
        assert {d.status for d in deliveries} == {"skipped"}
        first_ended_at = session.ended_at
    rows_before = _audit_rows(stack)

    again = stack.cli("publish", str(source))
    assert again.returncode == 0, again.stderr

    def duplicate_recorded() -> bool:
        with stack.db() as db:
            count = db.scalar(
                select(func.count())
                .select_from(AuditRow)
                .where(AuditRow.event_id == event_id, AuditRow.type == "event.duplicate")
            )
        return bool(count)

    stack.wait_for(duplicate_recorded, what="the event.duplicate record", timeout=60)
    stack.wait_for(
        lambda: stack.unacked("events") == 0 and stack.queue_length("events") == 0,
        what="the duplicate message to be acknowledged",
    )

    records_after = _audit(stack, event_id)
    added = records_after[len(records) :]
    assert [r["id"] for r in records_after[: len(records)]] == [r["id"] for r in records]
    assert [r["type"] for r in added] == ["event.duplicate"], added
    assert added[0]["detail"]["same_payload"] is True
    assert _audit_rows(stack) == rows_before + 1, "the duplicate wrote more than one record"
    with stack.db() as db:
        session = db.get(IdpSession, "s-e2e")
        assert session is not None
        assert session.ended_at == first_ended_at
        assert db.scalar(select(func.count()).select_from(Delivery)) == 2
        assert db.scalar(select(func.count()).select_from(EventRecord)) == 1
    assert worker.alive()
    assert worker.stop() == 0, "the worker did not stop cleanly on SIGTERM"
