"""The OIDC handler: provider settings, keys, logout tokens and front-channel URLs."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from orchestrator import ConfigurationError, InputError, PermanentDeliveryError
from protocols import Channel, HostInfo, LogoutContext, ProviderInfo, ProviderSessionInfo
from protocols.oidc import (
    BACKCHANNEL_LOGOUT_EVENT,
    KeyRing,
    OidcHandler,
    OidcSettings,
    frontchannel_url,
    generate_key,
    load_key,
)
from workers.cli import main

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _handler(tmp_path: Path, **changes: Any) -> OidcHandler:
    """An OIDC handler with its own settings ``changes``, issuing as the test IdP."""
    host = HostInfo(issuer="https://idp.example.com", data_dir=tmp_path)
    handler = OidcHandler(OidcSettings(**changes), host)
    handler.start()
    return handler


def _provider(handler: OidcHandler, **fields: Any) -> ProviderInfo:
    raw = {"client_id": "wiki", "backchannel_logout_uri": "https://rp.example/bc", **fields}
    return ProviderInfo("wiki", "oidc", True, False, handler.validate_settings("wiki", raw))


def _session(sid: str | None = "sid-1", sub: str | None = "alice") -> ProviderSessionInfo:
    given = {"sid": sid, "sub": sub}
    identifiers = {name: value for name, value in given.items() if value is not None}
    return ProviderSessionInfo(1, "s-1", "alice", "wiki", identifiers)


def _context() -> LogoutContext:
    return LogoutContext(str(uuid.uuid4()), "logout.user", "user", "d-1", 1, NOW)


def _verify(token: str, jwks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify with joserfc, an implementation independent of the one that signed."""
    keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    decoded = jose_jwt.decode(token, keys, algorithms=["RS256", "ES256"])
    return dict(decoded.header), dict(decoded.claims)


# -- provider settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"client_id": None}, "client_id", "Field required"),
        ({"backchannel_logout_uri": "/relative"}, "backchannel_logout_uri", "absolute URI"),
        ({"backchannel_logout_uri": "https://rp/x#frag"}, "backchannel_logout_uri", "fragment"),
        ({"backchannel_logout_uri": "http://rp/x"}, "backchannel_logout_uri", "allow_http"),
        ({"frontchannel_logout_uri": "ftp://rp/x"}, "frontchannel_logout_uri", "https"),
        (
            {"backchannel_logout_uri": None, "logout_method": "backchannel"},
            "backchannel_logout_uri",
            "required by logout_method 'backchannel'",
        ),
        ({"logout_method": "carrier-pigeon"}, "logout_method", "Input should be"),
        ({"client_secret": "x"}, "client_secret", "unknown field"),
    ],
)
def test_bad_provider_settings_name_provider_and_field(
    tmp_path: Path, fields: dict[str, Any], field: str, message: str
) -> None:
    """Each invalid registration is refused naming the provider and the field."""
    handler = _handler(tmp_path)
    raw: dict[str, Any] = {"client_id": "wiki", "backchannel_logout_uri": "https://rp/bc"}
    raw.update(fields)
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(InputError) as caught:
        handler.validate_settings("wiki", raw)
    [problem] = caught.value.problems
    assert (problem.where, problem.field) == ("provider 'wiki'", field)
    assert message in problem.message


def test_http_allowed_only_when_asked(tmp_path: Path) -> None:
    """allow_http = true permits http URIs (loopback RPs in development)."""
    handler = _handler(tmp_path)
    provider = _provider(handler, backchannel_logout_uri="http://127.0.0.1/bc", allow_http=True)
    assert handler.channel(provider) is Channel.BACKCHANNEL


