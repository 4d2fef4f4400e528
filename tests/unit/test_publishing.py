"""Durable intake (SQLite, the in-process broker): the publisher records each event in the
outbox as it enqueues it, so an event the broker loses or refuses is sent again, and handled
once."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from orchestrator import Publisher, Runtime
from orchestrator.errors import InputError
from orchestrator.publishing import events_queue
from orchestrator.relay import BrokerSender, RelayReport
from orchestrator.store import (
    AuditRow,
    EventRecord,
    EventStatus,
    OutboxRow,
    make_database,
    make_engine,
    utcnow,
)
from orchestrator.validation import parse_event
from schemas import SessionStarted
from tests.integration.support import closed_port
from workers import embedded
from workers.cli import main
from workers.exit_codes import ExitCode

from .conftest import make_event


class FailingBroker(StubBroker):
    """The in-process broker, refusing every enqueue from the ``fail_from``-th on."""

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.fail_from = fail_from
        self.enqueued: list[str] = []

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        if len(self.enqueued) + 1 >= self.fail_from:
            raise ConnectionError("connection refused")
        self.enqueued.append(message.message_id)
        return super().enqueue(message, delay=delay)


def _rows(runtime: Runtime) -> list[OutboxRow]:
    with runtime.database() as db:
        return list(db.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def _queued_ids(broker: StubBroker, namespace: str = "logout") -> list[str]:
    queue = broker.queues[events_queue(namespace)]
    return [Message.decode(queue.get_nowait()).message_id for _ in range(queue.qsize())]


def test_publish_records_each_event_as_sent_and_enqueues_it_under_the_row_id(
    runtime: Runtime,
) -> None:
    """Every published event has an outbox row (marked sent, one attempt, its payload), and
    the broker holds one message per row under the row's message id, in order."""
    broker = StubBroker()
    events = [make_event("logout.user", session_id=f"s-{i}") for i in range(3)]
    parsed = Publisher(broker, runtime.database).publish_many(events)
    rows = _rows(runtime)
    assert [r.event_id for r in rows] == [str(e.event_id) for e in parsed]
    assert all(r.sent_at is not None and r.attempts == 1 for r in rows)
    assert [r.payload["session_id"] for r in rows] == ["s-0", "s-1", "s-2"]
    assert _queued_ids(broker) == [r.message_id for r in rows]


def test_a_device_cookie_id_is_never_recorded_nor_queued(runtime: Runtime) -> None:
    """``session.started`` with ``device_id`` (a bearer secret of the browser): the outbox
    row and the broker's message carry its SHA-256 as ``device_hash``, never the id."""
    broker = StubBroker()
    event = make_event("session.started", session_id="s-1", user_id="alice", device_id="dev-7f3a")
    (parsed,) = Publisher(broker, runtime.database).publish_many([event])
    digest = hashlib.sha256(b"dev-7f3a").hexdigest()
    assert isinstance(parsed, SessionStarted)
    assert (parsed.device_id, parsed.device_hash) == (None, digest)
    (row,) = _rows(runtime)
    queue = broker.queues[events_queue("logout")]
    (message,) = [Message.decode(queue.get_nowait()) for _ in range(queue.qsize())]
    for payload in (row.payload, message.args[0]):
        assert payload["device_hash"] == digest
        assert payload["device_id"] is None
        assert "dev-7f3a" not in json.dumps(payload)


def test_publishing_an_event_again_is_a_new_message(runtime: Runtime) -> None:
    """The same event published twice: two rows, two message ids (the pipeline keeps one)."""
    broker = StubBroker()
    event = make_event("logout.user", session_id="s-1")
    publisher = Publisher(broker, runtime.database)
    publisher.publish(event)
    publisher.publish(event)
    rows = _rows(runtime)
    assert len({r.message_id for r in rows}) == 2
    assert {r.event_id for r in rows} == {event["event_id"]}


