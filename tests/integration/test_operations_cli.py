"""The operator's commands against PostgreSQL, Redis, a real worker and real relying parties
on 127.0.0.1: ``deliveries list/retry``, ``events rejected/replay``, ``providers
list/disable/enable/remove``."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator.store import (
    AuditRow,
    Delivery,
    IdpSession,
    OutboxRow,
    Provider,
    ProviderSession,
    RejectedEvent,
)
from tests.geoip_data import GeoipFiles

from .servers import serving
from .support import Stack, audit_rows, deliveries, event, logout_event, publish, wait_settled
from .test_backchannel_http import DELIVERY_SETTINGS, Recorder, with_http_providers

pytestmark = pytest.mark.integration


@pytest.fixture
def endpoint() -> Iterator[Recorder]:
    """The relying parties' back-channel endpoints, on 127.0.0.1."""
    with serving(Recorder()) as server:
        yield server


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _records(stack: Stack, kind: str) -> list[AuditRow]:
    with stack.db() as db:
        return list(
            db.scalars(select(AuditRow).where(AuditRow.type == kind).order_by(AuditRow.seq))
        )


# -- deliveries ----------------------------------------------------------------------------


def test_a_failed_delivery_is_retried_by_a_worker(
    stack: Stack, tmp_path: Path, endpoint: Recorder
) -> None:
    """`deliveries retry ID`: the worker sends it again to the fixed RP and records it;
    `--failed --provider --since` takes the other one; a succeeded one is refused."""
    urls = {"badonce": f"{endpoint.base_url}/badonce", "bad": f"{endpoint.base_url}/bad"}
    plugin_env = with_http_providers(stack, tmp_path, urls, "s-ops")
    stack.start_worker({**DELIVERY_SETTINGS, **plugin_env})
    started = datetime.now(UTC) - timedelta(seconds=1)
    logout = logout_event("s-ops")
    publish(stack, logout)
    event_id = logout["event_id"]
    wait_settled(stack, event_id, 2)

    listed = _json_lines(_ok(stack.cli("deliveries", "list", "--status", "failed", "--json")))
    failed = {row["provider"]: row for row in listed}
    assert set(failed) == {"rp-badonce", "rp-bad"}
    assert failed["rp-badonce"]["last_status_code"] == 400
    table = _ok(stack.cli("deliveries", "list", "--event", event_id[:8]))
    assert table.splitlines()[0].split()[:3] == ["id", "status", "provider"]
    assert table.count("failed") == 2

    retry_id = failed["rp-badonce"]["id"]
    out = _ok(stack.cli("deliveries", "retry", retry_id, "--actor", "ops-alice"))
    assert f"retry requested: {retry_id} (rp-badonce, after attempt 1)" in out

    def succeeded() -> bool:
        return [d.status for d in deliveries(stack, event_id) if d.id == retry_id] == ["succeeded"]

    stack.wait_for(succeeded, what="the retried delivery to succeed")
    assert endpoint.hits()["/badonce"] == 2
    [asked] = audit_rows(stack, event_id, "delivery.retry_requested")
    assert (asked.provider, asked.detail["actor"]) == ("rp-badonce", "ops-alice")
    [done] = audit_rows(stack, event_id, "delivery.succeeded")
    assert (done.detail["delivery_id"], done.detail["attempt"]) == (retry_id, 2)
    stack.wait_for(
        lambda: len(audit_rows(stack, event_id, "logout.settled")) == 2,
        what="the logout to settle again after the retry",
    )

    again = stack.cli("deliveries", "retry", retry_id, "--actor", "ops-alice")
    assert again.returncode == 2
    assert f"{retry_id}: succeeded (rp-badonce, attempt 2)" in again.stderr
    assert "never sent again" in again.stderr

    since = started.isoformat()
    args = ("--failed", "--provider", "rp-bad", "--since", since, "--actor", "ops-bob")
    out = _ok(stack.cli("deliveries", "retry", *args))
    assert "1 retried, 0 already on their way" in out

    def failed_twice() -> bool:
        return len(audit_rows(stack, event_id, "delivery.failed")) == 3  # bad twice, badonce once

    stack.wait_for(failed_twice, what="the second failure of rp-bad")
    assert endpoint.hits()["/bad"] == 2
    stack.wait_for(
        lambda: len(audit_rows(stack, event_id, "logout.settled")) == 3,
        what="the logout to settle after the second retry",
    )
    settled = audit_rows(stack, event_id, "logout.settled")
    assert [(r.outcome, r.detail.get("retries_requested")) for r in settled] == [
        ("partial", None),
        ("partial", 1),  # rp-bad still failed; rp-badonce now succeeded
        ("partial", 2),
    ]
    assert [r.detail["deliveries"]["succeeded"] for r in settled][1:] == [
        settled[0].detail["deliveries"]["succeeded"] + 1
    ] * 2
    with stack.db() as db:
        assert db.scalar(select(Delivery.status).where(Delivery.id == failed["rp-bad"]["id"])) == (
            "failed"
        )


