"""Handling events: which sessions end, deliveries, dedupe, rejection, resume after a crash."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, select, update

from orchestrator import HandleResult, LogoutEngine, Runtime
from orchestrator.leases import Leases
from orchestrator.logout import Attempts, Outcome, Work
from orchestrator.logout.batch import Begun
from orchestrator.sender import HttpSender
from orchestrator.store import (
    AuditRow,
    Delivery,
    EventRecord,
    EventStatus,
    IdpSession,
    ProviderSession,
    RejectedEvent,
    utcnow,
)
from schemas import BINDING_LOGOUT_REASON
from tests.unit.conftest import make_event, store_providers


def _no_sender() -> HttpSender:
    raise AssertionError("no request should be sent: no protocol handler is enabled")


class _WorkerDies(Attempts):
    """The worker is killed right after the event's first transaction committed."""

    def attempt(self, works: Sequence[Work], leases: Leases) -> dict[str, Outcome]:
        raise RuntimeError("SIGKILL")


class _Killed(LogoutEngine):
    """A process killed mid-event gives nothing up: its leases run out by themselves."""

    def _release(self, event_ids: list[str]) -> None:
        return


def _crash(runtime: Runtime, event: dict[str, Any], message_id: str) -> None:
    dying = _WorkerDies(_no_sender, runtime.retry_policy())
    killed = _Killed(runtime.database, {}, dying, _no_schedule, lease=runtime.delivery_lease)
    with pytest.raises(RuntimeError, match="SIGKILL"):
        killed.handle(event, message_id)


def _leases_run_out(runtime: Runtime, *, deliveries: bool = True) -> None:
    """The dead worker's leases end: its event's (and, with ``deliveries``, its attempts')."""
    past = utcnow() - timedelta(seconds=1)
    with runtime.database.begin() as db:
        db.execute(update(EventRecord).values(lease_until=past))
        if deliveries:
            db.execute(update(Delivery).values(next_attempt_at=past))


def _no_schedule(delivery_id: str, delay: float) -> None:
    return


def _processor(runtime: Runtime) -> LogoutEngine:
    attempts = Attempts(_no_sender, runtime.retry_policy())
    return LogoutEngine(
        runtime.database, runtime.handlers, attempts, _no_schedule, lease=runtime.delivery_lease
    )


def _audit(runtime: Runtime, event_id: str | None = None) -> list[AuditRow]:
    with runtime.database() as db:
        query = select(AuditRow).order_by(AuditRow.seq)
        if event_id is not None:
            query = query.where(AuditRow.event_id == event_id)
        return list(db.scalars(query))


def _ended(runtime: Runtime) -> dict[str, str | None]:
    with runtime.database() as db:
        rows = db.scalars(select(IdpSession).where(IdpSession.ended_at.is_not(None)))
        return {row.session_id: row.end_reason for row in rows}


def _delivered(runtime: Runtime, event_id: str) -> set[tuple[str, str]]:
    with runtime.database() as db:
        rows = db.scalars(select(Delivery).where(Delivery.event_id == event_id))
        return {(row.session_id, row.provider) for row in rows}


def _handle(runtime: Runtime, kind: str, message_id: str = "m-1", **fields: Any) -> str:
    event = make_event(kind, **fields)
    assert _processor(runtime).handle(event, message_id) is HandleResult.COMPLETED
    return str(event["event_id"])


def test_user_logout_ends_one_session_and_all_its_provider_sessions(populated: Runtime) -> None:
    """logout.user ends the session and records a delivery per provider session."""
    event_id = _handle(populated, "logout.user", session_id="s-1")
    assert _ended(populated) == {"s-1": "logout"}
    assert _delivered(populated, event_id) == {("s-1", "wiki"), ("s-1", "chat"), ("s-1", "payroll")}
    types = [row.type for row in _audit(populated, event_id)]
    assert types[:2] == ["event.received", "session.ended"]
    assert types.count("delivery.skipped") == 3
    assert types[-2:] == ["logout.completed", "logout.settled"]


