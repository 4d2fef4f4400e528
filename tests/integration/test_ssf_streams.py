"""SSF stream management through the running HTTP service (SSF 1.0 §7, §8.1): the public
metadata and JWKS, bearer auth with scope ``ssf:streams``, each receiver seeing only its own
streams, problems naming the field, the verification event pushed to the receiver, and a
subject added over HTTP reached by a worker's logout."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select, text, update

from orchestrator.store import AuditRow, Provider

from .api_server import ApiServer, start_api
from .ssf_receiver import Receiver
from .support import (
    LoopbackServers,
    Stack,
    deliveries,
    logout_event,
    publish,
    wait_settled,
    wait_until,
)
from .test_saml import DELIVERY_SETTINGS
from .test_ssf_transmitter import (  # noqa: F401 - receivers and service: fixtures
    ENV,
    ISSUER,
    USER,
    receivers,
    service,
)

pytestmark = pytest.mark.integration

STREAM = "/v1/ssf/stream"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"


@pytest.fixture
def api(request: pytest.FixtureRequest) -> ApiServer:
    """The running service of the transmitter's tests (its ``service`` fixture)."""
    server: ApiServer = request.getfixturevalue("service")
    return server


@pytest.fixture
def rx(api: ApiServer, request: pytest.FixtureRequest) -> Receiver:
    """A receiver judging SETs against the service's JWKS; its stream asks for ``opaque``."""
    running: LoopbackServers[Receiver] = request.getfixturevalue("receivers")
    jwks = f"{api.base_url}/v1/ssf/jwks.json"
    return running.start(Receiver(jwks, ISSUER, "https://rx.example", "opaque"))