def test_an_invalid_batch_records_and_sends_nothing(runtime: Runtime) -> None:
    """One bad event: InputError names it, and neither the outbox nor the broker got any."""
    broker = StubBroker()
    good = make_event("logout.user", session_id="s-1")
    bad = make_event("logout.user", session_id="s-2", initiator="nobody")
    with pytest.raises(InputError) as caught:
        Publisher(broker, runtime.database).publish_many([good, bad])
    assert [p.where for p in caught.value.problems] == ["event 2"]
    assert _rows(runtime) == []
    assert _queued_ids(broker) == []


def test_a_broker_failing_part_way_leaves_every_event_in_the_outbox(runtime: Runtime) -> None:
    """The broker refusing the 3rd of 1,200 events (3 chunks): 2 sent, all 1,200 recorded,
    1,198 unsent (the refused one with its error); a relay run later sends exactly those."""
    broker = FailingBroker(fail_from=3)
    events = [make_event("logout.user", session_id=f"s-{i}") for i in range(1200)]
    report = Publisher(broker, runtime.database).enqueue(parse_event(e) for e in events)
    assert (report.published, report.pending) == (2, 1198)
    assert report.error == "ConnectionError: connection refused"
    rows = _rows(runtime)
    assert len(rows) == 1200
    assert [r.message_id for r in rows[:2]] == broker.enqueued
    kept = [r for r in rows if r.sent_at is None]
    assert kept == rows[2:]
    assert (kept[0].attempts, kept[0].last_error) == (1, report.error)
    assert {r.attempts for r in kept[1:]} == {0}
    later = StubBroker()
    assert runtime.relay(BrokerSender(later)).run().published == 1198
    assert _queued_ids(later) == [r.message_id for r in kept]


def test_events_the_broker_lost_are_sent_again_and_handled_once(runtime: Runtime) -> None:
    """Five events accepted on a broker that loses them (nobody ever consumes it): after
    ``recovery_grace`` a worker's recovery sends them again from the outbox, under their
    message ids; each is handled once (one event.received, no event.duplicate), and the next
    recovery deletes the rows of the completed events."""
    lost = StubBroker()
    events = [make_event("logout.user", session_id=f"s-{i}") for i in range(5)]
    Publisher(lost, runtime.database).publish_many(events)
    ids = [r.message_id for r in _rows(runtime)]
    with embedded(runtime.settings, runtime) as actors:
        assert actors.handle_event.broker is not lost
        with runtime.database.begin() as db:  # the grace has passed
            db.execute(update(OutboxRow).values(sent_at=utcnow() - timedelta(minutes=10)))
        actors.recover()
        actors.handle_event.broker.join(actors.handle_event.queue_name, timeout=30_000)
        with runtime.database() as db:
            handled = db.execute(select(EventRecord.message_id, EventRecord.status)).all()
            kinds = db.execute(select(AuditRow.type, func.count()).group_by(AuditRow.type)).all()
        assert sorted(handled) == sorted((i, EventStatus.COMPLETED) for i in ids)
        counts = {str(kind): n for kind, n in kinds}
        assert counts.get("event.received") == 5, counts
        assert "event.duplicate" not in counts, counts
        actors.recover()
    assert _rows(runtime) == []


def test_publishing_in_process_goes_through_the_outbox(runtime: Runtime) -> None:
    """memory://: the embedded worker's publisher records the events too, and handles them."""
    events = [make_event("logout.user", session_id=f"s-{i}") for i in range(3)]
    with embedded(runtime.settings, runtime) as actors:
        report = actors.publisher.enqueue(parse_event(e) for e in events)
        actors.handle_event.broker.join(actors.handle_event.queue_name, timeout=30_000)
    assert report == RelayReport(3, 0)
    assert {r.event_id for r in _rows(runtime)} == {e["event_id"] for e in events}
    with runtime.database() as db:
        assert db.scalar(select(func.count()).select_from(EventRecord)) == 3


