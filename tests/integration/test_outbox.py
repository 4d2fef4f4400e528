"""Nothing an operator types is dropped while the broker is down: with this test's own Redis
stopped, the expiry sweep, the session limit and the binding check keep their events in the
PostgreSQL outbox; once Redis is back, each is published exactly once."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator.relay import BrokerSender
from orchestrator.store import AuditRow, IdpSession, OutboxRow
from schemas import SessionStarted
from tests.geoip_data import GeoipFiles
from workers import build_broker

from .servers import OwnRedis
from .support import Stack, tail

pytestmark = pytest.mark.integration

DUE = 25


def _queued(stack: Stack) -> list[dict[str, Any]]:
    """Every event on the events queue, one per message there (a doubled message twice)."""
    queue = f"dramatiq:{stack.namespace}.events"
    events = []
    for message_id in stack.redis.lrange(queue, 0, -1):
        body = stack.redis.hget(f"{queue}.msgs", message_id)
        assert body is not None
        events.append(json.loads(body)["args"][0])
    return events


def _unsent(stack: Stack) -> int:
    with stack.db() as db:
        return int(db.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))) or 0)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def test_sweep_with_the_broker_down_publishes_every_expiry_once_when_it_is_back(
    world: Stack, own_redis: OwnRedis
) -> None:
    """Redis stopped: `sessions sweep` claims 25 expiries, keeps them in the outbox, says so
    and exits 4. Redis back: the next sweep publishes each exactly once, a third publishes
    nothing, and a worker ends every session and clears the outbox."""
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    world.seed(
        records=[
            {"kind": "session", "session_id": f"due-{i}", "user_id": f"u{i}", "expires": past}
            for i in range(DUE)
        ]
    )
    own_redis.stop()
    down = world.cli("sessions", "sweep")
    assert down.returncode == 4, down.stderr
    _no_traceback(down)
    assert f"expired: {DUE} claimed, 0 published" in down.stdout
    [kept] = [line for line in down.stderr.splitlines() if "kept in the outbox" in line]
    assert kept.startswith(f"{DUE} event(s) kept in the outbox: the broker did not answer")
    assert "sessions sweep" in kept
    assert _unsent(world) == DUE

    own_redis.start()
    back = world.cli("sessions", "sweep")
    assert back.returncode == 0, back.stderr
    _no_traceback(back)
    assert f"expired: 0 claimed, {DUE} published" in back.stdout
    again = world.cli("sessions", "sweep")
    assert "expired: 0 claimed, 0 published" in again.stdout, again.stderr
    queued = Counter(e["session_id"] for e in _queued(world) if e["type"] == "session.expired")
    assert queued == Counter({f"due-{i}": 1 for i in range(DUE)})
    assert _unsent(world) == 0

    world.start_worker()

    def all_ended_and_outbox_cleared() -> bool:
        with world.db() as db:
            ended = db.scalar(select(func.count()).where(IdpSession.ended_at.is_not(None)))
            rows = db.scalar(select(func.count()).select_from(OutboxRow))
        return ended == DUE and rows == 0

    world.wait_for(all_ended_and_outbox_cleared, what="expiries handled, outbox pruned")
    with world.db() as db:
        received = db.scalar(select(func.count()).where(AuditRow.type == "event.received"))
    assert received == DUE


def test_session_limit_revocation_waits_for_the_broker(world: Stack, own_redis: OwnRedis) -> None:
    """An IdP component reports a login over the limit while Redis is down: the revocation
    is kept in the outbox, and published once (by the relay) when Redis is back."""
    with world.runtime(handlers={}, max_sessions_per_user=1) as runtime:
        broker = build_broker(runtime.settings)
        try:
            relay = runtime.relay(BrokerSender(broker))
            activity = runtime.activity(relay.run)
            own_redis.stop()
            for minute, session_id in enumerate(("s-1", "s-2")):
                activity.started(
                    SessionStarted(
                        event_id=uuid.uuid4(),
                        occurred_at=datetime.now(UTC) + timedelta(minutes=minute),
                        initiator="user",
                        session_id=session_id,
                        user_id="alice",
                    )
                )
            assert _unsent(world) == 1
            own_redis.start()
            report = relay.run()
            assert (report.published, report.pending, report.error) == (1, 0, None)
            assert relay.run().published == 0
        finally:
            broker.close()
    queued = _queued(world)
    assert [(e["type"], e["session_id"], e["actor"]) for e in queued] == [
        ("session.revoke", "s-1", "session-limit")
    ]


def test_binding_check_with_the_broker_down_keeps_the_violation(
    world: Stack, own_redis: OwnRedis, geoip_files: GeoipFiles
) -> None:
    """`binding check` on a broken binding with Redis down: exit 3, the event id under "kept",
    one line saying so; with Redis back, `sessions sweep` publishes it, once."""
    databases = {"geoip_city_db": geoip_files.city, "geoip_asn_db": geoip_files.asn}
    with world.runtime(handlers={}, **databases) as runtime:  # looks up the login's place
        record = {
            "kind": "session",
            "session_id": "b",
            "user_id": "alice",
            "ip": "81.2.69.142",
            "geoip_binding": "bind_continent",
        }
        runtime.registry.import_lines([json.dumps(record)])
    env = {f"LOGOUT_{name.upper()}": str(path) for name, path in databases.items()}
    own_redis.stop()
    down = world.cli("binding", "check", "--session", "b", "--ip", "216.160.83.56", env=env)
    assert down.returncode == 3, down.stderr
    _no_traceback(down)
    verdict = json.loads(down.stdout.strip().splitlines()[-1])
    assert verdict["published"] == []
    [event_id] = verdict["kept"]
    assert "1 event(s) kept in the outbox" in down.stderr, tail(down.stderr)

    own_redis.start()
    back = world.cli("sessions", "sweep")
    assert back.returncode == 0, back.stderr
    assert "expired: 0 claimed, 1 published" in back.stdout
    world.cli("sessions", "sweep")
    queued = _queued(world)
    assert [(e["type"], e["event_id"]) for e in queued] == [("session.binding_violation", event_id)]