def test_roll_up_counts_outcomes(populated: Runtime) -> None:
    """logout.completed carries counts per delivery outcome."""
    event_id = _handle(populated, "logout.user", session_id="s-1")
    completed = [r for r in _audit(populated, event_id) if r.type == "logout.completed"]
    assert len(completed) == 1
    detail = completed[0].detail
    assert detail["deliveries"]["skipped"] == 3
    assert detail["deliveries"]["succeeded"] == 0
    assert detail["sessions_ended"] == 1
    assert completed[0].user_id == "alice"
    assert completed[0].outcome == "success"


def test_skipped_delivery_says_why(populated: Runtime) -> None:
    """A delivery for a protocol with no handler is skipped with a reason."""
    event_id = _handle(populated, "session.revoke", session_id="s-2", initiator="admin")
    skipped = [r for r in _audit(populated, event_id) if r.type == "delivery.skipped"]
    assert [r.provider for r in skipped] == ["wiki"]
    assert skipped[0].detail["reason"] == "no handler for protocol 'oidc' is enabled"


def test_revoke_all_ends_every_session_of_the_user_only(populated: Runtime) -> None:
    """user.revoke_all ends alice's three sessions and leaves bob's."""
    event_id = _handle(populated, "user.revoke_all", user_id="alice", initiator="admin")
    assert _ended(populated) == {"s-1": "revoked_all", "s-2": "revoked_all", "s-3": "revoked_all"}
    assert len(_delivered(populated, event_id)) == 5
    ended = [str(r.session_id) for r in _audit(populated, event_id) if r.type == "session.ended"]
    assert sorted(ended) == ["s-1", "s-2", "s-3"]


def test_terminate_others_keeps_the_current_session(populated: Runtime) -> None:
    """session.terminate_others ends the user's other sessions, one delivery per session."""
    event_id = _handle(
        populated, "session.terminate_others", user_id="alice", keep_session_id="s-2"
    )
    assert _ended(populated) == {"s-1": "terminated_at_login", "s-3": "terminated_at_login"}
    assert _delivered(populated, event_id) == {
        ("s-1", "wiki"),
        ("s-1", "chat"),
        ("s-1", "payroll"),
        ("s-3", "chat"),
    }


def test_expiry_records_the_reason(populated: Runtime) -> None:
    """session.expired ends the session with the idle or absolute reason."""
    _handle(populated, "session.expired", session_id="s-2", reason="absolute", initiator="system")
    assert _ended(populated) == {"s-2": "expired_absolute"}


def test_provider_logout_ends_only_that_provider_session(populated: Runtime) -> None:
    """logout.provider without full_logout leaves the IdP session and other providers alone."""
    event_id = _handle(populated, "logout.provider", session_id="s-1", provider="chat")
    assert _ended(populated) == {}
    assert _delivered(populated, event_id) == {("s-1", "chat")}
    with populated.database() as db:
        open_links = db.scalars(
            select(ProviderSession.provider).where(
                ProviderSession.session_id == "s-1", ProviderSession.ended_at.is_(None)
            )
        )
        assert sorted(open_links) == ["payroll", "wiki"]


def test_provider_logout_with_full_logout_ends_everything(populated: Runtime) -> None:
    """full_logout=true turns an RP-initiated logout into a full single logout."""
    event_id = _handle(
        populated, "logout.provider", session_id="s-1", provider="chat", full_logout=True
    )
    assert _ended(populated) == {"s-1": "provider_logout"}
    assert len(_delivered(populated, event_id)) == 3