# -- rejected events -----------------------------------------------------------------------


def test_rejected_events_are_listed_and_replayed_once(
    stack: Stack, geoip_files: GeoipFiles
) -> None:
    """A login the worker refused (GeoIP binding without a GeoIP database) is replayed once
    the databases are configured; one still invalid is refused with its problems. A login
    published with a device cookie id is kept with the id's hash only (never the id); one an
    IdP put on the broker itself, the id in clear, is stored redacted and refused naming the
    field."""
    stack.protocols = []
    worker = stack.start_worker()
    login = event(
        "session.started",
        session_id="s-geo",
        user_id="alice",
        ip="81.2.69.142",
        geoip_binding="bind_continent",
    )
    with_cookie = event(
        "session.started",
        session_id="s-cookie",
        user_id="alice",
        ip="81.2.69.142",
        geoip_binding="bind_continent",
        device_id="cookie-secret-7",
    )
    hashed = event(
        "session.started",
        session_id="s-hashed",
        user_id="alice",
        ip="81.2.69.142",
        geoip_binding="bind_continent",
        device_id="cookie-secret-8",
    )
    publish(stack, login)
    publish(stack, hashed)
    with stack.raw_sender() as send:  # as an IdP enqueuing on the broker itself
        from orchestrator.outbox import OutboxMessage

        invalid = {**logout_event("s-x"), "session_id": None}
        for message_id, raw in (("m-invalid", invalid), ("m-cookie", with_cookie)):
            send(
                OutboxMessage(
                    message_id,
                    raw["event_id"],
                    f"{stack.namespace}.events",
                    "handle_event",
                    raw,
                )
            )
    stack.wait_for(lambda: stack.count(RejectedEvent) == 4, what="four rejections")
    worker.stop()
    with stack.db() as db:
        kept = {row.event_id: row.payload for row in db.scalars(select(RejectedEvent))}
    assert "cookie-secret" not in "".join(kept.values())
    assert json.loads(kept[hashed["event_id"]])["device_hash"] == (
        hashlib.sha256(b"cookie-secret-8").hexdigest()
    )

    rejected = {
        row["event_id"]: row for row in _json_lines(_ok(stack.cli("events", "rejected", "--json")))
    }
    geo = rejected[login["event_id"]]
    assert any("bind_continent" in problem for problem in geo["problems"]), geo
    assert geo["replayed_as"] is None
    table = _ok(stack.cli("events", "rejected"))
    assert "m-invalid" in table
    assert "session_id" in table

    bad = stack.cli("events", "replay", str(rejected[invalid["event_id"]]["id"]), "--actor", "ops")
    assert bad.returncode == 2
    assert "session_id" in bad.stderr
    assert "nothing was applied" in bad.stderr

    databases = {
        "LOGOUT_GEOIP_CITY_DB": str(geoip_files.city),
        "LOGOUT_GEOIP_ASN_DB": str(geoip_files.asn),
    }
    stack.start_worker(databases)
    cookie_id = str(rejected[with_cookie["event_id"]]["id"])
    masked = stack.cli("events", "replay", cookie_id, "--actor", "ops", env=databases)
    assert masked.returncode == 2, masked.stderr
    assert "device_id: stored redacted ([redacted])" in masked.stderr
    assert "publish the event again" in masked.stderr
    replay = stack.cli("events", "replay", str(geo["id"]), "--actor", "ops", env=databases)
    assert f"replayed: session.started {login['event_id']}" in _ok(replay)

    def recorded() -> bool:
        with stack.db() as db:
            return db.get(IdpSession, "s-geo") is not None

    stack.wait_for(recorded, what="the replayed login to be recorded")
    [replayed] = _records(stack, "event.replayed")
    assert replayed.event_id == login["event_id"]
    assert replayed.detail["rejected_record"] == geo["id"]
    assert replayed.detail["actor"] == "ops"
    assert len(audit_rows(stack, login["event_id"], "session.started")) == 1

    twice = _ok(stack.cli("events", "replay", str(geo["id"]), "--actor", "ops"))
    assert "replayed before" in twice
    assert len(_records(stack, "event.replayed")) == 1
    with stack.db() as db:
        replays = db.scalars(select(OutboxRow).where(OutboxRow.message_id.startswith("replay:")))
        assert len(list(replays)) <= 1  # the row a worker deletes once it arrived
    listed = _json_lines(_ok(stack.cli("events", "rejected", "--json")))
    assert {row["id"]: row["replayed_as"] for row in listed}[geo["id"]] == login["event_id"]


