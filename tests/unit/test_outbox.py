"""The transactional outbox and its relay (SQLite): a decision and its event commit together,
a failed publication keeps the row, relays share the work without publishing a row twice."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from click.testing import CliRunner
from sqlalchemy import select, update

from orchestrator import Runtime
from orchestrator.audit import AuditQuery, query_audit
from orchestrator.errors import LogoutError
from orchestrator.expiry import ExpirySweeper, expiry_event_id
from orchestrator.outbox import OutboxMessage
from orchestrator.relay import OutboxRecovery, OutboxRelay, RelayReport
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import (
    EventRecord,
    EventStatus,
    IdpSession,
    OutboxRow,
    RejectedEvent,
    utcnow,
)
from orchestrator.store.sql import engine_of
from schemas import SessionStarted
from tests.integration.support import closed_port
from workers import embedded
from workers.cli import main
from workers.exit_codes import ExitCode

from .conftest import make_event

NOW = datetime.now(UTC)


def _import_due(runtime: Runtime, count: int) -> list[str]:
    past = (NOW - timedelta(hours=1)).isoformat()
    ids = [f"due-{i:03d}" for i in range(count)]
    runtime.registry.import_lines(
        json.dumps({"kind": "session", "session_id": sid, "user_id": "alice", "expires": past})
        for sid in ids
    )
    return ids


def _rows(runtime: Runtime) -> list[OutboxRow]:
    with runtime.database() as db:
        return list(db.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def _claimed(runtime: Runtime) -> list[str]:
    with runtime.database() as db:
        return list(
            db.scalars(
                select(IdpSession.session_id).where(IdpSession.expiry_claimed_at.is_not(None))
            )
        )


class BrokerDown(LogoutError):
    """What a broker that does not answer raises, for these tests."""


class Broker:
    """Records what the relay sends; fails from the ``fail_from``-th message on."""

    def __init__(self, fail_from: int | None = None, delay: float = 0.0) -> None:
        self.sent: list[OutboxMessage] = []
        self.fail_from = fail_from
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, message: OutboxMessage) -> None:
        time.sleep(self.delay)
        with self.lock:
            if self.fail_from is not None and len(self.sent) + 1 >= self.fail_from:
                raise BrokerDown("connection refused")
            self.sent.append(message)

    @property
    def ids(self) -> list[str]:
        return [m.message_id for m in self.sent]


def _sweep(runtime: Runtime) -> int:
    return ExpirySweeper(runtime.database, SessionPolicy(), batch=4).sweep(NOW).claimed


# -- the claim and its event commit together ------------------------------------------------


def test_claim_and_outbox_row_commit_together(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim whose outbox write fails is rolled back with it; a good one leaves both."""
    _import_due(runtime, 3)

    def broken(*_: Any) -> None:
        raise BrokerDown("disk full")

    monkeypatch.setattr("orchestrator.expiry.add_to_outbox", broken)
    with pytest.raises(BrokerDown):
        _sweep(runtime)
    assert _claimed(runtime) == []
    monkeypatch.undo()
    assert _sweep(runtime) == 3
    rows = _rows(runtime)
    assert sorted(_claimed(runtime)) == sorted(r.payload["session_id"] for r in rows)
    assert {r.message_id for r in rows} == {str(expiry_event_id(s)) for s in _claimed(runtime)}
    assert {(r.queue, r.actor, r.sent_at) for r in rows} == {
        ("logout.events", "handle_event", None)
    }


# -- the relay --------------------------------------------------------------------------------


def test_relay_publishes_in_order_and_marks_sent(runtime: Runtime) -> None:
    """Every unsent row is sent once, oldest first, under its message id; then marked sent."""
    _import_due(runtime, 10)
    _sweep(runtime)
    broker = Broker()
    report = runtime.relay(broker).run()
    assert (report.published, report.pending, report.error) == (10, 0, None)
    rows = _rows(runtime)
    assert broker.ids == [r.message_id for r in rows]
    assert all(r.sent_at is not None and r.lease_owner is None for r in rows)
    assert runtime.relay(broker).run().published == 0
    assert len(broker.sent) == 10


