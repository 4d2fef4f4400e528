"""The upstream Shared Signals transmitters whose SETs may end sessions here, as the
settings hold them (``[[ssf_transmitters]]`` in the TOML file, ``LOGOUT_SSF_TRANSMITTERS``
as a JSON list).

Each is one push stream, ``POST /v1/ssf/push/<name>``: who signs (``issuer``, and its keys:
``jwks_url`` or inline ``jwks``), whom it addresses (``audience``), with which algorithms
(asymmetric only: a shared ``HS*`` secret or ``none`` would let anyone holding it, or
anyone at all, end sessions), how old a SET may be (``max_age``) and, optionally, the
bearer token the transmitter sends (only its SHA-256, as for ``api_tokens``).
"""

from __future__ import annotations

from typing import Any, Final, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.durations import Seconds
from schemas.fields import Sha256Hex

__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHMS", "SsfTransmitter"]

#: The signing algorithms a transmitter may be allowed (RFC 7518, RFC 8037).
ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
DEFAULT_ALGORITHMS: Final = ("RS256", "ES256")


class SsfTransmitter(BaseModel):
    """One upstream transmitter's push stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the stream id: the push endpoint is /v1/ssf/push/<name>; also the actor",
    )
    issuer: str = Field(min_length=1, max_length=1024, description="the SETs' iss")
    audience: str = Field(min_length=1, max_length=1024, description="the aud SETs must name")
    jwks_url: str | None = Field(default=None, description="where the transmitter's JWKS is")
    jwks: dict[str, Any] | None = Field(default=None, description="inline JWKS ({'keys': []})")
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    max_age: Seconds = Field(default=300.0, gt=0, le=7 * 86400, description="iat freshness")
    jwks_min_refresh: Seconds = Field(
        default=60.0, ge=0, description="an unknown kid refetches the JWKS at most this often"
    )
    push_token_sha256: Sha256Hex | None = Field(
        default=None,
        description="hex SHA-256 of the bearer token the transmitter sends (hash_token)",
    )
    email_is_user_id: bool = Field(
        default=False, description="an email subject is the user id (the IdP's ids are emails)"
    )
    enabled: bool = Field(default=True, description="false: every SET is answered access_denied")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"give at least one of {', '.join(ALGORITHMS)}")
        for alg in value:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(
                    f"{alg!r} is refused: SETs must be signed with a public key; use one of "
                    f"{', '.join(ALGORITHMS)}"
                )
            if alg not in ALGORITHMS:
                raise ValueError(f"{alg!r} is not one of {', '.join(ALGORITHMS)}")
        return value

    @field_validator("jwks_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError("give an https:// URL of the transmitter's JWKS (jwks_uri)")
        return value

    @field_validator("jwks")
    @classmethod
    def _key_set(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from jwt import PyJWKSet  # here: the settings load on every command's start
        from jwt.exceptions import PyJWKSetError

        if value is not None:
            try:
                PyJWKSet.from_dict(value)
            except (PyJWKSetError, ValueError, TypeError, KeyError) as exc:
                raise ValueError(
                    f"not a usable JWKS ({exc}); give {{'keys': [<JWK>, ...]}}"
                ) from None
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if (self.jwks_url is None) == (self.jwks is None):
            raise ValueError(
                "give exactly one of jwks_url (fetched, refreshed on an unknown kid) or jwks"
            )
        return self
