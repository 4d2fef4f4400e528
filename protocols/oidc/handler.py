"""The OIDC protocol handler: back-channel logout tokens and front-channel URLs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from protocols.base import (
    BackchannelRequest,
    Channel,
    FrontchannelEntry,
    LogoutContext,
    ProviderInfo,
    ProviderSessionInfo,
)
from protocols.oidc.frontchannel import frontchannel_url
from protocols.oidc.settings import (
    LogoutMethod,
    OidcIdentifiers,
    OidcProviderSettings,
    OidcSettings,
    parse_provider_settings,
)
from protocols.oidc.signing import SigningHandler
from protocols.oidc.tokens import logout_token_claims, sign
from protocols.validation import stored_identifiers
from schemas.errors import PermanentDeliveryError, Problem

__all__ = ["OidcHandler"]

_FORM = "application/x-www-form-urlencoded"


class OidcHandler(SigningHandler[OidcSettings]):
    """OpenID Connect Back-Channel and Front-Channel Logout."""

    protocol = "oidc"
    contract_version = "2.0"
    settings_model = OidcSettings
    identifier_model = OidcIdentifiers

    def validate_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        return parse_provider_settings(provider, settings)

    def outgoing_urls(self, settings: Any) -> dict[str, str]:
        """The back-channel logout URI (the front-channel one is the browser's)."""
        rp: OidcProviderSettings = settings
        uri = rp.backchannel_logout_uri
        return {} if uri is None else {"backchannel_logout_uri": uri}

    def validate_provider_session(
        self, provider: ProviderInfo, identifiers: OidcIdentifiers
    ) -> list[Problem]:
        """What the client's logout needs: a back-channel logout token names ``sid`` or
        ``sub`` (Back-Channel Logout §2.4), ``sid`` when the client registered
        ``backchannel_logout_session_required``; a front-channel URL carries ``sid`` when
        ``frontchannel_logout_session_required``."""
        rp: OidcProviderSettings = provider.settings
        problems: list[Problem] = []
        if identifiers.sid is None:
            if rp.method is LogoutMethod.BACKCHANNEL and rp.backchannel_logout_session_required:
                problems.append(_sid_required(provider.name, "backchannel"))
            elif rp.method is LogoutMethod.FRONTCHANNEL and rp.frontchannel_logout_session_required:
                problems.append(_sid_required(provider.name, "frontchannel"))
            elif rp.method is LogoutMethod.BACKCHANNEL and identifiers.sub is None:
                problems.append(
                    Problem(
                        "",
                        "sid",
                        "a logout token needs sid or sub, and neither is given "
                        "(give the sid or the sub the client received in its ID token)",
                    )
                )
        return problems

    def channel(self, provider: ProviderInfo) -> Channel:
        rp: OidcProviderSettings = provider.settings
        if rp.method is LogoutMethod.FRONTCHANNEL:
            return Channel.FRONTCHANNEL_IFRAME
        return Channel.BACKCHANNEL

    def logout_token(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> str:
        """A signed logout token naming exactly this provider session (fresh ``jti``)."""
        rp: OidcProviderSettings = provider.settings
        ids = stored_identifiers(OidcIdentifiers, session.identifiers, self.protocol)
        if rp.backchannel_logout_session_required and ids.sid is None:
            raise PermanentDeliveryError(
                "the client requires sid (backchannel_logout_session_required) and this "
                "provider session has none"
            )
        if ids.sid is None and ids.sub is None:
            raise PermanentDeliveryError("the provider session has neither sid nor sub")
        claims = logout_token_claims(
            issuer=self.host.issuer,
            client_id=rp.client_id,
            sub=ids.sub,
            sid=ids.sid,
            now=context.now,
            lifetime=self.settings.logout_token_lifetime,
        )
        return sign(claims, self.keys.active)

    def backchannel_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> BackchannelRequest:
        rp: OidcProviderSettings = provider.settings
        if rp.backchannel_logout_uri is None:
            raise PermanentDeliveryError("the client has no backchannel_logout_uri")
        token = self.logout_token(provider, session, context)
        return BackchannelRequest(
            url=rp.backchannel_logout_uri,
            content=urlencode({"logout_token": token}).encode(),
            headers={"content-type": _FORM},
        )

    def frontchannel_entry(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> FrontchannelEntry:
        rp: OidcProviderSettings = provider.settings
        if rp.frontchannel_logout_uri is None:
            raise PermanentDeliveryError("the client has no frontchannel_logout_uri")
        try:
            url = frontchannel_url(
                rp.frontchannel_logout_uri,
                issuer=self.host.issuer,
                sid=stored_identifiers(OidcIdentifiers, session.identifiers, self.protocol).sid,
                session_required=rp.frontchannel_logout_session_required,
            )
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        return FrontchannelEntry(
            provider=provider.name,
            protocol=self.protocol,
            channel=Channel.FRONTCHANNEL_IFRAME,
            binding="iframe",
            url=url,
        )


def _sid_required(provider: str, channel: str) -> Problem:
    return Problem(
        "",
        "sid",
        f"required: provider {provider!r} sets {channel}_logout_session_required = true "
        "(give the sid of the client's ID token)",
    )