def create(api: ApiServer, rx: Receiver, holder: str = "receiver-a", **fields: Any) -> Any:
    body = {
        "delivery": {
            "method": "urn:ietf:rfc:8935",
            "endpoint_url": rx.url,
            "authorization_header": "Bearer rx-token",
        },
        "aud": rx.aud,
        "events_requested": [SESSION_REVOKED],
        "format": rx.fmt,
        **fields,
    }
    with api.client(holder) as client:
        answer = client.post(STREAM, json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_metadata_and_jwks_are_public(api: ApiServer, stack: Stack) -> None:
    """The metadata names the issuer and every endpoint on the service; the JWKS it points at
    holds public keys only, the very keys logout tokens are signed with (keys jwks)."""
    with api.client() as client:
        meta = client.get("/.well-known/ssf-configuration").json()
        jwks = client.get("/v1/ssf/jwks.json").json()
    base = api.base_url
    assert meta == {
        "spec_version": "1_0",
        "issuer": ISSUER,
        "jwks_uri": f"{base}/v1/ssf/jwks.json",
        "configuration_endpoint": f"{base}{STREAM}",
        "status_endpoint": f"{base}/v1/ssf/status",
        "add_subject_endpoint": f"{base}/v1/ssf/subjects/add",
        "remove_subject_endpoint": f"{base}/v1/ssf/subjects/remove",
        "verification_endpoint": f"{base}/v1/ssf/verify",
        "delivery_methods_supported": ["urn:ietf:rfc:8935"],
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        "default_subjects": "NONE",
    }
    assert all("d" not in key for key in jwks["keys"])
    with api.client() as client:
        forged = client.get("/.well-known/ssf-configuration", headers={"Host": "evil.example"})
    assert forged.json() == meta, "the endpoints come from the settings, not the Host header"
    printed = stack.cli("keys", "jwks", env=ENV)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == jwks


def test_metadata_names_the_configured_public_url(stack: Stack) -> None:
    """Behind a proxy, ``api_public_url`` is what receivers are told to call."""
    stack.protocols = ["oidc", "ssf"]
    behind = start_api(stack, {**ENV, "LOGOUT_API_PUBLIC_URL": "https://logout.example/"})
    try:
        with behind.client() as client:
            meta = client.get("/.well-known/ssf-configuration").json()
    finally:
        behind.stop()
    assert meta["configuration_endpoint"] == f"https://logout.example{STREAM}"
    assert meta["jwks_uri"] == "https://logout.example/v1/ssf/jwks.json"


def test_stream_management_needs_the_scope(api: ApiServer) -> None:
    with api.client() as client:
        assert client.get(STREAM).status_code == 401
    with api.client("read") as client:
        answer = client.get(STREAM)
    assert answer.status_code == 403
    assert "ssf:streams" in answer.json()["detail"]


def test_a_receiver_manages_its_own_streams(api: ApiServer, rx: Receiver) -> None:
    """Create, read, list, update, replace, status and delete; another receiver's token finds
    nothing of it; the authorization header is never read back."""
    made = create(api, rx)
    stream_id = made["stream_id"]
    assert made["iss"] == ISSUER
    assert made["delivery"] == {"method": "urn:ietf:rfc:8935", "endpoint_url": rx.url}
    assert made["events_delivered"] == [SESSION_REVOKED]
    assert "rx-token" not in json.dumps(made)
    with api.client("receiver-a") as mine, api.client("receiver-b") as theirs:
        assert mine.get(STREAM, params={"stream_id": stream_id}).json() == made
        assert [s["stream_id"] for s in mine.get(STREAM).json()] == [stream_id]
        assert theirs.get(STREAM).json() == []
        assert theirs.get(STREAM, params={"stream_id": stream_id}).status_code == 404
        patch = {"stream_id": stream_id, "description": "gateway"}
        assert theirs.patch(STREAM, json=patch).status_code == 404
        assert theirs.delete(STREAM, params={"stream_id": stream_id}).status_code == 404
        changed = mine.patch(STREAM, json={**patch, "format": "complex"}).json()
        assert (changed["description"], changed["format"]) == ("gateway", "complex")
        assert changed["delivery"]["endpoint_url"] == rx.url  # kept
        replaced = mine.put(
            STREAM,
            json={
                "stream_id": stream_id,
                "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": rx.url},
                "aud": "https://other.example",
            },
        ).json()
        assert (replaced["description"], replaced["format"]) == (None, "iss_sub")
        assert replaced["aud"] == "https://other.example"
        status = {"stream_id": stream_id}
        assert mine.get("/v1/ssf/status", params=status).json() == {**status, "status": "enabled"}
        paused = mine.post("/v1/ssf/status", json={**status, "status": "paused", "reason": "x"})
        assert paused.json() == {**status, "status": "paused", "reason": "x"}
        assert theirs.get("/v1/ssf/status", params=status).status_code == 404
        assert mine.delete(STREAM, params=status).status_code == 204
        assert mine.get(STREAM, params=status).status_code == 404
        assert mine.get(STREAM).json() == []


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "ftp://x"}},
            "delivery.endpoint_url",
            "https",
        ),
        (
            {"delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": "http://x"}},
            "delivery.method",
            "urn:ietf:rfc:8935",
        ),
        ({"events_requested": [""]}, "events_requested", "not an event type URI"),
        ({"format": "phone"}, "format", "iss_sub"),
        ({"colour": "blue"}, "colour", ""),
    ],
)
def test_bad_streams_are_problems_naming_the_field(
    api: ApiServer, rx: Receiver, change: dict[str, Any], field: str, message: str
) -> None:
    body = {"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": rx.url}, **change}
    with api.client("receiver-a") as client:
        answer = client.post(STREAM, json=body)
        listed = client.get(STREAM).json()
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problems = answer.json()["errors"]
    assert [p["field"] for p in problems] == [field]
    assert message in problems[0]["message"]
    assert listed == []


def test_unsupported_requested_events_are_kept_and_the_intersection_delivered(
    api: ApiServer, rx: Receiver
) -> None:
    """SSF 1.0 §8.1.1: the transmitter takes any requested event and delivers what it
    supports of them (``events_delivered``), rather than refusing the stream."""
    other = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
    made = create(api, rx, events_requested=[other, SESSION_REVOKED])
    assert made["events_requested"] == [other, SESSION_REVOKED]
    assert made["events_delivered"] == [SESSION_REVOKED]
    assert other not in made["events_supported"]


def test_verification_event_reaches_the_receiver(api: ApiServer, rx: Receiver) -> None:
    stream_id = create(api, rx)["stream_id"]
    with api.client("receiver-a") as client:
        answer = client.post("/v1/ssf/verify", json={"stream_id": stream_id, "state": "st-1"})
        missing = client.post("/v1/ssf/verify", json={"state": "st-1"})
    assert answer.status_code == 204, answer.text
    assert missing.status_code == 422
    assert [p["field"] for p in missing.json()["errors"]] == ["stream_id"]
    [judged] = rx.pushes()
    assert judged.problems == []
    assert judged.authorization == "Bearer rx-token"
    assert judged.claims["sub_id"] == {"format": "opaque", "id": stream_id}
    [event] = judged.claims["events"].values()
    assert event == {"state": "st-1"}


