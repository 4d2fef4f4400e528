"""The Shared Signals transmitter end to end: a real worker pushes CAEP session-revoked SETs
to receivers on 127.0.0.1 that judge each with joserfc against the JWKS the running HTTP
service publishes (:mod:`.ssf_receiver`), beside OIDC and SAML deliveries of the same
logout; the receiver's RFC 8935 answers end or retry the delivery as any other."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from .api_server import ApiServer, start_api
from .servers import RecordingEndpoint, serving
from .ssf_receiver import Answer, Receiver
from .support import (
    LoopbackServers,
    Stack,
    audit_rows,
    deliveries,
    logout_event,
    publish,
    wait_settled,
)
from .test_saml import (
    DELIVERY_SETTINGS,
    ServiceProviders,
    saml_link,
    saml_provider,
    sps,  # noqa: F401 - the fixture of real SOAP service providers
    trust_idp_metadata,
)

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test"
USER = "alice@example.com"
ENV = {"LOGOUT_ISSUER": ISSUER, "LOGOUT_SSF_STREAM_ALLOW_HTTP": "true"}


@pytest.fixture
def service(stack: Stack) -> Iterator[ApiServer]:
    """``serve`` with the three handlers, publishing the JWKS the receivers fetch."""
    stack.protocols = ["oidc", "saml", "ssf"]
    server = start_api(stack, ENV)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receivers() -> Iterator[LoopbackServers[Receiver]]:
    running: LoopbackServers[Receiver] = LoopbackServers()
    try:
        yield running
    finally:
        running.close()


def stream(name: str, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    """A ``[[providers]]`` table of ``receiver``'s stream."""
    return {
        "name": name,
        "protocol": "ssf",
        "endpoint_url": receiver.url,
        "aud": receiver.aud,
        "subject_format": receiver.fmt,
        "authorization": f"Bearer {name}-secret",
        "allow_http": True,
        **fields,
    }


def link(provider: str, **identifiers: str) -> dict[str, Any]:
    return {
        "kind": "provider_session",
        "session_id": "s-1",
        "provider": provider,
        "identifiers": identifiers,
    }