# -- providers -----------------------------------------------------------------------------


def test_providers_disable_enable_and_remove_with_their_sessions(
    stack: Stack, tmp_path: Path, endpoint: Recorder
) -> None:
    """Listed with counts; disabled: skipped; removal refused while sessions are open, and
    with --end-sessions the worker logs them out first; every action audited."""
    urls = {"ok": f"{endpoint.base_url}/ok", "nocontent": f"{endpoint.base_url}/nocontent"}
    plugin_env = with_http_providers(stack, tmp_path, urls, "s-1")
    stack.seed(
        records=[
            {"kind": "session", "session_id": "s-2", "user_id": "bob"},
            {"kind": "provider_session", "session_id": "s-2", "provider": "rp-ok", "sid": "b"},
        ]
    )
    stack.start_worker({**DELIVERY_SETTINGS, **plugin_env})

    listed = {
        p["name"]: p
        for p in _json_lines(_ok(stack.cli("providers", "list", "--json", env=plugin_env)))
    }
    assert listed["rp-ok"] == {
        "name": "rp-ok",
        "protocol": "itproto",
        "method": "backchannel",
        "enabled": True,
        "open_sessions": 2,
        "full_logout_on_rp_initiated": False,
    }
    table = _ok(stack.cli("providers", "list", env=plugin_env)).splitlines()
    assert table[0].split() == ["name", "protocol", "method", "enabled", "open", "sessions"]
    assert table[1].split() == ["rp-nocontent", "itproto", "backchannel", "yes", "1"]

    out = _ok(stack.cli("providers", "disable", "rp-nocontent", "--actor", "ops", env=plugin_env))
    assert out.strip() == "provider 'rp-nocontent' disabled"
    logout = logout_event("s-1")
    publish(stack, logout)
    wait_settled(stack, logout["event_id"], 2)
    statuses = {d.provider: d.status for d in deliveries(stack, logout["event_id"])}
    assert statuses == {"rp-ok": "succeeded", "rp-nocontent": "skipped"}
    assert endpoint.hits()["/nocontent"] == 0
    _ok(stack.cli("providers", "enable", "rp-nocontent", "--actor", "ops", env=plugin_env))

    refused = stack.cli("providers", "remove", "rp-ok", "--actor", "ops", env=plugin_env)
    assert refused.returncode == 2
    assert "1 provider session(s) are open; add --end-sessions" in refused.stderr
    alone = stack.cli("providers", "remove", "rp-ok", "--full-logout", "--actor", "ops")
    assert alone.returncode == 2
    assert "--full-logout: goes with --end-sessions" in alone.stderr
    removed = stack.cli(
        "providers", "remove", "rp-ok", "--end-sessions", "--actor", "ops", env=plugin_env
    )
    out = _ok(removed)
    assert "ending 1 provider session(s) of 'rp-ok'" in out
    assert "provider 'rp-ok' removed with 2 ended provider session(s) and 2 deliveries" in out
    assert endpoint.hits()["/ok"] == 2  # s-1's logout, and s-2's from --end-sessions
    with stack.db() as db:
        assert db.get(Provider, "rp-ok") is None
        assert list(db.scalars(select(ProviderSession.provider))) == ["rp-nocontent"]
        bob = db.get(IdpSession, "s-2")
        assert bob is not None
        assert bob.ended_at is None
    ending = _records(stack, "event.received")[-1]
    assert (ending.detail["type"], ending.detail["initiator"], ending.detail["actor"]) == (
        "logout.provider",
        "admin",
        "ops",
    )
    actions = [
        (r.type, r.provider, r.detail["actor"])
        for kind in (
            "provider.disabled",
            "provider.enabled",
            "provider.sessions_ending",
            "provider.removed",
        )
        for r in _records(stack, kind)
    ]
    assert actions == [
        ("provider.disabled", "rp-nocontent", "ops"),
        ("provider.enabled", "rp-nocontent", "ops"),
        ("provider.sessions_ending", "rp-ok", "ops"),
        ("provider.removed", "rp-ok", "ops"),
    ]
    unknown = stack.cli("providers", "disable", "rp-ok", "--actor", "ops", env=plugin_env)
    assert unknown.returncode == 2
    assert "no provider 'rp-ok'" in unknown.stderr


