"""Logout tokens (OpenID Connect Back-Channel Logout 1.0 §2.4, errata set 1)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import jwt

from protocols.oidc.keys import SigningKey

__all__ = ["BACKCHANNEL_LOGOUT_EVENT", "LOGOUT_TOKEN_TYPE", "logout_token_claims", "sign"]

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPE = "logout+jwt"  # noqa: S105 - a media type, not a secret


def logout_token_claims(
    *,
    issuer: str,
    client_id: str,
    sub: str | None,
    sid: str | None,
    now: datetime,
    lifetime: int,
) -> dict[str, Any]:
    """The claims of one logout token: never a ``nonce``, always a fresh ``jti``."""
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    if sub is not None:
        claims["sub"] = sub
    if sid is not None:
        claims["sid"] = sid
    return claims


def sign(claims: dict[str, Any], key: SigningKey) -> str:
    """Sign with the key's algorithm; the header carries ``typ: logout+jwt`` and ``kid``."""
    return jwt.encode(
        claims,
        key.private_key,
        algorithm=key.alg,
        headers={"typ": LOGOUT_TOKEN_TYPE, "kid": key.kid},
    )
