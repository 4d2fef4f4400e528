"""Session lifecycle: policy, starts and sightings, the session limit, the expiry sweeper and
the binding check (SQLite, in-process processing, MaxMind's test databases)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY
from sqlalchemy import select

import orchestrator.expiry
from orchestrator import Runtime, Settings
from orchestrator.activity import limit_revoke_id
from orchestrator.audit import AuditQuery, query_audit
from orchestrator.binding import BindingOk, BindingViolation
from orchestrator.binding_check import BindingChecker
from orchestrator.errors import ConfigurationError, InputError
from orchestrator.expiry import ExpirySweeper, expiry_event_id
from orchestrator.logout import HandleResult, LogoutEngine
from orchestrator.outbox import OutboxMessage
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import IdpSession
from orchestrator.validation import parse_event
from schemas import Event, SessionExpired, SessionRevoke, SessionStarted
from tests.geoip_data import GeoipFiles
from workers.cli import main

from .conftest import make_event

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _processor(runtime: Runtime) -> LogoutEngine:
    return runtime.processor(schedule=lambda *_: None)


def _session(runtime: Runtime, session_id: str) -> IdpSession:
    with runtime.database() as db:
        row = db.get(IdpSession, session_id)
        assert row is not None
        return row


def _audit(runtime: Runtime, **filters: Any) -> list[Any]:
    with runtime.database() as db:
        return query_audit(db, AuditQuery(limit=None, **filters))


# -- the policy --------------------------------------------------------------------------


def test_policy_deadlines() -> None:
    """Duration, browser session, stay-signed-in offset, remember-me lifetime, the hard cap."""
    policy = SessionPolicy(duration=timedelta(hours=8))
    assert policy.expires_at(T0) == T0 + timedelta(hours=8)
    assert SessionPolicy(duration=timedelta(0)).expires_at(T0) is None  # browser session
    offset = SessionPolicy(duration=timedelta(hours=8), stay_signed_in_offset=timedelta(days=2))
    assert offset.expires_at(T0, stay_signed_in=True) == T0 + timedelta(days=2, hours=8)
    assert offset.expires_at(T0) == T0 + timedelta(hours=8)
    remember = SessionPolicy(remember_me_lifetime=timedelta(days=30))
    assert remember.expires_at(T0, remember_me=True) == T0 + timedelta(days=30)
    capped = SessionPolicy(
        duration=timedelta(0),
        remember_me_lifetime=timedelta(days=30),
        absolute_lifetime=timedelta(days=7),
    )
    assert capped.expires_at(T0) == T0 + timedelta(days=7)
    assert capped.expires_at(T0, remember_me=True) == T0 + timedelta(days=7)
    assert SessionPolicy(idle_timeout=timedelta(minutes=30)).idle_since(T0) == T0 - timedelta(
        minutes=30
    )
    assert SessionPolicy().idle_since(T0) is None


def test_policy_settings_take_both_notations(tmp_path: Path) -> None:
    """``hours=1,minutes=2.5`` and ``1h30m`` alike; -1 disables; bad text is named."""
    config = tmp_path / "c.toml"
    config.write_text(
        'session_duration = "hours=1,minutes=2.5"\n'
        'session_idle_timeout = "1h30m"\n'
        'session_absolute_lifetime = "1M"\n'
        'session_remember_me_lifetime = "-1"\n'
        "max_sessions_per_user = 3\n"
    )
    settings = Settings.load(config, data_dir=tmp_path)
    policy = SessionPolicy.from_settings(settings)
    assert policy.duration == timedelta(hours=1, minutes=2.5)
    assert policy.idle_timeout == timedelta(hours=1, minutes=30)
    assert policy.absolute_lifetime == timedelta(days=30)
    assert policy.remember_me_lifetime is None
    assert policy.max_sessions_per_user == 3
    with pytest.raises(ConfigurationError, match=r"session_idle_timeout.*90 minutes"):
        Settings.load(None, data_dir=tmp_path, session_idle_timeout="90 minutes")


# -- starts, sightings, the limit ----------------------------------------------------------


@pytest.fixture
def limited(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.start(
        settings.with_overrides(max_sessions_per_user=2, session_duration="8h"), handlers={}
    )
    yield runtime
    runtime.close()


def _start(
    processor: LogoutEngine, session_id: str, user: str, at: datetime, **fields: Any
) -> dict[str, Any]:
    event = make_event(
        "session.started",
        session_id=session_id,
        user_id=user,
        occurred_at=at.isoformat(),
        **fields,
    )
    assert processor.handle(event, f"m-{uuid.uuid4()}") is HandleResult.RECORDED
    return event


def test_started_records_the_session_with_its_deadline(limited: Runtime) -> None:
    """A start makes the session (deadline from the policy) and audits it once."""
    processor = _processor(limited)
    event = _start(processor, "s-1", "alice", T0, ip="81.2.69.142", remember_me=True)
    row = _session(limited, "s-1")
    assert (row.user_id, row.ip, row.remember_me) == ("alice", "81.2.69.142", True)
    assert row.created_at == T0
    assert row.expires_at == T0 + timedelta(hours=8)
    processor.handle(event, "again")  # redelivered
    started = _audit(limited, type="session.started")
    assert [(r.session_id, r.detail["remember_me"]) for r in started] == [("s-1", True)]


def test_session_limit_ends_the_oldest_sessions(limited: Runtime) -> None:
    """Over max_sessions_per_user=2 the oldest session ends, audited with the reason."""
    processor = _processor(limited)
    _start(processor, "s-1", "alice", T0)
    _start(processor, "s-2", "alice", T0 + timedelta(minutes=1))
    _start(processor, "s-9", "bob", T0 + timedelta(minutes=1))
    third = _start(processor, "s-3", "alice", T0 + timedelta(minutes=2))
    assert _session(limited, "s-1").end_reason == "revoked"
    assert _session(limited, "s-2").ended_at is None
    assert _session(limited, "s-3").ended_at is None
    assert _session(limited, "s-9").ended_at is None
    [ended] = _audit(limited, type="session.ended")
    assert ended.session_id == "s-1"
    assert ended.detail["initiator"] == "policy"
    assert ended.detail["actor"] == "session-limit"
    assert "concurrent session limit" in ended.detail["reason"]
    processor.handle(third, "redelivered")  # the same start again ends nothing more
    assert len(_audit(limited, type="session.ended")) == 1
    assert len(_audit(limited, type="event.received")) == 1


def test_session_limit_publishes_through_the_outbox(limited: Runtime) -> None:
    """In a worker the revocations go to the outbox and the relay (the broker); a session still
    open when the next start comes is named again under the same id: the outbox keeps one."""
    sent: list[OutboxMessage] = []
    activity = limited.activity(limited.relay(sent.append).run)
    for minute, session_id in enumerate(("s-1", "s-2", "s-3", "s-4")):
        event = make_event(
            "session.started",
            session_id=session_id,
            user_id="alice",
            occurred_at=(T0 + timedelta(minutes=minute)).isoformat(),
        )
        parsed = parse_event(event)
        assert isinstance(parsed, SessionStarted)
        activity.handle(parsed)
    revoked = [e for e in _events(sent) if isinstance(e, SessionRevoke)]
    assert [e.session_id for e in revoked] == ["s-1", "s-2"]
    assert [e.event_id for e in revoked] == [limit_revoke_id("s-1"), limit_revoke_id("s-2")]
    assert [m.message_id for m in sent] == [str(e.event_id) for e in revoked]


def test_seen_moves_last_seen_forward_only(limited: Runtime) -> None:
    """A sighting updates last_seen; an older one changes nothing; unknown sessions too."""
    processor = _processor(limited)
    _start(processor, "s-1", "alice", T0)
    seen = make_event(
        "session.seen", session_id="s-1", occurred_at=(T0 + timedelta(minutes=5)).isoformat()
    )
    assert processor.handle(seen, "m-seen") is HandleResult.RECORDED
    assert _session(limited, "s-1").last_seen == T0 + timedelta(minutes=5)
    older = make_event("session.seen", session_id="s-1", occurred_at=T0.isoformat())
    processor.handle(older, "m-older")
    assert _session(limited, "s-1").last_seen == T0 + timedelta(minutes=5)
    activity = limited.activity()
    assert activity.seen("nobody") is False
    assert activity.seen("s-1", T0 + timedelta(hours=1)) is True


def test_activity_events_without_a_handler_are_rejected_and_recorded(runtime: Runtime) -> None:
    """A processor without session activity refuses such events with a reason (kept)."""
    processor = runtime.logout_engine(lambda *_: None)
    event = make_event("session.seen", session_id="s-1")
    assert processor.handle(event, "m-1") is HandleResult.REJECTED
    [record] = _audit(runtime, type="event.rejected")
    assert "not handled by this processor" in json.dumps(record.detail)


# -- the expiry sweeper ------------------------------------------------------------------------


def _sweeper(runtime: Runtime, policy: SessionPolicy, **kwargs: Any) -> ExpirySweeper:
    return ExpirySweeper(runtime.database, policy, **kwargs)


def _events(messages: Sequence[OutboxMessage]) -> list[Event]:
    return [parse_event(m.payload) for m in messages]


def _relayed(runtime: Runtime) -> list[Event]:
    """Publish what the outbox holds; the events published."""
    sent: list[OutboxMessage] = []
    runtime.relay(sent.append).run()
    return _events(sent)


def _import(runtime: Runtime, *records: dict[str, Any]) -> None:
    lines = [json.dumps({"kind": "session", "user_id": "alice", **r}) for r in records]
    runtime.registry.import_lines(lines)


def test_sweeper_publishes_each_expiry_once(runtime: Runtime) -> None:
    """Absolute and idle expiries are published once; open, ended and fresh sessions not."""
    now = datetime.now(UTC)
    _import(
        runtime,
        {
            "session_id": "abs",
            "created": (now - timedelta(days=2)).isoformat(),
            "expires": (now - timedelta(minutes=1)).isoformat(),
        },
        {
            "session_id": "idle",
            "created": (now - timedelta(hours=3)).isoformat(),
            "last_seen": (now - timedelta(hours=2)).isoformat(),
            "expires": (now + timedelta(days=1)).isoformat(),
        },
        {"session_id": "fresh", "expires": (now + timedelta(days=1)).isoformat()},
    )
    policy = SessionPolicy(idle_timeout=timedelta(hours=1))
    counted = {r: _expired_count(r) for r in ("idle", "absolute")}
    assert _sweeper(runtime, policy).sweep(now).claimed == 2
    assert {r: _expired_count(r) - counted[r] for r in counted} == {"idle": 1, "absolute": 1}
    published = _relayed(runtime)
    reasons = {e.session_id: e.reason for e in published if isinstance(e, SessionExpired)}
    assert reasons == {"abs": "absolute", "idle": "idle"}
    assert {e.event_id for e in published} == {expiry_event_id("abs"), expiry_event_id("idle")}
    assert _sweeper(runtime, policy).sweep(now).claimed == 0
    assert _relayed(runtime) == []


def _expired_count(reason: str) -> float:
    """logout_sessions_expired_total{reason} of this process."""
    return REGISTRY.get_sample_value("logout_sessions_expired_total", {"reason": reason}) or 0.0


def test_a_session_past_its_deadline_is_never_called_idle(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session both past its deadline and idle that the deadline scan did not see (it was
    committed between the two scans) is left for the next sweep, which calls it absolute."""
    now = datetime.now(UTC)
    _import(
        runtime,
        {
            "session_id": "both",
            "created": (now - timedelta(days=2)).isoformat(),
            "expires": (now - timedelta(minutes=1)).isoformat(),
        },
    )
    real = orchestrator.expiry._locked
    scans = 0

    def first_deadline_scan_misses_it(conn: Any, statement: Any, limit: int) -> list[str]:
        nonlocal scans
        scans += 1
        return [] if scans == 1 else real(conn, statement, limit)

    monkeypatch.setattr(orchestrator.expiry, "_locked", first_deadline_scan_misses_it)
    policy = SessionPolicy(idle_timeout=timedelta(hours=1))
    assert _sweeper(runtime, policy).sweep(now).claimed == 0
    assert _sweeper(runtime, policy).sweep(now).claimed == 1
    [event] = _relayed(runtime)
    assert isinstance(event, SessionExpired)
    assert event.reason == "absolute"


