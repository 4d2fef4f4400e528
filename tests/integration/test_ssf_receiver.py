"""Shared Signals receiver end to end: a transmitter on 127.0.0.1 (its JWKS served by a real
HTTP server, its SETs signed by joserfc) pushes to the real HTTP service; a real worker ends
the sessions they name. Refusals carry the RFC 8935 code. Against PostgreSQL. The replay
table's migration goes up and down on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select

from orchestrator.api_tokens import hash_token
from orchestrator.ssf_intake import event_id_of
from orchestrator.store import AuditRow, IdpSession, ReceivedSet
from orchestrator.store.engine import make_engine
from orchestrator.store.migrate import alembic_config, upgrade
from tests.ssf_support import (
    ACCOUNT_DISABLED,
    AUDIENCE,
    CREDENTIAL_CHANGE,
    ISSUER,
    SESSION_REVOKED,
    VERIFICATION,
    Transmitter,
    session_subject,
    user_subject,
)

from .api_server import ApiServer, start_api
from .servers import RecordingEndpoint, serving
from .support import LoopbackServer, Stack, audit_rows, session_record
from .test_backchannel_http import with_http_providers

pytestmark = pytest.mark.integration

STREAM = "upstream"
PUSH_TOKEN = "push-secret-of-the-upstream-idp"
PUSH = f"/v1/ssf/push/{STREAM}"
MEDIA = {"Content-Type": "application/secevent+jwt", "Authorization": f"Bearer {PUSH_TOKEN}"}
SESSIONS = [("s-a1", "alice"), ("s-a2", "alice"), ("s-b1", "bob"), ("s-b2", "bob")]
SESSIONS += [("s-c1", "carol"), ("s-d1", "dave")]


class JwksServer(LoopbackServer):
    """Serves the transmitter's JWKS at ``/jwks`` and counts the fetches."""

    def __init__(self, transmitter: Transmitter) -> None:
        super().__init__(_Jwks)
        self.document = json.dumps(transmitter.jwks()).encode()
        self.fetches = 0


class _Jwks(BaseHTTPRequestHandler):
    server: JwksServer

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.fetches += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.document)))
        self.end_headers()
        self.wfile.write(self.server.document)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def transmitter() -> Transmitter:
    return Transmitter()


@pytest.fixture
def jwks(transmitter: Transmitter) -> Iterator[JwksServer]:
    with serving(JwksServer(transmitter)) as server:
        yield server


def _serve(stack: Stack, jwks: JwksServer, extra: dict[str, str] | None = None) -> ApiServer:
    """``serve`` with the stream (and a disabled one), the sessions of SESSIONS seeded."""
    stream = {
        "name": STREAM,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": f"{jwks.base_url}/jwks",
        "push_token_sha256": hash_token(PUSH_TOKEN),
    }
    paused = {**stream, "name": "paused", "enabled": False}
    stack.seed(records=[session_record(s, u) for s, u in SESSIONS])
    settings = {"LOGOUT_SSF_TRANSMITTERS": json.dumps([stream, paused])}
    return start_api(stack, {**settings, **(extra or {})})