# -- SQLite, memory:// (the embedded worker) -----------------------------------------------


def test_retry_and_remove_on_sqlite_with_the_embedded_worker(
    tmp_path: Path, namespace: str, redis_client: Any, endpoint: Recorder
) -> None:
    """On SQLite with ``memory://`` each command's in-process worker carries out what it
    wrote: the retried delivery is sent, the provider's sessions end before the removal."""
    stack = Stack(
        tmp_path=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'ops.db'}",
        broker_url="memory://",
        namespace=namespace,
        redis=redis_client,
        logs=[],
    )
    plugin_env = with_http_providers(
        stack, tmp_path, {"badonce": f"{endpoint.base_url}/badonce"}, "s-lite"
    )
    logout = tmp_path / "logout.json"
    logout.write_text(json.dumps(logout_event("s-lite")), encoding="utf-8")
    _ok(stack.cli("publish", str(logout), env=plugin_env))
    [failed] = _json_lines(_ok(stack.cli("deliveries", "list", "--json", env=plugin_env)))
    assert (failed["status"], failed["last_status_code"]) == ("failed", 400)

    _ok(stack.cli("deliveries", "retry", failed["id"], "--actor", "ops", env=plugin_env))
    [retried] = _json_lines(_ok(stack.cli("deliveries", "list", "--json", env=plugin_env)))
    assert (retried["status"], retried["attempts"]) == ("succeeded", 2)
    assert endpoint.hits()["/badonce"] == 2

    stack.seed(
        records=[
            {"kind": "session", "session_id": "s-2", "user_id": "bob"},
            {"kind": "provider_session", "session_id": "s-2", "provider": "rp-badonce", "sid": "b"},
        ]
    )
    args = ("providers", "remove", "rp-badonce", "--end-sessions", "--actor", "ops")
    out = _ok(stack.cli(*args, env=plugin_env))
    assert "removed with 2 ended provider session(s) and 2 deliveries" in out
    assert endpoint.hits()["/badonce"] == 3
    assert _ok(stack.cli("providers", "list", "--json", env=plugin_env)) == ""