def test_sweeper_work_is_bounded_and_continues(runtime: Runtime) -> None:
    """At most max_per_sweep a sweep, in batches; the next sweep takes the rest."""
    now = datetime.now(UTC)
    past = (now - timedelta(minutes=1)).isoformat()
    _import(runtime, *({"session_id": f"s-{i:02d}", "expires": past} for i in range(25)))
    sweeper = _sweeper(runtime, SessionPolicy(), batch=4, max_per_sweep=10)
    assert sweeper.sweep(now).claimed == 10
    assert sweeper.sweep(now).claimed == 10
    assert sweeper.sweep(now).claimed == 5
    assert sweeper.sweep(now).claimed == 0
    published = _relayed(runtime)
    assert len({e.session_id for e in published if isinstance(e, SessionExpired)}) == 25


def test_expired_session_is_logged_out_once(runtime: Runtime) -> None:
    """Publishing the sweep's events into the pipeline ends the session, once."""
    now = datetime.now(UTC)
    _import(runtime, {"session_id": "s-1", "expires": (now - timedelta(seconds=1)).isoformat()})
    _sweeper(runtime, SessionPolicy()).sweep(now)
    published = _relayed(runtime)
    processor = _processor(runtime)
    for event in [*published, *published]:  # a doubled message
        processor.handle(event.model_dump(mode="json"), f"m-{uuid.uuid4()}")
    row = _session(runtime, "s-1")
    assert row.end_reason == "expired_absolute"
    assert len(_audit(runtime, type="session.ended")) == 1
    assert len(_audit(runtime, type="event.duplicate")) == 1


