"""Receiving Shared Signals: a SET's checks and the RFC 8935 code of each refusal, what each
event and subject asks, the bounded JWKS refresh and the transmitters' settings. SETs are
signed by joserfc (tests/ssf_support.py), an independent JOSE library."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from typing import Any

import pytest
from joserfc.jwk import ECKey, OctKey
from pydantic import ValidationError

from orchestrator.errors import ConfigurationError
from orchestrator.settings import Settings
from orchestrator.ssf_keys import TransmitterKeys
from orchestrator.ssf_transmitters import SsfTransmitter
from protocols.ssf.receiving import CLOCK_SKEW, SetRefusedError, read_header, verify
from protocols.ssf.settings import SubjectFormat
from protocols.ssf.signals import Signal, read_signals
from protocols.ssf.tokens import subject as transmitted_subject
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

ALGORITHMS = ("RS256", "ES256")
_EC_JWK = ECKey.generate_key("P-256", parameters={"kid": "e"}).as_dict(private=False)


@pytest.fixture(scope="module")
def transmitter() -> Transmitter:
    return Transmitter()


def _check(
    transmitter: Transmitter, token: str, *, max_age: float = 300, now: float | None = None
) -> dict[str, Any]:
    header = read_header(token, ALGORITHMS)
    keys = {k["kid"]: k for k in transmitter.jwks()["keys"]}
    from jwt import PyJWK

    key = PyJWK(keys[header.kid]).key if header.kid in keys else None
    return verify(
        token,
        key,
        header,
        issuer=ISSUER,
        audience=AUDIENCE,
        max_age=max_age,
        now=now or time.time(),
    )


def _refusal(transmitter: Transmitter, token: str, **options: Any) -> tuple[str, str]:
    with pytest.raises(SetRefusedError) as caught:
        _check(transmitter, token, **options)
    return caught.value.err, caught.value.description


def _revoked(transmitter: Transmitter, **extra: Any) -> dict[str, Any]:
    return transmitter.claims({SESSION_REVOKED: {}}, session_subject("s-1"), **extra)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_set_signed_with_an_allowed_algorithm_passes(transmitter: Transmitter, alg: str) -> None:
    claims = _revoked(transmitter)
    assert _check(transmitter, transmitter.sign(claims, alg=alg)) == claims


def test_each_refusal_names_its_rfc_8935_code(transmitter: Transmitter) -> None:
    good = _revoked(transmitter)
    token = transmitter.sign(good)
    hmac_key = OctKey.generate_key(256)
    cases: dict[str, tuple[str, str]] = {
        "tampered": ("invalid_key", transmitter.tampered(token, jti="another")),
        "stranger's key": (
            "invalid_key",
            transmitter.sign_with(transmitter.stranger, good, "RS256"),
        ),
        "alg none": ("invalid_key", transmitter.unsigned(good)),
        "HS256": ("invalid_key", transmitter.sign_with(hmac_key, good, "HS256")),
        "PS256 not allowed": ("invalid_key", transmitter.sign(good, alg="PS256")),
        "wrong typ": ("invalid_request", transmitter.sign(good, typ="JWT")),
        "wrong issuer": ("invalid_issuer", transmitter.sign({**good, "iss": "https://evil.test"})),
        "wrong audience": ("invalid_audience", transmitter.sign({**good, "aud": "https://other"})),
        "stale": ("invalid_request", transmitter.sign({**good, "iat": int(time.time()) - 301})),
        "future": ("invalid_request", transmitter.sign({**good, "iat": int(time.time()) + 600})),
        "no jti": (
            "invalid_request",
            transmitter.sign({k: v for k, v in good.items() if k != "jti"}),
        ),
        "no events": ("invalid_request", transmitter.sign({**good, "events": {}})),
        "events a list": (
            "invalid_request",
            transmitter.sign({**good, "events": [SESSION_REVOKED]}),
        ),
        "not a JWS": ("invalid_request", "not-a-token"),
    }
    found = {name: _refusal(transmitter, token)[0] for name, (_, token) in cases.items()}
    assert found == {name: err for name, (err, _) in cases.items()}


def test_a_refusal_never_quotes_the_token(transmitter: Transmitter) -> None:
    token = transmitter.tampered(transmitter.sign(_revoked(transmitter)), jti="x")
    _, description = _refusal(transmitter, token)
    assert token.split(".")[1] not in description
    assert token.split(".")[2] not in description


def _signals(
    events: Mapping[str, Any], subject: Mapping[str, Any], *, email: bool = False
) -> list[Signal]:
    claims = {"events": dict(events), "sub_id": dict(subject)}
    return read_signals(claims, issuers={ISSUER}, email_is_user_id=email, now=time.time())


def test_session_revoked_ends_the_session_its_subject_names() -> None:
    [complex_] = _signals({SESSION_REVOKED: {}}, session_subject("s-9", "alice"))
    [opaque] = _signals({SESSION_REVOKED: {}}, {"format": "opaque", "id": "s-8"})
    [user] = _signals({SESSION_REVOKED: {}}, user_subject("alice"))
    assert (complex_.action, complex_.target, complex_.user) == ("session", "s-9", "alice")
    assert (opaque.action, opaque.target) == ("session", "s-8")
    assert (user.action, user.target) == ("user", "alice")


def test_user_level_events_end_every_session_of_the_user() -> None:
    revoke = {CREDENTIAL_CHANGE: {"credential_type": "password", "change_type": "revoke"}}
    delete = {CREDENTIAL_CHANGE: {"credential_type": "fido2-roaming", "change_type": "delete"}}
    for events in (revoke, delete, {ACCOUNT_DISABLED: {"reason": "hijacking"}}):
        [signal] = _signals(events, user_subject("bob"))
        assert (signal.action, signal.target) == ("user", "bob"), events
    [by_email] = _signals(
        {ACCOUNT_DISABLED: {}}, {"format": "email", "email": "b@x.test"}, email=True
    )
    assert (by_email.action, by_email.target) == ("user", "b@x.test")


def test_what_is_not_acted_on_is_ignored_with_the_reason() -> None:
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({CREDENTIAL_CHANGE: {"change_type": "update"}}, user_subject("bob")),
        ({VERIFICATION: {"state": "abc"}}, user_subject("bob")),
        ({ACCOUNT_DISABLED: {}}, {"format": "email", "email": "b@x.test"}),
        ({ACCOUNT_DISABLED: {}}, {"format": "iss_sub", "iss": "https://other", "sub": "b"}),
        ({ACCOUNT_DISABLED: {}}, {"format": "phone_number", "phone_number": "+1"}),
    ]
    for events, subject in cases:
        [signal] = _signals(events, subject)
        assert signal.action == "ignore", (events, subject)
        assert signal.target is None, (events, subject)
        assert signal.why, (events, subject)


def test_values_of_the_wrong_json_type_are_refused_or_ignored_never_an_error() -> None:
    [change] = _signals({CREDENTIAL_CHANGE: {"change_type": ["revoke"]}}, user_subject("bob"))
    [other] = _signals({ACCOUNT_DISABLED: {}}, {"format": "iss_sub", "iss": {"a": 1}, "sub": "b"})
    assert (change.action, other.action) == ("ignore", "ignore")


def test_a_session_beside_a_user_we_cannot_map_is_ignored() -> None:
    """Whose the session must be is unknown: it is never ended as a session id alone."""
    session = {"format": "opaque", "id": "s-bob"}
    for user in (
        {"format": "iss_sub", "iss": "https://other", "sub": "alice"},
        {"format": "email", "email": "alice@x.test"},
        {"format": "phone_number", "phone_number": "+1"},
    ):
        [signal] = _signals(
            {SESSION_REVOKED: {}}, {"format": "complex", "user": user, **{"session": session}}
        )
        assert (signal.action, signal.target, signal.user) == ("ignore", None, None), user
        assert signal.why, user


@pytest.mark.parametrize(
    "stamp",
    [True, False, 0, -5, 1e300, float("inf"), float("nan"), 10**400, "1700000000", [1]],
)
def test_an_event_timestamp_that_is_no_past_time_is_an_invalid_request(stamp: object) -> None:
    with pytest.raises(SetRefusedError) as caught:
        _signals({SESSION_REVOKED: {"event_timestamp": stamp}}, session_subject("s-1"))
    assert caught.value.err == "invalid_request"
    assert "event_timestamp" in caught.value.description


def test_an_event_timestamp_in_the_future_is_refused_beyond_the_clock_skew() -> None:
    now = time.time()
    [slightly_ahead] = _signals(
        {SESSION_REVOKED: {"event_timestamp": now + CLOCK_SKEW - 5}}, session_subject("s-1")
    )
    assert slightly_ahead.timestamp == pytest.approx(now + CLOCK_SKEW - 5)
    with pytest.raises(SetRefusedError, match="event_timestamp"):
        _signals({SESSION_REVOKED: {"event_timestamp": now + 3600}}, session_subject("s-1"))
    [none] = _signals({SESSION_REVOKED: {}}, session_subject("s-1"))
    assert none.timestamp is None


@pytest.mark.parametrize("subject_format", list(SubjectFormat))
def test_what_our_transmitter_sends_our_receiver_reads_as_the_same_session(
    subject_format: SubjectFormat,
) -> None:
    """One meaning on both sides: a session-revoked about session s-7 of alice ends s-7
    (complex: only if it is alice's; opaque: the session id), or with a user subject every
    session of alice; never the session of someone else, never the user for an opaque."""
    sub_id = transmitted_subject(
        subject_format, issuer=ISSUER, sub="alice", email="alice@x.test", session="s-7"
    )
    claims = {"events": {SESSION_REVOKED: {}}, "sub_id": sub_id}
    [signal] = read_signals(claims, issuers={ISSUER}, email_is_user_id=True, now=time.time())
    expected = {
        SubjectFormat.ISS_SUB: ("user", "alice", None),
        SubjectFormat.EMAIL: ("user", "alice@x.test", None),
        SubjectFormat.OPAQUE: ("session", "s-7", None),
        SubjectFormat.COMPLEX: ("session", "s-7", "alice"),
    }
    assert (signal.action, signal.target, signal.user) == expected[subject_format]


def test_a_header_nested_too_deep_is_an_invalid_request() -> None:
    header = base64.urlsafe_b64encode(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    token = header.decode().rstrip("=") + ".e30.c2ln"
    with pytest.raises(SetRefusedError) as caught:
        read_header(token, ALGORITHMS)
    assert caught.value.err == "invalid_request"


def test_a_missing_or_broken_subject_is_an_invalid_request() -> None:
    email_session = {"format": "complex", "session": {"format": "email", "email": "a@b.c"}}
    for subject in (
        {},
        {"format": "opaque"},
        {"format": "complex"},
        {"format": "opaque", "id": ""},
        email_session,
    ):
        with pytest.raises(SetRefusedError) as caught:
            read_signals(
                {"events": {SESSION_REVOKED: {}}, **({"sub_id": subject} if subject else {})},
                issuers={ISSUER},
                email_is_user_id=False,
                now=time.time(),
            )
        assert caught.value.err == "invalid_request", subject


def _stream(**values: Any) -> SsfTransmitter:
    return SsfTransmitter(
        **{
            "name": "up",
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": "https://x/j",
            **values,
        }
    )


def test_an_unknown_kid_refetches_once_however_many_ask_and_not_again_soon(
    transmitter: Transmitter,
) -> None:
    """Fifty SETs with a made-up kid at once: one fetch; another right after: none."""
    fetched: list[str] = []
    clock = [1000.0]

    async def fetch(url: str) -> Mapping[str, Any]:
        fetched.append(url)
        await asyncio.sleep(0)
        return transmitter.jwks()

    keys = TransmitterKeys(_stream(jwks_min_refresh=60), fetch, clock=lambda: clock[0])

    async def run() -> list[object]:
        assert await keys.key("rsa-1") is not None  # the first use fetches
        return list(await asyncio.gather(*(keys.key("made-up") for _ in range(50))))

    assert asyncio.run(run()) == [None] * 50
    assert asyncio.run(keys.key("made-up")) is None
    assert len(fetched) == 1
    clock[0] += 61
    assert asyncio.run(keys.key("made-up")) is None
    assert len(fetched) == 2


def test_inline_keys_are_never_fetched(transmitter: Transmitter) -> None:
    async def fetch(url: str) -> Mapping[str, Any]:
        raise AssertionError("fetched")

    keys = TransmitterKeys(_stream(jwks_url=None, jwks=transmitter.jwks()), fetch)
    assert asyncio.run(keys.key("ec-1")) is not None
    assert asyncio.run(keys.key("unknown")) is None


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"algorithms": ["none"]}, "'none' is refused"),
        ({"algorithms": ["HS256"]}, "'HS256' is refused"),
        ({"algorithms": ["RS1"]}, "'RS1' is not one of"),
        ({"algorithms": []}, "at least one of"),
        ({"jwks": {"keys": []}}, "not a usable JWKS"),
        ({"jwks": {"keys": [_EC_JWK]}}, "exactly one of jwks_url"),
        ({"jwks_url": None}, "exactly one of jwks_url"),
        ({"jwks_url": "ftp://x/j"}, "https:// URL"),
        ({"jwks_url": None, "jwks": {"keys": [{"kty": "nope"}]}}, "not a usable JWKS"),
        ({"push_token_sha256": "secret"}, "push_token_sha256"),
        ({"max_age": "5 minutes please"}, "max_age"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_a_bad_transmitter_is_refused_naming_the_field_and_the_fix(
    values: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _stream(**values)
    assert says in str(caught.value)


def test_settings_refuse_a_stream_named_twice_and_read_durations() -> None:
    one = {"name": "up", "issuer": ISSUER, "audience": AUDIENCE, "jwks_url": "https://x/j"}
    with pytest.raises(ConfigurationError, match=r"ssf_transmitters.*'up' is used twice"):
        Settings.load(None, ssf_transmitters=[one, one])
    settings = Settings.load(None, ssf_transmitters=[{**one, "max_age": "2m"}])
    assert settings.ssf_transmitters[0].max_age == 120.0


def test_a_jwks_that_cannot_be_fetched_is_unavailable_naming_the_url() -> None:
    """Refused by the egress policy (loopback, not allowed), or nothing listening: an
    UnavailableError (the service answers 503), never a library's exception."""
    from orchestrator.egress import EgressPolicy
    from orchestrator.ssf_keys import fetch_jwks
    from schemas.errors import UnavailableError
    from tests.integration.support import closed_port

    url = f"http://127.0.0.1:{closed_port()}/jwks"
    for policy, says in (
        (EgressPolicy(), "egress"),
        (EgressPolicy.from_entries(["127.0.0.1"]), ""),
    ):
        with pytest.raises(UnavailableError, match=r"the JWKS at http://127\.0\.0\.1") as caught:
            asyncio.run(fetch_jwks(url, egress=policy, timeout=5, body_limit=65536))
        assert says in str(caught.value)


def test_push_token_prints_a_token_and_the_hash_to_configure() -> None:
    from click.testing import CliRunner

    from orchestrator.api_tokens import hash_token
    from workers.cli import main

    result = CliRunner().invoke(main, ["ssf", "push-token"])
    assert result.exit_code == 0, result.output
    token_line, hash_line = result.output.splitlines()
    token = token_line.removeprefix("token: ")
    assert len(token) >= 43
    assert hash_line == f'push_token_sha256 = "{hash_token(token)}"'
    _stream(push_token_sha256=hash_token(token))  # the value the settings take
