"""A user's sessions over real HTTP (``serve``), on PostgreSQL and SQLite with a real worker:
the self-service listing and revocation, and the login stage's remember-device question."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.geoip_data import GeoipFiles

from .api_server import ApiServer, start_api
from .support import Stack
from .test_api import _problem
from .test_sessions_cli import CAFE, HOME, Operator, seeded

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def served(
    request: pytest.FixtureRequest, stack: Stack, tmp_path: Path, geoip_files: GeoipFiles
) -> Iterator[tuple[ApiServer, Operator]]:
    """``serve`` and a worker on the seeded backend, remember_device 30 days, the GeoIP City
    database configured (it places sessions whose login recorded no place)."""
    operator = seeded(stack, tmp_path, request.param, embedded=False)
    env = {
        **operator.env,
        "LOGOUT_REMEMBER_DEVICE": "30d",
        "LOGOUT_GEOIP_CITY_DB": str(geoip_files.city),
    }
    stack.start_worker(env)
    server = start_api(stack, env)
    try:
        yield server, operator
    finally:
        server.stop()


def test_the_user_sees_their_open_sessions(served: tuple[ApiServer, Operator]) -> None:
    """GET /v1/users/{id}/sessions (scope read): the fields sessions list shows, newest first;
    another scope is 403, no token 401; a user with none has an empty list."""
    api, _ = served
    with api.client("read") as client:
        answer = client.get("/v1/users/alice/sessions")
        nobody = client.get("/v1/users/nobody/sessions")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["user_id"] == "alice"
    assert [s["session_id"] for s in body["sessions"]] == ["s-5", "s-2", "s-1"]
    laptop = body["sessions"][2]
    assert laptop["device"]["browser"] == "Firefox 120"
    assert laptop["device"]["os"] == "Windows 10"
    assert laptop["location"] == {"city": "London", "country": "GB", "source": "login"}
    assert laptop["remember_me"] is True
    assert [p["provider"] for p in laptop["provider_sessions"]] == ["wiki"]
    phone = body["sessions"][1]  # no place recorded at login: looked up now
    assert phone["location"] == {"city": "Milton", "country": "US", "source": "geoip"}
    assert nobody.json() == {"user_id": "nobody", "sessions": []}
    with api.client("events") as client:
        _problem(client.get("/v1/users/alice/sessions"), 403)
    with api.client() as client:
        _problem(client.get("/v1/users/alice/sessions"), 401)


def test_the_user_revokes_one_of_their_sessions(served: tuple[ApiServer, Operator]) -> None:
    """DELETE (scope events:write) publishes session.revoke, initiator user, actor the user;
    the worker ends it. Another user's session and an unknown one are the same 404."""
    api, operator = served
    with api.client("events") as client:
        revoked = client.delete("/v1/users/alice/sessions/s-2")
        theirs = _problem(client.delete("/v1/users/alice/sessions/s-3"), 404)
        unknown = _problem(client.delete("/v1/users/alice/sessions/s-404"), 404)
    assert revoked.status_code == 202, revoked.text
    answer = revoked.json()
    assert answer["session_id"] == "s-2"
    assert answer["queued"] == 0
    assert theirs["title"] == unknown["title"] == "no such session"
    assert "bob" not in json.dumps(theirs)

    def ended() -> bool:
        with api.client("read") as client:
            open_ids = [
                s["session_id"] for s in client.get("/v1/users/alice/sessions").json()["sessions"]
            ]
        return open_ids == ["s-5", "s-1"]

    operator.stack.wait_for(ended, what="s-2 ended by the worker", timeout=60)
    trail = operator.run("audit", "list", "--event", answer["event_id"], "--json")
    assert trail.returncode == 0, trail.stderr
    records = [json.loads(line) for line in trail.stdout.splitlines()]
    (end,) = [r for r in records if r["type"] == "session.ended"]
    assert (end["session_id"], end["detail"]["initiator"], end["detail"]["actor"]) == (
        "s-2",
        "user",
        "alice",
    )
    assert [s["session_id"] for s in operator.listed("--user", "bob")] == ["s-3"]
    with api.client("read") as client:
        _problem(client.delete("/v1/users/alice/sessions/s-1"), 403)


def test_the_login_stage_asks_whether_the_device_is_known(
    served: tuple[ApiServer, Operator],
) -> None:
    """POST /v1/users/{id}/device-check (scope sessions:write): a cookie a login reported
    through POST /v1/sessions is known, an open session's address is, neither is not; the
    session.started record says so; a bad address is a 422 naming ip."""
    api, operator = served
    started = {
        "type": "session.started",
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "initiator": "user",
        "session_id": "s-7",
        "user_id": "alice",
        "ip": "10.7.7.7",
        "device_id": "cookie-7",
    }
    with api.client("sessions") as client:
        assert client.post("/v1/sessions", json=started).status_code == 201
        cookie = client.post(
            "/v1/users/alice/device-check", json={"device_id": "cookie-7", "ip": "10.9.9.9"}
        )
        same_ip = client.post("/v1/users/alice/device-check", json={"ip": HOME})
        neither = client.post(
            "/v1/users/bob/device-check", json={"device_id": "cookie-7", "ip": CAFE}
        )
        bad = _problem(client.post("/v1/users/alice/device-check", json={"ip": "home"}), 422)
    assert cookie.json() == {"user_id": "alice", "known": True, "reason": "cookie"}
    assert same_ip.json() == {"user_id": "alice", "known": True, "reason": "same_ip"}
    assert neither.json() == {"user_id": "bob", "known": False, "reason": "unknown"}
    assert "ip" in json.dumps(bad["errors"])
    trail = operator.run("audit", "list", "--session", "s-7", "--type", "session.started", "--json")
    (record,) = [json.loads(line) for line in trail.stdout.splitlines()]
    assert (record["detail"]["known_device"], record["detail"]["known_device_reason"]) == (
        False,
        "unknown",
    )
    assert "cookie-7" not in trail.stdout
    with api.client("read") as client:
        _problem(client.post("/v1/users/alice/device-check", json={"ip": HOME}), 403)
