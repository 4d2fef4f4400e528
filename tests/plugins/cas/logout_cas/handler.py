"""CAS back-channel logout (CAS Protocol 3.0, §2.3.3 of its appendix): the server POSTs a
``logoutRequest`` form field to the service's URL, a SAML-like ``LogoutRequest`` naming the
service ticket the session was opened with in its ``SessionIndex``.

Written against ``protocols`` alone: its own settings (``[protocols.cas]``,
``LOGOUT_CAS_*``), its own provider settings and its own identifier model (a ``ticket``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols import (
    BackchannelRequest,
    LogoutContext,
    ProtocolHandler,
    ProviderInfo,
    ProviderSessionInfo,
)
from protocols.validation import stored_identifiers
from schemas.errors import InputError, Problem

__all__ = ["CasHandler", "CasIdentifiers", "CasProviderSettings", "CasSettings"]


class CasSettings(BaseModel):
    """The handler's own settings: ``[protocols.cas]``, ``LOGOUT_CAS_<FIELD>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id_prefix: str = Field(default="LR-", min_length=1, max_length=16)


class CasProviderSettings(BaseModel):
    """A CAS service: where its logout requests go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service_url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://")


class CasIdentifiers(BaseModel):
    """A CAS session is named by the service ticket it was opened with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket: str = Field(min_length=1, max_length=256, pattern=r"^ST-")


class CasHandler(ProtocolHandler[CasSettings]):
    """POSTs ``logoutRequest`` with the session's service ticket to the service's URL."""

    protocol = "cas"
    contract_version = "2.0"
    settings_model = CasSettings
    identifier_model = CasIdentifiers

    def validate_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        try:
            return CasProviderSettings.model_validate(dict(settings))
        except ValidationError as exc:
            raise InputError(
                [
                    Problem(f"provider {provider!r}", ".".join(map(str, e["loc"])), e["msg"])
                    for e in exc.errors()
                ]
            ) from exc

    def outgoing_urls(self, settings: Any) -> dict[str, str]:
        service: CasProviderSettings = settings
        return {"service_url": service.service_url}

    def validate_provider_session(
        self, provider: ProviderInfo, identifiers: CasIdentifiers
    ) -> list[Problem]:
        return []  # the model requires the ticket; nothing depends on the provider

    def backchannel_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> BackchannelRequest:
        service: CasProviderSettings = provider.settings
        ticket = stored_identifiers(CasIdentifiers, session.identifiers, self.protocol).ticket
        request_id = f"{self.settings.request_id_prefix}{context.delivery_id}-{context.attempt}"
        instant = context.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        message = (
            '<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
            'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
            f'ID={quoteattr(request_id)} Version="2.0" IssueInstant="{instant}">'
            "<saml:NameID>@NOT_USED@</saml:NameID>"
            f"<samlp:SessionIndex>{escape(ticket)}</samlp:SessionIndex>"
            "</samlp:LogoutRequest>"
        )
        return BackchannelRequest(
            url=service.service_url,
            content=urlencode({"logoutRequest": message}).encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
