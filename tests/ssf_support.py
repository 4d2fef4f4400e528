"""A Shared Signals transmitter for the tests, on an independent JOSE library (joserfc):
its own keys, its JWKS, and SETs signed (or spoiled) as a test needs them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

ISSUER: Final = "https://upstream-idp.test"
AUDIENCE: Final = "https://logout.test/ssf"
SESSION_REVOKED: Final = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CREDENTIAL_CHANGE: Final = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
ACCOUNT_DISABLED: Final = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
VERIFICATION: Final = "https://schemas.openid.net/secevent/ssf/event-type/verification"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Transmitter:
    """Signs SETs with an RSA key (``rsa``) or an EC key (``ec``); ``jwks()`` publishes
    both public keys. ``stranger`` is a key of the same kid that is in no JWKS."""

    def __init__(self, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
        self.stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [self.rsa.as_dict(private=False), self.ec.as_dict(private=False)],
        }

    def claims(
        self, events: Mapping[str, Any], sub_id: Mapping[str, Any], **extra: Any
    ) -> dict[str, Any]:
        """The claims of a SET of ``events`` about ``sub_id`` (``extra`` overrides)."""
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
            "sub_id": dict(sub_id),
            "events": dict(events),
            **extra,
        }

    def sign(self, claims: Mapping[str, Any], *, alg: str = "RS256", **header: Any) -> str:
        """The SET as a compact JWS, signed by the RSA key (RS*/PS*) or the EC key (ES*)."""
        key: RSAKey | ECKey = self.ec if alg.startswith("ES") else self.rsa
        fields = {"alg": alg, "typ": "secevent+jwt", "kid": key.kid, **header}
        return jwt.encode(fields, dict(claims), key, algorithms=[alg])

    def sign_with(self, key: RSAKey | OctKey, claims: Mapping[str, Any], alg: str) -> str:
        """Signed by another key (one of no JWKS, an HMAC secret)."""
        fields = {"alg": alg, "typ": "secevent+jwt", "kid": key.kid or "rsa-1"}
        return jwt.encode(fields, dict(claims), key, algorithms=[alg])

    @staticmethod
    def unsigned(claims: Mapping[str, Any]) -> str:
        """An ``alg: none`` token (RFC 7519 section 6): no signature at all."""
        header = _b64(json.dumps({"alg": "none", "typ": "secevent+jwt"}).encode())
        return f"{header}.{_b64(json.dumps(dict(claims)).encode())}."

    @staticmethod
    def tampered(token: str, **changes: Any) -> str:
        """``token`` with its claims changed and its signature kept."""
        header, payload, signature = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return f"{header}.{_b64(json.dumps({**claims, **changes}).encode())}.{signature}"


def session_subject(session_id: str, user_id: str | None = None) -> dict[str, Any]:
    """A complex subject naming one of our sessions (and its user)."""
    subject: dict[str, Any] = {
        "format": "complex",
        "session": {"format": "opaque", "id": session_id},
    }
    if user_id is not None:
        subject["user"] = {"format": "iss_sub", "iss": ISSUER, "sub": user_id}
    return subject


def user_subject(user_id: str) -> dict[str, Any]:
    return {"format": "iss_sub", "iss": ISSUER, "sub": user_id}