def test_provider_configured_for_full_logout(populated: Runtime) -> None:
    """A provider with full_logout_on_rp_initiated ends everything on its own logout."""
    store_providers(
        populated,
        '[[providers]]\nname = "chat"\nprotocol = "oidc"\nfull_logout_on_rp_initiated = true\n',
    )
    event_id = _handle(populated, "logout.provider", session_id="s-1", provider="chat")
    assert _ended(populated) == {"s-1": "provider_logout"}
    assert len(_delivered(populated, event_id)) == 3


def test_binding_violation_audit_carries_the_documented_shape(populated: Runtime) -> None:
    """The logout record of a binding violation has logout_reason and the five objects."""
    violation: dict[str, Any] = {
        "binding": {
            "reason": "geoip.country",
            "previous_value": {
                "continent": "EU",
                "country": "SE",
                "city": "Linköping",
                "lat": None,
                "long": None,
            },
            "new_value": {
                "continent": "EU",
                "country": "GB",
                "city": "London",
                "lat": 51.5,
                "long": -0.1,
            },
        },
        "ip": {"previous": "89.160.20.112", "new": "81.2.69.142"},
        "asn": {"asn": 29518, "as_org": "Bredband2 AB", "network": "89.160.0.0/17"},
        "geo": {"continent": "EU", "country": "GB", "city": "London", "lat": 51.5, "long": -0.1},
        "http_request": {"path": "/app", "method": "GET", "args": {"a": "1"}, "user_agent": "ff"},
    }
    event_id = _handle(
        populated, "session.binding_violation", session_id="s-1", initiator="policy", **violation
    )
    [ended] = [r for r in _audit(populated, event_id) if r.type == "session.ended"]
    assert ended.detail["logout_reason"] == BINDING_LOGOUT_REASON == "Session binding broken"
    for key, value in violation.items():
        assert ended.detail[key] == value
    assert _ended(populated) == {"s-1": "binding_violation"}


def test_binding_violation_queued_in_the_string_shape_is_handled(populated: Runtime) -> None:
    """An event published before the records (a rolling upgrade) ends the session, audited as
    records."""
    event_id = _handle(
        populated,
        "session.binding_violation",
        session_id="s-1",
        initiator="policy",
        binding={"reason": "network.asn", "previous_value": "15169", "new_value": None},
        ip={"previous": "89.160.20.112", "new": "10.0.0.1"},
    )
    assert _ended(populated) == {"s-1": "binding_violation"}
    [ended] = [r for r in _audit(populated, event_id) if r.type == "session.ended"]
    assert ended.detail["binding"] == {
        "reason": "network.asn",
        "previous_value": {"asn": 15169, "as_org": None, "network": None},
        "new_value": {},
    }
    assert not [r for r in _audit(populated, event_id) if r.type == "event.rejected"]


def test_republished_event_is_a_duplicate_and_changes_nothing(populated: Runtime) -> None:
    """The same event_id again leaves one event.duplicate record and nothing else."""
    event = make_event("logout.user", session_id="s-1")
    processor = _processor(populated)
    assert processor.handle(event, "m-1") is HandleResult.COMPLETED
    before = len(_audit(populated))
    assert processor.handle(event, "m-2") is HandleResult.DUPLICATE
    after = _audit(populated)
    assert len(after) == before + 1
    assert after[-1].type == "event.duplicate"
    assert after[-1].detail["same_payload"] is True
    assert after[-1].detail["first_message_id"] == "m-1"


def test_redelivered_completed_message_is_a_duplicate(populated: Runtime) -> None:
    """A message delivered again after it completed is a no-op with one duplicate record."""
    event = make_event("logout.user", session_id="s-1")
    processor = _processor(populated)
    processor.handle(event, "m-1")
    assert processor.handle(event, "m-1") is HandleResult.DUPLICATE
    assert processor.handle(event, "m-1") is HandleResult.DUPLICATE
    duplicates = [r for r in _audit(populated) if r.type == "event.duplicate"]
    assert len(duplicates) == 1