def test_logout_method_defaults_from_the_uris(tmp_path: Path) -> None:
    """Back-channel when its URI is set; front-channel when only that URI is set."""
    handler = _handler(tmp_path)
    both = _provider(handler, frontchannel_logout_uri="https://rp/fc")
    front = _provider(handler, backchannel_logout_uri=None, frontchannel_logout_uri="https://rp/f")
    chosen = _provider(
        handler, frontchannel_logout_uri="https://rp/fc", logout_method="frontchannel"
    )
    assert handler.channel(both) is Channel.BACKCHANNEL
    assert handler.channel(front) is Channel.FRONTCHANNEL_IFRAME
    assert handler.channel(chosen) is Channel.FRONTCHANNEL_IFRAME


# -- logout tokens ---------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_logout_token_is_spec_exact(tmp_path: Path, alg: str) -> None:
    """Header and claims exactly as Back-Channel Logout §2.4 asks, verified independently."""
    key = generate_key(tmp_path / "k", alg)  # type: ignore[arg-type]
    handler = _handler(tmp_path, key_files=[Path(key.source)])
    request = handler.backchannel_request(_provider(handler), _session(), _context())
    assert request.url == "https://rp.example/bc"
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    [token] = parse_qs(request.content.decode())["logout_token"]
    header, claims = _verify(token, handler.keys.jwks())
    assert header == {"alg": alg, "typ": "logout+jwt", "kid": key.kid}
    assert claims["iss"] == "https://idp.example.com"
    assert claims["aud"] == "wiki"
    assert claims["iat"] == int(NOW.timestamp())
    assert 0 < claims["exp"] - claims["iat"] <= 120
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
    assert (claims["sid"], claims["sub"]) == ("sid-1", "alice")
    assert "nonce" not in claims
    assert set(claims) == {"iss", "aud", "iat", "exp", "jti", "events", "sid", "sub"}


def test_every_attempt_gets_a_fresh_jti(tmp_path: Path) -> None:
    """Two tokens for the same session never share a jti."""
    handler = _handler(tmp_path)
    provider = _provider(handler)
    tokens = [handler.logout_token(provider, _session(), _context()) for _ in range(3)]
    jtis = {_verify(t, handler.keys.jwks())[1]["jti"] for t in tokens}
    assert len(jtis) == 3


def test_sid_required_but_missing_fails_permanently(tmp_path: Path) -> None:
    """A client requiring sid never gets a token without one."""
    handler = _handler(tmp_path)
    provider = _provider(handler, backchannel_logout_session_required=True)
    with pytest.raises(PermanentDeliveryError, match="requires sid"):
        handler.backchannel_request(provider, _session(sid=None), _context())


def test_sub_only_token_when_sid_is_not_required(tmp_path: Path) -> None:
    """Without a sid (and not required), the token names sub alone."""
    handler = _handler(tmp_path)
    token = handler.logout_token(_provider(handler), _session(sid=None), _context())
    claims = _verify(token, handler.keys.jwks())[1]
    assert "sid" not in claims
    assert claims["sub"] == "alice"


def test_neither_sid_nor_sub_fails_permanently(tmp_path: Path) -> None:
    """A token must name sub or sid."""
    handler = _handler(tmp_path)
    with pytest.raises(PermanentDeliveryError, match="neither sid nor sub"):
        handler.logout_token(_provider(handler), _session(sid=None, sub=None), _context())


def test_another_protocols_identifiers_fail_that_delivery(tmp_path: Path) -> None:
    """SAML identifiers left on a provider that now speaks OIDC fail permanently, naming the
    field and never its value, for the token and the iframe alike."""
    handler = _handler(tmp_path)
    session = ProviderSessionInfo(1, "s-1", "alice", "wiki", {"name_id": "secret-name"})
    with pytest.raises(PermanentDeliveryError) as caught:
        handler.backchannel_request(_provider(handler), session, _context())
    assert "name_id: not one of its identifiers" in caught.value.detail
    assert "secret-name" not in caught.value.detail
    iframe = _provider(
        handler, backchannel_logout_uri=None, frontchannel_logout_uri="https://rp.example/fc"
    )
    with pytest.raises(PermanentDeliveryError, match="name_id: not one of") as caught:
        handler.frontchannel_entry(iframe, session, _context())
    assert "secret-name" not in caught.value.detail