# -- the binding check ----------------------------------------------------------------------


@pytest.fixture
def bound(settings: Settings, geoip_files: GeoipFiles) -> Iterator[Runtime]:
    runtime = Runtime.start(
        settings.with_overrides(geoip_city_db=geoip_files.city, geoip_asn_db=geoip_files.asn),
        handlers={},
    )
    yield runtime
    runtime.close()


def test_login_facts_are_looked_up_for_bound_sessions(bound: Runtime) -> None:
    """A bound session records its login address's ASN, network and place."""
    _import(
        bound,
        {
            "session_id": "b",
            "ip": "89.160.20.112",
            "network_binding": "bind_asn_network",
            "geoip_binding": "bind_continent_country_city",
        },
        {"session_id": "u", "ip": "89.160.20.112"},
    )
    row = _session(bound, "b")
    assert (row.asn, row.as_network, row.continent, row.country) == (
        29518,
        "89.160.0.0/17",
        "EU",
        "SE",
    )
    assert row.city == "Linköping"
    assert _session(bound, "u").asn is None  # unbound: nothing to compare later
    with pytest.raises(InputError, match="ip"):
        _import(bound, {"session_id": "x", "ip": "not-an-ip", "network_binding": "bind_asn"})


def test_binding_violation_is_published_and_ends_the_session(bound: Runtime) -> None:
    """A new ASN breaks bind_asn: the event is published and its logout audited in shape."""
    _import(bound, {"session_id": "b", "ip": "89.160.20.112", "network_binding": "bind_asn"})
    sent: list[OutboxMessage] = []
    checker = BindingChecker(
        bound.database,
        bound.geoip(),
        bound.settings.binding_unlisted_addresses,
        relay=bound.relay(sent.append).run,
    )
    assert isinstance(checker.check("b", "89.160.20.113"), BindingOk)
    result = checker.check("b", "216.160.83.56")
    assert isinstance(result, BindingViolation)
    bredband_at_login = {"asn": 29518, "as_org": "Bredband2 AB", "network": "89.160.0.0/17"}
    as209 = {"asn": 209, "as_org": None, "network": "216.160.64.0/18"}
    assert result.binding.model_dump(mode="json") == {
        "reason": "network.asn",
        "previous_value": bredband_at_login,
        "new_value": as209,
    }
    [event] = _events(sent)
    processor = _processor(bound)
    processor.handle(event.model_dump(mode="json"), "m-1")
    [ended] = _audit(bound, type="session.ended")
    assert ended.detail["logout_reason"] == "Session binding broken"
    assert ended.detail["binding"] == {
        "reason": "network.asn",
        "previous_value": bredband_at_login,
        "new_value": as209,
    }
    assert ended.detail["ip"] == {"previous": "89.160.20.112", "new": "216.160.83.56"}
    assert set(ended.detail) >= {"asn", "geo", "http_request"}
    with pytest.raises(InputError, match="has ended"):
        checker.check("b", "216.160.83.56")


