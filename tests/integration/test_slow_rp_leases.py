"""A slow relying party behind the per-host limit: each delivery attempt is fenced by its lease.

The scenario of issue 11 (High 1) at CI scale: one RP host that answers each logout after
250 ms, a 1 s delivery timeout, 2 requests per host at once, and recovery sweeping every
second with a 2 s grace. Each event fans out to 20 providers on that host: the 100 requests
take about 12.5 s to go through 2 slots, so the later ones wait longer than one lease (7 s)
for a slot, and recovery looks at the events while they are still being processed. The RP
refuses a second logout of a session it already ended (400), as a real one may: a stale or
doubled attempt then shows as a failure.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.store import TERMINAL_DELIVERY_STATUSES, AuditRow, Delivery, EventRecord

from .support import (
    LoopbackServer,
    Stack,
    cli,
    logout_event,
    logout_token_sid,
    output,
    serving,
    session_record,
)

pytestmark = pytest.mark.integration

EVENTS = 5
PROVIDERS = 20
ANSWER_AFTER = 0.25  # seconds: well inside the 1 s timeout, slow behind 2 slots per host

SETTINGS = {
    "LOGOUT_PROTOCOLS": "oidc",
    "LOGOUT_ISSUER": "http://127.0.0.1:9000",
    "LOGOUT_DELIVERY_TIMEOUT": "1",
    "LOGOUT_MAX_CONCURRENT_PER_HOST": "2",
    "LOGOUT_RECOVERY_INTERVAL": "1",
    "LOGOUT_RECOVERY_GRACE": "2",
    "LOGOUT_RETRY_INITIAL_DELAY": "0.5",
    "LOGOUT_RETRY_MAX_DELAY": "2",
}


class SlowRp(LoopbackServer):
    """One RP host: answers after ``ANSWER_AFTER``; 200 for a session's first logout, then 400."""

    def __init__(self) -> None:
        super().__init__(_Logout)
        #: (sid, HTTP status answered), in the order the answers were given.
        self.answers: list[tuple[str, int]] = []

    def posts(self) -> Counter[str]:
        with self.lock:
            return Counter(sid for sid, _ in self.answers)


