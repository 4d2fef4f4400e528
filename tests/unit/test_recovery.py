"""Recovery: work stuck by a dead worker or a lost message is put back, once."""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

from dramatiq import Broker, Message, Middleware
from sqlalchemy import select, update

from orchestrator import Runtime
from orchestrator.recovery import recover
from orchestrator.store import Delivery, EventRecord, EventStatus, utcnow
from orchestrator.validation import parse_event
from schemas import Event
from tests.unit.conftest import make_event
from tests.unit.test_engine import _audit, _crash
from workers import embedded


def _age(runtime: Runtime, seconds: float) -> None:
    """Pretend the crash happened ``seconds`` ago."""
    past = utcnow() - timedelta(seconds=seconds)
    with runtime.database.begin() as db:
        db.execute(update(EventRecord).values(attempted_at=past, lease_until=past))
        db.execute(update(Delivery).values(next_attempt_at=past))


def _republished(runtime: Runtime) -> tuple[int, list[str]]:
    """One sweep with a grace of 60 s: the stuck events it counted, and the message ids it
    published again."""
    republished: list[str] = []
    report = recover(
        runtime.database,
        grace=60,
        republish=lambda event, message_id: republished.append(message_id),
        reschedule=lambda delivery_id, delay: None,
    )
    return report.events, republished


def test_stuck_event_and_overdue_deliveries_are_put_back_once(populated: Runtime) -> None:
    """A stuck event is re-published under its first message id; a second sweep does nothing."""
    event = make_event("logout.user", session_id="s-1")
    _crash(populated, event, "m-first")
    republished: list[tuple[Event, str]] = []
    rescheduled: list[tuple[str, float]] = []

    def sweep() -> tuple[int, int]:
        report = recover(
            populated.database,
            grace=60,
            republish=lambda e, m: republished.append((e, m)),
            reschedule=lambda d, delay: rescheduled.append((d, delay)),
        )
        return report.events, report.deliveries

    assert sweep() == (0, 0), "nothing is stuck before the grace period"
    _age(populated, 120)
    assert sweep() == (1, 0), "the event's own re-publication resumes its deliveries"
    assert [(str(e.event_id), m) for e, m in republished] == [(event["event_id"], "m-first")]
    assert sweep() == (0, 0), "what was put back is not put back again at once"
    # Once the event has completed, an overdue retry is rescheduled by the sweep.
    with populated.database.begin() as db:
        db.execute(update(EventRecord).values(status=EventStatus.COMPLETED))
    _age(populated, 120)
    assert sweep() == (0, 3)
    assert {delay for _, delay in rescheduled} == {0.0}
    assert sweep() == (0, 0)


def test_a_lost_message_is_finished_by_the_next_worker(populated: Runtime) -> None:
    """When the broker lost the message, the next worker's sweep completes the event."""
    event = make_event("logout.user", session_id="s-1")
    _crash(populated, event, "m-lost")
    _age(populated, populated.settings.recovery_grace + 60)
    with embedded(populated.settings, populated) as actors:
        broker = actors.handle_event.broker
        broker.join(actors.handle_event.queue_name, timeout=10_000)
        broker.join(actors.deliver.queue_name, timeout=10_000)
    with populated.database() as db:
        assert db.scalar(select(EventRecord.status)) == EventStatus.COMPLETED
        statuses = set(db.scalars(select(Delivery.status)))
    assert statuses == {"skipped"}
    types = [r.type for r in _audit(populated)]
    assert types.count("event.received") == 1
    assert types.count("logout.completed") == 1
    assert types.count("logout.settled") == 1


def test_an_event_a_live_worker_holds_is_left_alone(populated: Runtime) -> None:
    """An event whose lease runs is not re-published, however old its last attempt."""
    _crash(populated, make_event("logout.user", session_id="s-1"), "m-1")
    with populated.database.begin() as db:
        db.execute(update(EventRecord).values(attempted_at=utcnow() - timedelta(seconds=600)))
    republished: list[str] = []

    def sweep() -> int:
        return recover(
            populated.database,
            grace=60,
            republish=lambda event, message_id: republished.append(message_id),
            reschedule=lambda delivery_id, delay: None,
        ).events

    assert sweep() == 0, "the worker renewing the event's lease is alive"
    with populated.database.begin() as db:
        db.execute(update(EventRecord).values(lease_until=utcnow() - timedelta(seconds=1)))
    assert sweep() == 1
    assert republished == ["m-1"]


class _Enqueues(Middleware):
    """Remembers every enqueue: the message id and its delay in ms."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        self.seen.append((message.message_id, delay))


def test_a_copy_of_a_message_in_progress_comes_back_when_the_lease_ends(
    populated: Runtime,
) -> None:
    """A worker given the message of an event another worker holds re-enqueues it, delayed
    until that lease ends (plus 1 s) and under the same id, and records nothing."""
    event = make_event("logout.user", session_id="s-1")
    _crash(populated, event, "m-held")  # its lease runs: as if a live worker were at it
    before = [row.dedupe_key for row in _audit(populated)]
    enqueues = _Enqueues()
    with embedded(populated.settings, populated) as actors:
        broker = actors.handle_event.broker
        broker.add_middleware(enqueues)
        actors.republish(parse_event(event), "m-held")
        deadline = time.monotonic() + 10
        while len(enqueues.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # joining would wait for the delayed copy too
        lease_ms = math.ceil(actors.runtime.delivery_lease * 1000)
    assert [message_id for message_id, _ in enqueues.seen] == ["m-held", "m-held"]
    assert enqueues.seen[0][1] is None
    delay = enqueues.seen[1][1]
    assert delay is not None
    # The lease was taken just before: what is left of it, plus the 1 s margin.
    assert lease_ms - 2000 < delay <= lease_ms + 1000
    assert [row.dedupe_key for row in _audit(populated)] == before
    with populated.database() as db:
        assert db.scalar(select(EventRecord.status)) == EventStatus.PROCESSING


def test_a_stored_event_the_contract_now_refuses_does_not_stop_the_others(
    populated: Runtime,
) -> None:
    """A stuck event stored before a stricter contract (a 300-character actor): the
    sweep says so and goes on; the valid stuck event beside it is re-published."""
    _crash(populated, make_event("logout.user", session_id="s-1"), "m-old")
    _crash(populated, make_event("logout.user", session_id="s-2"), "m-good")
    with populated.database.begin() as db:
        row = db.scalars(select(EventRecord).where(EventRecord.message_id == "m-old")).one()
        row.payload = {**row.payload, "actor": "x" * 300}
        db.execute(update(EventRecord).values(lease_until=None))
    _age(populated, 120)
    assert _republished(populated) == (2, ["m-good"])