def test_an_added_subject_is_told_of_its_sessions_ending(
    api: ApiServer, rx: Receiver, stack: Stack
) -> None:
    """The stream has no provider session: adding the user as a subject (its email) makes the
    worker's logout push a SET to it; after removing the subject, the next logout does not."""
    stream_id = create(api, rx)["stream_id"]
    subject = {"stream_id": stream_id, "subject": {"format": "email", "email": USER}}
    with api.client("receiver-a") as client:
        assert client.post("/v1/ssf/subjects/add", json=subject).status_code == 200
        bad = client.post("/v1/ssf/subjects/add", json={**subject, "subject": {"format": "x"}})
    assert bad.status_code == 422
    assert [p["field"] for p in bad.json()["errors"]] == ["subject"]
    stack.seed(
        records=[
            {"kind": "session", "session_id": "s-1", "user_id": USER},
            {"kind": "session", "session_id": "s-2", "user_id": USER},
        ]
    )
    stack.start_worker({**ENV, **DELIVERY_SETTINGS})
    first = logout_event("s-1")
    publish(stack, first)
    wait_settled(stack, first["event_id"], 1)
    [delivery] = deliveries(stack, first["event_id"])
    assert (delivery.provider, delivery.status) == (f"ssf-{stream_id}", "succeeded")
    [judged] = rx.pushes()
    assert judged.problems == []
    assert judged.claims["sub_id"] == {"format": "opaque", "id": "s-1"}  # the session
    with api.client("receiver-a") as client:
        assert client.post("/v1/ssf/subjects/remove", json=subject).status_code == 204
    second = logout_event("s-2")
    publish(stack, second)
    wait_settled(stack, second["event_id"], 0)
    assert len(rx.pushes()) == 1


def provider_row(stack: Stack, stream_id: str) -> Provider:
    with stack.db() as db:
        row = db.get(Provider, f"ssf-{stream_id}")
        assert row is not None
        return row


def stream_audit(stack: Stack, stream_id: str) -> list[AuditRow]:
    with stack.db() as db:
        return list(
            db.scalars(
                select(AuditRow)
                .where(AuditRow.provider == f"ssf-{stream_id}", AuditRow.type.startswith("ssf."))
                .order_by(AuditRow.seq)
            )
        )


def test_a_receiver_cannot_undo_the_operators_disable(
    api: ApiServer, rx: Receiver, stack: Stack
) -> None:
    """After ``providers disable``, the receiver's PATCH, PUT and status change keep the
    provider disabled: ``enabled`` is the operator's, the stream's status the receiver's."""
    stream_id = create(api, rx)["stream_id"]
    disabled = stack.cli("providers", "disable", f"ssf-{stream_id}", "--actor", "ops", env=ENV)
    assert disabled.returncode == 0, disabled.stderr
    delivery = {"method": "urn:ietf:rfc:8935", "endpoint_url": rx.url}
    with api.client("receiver-a") as client:
        ids = {"stream_id": stream_id}
        assert client.patch(STREAM, json={**ids, "description": "x"}).status_code == 200
        assert client.put(STREAM, json={**ids, "delivery": delivery}).status_code == 200
        status = client.post("/v1/ssf/status", json={**ids, "status": "enabled"})
        assert status.status_code == 200, status.text
    assert provider_row(stack, stream_id).enabled is False


def test_a_change_racing_a_delete_does_not_bring_the_stream_back(
    api: ApiServer, rx: Receiver, stack: Stack
) -> None:
    """The PATCH waits for the delete's row lock and then finds no stream (404), instead of
    writing the deleted stream's owner back."""
    stream_id = create(api, rx)["stream_id"]
    name = f"ssf-{stream_id}"
    with stack.engine.connect() as deleting, ThreadPoolExecutor(1) as pool:
        with deleting.begin():
            row = deleting.execute(
                select(Provider.settings).where(Provider.name == name).with_for_update()
            ).one()
            patch = {"stream_id": stream_id, "description": "racing"}

            def patching() -> int:
                with api.client("receiver-a") as client:
                    return client.patch(STREAM, json=patch).status_code

            answer = pool.submit(patching)
            assert wait_until(lambda: lock_waiters(stack) > 0, 30) is not None
            gone = {**row.settings, "owner": None, "status": "disabled"}
            deleting.execute(update(Provider).where(Provider.name == name).values(settings=gone))
        assert answer.result(timeout=30) == 404
    assert provider_row(stack, stream_id).settings["owner"] is None


