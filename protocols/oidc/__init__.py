"""OpenID Connect logout: Back-Channel logout tokens and Front-Channel URLs."""

from protocols.oidc.frontchannel import frontchannel_url
from protocols.oidc.handler import OidcHandler
from protocols.oidc.keys import KeyRing, SigningKey, generate_key, load_key, thumbprint
from protocols.oidc.settings import (
    LogoutMethod,
    OidcIdentifiers,
    OidcProviderSettings,
    OidcSettings,
    parse_provider_settings,
)
from protocols.oidc.tokens import (
    BACKCHANNEL_LOGOUT_EVENT,
    LOGOUT_TOKEN_TYPE,
    logout_token_claims,
    sign,
)

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "LOGOUT_TOKEN_TYPE",
    "KeyRing",
    "LogoutMethod",
    "OidcHandler",
    "OidcIdentifiers",
    "OidcProviderSettings",
    "OidcSettings",
    "SigningKey",
    "frontchannel_url",
    "generate_key",
    "load_key",
    "logout_token_claims",
    "parse_provider_settings",
    "sign",
    "thumbprint",
]
