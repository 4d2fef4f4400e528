"""Checking a pushed Security Event Token (RFC 8417) as RFC 8935 asks, without any I/O.

Two steps, so the caller can fetch a key between them: :func:`read_header` checks the JOSE
header (``typ`` is ``secevent+jwt``, ``alg`` is one the transmitter may use) and names the
key; :func:`verify` checks the signature with that key, then ``iss``, ``aud``, ``iat``
freshness and the presence of ``jti`` and ``events``. Every refusal is a
:class:`SetRefusedError` carrying the RFC 8935 error code the answer must name.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import jwt

from protocols.ssf.push import SET_MEDIA_TYPE
from protocols.ssf.tokens import SET_TYPE
from schemas.errors import LogoutError

__all__ = [
    "SET_MEDIA_TYPE",
    "SET_TYPE",
    "ErrorCode",
    "SetHeader",
    "SetRefusedError",
    "read_header",
    "verify",
]

#: Seconds an ``iat`` may lie in the future (the transmitter's clock runs ahead).
CLOCK_SKEW: Final = 60

#: The error codes of RFC 8935 section 2.4 (the IANA "Security Event Token Error Codes").
ErrorCode = Literal[
    "invalid_request",
    "invalid_key",
    "invalid_issuer",
    "invalid_audience",
    "authentication_failed",
    "access_denied",
]


class SetRefusedError(LogoutError):
    """A SET (or its request) refused: ``err`` is the RFC 8935 code, ``description`` says
    what was wrong. Neither ever holds the token or a claim's value beyond its name."""

    def __init__(self, err: ErrorCode, description: str) -> None:
        super().__init__(f"{err}: {description}")
        self.err: ErrorCode = err
        self.description = description


@dataclass(frozen=True, slots=True)
class SetHeader:
    """The checked JOSE header: the algorithm and the key id (``None`` when absent)."""

    alg: str
    kid: str | None


def read_header(token: str, algorithms: Collection[str]) -> SetHeader:
    """The header of ``token`` once its ``typ`` and ``alg`` are acceptable.

    ``typ`` must be ``secevent+jwt`` (its ``application/`` form too, RFC 7515 section
    4.1.9); ``alg`` must be one of ``algorithms`` (never ``none``: a SET is signed).
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:  # also JSON nested too deep to parse
        raise SetRefusedError(
            "invalid_request", "the body is not a compact JWS (header.payload.signature)"
        ) from None
    typ = str(header.get("typ", "")).lower().removeprefix("application/")
    if typ != SET_TYPE:
        raise SetRefusedError(
            "invalid_request", f"the JOSE header's typ must be {SET_TYPE!r} (RFC 8417)"
        )
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        allowed = ", ".join(sorted(algorithms))
        named = repr(alg[:20]) if isinstance(alg, str) else "(none given)"
        raise SetRefusedError(
            "invalid_key", f"the algorithm {named} is not allowed for this stream ({allowed})"
        )
    kid = header.get("kid")
    return SetHeader(alg=alg, kid=kid if isinstance(kid, str) else None)


_CLAIM_ERRORS: Final[tuple[tuple[type[jwt.PyJWTError], ErrorCode, str], ...]] = (
    (jwt.InvalidSignatureError, "invalid_key", "the signature does not verify with the key"),
    (jwt.InvalidKeyError, "invalid_key", "the key does not fit the algorithm"),
    (jwt.InvalidIssuerError, "invalid_issuer", "iss is not this stream's transmitter"),
    (jwt.InvalidAudienceError, "invalid_audience", "aud does not name this receiver"),
    (jwt.MissingRequiredClaimError, "invalid_request", "a required claim is missing"),
    (jwt.ImmatureSignatureError, "invalid_request", "iat lies in the future"),
    (jwt.ExpiredSignatureError, "invalid_request", "the SET has expired (exp)"),
)


def verify(
    token: str,
    key: Any,
    header: SetHeader,
    *,
    issuer: str,
    audience: str,
    max_age: float,
    now: float,
) -> dict[str, Any]:
    """The claims of ``token`` once its signature (by ``key``, with ``header.alg``),
    ``iss``, ``aud``, ``iat`` (at most ``max_age`` seconds before ``now``), ``jti`` and
    ``events`` (an object of event objects) are right."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[header.alg],
            issuer=issuer,
            audience=audience,
            leeway=CLOCK_SKEW,
            options={"require": ["iss", "aud", "iat", "jti", "events"], "verify_iat": True},
        )
    except jwt.PyJWTError as exc:
        raise _refusal(exc) from None
    except (TypeError, ValueError):  # a key object of another family than the algorithm
        raise SetRefusedError("invalid_key", "the key does not fit the algorithm") from None
    _check_fresh(claims, max_age, now)
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise SetRefusedError("invalid_request", "jti must be a string of 1-255 characters")
    _check_events(claims["events"])
    return claims


def _refusal(exc: jwt.PyJWTError) -> SetRefusedError:
    for kind, err, description in _CLAIM_ERRORS:
        if isinstance(exc, kind):
            if isinstance(exc, jwt.MissingRequiredClaimError):
                description = f"the claim {exc.claim!r} is missing"
            return SetRefusedError(err, description)
    return SetRefusedError("invalid_request", f"not a valid SET ({type(exc).__name__})")


def _check_fresh(claims: Mapping[str, Any], max_age: float, now: float) -> None:
    iat = claims["iat"]
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise SetRefusedError("invalid_request", "iat must be a number (seconds since 1970)")
    if now - iat > max_age:
        raise SetRefusedError(
            "invalid_request", f"the SET is stale: iat is more than {max_age:g} s old"
        )


def _check_events(events: object) -> None:
    if not isinstance(events, dict) or not events:
        raise SetRefusedError(
            "invalid_request", "events must be an object with at least one event (RFC 8417)"
        )
    for uri, payload in events.items():
        if not uri or not isinstance(payload, dict):
            raise SetRefusedError(
                "invalid_request", "each member of events must be an event type URI and an object"
            )
