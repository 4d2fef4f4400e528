"""The HTTP service (``serve``) driven over real HTTP: every endpoint, every auth failure,
malformed bodies, the OpenAPI document."""

from __future__ import annotations

import json
import secrets
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from sqlalchemy import make_url, select

from api.app import SETTINGS_VARIABLE
from orchestrator.store import AuditRow, IdpSession, OutboxRow
from tests.geoip_data import GeoipFiles

from .api_server import ApiServer, start_api
from .support import CLI, Stack, event, logout_event

pytestmark = pytest.mark.integration

#: A logout nobody published (a fixed id: pytest-xdist's workers must collect the same ids).
UNKNOWN_LOGOUT = "0a11ce55-0000-4000-8000-000000000401"
#: Every endpoint that needs a token: method, path, the scope it needs.
PROTECTED = [
    ("POST", "/v1/events", "events:write"),
    ("GET", f"/v1/logouts/{UNKNOWN_LOGOUT}", "read"),
    ("GET", f"/v1/logouts/{UNKNOWN_LOGOUT}/timeline", "read"),
    ("GET", "/v1/plans/p-1", "read"),
    ("POST", "/v1/sessions", "sessions:write"),
    ("POST", "/v1/sessions/s-1/seen", "sessions:write"),
    ("POST", "/v1/sessions/s-1/binding-check", "sessions:write"),
    ("GET", "/v1/users/u-1/sessions", "read"),
    ("DELETE", "/v1/users/u-1/sessions/s-1", "events:write"),
    ("POST", "/v1/users/u-1/device-check", "sessions:write"),
    ("GET", "/metrics", "read"),
    ("GET", "/v1/openapi.json", "read"),
    ("GET", "/v1/deliveries", "read"),
    ("GET", "/v1/rejected-events", "read"),
    ("GET", "/v1/providers", "read"),
]
#: A token of each scope, by the name start_api gives it.
TOKEN_OF = {"events:write": "events", "read": "read", "sessions:write": "sessions"}


@pytest.fixture
def api(stack: Stack, geoip_files: GeoipFiles) -> Iterator[ApiServer]:
    """``serve`` on this test's stack, with GeoIP databases and a 4 KiB body cap."""
    server = start_api(
        stack,
        {
            "LOGOUT_GEOIP_CITY_DB": str(geoip_files.city),
            "LOGOUT_GEOIP_ASN_DB": str(geoip_files.asn),
            "LOGOUT_API_BODY_LIMIT": "4096",
            "LOGOUT_API_WAIT_MAX": "20",
        },
    )
    try:
        yield server
    finally:
        server.stop()