def lock_waiters(stack: Stack) -> int:
    """Backends of this test's database waiting for a lock."""
    with stack.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_stream_changes_are_audited_with_the_token_as_actor(
    api: ApiServer, rx: Receiver, stack: Stack
) -> None:
    """Each change of who hears of users' sessions is an ``ssf.*`` record: create, update,
    status, subject added and removed, delete; never the authorization header."""
    stream_id = create(api, rx)["stream_id"]
    ids = {"stream_id": stream_id}
    subject = {**ids, "subject": {"format": "email", "email": USER}}
    with api.client("receiver-a") as client:
        assert client.patch(STREAM, json={**ids, "description": "gw"}).status_code == 200
        assert client.post("/v1/ssf/status", json={**ids, "status": "paused"}).status_code == 200
        assert client.post("/v1/ssf/subjects/add", json=subject).status_code == 200
        assert client.post("/v1/ssf/subjects/remove", json=subject).status_code == 204
        assert client.delete(STREAM, params=ids).status_code == 204
    rows = stream_audit(stack, stream_id)
    assert [(r.type, r.outcome) for r in rows] == [
        ("ssf.stream_created", "created"),
        ("ssf.stream_updated", "updated"),
        ("ssf.stream_updated", "updated"),
        ("ssf.subject_added", "added"),
        ("ssf.subject_removed", "removed"),
        ("ssf.stream_deleted", "deleted"),
    ]
    assert {r.detail["actor"] for r in rows} == {"receiver-a"}
    assert [r.user_id for r in rows if r.type.startswith("ssf.subject")] == [USER, USER]
    assert rows[0].detail["authorization_header"] is True
    assert rows[2].detail["status"] == "paused"
    assert "rx-token" not in json.dumps([r.detail for r in rows])


def test_only_listed_tokens_may_add_subjects(stack: Stack, request: pytest.FixtureRequest) -> None:
    """With ``subject_tokens``, another token's stream cannot add a subject (403) nor gets
    every user by ``default_subjects = ALL``."""
    stack.protocols = ["oidc", "ssf"]
    policy = {
        **ENV,
        "LOGOUT_SSF_SUBJECT_TOKENS": "receiver-b",
        "LOGOUT_SSF_DEFAULT_SUBJECTS": "ALL",
    }
    server = start_api(stack, policy)
    try:
        jwks = f"{server.base_url}/v1/ssf/jwks.json"
        running: LoopbackServers[Receiver] = request.getfixturevalue("receivers")
        listener = running.start(Receiver(jwks, ISSUER, "https://rx.example", "opaque"))
        mine = create(server, listener, "receiver-a")["stream_id"]
        theirs = create(server, listener, "receiver-b")["stream_id"]
        subject = {"subject": {"format": "email", "email": USER}}
        with server.client("receiver-a") as client:
            refused = client.post("/v1/ssf/subjects/add", json={"stream_id": mine, **subject})
        with server.client("receiver-b") as client:
            allowed = client.post("/v1/ssf/subjects/add", json={"stream_id": theirs, **subject})
    finally:
        server.stop()
    assert refused.status_code == 403
    assert "subject_tokens" in refused.json()["detail"]
    assert allowed.status_code == 200
    assert stream_audit(stack, mine)[0].detail["every_user"] is False
    assert stream_audit(stack, theirs)[0].detail["every_user"] is True


def test_verification_is_limited_to_one_per_interval(api: ApiServer, rx: Receiver) -> None:
    """A second verification within min_verification_interval is a 429 with Retry-After and
    pushes nothing."""
    made = create(api, rx)
    assert made["min_verification_interval"] == 30
    ids = {"stream_id": made["stream_id"]}
    with api.client("receiver-a") as client:
        assert client.post("/v1/ssf/verify", json=ids).status_code == 204
        again = client.post("/v1/ssf/verify", json=ids)
    assert again.status_code == 429
    assert 0 < int(again.headers["retry-after"]) <= 30
    assert "min_verification_interval" in again.json()["detail"]
    assert len(rx.pushes()) == 1


def test_a_stream_stored_bad_is_named_and_the_listing_still_answers(
    api: ApiServer, rx: Receiver, stack: Stack
) -> None:
    """A stream whose stored settings no longer pass is a 409 naming it when read; the
    holder's other streams are still listed."""
    good = create(api, rx)["stream_id"]
    bad = create(api, rx)["stream_id"]
    with stack.engine.begin() as conn:
        stored = provider_row(stack, bad).settings
        broken = {**stored, "subject_format": "phone"}
        conn.execute(update(Provider).where(Provider.name == f"ssf-{bad}").values(settings=broken))
    with api.client("receiver-a") as client:
        listed = client.get(STREAM)
        read = client.get(STREAM, params={"stream_id": bad})
    assert listed.status_code == 200
    assert [s["stream_id"] for s in listed.json()] == [good]
    assert read.status_code == 409
    [problem] = read.json()["errors"]
    assert (problem["where"], problem["field"]) == (f"stream {bad!r}", "subject_format")
