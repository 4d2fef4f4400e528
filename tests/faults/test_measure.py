"""The campaign's figures, computed from known rows (SQLite in memory): the harness counts
what it says it counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from orchestrator.store import (
    AuditRow,
    Base,
    Delivery,
    EventRecord,
    IdpSession,
    Provider,
    ProviderSession,
    RejectedEvent,
)
from workers.demo_rps import Received

from .measure import Expected, Figures, measure, table

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


class Ledger:
    """Writes the rows a worker would: an event, its deliveries and its audit records."""

    def __init__(self, db: Session) -> None:
        self.db = db
        db.add(Provider(name="wiki", protocol="oidc", settings={}))
        db.add(Provider(name="payroll", protocol="saml", settings={}))
        self.posts: list[Received] = []

    def event(self, n: int, status: str = "completed") -> tuple[str, list[str]]:
        """Event ``n`` with a delivery to each provider; returns its id and delivery ids."""
        event_id = str(uuid.uuid4())
        session = f"s-{n}"
        self.db.add(IdpSession(session_id=session, user_id=f"u-{n}"))
        self.db.add(
            EventRecord(
                event_id=event_id,
                type="logout.user",
                status=status,
                message_id=str(uuid.uuid4()),
                payload={},
            )
        )
        ids = []
        for number, (provider, fields) in enumerate(
            (("wiki", {"sid": f"sid-{n}"}), ("payroll", {"session_index": f"idx-{n}"}))
        ):
            link = ProviderSession(
                id=n * 10 + number, session_id=session, provider=provider, identifiers=fields
            )
            self.db.add(link)
            delivery_id = str(uuid.uuid4())
            self.db.add(
                Delivery(
                    id=delivery_id,
                    event_id=event_id,
                    provider_session_id=link.id,
                    provider=provider,
                    session_id=session,
                    user_id=f"u-{n}",
                    status="succeeded",
                    created_at=T0,
                    completed_at=T0 + timedelta(seconds=1),
                )
            )
            ids.append(delivery_id)
            self.record(
                f"delivery.succeeded:{delivery_id}",
                "delivery.succeeded",
                event_id,
                delivery_id=delivery_id,
                attempt=1,
            )
            self.post(provider, fields)
        self.settled(event_id, succeeded=2)
        return event_id, ids

    def record(self, key: str, kind: str, event_id: str | None, **detail: Any) -> None:
        self.db.add(
            AuditRow(
                id=str(uuid.uuid4()),
                dedupe_key=key,
                at=T0,
                type=kind,
                event_id=event_id,
                outcome="x",
                detail=detail,
            )
        )

    def settled(self, event_id: str, **counts: int) -> None:
        statuses = ("pending", "retrying", "succeeded", "failed", "skipped")
        tally = {status: counts.get(status, 0) for status in statuses}
        self.record(f"logout.settled:{event_id}", "logout.settled", event_id, deliveries=tally)

    def post(self, provider: str, fields: dict[str, str]) -> None:
        self.posts.append(Received(provider, 200, dict(fields), None))

    def measure(
        self,
        events: list[str],
        *,
        raw: int = 0,
        windows: list[tuple[datetime, datetime]] | None = None,
    ) -> Figures:
        self.db.flush()
        return measure(
            self.db,
            "test",
            Expected(deliveries=dict.fromkeys(events, 2), raw=raw),
            self.posts,
            windows or [],
            stranded=0,
            recovered_s=1.0,
            faults=[],
        )


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    """An empty ledger on SQLite in memory."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as db:
        yield Ledger(db)
    engine.dispose()


def test_a_clean_run_has_nothing_to_report(ledger: Ledger) -> None:
    """Two events handled once each: all completed, and every other figure 0."""
    events = [ledger.event(1)[0], ledger.event(2)[0]]
    figures = ledger.measure(events)
    assert (figures.published, figures.completed, figures.lost) == (2, 2, 0)
    assert figures.doubled == figures.duplicated == figures.contradictory == 0
    assert figures.examples == []


def test_an_event_still_processing_is_lost(ledger: Ledger) -> None:
    """An event not completed, and a raw message neither rejected nor handled, are lost."""
    done, _ = ledger.event(1)
    stuck, _ = ledger.event(2, status="processing")
    ledger.record("event.rejected:m1", "event.rejected", None, message_id="m1")
    ledger.db.add(RejectedEvent(message_id="m1", payload="x", problems=[]))
    figures = ledger.measure([done, stuck], raw=2)
    assert (figures.completed, figures.rejected, figures.lost) == (1, 1, 2)


def test_two_final_records_of_one_delivery_contradict(ledger: Ledger) -> None:
    """``delivery.succeeded`` and ``delivery.failed`` for one delivery: contradictory."""
    event_id, (wiki, _) = ledger.event(1)
    ledger.record(f"delivery.failed:{wiki}", "delivery.failed", event_id, delivery_id=wiki)
    figures = ledger.measure([event_id])
    assert figures.contradictory == 1
    assert wiki in figures.examples[0]


def test_settled_tallies_must_match_the_rows(ledger: Ledger) -> None:
    """A ``logout.settled`` counting a failure the rows do not hold contradicts them."""
    event_id, _ = ledger.event(1)
    ledger.db.query(AuditRow).filter(AuditRow.type == "logout.settled").delete()
    ledger.settled(event_id, succeeded=1, failed=1)
    assert ledger.measure([event_id]).contradictory == 1


def test_a_fact_recorded_twice_is_duplicated(ledger: Ledger) -> None:
    """The same ``session.ended`` under two dedupe keys counts once as duplicated."""
    event_id, _ = ledger.event(1)
    for key in ("session.ended:s-1", "session.ended:s-1:again"):
        ledger.db.add(
            AuditRow(
                id=str(uuid.uuid4()),
                dedupe_key=key,
                at=T0,
                type="session.ended",
                session_id="s-1",
                outcome="ended",
                detail={},
            )
        )
    assert ledger.measure([event_id]).duplicated == 1


def test_a_second_post_is_allowed_only_when_at_least_once_explains_it(ledger: Ledger) -> None:
    """A second POST is unexplained, unless a transient failure was recorded or the delivery
    was open during a fault's window; a window after it was final explains nothing."""
    event_id, (wiki, payroll) = ledger.event(1)
    ledger.post("wiki", {"sid": "sid-1"})
    ledger.post("payroll", {"session_index": "idx-1"})
    plain = ledger.measure([event_id])
    assert (plain.doubled, plain.doubled_allowed) == (2, 0)

    later = (T0 + timedelta(seconds=5), T0 + timedelta(seconds=6))
    assert ledger.measure([event_id], windows=[later]).doubled_allowed == 0
    during = (T0 + timedelta(milliseconds=500), T0 + timedelta(milliseconds=600))
    assert ledger.measure([event_id], windows=[during]).doubled_allowed == 2

    ledger.record(
        f"delivery.retrying:{wiki}:1", "delivery.retrying", event_id, delivery_id=wiki, attempt=1
    )
    retried = ledger.measure([event_id])
    assert (retried.doubled, retried.doubled_allowed) == (2, 1)
    assert payroll in " ".join(retried.examples)


def test_the_table_says_never_for_a_run_that_did_not_recover(ledger: Ledger) -> None:
    """One header, one rule, one line per scenario; no recovery reads ``never``."""
    figures = ledger.measure([ledger.event(1)[0]])
    figures.recovered_s = None
    lines = table([figures])
    assert len(lines) == 3
    assert lines[0].startswith("scenario")
    assert "never" in lines[2]
