"""The SSF transmitter handler: stream settings, SETs (verified with joserfc, an independent
JOSE library), subject formats, and what a receiver's answer means (RFC 8935)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from orchestrator.handlers import build_handler
from orchestrator.settings import Settings
from protocols import (
    BackchannelResponse,
    HostInfo,
    LogoutContext,
    ProviderInfo,
    ProviderSessionInfo,
)
from protocols.oidc import OidcHandler, OidcSettings
from protocols.oidc.keys import generate_key
from protocols.ssf import (
    SESSION_REVOKED,
    VERIFICATION,
    SsfHandler,
    SsfSettings,
    classify_push,
    initiating_entity,
)
from schemas.errors import InputError, PermanentDeliveryError, TransientDeliveryError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ISSUER = "https://idp.example.com"


@pytest.fixture
def handler(tmp_path: Path) -> SsfHandler:
    made = SsfHandler(SsfSettings(), HostInfo(issuer=ISSUER, data_dir=tmp_path))
    made.start()
    return made


def _stream(handler: SsfHandler, **fields: Any) -> ProviderInfo:
    raw = {"endpoint_url": "https://gw.example/push", "aud": "https://gw.example", **fields}
    return ProviderInfo("gw", "ssf", True, False, handler.validate_settings("gw", raw))


def _session(**identifiers: str) -> ProviderSessionInfo:
    return ProviderSessionInfo(1, "s-1", "alice@example.com", "gw", identifiers)


def _context(event_type: str = "logout.user", initiator: str = "user") -> LogoutContext:
    return LogoutContext("e-1", event_type, initiator, "d-1", 1, NOW)


def _verify(token: str, jwks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    decoded = jose_jwt.decode(token, keys, algorithms=["RS256", "ES256"])
    return dict(decoded.header), dict(decoded.claims)


def test_session_revoked_set(handler: SsfHandler) -> None:
    """The request is an RFC 8935 push; the SET carries every claim CAEP and SSF ask for."""
    stream = _stream(handler, authorization="Bearer rx-secret")
    request = handler.backchannel_request(stream, _session(), _context())
    assert request.url == "https://gw.example/push"
    assert request.headers == {
        "content-type": "application/secevent+jwt",
        "accept": "application/json",
        "authorization": "Bearer rx-secret",
    }
    header, claims = _verify(request.content.decode(), handler.jwks())
    assert header["typ"] == "secevent+jwt"
    assert header["kid"] == handler.keys.active.kid
    assert claims["iss"] == ISSUER
    assert claims["aud"] == "https://gw.example"
    assert claims["iat"] == int(NOW.timestamp())
    assert claims["txn"] == "e-1"
    assert claims["sub_id"] == {"format": "iss_sub", "iss": ISSUER, "sub": "alice@example.com"}
    assert claims["events"] == {
        SESSION_REVOKED: {
            "event_timestamp": int(NOW.timestamp()),
            "initiating_entity": "user",
            "reason_admin": {"en": "The user logged out"},
        }
    }


def test_jti_is_stable_across_attempts_of_one_delivery(handler: SsfHandler) -> None:
    """A retry after a lost 202 is the same SET (same ``jti``) with the attempt's ``iat``;
    another delivery (another stream or session) gets another ``jti``."""
    stream = _stream(handler)
    first = _verify(handler.signed_set(stream, _session(), _context()), handler.jwks())[1]
    later = replace(_context(), attempt=2, now=NOW.replace(minute=5))
    retried = _verify(handler.signed_set(stream, _session(), later), handler.jwks())[1]
    assert retried["jti"] == first["jti"]
    assert retried["iat"] == first["iat"] + 300
    other = replace(_context(), delivery_id="d-2")
    another = _verify(handler.signed_set(stream, _session(), other), handler.jwks())[1]
    assert another["jti"] != first["jti"]


def test_event_timestamp_is_when_the_event_happened(handler: SsfHandler) -> None:
    """The event's ``occurred_at`` when the host knows it, else the attempt's time."""
    happened = datetime(2026, 11, 29, 11, 58, 30, tzinfo=UTC)
    known = replace(_context(), occurred_at=happened)
    for context, expected in ((known, happened), (_context(), NOW)):
        token = handler.signed_set(_stream(handler), _session(), context)
        [event] = _verify(token, handler.jwks())[1]["events"].values()
        assert event["event_timestamp"] == int(expected.timestamp())


def test_sets_share_the_logout_token_keys(handler: SsfHandler, tmp_path: Path) -> None:
    """With no key_files, SETs and OIDC logout tokens are signed with one JWKS."""
    oidc = OidcHandler(OidcSettings(), HostInfo(issuer=ISSUER, data_dir=tmp_path))
    oidc.start()
    assert oidc.keys.jwks() == handler.jwks()


@pytest.mark.parametrize(
    ("subject_format", "identifiers", "expected"),
    [
        ("iss_sub", {"sub": "u-42"}, {"format": "iss_sub", "iss": ISSUER, "sub": "u-42"}),
        ("email", {}, {"format": "email", "email": "alice@example.com"}),
        ("email", {"email": "a@corp.example"}, {"format": "email", "email": "a@corp.example"}),
        # opaque is the session (never the user's sub): identifiers.sid, else the session id.
        ("opaque", {"sub": "u-42", "sid": "gw-8"}, {"format": "opaque", "id": "gw-8"}),
        ("opaque", {"sub": "u-42"}, {"format": "opaque", "id": "s-1"}),
        (
            "complex",
            {"sid": "gw-7"},
            {
                "format": "complex",
                "user": {"format": "iss_sub", "iss": ISSUER, "sub": "alice@example.com"},
                "session": {"format": "opaque", "id": "gw-7"},
            },
        ),
        (
            "complex",
            {},
            {
                "format": "complex",
                "user": {"format": "iss_sub", "iss": ISSUER, "sub": "alice@example.com"},
                "session": {"format": "opaque", "id": "s-1"},
            },
        ),
    ],
)
def test_subject_formats(
    handler: SsfHandler, subject_format: str, identifiers: dict[str, str], expected: Any
) -> None:
    stream = _stream(handler, subject_format=subject_format)
    token = handler.signed_set(stream, _session(**identifiers), _context())
    assert _verify(token, handler.jwks())[1]["sub_id"] == expected


def test_an_email_stream_needs_an_email(handler: SsfHandler) -> None:
    stream = _stream(handler, subject_format="email")
    session = ProviderSessionInfo(1, "s-1", "u-42", "gw", {})
    with pytest.raises(PermanentDeliveryError, match=r"identifiers\.email"):
        handler.signed_set(stream, session, _context())


@pytest.mark.parametrize(
    ("event_type", "initiator", "entity"),
    [
        ("logout.user", "user", "user"),
        ("session.revoke", "admin", "admin"),
        ("user.revoke_all", "admin", "admin"),
        ("session.terminate_others", "user", "user"),
        ("session.expired", "system", "policy"),
        ("session.binding_violation", "policy", "policy"),
        ("logout.provider", "system", "system"),
    ],
)
def test_initiating_entity(event_type: str, initiator: str, entity: str) -> None:
    assert initiating_entity(event_type, initiator) == entity


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"status": "paused"}, "the stream is paused"),
        ({"status": "disabled"}, "the stream is disabled"),
        ({"events_requested": []}, "did not request session-revoked"),
        ({"authorization_env": "GW_UNSET_AUTH"}, "GW_UNSET_AUTH, which is not set"),
    ],
)
def test_a_stream_that_takes_nothing_now_is_skipped(
    handler: SsfHandler, fields: dict[str, Any], reason: str
) -> None:
    """The host skips (not fails) such a stream's deliveries, with the handler's reason."""
    stream = _stream(handler, **fields)
    assert reason in (handler.skip_reason(stream) or "")
    with pytest.raises(PermanentDeliveryError, match="no SET sent"):
        handler.signed_set(stream, _session(), _context())


def test_an_enabled_stream_is_not_skipped(
    handler: SsfHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert handler.skip_reason(_stream(handler)) is None
    monkeypatch.setenv("GW_PUSH_AUTH", "Bearer from-env")
    assert handler.skip_reason(_stream(handler, authorization_env="GW_PUSH_AUTH")) is None


def test_authorization_from_the_environment(
    handler: SsfHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = _stream(handler, authorization_env="GW_PUSH_AUTH")
    with pytest.raises(PermanentDeliveryError, match="GW_PUSH_AUTH, which is not set"):
        handler.backchannel_request(stream, _session(), _context())
    monkeypatch.setenv("GW_PUSH_AUTH", "Bearer from-env")
    request = handler.backchannel_request(stream, _session(), _context())
    assert request.headers["authorization"] == "Bearer from-env"


def test_unsupported_events_are_kept_and_not_delivered(handler: SsfHandler) -> None:
    """SSF 1.0 §8.1.1: a stream may request any event; it gets the intersection."""
    other = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
    stream = _stream(handler, events_requested=[other, SESSION_REVOKED, other])
    assert stream.settings.events_requested == [other, SESSION_REVOKED]
    assert stream.settings.events_delivered == [SESSION_REVOKED]
    assert handler.skip_reason(stream) is None
    only_other = _stream(handler, events_requested=[other])
    assert only_other.settings.events_delivered == []
    assert "did not request session-revoked" in (handler.skip_reason(only_other) or "")


def test_the_secret_is_not_in_the_repr(handler: SsfHandler) -> None:
    assert "rx-secret" not in repr(_stream(handler, authorization="Bearer rx-secret").settings)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"endpoint_url": "http://gw.example/push"}, "endpoint_url", "set allow_http"),
        ({"aud": ""}, "aud", "at least 1 character"),
        ({"subject_format": "phone"}, "subject_format", "'iss_sub', 'email'"),
        ({"events_requested": [" urn:x"]}, "events_requested", "not an event type URI"),
        ({"events_requested": ["urn:x"] * 65}, "events_requested", "at most 64"),
        ({"authorization_env": "1BAD"}, "authorization_env", "variable name"),
        ({"authorization": "x", "authorization_env": "A"}, "authorization_env", "not both"),
        ({"status": "sleeping"}, "status", "'enabled'"),
        ({"audience": "x"}, "audience", "unknown field"),
    ],
)
def test_bad_streams_name_the_field(
    handler: SsfHandler, fields: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InputError) as raised:
        _stream(handler, **fields)
    [problem] = raised.value.problems
    assert (problem.where, problem.field) == ("provider 'gw'", field)
    assert message in problem.message


def _answer(status: int, body: Any = None, **headers: str) -> BackchannelResponse:
    content = b"" if body is None else json.dumps(body).encode()
    return BackchannelResponse(status, headers, content)


def test_receiver_answers() -> None:
    """202 succeeds; a 400 is permanent unless its err is invalid_key; 5xx and 429 come back
    later, Retry-After honoured; a 401 is permanent."""
    classify_push(_answer(202), NOW)
    with pytest.raises(PermanentDeliveryError, match="err=invalid_request: bad SET"):
        classify_push(_answer(400, {"err": "invalid_request", "description": "bad SET"}), NOW)
    for err in ("invalid_audience", "invalid_issuer", "authentication_failed", "access_denied"):
        with pytest.raises(PermanentDeliveryError):
            classify_push(_answer(400, {"err": err}), NOW)
    with pytest.raises(PermanentDeliveryError, match="err=none"):
        classify_push(BackchannelResponse(400, {}, b"<html>"), NOW)
    with pytest.raises(TransientDeliveryError):
        classify_push(_answer(400, {"err": "invalid_key"}), NOW)
    with pytest.raises(TransientDeliveryError) as later:
        classify_push(_answer(503, **{"retry-after": "7"}), NOW)
    assert later.value.retry_after == 7.0
    with pytest.raises(TransientDeliveryError):
        classify_push(_answer(429), NOW)
    with pytest.raises(PermanentDeliveryError):
        classify_push(_answer(401), NOW)


def test_verification_set(handler: SsfHandler) -> None:
    stream = _stream(handler)
    request = handler.verification_request("st-1", stream.settings, "state-9", NOW)
    header, claims = _verify(request.content.decode(), handler.jwks())
    assert header["typ"] == "secevent+jwt"
    assert claims["sub_id"] == {"format": "opaque", "id": "st-1"}
    assert claims["events"] == {VERIFICATION: {"state": "state-9"}}
    assert "txn" not in claims


def test_ssf_takes_the_oidc_key_ring_when_it_names_none(tmp_path: Path) -> None:
    """key_files and active_kid of [protocols.oidc] are the SSF handler's too unless its own
    section names keys: one key ring, configured once."""
    keys = tmp_path / "keys"
    first, second = generate_key(keys), generate_key(keys, "ES256")
    files = sorted(str(path) for path in keys.glob("*.pem"))
    oidc_keys = {"key_files": files, "active_kid": second.kid}
    settings = Settings.load(None, data_dir=tmp_path, protocol_settings={"oidc": oidc_keys})
    oidc, ssf = build_handler(settings, OidcHandler), build_handler(settings, SsfHandler)
    assert ssf.jwks() == oidc.keys.jwks()
    assert ssf.keys.active.kid == oidc.keys.active.kid == second.kid
    assert ssf.key_directories() == []
    own = {"oidc": oidc_keys, "ssf": {"active_kid": first.kid, "key_files": files}}
    separate = Settings.load(None, data_dir=tmp_path, protocol_settings=own)
    assert build_handler(separate, SsfHandler).keys.active.kid == first.kid