# -- keys ------------------------------------------------------------------------------


def _ring(files: list[Path], directory: Path, active_kid: str | None = None) -> KeyRing:
    ring = KeyRing(files, directory, active_kid)
    ring.load()
    return ring


def test_start_generates_a_key_once_and_signing_reads_no_file(tmp_path: Path) -> None:
    """With no key configured, the handler's start generates one RS256 key into the data
    directory, once; before it, nothing is generated and signing is refused."""
    unstarted = OidcHandler(OidcSettings(), HostInfo("https://idp.example.com", tmp_path))
    with pytest.raises(ConfigurationError, match="not loaded: the host starts the handler"):
        unstarted.logout_token(_provider(unstarted), _session(), _context())
    assert not (tmp_path / "oidc-keys").exists()
    ring = _ring([], tmp_path / "oidc-keys")
    first = ring.active
    assert first.alg == "RS256"
    assert Path(first.source).parent == tmp_path / "oidc-keys"
    assert oct(Path(first.source).stat().st_mode & 0o777) == "0o600"
    again = _ring([], tmp_path / "oidc-keys").active
    assert again.kid == first.kid
    assert "PRIVATE" not in repr(first)


def test_rotation_publishes_all_and_signs_with_the_active(tmp_path: Path) -> None:
    """Every key is in the JWKS; the configured active kid signs."""
    old = generate_key(tmp_path / "k", "RS256")
    new = generate_key(tmp_path / "k", "ES256")
    files = [Path(old.source), Path(new.source)]
    ring = _ring(files, tmp_path / "none", active_kid=new.kid)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [old.kid, new.kid]
    assert ring.active.kid == new.kid
    assert all("d" not in k for k in ring.jwks()["keys"]), "private parts must not be published"
    default = _ring(files, tmp_path / "none")
    assert default.active.kid == old.kid


def test_unknown_active_kid_is_refused(tmp_path: Path) -> None:
    """active_kid must name a loaded key."""
    key = generate_key(tmp_path / "k")
    with pytest.raises(ConfigurationError, match=r"active_kid of \[protocols.oidc\] 'nope'"):
        _ring([Path(key.source)], tmp_path / "none", "nope")


def test_bad_key_files_are_refused(tmp_path: Path) -> None:
    """A missing file, a non-key file and a weak RSA key stop the handler at start."""
    (tmp_path / "junk.pem").write_text("not a key")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - on purpose
    (tmp_path / "weak.pem").write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigurationError, match=r"(?i)no such file"):
        load_key(tmp_path / "absent.pem")
    with pytest.raises(ConfigurationError, match="not an unencrypted PEM private key"):
        load_key(tmp_path / "junk.pem")
    with pytest.raises(ConfigurationError, match="at least 2048 bits"):
        _handler(tmp_path, key_files=[tmp_path / "weak.pem"])


def test_kid_is_the_rfc7638_thumbprint(tmp_path: Path) -> None:
    """The kid matches joserfc's own RFC 7638 thumbprint of the public key."""
    from joserfc.jwk import import_key

    key = generate_key(tmp_path / "k", "ES256")
    jwk = key.public_jwk()
    assert import_key(jwk).thumbprint() == key.kid


def test_keys_cli_generate_and_jwks(tmp_path: Path) -> None:
    """keys generate writes a key that keys jwks then publishes."""
    env = {"LOGOUT_DATA_DIR": str(tmp_path), "LOGOUT_LOG_LEVEL": "ERROR"}
    generated = CliRunner().invoke(main, ["keys", "generate", "--alg", "ES256"], env=env)
    assert generated.exit_code == 0, generated.output
    kid = generated.output.split()[1]
    published = CliRunner().invoke(main, ["keys", "jwks"], env=env)
    jwks = json.loads(published.stdout)
    assert [k["kid"] for k in jwks["keys"]] == [kid]
    assert jwks["keys"][0]["alg"] == "ES256"


