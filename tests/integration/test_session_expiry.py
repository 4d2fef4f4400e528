"""Session expiry with real workers: two worker processes sweep the same PostgreSQL database
at once, every expired session is logged out (with its back-channel logout) exactly once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator.store import AuditRow, Delivery, EventRecord, IdpSession

from .support import LoopbackServer, Stack, serving

pytestmark = pytest.mark.integration

ABSOLUTE = 300
IDLE = 40
FRESH = 20


class _Rp(BaseHTTPRequestHandler):
    server: Counting

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.server.lock:
            self.server.posts += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class Counting(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(_Rp)
        self.posts = 0


@pytest.fixture
def rp() -> Iterator[Counting]:
    with serving(Counting()) as server:
        yield server


def _records(now: datetime) -> list[dict[str, Any]]:
    past = (now - timedelta(minutes=5)).isoformat()
    later = (now + timedelta(days=1)).isoformat()
    stale = (now - timedelta(hours=2)).isoformat()
    records: list[dict[str, Any]] = []
    for i in range(ABSOLUTE):
        records.append(
            {
                "kind": "session",
                "session_id": f"a-{i}",
                "user_id": f"u{i}",
                "created": (now - timedelta(days=1)).isoformat(),
                "expires": past,
            }
        )
    for i in range(IDLE):
        records.append(
            {
                "kind": "session",
                "session_id": f"i-{i}",
                "user_id": f"v{i}",
                "created": stale,
                "last_seen": stale,
                "expires": later,
            }
        )
    for i in range(FRESH):
        records.append(
            {"kind": "session", "session_id": f"f-{i}", "user_id": f"w{i}", "expires": later}
        )
    for record in list(records):
        records.append(
            {
                "kind": "provider_session",
                "session_id": record["session_id"],
                "provider": "wiki",
                "sid": f"sid-{record['session_id']}",
                "sub": record["user_id"],
            }
        )
    return records


def test_two_workers_expire_each_session_exactly_once(stack: Stack, rp: Counting) -> None:
    """Both workers sweep every 0.2 s; each due session's expiry is published and handled once,
    with its back-channel logout; fresh sessions stay."""
    settings = {
        "LOGOUT_EXPIRY_INTERVAL": "0.2",
        "LOGOUT_EXPIRY_BATCH": "25",
        "LOGOUT_SESSION_IDLE_TIMEOUT": "1h",
        "LOGOUT_PROTOCOLS": '["oidc"]',
        # Recovery re-sends an outbox row whose event is still unclaimed after the grace (by
        # design); the suite's 8 s is shorter than this backlog can wait on a loaded machine,
        # and this test is about the sweepers publishing each expiry once.
        "LOGOUT_RECOVERY_GRACE": "120",
    }
    stack.seed(
        providers=[
            {
                "name": "wiki",
                "protocol": "oidc",
                "client_id": "wiki",
                "backchannel_logout_uri": f"{rp.base_url}/logout",
                "allow_http": True,
            }
        ],
    )
    first = stack.start_worker(settings)
    second = stack.start_worker(settings)
    stack.wait_for(
        lambda: "worker started" in first.output() and "worker started" in second.output(),
        what="both workers to start",
    )
    with stack.runtime(handlers={}) as runtime:  # both are sweeping while these arrive
        runtime.registry.import_lines(json.dumps(r) for r in _records(datetime.now(UTC)))
    due = ABSOLUTE + IDLE

    def all_ended() -> bool:
        with stack.db() as db:
            return (
                db.scalar(select(func.count()).where(IdpSession.ended_at.is_not(None))) == due
                and db.scalar(select(func.count()).where(Delivery.status == "succeeded")) == due
            )

    stack.wait_for(all_ended, what=f"{due} expired sessions logged out", timeout=90)
    with stack.db() as db:
        reasons = Counter(db.scalars(select(IdpSession.end_reason)))
        received = Counter(db.scalars(select(AuditRow.type).where(AuditRow.type.like("event.%"))))
        expired_events = db.scalar(
            select(func.count()).where(EventRecord.type == "session.expired")
        )
        open_fresh = db.scalar(
            select(func.count()).where(
                IdpSession.session_id.like("f-%"), IdpSession.ended_at.is_(None)
            )
        )
    assert reasons == {"expired_absolute": ABSOLUTE, "expired_idle": IDLE, None: FRESH}
    assert expired_events == due
    assert received == {"event.received": due}, "an expiry was published twice"
    assert open_fresh == FRESH
    assert rp.posts == due
    swept = [worker.output().count('"sessions expired"') for worker in (first, second)]
    print(f"[expiry] sweeps that published, per worker: {swept}")
    assert sum(swept) >= 1