def test_binding_check_cli(bound: Runtime, tmp_path: Path) -> None:
    """`binding check` prints the verdict, exits 3 on a violation and ends the session."""
    _import(bound, {"session_id": "b", "ip": "81.2.69.142", "geoip_binding": "bind_continent"})
    env = {
        "LOGOUT_DATA_DIR": str(bound.settings.data_dir),
        "LOGOUT_DATABASE_URL": bound.settings.effective_database_url,
        "LOGOUT_BROKER_URL": "memory://",
        "LOGOUT_PROTOCOLS": "[]",
        "LOGOUT_GEOIP_CITY_DB": str(bound.settings.geoip_city_db),
        "LOGOUT_GEOIP_ASN_DB": str(bound.settings.geoip_asn_db),
    }
    runner = CliRunner()
    ok = runner.invoke(main, ["binding", "check", "--session", "b", "--ip", "81.2.69.160"], env=env)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output.strip().splitlines()[-1])["ok"] is True
    bad = runner.invoke(
        main,
        ["binding", "check", "--session", "b", "--ip", "216.160.83.56", "--path", "/app"],
        env=env,
    )
    assert bad.exit_code == 3, bad.output
    verdict = json.loads(bad.output.strip().splitlines()[-1])
    assert verdict["binding"] == {
        "reason": "geoip.continent",
        "previous_value": {
            "continent": "EU",
            "country": "GB",
            "city": "London",
            "lat": 51.5142,
            "long": -0.0931,
        },
        "new_value": {
            "continent": "NA",
            "country": "US",
            "city": "Milton",
            "lat": 47.2513,
            "long": -122.3149,
        },
    }
    assert len(verdict["published"]) == 1
    assert _session(bound, "b").end_reason == "binding_violation"