def test_its_own_message_again_settles_a_logout_whose_roll_up_was_lost(
    populated: Runtime,
) -> None:
    """The event's commit went through but what follows it did not (the database went away
    before ``logout.settled``, and the worker runs the message again): the second run writes
    the missing roll-up, counted from the rows, once; a third writes nothing more."""
    event = make_event("logout.user", session_id="s-1")
    processor = _processor(populated)
    processor.handle(event, "m-1")
    settled = [r for r in _audit(populated, event["event_id"]) if r.type == "logout.settled"]
    assert len(settled) == 1
    with populated.database.begin() as db:  # as if the worker had died before writing it
        db.execute(delete(AuditRow).where(AuditRow.id == settled[0].id))
    assert processor.handle(event, "m-1") is HandleResult.DUPLICATE
    assert processor.handle(event, "m-1") is HandleResult.DUPLICATE
    again = [r for r in _audit(populated, event["event_id"]) if r.type == "logout.settled"]
    assert len(again) == 1
    assert again[0].detail == settled[0].detail


def test_same_event_id_with_other_content_is_flagged(populated: Runtime) -> None:
    """A re-used event_id with a different payload is a duplicate marked as different."""
    event = make_event("logout.user", session_id="s-1")
    processor = _processor(populated)
    processor.handle(event, "m-1")
    processor.handle({**event, "session_id": "s-2"}, "m-2")
    assert _ended(populated) == {"s-1": "logout"}
    assert _audit(populated)[-1].detail["same_payload"] is False


def test_invalid_event_is_rejected_and_kept(populated: Runtime) -> None:
    """An invalid message is recorded whole with its problems, never dropped."""
    raw = {"type": "session.revoke", "event_id": "not-a-uuid", "session_id": "s-1"}
    assert _processor(populated).handle(raw, "m-bad") is HandleResult.REJECTED
    with populated.database() as db:
        [rejected] = db.scalars(select(RejectedEvent)).all()
    assert rejected.message_id == "m-bad"
    assert '"not-a-uuid"' in rejected.payload
    assert any(p.startswith("event: event_id:") for p in rejected.problems)
    assert any("initiator: Field required" in p for p in rejected.problems)
    [record] = _audit(populated)
    assert (record.type, record.outcome, record.event_id) == (
        "event.rejected",
        "rejected",
        "not-a-uuid",
    )
    assert _ended(populated) == {}


def test_non_object_message_is_rejected(populated: Runtime) -> None:
    """A message whose argument is not an object at all is rejected, not crashed on."""
    assert _processor(populated).handle(["logout"], "m-list") is HandleResult.REJECTED
    assert [r.type for r in _audit(populated)] == ["event.rejected"]


def test_unknown_session_is_audited(populated: Runtime) -> None:
    """An event naming an unknown session completes with a session.not_found record."""
    event_id = _handle(populated, "logout.user", session_id="nope")
    types = [r.type for r in _audit(populated, event_id)]
    assert types == ["event.received", "session.not_found", "logout.completed", "logout.settled"]
    assert _audit(populated, event_id)[1].outcome == "not_found"


def test_already_ended_session_is_not_ended_again(populated: Runtime) -> None:
    """Ending an ended session sends nothing and says it was already ended."""
    _handle(populated, "session.expired", session_id="s-1", reason="idle")
    event_id = _handle(populated, "logout.user", session_id="s-1")
    assert _delivered(populated, event_id) == set()
    [not_found] = [r for r in _audit(populated, event_id) if r.type == "session.not_found"]
    assert not_found.outcome == "already_ended"
    assert not_found.detail["end_reason"] == "expired_idle"
    assert _ended(populated) == {"s-1": "expired_idle"}