def _statements(runtime: Runtime) -> list[str]:
    """Every SQL statement the runtime's engine runs from now on, as text."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    sqlalchemy.event.listen(engine_of(runtime.database), "before_cursor_execute", record)
    return seen


def test_relay_counts_the_outbox_only_when_a_run_stops_early(runtime: Runtime) -> None:
    """Nothing pending: one UPDATE and no count. A run that takes every row: no count, 0
    pending. Stopped by max_per_run or a broker failure: the outbox is counted."""
    seen = _statements(runtime)
    report = runtime.relay(Broker()).run()
    assert report == RelayReport(0, 0, None)
    assert len(seen) == 1, seen
    assert seen[0].lstrip().upper().startswith("UPDATE"), seen
    _import_due(runtime, 10)
    _sweep(runtime)
    seen.clear()
    assert runtime.relay(Broker()).run(only=[r.message_id for r in _rows(runtime)[:4]]) == (
        RelayReport(4, 0, None)
    )
    assert not [s for s in seen if "count(" in s.lower()], seen
    capped = OutboxRelay(runtime.database, Broker(), batch=2, max_per_run=4)
    assert capped.run() == RelayReport(4, 2, None)
    assert [s for s in seen if "count(" in s.lower()]
    report = runtime.relay(Broker(fail_from=2)).run()
    assert (report.published, report.pending) == (1, 1)


def test_failing_publish_leaves_the_row_unsent(runtime: Runtime) -> None:
    """The broker failing at the 4th message: 3 sent, 7 kept with the attempt and the error;
    the next run sends exactly the 7."""
    _import_due(runtime, 10)
    _sweep(runtime)
    down = Broker(fail_from=4)
    report = runtime.relay(down).run()
    assert (report.published, report.pending) == (3, 7)
    assert report.error == "BrokerDown: connection refused"
    rows = _rows(runtime)
    kept = [r for r in rows if r.sent_at is None]
    assert len(kept) == 7
    assert kept[0].attempts == 1
    assert kept[0].last_error == report.error
    assert [r.attempts for r in kept[1:]] == [0] * 6, "rows never tried count no attempt"
    assert all(r.lease_owner is None and r.lease_until is None for r in kept)
    back = Broker()
    assert runtime.relay(back).run() == RelayReport(7, 0, None)
    assert back.ids == [r.message_id for r in kept]
    assert Counter([*down.ids, *back.ids]) == Counter(r.message_id for r in rows)


def test_concurrent_relays_never_send_a_leased_row(runtime: Runtime) -> None:
    """A relay running while another holds a batch takes only the other rows."""
    _import_due(runtime, 9)
    _sweep(runtime)
    inner = Broker()
    inner_relay = runtime.relay(inner)
    outer_sent: list[OutboxMessage] = []

    def outer(message: OutboxMessage) -> None:
        if not outer_sent:
            inner_relay.run()  # runs while this relay holds its first batch
        outer_sent.append(message)

    OutboxRelay(runtime.database, outer, batch=3).run()
    assert [m.message_id for m in outer_sent] == [r.message_id for r in _rows(runtime)][:3]
    assert len(inner.sent) == 6
    assert not {m.message_id for m in outer_sent} & set(inner.ids)


def test_many_relays_in_threads_send_each_row_once(runtime: Runtime) -> None:
    """Four relays at once, in small batches, over 120 rows: each row sent exactly once."""
    _import_due(runtime, 120)
    ExpirySweeper(runtime.database, SessionPolicy()).sweep(NOW)
    broker = Broker(delay=0.001)
    relays = [OutboxRelay(runtime.database, broker, batch=5) for _ in range(4)]
    threads = [threading.Thread(target=relay.run) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = Counter(broker.ids)
    assert len(counts) == 120
    assert set(counts.values()) == {1}


def test_a_relay_that_died_holding_a_lease_is_taken_over(runtime: Runtime) -> None:
    """Rows leased by a relay that died are sent again, same message id, once the lease ends."""
    _import_due(runtime, 2)
    _sweep(runtime)

    def dies(_: OutboxMessage) -> None:
        raise KeyboardInterrupt  # the process is killed mid-publication

    with pytest.raises(KeyboardInterrupt):
        OutboxRelay(runtime.database, dies, lease=0.2).run()
    broker = Broker()
    assert runtime.relay(broker).run().published == 0, "the lease still holds"
    time.sleep(0.3)
    assert runtime.relay(broker).run().published == 2
    assert broker.ids == [r.message_id for r in _rows(runtime)]


def test_recover_prunes_completed_and_resends_lost_messages(runtime: Runtime) -> None:
    """Sent rows whose event completed are deleted; sent ones the pipeline never recorded are
    sent again after the grace period; one still processing is left to the recovery sweep."""
    ids = _import_due(runtime, 3)
    _sweep(runtime)
    relay = runtime.relay(Broker())
    relay.run()
    done, processing, lost = (str(expiry_event_id(s)) for s in ids)
    with runtime.database.begin() as db:
        for event_id, status in ((done, EventStatus.COMPLETED), (processing, "processing")):
            db.add(
                EventRecord(
                    event_id=event_id,
                    type="session.expired",
                    status=status,
                    message_id=event_id,
                    payload={},
                )
            )
    assert (relay.recover(grace=60).done, relay.recover(grace=60).resent) == (1, 0)
    with runtime.database.begin() as db:
        db.execute(update(OutboxRow).values(sent_at=utcnow() - timedelta(minutes=5)))
    assert relay.recover(grace=60).resent == 1
    again = Broker()
    assert runtime.relay(again).run().published == 1
    assert again.ids == [lost]
    assert {r.message_id for r in _rows(runtime)} == {processing, lost}


def test_a_message_still_unhandled_is_resent_ever_more_rarely(runtime: Runtime) -> None:
    """Resends wait grace, then 2 x grace, 4 x grace: a queue that is merely slow (a backlog
    longer than the grace period) gets a few copies, not one more at every recovery run."""
    _import_due(runtime, 1)
    _sweep(runtime)
    relay = runtime.relay(Broker())

    def sent_minutes_ago(minutes: float) -> None:
        with runtime.database.begin() as db:
            db.execute(update(OutboxRow).values(sent_at=utcnow() - timedelta(minutes=minutes)))

    relay.run()  # the first send: attempts 1
    sent_minutes_ago(2)
    assert relay.recover(grace=60).resent == 1
    relay.run()  # the second send: attempts 2, next resend after 2 minutes
    sent_minutes_ago(1.5)
    assert relay.recover(grace=60).resent == 0
    sent_minutes_ago(3)
    assert relay.recover(grace=60).resent == 1
    relay.run()  # attempts 3: after 4 minutes
    sent_minutes_ago(3)
    assert relay.recover(grace=60).resent == 0
    assert [r.attempts for r in _rows(runtime)] == [3]


def test_recover_prunes_messages_the_pipeline_rejected(runtime: Runtime) -> None:
    """A sent message the pipeline refused (kept in rejected_events) is deleted, never sent
    again: it arrived, and would only be refused again."""
    [sid] = _import_due(runtime, 1)
    _sweep(runtime)
    relay = runtime.relay(Broker())
    relay.run()
    message_id = str(expiry_event_id(sid))
    with runtime.database.begin() as db:
        db.add(RejectedEvent(message_id=message_id, event_id=message_id, payload="{}", problems=[]))
        db.execute(update(OutboxRow).values(sent_at=utcnow() - timedelta(minutes=5)))
    assert relay.recover(grace=60) == OutboxRecovery(done=1, resent=0)
    assert _rows(runtime) == []


def test_a_run_for_one_commit_publishes_only_its_rows(runtime: Runtime) -> None:
    """``run(only=...)``: the rows one commit wrote, not the backlog before them."""
    ids = _import_due(runtime, 5)
    _sweep(runtime)
    mine = str(expiry_event_id(ids[3]))
    broker = Broker()
    assert runtime.relay(broker).run([mine]).published == 1
    assert broker.ids == [mine]
    assert runtime.relay(broker).run().published == 4


# -- the session limit and the binding check --------------------------------------------------


def test_session_limit_revocation_is_kept_while_the_broker_is_down(runtime: Runtime) -> None:
    """Over the limit with the broker down: the revocation waits in the outbox, and is
    published once the broker answers."""
    limited = Runtime.start(runtime.settings.with_overrides(max_sessions_per_user=1), handlers={})
    try:
        down = Broker(fail_from=1)
        activity = limited.activity(limited.relay(down).run)
        for minute, sid in enumerate(("s-1", "s-2")):
            event = make_event(
                "session.started",
                session_id=sid,
                user_id="alice",
                occurred_at=(NOW + timedelta(minutes=minute)).isoformat(),
            )
            activity.started(SessionStarted.model_validate(event))
        [row] = _rows(limited)
        assert (row.payload["type"], row.payload["session_id"], row.sent_at) == (
            "session.revoke",
            "s-1",
            None,
        )
        assert row.last_error == "BrokerDown: connection refused"
        back = Broker()
        assert limited.relay(back).run().published == 1
        assert back.ids == [row.message_id]
    finally:
        limited.close()


def test_session_limit_decision_and_revocation_commit_together(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the outbox write fails, the start's audit record is rolled back with it (the
    redelivered start decides again)."""
    limited = Runtime.start(runtime.settings.with_overrides(max_sessions_per_user=1), handlers={})
    try:
        activity = limited.activity()
        first = make_event("session.started", session_id="s-1", user_id="alice")
        activity.started(SessionStarted.model_validate(first))

        def broken(*_: Any) -> None:
            raise BrokerDown("disk full")

        monkeypatch.setattr("orchestrator.activity.add_to_outbox", broken)
        second = make_event("session.started", session_id="s-2", user_id="alice")
        with pytest.raises(BrokerDown):
            activity.started(SessionStarted.model_validate(second))
        with limited.database() as db:
            started = query_audit(db, AuditQuery(type="session.started", limit=None))
        assert [r.session_id for r in started] == ["s-1"]
        assert _rows(limited) == []
    finally:
        limited.close()