def test_an_event_the_database_did_not_record_is_not_enqueued(tmp_path: Path) -> None:
    """A database without the outbox (never migrated): the publisher raises before the broker
    is asked, so no event is ever on the queue without its record."""
    engine = make_engine(f"sqlite:///{tmp_path / 'blank.db'}")
    broker = StubBroker()
    try:
        with pytest.raises(OperationalError, match="outbox"):
            Publisher(broker, make_database(engine)).publish(
                make_event("logout.user", session_id="s-1")
            )
    finally:
        engine.dispose()
    assert _queued_ids(broker) == []


def _cli_env(runtime: Runtime, broker_url: str) -> dict[str, str]:
    return {
        "LOGOUT_DATA_DIR": str(runtime.settings.data_dir),
        "LOGOUT_DATABASE_URL": runtime.settings.effective_database_url,
        "LOGOUT_BROKER_URL": broker_url,
        "LOGOUT_PROTOCOLS": "[]",
    }


def test_cli_publish_with_the_broker_unreachable_records_nothing(runtime: Runtime) -> None:
    """`publish` to a Redis nobody answers: exit 4, "Nothing was published", no outbox row."""
    lines = "\n".join(json.dumps(make_event("logout.user", session_id=f"s-{i}")) for i in range(3))
    result = CliRunner().invoke(
        main, ["publish", "-"], input=lines, env=_cli_env(runtime, _nobody())
    )
    assert result.exit_code == ExitCode.BROKER_UNAVAILABLE, result.output
    assert "Nothing was published" in result.output
    assert "Traceback" not in result.output
    assert _rows(runtime) == []


def test_cli_publish_keeps_in_the_outbox_what_the_broker_refused(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker answering the check, then failing at the first enqueue: every event is in
    the outbox, unsent; `publish` says how many wait there and who sends them, and exits 4;
    a worker's relay (here the in-process one of memory://) then handles each once."""
    monkeypatch.setattr("workers.broker.check_broker", lambda *_: None)
    events = [make_event("logout.user", session_id=f"s-{i}") for i in range(3)]
    lines = "\n".join(json.dumps(e) for e in events)
    result = CliRunner().invoke(
        main, ["publish", "-"], input=lines, env=_cli_env(runtime, _nobody())
    )
    assert result.exit_code == ExitCode.BROKER_UNAVAILABLE, result.output
    assert "3 event(s) kept in the outbox: the broker did not answer" in result.output
    assert "Traceback" not in result.output
    assert {r.event_id for r in _rows(runtime) if r.sent_at is None} == {
        e["event_id"] for e in events
    }
    with embedded(runtime.settings, runtime) as actors:  # starting, it relays the outbox
        actors.handle_event.broker.join(actors.handle_event.queue_name, timeout=30_000)
    with runtime.database() as db:
        assert db.scalar(select(func.count()).select_from(EventRecord)) == 3


def _nobody() -> str:
    return f"redis://127.0.0.1:{closed_port()}/0"


def test_session_activity_leaves_no_outbox_row_to_be_sent_again(runtime: Runtime) -> None:
    """session.started and session.seen leave no ``events`` row: once handled, their outbox
    rows go, so recovery, however late, never takes them for lost and sends them again."""
    started = make_event("session.started", session_id="s-a", user_id="alice")
    seen = make_event("session.seen", session_id="s-a")
    with embedded(runtime.settings, runtime) as actors:
        actors.publisher.enqueue([parse_event(started)])
        actors.handle_event.broker.join(actors.handle_event.queue_name, timeout=30_000)
        actors.publisher.enqueue([parse_event(seen)])
        actors.handle_event.broker.join(actors.handle_event.queue_name, timeout=30_000)
        assert _rows(runtime) == []
        with runtime.database.begin() as db:  # a row written before this fix, long overdue
            db.execute(update(OutboxRow).values(sent_at=utcnow() - timedelta(days=1)))
        actors.recover()
        assert actors.handle_event.broker.queues[actors.handle_event.queue_name].qsize() == 0