def test_a_revoke_naming_its_user_ends_only_a_session_of_that_user(populated: Runtime) -> None:
    """session.revoke with user_id: bob's s-9 named as alice's stays open (audited
    not_owned), alice's s-1 ends, an already ended one still says so."""
    stolen = _handle(populated, "session.revoke", session_id="s-9", user_id="alice")
    own = _handle(populated, "session.revoke", "m-2", session_id="s-1", user_id="alice")
    again = _handle(populated, "session.revoke", "m-3", session_id="s-1", user_id="bob")
    assert _ended(populated) == {"s-1": "revoked"}
    assert _delivered(populated, stolen) == set()
    [refused] = [r for r in _audit(populated, stolen) if r.type == "session.not_found"]
    assert (refused.outcome, refused.user_id) == ("not_owned", "bob")
    assert refused.detail == {"reason": "session of another user", "named_user": "alice"}
    assert [r.type for r in _audit(populated, own)][:2] == ["event.received", "session.ended"]
    [ended] = [r for r in _audit(populated, again) if r.type == "session.not_found"]
    assert ended.outcome == "already_ended"


def test_crash_after_ending_sessions_resumes_without_doubling(populated: Runtime) -> None:
    """A redelivered message resumes a half-done event: one of every record, all deliveries."""
    event = make_event("user.revoke_all", user_id="alice", initiator="admin")
    processor = _processor(populated)
    # The first attempt dies after its first transaction (sessions ended, deliveries
    # recorded and leased), before anything was sent.
    _crash(populated, event, "m-1")
    with populated.database() as db:
        assert db.scalar(select(func.count()).select_from(Delivery)) == 5
    # Its leases run out; the broker redelivers the same message to another worker.
    _leases_run_out(populated)
    assert processor.handle(event, "m-1") is HandleResult.COMPLETED
    rows = _audit(populated, str(event["event_id"]))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.type] = counts.get(row.type, 0) + 1
    assert counts == {
        "event.received": 1,
        "session.ended": 3,
        "delivery.skipped": 5,
        "logout.completed": 1,
        "logout.settled": 1,
    }
    with populated.database() as db:
        assert db.scalar(select(func.count()).select_from(Delivery)) == 5
        status = db.scalar(select(EventRecord.status))
    assert status == EventStatus.COMPLETED


def test_other_message_during_processing_is_a_duplicate(populated: Runtime) -> None:
    """A re-publish while the first message is still in progress does not run it twice."""
    event = make_event("logout.user", session_id="s-1")
    processor = _processor(populated)
    _crash(populated, event, "m-1")
    assert processor.handle(event, "m-2") is HandleResult.DUPLICATE
    assert _ended(populated) == {"s-1": "logout"}  # by the first message, not the second


def test_a_second_copy_of_a_message_in_progress_is_refused(populated: Runtime) -> None:
    """While the event's lease runs, its own message again is BUSY and changes nothing."""
    event = make_event("logout.user", session_id="s-1")
    _crash(populated, event, "m-1")  # to the pipeline, as a live worker still at it
    before = [(r.type, r.dedupe_key) for r in _audit(populated)]
    with populated.database() as db:
        attempts = sorted(db.scalars(select(Delivery.attempts)))
    assert _processor(populated).handle(event, "m-1") is HandleResult.BUSY
    assert [(r.type, r.dedupe_key) for r in _audit(populated)] == before
    with populated.database() as db:
        assert sorted(db.scalars(select(Delivery.attempts))) == attempts, "nothing was claimed"
        assert db.scalar(select(EventRecord.status)) == EventStatus.PROCESSING
    _leases_run_out(populated)
    assert _processor(populated).handle(event, "m-1") is HandleResult.COMPLETED


