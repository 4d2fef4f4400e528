"""Durable intake with real parts: this test's own Redis (``--save "" --appendonly no``), a
PostgreSQL database, real worker processes and a relying party on 127.0.0.1.

An accepted event survives a Redis that restarts empty (the outbox sends it again), and what
a SIGKILLed worker had fetched is handled by another within the documented bound
(1.25 x ``redis_heartbeat_timeout_ms``), not when dramatiq's random maintenance gets to it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from sqlalchemy import func, select

from orchestrator.store import TERMINAL_DELIVERY_STATUSES, AuditRow, Delivery, EventRecord

from .servers import OwnRedis
from .support import LoopbackServer, Stack, logout_event, logout_token_sid, serving

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test"
HEARTBEAT_MS = 4000
DELIVERY_TIMEOUT = 1.0
#: What a worker holds is leased for this long past its last renewal (``Runtime.fanout``).
LEASE = 2 * DELIVERY_TIMEOUT + 5
#: dramatiq's random maintenance as rare as the setting allows: only the upkeep can help.
NO_RANDOM_MAINTENANCE = {
    "LOGOUT_REDIS_HEARTBEAT_TIMEOUT_MS": str(HEARTBEAT_MS),
    "LOGOUT_REDIS_MAINTENANCE_CHANCE": "1",
    "LOGOUT_DELIVERY_TIMEOUT": str(DELIVERY_TIMEOUT),
    # The outbox's resend must not be what brings the dead worker's events back.
    "LOGOUT_RECOVERY_GRACE": "600",
}


class CountingRp(LoopbackServer):
    """A back-channel logout endpoint that answers 200 and counts the POSTs per ``sid``."""

    def __init__(self) -> None:
        super().__init__(_Endpoint)
        self.sids: Counter[str] = Counter()

    def counted(self) -> Counter[str]:
        with self.lock:
            return Counter(self.sids)


class _Endpoint(BaseHTTPRequestHandler):
    server: CountingRp

    def do_POST(self) -> None:
        sid = logout_token_sid(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.server.lock:
            self.server.sids[sid] += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def rp() -> Iterator[CountingRp]:
    with serving(CountingRp()) as server:
        yield server


def _seed(stack: Stack, count: int, rp: CountingRp | None) -> list[str]:
    """``count`` sessions, each with a provider session (``sid`` = its id) at ``rp``."""
    sessions = [f"s-{n:04d}" for n in range(count)]
    records = [{"kind": "session", "session_id": s, "user_id": f"u-{s}"} for s in sessions]
    if rp is None:
        stack.seed(records=records)
        return sessions
    records += [
        {"kind": "provider_session", "session_id": s, "provider": "rp", "sid": s, "sub": s}
        for s in sessions
    ]
    provider = {
        "name": "rp",
        "protocol": "oidc",
        "client_id": "client-rp",
        "backchannel_logout_uri": f"{rp.base_url}/bcl",
        "allow_http": True,
    }
    stack.seed(providers=[provider], records=records)
    return sessions


def _completed(stack: Stack, message_ids: set[str] | None = None) -> int:
    among = () if message_ids is None else (EventRecord.message_id.in_(sorted(message_ids)),)
    return stack.count(EventRecord, EventRecord.status == "completed", *among)


def _open_deliveries(stack: Stack) -> int:
    return stack.count(Delivery, Delivery.status.not_in(TERMINAL_DELIVERY_STATUSES))


def _audit_counts(stack: Stack) -> Counter[str]:
    with stack.db() as db:
        rows = db.execute(select(AuditRow.type, func.count()).group_by(AuditRow.type)).all()
    return Counter({str(kind): int(n) for kind, n in rows})


def test_events_lost_by_a_redis_restart_are_each_delivered_once(
    world: Stack, own_redis: OwnRedis, rp: CountingRp, capsys: pytest.CaptureFixture[str]
) -> None:
    """200 logouts published, then Redis (no persistence) killed and restarted empty before
    any worker ran: the worker warns that a restart loses messages, the outbox sends every
    event again after recovery_grace, each is completed, and the RP gets exactly one POST
    per sid."""
    stack = world
    stack.protocols = ["oidc"]
    env = {"LOGOUT_ISSUER": ISSUER}
    assert stack.cli("keys", "jwks", env=env).returncode == 0
    sessions = _seed(stack, 200, rp)
    with stack.publisher() as publisher:
        publisher.publish_many([logout_event(s) for s in sessions])
    assert stack.queue_length("events") == len(sessions)

    own_redis.restart()
    assert stack.queue_length("events") == 0, "the restarted Redis still held the queue"

    began = time.monotonic()
    worker = stack.start_worker(
        {**env, "LOGOUT_RECOVERY_GRACE": "3", "LOGOUT_RECOVERY_INTERVAL": "1"}
    )
    stack.wait_for(
        lambda: _completed(stack) == len(sessions) and _open_deliveries(stack) == 0,
        what=f"all {len(sessions)} lost events completed and delivered",
        timeout=120,
        interval=0.25,
    )
    took = time.monotonic() - began
    with capsys.disabled():
        print(f"\n  [durable-intake] 200 events lost by Redis: all delivered {took:.1f} s later")

    counted = rp.counted()
    assert set(counted) == set(sessions)
    assert [sid for sid, n in counted.items() if n != 1] == [], "a sid got a second POST"
    audit = _audit_counts(stack)
    assert audit["event.received"] == len(sessions)
    assert audit["delivery.succeeded"] == len(sessions)
    assert audit["event.rejected"] == 0
    log = worker.output()
    assert "keeps queued messages in memory only" in log, log[-2000:]
    assert "a restart loses every one of them" in log


def _held_by(stack: Stack, dead_keys: list[bytes]) -> set[str]:
    """The message ids in the ack sets ``dead_keys`` (which hold dramatiq's per-enqueue
    ``redis_message_id``; the message itself carries ours)."""
    bodies = f"dramatiq:{stack.namespace}.events.msgs"
    held: set[str] = set()
    for key in dead_keys:
        for redis_id in stack.redis.smembers(key):
            body = stack.redis.hget(bodies, redis_id)
            if body is not None:
                held.add(str(json.loads(body)["message_id"]))
    return held


@pytest.mark.alone  # it bounds the seconds until the events come back
def test_a_killed_workers_prefetched_events_come_back_within_the_bound(
    world: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker SIGKILLed while it holds fetched events: a second worker handles every one of
    them once their messages are back (1.25 x the heartbeat timeout of the kill, plus its own
    start-up) and the dead worker's event leases have run out (one lease after the kill),
    although dramatiq's random maintenance is all but off; every event is completed once."""
    stack = world
    sessions = _seed(stack, 400, None)
    with stack.publisher() as publisher:
        publisher.publish_many([logout_event(s) for s in sessions])

    first = stack.start_worker(NO_RANDOM_MAINTENANCE)
    stack.wait_for(lambda: _completed(stack) >= 40, what="40 events completed", interval=0.02)
    first.kill()
    killed = time.monotonic()
    pattern = f"dramatiq:__acks__.*.{stack.namespace}.events"
    dead_keys = list(stack.redis.scan_iter(match=pattern))
    held = _held_by(stack, dead_keys)
    with stack.db() as db:
        done = set(
            db.scalars(select(EventRecord.message_id).where(EventRecord.status == "completed"))
        )
    stranded = held - done
    assert stranded, f"the killed worker held no unfinished event ({len(held)} held)"

    second = stack.start_worker(NO_RANDOM_MAINTENANCE)
    stack.wait_for(lambda: "worker started" in second.output(), what="the second worker")
    started = time.monotonic() - killed  # no later than this, the second worker ran
    stack.wait_for(
        lambda: _completed(stack, stranded) == len(stranded),
        what=f"the {len(stranded)} events the killed worker held",
        timeout=60,
        interval=0.1,
    )
    since_kill = time.monotonic() - killed
    stack.wait_for(lambda: _completed(stack) == len(sessions), what="every event completed")
    heartbeat = HEARTBEAT_MS / 1000
    with capsys.disabled():
        print(
            f"\n  [durable-intake] {len(stranded)} events held by a SIGKILLed worker: handled "
            f"{since_kill:.1f} s after the kill (heartbeat timeout {heartbeat:g} s, lease "
            f"{LEASE:g} s, second worker up {started:.1f} s after the kill)"
        )
    # Requeued by the second worker's first upkeep (every heartbeat / 4) once the dead one's
    # heartbeat is a timeout old; an event whose lease still runs is put back until the lease's
    # end (+1 s); 2 s for the fetch and the handling.
    assert since_kill <= max(1.25 * heartbeat, started + heartbeat / 4, LEASE + 1.0) + 2.0
    assert not any(stack.redis.exists(k) for k in dead_keys), "dead worker's ack sets remain"
    audit = _audit_counts(stack)
    assert audit["event.received"] == len(sessions)
    assert audit["logout.completed"] == len(sessions)


def test_a_redis_refusing_config_is_named_at_worker_start(
    tmp_path: Path, postgres_url: str
) -> None:
    """A Redis that refuses CONFIG (as managed ones do): the worker says it cannot check the
    persistence, and what a restart would lose, and runs."""
    server = OwnRedis(tmp_path, "--rename-command", "CONFIG", "")
    server.start()
    client = server.client()
    stack = Stack(
        tmp_path=tmp_path,
        database_url=postgres_url,
        broker_url=server.url,
        namespace="itconfig",
        redis=client,
        logs=[],
        protocols=[],
    )
    try:
        worker = stack.start_worker()
        stack.wait_for(lambda: "worker started" in worker.output(), what="the worker to start")
        stack.wait_for(
            lambda: "CONFIG GET was refused" in worker.output(), what="the persistence warning"
        )
        assert worker.alive()
    finally:
        stack.close()
        client.close()
        server.stop()