def _problem(response: Any, status: int) -> dict[str, Any]:
    """The RFC 9457 body of ``response``, checked to have ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status, body
    assert body["title"], body
    assert body["detail"], body
    return body


def test_health_and_readiness_answer_without_a_token(api: ApiServer) -> None:
    """/healthz lives; /readyz finds the database, its schema and the broker answering."""
    with api.client() as client:
        assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "schema": "ok", "broker": "ok"},
    }


@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED)
def test_every_auth_failure(api: ApiServer, method: str, path: str, scope: str) -> None:
    """No token, a wrong scheme, an unknown token: 401 with a challenge; a token without the
    scope: 403; each a JSON problem."""
    with api.client() as client:
        missing = client.request(method, path)
        scheme = client.request(method, path, headers={"Authorization": "Basic dXNlcjpwdw=="})
        unknown = client.request(method, path, headers={"Authorization": "Bearer not-a-token"})
    for response in (missing, scheme, unknown):
        _problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    other = next(name for s, name in TOKEN_OF.items() if s != scope)
    with api.client(other) as client:
        forbidden = client.request(method, path)
    assert scope in _problem(forbidden, 403)["detail"]


def test_events_are_recorded_before_the_answer_and_idempotent(api: ApiServer, stack: Stack) -> None:
    """202 with each event_id, in the outbox; sent again: 200 with its state; a JSON array
    and JSON lines too."""
    first = logout_event("s-1")
    with api.client("events") as client:
        accepted = client.post("/v1/events", json=first)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json() == {
            "events": [
                {"event_id": first["event_id"], "type": "logout.user", "status": "accepted"}
            ],
            "queued": 0,
        }
        assert stack.count(OutboxRow, OutboxRow.event_id == first["event_id"]) == 1
        again = client.post("/v1/events", json=first)
        assert again.status_code == 200, again.text
        assert again.json()["events"][0]["status"] == "queued"
        assert stack.count(OutboxRow, OutboxRow.event_id == first["event_id"]) == 1

        batch = [logout_event("s-2"), logout_event("s-3")]
        mixed = client.post("/v1/events", json=[*batch, first])
        assert mixed.status_code == 202, mixed.text
        states = [e["status"] for e in mixed.json()["events"]]
        assert states == ["accepted", "accepted", "queued"]

        lines = [logout_event("s-4"), logout_event("s-5")]
        ndjson = "".join(json.dumps(e) + "\n" for e in lines)
        sent = client.post(
            "/v1/events", content=ndjson, headers={"content-type": "application/x-ndjson"}
        )
        assert sent.status_code == 202, sent.text
    ids = {e["event_id"] for e in [first, *batch, *lines]}
    assert stack.count(OutboxRow, OutboxRow.event_id.in_(ids)) == len(ids)


def test_a_bad_batch_is_refused_whole_naming_each_field(api: ApiServer, stack: Stack) -> None:
    """422 naming the event and the field, as publish does; nothing of the batch recorded."""
    good = logout_event("s-1")
    bad = {**logout_event("s-2"), "sesion_id": "x"}
    del bad["session_id"]
    with api.client("events") as client:
        refused = client.post("/v1/events", json=[good, bad])
    body = _problem(refused, 422)
    fields = {(e["where"], e["field"]) for e in body["errors"]}
    assert ("event 2", "session_id") in fields, body
    assert any("did you mean session_id" in e["message"] for e in body["errors"]), body
    assert stack.count(OutboxRow) == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status", "names"),
    [
        (b'{"type": "logout.user",', "application/json", 422, "invalid JSON"),
        (b"", "application/json", 422, "empty"),
        (b"42", "application/json", 422, "event object or a JSON array"),
        (b"[]", "application/json", 422, "empty array"),
        (b"\xff\xfe", "application/json", 422, "not UTF-8"),
        (b"{}", "text/plain", 415, "content-type"),
        (
            b'{"type": "logout.user", "type": "user.revoke_all"}',
            "application/json",
            422,
            "'type' is given more than once",
        ),
        (b'[{"a": {"b": NaN}}]', "application/json", 422, '"0.a.b", "message": "NaN is not JSON'),
        (b'{"x": Infinity}', "application/x-ndjson", 422, "Infinity is not JSON"),
        (b"{}", "application/json; charset=latin-1", 415, "charset=latin-1"),
        (b"{}", "application/x-ndjson; charset=utf-16", 415, "charset utf-16"),
        (b"[" + b'"x",' * 2000 + b'"x"]', "application/json", 413, "api_body_limit"),
    ],
)
def test_malformed_bodies_are_problems(
    api: ApiServer, content: bytes, content_type: str, status: int, names: str
) -> None:
    """Each unreadable body is a problem saying what to fix, never a 500."""
    with api.client("events") as client:
        response = client.post(
            "/v1/events", content=content, headers={"content-type": content_type}
        )
    assert names in json.dumps(_problem(response, status)), response.text


def test_every_json_body_is_read_strictly(api: ApiServer) -> None:
    """The endpoints reading a JSON body into a model refuse what /v1/events refuses: a
    repeated key, NaN, another charset than UTF-8; charset=utf-8 is taken."""
    json_type = {"content-type": "application/json"}
    with api.client("sessions") as client:
        repeated = client.post(
            "/v1/sessions/s-1/seen", content=b'{"at": 1, "at": 2}', headers=json_type
        )
        assert _problem(repeated, 422)["errors"][0]["field"] == "at"
        nan = client.post("/v1/sessions", content=b'{"type": NaN}', headers=json_type)
        assert "NaN is not JSON" in _problem(nan, 422)["errors"][0]["message"]
        latin = {"content-type": "application/json; charset=ISO-8859-1"}
        _problem(client.post("/v1/users/u-1/device-check", content=b"{}", headers=latin), 415)
        utf8 = {"content-type": 'application/json; charset="UTF-8"'}
        unknown = client.post("/v1/sessions/s-1/seen", content=b"{}", headers=utf8)
        _problem(unknown, 404)  # read, then the session is not open


def test_a_chunked_body_is_capped_too(api: ApiServer) -> None:
    """A body sent chunked (no Content-Length) over the 4 KiB cap is a 413 problem, and the
    service keeps answering; a chunked body within the cap is read whole (202)."""

    def endless() -> Iterator[bytes]:
        yield b"["
        for _ in range(1000):  # ~12 KiB, three times the cap
            yield b'"xxxxxxxxx",'
        yield b'"x"]'

    def chunked(event: dict[str, object]) -> Iterator[bytes]:
        text = json.dumps(event).encode()
        yield text[:10]
        yield text[10:]

    with api.client("events") as client:
        refused = client.post(
            "/v1/events", content=endless(), headers={"content-type": "application/json"}
        )
        assert refused.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in refused.request.headers
        assert "api_body_limit" in _problem(refused, 413)["detail"]
        accepted = client.post(
            "/v1/events",
            content=chunked(logout_event("s-1")),
            headers={"content-type": "application/json"},
        )
        assert accepted.request.headers.get("transfer-encoding") == "chunked"
        assert accepted.status_code == 202, accepted.text


def test_logouts_and_plans_not_known(api: ApiServer) -> None:
    """An unknown event or plan is 404; a bad id or wait is 422 naming it."""
    with api.client("read") as client:
        _problem(client.get(f"/v1/logouts/{uuid.uuid4()}"), 404)
        bad_id = _problem(client.get("/v1/logouts/not-a-uuid"), 422)
        assert bad_id["errors"][0]["field"] == "event_id"
        plan = _problem(client.get("/v1/plans/nope", params={"wait": "0.2"}), 404)
        assert "0.2 s" in plan["detail"]
        for wait in ("-1", "abc", "nan", "21"):
            body = _problem(client.get("/v1/plans/nope", params={"wait": wait}), 422)
            assert body["errors"][0]["field"] == "wait", body
    with api.client() as browser:  # the plan pages: the plan id is the capability, no token
        assert browser.get("/logout/plans/nope").status_code == 404


@pytest.mark.parametrize(
    ("path", "query", "field", "says"),
    [
        ("/v1/deliveries", "statsu=failed&limit=1", "statsu", "did you mean status?"),
        ("/v1/rejected-events", "sinse=2026-01-01", "sinse", "did you mean since?"),
        (f"/v1/logouts/{UNKNOWN_LOGOUT}", "wiat=5", "wiat", "did you mean wait?"),
        ("/v1/deliveries", "limit=1&limit=2", "limit", "given 2 times"),
        ("/v1/providers", "enabled=true", "enabled", "takes no query parameter"),
        ("/healthz", "verbose", "verbose", "takes no query parameter"),
    ],
)
def test_unknown_and_repeated_query_parameters_are_refused(
    api: ApiServer, path: str, query: str, field: str, says: str
) -> None:
    """Every endpoint refuses a parameter it does not take, and a single one given twice:
    a 422 naming it (and the one meant), never ignored; without a token, still a 401."""
    with api.client("read") as client:
        body = _problem(client.get(f"{path}?{query}"), 422)
        assert [e["field"] for e in body["errors"]] == [field], body
        assert says in body["errors"][0]["message"], body
        assert client.get("/v1/deliveries?status=failed&limit=1").status_code == 200
    if path != "/healthz":
        with api.client() as anonymous:
            _problem(anonymous.get(f"{path}?{query}"), 401)


def test_long_input_is_not_echoed_in_full(api: ApiServer) -> None:
    """A 10 KB query value, a long path id, a 3000-character key: each problem names the
    value by its first 100 characters and its length."""
    with api.client("all") as client:
        event = _problem(client.get("/v1/deliveries", params={"event": "e" * 10000}), 422)
        plan = _problem(client.get(f"/v1/plans/{'p' * 250}"), 404)
        key = _problem(client.post("/v1/events", json={**logout_event("s-1"), "k" * 3000: 1}), 422)
    assert "'" + "e" * 100 + "…' (10000 characters)" in event["errors"][0]["message"]
    assert "'" + "p" * 100 + "…' (250 characters)" in plan["detail"]
    assert "k" * 100 + "… (3000 characters)" in [e["field"] for e in key["errors"]]
    for body in (event, plan, key):
        assert len(json.dumps(body)) < 1000, body


def test_sessions_seen_and_binding_check(api: ApiServer, stack: Stack) -> None:
    """A session started over HTTP is seen, then its country binding breaks: the violation
    is written and published; unknown sessions are 404."""
    started = event(
        "session.started",
        session_id="s-http",
        user_id="alice",
        ip="81.2.69.142",
        geoip_binding="bind_continent_country",
    )
    with api.client("sessions") as client:
        created = client.post("/v1/sessions", json=started)
        assert created.status_code == 201, created.text
        assert created.json() == {"session_id": "s-http", "revoked": []}
        wrong_type = _problem(client.post("/v1/sessions", json=logout_event("s-x")), 422)
        assert wrong_type["errors"][0]["field"] == "type"

        seen = client.post("/v1/sessions/s-http/seen", json={"at": "2100-01-01T00:00:00Z"})
        assert seen.json() == {"session_id": "s-http", "open": True}, seen.text
        assert client.post("/v1/sessions/s-http/seen").status_code == 200
        _problem(client.post("/v1/sessions/nobody/seen"), 404)
        for never in ("9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00"):  # was a 500
            refused = _problem(client.post("/v1/sessions/s-http/seen", json={"at": never}), 422)
            assert refused["errors"][0]["field"] == "at", refused

        holds = client.post("/v1/sessions/s-http/binding-check", json={"ip": "81.2.69.143"})
        assert holds.json() == {
            "ok": True,
            "session_id": "s-http",
            "reason": None,
            "event_id": None,
            "published": False,
        }, holds.text
        bad_ip = _problem(client.post("/v1/sessions/s-http/binding-check", json={"ip": "x"}), 422)
        assert bad_ip["errors"][0]["field"] == "ip"
        extra = _problem(
            client.post("/v1/sessions/s-http/binding-check", json={"ip": "1.2.3.4", "x": 1}), 422
        )
        assert extra["errors"][0]["field"] == "x"
        _problem(client.post("/v1/sessions/nobody/binding-check", json={"ip": "1.2.3.4"}), 404)

        broken = client.post(
            "/v1/sessions/s-http/binding-check",
            json={"ip": "89.160.20.112", "path": "/account", "method": "GET"},
        )
    verdict = broken.json()
    assert verdict["ok"] is False, broken.text
    assert verdict["published"] is True, broken.text
    assert verdict["reason"] == "geoip.country"
    assert stack.count(OutboxRow, OutboxRow.event_id == verdict["event_id"]) == 1
    with api.client("read") as client:
        metrics = client.get("/metrics").text
    assert 'logout_binding_violations_total{reason="geoip.country"} 1.0' in metrics
    with stack.db() as db:
        session = db.get(IdpSession, "s-http")
        assert session is not None
        assert session.last_seen.year == 2100
        assert db.scalar(select(AuditRow.type).where(AuditRow.session_id == "s-http")) == (
            "session.started"
        )


def test_openapi_document_is_valid(api: ApiServer) -> None:
    """/v1/openapi.json is a valid OpenAPI 3.1 document naming every route."""
    with api.client("read") as client:
        document = client.get("/v1/openapi.json").json()
    validate(document)
    assert set(document["paths"]) == {
        "/v1/events",
        "/v1/logouts/{event_id}",
        "/v1/logouts/{event_id}/timeline",
        "/v1/plans/{plan_id}",
        "/v1/sessions",
        "/v1/sessions/{session_id}/seen",
        "/v1/sessions/{session_id}/binding-check",
        "/v1/users/{user_id}/sessions",
        "/v1/users/{user_id}/sessions/{session_id}",
        "/v1/users/{user_id}/device-check",
        "/v1/deliveries",
        "/v1/rejected-events",
        "/v1/providers",
        "/v1/ssf/push/{stream}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
        # The ssf handler is installed, so enabled by default: its routes are served.
        "/.well-known/ssf-configuration",
        "/v1/ssf/jwks.json",
        "/v1/ssf/stream",
        "/v1/ssf/status",
        "/v1/ssf/subjects/add",
        "/v1/ssf/subjects/remove",
        "/v1/ssf/verify",
    }


def test_metrics_of_several_processes_are_summed(stack: Stack) -> None:
    """With api_workers = 2, /metrics counts the requests every process answered (each on a
    new connection, so either process may take it); metrics_public: no token needed."""
    server = start_api(stack, {"LOGOUT_METRICS_PUBLIC": "true"}, workers=2)
    healthz = 'logout_http_requests_total{method="GET",route="/healthz",status="200"} '

    def count() -> float:
        with server.client() as client:
            answer = client.get("/metrics")
        assert answer.status_code == 200, answer.text
        text = answer.text
        return float(text.split(healthz, 1)[1].split()[0])

    try:
        before = count()
        for _ in range(20):
            with server.client() as client:
                assert client.get("/healthz").status_code == 200
        after = count()
    finally:
        server.stop()
    assert after == before + 20


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "stat").read_text()
        except OSError:
            continue
        if int(status.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def test_serve_processes_hold_no_password_in_their_environment(stack: Stack) -> None:
    """serve --workers 2, the database URL with its password in the settings file: the
    processes answer (their settings read from a 0600 file), no process's environment holds
    the password, and the file is gone once serve stops."""
    password = secrets.token_hex(12)
    url = make_url(stack.database_url).set(password=password)
    config = stack.tmp_path / "logout.toml"
    config.write_text(f"database_url = {json.dumps(url.render_as_string(False))}\n")
    server = start_api(
        stack, {"LOGOUT_CONFIG": str(config)}, workers=2, without=["LOGOUT_DATABASE_URL"]
    )
    try:
        with server.client("read") as client:
            assert client.get("/readyz").status_code == 200
        children = _children(server.process.pid)  # the 2 processes (and a resource tracker)
        assert len(children) >= 2, children
        for pid in [server.process.pid, *children]:
            assert not any(password in value for value in _environment(pid).values()), pid
        file = Path(_environment(children[0])[SETTINGS_VARIABLE])
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    finally:
        assert server.stop() == 0
    assert not file.exists()


def test_serve_on_a_port_in_use_names_the_setting(api: ApiServer, stack: Stack) -> None:
    """A second serve on the first one's port exits 6 (configuration cannot work) with one
    line naming api_port and where it was set; a host that is no address here names
    api_host."""
    port = api.base_url.rsplit(":", 1)[1]
    for extra, says in (
        ({"LOGOUT_API_PORT": port}, "the port is in use (LOGOUT_API_PORT (environment))"),
        ({"LOGOUT_API_HOST": "999.999.1.1"}, "is not an address of this machine"),
    ):
        env = stack.env({"LOGOUT_API_HOST": "127.0.0.1", "LOGOUT_API_PORT": port, **extra})
        run = subprocess.run(
            [str(CLI), "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert run.returncode == 6, run.stderr
        assert says in run.stderr, run.stderr
        assert "Errno" not in run.stderr, run.stderr
        assert "Traceback" not in run.stderr, run.stderr


@pytest.mark.parametrize(
    "request_head",
    [
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
        b"GET /healthz?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_what_the_http_server_refuses_before_the_service(
    api: ApiServer, request_head: bytes
) -> None:
    """As the README says: uvicorn's parser answers these itself, a plain-text 400 (no
    problem document), before any route runs; the service keeps answering."""
    host, port = api.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request_head)
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"content-type: text/plain" in answer.lower(), answer
    assert answer.endswith(b"Invalid HTTP request received."), answer
    with api.client() as client:
        assert client.get("/healthz").status_code == 200