class _Logout(BaseHTTPRequestHandler):
    server: SlowRp

    def do_POST(self) -> None:
        sid = logout_token_sid(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        time.sleep(ANSWER_AFTER)
        with self.server.lock:
            status = 400 if any(seen == sid for seen, _ in self.server.answers) else 200
            self.server.answers.append((sid, status))
        try:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass  # the worker gave up waiting

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def rp() -> Iterator[SlowRp]:
    """The slow RP host on 127.0.0.1."""
    with serving(SlowRp()) as server:
        yield server


def _seed(stack: Stack, rp: SlowRp) -> list[str]:
    """``PROVIDERS`` OIDC clients on the RP's one host, and ``EVENTS`` sessions linked to all."""
    providers = [
        {
            "name": f"rp{n}",
            "protocol": "oidc",
            "client_id": f"client-rp{n}",
            "backchannel_logout_uri": f"{rp.base_url}/rp{n}/logout",
            "allow_http": True,
        }
        for n in range(PROVIDERS)
    ]
    sessions = [f"s-{n}" for n in range(EVENTS)]
    records: list[dict[str, Any]] = [session_record(s, f"u-{s}") for s in sessions]
    records += [
        {
            "kind": "provider_session",
            "session_id": s,
            "provider": f"rp{n}",
            "sid": f"{s}-rp{n}",
            "sub": f"u-{s}",
        }
        for s in sessions
        for n in range(PROVIDERS)
    ]
    stack.seed(providers=providers, records=records)
    return sessions


def _all_final(stack: Stack, events: list[str]) -> bool:
    with stack.db() as db:
        done = db.scalars(
            select(EventRecord.event_id).where(
                EventRecord.event_id.in_(events), EventRecord.status == "completed"
            )
        ).all()
        statuses = db.scalars(select(Delivery.status)).all()
        settled = db.scalars(select(AuditRow.id).where(AuditRow.type == "logout.settled")).all()
    return (
        len(done) == len(events)
        and len(statuses) == EVENTS * PROVIDERS
        and all(s in TERMINAL_DELIVERY_STATUSES for s in statuses)
        and len(settled) >= len(events)
    )


def test_stale_attempts_never_overwrite_a_final_status(
    stack: Stack, rp: SlowRp, capsys: pytest.CaptureFixture[str]
) -> None:
    """Requests queued past their lease are recorded once, by their holder: no delivery gets
    two final records or a changed status, each RP POST is one recorded attempt, and each
    ``logout.settled`` (one per logout, with its session and user) counts the rows."""
    stack.protocols = ["oidc"]
    jwks = cli(stack, ["keys", "jwks"], SETTINGS)  # creates the signing key the worker uses
    sessions = _seed(stack, rp)
    output(jwks)
    stack.start_worker(SETTINGS, threads=8)
    events = [logout_event(session_id) for session_id in sessions]
    with stack.publisher() as publisher:
        publisher.publish_many(events)
    event_ids = [str(e["event_id"]) for e in events]
    waited = stack.wait_for(
        lambda: _all_final(stack, event_ids),
        what=f"{EVENTS} logouts settled with {EVENTS * PROVIDERS} final deliveries",
        timeout=120,
        interval=0.25,
    )
    time.sleep(3)  # a stale attempt still queued would answer and try to record by now

    with stack.db() as db:
        rows = {d.id: d for d in db.scalars(select(Delivery))}
        records = list(db.scalars(select(AuditRow).order_by(AuditRow.seq)))
    final_records: dict[str, list[str]] = defaultdict(list)
    for record in records:
        if record.type in ("delivery.succeeded", "delivery.failed", "delivery.skipped"):
            final_records[record.detail["delivery_id"]].append(record.outcome)
    sids = {d.id: f"{d.session_id}-{d.provider}" for d in rows.values()}
    posts = rp.posts()
    doubled = {i: kinds for i, kinds in final_records.items() if len(kinds) > 1}
    changed = {
        i: (kinds[0], rows[i].status)
        for i, kinds in final_records.items()
        if kinds and kinds[0] != rows[i].status
    }
    failed_though_accepted = [i for i, d in rows.items() if d.status == "failed"]
    resent = {sids[i]: posts[sids[i]] for i in rows if posts[sids[i]] > rows[i].attempts}
    with capsys.disabled():
        print(
            f"\n  [slow-rp] {len(rows)} deliveries final after {waited:.1f} s; "
            f"RP POSTs {sum(posts.values())} for {len(posts)} sessions; "
            f"two final records: {len(doubled)}; status changed after its record: "
            f"{len(changed)}; failed although the RP accepted a POST: "
            f"{len(failed_though_accepted)}; POSTs beyond the recorded attempts: {len(resent)}"
        )
    assert not doubled, f"deliveries with two final records: {list(doubled.items())[:5]}"
    assert not changed, f"final status changed after it was recorded: {list(changed.items())[:5]}"
    assert set(final_records) == set(rows), "a delivery has no final record"
    assert not failed_though_accepted, f"{len(failed_though_accepted)} ended failed"
    assert {d.status for d in rows.values()} == {"succeeded"}
    assert set(posts) == set(sids.values()), "an RP session never got its logout"
    assert not resent, f"RP POSTs the ledger does not account for: {list(resent.items())[:5]}"

    settled = [r for r in records if r.type == "logout.settled"]
    assert sorted(str(r.event_id) for r in settled) == sorted(event_ids), "one settled per logout"
    for record in settled:
        tally = Counter(d.status for d in rows.values() if d.event_id == record.event_id)
        assert record.detail["deliveries"] == {
            status: tally.get(status, 0) for status in record.detail["deliveries"]
        }, f"logout.settled of {record.event_id} contradicts its delivery rows"
        session_id = next(e["session_id"] for e in events if e["event_id"] == record.event_id)
        assert (record.session_id, record.user_id) == (session_id, f"u-{session_id}")