def test_an_event_that_failed_in_process_is_resumed_at_once(populated: Runtime) -> None:
    """An exception (not a death) gives the event's lease up: handling it again need not wait."""
    event = make_event("logout.user", session_id="s-1")
    failing = _WorkerDies(_no_sender, populated.retry_policy())
    engine = LogoutEngine(
        populated.database, {}, failing, _no_schedule, lease=populated.delivery_lease
    )
    with pytest.raises(RuntimeError, match="SIGKILL"):
        engine.handle(event, "m-1")
    with populated.database() as db:
        assert db.scalar(select(EventRecord.lease_until)) is None
    with populated.database.begin() as db:  # its deliveries' leases ran out meanwhile
        db.execute(update(Delivery).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    assert _processor(populated).handle(event, "m-1") is HandleResult.COMPLETED


def test_replay_puts_back_deliveries_still_leased(populated: Runtime) -> None:
    """A replay while the dead attempt's leases run schedules them for when they end."""
    scheduled: list[tuple[str, float]] = []
    processor = LogoutEngine(
        populated.database,
        populated.handlers,
        Attempts(_no_sender, populated.retry_policy()),
        lambda delivery_id, delay: scheduled.append((delivery_id, delay)),
        lease=populated.delivery_lease,
    )
    event = make_event("logout.user", session_id="s-1")
    _crash(populated, event, "m-1")
    _leases_run_out(populated, deliveries=False)  # the event's worker died; the attempts live
    assert processor.handle(event, "m-1") is HandleResult.COMPLETED
    assert len(scheduled) == 3
    assert all(0 < delay <= populated.delivery_lease for _, delay in scheduled)
    [completed] = [r for r in _audit(populated) if r.type == "logout.completed"]
    assert completed.outcome == "retrying"
    assert completed.detail["deliveries"]["pending"] == 3
    assert not [r for r in _audit(populated) if r.type == "logout.settled"]


@pytest.mark.parametrize(
    ("kind", "fields", "reason"),
    [
        ("logout.user", {"session_id": "s-2"}, "logout"),
        ("session.revoke", {"session_id": "s-2"}, "revoked"),
        ("session.expired", {"session_id": "s-2", "reason": "idle"}, "expired_idle"),
    ],
)
def test_end_reasons(populated: Runtime, kind: str, fields: dict[str, Any], reason: str) -> None:
    """Each way a session ends is recorded on the session."""
    _handle(populated, kind, **fields)
    assert _ended(populated) == {"s-2": reason}


def test_racing_events_end_each_session_exactly_once(runtime: Runtime) -> None:
    """Events racing for the same sessions end each once, with one delivery per link."""
    from concurrent.futures import ThreadPoolExecutor

    store_providers(runtime, '[[providers]]\nname="w"\nprotocol="oidc"\n')
    lines = []
    for n in range(40):
        lines.append(f'{{"kind": "session", "session_id": "r-{n}", "user_id": "u"}}')
        lines.append(f'{{"kind": "provider_session", "session_id": "r-{n}", "provider": "w"}}')
    runtime.registry.import_lines(lines)
    events = [make_event("logout.user", session_id=f"r-{n}") for n in range(40)]
    events.insert(20, make_event("user.revoke_all", user_id="u", initiator="admin"))
    processor = _processor(runtime)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda e: processor.handle(e, str(e["event_id"])), events))
    assert set(results) == {HandleResult.COMPLETED}
    rows = _audit(runtime)
    ended = [str(r.session_id) for r in rows if r.type == "session.ended"]
    assert sorted(ended) == sorted(f"r-{n}" for n in range(40))
    totals = sum(r.detail["sessions_ended"] for r in rows if r.type == "logout.completed")
    assert totals == 40
    with runtime.database() as db:
        assert db.scalar(select(func.count()).select_from(Delivery)) == 40
        per_link = db.execute(
            select(Delivery.provider_session_id, func.count()).group_by(
                Delivery.provider_session_id
            )
        ).all()
    assert {count for _, count in per_link} == {1}


