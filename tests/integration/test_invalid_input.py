"""Invalid events: refused whole by the publisher, recorded (never dropped) by the worker."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import func, select

from orchestrator.store import AuditRow, EventRecord, RejectedEvent
from workers import build_broker

from .support import Stack, json_lines, logout_event

pytestmark = pytest.mark.integration


def _events_rows(stack: Stack) -> int:
    with stack.db() as db:
        return int(db.scalar(select(func.count()).select_from(EventRecord)) or 0)


def test_publish_refuses_a_batch_with_one_invalid_line(stack: Stack, tmp_path: Path) -> None:
    """One bad line refuses the whole batch: line, field and reason named, nothing enqueued."""
    stack.protocols = []  # no handler is needed here
    with stack.runtime():
        pass  # the schema exists, so "no event row" below is a real check
    good = logout_event("s-1")
    bad = logout_event("s-2")
    del bad["session_id"]
    bad["initiator"] = "robot"
    source = tmp_path / "events.jsonl"
    source.write_text(json_lines([good, bad]), encoding="utf-8")

    result = stack.cli("publish", str(source))

    assert result.returncode != 0, result.stdout
    assert "published" not in result.stdout
    problems = [line for line in result.stderr.splitlines() if "line 2" in line]
    assert any(re.search(r"\bsession_id\b.*Field required", p) for p in problems), result.stderr
    assert any(re.search(r"\binitiator\b.*'user'", p) for p in problems), result.stderr
    assert "line 1" not in result.stderr
    assert stack.queue_length("events") == 0, "part of a refused batch was published"
    assert stack.unacked("events") == 0, "part of a refused batch was published"
    assert _events_rows(stack) == 0


def test_worker_records_an_invalid_raw_message(stack: Stack) -> None:
    """A foreign publisher's invalid message is audited as rejected and kept whole."""
    stack.protocols = []  # no handler is needed here
    with stack.runtime():
        pass
    worker = stack.start_worker()
    bogus_id = str(uuid.uuid4())
    raw = {
        "type": "logout.user",
        "event_id": bogus_id,
        "occurred_at": "2024-05-01T10:00:00",  # no offset
        "initiator": "robot",
        "session_id": "s-1",
        "colour": "blue",
    }
    broker = build_broker(stack.settings())
    try:
        queue = f"{stack.namespace}.events"
        broker.declare_queue(queue)
        message = broker.enqueue(
            dramatiq.Message(
                queue_name=queue,
                actor_name="handle_event",
                args=(raw,),
                kwargs={},
                options={},
            )
        )
    finally:
        broker.close()

    def rejected() -> bool:
        with stack.db() as db:
            return bool(db.scalar(select(func.count()).select_from(RejectedEvent)))

    stack.wait_for(rejected, what="the rejected_events row", timeout=60)

    with stack.db() as db:
        rows = list(db.scalars(select(RejectedEvent)))
        assert len(rows) == 1
        row = rows[0]
        assert row.message_id == message.message_id
        assert row.event_id == bogus_id
        assert json.loads(row.payload) == raw, "the raw payload was not kept whole"
        assert any("initiator" in p for p in row.problems), row.problems
        assert any("occurred_at" in p for p in row.problems), row.problems
        assert any("colour" in p for p in row.problems), row.problems
        audits = list(db.scalars(select(AuditRow).where(AuditRow.type == "event.rejected")))
        assert len(audits) == 1
        assert audits[0].event_id == bogus_id
        assert audits[0].outcome == "rejected"
        assert audits[0].detail["message_id"] == message.message_id
        assert audits[0].detail["problems"] == row.problems
        assert db.scalar(select(func.count()).select_from(EventRecord)) == 0
    stack.wait_for(lambda: stack.unacked("events") == 0, what="the message to be acknowledged")
    assert worker.alive()


def test_worker_rejects_a_start_whose_binding_no_database_serves(
    stack: Stack, tmp_path: Path
) -> None:
    """session.started with network_binding and no ASN database: rejected, kept, audited."""
    stack.protocols = []  # no handler is needed here
    with stack.runtime():
        pass
    worker = stack.start_worker()
    event = {
        "type": "session.started",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-22T10:00:00+00:00",
        "initiator": "user",
        "session_id": "s-bound",
        "user_id": "alice",
        "ip": "81.2.69.142",
        "network_binding": "bind_asn",
    }
    source = tmp_path / "start.jsonl"
    source.write_text(json_lines([event]), encoding="utf-8")
    published = stack.cli("publish", str(source))
    assert published.returncode == 0, published.stderr

    def rejected() -> bool:
        with stack.db() as db:
            return bool(db.scalar(select(func.count()).select_from(RejectedEvent)))

    stack.wait_for(rejected, what="the rejected_events row", timeout=60)
    expected = (
        "session 's-bound': network_binding: bind_asn needs the GeoIP ASN database, and none "
        "is configured (set geoip_asn_db, or use no_binding)"
    )
    with stack.db() as db:
        [row] = db.scalars(select(RejectedEvent))
        assert row.problems == [expected]
        [audit] = db.scalars(select(AuditRow).where(AuditRow.type == "event.rejected"))
        assert audit.detail["problems"] == [expected]
        assert not list(db.scalars(select(AuditRow).where(AuditRow.type == "session.started")))
    assert worker.alive()
