"""An event whose handling raises on every try is recorded as rejected, not dead-lettered."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select

from orchestrator import Runtime
from orchestrator.event_status import event_states
from orchestrator.logout import HandleResult, LogoutEngine
from orchestrator.store import AuditRow, EventRecord, RejectedEvent
from tests.unit.conftest import make_event
from tests.unit.test_engine import _crash
from tests.unit.test_recovery import _age, _republished
from workers import embedded
from workers.actors import _MAX_RETRIES


def _a_bug(
    self: LogoutEngine,
    messages: Sequence[tuple[Any, str]],
    begun: Callable[[], None] | None = None,
) -> list[HandleResult]:
    raise KeyError("session-token-3f9a")  # its text must be kept nowhere


def _run(
    runtime: Runtime, event: dict[str, Any], retries: int, until: Callable[[], bool]
) -> StubBroker:
    """Handle ``event`` once in an in-process worker, as the run after ``retries`` failed
    ones, until ``until()``; the broker, to look at what it holds after."""
    with embedded(runtime.settings, runtime) as actors:
        broker = actors.handle_event.broker
        assert isinstance(broker, StubBroker)
        message = actors.handle_event.message(event).copy(
            message_id="m-bug", options={"retries": retries}
        )
        broker.enqueue(message)
        deadline = time.monotonic() + 10
        while not until():
            assert time.monotonic() < deadline, "the worker never got to the message"
            time.sleep(0.02)
    return broker


def _rejected(runtime: Runtime) -> list[RejectedEvent]:
    with runtime.database() as db:
        return list(db.scalars(select(RejectedEvent)))


def test_the_last_try_of_a_failing_event_is_recorded_as_rejected(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its last try, the event is rejected (its row, an ``event.rejected`` record with
    the exception's type and how to go on), acknowledged, not dead-lettered, and its state
    says so; the exception's text is stored nowhere."""
    monkeypatch.setattr(LogoutEngine, "handle_batch", _a_bug)
    event = make_event("logout.user", session_id="s-1")
    broker = _run(runtime, event, _MAX_RETRIES, lambda: bool(_rejected(runtime)))
    assert broker.dead_letters == []
    with runtime.database() as db:
        (row,) = db.scalars(select(RejectedEvent)).all()
        records = db.scalars(select(AuditRow).where(AuditRow.type == "event.rejected")).all()
    assert (row.message_id, row.event_id) == ("m-bug", event["event_id"])
    (problem,) = row.problems
    assert f"each of its {_MAX_RETRIES + 1} tries" in problem
    assert "(KeyError)" in problem
    assert "events replay" in problem
    assert json.loads(row.payload)["session_id"] == "s-1"
    assert [r.event_id for r in records] == [event["event_id"]]
    assert "session-token-3f9a" not in row.payload + json.dumps([r.detail for r in records])
    assert event_states(runtime.database, [event["event_id"]]) == {event["event_id"]: "rejected"}


def test_an_earlier_try_that_fails_is_left_to_dramatiq_to_try_again(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the last try, a failure is dramatiq's to retry: nothing is recorded, and the
    message goes back with one more failed try counted."""
    monkeypatch.setattr(LogoutEngine, "handle_batch", _a_bug)
    again: list[tuple[str, Any, int]] = []
    enqueue = StubBroker.enqueue

    def recorded(self: StubBroker, message: Message[Any], *, delay: int | None = None) -> Any:
        if delay is not None:
            again.append((message.message_id, message.options.get("retries"), delay))
        return enqueue(self, message, delay=delay)

    monkeypatch.setattr(StubBroker, "enqueue", recorded)
    event = make_event("logout.user", session_id="s-1")
    _run(runtime, event, _MAX_RETRIES - 1, lambda: bool(again))
    assert _rejected(runtime) == []
    assert [(message_id, retries) for message_id, retries, _ in again] == [("m-bug", _MAX_RETRIES)]


def test_an_event_given_up_part_way_is_rejected_and_left_alone(populated: Runtime) -> None:
    """A processing event whose message a worker gave up on is not re-published by the
    recovery sweep (it would only fail again), and its state is rejected."""
    event = make_event("logout.user", session_id="s-1")
    _crash(populated, event, "m-given-up")
    with populated.database.begin() as db:
        db.add(
            RejectedEvent(
                message_id="m-given-up",
                event_id=event["event_id"],
                payload="{}",
                problems=["handling: failed"],
            )
        )
    _age(populated, 120)
    assert _republished(populated) == (0, [])
    assert event_states(populated.database, [event["event_id"]]) == {
        event["event_id"]: "rejected"
    }, "given up part-way: rejected, not processing for ever"
    with populated.database() as db:
        assert db.scalar(select(EventRecord.status)) == "processing"