def _push(api: ApiServer, token: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with api.client() as client:
        return client.post(PUSH, content=token, headers=headers or MEDIA)


def _open_sessions(stack: Stack) -> set[str]:
    with stack.db() as db:
        return set(db.scalars(select(IdpSession.session_id).where(IdpSession.ended_at.is_(None))))


def _ssf_records(stack: Stack) -> list[AuditRow]:
    with stack.db() as db:
        return list(
            db.scalars(
                select(AuditRow).where(AuditRow.type == "ssf.received").order_by(AuditRow.seq)
            )
        )


@pytest.fixture
def relying_party() -> Iterator[RecordingEndpoint]:
    with serving(RecordingEndpoint()) as server:
        yield server


def test_pushed_revocations_end_the_right_sessions(
    stack: Stack,
    jwks: JwksServer,
    transmitter: Transmitter,
    tmp_path: Path,
    relying_party: RecordingEndpoint,
) -> None:
    """session-revoked ends one session (the user's other stays) and fans out to its relying
    party; credential-change (revoke) and account-disabled end every session of their user;
    a verification event and a session we never issued are accepted and audited, and end
    nothing."""
    plugin_env = with_http_providers(stack, tmp_path, {"ok": relying_party.url()}, "s-a1")
    stack.start_worker(plugin_env)
    api = _serve(stack, jwks, plugin_env)
    try:
        pushes: list[tuple[dict[str, Any], dict[str, Any]]] = [
            ({SESSION_REVOKED: {"initiating_entity": "admin"}}, session_subject("s-a1", "alice")),
            (
                {CREDENTIAL_CHANGE: {"credential_type": "password", "change_type": "revoke"}},
                user_subject("bob"),
            ),
            ({ACCOUNT_DISABLED: {"reason": "hijacking"}}, {"format": "opaque", "id": "carol"}),
            ({VERIFICATION: {"state": "probe"}}, user_subject("dave")),
            ({SESSION_REVOKED: {}}, session_subject("s-never-issued")),
        ]
        sent = [transmitter.claims(events, subject) for events, subject in pushes]
        for claims in sent:
            answer = _push(api, transmitter.sign(claims, alg="ES256"))
            assert (answer.status_code, answer.content) == (202, b""), answer.text
        expected_open = {"s-a2", "s-d1"}
        stack.wait_for(lambda: _open_sessions(stack) == expected_open, what="the revocations")
        ids = [event_id_of(ISSUER, c["jti"], c["iat"], next(iter(c["events"]))) for c in sent]
        stack.wait_for(
            lambda: all(audit_rows(stack, i, "logout.completed") for i in (ids[0], ids[1], ids[2])),
            what="the three logouts to complete",
        )
        received = audit_rows(stack, ids[0], "event.received")
        assert [(r.detail["type"], r.detail["initiator"], r.detail["actor"]) for r in received] == [
            ("session.revoke", "system", STREAM)
        ]
        assert audit_rows(stack, ids[1], "event.received")[0].detail["type"] == "user.revoke_all"
        assert relying_party.bodies == [b"session=sid-ok"]  # fan-out, as for any logout
        assert [r.provider for r in audit_rows(stack, ids[0], "delivery.succeeded")] == ["rp-ok"]
        stack.wait_for(
            lambda: bool(audit_rows(stack, ids[4], "session.not_found")),
            what="the unknown session to be audited",
        )
        records = _ssf_records(stack)
        assert [(r.outcome, r.detail["jti"]) for r in records] == [
            ("accepted", c["jti"]) for c in sent[:3]
        ] + [("ignored", sent[3]["jti"]), ("accepted", sent[4]["jti"])]
        assert records[3].detail["events"][0]["action"] == "ignore"
        assert jwks.fetches == 1
    finally:
        api.stop()
    assert transmitter.sign(sent[0]).split(".")[2] not in api.output()  # never logged


def test_a_session_is_ended_only_for_the_user_the_subject_names(
    stack: Stack, jwks: JwksServer, transmitter: Transmitter
) -> None:
    """A complex subject pairing carol's session with alice leaves it open (the engine's
    ending statement checks the owner; audited ``not_owned``); a session beside a user of
    another issuer is ignored; alice's own session ends."""
    stack.start_worker()
    api = _serve(stack, jwks)
    try:
        other_issuer = {"format": "iss_sub", "iss": "https://other", "sub": "dave"}
        pushes = [
            session_subject("s-c1", "alice"),
            {**session_subject("s-d1"), "user": other_issuer},
            session_subject("s-a1", "alice"),
        ]
        sent = [transmitter.claims({SESSION_REVOKED: {}}, subject) for subject in pushes]
        for claims in sent:
            answer = _push(api, transmitter.sign(claims))
            assert (answer.status_code, answer.content) == (202, b""), answer.text
        stolen, _, own = [event_id_of(ISSUER, c["jti"], c["iat"], SESSION_REVOKED) for c in sent]
        stack.wait_for(
            lambda: all(audit_rows(stack, i, "logout.completed") for i in (stolen, own)),
            what="both logouts to complete",
        )
        assert _open_sessions(stack) == {"s-a2", "s-b1", "s-b2", "s-c1", "s-d1"}
        [refused] = audit_rows(stack, stolen, "session.not_found")
        assert (refused.outcome, refused.session_id, refused.user_id) == (
            "not_owned",
            "s-c1",
            "carol",
        )
        assert refused.detail == {"reason": "session of another user", "named_user": "alice"}
        assert audit_rows(stack, stolen, "session.ended") == []
        [ignored] = _ssf_records(stack)[1].detail["events"]
        assert (ignored["action"], ignored["why"]) == (
            "ignore",
            "an iss_sub subject of another issuer",
        )
    finally:
        api.stop()


def test_refused_sets_carry_the_rfc_8935_error_and_end_nothing(
    stack: Stack, jwks: JwksServer, transmitter: Transmitter
) -> None:
    api = _serve(stack, jwks)
    try:
        good = transmitter.claims({SESSION_REVOKED: {}}, session_subject("s-a1"))
        token = transmitter.sign(good)
        cases: list[tuple[str, str, dict[str, str] | None, int, str]] = [
            (
                "tampered",
                transmitter.tampered(token, sub_id=session_subject("s-b1")),
                None,
                400,
                "invalid_key",
            ),
            (
                "wrong audience",
                transmitter.sign({**good, "aud": "https://else"}),
                None,
                400,
                "invalid_audience",
            ),
            (
                "wrong issuer",
                transmitter.sign({**good, "iss": "https://evil"}),
                None,
                400,
                "invalid_issuer",
            ),
            (
                "stale",
                transmitter.sign({**good, "iat": int(time.time()) - 3600}),
                None,
                400,
                "invalid_request",
            ),
            ("wrong typ", transmitter.sign(good, typ="JWT"), None, 400, "invalid_request"),
            (
                "event_timestamp overflowing",
                transmitter.sign({**good, "events": {SESSION_REVOKED: {"event_timestamp": 1e300}}}),
                None,
                400,
                "invalid_request",
            ),
            (
                "event_timestamp a bool",
                transmitter.sign({**good, "events": {SESSION_REVOKED: {"event_timestamp": True}}}),
                None,
                400,
                "invalid_request",
            ),
            (
                "event_timestamp in the future",
                transmitter.sign(
                    {**good, "events": {SESSION_REVOKED: {"event_timestamp": time.time() + 3600}}}
                ),
                None,
                400,
                "invalid_request",
            ),
            ("alg none", transmitter.unsigned(good), None, 400, "invalid_key"),
            ("alg not allowed", transmitter.sign(good, alg="PS256"), None, 400, "invalid_key"),
            ("unknown kid", transmitter.sign(good, kid="rotated-away"), None, 400, "invalid_key"),
            ("malformed", "this is no JWS", None, 400, "invalid_request"),
            (
                "content type",
                token,
                {**MEDIA, "Content-Type": "application/json"},
                400,
                "invalid_request",
            ),
            (
                "no push token",
                token,
                {"Content-Type": MEDIA["Content-Type"]},
                401,
                "authentication_failed",
            ),
            (
                "wrong push token",
                token,
                {**MEDIA, "Authorization": "Bearer nope"},
                401,
                "authentication_failed",
            ),
        ]
        for name, body, headers, status, err in cases:
            answer = _push(api, body, headers)
            assert answer.status_code == status, (name, answer.text)
            assert answer.json()["err"] == err, (name, answer.text)
            assert answer.json()["description"], name
        first = _push(api, token)
        replay = _push(api, token)
        assert first.status_code == 202, first.text
        assert (replay.status_code, replay.json()["err"]) == (400, "invalid_request")
        assert "replay" in replay.json()["description"]
        with api.client() as client:
            unknown = client.post("/v1/ssf/push/nobody", content=token, headers=MEDIA)
            disabled = client.post("/v1/ssf/push/paused", content=token, headers=MEDIA)
        assert (disabled.status_code, disabled.json()["err"]) == (403, "access_denied")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        # Fetched for the first SET; the unknown kid came within jwks_min_refresh: no refetch.
        assert jwks.fetches == 1
        with api.client("read") as client:
            metrics = client.get("/metrics").text
        results = {"accepted": 1, "invalid_key": 4, "invalid_request": 8, "access_denied": 1}
        results |= {"invalid_audience": 1, "invalid_issuer": 1, "authentication_failed": 2}
        for result, count in results.items():
            line = f'logout_ssf_sets_total{{result="{result}",stream="{STREAM}"}} {count:.1f}'
            if result == "access_denied":
                line = line.replace(STREAM, "paused")
            assert line in metrics, (line, metrics)
    finally:
        api.stop()
    assert stack.count(ReceivedSet) == 1
    assert len(_ssf_records(stack)) == 1
    assert token.split(".")[2] not in api.output()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_replay_table_migrates_up_and_down(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    try:
        upgrade(engine)
        assert "ssf_received_sets" in sa.inspect(engine).get_table_names()
        with engine.connect() as connection:
            command.downgrade(alembic_config(connection), "0011_provider_subscriptions")
            connection.commit()
        assert "ssf_received_sets" not in sa.inspect(engine).get_table_names()
        upgrade(engine)
        assert "ssf_received_sets" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