def test_jwks_publishes_use_and_never_key_ops(tmp_path: Path) -> None:
    """Each published key says use: sig and carries no key_ops (RFC 7517 §4.3), RSA and EC."""
    rsa_key = generate_key(tmp_path / "k", "RS256")
    ec_key = generate_key(tmp_path / "k", "ES256")
    ring = _ring([Path(rsa_key.source), Path(ec_key.source)], tmp_path / "none")
    published = ring.jwks()["keys"]
    assert [k["kty"] for k in published] == ["RSA", "EC"]
    for jwk in published:
        assert jwk["use"] == "sig"
        assert "key_ops" not in jwk


def test_keys_list_shows_every_key_its_source_and_the_signer(tmp_path: Path) -> None:
    """keys list names each key's kid, alg, source (file or generated) and the one signing."""
    configured = generate_key(tmp_path / "managed", "ES256")
    generated = generate_key(tmp_path / "oidc-keys", "RS256")
    env = {
        "LOGOUT_DATA_DIR": str(tmp_path),
        "LOGOUT_LOG_LEVEL": "ERROR",
        "LOGOUT_OIDC_KEY_FILES": configured.source,
        "LOGOUT_OIDC_ACTIVE_KID": generated.kid,
    }
    result = CliRunner().invoke(main, ["keys", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "kid": configured.kid,
            "alg": "ES256",
            "source": "file",
            "path": configured.source,
            "signs": False,
        },
        {
            "kid": generated.kid,
            "alg": "RS256",
            "source": "generated",
            "path": generated.source,
            "signs": True,
        },
    ]
    table = CliRunner().invoke(main, ["keys", "list"], env=env)
    assert table.exit_code == 0, table.output
    header, first, second = table.stdout.splitlines()
    assert header.split() == ["KID", "ALG", "SOURCE", "SIGNS", "PATH"]
    assert first.split() == [configured.kid, "ES256", "file", configured.source]
    assert second.split() == [generated.kid, "RS256", "generated", "yes", generated.source]
    assert "PRIVATE" not in table.stdout + json.dumps(result.stdout)


# -- front-channel ---------------------------------------------------------------------


def test_frontchannel_url_keeps_the_query_and_adds_iss_and_sid() -> None:
    """iss and sid are appended, the registered query is kept, stale ones replaced."""
    url = frontchannel_url(
        "https://rp.example/logout?tenant=7&sid=old",
        issuer="https://idp.example.com",
        sid="sid-1",
        session_required=True,
    )
    parts = urlsplit(url)
    assert parts.path == "/logout"
    assert parse_qs(parts.query) == {
        "tenant": ["7"],
        "iss": ["https://idp.example.com"],
        "sid": ["sid-1"],
    }


def test_frontchannel_url_both_or_neither() -> None:
    """Without a sid, neither parameter is sent; when required, it cannot be built."""
    uri = "https://rp.example/logout"
    assert frontchannel_url(uri, issuer="i", sid=None, session_required=False) == uri
    with pytest.raises(ValueError, match="requires iss and sid"):
        frontchannel_url(uri, issuer="i", sid=None, session_required=True)


def test_frontchannel_entry(tmp_path: Path) -> None:
    """The handler's iframe entry carries the URL and no secret."""
    handler = _handler(tmp_path)
    provider = _provider(
        handler,
        backchannel_logout_uri=None,
        frontchannel_logout_uri="https://rp.example/fc",
        frontchannel_logout_session_required=True,
    )
    entry = handler.frontchannel_entry(provider, _session(), _context())
    assert (entry.provider, entry.protocol, entry.binding) == ("wiki", "oidc", "iframe")
    assert parse_qs(urlsplit(entry.url).query)["sid"] == ["sid-1"]
    with pytest.raises(PermanentDeliveryError):
        handler.frontchannel_entry(provider, _session(sid=None), _context())