def log_out_through(stack: Stack, providers: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed ``providers``, each with a provider session of the user's ``s-1``; a worker
    ends ``s-1``; returns the logout event once every delivery settled."""
    stack.seed(
        providers=providers,
        records=[
            {"kind": "session", "session_id": "s-1", "user_id": USER},
            *(link(provider["name"]) for provider in providers),
        ],
    )
    stack.start_worker({**ENV, **DELIVERY_SETTINGS})
    event = logout_event("s-1")
    publish(stack, event)
    wait_settled(stack, event["event_id"], len(providers))
    return event


def receiver(service: ApiServer, fmt: str, *script: Answer) -> Receiver:
    jwks = f"{service.base_url}/v1/ssf/jwks.json"
    return Receiver(jwks, ISSUER, f"https://{fmt}.rx.example", fmt, *script)


def test_every_subject_format_passes_an_independent_receiver(
    stack: Stack, service: ApiServer, receivers: LoopbackServers[Receiver]
) -> None:
    """One logout, four streams (iss_sub, email, opaque, complex): each gets one SET that
    joserfc verifies against the served JWKS, with its format, one txn for all four; an
    opaque subject is the session (the provider session's sid), never the user."""
    rx = {
        fmt: receivers.start(receiver(service, fmt))
        for fmt in ("iss_sub", "email", "opaque", "complex")
    }
    stack.seed(
        providers=[stream(f"st-{fmt}", r) for fmt, r in rx.items()],
        records=[
            {"kind": "session", "session_id": "s-1", "user_id": USER},
            link("st-iss_sub", sub="u-42"),
            link("st-email"),
            link("st-opaque", sub="opaque-7", sid="rx-session-8"),
            link("st-complex", sid="rx-session-9"),
        ],
    )
    stack.start_worker({**ENV, **DELIVERY_SETTINGS})
    event = logout_event("s-1")
    publish(stack, event)
    wait_settled(stack, event["event_id"], 4)
    assert {d.provider: d.status for d in deliveries(stack)} == {
        f"st-{fmt}": "succeeded" for fmt in rx
    }
    subjects: dict[str, Any] = {}
    transactions = set()
    for fmt, r in rx.items():
        [judged] = r.pushes()
        assert judged.problems == [], fmt
        assert judged.content_type == "application/secevent+jwt"
        assert judged.accept == "application/json"
        assert judged.authorization == f"Bearer st-{fmt}-secret"
        subjects[fmt] = judged.claims["sub_id"]
        transactions.add(judged.claims["txn"])
        [event_claims] = judged.claims["events"].values()
        assert event_claims["initiating_entity"] == "user"
        occurred = datetime.fromisoformat(event["occurred_at"])
        assert event_claims["event_timestamp"] == int(occurred.timestamp())
    assert transactions == {event["event_id"]}
    assert subjects == {
        "iss_sub": {"format": "iss_sub", "iss": ISSUER, "sub": "u-42"},
        "email": {"format": "email", "email": USER},
        "opaque": {"format": "opaque", "id": "rx-session-8"},  # the session, not sub
        "complex": {
            "format": "complex",
            "user": {"format": "iss_sub", "iss": ISSUER, "sub": USER},
            "session": {"format": "opaque", "id": "rx-session-9"},
        },
    }
    for line in (stack.tmp_path / "worker-1.stderr.log").read_text().splitlines():
        assert "secret" not in line, "the authorization header was logged"


def test_receiver_errors_fail_or_retry_the_delivery(
    stack: Stack, service: ApiServer, receivers: LoopbackServers[Receiver]
) -> None:
    """400 invalid_request is permanent (failed, one attempt, no retry); 503 with
    Retry-After then 202 is retried and succeeds; the audit trail says so."""
    refusing = receivers.start(
        receiver(
            service,
            "iss_sub",
            Answer(400, {"err": "invalid_request", "description": "bad event payload"}),
        )
    )
    busy = receivers.start(
        receiver(service, "opaque", Answer(503, headers={"Retry-After": "1"}), Answer(202))
    )
    event = log_out_through(stack, [stream("refusing", refusing), stream("busy", busy)])
    found = {d.provider: d for d in deliveries(stack)}
    assert (found["refusing"].status, found["refusing"].attempts) == ("failed", 1)
    assert found["refusing"].last_status_code == 400
    assert "invalid_request" in (found["refusing"].last_error or "")
    assert (found["busy"].status, found["busy"].attempts) == ("succeeded", 2)
    assert len(refusing.pushes()) == 1
    assert len(busy.pushes()) == 2
    assert len({judged.claims["jti"] for judged in busy.pushes()}) == 1, "a retry is one SET"
    assert all(j.problems == [] for j in [*refusing.pushes(), *busy.pushes()])
    stamps = {
        event_claims["event_timestamp"]
        for judged in busy.pushes()
        for event_claims in judged.claims["events"].values()
    }
    assert stamps == {int(datetime.fromisoformat(event["occurred_at"]).timestamp())}
    failed = audit_rows(stack, event["event_id"], "delivery.failed")
    assert [r.provider for r in failed] == ["refusing"]
    retrying = audit_rows(stack, event["event_id"], "delivery.retrying")
    assert [r.provider for r in retrying] == ["busy"]
    succeeded = audit_rows(stack, event["event_id"], "delivery.succeeded")
    assert [r.provider for r in succeeded] == ["busy"]


def test_a_paused_stream_and_an_unset_authorization_env_are_skipped(
    stack: Stack, service: ApiServer, receivers: LoopbackServers[Receiver]
) -> None:
    """A paused stream and one whose authorization_env is unset in the worker are sent
    nothing and recorded skipped (not failed), with the reason; the enabled stream gets its
    SET and the logout is not partial."""
    rx = {name: receivers.start(receiver(service, "iss_sub")) for name in ("on", "held", "env")}
    unset = {**stream("env", rx["env"]), "authorization": None, "authorization_env": "NO_SUCH_V"}
    on, held = stream("on", rx["on"]), stream("held", rx["held"], status="paused")
    event = log_out_through(stack, [on, held, unset])
    assert {d.provider: d.status for d in deliveries(stack)} == {
        "on": "succeeded",
        "held": "skipped",
        "env": "skipped",
    }
    assert (len(rx["on"].pushes()), rx["held"].pushes(), rx["env"].pushes()) == (1, [], [])
    reasons = {
        row.provider: row.detail["reason"]
        for row in audit_rows(stack, event["event_id"], "delivery.skipped")
    }
    assert "the stream is paused" in reasons["held"]
    assert "NO_SUCH_V, which is not set" in reasons["env"]
    assert audit_rows(stack, event["event_id"], "delivery.failed") == []


def test_one_fan_out_reaches_oidc_saml_and_ssf_alike(
    stack: Stack,
    service: ApiServer,
    receivers: LoopbackServers[Receiver],
    request: pytest.FixtureRequest,
) -> None:
    """A user with an OIDC client, a SAML SP and an SSF stream logs out: one worker sends a
    logout token, a signed LogoutRequest and a SET, each delivery and audit record alike."""
    providers: ServiceProviders = request.getfixturevalue("sps")
    trust_idp_metadata(stack, providers)
    stack.protocols = ["oidc", "saml", "ssf"]
    sp = providers("payroll")
    rx = receivers.start(receiver(service, "complex"))
    with serving(RecordingEndpoint()) as rp:
        stack.seed(
            providers=[
                {
                    "name": "wiki",
                    "protocol": "oidc",
                    "client_id": "wiki",
                    "backchannel_logout_uri": rp.url("/bc"),
                    "allow_http": True,
                },
                saml_provider(sp),
                stream("gateway", rx),
            ],
            records=[
                {"kind": "session", "session_id": "s-1", "user_id": USER},
                link("wiki", sid="oidc-sid"),
                saml_link("s-1", "payroll", USER, "_idx-1"),
                link("gateway"),
            ],
        )
        stack.start_worker({**ENV, **DELIVERY_SETTINGS})
        event = logout_event("s-1")
        publish(stack, event)
        wait_settled(stack, event["event_id"], 3)
        assert len(rp.bodies) == 1
    assert {d.provider: d.status for d in deliveries(stack)} == {
        "wiki": "succeeded",
        "payroll": "succeeded",
        "gateway": "succeeded",
    }
    [saml] = sp.requests()
    assert saml.signature_ok
    assert saml.python3_saml_error is None
    [judged] = rx.pushes()
    assert judged.problems == []
    assert judged.claims["sub_id"]["session"] == {"format": "opaque", "id": "s-1"}
    succeeded = audit_rows(stack, event["event_id"], "delivery.succeeded")
    assert sorted(r.provider or "" for r in succeeded) == ["gateway", "payroll", "wiki"]
    assert {r.user_id for r in succeeded} == {USER}
    assert {r.session_id for r in succeeded} == {"s-1"}