# -- workers ----------------------------------------------------------------------------------


def test_a_workers_sweep_publishes_and_its_recovery_clears_the_outbox(runtime: Runtime) -> None:
    """A worker's expiry sweep relays at once (the sessions end); its recovery sweep then
    deletes the rows whose events completed."""
    _import_due(runtime, 3)
    with embedded(runtime.settings, runtime) as actors:
        assert actors.sweep_expired().claimed == 3
        actors.handle_event.broker.join(actors.handle_event.queue_name, timeout=30_000)
        with runtime.database() as db:
            assert set(db.scalars(select(IdpSession.end_reason))) == {"expired_absolute"}
        assert len(_rows(runtime)) == 3
        actors.recover()
        assert _rows(runtime) == []


# -- the command line ---------------------------------------------------------------------------


def _env(runtime: Runtime, broker_url: str) -> dict[str, str]:
    return {
        "LOGOUT_DATA_DIR": str(runtime.settings.data_dir),
        "LOGOUT_DATABASE_URL": runtime.settings.effective_database_url,
        "LOGOUT_BROKER_URL": broker_url,
        "LOGOUT_PROTOCOLS": "[]",
    }


def test_sessions_sweep_with_the_broker_down_keeps_the_events(runtime: Runtime) -> None:
    """Broker down: the claims are kept in the outbox, the command says so and exits 4; the
    next sweep with a broker publishes them (memory://: handled here) and ends the sessions."""
    _import_due(runtime, 3)
    runner = CliRunner()
    down = runner.invoke(
        main,
        ["sessions", "sweep"],
        env=_env(runtime, f"redis://127.0.0.1:{closed_port()}/0"),
    )
    assert down.exit_code == ExitCode.BROKER_UNAVAILABLE, down.output
    assert down.exception is None or isinstance(down.exception, SystemExit)
    assert "expired: 3 claimed, 0 published" in down.output
    assert "3 event(s) kept in the outbox" in down.output
    assert "ConnectionError" in down.output
    assert "Traceback" not in down.output
    back = runner.invoke(main, ["sessions", "sweep"], env=_env(runtime, "memory://"))
    assert back.exit_code == 0, back.output
    assert "expired: 0 claimed, 3 published" in back.output
    with runtime.database() as db:
        reasons = set(db.scalars(select(IdpSession.end_reason)))
    assert reasons == {"expired_absolute"}