def test_sessions_sweep_cli(runtime: Runtime) -> None:
    """`sessions sweep` publishes due expiries now (memory://: handled in-process)."""
    now = datetime.now(UTC)
    _import(runtime, {"session_id": "old", "expires": (now - timedelta(hours=1)).isoformat()})
    env = {
        "LOGOUT_DATA_DIR": str(runtime.settings.data_dir),
        "LOGOUT_DATABASE_URL": runtime.settings.effective_database_url,
        "LOGOUT_BROKER_URL": "memory://",
        "LOGOUT_PROTOCOLS": "[]",
    }
    result = CliRunner().invoke(main, ["sessions", "sweep"], env=env)
    assert result.exit_code == 0, result.output
    assert "1 published" in result.output
    assert _session(runtime, "old").end_reason == "expired_absolute"


def _ids(events: Sequence[Event]) -> list[str]:
    return [str(e.event_id) for e in events]


def test_import_keeps_binding_unless_given(bound: Runtime) -> None:
    """Re-importing a session without binding fields keeps its binding and facts."""
    _import(bound, {"session_id": "b", "ip": "89.160.20.112", "network_binding": "bind_asn"})
    _import(bound, {"session_id": "b", "user_agent": "curl"})
    row = _session(bound, "b")
    assert (row.network_binding, row.asn, row.user_agent) == ("bind_asn", 29518, "curl")
    with bound.database() as db:
        assert db.scalar(select(IdpSession.expiry_claimed_at)) is None
