"""An OIDC relying party's logout settings, validated when providers are loaded."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.oidc.signing import SigningSettings
from protocols.validation import check_uri, input_error, uri_form
from schemas.durations import WholeSeconds
from schemas.fields import Identifier

__all__ = [
    "LogoutMethod",
    "OidcIdentifiers",
    "OidcProviderSettings",
    "OidcSettings",
    "parse_provider_settings",
]


class OidcIdentifiers(BaseModel):
    """An OIDC provider session's identifiers, from the ID token the client received."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sid: str | None = Field(default=None, min_length=1, max_length=255)
    sub: str | None = Field(default=None, min_length=1, max_length=255)


class OidcSettings(SigningSettings):
    """The OIDC handler's own settings: ``[protocols.oidc]`` in the settings file,
    ``LOGOUT_OIDC_<FIELD>`` in the environment."""

    logout_token_lifetime: WholeSeconds = Field(
        default=120, ge=10, le=120, description="seconds a logout token is valid"
    )


class LogoutMethod(StrEnum):
    BACKCHANNEL = "backchannel"
    FRONTCHANNEL = "frontchannel"


class OidcProviderSettings(BaseModel):
    """OpenID Connect Back-Channel and Front-Channel Logout registration of one client."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: Identifier
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = False
    frontchannel_logout_uri: str | None = None
    frontchannel_logout_session_required: bool = False
    logout_method: LogoutMethod | None = Field(
        default=None, description="Default: backchannel when its URI is set, else frontchannel."
    )
    allow_http: bool = False

    _uri_form = field_validator("backchannel_logout_uri", "frontchannel_logout_uri")(uri_form)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        check_uri("backchannel_logout_uri", self.backchannel_logout_uri, self.allow_http)
        check_uri("frontchannel_logout_uri", self.frontchannel_logout_uri, self.allow_http)
        method = self.method
        if method is LogoutMethod.BACKCHANNEL and self.backchannel_logout_uri is None:
            raise ValueError("backchannel_logout_uri: required by logout_method 'backchannel'")
        if method is LogoutMethod.FRONTCHANNEL and self.frontchannel_logout_uri is None:
            raise ValueError("frontchannel_logout_uri: required by logout_method 'frontchannel'")
        return self

    @property
    def method(self) -> LogoutMethod:
        """The logout method in force (explicit, or derived from the URIs set)."""
        if self.logout_method is not None:
            return self.logout_method
        if self.backchannel_logout_uri is not None or self.frontchannel_logout_uri is None:
            return LogoutMethod.BACKCHANNEL
        return LogoutMethod.FRONTCHANNEL


def parse_provider_settings(provider: str, settings: Any) -> OidcProviderSettings:
    """Validate ``settings``; raise :class:`InputError` naming the provider and field."""
    try:
        return OidcProviderSettings.model_validate(settings)
    except ValidationError as exc:
        raise input_error(exc, provider, OidcProviderSettings) from exc