def test_a_batch_keeps_every_event_apart(populated: Runtime) -> None:
    """A mixed batch: each event gets its own outcome, sessions, deliveries and records."""
    user = make_event("logout.user", session_id="s-2")
    again = dict(user)  # the same event twice in one batch
    partial = make_event("logout.provider", session_id="s-1", provider="chat")
    bob = make_event("user.revoke_all", user_id="bob", initiator="admin")
    unknown = make_event("session.revoke", session_id="nope", initiator="admin")
    invalid = {"type": "session.revoke", "session_id": "s-3"}
    results = _processor(populated).handle_batch(
        [
            (user, "m-1"),
            (again, "m-2"),
            (partial, "m-3"),
            (bob, "m-4"),
            (unknown, "m-5"),
            (invalid, "m-6"),
        ]
    )
    assert results == [
        HandleResult.COMPLETED,
        HandleResult.DUPLICATE,
        HandleResult.COMPLETED,
        HandleResult.COMPLETED,
        HandleResult.COMPLETED,
        HandleResult.REJECTED,
    ]
    assert _ended(populated) == {"s-2": "logout", "s-9": "revoked_all"}
    assert _delivered(populated, str(user["event_id"])) == {("s-2", "wiki")}
    assert _delivered(populated, str(partial["event_id"])) == {("s-1", "chat")}
    assert _delivered(populated, str(bob["event_id"])) == {("s-9", "wiki")}
    rows = _audit(populated)
    [duplicate] = [r for r in rows if r.type == "event.duplicate"]
    assert duplicate.event_id == user["event_id"]
    assert duplicate.detail["first_message_id"] == "m-1"
    completed = {r.event_id: r for r in rows if r.type == "logout.completed"}
    assert set(completed) == {str(e["event_id"]) for e in (user, partial, bob, unknown)}
    assert completed[str(bob["event_id"])].user_id == "bob"
    assert completed[str(partial["event_id"])].detail["sessions_ended"] == 0
    assert [r.outcome for r in rows if r.type == "session.not_found"] == ["not_found"]
    assert [r.type for r in rows].count("event.rejected") == 1
    assert [r.type for r in rows].count("logout.settled") == 4


def test_two_events_for_one_session_in_one_batch(populated: Runtime) -> None:
    """In one batch, the first event naming a session ends it; the other finds it ended."""
    first = make_event("session.expired", session_id="s-1", reason="idle", initiator="system")
    second = make_event("logout.user", session_id="s-1")
    _processor(populated).handle_batch([(first, "m-1"), (second, "m-2")])
    assert _ended(populated) == {"s-1": "expired_idle"}
    assert len(_delivered(populated, str(first["event_id"]))) == 3
    assert _delivered(populated, str(second["event_id"])) == set()
    [missing] = [r for r in _audit(populated) if r.type == "session.not_found"]
    assert (missing.event_id, missing.outcome) == (second["event_id"], "already_ended")


def test_replay_of_a_partial_logout_after_the_session_ended(populated: Runtime) -> None:
    """A redelivered RP-initiated logout still delivers once its session was ended meanwhile."""
    partial = make_event("logout.provider", session_id="s-1", provider="chat")
    _crash(populated, partial, "m-1")
    _handle(populated, "session.revoke", message_id="m-2", session_id="s-1", initiator="admin")
    _leases_run_out(populated)
    assert _processor(populated).handle(partial, "m-1") is HandleResult.COMPLETED
    assert _delivered(populated, str(partial["event_id"])) == {("s-1", "chat")}
    [skipped] = [
        r for r in _audit(populated, str(partial["event_id"])) if r.type == "delivery.skipped"
    ]
    assert (skipped.provider, skipped.user_id) == ("chat", "alice")


def _events_counted(kind: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("logout_events_total", {"type": kind, "outcome": outcome}) or 0.0
    )


def test_a_duplicate_and_a_rejection_name_the_event_type_and_are_counted_under_it(
    populated: Runtime,
) -> None:
    """event.duplicate, and event.rejected whose payload names a known type, carry it in
    detail["type"] and move logout_events_total for that type; an unknown type stays out."""
    event = make_event("logout.user", session_id="s-1")
    processor = _processor(populated)
    duplicates = _events_counted("logout.user", "duplicate")
    rejected = _events_counted("session.revoke", "rejected")
    processor.handle(event, "m-1")
    processor.handle(event, "m-2")
    bad = {"type": "session.revoke", "event_id": "not-a-uuid", "session_id": "s-1"}
    processor.handle(bad, "m-bad")
    processor.handle({**bad, "type": "made.up"}, "m-unknown")
    records = {r.type: r for r in _audit(populated) if r.type != "event.rejected"}
    assert records["event.duplicate"].detail["type"] == "logout.user"
    assert records["logout.completed"].detail["type"] == "logout.user"
    by_message = {
        r.detail["message_id"]: r for r in _audit(populated) if r.type == "event.rejected"
    }
    assert by_message["m-bad"].detail["type"] == "session.revoke"
    assert "type" not in by_message["m-unknown"].detail
    assert _events_counted("logout.user", "duplicate") == duplicates + 1
    assert _events_counted("session.revoke", "rejected") == rejected + 1


class _Finishing(LogoutEngine):
    """Notes the events each ``_finish`` completes."""

    finished: list[str]

    def _finish(self, begun: list[Begun], works: list[Work], outcomes: dict[str, Outcome]) -> None:
        self.finished += [item.event_id for item in begun]
        super()._finish(begun, works, outcomes)


def test_every_event_whose_flush_wait_was_skipped_reaches_its_finish(
    populated: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first transaction skips the WAL flush wait only because every one of its events
    goes on to ``_finish``, whose synchronous commit makes it durable: events that end
    nothing, build no delivery and no plan (an unknown session, a user with no session)
    included."""
    skipped: list[int] = []
    monkeypatch.setattr(
        "orchestrator.logout.engine._commit_without_flush_wait", lambda conn: skipped.append(1)
    )
    attempts = Attempts(_no_sender, populated.retry_policy())
    engine = _Finishing(populated.database, {}, attempts, _no_schedule)
    engine.finished = []
    events = [
        make_event("session.revoke", session_id="nope", initiator="admin"),
        make_event("user.revoke_all", user_id="nobody", initiator="admin"),
        make_event("logout.user", session_id="s-2"),
    ]
    results = engine.handle_batch([(event, f"m-{n}") for n, event in enumerate(events)])
    assert results == [HandleResult.COMPLETED] * 3
    assert skipped == [1]
    assert sorted(engine.finished) == sorted(str(event["event_id"]) for event in events)
    with populated.database() as db:
        statuses = db.scalars(select(EventRecord.status)).all()
    assert statuses == [EventStatus.COMPLETED] * 3


def test_a_batch_with_a_duplicate_keeps_the_flush_wait(
    populated: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate is acknowledged after the first transaction alone: that one must be
    durable when it commits."""
    skipped: list[int] = []
    monkeypatch.setattr(
        "orchestrator.logout.engine._commit_without_flush_wait", lambda conn: skipped.append(1)
    )
    event = make_event("logout.user", session_id="s-2")
    results = _processor(populated).handle_batch([(event, "m-1"), (dict(event), "m-2")])
    assert results == [HandleResult.COMPLETED, HandleResult.DUPLICATE]
    assert skipped == []


def test_a_notice_that_cannot_be_sent_does_not_fail_the_logout(populated: Runtime) -> None:
    """Notices go out after the commit and are hints: a notifier that raises is logged."""

    def broken(notices: Sequence[tuple[str, str]]) -> None:
        raise OSError("notification queue full")

    attempts = Attempts(_no_sender, populated.retry_policy())
    engine = LogoutEngine(populated.database, {}, attempts, _no_schedule, notify=broken)
    event = make_event("logout.user", session_id="s-1")
    assert engine.handle(event, "m-1") is HandleResult.COMPLETED
    assert _ended(populated) == {"s-1": "logout"}
    with populated.database() as db:
        assert db.scalars(select(EventRecord.status)).all() == [EventStatus.COMPLETED]
